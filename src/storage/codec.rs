//! Rows to domain values and back, shared by every backend. The only place
//! that knows how a job and an event look in a table.

use chrono::{DateTime, SubsecRound, Utc};

use super::StorageError;
use crate::domain::{Event, Job, JobId, JobStatus, PaymentMethod, ProofRef, Reason, Role, UserId};
use crate::rfc3339::{Offset, Rfc3339};

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

/// Room for a typical event's JSON (about 400 bytes) without regrowing.
const EVENT_JSON_CAPACITY: usize = 512;

/// The event as the `payload` column holds it: byte for byte what
/// `serde_json::to_string(event)` writes (the tests hold the two equal,
/// and reading it back is serde's). Written by hand because the writer
/// thread encodes every change it commits, and serde's field-by-field
/// path (escaping each key, regrowing the buffer) was most of the
/// writer's own CPU beside SQLite's: about 7 000 instructions an event
/// against about 2 000 here.
pub(super) fn encode_event(event: &Event) -> Result<String, StorageError> {
    let job = &event.job;
    let mut out = String::with_capacity(EVENT_JSON_CAPACITY);
    out.push_str("{\"kind\":\"");
    out.push_str(event.kind.as_str());
    out.push_str("\",\"actor_id\":");
    json_str(&mut out, &event.actor_id)?;
    out.push_str(",\"actor_role\":\"");
    out.push_str(role_str(event.actor_role));
    out.push_str("\",\"request_id\":");
    json_opt(&mut out, event.request_id.as_ref().map(|r| r.as_str()))?;
    out.push_str(",\"job\":{\"id\":");
    json_int(&mut out, job.id.get());
    out.push_str(",\"client_id\":");
    json_str(&mut out, job.client_id.as_str())?;
    out.push_str(",\"worker_id\":");
    json_opt(&mut out, job.worker_id.as_ref().map(UserId::as_str))?;
    out.push_str(",\"status\":\"");
    out.push_str(job.status.as_str());
    out.push_str("\",\"payment_method\":");
    json_opt(&mut out, job.payment_method.map(PaymentMethod::as_str))?;
    out.push_str(",\"payment_proof\":");
    json_opt(&mut out, job.payment_proof.as_ref().map(ProofRef::as_str))?;
    out.push_str(",\"change_request_reason\":");
    json_opt(
        &mut out,
        job.change_request_reason.as_ref().map(Reason::as_str),
    )?;
    out.push_str(",\"cancel_reason\":");
    json_opt(&mut out, job.cancel_reason.as_ref().map(Reason::as_str))?;
    out.push_str(",\"revision\":");
    json_int(&mut out, job.revision);
    out.push_str(",\"created_at\":\"");
    out.push_str(Rfc3339::new(job.created_at, Offset::Z).as_str());
    out.push_str("\",\"updated_at\":\"");
    out.push_str(Rfc3339::new(job.updated_at, Offset::Z).as_str());
    out.push_str("\"}}");
    Ok(out)
}

/// A JSON string. Text that needs no escaping (every id, and most
/// reasons) is copied as it is; the rest is escaped by serde_json itself,
/// so the two can never disagree.
fn json_str(out: &mut String, text: &str) -> Result<(), StorageError> {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        let quoted = serde_json::to_string(text)
            .map_err(|e| corrupt(format!("cannot encode event: {e}")))?;
        out.push_str(&quoted);
    }
    Ok(())
}

fn json_opt(out: &mut String, text: Option<&str>) -> Result<(), StorageError> {
    match text {
        Some(text) => json_str(out, text),
        None => {
            out.push_str("null");
            Ok(())
        }
    }
}

fn json_int(out: &mut String, value: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        // `rest % 10` is a single digit.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    // ASCII digits, so always UTF-8.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

pub(super) fn decode_event(payload: &str) -> Result<Event, StorageError> {
    serde_json::from_str(payload).map_err(|e| corrupt(format!("cannot decode event: {e}")))
}

/// Now, at the precision every backend stores (PostgreSQL keeps
/// microseconds), so a job read back equals the job that was written.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{EventKind, RequestId};

    fn job(status: JobStatus) -> Job {
        Job {
            id: JobId::new(1_796_147_758_337_000).unwrap(),
            client_id: UserId::parse("client_id", "c1796147758337000").unwrap(),
            worker_id: None,
            status,
            payment_method: None,
            payment_proof: None,
            change_request_reason: None,
            cancel_reason: None,
            revision: 1,
            created_at: Utc.with_ymd_and_hms(2026, 12, 1, 17, 55, 58).unwrap(),
            updated_at: now(),
        }
    }

    fn same_as_serde(event: &Event) {
        let ours = encode_event(event).unwrap();
        assert_eq!(ours, serde_json::to_string(event).unwrap());
        assert_eq!(&decode_event(&ours).unwrap(), event);
    }

    /// Every kind, status, role and payment method, every optional field
    /// absent and present, at the extremes of the integers.
    #[test]
    fn events_encode_exactly_as_serde_writes_them() {
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            for status in JobStatus::ALL {
                for role in [Role::Client, Role::Worker, Role::Service] {
                    let mut event = Event {
                        kind,
                        actor_id: "w4-worker".into(),
                        actor_role: role,
                        request_id: None,
                        job: job(status),
                    };
                    same_as_serde(&event);
                    event.request_id = Some(RequestId::parse("request_id", "req-1").unwrap());
                    event.job.worker_id = Some(UserId::parse("worker_id", "bob").unwrap());
                    event.job.payment_method =
                        Some([PaymentMethod::Gcash, PaymentMethod::Cash][i % 2]);
                    event.job.payment_proof =
                        Some(ProofRef::parse("payment_proof", "s3://proofs/1.jpg").unwrap());
                    event.job.change_request_reason =
                        Some(Reason::parse("reason", "fix the sink").unwrap());
                    event.job.cancel_reason = Some(Reason::parse("reason", "moved").unwrap());
                    event.job.revision = i64::MAX;
                    same_as_serde(&event);
                }
            }
        }
    }

    /// Text that JSON must escape, and text it must not, in every field
    /// that holds text.
    #[test]
    fn text_that_needs_escaping_encodes_exactly_as_serde_writes_it() {
        let texts = [
            "plain",
            "a \"quoted\" word",
            "back\\slash",
            "two\nlines\r\nand\ta tab",
            "José pays in ₱ 🚀",
            "slash / and DEL \u{7f}",
            "\u{2028} line separator",
            "ends with a backslash \\",
        ];
        for text in texts {
            // A reason refuses DEL; the actor id is not validated here.
            let reason = Reason::parse("reason", text).ok();
            let mut event = Event {
                kind: EventKind::ClientRequestedChanges,
                actor_id: text.into(),
                actor_role: Role::Client,
                request_id: None,
                job: job(JobStatus::InProgress),
            };
            event.job.change_request_reason.clone_from(&reason);
            event.job.cancel_reason = reason;
            same_as_serde(&event);
        }
        // Control characters only the free text and the actor id (not
        // validated here) can hold: every one of them.
        for byte in 0u8..0x20 {
            let text = format!("x{}y", char::from(byte));
            let event = Event {
                kind: EventKind::JobCancelled,
                actor_id: text,
                actor_role: Role::Service,
                request_id: None,
                job: job(JobStatus::Cancelled),
            };
            same_as_serde(&event);
        }
    }

    #[test]
    fn integers_encode_as_serde_writes_them() {
        for value in [0, 1, 9, 10, 99, 100, 12_345, i64::MAX, -1, -10, i64::MIN] {
            let mut out = String::new();
            json_int(&mut out, value);
            assert_eq!(out, serde_json::to_string(&value).unwrap());
        }
    }
}
