//! PLACEHOLDER: the public surface of the collector, to be replaced by the real
//! implementation (see the collector task). Signatures here are the contract.
#![allow(missing_docs, dead_code, unused_variables)]

use std::sync::Arc;
use std::time::Duration;

use crate::error::{BuildError, ShutdownError};
use crate::record::Record;
use crate::sink::MetricsSink;

#[derive(Debug)]
pub struct Collector(());

impl Collector {
    pub fn builder<S: MetricsSink>(sink: S) -> CollectorBuilder<S> {
        CollectorBuilder { sink }
    }
}

#[derive(Debug)]
pub struct CollectorBuilder<S> {
    sink: S,
}

impl<S: MetricsSink> CollectorBuilder<S> {
    pub fn build(self) -> Result<(CollectorHandle, Worker<S>), BuildError> {
        Err(BuildError::NoRuntime)
    }
    pub fn spawn(self) -> Result<CollectorHandle, BuildError> {
        Err(BuildError::NoRuntime)
    }
}

#[derive(Debug, Clone)]
pub struct CollectorHandle {
    inner: Arc<()>,
}

impl CollectorHandle {
    pub fn record(&self, record: impl Into<Record>) -> bool {
        false
    }
    pub fn stats(&self) -> CollectorStats {
        CollectorStats::default()
    }
    pub async fn flush(&self) -> Result<(), ShutdownError> {
        Ok(())
    }
    pub async fn shutdown(&self, deadline: Duration) -> Result<CollectorStats, ShutdownError> {
        Ok(CollectorStats::default())
    }
}

#[derive(Debug)]
pub struct Worker<S> {
    sink: S,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CollectorStats {
    pub received: u64,
    pub written: u64,
    pub dropped_queue_full: u64,
    pub dropped_retries_exhausted: u64,
    pub dropped_shutdown: u64,
    pub dropped_rejected: u64,
    pub dropped_closed: u64,
    pub retries: u64,
    pub batches: u64,
    pub pending: u64,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
}
