-- Callbacks (docs/api.md, "Callbacks"). callback_deliveries is the outbox: a row is
-- written in the same transaction as the state change it tells of (a job's first
-- start, its end), so a crash never loses one; the server's delivery loop claims the
-- due rows, POSTs them and records each attempt. The body is the job's public
-- fields as JSON, never its prompt, negative prompt or metadata.
-- callback_secrets: the accounts' signing secrets (AdminService.RotateCallbackSecret);
-- a rotated-out secret still signs until retires_at.
-- migrations/sqlite/0012_callbacks.sql is the same schema for SQLite:
-- change both together.

CREATE TABLE callback_deliveries (
    -- The event id (Kinema-Event-Id): stable across retries, for the receiver's dedupe.
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES jobs(id),
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    -- job.running, job.succeeded, job.failed, job.cancelled
    event            TEXT NOT NULL,
    url              TEXT NOT NULL,
    body             TEXT NOT NULL,
    -- PENDING (due at next_attempt_at), DELIVERED, FAILED (gave up, or refused).
    state            TEXT NOT NULL DEFAULT 'PENDING'
                     CHECK (state IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    -- The HTTP status of the last attempt, if one came back.
    last_status      BIGINT,
    last_error       TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    -- When a PENDING row is next due; a claimed row is pushed past its send's end.
    next_attempt_at  BIGINT NOT NULL,
    delivered_at     BIGINT,
    failed_at        BIGINT,
    UNIQUE (job_id, event)
);
CREATE INDEX callback_deliveries_due ON callback_deliveries(next_attempt_at)
    WHERE state = 'PENDING';

CREATE TABLE callback_secrets (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    -- Set when a newer secret replaces it: it signs beside the new one until then.
    retires_at  BIGINT
);
CREATE INDEX callback_secrets_account ON callback_secrets(account_id, created_at);
