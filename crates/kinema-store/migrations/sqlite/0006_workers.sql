-- GPU worker nodes (issue 14): a key role of their own, and what each node's devices
-- last reported, so every replica lists and drains them.
-- migrations/postgres/0006_workers.sql is the same schema for PostgreSQL:
-- change both together.

-- SQLite cannot change a CHECK in place: api_keys is rebuilt with 'worker' allowed.
CREATE TABLE api_keys_new (
    id            TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'platform', 'account', 'worker')),
    account_id    TEXT REFERENCES accounts(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    CHECK ((role = 'account') = (account_id IS NOT NULL))
);
INSERT INTO api_keys_new (id, role, account_id, name, prefix, secret_hash, created_at,
    last_used_at, revoked_at)
SELECT id, role, account_id, name, prefix, secret_hash, created_at, last_used_at, revoked_at
FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;

-- One row per device of a remote worker node, keyed by the lease owner its jobs carry.
CREATE TABLE workers (
    owner               TEXT PRIMARY KEY,
    key_id              TEXT NOT NULL REFERENCES api_keys(id),
    node                TEXT NOT NULL,
    -- Its last report: a kinema.v1.Worker message (protobuf, hex): the device, its
    -- state, memory, resident models, running jobs.
    status              TEXT NOT NULL,
    -- Its last report, on the server's clock.
    seen_at             INTEGER NOT NULL,
    -- Set by DrainWorker: the device stops leasing when its next report hears it.
    drain_requested_at  INTEGER
);
CREATE INDEX workers_seen ON workers(seen_at);
