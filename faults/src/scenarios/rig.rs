//! What most scenarios share: a PostgreSQL of their own behind the proxy,
//! a fixed app address, the ledger, and the closing reconciliation with the
//! checks every RESULT line carries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::app::{self, App, AppSpec};
use crate::counters::Counters;
use crate::error::Error;
use crate::ledger::{self, Ledger};
use crate::pg::Pg;
use crate::proxy::Proxy;
use crate::reconcile::{Reconciliation, Stored, reconcile};
use crate::report::Outcome;
use crate::scenarios::Ctx;

/// A scenario's PostgreSQL, proxy, app address and ledger.
#[derive(Debug)]
pub(crate) struct Rig {
    pub(crate) pg: Pg,
    pub(crate) proxy: Proxy,
    pub(crate) bind: SocketAddr,
    pub(crate) ledger: Arc<Ledger>,
    app_bin: std::path::PathBuf,
}

/// What the closing checks expect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// Drops are part of the scenario (an outage longer than the buffer):
    /// then `missing == dropped` must hold exactly instead of `dropped == 0`.
    pub(crate) drops: bool,
    /// Normal-route requests sent from this on count for the error and p99
    /// checks (an app restarted after a kill: the kill's own errors are
    /// not the metrics' doing).
    pub(crate) from: Duration,
    /// Normal-route requests sent before this (since the ledger began)
    /// count for the error and p99 checks; later ones (the app is stopping)
    /// do not.
    pub(crate) until: Duration,
    /// Whether to hold the normal-route p99 to the baseline's budget.
    pub(crate) p99: bool,
    /// Whether usage events are matched by `element_id` (hostile bodies
    /// carry ids the harness cannot know; they check counts instead).
    pub(crate) event_ids: bool,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            drops: false,
            from: Duration::ZERO,
            until: Duration::MAX,
            p99: true,
            event_ids: true,
        }
    }
}

impl Rig {
    /// A fresh cluster, a proxy in pass mode in front of it, a free app port.
    pub(crate) async fn start(ctx: &Ctx) -> Result<Self, Error> {
        let pg = Pg::start().await?;
        let proxy = Proxy::start(pg.addr()).await?;
        Ok(Self {
            pg,
            proxy,
            bind: app::free_addr()?,
            ledger: Arc::new(Ledger::new()),
            app_bin: ctx.app_bin.clone(),
        })
    }

    /// The spec of an app named `name` on the rig's address, through the
    /// proxy, with `env` on top of the harness defaults.
    pub(crate) fn spec(&self, name: &str, env: &[(&str, String)]) -> AppSpec {
        AppSpec {
            name: name.to_owned(),
            bin: self.app_bin.clone(),
            bind: self.bind,
            database_url: Pg::url_at(self.proxy.addr(), name),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    /// Starts an app with [`Rig::spec`].
    pub(crate) async fn app(&self, name: &str, env: &[(&str, String)]) -> Result<App, Error> {
        App::start(&self.spec(name, env)).await
    }

    /// Waits until everything the app had received when called is settled
    /// (written or counted dropped), polling `/api/demo/recorded`; returns
    /// how long that took, `None` after `timeout`.
    pub(crate) async fn settle(&self, app: &App, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let mut target = None;
        while t0.elapsed() < timeout {
            if let Some(c) = app.recorded(&self.ledger).await {
                let received = c.received()?;
                let target = *target.get_or_insert(received);
                if c.written()? + c.dropped()? >= target {
                    return Some(t0.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Reads the database, reconciles it with the ledger and `counters`
    /// (the final counters of every app process), and adds the figures
    /// and the checks every scenario carries to `o`.
    pub(crate) async fn finish(
        &self,
        ctx: &Ctx,
        o: &mut Outcome,
        counters: &[Option<Counters>],
        expect: Expect,
    ) -> Result<Reconciliation, Error> {
        let client = self.pg.connect_retrying(Duration::from_secs(60)).await?;
        let mut stored = Stored::load(&client).await?;
        let event_rows = stored.event_rows();
        if !expect.event_ids {
            // Counted as a whole instead (see Expect::event_ids).
            stored.events.clear();
        }
        let entries = self.ledger.entries();
        let mut r = reconcile(&entries, &stored, counters);
        r.stored = stored.request_rows() + event_rows;
        o.figures(r.figures());
        // Drops by reason, summed over the processes (only the reasons the
        // apps report; the total above is what the checks use).
        let mut reasons: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for c in counters.iter().flatten() {
            for (k, v) in c.drop_reasons() {
                *reasons.entry(k).or_default() += v;
            }
        }
        for (k, v) in reasons.into_iter().filter(|(_, v)| *v > 0) {
            o.figure(k, v);
        }

        o.check("dup", r.dup == 0);
        o.check("phantom", r.phantom == 0);
        o.check("lost", r.lost == 0);
        o.check_known("invariant", r.invariant());
        o.check_known("stored_eq_written", r.stored_is_written());
        if !expect.drops {
            o.check_known("no_drops", r.dropped.map(|d| d == 0));
        }
        for (i, c) in counters.iter().enumerate() {
            match c {
                Some(c) if c.invariant_holds(true) == Some(false) => {
                    o.note(&format!("process {i}: invariant broken: {}", c.describe()));
                }
                None => o.note(&format!("process {i}: no exit line")),
                _ => {}
            }
        }

        let window: Vec<_> = entries
            .iter()
            .filter(|e| e.sent_at >= expect.from)
            .cloned()
            .collect();
        o.figure("pg_connections", self.proxy.connections());
        let errors = ledger::normal_errors(&window, expect.until);
        o.figure("errors", errors);
        o.check("errors", errors == 0);
        let mut lat = ledger::normal_latencies(&entries, expect.from, expect.until);
        let p99 = ledger::p99(&mut lat);
        o.figure("p99_ms", ms(p99));
        if expect.p99 {
            if let Some(base) = ctx.baseline_p99 {
                let budget = (base * 2).max(base + Duration::from_millis(25));
                o.figure("p99_budget_ms", ms(Some(budget)));
                o.check_known("p99", p99.map(|p| p <= budget));
            }
        }
        Ok(r)
    }
}

/// Milliseconds with one decimal, `?` when unknown.
pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "?".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1e3),
    )
}

/// Seconds with one decimal, `?` when unknown.
pub(crate) fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// Samples a process's `VmRSS` every 250 ms: the first sample is the base,
/// the largest the peak.
#[derive(Debug)]
pub(crate) struct RssSampler {
    base: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `app`.
    pub(crate) fn start(app: &App) -> Self {
        let pid = app.pid();
        let base = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let (b, p) = (Arc::clone(&base), Arc::clone(&peak));
        let task = tokio::spawn(async move {
            while let Some(kib) = app::rss_kib(pid) {
                let _ = b.compare_exchange(0, kib, Ordering::Relaxed, Ordering::Relaxed);
                p.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { base, peak, task }
    }

    /// (base, peak) in MiB so far.
    pub(crate) fn mib(&self) -> (f64, f64) {
        let f = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1024.0;
        (f(&self.base), f(&self.peak))
    }

    /// Adds `rss_base_mib` and `rss_peak_mib` to `o` and stops sampling.
    pub(crate) fn report(self, o: &mut Outcome) -> (f64, f64) {
        self.task.abort();
        let (base, peak) = self.mib();
        o.figure("rss_base_mib", format!("{base:.1}"));
        o.figure("rss_peak_mib", format!("{peak:.1}"));
        (base, peak)
    }
}
