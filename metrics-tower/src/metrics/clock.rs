//! The wall-clock start time of a request without a second clock read.
//!
//! Every request needs a monotonic start (for the duration) and a wall-clock
//! timestamp (for the record and a generated correlation id). A clock read is
//! a sizeable share of the layer's own cost (figures in docs/benchmarks.md),
//! so instead of reading both clocks per request, each thread keeps an anchor pair (monotonic, wall) and derives
//! the wall time from the monotonic start. The anchor is refreshed at least
//! once a second, so NTP slewing or a clock step shows up within a second and
//! the derived time never drifts from `SystemTime::now()` by more than that
//! second's slew (microseconds).

use std::cell::Cell;
use std::time::{Duration, SystemTime};

// Tokio's `Instant` is `std::time::Instant` unless `test-util` pauses the clock,
// which keeps derived timestamps consistent with paused-time tests.
use tokio::time::Instant;

/// How long an anchor is trusted before the wall clock is read again.
const ANCHOR_TTL: Duration = Duration::from_secs(1);

thread_local! {
    // (monotonic instant, wall time at that instant as a duration since the
    // Unix epoch): kept as a duration so that callers needing milliseconds
    // (generated correlation ids) skip a checked `SystemTime` subtraction.
    static ANCHOR: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// The wall-clock time corresponding to the monotonic instant `start`
/// (taken just now by the caller).
#[cfg(test)]
pub(crate) fn wall_time_at(start: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + since_epoch_at(start)
}

/// The wall-clock time corresponding to the monotonic instant `start`
/// (taken just now by the caller), as a duration since the Unix epoch. A
/// system clock set before 1970 reads as the epoch itself.
pub(crate) fn since_epoch_at(start: Instant) -> Duration {
    ANCHOR.with(|anchor| {
        if let Some((at, wall)) = anchor.get() {
            // `checked_duration_since` is `None` if `start` is before the
            // anchor (another task's older instant): read the clock then.
            if let Some(since) = start.checked_duration_since(at) {
                if since < ANCHOR_TTL {
                    return wall + since;
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        anchor.set(Some((start, now)));
        now
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_wall_time_tracks_the_system_clock() {
        for _ in 0..1_000 {
            let before = SystemTime::now();
            let derived = wall_time_at(Instant::now());
            let after = SystemTime::now();
            // Within the anchor's lifetime the derived time may lag or lead
            // the system clock only by slewing; allow a generous 5 ms.
            let slack = Duration::from_millis(5);
            assert!(
                derived + slack >= before,
                "{derived:?} too early vs {before:?}"
            );
            assert!(
                derived <= after + slack,
                "{derived:?} too late vs {after:?}"
            );
        }
    }

    #[test]
    fn older_instants_and_stale_anchors_read_the_clock_again() {
        let old = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let newer = Instant::now();
        let a = wall_time_at(newer);
        let b = wall_time_at(old);
        // `old` is before the anchor just set: a fresh read, not a negative offset.
        assert!(b >= a - Duration::from_millis(5));
        let later = wall_time_at(newer + ANCHOR_TTL + Duration::from_millis(1));
        assert!(later >= a);
    }
}
