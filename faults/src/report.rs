//! The RESULT lines: one per scenario, `RESULT faults scenario=<name>
//! <key=value figures> verdict=pass|FAIL`, and the final summary.
//!
//! A check whose inputs are unknown (a counter the app did not report)
//! fails: an invariant that cannot be checked is not shown to hold.

use std::fmt::Display;

/// The figures and checks of one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    name: String,
    figures: Vec<(String, String)>,
    failed: Vec<String>,
    notes: Vec<String>,
}

impl Outcome {
    /// An outcome with no figures and no failed check yet.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            figures: Vec::new(),
            failed: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A scenario that could not run: `why` goes to the notes.
    pub(crate) fn broken(name: &str, why: &str) -> Self {
        let mut o = Self::new(name);
        o.failed.push("setup".to_owned());
        o.note(why);
        o
    }

    /// The scenario's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Adds (or replaces) the figure `key`.
    pub(crate) fn figure(&mut self, key: &str, value: impl Display) {
        let value = value.to_string().replace(char::is_whitespace, "_");
        match self.figures.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.figures.push((key.to_owned(), value)),
        }
    }

    /// Adds figures in order.
    pub(crate) fn figures(&mut self, figures: Vec<(String, String)>) {
        for (k, v) in figures {
            self.figure(&k, v);
        }
    }

    /// Records check `name`: fails unless `ok`.
    pub(crate) fn check(&mut self, name: &str, ok: bool) {
        if !ok {
            self.failed.push(name.to_owned());
        }
    }

    /// A check whose inputs may be unknown: `None` fails as `<name>?`.
    pub(crate) fn check_known(&mut self, name: &str, ok: Option<bool>) {
        match ok {
            Some(ok) => self.check(name, ok),
            None => self.failed.push(format!("{name}?")),
        }
    }

    /// A free-text line printed under the RESULT line (why it failed,
    /// what was seen).
    pub(crate) fn note(&mut self, text: &str) {
        self.notes.push(text.to_owned());
    }

    /// Whether every check passed.
    pub(crate) fn passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// The RESULT line.
    pub(crate) fn line(&self) -> String {
        let mut s = format!("RESULT faults scenario={}", self.name);
        for (k, v) in &self.figures {
            s.push_str(&format!(" {k}={v}"));
        }
        if self.passed() {
            s.push_str(" verdict=pass");
        } else {
            s.push_str(&format!(" failed={} verdict=FAIL", self.failed.join(",")));
        }
        s
    }

    /// The notes, one per line.
    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// The final line.
pub(crate) fn total_line(total_s: f64, outcomes: &[Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    format!(
        "RESULT faults total_s={total_s:.1} scenarios={} failed={failed}",
        outcomes.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_figures_then_the_verdict() {
        let mut o = Outcome::new("baseline");
        o.figure("p99_ms", 3.5);
        o.figure("note", "two words");
        o.check("dup", true);
        assert_eq!(
            o.line(),
            "RESULT faults scenario=baseline p99_ms=3.5 note=two_words verdict=pass"
        );
        o.check("lost", false);
        o.check_known("invariant", None);
        assert!(o.line().ends_with(" failed=lost,invariant? verdict=FAIL"));
        assert_eq!(
            total_line(12.34, &[o, Outcome::new("x")]),
            "RESULT faults total_s=12.3 scenarios=2 failed=1"
        );
    }
}
