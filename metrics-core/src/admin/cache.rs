//! [`CachedAdminCheck`]: a TTL cache in front of any [`AdminCheck`].
//!
//! Why our own and not moka: see `docs/decisions.md` ("Admin check cache").
//! In short, the TTL must follow Tokio's clock so expiry is testable with
//! paused time, and the few rules we need (errors never cached, an expired
//! answer is never served, one lookup per user) fit in this file.

use std::any::type_name;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use tokio::time::Instant;

use super::{AdminCheck, AdminCheckError};
use crate::identity::Identity;
use crate::record::UserId;

type Answer = Result<bool, AdminCheckError>;
type Lookup = Shared<BoxFuture<'static, Answer>>;

/// Caches the answers of another [`AdminCheck`] per user id.
///
/// - Both answers (admin and not admin) are kept for the TTL (default
///   [`CachedAdminCheck::DEFAULT_TTL`], 300 s), counted from when the lookup
///   finished.
/// - The cache is consulted before the inner check; the inner check runs
///   only on a miss or an expired entry.
/// - At most one lookup per user is in flight: concurrent callers for the same
///   user wait for that lookup and share its answer, error included. The
///   lookup is driven by its callers (no task is spawned); if every caller
///   goes away, it is dropped and the next caller starts a new one.
/// - Errors are never cached, and an expired entry is never served: an
///   expired entry followed by a failing lookup yields the error (the guard's
///   503), not the stale answer.
/// - At most [`CachedAdminCheck::DEFAULT_MAX_ENTRIES`] users are kept (see
///   [`CachedAdminCheck::with_max_entries`]). When full, expired entries go
///   first, then the entry closest to expiry. Making room scans the map
///   under its lock, so it costs O(entries) for a newly seen user while the
///   cache is full; that is small next to the remote call it precedes.
///
/// Expiry uses [`tokio::time::Instant`], so tests can drive it with
/// `tokio::time::pause` and `advance`.
///
/// ```
/// use std::time::Duration;
/// use metrics_core::{AdminCheck, CachedAdminCheck, Identity, StaticAdmins};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins = CachedAdminCheck::new(StaticAdmins::parse("ada@example.com"))
///     .with_ttl(Duration::from_secs(60))
///     .with_max_entries(1_000);
/// assert!(admins.is_admin(&Identity::new("ada@example.com")).await.unwrap());
/// // Answered from the cache for the next 60 s.
/// assert!(admins.is_admin(&Identity::new("ada@example.com")).await.unwrap());
/// # }
/// ```
pub struct CachedAdminCheck<C> {
    inner: Arc<C>,
    ttl: Duration,
    max_entries: usize,
    state: Mutex<State>,
}

struct State {
    entries: HashMap<UserId, Entry>,
    // Tells apart successive lookups for the same user, so a finished lookup
    // only replaces its own entry (not a newer lookup or a fresher answer).
    next_lookup: u64,
}

enum Entry {
    Ready {
        is_admin: bool,
        expires_at: Instant,
    },
    // Weak: the callers own the lookup, so it is dropped when they all are.
    Loading {
        id: u64,
        lookup: WeakShared<BoxFuture<'static, Answer>>,
    },
}

enum Step {
    Cached(bool),
    Wait { id: Option<u64>, lookup: Lookup },
}

// ===== impl CachedAdminCheck =====

impl<C: AdminCheck> CachedAdminCheck<C> {
    /// How long an answer is kept unless [`with_ttl`](Self::with_ttl) says
    /// otherwise: 300 s.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    /// How many users are kept unless
    /// [`with_max_entries`](Self::with_max_entries) says otherwise.
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

    /// Wraps `inner` with the default TTL and size.
    pub fn new(inner: C) -> Self {
        Self {
            inner: Arc::new(inner),
            ttl: Self::DEFAULT_TTL,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            state: Mutex::new(State {
                entries: HashMap::new(),
                next_lookup: 0,
            }),
        }
    }

    /// How long both answers are kept. `Duration::ZERO` disables caching but
    /// keeps the one-lookup-per-user coalescing.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many users are kept at most (at least 1).
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries.max(1);
        self
    }

    /// The wrapped check.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// Forgets what is known about `user` (for example after revoking their
    /// admin rights). A lookup in flight still answers its callers but is not
    /// stored.
    pub fn invalidate(&self, user: &UserId) {
        self.lock().entries.remove(user);
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.lock().entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // critical section is a single map operation.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer, or the lookup to wait for (joined or started).
    fn step(&self, identity: &Identity) -> Step {
        let user = identity.user_id();
        let now = Instant::now();
        let mut state = self.lock();
        match state.entries.get(user) {
            Some(Entry::Ready {
                is_admin,
                expires_at,
            }) if now < *expires_at => return Step::Cached(*is_admin),
            Some(Entry::Loading { id, lookup }) => {
                if let Some(lookup) = lookup.upgrade() {
                    return Step::Wait {
                        id: Some(*id),
                        lookup,
                    };
                }
            }
            // Expired: fall through to a new lookup. The stale answer stays
            // until replaced below, but is never returned.
            Some(Entry::Ready { .. }) | None => {}
        }

        let lookup = self.start_lookup(identity);
        let id = state.next_lookup;
        state.next_lookup += 1;
        let Some(weak) = lookup.downgrade() else {
            // Only `None` once the lookup has completed, which it cannot
            // have: nobody has polled it yet.
            return Step::Wait { id: None, lookup };
        };
        let loading = Entry::Loading { id, lookup: weak };
        // Replacing an expired or abandoned entry needs no room.
        if !state.entries.contains_key(user) && !state.make_room(self.max_entries, now) {
            // Full of lookups in flight: run this one without coalescing
            // rather than grow past the bound.
            return Step::Wait { id: None, lookup };
        }
        state.entries.insert(user.clone(), loading);
        Step::Wait {
            id: Some(id),
            lookup,
        }
    }

    fn start_lookup(&self, identity: &Identity) -> Lookup {
        let inner = Arc::clone(&self.inner);
        let identity = identity.clone();
        async move { inner.is_admin(&identity).await }
            .boxed()
            .shared()
    }

    /// Stores the answer of lookup `id` if its entry is still the current
    /// one; drops the entry on error so the next call asks again.
    fn finish(&self, user: &UserId, id: u64, answer: &Answer) {
        let mut state = self.lock();
        let MapEntry::Occupied(mut entry) = state.entries.entry(user.clone()) else {
            return;
        };
        if !matches!(entry.get(), Entry::Loading { id: current, .. } if *current == id) {
            return;
        }
        match answer {
            Ok(is_admin) => {
                entry.insert(Entry::Ready {
                    is_admin: *is_admin,
                    expires_at: Instant::now() + self.ttl,
                });
            }
            Err(_) => {
                entry.remove();
            }
        }
    }
}

impl State {
    /// Makes room for one more entry; false when every entry is a lookup in
    /// flight.
    fn make_room(&mut self, max_entries: usize, now: Instant) -> bool {
        if self.entries.len() < max_entries {
            return true;
        }
        self.entries.retain(|_, entry| match entry {
            Entry::Ready { expires_at, .. } => now < *expires_at,
            Entry::Loading { lookup, .. } => lookup.upgrade().is_some(),
        });
        if self.entries.len() < max_entries {
            return true;
        }
        let oldest = self
            .entries
            .iter()
            .filter_map(|(user, entry)| match entry {
                Entry::Ready { expires_at, .. } => Some((*expires_at, user)),
                Entry::Loading { .. } => None,
            })
            .min_by_key(|(expires_at, _)| *expires_at)
            .map(|(_, user)| user.clone());
        match oldest {
            Some(user) => {
                self.entries.remove(&user);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl<C: AdminCheck> AdminCheck for CachedAdminCheck<C> {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        match self.step(identity) {
            Step::Cached(is_admin) => Ok(is_admin),
            Step::Wait { id, lookup } => {
                let answer = lookup.await;
                if let Some(id) = id {
                    self.finish(identity.user_id(), id, &answer);
                }
                answer
            }
        }
    }
}

impl<C> fmt::Debug for CachedAdminCheck<C> {
    // `C` need not be Debug; entries hold user ids, which are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.state.lock().map_or(0, |state| state.entries.len());
        f.debug_struct("CachedAdminCheck")
            .field("inner", &type_name::<C>())
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("entries", &len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    /// Answers from a fixed list, counts calls, can fail and can be held at a
    /// gate until the test releases it.
    #[derive(Default)]
    struct Fake {
        admins: Vec<&'static str>,
        calls: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
        gate: Option<Arc<Semaphore>>,
    }

    impl Fake {
        fn admins(admins: &[&'static str]) -> Self {
            Self {
                admins: admins.to_vec(),
                ..Self::default()
            }
        }

        fn gated(mut self, gate: &Arc<Semaphore>) -> Self {
            self.gate = Some(Arc::clone(gate));
            self
        }

        fn set_failing(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl AdminCheck for Fake {
        async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(AdminCheckError::Status { status: 500 });
            }
            Ok(self.admins.contains(&identity.user_id().as_str()))
        }
    }

    fn id(user: &str) -> Identity {
        Identity::new(user)
    }

    fn entries<C: AdminCheck>(cache: &CachedAdminCheck<C>) -> usize {
        cache.lock().entries.len()
    }

    #[tokio::test(start_paused = true)]
    async fn both_answers_are_kept_for_the_ttl() {
        let cache = CachedAdminCheck::new(Fake::admins(&["ada"]));
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert!(!cache.is_admin(&id("bob")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 2);

        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert!(!cache.is_admin(&id("bob")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 2, "answered from the cache");

        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert!(!cache.is_admin(&id("bob")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 4, "expired at exactly 300 s");
    }

    #[tokio::test(start_paused = true)]
    async fn custom_ttl_and_zero_ttl() {
        let cache = CachedAdminCheck::new(Fake::admins(&["ada"])).with_ttl(Duration::from_secs(5));
        cache.is_admin(&id("ada")).await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        cache.is_admin(&id("ada")).await.unwrap();
        assert_eq!(cache.get_ref().calls(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        cache.is_admin(&id("ada")).await.unwrap();
        assert_eq!(cache.get_ref().calls(), 2);

        let uncached = CachedAdminCheck::new(Fake::admins(&["ada"])).with_ttl(Duration::ZERO);
        uncached.is_admin(&id("ada")).await.unwrap();
        uncached.is_admin(&id("ada")).await.unwrap();
        assert_eq!(uncached.get_ref().calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_never_cached() {
        let cache = CachedAdminCheck::new(Fake::admins(&["ada"]));
        cache.get_ref().set_failing(true);
        assert!(matches!(
            cache.is_admin(&id("ada")).await,
            Err(AdminCheckError::Status { status: 500 })
        ));
        assert_eq!(entries(&cache), 0);
        cache.get_ref().set_failing(false);
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 2, "the error was not remembered");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_answer_plus_failing_check_is_an_error_not_the_stale_answer() {
        let cache = CachedAdminCheck::new(Fake::admins(&["ada"]));
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        cache.get_ref().set_failing(true);
        // Still fresh: the failing backend is not even asked.
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 1);

        tokio::time::advance(CachedAdminCheck::<Fake>::DEFAULT_TTL).await;
        assert!(cache.is_admin(&id("ada")).await.is_err());
        assert!(cache.is_admin(&id("ada")).await.is_err(), "and again");
        assert_eq!(cache.get_ref().calls(), 3);

        cache.get_ref().set_failing(false);
        assert!(cache.is_admin(&id("ada")).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn one_lookup_in_flight_per_user() {
        let gate = Arc::new(Semaphore::new(0));
        let cache = Arc::new(CachedAdminCheck::new(Fake::admins(&["ada"]).gated(&gate)));
        let mut waiters = Vec::new();
        for user in ["ada", "ada", "ada", "bob", "bob"] {
            let cache = Arc::clone(&cache);
            waiters.push(tokio::spawn(async move { cache.is_admin(&id(user)).await }));
        }
        // Let every waiter reach the gate.
        tokio::task::yield_now().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            cache.get_ref().calls(),
            2,
            "one lookup for ada, one for bob"
        );

        gate.add_permits(2);
        let mut answers = Vec::new();
        for w in waiters {
            answers.push(w.await.unwrap().unwrap());
        }
        assert_eq!(answers, [true, true, true, false, false]);
        assert_eq!(cache.get_ref().calls(), 2);
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 2, "and stored");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_failure_and_the_next_call_asks_again() {
        let gate = Arc::new(Semaphore::new(0));
        let cache = Arc::new(CachedAdminCheck::new(Fake::admins(&["ada"]).gated(&gate)));
        cache.get_ref().set_failing(true);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.is_admin(&id("ada")).await })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1);
        for w in waiters {
            assert!(w.await.unwrap().is_err());
        }
        assert_eq!(cache.get_ref().calls(), 1);

        cache.get_ref().set_failing(false);
        gate.add_permits(1);
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_caller_leaves_the_lookup_to_the_others() {
        let gate = Arc::new(Semaphore::new(0));
        let cache = Arc::new(CachedAdminCheck::new(Fake::admins(&["ada"]).gated(&gate)));
        let first = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.is_admin(&id("ada")).await })
        };
        let second = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.is_admin(&id("ada")).await })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        gate.add_permits(1);
        assert!(second.await.unwrap().unwrap());
        assert_eq!(cache.get_ref().calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_abandoned_by_everyone_is_started_again() {
        let gate = Arc::new(Semaphore::new(0));
        let cache = Arc::new(CachedAdminCheck::new(Fake::admins(&["ada"]).gated(&gate)));
        let only = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.is_admin(&id("ada")).await })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        only.abort();
        let _ = only.await;
        gate.add_permits(1);
        assert!(cache.is_admin(&id("ada")).await.unwrap());
        assert_eq!(cache.get_ref().calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_bounded_evicting_expired_then_oldest() {
        let cache = CachedAdminCheck::new(Fake::admins(&["a"])).with_max_entries(2);
        cache.is_admin(&id("a")).await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        cache.is_admin(&id("b")).await.unwrap();
        cache.is_admin(&id("c")).await.unwrap();
        assert_eq!(entries(&cache), 2);
        assert_eq!(cache.get_ref().calls(), 3);

        // "a" was closest to expiry, so it went; "b" and "c" are still cached.
        cache.is_admin(&id("b")).await.unwrap();
        cache.is_admin(&id("c")).await.unwrap();
        assert_eq!(cache.get_ref().calls(), 3);
        cache.is_admin(&id("a")).await.unwrap();
        assert_eq!(cache.get_ref().calls(), 4);
        assert_eq!(entries(&cache), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_forgets() {
        let cache = CachedAdminCheck::new(Fake::admins(&["ada"]));
        cache.is_admin(&id("ada")).await.unwrap();
        cache.invalidate(&UserId::new("ada"));
        cache.is_admin(&id("ada")).await.unwrap();
        assert_eq!(cache.get_ref().calls(), 2);
        cache.invalidate_all();
        assert_eq!(entries(&cache), 0);
    }

    #[test]
    fn debug_shows_settings_not_users() {
        let cache = CachedAdminCheck::new(Fake::admins(&["ada"]));
        let shown = format!("{cache:?}");
        assert!(shown.contains("ttl: 300s"), "{shown}");
        assert!(!shown.contains("ada"), "{shown}");
    }
}
