//! Reconciliation: what the clients were told (the [`Ledger`](crate::ledger)),
//! what the collectors counted (their exit lines) and what the database
//! holds, compared id by id.
//!
//! Request records are matched on `performance_metrics.correlation_id` (the
//! app reuses the `X-Correlation-ID` the harness sent), usage events on
//! `usage_events.element_id` (unique per event). The terms:
//!
//! * **dup**: extra rows of an id stored more than once (exactly-once broken);
//! * **phantom**: rows of ids the harness never sent (beyond the requests it
//!   sent without a reusable id, whose rows carry ids the app generated);
//! * **missing**: acknowledged records (a response for a request, a 202 for
//!   an event) with no row;
//! * **lost**: missing records the collectors did not count as dropped,
//!   `max(0, missing − dropped)`;
//! * **exact**: `stored == written` and `received = written + dropped +
//!   pending` summed over every app process, i.e. what is not stored is
//!   exactly what was counted dropped (or is still pending).

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use crate::counters::Counters;
use crate::error::Error;
use crate::ledger::{Entry, Kind};
use crate::pg::SCHEMA;

/// Rows per id in the raw tables.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored {
    /// `correlation_id` → rows (`NULL` ids under the empty string).
    pub(crate) requests: HashMap<String, u64>,
    /// `element_id` → rows (`NULL` ids under the empty string).
    pub(crate) events: HashMap<String, u64>,
}

impl Stored {
    /// Reads both raw tables (an app that never migrated leaves none: empty).
    pub(crate) async fn load(client: &Client) -> Result<Self, Error> {
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{SCHEMA}.performance_metrics")],
            )
            .await
            .map_err(Error::db("looking for the raw tables"))?
            .get(0);
        if !exists {
            return Ok(Self::default());
        }
        let count = |sql: String| async move {
            let rows = client
                .query(&sql, &[])
                .await
                .map_err(Error::db("counting stored rows per id"))?;
            Ok::<_, Error>(
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).unsigned_abs()))
                    .collect::<HashMap<_, _>>(),
            )
        };
        Ok(Self {
            requests: count(format!(
                "SELECT coalesce(correlation_id, ''), count(*) FROM {SCHEMA}.performance_metrics GROUP BY 1"
            ))
            .await?,
            events: count(format!(
                "SELECT coalesce(element_id, ''), count(*) FROM {SCHEMA}.usage_events GROUP BY 1"
            ))
            .await?,
        })
    }

    /// Request rows stored.
    pub(crate) fn request_rows(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Usage-event rows stored.
    pub(crate) fn event_rows(&self) -> u64 {
        self.events.values().sum()
    }
}

/// The outcome of one reconciliation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reconciliation {
    /// Requests in the ledger.
    pub(crate) sent: u64,
    /// Records acknowledged: requests answered plus events accepted.
    pub(crate) acked: u64,
    /// Rows stored, both tables.
    pub(crate) stored: u64,
    /// Extra rows of ids stored more than once.
    pub(crate) dup: u64,
    /// Rows of ids never sent.
    pub(crate) phantom: u64,
    /// Acknowledged records with no row.
    pub(crate) missing: u64,
    /// Missing and not counted dropped.
    pub(crate) lost: u64,
    /// Σ received over the app processes (`None`: a process did not report).
    pub(crate) received: Option<u64>,
    /// Σ written.
    pub(crate) written: Option<u64>,
    /// Σ dropped.
    pub(crate) dropped: Option<u64>,
    /// Σ pending (an exit line without `pending` counts 0).
    pub(crate) pending: Option<u64>,
}

impl Reconciliation {
    /// `received = written + dropped + pending` over every process
    /// (`None`: a term unknown).
    pub(crate) fn invariant(&self) -> Option<bool> {
        Some(self.received? == self.written? + self.dropped? + self.pending?)
    }

    /// `stored == written` (`None`: written unknown).
    pub(crate) fn stored_is_written(&self) -> Option<bool> {
        Some(self.stored == self.written?)
    }

    /// `key=value` figures for the RESULT line.
    pub(crate) fn figures(&self) -> Vec<(String, String)> {
        let opt = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        vec![
            ("sent".into(), self.sent.to_string()),
            ("acked".into(), self.acked.to_string()),
            ("stored".into(), self.stored.to_string()),
            ("received".into(), opt(self.received)),
            ("written".into(), opt(self.written)),
            ("dropped".into(), opt(self.dropped)),
            ("pending".into(), opt(self.pending)),
            ("dup".into(), self.dup.to_string()),
            ("lost".into(), self.lost.to_string()),
            ("missing".into(), self.missing.to_string()),
            ("phantom".into(), self.phantom.to_string()),
        ]
    }
}

/// Compares `entries` and `stored`, with the final counters of every app
/// process of the scenario (`None` for one that never reported).
pub(crate) fn reconcile(
    entries: &[Entry],
    stored: &Stored,
    counters: &[Option<Counters>],
) -> Reconciliation {
    let sent_ids: HashSet<&str> = entries.iter().filter_map(|e| e.id.as_deref()).collect();
    // Requests sent without a reusable id that the app answered: each may
    // have a row under an id the app generated.
    let anonymous = entries
        .iter()
        .filter(|e| e.id.is_none() && e.told.is_ok())
        .count() as u64;
    let sent_events: HashSet<&str> = entries
        .iter()
        .flat_map(|e| e.events.iter().map(String::as_str))
        .collect();

    let mut r = Reconciliation {
        sent: entries.len() as u64,
        stored: stored.request_rows() + stored.event_rows(),
        ..Reconciliation::default()
    };
    for (_, n) in stored.requests.iter().chain(&stored.events) {
        r.dup += n.saturating_sub(1);
    }
    let unknown_requests: u64 = stored
        .requests
        .iter()
        .filter(|(id, _)| !sent_ids.contains(id.as_str()))
        .map(|(_, n)| n)
        .sum();
    let unknown_events: u64 = stored
        .events
        .iter()
        .filter(|(id, _)| !sent_events.contains(id.as_str()))
        .map(|(_, n)| n)
        .sum();
    r.phantom = unknown_requests.saturating_sub(anonymous) + unknown_events;

    for e in entries.iter().filter(|e| e.kind != Kind::Hostile) {
        let Ok(status) = e.told else { continue };
        if let Some(id) = &e.id {
            r.acked += 1;
            if !stored.requests.contains_key(id) {
                r.missing += 1;
            }
        }
        if status == 202 {
            for ev in &e.events {
                r.acked += 1;
                if !stored.events.contains_key(ev) {
                    r.missing += 1;
                }
            }
        }
    }

    let sum = |f: fn(&Counters) -> Option<u64>| -> Option<u64> {
        counters.iter().map(|c| c.as_ref().and_then(f)).sum()
    };
    r.received = sum(Counters::received);
    r.written = sum(Counters::written);
    r.dropped = sum(Counters::dropped);
    r.pending = sum(|c| Some(c.pending().unwrap_or(0)));
    if counters.iter().any(Option::is_none) {
        r.pending = None;
    }
    r.lost = r.missing.saturating_sub(r.dropped.unwrap_or(0));
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::Failure;

    fn entry(id: &str, told: Result<u16, Failure>, events: &[&str]) -> Entry {
        Entry {
            id: Some(id.to_owned()),
            kind: if events.is_empty() {
                Kind::Normal
            } else {
                Kind::Ingest
            },
            told,
            latency: Duration::ZERO,
            sent_at: Duration::ZERO,
            events: events.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn stored(requests: &[(&str, u64)], events: &[(&str, u64)]) -> Stored {
        let map = |v: &[(&str, u64)]| v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
        Stored {
            requests: map(requests),
            events: map(events),
        }
    }

    #[test]
    fn a_clean_run_reconciles() {
        let entries = [
            entry("a", Ok(200), &[]),
            entry("b", Ok(202), &["e1", "e2"]),
            entry("c", Err(Failure::Refused), &[]),
        ];
        let db = stored(&[("a", 1), ("b", 1)], &[("e1", 1), ("e2", 1)]);
        let exit = Counters::parse_line("received=4 written=4 dropped=0");
        let r = reconcile(&entries, &db, &[Some(exit)]);
        assert_eq!(
            (r.acked, r.stored, r.dup, r.lost, r.phantom),
            (4, 4, 0, 0, 0)
        );
        assert_eq!(r.invariant(), Some(true));
        assert_eq!(r.stored_is_written(), Some(true));
    }

    #[test]
    fn finds_duplicates_phantoms_and_losses() {
        let entries = [entry("a", Ok(200), &[]), entry("b", Ok(202), &["e1", "e2"])];
        // a twice, e2 never, x never sent.
        let db = stored(&[("a", 2), ("b", 1), ("x", 1)], &[("e1", 1)]);
        let exit = Counters::parse_line("received=4 written=5 dropped=0");
        let r = reconcile(&entries, &db, &[Some(exit)]);
        assert_eq!(r.dup, 1);
        assert_eq!(r.phantom, 1);
        assert_eq!(r.missing, 1);
        assert_eq!(r.lost, 1, "missing and not counted dropped");
        assert_eq!(r.invariant(), Some(false));
    }

    #[test]
    fn counted_drops_are_not_losses() {
        let entries = [entry("a", Ok(200), &[]), entry("b", Ok(202), &["e1"])];
        let db = stored(&[("a", 1), ("b", 1)], &[]);
        let exit = Counters::parse_line("received=3 written=2 dropped=1 pending=0");
        let r = reconcile(&entries, &db, &[Some(exit)]);
        assert_eq!((r.missing, r.lost), (1, 0));
        assert_eq!(r.invariant(), Some(true));
        assert_eq!(r.stored_is_written(), Some(true));
    }

    #[test]
    fn a_process_that_never_reported_leaves_the_sums_unknown() {
        let r = reconcile(&[], &Stored::default(), &[None]);
        assert_eq!(r.invariant(), None);
        assert_eq!(r.stored_is_written(), None);
    }
}
