//! Model checking of the queue's wake-up and accounting rules with loom: each
//! test runs every interleaving of its producer threads and the worker (up to
//! loom's preemption bound), including every outcome of the producers'
//! `try_lock`s.
//!
//! Built only with `--cfg app_metrics_loom`, which swaps the queue's
//! `Mutex` and thread-locals for loom's models (`scripts/test` runs it;
//! docs/testing.md says how to run it alone).
//!
//! The worker here is `worker.rs`'s loop without timers: with no linger
//! timer to rescue it, a wake-up the thresholds fail to send leaves the worker
//! parked for good, which loom reports as a deadlock.

use std::collections::BTreeSet;

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::{Drainer, Pushed, Queue};
use crate::record::{Method, Record, RequestRecord, Route};
use crate::sink::Batch;

/// A memory budget no model reaches (the budget's own model sets one).
const NO_BUDGET: usize = usize::MAX;

/// Runs `f` under loom with a preemption bound that keeps each model to
/// seconds (the bound loom's own docs suggest: bugs need few preemptions).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A record told apart by its status.
fn rec(i: u16) -> Record {
    Record::from(RequestRecord::new(
        std::time::SystemTime::UNIX_EPOCH,
        Route::from_static("/"),
        Method::GET,
        i,
        std::time::Duration::ZERO,
    ))
}

fn statuses(batch: &Batch) -> impl Iterator<Item = u16> + '_ {
    batch.requests().iter().map(|r| r.status)
}

/// The worker's wake-up, as tokio's `Notify::notify_one` gives it to the
/// real worker: one stored permit, so a poke sent before the worker parks is
/// not lost, and several pokes wake it once.
struct Permit {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Permit {
    fn new() -> Self {
        Self {
            set: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    fn notify(&self) {
        *self.set.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut set = self.set.lock().unwrap();
        while !*set {
            set = self.cv.wait(set).unwrap();
        }
        *set = false;
    }
}

/// `record()`: push, and poke the worker when the push says so.
fn produce(queue: &Queue, permit: &Permit, records: &[u16]) -> Vec<(u16, Pushed)> {
    records
        .iter()
        .map(|&i| {
            let pushed = queue.push(rec(i));
            if let Pushed::Queued { wake: true } = pushed {
                permit.notify();
            }
            (i, pushed)
        })
        .collect()
}

/// The worker until it has written `total` records: fill, write a full batch
/// (or the last records), otherwise arm the thresholds for what it waits for
/// (the first record when idle, the rest of the batch while lingering) and
/// park unless `arm` says a threshold is already reached.
fn consume(queue: &Queue, permit: &Permit, max_batch: usize, total: usize) -> Vec<u16> {
    let mut drainer = Drainer::new(queue);
    let mut batch = Batch::new();
    let mut written = Vec::new();
    loop {
        let room = max_batch - batch.len();
        let _ = drainer.fill(queue, &mut batch, room, |_| {});
        if batch.len() == max_batch || written.len() + batch.len() == total {
            written.extend(statuses(&batch));
            batch.clear();
            drainer.batch_done(queue);
        }
        if written.len() == total {
            return written;
        }
        let need = if batch.is_empty() {
            1
        } else {
            max_batch - batch.len()
        };
        if drainer.arm(queue, need) {
            permit.wait();
        }
    }
}

/// Every record written exactly once, and the queue's counts agree.
fn assert_all_written_once(queue: &Queue, written: &[u16], expected: &[u16]) {
    let mut sorted = written.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "each record written exactly once");
    let t = queue.tally();
    assert_eq!(t.received, expected.len() as u64);
    assert_eq!(
        (t.queued, t.dropped_queue_full, t.dropped_closed),
        (0, 0, 0)
    );
}

#[test]
fn an_idle_worker_is_always_woken_by_the_first_record() {
    // Two producers, one record each, batches of one: every record must wake
    // the worker from idle (need = 1), whichever shard it lands in.
    model(|| {
        let queue = Arc::new(Queue::new(8, NO_BUDGET, 2));
        let permit = Arc::new(Permit::new());
        let producers: Vec<_> = [1, 2]
            .map(|i| {
                let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
                thread::spawn(move || produce(&q, &p, &[i]))
            })
            .into_iter()
            .collect();
        let written = consume(&queue, &permit, 1, 2);
        for p in producers {
            let _ = p.join().unwrap();
        }
        assert_all_written_once(&queue, &written, &[1, 2]);
    });
}

#[test]
fn a_lingering_worker_is_woken_once_the_batch_can_be_filled() {
    // Batches of three from two producers (two records and one): the worker
    // takes the first record(s), then lingers with need = what is missing,
    // split over the shards by where records came from. Whatever the split
    // and the interleaving, the record that completes the batch must poke.
    model(|| {
        let queue = Arc::new(Queue::new(8, NO_BUDGET, 2));
        let permit = Arc::new(Permit::new());
        let a = {
            let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
            thread::spawn(move || produce(&q, &p, &[1, 2]))
        };
        let b = {
            let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
            thread::spawn(move || produce(&q, &p, &[3]))
        };
        let written = consume(&queue, &permit, 3, 3);
        let _ = (a.join().unwrap(), b.join().unwrap());
        assert_all_written_once(&queue, &written, &[1, 2, 3]);
    });
}

#[test]
fn a_need_split_over_two_busy_shards_still_wakes_the_worker() {
    // Batches of four from two producers of two records each: when the
    // worker's batch holds records of both shards, the rest it needs is
    // split between their thresholds. The split must leave no way for the
    // missing records to sit below both thresholds.
    model(|| {
        let queue = Arc::new(Queue::new(8, NO_BUDGET, 2));
        let permit = Arc::new(Permit::new());
        let producers: Vec<_> = [[1, 3], [2, 4]]
            .map(|records| {
                let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
                thread::spawn(move || produce(&q, &p, &records))
            })
            .into_iter()
            .collect();
        let written = consume(&queue, &permit, 4, 4);
        for p in producers {
            let _ = p.join().unwrap();
        }
        assert_all_written_once(&queue, &written, &[1, 2, 3, 4]);
    });
}

#[test]
fn a_full_queue_drops_and_counts_and_never_exceeds_its_capacity() {
    // Capacity 2 over 2 shards (one slot each), three records from two
    // producers while the worker drains once: every record is either
    // written or counted as dropped_queue_full, never both, never neither.
    model(|| {
        let queue = Arc::new(Queue::new(2, NO_BUDGET, 2));
        let permit = Arc::new(Permit::new());
        let a = {
            let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
            thread::spawn(move || produce(&q, &p, &[1, 2]))
        };
        let b = {
            let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
            thread::spawn(move || produce(&q, &p, &[3]))
        };
        let mut drainer = Drainer::new(&queue);
        let mut moved = Vec::new();
        let mut batch = Batch::new();
        // One drain racing the producers, taking one record at most, so
        // that records held back by the worker count against the capacity.
        let _ = drainer.fill(&queue, &mut batch, 1, |_| {});
        assert!(queue.tally().queued <= 2, "capacity exceeded");
        moved.extend(statuses(&batch));
        let pushed: Vec<_> = [a, b].into_iter().flat_map(|t| t.join().unwrap()).collect();
        let mut batch = Batch::new();
        let filled = drainer.fill(&queue, &mut batch, 8, |_| {});
        assert!(filled.exhausted);
        moved.extend(statuses(&batch));

        let queued: BTreeSet<u16> = pushed
            .iter()
            .filter(|(_, p)| matches!(p, Pushed::Queued { .. }))
            .map(|(i, _)| *i)
            .collect();
        let full = pushed
            .iter()
            .filter(|(_, p)| *p == Pushed::QueueFull)
            .count();
        assert_eq!(queued.len() + full, 3);
        assert_eq!(moved.iter().copied().collect::<BTreeSet<_>>(), queued);
        assert_eq!(moved.len(), queued.len(), "a record moved twice");
        let t = queue.tally();
        assert_eq!((t.received, t.dropped_queue_full), (3, full as u64));
        assert_eq!(t.queued, 0);
        // Three records, two slots: at most one refused (none when the
        // drain freed a slot in time).
        assert!(full <= 1);
    });
}

#[test]
fn closing_races_with_pushes_without_losing_a_record() {
    // Shutdown closes intake while two producers push: each record is
    // either queued before its shard closed (and drained by the final
    // drain) or refused as dropped_closed.
    model(|| {
        let queue = Arc::new(Queue::new(8, NO_BUDGET, 2));
        let permit = Arc::new(Permit::new());
        let producers: Vec<_> = [[1, 2], [3, 4]]
            .map(|records| {
                let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
                thread::spawn(move || produce(&q, &p, &records))
            })
            .into_iter()
            .collect();
        queue.close();
        let mut drainer = Drainer::new(&queue);
        let mut batch = Batch::new();
        // The final drain runs once every producer is done: a push that got
        // its shard's lock before the close reached that shard is queued and
        // must be found; any later one must have been refused.
        let pushed: Vec<_> = producers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let filled = drainer.fill(&queue, &mut batch, 8, |_| {});
        assert!(filled.exhausted);
        let moved: BTreeSet<u16> = statuses(&batch).collect();
        let closed: BTreeSet<u16> = pushed
            .iter()
            .filter(|(_, p)| *p == Pushed::Closed)
            .map(|(i, _)| *i)
            .collect();
        assert!(moved.is_disjoint(&closed));
        assert_eq!(moved.len() + closed.len(), 4, "a record was lost");
        let t = queue.tally();
        assert_eq!((t.received, t.dropped_closed), (4, closed.len() as u64));
        // Once closed, a push is refused whatever shard it tries.
        assert_eq!(queue.push(rec(9)), Pushed::Closed);
    });
}

#[test]
fn a_flush_covers_every_record_accepted_before_it() {
    // A producer records, then asks for a flush (the worker snapshots the
    // per-shard accepted counts when the request arrives); the worker drains
    // concurrently. Once `has_moved` says the flush is covered, the
    // producer's records must have been moved.
    model(|| {
        let queue = Arc::new(Queue::new(8, NO_BUDGET, 2));
        let permit = Arc::new(Permit::new());
        let targets = Arc::new(Mutex::new(None));
        let producer = {
            let (q, p, t) = (
                Arc::clone(&queue),
                Arc::clone(&permit),
                Arc::clone(&targets),
            );
            thread::spawn(move || {
                let _ = produce(&q, &p, &[1, 2]);
                *t.lock().unwrap() = Some(q.accepted());
                p.notify();
            })
        };
        let mut drainer = Drainer::new(&queue);
        let mut moved = BTreeSet::new();
        loop {
            let mut batch = Batch::new();
            let _ = drainer.fill(&queue, &mut batch, 8, |_| {});
            moved.extend(statuses(&batch));
            let covered = targets
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|t| drainer.has_moved(t));
            if covered {
                break;
            }
            if drainer.arm(&queue, 1) {
                permit.wait();
            }
        }
        assert_eq!(moved, BTreeSet::from([1, 2]));
        producer.join().unwrap();
    });
}

#[test]
fn the_memory_budget_is_charged_until_the_batch_is_resolved() {
    // Bytes for one record per shard (two shards), three records from two
    // producers while the worker drains and resolves a batch: a record's
    // bytes are given back only by `batch_done`, the charge never passes the
    // budget, and every record is written once or counted as
    // dropped_memory_budget.
    model(|| {
        let size = rec(0).approx_size();
        let queue = Arc::new(Queue::new(8, 2 * size, 2));
        let permit = Arc::new(Permit::new());
        let a = {
            let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
            thread::spawn(move || produce(&q, &p, &[1, 2]))
        };
        let b = {
            let (q, p) = (Arc::clone(&queue), Arc::clone(&permit));
            thread::spawn(move || produce(&q, &p, &[3]))
        };
        let mut drainer = Drainer::new(&queue);
        let mut moved = Vec::new();
        let mut batch = Batch::new();
        let _ = drainer.fill(&queue, &mut batch, 8, |_| {});
        // Moved into the batch, not yet resolved: still charged.
        let t = queue.tally();
        assert_eq!(t.bytes, (t.queued + batch.len() as u64) * size as u64);
        assert!(t.bytes <= 2 * size as u64, "budget exceeded");
        moved.extend(statuses(&batch));
        batch.clear();
        drainer.batch_done(&queue);
        let pushed: Vec<_> = [a, b].into_iter().flat_map(|t| t.join().unwrap()).collect();
        let filled = drainer.fill(&queue, &mut batch, 8, |_| {});
        assert!(filled.exhausted);
        moved.extend(statuses(&batch));
        drainer.batch_done(&queue);

        let queued: BTreeSet<u16> = pushed
            .iter()
            .filter(|(_, p)| matches!(p, Pushed::Queued { .. }))
            .map(|(i, _)| *i)
            .collect();
        let refused = pushed
            .iter()
            .filter(|(_, p)| *p == Pushed::MemoryBudget)
            .count();
        assert_eq!(queued.len() + refused, 3);
        assert_eq!(moved.iter().copied().collect::<BTreeSet<_>>(), queued);
        assert_eq!(moved.len(), queued.len(), "a record moved twice");
        let t = queue.tally();
        assert_eq!(
            (t.received, t.dropped_memory_budget, t.dropped_queue_full),
            (3, refused as u64, 0)
        );
        assert_eq!((t.queued, t.bytes), (0, 0), "every byte given back");
        // Three records, room for two at a time: at most one refused.
        assert!(refused <= 1);
    });
}
