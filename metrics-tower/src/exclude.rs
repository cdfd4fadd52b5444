//! Requests that are not recorded: health probes, internal endpoints, and
//! anything an app's predicate says.
//!
//! Excluded requests still pass through the layer untouched except for the
//! correlation id (it is echoed on every response), and cost no record.

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// Paths excluded exactly by default (from the original plan).
pub const DEFAULT_EXCLUDED_PATHS: [&str; 3] = ["/health", "/ready", "/ping"];

/// Path prefixes excluded by default (from the original plan).
pub const DEFAULT_EXCLUDED_PREFIXES: [&str; 2] = ["/internal/", "/admin/system/"];

/// The parts of a request an exclusion predicate can look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn new<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

type Predicate = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// Which requests are not recorded: exact paths, path prefixes and
/// predicates; a request matching any of them is excluded.
///
/// [`Exclusions::default`] holds the defaults
/// ([`DEFAULT_EXCLUDED_PATHS`], [`DEFAULT_EXCLUDED_PREFIXES`]), and every
/// method adds to what is there. [`MetricsLayer::exclude_path`](crate::MetricsLayer::exclude_path)
/// and its siblings add to the layer's set; replacing the set, defaults
/// included, is the explicit [`MetricsLayer::exclusions`](crate::MetricsLayer::exclusions).
///
/// ```
/// use http::{Method, Request};
/// use metrics_tower::exclude::Exclusions;
///
/// // Only these, without the defaults.
/// let only = Exclusions::none().path("/status").matching(|h| h.method() == Method::OPTIONS);
/// assert!(only.matches(&Request::get("/status").body(()).unwrap()));
/// assert!(!only.matches(&Request::get("/health").body(()).unwrap()));
///
/// // The defaults and one more prefix.
/// let more = Exclusions::default().prefix("/debug/");
/// assert!(more.matches(&Request::get("/health").body(()).unwrap()));
/// assert!(more.matches(&Request::get("/debug/pprof").body(()).unwrap()));
/// ```
#[derive(Clone)]
pub struct Exclusions {
    paths: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
    predicate: Option<Arc<Predicate>>,
}

impl Default for Exclusions {
    /// The defaults: [`DEFAULT_EXCLUDED_PATHS`] and
    /// [`DEFAULT_EXCLUDED_PREFIXES`].
    fn default() -> Self {
        Self::none()
            .paths(DEFAULT_EXCLUDED_PATHS)
            .prefixes(DEFAULT_EXCLUDED_PREFIXES)
    }
}

impl Exclusions {
    /// Excludes nothing.
    pub fn none() -> Self {
        Self {
            paths: Vec::new(),
            prefixes: Vec::new(),
            predicate: None,
        }
    }

    /// Also excludes `path`, matched exactly (the query string is ignored).
    pub fn path(mut self, path: impl AsRef<str>) -> Self {
        self.paths.push(Box::from(path.as_ref()));
        self
    }

    /// Also excludes each of `paths`, matched exactly.
    pub fn paths<I>(self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        paths.into_iter().fold(self, Self::path)
    }

    /// Also excludes every path starting with `prefix`.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Self {
        self.prefixes.push(Box::from(prefix.as_ref()));
        self
    }

    /// Also excludes every path starting with one of `prefixes`.
    pub fn prefixes<I>(self, prefixes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        prefixes.into_iter().fold(self, Self::prefix)
    }

    /// Also excludes every request for which `predicate` returns `true`
    /// (predicates added earlier still apply). It runs on the request path,
    /// and only when no path rule matched: keep it cheap.
    pub fn matching<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.predicate = Some(match self.predicate.take() {
            None => Arc::new(predicate),
            Some(earlier) => Arc::new(move |h: &RequestHead<'_>| earlier(h) || predicate(h)),
        });
        self
    }

    /// Whether `req` must not be recorded. A few string comparisons; the
    /// predicates, if any, only run when no path rule matched.
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        self.paths.iter().any(|p| **p == *path)
            || self.prefixes.iter().any(|p| path.starts_with(&**p))
            || self
                .predicate
                .as_ref()
                .is_some_and(|f| f(&RequestHead::new(req)))
    }
}

impl fmt::Debug for Exclusions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exclusions")
            .field("paths", &self.paths)
            .field("prefixes", &self.prefixes)
            .field("predicate", &self.predicate.as_ref().map(|_| "Fn(..)"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn defaults_match_the_plan() {
        let e = Exclusions::default();
        for excluded in [
            "/health",
            "/ready",
            "/ping",
            "/internal/x",
            "/admin/system/gc",
        ] {
            assert!(e.matches(&get(excluded)), "{excluded}");
        }
        for kept in ["/healthz", "/health/deep", "/internal", "/admin/users", "/"] {
            assert!(!e.matches(&get(kept)), "{kept}");
        }
        assert!(
            e.matches(&get("/health?verbose=1")),
            "query is not part of the path"
        );
    }

    #[test]
    fn none_and_added_rules_and_predicates() {
        let e = Exclusions::none()
            .path("/status")
            .matching(|h| h.method() == Method::OPTIONS)
            .matching(|h| h.headers().contains_key("x-probe"));
        assert!(e.matches(&get("/status")));
        assert!(!e.matches(&get("/health")));
        assert!(!e.matches(&get("/internal/x")));
        let options = Request::options("/anything").body(()).unwrap();
        assert!(e.matches(&options), "the first predicate still applies");
        let probe = Request::get("/x").header("x-probe", "1").body(()).unwrap();
        assert!(e.matches(&probe), "the second predicate too");
        assert!(!Exclusions::none().matches(&get("/health")));
    }

    #[test]
    fn adding_keeps_the_defaults() {
        let e = Exclusions::default().path("/status").prefixes(["/debug/"]);
        for excluded in ["/health", "/internal/x", "/status", "/debug/vars"] {
            assert!(e.matches(&get(excluded)), "{excluded}");
        }
        assert!(!e.matches(&get("/users")));
    }
}
