//! Scheduler overhead: how long a worker sits idle between two jobs while the next
//! one is already queued (stored per job as `Usage::scheduler_gap_us`).

use std::time::Instant;

/// A worker's memory of when its previous job ended.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdleGap {
    /// Monotonic instant, and the same moment on the worker's clock (to compare with
    /// a job's `created_at`).
    last_end: Option<(Instant, i64)>,
}

impl IdleGap {
    /// The previous job's run ended now (`now_ms` on the worker's clock).
    pub fn job_ended(&mut self, now_ms: i64) {
        self.last_end = Some((Instant::now(), now_ms));
    }

    /// Where the gap before a job created at `created_at` is measured from: the
    /// previous job's end, when this job was already queued by then. A job that
    /// arrived while the worker was idle has no scheduler gap (there was no work).
    pub fn since(&self, created_at: i64) -> Option<Instant> {
        self.last_end
            .filter(|&(_, end_ms)| created_at <= end_ms)
            .map(|(at, _)| at)
    }
}

/// Microseconds from `since` to now: call it as the job's pipeline starts.
pub(crate) fn gap_us(since: Option<Instant>) -> Option<u64> {
    since.map(|t| u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jobs_queued_at_the_previous_end_have_a_gap() {
        let mut gap = IdleGap::default();
        assert!(gap.since(0).is_none(), "the first job has no previous one");
        gap.job_ended(1_000);
        assert!(gap.since(999).is_some(), "queued before the end");
        assert!(gap.since(1_000).is_some(), "queued at the end");
        assert!(
            gap.since(1_001).is_none(),
            "arrived while the worker was idle"
        );
        let since = gap.since(500);
        std::thread::sleep(std::time::Duration::from_millis(3));
        let us = gap_us(since).unwrap();
        assert!(us >= 3_000, "{us} us");
        assert_eq!(gap_us(None), None);
    }
}
