//! What rolling an hour produces (rollup rows, 5-minute rows, the states
//! for the day's daily rollup) and the `COPY` statement that streams it.

use crate::jobs::daily::{Acc, Key};
use crate::schema::SchemaName;
use crate::tables::Kind;
use crate::units::{HOUR, SLOT, SLOTS_PER_HOUR, ts_literal};

/// One rollup row, ready to upsert.
pub(super) struct OutRow {
    pub(super) endpoint: Option<String>,
    pub(super) method: Option<String>,
    pub(super) event_type: Option<String>,
    pub(super) values: serde_json::Value,
    pub(super) count: i64,
    pub(super) latency: Option<Vec<u8>>,
    pub(super) users: Vec<u8>,
}

/// One `aggregated_metrics_5min` row (the all-rows key of one slot).
pub(super) struct SlotRow {
    pub(super) start: i64,
    pub(super) values: serde_json::Value,
    pub(super) count: i64,
    pub(super) latency: Option<Vec<u8>>,
    pub(super) users: Vec<u8>,
}

/// What streaming one hour produced.
pub(super) struct Rolled {
    pub(super) raw: u64,
    pub(super) rows: Vec<OutRow>,
    pub(super) slots: Vec<SlotRow>,
    /// The state behind each row of `rows`, for the day's daily rollup.
    pub(super) states: Vec<(Key, Acc)>,
}

pub(super) fn copy_sql(schema: &SchemaName, kind: Kind, columns: &str, hour: i64) -> String {
    format!(
        "COPY (SELECT {columns} FROM {} WHERE \"timestamp\" >= {} AND \"timestamp\" < {}) \
         TO STDOUT (FORMAT binary)",
        schema.qualify(kind.table()),
        ts_literal(hour),
        ts_literal(hour + HOUR)
    )
}

/// The non-empty slots of an hour as `aggregated_metrics_5min` rows.
pub(super) fn slot_rows<B>(
    hour: i64,
    slots: [Option<B>; SLOTS_PER_HOUR],
    render: impl Fn(B) -> (serde_json::Value, i64, Option<Vec<u8>>, Vec<u8>),
) -> Vec<SlotRow> {
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let (values, count, latency, users) = render(b?);
            Some(SlotRow {
                start: hour + i as i64 * SLOT,
                values,
                count,
                latency,
                users,
            })
        })
        .collect()
}
