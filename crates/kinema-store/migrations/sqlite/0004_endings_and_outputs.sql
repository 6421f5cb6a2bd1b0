-- One ending per job, and outputs a platform chooses (issue 10): the database itself
-- refuses a second DEBIT or REFUND for a job, starts handed back by a draining worker
-- are counted apart from the retry budget, an artifact records why its file is gone,
-- and a job may ask for an animated preview.
-- migrations/postgres/0004_endings_and_outputs.sql is the same schema for PostgreSQL:
-- change both together.

-- At most one DEBIT and one REFUND per job, whatever code path writes them.
CREATE UNIQUE INDEX ledger_one_money_move_per_job ON ledger_entries(job_id, kind)
    WHERE kind IN ('DEBIT', 'REFUND');

-- Starts that a draining worker handed back: counted in attempts (every start), but
-- not against --max-attempts.
ALTER TABLE jobs ADD COLUMN handed_back INTEGER NOT NULL DEFAULT 0;

-- Why the file is gone or going: 'retention' (its time ran out) or 'account_closed'
-- (the account was terminated or deleted). NULL while it is kept.
ALTER TABLE artifacts ADD COLUMN removal TEXT;

-- The preview the job asked for, in its text form ('webp', 'gif:max=240'); NULL for
-- none. (The video's own settings are in output_format, e.g. 'h265:crf=24'.)
ALTER TABLE jobs ADD COLUMN preview TEXT;

-- kinema bench ledger once left its scratch table behind.
DROP TABLE IF EXISTS bench_raw;
