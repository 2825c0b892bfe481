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
    /// UNAVAILABLE: ends a WatchMyJobs stream on server shutdown; the client
    /// reconnects with `after_revisions` and misses nothing.
    #[error(
        "server is shutting down; reconnect and resume with after_revisions (the last revision of each job)"
    )]
    ShuttingDownResumeAll,
    /// PERMISSION_DENIED: WatchMyJobs with a service token; services have
    /// no jobs of their own.
    #[error("WatchMyJobs lists a user's own jobs; a service token has none (use WatchJob)")]
    NotAUser,
    /// DEADLINE_EXCEEDED: the caller's own deadline (`grpc-timeout`) passed.
    #[error(
        "the call's deadline (grpc-timeout) passed before it was answered; a change it asked for may still be committed: retry with the same request_id, or read the job, to find out"
    )]
    DeadlineExceeded,
    /// A limit on what one client may hold: see each variant for its code.
    #[error(transparent)]
    Limit(#[from] Limit),
}

impl Limit {
    /// A short, fixed name for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Limit::Watches { service: false, .. } => "watches_per_user",
            Limit::Watches { service: true, .. } => "watches_per_service",
            Limit::AnonymousStreams { .. } => "anonymous_streams",
            Limit::RequestReadTimeout { .. } => "request_read_timeout",
            Limit::MessageTooLarge { .. } => "message_size",
            Limit::Malformed => "malformed_message",
        }
    }
}

/// A limit a client reached. Each message names the limit, its value and
/// the flag that sets it, so a person can tell a script's runaway from a
/// limit set too low.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// RESOURCE_EXHAUSTED
    #[error(
        "too many open watch streams: a {} may hold at most {limit} at once (WatchJob and WatchMyJobs together; {}); close one first{}",
        if *.service { "service" } else { "user" },
        if *.service { "--max-watches-per-service" } else { "--max-watches-per-user" },
        if *.service { "" } else { ", or watch every job of yours on one WatchMyJobs stream" }
    )]
    Watches { limit: usize, service: bool },
    /// RESOURCE_EXHAUSTED
    #[error(
        "too many calls without a valid token are open on this connection: at most {limit} (--max-anonymous-streams); end some first"
    )]
    AnonymousStreams { limit: usize },
    /// DEADLINE_EXCEEDED: nothing was done with the request.
    #[error(
        "the request message did not arrive within {} s (--request-read-timeout-ms); nothing was done: send it again in one piece",
        .after.as_secs_f64()
    )]
    RequestReadTimeout { after: std::time::Duration },
    /// RESOURCE_EXHAUSTED
    #[error("the request message is {found} bytes; this method accepts at most {limit} bytes")]
    MessageTooLarge { found: String, limit: String },
    /// INVALID_ARGUMENT: the decoder's own text is not passed on.
    #[error(
        "the request message is not a valid protobuf message for this method; build the client from proto/jobstatus/v1/jobstatus.proto"
    )]
    Malformed,
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
