//! The background jobs: rolling closed hours up (`rollup/`), building daily
//! rollups (`daily`), dropping expired data (`retention`), keeping daily
//! partitions ahead (`partition`), and the `Scheduler` that runs them all
//! (`schedule`). What they share: the advisory lock that makes N instances run
//! each job once (`lock`), the clock they read (`clock`), their report
//! (`report`), the row governance of a run (`governance`) and aborting helper
//! tasks with the job (`task`).
//!
//! Layers, each using only those below it: `schedule` ─► `retention` ─►
//! `rollup` ─► `daily`, `partition`; and under all of them `lock`, `clock`,
//! `report`, `governance`, `task`.

pub(crate) mod clock;
pub(crate) mod daily;
pub(crate) mod governance;
pub(crate) mod lock;
pub(crate) mod partition;
pub(crate) mod report;
pub(crate) mod retention;
pub(crate) mod rollup;
pub(crate) mod schedule;
pub(crate) mod task;
