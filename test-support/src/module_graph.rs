//! The module graph of a crate, read from its `src/` files, to check that its
//! modules depend downward only (no cycle).
//!
//! A module is a file: `src/a.rs` or `src/a/mod.rs` is `a`, `src/a/b.rs` is
//! `a::b`; `src/bin/` and the crate root (`lib.rs`, the facade that declares
//! and re-exports the modules) are left out. An edge `a -> b` is any path in
//! `a`'s code that names `b` or an item inside it: `crate::b::..`,
//! `super::..`, `self::b::..`, or `b::..` where `b` is a child module of `a`,
//! including `use` groups (`use crate::{b::X, c}`), except a parent's
//! re-exports of its own children (`pub use self::b::X` in `a`): that is the
//! facade of `a`, and `b` may use `a`'s shared items. Comments and the
//! `#[cfg(test)] mod tests` block at the end of a file are not read, so a
//! test's `use super::*` is no edge. Macro invocations are not followed.
//!
//! ```
//! let graph = app_metrics_test_support::module_graph::ModuleGraph::read(
//!     concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
//! );
//! assert!(graph.modules().any(|m| m == "module_graph"));
//! // This module names no other module of its crate.
//! assert_eq!(graph.dependencies("module_graph").count(), 0);
//! // `browser` and `browser::cdp` name each other.
//! assert!(graph.cycles().iter().any(|c| c.iter().any(|m| m == "browser")));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Modules of one crate and the modules each one names.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Module path (`a::b`) -> modules it names.
    edges: BTreeMap<String, BTreeSet<String>>,
    /// Modules with code after their `#[cfg(test)] mod tests` block.
    code_after_tests: Vec<String>,
}

impl ModuleGraph {
    /// Reads every `.rs` file under `src` (except `bin/` and the crate root).
    ///
    /// # Panics
    ///
    /// If `src` cannot be read: a test must not pass on a wrong path.
    pub fn read(src: impl AsRef<Path>) -> Self {
        let src = src.as_ref();
        let mut files = BTreeMap::new();
        collect(src, src, &mut files);
        assert!(!files.is_empty(), "no module files under {}", src.display());
        let modules: BTreeSet<String> = files.keys().cloned().collect();
        let mut edges = BTreeMap::new();
        let mut code_after_tests = Vec::new();
        for (module, text) in &files {
            if has_code_after_tests(text) {
                code_after_tests.push(module.clone());
            }
            let code = strip(text);
            let mut named = BTreeSet::new();
            for (path, reexport) in paths(&code) {
                if let Some(target) = resolve(module, &path, &modules) {
                    let child = target.starts_with(&format!("{module}::"));
                    if target != *module && !(reexport && child) {
                        named.insert(target);
                    }
                }
            }
            edges.insert(module.clone(), named);
        }
        Self {
            edges,
            code_after_tests,
        }
    }

    /// Modules whose `#[cfg(test)] mod tests` block is followed by more
    /// code (which the graph does not read, and a reader does not expect).
    pub fn code_after_tests(&self) -> &[String] {
        &self.code_after_tests
    }

    /// The modules read.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.edges.keys().map(String::as_str)
    }

    /// The modules `module` names (empty for an unknown module).
    pub fn dependencies(&self, module: &str) -> impl Iterator<Item = &str> {
        self.edges
            .get(module)
            .into_iter()
            .flat_map(|s| s.iter().map(String::as_str))
    }

    /// Every cycle's modules, in the order they name each other (`a -> b ->
    /// a` is `[a, b]`); empty when the graph is acyclic.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        // Tarjan's strongly connected components: every component of more
        // than one module (or a module naming itself, excluded at read) is a
        // cycle.
        let mut state = Tarjan::default();
        for module in self.edges.keys() {
            if !state.index.contains_key(module) {
                state.visit(module, &self.edges);
            }
        }
        state.components.retain(|c| c.len() > 1);
        state.components
    }

    /// Panics with every cycle when there is one.
    pub fn assert_acyclic(&self) {
        let cycles = self.cycles();
        assert!(
            cycles.is_empty(),
            "module cycles (each line: modules that name each other): \n{}",
            cycles
                .iter()
                .map(|c| c.join(" <-> "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[derive(Default)]
struct Tarjan {
    next: usize,
    index: BTreeMap<String, usize>,
    low: BTreeMap<String, usize>,
    stack: Vec<String>,
    on_stack: BTreeSet<String>,
    components: Vec<Vec<String>>,
}

impl Tarjan {
    fn visit(&mut self, v: &str, edges: &BTreeMap<String, BTreeSet<String>>) {
        self.index.insert(v.to_owned(), self.next);
        self.low.insert(v.to_owned(), self.next);
        self.next += 1;
        self.stack.push(v.to_owned());
        self.on_stack.insert(v.to_owned());
        for w in edges.get(v).into_iter().flatten() {
            if !self.index.contains_key(w) {
                self.visit(w, edges);
                let low = self.low[v].min(self.low[w]);
                self.low.insert(v.to_owned(), low);
            } else if self.on_stack.contains(w) {
                let low = self.low[v].min(self.index[w]);
                self.low.insert(v.to_owned(), low);
            }
        }
        if self.low[v] == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(&w);
                let done = w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            component.reverse();
            self.components.push(component);
        }
    }
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let rel = path.strip_prefix(root).expect("under src");
        if path.is_dir() {
            if rel != Path::new("bin") {
                collect(root, &path, files);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let mut parts: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] || parts.is_empty() {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files.insert(parts.join("::"), text);
    }
}

/// Whether anything but blank lines follows the closing brace of the
/// file's `#[cfg(test)] mod tests {` block (the first line after its start
/// that is a `}` in column 0).
fn has_code_after_tests(text: &str) -> bool {
    let Some(at) = text.find("#[cfg(test)]\nmod tests {") else {
        return false;
    };
    let mut lines = text[at..].lines().skip(2);
    if !lines.by_ref().any(|l| l.starts_with('}')) {
        return false;
    }
    lines.any(|l| !l.trim().is_empty())
}

/// The code of a file without comments, string contents and its trailing
/// `#[cfg(test)] mod tests` block.
fn strip(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                // Skip the string (escapes included); raw strings with `#`
                // delimiters are rare enough in module paths not to matter.
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Semicolon,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut ident = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' {
                    ident.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Ident(ident));
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push(Token::Colons);
        } else if c == '{' {
            out.push(Token::Open);
        } else if c == '}' {
            out.push(Token::Close);
        } else if c == ',' {
            out.push(Token::Comma);
        } else if c == ';' {
            out.push(Token::Semicolon);
        } else if !c.is_whitespace() {
            out.push(Token::Other);
        }
    }
    out
}

/// Every path of two or more segments in `code`, `use` groups expanded
/// (`a::{b, c::d}` is `a::b` and `a::c::d`), each with whether it is in a
/// `pub use` (of any visibility) re-export.
fn paths(code: &str) -> Vec<(Vec<String>, bool)> {
    let tokens = tokens(code);
    let mut out = Vec::new();
    let mut reexport = false;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Semicolon => reexport = false,
            Token::Ident(s) if s == "use" => {
                reexport = tokens[i.saturating_sub(4)..i]
                    .iter()
                    .any(|t| *t == Token::Ident("pub".to_owned()));
            }
            _ => {}
        }
        let starts = matches!(tokens[i], Token::Ident(_))
            && matches!(tokens.get(i + 1), Some(Token::Colons))
            && (i == 0 || tokens[i - 1] != Token::Colons);
        if starts {
            let mut found = Vec::new();
            i = path_tree(&tokens, i, Vec::new(), &mut found);
            out.extend(found.into_iter().map(|p| (p, reexport)));
        } else {
            i += 1;
        }
    }
    out
}

/// Reads the path tree at `tokens[i]` with `prefix`, pushing its paths;
/// returns the index after it.
fn path_tree(
    tokens: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i) {
            Some(Token::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if tokens.get(i) == Some(&Token::Colons) {
                    i += 1;
                } else {
                    out.push(prefix);
                    return i;
                }
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        None => return i,
                        Some(_) => i = path_tree(tokens, i, prefix.clone(), out),
                    }
                    if !matches!(
                        tokens.get(i),
                        Some(Token::Comma | Token::Close | Token::Ident(_) | Token::Open)
                    ) {
                        // `self as x`, `*`: skip to the next item.
                        while !matches!(tokens.get(i), Some(Token::Comma | Token::Close) | None) {
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                // `a::*` or `a::<T>`: the prefix still names `a`.
                out.push(prefix);
                return i;
            }
        }
    }
}

/// The longest module that `path`, read in `module`, names; `None` for a
/// path outside the crate's modules (std, other crates, the crate root's
/// own items).
fn resolve(module: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<&str> = module.split("::").collect();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    let mut best = None;
    let mut candidate: Vec<&str> = base.clone();
    if !base.is_empty() && modules.contains(&base.join("::")) && path[0] == "super" {
        best = Some(base.join("::"));
    }
    for segment in rest {
        candidate.push(segment);
        let name = candidate.join("::");
        if modules.contains(&name) {
            best = Some(name);
        } else {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn paths_expand_use_groups() {
        let found = paths("use crate::{a::{X, y::Z}, b};\nlet v = super::c::f(x);");
        let found: Vec<String> = found.iter().map(|(p, _)| p.join("::")).collect();
        assert_eq!(
            found,
            ["crate::a::X", "crate::a::y::Z", "crate::b", "super::c::f"]
        );
    }

    #[test]
    fn a_parent_reexporting_its_child_is_no_edge() {
        let found = paths("pub(crate) use self::b::X;\nuse self::c::Y;");
        let flags: Vec<bool> = found.iter().map(|(_, r)| *r).collect();
        assert_eq!(flags, [true, false]);
    }

    #[test]
    fn comments_strings_and_the_tests_block_are_not_read() {
        let code = strip(
            "// crate::a::x\nlet s = \"crate::b::y\";\n/* crate::c */\n#[cfg(test)]\nmod tests { use crate::d; }",
        );
        assert!(paths(&code).is_empty(), "{code}");
    }

    #[test]
    fn code_after_the_tests_block_is_found() {
        let tests = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn t() {\n    }\n}\n";
        assert!(!has_code_after_tests(tests));
        assert!(has_code_after_tests(&format!("{tests}\nfn b() {{}}\n")));
        assert!(!has_code_after_tests("fn a() {}\n"));
    }

    #[test]
    fn resolves_relative_paths_to_the_longest_module() {
        let m = modules(&["a", "a::b", "c"]);
        let p = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(resolve("a::b", &p("super::f"), &m).as_deref(), Some("a"));
        assert_eq!(resolve("a", &p("b::f"), &m).as_deref(), Some("a::b"));
        assert_eq!(resolve("a::b", &p("crate::c::X"), &m).as_deref(), Some("c"));
        assert_eq!(resolve("a::b", &p("crate::Error"), &m), None);
        assert_eq!(resolve("c", &p("std::fmt"), &m), None);
    }

    #[test]
    fn finds_a_cycle_through_a_parent() {
        let mut g = ModuleGraph::default();
        g.edges.insert("a".into(), modules(&["a::b"]));
        g.edges.insert("a::b".into(), modules(&["a", "c"]));
        g.edges.insert("c".into(), BTreeSet::new());
        assert_eq!(g.cycles(), [vec!["a".to_owned(), "a::b".to_owned()]]);
        g.edges.insert("a::b".into(), modules(&["c"]));
        assert!(g.cycles().is_empty());
    }
}
