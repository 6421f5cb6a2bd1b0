-- Organisations and seats (docs/api.md, "Organisations and seats"): an account's
-- members, each with a role (owner, admin, member) and its own keys; jobs and their
-- ledger entries record the member that submitted them.
-- migrations/postgres/0011_organisations.sql is the same schema for the other backend:
-- change both together.
CREATE TABLE members (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- Set once removed: the member no longer takes a seat and its keys are revoked.
    removed_at  INTEGER
);
CREATE INDEX members_account ON members(account_id, created_at);

-- The member an account key belongs to (NULL: the account's own key).
ALTER TABLE api_keys ADD COLUMN member_id TEXT REFERENCES members(id);
CREATE INDEX api_keys_member ON api_keys(member_id) WHERE member_id IS NOT NULL;

-- Who submitted the job, and the entries of its money (HOLD, DEBIT, RELEASE, REFUND).
ALTER TABLE jobs ADD COLUMN member_id TEXT;
CREATE INDEX jobs_account_member ON jobs(account_id, member_id, seq) WHERE member_id IS NOT NULL;
ALTER TABLE ledger_entries ADD COLUMN member_id TEXT;
CREATE INDEX ledger_entries_account_member ON ledger_entries(account_id, member_id, id)
    WHERE member_id IS NOT NULL;
