//! The scenarios: each starts what it needs, injects its fault, and
//! returns an [`Outcome`] whose RESULT line carries its figures and
//! verdict. [`run`] turns a harness error into a failed outcome, so one
//! broken scenario never hides the others.

mod basic;
mod edge;
mod hostile;
mod multi;
mod pg_faults;
mod rig;

use std::path::PathBuf;
use std::time::Duration;

use crate::report::Outcome;

/// What scenarios share across a run.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The `example-dashboard` binary.
    pub(crate) app_bin: PathBuf,
    /// The normal-route p99 the `baseline` scenario measured; later
    /// scenarios are held to `max(2 × baseline, baseline + 25 ms)`.
    pub(crate) baseline_p99: Option<Duration>,
}

/// Every scenario, in the order a full run takes them (`baseline` first:
/// the others' p99 budget comes from it).
pub(crate) const ALL: &[&str] = &[
    "baseline",
    "pg_backend_kill",
    "pg_postmaster_kill",
    "pg_stop_30s",
    "app_sigterm",
    "hostile_bodies",
    "multi_process",
    "pg_stop_150s",
    "pg_stop_150s_small_queue",
    "slow_db_200ms",
    "db_stall_15s",
    "table_lock_20s",
    "resets_2s",
    "sigterm_pg_down",
    "app_sigkill_restart_pg_down",
    "sigterm_slow_clients",
    "distinct_paths",
    "slowloris",
    "admin_check",
];

/// The short subset CI runs (`--ci`): a crash, a 30 s stop, SIGTERM,
/// hostile bodies, several processes.
pub(crate) const CI: &[&str] = &[
    "baseline",
    "pg_backend_kill",
    "pg_postmaster_kill",
    "pg_stop_30s",
    "app_sigterm",
    "hostile_bodies",
    "multi_process",
];

/// Runs scenario `name`.
pub(crate) async fn run(name: &str, ctx: &mut Ctx) -> Outcome {
    let result = match name {
        "baseline" => basic::baseline(ctx).await,
        "app_sigterm" => basic::app_sigterm(ctx).await,
        "sigterm_pg_down" => basic::sigterm_pg_down(ctx).await,
        "app_sigkill_restart_pg_down" => basic::sigkill_restart_pg_down(ctx).await,
        "pg_backend_kill" => pg_faults::backend_kill(ctx).await,
        "pg_postmaster_kill" => pg_faults::postmaster_kill(ctx).await,
        "pg_stop_30s" => pg_faults::stop(ctx, name, 30, false).await,
        "pg_stop_150s" => pg_faults::stop(ctx, name, 150, false).await,
        "pg_stop_150s_small_queue" => pg_faults::stop(ctx, name, 150, true).await,
        "slow_db_200ms" => pg_faults::slow(ctx, name, pg_faults::Slow::Delay200ms).await,
        "db_stall_15s" => pg_faults::slow(ctx, name, pg_faults::Slow::Stall15s).await,
        "table_lock_20s" => pg_faults::slow(ctx, name, pg_faults::Slow::TableLock20s).await,
        "resets_2s" => pg_faults::slow(ctx, name, pg_faults::Slow::Resets2s).await,
        "sigterm_slow_clients" => edge::sigterm_slow_clients(ctx).await,
        "distinct_paths" => edge::distinct_paths(ctx).await,
        "slowloris" => edge::slowloris(ctx).await,
        "admin_check" => edge::admin_check(ctx).await,
        "hostile_bodies" => hostile::hostile_bodies(ctx).await,
        "multi_process" => multi::multi_process(ctx).await,
        other => return Outcome::broken(other, "no such scenario (see --list)"),
    };
    result.unwrap_or_else(|e| Outcome::broken(name, &e.to_string()))
}
