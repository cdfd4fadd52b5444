//! Shared helpers of the collector integration tests, and a capture of the
//! collector's log lines.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics_core::{Method, RequestRecord, RetryPolicy, Route};
use tracing::field::Field;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Metadata, Subscriber};

/// A request record whose status carries `i` (to check order and identity).
pub fn req(i: u16) -> RequestRecord {
    RequestRecord::new(
        SystemTime::UNIX_EPOCH,
        Route::from_static("/items/{id}"),
        Method::GET,
        i,
        Duration::from_millis(1),
    )
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deterministic policy: 100 ms doubling to 1 s, no jitter.
pub fn test_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(max_attempts)
        .with_initial(ms(100))
        .with_max(ms(1_000))
        .with_jitter(0.0)
        .with_deadline(Duration::from_secs(60))
}

/// Lets every ready task run without letting paused time advance (time only
/// auto-advances when the runtime has nothing to run, and this task stays
/// runnable).
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Every event's level and message.
///
/// metrics-core has no tracing-subscriber dev-dependency, so the few methods a
/// `Subscriber` needs are written out here. The tests run on a current-thread
/// runtime, so the thread-local default sees the worker task's events too.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

impl Subscriber for Captured {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut |field: &Field, value: &dyn std::fmt::Debug| {
            if field.name() == "message" {
                message = format!("{value:?}");
            }
        });
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Captured {
    /// The WARN-level messages containing `needle`.
    pub fn warnings(&self, needle: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, m)| *l == Level::WARN && m.contains(needle))
            .map(|(_, m)| m.clone())
            .collect()
    }

    pub fn all_warnings(&self) -> Vec<String> {
        self.warnings("")
    }
}

/// Captures this thread's events until the guard is dropped.
pub fn capture() -> (Captured, DefaultGuard) {
    let c = Captured::default();
    let guard = tracing::subscriber::set_default(c.clone());
    (c, guard)
}
