//! What the sink knows of each unfinished batch, by [`BatchId`]: which
//! chunks are still to write, which the current attempt is writing, and
//! which were sent `COMMIT` without an answer (*in doubt*).
//!
//! Invariant: every valid row of a tracked batch is in exactly one place:
//! a chunk `pending`, `running` or `in_doubt`, counted in `rejected`, or
//! committed (its chunk is gone). The state is updated at every step of a
//! write, under the sink's mutex (never held across an await), so an
//! attempt dropped anywhere (the collector's timeout, the sink's own write
//! deadline) leaves a state the retry can trust: a `running` chunk had no
//! `COMMIT` sent and is written again; an `in_doubt` chunk is resolved by
//! its transaction id before anything else is written.

use std::collections::VecDeque;

use metrics_core::BatchId;

/// Which table a chunk goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Requests,
    Usage,
}

/// A chunk of a batch: `start..end` of one table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) table: Table,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The server's name for a write transaction, taken inside it before its
/// `COMMIT` is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Txn {
    /// `txid_current()`: the 64-bit (epoch-extended) transaction id.
    pub(super) xid: i64,
}

/// A chunk sent `COMMIT` whose outcome is not known yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InDoubt {
    pub(super) chunk: Chunk,
    pub(super) txn: Txn,
}

/// The state of one unfinished batch.
#[derive(Debug)]
pub(super) struct Progress {
    requests_len: usize,
    usage_len: usize,
    /// Chunks to write, next first.
    pending: Vec<Chunk>,
    /// Chunks the current attempt is writing; no `COMMIT` sent for them.
    running: Vec<Chunk>,
    /// Chunks sent `COMMIT` without an answer.
    in_doubt: Vec<InDoubt>,
    /// Records refused for good so far (invalid, or isolated by bisection).
    pub(super) rejected: u64,
    /// Whether any chunk of the batch is known to be committed.
    pub(super) committed_any: bool,
}

/// The progress of every batch the sink has not finished, by id.
///
/// Entries end when their batch does (success, or a non-retryable failure).
/// A batch the collector gave up on is never passed again; its entry stays
/// until [`MAX_TRACKED`] newer batches push it out (oldest first). A sink
/// shared by several collectors sees their batches side by side, which is
/// why this holds several and not one slot; a few dozen at most, so a
/// linear search is the cheapest lookup.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// In the order the batches were first seen.
    batches: VecDeque<(BatchId, Progress)>,
}

/// Unfinished batches remembered at most; far above what a few collectors
/// sharing one sink have open at once (one each).
pub(super) const MAX_TRACKED: usize = 64;

// ===== impl Progress =====

impl Progress {
    /// A fresh plan for a batch of `requests_len` requests and `usage_len`
    /// events: the request chunks, then one usage chunk.
    pub(super) fn new(
        requests_len: usize,
        usage_len: usize,
        streams: usize,
        min_rows: usize,
        invalid: u64,
    ) -> Self {
        let mut pending = split(Table::Requests, requests_len, streams, min_rows);
        if usage_len > 0 {
            pending.push(Chunk {
                table: Table::Usage,
                start: 0,
                end: usage_len,
            });
        }
        Self {
            requests_len,
            usage_len,
            pending,
            running: Vec::new(),
            in_doubt: Vec::new(),
            rejected: invalid,
            committed_any: false,
        }
    }

    /// Whether this progress can belong to a batch of these lengths (a
    /// caller reusing an id for another batch breaks the chunk ranges).
    pub(super) fn fits(&self, requests_len: usize, usage_len: usize) -> bool {
        self.requests_len == requests_len && self.usage_len == usage_len
    }

    /// A new attempt starts: chunks an earlier, dropped attempt was writing
    /// never had `COMMIT` sent, so they are written again.
    pub(super) fn resume(&mut self) {
        let mut again = std::mem::take(&mut self.running);
        again.append(&mut self.pending);
        self.pending = again;
    }

    /// The chunks in doubt, to resolve before writing.
    pub(super) fn in_doubt(&self) -> Vec<InDoubt> {
        self.in_doubt.clone()
    }

    /// Whether `chunk` was sent `COMMIT` without an answer.
    #[cfg(test)]
    pub(super) fn is_in_doubt(&self, chunk: Chunk) -> bool {
        self.txn_of(chunk).is_some()
    }

    /// The transaction `chunk` was sent `COMMIT` in, if it is in doubt.
    pub(super) fn txn_of(&self, chunk: Chunk) -> Option<Txn> {
        self.in_doubt
            .iter()
            .find(|d| d.chunk == chunk)
            .map(|d| d.txn.clone())
    }

    /// The next chunk to write, now running.
    pub(super) fn start_next(&mut self) -> Option<Chunk> {
        if self.pending.is_empty() {
            return None;
        }
        let chunk = self.pending.remove(0);
        self.running.push(chunk);
        Some(chunk)
    }

    /// `COMMIT` is about to be sent for running `chunk` in `txn`.
    pub(super) fn committing(&mut self, chunk: Chunk, txn: Txn) {
        remove(&mut self.running, chunk);
        self.in_doubt.push(InDoubt { chunk, txn });
    }

    /// `chunk` (running or in doubt) is committed.
    pub(super) fn committed(&mut self, chunk: Chunk) {
        self.forget(chunk);
        self.committed_any = true;
    }

    /// `chunk` (running, or in doubt and found aborted) is not stored: it
    /// goes back to the end of the queue, for this attempt or the retry.
    pub(super) fn not_stored(&mut self, chunk: Chunk) {
        self.forget(chunk);
        self.pending.push(chunk);
    }

    /// The database refused data in running `chunk`: its halves are written
    /// next, first half first.
    pub(super) fn split_refused(&mut self, chunk: Chunk) {
        self.forget(chunk);
        let mid = chunk.start + (chunk.end - chunk.start) / 2;
        self.pending.insert(
            0,
            Chunk {
                start: mid,
                ..chunk
            },
        );
        self.pending.insert(0, Chunk { end: mid, ..chunk });
    }

    /// Running `chunk` is refused for good: its `rows` are rejected.
    pub(super) fn refused(&mut self, chunk: Chunk, rows: u64) {
        self.forget(chunk);
        self.rejected += rows;
    }

    /// Whether every chunk is committed or refused.
    #[cfg(test)]
    pub(super) fn is_done(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty() && self.in_doubt.is_empty()
    }

    /// Chunks not stored (pending or running; none may be in doubt when
    /// this is asked).
    pub(super) fn unstored(&self) -> impl Iterator<Item = Chunk> + '_ {
        self.pending.iter().chain(&self.running).copied()
    }

    fn forget(&mut self, chunk: Chunk) {
        remove(&mut self.running, chunk);
        self.in_doubt.retain(|d| d.chunk != chunk);
    }
}

fn remove(chunks: &mut Vec<Chunk>, chunk: Chunk) {
    if let Some(i) = chunks.iter().position(|c| *c == chunk) {
        let _ = chunks.remove(i);
    }
}

// ===== impl Tracker =====

impl Tracker {
    /// The progress of batch `id`, resumed, or `fresh()` when there is none
    /// that fits the batch's lengths.
    pub(super) fn resume_or_insert(
        &mut self,
        id: BatchId,
        requests_len: usize,
        usage_len: usize,
        fresh: impl FnOnce() -> Progress,
    ) -> &mut Progress {
        let at = self.batches.iter().position(|(b, _)| *b == id);
        let at = match at {
            Some(i) if self.batches[i].1.fits(requests_len, usage_len) => i,
            found => {
                if let Some(i) = found {
                    let _ = self.batches.remove(i);
                }
                self.batches.push_back((id, fresh()));
                while self.batches.len() > MAX_TRACKED {
                    let _ = self.batches.pop_front();
                }
                self.batches.len() - 1
            }
        };
        let progress = &mut self.batches[at].1;
        progress.resume();
        progress
    }

    /// The progress of batch `id`, if tracked.
    pub(super) fn get_mut(&mut self, id: BatchId) -> Option<&mut Progress> {
        self.batches
            .iter_mut()
            .find(|(b, _)| *b == id)
            .map(|(_, p)| p)
    }

    /// Batch `id` is finished: its progress is dropped.
    pub(super) fn finish(&mut self, id: BatchId) -> Option<Progress> {
        let at = self.batches.iter().position(|(b, _)| *b == id)?;
        self.batches.remove(at).map(|(_, p)| p)
    }
}

/// Splits `len` records into at most `streams` contiguous chunks of at least
/// `min_rows` each (one chunk when the batch is small).
pub(super) fn split(table: Table, len: usize, streams: usize, min_rows: usize) -> Vec<Chunk> {
    if len == 0 {
        return Vec::new();
    }
    let n = (len / min_rows.max(1)).clamp(1, streams.max(1));
    let base = len / n;
    let extra = len % n;
    let mut chunks = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let size = base + usize::from(i < extra);
        chunks.push(Chunk {
            table,
            start,
            end: start + size,
        });
        start += size;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(xid: i64) -> Txn {
        Txn { xid }
    }

    #[test]
    fn split_respects_streams_and_minimum() {
        let c = split(Table::Requests, 1_000, 2, 500);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].start, c[0].end, c[1].start, c[1].end),
            (0, 500, 500, 1_000)
        );
        assert_eq!(split(Table::Requests, 999, 2, 500).len(), 1);
        assert_eq!(split(Table::Requests, 10, 4, 500).len(), 1);
        let c = split(Table::Requests, 10_001, 3, 500);
        assert_eq!(c.len(), 3);
        assert_eq!(c.iter().map(|c| c.end - c.start).sum::<usize>(), 10_001);
        assert_eq!(c.last().unwrap().end, 10_001);
        for w in c.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(split(Table::Usage, 0, 2, 500).is_empty());
    }

    #[test]
    fn a_dropped_attempt_leaves_running_chunks_to_write_and_committing_ones_in_doubt() {
        let mut p = Progress::new(1_000, 1, 2, 500, 0);
        let a = p.start_next().unwrap();
        let b = p.start_next().unwrap();
        p.committing(a, txn(7));
        // The attempt is dropped here: `b` never had COMMIT sent.
        p.resume();
        assert_eq!(
            p.in_doubt(),
            vec![InDoubt {
                chunk: a,
                txn: txn(7)
            }]
        );
        assert!(p.is_in_doubt(a) && !p.is_in_doubt(b));
        // `b` is written again, before the usage chunk that never started.
        assert_eq!(p.start_next(), Some(b));
        assert_eq!(p.start_next().map(|c| c.table), Some(Table::Usage));
        assert!(!p.is_done());
    }

    #[test]
    fn resolution_moves_an_in_doubt_chunk_to_done_or_back_to_pending() {
        let mut p = Progress::new(10, 0, 1, 500, 0);
        let a = p.start_next().unwrap();
        p.committing(a, txn(1));
        p.not_stored(a); // aborted
        assert!(!p.is_in_doubt(a));
        assert_eq!(p.start_next(), Some(a));
        p.committing(a, txn(2));
        p.committed(a);
        assert!(p.is_done() && p.committed_any);
    }

    #[test]
    fn bisection_writes_the_halves_next_and_counts_the_refused_row() {
        let mut p = Progress::new(4, 0, 1, 500, 1);
        let all = p.start_next().unwrap();
        p.split_refused(all);
        let first = p.start_next().unwrap();
        assert_eq!((first.start, first.end), (0, 2));
        p.committed(first);
        let second = p.start_next().unwrap();
        assert_eq!((second.start, second.end), (2, 4));
        p.refused(second, 2);
        assert!(p.is_done());
        assert_eq!(p.rejected, 3);
        assert_eq!(p.unstored().count(), 0);
    }

    #[test]
    fn the_tracker_resumes_by_id_and_lengths_and_forgets_the_oldest() {
        let mut t = Tracker::default();
        let id = BatchId::generate();
        let fresh = || Progress::new(10, 0, 1, 500, 0);
        let a = t.resume_or_insert(id, 10, 0, fresh).start_next().unwrap();
        t.get_mut(id).unwrap().committing(a, txn(3));
        // Same id and shape: resumed, the chunk still in doubt.
        assert!(t.resume_or_insert(id, 10, 0, fresh).is_in_doubt(a));
        // Same id, another shape: a contract breach, started afresh.
        assert!(
            !t.resume_or_insert(id, 11, 0, || Progress::new(11, 0, 1, 500, 0))
                .is_in_doubt(a)
        );
        assert!(t.finish(id).is_some() && t.get_mut(id).is_none());
        let ids: Vec<_> = (0..=MAX_TRACKED).map(|_| BatchId::generate()).collect();
        for &id in &ids {
            let _ = t.resume_or_insert(id, 1, 0, || Progress::new(1, 0, 1, 1, 0));
        }
        assert!(t.get_mut(ids[0]).is_none(), "the oldest is forgotten");
        assert!(t.get_mut(ids[MAX_TRACKED]).is_some());
    }
}
