//! Events: the durable record of one change to one job, and what watchers get.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Job, JobId, RequestId, Role};

/// What happened. One variant per row of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    JobCreated,
    WorkerAssigned,
    WorkerMarkedComplete,
    ClientRequestedChanges,
    ClientApprovedCompletion,
    PaymentProofSubmitted,
    PaymentConfirmed,
    JobCancelled,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::JobCreated,
        EventKind::WorkerAssigned,
        EventKind::WorkerMarkedComplete,
        EventKind::ClientRequestedChanges,
        EventKind::ClientApprovedCompletion,
        EventKind::PaymentProofSubmitted,
        EventKind::PaymentConfirmed,
        EventKind::JobCancelled,
    ];

    /// The event's wire name (`worker_marked_complete`, ...); also what the
    /// database stores.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobCreated => "job_created",
            EventKind::WorkerAssigned => "worker_assigned",
            EventKind::WorkerMarkedComplete => "worker_marked_complete",
            EventKind::ClientRequestedChanges => "client_requested_changes",
            EventKind::ClientApprovedCompletion => "client_approved_completion",
            EventKind::PaymentProofSubmitted => "payment_proof_submitted",
            EventKind::PaymentConfirmed => "payment_confirmed",
            EventKind::JobCancelled => "job_cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One committed change: the job as it is after it, who did it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// A user id for clients and workers, a service name for services.
    pub actor_id: String,
    pub actor_role: Role,
    pub request_id: Option<RequestId>,
    /// The job after the change; its revision is the event's revision.
    pub job: Job,
}

impl Event {
    pub fn job_id(&self) -> JobId {
        self.job.id
    }

    pub fn revision(&self) -> i64 {
        self.job.revision
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.job.updated_at
    }
}
