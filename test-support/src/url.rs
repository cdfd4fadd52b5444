//! Small edits to libpq-style connection strings.
//!
//! `tokio_postgres::Config` parses both forms (`postgres://...` URLs and `key=value` lists) but
//! cannot print itself back, and a per-test database needs a *string* that deadpool, `psql` and
//! child processes all understand. So the harness edits the string the user gave instead of
//! rebuilding it, which keeps every parameter it does not know about (sslmode, options, ...).

/// Whether `s` is in URL form (`postgres://` or `postgresql://`).
fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Splits a URL into (scheme + authority, query-with-`?`), dropping its path (the database).
fn split_url(s: &str) -> (&str, &str) {
    let (before_query, query) = match s.find('?') {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    // The authority ends at the first `/` after `://`; characters that would be ambiguous
    // there (`/`, `?`, `@` inside a password) must already be percent-encoded in a valid URL.
    let after_scheme = before_query.find("://").map_or(0, |i| i + 3);
    let authority_end = before_query[after_scheme..]
        .find('/')
        .map_or(before_query.len(), |i| after_scheme + i);
    (&before_query[..authority_end], query)
}

/// Returns `url` pointing at database `dbname` instead of the one it names (if any).
///
/// `dbname` must be a plain identifier (`[a-z0-9_]`), which the harness's names are.
pub(crate) fn with_dbname(url: &str, dbname: &str) -> String {
    let url = url.trim();
    if is_url(url) {
        let (base, query) = split_url(url);
        format!("{base}/{dbname}{query}")
    } else {
        // In key=value form a later keyword overrides an earlier one (libpq and tokio-postgres).
        format!("{url} dbname={dbname}")
    }
}

/// Returns `url` with its sessions' `search_path` set to `schema` (via the `options` parameter).
///
/// An `options` parameter already present is overridden.
pub(crate) fn with_search_path(url: &str, schema: &str) -> String {
    let url = url.trim();
    if is_url(url) {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

/// Returns `url` with any password replaced by `***`, for messages and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    if is_url(url) {
        let (base, _) = split_url(url);
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        if let Some(at) = base.rfind('@') {
            let userinfo = &base[after_scheme..at];
            if let Some(colon) = userinfo.find(':') {
                let colon = after_scheme + colon;
                return format!("{}:***{}", &url[..colon], &url[at..]);
            }
        }
        url.to_owned()
    } else {
        url.split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbname_of(s: &str) -> Option<String> {
        let config: tokio_postgres::Config = s.parse().expect("parses");
        config.get_dbname().map(str::to_owned)
    }

    #[test]
    fn replaces_the_database_of_a_url() {
        for (input, expected) in [
            ("postgres://u@h:5/db", "postgres://u@h:5/t_1"),
            ("postgres://u@h:5", "postgres://u@h:5/t_1"),
            ("postgres://u@h:5/", "postgres://u@h:5/t_1"),
            (
                "postgresql://u:p@h/db?sslmode=disable",
                "postgresql://u:p@h/t_1?sslmode=disable",
            ),
            (
                "postgres://u@h?connect_timeout=3",
                "postgres://u@h/t_1?connect_timeout=3",
            ),
        ] {
            let got = with_dbname(input, "t_1");
            assert_eq!(got, expected, "for {input}");
            assert_eq!(dbname_of(&got).as_deref(), Some("t_1"), "for {input}");
        }
    }

    #[test]
    fn replaces_the_database_of_a_keyword_list() {
        let got = with_dbname("host=h user=u dbname=db", "t_2");
        assert_eq!(dbname_of(&got).as_deref(), Some("t_2"));
    }

    #[test]
    fn search_path_option_round_trips_through_the_parser() {
        for input in [
            "postgres://u@h/db",
            "postgres://u@h/db?sslmode=disable",
            "host=h user=u",
        ] {
            let got = with_search_path(input, "t_3");
            let config: tokio_postgres::Config = got.parse().expect("parses");
            assert_eq!(
                config.get_options(),
                Some("-c search_path=t_3"),
                "for {input}"
            );
        }
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }
}
