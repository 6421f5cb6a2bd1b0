-- GPU worker nodes (issue 14): a key role of their own, and what each node's devices
-- last reported, so every replica lists and drains them.
-- migrations/sqlite/0006_workers.sql is the same schema for SQLite:
-- change both together.

ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('admin', 'platform', 'account', 'worker'));

-- One row per device of a remote worker node, keyed by the lease owner its jobs carry.
CREATE TABLE workers (
    owner               TEXT PRIMARY KEY,
    key_id              TEXT NOT NULL REFERENCES api_keys(id),
    node                TEXT NOT NULL,
    -- Its last report: a kinema.v1.Worker message (protobuf, hex): the device, its
    -- state, memory, resident models, running jobs.
    status              TEXT NOT NULL,
    -- Its last report, on the server's clock.
    seen_at             BIGINT NOT NULL,
    -- Set by DrainWorker: the device stops leasing when its next report hears it.
    drain_requested_at  BIGINT
);
CREATE INDEX workers_seen ON workers(seen_at);
