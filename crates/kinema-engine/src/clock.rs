use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The one source of "now" for every time rule. Business logic never reads the system
/// clock itself; it asks this.
pub trait Clock: Send + Sync {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// Real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that starts at a given instant and moves only when told to (the server's
/// `--test-clock`, like Stripe's test clocks).
#[derive(Debug)]
pub struct TestClock {
    now: AtomicI64,
}

impl TestClock {
    pub fn starting_at(now_ms: i64) -> Self {
        Self {
            now: AtomicI64::new(now_ms),
        }
    }

    /// Moves the clock forward by `by_ms` (never backward) and returns the new time.
    pub fn advance(&self, by_ms: i64) -> i64 {
        let by = by_ms.max(0);
        self.now.fetch_add(by, Ordering::SeqCst) + by
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_moves_only_forward_and_only_when_told() {
        let clock = TestClock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.advance(500), 1_500);
        assert_eq!(clock.advance(-100), 1_500);
        assert_eq!(clock.now_ms(), 1_500);
    }
}
