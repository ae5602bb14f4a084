//! Tidy checks (after rust-analyzer's `tidy.rs`): reads the workspace's source tree and fails,
//! naming file:line, when a module boundary that ARCHITECTURE.md states is crossed.
//!
//! - Only `taskflow-core/src/cluster/` knows ractor_cluster (in code: comments and string
//!   literals may name it as prose).
//! - Only the store, the flow loader, the executor's held/replica/recovery code and the
//!   cluster's TLS file loading touch the file system (`std::fs`, `tokio::fs`) in taskflow-core.
//! - The library prints nothing: no `println!`, `eprintln!`, `print!`, `eprint!` or `dbg!` in
//!   taskflow-core/src outside comments (doc examples may print).
//! - The server does not open a `Journal` or a `Store` itself: it reads past days through the
//!   core's read-only `PastDay` / `PastLog`.
//!
//! Code is what remains after removing comments and string literals; line numbers are kept.
//! The boundary checks skip test code — files named `tests.rs`, files under a `tests/`
//! directory of `src/`, and a trailing `#[cfg(test)] mod … { … }` — since tests may set up
//! fixtures as they like.

use std::fs;
use std::path::{Path, PathBuf};

/// Files and directories (ending in `/`) allowed to name ractor_cluster.
const RACTOR_CLUSTER_ALLOWED: &[&str] =
    &["taskflow-core/src/cluster.rs", "taskflow-core/src/cluster/"];

/// Files and directories (ending in `/`) of taskflow-core allowed to touch the file system.
const FS_ALLOWED: &[&str] = &[
    // The store: the only module that touches the data files.
    "taskflow-core/src/store.rs",
    "taskflow-core/src/store/",
    // The flow loader reads flow directories.
    "taskflow-core/src/flow.rs",
    "taskflow-core/src/flow/",
    // The executor's held outcomes (`<data>/held/`).
    "taskflow-core/src/cluster/held.rs",
    // The executor's replicas (`<data>/replica/`), one store per replica.
    "taskflow-core/src/cluster/replica.rs",
    // A recovering manager stages and moves the recovered day store into place.
    "taskflow-core/src/cluster/recovery.rs",
    // The cluster link's TLS certificates, keys and CAs (PEM files named by the caller).
    "taskflow-core/src/cluster/tls.rs",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// Every `.rs` file under `dir` (relative to the workspace, with `/` separators), sorted.
fn rust_files(root: &Path, dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries {
            let path = e.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() {
                if name != "target" && name != "node_modules" && !name.starts_with('.') {
                    walk(root, &path, out);
                }
            } else if name.ends_with(".rs") {
                let rel = path.strip_prefix(root).expect("under the root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &root.join(dir), &mut out);
    out.sort();
    out
}

fn allowed(path: &str, list: &[&str]) -> bool {
    list.iter().any(|a| if a.ends_with('/') { path.starts_with(a) } else { path == *a })
}

/// `src` with comments and string/char literals blanked out (newlines kept, so line numbers
/// stay right).
fn code_only(src: &str) -> String {
    let s: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                blank(&mut out, s[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, s[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (i == 0 || !ident(s[i - 1]) || (s[i - 1] == 'b' && (i < 2 || !ident(s[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
            && {
                let mut j = i + 1;
                while s.get(j) == Some(&'#') {
                    j += 1;
                }
                s.get(j) == Some(&'"')
            }
        {
            // A raw string: r"…", r#"…"#, br##"…"##.
            out.push(' ');
            i += 1;
            let mut hashes = 0;
            while s[i] == '#' {
                hashes += 1;
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
            while i < s.len() {
                if s[i] == '"' && (1..=hashes).all(|k| s.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, s[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < s.len() && s[i] != '"' {
                if s[i] == '\\' {
                    blank(&mut out, s[i]);
                    i += 1;
                }
                if i < s.len() {
                    blank(&mut out, s[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || s.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''); anything else is a lifetime.
            out.push(' ');
            i += 1;
            if s[i] == '\\' {
                // The backslash and the escaped character (which may be a quote).
                out.push_str("  ");
                i += 2;
            }
            while i < s.len() && s[i] != '\'' {
                blank(&mut out, s[i]);
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether `path` is a test file by its name (`tests.rs`, or under a `tests/` directory below
/// `src/`).
fn test_file(path: &str) -> bool {
    path.ends_with("/tests.rs")
        || path.split_once("/src/").is_some_and(|(_, r)| r.contains("tests/"))
}

/// The code lines `(number, text)` of a file, without a trailing `#[cfg(test)] mod … {` block.
fn non_test_lines(code: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]" {
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            if next
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.trim_end().ends_with('{'))
            {
                end = i;
                break;
            }
        }
    }
    lines[..end].iter().enumerate().map(|(i, l)| (i + 1, *l)).collect()
}

/// Whether `line` contains `word` not preceded or followed by an identifier character.
fn has_word(line: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Whether the code line uses the file system: `std::fs`, `tokio::fs`, `fs::…` after an import,
/// or `fs` inside a `std::{…}` import.
fn uses_fs(line: &str) -> bool {
    if has_word(line, "fs") && line.contains("fs::") {
        return true;
    }
    let line = line.trim_start();
    line.starts_with("use std::{") && line.split(['{', ',', '}']).any(|p| p.trim() == "fs")
}

struct Finding {
    at: String,
    what: String,
}

fn report(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("{}: {}", f.at, f.what)).collect::<Vec<_>>().join("\n")
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn only_the_cluster_module_knows_ractor_cluster() {
    let root = workspace();
    let mut findings = Vec::new();
    for dir in ["taskflow-core", "taskflow-server", "examples", "benches"] {
        for path in rust_files(&root, dir) {
            if allowed(&path, RACTOR_CLUSTER_ALLOWED) || test_file(&path) {
                continue;
            }
            let code = code_only(&read(&root, &path));
            for (n, line) in non_test_lines(&code) {
                if has_word(line, "ractor_cluster") {
                    findings.push(Finding {
                        at: format!("{path}:{n}"),
                        what: format!(
                            "names ractor_cluster outside taskflow-core/src/cluster/: {}",
                            line.trim()
                        ),
                    });
                }
            }
        }
    }
    assert!(findings.is_empty(), "\n{}\n", report(&findings));
}

#[test]
fn only_the_store_the_flow_loader_and_the_executors_files_touch_the_file_system() {
    let root = workspace();
    let mut findings = Vec::new();
    for path in rust_files(&root, "taskflow-core/src") {
        if allowed(&path, FS_ALLOWED) || test_file(&path) {
            continue;
        }
        let code = code_only(&read(&root, &path));
        for (n, line) in non_test_lines(&code) {
            if uses_fs(line) {
                findings.push(Finding {
                    at: format!("{path}:{n}"),
                    what: format!(
                        "file system access outside store/, flow/ and the executor's held, replica \
                         and recovery code: {}",
                        line.trim()
                    ),
                });
            }
        }
    }
    assert!(findings.is_empty(), "\n{}\n", report(&findings));
}

#[test]
fn the_library_prints_nothing() {
    let root = workspace();
    let mut findings = Vec::new();
    for path in rust_files(&root, "taskflow-core/src") {
        let code = code_only(&read(&root, &path));
        for (n, line) in code.lines().enumerate() {
            for mac in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
                if has_word(line, &mac[..mac.len() - 1]) && line.contains(mac) {
                    findings.push(Finding {
                        at: format!("{path}:{}", n + 1),
                        what: format!(
                            "`{mac}` in the library (hand the text to the caller: a status \
                             sink, a log event, a return value): {}",
                            line.trim()
                        ),
                    });
                }
            }
        }
    }
    assert!(findings.is_empty(), "\n{}\n", report(&findings));
}

#[test]
fn the_server_opens_no_journal_or_store_itself() {
    let root = workspace();
    let mut findings = Vec::new();
    for path in rust_files(&root, "taskflow-server/src") {
        let code = code_only(&read(&root, &path));
        for (n, line) in code.lines().enumerate() {
            if has_word(line, "Journal") || line.contains("Store::open") {
                findings.push(Finding {
                    at: format!("{path}:{}", n + 1),
                    what: format!(
                        "the server opens a journal or store itself (read past days with \
                         `taskflow_core::PastDay` / `PastLog`): {}",
                        line.trim()
                    ),
                });
            }
        }
    }
    assert!(findings.is_empty(), "\n{}\n", report(&findings));
}

/// The checks above are only as good as `code_only`: it must blank comments and literals and
/// nothing else.
#[test]
fn code_only_blanks_comments_and_literals_and_keeps_lines() {
    let src = concat!(
        "let a = \"ractor_cluster\"; // ractor_cluster\n",
        "/* std::fs\n */ let b = r#\"fs::x\"#;\n",
        "let c = '\"'; fn f<'a>(x: &'a str) { std::fs::read(x); }\n",
        "/// println!(\"hi\")\n",
        "let d = b'\\'';",
    );
    let code = code_only(src);
    assert_eq!(code.lines().count(), src.lines().count());
    assert!(!code.contains("ractor_cluster"), "{code}");
    assert!(!code.contains("println"), "{code}");
    let lines: Vec<&str> = code.lines().collect();
    assert!(!uses_fs(lines[1]) && !uses_fs(lines[2]), "{code}");
    assert!(uses_fs(lines[3]), "code after a char literal and a lifetime is kept: {code}");
    assert!(lines[3].contains("fn f<'a>(x: &'a str)"), "{code}");
    assert!(uses_fs("use std::{fs, io};") && uses_fs("tokio::fs::write(p, b)"));
    assert!(!uses_fs("let offs::x = 1;") && !uses_fs("self.fs_root()"));
}

/// The top-level module of a taskflow-core source file (`src/control/record.rs` → `control`),
/// or `None` for `lib.rs`.
fn top_module(path: &str) -> Option<String> {
    let rest = path.strip_prefix("taskflow-core/src/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The top-level modules a piece of code names through `crate::…`, with the line of each:
/// `crate::a::b`, `crate::{a, b::c}` (nested braces and several lines included).
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at brace depth 0 of the group.
            let mut depth = 0;
            let mut expecting = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting = true,
                    c if expecting && depth == 0 && ident(c) => {
                        let name: String = group[i..].chars().take_while(|&c| ident(c)).collect();
                        out.push((name, line_of(at)));
                        expecting = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| ident(c)).collect();
            if !name.is_empty() {
                out.push((name, line_of(at)));
            }
        }
    }
    out
}

/// ARCHITECTURE.md's layers: no import circle between taskflow-core's top-level modules (test
/// code, which may reach anywhere, aside). A circle is printed whole, each edge with a
/// file:line that makes it.
#[test]
fn top_level_modules_of_the_core_import_no_circle() {
    use std::collections::BTreeMap;
    let root = workspace();
    // edges[a][b] = the first file:line where module a names module b.
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let modules: std::collections::BTreeSet<String> =
        rust_files(&root, "taskflow-core/src").iter().filter_map(|p| top_module(p)).collect();
    for path in rust_files(&root, "taskflow-core/src") {
        let (Some(from), false) = (top_module(&path), test_file(&path)) else { continue };
        let code = code_only(&read(&root, &path));
        let lines = non_test_lines(&code);
        let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        for (to, n) in crate_paths(&text) {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().entry(to).or_insert(format!("{path}:{n}"));
            }
        }
    }
    // Depth-first search for a back edge; the stack names the circle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_owned(), 1);
        stack.push(m.to_owned());
        for to in edges.get(m).into_iter().flat_map(|e| e.keys()) {
            match state.get(to.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == to).expect("on the stack");
                    let mut circle = stack[from..].to_vec();
                    circle.push(to.clone());
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(to, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in &modules {
        if state.contains_key(m.as_str()) {
            continue;
        }
        if let Some(circle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            let shown: Vec<String> = circle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], edges[&w[0]][&w[1]]))
                .collect();
            panic!("an import circle between top-level modules:\n{}\n", shown.join("\n"));
        }
    }
}

#[test]
fn crate_paths_finds_plain_and_grouped_imports() {
    let code = "use crate::a::X;\nuse crate::{b, c::{D, E},\n f::G};\nlet x = crate::h::y();";
    let names: Vec<(String, usize)> = crate_paths(code);
    let got: Vec<(&str, usize)> = names.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(got, [("a", 1), ("b", 2), ("c", 2), ("f", 2), ("h", 4)]);
}

/// The `taskflow_core::…` module paths named in log directives (`TASKFLOW_LOG`-style
/// `path=level`) in `text`, with their 1-based line numbers.
fn log_targets(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("taskflow_core::") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if tail[end..].starts_with('=') {
                out.push((tail[..end].to_owned(), i + 1));
            }
            rest = &tail[end..];
        }
    }
    out
}

/// Whether `taskflow_core::a::b` is a module of the core (`src/a/b.rs` or `src/a/b/mod.rs`).
fn core_module_exists(root: &Path, target: &str) -> bool {
    let parts: Vec<&str> = target.split("::").skip(1).collect();
    if parts.is_empty() {
        return true;
    }
    let base = root.join("taskflow-core/src").join(parts.join("/"));
    base.with_extension("rs").is_file() || base.join("mod.rs").is_file()
}

#[test]
fn every_log_directive_names_a_module_that_exists() {
    // A log filter naming a moved module silently matches nothing: fault tests waiting for
    // `job started` from `taskflow_core::actors::slot` at debug hung once the slot had moved.
    let root = workspace();
    let mut findings = Vec::new();
    let mut files: Vec<String> = ["taskflow-core", "taskflow-server", "examples", "benches", ".ci"]
        .iter()
        .flat_map(|d| rust_files(&root, d))
        .collect();
    files.extend(["README.md", "ARCHITECTURE.md", ".ci/run"].map(String::from));
    for path in files {
        let Ok(text) = fs::read_to_string(root.join(&path)) else { continue };
        for (target, n) in log_targets(&text) {
            if !core_module_exists(&root, &target) {
                findings.push(Finding {
                    at: format!("{path}:{n}"),
                    what: format!("log directive for `{target}`, which is no module of the core"),
                });
            }
        }
    }
    assert!(findings.is_empty(), "\n{}\n", report(&findings));
}

#[test]
fn log_targets_finds_directives_only() {
    let text = "let l = \"warn,taskflow_core::executor::slot=debug\";\nuse taskflow_core::view;";
    assert_eq!(log_targets(text), vec![("taskflow_core::executor::slot".to_owned(), 1)]);
    let root = workspace();
    assert!(core_module_exists(&root, "taskflow_core::executor::slot"));
    assert!(!core_module_exists(&root, "taskflow_core::actors::slot"));
}
