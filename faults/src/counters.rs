//! The collector's counters as the app reports them: the exit line
//! (`collector flushed: received=.. written=.. ...`) and the `collector`
//! object of `GET /api/demo/recorded`.
//!
//! Parsing is tolerant on purpose: the set of counters grows (issue 13 adds
//! one per drop reason), so unknown keys are kept and a key that is not
//! there is *unknown* ([`None`]), never 0. A check that needs an unknown
//! counter says so instead of passing by accident.

use std::collections::BTreeMap;

/// Counter name → value, as reported by one app process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters(BTreeMap<String, u64>);

impl Counters {
    /// Every `key=value` pair of `line` whose value is an unsigned integer
    /// (trailing `,` or `;` ignored); other words are skipped.
    pub(crate) fn parse_line(line: &str) -> Self {
        let map = line
            .split_whitespace()
            .filter_map(|word| {
                let (key, value) = word.split_once('=')?;
                let value = value.trim_end_matches([',', ';']);
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(map)
    }

    /// Every unsigned integer field of a JSON object (the `collector`
    /// object of `/api/demo/recorded`).
    pub(crate) fn from_json(object: &serde_json::Value) -> Self {
        let map = object
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
        Self(map)
    }

    /// The counter `key`, if the app reported it.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        self.0.get(key).copied()
    }

    /// Records received by the collector.
    pub(crate) fn received(&self) -> Option<u64> {
        self.get("received")
    }

    /// Records written to the store.
    pub(crate) fn written(&self) -> Option<u64> {
        self.get("written")
    }

    /// Records still queued (0 after a completed shutdown; unknown when not
    /// reported).
    pub(crate) fn pending(&self) -> Option<u64> {
        self.get("pending")
    }

    /// All drops: the `dropped` total when reported, else the sum of the
    /// `dropped_*` reasons when at least one is reported.
    pub(crate) fn dropped(&self) -> Option<u64> {
        self.get("dropped").or_else(|| {
            let reasons: Vec<u64> = self
                .0
                .iter()
                .filter(|(k, _)| k.starts_with("dropped_"))
                .map(|(_, v)| *v)
                .collect();
            (!reasons.is_empty()).then(|| reasons.iter().sum())
        })
    }

    /// `received = written + dropped + pending`, or `None` when a term is
    /// unknown. A missing `pending` is taken as 0 only for an exit line
    /// (`after_shutdown`), where the collector has drained by definition.
    pub(crate) fn invariant_holds(&self, after_shutdown: bool) -> Option<bool> {
        let pending = match self.pending() {
            Some(p) => p,
            None if after_shutdown => 0,
            None => return None,
        };
        Some(self.received()? == self.written()? + self.dropped()? + pending)
    }

    /// The `dropped_*` reasons reported, with their values.
    pub(crate) fn drop_reasons(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with("dropped_"))
            .map(|(k, v)| (k.as_str(), *v))
    }

    /// The counters as `key=value` words, for a failure message.
    pub(crate) fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_todays_and_tomorrows_exit_lines() {
        let old = Counters::parse_line("collector flushed: received=10 written=7 dropped=3");
        assert_eq!(old.received(), Some(10));
        assert_eq!(old.dropped(), Some(3));
        assert_eq!(old.pending(), None, "absent is unknown, not 0");
        assert_eq!(old.invariant_holds(true), Some(true));
        assert_eq!(old.invariant_holds(false), None);

        let new = Counters::parse_line(
            "collector flushed: received=10 written=6 pending=1 dropped_queue_full=2, dropped_shutdown=1",
        );
        assert_eq!(new.dropped(), Some(3), "summed from the reasons");
        assert_eq!(new.get("dropped_shutdown"), Some(1));
        assert_eq!(new.invariant_holds(false), Some(true));
    }

    #[test]
    fn a_broken_invariant_is_reported() {
        let c = Counters::parse_line("received=10 written=9 dropped=0 pending=0");
        assert_eq!(c.invariant_holds(true), Some(false));
    }

    #[test]
    fn reads_the_recorded_json() {
        let v = serde_json::json!({"received": 5, "written": 5, "dropped": 0, "pending": 0, "note": "x"});
        let c = Counters::from_json(&v);
        assert_eq!(c.written(), Some(5));
        assert_eq!(c.get("note"), None);
        assert_eq!(c.invariant_holds(false), Some(true));
    }
}
