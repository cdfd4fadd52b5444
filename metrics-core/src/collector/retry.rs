//! Retry policy for failed batch writes: capped exponential backoff with
//! optional jitter, a cap on attempts and an overall deadline per batch.

use std::time::Duration;

use tokio::time::Instant;

use super::error::BuildError;

/// How the collector retries a batch whose write failed with a retryable
/// [`SinkError`](crate::SinkError) (see
/// [`SinkError::is_retryable`](crate::SinkError::is_retryable)).
///
/// The n-th retry waits `min(initial * 2^(n-1), max)`, shortened by up to
/// `jitter` (a fraction, 0.0..=1.0) at random so that many instances
/// recovering from the same outage do not retry in lockstep. A batch is given
/// up (counted as `dropped_retries_exhausted`) after `max_attempts` attempts in
/// total, or when the next retry would start after `deadline` has passed since
/// its first attempt. Non-retryable errors are never retried.
///
/// While one batch is being retried, new records wait in the collector's
/// bounded queue; once it is full they are dropped and counted, so the queue
/// capacity is the memory cap during an outage.
///
/// ```
/// use std::time::Duration;
/// use metrics_core::RetryPolicy;
///
/// // The defaults: 1 s doubling to 30 s, 10% jitter, 8 attempts, 2 min per batch.
/// let p = RetryPolicy::default();
/// assert_eq!(p.initial, Duration::from_secs(1));
///
/// // Deterministic schedule for tests: 100 ms, 200 ms, 400 ms.
/// let p = RetryPolicy::default()
///     .with_max_attempts(4)
///     .with_initial(Duration::from_millis(100))
///     .with_jitter(0.0);
/// assert_eq!(p.delay_for_retry(3, 0.5), Duration::from_millis(400));
///
/// // Never retry.
/// assert_eq!(RetryPolicy::none().max_attempts, 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per batch, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial: Duration,
    /// Cap on the wait between two attempts.
    pub max: Duration,
    /// Fraction (0.0..=1.0) by which each wait is shortened at random; 0.0
    /// makes the schedule deterministic.
    pub jitter: f64,
    /// Overall time budget of one batch, from its first attempt: no retry
    /// starts after it.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.1,
            deadline: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries: a failed batch is dropped at once.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`initial`](Self::initial).
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets [`max`](Self::max).
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`deadline`](Self::deadline).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The wait before retry number `retry` (1-based), given a uniform random
    /// number `rand` in `[0, 1)` for the jitter.
    pub fn delay_for_retry(&self, retry: u32, rand: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let base = self
            .initial
            .saturating_mul(1u32 << exp.min(31))
            .min(self.max);
        let cut = (self.jitter * rand.clamp(0.0, 1.0)).clamp(0.0, 1.0);
        base.mul_f64(1.0 - cut)
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.max_attempts == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "retry.max_attempts",
                reason: "must be at least 1 (1 means no retry; use RetryPolicy::none())",
            });
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BuildError::InvalidSetting {
                setting: "retry.jitter",
                reason: "must be a fraction between 0.0 and 1.0",
            });
        }
        if self.max < self.initial {
            return Err(BuildError::InvalidSetting {
                setting: "retry.max",
                reason: "the cap must not be below the initial delay",
            });
        }
        Ok(())
    }
}

/// The retry state of one batch: a pure function of the policy, the attempts
/// made so far, the clock and a random number, so the schedule is unit-tested
/// without a runtime.
#[derive(Debug)]
pub(crate) struct Backoff<'a> {
    policy: &'a RetryPolicy,
    started: Instant,
    attempts: u32,
}

impl<'a> Backoff<'a> {
    /// The first attempt starts now.
    pub(crate) fn start(policy: &'a RetryPolicy, now: Instant) -> Self {
        Self {
            policy,
            started: now,
            attempts: 1,
        }
    }

    /// After a failed attempt at `now`: the wait before the next attempt, or
    /// `None` when the batch should be given up.
    pub(crate) fn next_delay(&mut self, now: Instant, rand: f64) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let delay = self.policy.delay_for_retry(self.attempts, rand);
        let budget_end = self.started + self.policy.deadline;
        if now + delay > budget_end {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial: ms(100),
            max: ms(1_000),
            jitter: 0.0,
            deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let p = policy();
        let got: Vec<_> = (1..=7).map(|n| p.delay_for_retry(n, 0.9)).collect();
        assert_eq!(
            got,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1_000),
                ms(1_000),
                ms(1_000)
            ]
        );
        // Huge retry numbers do not overflow.
        assert_eq!(p.delay_for_retry(u32::MAX, 0.0), ms(1_000));
    }

    #[test]
    fn jitter_only_shortens() {
        let p = policy().with_jitter(0.5);
        assert_eq!(p.delay_for_retry(1, 0.0), ms(100));
        assert_eq!(p.delay_for_retry(1, 0.5), ms(75));
        assert_eq!(p.delay_for_retry(1, 1.0), ms(50));
        assert_eq!(p.delay_for_retry(6, 1.0), ms(500));
    }

    #[test]
    fn backoff_stops_after_max_attempts() {
        let p = policy().with_max_attempts(4);
        let t0 = Instant::now();
        let mut b = Backoff::start(&p, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        while let Some(d) = b.next_delay(now, 0.0) {
            delays.push(d);
            now += d;
        }
        assert_eq!(delays, [ms(100), ms(200), ms(400)]);
    }

    #[test]
    fn backoff_respects_the_overall_deadline() {
        let p = policy().with_deadline(ms(1_000));
        let t0 = Instant::now();
        let mut b = Backoff::start(&p, t0);
        // Attempts themselves take 50 ms each.
        let mut now = t0 + ms(50);
        let mut delays = Vec::new();
        while let Some(d) = b.next_delay(now, 0.0) {
            delays.push(d);
            now += d + ms(50);
        }
        // 50 +100 +50 +200 +50 +400 +50 = 900; the next wait (800) would end
        // at 1_700 > 1_000.
        assert_eq!(delays, [ms(100), ms(200), ms(400)]);
    }

    #[test]
    fn none_never_retries() {
        let p = RetryPolicy::none();
        let mut b = Backoff::start(&p, Instant::now());
        assert_eq!(b.next_delay(Instant::now(), 0.0), None);
    }

    #[test]
    fn validation() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(policy().with_max_attempts(0).validate().is_err());
        assert!(policy().with_jitter(1.5).validate().is_err());
        assert!(policy().with_jitter(f64::NAN).validate().is_err());
        assert!(policy().with_max(ms(10)).validate().is_err());
    }
}
