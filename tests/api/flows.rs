//! Whole job lives, watched: the two-party test and the payment paths.

use crate::helpers::*;
use jobstatus::grpc::pb::{self, ActorRole, EventType, JobStatus, PaymentMethod, SnapshotReason};

crate::backend_tests!(
    two_watchers_see_mark_complete_and_cash_approval,
    cash_payment_runs_to_completion_and_ends_streams_cleanly,
    gcash_payment_is_confirmed_by_the_payment_service,
    requested_changes_send_the_job_back_to_work,
    get_job_returns_the_current_state_to_both_parties,
);

/// The two-party test: client and worker watch the same job and see each
/// other's actions at once.
async fn two_watchers_see_mark_complete_and_cash_approval(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(123).await;
    let mut client = app.client(CLIENT).await;
    let mut worker = app.client(WORKER).await;
    let mut client_watch = watch(&mut client, 123, None).await;
    let mut worker_watch = watch(&mut worker, 123, None).await;
    for w in [&mut client_watch, &mut worker_watch] {
        let s = snapshot(w).await;
        assert_eq!(s.reason(), SnapshotReason::Initial);
        let job = s.job.expect("job");
        assert_eq!(job.status(), JobStatus::InProgress);
        assert_eq!(job.revision, 1);
        assert!(!job.worker_marked_complete);
    }

    worker
        .mark_complete(mark(123))
        .await
        .expect("worker marks complete");
    for w in [&mut client_watch, &mut worker_watch] {
        let e = event(w).await;
        assert_eq!(e.event(), EventType::WorkerMarkedComplete);
        assert_eq!(e.job_id, 123);
        assert_eq!(e.revision, 2);
        assert!(e.worker_marked_complete);
        assert!(!e.client_marked_complete);
        assert!(e.awaiting_client_verification);
        assert_eq!(e.payment_method(), PaymentMethod::Unspecified);
        assert_eq!(e.status(), JobStatus::AwaitingClientApproval);
        assert_eq!(e.actor_id, WORKER);
        assert_eq!(e.actor_role(), ActorRole::Worker);
        assert!(e.timestamp.is_some());
    }

    client
        .approve_completion(approve(123, PaymentMethod::Cash))
        .await
        .expect("client approves");
    for w in [&mut client_watch, &mut worker_watch] {
        let e = event(w).await;
        assert_eq!(e.event(), EventType::ClientApprovedCompletion);
        assert_eq!(e.revision, 3);
        assert!(e.worker_marked_complete);
        assert!(e.client_marked_complete);
        assert!(!e.awaiting_client_verification);
        assert_eq!(e.payment_method(), PaymentMethod::Cash);
        assert_eq!(e.status(), JobStatus::AwaitingPayment);
        assert_eq!(e.actor_role(), ActorRole::Client);
    }
}

async fn cash_payment_runs_to_completion_and_ends_streams_cleanly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(7).await;
    let mut client = app.client(CLIENT).await;
    let mut worker = app.client(WORKER).await;
    let mut w = watch(&mut worker, 7, None).await;
    snapshot(&mut w).await;
    worker.mark_complete(mark(7)).await.expect("mark");
    client
        .approve_completion(approve(7, PaymentMethod::Cash))
        .await
        .expect("approve");
    assert_status(
        worker.confirm_payment(confirm(7)).await,
        tonic::Code::FailedPrecondition,
        "not submitted a proof",
    );
    let job = client
        .submit_payment_proof(proof(7, "uploads/receipt-7.jpg"))
        .await
        .expect("proof")
        .into_inner();
    assert_eq!(job.payment_proof_ref, "uploads/receipt-7.jpg");
    assert_eq!(job.status(), JobStatus::AwaitingPayment);
    let job = worker
        .confirm_payment(confirm(7))
        .await
        .expect("confirm")
        .into_inner();
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(job.revision, 5);

    let kinds: Vec<EventType> = [
        event(&mut w).await,
        event(&mut w).await,
        event(&mut w).await,
        event(&mut w).await,
    ]
    .iter()
    .map(|e| e.event())
    .collect();
    assert_eq!(
        kinds,
        [
            EventType::WorkerMarkedComplete,
            EventType::ClientApprovedCompletion,
            EventType::PaymentProofSubmitted,
            EventType::PaymentConfirmed
        ]
    );
    // Completed is terminal: the stream ends with OK after the last event.
    end(&mut w)
        .await
        .expect("clean end after the terminal event");

    // Watching a finished job: its snapshot, then a clean end.
    let mut again = watch(&mut client, 7, None).await;
    assert_eq!(
        snapshot(&mut again).await.job.expect("job").status(),
        JobStatus::Completed
    );
    end(&mut again).await.expect("clean end");
}

async fn gcash_payment_is_confirmed_by_the_payment_service(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(8).await;
    let mut client = app.client(CLIENT).await;
    let mut worker = app.client(WORKER).await;
    let mut admin = app.admin().await;
    worker.mark_complete(mark(8)).await.expect("mark");
    client
        .approve_completion(approve(8, PaymentMethod::Gcash))
        .await
        .expect("approve");
    assert_status(
        client.submit_payment_proof(proof(8, "x")).await,
        tonic::Code::FailedPrecondition,
        "only for CASH",
    );
    assert_status(
        worker.confirm_payment(confirm(8)).await,
        tonic::Code::PermissionDenied,
        "payment service",
    );
    let job = admin
        .confirm_payment(confirm(8))
        .await
        .expect("payment service confirms")
        .into_inner();
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(job.payment_method(), PaymentMethod::Gcash);
    // A repeat from the payment system (webhook retry) is harmless.
    let again = admin
        .confirm_payment(confirm(8))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again.revision, job.revision);
}

async fn requested_changes_send_the_job_back_to_work(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(9).await;
    let mut client = app.client(CLIENT).await;
    let mut worker = app.client(WORKER).await;
    let mut w = watch(&mut client, 9, None).await;
    snapshot(&mut w).await;
    worker.mark_complete(mark(9)).await.expect("mark");
    let job = client
        .request_changes(changes(9, "The paint is still wet on the north wall"))
        .await
        .expect("changes")
        .into_inner();
    assert_eq!(job.status(), JobStatus::InProgress);
    assert_eq!(
        job.change_request_reason,
        "The paint is still wet on the north wall"
    );
    event(&mut w).await;
    let e = event(&mut w).await;
    assert_eq!(e.event(), EventType::ClientRequestedChanges);
    assert_eq!(e.reason, "The paint is still wet on the north wall");
    assert!(!e.worker_marked_complete);
    // And the worker can mark it complete again.
    let job = worker
        .mark_complete(mark(9))
        .await
        .expect("mark again")
        .into_inner();
    assert_eq!(job.status(), JobStatus::AwaitingClientApproval);
    assert_eq!(event(&mut w).await.revision, 4);
}

async fn get_job_returns_the_current_state_to_both_parties(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(10).await;
    let mut worker = app.client(WORKER).await;
    worker.mark_complete(mark(10)).await.expect("mark");
    for who in [CLIENT, WORKER] {
        let job = app
            .client(who)
            .await
            .get_job(pb::GetJobRequest { job_id: 10 })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(job.revision, 2);
        assert_eq!(job.status(), JobStatus::AwaitingClientApproval);
        assert_eq!(job.client_id, CLIENT);
        assert_eq!(job.worker_id, WORKER);
    }
    // Services may read any job.
    let job = app
        .client_for(&service_token())
        .await
        .get_job(pb::GetJobRequest { job_id: 10 })
        .await
        .expect("service reads")
        .into_inner();
    assert_eq!(job.revision, 2);
}
