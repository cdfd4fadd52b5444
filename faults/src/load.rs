//! The open-loop load generator: requests start at a fixed rate whatever
//! the app's latency (a closed loop would slow down with the app and hide
//! the very stalls we look for), with a bound on requests in flight; a
//! request that finds the bound reached is not sent and is counted as shed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::http::{self, Request};
use crate::ledger::{Entry, Kind, Ledger};

/// The identity every load request carries (`X-Forwarded-Email`).
pub(crate) const LOAD_USER: &str = "load@example.com";

/// The ingest route.
pub(crate) const INGEST_PATH: &str = "/api/v1/metrics/usage-events";

/// The shape of the load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSpec {
    /// Requests started per second (normal and ingest together).
    pub(crate) rate: u32,
    /// One request in `ingest_every` is a usage-event ingest (0: none).
    pub(crate) ingest_every: u32,
    /// Usage events per ingest request.
    pub(crate) events_per_post: usize,
    /// Bytes of filler in each event's `metadata` (heavy events).
    pub(crate) metadata_bytes: usize,
    /// Requests in flight at most.
    pub(crate) concurrency: usize,
    /// Per-request timeout.
    pub(crate) timeout: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            rate: 100,
            ingest_every: 10,
            events_per_post: 5,
            metadata_bytes: 0,
            concurrency: 64,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A running load; [`Load::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<LoadSummary>,
}

/// What the generator did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LoadSummary {
    /// Requests sent.
    pub(crate) sent: u64,
    /// Requests not sent because `concurrency` were in flight.
    pub(crate) shed: u64,
}

impl Load {
    /// Starts sending to `addr`, recording every request in `ledger`.
    pub(crate) fn start(addr: SocketAddr, spec: LoadSpec, ledger: Arc<Ledger>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(addr, spec, ledger, stopped));
        Self { stop, task }
    }

    /// Stops starting requests and waits for those in flight.
    pub(crate) async fn stop(self) -> LoadSummary {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

async fn run(
    addr: SocketAddr,
    spec: LoadSpec,
    ledger: Arc<Ledger>,
    mut stopped: watch::Receiver<bool>,
) -> LoadSummary {
    let period = Duration::from_secs(1) / spec.rate.max(1);
    let permits = Arc::new(Semaphore::new(spec.concurrency));
    let mut summary = LoadSummary::default();
    let mut next = tokio::time::Instant::now();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        next += period;
        n += 1;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            summary.shed += 1;
            continue;
        };
        summary.sent += 1;
        let ingest = spec.ingest_every > 0 && n % u64::from(spec.ingest_every) == 0;
        let ledger = Arc::clone(&ledger);
        tokio::spawn(async move {
            one(addr, &spec, n, ingest, &ledger).await;
            drop(permit);
        });
    }
    // Wait for what is in flight: its outcome belongs to the ledger.
    let _ = permits.acquire_many(spec.concurrency as u32).await;
    summary
}

async fn one(addr: SocketAddr, spec: &LoadSpec, n: u64, ingest: bool, ledger: &Ledger) {
    let id = new_id();
    let (req, kind, events) = if ingest {
        let events: Vec<String> = (0..spec.events_per_post)
            .map(|_| format!("e-{}", uuid::Uuid::new_v4()))
            .collect();
        let body = ingest_body(&events, spec.metadata_bytes);
        let req = Request::post(INGEST_PATH, "application/json", body.into_bytes());
        (req, Kind::Ingest, events)
    } else {
        let req = Request::get(format!("/api/demo/items/{}", n % 1000));
        (req, Kind::Normal, Vec::new())
    };
    let req = req
        .header("X-Correlation-ID", &id)
        .header("X-Forwarded-Email", LOAD_USER);
    let sent_at = ledger.elapsed();
    let t0 = Instant::now();
    let told = http::send(addr, &req, spec.timeout).await;
    let latency = t0.elapsed();
    ledger.push(Entry {
        id: Some(id),
        kind,
        told: told.map(|r| r.status),
        latency,
        sent_at,
        events,
    });
}

/// A fresh correlation id the app accepts and reuses (a UUID: visible
/// ASCII, well under the 128-byte limit).
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An RFC 3339 timestamp of now, as the ingest contract wants it.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// `t` in RFC 3339.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An ingest body: one `page_view` per element id, now, with
/// `metadata_bytes` of filler in each event's metadata.
pub(crate) fn ingest_body(element_ids: &[String], metadata_bytes: usize) -> String {
    let ts = now_rfc3339();
    let filler = "x".repeat(metadata_bytes);
    let events: Vec<serde_json::Value> = element_ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "event_type": "page_view",
                "timestamp": ts,
                "page_name": "/faults",
                "element_id": id,
                "success": true,
                "metadata": if metadata_bytes > 0 { serde_json::json!({"pad": filler}) } else { serde_json::json!({}) },
            })
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_body_carries_each_element_id_once() {
        let ids = vec!["e-1".to_owned(), "e-2".to_owned()];
        let v: serde_json::Value = serde_json::from_str(&ingest_body(&ids, 10)).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["element_id"], "e-2");
        assert_eq!(events[0]["metadata"]["pad"].as_str().unwrap().len(), 10);
        assert!(events[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn ids_are_unique_and_valid_correlation_ids() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(a.len() <= 128 && a.bytes().all(|c| c.is_ascii_graphic()));
    }
}
