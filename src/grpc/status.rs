//! The one place where errors become gRPC statuses. Every variant is
//! matched by name (no wildcard), so a new error cannot silently map to the
//! wrong code. Internal details are logged, never sent.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::domain::DomainError;
use crate::error::{AppError, Limit};
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
                | AuthError::Duplicate
                | AuthError::NotYetValid
                | AuthError::IssuedInFuture
                | AuthError::CriticalHeader
                | AuthError::TooLarge
                | AuthError::Expired
                | AuthError::NotAccessToken
                | AuthError::NoSubject
                | AuthError::Invalid(_) => Code::Unauthenticated,
            },
            AppError::RequestIdReused { .. } => Code::InvalidArgument,
            AppError::AccessLost(_) => Code::PermissionDenied,
            AppError::ShuttingDown { .. } | AppError::ShuttingDownResumeAll => Code::Unavailable,
            AppError::NotAUser => Code::PermissionDenied,
            AppError::DeadlineExceeded => Code::DeadlineExceeded,
            AppError::Limit(limit) => match limit {
                Limit::Watches { .. }
                | Limit::AnonymousStreams { .. }
                | Limit::MessageTooLarge { .. } => Code::ResourceExhausted,
                Limit::RequestReadTimeout { .. } => Code::DeadlineExceeded,
                Limit::Malformed => Code::InvalidArgument,
            },
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

/// How prost's decode errors begin when tonic turns them into statuses.
const PROST_DECODE_ERROR: &str = "failed to decode Protobuf message";

/// Statuses tonic makes itself, before any handler runs, said the way this
/// service promises: its size check answers OUT_OF_RANGE (gRPC's guidance
/// and grpc-go say RESOURCE_EXHAUSTED), and a message prost cannot decode
/// is INTERNAL carrying the decoder's text (INTERNAL means a bug of ours
/// and carries no details). `None` for every other status: they are ours.
pub fn restate(status: &Status) -> Option<Status> {
    let limit = match status.code() {
        // "Error, decoded message length too large: found N bytes, the limit is: M bytes"
        Code::OutOfRange => {
            let message = status.message();
            let number_after = |marker: &str| {
                message
                    .split_once(marker)
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .unwrap_or("more than allowed")
                    .to_owned()
            };
            Limit::MessageTooLarge {
                found: number_after("found "),
                limit: number_after("the limit is: "),
            }
        }
        Code::Internal if status.message().starts_with(PROST_DECODE_ERROR) => Limit::Malformed,
        _ => return None,
    };
    Some(AppError::Limit(limit).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn tonic_size_errors_become_resource_exhausted_with_the_figures() {
        let tonic_says = Status::out_of_range(
            "Error, decoded message length too large: found 4194303 bytes, the limit is: 4096 bytes",
        );
        let ours = restate(&tonic_says).unwrap();
        assert_eq!(ours.code(), Code::ResourceExhausted);
        assert_eq!(
            ours.message(),
            "the request message is 4194303 bytes; this method accepts at most 4096 bytes"
        );
    }

    /// The decoder's own error, made the way tonic makes it, is recognised,
    /// and its text does not reach the caller.
    #[test]
    fn decode_errors_become_invalid_argument_without_decoder_text() {
        let garbage = [0xff_u8, 0xff, 0xff];
        let err = crate::grpc::pb::GetJobRequest::decode(&garbage[..]).unwrap_err();
        let tonic_says = Status::internal(err.to_string());
        let ours = restate(&tonic_says).unwrap();
        assert_eq!(ours.code(), Code::InvalidArgument);
        assert!(!ours.message().contains(&err.to_string()));
        // Our own INTERNAL answers are left alone.
        assert!(restate(&Status::internal("internal error; it has been logged")).is_none());
        assert!(restate(&Status::not_found("x")).is_none());
    }
}
