//! Retry policy for failed batch writes: capped exponential backoff with
//! optional jitter, and optional limits (attempts, time per batch).

use std::time::Duration;

use tokio::time::Instant;

use super::error::BuildError;

/// How the collector retries a batch whose write failed with a retryable
/// [`SinkError`](crate::SinkError) (see
/// [`SinkError::is_retryable`](crate::SinkError::is_retryable)).
///
/// The n-th retry waits `min(initial * 2^(n-1), max)`, shortened by up to
/// `jitter` (a fraction, 0.0..=1.0) at random so that many instances
/// recovering from the same outage do not retry in lockstep. Non-retryable
/// errors are never retried.
///
/// # Unbounded by default
///
/// The default policy (1 s doubling to 30 s, 10% jitter) has **no** limit:
/// it retries a batch for as long as the sink keeps failing retryably,
/// so an outage of any length loses nothing while the collector's bounds
/// hold. Meanwhile new records wait in the queue; once it is full, or once
/// the memory budget is used up, `record()` drops and counts them
/// (`dropped_queue_full`, `dropped_memory_budget`), and at shutdown whatever
/// is still unwritten at the deadline counts as `dropped_shutdown`. Those
/// bounds, not the retry policy, decide what an outage costs.
///
/// A bounded policy gives a batch up (counted as `dropped_retries_exhausted`)
/// after [`max_attempts`](Self::max_attempts) attempts in total, or when the
/// next retry would start after [`deadline`](Self::deadline) has passed since
/// its first attempt: [`RetryPolicy::bounded`] sets both,
/// [`with_max_attempts`](Self::with_max_attempts) and
/// [`with_deadline`](Self::with_deadline) one each, [`RetryPolicy::none`]
/// never retries.
///
/// Note that [`CollectorHandle::flush`](crate::CollectorHandle::flush) waits
/// for the batches it covers, retries included: with the default policy
/// during an outage it waits until the sink is back (bound it with
/// `tokio::time::timeout`); `shutdown` always ends by its deadline.
///
/// ```
/// use std::time::Duration;
/// use metrics_core::RetryPolicy;
///
/// // The default: 1 s doubling to 30 s, 10% jitter, retried until it is written.
/// let p = RetryPolicy::default();
/// assert_eq!((p.initial, p.max), (Duration::from_secs(1), Duration::from_secs(30)));
/// assert_eq!((p.max_attempts, p.deadline), (None, None));
///
/// // The 0.1 default (give a batch up after 8 attempts or 2 minutes).
/// let old = RetryPolicy::bounded(8, Duration::from_secs(120));
/// assert_eq!(old.max_attempts, Some(8));
///
/// // Deterministic schedule for tests: 100 ms, 200 ms, 400 ms.
/// let p = RetryPolicy::default()
///     .with_max_attempts(4)
///     .with_initial(Duration::from_millis(100))
///     .with_jitter(0.0);
/// assert_eq!(p.delay_for_retry(3, 0.5), Duration::from_millis(400));
///
/// // Never retry.
/// assert_eq!(RetryPolicy::none().max_attempts, Some(1));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per batch, the first one included (`Some(1)` = never retry);
    /// `None` (the default): no limit.
    pub max_attempts: Option<u32>,
    /// Wait before the first retry.
    pub initial: Duration,
    /// Cap on the wait between two attempts.
    pub max: Duration,
    /// Fraction (0.0..=1.0) by which each wait is shortened at random; 0.0
    /// makes the schedule deterministic.
    pub jitter: f64,
    /// Overall time budget of one batch, from its first attempt: no retry
    /// starts after it. `None` (the default): no limit.
    pub deadline: Option<Duration>,
}

/// Default [`RetryPolicy::initial`].
const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
/// Default [`RetryPolicy::max`]: a sink that is back is noticed within 30 s,
/// and an instance makes at most two attempts a minute during an outage.
const DEFAULT_MAX: Duration = Duration::from_secs(30);
/// Default [`RetryPolicy::jitter`].
const DEFAULT_JITTER: f64 = 0.1;

impl Default for RetryPolicy {
    /// 1 s doubling to 30 s, 10% jitter, no limit on attempts or time.
    fn default() -> Self {
        Self {
            max_attempts: None,
            initial: DEFAULT_INITIAL,
            max: DEFAULT_MAX,
            jitter: DEFAULT_JITTER,
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries: a failed batch is dropped at once.
    pub fn none() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// The default backoff, but a batch is given up after `max_attempts`
    /// attempts or once `deadline` has passed since its first attempt,
    /// whichever comes first (`bounded(8, 120 s)` is the 0.1 default).
    pub fn bounded(max_attempts: u32, deadline: Duration) -> Self {
        Self::default()
            .with_max_attempts(max_attempts)
            .with_deadline(deadline)
    }

    /// Limits [`max_attempts`](Self::max_attempts) (at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
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

    /// Limits [`deadline`](Self::deadline).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Removes both limits: retry until written (or the shutdown deadline).
    pub fn unbounded(mut self) -> Self {
        self.max_attempts = None;
        self.deadline = None;
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
        if self.max_attempts == Some(0) {
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
        // An unbounded policy retrying without any wait would spin on a
        // down sink.
        if self.max.is_zero() && self.max_attempts.is_none() {
            return Err(BuildError::InvalidSetting {
                setting: "retry.max",
                reason: "must be greater than zero when attempts are unlimited (a zero backoff would retry in a busy loop)",
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
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        let delay = self.policy.delay_for_retry(self.attempts, rand);
        if let Some(deadline) = self.policy.deadline {
            // `checked_add`: a deadline too far away to represent is none.
            let late = self
                .started
                .checked_add(deadline)
                .is_some_and(|end| now + delay > end);
            if late {
                return None;
            }
        }
        // Saturates: after u32::MAX attempts the delay stays at the cap.
        self.attempts = self.attempts.saturating_add(1);
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
        RetryPolicy::bounded(10, Duration::from_secs(60))
            .with_initial(ms(100))
            .with_max(ms(1_000))
            .with_jitter(0.0)
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
    fn the_default_never_gives_up_and_stays_at_the_cap() {
        let p = RetryPolicy::default().with_jitter(0.0);
        let t0 = Instant::now();
        let mut b = Backoff::start(&p, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        // A day of outage: 1, 2, 4, 8, 16, then 30 s forever.
        while now < t0 + Duration::from_secs(86_400) {
            let d = b.next_delay(now, 0.0).expect("the default never gives up");
            delays.push(d);
            now += d;
        }
        let secs = Duration::from_secs;
        assert_eq!(
            delays[..6],
            [secs(1), secs(2), secs(4), secs(8), secs(16), secs(30)]
        );
        assert!(delays[5..].iter().all(|d| *d == secs(30)));
        assert!(delays.len() > 2_800, "{}", delays.len());
    }

    #[test]
    fn bounded_is_the_old_default() {
        let p = RetryPolicy::bounded(8, Duration::from_secs(120));
        assert_eq!(
            (p.max_attempts, p.deadline, p.initial, p.max),
            (
                Some(8),
                Some(Duration::from_secs(120)),
                Duration::from_secs(1),
                Duration::from_secs(30)
            )
        );
        assert_eq!(p.unbounded(), RetryPolicy::default());
        // A deadline too large to add to an instant is no deadline.
        let far = RetryPolicy::default().with_deadline(Duration::MAX);
        let mut b = Backoff::start(&far, Instant::now());
        assert!(b.next_delay(Instant::now(), 0.0).is_some());
    }

    #[test]
    fn validation() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(policy().with_max_attempts(0).validate().is_err());
        assert!(policy().with_jitter(1.5).validate().is_err());
        assert!(policy().with_jitter(f64::NAN).validate().is_err());
        assert!(policy().with_max(ms(10)).validate().is_err());
        let zero = RetryPolicy::default()
            .with_initial(Duration::ZERO)
            .with_max(Duration::ZERO);
        assert!(zero.validate().is_err(), "an unbounded busy loop");
        assert!(zero.with_max_attempts(3).validate().is_ok());
    }
}
