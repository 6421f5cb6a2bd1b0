-- Prompt retention (docs/api.md, "Retention"): a finished job's prompt, negative
-- prompt and metadata are kept until prompt_expires_at (its end plus the server's
-- prompt_log_ttl then), and prompt_purged_at says when they were blanked.
-- migrations/sqlite/0010_retention.sql is the same schema for SQLite:
-- change both together.
ALTER TABLE jobs ADD COLUMN prompt_expires_at BIGINT;
ALTER TABLE jobs ADD COLUMN prompt_purged_at BIGINT;

-- Jobs that ended before this migration keep theirs for the default 30 days.
UPDATE jobs SET prompt_expires_at = finished_at + 2592000000 WHERE finished_at IS NOT NULL;

-- What the retention sweep looks for: finished, not yet purged, oldest expiry first.
CREATE INDEX jobs_prompt_retention ON jobs(prompt_expires_at)
    WHERE prompt_purged_at IS NULL AND prompt_expires_at IS NOT NULL;
