//! Shared by the tests that check "reading never writes": every file and directory under a
//! directory with its bytes, and what changed between two such pictures.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file and directory under a directory (relative names) with its bytes.
pub type Tree = BTreeMap<PathBuf, Vec<u8>>;

/// The names that were added, removed or whose bytes changed between two [`contents`].
pub fn changed(before: &Tree, after: &Tree) -> Vec<PathBuf> {
    let mut out: Vec<_> =
        before.iter().filter(|(p, b)| after.get(*p) != Some(*b)).map(|(p, _)| p.clone()).collect();
    out.extend(after.keys().filter(|p| !before.contains_key(*p)).cloned());
    out
}

/// Every file and directory under `dir` with its bytes (a directory has none).
pub fn contents(dir: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, Vec::new());
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}
