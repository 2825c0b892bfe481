//! The pure job state machine: who may do what to a job, and what it becomes.
//!
//! Everything here is synchronous and deterministic. This module must never
//! import tokio, sqlx or tonic, nor read the clock: callers pass `now` in, so
//! every rule can be unit tested without a runtime.

mod command;
mod error;
mod event;
mod job;

pub use command::{Caller, Command, Decision, Request, decide};
pub use error::DomainError;
pub use event::{Event, EventKind};
pub use job::{
    Job, JobId, JobStatus, PaymentMethod, ProofRef, Reason, RequestId, Role, ServiceId, UserId,
};

#[cfg(test)]
mod tests;
