//! What every client was told: one entry per request the harness sent, kept
//! for the reconciliation against the database.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::http::Failure;

/// Which kind of request an entry is; the checks differ per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A normal (non-metrics) route: must always answer, within the p99
    /// budget, whatever happens to the metrics database.
    Normal,
    /// A usage-event ingest `POST`: 202 means the events were queued.
    Ingest,
    /// The harness's own reads (`/api/demo/recorded`): recorded by the app
    /// like any request, so they are part of what must be stored.
    Control,
    /// A deliberately malformed request (hostile scenarios).
    Hostile,
}

/// One request and its outcome.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The `X-Correlation-ID` sent, when it was a valid one the app must
    /// reuse (`None`: none or an invalid one, so the app generates its own).
    pub(crate) id: Option<String>,
    /// What the request was.
    pub(crate) kind: Kind,
    /// The status, or why there was none.
    pub(crate) told: Result<u16, Failure>,
    /// Send to end of response.
    pub(crate) latency: Duration,
    /// When it was sent, since the ledger was made.
    pub(crate) sent_at: Duration,
    /// The `element_id`s of the usage events in the body (ingest only).
    pub(crate) events: Vec<String>,
}

/// Every entry of a scenario, shared by the load tasks.
#[derive(Debug)]
pub(crate) struct Ledger {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Ledger {
    /// An empty ledger whose clock starts now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Time since the ledger was made (what [`Entry::sent_at`] counts).
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Adds an entry.
    pub(crate) fn push(&self, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    /// A copy of every entry so far.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The 99th percentile (nearest rank) of `samples`, `None` when empty.
pub(crate) fn p99(samples: &mut [Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    Some(samples[rank - 1])
}

/// Latencies of the normal-route requests that got a response, sent in
/// `[from, to)`.
pub(crate) fn normal_latencies(entries: &[Entry], from: Duration, to: Duration) -> Vec<Duration> {
    entries
        .iter()
        .filter(|e| e.kind == Kind::Normal && e.told.is_ok())
        .filter(|e| e.sent_at >= from && e.sent_at < to)
        .map(|e| e.latency)
        .collect()
}

/// Normal-route requests sent before `until` that failed or answered 5xx:
/// the user-visible errors metrics must never cause.
pub(crate) fn normal_errors(entries: &[Entry], until: Duration) -> usize {
    entries
        .iter()
        .filter(|e| e.kind == Kind::Normal && e.sent_at < until)
        .filter(|e| !matches!(e.told, Ok(s) if s < 500))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(p99(&mut v), Some(ms(99)));
        assert_eq!(p99(&mut [ms(7)]), Some(ms(7)));
        assert_eq!(p99(&mut []), None);
    }

    #[test]
    fn errors_count_failures_and_5xx_before_the_cutoff() {
        let e = |told, at| Entry {
            id: None,
            kind: Kind::Normal,
            told,
            latency: ms(1),
            sent_at: ms(at),
            events: Vec::new(),
        };
        let entries = vec![
            e(Ok(200), 1),
            e(Ok(404), 2),
            e(Ok(503), 3),
            e(Err(Failure::Refused), 4),
            e(Err(Failure::Refused), 50),
        ];
        assert_eq!(normal_errors(&entries, ms(10)), 2);
        assert_eq!(normal_errors(&entries, ms(100)), 3);
        assert_eq!(normal_latencies(&entries, ms(0), ms(10)).len(), 3);
    }
}
