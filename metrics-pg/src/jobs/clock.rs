//! The clock the jobs read: the system clock, or a fixed instant in tests.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Where the jobs read the current time. The default is the system clock;
/// tests (and backfills) use a fixed instant so nothing waits on real time.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use metrics_pg::Clock;
///
/// let fixed = Clock::fixed(UNIX_EPOCH + Duration::from_secs(3600));
/// assert_eq!(fixed.now(), UNIX_EPOCH + Duration::from_secs(3600));
/// assert!(Clock::system().now() > SystemTime::UNIX_EPOCH);
/// ```
#[derive(Clone)]
pub struct Clock(ClockInner);

#[derive(Clone)]
pub(super) enum ClockInner {
    System,
    Fixed(SystemTime),
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

impl Clock {
    /// The system clock (`SystemTime::now`).
    pub fn system() -> Self {
        Self(ClockInner::System)
    }

    /// Always `at`.
    pub fn fixed(at: SystemTime) -> Self {
        Self(ClockInner::Fixed(at))
    }

    /// Whatever `f` returns.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(ClockInner::Custom(Arc::new(f)))
    }

    /// The current time according to this clock.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            ClockInner::System => SystemTime::now(),
            ClockInner::Fixed(t) => *t,
            ClockInner::Custom(f) => f(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ClockInner::System => f.write_str("Clock::system()"),
            ClockInner::Fixed(t) => f.debug_tuple("Clock::fixed").field(t).finish(),
            ClockInner::Custom(_) => f.write_str("Clock::from_fn(..)"),
        }
    }
}
