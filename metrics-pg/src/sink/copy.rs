//! The rows of one chunk, streamed with binary `COPY ... FROM STDIN` inside
//! the chunk's transaction.

use std::pin::pin;

use deadpool_postgres::Transaction;
use metrics_core::Batch;
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
            for r in &batch.requests()[chunk.start..chunk.end] {
                if !request_is_valid(r) {
                    continue;
                }
                let id = Uuid::from_bytes(metrics_core::uuid_v7_at(r.timestamp));
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
            for e in &batch.usage_events()[chunk.start..chunk.end] {
                if !usage_is_valid(e) {
                    continue;
                }
                let id = Uuid::from_bytes(metrics_core::uuid_v7_at(e.timestamp));
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
