//! Shared helpers of the collector integration tests, and a capture of the
//! collector's log lines.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics_core::{Method, RequestRecord, RetryPolicy, Route};
use tracing::field::Field;
use tracing::span::{Attributes, Id, Record};
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

/// Every event's level, message and fields, of the threads that asked for
/// them.
///
/// metrics-core has no tracing-subscriber dev-dependency, so the few methods a
/// `Subscriber` needs are written out here. One subscriber is installed as
/// the process-wide default, interested in every callsite, and it keeps the
/// events of a thread only while that thread holds a [`CaptureGuard`]: a
/// thread-local default subscriber instead would race with the other tests'
/// threads over tracing's per-callsite interest cache (a warning seen first on
/// a thread without a subscriber could then be skipped on the capturing one).
/// The tests run on a current-thread runtime, so the capturing thread also
/// runs the worker task and sees its events.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

std::thread_local! {
    static CAPTURING: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// The process-wide subscriber: hands each event to its thread's capture.
struct PerThread;

impl Subscriber for PerThread {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let Some(captured) = CAPTURING.with(|c| c.borrow().clone()) else {
            return;
        };
        // The message, then every other field as ` name=value`.
        let mut message = String::new();
        let mut fields = String::new();
        event.record(&mut |field: &Field, value: &dyn std::fmt::Debug| {
            if field.name() == "message" {
                message = format!("{value:?}");
            } else {
                fields.push_str(&format!(" {}={value:?}", field.name()));
            }
        });
        message.push_str(&fields);
        captured
            .0
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

/// Stops this thread's capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURING.with(|c| *c.borrow_mut() = None);
    }
}

/// Captures this thread's events until the guard is dropped.
pub fn capture() -> (Captured, CaptureGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(PerThread)
            .expect("no other global tracing subscriber in the collector tests");
    });
    let c = Captured::default();
    CAPTURING.with(|slot| *slot.borrow_mut() = Some(c.clone()));
    (c, CaptureGuard(()))
}
