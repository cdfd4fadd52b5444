//! Rolled performance buckets and users sketches, decoded once and read
//! through the bucket cache under their rollup version.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use metrics_core::aggregate::{DistinctUsers, LatencySketch};

use super::cache::{BucketKey, Part, PerfBucket, Table, UsersKey};
use super::decode::{decode_sketch, decode_users, to_u64};
use super::plan::Rolled;
use super::sql::prepare;
use super::store::PgMetricsQuery;
use crate::error::Error;
use crate::tables::ALL;
use crate::units::from_unix_secs;

/// The cache key of a rolled bucket at its current version.
pub(super) fn bucket_key(rolled: &Rolled, table: Table, start: i64) -> BucketKey {
    BucketKey {
        table,
        start,
        version: match table {
            Table::Daily => rolled.day_versions.get(&start).copied().unwrap_or(0),
            Table::Hourly => rolled.hour_versions.get(&start).copied().unwrap_or(0),
            Table::RawSlot | Table::RawSlotOfRolledHour => 0,
        },
    }
}

/// The rolled buckets of one metric type, as (table, start) pairs.
pub(super) struct RolledBuckets<'a> {
    pub(super) rolled: &'a Rolled,
    pub(super) days: &'a [i64],
    pub(super) hours: &'a [i64],
}

impl RolledBuckets<'_> {
    fn keys(&self) -> impl Iterator<Item = BucketKey> + '_ {
        self.days
            .iter()
            .map(|&d| bucket_key(self.rolled, Table::Daily, d))
            .chain(
                self.hours
                    .iter()
                    .map(|&h| bucket_key(self.rolled, Table::Hourly, h)),
            )
    }
}

/// The merged `*` users sketches of the rolled performance and usage
/// buckets: from the bucket cache or the users cache when they hold the
/// bucket's current version, the rest read (and cached).
pub(super) async fn star_users(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    perf: &RolledBuckets<'_>,
    usage: &RolledBuckets<'_>,
) -> Result<(DistinctUsers, DistinctUsers), Error> {
    let (mut perf_users, mut usage_users) = (DistinctUsers::new(), DistinctUsers::new());
    let mut missing: Vec<UsersKey> = Vec::new();
    for (is_usage, buckets) in [(false, perf), (true, usage)] {
        let into = if is_usage {
            &mut usage_users
        } else {
            &mut perf_users
        };
        for bucket in buckets.keys() {
            if !is_usage {
                if let Some(b) = this.cache.get(&bucket) {
                    if let Some(u) = &b.users {
                        into.merge(u);
                    }
                    continue;
                }
            }
            let key = UsersKey {
                usage: is_usage,
                bucket,
            };
            match this.users_cache.get(&key) {
                Some(u) => into.merge(&u),
                None => missing.push(key),
            }
        }
    }
    if missing.is_empty() {
        return Ok((perf_users, usage_users));
    }
    let pick = |usage: bool, table: Table| -> Vec<SystemTime> {
        missing
            .iter()
            .filter(|k| k.usage == usage && k.bucket.table == table)
            .map(|k| from_unix_secs(k.bucket.start))
            .collect()
    };
    let stmt = prepare(tx, &this.sql.star_users).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &pick(false, Table::Daily),
                &pick(false, Table::Hourly),
                &pick(true, Table::Daily),
                &pick(true, Table::Hourly),
            ],
        )
        .await
        .map_err(|e| Error::db("reading rolled users", e))?;
    let mut found: HashMap<(bool, Table, i64), DistinctUsers> = HashMap::new();
    for row in &rows {
        let is_usage: bool = row.get(0);
        let table = if row.get::<_, bool>(1) {
            Table::Hourly
        } else {
            Table::Daily
        };
        let users = match row.get::<_, Option<&[u8]>>(3) {
            Some(bytes) => decode_users(bytes, table_name(table), ALL)?,
            None => DistinctUsers::new(),
        };
        let _ = found.insert((is_usage, table, row.get(2)), users);
    }
    for key in missing {
        let users = found
            .remove(&(key.usage, key.bucket.table, key.bucket.start))
            .unwrap_or_default();
        if key.usage {
            usage_users.merge(&users);
        } else {
            perf_users.merge(&users);
        }
        if this.users_cache.is_enabled() {
            this.users_cache.insert(key, Arc::new(users));
        }
    }
    Ok((perf_users, usage_users))
}

/// The decoded performance buckets of `days` and `hours`: from the cache
/// when it holds their current version, else read (and cached).
pub(super) async fn perf_buckets(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    rolled: &Rolled,
    days: &[i64],
    hours: &[i64],
) -> Result<Vec<Arc<PerfBucket>>, Error> {
    let wanted: Vec<BucketKey> = RolledBuckets {
        rolled,
        days,
        hours,
    }
    .keys()
    .collect();
    let mut out = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for k in wanted {
        match this.cache.get(&k) {
            Some(b) => out.push(b),
            None => missing.push(k),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let pick = |table| -> Vec<SystemTime> {
        missing
            .iter()
            .filter(|k| k.table == table)
            .map(|k| from_unix_secs(k.start))
            .collect()
    };
    let stmt = prepare(tx, &this.sql.perf_buckets).await?;
    let rows = tx
        .query(&stmt, &[&pick(Table::Daily), &pick(Table::Hourly)])
        .await
        .map_err(|e| Error::db("reading performance rollups", e))?;
    let mut built: HashMap<(Table, i64), PerfBucket> = HashMap::new();
    for row in &rows {
        let table = if row.get::<_, bool>(0) {
            Table::Hourly
        } else {
            Table::Daily
        };
        let (endpoint, method): (String, String) = (row.get(2), row.get(3));
        let bytes: Option<&[u8]> = row.get(6);
        let stored = match bytes {
            Some(b) => decode_sketch(b, table_name(table), &endpoint)?,
            None => LatencySketch::new(),
        };
        let part = Part::new(
            endpoint,
            method,
            to_u64(row.get(4)),
            to_u64(row.get::<_, Option<i64>>(5).unwrap_or(0)),
            stored,
        );
        let bucket = built.entry((table, row.get(1))).or_default();
        if part.endpoint == ALL && part.method == ALL {
            if let Some(u) = row.get::<_, Option<&[u8]>>(7) {
                bucket.users = Some(decode_users(u, table_name(table), ALL)?);
            }
            bucket.all = Some(part);
        } else {
            bucket.parts.push(part);
        }
    }
    for k in missing {
        let bucket = Arc::new(built.remove(&(k.table, k.start)).unwrap_or_default());
        if this.cache.is_enabled() {
            this.cache.insert(k, Arc::clone(&bucket));
        }
        out.push(bucket);
    }
    Ok(out)
}

pub(super) fn table_name(table: Table) -> &'static str {
    match table {
        Table::Hourly => "aggregated_metrics",
        Table::Daily => "aggregated_metrics_daily",
        Table::RawSlot | Table::RawSlotOfRolledHour => "performance_metrics",
    }
}
