//! House rules checked over the source tree.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_is_documented_and_free_of_debug_leftovers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    rust_files(&root.join("crates"), &mut files);
    assert!(files.len() > 10);
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let shown = f.strip_prefix(root).unwrap().display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!("{shown}: starts without a //! module doc"));
        }
        let dbg = ["dbg", "!("].concat();
        let todo = ["to", "do!("].concat();
        for (i, line) in text.lines().enumerate() {
            if line.contains(&dbg) || line.contains(&todo) {
                problems.push(format!("{shown}:{}: debugging leftover", i + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The rules do no IO: `creditd-rules` may depend only on these crates (Cargo then refuses any
/// use of polars, SQLite, lettre or tokio inside it), and nothing in it names the clock.
#[test]
fn the_rules_crate_depends_on_no_io_crate_and_reads_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/creditd-rules");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let allowed = ["chrono", "chrono-tz", "rustc-hash"];
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            deps.push(line.split('=').next().unwrap().trim().to_string());
        }
    }
    assert!(!deps.is_empty());
    for d in &deps {
        assert!(
            allowed.contains(&d.as_str()),
            "creditd-rules depends on {d}"
        );
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let clock = ["Utc::", "now()"].concat();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.contains(&clock) && !line.contains("std::fs") && !line.contains("SystemTime"),
                "{}:{}: the rules read no clock and no file",
                f.display(),
                i + 1
            );
        }
    }
}

/// The files of `src/` (relative paths) whose text contains `needle` outside comments, with
/// the line numbers.
fn uses(needle: &str) -> Vec<(String, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let shown = f.strip_prefix(root).unwrap().display().to_string();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(needle) {
                out.push((shown.clone(), i + 1));
            }
        }
    }
    out
}

/// Whether `file` is `module`'s own file or one of its submodules.
fn within(file: &str, module: &str) -> bool {
    file == format!("src/{module}.rs") || file.starts_with(&format!("src/{module}/"))
}

/// Only `store` speaks SQL and only `events` knows polars and the Parquet layout: no other
/// module names either crate, so none can hold a connection or a frame.
#[test]
fn only_store_names_rusqlite_and_only_events_names_polars() {
    let mut problems = Vec::new();
    for (krate, owner) in [("rusqlite", "store"), ("polars", "events")] {
        for (file, line) in uses(krate) {
            if !within(&file, owner) {
                problems.push(format!("{file}:{line}: {krate} outside {owner}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Only `events` knows where a part lives: no other module builds a part's path (it asks
/// `events` for it, or reads it from the store's listing).
#[test]
fn only_events_builds_part_paths() {
    let mut problems = Vec::new();
    for needle in [".parquet", "events/local_date="] {
        for (file, line) in uses(needle) {
            if !within(&file, "events") {
                problems.push(format!("{file}:{line}: {needle} outside events"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Nothing below `cli` and `daemon` reads the wall clock: `now` is a parameter (durations
/// measured with `Instant` are fine). `main` sets up logging only.
#[test]
fn only_cli_and_daemon_read_the_wall_clock() {
    let mut problems = Vec::new();
    for read in [
        "SystemTime::now",
        "Utc::now",
        "Local::now",
        "UNIX_EPOCH.elapsed",
    ] {
        for (file, line) in uses(read) {
            if !(within(&file, "cli") || within(&file, "daemon")) {
                problems.push(format!("{file}:{line}: {read}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// No stub is left in: every path does what it says.
#[test]
fn no_unimplemented_code() {
    let stub = ["unimplemented", "!("].concat();
    let found = uses(&stub);
    assert!(found.is_empty(), "{found:?}");
}

/// The top-level modules of the main crate, as `src/lib.rs` declares them.
fn modules() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// The modules each top-level module names (`crate::x`, `crate::{x, y}`), outside comments.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mods = modules();
    let mut graph = std::collections::BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for f in files {
        let rel = f
            .strip_prefix(root.join("src"))
            .unwrap()
            .to_string_lossy()
            .to_string();
        let Some(from) = rel
            .split(['/', '.'])
            .next()
            .filter(|m| mods.iter().any(|x| x == m))
        else {
            continue; // lib.rs, main.rs, bin/
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let edges: &mut std::collections::BTreeSet<String> =
            graph.entry(from.to_string()).or_default();
        // Whole text without line comments, so a `use crate::{a,\n b}` reads as one.
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                inner
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                    .collect()
            } else {
                vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")]
            };
            for n in names {
                if n != from && mods.iter().any(|m| m == n) {
                    edges.insert(n.to_string());
                }
            }
        }
    }
    graph
}

/// The modules form layers: no module reaches itself through the modules it names.
#[test]
fn no_import_cycles_between_modules() {
    let graph = module_graph();
    assert!(graph.get("cli").is_some_and(|e| e.contains("tasks")));
    let mut cycles = Vec::new();
    for start in graph.keys() {
        // Depth-first from `start`, looking for a path back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut c = path.clone();
                    c.push(start.clone());
                    cycles.push(c.join(" → "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    cycles.sort();
    cycles.dedup();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// Files a newcomer can read: no source file (tests included) over 700 lines, except those
/// named here with the reason they stay whole.
#[test]
fn no_source_file_over_700_lines() {
    let allowed: &[(&str, &str)] = &[];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut over = Vec::new();
    for f in files {
        let shown = f.strip_prefix(root).unwrap().display().to_string();
        let lines = std::fs::read_to_string(&f).unwrap().lines().count();
        if lines > 700 && !allowed.iter().any(|(p, _)| *p == shown) {
            over.push(format!("{shown}: {lines} lines"));
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n"));
}
