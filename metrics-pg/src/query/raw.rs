//! Raw request rows of a dashboard query, as 5-minute pieces, with whole
//! closed slots served from the bucket cache.
//!
//! Why: every query reads the open hour (and the partial first hour of a
//! range) from raw rows, up to ≈ 42,000 rows an hour at 1 M requests a
//! day, and a dashboard asks the same ranges again every refresh. A whole
//! 5-minute slot in the past only changes when rows are added to it (raw
//! tables are append-only; retention drops whole days only once they are
//! rolled up, and those are no longer read raw), so its decoded form —
//! per-key counts and sketches, the all-endpoints sketch, its users — is
//! cached under its row count. Each query counts the rows of its whole
//! slots in its own snapshot (a scan of one narrow column, far cheaper than
//! sending the rows) and streams only the slots whose count changed, plus
//! the partial slots at the edges of its spans, which are never cached.
//! A cached slot is used only when its count equals the snapshot's, so
//! the answer is the same as streaming every row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;

use super::cache::{BucketKey, Part, PerfBucket, Table};
use super::decode::to_u64;
use super::plan::Rolled;
use super::scan::{ranges, stream_parts, stream_rows};
use super::sql::prepare;
use super::store::PgMetricsQuery;
use crate::error::Error;
use crate::units::pg_micros;
use crate::units::{HOUR, SLOT, ceil_time, floor_time, floor_to, from_unix_secs};

/// A part of one of the requested spans inside one slot: the whole slot, or
/// the partial slot at a span's edge. Its bucket holds exactly the raw rows
/// of that part.
#[derive(Debug, Clone)]
pub(super) struct Piece {
    /// Index of the requested span it belongs to.
    pub(super) span: usize,
    /// Start of the slot it lies in (Unix seconds).
    pub(super) slot: i64,
    /// Where the part starts (pieces are returned in this order).
    pub(super) lo: SystemTime,
    pub(super) bucket: Arc<PerfBucket>,
}

/// A part of a requested span to read: a whole slot or an edge.
#[derive(Debug, Clone, Copy)]
struct Want {
    span: usize,
    slot: i64,
    lo: SystemTime,
    hi: SystemTime,
    whole: bool,
}

/// Splits disjoint `spans` into whole slots and edge parts, ascending.
fn wants(spans: &[(SystemTime, SystemTime)]) -> Vec<Want> {
    let mut out = Vec::new();
    for (span, &(lo, hi)) in spans.iter().enumerate() {
        if lo >= hi {
            continue;
        }
        let mut slot = floor_time(lo, SLOT);
        let last = ceil_time(hi, SLOT);
        while slot < last {
            let (s_lo, s_hi) = (from_unix_secs(slot), from_unix_secs(slot + SLOT));
            let (p_lo, p_hi) = (lo.max(s_lo), hi.min(s_hi));
            if p_lo < p_hi {
                out.push(Want {
                    span,
                    slot,
                    lo: p_lo,
                    hi: p_hi,
                    whole: p_lo == s_lo && p_hi == s_hi,
                });
            }
            slot += SLOT;
        }
    }
    out.sort_by_key(|w| w.lo);
    out
}

/// Splits ascending, disjoint ranges into two lists covering about half of
/// the total duration each (a range may be cut in two), for two scans side
/// by side.
fn halves(
    ranges: &[(SystemTime, SystemTime)],
) -> (Vec<(SystemTime, SystemTime)>, Vec<(SystemTime, SystemTime)>) {
    let total: Duration = ranges
        .iter()
        .map(|(lo, hi)| hi.duration_since(*lo).unwrap_or_default())
        .sum();
    let mut left = total / 2;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &(lo, hi) in ranges {
        let len = hi.duration_since(lo).unwrap_or_default();
        if left.is_zero() {
            b.push((lo, hi));
        } else if len <= left {
            a.push((lo, hi));
            left -= len;
        } else {
            // Cut on a whole microsecond (what the server compares).
            let cut = lo + Duration::from_micros(u64::try_from(left.as_micros()).unwrap_or(0));
            if cut > lo {
                a.push((lo, cut));
            }
            b.push((cut, hi));
            left = Duration::ZERO;
        }
    }
    (a, b)
}

/// [`halves`] of whole-slot ranges, cut on a slot boundary (each slot is
/// counted by one statement).
fn halves_on_slots(
    ranges: &[(SystemTime, SystemTime)],
) -> (Vec<(SystemTime, SystemTime)>, Vec<(SystemTime, SystemTime)>) {
    let (mut a, mut b) = halves(ranges);
    if let (Some(last), Some(first)) = (a.last_mut(), b.first_mut()) {
        if last.1 == first.0 {
            let cut = from_unix_secs(ceil_time(last.1, SLOT));
            last.1 = cut;
            first.0 = cut;
            if first.0 >= first.1 {
                let _ = b.remove(0);
            }
        }
    }
    (a, b)
}

impl PgMetricsQuery {
    /// The raw requests of the disjoint `spans` as pieces (ascending): the
    /// whole 5-minute slots inside them (from the cache when their row
    /// count is unchanged in `tx`'s snapshot) and the partial slots at
    /// their edges.
    pub(super) async fn raw_pieces(
        &self,
        tx: &Transaction<'_>,
        spans: &[(SystemTime, SystemTime)],
        rolled: &Rolled,
    ) -> Result<Vec<Piece>, Error> {
        let wants = wants(spans);
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        let caching = self.cache.is_enabled();
        let (whole, edges): (Vec<Want>, Vec<Want>) = wants.iter().partition(|w| w.whole && caching);
        // Whole slots of rolled hours (the partial first hour of a range)
        // are keyed by the hour's rollup version: they follow the hour's
        // rollup, which the job redoes when late rows arrive, so they need
        // no count. The others (the open hour) are keyed by their count.
        let hour_version = |w: &Want| rolled.hour_versions.get(&floor_to(w.slot, HOUR)).copied();
        let (of_rolled, counted): (Vec<Want>, Vec<Want>) =
            whole.iter().partition(|w| hour_version(w).is_some());
        // Edges in rolled hours (where a range starts mid-slot) are cut from
        // their slot's cached rows, under the hour's rollup version: the
        // range start moves every query, and a few thousand rows scanned
        // in an older day partition cost more than the rest of the query.
        let (rolled_edges, edges): (Vec<Want>, Vec<Want>) = edges
            .into_iter()
            .partition(|w| caching && hour_version(w).is_some());
        let rows_keys: Vec<BucketKey> = {
            let mut keys: Vec<BucketKey> = rolled_edges
                .iter()
                .map(|w| {
                    slot_key(
                        Table::RawSlotOfRolledHour,
                        w.slot,
                        hour_version(w).unwrap_or(0),
                    )
                })
                .collect();
            keys.dedup();
            keys
        };

        // The counts of the open slots (in this snapshot) and the edges,
        // side by side when a second connection is free.
        let count_ranges = ranges(counted.iter().map(|w| (w.lo, w.hi)));
        // Edges stay separate parts (two spans may meet inside one slot).
        let edge_parts: Vec<_> = edges.iter().map(|w| (w.lo, w.hi)).collect();
        // Counting is a scan too: the later half on another connection.
        let (mine, theirs) = halves_on_slots(&count_ranges);
        let slot_rows = async {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for key in &rows_keys {
                match self.rows_cache.get(key) {
                    Some(rows) => found.push((key.start, rows)),
                    None => missing.push(*key),
                }
            }
            if !missing.is_empty() {
                let slots: Vec<i64> = missing.iter().map(|k| k.start).collect();
                let mut fetched =
                    beside!(self, tx, |t| stream_rows(t, &self.schema, &slots).await?)?;
                for key in missing {
                    let rows = Arc::new(fetched.remove(&key.start).unwrap_or_default());
                    self.rows_cache.insert(key, Arc::clone(&rows));
                    found.push((key.start, rows));
                }
            }
            Ok::<_, Error>(found)
        };
        let (mut counts, more, mut built, slot_rows) = futures_util::future::try_join4(
            self.slot_counts(tx, &mine),
            async {
                if theirs.is_empty() {
                    return Ok(HashMap::new());
                }
                beside!(self, tx, |t| self.slot_counts(t, &theirs).await?)
            },
            self.stream_beside(tx, edge_parts),
            slot_rows,
        )
        .await?;
        counts.extend(more);

        let mut pieces = Vec::with_capacity(wants.len());
        let mut stale: Vec<(Want, BucketKey)> = Vec::new();
        let keyed = of_rolled
            .iter()
            .map(|w| {
                let version = hour_version(w).unwrap_or(0);
                (
                    w,
                    Some(slot_key(Table::RawSlotOfRolledHour, w.slot, version)),
                )
            })
            .chain(counted.iter().map(|w| {
                let rows = counts.get(&w.slot).copied().unwrap_or(0);
                // No rows in this snapshot: nothing to read.
                let key = (rows > 0).then(|| {
                    slot_key(
                        Table::RawSlot,
                        w.slot,
                        i64::try_from(rows).unwrap_or(i64::MAX),
                    )
                });
                (w, key)
            }));
        for (w, key) in keyed {
            let Some(key) = key else { continue };
            match self.cache.get(&key) {
                Some(bucket) => pieces.push(piece(w, bucket)),
                None => stale.push((*w, key)),
            }
        }
        if !stale.is_empty() {
            let mut fresh: HashMap<i64, PerfBucket> = self
                .stream_split(tx, &ranges(stale.iter().map(|(w, _)| (w.lo, w.hi))))
                .await?
                .into_iter()
                .collect();
            for (w, key) in stale {
                let bucket = Arc::new(fresh.remove(&w.slot).unwrap_or_default());
                let key = match key.table {
                    // Cached under the count it was built from (its own
                    // snapshot's); a later query uses it only if its own
                    // count is the same, i.e. the same rows.
                    Table::RawSlot => {
                        let rows = bucket.all.as_ref().map_or(0, |p| p.count);
                        slot_key(
                            Table::RawSlot,
                            w.slot,
                            i64::try_from(rows).unwrap_or(i64::MAX),
                        )
                    }
                    _ => key,
                };
                self.cache.insert(key, Arc::clone(&bucket));
                pieces.push(piece(&w, bucket));
            }
        }
        // Edge rows go to the edge part they fall in (several spans may
        // have an edge in one slot).
        for w in &edges {
            if let Some(b) = built.remove(&(w.lo, w.hi)) {
                pieces.push(piece(w, Arc::new(b)));
            }
        }
        for w in &rolled_edges {
            if let Some((_, rows)) = slot_rows.iter().find(|(slot, _)| *slot == w.slot) {
                let bucket = rows.bucket(pg_micros(w.lo), pg_micros(w.hi));
                if bucket.all.is_some() {
                    pieces.push(piece(w, Arc::new(bucket)));
                }
            }
        }
        pieces.sort_by_key(|p| p.lo);
        Ok(pieces)
    }

    /// Row counts per slot of `ranges` (whole slots), in `t`'s snapshot.
    async fn slot_counts(
        &self,
        tx: &Transaction<'_>,
        ranges: &[(SystemTime, SystemTime)],
    ) -> Result<HashMap<i64, u64>, Error> {
        if ranges.is_empty() {
            return Ok(HashMap::new());
        }
        let stmt = prepare(tx, &self.sql.raw_slot_counts).await?;
        let rows = futures_util::future::try_join_all(ranges.iter().map(|(lo, hi)| {
            let stmt = &stmt;
            async move { tx.query(stmt, &[lo, hi]).await }
        }))
        .await
        .map_err(|e| Error::db("counting raw requests per 5-minute slot", e))?;
        Ok(rows
            .iter()
            .flatten()
            .map(|r| (r.get::<_, i64>(0), to_u64(r.get(1))))
            .collect())
    }

    /// Streams the ascending, disjoint edge `parts` beside the query's
    /// other statements; the result is keyed by the part.
    async fn stream_beside(
        &self,
        tx: &Transaction<'_>,
        parts: Vec<(SystemTime, SystemTime)>,
    ) -> Result<HashMap<(SystemTime, SystemTime), PerfBucket>, Error> {
        if parts.is_empty() {
            return Ok(HashMap::new());
        }
        let by_part = beside!(self, tx, |t| stream_parts(t, &self.schema, &parts).await?)?;
        Ok(by_part.into_iter().map(|(i, b)| (parts[i], b)).collect())
    }

    /// Streams whole-slot `ranges`, split in two halves read side by side
    /// (the second on a spare connection when one is free); one bucket per
    /// slot.
    async fn stream_split(
        &self,
        tx: &Transaction<'_>,
        ranges: &[(SystemTime, SystemTime)],
    ) -> Result<Vec<(i64, PerfBucket)>, Error> {
        let slots = |parts: HashMap<usize, PerfBucket>, rs: &[(SystemTime, SystemTime)]| {
            // Parts of one slot (a range cut by `halves`) merge into one.
            let mut out: HashMap<i64, PerfBucket> = HashMap::new();
            for (i, b) in parts {
                let slot = floor_time(rs[i].0, SLOT);
                match out.get_mut(&slot) {
                    Some(into) => merge_bucket(into, b),
                    None => {
                        let _ = out.insert(slot, b);
                    }
                }
            }
            out
        };
        let slot_parts = |rs: &[(SystemTime, SystemTime)]| -> Vec<(SystemTime, SystemTime)> {
            // One part per slot, so each bucket is one slot.
            rs.iter()
                .flat_map(|&(lo, hi)| {
                    let mut v = Vec::new();
                    let mut s = floor_time(lo, SLOT);
                    while from_unix_secs(s) < hi {
                        let (a, b) = (from_unix_secs(s).max(lo), from_unix_secs(s + SLOT).min(hi));
                        if a < b {
                            v.push((a, b));
                        }
                        s += SLOT;
                    }
                    v
                })
                .collect()
        };
        let (a, b) = halves(ranges);
        let (a, b) = (slot_parts(&a), slot_parts(&b));
        let (mine, theirs) =
            futures_util::future::try_join(stream_parts(tx, &self.schema, &a), async {
                if b.is_empty() {
                    return Ok(HashMap::new());
                }
                beside!(self, tx, |t| stream_parts(t, &self.schema, &b).await?)
            })
            .await?;
        let mut merged = slots(mine, &a);
        for (slot, bucket) in slots(theirs, &b) {
            match merged.get_mut(&slot) {
                Some(into) => merge_bucket(into, bucket),
                None => {
                    let _ = merged.insert(slot, bucket);
                }
            }
        }
        Ok(merged.into_iter().collect())
    }
}

fn slot_key(table: Table, slot: i64, version: i64) -> BucketKey {
    BucketKey {
        table,
        start: slot,
        version,
    }
}

fn piece(w: &Want, bucket: Arc<PerfBucket>) -> Piece {
    Piece {
        span: w.span,
        slot: w.slot,
        lo: w.lo,
        bucket,
    }
}

/// Merges `from` into `into` (two parts of one slot, disjoint rows).
fn merge_bucket(into: &mut PerfBucket, from: PerfBucket) {
    let mut b = Builder::default();
    for p in into.parts.drain(..).chain(from.parts) {
        b.add_part(p);
    }
    let all = match (into.all.take(), from.all) {
        (Some(x), Some(y)) => Some(merge_parts(x, &y)),
        (x, y) => x.or(y),
    };
    let users = match (into.users.take(), from.users) {
        (Some(mut x), Some(y)) => {
            x.merge(&y);
            Some(x)
        }
        (x, y) => x.or(y),
    };
    *into = PerfBucket {
        parts: b.parts,
        all,
        users,
    };
}

fn merge_parts(mut x: Part, y: &Part) -> Part {
    let mut sketch = x.exact.take().unwrap_or_else(|| x.binned.clone());
    sketch.merge(y.exact.as_ref().unwrap_or(&y.binned));
    Part::new(
        x.endpoint,
        x.method,
        x.count + y.count,
        x.errors + y.errors,
        sketch,
    )
}

#[derive(Default)]
struct Builder {
    parts: Vec<Part>,
}

impl Builder {
    fn add_part(&mut self, p: Part) {
        match self
            .parts
            .iter()
            .position(|q| q.endpoint == p.endpoint && q.method == p.method)
        {
            Some(i) => {
                let q = self.parts.swap_remove(i);
                self.parts.push(merge_parts(q, &p));
            }
            None => self.parts.push(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn spans_split_into_whole_slots_and_edges() {
        let w = wants(&[(at(1_000), at(1_800)), (at(2_100), at(2_400))]);
        let shape: Vec<(i64, u64, u64, bool)> = w
            .iter()
            .map(|w| {
                let s = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
                (w.slot, s(w.lo), s(w.hi), w.whole)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (900, 1_000, 1_200, false),
                (1_200, 1_200, 1_500, true),
                (1_500, 1_500, 1_800, true),
                (2_100, 2_100, 2_400, true),
            ]
        );
        assert_eq!(w[3].span, 1);
        assert!(wants(&[(at(5), at(5))]).is_empty());
    }

    #[test]
    fn halves_cover_the_ranges_once_with_half_the_time_each() {
        let rs = vec![(at(0), at(600)), (at(900), at(1_200))];
        let (a, b) = halves(&rs);
        assert_eq!(a, vec![(at(0), at(450))]);
        assert_eq!(b, vec![(at(450), at(600)), (at(900), at(1_200))]);
        let (a, b) = halves(&[(at(0), at(300))]);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(a[0].1, b[0].0);
    }

    #[test]
    fn count_halves_are_cut_on_a_slot_boundary() {
        let (a, b) = halves_on_slots(&[(at(0), at(1_500))]);
        assert_eq!(a, vec![(at(0), at(900))]);
        assert_eq!(b, vec![(at(900), at(1_500))]);
        let (a, b) = halves_on_slots(&[(at(0), at(300))]);
        assert_eq!(a, vec![(at(0), at(300))]);
        assert!(b.is_empty());
    }
}
