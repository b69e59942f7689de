//! How many calls to start now. Pure functions; the scheduler feeds them counts.

use std::time::{Duration, Instant};

/// Progressive pacing: `ready × ratio` calls in flight at most, never above the campaign's
/// concurrency cap.
#[derive(Debug, Clone, Copy)]
pub struct PacingInput {
    /// Ready operators who are not already promised to a ringing call.
    pub ready_operators: usize,
    pub ratio: f64,
    /// This campaign's calls dialled but not yet answered.
    pub dialing: usize,
    /// This campaign's calls that hold a channel (dialing or talking).
    pub live: usize,
    pub max_concurrent: usize,
}

/// The ratio to dial with: over-dialling (ratio above 1) is what abandons calls, so a campaign
/// whose abandon rate today reached its cap dials one call per ready operator until tomorrow.
pub fn effective_ratio(ratio: f64, abandon_rate_today: Option<f64>, cap: f64) -> f64 {
    match abandon_rate_today {
        Some(rate) if rate >= cap && ratio > 1.0 => 1.0,
        _ => ratio,
    }
}

pub fn calls_to_place(input: PacingInput) -> usize {
    let wanted = (input.ready_operators as f64 * input.ratio).floor() as usize;
    let by_operators = wanted.saturating_sub(input.dialing);
    let by_cap = input.max_concurrent.saturating_sub(input.live);
    by_operators.min(by_cap)
}

/// A token bucket for calls per second (burst protection for the trunk).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, now: Instant) -> RateLimiter {
        let burst = per_second.max(1.0);
        RateLimiter {
            per_second,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes up to `want` tokens; returns how many were granted.
    pub fn take(&mut self, want: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        let granted = (self.tokens.floor() as usize).min(want);
        self.tokens -= granted as f64;
        granted
    }

    /// How long until one more token is available.
    pub fn wait_for_one(&self) -> Duration {
        if self.tokens >= 1.0 || self.per_second <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
    }

    pub fn set_rate(&mut self, per_second: f64) {
        self.per_second = per_second;
        self.burst = per_second.max(1.0);
        self.tokens = self.tokens.min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_dialling_stops_at_the_abandon_cap_and_only_then() {
        assert_eq!(effective_ratio(2.5, None, 0.03), 2.5, "no answers yet today");
        assert_eq!(effective_ratio(2.5, Some(0.029), 0.03), 2.5);
        assert_eq!(effective_ratio(2.5, Some(0.03), 0.03), 1.0);
        assert_eq!(effective_ratio(0.5, Some(0.5), 0.03), 0.5, "never raised");
    }

    fn input(ready: usize, ratio: f64, dialing: usize, live: usize, max: usize) -> PacingInput {
        PacingInput {
            ready_operators: ready,
            ratio,
            dialing,
            live,
            max_concurrent: max,
        }
    }

    #[test]
    fn progressive_dials_one_per_ready_operator_minus_calls_already_ringing() {
        assert_eq!(calls_to_place(input(2, 1.0, 0, 0, 10)), 2);
        assert_eq!(calls_to_place(input(2, 1.0, 1, 1, 10)), 1);
        assert_eq!(calls_to_place(input(2, 1.0, 3, 3, 10)), 0);
        assert_eq!(calls_to_place(input(0, 1.0, 0, 0, 10)), 0);
        assert_eq!(calls_to_place(input(3, 1.5, 0, 0, 10)), 4);
    }

    #[test]
    fn never_above_the_concurrency_cap() {
        assert_eq!(calls_to_place(input(10, 2.0, 0, 4, 5)), 1);
        assert_eq!(calls_to_place(input(10, 2.0, 0, 5, 5)), 0);
        assert_eq!(calls_to_place(input(10, 2.0, 0, 9, 5)), 0);
    }

    #[test]
    fn rate_limiter_bursts_then_paces() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2.0, t0);
        assert_eq!(rl.take(5, t0), 2, "burst of one second's worth");
        assert_eq!(rl.take(5, t0), 0);
        assert!(rl.wait_for_one() > Duration::ZERO);
        assert_eq!(rl.take(5, t0 + Duration::from_millis(500)), 1);
        assert_eq!(rl.take(5, t0 + Duration::from_secs(10)), 2, "never more than the burst");
        let mut slow = RateLimiter::new(0.5, t0);
        assert_eq!(slow.take(3, t0), 1);
        assert_eq!(slow.take(3, t0 + Duration::from_secs(1)), 0);
        assert_eq!(slow.take(3, t0 + Duration::from_secs(2)), 1);
    }
}
