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

/// Exclusion rules: exact paths, prefixes and an optional predicate.
#[derive(Clone)]
pub(crate) struct Exclusions {
    paths: Box<[Box<str>]>,
    prefixes: Box<[Box<str>]>,
    predicate: Option<Arc<Predicate>>,
}

impl Default for Exclusions {
    fn default() -> Self {
        Self {
            paths: to_boxed(DEFAULT_EXCLUDED_PATHS),
            prefixes: to_boxed(DEFAULT_EXCLUDED_PREFIXES),
            predicate: None,
        }
    }
}

fn to_boxed<I>(items: I) -> Box<[Box<str>]>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    items.into_iter().map(|s| Box::from(s.as_ref())).collect()
}

impl Exclusions {
    pub(crate) fn set_paths<I>(&mut self, paths: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.paths = to_boxed(paths);
    }

    pub(crate) fn set_prefixes<I>(&mut self, prefixes: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.prefixes = to_boxed(prefixes);
    }

    pub(crate) fn set_predicate(&mut self, predicate: Arc<Predicate>) {
        self.predicate = Some(predicate);
    }

    /// Whether `req` must not be recorded. A few string comparisons; the
    /// predicate, if any, only runs when no path rule matched.
    pub(crate) fn matches<B>(&self, req: &Request<B>) -> bool {
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
    fn replaced_lists_and_predicate() {
        let mut e = Exclusions::default();
        e.set_paths(["/status"]);
        e.set_prefixes(Vec::<String>::new());
        e.set_predicate(Arc::new(|h: &RequestHead<'_>| {
            h.method() == Method::OPTIONS
        }));
        assert!(e.matches(&get("/status")));
        assert!(!e.matches(&get("/health")));
        assert!(!e.matches(&get("/internal/x")));
        let options = Request::options("/anything").body(()).unwrap();
        assert!(e.matches(&options));
    }
}
