-- Kinema foundation schema (SQLite). Times are Unix milliseconds from the server's
-- clock; credits are integers; flags are 0/1 integers. ledger_entries is append-only.
-- migrations/postgres holds the same schema for PostgreSQL: change both together.

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    external_id  TEXT,
    status       TEXT NOT NULL DEFAULT 'active',
    created_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX accounts_external_id ON accounts(external_id) WHERE external_id IS NOT NULL;

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'platform', 'account')),
    account_id    TEXT REFERENCES accounts(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    CHECK ((role = 'account') = (account_id IS NOT NULL))
);

CREATE TABLE lots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    source      TEXT NOT NULL,
    original    INTEGER NOT NULL CHECK (original > 0),
    remaining   INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= original),
    expires_at  INTEGER,
    created_at  INTEGER NOT NULL,
    -- Set once the lot's EXPIRE entry is written.
    expired_at  INTEGER
);
CREATE INDEX lots_account ON lots(account_id, expires_at);

CREATE TABLE jobs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    account_id        TEXT NOT NULL REFERENCES accounts(id),
    external_id       TEXT,
    idempotency_key   TEXT,
    request_hash      TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    negative_prompt   TEXT NOT NULL,
    width             INTEGER NOT NULL,
    height            INTEGER NOT NULL,
    num_frames        INTEGER NOT NULL,
    fps               INTEGER NOT NULL,
    steps             INTEGER NOT NULL,
    guidance_scale    REAL NOT NULL,
    seed              INTEGER NOT NULL,
    output_format     TEXT NOT NULL,
    callback_url      TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    state             TEXT NOT NULL,
    stage             TEXT,
    progress_step     INTEGER NOT NULL DEFAULT 0,
    progress_total    INTEGER NOT NULL DEFAULT 0,
    quoted            INTEGER NOT NULL CHECK (quoted > 0),
    -- The hold still outstanding: the quote until the debit (or release), then 0.
    held              INTEGER NOT NULL CHECK (held >= 0),
    debited           INTEGER NOT NULL DEFAULT 0,
    refunded          INTEGER NOT NULL DEFAULT 0,
    failure_code      TEXT,
    failure_message   TEXT,
    failure_retryable INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    usage             TEXT NOT NULL DEFAULT '{}',
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    CHECK (debited = 0 OR debited = quoted),
    CHECK (refunded = 0 OR refunded = debited)
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs(account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_external_id ON jobs(account_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX jobs_account ON jobs(account_id, seq);
CREATE INDEX jobs_queue ON jobs(state, seq);
CREATE INDEX jobs_held ON jobs(account_id) WHERE held > 0;

CREATE TABLE artifacts (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    kind        TEXT NOT NULL,
    mime        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    location    TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (job_id, kind)
);

CREATE TABLE ledger_entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    kind           TEXT NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    -- JSON array of {"lot_id", "amount"}.
    allocations    TEXT NOT NULL,
    job_id         TEXT,
    actor          TEXT NOT NULL,
    balance_after  INTEGER NOT NULL,
    held_after     INTEGER NOT NULL,
    memo           TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL
);
CREATE INDEX ledger_account ON ledger_entries(account_id, id);
CREATE INDEX ledger_job ON ledger_entries(job_id, kind);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
