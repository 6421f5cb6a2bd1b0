-- Usage policy (issue 13): every decision CreateJob's policy check takes, allowed or
-- not, for the operator's audit (AdminService.ListPolicyDecisions), and what counts
-- towards the automatic suspension. Never the prompt itself: the rule that matched.
-- migrations/postgres/0008_usage_policy.sql is the same schema for PostgreSQL:
-- change both together.

CREATE TABLE policy_decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    -- The API key that made the request.
    key_id          TEXT NOT NULL,
    -- allowed; refused (a policy violation); unavailable (the external moderation
    -- endpoint could not answer and the policy fails closed).
    decision        TEXT NOT NULL CHECK (decision IN ('allowed', 'refused', 'unavailable')),
    -- The refused category, as the policy file names it ('' when allowed).
    category        TEXT NOT NULL DEFAULT '',
    -- prompt or negative_prompt ('' when allowed).
    field           TEXT NOT NULL DEFAULT '',
    -- Which rule matched: term:CATEGORY:N, pattern:CATEGORY:N (N: its index in the
    -- file), external:CATEGORY.
    rule            TEXT NOT NULL DEFAULT '',
    -- local (the policy file) or external (the moderation endpoint).
    source          TEXT NOT NULL CHECK (source IN ('local', 'external')),
    -- The policy file's fingerprint (SHA-256, 12 hex digits): what N refers to.
    policy_version  TEXT NOT NULL DEFAULT '',
    -- 1: a refusal of an active account, which counts towards the suspension.
    counted         INTEGER NOT NULL DEFAULT 0,
    -- 1: this refusal suspended the account.
    suspended       INTEGER NOT NULL DEFAULT 0,
    note            TEXT NOT NULL DEFAULT '',
    -- The job an allowed request created (written in the job's own transaction).
    job_id          TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX policy_decisions_account ON policy_decisions(account_id, id);
CREATE INDEX policy_decisions_counted ON policy_decisions(account_id, counted, created_at);
