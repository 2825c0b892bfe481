//! Every failure mode has its own code and a message a person can act on.

use crate::harness::{Trial, trial};
use crate::helpers::*;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::pb::{self, PaymentMethod};
use tonic::Code;

crate::backend_tests!(
    calls_without_a_valid_token_are_unauthenticated,
    user_tokens_cannot_use_the_admin_service,
    strangers_are_denied_without_learning_whether_a_job_exists,
    wrong_party_is_denied,
    bad_arguments_are_invalid_argument,
    unknown_jobs_are_not_found_for_services,
    duplicate_create_is_already_exists,
    illegal_transitions_name_the_current_state,
    stale_expected_revision_is_aborted,
    request_id_retries_return_the_original_answer,
    a_corrupt_row_fails_only_its_own_calls,
);

async fn calls_without_a_valid_token_are_unauthenticated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let expired = token_for(CLIENT, chrono::Duration::seconds(-30));
    let cases = [
        (Bearer::none(), "missing authorization"),
        (Bearer::raw(&format!("Token {}", token(CLIENT))), "Bearer"),
        (Bearer::raw(&token(CLIENT)), "Bearer"),
        (Bearer::new("not-a-jwt"), "invalid token"),
        (Bearer::new(&expired), "expired"),
        (Bearer::new(&"x".repeat(9000)), "larger than"),
    ];
    for (auth, needle) in cases {
        let mut c = JobServiceClient::with_interceptor(app.channel().await, auth);
        assert_status(
            c.get_job(pb::GetJobRequest { job_id: 1 }).await,
            Code::Unauthenticated,
            needle,
        );
        assert_status(
            c.watch_job(pb::WatchJobRequest {
                job_id: 1,
                after_revision: None,
            })
            .await,
            Code::Unauthenticated,
            needle,
        );
        assert_status(
            c.mark_complete(mark(1)).await,
            Code::Unauthenticated,
            needle,
        );
    }
}

async fn user_tokens_cannot_use_the_admin_service(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut as_user =
        JobAdminServiceClient::with_interceptor(app.channel().await, Bearer::new(&token(CLIENT)));
    assert_status(
        as_user
            .create_job(pb::CreateJobRequest {
                job_id: 1,
                client_id: CLIENT.into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "service token",
    );
    let mut anonymous =
        JobAdminServiceClient::with_interceptor(app.channel().await, Bearer::none());
    assert_status(
        anonymous.cancel_job(pb::CancelJobRequest::default()).await,
        Code::Unauthenticated,
        "missing",
    );
}

async fn strangers_are_denied_without_learning_whether_a_job_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut stranger = app.client(STRANGER).await;
    for id in [1, 999] {
        let message =
            format!("job {id} does not exist or you are not its client or assigned worker");
        assert_status(
            stranger.get_job(pb::GetJobRequest { job_id: id }).await,
            Code::PermissionDenied,
            &message,
        );
        let mut w = stranger
            .watch_job(pb::WatchJobRequest {
                job_id: id,
                after_revision: None,
            })
            .await
            .expect("stream opens; the refusal comes in-band")
            .into_inner();
        assert_status(end(&mut w).await, Code::PermissionDenied, &message);
        assert_status(
            stranger.mark_complete(mark(id)).await,
            Code::PermissionDenied,
            &message,
        );
        assert_status(
            stranger
                .approve_completion(approve(id, PaymentMethod::Cash))
                .await,
            Code::PermissionDenied,
            &message,
        );
    }
}

async fn wrong_party_is_denied(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut client = app.client(CLIENT).await;
    let mut worker = app.client(WORKER).await;
    assert_status(
        client.mark_complete(mark(1)).await,
        Code::PermissionDenied,
        "only the assigned worker may mark the job complete",
    );
    worker.mark_complete(mark(1)).await.expect("mark");
    assert_status(
        worker
            .approve_completion(approve(1, PaymentMethod::Cash))
            .await,
        Code::PermissionDenied,
        "only the job's client may approve completion",
    );
    // A service token on JobService may read but cannot act for a party.
    let mut service = app.client_for(&service_token()).await;
    assert_status(
        service
            .approve_completion(approve(1, PaymentMethod::Cash))
            .await,
        Code::PermissionDenied,
        "client",
    );
}

async fn bad_arguments_are_invalid_argument(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut client = app.client(CLIENT).await;
    let mut admin = app.admin().await;
    for id in [0, -5] {
        assert_status(
            client.get_job(pb::GetJobRequest { job_id: id }).await,
            Code::InvalidArgument,
            "job_id: must be a positive integer",
        );
        assert_status(
            client.mark_complete(mark(id)).await,
            Code::InvalidArgument,
            "job_id",
        );
        assert_status(
            client
                .watch_job(pb::WatchJobRequest {
                    job_id: id,
                    after_revision: None,
                })
                .await,
            Code::InvalidArgument,
            "job_id",
        );
    }
    assert_status(
        client
            .approve_completion(approve(1, PaymentMethod::Unspecified))
            .await,
        Code::InvalidArgument,
        "payment_method: is required",
    );
    assert_status(
        client
            .approve_completion(pb::ApproveCompletionRequest {
                job_id: 1,
                payment_method: 42,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "unknown value 42",
    );
    assert_status(
        client.request_changes(changes(1, "   ")).await,
        Code::InvalidArgument,
        "reason: must not be empty",
    );
    assert_status(
        client.submit_payment_proof(proof(1, "")).await,
        Code::InvalidArgument,
        "proof_ref",
    );
    assert_status(
        client
            .mark_complete(pb::MarkCompleteRequest {
                job_id: 1,
                request_id: "r".repeat(200),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "request_id: must be at most 128",
    );
    assert_status(
        client
            .mark_complete(pb::MarkCompleteRequest {
                job_id: 1,
                expected_revision: Some(0),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "expected_revision",
    );
    assert_status(
        client
            .watch_job(pb::WatchJobRequest {
                job_id: 1,
                after_revision: Some(-1),
            })
            .await,
        Code::InvalidArgument,
        "after_revision",
    );
    assert_status(
        admin
            .create_job(pb::CreateJobRequest {
                job_id: 2,
                client_id: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "client_id: must not be empty",
    );
    assert_status(
        admin
            .create_job(pb::CreateJobRequest {
                job_id: 2,
                client_id: "same".into(),
                worker_id: "same".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "different user from the client",
    );
    assert_status(
        admin
            .assign_worker(pb::AssignWorkerRequest {
                job_id: 1,
                worker_id: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "worker_id: must not be empty",
    );
}

async fn unknown_jobs_are_not_found_for_services(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut admin = app.admin().await;
    assert_status(
        admin
            .assign_worker(pb::AssignWorkerRequest {
                job_id: 404,
                worker_id: WORKER.into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "job 404 does not exist",
    );
    assert_status(
        admin
            .cancel_job(pb::CancelJobRequest {
                job_id: 404,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "job 404",
    );
    assert_status(
        admin.confirm_payment(confirm(404)).await,
        Code::NotFound,
        "job 404",
    );
    let mut service = app.client_for(&service_token()).await;
    assert_status(
        service.get_job(pb::GetJobRequest { job_id: 404 }).await,
        Code::NotFound,
        "job 404",
    );
}

async fn duplicate_create_is_already_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    assert_status(
        app.admin()
            .await
            .create_job(pb::CreateJobRequest {
                job_id: 1,
                client_id: "someone-else".into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "job 1 already exists",
    );
}

async fn illegal_transitions_name_the_current_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut client = app.client(CLIENT).await;
    assert_status(
        client
            .approve_completion(approve(1, PaymentMethod::Cash))
            .await,
        Code::FailedPrecondition,
        "job 1 is in_progress",
    );
    assert_status(
        client.request_changes(changes(1, "more")).await,
        Code::FailedPrecondition,
        "in_progress",
    );
    app.admin()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: 1,
            ..Default::default()
        })
        .await
        .expect("cancel");
    assert_status(
        app.client(WORKER).await.mark_complete(mark(1)).await,
        Code::FailedPrecondition,
        "cancelled",
    );
}

async fn stale_expected_revision_is_aborted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut worker = app.client(WORKER).await;
    assert_status(
        worker
            .mark_complete(pb::MarkCompleteRequest {
                job_id: 1,
                expected_revision: Some(5),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "revision 1, not the expected 5",
    );
    let job = worker
        .mark_complete(pb::MarkCompleteRequest {
            job_id: 1,
            expected_revision: Some(1),
            ..Default::default()
        })
        .await
        .expect("matching revision")
        .into_inner();
    assert_eq!(job.revision, 2);
}

async fn request_id_retries_return_the_original_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut worker = app.client(WORKER).await;
    let mut client = app.client(CLIENT).await;
    let with_id = |id: &str| pb::MarkCompleteRequest {
        job_id: 1,
        request_id: id.into(),
        ..Default::default()
    };
    let first = worker
        .mark_complete(with_id("req-1"))
        .await
        .expect("first")
        .into_inner();
    assert_eq!(first.revision, 2);
    client
        .request_changes(changes(1, "redo"))
        .await
        .expect("changes");
    // The retry arrives after the job moved on: it gets the original answer
    // and does not mark the job complete a second time.
    let retry = worker
        .mark_complete(with_id("req-1"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry, first);
    let now = client
        .get_job(pb::GetJobRequest { job_id: 1 })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.revision, 3);
    assert_eq!(now.status(), pb::JobStatus::InProgress);
    // The same id for a different request is refused.
    assert_status(
        worker
            .confirm_payment(pb::ConfirmPaymentRequest {
                job_id: 1,
                request_id: "req-1".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "already used for a different request",
    );
    // Reusing an id with other arguments is refused too, not answered with
    // the first request's result.
    let assign = |worker: &str| pb::AssignWorkerRequest {
        job_id: 1,
        worker_id: worker.into(),
        request_id: "assign-1".into(),
        ..Default::default()
    };
    let mut admin = app.admin().await;
    admin
        .assign_worker(assign(WORKER))
        .await
        .expect("same worker: a no-op");
    admin
        .assign_worker(assign(OTHER_WORKER))
        .await
        .expect("reassign");
    assert_status(
        admin.assign_worker(assign(WORKER)).await,
        Code::InvalidArgument,
        "already used for a different request",
    );
    admin
        .assign_worker(assign(OTHER_WORKER))
        .await
        .expect("a true retry");
    admin
        .assign_worker(pb::AssignWorkerRequest {
            job_id: 1,
            worker_id: WORKER.into(),
            ..Default::default()
        })
        .await
        .expect("back to the first worker");
    // Ids are per caller: the client may use the same string.
    let approve_retry = pb::ApproveCompletionRequest {
        job_id: 1,
        payment_method: PaymentMethod::Cash.into(),
        request_id: "req-1".into(),
        ..Default::default()
    };
    worker.mark_complete(mark(1)).await.expect("mark again");
    let a = client
        .approve_completion(approve_retry.clone())
        .await
        .expect("approve")
        .into_inner();
    let b = client
        .approve_completion(approve_retry)
        .await
        .expect("approve retry")
        .into_inner();
    assert_eq!(a, b);
    // A CreateJob retry with the same id returns the job, not ALREADY_EXISTS.
    let create = pb::CreateJobRequest {
        job_id: 2,
        client_id: CLIENT.into(),
        worker_id: WORKER.into(),
        request_id: "create-2".into(),
    };
    let mut admin = app.admin().await;
    let c1 = admin
        .create_job(create.clone())
        .await
        .expect("create")
        .into_inner();
    let c2 = admin
        .create_job(create)
        .await
        .expect("create retry")
        .into_inner();
    assert_eq!(c1, c2);
}

/// SQLite's way to be unreachable: another process holds the write lock.
async fn locked_sqlite_database_is_unavailable_and_not_serving() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_job(1).await;
    let mut worker = app.client(WORKER).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let check = || tonic_health::pb::HealthCheckRequest {
        service: "jobstatus.v1.JobService".into(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(
        health
            .check(check())
            .await
            .expect("health")
            .into_inner()
            .status,
        serving
    );

    // Another process takes SQLite's write lock and keeps it.
    let path = app.db.url.trim_start_matches("sqlite://").to_owned();
    let mut locker = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    locker = locker.busy_timeout(std::time::Duration::from_millis(100));
    use sqlx::{ConnectOptions, Connection};
    let mut conn = locker.connect().await.expect("second connection");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut conn)
        .await
        .expect("lock");

    let started = std::time::Instant::now();
    let status = worker
        .mark_complete(mark(1))
        .await
        .expect_err("a change while another process holds the lock");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    // The writer's wait for the lock and the caller's wait for the writer
    // share one timeout (--db-timeout-ms), so either may end first; each
    // says which.
    assert!(
        status
            .message()
            .starts_with("database busy: it stayed locked")
            || status
                .message()
                .starts_with("database unavailable: no answer"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < PATIENCE,
        "fails fast instead of hanging"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health
        .check(check())
        .await
        .expect("health")
        .into_inner()
        .status
        != not_serving
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health should report NOT_SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .expect("unlock");
    conn.close().await.expect("close");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health
        .check(check())
        .await
        .expect("health")
        .into_inner()
        .status
        != serving
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health should recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Nothing was lost or half-written: the failed call changed nothing and
    // the job moves on normally now.
    let job = worker
        .mark_complete(mark(1))
        .await
        .expect("works again")
        .into_inner();
    assert_eq!(job.revision, 2);
}

/// A job whose stored row no longer decodes fails its own calls (INTERNAL)
/// while calls on other jobs, sent at the same moment and so committed in
/// the same batches, go through.
async fn a_corrupt_row_fails_only_its_own_calls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const JOBS: i64 = 24;
    const BAD: i64 = 7;
    for id in 1..=JOBS {
        app.create_job(id).await;
    }
    // A control character: the column's CHECK allows it, UserId does not.
    match backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlite_connection(&app).await;
            sqlx::query("UPDATE jobs SET client_id = 'bad' || char(1) WHERE job_id = ?")
                .bind(BAD)
                .execute(&mut conn)
                .await
                .expect("corrupt the row");
            conn.close().await.expect("close");
        }
        Backend::Postgres => {
            let mut conn = app.db.pg().connect().await;
            sqlx::query("UPDATE jobs SET client_id = 'bad' || chr(1) WHERE job_id = $1")
                .bind(BAD)
                .execute(&mut conn)
                .await
                .expect("corrupt the row");
        }
    }
    let worker = app.client(WORKER).await;
    let calls = (1..=JOBS).map(|id| {
        let mut worker = worker.clone();
        async move { (id, worker.mark_complete(mark(id)).await) }
    });
    for (id, result) in futures_util::future::join_all(calls).await {
        if id == BAD {
            assert_status(result, Code::Internal, "internal error");
        } else {
            let job = result.unwrap_or_else(|s| panic!("job {id}: {s:?}"));
            assert_eq!(job.into_inner().revision, 2, "job {id}");
        }
    }
}

/// The tests of this module that are not per backend.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "errors::locked_sqlite_database_is_unavailable_and_not_serving",
        &[],
        locked_sqlite_database_is_unavailable_and_not_serving,
    )]
}
