//! No crate of the workspace has a cycle among its modules (issue 21): a module that uses
//! another must not be used by it, directly or through others, so each one can be read (and
//! changed) after the ones it builds on.
//!
//! Method: read every `src/**/*.rs` of each crate, take the paths it names (`crate::a::b`,
//! `super::c`, `self::d`, and a child module named at the start of a path), resolve each to
//! the longest module it names, and look for strongly connected components. The edges counted:
//! between modules neither of which contains the other (siblings, cousins), and to or from the
//! crate root's own items (`lib.rs`/`main.rs`); a parent and its own children may use each other
//! (a facade and its parts). `pub use` re-exports are not uses, and `#[cfg(test)] mod tests`
//! blocks at the end of a file are skipped. A text scan, not a compiler: it errs towards
//! finding an edge (a path in a doc comment of code is skipped, a path in a string is not).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must form no cycle.
const CRATES: &[&str] = &["core", "client", "serve", "node", "edge", "tally", "sim"];

/// The one cycle left from before the check (issue 21 part 3, not finished): node's crate
/// root with its engine, peer sync, HTTP, metrics and start-up modules, through shared types
/// (`Clock` in lib.rs, engine commands, peer status, body limits in config). The check fails
/// if any other module joins it or any other cycle appears; remove modules from this list as
/// the cycle is taken apart, and the list with it.
const KNOWN_NODE_CYCLE: &[&str] = &[
    "crate",
    "client_page",
    "clock_watch",
    "config",
    "dashboard",
    "disk_watch",
    "disputes",
    "engine",
    "http",
    "metrics",
    "peer::sync",
    "results",
    "wal::replay",
    "wal::startup",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` → `["a", "b"]`; `lib.rs`, `main.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod")) {
        parts.pop();
    }
    if parts.len() == 1 && matches!(parts[0].as_str(), "lib" | "main") {
        parts.clear();
    }
    parts
}

/// The code of a file without comments, `pub use` lines and a trailing test module.
fn code_of(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_reexport = false;
    let all: Vec<&str> = text.lines().collect();
    for (index, line) in all.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && all
                .get(index + 1)
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("pub use") || trimmed.starts_with("pub(crate) use") {
            in_reexport = !trimmed.ends_with(';');
            continue;
        }
        if in_reexport {
            in_reexport = !trimmed.ends_with(';');
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        lines.push((index + 1, code.to_owned()));
    }
    lines
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path of the line as segments starting with `crate`, `super`, `self` or a bare first
/// segment; a `{` group contributes each member's leading segments.
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = line.chars().collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = is_ident_char(chars[i])
            && (i == 0 || !(is_ident_char(chars[i - 1]) || chars[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        let (path, end) = read_path(&chars, i);
        if path.len() > 1 || end < chars.len() && chars[end] == '{' {
            let mut prefixes = vec![path.clone()];
            let mut next = end;
            if end < chars.len() && chars[end] == '{' {
                let (members, close) = group_members(&chars, end);
                prefixes = members
                    .into_iter()
                    .map(|member| path.iter().cloned().chain(member).collect())
                    .collect();
                next = close;
            }
            paths.extend(prefixes);
            i = next.max(i + 1);
            continue;
        }
        i = end.max(i + 1);
    }
    paths
}

/// Reads `a::b::c` from `start`; returns the segments and where it stopped (at a `{` if the
/// path continues into a group).
fn read_path(chars: &[char], start: usize) -> (Vec<String>, usize) {
    let mut segments = Vec::new();
    let mut i = start;
    loop {
        let begin = i;
        while i < chars.len() && is_ident_char(chars[i]) {
            i += 1;
        }
        segments.push(chars[begin..i].iter().collect::<String>());
        if i + 2 < chars.len() + 1 && chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            if chars.get(i) == Some(&'{') {
                return (segments, i);
            }
            if !chars.get(i).is_some_and(|c| is_ident_char(*c)) {
                return (segments, i);
            }
        } else {
            return (segments, i);
        }
    }
}

/// The leading segments of each member of the group opening at `open`, and where it closes.
fn group_members(chars: &[char], open: usize) -> (Vec<Vec<String>>, usize) {
    let mut members = Vec::new();
    let mut depth = 0;
    let mut i = open;
    let mut expect_member = true;
    while i < chars.len() {
        match chars[i] {
            '{' => {
                depth += 1;
                i += 1;
                expect_member = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                i += 1;
            }
            ',' => {
                expect_member = depth == 1;
                i += 1;
            }
            c if is_ident_char(c) && expect_member && depth == 1 => {
                let (path, end) = read_path(chars, i);
                members.push(path);
                expect_member = false;
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    (members, i)
}

/// The module `path` (as written in `from`) points at: the longest known module it names,
/// or the root when it names a root item. `None`: not a path into this crate.
fn resolve(
    path: &[String],
    from: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut absolute: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super") | Some("self") => {
            absolute = from.to_vec();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        absolute.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A bare path: only a child module of `from` (or of the root, in the root).
            let mut child = from.to_vec();
            child.push(first.to_owned());
            if !modules.contains(&child) {
                return None;
            }
            absolute = from.to_vec();
        }
        None => return None,
    }
    absolute.extend(rest.iter().cloned());
    (0..=absolute.len())
        .rev()
        .map(|n| absolute[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

fn is_ancestor(a: &[String], b: &[String]) -> bool {
    a.len() < b.len() && b.starts_with(a)
}

type Edges = BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>;

fn module_edges(crate_dir: &str) -> Edges {
    let src = repo_root().join(crate_dir).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = Edges::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (line_number, line) in code_of(&text) {
            if line.trim_start().starts_with("mod ") || line.trim_start().starts_with("pub mod ") {
                continue;
            }
            for path in paths_in(&line) {
                let Some(to) = resolve(&path, &from, &modules) else {
                    continue;
                };
                let counted = to != from
                    && (from.is_empty()
                        || to.is_empty()
                        || !(is_ancestor(&from, &to) || is_ancestor(&to, &from)));
                if counted {
                    let evidence = format!(
                        "{}:{line_number}: {}",
                        file.strip_prefix(repo_root()).unwrap().display(),
                        line.trim()
                    );
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(evidence);
                }
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &Edges) -> Vec<Vec<Vec<String>>> {
    struct Search<'a> {
        edges: &'a Edges,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on_stack: BTreeSet<Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    impl Search<'_> {
        fn visit(&mut self, node: &Vec<String>) {
            let n = self.index.len();
            self.index.insert(node.clone(), n);
            self.low.insert(node.clone(), n);
            self.stack.push(node.clone());
            self.on_stack.insert(node.clone());
            let targets: Vec<Vec<String>> = self
                .edges
                .get(node)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for target in targets {
                if !self.index.contains_key(&target) {
                    self.visit(&target);
                    let low = self.low[node].min(self.low[&target]);
                    self.low.insert(node.clone(), low);
                } else if self.on_stack.contains(&target) {
                    let low = self.low[node].min(self.index[&target]);
                    self.low.insert(node.clone(), low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(&top);
                    let done = &top == node;
                    component.push(top);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    let nodes: Vec<Vec<String>> = edges.keys().cloned().collect();
    for node in &nodes {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn no_crate_has_a_cycle_among_its_modules() {
    // Goal: a new import cycle fails CI. Method: build each crate's module graph from its
    // source text and list every strongly connected component, with one line per edge,
    // except the known one of node within its listed modules (KNOWN_NODE_CYCLE).
    let mut report = String::new();
    for crate_dir in CRATES {
        let edges = module_edges(crate_dir);
        for component in cycles(&edges) {
            let names: Vec<String> = component.iter().map(|m| name(m)).collect();
            let known = *crate_dir == "node"
                && names.iter().all(|n| KNOWN_NODE_CYCLE.contains(&n.as_str()));
            if known {
                continue;
            }
            report.push_str(&format!(
                "{crate_dir}: a cycle among {} modules:\n",
                component.len()
            ));
            for from in &component {
                for (to, evidence) in edges.get(from).into_iter().flatten() {
                    if component.contains(to) {
                        report.push_str(&format!(
                            "  {} -> {}   ({evidence})\n",
                            name(from),
                            name(to)
                        ));
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "module cycles:\n{report}");
}

#[test]
fn the_cycle_check_finds_a_cycle_and_reads_grouped_paths() {
    // Goal: the check above can fail. Method: a two-module cycle written as edges, and a
    // grouped `use` line parsed into its members.
    let module = |s: &str| vec![s.to_owned()];
    let mut edges = Edges::new();
    edges
        .entry(module("a"))
        .or_default()
        .insert(module("b"), String::new());
    edges
        .entry(module("b"))
        .or_default()
        .insert(module("a"), String::new());
    assert_eq!(cycles(&edges), vec![vec![module("a"), module("b")]]);
    let paths = paths_in("use super::{format::{self, FileKind}, Corruption};");
    assert_eq!(
        paths,
        vec![
            vec!["super".to_owned(), "format".to_owned()],
            vec!["super".to_owned(), "Corruption".to_owned()],
        ]
    );
}
