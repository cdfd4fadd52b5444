//! Whether a `COMMIT` whose answer never came took effect.
//!
//! A connection can break after the server committed and before the client
//! read the acknowledgement, and a dropped write future can leave a `COMMIT`
//! on the wire. Resending the chunk then duplicates it; dropping it loses it.
//! So each write transaction names itself (`txid_current()`) before its
//! `COMMIT` is sent, and an unanswered chunk is resolved on another
//! connection with `txid_status(xid)`, as the PostgreSQL documentation
//! ("Transaction ID and snapshot functions") describes for this case:
//!
//! * `committed` → confirmed through the chunk's rows (below), then stored;
//! * `aborted` → it is not: write it again;
//! * `in progress` → the old session is still finishing (its `COMMIT` may be
//!   queued): unknown for now, ask again on the next attempt;
//! * `NULL` (the xid is older than the commit log kept) → the rows tell;
//! * an error "transaction ID is in the future" → this server never reached
//!   that xid (a restore or a failover to a server that lacks it), so the
//!   chunk is not stored here: write it again.
//!
//! Why `committed` is confirmed: after crash recovery (a postmaster
//! restart, or the reinitialisation after a backend crash, which keeps the
//! postmaster and its start time) the server may hand an xid out again if
//! nothing of the first transaction reached the WAL on disk, and the
//! status would then be another transaction's. So the probe looks for the
//! chunk's first row by its deterministic id (see `copy::row_id`), its key
//! and timestamp (indexed): found → committed, absent → not stored. Rows
//! moved between partitions keep their id. `aborted` needs no check: had
//! the chunk committed, its xid would be durable and not reused, and its
//! status `committed`. The probe costs one indexed lookup per lost
//! acknowledgement, a rare event.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};
use uuid::Uuid;

use super::progress::Txn;
use crate::error::Error;

/// What became of an in-doubt transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The chunk is stored.
    Committed,
    /// The chunk is not stored.
    Aborted,
    /// Not known yet (the transaction is still running).
    Unknown,
}

/// One row of a chunk, to look for: `sql` selects whether a row with key
/// `$1`, timestamp `$2` and id `$3` exists.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe<'a> {
    pub(super) sql: &'a str,
    pub(super) key: &'a str,
    pub(super) at: SystemTime,
    pub(super) id: Uuid,
}

/// Sets the transaction's statement timeout and names it, in one round
/// trip; call it first in the transaction.
pub(super) async fn begin_tracked(tx: &Transaction<'_>, set_timeout: &str) -> Result<Txn, Error> {
    let messages = tx
        .simple_query(&format!("{set_timeout}; SELECT txid_current()::text"))
        .await
        .map_err(|e| Error::db("naming a write transaction", e))?;
    let row = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let txn = row.and_then(|row| {
        Some(Txn {
            xid: row.get(0)?.parse().ok()?,
        })
    });
    txn.ok_or(Error::UnexpectedAnswer {
        context: "naming a write transaction",
        reason: "txid_current() returned no usable row",
    })
}

/// Resolves `txn` on `client`, a connection other than the one that sent
/// its `COMMIT`; `probe` finds one of its rows when needed (`None` for a
/// chunk without rows, whose outcome does not matter).
pub(super) async fn resolve(
    client: &Client,
    txn: &Txn,
    probe: Option<Probe<'_>>,
) -> Result<Outcome, Error> {
    let row = match client
        .query_one("SELECT txid_status($1)", &[&txn.xid])
        .await
    {
        Ok(row) => row,
        // "transaction ID ... is in the future": never reached on this server.
        Err(e) if e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) => {
            return Ok(Outcome::Aborted);
        }
        Err(e) => return Err(Error::db("asking a transaction's status", e)),
    };
    let status: Option<&str> = row.get(0);
    match status {
        Some("aborted") => Ok(Outcome::Aborted),
        Some("in progress") => Ok(Outcome::Unknown),
        // `committed`, NULL, or a status this code does not know: the rows
        // tell.
        _ => match probe {
            None => Ok(Outcome::Aborted),
            Some(p) => rows_exist(client, p).await,
        },
    }
}

async fn rows_exist(client: &Client, probe: Probe<'_>) -> Result<Outcome, Error> {
    let found: bool = client
        .query_one(probe.sql, &[&probe.key, &probe.at, &probe.id])
        .await
        .map_err(|e| Error::db("looking for the rows of an in-doubt transaction", e))?
        .get(0);
    Ok(if found {
        Outcome::Committed
    } else {
        Outcome::Aborted
    })
}
