//! Core of app-metrics: the records every request and usage event becomes, the
//! [`MetricsSink`] trait that stores them, and the bounded background
//! [`Collector`] that sits between the request path and the sink.
//!
//! No database code lives here; storage backends (such as `metrics-pg`)
//! implement [`MetricsSink`].
//!
//! # Upkeep / background work
//!
//! The only background work is the collector's [`Worker`]: one Tokio task that
//! pulls records from a bounded queue, batches them by size or linger time and
//! writes one batch at a time through the sink. [`Collector::builder`] followed
//! by `spawn()` starts it on the current runtime; `build()` hands the future to
//! you instead. [`CollectorHandle::shutdown`] closes intake, drains every queued
//! record within a deadline and answers with the final [`CollectorStats`];
//! dropping every handle has the worker drain and stop on its own.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
pub mod aggregate;
mod collector;
mod error;
mod id;
mod identity;
mod memory;
pub mod query;
mod record;
mod sink;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use admin::{
    AdminCheck, AdminCheckError, CachedAdminCheck, SharedAdminCheck, SharedError, StaticAdmins,
};
#[cfg(feature = "databricks")]
#[cfg_attr(docsrs, doc(cfg(feature = "databricks")))]
pub use admin::{DatabricksAdminCheck, DatabricksAdminCheckBuilder, DatabricksConfigError};
pub use collector::{
    BuildError, Collector, CollectorBuilder, CollectorHandle, CollectorStats, RetryPolicy,
    ShutdownError, Worker,
};
pub use error::{BoxError, SinkError};

/// Re-exported so sink implementations need no direct `async-trait` dependency.
pub use async_trait::async_trait;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use id::MissingCorrelationId;
pub use id::{CorrelationId, uuid_v7_at};
pub use identity::{AccessToken, Identity};
pub use memory::{MemorySink, MemorySnapshot};
pub use record::{ErrorType, Method, Record, RequestRecord, Route, UsageEvent, UserId};
pub use sink::{Batch, BatchId, MetricsSink, WriteAttempt, WriteSummary};
