//! A job, its identifiers and its status. Constructors validate, so a value
//! of these types is always well formed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

use super::DomainError;

/// The marketplace's job id. Always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(i64);

impl JobId {
    pub fn new(id: i64) -> Result<Self, DomainError> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(DomainError::invalid(
                "job_id",
                format!("must be a positive integer, got {id}"),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Generates a validated, non-empty, length-capped string newtype.
macro_rules! bounded_string {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted, in characters.
            pub const MAX_CHARS: usize = $max;

            /// Validates `value` as the field called `field` in error messages.
            pub fn parse(field: &'static str, value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                if value.trim().is_empty() {
                    return Err(DomainError::invalid(field, "must not be empty"));
                }
                let chars = value.chars().count();
                if chars > $max {
                    return Err(DomainError::invalid(
                        field,
                        format!("must be at most {} characters, got {chars}", $max),
                    ));
                }
                if value.chars().any(char::is_control) {
                    return Err(DomainError::invalid(field, "must not contain control characters"));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_string!(
    /// An opaque user id (client or worker), as the platform issues them.
    UserId,
    128
);
bounded_string!(
    /// The name of a platform backend service acting through a service token.
    ServiceId,
    128
);
bounded_string!(
    /// A caller-chosen idempotency key (AIP-155).
    RequestId,
    128
);
bounded_string!(
    /// A reference to an uploaded proof of payment; the upload lives elsewhere.
    ProofRef,
    2048
);

/// Free text a person gives (changes requested, cancellation). Unlike the
/// ids it may contain line breaks and tabs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    pub const MAX_CHARS: usize = 2000;

    pub fn parse(field: &'static str, value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
        let chars = value.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(DomainError::invalid(
                field,
                format!(
                    "must be at most {} characters, got {chars}",
                    Self::MAX_CHARS
                ),
            ));
        }
        // Line breaks and tabs are text; other control characters (NUL
        // above all, which PostgreSQL cannot store) are not.
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(DomainError::invalid(
                field,
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Open,
    InProgress,
    AwaitingClientApproval,
    AwaitingPayment,
    Completed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Open,
        JobStatus::InProgress,
        JobStatus::AwaitingClientApproval,
        JobStatus::AwaitingPayment,
        JobStatus::Completed,
        JobStatus::Cancelled,
    ];

    /// The name stored in the database and shown in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Open => "open",
            JobStatus::InProgress => "in_progress",
            JobStatus::AwaitingClientApproval => "awaiting_client_approval",
            JobStatus::AwaitingPayment => "awaiting_payment",
            JobStatus::Completed => "completed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No command moves a job out of a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentMethod {
    #[serde(rename = "GCASH")]
    Gcash,
    #[serde(rename = "CASH")]
    Cash,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Gcash => "GCASH",
            PaymentMethod::Cash => "CASH",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GCASH" => Some(PaymentMethod::Gcash),
            "CASH" => Some(PaymentMethod::Cash),
            _ => None,
        }
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part a caller plays on one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Worker,
    Service,
}

/// A job at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub client_id: UserId,
    pub worker_id: Option<UserId>,
    pub status: JobStatus,
    pub payment_method: Option<PaymentMethod>,
    pub payment_proof: Option<ProofRef>,
    pub change_request_reason: Option<Reason>,
    pub cancel_reason: Option<Reason>,
    /// Revision of the last event applied; 1 right after creation.
    pub revision: i64,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// `worker_marked_complete` on the wire: the worker has said they are done
    /// and the job has not gone back to work or been cancelled since.
    pub fn worker_marked_complete(&self) -> bool {
        matches!(
            self.status,
            JobStatus::AwaitingClientApproval | JobStatus::AwaitingPayment | JobStatus::Completed
        )
    }

    /// `client_marked_complete` on the wire: the client approved completion.
    pub fn client_marked_complete(&self) -> bool {
        matches!(
            self.status,
            JobStatus::AwaitingPayment | JobStatus::Completed
        )
    }

    /// `awaiting_client_verification` on the wire.
    pub fn awaiting_client_verification(&self) -> bool {
        self.status == JobStatus::AwaitingClientApproval
    }

    /// The role `user` has on this job, if any. A reassigned worker has none.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        if &self.client_id == user {
            Some(Role::Client)
        } else if self.worker_id.as_ref() == Some(user) {
            Some(Role::Worker)
        } else {
            None
        }
    }
}
