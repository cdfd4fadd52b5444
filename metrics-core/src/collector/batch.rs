//! When to write the batch being assembled: a small pure state machine, kept
//! apart from the worker's I/O so the size and linger rules are unit-tested
//! without a runtime.

use std::time::Duration;

use tokio::time::Instant;

/// Size/linger bookkeeping of the batch the worker is filling.
///
/// - The batch is *due* when it is full, when its linger deadline has passed,
///   or (non-empty) when the worker is flushing or draining.
/// - The linger deadline is armed by the batch's first record (the moment the
///   worker takes it from the queue) and cleared when the batch is written.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    max_batch: usize,
    linger: Duration,
    len: usize,
    deadline: Option<Instant>,
}

/// What the worker should wait for when the batch is not due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The batch is empty: wait for the first record (or a control message).
    FirstRecord,
    /// The batch is lingering: wait until this instant, a "batch is full"
    /// nudge from a producer, or a control message.
    Until(Instant),
}

impl Batcher {
    pub(crate) fn new(max_batch: usize, linger: Duration) -> Self {
        debug_assert!(max_batch > 0);
        Self {
            max_batch,
            linger,
            len: 0,
            deadline: None,
        }
    }

    /// A record was added to the batch at `now`.
    #[cfg(test)]
    pub(crate) fn push(&mut self, now: Instant) {
        self.add(now, 1);
    }

    /// `n` records were added to the batch at `now` (none: no change).
    pub(crate) fn add(&mut self, now: Instant, n: usize) {
        if n == 0 {
            return;
        }
        if self.len == 0 {
            self.deadline = Some(now + self.linger);
        }
        self.len += n;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.max_batch
    }

    /// Whether the batch should be written now. `flushing` is true while a
    /// flush is waiting or the collector is draining for shutdown.
    pub(crate) fn is_due(&self, now: Instant, flushing: bool) -> bool {
        match self.deadline {
            None => false,
            Some(deadline) => self.is_full() || flushing || now >= deadline,
        }
    }

    /// What to wait for when the batch is not due.
    pub(crate) fn wait(&self) -> Wait {
        match self.deadline {
            None => Wait::FirstRecord,
            Some(deadline) => Wait::Until(deadline),
        }
    }

    /// The batch was written (or dropped): start over.
    pub(crate) fn reset(&mut self) {
        self.len = 0;
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_batch_is_never_due() {
        let b = Batcher::new(3, ms(100));
        let t0 = Instant::now();
        assert!(!b.is_due(t0 + ms(1_000), true));
        assert_eq!(b.wait(), Wait::FirstRecord);
    }

    #[test]
    fn due_when_full() {
        let mut b = Batcher::new(3, ms(100));
        let t0 = Instant::now();
        b.push(t0);
        b.push(t0);
        assert!(!b.is_due(t0, false));
        b.push(t0);
        assert!(b.is_full());
        assert!(b.is_due(t0, false));
    }

    #[test]
    fn linger_is_armed_by_the_first_record() {
        let mut b = Batcher::new(10, ms(100));
        let t0 = Instant::now();
        b.push(t0);
        // Later records do not move the deadline.
        b.push(t0 + ms(60));
        assert_eq!(b.wait(), Wait::Until(t0 + ms(100)));
        assert!(!b.is_due(t0 + ms(99), false));
        assert!(b.is_due(t0 + ms(100), false));
    }

    #[test]
    fn flushing_makes_any_non_empty_batch_due() {
        let mut b = Batcher::new(10, ms(100));
        let t0 = Instant::now();
        b.push(t0);
        assert!(!b.is_due(t0, false));
        assert!(b.is_due(t0, true));
    }

    #[test]
    fn reset_disarms() {
        let mut b = Batcher::new(2, ms(100));
        let t0 = Instant::now();
        b.push(t0);
        b.push(t0);
        b.reset();
        assert_eq!(b.len(), 0);
        assert_eq!(b.wait(), Wait::FirstRecord);
        b.push(t0 + ms(500));
        assert_eq!(b.wait(), Wait::Until(t0 + ms(600)));
    }
}
