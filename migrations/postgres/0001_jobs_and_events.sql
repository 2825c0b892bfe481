-- Jobs (current state, one row per job) and their append-only event log.
-- Both are written in one transaction per change, together with a
-- pg_notify('jobstatus_events', '<job_id>:<revision>') that tells every
-- replica about the new revision once (and only if) the change commits.
-- Same schema as migrations/sqlite; never edit a migration once applied.

CREATE TABLE jobs (
    job_id                BIGINT      PRIMARY KEY CHECK (job_id > 0),
    client_id             TEXT        NOT NULL CHECK (client_id <> ''),
    worker_id             TEXT                 CHECK (worker_id <> ''),
    status                TEXT        NOT NULL CHECK (status IN (
                              'open', 'in_progress', 'awaiting_client_approval',
                              'awaiting_payment', 'completed', 'cancelled')),
    payment_method        TEXT                 CHECK (payment_method IN ('GCASH', 'CASH')),
    payment_proof         TEXT,
    change_request_reason TEXT,
    cancel_reason         TEXT,
    revision              BIGINT      NOT NULL CHECK (revision > 0),
    -- Microseconds, like codec::now(), so a job reads back exactly as written.
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);

CREATE INDEX jobs_by_client ON jobs (client_id);
CREATE INDEX jobs_by_worker ON jobs (worker_id) WHERE worker_id IS NOT NULL;

CREATE TABLE job_events (
    job_id     BIGINT      NOT NULL REFERENCES jobs (job_id),
    revision   BIGINT      NOT NULL CHECK (revision > 0),
    event      TEXT        NOT NULL CHECK (event IN (
                   'job_created', 'worker_assigned', 'worker_marked_complete',
                   'client_requested_changes', 'client_approved_completion',
                   'payment_proof_submitted', 'payment_confirmed', 'job_cancelled')),
    actor_id   TEXT        NOT NULL,
    actor_role TEXT        NOT NULL CHECK (actor_role IN ('client', 'worker', 'service')),
    request_id TEXT,
    -- The whole event (including the job after it) as JSON text, not JSONB:
    -- text round-trips the serialized event byte for byte.
    payload    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, revision)
);

-- AIP-155 idempotency: a caller's request id names at most one change.
CREATE UNIQUE INDEX job_events_by_request
    ON job_events (actor_id, request_id) WHERE request_id IS NOT NULL;
