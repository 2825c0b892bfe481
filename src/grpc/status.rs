//! The one place where errors become gRPC statuses. Every variant is
//! matched by name (no wildcard), so a new error cannot silently map to the
//! wrong code. Internal details are logged, never sent.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::domain::DomainError;
use crate::error::AppError;
use crate::storage::StorageError;

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        let message = err.to_string();
        let code = match &err {
            AppError::Domain(d) => match &**d {
                DomainError::InvalidArgument { .. } => Code::InvalidArgument,
                DomainError::NotFound(_) => Code::NotFound,
                DomainError::NoAccess(_) | DomainError::WrongRole { .. } => Code::PermissionDenied,
                DomainError::AlreadyExists(_) => Code::AlreadyExists,
                DomainError::FailedPrecondition { .. } => Code::FailedPrecondition,
                DomainError::RevisionMismatch { .. } => Code::Aborted,
            },
            AppError::Storage(s) => match &**s {
                StorageError::Rejected(refusal) => {
                    return AppError::from(refusal.clone()).into();
                }
                StorageError::Unavailable(detail) => {
                    // The detail may name hosts, users or SQL: log it only.
                    tracing::warn!(error = %detail, "database unavailable");
                    return Status::unavailable(
                        "database unavailable: the service cannot reach its database; retry shortly",
                    );
                }
                StorageError::Corrupt(_) | StorageError::Internal(_) => {
                    tracing::error!(error = %s, "internal storage error");
                    return Status::internal("internal error; it has been logged");
                }
            },
            AppError::Auth(a) => match a {
                AuthError::NotAService => Code::PermissionDenied,
                AuthError::Missing
                | AuthError::NotBearer
                | AuthError::TooLarge
                | AuthError::Expired
                | AuthError::NotAccessToken
                | AuthError::NoSubject
                | AuthError::Invalid(_) => Code::Unauthenticated,
            },
            AppError::RequestIdReused { .. } => Code::InvalidArgument,
            AppError::AccessLost(_) => Code::PermissionDenied,
            AppError::ShuttingDown { .. } => Code::Unavailable,
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                return Status::internal("internal error; it has been logged");
            }
        };
        Status::new(code, message)
    }
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        AppError::from(err).into()
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        AppError::from(err).into()
    }
}
