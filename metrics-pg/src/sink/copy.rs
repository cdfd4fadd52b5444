//! The rows of one chunk, streamed with binary `COPY ... FROM STDIN` inside
//! the chunk's transaction, and the ids they are stored under.

use std::pin::pin;
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::Transaction;
use metrics_core::{Batch, BatchId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use uuid::Uuid;

use super::progress::{Chunk, Table};
use crate::error::Error;
use crate::tables::{REQUEST_TYPES, USAGE_TYPES, request_is_valid, usage_is_valid};

/// Copies the valid rows of `chunk` with `sql` (the table's `COPY`
/// statement) inside `tx`; nothing is committed here.
pub(super) async fn copy_rows(
    tx: &Transaction<'_>,
    sql: &str,
    batch: &Batch,
    batch_id: BatchId,
    chunk: Chunk,
) -> Result<(), Error> {
    let types = match chunk.table {
        Table::Requests => &REQUEST_TYPES[..],
        Table::Usage => &USAGE_TYPES[..],
    };
    let statement = tx
        .prepare_cached(sql)
        .await
        .map_err(|e| Error::db("preparing COPY", e))?;
    let sink = tx
        .copy_in(&statement)
        .await
        .map_err(|e| Error::db("starting COPY", e))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    match chunk.table {
        Table::Requests => {
            for (i, r) in batch.requests()[chunk.start..chunk.end].iter().enumerate() {
                if !request_is_valid(r) {
                    continue;
                }
                let id = row_id(batch_id, Table::Requests, chunk.start + i, r.timestamp);
                let status = i32::from(r.status);
                let error_type = r.error_type.as_ref().map(|e| e.as_str());
                writer
                    .as_mut()
                    .write(&[
                        &id,
                        &r.timestamp,
                        &r.route.as_str(),
                        &r.method.as_str(),
                        &status,
                        &r.response_time_ms,
                        &r.user_id.as_ref().map(|u| u.as_str()),
                        &error_type.as_deref(),
                        &r.correlation_id.as_ref().map(|c| c.as_str()),
                    ])
                    .await
                    .map_err(|e| Error::db("writing COPY rows", e))?;
            }
        }
        Table::Usage => {
            for (i, e) in batch.usage_events()[chunk.start..chunk.end]
                .iter()
                .enumerate()
            {
                if !usage_is_valid(e) {
                    continue;
                }
                let id = row_id(batch_id, Table::Usage, chunk.start + i, e.timestamp);
                writer
                    .as_mut()
                    .write(&[
                        &id,
                        &e.timestamp,
                        &e.received_at,
                        &e.event_type.as_str(),
                        &e.user_id.as_str(),
                        &e.page_name.as_deref(),
                        &e.element_id.as_deref(),
                        &e.success,
                        &e.metadata,
                    ])
                    .await
                    .map_err(|err| Error::db("writing COPY rows", err))?;
            }
        }
    }
    writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| Error::db("finishing COPY", e))
        .map(drop)
}

/// The id record `index` of `table` in batch `batch_id` is stored under: a
/// UUIDv7 whose timestamp is the record's (ids sort like the rows' times,
/// as before) and whose random bits are the batch id's with the record's
/// place mixed in. So ids stay unique (batch ids are random, places within
/// a batch distinct) and a retry can look a row up by the id it would have:
/// the commit probe (`commit.rs`) finds a chunk's first row by it, whatever
/// happened to transaction ids meanwhile, and rows moved between partitions
/// keep it.
pub(super) fn row_id(batch_id: BatchId, table: Table, index: usize, at: SystemTime) -> Uuid {
    let mut bytes = batch_id.to_bytes();
    // The record's 48-bit millisecond timestamp (0 before the epoch), as
    // `uuid_v7_at` lays it out; the version and random bits of the batch id
    // after it.
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    // Below the variant bits: the table in bit 47, the index in bits 0..47
    // (a batch never holds 2^47 records).
    let place = (u64::from(table == Table::Usage) << 47) | (index as u64 & ((1 << 47) - 1));
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    bytes[8..].copy_from_slice(&(u64::from_be_bytes(low) ^ place).to_be_bytes());
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[test]
    fn row_ids_are_v7_unique_within_and_across_batches_and_stable() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let (a, b) = (BatchId::generate(), BatchId::generate());
        let mut seen = HashSet::new();
        for batch in [a, b] {
            for table in [Table::Requests, Table::Usage] {
                for i in 0..1_000 {
                    let id = row_id(batch, table, i, at);
                    assert_eq!(id.get_version_num(), 7);
                    assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
                    assert_eq!(
                        id.get_timestamp().unwrap().to_unix(),
                        (1_700_000_000, 123_000_000)
                    );
                    assert!(seen.insert(id), "duplicate id {id}");
                }
            }
        }
        assert_eq!(
            row_id(a, Table::Usage, 7, at),
            row_id(a, Table::Usage, 7, at)
        );
    }
}
