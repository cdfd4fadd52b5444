//! The module graph of a crate, read from its `src/` files, to check that its
//! modules depend downward only (no cycle).
//!
//! A module is a file: `src/a.rs` or `src/a/mod.rs` is `a`, `src/a/b.rs` is
//! `a::b`; `src/bin/` and the crate root (`lib.rs`, the facade that declares
//! and re-exports the modules) are left out as nodes, but the root's `use`
//! declarations are read like any module's. An edge `a -> b` is any path in
//! `a`'s code that names `b` or an item inside it: `crate::b::..`,
//! `super::..`, `self::b::..`, or `b::..` where `b` is a child module of `a`,
//! including `use` groups (`use crate::{b::X, c}`), except a parent's
//! re-exports of its own children (`pub use self::b::X` in `a`): that is the
//! facade of `a`.
//!
//! **An edge goes to the module that defines the item, not to the one it is
//! reached through.** A path to a name that its module only imports (`use`,
//! of any visibility, `as` renames included) is followed to the import's
//! source: `super::X` in `a::b`, where `a` has `pub use self::c::X`, is the
//! sibling edge `a::b -> a::c`, and `crate::X`, re-exported by the crate root
//! from `c`, is an edge to `c`; an import from outside the crate is no edge.
//! So a child may use what its parent re-exports from another child, and a
//! parent may use its children, but a parent and a child that each use an
//! item the other *defines* are a cycle, as two siblings that use each
//! other's items are. Glob imports (`pub use self::c::*`) are not followed.
//!
//! Comments and the `#[cfg(test)] mod tests` block at the end of a file are
//! not read, so a test's `use super::*` is no edge. Macro invocations are not
//! followed.
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
    /// Reads every `.rs` file under `src` (except `bin/` and `main.rs`; the
    /// crate root `lib.rs` only for its imports).
    ///
    /// # Panics
    ///
    /// If `src` cannot be read: a test must not pass on a wrong path.
    pub fn read(src: impl AsRef<Path>) -> Self {
        let src = src.as_ref();
        let mut files = BTreeMap::new();
        collect(src, src, &mut files);
        let code: BTreeMap<String, String> = files
            .iter()
            .map(|(m, text)| (m.clone(), strip(text)))
            .collect();
        // The crate root (`""`) is read for its imports, and is no node.
        let imports: Imports = code.iter().map(|(m, c)| (m.clone(), imports(c))).collect();
        let _ = files.remove(ROOT);
        assert!(!files.is_empty(), "no module files under {}", src.display());
        let modules: BTreeSet<String> = files.keys().cloned().collect();
        let mut edges = BTreeMap::new();
        let mut code_after_tests = Vec::new();
        for (module, text) in &files {
            if has_code_after_tests(text) {
                code_after_tests.push(module.clone());
            }
            let mut named = BTreeSet::new();
            for (path, reexport) in paths(&code[module]) {
                if let Some(target) = locate(module, &path, &modules, &imports) {
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
        if parts == ["main"] || parts.is_empty() {
            continue;
        }
        if parts == ["lib"] {
            parts.clear();
        }
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files.insert(parts.join("::"), text);
    }
}

/// Where the file's tests block starts: a `mod tests` line right after a
/// `#[cfg(..)]` line that names `test` (`#[cfg(test)]`, or e.g.
/// `#[cfg(all(test, not(loom)))]`), both in column 0.
fn tests_block(text: &str) -> Option<usize> {
    let mut at = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let cfg_test = line.starts_with("#[cfg(") && line.contains("test");
        if cfg_test
            && lines
                .peek()
                .is_some_and(|next| next.starts_with("mod tests"))
        {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// Whether anything but blank lines follows the closing brace of the
/// file's tests block ([`tests_block`]; its end is the first line after its
/// start that is a `}` in column 0).
fn has_code_after_tests(text: &str) -> bool {
    let Some(at) = tests_block(text) else {
        return false;
    };
    let mut lines = text[at..].lines().skip(2);
    if !lines.by_ref().any(|l| l.starts_with('}')) {
        return false;
    }
    lines.any(|l| !l.trim().is_empty())
}

/// The code of a file without comments, string contents and its trailing
/// tests block ([`tests_block`]).
fn strip(text: &str) -> String {
    let text = match tests_block(text) {
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

/// The crate root's key among the files read (it is no module of the graph).
const ROOT: &str = "";

/// Per module (the root as [`ROOT`]): each name it imports -> the path it
/// imports, as written (relative to that module).
type Imports = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The names a file's `use` declarations bring in (any visibility, `as`
/// renames under their new name; `_` and globs left out).
fn imports(code: &str) -> BTreeMap<String, Vec<String>> {
    let tokens = tokens(code);
    let mut out = BTreeMap::new();
    for (i, t) in tokens.iter().enumerate() {
        if *t == Token::Ident("use".to_owned()) {
            let _ = use_tree(&tokens, i + 1, Vec::new(), &mut out);
        }
    }
    out
}

/// Reads the `use` tree at `tokens[i]` under `prefix`, inserting each name
/// it imports; returns the index after it.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut BTreeMap<String, Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i) {
            Some(Token::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                match tokens.get(i) {
                    Some(Token::Colons) => i += 1,
                    Some(Token::Ident(r#as)) if r#as == "as" => {
                        if let Some(Token::Ident(alias)) = tokens.get(i + 1) {
                            if alias != "_" {
                                insert_import(alias.clone(), prefix, out);
                            }
                        }
                        return i + 2;
                    }
                    _ => {
                        let name = prefix.last().cloned().unwrap_or_default();
                        insert_import(name, prefix, out);
                        return i;
                    }
                }
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        None | Some(Token::Semicolon) => return i,
                        Some(_) => {
                            let next = use_tree(tokens, i, prefix.clone(), out);
                            // A token the tree does not read (`*`): skip it.
                            i = next.max(i + 1);
                        }
                    }
                }
            }
            // `a::*` (not followed) or the end of the declaration.
            _ => return i,
        }
    }
}

/// `use a::b::{self}` imports `b` as `a::b`.
fn insert_import(name: String, mut path: Vec<String>, out: &mut BTreeMap<String, Vec<String>>) {
    if path.last().is_some_and(|s| s == "self") {
        let _ = path.pop();
        let Some(last) = path.last().cloned() else {
            return;
        };
        let name = if name == "self" { last } else { name };
        let _ = out.insert(name, path);
        return;
    }
    let _ = out.insert(name, path);
}

/// The module (or [`ROOT`]) that `path`, read in `module`, reaches, and
/// the index of the first segment after it; `None` for a path outside the
/// crate (std, other crates) or one that names no module of it.
fn base_of(module: &str, path: &[String], modules: &BTreeSet<String>) -> Option<(String, usize)> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut at = 0;
    let anchored = match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            at = 1;
            true
        }
        Some("self") => {
            at = 1;
            true
        }
        Some("super") => {
            while path.get(at).is_some_and(|s| s == "super") {
                let _ = base.pop();
                at += 1;
            }
            true
        }
        _ => false,
    };
    let mut best = anchored.then(|| (base.join("::"), at));
    let mut candidate = base;
    for (k, segment) in path[at..].iter().enumerate() {
        candidate.push(segment);
        let name = candidate.join("::");
        if modules.contains(&name) {
            best = Some((name, at + k + 1));
        } else {
            break;
        }
    }
    best
}

/// The longest module that `path`, read in `module`, names; `None` for a
/// path outside the crate's modules (std, other crates, the crate root's
/// own items).
#[cfg(test)]
fn resolve(module: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    base_of(module, path, modules)
        .map(|(m, _)| m)
        .filter(|m| m != ROOT)
}

/// The module that defines what `path`, read in `module`, names: the
/// module it reaches, or, when that module only imports the name, the
/// module the import comes from (followed through re-export chains).
fn locate(
    module: &str,
    path: &[String],
    modules: &BTreeSet<String>,
    imports: &Imports,
) -> Option<String> {
    let mut module = module.to_owned();
    let mut path = path.to_vec();
    // A re-export chain longer than this is a parse error, not a crate.
    for _ in 0..16 {
        let (base, next) = base_of(&module, &path, modules)?;
        let imported = path
            .get(next)
            .and_then(|name| imports.get(&base)?.get(name));
        match imported {
            Some(source) => {
                path = source.clone();
                module = base;
            }
            None => return Some(base).filter(|m| m != ROOT),
        }
    }
    None
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
    fn a_tests_block_under_a_wider_cfg_is_not_read() {
        let text =
            "use crate::a::X;\n#[cfg(all(test, not(loom)))]\nmod tests {\n    use super::*;\n}\n";
        assert_eq!(tests_block(text), Some(17));
        let found: Vec<String> = paths(&strip(text))
            .iter()
            .map(|(p, _)| p.join("::"))
            .collect();
        assert_eq!(found, ["crate::a::X"]);
        assert_eq!(tests_block("#[cfg(feature = \"x\")]\nmod extra {}\n"), None);
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
    fn imports_are_read_with_renames_groups_and_self() {
        let found = imports(
            "pub use self::b::{X, Y as Z, c::{self, W}};\nuse std::fmt;\nuse d::*;\nuse e::V as _;",
        );
        let found: Vec<(String, String)> = found
            .iter()
            .map(|(name, path)| (name.clone(), path.join("::")))
            .collect();
        let want = [
            ("W", "self::b::c::W"),
            ("X", "self::b::X"),
            ("Z", "self::b::Y"),
            ("c", "self::b::c"),
            ("fmt", "std::fmt"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn a_path_through_a_reexport_names_the_defining_module() {
        let m = modules(&["a", "a::b", "a::c", "d"]);
        let p = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        let mut imports = Imports::new();
        // `a` re-exports `X` from its child `c` and imports `Fmt` from std;
        // the crate root re-exports `Y` from `a`, which has it from `d`.
        let _ = imports.insert(
            "a".into(),
            [
                ("X", "self::c::X"),
                ("Fmt", "std::fmt::Debug"),
                ("Y", "crate::d::Y"),
            ]
            .into_iter()
            .map(|(n, s)| (n.to_owned(), p(s)))
            .collect(),
        );
        let _ = imports.insert(
            ROOT.into(),
            [("Y".to_owned(), p("a::Y"))].into_iter().collect(),
        );
        let at = |module: &str, path: &str| locate(module, &p(path), &m, &imports);
        // A child reaching a sibling's item through the parent: a sibling edge.
        assert_eq!(at("a::b", "super::X").as_deref(), Some("a::c"));
        // An item the parent defines: an edge to the parent.
        assert_eq!(at("a::b", "super::Own").as_deref(), Some("a"));
        // An import from outside the crate: no edge.
        assert_eq!(at("a::b", "super::Fmt"), None);
        // Through the crate root and a chain of re-exports.
        assert_eq!(at("a::b", "crate::Y").as_deref(), Some("d"));
        assert_eq!(at("d", "crate::Unknown"), None);
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
