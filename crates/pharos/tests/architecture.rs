//! The architecture as `docs/ARCHITECTURE.md` states it, checked against the tree:
//! the dependency picture against `cargo metadata`, the rules on which crates may depend
//! on which, and no I/O (and no clock but for timing reports) in the pure crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every workspace crate and its normal (not dev, not build) workspace dependencies.
fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// Every crate's normal dependencies of any kind (workspace or not), by name.
fn all_deps(krate: &str) -> BTreeSet<String> {
    let manifest =
        std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap();
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").to_string();
            if !name.is_empty() && !name.starts_with('#') {
                deps.insert(name);
            }
        }
    }
    deps
}

/// The ```deps block of docs/ARCHITECTURE.md.
fn documented_deps() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let start = doc
        .find("```deps\n")
        .expect("docs/ARCHITECTURE.md has a ```deps block")
        + "```deps\n".len();
    let end = start + doc[start..].find("```").expect("the block ends");
    doc[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, deps) = l.split_once(':').expect("lines are `crate: deps`");
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            (name.trim().to_string(), deps)
        })
        .collect()
}

#[test]
fn the_documented_dependency_picture_is_the_real_one() {
    let real = workspace_deps();
    let documented = documented_deps();
    for (name, deps) in &real {
        assert_eq!(
            documented.get(name),
            Some(deps),
            "docs/ARCHITECTURE.md's deps block is wrong for {name}: the crate depends on {deps:?}"
        );
    }
    for name in documented.keys() {
        assert!(
            real.contains_key(name),
            "{name} is documented but is no crate"
        );
    }
}

const PURE: [&str; 6] = [
    "pharos-core",
    "pharos-queueing",
    "pharos-forecast",
    "pharos-fluid",
    "pharos-policy",
    "pharos-sim",
];
const ENGINES: [&str; 3] = ["pharos-local", "pharos-ray", "pharos-kube"];
/// What does I/O, talks to the network, or runs processes: never under a pure crate.
const IMPURE_CRATES: [&str; 12] = [
    "tokio",
    "sqlx",
    "axum",
    "hyper",
    "hyper-util",
    "kube",
    "libc",
    "ureq",
    "tar",
    "csv",
    "pharos-engine",
    "pharos-server",
];

#[test]
fn crates_depend_only_where_the_architecture_allows() {
    let real = workspace_deps();
    for pure in PURE {
        let deps = all_deps(pure);
        for bad in IMPURE_CRATES.iter().chain(&ENGINES) {
            assert!(!deps.contains(*bad), "{pure} is pure but depends on {bad}");
        }
    }
    for leaf in ["pharos-core", "pharos-queueing", "pharos-fluid"] {
        assert!(real[leaf].is_empty(), "{leaf} needs no other pharos crate");
    }
    // The example workloads are tenants' programs: nothing of pharos inside.
    assert!(real["pharos-workloads"].is_empty());
    for engine in ENGINES {
        assert!(
            real[engine].contains("pharos-engine"),
            "{engine} implements the seams of pharos-engine"
        );
        for other in ENGINES.iter().chain(&["pharos-server"]) {
            assert!(
                !real[engine].contains(*other),
                "{engine} depends on {other}: engines know the seams only"
            );
        }
    }
    for engine in ENGINES {
        assert!(
            !real["pharos-server"].contains(engine),
            "the server depends on the engine {engine}: it must know engines only through the seams"
        );
        assert!(!real["pharos-engine"].contains(engine));
    }
    assert!(!real["pharos-engine"].contains("pharos-server"));
    // Only the binary wires engines.
    for (name, deps) in &real {
        if name != "pharos" {
            for engine in ENGINES {
                assert!(!deps.contains(engine), "{name} depends on {engine}");
            }
        }
    }
}

/// The source lines of `dir`'s files that are not test code (a file's `#[cfg(test)]`
/// module is its last item in this code base; files named tests.rs are tests).
fn non_test_lines(dir: &Path) -> Vec<(PathBuf, usize, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if line.trim_start().starts_with("#[cfg(test)]") {
                        break;
                    }
                    let code = line.split("//").next().unwrap_or("");
                    out.push((p.clone(), i + 1, code.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn the_pure_crates_do_no_io_and_read_no_clock() {
    let io = [
        "std::fs",
        "fs::",
        "File::",
        "std::net",
        "std::process",
        "std::env::var",
        "std::io::stdin",
        "println!",
        "eprintln!",
    ];
    let clock = ["Instant", "SystemTime"];
    // A solver reports how long it took; forecast evaluation times the forecasters.
    let may_time = [
        "pharos-fluid/src/lp.rs",
        "pharos-fluid/src/exact/mod.rs",
        "pharos-fluid/src/exact/build.rs",
        "pharos-forecast/src/eval.rs",
    ];
    let mut found = Vec::new();
    for pure in PURE {
        for (path, n, line) in non_test_lines(&root().join("crates").join(pure).join("src")) {
            let rel = path.to_string_lossy().to_string();
            for w in io {
                if line.contains(w) {
                    found.push(format!("{rel}:{n}: {w}"));
                }
            }
            if !may_time.iter().any(|m| rel.ends_with(m)) {
                for w in clock {
                    if line.contains(w) {
                        found.push(format!("{rel}:{n}: {w}"));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O or a clock in a pure crate:\n{}",
        found.join("\n")
    );
}
