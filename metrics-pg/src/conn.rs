//! Connections, for the sink, the queries and the jobs alike: taking one
//! from the pool, the read and write transactions with their statement
//! timeout and client-side deadline, and the one rule for whether a
//! connection that saw an error goes back to the pool.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError, Transaction};
use tokio_postgres::IsolationLevel;

use crate::error::Error;

/// Added to a statement timeout for the client-side deadline of the work
/// around it: the server gives up first; this catches a peer that vanished
/// without closing the socket.
pub(crate) const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// How often a connection found closed right after leaving the pool is
/// replaced before giving up.
const MAX_CLOSED_CONNECTIONS_SKIPPED: usize = 3;

/// A pooled connection within `wait`, skipping connections that closed
/// while idle (a server restart).
///
/// The timeout is ours rather than the pool's: a pool built without a
/// runtime has none.
pub(crate) async fn acquire(pool: &Pool, wait: Duration) -> Result<Object, Error> {
    for _ in 0..MAX_CLOSED_CONNECTIONS_SKIPPED {
        let conn = match tokio::time::timeout(wait, pool.get()).await {
            Err(_) | Ok(Err(PoolError::Timeout(_))) => return Err(Error::PoolTimeout(wait)),
            Ok(Err(e)) => return Err(Error::Pool(e)),
            Ok(Ok(conn)) => conn,
        };
        if conn.is_closed() {
            discard(conn);
            continue;
        }
        return Ok(conn);
    }
    Err(Error::PoolTimeout(wait))
}

/// A pooled connection if one is free within `wait`, else `None` at once
/// when every connection is taken and none may be opened: for optional work
/// beside a caller that has a connection already.
pub(crate) async fn try_acquire_spare(pool: &Pool, wait: Duration) -> Option<Object> {
    let status = pool.status();
    if status.available == 0 && status.size >= status.max_size {
        return None;
    }
    match tokio::time::timeout(wait, pool.get()).await {
        Ok(Ok(conn)) if !conn.is_closed() => Some(conn),
        Ok(Ok(conn)) => {
            discard(conn);
            None
        }
        _ => None,
    }
}

/// The statement that sets `statement_timeout` for the current transaction
/// (at least 1 ms: 0 would turn it off).
pub(crate) fn set_statement_timeout(limit: Duration) -> String {
    format!("SET LOCAL statement_timeout = {}", limit.as_millis().max(1))
}

/// A read-only `REPEATABLE READ` transaction on `conn` (one snapshot for
/// every statement of a query) with `statement_timeout` set to `limit`.
pub(crate) async fn read_transaction(
    conn: &mut Object,
    limit: Duration,
) -> Result<Transaction<'_>, Error> {
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| Error::db("starting a read-only transaction", e))?;
    tx.batch_execute(&set_statement_timeout(limit))
        .await
        .map_err(|e| Error::db("setting statement_timeout", e))?;
    Ok(tx)
}

/// Runs `work` under the client-side deadline of a statement timeout of
/// `limit` (`limit` plus [`CLIENT_DEADLINE_MARGIN`]); past it,
/// [`Error::Timeout`] with the deadline.
pub(crate) async fn within_deadline<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let deadline = limit + CLIENT_DEADLINE_MARGIN;
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_elapsed) => Err(Error::Timeout(deadline)),
    }
}

/// Whether a connection may go back to the pool after `error`: only when
/// the server refused the data (SQLSTATE class 22 or 23). The statement
/// then failed cleanly and the rollback leaves the session as it was.
/// Anything else may leave it in an unknown state — broken (I/O error,
/// closed), abandoned mid-statement (client deadline), or, for a `COPY`
/// refused before its first row or cancelled by the statement timeout,
/// closing shortly after as the abort and the rollback race — so it is
/// closed: that costs one reconnect, keeping it would fail the next user.
pub(crate) fn keeps_connection(error: &Error) -> bool {
    error.is_data_error()
}

/// Hands `conn` back to the pool or closes it, by [`keeps_connection`].
pub(crate) fn release_after_error(conn: Object, error: &Error) {
    if !keeps_connection(error) {
        discard(conn);
    }
}

/// Closes `conn` instead of handing it back to the pool.
pub(crate) fn discard(conn: Object) {
    drop(Object::take(conn));
}

/// A pooled connection that is closed, not handed back, unless
/// [`keep`](Self::keep) is called: the future using it may be dropped at any
/// await (a caller's timeout), leaving the session mid-statement, and only
/// closing it makes the server roll back what was not committed.
///
/// Dropped without [`keep`](Self::keep) or [`discard`](Self::discard), it
/// also cancels the session's running statement ([`cancel_running`]).
#[derive(Debug)]
pub(crate) struct DiscardOnDrop(Option<Object>);

impl DiscardOnDrop {
    pub(crate) fn new(conn: Object) -> Self {
        Self(Some(conn))
    }

    /// The connection.
    pub(crate) fn get(&mut self) -> &mut Object {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("DiscardOnDrop used after keep"))
    }

    /// The work finished cleanly: the connection goes back to the pool.
    pub(crate) fn keep(mut self) {
        drop(self.0.take());
    }

    /// The work failed with an answer from the server (nothing is running
    /// on the session): close the connection.
    pub(crate) fn discard(mut self) {
        if let Some(conn) = self.0.take() {
            discard(conn);
        }
    }
}

impl Drop for DiscardOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            cancel_running(&conn);
            discard(conn);
        }
    }
}

/// Asks the server to cancel whatever `conn`'s session is running, in a
/// task of its own (best effort, within [`CANCEL_TIMEOUT`]).
///
/// Closing a connection is not enough when its work was abandoned: a
/// backend waiting for a lock, or running a long statement, does not read
/// its socket, so it would notice the close only when the statement ends,
/// holding its locks (a job's advisory lock among them) until then.
pub(crate) fn cancel_running(conn: &Object) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let token = conn.cancel_token();
    drop(runtime.spawn(async move {
        let _ =
            tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(tokio_postgres::NoTls)).await;
    }));
}

/// How long a cancel request may take to be delivered.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeout_is_never_off() {
        assert_eq!(
            set_statement_timeout(Duration::ZERO),
            "SET LOCAL statement_timeout = 1"
        );
        assert_eq!(
            set_statement_timeout(Duration::from_secs(10)),
            "SET LOCAL statement_timeout = 10000"
        );
    }

    #[test]
    fn only_data_errors_keep_the_connection() {
        assert!(!keeps_connection(&Error::Timeout(Duration::from_secs(1))));
        assert!(!keeps_connection(&Error::PoolTimeout(Duration::from_secs(
            1
        ))));
    }

    #[tokio::test]
    async fn a_refused_row_keeps_the_connection_and_a_refused_statement_does_not() {
        let db = test_support::TestDb::new().await;
        let pool = crate::create_pool(db.url(), 1).unwrap();
        let conn = acquire(&pool, Duration::from_secs(10)).await.unwrap();
        let refused = conn
            .batch_execute("SELECT 1 / 0")
            .await
            .map_err(|e| Error::db("dividing", e))
            .unwrap_err();
        assert!(keeps_connection(&refused), "{refused}");
        release_after_error(conn, &refused);
        assert_eq!(pool.status().size, 1, "a data error keeps the connection");

        let conn = acquire(&pool, Duration::from_secs(10)).await.unwrap();
        let missing = conn
            .batch_execute("SELECT * FROM no_such_table")
            .await
            .map_err(|e| Error::db("reading", e))
            .unwrap_err();
        assert!(!keeps_connection(&missing), "{missing}");
        release_after_error(conn, &missing);
        assert_eq!(pool.status().size, 0, "the connection was closed");
    }
}
