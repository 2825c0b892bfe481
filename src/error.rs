//! The application's error type: everything a call can fail with. It is
//! turned into a `tonic::Status` in exactly one place, `grpc::status`.

use crate::auth::AuthError;
use crate::domain::{DomainError, JobId};
use crate::storage::StorageError;

///
/// The two largest variants are boxed: every watch stream's state holds
/// room for an `AppError` in several places for its whole life, and they
/// are rare. 32 bytes instead of 64.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// The state machine refused: see each variant for its code.
    #[error(transparent)]
    Domain(Box<DomainError>),
    /// The database failed: UNAVAILABLE, or INTERNAL (details logged only).
    #[error(transparent)]
    Storage(Box<StorageError>),
    /// UNAUTHENTICATED, or PERMISSION_DENIED for a user token on an admin call.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// INVALID_ARGUMENT: the request id was already used for another request.
    #[error(
        "request_id {request_id:?} was already used for a different request; use a new request_id"
    )]
    RequestIdReused { request_id: String },
    /// PERMISSION_DENIED: ends a watch when the caller stops being a party
    /// (a worker reassigned away).
    #[error("you no longer have access to job {0}")]
    AccessLost(JobId),
    /// INTERNAL: a bug (a task that panicked); details are logged only.
    #[error("internal error: {0}")]
    Internal(String),
    /// UNAVAILABLE: ends a watch on server shutdown; the client reconnects
    /// with `after_revision` and misses nothing.
    #[error(
        "server is shutting down; reconnect and resume job {job} with after_revision={revision}"
    )]
    ShuttingDown { job: JobId, revision: i64 },
}

impl From<DomainError> for AppError {
    fn from(err: DomainError) -> Self {
        AppError::Domain(Box::new(err))
    }
}

impl From<StorageError> for AppError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Rejected(refusal) => refusal.into(),
            other => AppError::Storage(Box::new(other)),
        }
    }
}
