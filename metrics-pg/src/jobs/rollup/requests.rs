//! Streaming an hour of raw requests into per-(endpoint, method) state:
//! keys interned by their bytes, latencies into sketches, users into
//! distinct-user sketches.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::{DistinctUsers, LatencySketch, PerformanceSummary};
use tokio_postgres::Transaction;

use super::rows::{OutRow, Rolled, copy_sql, slot_rows};
use crate::copy_out::{CopyTuples, bytes, fixed};
use crate::error::Error;
use crate::jobs::daily::Acc;
use crate::schema::SchemaName;
use crate::tables::{ALL, Kind};
use crate::units::{PG_EPOCH_UNIX_MICROS, SLOT, SLOTS_PER_HOUR, ts_literal};

/// One key's finished state: its summary (latencies, requests per status)
/// and its distinct users.
#[derive(Debug)]
pub(super) struct KeyState {
    summary: PerformanceSummary,
    users: DistinctUsers,
}

/// Hashes pending per counter before they are folded into its
/// [`DistinctUsers`] (bounds the memory of a busy bucket; 64 KiB).
pub(super) const PENDING_USERS: usize = 8_192;

/// One bucket's state while an hour streams: core's summary (the one
/// accumulator of request statistics) and the users, buffered as hashes and
/// folded in batches (one sort instead of a sorted insert per row).
#[derive(Debug)]
pub(super) struct PerfAcc {
    summary: PerformanceSummary,
    users: DistinctUsers,
    pending: Vec<u64>,
}

impl PerfAcc {
    fn new(exact_limit: u32) -> Self {
        Self {
            summary: PerformanceSummary::with_sketch(LatencySketch::with_exact_limit(exact_limit)),
            users: DistinctUsers::new(),
            pending: Vec::new(),
        }
    }

    #[inline]
    fn add(&mut self, status: u16, ms: f64, user: Option<u64>) {
        self.summary.add_sample(status, ms);
        if let Some(h) = user {
            self.pending.push(h);
            if self.pending.len() >= PENDING_USERS {
                self.users.add_hashes(&mut self.pending);
            }
        }
    }

    fn finish(mut self) -> KeyState {
        self.users.add_hashes(&mut self.pending);
        // quantile() and to_bytes() would each sort a copy otherwise.
        self.summary.sort_samples();
        KeyState {
            summary: self.summary,
            users: self.users,
        }
    }
}

/// The `(endpoint, method)` keys of an hour, interned: rows are matched by
/// their raw bytes through a 64-bit hash, so a row costs no allocation and
/// no UTF-8 check (done once per new key).
#[derive(Debug, Default)]
pub(super) struct Keys {
    keys: Vec<(String, String)>,
    /// `method ␟ endpoint` of each key, when rows carry the joined form.
    joined: Vec<Box<[u8]>>,
    by_hash: HashMap<u64, usize, BuildHasherDefault<PreHashed>>,
}

/// The hasher of a map whose keys already are 64-bit hashes (SipHash over
/// them again, per row, showed in profiles).
#[derive(Debug, Default)]
pub(super) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
}

impl Keys {
    /// The index of the key given as `method ␟ endpoint` (see
    /// [`KEY_SEPARATOR`]), added when new; `None` when the text holds the
    /// separator more than once, which makes the split ambiguous.
    #[inline]
    fn intern_joined(&mut self, joined: &[u8]) -> Result<Option<usize>, Error> {
        let h = key_hash(joined, &[]);
        if let Some(&i) = self.by_hash.get(&h) {
            if *self.joined[i] == *joined {
                return Ok(Some(i));
            }
        }
        if let Some(i) = self.joined.iter().position(|k| **k == *joined) {
            return Ok(Some(i));
        }
        let mut parts = joined.split(|&b| b == KEY_SEPARATOR);
        let (Some(method), Some(endpoint), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let key = (utf8(endpoint)?, utf8(method)?);
        self.keys.push(key);
        self.joined.push(joined.into());
        let i = self.keys.len() - 1;
        let _ = self.by_hash.entry(h).or_insert(i);
        Ok(Some(i))
    }

    /// The index of the key, added when new.
    #[inline]
    fn intern(&mut self, endpoint: &[u8], method: &[u8]) -> Result<usize, Error> {
        let h = key_hash(endpoint, method);
        if let Some(&i) = self.by_hash.get(&h) {
            let (e, m) = &self.keys[i];
            if e.as_bytes() == endpoint && m.as_bytes() == method {
                return Ok(i);
            }
        }
        // New key, or a 64-bit hash collision: resolve by comparing bytes.
        if let Some(i) = self
            .keys
            .iter()
            .position(|(e, m)| e.as_bytes() == endpoint && m.as_bytes() == method)
        {
            return Ok(i);
        }
        self.keys.push((utf8(endpoint)?, utf8(method)?));
        let i = self.keys.len() - 1;
        let _ = self.by_hash.entry(h).or_insert(i);
        Ok(i)
    }
}

pub(super) fn utf8(b: &[u8]) -> Result<String, Error> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| Error::CopyFormat {
            context: "streaming raw requests",
            reason: "endpoint or method is not UTF-8",
        })
}

/// The byte between method and endpoint when the server sends them as one
/// column (ASCII unit separator). HTTP methods are tokens, which cannot
/// hold control characters, so the first separator ends the method; a
/// method column holding one anyway makes the split ambiguous, detected,
/// and the hour is streamed again with two columns.
pub(super) const KEY_SEPARATOR: u8 = 0x1f;

/// A hash of `endpoint`, a separator and `method`: a handful of keys per
/// hour, so quality matters less than speed (collisions are resolved). Eight
/// bytes per multiply (FNV-1a's byte-at-a-time multiply chain showed in the
/// rollup's profile).
#[inline]
pub(super) fn key_hash(endpoint: &[u8], method: &[u8]) -> u64 {
    let h = words_hash(0x243f_6a88_85a3_08d3, endpoint);
    words_hash(h.rotate_left(17) ^ 0xff, method)
}

#[inline]
pub(super) fn words_hash(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    // The length too, so trailing zero bytes still count.
    h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    (h.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
}

/// An hour of raw requests being folded into per-key buckets and slots.
pub(super) struct PerfHour {
    keys: Keys,
    buckets: Vec<PerfAcc>,
    slots: [Option<PerfAcc>; SLOTS_PER_HOUR],
    hour_micros: i64,
    exact_limit: u32,
    raw: u64,
}

impl PerfHour {
    fn new(hour: i64, exact_limit: u32) -> Self {
        Self {
            keys: Keys::default(),
            buckets: Vec::new(),
            slots: Default::default(),
            hour_micros: hour * 1_000_000 - PG_EPOCH_UNIX_MICROS,
            exact_limit,
            raw: 0,
        }
    }

    /// Folds in one row: its key index, and the binary `status_code`,
    /// `response_time_ms`, `user_id` and `timestamp` columns.
    #[inline]
    fn add(&mut self, key: usize, f: [Option<&[u8]>; 4]) -> Result<(), Error> {
        const CTX: &str = "streaming raw requests";
        // Sent as NULL when 200 (see `PERF_COLUMNS`); the table's CHECK
        // keeps status_code in 100..=599.
        let status = match f[0] {
            None => 200,
            some => u16::try_from(i32::from_be_bytes(fixed(some, CTX)?)).unwrap_or(0),
        };
        let ms = f64::from_be_bytes(fixed(f[1], CTX)?);
        // Hashed once for the hour's bucket and the 5-minute slot's.
        let user = f[2].map(DistinctUsers::hash_id);
        let at = i64::from_be_bytes(fixed(f[3], CTX)?);
        self.raw += 1;
        if key == self.buckets.len() {
            self.buckets.push(PerfAcc::new(self.exact_limit));
        }
        self.buckets[key].add(status, ms, user);
        let slot = usize::try_from((at - self.hour_micros).div_euclid(SLOT * 1_000_000))
            .unwrap_or(0)
            .min(SLOTS_PER_HOUR - 1);
        let exact_limit = self.exact_limit;
        self.slots[slot]
            .get_or_insert_with(|| PerfAcc::new(exact_limit))
            .add(status, ms, user);
        Ok(())
    }
}

/// The `COPY` columns of raw requests: method and endpoint joined (see
/// [`KEY_SEPARATOR`]), then the columns [`PerfHour::add`] reads. The status
/// travels as NULL when it is 200, the usual case: a NULL costs the server
/// no send function call, and `NULLIF` costs less than one.
pub(super) const PERF_COLUMNS: &str = "method || E'\\x1f' || endpoint, NULLIF(status_code, 200), \
     response_time_ms, user_id, \"timestamp\"";

/// Streams the hour's raw requests into a [`PerfHour`]. The server joins
/// method and endpoint into one column (one send call less per row: a tenth
/// of the server's time in the rollup benchmark); if that join is ambiguous
/// for some row, the hour is streamed again with separate columns.
pub(super) async fn stream_performance_rows(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
    exact_limit: u32,
) -> Result<PerfHour, Error> {
    const CTX: &str = "streaming raw requests";
    let sql = copy_sql(schema, Kind::Performance, PERF_COLUMNS, hour);
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db(CTX, e))?;
    pin_mut!(stream);
    let mut parser = CopyTuples::<5>::new(CTX);
    let mut acc = PerfHour::new(hour, exact_limit);
    let mut ambiguous = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::db(CTX, e))?;
        if ambiguous {
            continue; // drain the stream; the hour is read again below
        }
        parser.feed(&chunk, |f| {
            if ambiguous {
                return Ok(());
            }
            match acc.keys.intern_joined(bytes(f[0], CTX)?)? {
                Some(key) => acc.add(key, [f[1], f[2], f[3], f[4]]),
                None => {
                    ambiguous = true;
                    Ok(())
                }
            }
        })?;
    }
    if !ambiguous {
        parser.finish()?;
        return Ok(acc);
    }
    tracing::debug!(schema = %schema, hour = %ts_literal(hour), "a method holds the key separator; streaming the hour again");
    let sql = copy_sql(
        schema,
        Kind::Performance,
        "endpoint, method, NULLIF(status_code, 200), response_time_ms, user_id, \"timestamp\"",
        hour,
    );
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db(CTX, e))?;
    pin_mut!(stream);
    let mut parser = CopyTuples::<6>::new(CTX);
    let mut acc = PerfHour::new(hour, exact_limit);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::db(CTX, e))?;
        parser.feed(&chunk, |f| {
            let key = acc.keys.intern(bytes(f[0], CTX)?, bytes(f[1], CTX)?)?;
            acc.add(key, [f[2], f[3], f[4], f[5]])
        })?;
    }
    parser.finish()?;
    Ok(acc)
}

pub(super) async fn stream_performance(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
    exact_limit: u32,
) -> Result<Rolled, Error> {
    let PerfHour {
        keys,
        buckets,
        slots,
        raw,
        ..
    } = stream_performance_rows(tx, schema, hour, exact_limit).await?;
    // Sorted, so rows are written in key order: equal inputs give equal
    // statements, and concurrent upserts of one hour lock rows in one order.
    let mut sorted: Vec<((String, String), PerfAcc)> = keys.keys.into_iter().zip(buckets).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(sorted.len() + 1);
    let mut states = Vec::with_capacity(sorted.len() + 1);
    for ((endpoint, method), acc) in sorted {
        let b = acc.finish();
        let key = (Some(endpoint), Some(method), None);
        out.push(perf_row(key.0.clone(), key.1.clone(), &b));
        states.push((key, Acc::Performance(b.summary, b.users)));
    }
    // The hour's all-endpoints state is the merge of its slots' (the same
    // state as adding every sample; binned slots merge cheaply).
    let slots = slots.map(|s| s.map(PerfAcc::finish));
    if raw > 0 {
        let mut all = PerfAcc::new(exact_limit).finish();
        for b in slots.iter().flatten() {
            all.summary.merge(&b.summary);
            all.users.merge(&b.users);
        }
        out.push(perf_row(Some(ALL.to_owned()), Some(ALL.to_owned()), &all));
        states.push((
            (Some(ALL.to_owned()), Some(ALL.to_owned()), None),
            Acc::Performance(all.summary, all.users),
        ));
    }
    let slots = slot_rows(hour, slots, |b| {
        let r = perf_row(None, None, &b);
        (r.values, r.count, r.latency, r.users)
    });
    Ok(Rolled {
        raw,
        rows: out,
        slots,
        states,
    })
}

pub(super) fn perf_row(endpoint: Option<String>, method: Option<String>, b: &KeyState) -> OutRow {
    OutRow {
        endpoint,
        method,
        event_type: None,
        values: serde_json::to_value(b.summary.values()).unwrap_or_default(),
        count: i64::try_from(b.summary.count()).unwrap_or(i64::MAX),
        latency: Some(b.summary.latency().to_bytes()),
        users: b.users.to_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_separates_close_keys() {
        // Where endpoint ends and method starts, trailing zero bytes, word
        // boundaries and single-byte changes all give different hashes.
        let keys: [(&[u8], &[u8]); 10] = [
            (b"/a", b"GET"),
            (b"/aG", b"ET"),
            (b"/a\0", b"GET"),
            (b"/a", b"GET\0"),
            (b"/api/v1/", b"GET"),
            (b"/api/v1/x", b"GET"),
            (b"/api/v1/y", b"GET"),
            (b"/api/v1/", b"POST"),
            (b"", b""),
            (b"\0", b""),
        ];
        let hashes: std::collections::HashSet<u64> =
            keys.iter().map(|(e, m)| key_hash(e, m)).collect();
        assert_eq!(hashes.len(), keys.len());
        assert_eq!(key_hash(b"/a", b"GET"), key_hash(b"/a", b"GET"));
    }

    #[test]
    fn interned_keys_resolve_hash_collisions_by_bytes() {
        let mut keys = Keys::default();
        let a = keys.intern(b"/a", b"GET").unwrap();
        let b = keys.intern(b"/b", b"GET").unwrap();
        // Pretend "/b GET" collided with "/a GET": the map points at "/a".
        let _ = keys.by_hash.insert(key_hash(b"/b", b"GET"), a);
        assert_eq!(keys.intern(b"/b", b"GET").unwrap(), b);
        assert_eq!(keys.intern(b"/a", b"GET").unwrap(), a);
        // A stream uses one form or the other, never both in one `Keys`.
        let mut joined = Keys::default();
        let c = joined.intern_joined(b"PUT\x1f/c").unwrap().unwrap();
        let d = joined.intern_joined(b"GET\x1f/d").unwrap().unwrap();
        let _ = joined.by_hash.insert(key_hash(b"GET\x1f/d", &[]), c);
        assert_eq!(joined.intern_joined(b"GET\x1f/d").unwrap(), Some(d));
        assert_eq!(joined.intern_joined(b"PUT\x1f/c").unwrap(), Some(c));
        assert_eq!(joined.keys[d], ("/d".to_owned(), "GET".to_owned()));
        assert_eq!(joined.intern_joined(b"A\x1fB\x1fC").unwrap(), None);
    }
}
