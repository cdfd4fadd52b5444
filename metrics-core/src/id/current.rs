//! The current request's correlation id: a thread-local slot that the
//! middleware fills only while it runs the inner service (its `call` and each
//! poll of its response future), so handlers, extractors, inner middleware and
//! their log lines can read the id without it being stored in the request's
//! extensions.
//!
//! Why not the extensions: on a request that has none yet (a plain hyper
//! request), the first insert allocates the map's box, its table and the
//! value's box, three allocations per request for an id most handlers never
//! read; behind axum (which already put three entries there) it still boxes
//! the value and grows the table. Filling this slot moves the id in and back
//! out: no allocation, no reference count.
//!
//! The slot is per thread, not per task: it holds an id only during a `call`
//! or a poll, which never migrate between threads midway, and
//! [`CorrelationId::scope`] restores the previous content when it returns or
//! unwinds, so a task that runs later on the same thread (or a nested
//! middleware) never sees a stale id.

use std::cell::Cell;

use super::CorrelationId;

thread_local! {
    static CURRENT: Cell<Option<CorrelationId>> = const { Cell::new(None) };
}

impl CorrelationId {
    /// The id of the request whose service code is running on this thread
    /// right now, if any: inside a handler (or an inner middleware's `call`,
    /// or its response future) behind a layer that sets it, such as
    /// `metrics_tower::MetricsLayer` with correlation ids on.
    ///
    /// Cloning is a reference-count bump. Outside such code (a task spawned
    /// by the handler, a response body streamed after the handler returned)
    /// it is `None`: take the id in the handler and move it along.
    ///
    /// ```
    /// use metrics_core::CorrelationId;
    ///
    /// assert_eq!(CorrelationId::current(), None);
    /// let mut slot = Some(CorrelationId::generate());
    /// let seen = CorrelationId::scope(&mut slot, CorrelationId::current);
    /// assert_eq!(seen, slot);
    /// assert_eq!(CorrelationId::current(), None);
    /// ```
    pub fn current() -> Option<Self> {
        CURRENT
            .try_with(|current| {
                let id = current.take();
                let copy = id.clone();
                current.set(id);
                copy
            })
            .ok()
            .flatten()
    }

    /// Runs `f` with the id in `slot` as the [current](Self::current) one,
    /// then puts it back into `slot`, also when `f` panics; whatever was
    /// current before is current again afterwards (scopes nest). An empty
    /// `slot` leaves the current id as it is (an inner layer without ids
    /// under an outer one that has one: the request's id stays current).
    ///
    /// The id is moved, not cloned, so a scope costs two thread-local swaps.
    /// Middleware calls it around the inner service's `call` and around every
    /// poll of its future.
    #[inline]
    pub fn scope<R>(slot: &mut Option<Self>, f: impl FnOnce() -> R) -> R {
        if slot.is_none() {
            return f();
        }
        // Puts the id back into the caller's slot and the previous one into
        // the thread-local when dropped: at the end of the scope or while
        // unwinding.
        struct Restore<'a> {
            slot: &'a mut Option<CorrelationId>,
            previous: Option<CorrelationId>,
        }
        impl Drop for Restore<'_> {
            #[inline]
            fn drop(&mut self) {
                let previous = self.previous.take();
                // The thread-local was alive when the scope began, and this
                // runs before the thread's teardown, so it still is.
                if let Ok(id) = CURRENT.try_with(|current| current.replace(previous)) {
                    *self.slot = id;
                }
            }
        }
        // Fails only during this thread's teardown: then `slot` keeps the id
        // and `f` runs without it being current.
        let Ok(previous) = CURRENT.try_with(|current| current.replace(slot.take())) else {
            return f();
        };
        let _restore = Restore { slot, previous };
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        let mut outer = Some(CorrelationId::generate());
        let mut inner = Some(CorrelationId::generate());
        let outer_copy = outer.clone();
        let inner_copy = inner.clone();
        CorrelationId::scope(&mut outer, || {
            assert_eq!(CorrelationId::current(), outer_copy);
            CorrelationId::scope(&mut inner, || {
                assert_eq!(CorrelationId::current(), inner_copy);
            });
            assert_eq!(CorrelationId::current(), outer_copy);
            // An empty slot keeps the outer id current.
            let mut empty = None;
            CorrelationId::scope(&mut empty, || {
                assert_eq!(CorrelationId::current(), outer_copy);
            });
            assert_eq!(CorrelationId::current(), outer_copy);
        });
        assert_eq!(CorrelationId::current(), None);
        assert_eq!(outer, outer_copy, "the id is back in its slot");
        assert_eq!(inner, inner_copy);
    }

    #[test]
    fn a_panic_inside_the_scope_restores_the_slot() {
        let mut slot = Some(CorrelationId::generate());
        let copy = slot.clone();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CorrelationId::scope(&mut slot, || panic!("handler panicked"));
        }));
        assert!(caught.is_err());
        assert_eq!(CorrelationId::current(), None);
        assert_eq!(slot, copy);
    }

    #[test]
    fn other_threads_never_see_the_id() {
        let mut slot = Some(CorrelationId::generate());
        CorrelationId::scope(&mut slot, || {
            let seen = std::thread::spawn(CorrelationId::current).join().unwrap();
            assert_eq!(seen, None);
        });
    }
}
