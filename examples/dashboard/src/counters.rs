//! The collector's counters as the example reports them: in
//! `GET /api/demo/recorded` and in the line printed at exit, which the fault
//! harness parses ([`exit_line`], after [`shutdown_and_count`]). Both come
//! from [`counters`], so they cannot disagree on what they list.

use std::fmt::Write as _;
use std::time::Duration;

use app_metrics::collector::CollectorStats;
use app_metrics::{AppMetrics, ShutdownError};
use serde_json::{Map, Value};

/// What the exit line starts with.
pub const EXIT_LINE_PREFIX: &str = "collector flushed:";

/// Every counter of `stats`, by name: `received`, `written`, `pending`,
/// `dropped` (the total) and each `dropped_*` reason, then `retries`,
/// `batches` and `pending_bytes` (bytes held now, against the memory
/// budget; not a record count). The names are the [`CollectorStats`] field
/// names.
pub fn counters(s: &CollectorStats) -> [(&'static str, u64); 13] {
    [
        ("received", s.received),
        ("written", s.written),
        ("pending", s.pending),
        ("dropped", s.dropped()),
        ("dropped_queue_full", s.dropped_queue_full),
        ("dropped_memory_budget", s.dropped_memory_budget),
        ("dropped_retries_exhausted", s.dropped_retries_exhausted),
        ("dropped_shutdown", s.dropped_shutdown),
        ("dropped_rejected", s.dropped_rejected),
        ("dropped_closed", s.dropped_closed),
        ("retries", s.retries),
        ("batches", s.batches),
        ("pending_bytes", s.pending_bytes),
    ]
}

/// [`counters`] as a JSON object.
pub fn counters_json(s: &CollectorStats) -> Value {
    let map: Map<String, Value> = counters(s)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    Value::Object(map)
}

/// How the collector's shutdown ended, as one word for the exit line.
pub fn outcome(result: &Result<CollectorStats, ShutdownError>) -> &'static str {
    match result {
        Ok(_) => "flushed",
        Err(ShutdownError::DeadlineExceeded(_)) => "deadline_exceeded",
        Err(ShutdownError::AlreadyShutdown) => "already_shutdown",
        Err(ShutdownError::WorkerGone) => "worker_gone",
        Err(_) => "error",
    }
}

/// Shuts `metrics` down with `deadline` and returns the final counters with
/// the [`outcome`] word, waiting at most `deadline + grace` for the shutdown
/// itself (it also stops the PostgreSQL store's maintenance first, which
/// the collector's deadline does not bound); past that the outcome is
/// `timed_out` and the counters are those of the moment (with what was
/// left in `pending`). The counters are known whatever happens: a failed
/// shutdown still leaves them in [`AppMetrics::stats`]. Errors are logged.
pub async fn shutdown_and_count<I>(
    metrics: &AppMetrics<I>,
    deadline: Duration,
    grace: Duration,
) -> (CollectorStats, &'static str) {
    match tokio::time::timeout(deadline + grace, metrics.shutdown(deadline)).await {
        Ok(result) => {
            let stats = match &result {
                Ok(stats) | Err(ShutdownError::DeadlineExceeded(stats)) => *stats,
                Err(_) => metrics.stats(),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "collector shutdown");
            }
            (stats, outcome(&result))
        }
        Err(_) => {
            tracing::error!(
                waited_ms = (deadline + grace).as_millis(),
                "collector shutdown did not return in time; exiting with what is left counted as pending"
            );
            (metrics.stats(), "timed_out")
        }
    }
}

/// The exit line: [`EXIT_LINE_PREFIX`], then every counter as `key=value`
/// separated by single spaces, then `outcome=<word>`. Nothing in it
/// contains a space or `=` besides the separators, so
/// `line.split(' ').skip(2)` and `split_once('=')` parse it.
///
/// ```
/// use app_metrics::collector::CollectorStats;
/// let mut s = CollectorStats::default();
/// (s.received, s.written, s.dropped_shutdown) = (5, 3, 2);
/// let line = example_dashboard::counters::exit_line(&s, "deadline_exceeded");
/// assert!(line.starts_with("collector flushed: received=5 written=3 pending=0 dropped=2 "));
/// assert!(line.contains(" dropped_shutdown=2 "));
/// assert!(line.ends_with(" batches=0 pending_bytes=0 outcome=deadline_exceeded"));
/// ```
pub fn exit_line(s: &CollectorStats, outcome: &str) -> String {
    let mut line = String::from(EXIT_LINE_PREFIX);
    // Writing to a String cannot fail.
    for (k, v) in counters(s) {
        let _ = write!(line, " {k}={v}");
    }
    let _ = write!(line, " outcome={outcome}");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CollectorStats {
        let mut s = CollectorStats::default();
        (
            s.received,
            s.written,
            s.pending,
            s.dropped_queue_full,
            s.dropped_memory_budget,
            s.dropped_retries_exhausted,
            s.dropped_shutdown,
            s.dropped_rejected,
            s.dropped_closed,
            s.retries,
            s.batches,
            s.pending_bytes,
        ) = (132, 60, 9, 1, 32, 2, 4, 8, 16, 3, 7, 4096);
        s
    }

    #[test]
    fn counters_are_distinct_and_sum_up() {
        let c = counters(&sample());
        let names: std::collections::HashSet<_> = c.iter().map(|(k, _)| *k).collect();
        assert_eq!(names.len(), c.len(), "{c:?}");
        let get = |name| c.iter().find(|(k, _)| *k == name).unwrap().1;
        assert_eq!(get("dropped"), 63);
        let by_reason: u64 = c
            .iter()
            .filter(|(k, _)| k.starts_with("dropped_"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(by_reason, get("dropped"), "every reason is listed");
        assert_eq!(
            get("received"),
            get("written") + get("dropped") + get("pending")
        );
    }

    #[test]
    fn exit_line_parses_back_to_the_counters() {
        let s = sample();
        let line = exit_line(&s, "flushed");
        let rest = line.strip_prefix(EXIT_LINE_PREFIX).unwrap();
        let pairs: Vec<(&str, &str)> = rest
            .split(' ')
            .skip(1)
            .map(|kv| kv.split_once('=').unwrap())
            .collect();
        let mut expected: Vec<(&str, String)> = counters(&s)
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        expected.push(("outcome", "flushed".to_owned()));
        let got: Vec<(&str, String)> = pairs.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn json_has_every_counter() {
        let s = sample();
        let v = counters_json(&s);
        for (k, n) in counters(&s) {
            assert_eq!(v[k], n, "{k}");
        }
        assert_eq!(v.as_object().unwrap().len(), counters(&s).len());
    }

    #[test]
    fn outcomes_name_the_shutdown_error() {
        let s = sample();
        assert_eq!(outcome(&Ok(s)), "flushed");
        assert_eq!(
            outcome(&Err(ShutdownError::DeadlineExceeded(s))),
            "deadline_exceeded"
        );
        assert_eq!(outcome(&Err(ShutdownError::WorkerGone)), "worker_gone");
        assert_eq!(
            outcome(&Err(ShutdownError::AlreadyShutdown)),
            "already_shutdown"
        );
    }
}
