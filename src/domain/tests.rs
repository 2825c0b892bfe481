//! Unit tests for the pure job state machine.
//!
//! The heart of this file is [`TABLE`]: a hand-written expectation for every
//! (job state × command × actor) combination, taken from the product rules
//! rather than computed from the implementation. One test walks the table and
//! checks every row, and another checks that the table covers every
//! combination exactly once. Focused tests below it pin the details: fields,
//! revisions, timestamps, events, messages, check ordering and the parse
//! helpers.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};

use super::*;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const JOB: i64 = 42;
const CLIENT: &str = "client-ana";
const WORKER: &str = "worker-ben";
const OTHER_WORKER: &str = "worker-cy";
const STRANGER: &str = "stranger-dee";
const SERVICE: &str = "marketplace-backend";
const PROOF: &str = "s3://proofs/42/receipt-1.jpg";
const OTHER_PROOF: &str = "s3://proofs/42/receipt-2.jpg";
const REQUEST_ID: &str = "req-0001";

fn uid(s: &str) -> UserId {
    UserId::parse("user_id", s).unwrap()
}

fn sid(s: &str) -> ServiceId {
    ServiceId::parse("service", s).unwrap()
}

fn proof(s: &str) -> ProofRef {
    ProofRef::parse("proof", s).unwrap()
}

fn reason(s: &str) -> Reason {
    Reason::parse("reason", s).unwrap()
}

fn rid(s: &str) -> RequestId {
    RequestId::parse("request_id", s).unwrap()
}

fn job_id() -> JobId {
    JobId::new(JOB).unwrap()
}

fn created() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 8, 0, 0).unwrap()
}

fn last_update() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 2, 9, 30, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 5, 17, 45, 0).unwrap()
}

/// A stored job, written out field by field.
fn job(
    status: JobStatus,
    worker: Option<&str>,
    method: Option<PaymentMethod>,
    payment_proof: Option<&str>,
    revision: i64,
) -> Job {
    Job {
        id: job_id(),
        client_id: uid(CLIENT),
        worker_id: worker.map(uid),
        status,
        payment_method: method,
        payment_proof: payment_proof.map(proof),
        change_request_reason: None,
        cancel_reason: if status == JobStatus::Cancelled {
            Some(reason("client went away"))
        } else {
            None
        },
        revision,
        created_at: created(),
        updated_at: last_update(),
    }
}

/// The job states the table is written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum F {
    /// No job with this id.
    Missing,
    Open,
    InProgress,
    AwaitingApproval,
    PayCash,
    PayCashProof,
    PayGcash,
    DoneCash,
    DoneGcash,
    CancelledOpen,
    CancelledInProgress,
    CancelledPayCash,
}

impl F {
    const ALL: [F; 12] = [
        F::Missing,
        F::Open,
        F::InProgress,
        F::AwaitingApproval,
        F::PayCash,
        F::PayCashProof,
        F::PayGcash,
        F::DoneCash,
        F::DoneGcash,
        F::CancelledOpen,
        F::CancelledInProgress,
        F::CancelledPayCash,
    ];

    fn job(self) -> Option<Job> {
        use JobStatus::*;
        use PaymentMethod::*;
        let w = Some(WORKER);
        Some(match self {
            F::Missing => return None,
            F::Open => job(Open, None, None, None, 1),
            F::InProgress => job(InProgress, w, None, None, 2),
            F::AwaitingApproval => job(AwaitingClientApproval, w, None, None, 3),
            F::PayCash => job(AwaitingPayment, w, Some(Cash), None, 4),
            F::PayCashProof => job(AwaitingPayment, w, Some(Cash), Some(PROOF), 5),
            F::PayGcash => job(AwaitingPayment, w, Some(Gcash), None, 6),
            F::DoneCash => job(Completed, w, Some(Cash), Some(PROOF), 7),
            F::DoneGcash => job(Completed, w, Some(Gcash), None, 8),
            F::CancelledOpen => job(Cancelled, None, None, None, 9),
            F::CancelledInProgress => job(Cancelled, w, None, None, 10),
            F::CancelledPayCash => job(Cancelled, w, Some(Cash), Some(PROOF), 11),
        })
    }
}

/// Who calls. `Worker` is always the user `WORKER`: on a job without a
/// worker (or with another one) that user is a stranger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Actor {
    Client,
    Worker,
    Stranger,
    Service,
}

impl Actor {
    /// The order of the columns in [`TABLE`].
    const ALL: [Actor; 4] = [
        Actor::Client,
        Actor::Worker,
        Actor::Stranger,
        Actor::Service,
    ];

    fn caller(self) -> Caller {
        match self {
            Actor::Client => Caller::User(uid(CLIENT)),
            Actor::Worker => Caller::User(uid(WORKER)),
            Actor::Stranger => Caller::User(uid(STRANGER)),
            Actor::Service => Caller::Service(sid(SERVICE)),
        }
    }

    /// The role an event records when this actor changes a job.
    fn event_role(self) -> Role {
        match self {
            Actor::Client => Role::Client,
            Actor::Worker => Role::Worker,
            Actor::Stranger => panic!("a stranger never changes a job"),
            Actor::Service => Role::Service,
        }
    }
}

/// The commands the table is written against: every `Command` variant, some
/// with more than one kind of argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum C {
    CreateWithWorker,
    CreateOpen,
    /// Create with worker == client.
    CreateSelf,
    /// Assign `WORKER` (the fixture's current worker, if it has one).
    AssignSame,
    AssignOther,
    /// Assign the client as the worker.
    AssignClient,
    MarkComplete,
    RequestChanges,
    ApproveCash,
    ApproveGcash,
    /// Submit `PROOF` (the proof the fixtures with a proof hold).
    SubmitProof,
    SubmitOtherProof,
    Confirm,
    Cancel,
}

impl C {
    const ALL: [C; 14] = [
        C::CreateWithWorker,
        C::CreateOpen,
        C::CreateSelf,
        C::AssignSame,
        C::AssignOther,
        C::AssignClient,
        C::MarkComplete,
        C::RequestChanges,
        C::ApproveCash,
        C::ApproveGcash,
        C::SubmitProof,
        C::SubmitOtherProof,
        C::Confirm,
        C::Cancel,
    ];

    fn command(self) -> Command {
        match self {
            C::CreateWithWorker => Command::Create {
                client: uid(CLIENT),
                worker: Some(uid(WORKER)),
            },
            C::CreateOpen => Command::Create {
                client: uid(CLIENT),
                worker: None,
            },
            C::CreateSelf => Command::Create {
                client: uid(CLIENT),
                worker: Some(uid(CLIENT)),
            },
            C::AssignSame => Command::AssignWorker {
                worker: uid(WORKER),
            },
            C::AssignOther => Command::AssignWorker {
                worker: uid(OTHER_WORKER),
            },
            C::AssignClient => Command::AssignWorker {
                worker: uid(CLIENT),
            },
            C::MarkComplete => Command::MarkComplete,
            C::RequestChanges => Command::RequestChanges {
                reason: reason("the left wall is still unpainted"),
            },
            C::ApproveCash => Command::ApproveCompletion {
                method: PaymentMethod::Cash,
            },
            C::ApproveGcash => Command::ApproveCompletion {
                method: PaymentMethod::Gcash,
            },
            C::SubmitProof => Command::SubmitPaymentProof {
                proof: proof(PROOF),
            },
            C::SubmitOtherProof => Command::SubmitPaymentProof {
                proof: proof(OTHER_PROOF),
            },
            C::Confirm => Command::ConfirmPayment,
            C::Cancel => Command::Cancel {
                reason: Some(reason("duplicate posting")),
            },
        }
    }
}

/// Which `Command` variant a command is, for the coverage check. Exhaustive,
/// so a new variant fails to compile here until the table knows about it.
fn command_variant(command: &Command) -> usize {
    match command {
        Command::Create { .. } => 0,
        Command::AssignWorker { .. } => 1,
        Command::MarkComplete => 2,
        Command::RequestChanges { .. } => 3,
        Command::ApproveCompletion { .. } => 4,
        Command::SubmitPaymentProof { .. } => 5,
        Command::ConfirmPayment => 6,
        Command::Cancel { .. } => 7,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ErrKind {
    InvalidArgument,
    NotFound,
    NoAccess,
    WrongRole,
    AlreadyExists,
    FailedPrecondition,
    RevisionMismatch,
}

fn err_kind(e: &DomainError) -> ErrKind {
    match e {
        DomainError::InvalidArgument { .. } => ErrKind::InvalidArgument,
        DomainError::NotFound(_) => ErrKind::NotFound,
        DomainError::NoAccess(_) => ErrKind::NoAccess,
        DomainError::WrongRole { .. } => ErrKind::WrongRole,
        DomainError::AlreadyExists(_) => ErrKind::AlreadyExists,
        DomainError::FailedPrecondition { .. } => ErrKind::FailedPrecondition,
        DomainError::RevisionMismatch { .. } => ErrKind::RevisionMismatch,
    }
}

/// What `decide` should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The job moves to this status and this event is recorded.
    Changed(JobStatus, EventKind),
    /// An idempotent repeat.
    Unchanged,
    Err(ErrKind),
}

fn outcome(result: &Result<Decision, DomainError>) -> Outcome {
    match result {
        Ok(Decision::Changed(event)) => Outcome::Changed(event.job.status, event.kind),
        Ok(Decision::Unchanged(_)) => Outcome::Unchanged,
        Err(e) => Outcome::Err(err_kind(e)),
    }
}

// Short names for the table.
const UN: Outcome = Outcome::Unchanged;
const IA: Outcome = Outcome::Err(ErrKind::InvalidArgument);
const NF: Outcome = Outcome::Err(ErrKind::NotFound);
const NA: Outcome = Outcome::Err(ErrKind::NoAccess);
const WR: Outcome = Outcome::Err(ErrKind::WrongRole);
const AE: Outcome = Outcome::Err(ErrKind::AlreadyExists);
const FP: Outcome = Outcome::Err(ErrKind::FailedPrecondition);

const CREATED_OPEN: Outcome = Outcome::Changed(JobStatus::Open, EventKind::JobCreated);
const CREATED_WORKING: Outcome = Outcome::Changed(JobStatus::InProgress, EventKind::JobCreated);
const ASSIGNED: Outcome = Outcome::Changed(JobStatus::InProgress, EventKind::WorkerAssigned);
const MARKED: Outcome = Outcome::Changed(
    JobStatus::AwaitingClientApproval,
    EventKind::WorkerMarkedComplete,
);
const CHANGES: Outcome = Outcome::Changed(JobStatus::InProgress, EventKind::ClientRequestedChanges);
const APPROVED: Outcome = Outcome::Changed(
    JobStatus::AwaitingPayment,
    EventKind::ClientApprovedCompletion,
);
const PROOFED: Outcome =
    Outcome::Changed(JobStatus::AwaitingPayment, EventKind::PaymentProofSubmitted);
const PAID: Outcome = Outcome::Changed(JobStatus::Completed, EventKind::PaymentConfirmed);
const CANCELLED: Outcome = Outcome::Changed(JobStatus::Cancelled, EventKind::JobCancelled);

/// The expectation table, written by hand from the product rules.
///
/// Columns: [client, worker (`WORKER`), stranger user, service].
///
/// Conventions the rules leave open, chosen here:
/// * Role is checked before state: a party asking for someone else's action
///   gets WrongRole whatever the state.
/// * Argument validation (worker == client) comes before the state check.
/// * CreateJob by any user is WrongRole whether or not the id exists (so the
///   answer reveals nothing about existence), and a service gets
///   AlreadyExists for an existing id.
/// * ConfirmPayment before a payment method is chosen: the worker and the
///   service get FailedPrecondition.
/// * A different proof while awaiting a CASH payment replaces the old one.
#[rustfmt::skip]
const TABLE: &[(F, C, [Outcome; 4])] = &[
    // ---- no such job: services learn NotFound, users learn nothing
    (F::Missing, C::CreateWithWorker, [WR, WR, WR, CREATED_WORKING]),
    (F::Missing, C::CreateOpen,       [WR, WR, WR, CREATED_OPEN]),
    (F::Missing, C::CreateSelf,       [WR, WR, WR, IA]),
    (F::Missing, C::AssignSame,       [NA, NA, NA, NF]),
    (F::Missing, C::AssignOther,      [NA, NA, NA, NF]),
    (F::Missing, C::AssignClient,     [NA, NA, NA, NF]),
    (F::Missing, C::MarkComplete,     [NA, NA, NA, NF]),
    (F::Missing, C::RequestChanges,   [NA, NA, NA, NF]),
    (F::Missing, C::ApproveCash,      [NA, NA, NA, NF]),
    (F::Missing, C::ApproveGcash,     [NA, NA, NA, NF]),
    (F::Missing, C::SubmitProof,      [NA, NA, NA, NF]),
    (F::Missing, C::SubmitOtherProof, [NA, NA, NA, NF]),
    (F::Missing, C::Confirm,          [NA, NA, NA, NF]),
    (F::Missing, C::Cancel,           [NA, NA, NA, NF]),
    // ---- open: no worker yet, so WORKER is a stranger
    (F::Open, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::Open, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::Open, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::Open, C::AssignSame,       [WR, NA, NA, ASSIGNED]),
    (F::Open, C::AssignOther,      [WR, NA, NA, ASSIGNED]),
    (F::Open, C::AssignClient,     [WR, NA, NA, IA]),
    (F::Open, C::MarkComplete,     [WR, NA, NA, WR]),
    (F::Open, C::RequestChanges,   [FP, NA, NA, WR]),
    (F::Open, C::ApproveCash,      [FP, NA, NA, WR]),
    (F::Open, C::ApproveGcash,     [FP, NA, NA, WR]),
    (F::Open, C::SubmitProof,      [FP, NA, NA, WR]),
    (F::Open, C::SubmitOtherProof, [FP, NA, NA, WR]),
    (F::Open, C::Confirm,          [WR, NA, NA, FP]),
    (F::Open, C::Cancel,           [WR, NA, NA, CANCELLED]),
    // ---- in progress with WORKER
    (F::InProgress, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::InProgress, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::InProgress, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::InProgress, C::AssignSame,       [WR, WR, NA, UN]),
    (F::InProgress, C::AssignOther,      [WR, WR, NA, ASSIGNED]),
    (F::InProgress, C::AssignClient,     [WR, WR, NA, IA]),
    (F::InProgress, C::MarkComplete,     [WR, MARKED, NA, WR]),
    (F::InProgress, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::InProgress, C::ApproveCash,      [FP, WR, NA, WR]),
    (F::InProgress, C::ApproveGcash,     [FP, WR, NA, WR]),
    (F::InProgress, C::SubmitProof,      [FP, WR, NA, WR]),
    (F::InProgress, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::InProgress, C::Confirm,          [WR, FP, NA, FP]),
    (F::InProgress, C::Cancel,           [WR, WR, NA, CANCELLED]),
    // ---- awaiting the client's approval
    (F::AwaitingApproval, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::AwaitingApproval, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::AwaitingApproval, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::AwaitingApproval, C::AssignSame,       [WR, WR, NA, FP]),
    (F::AwaitingApproval, C::AssignOther,      [WR, WR, NA, FP]),
    (F::AwaitingApproval, C::AssignClient,     [WR, WR, NA, IA]),
    (F::AwaitingApproval, C::MarkComplete,     [WR, UN, NA, WR]),
    (F::AwaitingApproval, C::RequestChanges,   [CHANGES, WR, NA, WR]),
    (F::AwaitingApproval, C::ApproveCash,      [APPROVED, WR, NA, WR]),
    (F::AwaitingApproval, C::ApproveGcash,     [APPROVED, WR, NA, WR]),
    (F::AwaitingApproval, C::SubmitProof,      [FP, WR, NA, WR]),
    (F::AwaitingApproval, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::AwaitingApproval, C::Confirm,          [WR, FP, NA, FP]),
    (F::AwaitingApproval, C::Cancel,           [WR, WR, NA, CANCELLED]),
    // ---- awaiting a CASH payment, no proof yet
    (F::PayCash, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::PayCash, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::PayCash, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::PayCash, C::AssignSame,       [WR, WR, NA, FP]),
    (F::PayCash, C::AssignOther,      [WR, WR, NA, FP]),
    (F::PayCash, C::AssignClient,     [WR, WR, NA, IA]),
    (F::PayCash, C::MarkComplete,     [WR, UN, NA, WR]),
    (F::PayCash, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::PayCash, C::ApproveCash,      [UN, WR, NA, WR]),
    (F::PayCash, C::ApproveGcash,     [FP, WR, NA, WR]),
    (F::PayCash, C::SubmitProof,      [PROOFED, WR, NA, WR]),
    (F::PayCash, C::SubmitOtherProof, [PROOFED, WR, NA, WR]),
    (F::PayCash, C::Confirm,          [WR, FP, NA, WR]),
    (F::PayCash, C::Cancel,           [WR, WR, NA, CANCELLED]),
    // ---- awaiting a CASH payment, PROOF submitted
    (F::PayCashProof, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::PayCashProof, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::PayCashProof, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::PayCashProof, C::AssignSame,       [WR, WR, NA, FP]),
    (F::PayCashProof, C::AssignOther,      [WR, WR, NA, FP]),
    (F::PayCashProof, C::AssignClient,     [WR, WR, NA, IA]),
    (F::PayCashProof, C::MarkComplete,     [WR, UN, NA, WR]),
    (F::PayCashProof, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::PayCashProof, C::ApproveCash,      [UN, WR, NA, WR]),
    (F::PayCashProof, C::ApproveGcash,     [FP, WR, NA, WR]),
    (F::PayCashProof, C::SubmitProof,      [UN, WR, NA, WR]),
    (F::PayCashProof, C::SubmitOtherProof, [PROOFED, WR, NA, WR]),
    (F::PayCashProof, C::Confirm,          [WR, PAID, NA, WR]),
    (F::PayCashProof, C::Cancel,           [WR, WR, NA, CANCELLED]),
    // ---- awaiting a GCASH payment
    (F::PayGcash, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::PayGcash, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::PayGcash, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::PayGcash, C::AssignSame,       [WR, WR, NA, FP]),
    (F::PayGcash, C::AssignOther,      [WR, WR, NA, FP]),
    (F::PayGcash, C::AssignClient,     [WR, WR, NA, IA]),
    (F::PayGcash, C::MarkComplete,     [WR, UN, NA, WR]),
    (F::PayGcash, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::PayGcash, C::ApproveCash,      [FP, WR, NA, WR]),
    (F::PayGcash, C::ApproveGcash,     [UN, WR, NA, WR]),
    (F::PayGcash, C::SubmitProof,      [FP, WR, NA, WR]),
    (F::PayGcash, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::PayGcash, C::Confirm,          [WR, WR, NA, PAID]),
    (F::PayGcash, C::Cancel,           [WR, WR, NA, CANCELLED]),
    // ---- completed, paid in CASH with PROOF
    (F::DoneCash, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::DoneCash, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::DoneCash, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::DoneCash, C::AssignSame,       [WR, WR, NA, FP]),
    (F::DoneCash, C::AssignOther,      [WR, WR, NA, FP]),
    (F::DoneCash, C::AssignClient,     [WR, WR, NA, IA]),
    (F::DoneCash, C::MarkComplete,     [WR, UN, NA, WR]),
    (F::DoneCash, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::DoneCash, C::ApproveCash,      [UN, WR, NA, WR]),
    (F::DoneCash, C::ApproveGcash,     [FP, WR, NA, WR]),
    (F::DoneCash, C::SubmitProof,      [UN, WR, NA, WR]),
    (F::DoneCash, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::DoneCash, C::Confirm,          [WR, UN, NA, WR]),
    (F::DoneCash, C::Cancel,           [WR, WR, NA, FP]),
    // ---- completed, paid with GCASH
    (F::DoneGcash, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::DoneGcash, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::DoneGcash, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::DoneGcash, C::AssignSame,       [WR, WR, NA, FP]),
    (F::DoneGcash, C::AssignOther,      [WR, WR, NA, FP]),
    (F::DoneGcash, C::AssignClient,     [WR, WR, NA, IA]),
    (F::DoneGcash, C::MarkComplete,     [WR, UN, NA, WR]),
    (F::DoneGcash, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::DoneGcash, C::ApproveCash,      [FP, WR, NA, WR]),
    (F::DoneGcash, C::ApproveGcash,     [UN, WR, NA, WR]),
    (F::DoneGcash, C::SubmitProof,      [FP, WR, NA, WR]),
    (F::DoneGcash, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::DoneGcash, C::Confirm,          [WR, WR, NA, UN]),
    (F::DoneGcash, C::Cancel,           [WR, WR, NA, FP]),
    // ---- cancelled while open: never had a worker, WORKER is a stranger
    (F::CancelledOpen, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::CancelledOpen, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::CancelledOpen, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::CancelledOpen, C::AssignSame,       [WR, NA, NA, FP]),
    (F::CancelledOpen, C::AssignOther,      [WR, NA, NA, FP]),
    (F::CancelledOpen, C::AssignClient,     [WR, NA, NA, IA]),
    (F::CancelledOpen, C::MarkComplete,     [WR, NA, NA, WR]),
    (F::CancelledOpen, C::RequestChanges,   [FP, NA, NA, WR]),
    (F::CancelledOpen, C::ApproveCash,      [FP, NA, NA, WR]),
    (F::CancelledOpen, C::ApproveGcash,     [FP, NA, NA, WR]),
    (F::CancelledOpen, C::SubmitProof,      [FP, NA, NA, WR]),
    (F::CancelledOpen, C::SubmitOtherProof, [FP, NA, NA, WR]),
    (F::CancelledOpen, C::Confirm,          [WR, NA, NA, FP]),
    (F::CancelledOpen, C::Cancel,           [WR, NA, NA, UN]),
    // ---- cancelled while in progress with WORKER
    (F::CancelledInProgress, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::CancelledInProgress, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::CancelledInProgress, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::CancelledInProgress, C::AssignSame,       [WR, WR, NA, FP]),
    (F::CancelledInProgress, C::AssignOther,      [WR, WR, NA, FP]),
    (F::CancelledInProgress, C::AssignClient,     [WR, WR, NA, IA]),
    (F::CancelledInProgress, C::MarkComplete,     [WR, FP, NA, WR]),
    (F::CancelledInProgress, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::CancelledInProgress, C::ApproveCash,      [FP, WR, NA, WR]),
    (F::CancelledInProgress, C::ApproveGcash,     [FP, WR, NA, WR]),
    (F::CancelledInProgress, C::SubmitProof,      [FP, WR, NA, WR]),
    (F::CancelledInProgress, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::CancelledInProgress, C::Confirm,          [WR, FP, NA, FP]),
    (F::CancelledInProgress, C::Cancel,           [WR, WR, NA, UN]),
    // ---- cancelled while awaiting a CASH payment with PROOF
    (F::CancelledPayCash, C::CreateWithWorker, [WR, WR, WR, AE]),
    (F::CancelledPayCash, C::CreateOpen,       [WR, WR, WR, AE]),
    (F::CancelledPayCash, C::CreateSelf,       [WR, WR, WR, AE]),
    (F::CancelledPayCash, C::AssignSame,       [WR, WR, NA, FP]),
    (F::CancelledPayCash, C::AssignOther,      [WR, WR, NA, FP]),
    (F::CancelledPayCash, C::AssignClient,     [WR, WR, NA, IA]),
    (F::CancelledPayCash, C::MarkComplete,     [WR, FP, NA, WR]),
    (F::CancelledPayCash, C::RequestChanges,   [FP, WR, NA, WR]),
    (F::CancelledPayCash, C::ApproveCash,      [FP, WR, NA, WR]),
    (F::CancelledPayCash, C::ApproveGcash,     [FP, WR, NA, WR]),
    (F::CancelledPayCash, C::SubmitProof,      [FP, WR, NA, WR]),
    (F::CancelledPayCash, C::SubmitOtherProof, [FP, WR, NA, WR]),
    (F::CancelledPayCash, C::Confirm,          [WR, FP, NA, WR]),
    (F::CancelledPayCash, C::Cancel,           [WR, WR, NA, UN]),
];

fn request(
    caller: Caller,
    command: Command,
    request_id: Option<&str>,
    expected_revision: Option<i64>,
) -> Request {
    Request {
        job_id: job_id(),
        caller,
        command,
        request_id: request_id.map(rid),
        expected_revision,
    }
}

/// Checks one decision against its expected outcome and against the rules
/// every outcome of its kind must follow. Returns a description of each
/// problem found.
fn check(
    label: &str,
    current: Option<&Job>,
    actor: Actor,
    req: &Request,
    expected: Outcome,
    result: &Result<Decision, DomainError>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let got = outcome(result);
    if got != expected {
        problems.push(format!(
            "{label}: expected {expected:?}, got {got:?} ({result:?})"
        ));
        return problems;
    }
    match result {
        Ok(Decision::Changed(event)) => {
            let new = &event.job;
            let (revision, created_at) = match current {
                Some(old) => (old.revision + 1, old.created_at),
                None => (1, now()),
            };
            if new.revision != revision {
                problems.push(format!("{label}: revision {} != {revision}", new.revision));
            }
            if new.created_at != created_at {
                problems.push(format!("{label}: created_at changed to {}", new.created_at));
            }
            if new.updated_at != now() {
                problems.push(format!("{label}: updated_at {} != now", new.updated_at));
            }
            if new.id != job_id() || new.client_id != uid(CLIENT) {
                problems.push(format!("{label}: id or client changed: {new:?}"));
            }
            if event.actor_id != req.caller.id() {
                problems.push(format!("{label}: actor_id {}", event.actor_id));
            }
            if event.actor_role != actor.event_role() {
                problems.push(format!("{label}: actor_role {:?}", event.actor_role));
            }
            if event.request_id != req.request_id {
                problems.push(format!("{label}: request_id {:?}", event.request_id));
            }
            if event.job_id() != job_id() || event.revision() != new.revision || event.at() != now()
            {
                problems.push(format!("{label}: event accessors disagree: {event:?}"));
            }
        }
        Ok(Decision::Unchanged(job)) => {
            if Some(job) != current {
                problems.push(format!(
                    "{label}: Unchanged returned a different job {job:?}"
                ));
            }
        }
        Err(DomainError::FailedPrecondition { job, status, .. }) => {
            let current = current.expect("FailedPrecondition needs a job");
            let message = result.as_ref().unwrap_err().to_string();
            if *job != current.id || *status != current.status {
                problems.push(format!("{label}: wrong job/status in {message}"));
            }
            if !message.contains(&format!(" is {}", current.status.as_str())) {
                problems.push(format!(
                    "{label}: message does not name the status: {message}"
                ));
            }
        }
        Err(
            DomainError::NoAccess(id) | DomainError::NotFound(id) | DomainError::AlreadyExists(id),
        ) => {
            if *id != job_id() {
                problems.push(format!("{label}: error names job {id}"));
            }
        }
        Err(_) => {}
    }
    problems
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

#[test]
fn table_covers_every_state_command_and_actor_once() {
    let mut seen = HashSet::new();
    for (f, c, _) in TABLE {
        assert!(seen.insert((*f, *c)), "duplicate row {f:?} × {c:?}");
    }
    for f in F::ALL {
        for c in C::ALL {
            assert!(seen.contains(&(f, c)), "missing row {f:?} × {c:?}");
        }
    }
    assert_eq!(TABLE.len(), F::ALL.len() * C::ALL.len());
    // Every row has one column per actor, by construction ([Outcome; 4]).
    assert_eq!(Actor::ALL.len(), 4);

    // The commands include every `Command` variant...
    let variants: HashSet<usize> = C::ALL
        .iter()
        .map(|c| command_variant(&c.command()))
        .collect();
    assert_eq!(variants, (0..8).collect::<HashSet<_>>());

    // ...and the fixtures every status, AwaitingPayment and Completed with
    // both methods, and CASH AwaitingPayment with and without a proof.
    let jobs: Vec<Job> = F::ALL.iter().filter_map(|f| f.job()).collect();
    for status in JobStatus::ALL {
        assert!(
            jobs.iter().any(|j| j.status == status),
            "no {status} fixture"
        );
    }
    for status in [JobStatus::AwaitingPayment, JobStatus::Completed] {
        for method in [PaymentMethod::Cash, PaymentMethod::Gcash] {
            assert!(
                jobs.iter()
                    .any(|j| j.status == status && j.payment_method == Some(method)),
                "no {status} {method} fixture"
            );
        }
    }
    for has_proof in [false, true] {
        assert!(jobs.iter().any(|j| j.status == JobStatus::AwaitingPayment
            && j.payment_method == Some(PaymentMethod::Cash)
            && j.payment_proof.is_some() == has_proof));
    }

    // Every event kind is produced somewhere in the table.
    let kinds: HashSet<EventKind> = TABLE
        .iter()
        .flat_map(|(_, _, row)| row.iter())
        .filter_map(|o| match o {
            Outcome::Changed(_, kind) => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, EventKind::ALL.into_iter().collect::<HashSet<_>>());
}

#[test]
fn every_combination_decides_as_the_table_says() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (f, c, row) in TABLE {
        let current = f.job();
        for (actor, expected) in Actor::ALL.into_iter().zip(row.iter().copied()) {
            // Once bare, once with a request id and the right revision: a
            // matching expected_revision never changes the answer.
            let variants = [
                (None, None),
                (Some(REQUEST_ID), current.as_ref().map(|j| j.revision)),
            ];
            for (request_id, expected_revision) in variants {
                let req = request(actor.caller(), c.command(), request_id, expected_revision);
                let result = decide(current.as_ref(), &req, now());
                let label = format!(
                    "{f:?} × {c:?} × {actor:?} (request_id {request_id:?}, expected_revision {expected_revision:?})"
                );
                problems.extend(check(
                    &label,
                    current.as_ref(),
                    actor,
                    &req,
                    expected,
                    &result,
                ));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, F::ALL.len() * C::ALL.len() * Actor::ALL.len() * 2);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn stale_expected_revision_is_checked_after_access_and_before_the_rules() {
    // With a stale expected_revision: strangers still get NoAccess, a missing
    // job is still NotFound/NoAccess, Create still answers as without it, and
    // every party to an existing job gets RevisionMismatch, even for commands
    // that would otherwise fail on role or state or be idempotent repeats.
    let mut problems = Vec::new();
    for (f, c, row) in TABLE {
        let current = f.job();
        let is_create = matches!(c.command(), Command::Create { .. });
        for (actor, plain) in Actor::ALL.into_iter().zip(row.iter().copied()) {
            let stale = current.as_ref().map_or(99, |j| j.revision - 1);
            let req = request(actor.caller(), c.command(), None, Some(stale));
            let result = decide(current.as_ref(), &req, now());
            let expected = if current.is_none() || is_create || plain == NA {
                plain
            } else {
                Outcome::Err(ErrKind::RevisionMismatch)
            };
            let got = outcome(&result);
            if got != expected {
                problems.push(format!(
                    "{f:?} × {c:?} × {actor:?}: expected {expected:?}, got {got:?}"
                ));
            }
            if let Err(DomainError::RevisionMismatch {
                job,
                expected,
                actual,
            }) = &result
            {
                let current = current.as_ref().unwrap();
                if (*job, *expected, *actual) != (current.id, stale, current.revision) {
                    problems.push(format!("{f:?} × {c:?} × {actor:?}: {result:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------

fn decide_as(
    current: Option<&Job>,
    caller: Caller,
    command: Command,
) -> Result<Decision, DomainError> {
    decide(current, &request(caller, command, None, None), now())
}

fn changed(result: Result<Decision, DomainError>) -> Event {
    match result {
        Ok(Decision::Changed(event)) => event,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn client() -> Caller {
    Actor::Client.caller()
}

fn worker() -> Caller {
    Actor::Worker.caller()
}

fn stranger() -> Caller {
    Actor::Stranger.caller()
}

fn service() -> Caller {
    Actor::Service.caller()
}

#[test]
fn strangers_get_exactly_the_missing_job_error() {
    // Byte for byte the same error as for a job that does not exist, so a
    // user cannot tell the two apart.
    for f in F::ALL {
        let Some(job) = f.job() else { continue };
        for c in C::ALL {
            if matches!(c.command(), Command::Create { .. }) {
                continue;
            }
            let on_job = decide_as(Some(&job), stranger(), c.command()).unwrap_err();
            let missing = decide_as(None, stranger(), c.command()).unwrap_err();
            assert_eq!(on_job, DomainError::NoAccess(job_id()), "{f:?} × {c:?}");
            assert_eq!(on_job, missing, "{f:?} × {c:?}");
            assert_eq!(on_job.to_string(), missing.to_string());
        }
    }
}

#[test]
fn users_creating_jobs_get_the_same_error_whether_or_not_the_id_exists() {
    let existing = F::InProgress.job().unwrap();
    for caller in [client(), worker(), stranger()] {
        let on_existing = decide_as(Some(&existing), caller.clone(), C::CreateOpen.command());
        let on_missing = decide_as(None, caller, C::CreateOpen.command());
        assert_eq!(on_existing, on_missing);
        assert_eq!(
            on_missing,
            Err(DomainError::WrongRole {
                action: "create jobs",
                allowed: "a platform service",
            })
        );
    }
}

#[test]
fn missing_job_is_not_found_for_services_and_no_access_for_users() {
    let err = decide_as(None, service(), Command::MarkComplete).unwrap_err();
    assert_eq!(err, DomainError::NotFound(job_id()));
    assert_eq!(err.to_string(), "job 42 does not exist");
    for user in [client(), worker(), stranger()] {
        let err = decide_as(None, user, Command::ConfirmPayment).unwrap_err();
        assert_eq!(err, DomainError::NoAccess(job_id()));
        assert_eq!(
            err.to_string(),
            "job 42 does not exist or you are not its client or assigned worker"
        );
    }
    // An expected_revision does not turn a missing job into anything else.
    let req = request(service(), Command::ConfirmPayment, None, Some(3));
    assert_eq!(
        decide(None, &req, now()),
        Err(DomainError::NotFound(job_id()))
    );
    let req = request(client(), Command::ConfirmPayment, None, Some(3));
    assert_eq!(
        decide(None, &req, now()),
        Err(DomainError::NoAccess(job_id()))
    );
}

#[test]
fn a_reassigned_worker_becomes_a_stranger() {
    let before = F::InProgress.job().unwrap();
    let event = changed(decide_as(
        Some(&before),
        service(),
        C::AssignOther.command(),
    ));
    let after = event.job;
    assert_eq!(event.kind, EventKind::WorkerAssigned);
    assert_eq!(after.worker_id, Some(uid(OTHER_WORKER)));
    assert_eq!(after.status, JobStatus::InProgress);
    assert_eq!(after.role_of(&uid(WORKER)), None);
    assert_eq!(after.role_of(&uid(OTHER_WORKER)), Some(Role::Worker));

    // The old worker can no longer act, not even on their own old actions.
    for command in [Command::MarkComplete, Command::ConfirmPayment] {
        assert_eq!(
            decide_as(Some(&after), worker(), command),
            Err(DomainError::NoAccess(job_id()))
        );
    }
    // The old worker gets NoAccess, not RevisionMismatch, with a stale revision.
    let req = request(worker(), Command::MarkComplete, None, Some(before.revision));
    assert_eq!(
        decide(Some(&after), &req, now()),
        Err(DomainError::NoAccess(job_id()))
    );
    // The new one can.
    let marked = changed(decide_as(
        Some(&after),
        Caller::User(uid(OTHER_WORKER)),
        Command::MarkComplete,
    ));
    assert_eq!(marked.job.status, JobStatus::AwaitingClientApproval);
    assert_eq!(marked.actor_role, Role::Worker);
    assert_eq!(marked.actor_id, OTHER_WORKER);
}

#[test]
fn caller_helpers() {
    let job = F::InProgress.job().unwrap();
    assert_eq!(client().id(), CLIENT);
    assert_eq!(service().id(), SERVICE);
    assert_eq!(client().role_on(&job), Ok(Role::Client));
    assert_eq!(worker().role_on(&job), Ok(Role::Worker));
    assert_eq!(service().role_on(&job), Ok(Role::Service));
    assert_eq!(
        stranger().role_on(&job),
        Err(DomainError::NoAccess(job_id()))
    );
    assert_eq!(service().missing(job_id()), DomainError::NotFound(job_id()));
    assert_eq!(client().missing(job_id()), DomainError::NoAccess(job_id()));

    let open = F::Open.job().unwrap();
    assert_eq!(open.role_of(&uid(CLIENT)), Some(Role::Client));
    assert_eq!(open.role_of(&uid(WORKER)), None);
    assert_eq!(
        worker().role_on(&open),
        Err(DomainError::NoAccess(job_id()))
    );
}

// ---------------------------------------------------------------------------
// Expected revision
// ---------------------------------------------------------------------------

#[test]
fn expected_revision_mismatch_reports_both_revisions() {
    let job = F::AwaitingApproval.job().unwrap();
    let req = request(client(), C::ApproveCash.command(), None, Some(2));
    let err = decide(Some(&job), &req, now()).unwrap_err();
    assert_eq!(
        err,
        DomainError::RevisionMismatch {
            job: job_id(),
            expected: 2,
            actual: 3,
        }
    );
    assert_eq!(
        err.to_string(),
        "job 42 is at revision 3, not the expected 2; reload it and retry"
    );
    // A revision from the future is just as wrong.
    let req = request(client(), C::ApproveCash.command(), None, Some(4));
    assert!(matches!(
        decide(Some(&job), &req, now()),
        Err(DomainError::RevisionMismatch {
            expected: 4,
            actual: 3,
            ..
        })
    ));
}

#[test]
fn expected_revision_is_checked_before_role_and_state() {
    let job = F::AwaitingApproval.job().unwrap();
    // The worker may not approve (WrongRole), but the stale revision wins.
    let req = request(worker(), C::ApproveCash.command(), None, Some(1));
    assert!(matches!(
        decide(Some(&job), &req, now()),
        Err(DomainError::RevisionMismatch { .. })
    ));
    // The client may not confirm payment in this state, but the stale revision wins.
    let req = request(client(), Command::ConfirmPayment, None, Some(1));
    assert!(matches!(
        decide(Some(&job), &req, now()),
        Err(DomainError::RevisionMismatch { .. })
    ));
    // A repeat that would be Unchanged still fails on a stale revision...
    let req = request(worker(), Command::MarkComplete, None, Some(1));
    assert!(matches!(
        decide(Some(&job), &req, now()),
        Err(DomainError::RevisionMismatch { .. })
    ));
    // ...and succeeds on the current one.
    let req = request(worker(), Command::MarkComplete, None, Some(3));
    assert_eq!(
        decide(Some(&job), &req, now()),
        Ok(Decision::Unchanged(job.clone()))
    );
    // Strangers never learn the revision.
    let req = request(stranger(), Command::MarkComplete, None, Some(1));
    assert_eq!(
        decide(Some(&job), &req, now()),
        Err(DomainError::NoAccess(job_id()))
    );
}

// ---------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------

#[test]
fn create_without_worker_makes_an_open_job_at_revision_one() {
    let req = request(service(), C::CreateOpen.command(), Some(REQUEST_ID), None);
    let event = changed(decide(None, &req, now()));
    assert_eq!(
        event,
        Event {
            kind: EventKind::JobCreated,
            actor_id: SERVICE.to_owned(),
            actor_role: Role::Service,
            request_id: Some(rid(REQUEST_ID)),
            job: Job {
                id: job_id(),
                client_id: uid(CLIENT),
                worker_id: None,
                status: JobStatus::Open,
                payment_method: None,
                payment_proof: None,
                change_request_reason: None,
                cancel_reason: None,
                revision: 1,
                created_at: now(),
                updated_at: now(),
            },
        }
    );
}

#[test]
fn create_with_worker_makes_a_job_in_progress() {
    let event = changed(decide_as(None, service(), C::CreateWithWorker.command()));
    assert_eq!(event.kind, EventKind::JobCreated);
    assert_eq!(event.request_id, None);
    assert_eq!(event.job.status, JobStatus::InProgress);
    assert_eq!(event.job.worker_id, Some(uid(WORKER)));
    assert_eq!(event.job.revision, 1);
    assert_eq!(event.job.role_of(&uid(WORKER)), Some(Role::Worker));
}

#[test]
fn create_rejects_the_client_as_worker() {
    let err = decide_as(None, service(), C::CreateSelf.command()).unwrap_err();
    assert_eq!(
        err,
        DomainError::InvalidArgument {
            field: "worker_id",
            message: "the worker must be a different user from the client".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "worker_id: the worker must be a different user from the client"
    );
}

#[test]
fn create_on_an_existing_id_already_exists() {
    for f in F::ALL {
        let Some(job) = f.job() else { continue };
        let err = decide_as(Some(&job), service(), C::CreateOpen.command()).unwrap_err();
        assert_eq!(err, DomainError::AlreadyExists(job_id()), "{f:?}");
        assert_eq!(err.to_string(), "job 42 already exists");
    }
}

// ---------------------------------------------------------------------------
// Each command's effect on the job
// ---------------------------------------------------------------------------

/// `after` must equal `before` except for the listed changes, a revision one
/// higher and `updated_at == now()`.
fn assert_only_changed(before: &Job, after: &Job, expected: Job) {
    assert_eq!(after.revision, before.revision + 1);
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(after.updated_at, now());
    assert_eq!(after, &expected);
}

#[test]
fn assign_worker_to_an_open_job() {
    let before = F::Open.job().unwrap();
    let req = request(service(), C::AssignSame.command(), Some(REQUEST_ID), None);
    let event = changed(decide(Some(&before), &req, now()));
    assert_eq!(event.kind, EventKind::WorkerAssigned);
    assert_eq!(event.actor_role, Role::Service);
    assert_eq!(event.actor_id, SERVICE);
    assert_eq!(event.request_id, Some(rid(REQUEST_ID)));
    assert_only_changed(
        &before,
        &event.job,
        Job {
            worker_id: Some(uid(WORKER)),
            status: JobStatus::InProgress,
            revision: 2,
            updated_at: now(),
            ..before.clone()
        },
    );
}

#[test]
fn assigning_the_same_worker_again_is_unchanged() {
    let job = F::InProgress.job().unwrap();
    let later = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let req = request(service(), C::AssignSame.command(), Some(REQUEST_ID), None);
    assert_eq!(
        decide(Some(&job), &req, later),
        Ok(Decision::Unchanged(job.clone()))
    );
}

#[test]
fn assigning_the_client_is_invalid_in_every_state() {
    for f in F::ALL {
        let Some(job) = f.job() else { continue };
        let err = decide_as(Some(&job), service(), C::AssignClient.command()).unwrap_err();
        assert_eq!(
            err,
            DomainError::invalid(
                "worker_id",
                "the worker must be a different user from the client"
            ),
            "{f:?}"
        );
    }
}

#[test]
fn mark_complete_awaits_the_clients_approval() {
    let before = F::InProgress.job().unwrap();
    let event = changed(decide_as(Some(&before), worker(), Command::MarkComplete));
    assert_eq!(event.kind, EventKind::WorkerMarkedComplete);
    assert_eq!(event.actor_role, Role::Worker);
    assert_eq!(event.actor_id, WORKER);
    assert_only_changed(
        &before,
        &event.job,
        Job {
            status: JobStatus::AwaitingClientApproval,
            revision: 3,
            updated_at: now(),
            ..before.clone()
        },
    );
    assert!(event.job.worker_marked_complete());
    assert!(event.job.awaiting_client_verification());
}

#[test]
fn request_changes_stores_the_reason_and_goes_back_to_work() {
    let before = F::AwaitingApproval.job().unwrap();
    let event = changed(decide_as(
        Some(&before),
        client(),
        Command::RequestChanges {
            reason: reason("the tap still drips\nplease fix"),
        },
    ));
    assert_eq!(event.kind, EventKind::ClientRequestedChanges);
    assert_eq!(event.actor_role, Role::Client);
    assert_eq!(event.actor_id, CLIENT);
    assert_only_changed(
        &before,
        &event.job,
        Job {
            status: JobStatus::InProgress,
            change_request_reason: Some(reason("the tap still drips\nplease fix")),
            revision: 4,
            updated_at: now(),
            ..before.clone()
        },
    );
    assert!(!event.job.worker_marked_complete());
    assert!(!event.job.awaiting_client_verification());

    // The worker can mark it complete again afterwards.
    let again = changed(decide_as(Some(&event.job), worker(), Command::MarkComplete));
    assert_eq!(again.job.status, JobStatus::AwaitingClientApproval);
    assert_eq!(again.job.revision, 5);
}

#[test]
fn approve_completion_records_the_method() {
    for (c, method) in [
        (C::ApproveCash, PaymentMethod::Cash),
        (C::ApproveGcash, PaymentMethod::Gcash),
    ] {
        let before = F::AwaitingApproval.job().unwrap();
        let event = changed(decide_as(Some(&before), client(), c.command()));
        assert_eq!(event.kind, EventKind::ClientApprovedCompletion);
        assert_eq!(event.actor_role, Role::Client);
        assert_only_changed(
            &before,
            &event.job,
            Job {
                status: JobStatus::AwaitingPayment,
                payment_method: Some(method),
                revision: 4,
                updated_at: now(),
                ..before.clone()
            },
        );
        assert!(event.job.client_marked_complete());
    }
}

#[test]
fn approving_again_with_another_method_names_the_approved_one() {
    let cases = [
        (F::PayCash, C::ApproveGcash, "CASH", "awaiting_payment"),
        (F::PayGcash, C::ApproveCash, "GCASH", "awaiting_payment"),
        (F::DoneCash, C::ApproveGcash, "CASH", "completed"),
        (F::DoneGcash, C::ApproveCash, "GCASH", "completed"),
    ];
    for (f, c, approved, status) in cases {
        let job = f.job().unwrap();
        let err = decide_as(Some(&job), client(), c.command()).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, DomainError::FailedPrecondition { .. }),
            "{f:?}: {err:?}"
        );
        assert!(
            message.contains(&format!("already approved with {approved}")),
            "{f:?}: {message}"
        );
        assert!(
            message.contains(&format!("job 42 is {status}")),
            "{f:?}: {message}"
        );
    }
    // The exact wording, once.
    let err = decide_as(
        Some(&F::PayCash.job().unwrap()),
        client(),
        C::ApproveGcash.command(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot approve completion: job 42 is awaiting_payment; completion was already \
         approved with CASH; the payment method cannot be changed"
    );
}

#[test]
fn submit_payment_proof_stores_it_and_stays_awaiting_payment() {
    let before = F::PayCash.job().unwrap();
    let req = request(client(), C::SubmitProof.command(), Some(REQUEST_ID), None);
    let event = changed(decide(Some(&before), &req, now()));
    assert_eq!(event.kind, EventKind::PaymentProofSubmitted);
    assert_eq!(event.actor_role, Role::Client);
    assert_eq!(event.request_id, Some(rid(REQUEST_ID)));
    assert_only_changed(
        &before,
        &event.job,
        Job {
            payment_proof: Some(proof(PROOF)),
            revision: 5,
            updated_at: now(),
            ..before.clone()
        },
    );

    // The same proof again is a repeat.
    let job = event.job;
    assert_eq!(
        decide_as(Some(&job), client(), C::SubmitProof.command()),
        Ok(Decision::Unchanged(job.clone()))
    );
    // A different proof replaces it.
    let replaced = changed(decide_as(
        Some(&job),
        client(),
        C::SubmitOtherProof.command(),
    ));
    assert_eq!(replaced.job.payment_proof, Some(proof(OTHER_PROOF)));
    assert_eq!(replaced.job.status, JobStatus::AwaitingPayment);
    assert_eq!(replaced.job.revision, job.revision + 1);
}

#[test]
fn payment_proofs_are_refused_for_gcash() {
    for f in [F::PayGcash, F::DoneGcash] {
        let job = f.job().unwrap();
        let err = decide_as(Some(&job), client(), C::SubmitProof.command()).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, DomainError::FailedPrecondition { .. }),
            "{err:?}"
        );
        assert!(message.contains("GCASH"), "{message}");
        assert!(message.contains(job.status.as_str()), "{message}");
    }
}

#[test]
fn confirm_cash_payment_needs_the_proof_and_the_worker() {
    let without = F::PayCash.job().unwrap();
    let err = decide_as(Some(&without), worker(), Command::ConfirmPayment).unwrap_err();
    assert!(matches!(
        err,
        DomainError::FailedPrecondition {
            status: JobStatus::AwaitingPayment,
            ..
        }
    ));
    assert!(err.to_string().contains("proof"), "{err}");

    let with = F::PayCashProof.job().unwrap();
    let event = changed(decide_as(Some(&with), worker(), Command::ConfirmPayment));
    assert_eq!(event.kind, EventKind::PaymentConfirmed);
    assert_eq!(event.actor_role, Role::Worker);
    assert_eq!(event.actor_id, WORKER);
    assert_only_changed(
        &with,
        &event.job,
        Job {
            status: JobStatus::Completed,
            revision: 6,
            updated_at: now(),
            ..with.clone()
        },
    );
    assert!(matches!(
        decide_as(Some(&with), service(), Command::ConfirmPayment),
        Err(DomainError::WrongRole { .. })
    ));
}

#[test]
fn confirm_gcash_payment_is_for_the_service() {
    let before = F::PayGcash.job().unwrap();
    let event = changed(decide_as(Some(&before), service(), Command::ConfirmPayment));
    assert_eq!(event.kind, EventKind::PaymentConfirmed);
    assert_eq!(event.actor_role, Role::Service);
    assert_only_changed(
        &before,
        &event.job,
        Job {
            status: JobStatus::Completed,
            revision: 7,
            updated_at: now(),
            ..before.clone()
        },
    );
    assert!(matches!(
        decide_as(Some(&before), worker(), Command::ConfirmPayment),
        Err(DomainError::WrongRole { .. })
    ));
}

#[test]
fn clients_never_confirm_payment() {
    for f in F::ALL {
        let Some(job) = f.job() else { continue };
        let err = decide_as(Some(&job), client(), Command::ConfirmPayment).unwrap_err();
        assert!(
            matches!(err, DomainError::WrongRole { .. }),
            "{f:?}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "only the worker (CASH) or the payment service (GCASH) may confirm payment"
        );
    }
}

#[test]
fn cancel_stores_the_reason_or_none() {
    for (cancel_reason, revision) in [(Some(reason("duplicate posting")), 3), (None, 3)] {
        let before = F::InProgress.job().unwrap();
        let req = request(
            service(),
            Command::Cancel {
                reason: cancel_reason.clone(),
            },
            Some(REQUEST_ID),
            None,
        );
        let event = changed(decide(Some(&before), &req, now()));
        assert_eq!(event.kind, EventKind::JobCancelled);
        assert_eq!(event.actor_role, Role::Service);
        assert_eq!(event.request_id, Some(rid(REQUEST_ID)));
        assert_only_changed(
            &before,
            &event.job,
            Job {
                status: JobStatus::Cancelled,
                cancel_reason,
                revision,
                updated_at: now(),
                ..before.clone()
            },
        );
        // Cancelling again, even with another reason, is a repeat.
        let job = event.job;
        assert_eq!(
            decide_as(
                Some(&job),
                service(),
                Command::Cancel {
                    reason: Some(reason("another reason")),
                },
            ),
            Ok(Decision::Unchanged(job.clone()))
        );
    }
}

#[test]
fn a_completed_job_cannot_be_cancelled() {
    let job = F::DoneCash.job().unwrap();
    let err = decide_as(Some(&job), service(), C::Cancel.command()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot cancel the job: job 42 is completed; a completed job cannot be cancelled"
    );
}

#[test]
fn unchanged_returns_the_job_untouched() {
    let later = Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).unwrap();
    let repeats = [
        (F::InProgress, Actor::Service, C::AssignSame),
        (F::AwaitingApproval, Actor::Worker, C::MarkComplete),
        (F::PayCash, Actor::Worker, C::MarkComplete),
        (F::DoneGcash, Actor::Worker, C::MarkComplete),
        (F::PayCash, Actor::Client, C::ApproveCash),
        (F::DoneGcash, Actor::Client, C::ApproveGcash),
        (F::PayCashProof, Actor::Client, C::SubmitProof),
        (F::DoneCash, Actor::Client, C::SubmitProof),
        (F::DoneCash, Actor::Worker, C::Confirm),
        (F::DoneGcash, Actor::Service, C::Confirm),
        (F::CancelledInProgress, Actor::Service, C::Cancel),
    ];
    for (f, actor, c) in repeats {
        let job = f.job().unwrap();
        let req = request(actor.caller(), c.command(), Some(REQUEST_ID), None);
        assert_eq!(
            decide(Some(&job), &req, later),
            Ok(Decision::Unchanged(job.clone())),
            "{f:?} × {actor:?} × {c:?}"
        );
    }
}

#[test]
fn failed_precondition_names_the_current_status() {
    let cases = [
        (F::Open, Actor::Client, C::RequestChanges, "open"),
        (F::InProgress, Actor::Client, C::ApproveCash, "in_progress"),
        (
            F::AwaitingApproval,
            Actor::Service,
            C::AssignOther,
            "awaiting_client_approval",
        ),
        (F::PayCash, Actor::Worker, C::Confirm, "awaiting_payment"),
        (F::DoneCash, Actor::Service, C::Cancel, "completed"),
        (
            F::CancelledInProgress,
            Actor::Worker,
            C::MarkComplete,
            "cancelled",
        ),
    ];
    for (f, actor, c, status) in cases {
        let job = f.job().unwrap();
        let err = decide_as(Some(&job), actor.caller(), c.command()).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("cannot "), "{message}");
        assert!(
            message.contains(&format!(": job 42 is {status}; ")),
            "{f:?}: {message}"
        );
    }
}

#[test]
fn wrong_role_messages_say_who_may_act() {
    let job = F::AwaitingApproval.job().unwrap();
    let cases = [
        (
            client(),
            C::AssignOther,
            "only a platform service may assign a worker",
        ),
        (
            worker(),
            C::Cancel,
            "only a platform service may cancel the job",
        ),
        (
            service(),
            C::MarkComplete,
            "only the assigned worker may mark the job complete",
        ),
        (
            worker(),
            C::RequestChanges,
            "only the job's client may request changes",
        ),
        (
            service(),
            C::ApproveCash,
            "only the job's client may approve completion",
        ),
        (
            worker(),
            C::SubmitProof,
            "only the job's client may submit a proof of payment",
        ),
    ];
    for (caller, c, message) in cases {
        let err = decide_as(Some(&job), caller, c.command()).unwrap_err();
        assert!(matches!(err, DomainError::WrongRole { .. }), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
}

// ---------------------------------------------------------------------------
// Whole lives
// ---------------------------------------------------------------------------

/// Runs `steps` from no job, checking each event's kind, status, actor and
/// revision, and returns the final job.
fn run(steps: &[(Actor, C, EventKind, JobStatus)]) -> Job {
    let mut job: Option<Job> = None;
    for (i, (actor, c, kind, status)) in steps.iter().enumerate() {
        let req = request(actor.caller(), c.command(), Some(REQUEST_ID), None);
        let event = changed(decide(job.as_ref(), &req, now()));
        assert_eq!(
            (event.kind, event.job.status, event.actor_role),
            (*kind, *status, actor.event_role()),
            "step {i}: {actor:?} {c:?}"
        );
        assert_eq!(event.job.revision, i as i64 + 1, "step {i}");
        assert_eq!(event.request_id, Some(rid(REQUEST_ID)), "step {i}");
        job = Some(event.job);
    }
    job.unwrap()
}

#[test]
fn a_cash_job_from_creation_to_completion() {
    use Actor::{Client, Service, Worker};
    use EventKind as K;
    use JobStatus as S;
    let job = run(&[
        (Service, C::CreateOpen, K::JobCreated, S::Open),
        (Service, C::AssignSame, K::WorkerAssigned, S::InProgress),
        (
            Worker,
            C::MarkComplete,
            K::WorkerMarkedComplete,
            S::AwaitingClientApproval,
        ),
        (
            Client,
            C::RequestChanges,
            K::ClientRequestedChanges,
            S::InProgress,
        ),
        (
            Worker,
            C::MarkComplete,
            K::WorkerMarkedComplete,
            S::AwaitingClientApproval,
        ),
        (
            Client,
            C::ApproveCash,
            K::ClientApprovedCompletion,
            S::AwaitingPayment,
        ),
        (
            Client,
            C::SubmitProof,
            K::PaymentProofSubmitted,
            S::AwaitingPayment,
        ),
        (Worker, C::Confirm, K::PaymentConfirmed, S::Completed),
    ]);
    assert_eq!(job.payment_method, Some(PaymentMethod::Cash));
    assert_eq!(job.payment_proof, Some(proof(PROOF)));
    assert_eq!(job.worker_id, Some(uid(WORKER)));
    assert!(job.change_request_reason.is_some());
    assert_eq!(job.created_at, now());
}

#[test]
fn a_gcash_job_from_creation_to_completion() {
    use Actor::{Client, Service, Worker};
    use EventKind as K;
    use JobStatus as S;
    let job = run(&[
        (Service, C::CreateWithWorker, K::JobCreated, S::InProgress),
        (
            Worker,
            C::MarkComplete,
            K::WorkerMarkedComplete,
            S::AwaitingClientApproval,
        ),
        (
            Client,
            C::ApproveGcash,
            K::ClientApprovedCompletion,
            S::AwaitingPayment,
        ),
        (Service, C::Confirm, K::PaymentConfirmed, S::Completed),
    ]);
    assert_eq!(job.payment_method, Some(PaymentMethod::Gcash));
    assert_eq!(job.payment_proof, None);
}

#[test]
fn a_job_cancelled_mid_payment_keeps_its_payment_details() {
    use Actor::{Client, Service, Worker};
    use EventKind as K;
    use JobStatus as S;
    let job = run(&[
        (Service, C::CreateWithWorker, K::JobCreated, S::InProgress),
        (
            Worker,
            C::MarkComplete,
            K::WorkerMarkedComplete,
            S::AwaitingClientApproval,
        ),
        (
            Client,
            C::ApproveCash,
            K::ClientApprovedCompletion,
            S::AwaitingPayment,
        ),
        (
            Client,
            C::SubmitProof,
            K::PaymentProofSubmitted,
            S::AwaitingPayment,
        ),
        (Service, C::Cancel, K::JobCancelled, S::Cancelled),
    ]);
    assert_eq!(job.payment_method, Some(PaymentMethod::Cash));
    assert_eq!(job.payment_proof, Some(proof(PROOF)));
    assert_eq!(job.cancel_reason, Some(reason("duplicate posting")));
    // Nothing moves it on: the worker cannot confirm the old proof.
    assert!(matches!(
        decide_as(Some(&job), worker(), Command::ConfirmPayment),
        Err(DomainError::FailedPrecondition {
            status: JobStatus::Cancelled,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Derived flags
// ---------------------------------------------------------------------------

#[test]
fn derived_flags_per_status() {
    // (status, worker_marked_complete, client_marked_complete, awaiting_client_verification)
    let table = [
        (JobStatus::Open, false, false, false),
        (JobStatus::InProgress, false, false, false),
        (JobStatus::AwaitingClientApproval, true, false, true),
        (JobStatus::AwaitingPayment, true, true, false),
        (JobStatus::Completed, true, true, false),
        (JobStatus::Cancelled, false, false, false),
    ];
    assert_eq!(table.len(), JobStatus::ALL.len());
    for (status, worker_done, client_done, awaiting) in table {
        let job = job(status, Some(WORKER), None, None, 1);
        assert_eq!(job.worker_marked_complete(), worker_done, "{status}");
        assert_eq!(job.client_marked_complete(), client_done, "{status}");
        assert_eq!(job.awaiting_client_verification(), awaiting, "{status}");
    }
    // The fixtures agree, whatever their payment details.
    for f in F::ALL {
        let Some(job) = f.job() else { continue };
        let row = table.iter().find(|r| r.0 == job.status).unwrap();
        assert_eq!(
            (
                job.worker_marked_complete(),
                job.client_marked_complete(),
                job.awaiting_client_verification()
            ),
            (row.1, row.2, row.3),
            "{f:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Parse helpers and names
// ---------------------------------------------------------------------------

#[test]
fn job_id_must_be_positive() {
    for bad in [0, -1, i64::MIN] {
        let err = JobId::new(bad).unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::InvalidArgument {
                    field: "job_id",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
    assert_eq!(
        JobId::new(0).unwrap_err().to_string(),
        "job_id: must be a positive integer, got 0"
    );
    for good in [1, 42, i64::MAX] {
        let id = JobId::new(good).unwrap();
        assert_eq!(id.get(), good);
        assert_eq!(id.to_string(), good.to_string());
    }
}

/// The shared checks for a bounded id-like string type.
fn check_bounded<T: std::fmt::Debug>(
    max: usize,
    parse: impl Fn(&'static str, String) -> Result<T, DomainError>,
    as_str: impl Fn(&T) -> String,
) {
    let invalid = |value: &str, message: &str| {
        let err = parse("the_field", value.to_owned()).unwrap_err();
        assert_eq!(
            err,
            DomainError::InvalidArgument {
                field: "the_field",
                message: message.to_owned(),
            },
            "{value:?}"
        );
    };
    invalid("", "must not be empty");
    invalid(" ", "must not be empty");
    invalid(" \t\n ", "must not be empty");
    invalid(
        &"a".repeat(max + 1),
        &format!("must be at most {max} characters, got {}", max + 1),
    );
    invalid(
        &"é".repeat(max + 1),
        &format!("must be at most {max} characters, got {}", max + 1),
    );
    for control in [
        "a\nb", "a\tb", "a\rb", "a\0b", "a\u{1b}b", "a\u{7f}b", "ab\u{85}",
    ] {
        invalid(control, "must not contain control characters");
    }

    for good in ["x", "user-123", " padded ", "ünïcödé", "a b"] {
        let value = parse("the_field", good.to_owned()).unwrap();
        assert_eq!(as_str(&value), good);
    }
    // The limit is in characters, not bytes.
    let longest = "é".repeat(max);
    assert_eq!(as_str(&parse("f", longest.clone()).unwrap()), longest);
    let longest = "a".repeat(max);
    assert_eq!(as_str(&parse("f", longest.clone()).unwrap()), longest);
}

#[test]
fn bounded_strings_validate() {
    assert_eq!(UserId::MAX_CHARS, 128);
    assert_eq!(ServiceId::MAX_CHARS, 128);
    assert_eq!(RequestId::MAX_CHARS, 128);
    assert_eq!(ProofRef::MAX_CHARS, 2048);
    check_bounded(128, UserId::parse, |v| v.as_str().to_owned());
    check_bounded(128, ServiceId::parse, |v| v.as_str().to_owned());
    check_bounded(128, RequestId::parse, |v| v.as_str().to_owned());
    check_bounded(2048, ProofRef::parse, |v| v.as_str().to_owned());
    assert_eq!(uid("abc").to_string(), "abc");
    assert_eq!(proof(PROOF).to_string(), PROOF);
}

#[test]
fn reasons_validate_but_allow_newlines() {
    assert_eq!(Reason::MAX_CHARS, 2000);
    for empty in ["", "   ", "\n\t"] {
        assert_eq!(
            Reason::parse("reason", empty),
            Err(DomainError::invalid("reason", "must not be empty"))
        );
    }
    assert_eq!(
        Reason::parse("reason", "x".repeat(2001)),
        Err(DomainError::invalid(
            "reason",
            "must be at most 2000 characters, got 2001"
        ))
    );
    assert_eq!(
        Reason::parse("reason", "ñ".repeat(2000)).unwrap().as_str(),
        "ñ".repeat(2000)
    );
    let multiline = "first line\nsecond line\r\n\tindented";
    assert_eq!(
        Reason::parse("reason", multiline).unwrap().as_str(),
        multiline
    );
}

#[test]
fn job_status_names_round_trip() {
    let names = [
        (JobStatus::Open, "open"),
        (JobStatus::InProgress, "in_progress"),
        (
            JobStatus::AwaitingClientApproval,
            "awaiting_client_approval",
        ),
        (JobStatus::AwaitingPayment, "awaiting_payment"),
        (JobStatus::Completed, "completed"),
        (JobStatus::Cancelled, "cancelled"),
    ];
    assert_eq!(names.len(), JobStatus::ALL.len());
    for (status, name) in names {
        assert!(JobStatus::ALL.contains(&status));
        assert_eq!(status.as_str(), name);
        assert_eq!(status.to_string(), name);
        assert_eq!(JobStatus::parse(name), Some(status));
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<JobStatus>(&format!("\"{name}\"")).unwrap(),
            status
        );
    }
    for bad in ["", "OPEN", "Open", "in-progress", "done", " open"] {
        assert_eq!(JobStatus::parse(bad), None, "{bad:?}");
    }
    let terminal: Vec<JobStatus> = JobStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect();
    assert_eq!(terminal, [JobStatus::Completed, JobStatus::Cancelled]);
}

#[test]
fn event_kind_names_round_trip() {
    let names = [
        (EventKind::JobCreated, "job_created"),
        (EventKind::WorkerAssigned, "worker_assigned"),
        (EventKind::WorkerMarkedComplete, "worker_marked_complete"),
        (
            EventKind::ClientRequestedChanges,
            "client_requested_changes",
        ),
        (
            EventKind::ClientApprovedCompletion,
            "client_approved_completion",
        ),
        (EventKind::PaymentProofSubmitted, "payment_proof_submitted"),
        (EventKind::PaymentConfirmed, "payment_confirmed"),
        (EventKind::JobCancelled, "job_cancelled"),
    ];
    assert_eq!(names.len(), EventKind::ALL.len());
    for (kind, name) in names {
        assert!(EventKind::ALL.contains(&kind));
        assert_eq!(kind.as_str(), name);
        assert_eq!(EventKind::parse(name), Some(kind));
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
    }
    for bad in ["", "JOB_CREATED", "created", "job_created "] {
        assert_eq!(EventKind::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn payment_method_names_round_trip() {
    for (method, name) in [
        (PaymentMethod::Cash, "CASH"),
        (PaymentMethod::Gcash, "GCASH"),
    ] {
        assert_eq!(method.as_str(), name);
        assert_eq!(method.to_string(), name);
        assert_eq!(PaymentMethod::parse(name), Some(method));
        assert_eq!(
            serde_json::to_string(&method).unwrap(),
            format!("\"{name}\"")
        );
    }
    for bad in ["", "cash", "Gcash", "CARD", "CASH "] {
        assert_eq!(PaymentMethod::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn command_event_kinds() {
    let expected = [
        (C::CreateOpen, EventKind::JobCreated),
        (C::AssignOther, EventKind::WorkerAssigned),
        (C::MarkComplete, EventKind::WorkerMarkedComplete),
        (C::RequestChanges, EventKind::ClientRequestedChanges),
        (C::ApproveGcash, EventKind::ClientApprovedCompletion),
        (C::SubmitProof, EventKind::PaymentProofSubmitted),
        (C::Confirm, EventKind::PaymentConfirmed),
        (C::Cancel, EventKind::JobCancelled),
    ];
    for (c, kind) in expected {
        assert_eq!(c.command().event_kind(), kind, "{c:?}");
    }
}

#[test]
fn roles_serialize_in_snake_case() {
    for (role, name) in [
        (Role::Client, "client"),
        (Role::Worker, "worker"),
        (Role::Service, "service"),
    ] {
        assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{name}\""));
    }
}

#[test]
fn reasons_refuse_control_characters_but_keep_line_breaks_and_tabs() {
    for bad in ["a\0b", "a\u{1b}b", "a\u{7f}b"] {
        assert!(
            matches!(
                Reason::parse("reason", bad),
                Err(DomainError::InvalidArgument {
                    field: "reason",
                    ..
                })
            ),
            "{bad:?} must be refused"
        );
    }
    assert_eq!(
        reason("line one\r\nline\ttwo").as_str(),
        "line one\r\nline\ttwo"
    );
}

#[test]
fn a_retry_is_answered_only_by_the_event_of_the_same_request() {
    let service = Caller::Service(sid(SERVICE));
    let create = |worker: &str| Command::Create {
        client: uid(CLIENT),
        worker: Some(uid(worker)),
    };
    let request = Request {
        job_id: job_id(),
        caller: service,
        command: create(WORKER),
        request_id: Some(rid(REQUEST_ID)),
        expected_revision: None,
    };
    let Ok(Decision::Changed(created)) = decide(None, &request, created()) else {
        panic!("create must change the job");
    };
    assert!(create(WORKER).is_answered_by(&created));
    assert!(!create(OTHER_WORKER).is_answered_by(&created));
    assert!(!Command::MarkComplete.is_answered_by(&created));
    assert!(
        !Command::AssignWorker {
            worker: uid(WORKER)
        }
        .is_answered_by(&created)
    );

    let mut approved = created.clone();
    approved.kind = EventKind::ClientApprovedCompletion;
    approved.job.payment_method = Some(PaymentMethod::Cash);
    assert!(
        Command::ApproveCompletion {
            method: PaymentMethod::Cash
        }
        .is_answered_by(&approved)
    );
    assert!(
        !Command::ApproveCompletion {
            method: PaymentMethod::Gcash
        }
        .is_answered_by(&approved)
    );
    let mut cancelled = created;
    cancelled.kind = EventKind::JobCancelled;
    assert!(Command::Cancel { reason: None }.is_answered_by(&cancelled));
    assert!(
        !Command::Cancel {
            reason: Some(reason("other"))
        }
        .is_answered_by(&cancelled)
    );
}
