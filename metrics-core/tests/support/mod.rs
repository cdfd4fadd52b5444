//! Shared helpers of the collector integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime};

use metrics_core::{Method, RequestRecord, RetryPolicy, Route};

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
