//! Per-key request rate limit (docs/api.md, "Accounts"): a token bucket per API key. It runs
//! on the real clock, also under `--test-clock`: it paces requests, not business time.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct KeyRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    pub rps: u32,
}

impl KeyRateLimit {
    /// `None` when `rps` is 0 (no limit). Up to `burst` requests (at least `rps`) pass
    /// at once after a quiet spell.
    pub fn new(rps: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rps)?;
        let burst = NonZeroU32::new(burst.max(rps)).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            rps,
        })
    }

    /// Takes one request of the key's allowance; `Err(wait)` when it has none left,
    /// with how long until it has.
    pub fn check(&self, key_id: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&key_id.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_burst_waits_and_other_keys_do_not() {
        let limit = KeyRateLimit::new(2, 3).expect("a limit");
        for _ in 0..3 {
            assert!(limit.check("key_a").is_ok());
        }
        let wait = limit.check("key_a").expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limit.check("key_b").is_ok());
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(KeyRateLimit::new(0, 10).is_none());
    }
}
