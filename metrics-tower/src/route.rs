//! Route labels: which `endpoint` a request is recorded under.
//!
//! A label must be a route *template* (`/users/{id}`), never the raw path:
//! raw paths make one label per user id and let any client (or scanner) grow
//! the label set without bound. Two sources exist:
//!
//! - a router that knows the template (axum's `MatchedPath`, see
//!   [`DefaultRoute`] with the `axum` feature, or your own [`MakeRoute`]);
//! - otherwise the path itself, normalised by [`normalize_path`]: numeric ids,
//!   UUIDs, long hex strings and very long segments become `{id}`.
//!
//! A normalised path is only a guess at a template, so a request that ends in
//! `404 Not Found` without a known template is recorded as
//! [`Route::UNMATCHED`]: scanners probing random paths then share one label.
//!
//! Every label goes through [`RouteLabels`], a set of distinct labels capped by
//! [`MetricsLayer::max_routes`](crate::MetricsLayer::max_routes). Once the cap
//! is reached, new labels are recorded as [`Route::OVERFLOW`] and counted.
//! Known labels are looked up by `&str` and handed out as `&'static str` (one
//! copy per distinct text in the process, never freed; bounded by the caps),
//! so the hot path allocates only the first time a label is seen and a record
//! carries its route without a reference count.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError, RwLock};

use http::Request;
use metrics_core::Route;

/// The longest normalised path turned into a label, in bytes. Longer paths
/// are recorded as [`Route::OVERFLOW`] (no real route is that long, and a
/// fixed-size buffer keeps normalisation allocation-free).
pub const MAX_LABEL_LEN: usize = 256;

/// Segments longer than this are treated as opaque tokens and become `{id}`.
const MAX_SEGMENT_LEN: usize = 64;

/// Hex strings at least this long (hashes, object ids) become `{id}`.
const MIN_HEX_ID_LEN: usize = 16;

/// The default cap on distinct route labels.
pub const DEFAULT_MAX_ROUTES: usize = 1_000;

// ===== RouteLabel =====

/// What a [`MakeRoute`] knows about a request's route.
#[derive(Debug, Clone)]
pub enum RouteLabel<'a> {
    /// A route template borrowed from the request (for example axum's
    /// `MatchedPath`). The layer interns it, subject to the label cap.
    Template(&'a str),
    /// A finished label used as is, without counting against the cap. Use it
    /// only for labels from a small fixed set (such as [`Route::UNMATCHED`]).
    Fixed(Route),
    /// No template is known: the layer normalises the request path (see
    /// [`normalize_path`]) and records `404` responses as
    /// [`Route::UNMATCHED`].
    Unknown,
}

// ===== MakeRoute =====

/// Chooses the route label of a request.
///
/// Called once per request in `Service::call`, so implementations must be
/// cheap and must not allocate per request: return borrowed templates as
/// [`RouteLabel::Template`] and let the layer intern them.
///
/// ```
/// use http::Request;
/// use metrics_core::Route;
/// use metrics_tower::route::{MakeRoute, RouteLabel};
///
/// /// Everything under /static/ is one label; the rest is normalised.
/// #[derive(Clone, Debug)]
/// struct StaticFiles;
///
/// impl<B> MakeRoute<B> for StaticFiles {
///     fn make_route<'a>(&self, req: &'a Request<B>) -> RouteLabel<'a> {
///         if req.uri().path().starts_with("/static/") {
///             RouteLabel::Fixed(Route::from_static("/static/{*file}"))
///         } else {
///             RouteLabel::Unknown
///         }
///     }
/// }
/// ```
///
/// Closures implement it too, as tower-http's hooks do. Rust infers a
/// closure's signature with the label borrowing from the request only when
/// it is written where that signature is expected, so pass it through
/// [`from_fn`] (functions need nothing):
///
/// ```
/// use http::Request;
/// use metrics_tower::route::{self, MakeRoute, RouteLabel};
///
/// // Routes are the first path segment, e.g. `/reports` for `/reports/2024/q1`.
/// let first_segment = route::from_fn(|req: &Request<()>| {
///     let path = req.uri().path();
///     let end = path[1..].find('/').map_or(path.len(), |i| i + 1);
///     RouteLabel::Template(&path[..end])
/// });
///
/// let req = Request::get("/reports/2024/q1").body(()).unwrap();
/// assert!(matches!(first_segment.make_route(&req), RouteLabel::Template("/reports")));
/// ```
pub trait MakeRoute<B> {
    /// The label for `req`.
    fn make_route<'a>(&self, req: &'a Request<B>) -> RouteLabel<'a>;
}

impl<B, F> MakeRoute<B> for F
where
    F: for<'a> Fn(&'a Request<B>) -> RouteLabel<'a>,
{
    fn make_route<'a>(&self, req: &'a Request<B>) -> RouteLabel<'a> {
        self(req)
    }
}

/// Returns `f`, a closure, as a [`MakeRoute`]: it only states the
/// signature (the label may borrow from the request), which Rust cannot
/// infer for a closure stored first and used later.
pub fn from_fn<B, F>(f: F) -> F
where
    F: for<'a> Fn(&'a Request<B>) -> RouteLabel<'a>,
{
    f
}

/// The default [`MakeRoute`].
///
/// With the `axum` feature it uses axum's `MatchedPath` when the request
/// carries one (the layer added with `Router::layer` runs after routing, so it
/// does, nested routers included); otherwise, and always without the feature,
/// it normalises the path ([`RouteLabel::Unknown`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRoute;

impl<B> MakeRoute<B> for DefaultRoute {
    fn make_route<'a>(&self, req: &'a Request<B>) -> RouteLabel<'a> {
        #[cfg(feature = "axum")]
        if let Some(path) = req.extensions().get::<axum::extract::MatchedPath>() {
            return RouteLabel::Template(path.as_str());
        }
        let _ = req;
        RouteLabel::Unknown
    }
}

/// A [`MakeRoute`] that never looks at a router: every request is labelled by
/// its normalised path. Useful for plain hyper/tower services.
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalizedPath;

impl<B> MakeRoute<B> for NormalizedPath {
    fn make_route<'a>(&self, _req: &'a Request<B>) -> RouteLabel<'a> {
        RouteLabel::Unknown
    }
}

// ===== normalisation =====

/// Normalises `path` into a route-like label, writing it into `out`, and
/// returns it; `None` when the result would be longer than
/// [`MAX_LABEL_LEN`].
///
/// Segments that look like identifiers become `{id}`: all digits, UUIDs, hex
/// strings of 16 or more characters, and any segment longer than 64 bytes.
/// The path is never percent-decoded, so invalid encodings are just text.
///
/// ```
/// use metrics_tower::route::{normalize_path, MAX_LABEL_LEN};
/// let mut buf = [0u8; MAX_LABEL_LEN];
/// assert_eq!(normalize_path("/users/42/orders", &mut buf), Some("/users/{id}/orders"));
/// assert_eq!(
///     normalize_path("/o/0b7e6d2c-93a4-4c6e-8a51-0d4f3b1e9c2a", &mut buf),
///     Some("/o/{id}")
/// );
/// assert_eq!(normalize_path(&"/a".repeat(200), &mut buf), None);
/// ```
pub fn normalize_path<'b>(path: &str, out: &'b mut [u8; MAX_LABEL_LEN]) -> Option<&'b str> {
    // Whole segments joined by '/' are valid UTF-8; the check costs
    // little and keeps the crate free of `unsafe`.
    std::str::from_utf8(normalize_path_bytes(path, out)?).ok()
}

/// [`normalize_path`] without the final UTF-8 check: the layer looks the
/// bytes up in the label cache first and checks them only on a miss (the
/// check is a third of the normaliser's cost on short paths).
pub(crate) fn normalize_path_bytes<'b>(
    path: &str,
    out: &'b mut [u8; MAX_LABEL_LEN],
) -> Option<&'b [u8]> {
    let path = if path.is_empty() { "/" } else { path };
    let mut len = 0;
    // Byte-wise split on '/': a plain loop, much cheaper than `str::split`'s
    // searcher for paths of a few short segments. '/' is ASCII, so every
    // segment is whole UTF-8.
    for (i, segment) in path.as_bytes().split(|b| *b == b'/').enumerate() {
        let piece: &[u8] = if looks_like_id(segment) {
            b"{id}"
        } else {
            segment
        };
        let sep = usize::from(i > 0);
        let end = len + sep + piece.len();
        if end > MAX_LABEL_LEN {
            return None;
        }
        if sep == 1 {
            out[len] = b'/';
        }
        out[len + sep..end].copy_from_slice(piece);
        len = end;
    }
    Some(&out[..len])
}

fn looks_like_id(b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    b.len() > MAX_SEGMENT_LEN
        || b.iter().all(u8::is_ascii_digit)
        || (b.len() >= MIN_HEX_ID_LEN && b.iter().all(u8::is_ascii_hexdigit))
        || is_uuid(b)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

// ===== RouteLabels =====

/// The set of distinct route labels seen so far, capped.
///
/// Shared by every service a [`MetricsLayer`](crate::MetricsLayer) builds
/// (axum builds one per route), so the cap is global to the layer.
pub struct RouteLabels {
    known: RwLock<HashSet<&'static str>>,
    max: usize,
    overflow: AtomicU64,
    /// Tells the sets apart in the per-thread cache (an address could be
    /// reused by a later set; an id never is).
    id: u64,
}

/// Every label text any set has admitted, each allocated once for the
/// process and never freed (see [`static_label`]).
static STATIC_LABELS: LazyLock<Mutex<HashSet<&'static str>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// `label` as a `&'static str`: the process's one copy of that text.
///
/// Admitted labels are `'static` so that a record's route is a plain
/// pointer: with a shared `Arc<str>`, every record would increment the
/// label's count on the request thread and decrement it on the collector's
/// thread, and that one cache line would move between the two on every
/// record. The copies are never freed; they are bounded by the distinct texts
/// admitted in the process, which each set caps (`max_routes`, 1,000 by
/// default) and which repeat across sets (a label is allocated once however
/// many layers admit it).
fn static_label(label: &str) -> &'static str {
    let mut all = STATIC_LABELS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(l) = all.get(label) {
        return l;
    }
    let leaked: &'static str = Box::leak(Box::from(label));
    all.insert(leaked);
    leaked
}

/// Source of [`RouteLabels`] ids.
static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// How many recently used labels each thread remembers.
const CACHE_SLOTS: usize = 8;

/// A thread's most recently used labels, checked before the shared set: a
/// hit costs a few length and byte comparisons instead of a read lock and a
/// SipHash. Entries are compared by content, so a hit is always the label
/// the set would return; labels are never removed from a set, so an entry
/// never goes stale.
struct LabelCache {
    slots: [Option<(u64, Route)>; CACHE_SLOTS],
    /// The slot the next miss overwrites (round robin).
    next: usize,
}

impl LabelCache {
    fn lookup(&self, set: u64, label: &[u8]) -> Option<Route> {
        self.slots.iter().flatten().find_map(|(id, route)| {
            (*id == set && route.as_str().as_bytes() == label).then(|| route.clone())
        })
    }

    fn remember(&mut self, set: u64, route: &Route) {
        self.slots[self.next] = Some((set, route.clone()));
        self.next = (self.next + 1) % CACHE_SLOTS;
    }
}

thread_local! {
    static LABEL_CACHE: RefCell<LabelCache> = const {
        RefCell::new(LabelCache {
            slots: [const { None }; CACHE_SLOTS],
            next: 0,
        })
    };
}

/// A snapshot of a layer's route labels, from
/// [`MetricsLayer::route_stats`](crate::MetricsLayer::route_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// Distinct labels admitted so far.
    pub distinct: usize,
    /// The cap on distinct labels.
    pub max: usize,
    /// Requests recorded as [`Route::OVERFLOW`] because the cap was reached or
    /// the path was too long to label.
    pub overflowed: u64,
}

impl RouteLabels {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            known: RwLock::new(HashSet::new()),
            max,
            overflow: AtomicU64::new(0),
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The label already known as `label`, if any: from the thread's cache,
    /// or else from the set (a read lock and a hash), then cached.
    pub(crate) fn get(&self, label: &str) -> Option<Route> {
        self.get_bytes(label.as_bytes())
    }

    /// Like [`get`](Self::get) for a label as bytes; not UTF-8 means unknown.
    pub(crate) fn get_bytes(&self, label: &[u8]) -> Option<Route> {
        // `try_with` fails only while the thread is being torn down, and
        // `try_borrow_mut` never fails (no re-entry); either way the set
        // answers on its own.
        let cached = LABEL_CACHE
            .try_with(|c| c.try_borrow().ok()?.lookup(self.id, label))
            .ok()
            .flatten();
        if cached.is_some() {
            return cached;
        }
        let route = self.get_shared(std::str::from_utf8(label).ok()?)?;
        let _ = LABEL_CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.remember(self.id, &route);
            }
        });
        Some(route)
    }

    /// The label as the shared set knows it.
    fn get_shared(&self, label: &str) -> Option<Route> {
        // A poisoned lock only means another thread panicked while holding
        // it; the set itself is still consistent (inserts are single calls).
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        known.get(label).map(|l| Route::from_static(l))
    }

    /// Whether no new label can be admitted.
    pub(crate) fn is_full(&self) -> bool {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            >= self.max
    }

    /// `label` as an interned route: known labels are shared, new ones are
    /// admitted while the cap allows (one allocation, once per label), and
    /// everything else becomes [`Route::OVERFLOW`].
    pub(crate) fn intern(&self, label: &str) -> Route {
        if let Some(route) = self.get(label) {
            return route;
        }
        // A template with NUL (from an app's own `MakeRoute`: request paths
        // cannot hold one) is never admitted: no store keeps it (PostgreSQL
        // refuses NUL in text), so its records would be lost as rejected.
        // Checked on misses only, so known labels cost nothing more.
        if label.as_bytes().contains(&0) {
            return self.overflowed();
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        // Re-check under the write lock: another request may have added it.
        if let Some(l) = known.get(label) {
            return Route::from_static(l);
        }
        if known.len() >= self.max {
            drop(known);
            return self.overflowed();
        }
        let label = static_label(label);
        known.insert(label);
        Route::from_static(label)
    }

    /// Counts one request labelled [`Route::OVERFLOW`] and returns that label.
    pub(crate) fn overflowed(&self) -> Route {
        if self.overflow.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                max_routes = self.max,
                "app-metrics: route label cap reached or path too long; further new labels are recorded as <overflow>"
            );
        }
        Route::OVERFLOW
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> RouteStats {
        let distinct = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        RouteStats {
            distinct,
            max: self.max,
            overflowed: self.overflow.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for RouteLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLabels")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Option<String> {
        let mut buf = [0u8; MAX_LABEL_LEN];
        normalize_path(path, &mut buf).map(str::to_owned)
    }

    #[test]
    fn ids_become_placeholders() {
        assert_eq!(norm("/users/42").as_deref(), Some("/users/{id}"));
        assert_eq!(norm("/users/42/").as_deref(), Some("/users/{id}/"));
        assert_eq!(
            norm("/x/550e8400-e29b-41d4-a716-446655440000/y").as_deref(),
            Some("/x/{id}/y")
        );
        assert_eq!(
            norm("/blob/deadbeefdeadbeef1234").as_deref(),
            Some("/blob/{id}")
        );
        // Short hex-looking words are kept: they are usually real names.
        assert_eq!(norm("/cafe/add").as_deref(), Some("/cafe/add"));
        assert_eq!(norm("/v2/users").as_deref(), Some("/v2/users"));
        assert_eq!(
            norm(&format!("/t/{}", "z".repeat(65))).as_deref(),
            Some("/t/{id}")
        );
        assert_eq!(norm("").as_deref(), Some("/"));
        assert_eq!(norm("/").as_deref(), Some("/"));
    }

    #[test]
    fn odd_paths_never_panic() {
        assert_eq!(norm("/a%ZZ/%").as_deref(), Some("/a%ZZ/%"));
        assert_eq!(norm(&"/1".repeat(5_000)), None, "10 KB of ids is too long");
        assert_eq!(
            norm(&format!("/{}", "x".repeat(10_000))).as_deref(),
            Some("/{id}")
        );
        let exactly = format!("/{}", "a".repeat(MAX_LABEL_LEN - 1));
        assert_eq!(norm(&exactly).as_deref(), Some("/{id}"));
        let limit = "/abcdefg".repeat(MAX_LABEL_LEN / 8);
        assert_eq!(limit.len(), MAX_LABEL_LEN);
        assert_eq!(norm(&limit).as_deref(), Some(limit.as_str()));
        assert_eq!(norm(&format!("{limit}/")), None);
    }

    #[test]
    fn labels_are_capped_and_overflow_counted() {
        let labels = RouteLabels::new(2);
        assert_eq!(labels.intern("/a"), "/a");
        assert_eq!(labels.intern("/b"), "/b");
        assert_eq!(labels.intern("/a"), "/a", "known labels stay usable");
        assert_eq!(labels.intern("/c"), Route::OVERFLOW);
        assert_eq!(labels.intern("/d"), Route::OVERFLOW);
        let stats = labels.stats();
        assert_eq!((stats.distinct, stats.max, stats.overflowed), (2, 2, 2));
    }

    #[test]
    fn cached_labels_belong_to_their_own_set() {
        let a = RouteLabels::new(100);
        let b = RouteLabels::new(1);
        assert_eq!(a.intern("/x"), "/x");
        assert_eq!(a.get("/x").unwrap(), "/x");
        // `/x` is cached for `a`, never for `b`.
        assert!(b.get("/x").is_none());
        assert_eq!(b.intern("/y"), "/y");
        assert_eq!(b.intern("/x"), Route::OVERFLOW);
        // More labels than cache slots: all still found, by content.
        for i in 0..(CACHE_SLOTS * 2) {
            let label = format!("/r{i}");
            assert_eq!(a.intern(&label), label.as_str());
        }
        for i in 0..(CACHE_SLOTS * 2) {
            let label = format!("/r{i}");
            assert_eq!(a.get(&label).unwrap(), label.as_str());
        }
        assert!(a.get("/r").is_none(), "a prefix is not a hit");
        assert_eq!(a.stats().distinct, 1 + CACHE_SLOTS * 2);
    }

    #[test]
    fn interned_labels_share_one_allocation() {
        let labels = RouteLabels::new(10);
        let a = labels.intern("/same");
        let b = labels.intern("/same");
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }
}
