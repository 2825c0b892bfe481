//! `decide`: the one function that says whether a command is allowed and
//! what the job becomes. Storage calls it inside the job's transaction.

use chrono::{DateTime, Utc};

use super::{
    DomainError, Event, EventKind, Job, JobId, JobStatus, PaymentMethod, ProofRef, Reason,
    RequestId, Role, ServiceId, UserId,
};

/// Who is calling, as proven by their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person: a client or a worker, depending on the job.
    User(UserId),
    /// A platform backend service holding a service token.
    Service(ServiceId),
}

impl Caller {
    pub fn id(&self) -> &str {
        match self {
            Caller::User(u) => u.as_str(),
            Caller::Service(s) => s.as_str(),
        }
    }

    /// The caller's role on `job`, or `NoAccess` for a stranger. Services
    /// may act on (and read) every job.
    pub fn role_on(&self, job: &Job) -> Result<Role, DomainError> {
        match self {
            Caller::Service(_) => Ok(Role::Service),
            Caller::User(u) => job.role_of(u).ok_or(DomainError::NoAccess(job.id)),
        }
    }

    /// The error for a job that does not exist: services may know, users
    /// get the same answer as for someone else's job.
    pub fn missing(&self, id: JobId) -> DomainError {
        match self {
            Caller::Service(_) => DomainError::NotFound(id),
            Caller::User(_) => DomainError::NoAccess(id),
        }
    }
}

/// What a caller asks for. Arguments are already validated types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create {
        client: UserId,
        worker: Option<UserId>,
    },
    AssignWorker {
        worker: UserId,
    },
    MarkComplete,
    RequestChanges {
        reason: Reason,
    },
    ApproveCompletion {
        method: PaymentMethod,
    },
    SubmitPaymentProof {
        proof: ProofRef,
    },
    ConfirmPayment,
    Cancel {
        reason: Option<Reason>,
    },
}

impl Command {
    /// The event this command produces when it changes the job.
    pub fn event_kind(&self) -> EventKind {
        match self {
            Command::Create { .. } => EventKind::JobCreated,
            Command::AssignWorker { .. } => EventKind::WorkerAssigned,
            Command::MarkComplete => EventKind::WorkerMarkedComplete,
            Command::RequestChanges { .. } => EventKind::ClientRequestedChanges,
            Command::ApproveCompletion { .. } => EventKind::ClientApprovedCompletion,
            Command::SubmitPaymentProof { .. } => EventKind::PaymentProofSubmitted,
            Command::ConfirmPayment => EventKind::PaymentConfirmed,
            Command::Cancel { .. } => EventKind::JobCancelled,
        }
    }
}

impl Command {
    /// Whether `event` is what this command would have produced: used to
    /// tell a retry (same request id, same request) from a reuse of the id
    /// for a different request (AIP-155).
    pub fn is_answered_by(&self, event: &Event) -> bool {
        let job = &event.job;
        event.kind == self.event_kind()
            && match self {
                Command::Create { client, worker } => {
                    &job.client_id == client && job.worker_id.as_ref() == worker.as_ref()
                }
                Command::AssignWorker { worker } => job.worker_id.as_ref() == Some(worker),
                Command::RequestChanges { reason } => {
                    job.change_request_reason.as_ref() == Some(reason)
                }
                Command::ApproveCompletion { method } => job.payment_method == Some(*method),
                Command::SubmitPaymentProof { proof } => job.payment_proof.as_ref() == Some(proof),
                Command::Cancel { reason } => &job.cancel_reason == reason,
                Command::MarkComplete | Command::ConfirmPayment => true,
            }
    }
}

/// A command with everything needed to decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub job_id: JobId,
    pub caller: Caller,
    pub command: Command,
    pub request_id: Option<RequestId>,
    pub expected_revision: Option<i64>,
}

/// The outcome of an allowed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The job changed: store the event (it holds the new job) and publish it.
    Changed(Event),
    /// An idempotent repeat: nothing to store, answer with the job as it is.
    Unchanged(Job),
}

/// Decides `command` by `caller` on the job as it is now (`None` if there is
/// no such job). Checks run in a fixed order: existence, access, expected
/// revision, then the command's own rules, so that a stranger learns nothing
/// about a job's state.
pub fn decide(
    current: Option<&Job>,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<Decision, DomainError> {
    let Request {
        job_id,
        caller,
        command,
        request_id,
        expected_revision,
    } = request;
    let (job_id, request_id) = (*job_id, request_id.as_ref());
    let Some(job) = current else {
        return create(job_id, caller, command, request_id, now);
    };
    if let Command::Create { .. } = command {
        return match caller {
            Caller::Service(_) => Err(DomainError::AlreadyExists(job_id)),
            Caller::User(_) => Err(create_role_error()),
        };
    }
    let role = caller.role_on(job)?;
    if let Some(expected) = *expected_revision
        && expected != job.revision
    {
        return Err(DomainError::RevisionMismatch {
            job: job.id,
            expected,
            actual: job.revision,
        });
    }
    let Some(next) = transition(job, role, command)? else {
        return Ok(Decision::Unchanged(job.clone()));
    };
    let job = Job {
        revision: job.revision + 1,
        updated_at: now,
        ..next
    };
    Ok(Decision::Changed(Event {
        kind: command.event_kind(),
        actor_id: caller.id().to_owned(),
        actor_role: role,
        request_id: request_id.cloned(),
        job,
    }))
}

fn create_role_error() -> DomainError {
    DomainError::WrongRole {
        action: "create jobs",
        allowed: "a platform service",
    }
}

fn create(
    job_id: JobId,
    caller: &Caller,
    command: &Command,
    request_id: Option<&RequestId>,
    now: DateTime<Utc>,
) -> Result<Decision, DomainError> {
    let Command::Create { client, worker } = command else {
        return Err(caller.missing(job_id));
    };
    if let Caller::User(_) = caller {
        return Err(create_role_error());
    }
    if worker.as_ref() == Some(client) {
        return Err(DomainError::invalid(
            "worker_id",
            "the worker must be a different user from the client",
        ));
    }
    let job = Job {
        id: job_id,
        client_id: client.clone(),
        worker_id: worker.clone(),
        status: if worker.is_some() {
            JobStatus::InProgress
        } else {
            JobStatus::Open
        },
        payment_method: None,
        payment_proof: None,
        change_request_reason: None,
        cancel_reason: None,
        revision: 1,
        created_at: now,
        updated_at: now,
    };
    Ok(Decision::Changed(Event {
        kind: EventKind::JobCreated,
        actor_id: caller.id().to_owned(),
        actor_role: Role::Service,
        request_id: request_id.cloned(),
        job,
    }))
}

/// The job after `command`, `None` for an idempotent repeat. Revision and
/// timestamps are set by the caller.
fn transition(job: &Job, role: Role, command: &Command) -> Result<Option<Job>, DomainError> {
    use JobStatus::*;
    let refuse = |action: &'static str, hint: String| DomainError::FailedPrecondition {
        job: job.id,
        status: job.status,
        action,
        hint,
    };
    let require = |wanted: Role, action: &'static str, allowed: &'static str| {
        if role == wanted {
            Ok(())
        } else {
            Err(DomainError::WrongRole { action, allowed })
        }
    };
    match command {
        Command::Create { .. } => Err(DomainError::AlreadyExists(job.id)),
        Command::AssignWorker { worker } => {
            const ACTION: &str = "assign a worker";
            require(Role::Service, ACTION, "a platform service")?;
            if worker == &job.client_id {
                return Err(DomainError::invalid(
                    "worker_id",
                    "the worker must be a different user from the client",
                ));
            }
            match job.status {
                InProgress if job.worker_id.as_ref() == Some(worker) => Ok(None),
                Open | InProgress => Ok(Some(Job {
                    worker_id: Some(worker.clone()),
                    status: InProgress,
                    ..job.clone()
                })),
                _ => Err(refuse(
                    ACTION,
                    "workers can only be assigned while a job is open or in progress".into(),
                )),
            }
        }
        Command::MarkComplete => {
            const ACTION: &str = "mark the job complete";
            require(Role::Worker, ACTION, "the assigned worker")?;
            match job.status {
                InProgress => Ok(Some(Job {
                    status: AwaitingClientApproval,
                    ..job.clone()
                })),
                AwaitingClientApproval | AwaitingPayment | Completed => Ok(None),
                Open | Cancelled => Err(refuse(
                    ACTION,
                    "only a job in progress can be marked complete".into(),
                )),
            }
        }
        Command::RequestChanges { reason } => {
            const ACTION: &str = "request changes";
            require(Role::Client, ACTION, "the job's client")?;
            match job.status {
                AwaitingClientApproval => Ok(Some(Job {
                    status: InProgress,
                    change_request_reason: Some(reason.clone()),
                    ..job.clone()
                })),
                _ => Err(refuse(
                    ACTION,
                    "changes can only be requested while the job awaits your approval".into(),
                )),
            }
        }
        Command::ApproveCompletion { method } => {
            const ACTION: &str = "approve completion";
            require(Role::Client, ACTION, "the job's client")?;
            match (job.status, job.payment_method) {
                (AwaitingClientApproval, _) => Ok(Some(Job {
                    status: AwaitingPayment,
                    payment_method: Some(*method),
                    ..job.clone()
                })),
                (AwaitingPayment | Completed, Some(approved)) if approved == *method => Ok(None),
                (AwaitingPayment | Completed, Some(approved)) => Err(refuse(
                    ACTION,
                    format!(
                        "completion was already approved with {approved}; the payment method cannot be changed"
                    ),
                )),
                _ => Err(refuse(
                    ACTION,
                    "the worker has not marked the job complete".into(),
                )),
            }
        }
        Command::SubmitPaymentProof { proof } => {
            const ACTION: &str = "submit a proof of payment";
            require(Role::Client, ACTION, "the job's client")?;
            match (job.status, job.payment_method) {
                (AwaitingPayment | Completed, Some(PaymentMethod::Gcash)) => Err(refuse(
                    ACTION,
                    "proofs are only for CASH payments; GCASH payments are confirmed by the payment service".into(),
                )),
                (AwaitingPayment | Completed, _) if job.payment_proof.as_ref() == Some(proof) => {
                    Ok(None)
                }
                (AwaitingPayment, _) => Ok(Some(Job {
                    payment_proof: Some(proof.clone()),
                    ..job.clone()
                })),
                (Completed, _) => Err(refuse(ACTION, "the payment was already confirmed".into())),
                _ => Err(refuse(
                    ACTION,
                    "a proof can only be submitted after you approve completion with CASH".into(),
                )),
            }
        }
        Command::ConfirmPayment => {
            const ACTION: &str = "confirm payment";
            if role == Role::Client {
                return Err(DomainError::WrongRole {
                    action: ACTION,
                    allowed: "the worker (CASH) or the payment service (GCASH)",
                });
            }
            match job.payment_method {
                Some(PaymentMethod::Cash) => require(
                    Role::Worker,
                    "confirm a CASH payment",
                    "the assigned worker",
                )?,
                Some(PaymentMethod::Gcash) => require(
                    Role::Service,
                    "confirm a GCASH payment",
                    "the payment service",
                )?,
                None => {}
            }
            match (job.status, job.payment_method) {
                (Completed, _) => Ok(None),
                (AwaitingPayment, Some(PaymentMethod::Cash)) if job.payment_proof.is_none() => {
                    Err(refuse(
                        ACTION,
                        "the client has not submitted a proof of payment yet".into(),
                    ))
                }
                (AwaitingPayment, _) => Ok(Some(Job {
                    status: Completed,
                    ..job.clone()
                })),
                _ => Err(refuse(
                    ACTION,
                    "payment can only be confirmed after the client approves completion".into(),
                )),
            }
        }
        Command::Cancel { reason } => {
            const ACTION: &str = "cancel the job";
            require(Role::Service, ACTION, "a platform service")?;
            match job.status {
                Cancelled => Ok(None),
                Completed => Err(refuse(ACTION, "a completed job cannot be cancelled".into())),
                _ => Ok(Some(Job {
                    status: Cancelled,
                    cancel_reason: reason.clone(),
                    ..job.clone()
                })),
            }
        }
    }
}
