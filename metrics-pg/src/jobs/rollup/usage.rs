//! Streaming an hour of raw usage events into per-event-type summaries.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::UsageSummary;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;

use super::rows::{OutRow, Rolled, copy_sql, slot_rows};
use crate::error::Error;
use crate::jobs::daily::Acc;
use crate::schema::SchemaName;
use crate::tables::{ALL, Kind};
use crate::units::{SLOTS_PER_HOUR, slot_of, unix_secs};

pub(super) async fn stream_usage(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
) -> Result<Rolled, Error> {
    let sql = copy_sql(
        schema,
        Kind::Usage,
        "event_type, user_id, page_name, success, \"timestamp\"",
        hour,
    );
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db("streaming raw usage events", e))?;
    let rows = BinaryCopyOutStream::new(
        stream,
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
            Type::TIMESTAMPTZ,
        ],
    );
    pin_mut!(rows);
    let mut by_type: HashMap<String, UsageSummary> = HashMap::new();
    let mut slots: [Option<UsageSummary>; SLOTS_PER_HOUR] = Default::default();
    let mut raw = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| Error::db("streaming raw usage events", e))?;
        let event_type: &str = row
            .try_get(0)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let user: &str = row
            .try_get(1)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let page: Option<&str> = row
            .try_get(2)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let success: Option<bool> = row
            .try_get(3)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let at: SystemTime = row
            .try_get(4)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        raw += 1;
        slots[slot_of(hour, unix_secs(at))]
            .get_or_insert_with(UsageSummary::new)
            .add_event(event_type, user, page, success);
        if !by_type.contains_key(event_type) {
            let _ = by_type.insert(event_type.to_owned(), UsageSummary::new());
        }
        if let Some(s) = by_type.get_mut(event_type) {
            s.add_event(event_type, user, page, success);
        }
    }
    let sorted: BTreeMap<String, UsageSummary> = by_type.into_iter().collect();
    let mut all = UsageSummary::new();
    let mut out = Vec::with_capacity(sorted.len() + 1);
    let mut states = Vec::with_capacity(sorted.len() + 1);
    for (event_type, s) in sorted {
        all.merge(&s);
        out.push(usage_row(event_type.clone(), &s));
        states.push(((None, None, Some(event_type)), Acc::Usage(s)));
    }
    if raw > 0 {
        out.push(usage_row(ALL.to_owned(), &all));
        states.push(((None, None, Some(ALL.to_owned())), Acc::Usage(all)));
    }
    let slots = slot_rows(hour, slots, |s| {
        let r = usage_row(ALL.to_owned(), &s);
        (r.values, r.count, r.latency, r.users)
    });
    Ok(Rolled {
        raw,
        rows: out,
        slots,
        states,
    })
}

pub(super) fn usage_row(event_type: String, s: &UsageSummary) -> OutRow {
    let values = s.values();
    OutRow {
        endpoint: None,
        method: None,
        event_type: Some(event_type),
        count: i64::try_from(values.total_events).unwrap_or(i64::MAX),
        values: serde_json::to_value(values).unwrap_or_default(),
        latency: None,
        users: s.users().to_bytes(),
    }
}
