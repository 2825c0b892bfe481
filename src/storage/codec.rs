//! Rows to domain values and back, shared by every backend. The only place
//! that knows how a job and an event look in a table.

use chrono::{DateTime, SubsecRound, Utc};

use super::StorageError;
use crate::domain::{Event, Job, JobId, JobStatus, PaymentMethod, ProofRef, Reason, Role, UserId};

/// The `jobs` columns, in the order every query names them. A macro so
/// that queries stay `&'static str` literals (sqlx's injection guard).
macro_rules! job_columns {
    () => {
        "job_id, client_id, worker_id, status, payment_method, payment_proof, \
         change_request_reason, cancel_reason, revision, created_at, updated_at"
    };
}
pub(super) use job_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    pub(super) job_id: i64,
    pub(super) client_id: String,
    pub(super) worker_id: Option<String>,
    pub(super) status: String,
    pub(super) payment_method: Option<String>,
    pub(super) payment_proof: Option<String>,
    pub(super) change_request_reason: Option<String>,
    pub(super) cancel_reason: Option<String>,
    pub(super) revision: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

fn corrupt(what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(what.to_string())
}

impl TryFrom<JobRow> for Job {
    type Error = StorageError;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let id = JobId::new(row.job_id).map_err(corrupt)?;
        let status = JobStatus::parse(&row.status)
            .ok_or_else(|| corrupt(format!("job {id}: unknown status {:?}", row.status)))?;
        let payment_method = row
            .payment_method
            .map(|m| {
                PaymentMethod::parse(&m)
                    .ok_or_else(|| corrupt(format!("job {id}: unknown payment method {m:?}")))
            })
            .transpose()?;
        Ok(Job {
            id,
            client_id: UserId::parse("client_id", row.client_id).map_err(corrupt)?,
            worker_id: row
                .worker_id
                .map(|w| UserId::parse("worker_id", w))
                .transpose()
                .map_err(corrupt)?,
            status,
            payment_method,
            payment_proof: row
                .payment_proof
                .map(|p| ProofRef::parse("payment_proof", p))
                .transpose()
                .map_err(corrupt)?,
            change_request_reason: row
                .change_request_reason
                .map(|r| Reason::parse("change_request_reason", r))
                .transpose()
                .map_err(corrupt)?,
            cancel_reason: row
                .cancel_reason
                .map(|r| Reason::parse("cancel_reason", r))
                .transpose()
                .map_err(corrupt)?,
            revision: row.revision,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(super) fn role_str(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Worker => "worker",
        Role::Service => "service",
    }
}

pub(super) fn encode_event(event: &Event) -> Result<String, StorageError> {
    serde_json::to_string(event).map_err(|e| corrupt(format!("cannot encode event: {e}")))
}

pub(super) fn decode_event(payload: &str) -> Result<Event, StorageError> {
    serde_json::from_str(payload).map_err(|e| corrupt(format!("cannot decode event: {e}")))
}

/// Now, at the precision every backend stores (PostgreSQL keeps
/// microseconds), so a job read back equals the job that was written.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
