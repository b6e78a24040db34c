//! The README's commands, run as written: every command block is marked
//! `<!-- readme-test: NAME -->` (run here) or `<!-- readme-test: skip -- WHY -->`, and
//! the output shown after a block (`<!-- readme-output: NAME -->`) must be what it
//! prints, line by line in order (other lines may come between), `[..]` standing for
//! what varies (times, ids, numbers of a run).
//!
//! Each block runs in bash (`set -euo pipefail`) in a directory of its own holding the
//! repository's `examples/` and `data/`, with a home of its own (so the server's default
//! data directory and the client's files are the block's), `target/release/` and
//! `cargo run --release --` meaning the binaries under test. What the harness adds, and
//! a reader does not need: a server or replica started in the background is waited for
//! until it answers, and every process a block started is ended after it.
//!
//! `PHAROS_README_BLOCK=NAME` runs one block; `PHAROS_README_SHOW=1` prints what each
//! printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An output shown for a block: its name and lines.
type Shown = (String, Vec<String>);

#[derive(Debug)]
struct Block {
    name: String,
    /// The README line of its marker.
    line: usize,
    body: Vec<String>,
    timeout_s: u64,
}

/// (blocks to run, expected outputs by name, unmarked command blocks as line numbers).
fn blocks(readme: &str) -> (Vec<Block>, Vec<Shown>, Vec<usize>) {
    let lines: Vec<&str> = readme.lines().collect();
    let (mut run, mut outputs, mut unmarked) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.starts_with("```") {
            // A fence: its body, and what marks it.
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with("```") {
                body.push(lines[i].to_string());
                i += 1;
            }
            let marker = start
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .and_then(|m| m.strip_prefix("<!-- "))
                .and_then(|m| m.strip_suffix(" -->"));
            let first = body
                .iter()
                .find(|b| !b.trim().is_empty())
                .map_or("", |b| b.trim());
            let is_command = ["cargo ", "target/release/", "curl ", "pharos ", "python3 "]
                .iter()
                .any(|p| first.starts_with(p));
            match marker {
                Some(m) if m.starts_with("readme-test: skip") => {}
                Some(m) if m.starts_with("readme-test: ") => {
                    let spec = m.trim_start_matches("readme-test: ");
                    let mut words = spec.split_whitespace();
                    let name = words.next().unwrap_or("").to_string();
                    let timeout_s = words
                        .find_map(|w| w.strip_prefix("timeout="))
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(300);
                    run.push(Block {
                        name,
                        line: start,
                        body,
                        timeout_s,
                    });
                }
                Some(m) if m.starts_with("readme-output: ") => {
                    outputs.push((m.trim_start_matches("readme-output: ").to_string(), body));
                }
                _ if is_command => unmarked.push(start + 1),
                _ => {}
            }
        }
        i += 1;
    }
    (run, outputs, unmarked)
}

/// Whether `line` matches `pattern`, where `[..]` matches any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.trim_end().split("[..]").collect();
    let line = line.trim_end();
    if parts.len() == 1 {
        return parts[0] == line;
    }
    let Some(mut rest) = line.strip_prefix(parts[0]) else {
        return false;
    };
    for (k, p) in parts.iter().enumerate().skip(1) {
        if k == parts.len() - 1 {
            return rest.ends_with(p);
        }
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

/// The block as bash runs it.
fn script(b: &Block, bin: &Path) -> String {
    let bin = bin.display();
    let mut s = String::from(
        "set -euo pipefail\n\
         __wait_http() { for _ in $(seq 600); do curl -s -o /dev/null \"$1\" && return 0; sleep 0.1; done; echo \"$1 never answered\" >&2; return 1; }\n",
    );
    for line in &b.body {
        let mut l = line
            .replace("target/release/", &format!("{bin}/"))
            .replace("cargo run --release -- ", &format!("{bin}/pharos "));
        // This test runs under `cargo test`; building is done.
        if l.trim_start().starts_with("cargo build") || l.trim_start().starts_with("cargo test") {
            l = ":".into();
        }
        // A server or replica in the background: waited for until it answers.
        let background = l
            .match_indices(" &")
            .map(|(i, _)| i)
            .find(|&i| !l[i + 2..].starts_with(['&', '>']));
        if let Some(at) = background {
            let (cmd, rest) = l.split_at(at + 2);
            // (The README's servers listen on the default address.)
            let wait = if cmd.contains("pharos server") {
                Some("__wait_http http://127.0.0.1:8080/healthz;".to_string())
            } else {
                cmd.split("--port ")
                    .nth(1)
                    .and_then(|p| p.split_whitespace().next())
                    .map(|p| format!("__wait_http http://127.0.0.1:{p}/healthz;"))
            };
            if let Some(w) = wait {
                l = format!("{cmd} {w}{rest}");
            }
        }
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// Ends every process whose working directory is under `dir` (a block's servers,
/// learners and replicas, which run in sessions of their own).
fn end_processes_under(dir: &Path) {
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    for _ in 0..50 {
        let mut found = false;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(&dir)) {
                found = true;
                // SAFETY: a signal to a process of this test's.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("processes under {} would not end", dir.display());
}

fn run(b: &Block, bin: &Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    for d in ["examples", "data"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let out_file = dir.path().join("output");
    // One open file for both streams: their lines interleave as they were written.
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&out_file)
        .unwrap();
    let mut cmd = Command::new("setsid");
    cmd.arg("bash")
        .arg("-c")
        .arg(script(b, bin))
        .current_dir(dir.path())
        .env("HOME", &home)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, _) in std::env::vars() {
        if k.starts_with("PHAROS_") || k.starts_with("XDG_") || k == "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    let ok = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.success();
        }
        if t0.elapsed() > Duration::from_secs(b.timeout_s) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    end_processes_under(dir.path());
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let text = if t0.elapsed() > Duration::from_secs(b.timeout_s) {
        format!("{text}\n[timed out after {} s]", b.timeout_s)
    } else {
        text
    };
    (ok, text)
}

#[test]
fn the_readme_commands_run_as_written_and_print_what_it_shows() {
    common::workloads_built();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (run_blocks, outputs, unmarked) = blocks(&readme);
    assert!(
        unmarked.is_empty(),
        "README command blocks without a readme-test marker at lines {unmarked:?}"
    );
    for (name, _) in &outputs {
        assert!(
            run_blocks.iter().any(|b| &b.name == name),
            "output {name} shown for no block"
        );
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_pharos"))
        .parent()
        .unwrap()
        .to_path_buf();
    let only = std::env::var("PHAROS_README_BLOCK").ok();
    let mut failures = Vec::new();
    for b in run_blocks
        .iter()
        .filter(|b| only.as_ref().is_none_or(|o| o == &b.name))
    {
        let t0 = Instant::now();
        let (ok, text) = run(b, &bin);
        if std::env::var_os("PHAROS_README_SHOW").is_some() {
            eprintln!("----- {} -----\n{text}", b.name);
        }
        eprintln!(
            "README block {} (line {}): {:.1} s",
            b.name,
            b.line + 1,
            t0.elapsed().as_secs_f64()
        );
        if !ok {
            failures.push(format!(
                "block {} (README line {}) failed:\n{text}",
                b.name,
                b.line + 1
            ));
            continue;
        }
        for (_, want) in outputs.iter().filter(|(n, _)| n == &b.name) {
            let got: Vec<&str> = text.lines().collect();
            let mut at = 0;
            // Lines are found in order, any lines between them skipped: a line of its
            // own `[..]` only says so to the reader.
            for w in want
                .iter()
                .filter(|w| !w.trim().is_empty() && w.trim() != "[..]")
            {
                match got[at..].iter().position(|g| matches(w, g)) {
                    Some(k) => at += k + 1,
                    None => {
                        failures.push(format!(
                            "block {} (README line {}): no line matching\n  {w}\nafter line {at} of its output:\n{text}",
                            b.name,
                            b.line + 1
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn wildcards_match_what_varies_only() {
    assert!(matches("time [..] s", "time 0.123 s"));
    assert!(matches("[..] ready", "replica 1 ready"));
    assert!(matches("a [..] b [..] c", "a 1 b 2 c"));
    assert!(!matches("a [..] b [..] c", "a 1 c 2 b"));
    assert!(!matches("exact", "exactly"));
    assert!(matches("exact", "exact   "));
}
