//! The record queue between `record()` and the worker: a fixed set of
//! mutex-protected shards, each on its own cache lines.
//!
//! Why shards and not a channel: with a bounded MPSC channel every `record()`
//! does several atomic read-modify-writes on cache lines the consumer also
//! writes (semaphore, tail, ready bits, waker), so two producers and the worker
//! keep stealing those lines from each other. Here a producer normally touches
//! one line, its own shard's, which the worker visits only when it drains
//! (once per wake-up, not per record). Everything a producer updates (the
//! buffer, the counters, the wake-up bookkeeping) is a plain field under the
//! shard's lock.
//!
//! # Who waits, and how long
//!
//! A producer first *tries* to lock its home shard and then every other one;
//! only if every shard is locked at that moment does it block on a lock, one
//! at a time. Every critical section is O(1) and allocation-free in the steady
//! state: a producer pushes one record; the worker swaps the shard's buffer
//! for an empty one of the same capacity, or updates a few counters. So a
//! producer can wait only while other threads hold *every* shard, each for
//! one such critical section (unless the OS preempts a lock holder, as with
//! any lock).
//! The buffer grows, under the lock, only when more records arrive between two
//! drains than ever before; the worker sizes the buffers it hands back to the
//! recent traffic, outside the lock.
//!
//! # Capacity
//!
//! The queue's capacity is split exactly between the shards (their capacities
//! add up to `queue_capacity`). A producer whose shard is full moves on to the
//! next ones, so a single producer thread can use the whole capacity; a record
//! is dropped only when every shard is full. Records the worker has swapped
//! out of a shard but not yet moved into a batch (`held`) still count against
//! that shard's capacity, so the queue never holds more than `queue_capacity`
//! records.
//!
//! # Memory budget
//!
//! The memory budget (bytes, by [`Record::approx_size`], computed by the
//! producer before it locks anything) is split between the shards the same
//! way, and a producer whose shard lacks the bytes moves on the same way. A
//! record's bytes are charged to the shard that accepted it from the push
//! until the worker has *resolved* the batch the record went into (written or
//! dropped, see [`Drainer::batch_done`]): the budget covers the records queued,
//! held and in the batch being written or retried, which is everything the
//! collector holds. Per-shard charges keep the request path on its one shard
//! lock (a shared byte counter would be a cache line every producer writes);
//! the cost is fragmentation: less than one record per shard of the budget may
//! go unused, and a record larger than one shard's share is never accepted.
//!
//! # Waking the worker
//!
//! The worker is woken through one `Notify`, by at most one producer per shard
//! per wake-up: each shard has a threshold (`wake_at`) and a `poked` flag,
//! both set by the worker before it parks. The push that brings a shard's
//! length to its threshold pokes the worker, once. The thresholds are chosen
//! so that whenever the records waiting in all shards reach what the worker
//! asked for (`need`: 1 while idle, to arm the linger; the room left in the
//! batch while lingering), at least one shard has reached its threshold
//! (pigeonhole: the thresholds minus one add up to less than `need`). They are
//! spread in proportion to where the recent records came from, so a single
//! busy shard gets (almost) the whole `need` and wakes the worker about once
//! per batch.

use std::cell::Cell;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::TryLockError;
use std::sync::atomic::Ordering;

// The model-checking build (`--cfg app_metrics_loom`, see `model`) swaps the
// primitives whose interleavings matter for loom's models of them; the code
// below is the same in both builds.
#[cfg(app_metrics_loom)]
use loom::{
    sync::atomic::AtomicUsize,
    sync::{Mutex, MutexGuard},
    thread_local,
};
#[cfg(not(app_metrics_loom))]
use std::{
    sync::atomic::AtomicUsize,
    sync::{Mutex, MutexGuard},
    thread_local,
};

use super::stats::Padded;
use crate::record::Record;
use crate::sink::Batch;

#[cfg(all(test, app_metrics_loom))]
mod model;

/// Most shards, whatever the core count (a power of two, and at most 64 so
/// the producers' "busy shards" set fits in a `u64`).
const MAX_SHARDS: usize = 64;

/// Smallest buffer capacity the worker hands back to a shard.
const MIN_BUFFER: usize = 64;

/// Number of shards for this machine: the next power of two at or above twice
/// the available parallelism (so producer threads rarely share a shard), at
/// most [`MAX_SHARDS`].
pub(crate) fn shard_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    cpus.saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(MAX_SHARDS)
        .min(MAX_SHARDS)
}

/// A queued record and its size estimate, kept so the worker can give back
/// exactly the bytes the push charged.
#[derive(Debug)]
pub(crate) struct Queued {
    record: Record,
    size: usize,
}

/// One shard: a buffer and its counters, all under one lock.
#[derive(Debug)]
pub(crate) struct Shard {
    buf: VecDeque<Queued>,
    /// Most records this shard holds (`buf` plus `held`).
    cap: usize,
    /// Bytes charged to this shard: its records queued, held, and in the
    /// worker's batch until that batch is resolved. At most `byte_cap`.
    bytes: usize,
    /// This shard's share of the memory budget.
    byte_cap: usize,
    /// Records the worker swapped out of this shard and has not yet moved
    /// into a batch; they count against `cap` and as pending.
    held: usize,
    /// Poke the worker when `buf` reaches this length...
    wake_at: usize,
    /// ...unless this shard already did since the worker last looked.
    poked: bool,
    /// Intake is closed (shutdown, or the worker is gone).
    closed: bool,
    received: u64,
    dropped_queue_full: u64,
    dropped_memory_budget: u64,
    dropped_closed: u64,
}

/// Whether a shard can take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Yes,
    /// No slot left (`queue_capacity`).
    NoSlot,
    /// A slot, but not the record's bytes (memory budget).
    NoBytes,
}

impl Shard {
    fn new(cap: usize, byte_cap: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(cap.min(MIN_BUFFER)),
            cap,
            bytes: 0,
            byte_cap,
            held: 0,
            wake_at: 1,
            poked: false,
            closed: false,
            received: 0,
            dropped_queue_full: 0,
            dropped_memory_budget: 0,
            dropped_closed: 0,
        }
    }

    /// Records accepted into this shard so far.
    fn accepted(&self) -> u64 {
        self.received - self.dropped_queue_full - self.dropped_memory_budget - self.dropped_closed
    }

    /// Counts a record refused because intake is closed.
    fn count_closed(&mut self) -> Pushed {
        self.received += 1;
        self.dropped_closed += 1;
        Pushed::Closed
    }

    #[inline]
    fn room_for(&self, size: usize) -> Room {
        if self.buf.len() + self.held >= self.cap {
            Room::NoSlot
        } else if size > self.byte_cap - self.bytes {
            // `bytes <= byte_cap` always, so this cannot underflow, and it
            // cannot overflow either (unlike `bytes + size`).
            Room::NoBytes
        } else {
            Room::Yes
        }
    }

    /// Queues `rec` of `size` bytes (the caller checked `room_for`); returns
    /// whether to wake the worker.
    #[inline]
    fn push(&mut self, rec: Record, size: usize) -> Pushed {
        self.buf.push_back(Queued { record: rec, size });
        self.bytes += size;
        self.received += 1;
        let wake = !self.poked && self.buf.len() >= self.wake_at;
        self.poked |= wake;
        Pushed::Queued { wake }
    }
}

/// What happened to a record handed to [`Queue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; `wake` asks the caller to notify the worker.
    Queued { wake: bool },
    /// Every shard was full: dropped (and counted).
    QueueFull,
    /// No shard had the record's bytes left in its share of the memory
    /// budget (though some had a slot): dropped (and counted).
    MemoryBudget,
    /// Intake is closed: dropped (and counted).
    Closed,
}

/// Counts summed over the shards (see [`Queue::tally`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) received: u64,
    pub(crate) dropped_queue_full: u64,
    pub(crate) dropped_memory_budget: u64,
    pub(crate) dropped_closed: u64,
    /// Records in the shards or swapped out and held by the worker.
    pub(crate) queued: u64,
    /// Bytes charged: records queued, held, or in the worker's batch.
    pub(crate) bytes: u64,
}

/// The sharded, bounded record queue.
#[derive(Debug)]
pub(crate) struct Queue {
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// `shards.len() - 1` (the length is a power of two).
    mask: usize,
    capacity: usize,
    memory_budget: usize,
}

#[cfg(not(app_metrics_loom))]
thread_local! {
    /// This thread's home shard (an index masked by each queue), assigned
    /// round-robin on first use so that the first threads get distinct
    /// shards. A hint only: any shard accepts any record.
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}

// Loom's `thread_local!` takes no `const` initialiser.
#[cfg(app_metrics_loom)]
thread_local! {
    static HOME: Cell<usize> = Cell::new(usize::MAX);
}

/// Hands out home shards round-robin. A process-wide hint, not state: every
/// collector masks it with its own shard count.
#[cfg(not(app_metrics_loom))]
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

// Loom's atomics cannot be built in a `static`; a lazy one is reset for every
// execution of a model, so each starts from the same hint.
#[cfg(app_metrics_loom)]
loom::lazy_static! {
    static ref NEXT_HOME: AtomicUsize = AtomicUsize::new(0);
}

#[inline]
fn home_hint() -> usize {
    HOME.try_with(|home| {
        let h = home.get();
        if h != usize::MAX {
            return h;
        }
        let h = NEXT_HOME.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        home.set(h);
        h
    })
    // Only during this thread's teardown; any shard will do.
    .unwrap_or(0)
}

#[inline]
fn set_home_hint(i: usize) {
    let _ = HOME.try_with(|home| home.set(i));
}

/// Locks a shard, blocking; a poisoned lock is still usable (every critical
/// section leaves the shard consistent: nothing in them panics).
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    /// A queue of `capacity` records and `memory_budget` bytes over `shards`
    /// shards (a power of two, at most [`MAX_SHARDS`]).
    pub(crate) fn new(capacity: usize, memory_budget: usize, shards: usize) -> Self {
        debug_assert!(shards.is_power_of_two() && shards <= MAX_SHARDS);
        // Both split exactly: the first shards get one more of the rest.
        let split = |total: usize, i: usize| total / shards + usize::from(i < total % shards);
        let shards: Box<[_]> = (0..shards)
            .map(|i| {
                Padded(Mutex::new(Shard::new(
                    split(capacity, i),
                    split(memory_budget, i),
                )))
            })
            .collect();
        Self {
            mask: shards.len() - 1,
            shards,
            capacity,
            memory_budget,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn memory_budget(&self) -> usize {
        self.memory_budget
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[i].0)
    }

    /// Queues a record (the request path). Counts it in `received` and, if it
    /// is dropped, in the matching `dropped_*` of a shard.
    #[inline]
    pub(crate) fn push(&self, rec: Record) -> Pushed {
        // Before any lock: the estimate walks a usage event's metadata.
        let size = rec.approx_size();
        // Whether some shard had a slot but not the bytes: then a drop is the
        // memory budget's, not the record cap's.
        let mut short_of_bytes = false;
        let home = home_hint() & self.mask;
        // Shards whose lock was taken when we tried (bit i = shard i).
        let mut busy = 0u64;
        for k in 0..=self.mask {
            let i = (home + k) & self.mask;
            let mut shard = match self.shards[i].0.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    busy |= 1 << i;
                    continue;
                }
            };
            if busy & (1 << home) != 0 {
                // Our home shard was contended: move home to where we got in,
                // so two threads that share a home drift apart.
                set_home_hint(i);
            }
            if shard.closed {
                return shard.count_closed();
            }
            match shard.room_for(size) {
                Room::Yes => return shard.push(rec, size),
                Room::NoBytes => short_of_bytes = true,
                Room::NoSlot => {}
            }
        }
        // Rare: every shard was busy or full. Wait for the busy ones in turn.
        for k in 0..=self.mask {
            let i = (home + k) & self.mask;
            if busy & (1 << i) == 0 {
                continue;
            }
            let mut shard = self.lock(i);
            if shard.closed {
                return shard.count_closed();
            }
            match shard.room_for(size) {
                Room::Yes => return shard.push(rec, size),
                Room::NoBytes => short_of_bytes = true,
                Room::NoSlot => {}
            }
        }
        // No shard can take it: drop, counted in the home shard.
        let mut shard = self.lock(home);
        if shard.closed {
            return shard.count_closed();
        }
        shard.received += 1;
        if short_of_bytes {
            shard.dropped_memory_budget += 1;
            Pushed::MemoryBudget
        } else {
            shard.dropped_queue_full += 1;
            Pushed::QueueFull
        }
    }

    /// Closes intake: later pushes count as `dropped_closed`. A push that
    /// got a shard's lock before this call did is queued and will be drained.
    pub(crate) fn close(&self) {
        for i in 0..self.shards.len() {
            self.lock(i).closed = true;
        }
    }

    /// Counts summed over the shards, each shard read under its lock.
    pub(crate) fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            t.received += s.received;
            t.dropped_queue_full += s.dropped_queue_full;
            t.dropped_memory_budget += s.dropped_memory_budget;
            t.dropped_closed += s.dropped_closed;
            t.queued += (s.buf.len() + s.held) as u64;
            t.bytes += s.bytes as u64;
        }
        t
    }

    /// Records accepted so far, per shard (a flush waits until the worker
    /// has taken and resolved at least these).
    pub(crate) fn accepted(&self) -> Box<[u64]> {
        (0..self.shards.len())
            .map(|i| self.lock(i).accepted())
            .collect()
    }
}

// ===== the worker's side =====

/// The worker's per-shard state.
#[derive(Debug)]
struct Lane {
    /// Records swapped out of the shard and not yet moved into a batch (the
    /// shard's `held`); when empty, the buffer handed to the shard at the next
    /// swap.
    taken_out: VecDeque<Queued>,
    /// The shard's capacity (the most a buffer needs).
    cap: usize,
    /// Records of this shard moved into batches, ever.
    moved: u64,
    /// Records of this shard in the current batch and in the previous one:
    /// where the traffic comes from, for the wake-up thresholds.
    in_batch: u64,
    in_prev_batch: u64,
    /// Bytes of this shard's records in the current batch, given back to the
    /// shard when the batch is resolved.
    batch_bytes: usize,
    /// Recent peak length of the shard's buffer at a swap (sizes the next
    /// buffer); decays slowly so a burst's memory is given back over time.
    peak: usize,
}

/// What [`Drainer::fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filled {
    /// Records moved into the batch.
    pub(crate) moved: usize,
    /// Every shard was found empty and nothing is held back: with intake
    /// closed, the queue is drained.
    pub(crate) exhausted: bool,
}

/// The worker's handle on the queue: drains shards into batches and sets the
/// wake-up thresholds.
#[derive(Debug)]
pub(crate) struct Drainer {
    lanes: Box<[Lane]>,
    /// First shard of the next pass (rotates, so no shard waits behind the
    /// others when batches fill up).
    start: usize,
}

impl Drainer {
    pub(crate) fn new(queue: &Queue) -> Self {
        let lanes = (0..queue.shards())
            .map(|i| {
                let cap = queue.lock(i).cap;
                Lane {
                    taken_out: VecDeque::with_capacity(cap.min(MIN_BUFFER)),
                    cap,
                    moved: 0,
                    in_batch: 0,
                    in_prev_batch: 0,
                    batch_bytes: 0,
                    peak: 0,
                }
            })
            .collect();
        Self { lanes, start: 0 }
    }

    /// Moves up to `room` records from the shards into `batch`, oldest first
    /// within each shard. `on_moved(n)` runs after the shard's `held` has
    /// dropped by `n` and before the records are counted anywhere else (so a
    /// stats reader never counts a record twice).
    pub(crate) fn fill(
        &mut self,
        queue: &Queue,
        batch: &mut Batch,
        mut room: usize,
        mut on_moved: impl FnMut(usize),
    ) -> Filled {
        let n = self.lanes.len();
        let mut moved = 0;
        let mut exhausted = true;
        let start = self.start;
        self.start = (self.start + 1) % n;
        for k in 0..n {
            if room == 0 {
                exhausted = false;
                break;
            }
            let i = (start + k) % n;
            let lane = &mut self.lanes[i];
            // Two rounds at most: records held back from an earlier swap go
            // first; once they are all in, the shard's newer records follow.
            loop {
                let swap = lane.taken_out.is_empty();
                if swap {
                    // Size the buffer the shard gets back to twice its recent
                    // peak, here rather than by growing under the lock on
                    // the request path; shrink it only when far larger, so
                    // steady traffic reuses the same two buffers per shard
                    // without reallocating.
                    let want = lane.peak.saturating_mul(2).max(MIN_BUFFER).min(lane.cap);
                    if lane.taken_out.capacity() > 4 * want {
                        lane.taken_out.shrink_to(want);
                    } else {
                        lane.taken_out.reserve(want);
                    }
                }
                let (take, shard_empty) = {
                    let mut shard = queue.lock(i);
                    if swap && !shard.buf.is_empty() {
                        std::mem::swap(&mut shard.buf, &mut lane.taken_out);
                        lane.peak = lane.taken_out.len().max(lane.peak - lane.peak / 16);
                    }
                    let take = room.min(lane.taken_out.len());
                    shard.held = lane.taken_out.len() - take;
                    (take, shard.buf.is_empty())
                };
                if take > 0 {
                    on_moved(take);
                    for q in lane.taken_out.drain(..take) {
                        lane.batch_bytes += q.size;
                        batch.push(q.record);
                    }
                    lane.moved += take as u64;
                    lane.in_batch += take as u64;
                    room -= take;
                    moved += take;
                }
                let lane_empty = shard_empty && lane.taken_out.is_empty();
                if !swap && !shard_empty && lane.taken_out.is_empty() && room > 0 {
                    continue;
                }
                exhausted &= lane_empty;
                break;
            }
        }
        Filled { moved, exhausted }
    }

    /// The current batch was written or dropped: its records' bytes are
    /// given back to the shards they came from (one brief lock per shard that
    /// contributed, once per batch), so producers may use them again.
    pub(crate) fn batch_done(&mut self, queue: &Queue) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            lane.in_prev_batch = lane.in_batch;
            lane.in_batch = 0;
            let bytes = std::mem::take(&mut lane.batch_bytes);
            if bytes > 0 {
                let mut shard = queue.lock(i);
                debug_assert!(shard.bytes >= bytes, "bytes given back twice");
                shard.bytes = shard.bytes.saturating_sub(bytes);
            }
        }
    }

    /// Whether the worker has moved into batches at least `targets[i]` records
    /// of every shard `i` (see [`Queue::accepted`]).
    pub(crate) fn has_moved(&self, targets: &[u64]) -> bool {
        self.lanes
            .iter()
            .zip(targets)
            .all(|(lane, target)| lane.moved >= *target)
    }

    /// Sets every shard's wake-up threshold so that the worker is poked by
    /// the time `need` (≥ 1) more records are queued, and re-arms the pokes.
    /// Returns `false` if a shard is already at its threshold (do not park:
    /// drain again).
    pub(crate) fn arm(&mut self, queue: &Queue, need: usize) -> bool {
        debug_assert!(need >= 1);
        // Thresholds are 1 + share, with the shares adding up to at most
        // need - 1: if every shard stays below its threshold, fewer than
        // `need` records are queued.
        let spare = (need - 1) as u128;
        let weight = |l: &Lane| u128::from(l.in_batch + l.in_prev_batch);
        let total: u128 = self.lanes.iter().map(weight).sum();
        let n = self.lanes.len() as u128;
        let mut ready = false;
        for (i, lane) in self.lanes.iter().enumerate() {
            // No history (total == 0): an even split.
            let share = (spare * weight(lane))
                .checked_div(total)
                .unwrap_or(spare / n);
            // share <= need - 1 < usize::MAX.
            let wake_at = 1 + usize::try_from(share).unwrap_or(usize::MAX - 1);
            let mut shard = queue.lock(i);
            shard.wake_at = wake_at;
            shard.poked = false;
            ready |= shard.buf.len() >= wake_at;
        }
        !ready
    }

    /// Closes intake and takes every queued record out of the queue (the
    /// caller counts them as dropped, and has dropped its batch: every byte
    /// charge is cleared). Returns how many.
    pub(crate) fn take_all(&mut self, queue: &Queue) -> u64 {
        let mut n = 0;
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            lane.batch_bytes = 0;
            let taken = {
                let mut shard = queue.lock(i);
                shard.closed = true;
                shard.held = 0;
                shard.bytes = 0;
                std::mem::take(&mut shard.buf)
            };
            // Freed outside the lock.
            n += (taken.len() + lane.taken_out.len()) as u64;
            drop(taken);
            lane.taken_out.clear();
        }
        n
    }
}

#[cfg(all(test, not(app_metrics_loom)))]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::record::{Method, RequestRecord, Route};

    /// A memory budget no test reaches.
    const NO_BUDGET: usize = usize::MAX;

    fn rec(i: u16) -> Record {
        Record::from(RequestRecord::new(
            SystemTime::UNIX_EPOCH,
            Route::from_static("/"),
            Method::GET,
            i,
            Duration::ZERO,
        ))
    }

    fn statuses(batch: &Batch) -> Vec<u16> {
        batch.requests().iter().map(|r| r.status).collect()
    }

    #[test]
    fn shard_count_is_a_bounded_power_of_two() {
        let n = shard_count();
        assert!(n.is_power_of_two() && (2..=MAX_SHARDS).contains(&n));
    }

    #[test]
    fn capacity_is_split_exactly_and_one_thread_can_use_all_of_it() {
        let q = Queue::new(10, NO_BUDGET, 4);
        let caps: Vec<usize> = (0..4).map(|i| q.lock(i).cap).collect();
        assert_eq!(caps, [3, 3, 2, 2]);
        let pushed: Vec<Pushed> = (0..12).map(|i| q.push(rec(i))).collect();
        assert!(
            pushed[..10]
                .iter()
                .all(|p| matches!(p, Pushed::Queued { .. }))
        );
        assert_eq!(pushed[10..], [Pushed::QueueFull, Pushed::QueueFull]);
        let t = q.tally();
        assert_eq!((t.received, t.dropped_queue_full, t.queued), (12, 2, 10));
    }

    #[test]
    fn a_capacity_below_the_shard_count_still_works() {
        let q = Queue::new(1, NO_BUDGET, 4);
        assert_eq!(q.push(rec(0)), Pushed::Queued { wake: true });
        assert_eq!(q.push(rec(1)), Pushed::QueueFull);
    }

    #[test]
    fn closed_queue_counts_dropped_closed() {
        let q = Queue::new(10, NO_BUDGET, 2);
        assert!(matches!(q.push(rec(0)), Pushed::Queued { .. }));
        q.close();
        assert_eq!(q.push(rec(1)), Pushed::Closed);
        let t = q.tally();
        assert_eq!((t.received, t.dropped_closed, t.queued), (2, 1, 1));
    }

    #[test]
    fn fill_keeps_order_within_a_shard_and_holds_back_what_does_not_fit() {
        let q = Queue::new(100, NO_BUDGET, 2);
        let mut d = Drainer::new(&q);
        for i in 0..7 {
            let _ = q.push(rec(i));
        }
        let mut batch = Batch::new();
        let mut counted = 0;
        let f = d.fill(&q, &mut batch, 4, |n| counted += n);
        assert_eq!((f.moved, f.exhausted, counted), (4, false, 4));
        assert_eq!(statuses(&batch), [0, 1, 2, 3]);
        // Held back records still count as queued (and against capacity).
        assert_eq!(q.tally().queued, 3);
        let _ = q.push(rec(7));
        let mut batch = Batch::new();
        let f = d.fill(&q, &mut batch, 100, |_| {});
        assert!(f.exhausted);
        // Held-back records come before later ones of the same shard.
        assert_eq!(statuses(&batch), [4, 5, 6, 7]);
        assert_eq!(q.tally().queued, 0);
        assert!(d.has_moved(&q.accepted()));
    }

    #[test]
    fn held_records_count_against_capacity() {
        let q = Queue::new(4, NO_BUDGET, 2);
        let mut d = Drainer::new(&q);
        for i in 0..4 {
            let _ = q.push(rec(i));
        }
        let _ = d.fill(&q, &mut Batch::new(), 1, |_| {});
        // 3 records are still held by the worker or queued: one slot free.
        assert!(matches!(q.push(rec(4)), Pushed::Queued { .. }));
        assert_eq!(q.push(rec(5)), Pushed::QueueFull);
    }

    #[test]
    fn idle_worker_is_poked_by_the_first_record_once() {
        let q = Queue::new(100, NO_BUDGET, 4);
        let mut d = Drainer::new(&q);
        assert!(d.arm(&q, 1));
        assert_eq!(q.push(rec(0)), Pushed::Queued { wake: true });
        assert_eq!(q.push(rec(1)), Pushed::Queued { wake: false });
        // Not re-armed yet: no further pokes from that shard.
        assert!(!d.arm(&q, 1), "records are waiting: do not park");
    }

    #[test]
    fn thresholds_follow_the_traffic_and_never_miss_a_full_batch() {
        let q = Queue::new(1_000, NO_BUDGET, 4);
        let mut d = Drainer::new(&q);
        let mut batch = Batch::new();
        // One producer thread: its shard gets the whole remaining need.
        let _ = q.push(rec(0));
        let _ = d.fill(&q, &mut batch, 10, |_| {});
        assert!(d.arm(&q, 9));
        let wakes: Vec<bool> = (1..10)
            .map(|i| matches!(q.push(rec(i)), Pushed::Queued { wake: true }))
            .collect();
        assert_eq!(wakes.iter().filter(|w| **w).count(), 1);
        assert!(wakes[8], "poked exactly when the batch is full: {wakes:?}");

        // Whatever the distribution, `need` queued records always poke.
        for need in 1..40 {
            let q = Queue::new(1_000, NO_BUDGET, 4);
            let mut d = Drainer::new(&q);
            assert!(d.arm(&q, need));
            let mut poked = false;
            for k in 0..need {
                // Spread over the shards by locking them directly.
                let i = (k * 7 + need) % 4;
                let mut s = q.lock(i);
                s.buf.push_back(Queued {
                    record: rec(0),
                    size: 0,
                });
                if s.buf.len() >= s.wake_at {
                    poked = true;
                }
            }
            assert!(poked, "need {need} not signalled");
        }
    }

    /// Every `rec(i)` has this estimate.
    fn rec_size() -> usize {
        rec(0).approx_size()
    }

    #[test]
    fn the_memory_budget_refuses_and_counts_what_does_not_fit() {
        // Two records' worth of bytes per shard, plenty of slots.
        let q = Queue::new(100, 4 * 2 * rec_size(), 4);
        let pushed: Vec<Pushed> = (0..10).map(|i| q.push(rec(i))).collect();
        assert!(
            pushed[..8]
                .iter()
                .all(|p| matches!(p, Pushed::Queued { .. }))
        );
        assert_eq!(pushed[8..], [Pushed::MemoryBudget, Pushed::MemoryBudget]);
        let t = q.tally();
        assert_eq!(
            (
                t.received,
                t.dropped_memory_budget,
                t.dropped_queue_full,
                t.queued
            ),
            (10, 2, 0, 8)
        );
        assert_eq!(t.bytes, 8 * rec_size() as u64);
        assert_eq!(q.accepted().iter().sum::<u64>(), 8);
    }

    #[test]
    fn a_batch_keeps_its_bytes_until_it_is_resolved() {
        let q = Queue::new(100, 2 * 2 * rec_size(), 2);
        let mut d = Drainer::new(&q);
        for i in 0..4 {
            assert!(matches!(q.push(rec(i)), Pushed::Queued { .. }));
        }
        let mut batch = Batch::new();
        let f = d.fill(&q, &mut batch, 100, |_| {});
        assert_eq!(f.moved, 4);
        // Out of the queue but in the batch being written: still charged.
        let t = q.tally();
        assert_eq!((t.queued, t.bytes), (0, 4 * rec_size() as u64));
        assert_eq!(q.push(rec(4)), Pushed::MemoryBudget);
        d.batch_done(&q);
        assert_eq!(q.tally().bytes, 0);
        assert!(matches!(q.push(rec(5)), Pushed::Queued { .. }));
        assert_eq!(q.tally().bytes, rec_size() as u64);
    }

    #[test]
    fn slots_run_out_first_means_queue_full() {
        let q = Queue::new(2, NO_BUDGET, 2);
        let _ = (q.push(rec(0)), q.push(rec(1)));
        assert_eq!(q.push(rec(2)), Pushed::QueueFull);
        let t = q.tally();
        assert_eq!((t.dropped_queue_full, t.dropped_memory_budget), (1, 0));
    }

    #[test]
    fn a_record_larger_than_a_share_is_refused_even_when_empty() {
        // 4 shards of just under one record's bytes each: the whole budget
        // would hold three records, no shard holds one.
        let q = Queue::new(100, 4 * (rec_size() - 1), 4);
        assert_eq!(q.push(rec(0)), Pushed::MemoryBudget);
        assert_eq!(q.tally().bytes, 0);
    }

    #[test]
    fn take_all_clears_every_charge() {
        let q = Queue::new(100, 4 * rec_size(), 2);
        let mut d = Drainer::new(&q);
        for i in 0..4 {
            let _ = q.push(rec(i));
        }
        let _ = d.fill(&q, &mut Batch::new(), 1, |_| {});
        assert_eq!(d.take_all(&q), 3);
        assert_eq!(q.tally().bytes, 0);
        // A later batch_done has nothing left to give back.
        d.batch_done(&q);
        assert_eq!(q.tally().bytes, 0);
    }

    #[test]
    fn take_all_closes_and_empties_everything() {
        let q = Queue::new(10, NO_BUDGET, 2);
        let mut d = Drainer::new(&q);
        for i in 0..5 {
            let _ = q.push(rec(i));
        }
        let _ = d.fill(&q, &mut Batch::new(), 1, |_| {});
        assert_eq!(d.take_all(&q), 4);
        assert_eq!(q.tally().queued, 0);
        assert_eq!(q.push(rec(9)), Pushed::Closed);
    }
}
