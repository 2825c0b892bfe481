//! The one place where errors become gRPC statuses. Every variant is
//! matched by name (no wildcard), so a new error cannot silently map to the
//! wrong code. Internal details are logged, never sent.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::domain::DomainError;
use crate::error::{AppError, Limit};
use crate::storage::{Condition, StorageError};
use crate::telemetry::LogBudget;

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
                StorageError::Unavailable(condition, detail) => {
                    metrics::counter!(crate::telemetry::metrics::STORAGE_UNAVAILABLE,
                        "condition" => condition.name())
                    .increment(1);
                    // The detail may name hosts, users or SQL: log it only,
                    // and once a second at most, with how many were left
                    // out: a full disk fails every call.
                    if let Some(suppressed) = unavailable_log().admit() {
                        tracing::warn!(condition = condition.name(), error = %detail, suppressed, "database unavailable");
                    }
                    return Status::unavailable(unavailable_message(*condition));
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
            AppError::Limit(limit) => {
                metrics::counter!(crate::telemetry::metrics::LIMITS_HIT, "limit" => limit.name())
                    .increment(1);
                match limit {
                    Limit::Watches { .. }
                    | Limit::AnonymousStreams { .. }
                    | Limit::MessageTooLarge { .. } => Code::ResourceExhausted,
                    Limit::RequestReadTimeout { .. } => Code::DeadlineExceeded,
                    Limit::Malformed => Code::InvalidArgument,
                }
            }
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                return Status::internal("internal error; it has been logged");
            }
        };
        Status::new(code, message)
    }
}

/// What a caller is told when the database cannot serve: the condition,
/// whether anything was written, and what to do.
fn unavailable_message(condition: Condition) -> &'static str {
    match condition {
        Condition::Unreachable => {
            "database unavailable: the service cannot reach its database; nothing was written; retry shortly"
        }
        Condition::Locked => {
            "database busy: it stayed locked longer than the service waits; nothing was written; retry shortly"
        }
        Condition::DiskFull => {
            "database unavailable: its disk is full; nothing was written; reads still work; retry once space is freed"
        }
        Condition::IoError => {
            "database unavailable: it reported an I/O error; nothing was written; retry shortly"
        }
        Condition::ReadOnly => {
            "database unavailable: it accepts only reads (a standby, or a read-only file); nothing was written; retry shortly"
        }
        Condition::TimedOut => {
            "database unavailable: no answer within the service's database timeout (--db-timeout-ms); a change may still be committed: retry with the same request_id to find out"
        }
        Condition::ShuttingDown => {
            "the service is shutting down; retry (with the same request_id for changes) in a moment or on another replica"
        }
    }
}

fn unavailable_log() -> &'static LogBudget {
    static LOG: std::sync::OnceLock<LogBudget> = std::sync::OnceLock::new();
    LOG.get_or_init(|| LogBudget::per_second(1))
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
