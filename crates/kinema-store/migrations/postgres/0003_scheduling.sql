-- Scheduling (issue 5): priority classes, per-account fair share, batch companions.
-- migrations/sqlite/0003_scheduling.sql is the same schema for SQLite: change
-- both together.

-- 0 LOW, 1 NORMAL, 2 HIGH: the queue serves the highest class first.
ALTER TABLE jobs ADD COLUMN priority BIGINT NOT NULL DEFAULT 1 CHECK (priority IN (0, 1, 2));
-- Jobs with the same key may run as one batch; NULL never batches.
ALTER TABLE jobs ADD COLUMN batch_key TEXT;
-- Set when a job must run unbatched (an out-of-memory retry): never a companion.
ALTER TABLE jobs ADD COLUMN run_alone BIGINT NOT NULL DEFAULT 0;
-- Order of the account's latest lease (a counter, not a time: leases in the same
-- millisecond still order); fair share serves the least recent first on ties.
ALTER TABLE accounts ADD COLUMN last_served BIGINT NOT NULL DEFAULT 0;
CREATE INDEX accounts_last_served ON accounts(last_served);

-- Only queued (or running) jobs are in these, so they stay small however many
-- finished jobs the table holds. Fair share skips through the queue account by
-- account, then takes an account's oldest job of a class; model, run_alone and state
-- are there so the lookups need no table row (covering).
CREATE INDEX jobs_queued_fair ON jobs(account_id, priority, seq, model, state) WHERE state = 'QUEUED';
CREATE INDEX jobs_queued_batch ON jobs(batch_key, account_id, priority, seq, run_alone, state) WHERE state = 'QUEUED';
CREATE INDEX jobs_running_account ON jobs(account_id) WHERE state = 'RUNNING';
