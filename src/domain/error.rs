//! Why the state machine refused a command. Each variant documents the gRPC
//! code it becomes; the mapping itself lives in `grpc::status`.

use super::{JobId, JobStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// INVALID_ARGUMENT: a field is missing, empty or out of range.
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// NOT_FOUND: no such job. Only ever returned to service callers; users
    /// get [`DomainError::NoAccess`] so they cannot probe which ids exist.
    #[error("job {0} does not exist")]
    NotFound(JobId),
    /// PERMISSION_DENIED: the caller is neither the job's client nor its
    /// assigned worker (or the job does not exist: strangers are not told).
    #[error("job {0} does not exist or you are not its client or assigned worker")]
    NoAccess(JobId),
    /// PERMISSION_DENIED: the caller is a party to the job, but this action
    /// belongs to someone else.
    #[error("only {allowed} may {action}")]
    WrongRole {
        action: &'static str,
        allowed: &'static str,
    },
    /// ALREADY_EXISTS: CreateJob with an id that is taken.
    #[error("job {0} already exists")]
    AlreadyExists(JobId),
    /// FAILED_PRECONDITION: the action is not allowed in the job's current
    /// state; the message names that state.
    #[error("cannot {action}: job {job} is {status}; {hint}")]
    FailedPrecondition {
        job: JobId,
        status: JobStatus,
        action: &'static str,
        hint: String,
    },
    /// ABORTED: `expected_revision` did not match (AIP-154).
    #[error("job {job} is at revision {actual}, not the expected {expected}; reload it and retry")]
    RevisionMismatch {
        job: JobId,
        expected: i64,
        actual: i64,
    },
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}
