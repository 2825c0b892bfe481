//! Proto messages to domain requests (validating: bad input becomes
//! INVALID_ARGUMENT here, before anything else runs) and domain values back
//! to proto messages.

use prost_types::Timestamp;

use super::pb;
use crate::domain::{
    Caller, Command, DomainError, Event, EventKind, Job, JobId, JobStatus, PaymentMethod, ProofRef,
    Reason, Request, RequestId, Role, UserId,
};
use crate::jobs::{SnapshotReason, WatchItem};

pub fn job_id(raw: i64) -> Result<JobId, DomainError> {
    JobId::new(raw)
}

/// An empty string means "not given" for optional proto3 strings.
fn optional<T>(
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Result<Option<T>, DomainError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        parse(raw).map(Some)
    }
}

fn request_id(raw: &str) -> Result<Option<RequestId>, DomainError> {
    optional(raw, |r| RequestId::parse("request_id", r))
}

fn expected_revision(raw: Option<i64>) -> Result<Option<i64>, DomainError> {
    match raw {
        Some(r) if r < 1 => Err(DomainError::invalid(
            "expected_revision",
            format!("must be at least 1 when given, got {r}"),
        )),
        other => Ok(other),
    }
}

/// Builds a request from the fields every mutating RPC shares.
fn request(
    caller: Caller,
    raw_job_id: i64,
    command: Command,
    raw_request_id: &str,
    raw_expected: Option<i64>,
) -> Result<Request, DomainError> {
    Ok(Request {
        job_id: job_id(raw_job_id)?,
        caller,
        command,
        request_id: request_id(raw_request_id)?,
        expected_revision: expected_revision(raw_expected)?,
    })
}

fn payment_method(raw: i32) -> Result<PaymentMethod, DomainError> {
    match pb::PaymentMethod::try_from(raw) {
        Ok(pb::PaymentMethod::Gcash) => Ok(PaymentMethod::Gcash),
        Ok(pb::PaymentMethod::Cash) => Ok(PaymentMethod::Cash),
        Ok(pb::PaymentMethod::Unspecified) => Err(DomainError::invalid(
            "payment_method",
            "is required: choose PAYMENT_METHOD_GCASH or PAYMENT_METHOD_CASH",
        )),
        Err(_) => Err(DomainError::invalid(
            "payment_method",
            format!("unknown value {raw}: choose PAYMENT_METHOD_GCASH or PAYMENT_METHOD_CASH"),
        )),
    }
}

pub fn mark_complete(caller: Caller, m: pb::MarkCompleteRequest) -> Result<Request, DomainError> {
    request(
        caller,
        m.job_id,
        Command::MarkComplete,
        &m.request_id,
        m.expected_revision,
    )
}

pub fn approve_completion(
    caller: Caller,
    m: pb::ApproveCompletionRequest,
) -> Result<Request, DomainError> {
    let command = Command::ApproveCompletion {
        method: payment_method(m.payment_method)?,
    };
    request(
        caller,
        m.job_id,
        command,
        &m.request_id,
        m.expected_revision,
    )
}

pub fn request_changes(
    caller: Caller,
    m: pb::RequestChangesRequest,
) -> Result<Request, DomainError> {
    let command = Command::RequestChanges {
        reason: Reason::parse("reason", m.reason)?,
    };
    request(
        caller,
        m.job_id,
        command,
        &m.request_id,
        m.expected_revision,
    )
}

pub fn submit_payment_proof(
    caller: Caller,
    m: pb::SubmitPaymentProofRequest,
) -> Result<Request, DomainError> {
    let command = Command::SubmitPaymentProof {
        proof: ProofRef::parse("proof_ref", m.proof_ref)?,
    };
    request(
        caller,
        m.job_id,
        command,
        &m.request_id,
        m.expected_revision,
    )
}

pub fn confirm_payment(
    caller: Caller,
    m: pb::ConfirmPaymentRequest,
) -> Result<Request, DomainError> {
    request(
        caller,
        m.job_id,
        Command::ConfirmPayment,
        &m.request_id,
        m.expected_revision,
    )
}

pub fn create_job(caller: Caller, m: pb::CreateJobRequest) -> Result<Request, DomainError> {
    let command = Command::Create {
        client: UserId::parse("client_id", m.client_id)?,
        worker: optional(&m.worker_id, |w| UserId::parse("worker_id", w))?,
    };
    request(caller, m.job_id, command, &m.request_id, None)
}

pub fn assign_worker(caller: Caller, m: pb::AssignWorkerRequest) -> Result<Request, DomainError> {
    let command = Command::AssignWorker {
        worker: UserId::parse("worker_id", m.worker_id)?,
    };
    request(
        caller,
        m.job_id,
        command,
        &m.request_id,
        m.expected_revision,
    )
}

pub fn cancel_job(caller: Caller, m: pb::CancelJobRequest) -> Result<Request, DomainError> {
    let command = Command::Cancel {
        reason: optional(&m.reason, |r| Reason::parse("reason", r))?,
    };
    request(
        caller,
        m.job_id,
        command,
        &m.request_id,
        m.expected_revision,
    )
}

/// `after_revision`: absent, or >= 0 (0 replays the whole log).
pub fn after_revision(raw: Option<i64>) -> Result<Option<i64>, DomainError> {
    match raw {
        Some(r) if r < 0 => Err(DomainError::invalid(
            "after_revision",
            format!("must be 0 or more when given, got {r}"),
        )),
        other => Ok(other),
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // Always in 0..1e9 for a valid DateTime.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn status(s: JobStatus) -> pb::JobStatus {
    match s {
        JobStatus::Open => pb::JobStatus::Open,
        JobStatus::InProgress => pb::JobStatus::InProgress,
        JobStatus::AwaitingClientApproval => pb::JobStatus::AwaitingClientApproval,
        JobStatus::AwaitingPayment => pb::JobStatus::AwaitingPayment,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

fn method(m: Option<PaymentMethod>) -> pb::PaymentMethod {
    match m {
        None => pb::PaymentMethod::Unspecified,
        Some(PaymentMethod::Gcash) => pb::PaymentMethod::Gcash,
        Some(PaymentMethod::Cash) => pb::PaymentMethod::Cash,
    }
}

fn event_type(k: EventKind) -> pb::EventType {
    match k {
        EventKind::JobCreated => pb::EventType::JobCreated,
        EventKind::WorkerAssigned => pb::EventType::WorkerAssigned,
        EventKind::WorkerMarkedComplete => pb::EventType::WorkerMarkedComplete,
        EventKind::ClientRequestedChanges => pb::EventType::ClientRequestedChanges,
        EventKind::ClientApprovedCompletion => pb::EventType::ClientApprovedCompletion,
        EventKind::PaymentProofSubmitted => pb::EventType::PaymentProofSubmitted,
        EventKind::PaymentConfirmed => pb::EventType::PaymentConfirmed,
        EventKind::JobCancelled => pb::EventType::JobCancelled,
    }
}

fn role(r: Role) -> pb::ActorRole {
    match r {
        Role::Client => pb::ActorRole::Client,
        Role::Worker => pb::ActorRole::Worker,
        Role::Service => pb::ActorRole::Service,
    }
}

fn text(value: Option<&str>) -> String {
    value.map(str::to_owned).unwrap_or_default()
}

pub fn job(j: &Job) -> pb::Job {
    pb::Job {
        job_id: j.id.get(),
        client_id: j.client_id.as_str().to_owned(),
        worker_id: text(j.worker_id.as_ref().map(UserId::as_str)),
        status: status(j.status).into(),
        payment_method: method(j.payment_method).into(),
        worker_marked_complete: j.worker_marked_complete(),
        client_marked_complete: j.client_marked_complete(),
        awaiting_client_verification: j.awaiting_client_verification(),
        payment_proof_ref: text(j.payment_proof.as_ref().map(ProofRef::as_str)),
        change_request_reason: text(j.change_request_reason.as_ref().map(Reason::as_str)),
        cancel_reason: text(j.cancel_reason.as_ref().map(Reason::as_str)),
        revision: j.revision,
        created_at: Some(timestamp(j.created_at)),
        updated_at: Some(timestamp(j.updated_at)),
    }
}

pub fn event(e: &Event) -> pb::JobEvent {
    let j = &e.job;
    let reason = match e.kind {
        EventKind::ClientRequestedChanges => {
            text(j.change_request_reason.as_ref().map(Reason::as_str))
        }
        EventKind::JobCancelled => text(j.cancel_reason.as_ref().map(Reason::as_str)),
        _ => String::new(),
    };
    pb::JobEvent {
        event: event_type(e.kind).into(),
        job_id: j.id.get(),
        revision: j.revision,
        worker_marked_complete: j.worker_marked_complete(),
        client_marked_complete: j.client_marked_complete(),
        awaiting_client_verification: j.awaiting_client_verification(),
        payment_method: method(j.payment_method).into(),
        timestamp: Some(timestamp(e.at())),
        status: status(j.status).into(),
        actor_id: e.actor_id.clone(),
        actor_role: role(e.actor_role).into(),
        request_id: text(e.request_id.as_ref().map(RequestId::as_str)),
        job: Some(job(j)),
        reason,
    }
}

pub fn watch_item(item: &WatchItem) -> pb::WatchJobResponse {
    use pb::watch_job_response::Kind;
    let kind = match item {
        WatchItem::Snapshot { job: j, reason } => Kind::Snapshot(pb::Snapshot {
            job: Some(job(j)),
            reason: match reason {
                SnapshotReason::Initial => pb::SnapshotReason::Initial,
                SnapshotReason::Resync => pb::SnapshotReason::Resync,
            }
            .into(),
        }),
        WatchItem::Event(e) => Kind::Event(event(e)),
        WatchItem::Heartbeat { revision, at } => Kind::Heartbeat(pb::Heartbeat {
            revision: *revision,
            server_time: Some(timestamp(*at)),
        }),
    };
    pb::WatchJobResponse { kind: Some(kind) }
}

/// One WatchMyJobs message.
pub fn my_jobs_item(item: &crate::my_jobs::MyJobsItem) -> pb::WatchMyJobsResponse {
    use crate::my_jobs::MyJobsItem;
    use pb::watch_my_jobs_response::Kind;
    let kind = match item {
        MyJobsItem::Snapshot { job: j, reason } => Kind::Snapshot(pb::Snapshot {
            job: Some(job(j)),
            reason: match reason {
                SnapshotReason::Initial => pb::SnapshotReason::Initial,
                SnapshotReason::Resync => pb::SnapshotReason::Resync,
            }
            .into(),
        }),
        MyJobsItem::Event(e) => Kind::Event(event(e)),
        MyJobsItem::Heartbeat { at } => Kind::Heartbeat(pb::Heartbeat {
            revision: 0,
            server_time: Some(timestamp(*at)),
        }),
        MyJobsItem::Left {
            job,
            revision,
            cause,
        } => Kind::Left(pb::JobLeft {
            job_id: job.get(),
            revision: *revision,
            cause: cause.map_or(pb::EventType::Unspecified, event_type).into(),
        }),
    };
    pb::WatchMyJobsResponse { kind: Some(kind) }
}
