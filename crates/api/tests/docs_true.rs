//! The repository's documents stay true to the code: every anchor cited after `SEMANTICS.md#` or `BENCHMARKS.md#`
//! in code, tests and docs exists, and docs/ARCHITECTURE.md's "depends on" column lists exactly the
//! `ironmesh-*` dependencies each crate's Cargo.toml declares. Both drift silently otherwise: a renamed
//! section leaves dead citations, a new dependency leaves the crate map wrong. Every crate also inherits
//! the workspace lints.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Files under `dir` (recursively) whose name ends in one of `extensions`, skipping build output.
fn files(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files(&path, extensions, out);
            }
        } else if extensions
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext))
        {
            out.push(path);
        }
    }
}

/// The anchors cited as `<document>#anchor` in `text`.
fn cited(text: &str, document: &str) -> Vec<String> {
    let needle = format!("{document}#");
    text.match_indices(&needle)
        .map(|(at, _)| {
            text[at + needle.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|anchor| !anchor.is_empty())
        .collect()
}

#[test]
fn every_cited_anchor_exists() {
    let repo = repo();
    let mut sources = Vec::new();
    files(&repo.join("crates"), &["rs"], &mut sources);
    files(&repo.join("docs"), &["md"], &mut sources);
    sources.push(repo.join("README.md"));
    sources.push(repo.join("BENCHMARKS.md"));
    let documents = [
        ("SEMANTICS.md", repo.join("docs/SEMANTICS.md")),
        ("BENCHMARKS.md", repo.join("BENCHMARKS.md")),
    ];
    let mut dead = Vec::new();
    let mut seen = 0;
    for (name, path) in &documents {
        let target = fs::read_to_string(path).unwrap();
        for source in &sources {
            let text = fs::read_to_string(source).unwrap();
            for anchor in cited(&text, name) {
                seen += 1;
                if !target.contains(&format!("<a id=\"{anchor}\"></a>")) {
                    dead.push(format!("{}: {name}#{anchor}", source.display()));
                }
            }
        }
    }
    assert!(
        seen >= 40,
        "only {seen} citations found: is the walk broken?"
    );
    assert!(
        dead.is_empty(),
        "citations of anchors that do not exist (add `<a id=\"...\"></a>` or fix the citation):\n{}",
        dead.join("\n")
    );
}

/// `ironmesh-*` names in a Cargo.toml's `[dependencies]` table, without the prefix.
fn declared(manifest: &str) -> BTreeSet<String> {
    let mut in_dependencies = false;
    let mut out = BTreeSet::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_dependencies = line.trim() == "[dependencies]";
        } else if in_dependencies && let Some(rest) = line.strip_prefix("ironmesh-") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn architecture_lists_each_crates_dependencies() {
    let repo = repo();
    let architecture = fs::read_to_string(repo.join("docs/ARCHITECTURE.md")).unwrap();
    let mut crates_dir = fs::read_dir(repo.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect::<Vec<_>>();
    crates_dir.sort();
    let mut wrong = Vec::new();
    for dir in &crates_dir {
        let short = dir.file_name().unwrap().to_str().unwrap().to_string();
        let row_start = format!("| `ironmesh-{short}` (`crates/{short}`) |");
        let Some(row) = architecture.lines().find(|l| l.starts_with(&row_start)) else {
            wrong.push(format!(
                "crates/{short}: no row `{row_start} ...` in the crate table"
            ));
            continue;
        };
        let column = row.trim_end_matches('|').rsplit('|').next().unwrap();
        // The column is a comma-separated list, optionally followed by `; no I/O`; `—` and
        // "nothing of ours" mean none.
        let listed: BTreeSet<String> = column
            .split(';')
            .next()
            .unwrap()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != "—" && s != "nothing of ours")
            .collect();
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let actual = declared(&manifest);
        if listed != actual {
            wrong.push(format!(
                "crates/{short}: ARCHITECTURE.md says {listed:?}, Cargo.toml says {actual:?}"
            ));
        }
    }
    assert!(crates_dir.len() >= 10, "{} crates found", crates_dir.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Not a document, but the same kind of drift: a crate added without `[lints] workspace = true` would
/// silently allow unsafe code and debugging leftovers.
#[test]
fn every_crate_inherits_the_workspace_lints() {
    let mut missing = Vec::new();
    for entry in fs::read_dir(repo().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if let Ok(text) = fs::read_to_string(&manifest)
            && !text.contains("\n[lints]\nworkspace = true\n")
        {
            missing.push(manifest.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "add `[lints]\\nworkspace = true` to: {}",
        missing.join(", ")
    );
}
