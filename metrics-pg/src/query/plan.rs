//! Which source answers each instant of a range: pure planning over the
//! rollup bookkeeping (no I/O), so the "never double count" rule is unit
//! tested without a database.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::units::{
    DAY, HOUR, ceil_time, ceil_to, floor_time, floor_to, from_unix_secs, unix_secs,
};

/// The rollup bookkeeping of one metric type around a range: rolled hours
/// (with whether their raw rows were dropped by retention) and days whose
/// daily rows are complete.
#[derive(Debug, Default, Clone)]
pub(super) struct Rolled {
    pub(super) hours: HashMap<i64, bool>,
    pub(super) days: HashSet<i64>,
    /// When each rolled hour was (last) rolled, in microseconds: rows of a
    /// bucket with the same version are the same rows (a re-roll rewrites
    /// them and this column in one transaction).
    pub(super) hour_versions: HashMap<i64, i64>,
    /// When each complete day was (last) built, in microseconds.
    pub(super) day_versions: HashMap<i64, i64>,
}

/// Where the parts of a range are read from. Every instant of the range is
/// in exactly one of `days`, `hours` (through `rollup`) or `raw`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Plan {
    /// Spans `[lo, hi)` (Unix seconds, aligned to the planning unit) read
    /// from rollup rows. For an hourly unit these are whole hours.
    pub(super) rollup: Vec<(i64, i64)>,
    /// Spans `[lo, hi)` read from the raw tables, ascending, disjoint and
    /// not adjacent (adjacent spans are joined).
    pub(super) raw: Vec<(SystemTime, SystemTime)>,
}

impl Plan {
    /// Plans `[start, end)`: each hour of the range that is rolled up is read
    /// from rollups for its whole-`unit` part (`unit` divides an hour: 300 s
    /// for 5-minute rows, 3,600 s for hourly rows), everything else from raw
    /// rows over exactly that sub-interval. A partial hour that is rolled but
    /// whose raw rows are gone is read from rollups for the whole units that
    /// cover it (the only approximation).
    pub(super) fn new(start: SystemTime, end: SystemTime, rolled: &Rolled, unit: i64) -> Self {
        let mut plan = Self::default();
        if start >= end {
            return plan;
        }
        let last = end - Duration::from_nanos(1);
        let first_hour = floor_to(unix_secs(start), HOUR);
        let last_hour = floor_to(unix_secs(last), HOUR);
        let mut h = first_hour;
        while h <= last_hour {
            let (hs, he) = (from_unix_secs(h), from_unix_secs(h + HOUR));
            let lo = start.max(hs);
            let hi = end.min(he);
            match rolled.hours.get(&h) {
                None => plan.push_raw(lo, hi),
                Some(&raw_dropped) => {
                    let (a_lo, a_hi) = (ceil_time(lo, unit), floor_time(hi, unit));
                    if raw_dropped && (from_unix_secs(a_lo) != lo || from_unix_secs(a_hi) != hi) {
                        // The raw rows of this edge are gone: the whole units
                        // around it are the best answer left.
                        plan.push_rollup(floor_time(lo, unit), ceil_time(hi, unit));
                    } else if a_lo < a_hi {
                        plan.push_raw(lo, from_unix_secs(a_lo));
                        plan.push_rollup(a_lo, a_hi);
                        plan.push_raw(from_unix_secs(a_hi), hi);
                    } else {
                        // No whole unit inside: raw rows only.
                        plan.push_raw(lo, hi);
                    }
                }
            }
            h += HOUR;
        }
        plan
    }

    fn push_raw(&mut self, lo: SystemTime, hi: SystemTime) {
        if lo >= hi {
            return;
        }
        match self.raw.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => self.raw.push((lo, hi)),
        }
    }

    fn push_rollup(&mut self, lo: i64, hi: i64) {
        if lo >= hi {
            return;
        }
        match self.rollup.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => self.rollup.push((lo, hi)),
        }
    }

    /// Splits hour-aligned rollup spans into the UTC days read from daily
    /// rows (whole days with a `rollup_days` row) and the remaining hours
    /// read from hourly rows.
    pub(super) fn days_and_hours(&self, rolled: &Rolled, use_daily: bool) -> (Vec<i64>, Vec<i64>) {
        let mut hours: BTreeSet<i64> = BTreeSet::new();
        let mut days = Vec::new();
        for &(lo, hi) in &self.rollup {
            let mut h = floor_to(lo, HOUR);
            while h < hi {
                let _ = hours.insert(h);
                h += HOUR;
            }
        }
        if use_daily {
            for &(lo, hi) in &self.rollup {
                let mut d = ceil_to(lo, DAY);
                while d + DAY <= hi {
                    // Every hour of the day is a rolled source here (the span
                    // covers it), so the daily row replaces exactly them.
                    if rolled.days.contains(&d) {
                        days.push(d);
                        let mut h = d;
                        while h < d + DAY {
                            let _ = hours.remove(&h);
                            h += HOUR;
                        }
                    }
                    d += DAY;
                }
            }
        }
        (days, hours.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn t(secs: i64) -> SystemTime {
        from_unix_secs(secs)
    }

    fn rolled(hours: impl IntoIterator<Item = i64>, dropped: bool) -> Rolled {
        Rolled {
            hours: hours.into_iter().map(|h| (h, dropped)).collect(),
            ..Rolled::default()
        }
    }

    /// Every second of [start, end) is covered exactly once by the plan
    /// (rollup spans count whole units; approximations aside).
    fn assert_partition(plan: &Plan, start: i64, end: i64) {
        let mut s = start;
        while s < end {
            let in_raw = plan
                .raw
                .iter()
                .filter(|(lo, hi)| t(s) >= *lo && t(s) < *hi)
                .count();
            let in_roll = plan
                .rollup
                .iter()
                .filter(|(lo, hi)| s >= *lo && s < *hi)
                .count();
            assert_eq!(
                in_raw + in_roll,
                1,
                "second {s} covered {in_raw}+{in_roll} times: {plan:?}"
            );
            s += 60;
        }
    }

    #[test]
    fn nothing_rolled_is_one_raw_span() {
        let p = Plan::new(t(D0 + 100), t(D0 + 5 * HOUR + 7), &Rolled::default(), HOUR);
        assert_eq!(p.raw, [(t(D0 + 100), t(D0 + 5 * HOUR + 7))]);
        assert!(p.rollup.is_empty());
    }

    #[test]
    fn rolled_whole_hours_and_raw_edges() {
        // 00:30 .. 05:15, hours 00..04 rolled (03 not): raw 00:30-01:00,
        // rollup 01-03, raw 03-04, rollup 04-05, raw 05:00-05:15.
        let r = rolled(
            [D0, D0 + HOUR, D0 + 2 * HOUR, D0 + 4 * HOUR, D0 + 5 * HOUR],
            false,
        );
        let (s, e) = (D0 + 1800, D0 + 5 * HOUR + 900);
        let p = Plan::new(t(s), t(e), &r, HOUR);
        assert_eq!(
            p.rollup,
            [(D0 + HOUR, D0 + 3 * HOUR), (D0 + 4 * HOUR, D0 + 5 * HOUR)]
        );
        assert_eq!(
            p.raw,
            [
                (t(s), t(D0 + HOUR)),
                (t(D0 + 3 * HOUR), t(D0 + 4 * HOUR)),
                (t(D0 + 5 * HOUR), t(e))
            ]
        );
        assert_partition(&p, s, e);
    }

    #[test]
    fn five_minute_unit_reads_whole_slots_of_partial_hours() {
        let r = rolled([D0, D0 + HOUR], false);
        // 00:10 .. 01:47:30 at 5 minutes: rollup 00:10-01:45, raw 01:45-01:47:30.
        let (s, e) = (D0 + 600, D0 + 6450);
        let p = Plan::new(t(s), t(e), &r, 300);
        assert_eq!(p.rollup, [(s, D0 + 6300)]);
        assert_eq!(p.raw, [(t(D0 + 6300), t(e))]);
        // Not slot-aligned start: the partial slot is raw.
        let p = Plan::new(t(s + 7), t(e), &r, 300);
        assert_eq!(p.raw[0], (t(s + 7), t(s + 300)));
        assert_partition(&p, s + 7, e);
    }

    #[test]
    fn partial_edge_with_dropped_raw_uses_the_whole_hour() {
        let r = rolled([D0, D0 + HOUR, D0 + 2 * HOUR], true);
        let p = Plan::new(t(D0 + 1800), t(D0 + 2 * HOUR + 60), &r, HOUR);
        assert_eq!(p.rollup, [(D0, D0 + 3 * HOUR)]);
        assert!(p.raw.is_empty());
    }

    #[test]
    fn whole_days_with_a_rollup_days_row_replace_their_hours() {
        let mut r = rolled((0..72).map(|i| D0 + i * HOUR), false);
        let _ = r.days.insert(D0 + DAY);
        let _ = r.days.insert(D0 + 2 * DAY); // not whole in the range
        let (s, e) = (D0 + 1800, D0 + 2 * DAY + 5 * HOUR);
        let p = Plan::new(t(s), t(e), &r, HOUR);
        assert_partition(&p, s, e);
        let (days, hours) = p.days_and_hours(&r, true);
        assert_eq!(days, [D0 + DAY]);
        assert_eq!(hours.len(), 23 + 5);
        assert!(hours.iter().all(|h| *h < D0 + DAY || *h >= D0 + 2 * DAY));
        let (days, hours) = p.days_and_hours(&r, false);
        assert!(days.is_empty());
        assert_eq!(hours.len(), 23 + 24 + 5);
        // Day 0 has no rollup_days row: its hours stay hourly.
        assert!(!days.contains(&D0));
    }

    #[test]
    fn empty_and_sub_second_ranges() {
        let r = rolled([D0], false);
        assert_eq!(Plan::new(t(D0), t(D0), &r, HOUR), Plan::default());
        let s = t(D0) + Duration::from_millis(1);
        let p = Plan::new(s, t(D0 + HOUR), &r, HOUR);
        assert_eq!(p.raw, [(s, t(D0 + HOUR))]);
        assert_eq!(ceil_time(s, HOUR), D0 + HOUR);
        assert_eq!(floor_time(s, HOUR), D0);
        assert_eq!(ceil_to(-1, HOUR), 0);
        assert_eq!(floor_to(-1, HOUR), -HOUR);
    }
}
