-- Job changes reach every replica without polling (issue 14): a trigger on jobs sends
-- a notification on the channel kinema_jobs when a job is inserted, or when its
-- state, stage, progress step or cancel request changes. NOTIFY is delivered when the
-- writing transaction commits, in commit order, and never for one rolled back, so a
-- replica hears exactly what was committed, in order, whichever replica (or tool)
-- wrote it, and no code path has to remember to publish. Each kinema server LISTENs
-- on one connection and fans the changes out to its WatchJob streams
-- (kinema-server's job_feed.rs; the payload is read by kinema-store's
-- job_changes.rs: change the two together).
--
-- The payload is compact JSON: what a watch needs to build its next event from the
-- job it already holds (a terminal state is re-read whole: artifacts, failure, money).
-- `usage` is the column's JSON text, left out (null) above 2 KiB, and `lease_owner`
-- is cut at 256 characters, so a payload stays far below PostgreSQL's 8000-byte limit
-- (a payload over it would abort the write). `at` is the database's clock when the
-- row was written (just before its commit), for measuring delivery.
--
-- migrations/sqlite/0005_job_notify.sql adds nothing: one SQLite database has one
-- server, whose in-process events suffice. The schema test (tests/schema.rs) compares
-- tables, columns and indexes, not triggers or functions, so these exist on
-- PostgreSQL alone.

CREATE FUNCTION kinema_notify_job_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kinema_jobs', json_build_object(
        'id', NEW.id,
        'state', NEW.state,
        'stage', NEW.stage,
        'step', NEW.progress_step,
        'total', NEW.progress_total,
        'cancel', NEW.cancel_requested,
        'attempts', NEW.attempts,
        'handed_back', NEW.handed_back,
        'held', NEW.held,
        'debited', NEW.debited,
        'refunded', NEW.refunded,
        'started_at', NEW.started_at,
        'finished_at', NEW.finished_at,
        'lease_owner', left(NEW.lease_owner, 256),
        'run_alone', NEW.run_alone,
        'usage', CASE WHEN octet_length(NEW.usage) <= 2048 THEN NEW.usage END,
        'at', CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)
    )::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION kinema_notify_job_change();

-- Lease renewals, heartbeats and other columns (charges, purges) send nothing.
CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR OLD.stage IS DISTINCT FROM NEW.stage
          OR OLD.progress_step IS DISTINCT FROM NEW.progress_step
          OR OLD.cancel_requested IS DISTINCT FROM NEW.cancel_requested)
    EXECUTE FUNCTION kinema_notify_job_change();
