//! Raw rows streamed with binary `COPY` and folded as they arrive: per-key
//! counts and sketches of requests per part, usage events per part, and the
//! rows of whole 5-minute slots kept for the cache.

use std::collections::HashMap;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::{DistinctUsers, LatencySketch, PerformanceSummary};

use super::cache::{Part, PerfBucket, Weigh};
use crate::copy_out::{CopyTuples, bytes as copy_bytes, fixed};
use crate::error::Error;
use crate::schema::SchemaName;
use crate::tables::ALL;
use crate::units::{SLOT, from_unix_secs, micros_literal, pg_micros};

/// Joins the parts into as few `[lo, hi)` ranges as possible (adjacent parts
/// are read by one scan).
pub(super) fn ranges(
    parts: impl IntoIterator<Item = (SystemTime, SystemTime)>,
) -> Vec<(SystemTime, SystemTime)> {
    let mut out: Vec<(SystemTime, SystemTime)> = Vec::new();
    for (lo, hi) in parts {
        match out.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Per-part accumulation while streaming.
pub(super) struct PartAcc {
    pub(super) by_endpoint: HashMap<Vec<u8>, Vec<(Vec<u8>, PerformanceSummary)>>,
    pub(super) all: PerformanceSummary,
    pub(super) hashes: Vec<u64>,
    pub(super) users: DistinctUsers,
}

impl Default for PartAcc {
    fn default() -> Self {
        Self {
            by_endpoint: HashMap::new(),
            all: counting(),
            hashes: Vec::new(),
            users: DistinctUsers::new(),
        }
    }
}

/// An empty summary of the kind a report needs: counts and latencies, no
/// status distribution (a report shows none).
fn counting() -> PerformanceSummary {
    PerformanceSummary::without_status_codes(LatencySketch::new())
}

/// The cached part of one key's summary.
fn part(endpoint: String, method: String, summary: PerformanceSummary) -> Part {
    let (count, errors) = (summary.count(), summary.error_count());
    Part::new(endpoint, method, count, errors, summary.into_latency())
}

impl PartAcc {
    pub(super) fn into_bucket(mut self) -> PerfBucket {
        self.users.add_hashes(&mut self.hashes);
        let parts = self
            .by_endpoint
            .into_iter()
            .flat_map(|(e, methods)| {
                let endpoint = String::from_utf8_lossy(&e).into_owned();
                methods.into_iter().map(move |(m, a)| {
                    let method = String::from_utf8_lossy(&m).into_owned();
                    part(endpoint.clone(), method, a)
                })
            })
            .collect();
        let all = (self.all.count() > 0).then(|| part(ALL.to_owned(), ALL.to_owned(), self.all));
        PerfBucket {
            parts,
            all,
            users: Some(self.users),
        }
    }
}

/// Streams the raw requests of the ascending, disjoint `parts` with binary
/// `COPY` (one scan per run of adjacent parts) and folds each row into the
/// part it falls in: per (endpoint, method) counts and sketches, the
/// all-endpoints sketch and the users. Parts without rows are absent.
pub(super) async fn stream_parts(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    parts: &[(SystemTime, SystemTime)],
) -> Result<HashMap<usize, PerfBucket>, Error> {
    const CTX: &str = "streaming raw requests for a dashboard query";
    let mut accs: HashMap<usize, PartAcc> = HashMap::new();
    copy_parts::<6>(
        tx,
        &schema.qualify("performance_metrics"),
        REQUEST_COLUMNS,
        parts,
        CTX,
        |i, _, f| {
            let acc = accs.entry(i).or_default();
            let endpoint = copy_bytes(f[0], CTX)?;
            let method = copy_bytes(f[1], CTX)?;
            let status = i32::from_be_bytes(fixed::<4>(f[2], CTX)?);
            let ms = f64::from_be_bytes(fixed::<8>(f[3], CTX)?);
            if let Some(u) = f[4] {
                acc.hashes.push(DistinctUsers::hash_id(u));
                if acc.hashes.len() >= 1 << 14 {
                    acc.users.add_hashes(&mut acc.hashes);
                }
            }
            let methods = match acc.by_endpoint.get_mut(endpoint) {
                Some(m) => m,
                None => acc.by_endpoint.entry(endpoint.to_vec()).or_default(),
            };
            let k = match methods.iter().position(|(m, _)| m == method) {
                Some(k) => k,
                None => {
                    methods.push((method.to_vec(), counting()));
                    methods.len() - 1
                }
            };
            let status = u16::try_from(status).unwrap_or(0);
            methods[k].1.add_sample(status, ms);
            acc.all.add_sample(status, ms);
            Ok(())
        },
    )
    .await?;
    Ok(accs
        .into_iter()
        .map(|(i, a)| (i, a.into_bucket()))
        .collect())
}

/// The columns read from `performance_metrics` (the timestamp last, for
/// [`copy_parts`]).
pub(super) const REQUEST_COLUMNS: &str =
    "endpoint, method, status_code, response_time_ms, user_id, \"timestamp\"";

/// Streams `columns` (the last one `"timestamp"`) of the rows of `table`
/// in the ascending, disjoint `parts` with binary `COPY` — one scan per
/// run of adjacent parts — and calls `row` with the index of the part each
/// row falls in, its timestamp (PostgreSQL microseconds) and its fields.
pub(super) async fn copy_parts<const N: usize>(
    tx: &Transaction<'_>,
    table: &str,
    columns: &str,
    parts: &[(SystemTime, SystemTime)],
    context: &'static str,
    mut row: impl FnMut(usize, i64, &[Option<&[u8]>; N]) -> Result<(), Error>,
) -> Result<(), Error> {
    if parts.is_empty() {
        return Ok(());
    }
    // Part bounds in PostgreSQL microseconds, for the per-row lookup.
    let bounds: Vec<(i64, i64)> = parts
        .iter()
        .map(|&(lo, hi)| (pg_micros(lo), pg_micros(hi)))
        .collect();
    // Rows mostly arrive in time order: the last part is checked first.
    let mut last = 0usize;
    for (lo, hi) in ranges(parts.iter().copied()) {
        let sql = format!(
            "COPY (SELECT {columns} FROM {table} \
             WHERE \"timestamp\" >= {} AND \"timestamp\" < {}) TO STDOUT (FORMAT binary)",
            micros_literal(lo),
            micros_literal(hi)
        );
        let stream = tx
            .copy_out(sql.as_str())
            .await
            .map_err(|e| Error::db(context, e))?;
        pin_mut!(stream);
        let mut parser = CopyTuples::<N>::new(context);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::db(context, e))?;
            parser.feed(&chunk, |f| {
                let ts = i64::from_be_bytes(fixed::<8>(f[N - 1], context)?);
                let i = if bounds[last].0 <= ts && ts < bounds[last].1 {
                    last
                } else {
                    match bounds.partition_point(|b| b.1 <= ts) {
                        i if i < bounds.len() && bounds[i].0 <= ts => i,
                        // Outside every part (cannot happen: each scan's
                        // range is a union of parts); skipped.
                        _ => return Ok(()),
                    }
                };
                last = i;
                row(i, ts, f)
            })?;
        }
        parser.finish()?;
    }
    Ok(())
}

/// The raw usage events of one part: counts per (type, page) of the
/// events that pass the type filter, the users of every event and the
/// users of the events that pass the filter.
#[derive(Debug, Default)]
pub(super) struct EventPart {
    pub(super) counts: HashMap<(String, Option<String>), u64>,
    pub(super) users: DistinctUsers,
    pub(super) users_of_type: DistinctUsers,
}

/// Streams the raw usage events of the ascending, disjoint `parts` with
/// binary `COPY` (one scan per run of adjacent parts) into one
/// [`EventPart`] each: the three per-range statements this replaces each
/// scanned the same rows again.
pub(super) async fn stream_events(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    parts: &[(SystemTime, SystemTime)],
    event_type: Option<&str>,
) -> Result<Vec<EventPart>, Error> {
    const CTX: &str = "streaming raw usage events for a dashboard query";
    let mut out: Vec<EventPart> = parts.iter().map(|_| EventPart::default()).collect();
    if parts.is_empty() {
        return Ok(out);
    }
    let mut hashes: Vec<Vec<u64>> = vec![Vec::new(); parts.len()];
    let mut typed_hashes: Vec<Vec<u64>> = vec![Vec::new(); parts.len()];
    let wanted = event_type.map(str::as_bytes);
    // (type, page) keys seen, interned per part as bytes until the end.
    let mut counts: Vec<HashMap<(Vec<u8>, Option<Vec<u8>>), u64>> =
        vec![HashMap::new(); parts.len()];
    copy_parts::<4>(
        tx,
        &schema.qualify("usage_events"),
        "event_type, page_name, user_id, \"timestamp\"",
        parts,
        CTX,
        |i, _, f| {
            let event = copy_bytes(f[0], CTX)?;
            let of_type = wanted.is_none_or(|w| w == event);
            if let Some(user) = f[2] {
                let h = DistinctUsers::hash_id(user);
                hashes[i].push(h);
                if of_type {
                    typed_hashes[i].push(h);
                }
            }
            if of_type {
                let page = f[1];
                // Look up by borrowed bytes first: no allocation per row.
                let map = &mut counts[i];
                match map
                    .iter_mut()
                    .find(|((e, p), _)| e.as_slice() == event && p.as_deref() == page)
                {
                    Some((_, n)) => *n += 1,
                    None => {
                        let _ = map.insert((event.to_vec(), page.map(<[u8]>::to_vec)), 1);
                    }
                }
            }
            Ok(())
        },
    )
    .await?;
    for (i, part) in out.iter_mut().enumerate() {
        part.users.add_hashes(&mut hashes[i]);
        part.users_of_type.add_hashes(&mut typed_hashes[i]);
        part.counts = counts[i]
            .drain()
            .map(|((e, p), n)| {
                (
                    (
                        String::from_utf8_lossy(&e).into_owned(),
                        p.map(|p| String::from_utf8_lossy(&p).into_owned()),
                    ),
                    n,
                )
            })
            .collect();
    }
    Ok(out)
}

/// The raw requests of one slot, row by row (for cutting edges out of it).
#[derive(Debug, Default)]
pub(super) struct SlotRows {
    pub(super) keys: Vec<(String, String)>,
    pub(super) rows: Vec<RowRec>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RowRec {
    /// PostgreSQL microseconds.
    pub(super) ts: i64,
    pub(super) key: u32,
    pub(super) status: u16,
    pub(super) ms: f64,
    pub(super) user: Option<u64>,
}

impl Weigh for SlotRows {
    fn bytes(&self) -> usize {
        64 + self.rows.len() * std::mem::size_of::<RowRec>()
            + self
                .keys
                .iter()
                .map(|(e, m)| 48 + e.len() + m.len())
                .sum::<usize>()
    }
}

impl SlotRows {
    /// The bucket of the rows in `[lo, hi)` (PostgreSQL microseconds).
    pub(super) fn bucket(&self, lo: i64, hi: i64) -> PerfBucket {
        let mut keys: Vec<PerformanceSummary> = self.keys.iter().map(|_| counting()).collect();
        let mut all = counting();
        let mut hashes = Vec::new();
        for r in self.rows.iter().filter(|r| lo <= r.ts && r.ts < hi) {
            keys[r.key as usize].add_sample(r.status, r.ms);
            all.add_sample(r.status, r.ms);
            if let Some(h) = r.user {
                hashes.push(h);
            }
        }
        let mut users = DistinctUsers::new();
        users.add_hashes(&mut hashes);
        let parts = self
            .keys
            .iter()
            .zip(keys)
            .filter(|(_, a)| a.count() > 0)
            .map(|((e, m), a)| part(e.clone(), m.clone(), a))
            .collect();
        let all = (all.count() > 0).then(|| part(ALL.to_owned(), ALL.to_owned(), all));
        PerfBucket {
            parts,
            all,
            users: Some(users),
        }
    }
}

/// Streams the raw requests of the whole `slots`, keeping every row.
pub(super) async fn stream_rows(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    slots: &[i64],
) -> Result<HashMap<i64, SlotRows>, Error> {
    const CTX: &str = "streaming raw requests of a slot for a dashboard query";
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let parts: Vec<(SystemTime, SystemTime)> = sorted
        .iter()
        .map(|&s| (from_unix_secs(s), from_unix_secs(s + SLOT)))
        .collect();
    let mut out: Vec<SlotRows> = sorted.iter().map(|_| SlotRows::default()).collect();
    // Per slot: endpoint -> (method, key index), looked up by borrowed bytes.
    type Methods = Vec<(Vec<u8>, u32)>;
    let mut index: Vec<HashMap<Vec<u8>, Methods>> = sorted.iter().map(|_| HashMap::new()).collect();
    copy_parts::<6>(
        tx,
        &schema.qualify("performance_metrics"),
        REQUEST_COLUMNS,
        &parts,
        CTX,
        |i, ts, f| {
            let rows = &mut out[i];
            let endpoint = copy_bytes(f[0], CTX)?;
            let method = copy_bytes(f[1], CTX)?;
            let methods = match index[i].get_mut(endpoint) {
                Some(m) => m,
                None => index[i].entry(endpoint.to_vec()).or_default(),
            };
            let key = match methods.iter().find(|(m, _)| m.as_slice() == method) {
                Some(&(_, k)) => k,
                None => {
                    rows.keys.push((
                        String::from_utf8_lossy(endpoint).into_owned(),
                        String::from_utf8_lossy(method).into_owned(),
                    ));
                    let k = u32::try_from(rows.keys.len() - 1).unwrap_or(u32::MAX);
                    methods.push((method.to_vec(), k));
                    k
                }
            };
            rows.rows.push(RowRec {
                ts,
                key,
                status: u16::try_from(i32::from_be_bytes(fixed::<4>(f[2], CTX)?)).unwrap_or(0),
                ms: f64::from_be_bytes(fixed::<8>(f[3], CTX)?),
                user: f[4].map(DistinctUsers::hash_id),
            });
            Ok(())
        },
    )
    .await?;
    Ok(sorted.into_iter().zip(out).collect())
}
