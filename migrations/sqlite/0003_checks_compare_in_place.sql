-- no-transaction
-- The same tables with the same constraints, each allowed-values CHECK
-- written as equalities joined by OR instead of an IN list.
--
-- Why: SQLite evaluates `x IN (a, b, c, ...)` with more than two
-- constants by building a temporary index of the constants, afresh for
-- every statement that checks it. Each insert of a job, each change of its
-- status and each appended event built one or two of them: about 2 µs of
-- CPU apiece, more than a tenth of what SQLite spends on a change. An OR
-- of equalities accepts and refuses exactly the same values (NULL included)
-- and compares in place.
--
-- SQLite cannot alter a CHECK, so each table is rebuilt: created anew,
-- filled from the old one, which is dropped, and renamed (the procedure of
-- https://www.sqlite.org/lang_altertable.html#otheralter). The rebuild runs
-- in one transaction of its own, with foreign keys off on this connection
-- so that dropping the old `jobs` does not touch the events that refer to
-- it (every row is copied as it was, so every reference still holds). Run
-- again (a stop between the commit and sqlx recording this migration), it
-- rebuilds the same tables again. It copies every job and event once: on
-- a large file the first start after an upgrade takes that long, and needs
-- the free disk space of both tables' copies until it commits.

PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

CREATE TABLE jobs_rebuilt (
    job_id                INTEGER PRIMARY KEY CHECK (job_id > 0),
    client_id             TEXT    NOT NULL CHECK (client_id <> ''),
    worker_id             TEXT             CHECK (worker_id <> ''),
    status                TEXT    NOT NULL CHECK (
                              status = 'open' OR status = 'in_progress'
                              OR status = 'awaiting_client_approval'
                              OR status = 'awaiting_payment' OR status = 'completed'
                              OR status = 'cancelled'),
    payment_method        TEXT             CHECK (
                              payment_method = 'GCASH' OR payment_method = 'CASH'),
    payment_proof         TEXT,
    change_request_reason TEXT,
    cancel_reason         TEXT,
    revision              INTEGER NOT NULL CHECK (revision > 0),
    created_at            TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL
);

INSERT INTO jobs_rebuilt (
    job_id, client_id, worker_id, status, payment_method, payment_proof,
    change_request_reason, cancel_reason, revision, created_at, updated_at)
SELECT
    job_id, client_id, worker_id, status, payment_method, payment_proof,
    change_request_reason, cancel_reason, revision, created_at, updated_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;

CREATE INDEX jobs_by_client ON jobs (client_id);
CREATE INDEX jobs_by_worker ON jobs (worker_id) WHERE worker_id IS NOT NULL;

CREATE TABLE job_events_rebuilt (
    job_id     INTEGER NOT NULL REFERENCES jobs (job_id),
    revision   INTEGER NOT NULL CHECK (revision > 0),
    event      TEXT    NOT NULL CHECK (
                   event = 'job_created' OR event = 'worker_assigned'
                   OR event = 'worker_marked_complete' OR event = 'client_requested_changes'
                   OR event = 'client_approved_completion' OR event = 'payment_proof_submitted'
                   OR event = 'payment_confirmed' OR event = 'job_cancelled'),
    actor_id   TEXT    NOT NULL,
    actor_role TEXT    NOT NULL CHECK (
                   actor_role = 'client' OR actor_role = 'worker' OR actor_role = 'service'),
    request_id TEXT,
    -- The whole event (including the job after it) as JSON.
    payload    TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (job_id, revision)
) WITHOUT ROWID;

INSERT INTO job_events_rebuilt (
    job_id, revision, event, actor_id, actor_role, request_id, payload, created_at)
SELECT
    job_id, revision, event, actor_id, actor_role, request_id, payload, created_at
FROM job_events;

DROP TABLE job_events;
ALTER TABLE job_events_rebuilt RENAME TO job_events;

-- AIP-155 idempotency: a caller's request id names at most one change.
CREATE UNIQUE INDEX job_events_by_request
    ON job_events (actor_id, request_id) WHERE request_id IS NOT NULL;

COMMIT;

PRAGMA foreign_keys = ON;
