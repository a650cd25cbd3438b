//! Imports run one way (docs/architecture.md): in no crate of the workspace
//! does a module reach, through the paths it names, back to itself — not
//! file by file, and not folder by folder (`raw` as a whole against
//! `engine` as a whole). What executes never imports what decides; a new
//! part that would close a loop fails here, naming the loop.
//!
//! Read from the sources: every `crate::a::b` path and `use crate::{a, b}`
//! group, and `super::x`, outside comments and `#[cfg(test)]` code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source roots, relative to the workspace.
const CRATES: &[&str] = &["src", "vm/src", "replay/src", "gdb/src", "tui/src"];

/// Module path (`["raw", "csam"]`; the crate root is `[]`) → file.
fn modules(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under the root").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The source without comments and without what only tests compile.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source file");
    let mut out = String::new();
    let mut skip_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut pending_test = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        if pending_test && skip_depth.is_none() {
            pending_test = false;
            if opens == 0 {
                continue; // a one-line item (`use`) for tests only
            }
            skip_depth = Some(depth);
        }
        depth = depth + opens - closes.min(depth + opens);
        if let Some(d) = skip_depth {
            if depth <= d && (opens > 0 || closes > 0) {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The module paths a file names: `crate::a::b::Item` gives `a::b` (the
/// longest prefix that is a module), `crate::{a, b::c}` gives each, and
/// `super::x` resolves against the file's own module.
fn references(
    own: &[String],
    is_mod_file: bool,
    text: &str,
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> BTreeSet<Vec<String>> {
    let mut paths: Vec<Vec<String>> = Vec::new();
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.trim()
                    .trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .to_string()
            })
            .take_while(|p| !p.is_empty() && p.chars().next().is_some_and(|c| c.is_lowercase() || c == '_'))
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                paths.push(ident(item));
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            paths.push(ident(&rest[..end]));
        }
    }
    // `super` is the parent of a file's module (a mod.rs file is its module).
    let parent: Vec<String> = if is_mod_file || own.is_empty() {
        own.iter().take(own.len().saturating_sub(1)).cloned().collect()
    } else {
        own[..own.len() - 1].to_vec()
    };
    for (i, _) in text.match_indices("super::") {
        let rest = &text[i + "super::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let mut p = parent.clone();
        p.extend(ident(&rest[..end]));
        paths.push(p);
    }
    paths
        .into_iter()
        .filter_map(|p| {
            (0..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|m| mods.contains_key(m))
        })
        .collect()
}

/// Strongly connected components with more than one member: the loops.
fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// The modules a file declares (`mod x;`) under a `cfg` that names `test`.
fn test_only_children(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("source file");
    let mut out = Vec::new();
    let mut under_test_cfg = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("#[cfg(") {
            under_test_cfg = line.contains("test");
            continue;
        }
        if under_test_cfg {
            let decl = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                out.push(name.trim().to_string());
            }
        }
        under_test_cfg = false;
    }
    out
}

#[test]
fn no_module_imports_its_way_back_to_itself() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut edges = 0;
    for crate_src in CRATES {
        let mut mods = modules(&workspace.join(crate_src));
        // Files that only tests compile (`#[cfg(...test...)] mod x;` in their
        // parent) are tests, not layers.
        let test_only: Vec<Vec<String>> = mods
            .iter()
            .flat_map(|(module, path)| {
                test_only_children(path)
                    .into_iter()
                    .map(|child| module.iter().cloned().chain([child]).collect::<Vec<_>>())
            })
            .collect();
        for m in &test_only {
            mods.remove(m);
        }
        assert!(mods.len() > 1, "{crate_src}: no modules found");
        // Files, then folders (each module by its first one and two names).
        for depth in [usize::MAX, 1, 2] {
            let name = |m: &[String]| {
                let m = &m[..m.len().min(depth)];
                if m.is_empty() {
                    "(crate root)".to_string()
                } else {
                    m.join("::")
                }
            };
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (module, path) in &mods {
                let is_mod_file = path.file_name().is_some_and(|f| f == "mod.rs");
                let from = name(module);
                for target in references(module, is_mod_file, &code(path), &mods) {
                    let to = name(&target);
                    // A module naming its own children is not a loop back.
                    if to != from && !target.starts_with(&module[..module.len().min(depth)]) {
                        graph.entry(from.clone()).or_default().insert(to);
                        edges += 1;
                    }
                }
            }
            for l in loops(&graph) {
                found.push(format!("{crate_src}: {}", l.join(" <-> ")));
            }
        }
    }
    assert!(edges > 100, "only {edges} imports read: the reader is broken");
    found.sort();
    found.dedup();
    assert!(found.is_empty(), "import loops:\n{}", found.join("\n"));
}
