//! Property-based fuzzing (proptest) of the parsers of what tenants and admins send:
//! service specs (`ServiceSpec::parse`), training manifests (`serde_saphyr` +
//! `Manifest::validate`, and `controller::parse_manifest`), the server configuration
//! (`serde_saphyr` + `ServerConfig::validate`, and `RayClient::new` on its `ray` part)
//! and model archives (`api::check_archive`).
//!
//! The properties, with their fixed numbers of cases and a fixed seed (set
//! PROPTEST_RNG_SEED for others; no regression files are written):
//! - no parser panics on arbitrary strings (2000 cases), arbitrary bytes (2000), YAML
//!   built from a small grammar of the real keys and nasty scalars - huge and negative
//!   integers, 1e308, .nan, .inf, long strings, tags, anchors, nested maps and lists
//!   (2000), or character-level edits of valid documents (2000); whatever they accept is
//!   within the documented bounds;
//! - one or two fields of a valid spec (2000 cases) or manifest (2000) replaced by a
//!   random scalar: either an error naming a changed field (or, from the YAML layer,
//!   pointing at its line), or a value whose every number is within `pharos_core::limits`;
//! - the same for the server configuration (1000 mutations, 500 grammar documents),
//!   also what `RayClient::new` and `serve` build from an accepted one without checks
//!   (durations);
//! - `check_archive` never panics on random bytes (2000) or on valid archives with
//!   corrupted bytes (1000), accepts what it accepts only when no entry escapes, accepts
//!   archives of safe relative paths (300), and refuses every archive with an entry whose
//!   path has a `..` component or is absolute, in an old, ustar (name or prefix), GNU
//!   long-name or PAX header (1000).

use std::collections::HashMap;
use std::path::Component;

use pharos_core::Manifest;
use pharos_core::limits::*;
use pharos_server::config::ServerConfig;
use pharos_server::services::ServiceSpec;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    // A fixed seed: the same cases every run (PROPTEST_RNG_SEED picks others).
    let mut c = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x7068_6172_6f73);
    }
    c
}

// ----- scalars ---------------------------------------------------------------------

/// Single-line YAML scalars (and small flow collections) that stress number parsing,
/// bounds and the YAML layer.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "0", "1", "-1", "2", "10", "-0", "+0", "00", "007", "0x0", "0xFFFFFFFF", "0x100000000",
    "0o777", "0b101", "1_000", "1__0", "4294967295", "4294967296", "-4294967296",
    "18446744073709551615", "18446744073709551616", "-9223372036854775808",
    "-9223372036854775809", "9223372036854775807", "2147483647", "2147483648",
    "-2147483648", "-2147483649", "99999999999999999999999999", "65535", "65536", "1023",
    "1024", "1025", "64", "65", "100", "101", "1000", "1001", "-1000", "-1001", "10000",
    "10001", "100000", "100001", "3600", "3600.0", "3600.0000001", "86400", "86400.1",
    "0.1", "0.09999999999", "0.05", "1024.0", "1024.00001", "0.0", "-0.0", "1e308",
    "-1e308", "1e309", "1.7976931348623157e308", "1e-308", "5e-324", "1e-400", "2.5e-1",
    "99.9999", "100.0", ".nan", ".NaN", ".NAN", "nan", "NaN", ".inf", ".Inf", "-.inf",
    "+.inf", "inf", "-inf", "infinity", "true", "false", "yes", "no", "on", "off", "~",
    "null", "Null", "''", "\"\"", "[]", "{}", "[1]", "[1, 2]", "{a: 1}", "[[]]",
    "{latency_s: 1}", "'1'", "'0.5'", "\"1e308\"", "'.nan'", "'-1'", "'inf'",
    "'4294967296'", "!!str 5", "!!int 7", "!!float 1", "!!int '3'", "!!float .nan",
    "!!null ''", "!custom 1", "!!binary aGk=", "&a 1", "*a", "1:30", "0.", "1.", ".5",
    "1e3", "1E3", "'it''s'", "\"\\u0000\"", "\"\\0\"", "\"a\\nb\"", "\"\\x00\"", "' '",
    "\"\\t\"", "/healthz", "/", "a", "a-b", "$PORT", "x y", "1GiB", "4TiB", "4.0000001TiB",
    "1Mi", "1MiB", "0.9MiB", "1048575", "1048576", "4398046511104", "4398046511105",
    "4398046511104.4", "4398046511104.6", "1e18", "-1Gb", "1Zb", "lots", "512MiB", "16GiB",
    "1Gb", "10000000000000000000TiB", "[x, --port, $PORT]", "['']", "[\"\\u0000\"]",
    "regex", "local", "ray", "kubernetes", "users", "off", "auto", "hpa", "faro-sum", "kpa",
    "mark", "oneshot", "nope",
];

fn long_string() -> impl Strategy<Value = String> {
    (
        prop::sample::select(
            &[
                40usize, 41, 127, 128, 129, 256, 257, 4096, 4097, 16384, 16385, 70000,
            ][..],
        ),
        prop::sample::select(&["x", "a-", "é", "/"][..]),
        any::<bool>(),
    )
        .prop_map(|(n, unit, quoted)| {
            let mut s = unit.repeat(n / unit.len().max(1));
            s.truncate(s.char_indices().nth(n).map_or(s.len(), |(i, _)| i));
            if quoted { format!("'{s}'") } else { s }
        })
}

/// A well-formed single-line scalar: the mutations' values.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(TOKENS).prop_map(String::from),
        2 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<u64>().prop_map(|v| v.to_string()),
        3 => (-2_000i64..200_000).prop_map(|v| v.to_string()),
        2 => any::<f64>().prop_map(|v| format!("{v:e}")),
        2 => (-10.0f64..5000.0).prop_map(|v| v.to_string()),
        1 => "[a-zA-Z0-9_.+/$][a-zA-Z0-9_.+/$-]{0,23}",
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => "[^'\r\n\u{85}\u{2028}\u{2029}]{0,40}".prop_map(|s| format!("'{s}'")),
        1 => long_string(),
        1 => (0.0f64..1e7, prop::sample::select(&["", "b", "k", "KiB", "Mi", "MiB", "Gb", "GiB", "TiB", "tb", "Zb"][..]))
            .prop_map(|(v, u)| format!("{v}{u}")),
    ]
}

/// Indicators that make a value empty or take the rest of the line (or the next lines):
/// YAML-layer errors then point past the field, so the mutations leave them out.
#[rustfmt::skip]
const WILD_TOKENS: &[&str] = &[
    "-", "?", "|", ">", "|-", ">+", "#", "0.1 # comment", "- x", ": x", "'", "\"", "[", "{",
    "]", "}", "%YAML 1.2", "---", "...", "<<: *a", "&a [*a]",
];

/// Any scalar, also malformed YAML text (for the no-panic properties).
fn wild_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => scalar(),
        1 => prop::sample::select(WILD_TOKENS).prop_map(String::from),
        1 => "[^\n]{0,20}",
        1 => "[-:#&*!|>'\"%@`{}\\[\\], ?]{1,6}",
    ]
}

// ----- a small YAML grammar ----------------------------------------------------------

#[rustfmt::skip]
const KEYS: &[&str] = &[
    // ServiceSpec
    "name", "command", "ray", "kubernetes", "env", "readiness_path", "cpus", "gpus", "slo",
    "latency_s", "percentile", "processing_time_s", "min_replicas", "max_replicas",
    "initial_replicas", "max_concurrent", "max_queue", "port", "ready_timeout_s",
    "import_path", "working_dir", "deployment", "image", "args",
    // Manifest
    "description", "version", "learners", "memory", "gpu_type", "data_stores", "framework",
    "evaluation_metrics", "max_restarts", "priority", "queue", "id", "type",
    "training_data", "training_results", "connection", "container", "path", "regex",
    // ServerConfig
    "listen", "data_dir", "database_url", "admin_token", "capacity", "queues", "quota",
    "scheduler", "order", "backfill", "preemption", "placement", "las_threshold_gpu_s",
    "gpu_affinity", "max_request_bytes", "max_upload_bytes", "tick_ms", "halt_grace_s",
    "restart_backoff_s", "restart_backoff_max_s", "autoscaler", "policy", "params",
    "interval_s", "window_steps", "quantile", "forecaster", "backend", "address",
    "timeout_s", "history_interval_s", "history_hours", "listener", "header_read_timeout_s",
    "idle_timeout_s", "max_connections", "sandbox", "mode", "uid_base", "uid_count",
    "max_processes", "max_open_files", "tenant_limits", "tenants", "max_priority",
    "max_services", "max_jobs", "max_cpus", "gpu_devices",
];

#[derive(Clone, Debug)]
enum Y {
    S(String),
    /// Entries; flow style when true.
    Map(Vec<(String, Y)>, bool),
    List(Vec<Y>, bool),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(KEYS).prop_map(String::from),
        1 => "[a-z_]{1,8}",
    ]
}

fn yaml_value() -> impl Strategy<Value = Y> {
    wild_scalar()
        .prop_map(Y::S)
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                (
                    prop::collection::vec((key(), inner.clone()), 0..6),
                    any::<bool>()
                )
                    .prop_map(|(e, f)| Y::Map(e, f)),
                (prop::collection::vec(inner, 0..6), any::<bool>())
                    .prop_map(|(e, f)| Y::List(e, f)),
            ]
        })
}

/// A document: a top-level map (block style), sometimes with a real spec's required keys.
fn yaml_doc() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), yaml_value()), 0..10),
        any::<bool>(),
    )
        .prop_map(|(entries, prefixed)| {
            let mut out = String::new();
            if prefixed {
                out.push_str("name: a\n");
            }
            block_map(&entries, 0, &mut out);
            out
        })
}

fn flow(y: &Y) -> String {
    match y {
        Y::S(s) => s.clone(),
        Y::Map(e, _) => {
            let items: Vec<String> = e.iter().map(|(k, v)| format!("{k}: {}", flow(v))).collect();
            format!("{{ {} }}", items.join(", "))
        }
        Y::List(e, _) => {
            let items: Vec<String> = e.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn block_map(entries: &[(String, Y)], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in entries {
        match v {
            Y::Map(e, false) if !e.is_empty() => {
                out.push_str(&format!("{pad}{k}:\n"));
                block_map(e, indent + 2, out);
            }
            Y::List(e, false) if !e.is_empty() => {
                out.push_str(&format!("{pad}{k}:\n"));
                for item in e {
                    match item {
                        Y::Map(m, false) if !m.is_empty() => {
                            // The first entry after the dash, the others aligned with it.
                            let mut sub = String::new();
                            block_map(m, indent + 4, &mut sub);
                            out.push_str(&format!("{pad}  - {}", &sub[indent + 4..]));
                        }
                        _ => out.push_str(&format!("{pad}  - {}\n", flow(item))),
                    }
                }
            }
            _ => out.push_str(&format!("{pad}{k}: {}\n", flow(v))),
        }
    }
}

// ----- documents with known fields, and their mutations --------------------------------

/// A document's fields by path (`section.key` for one level of nesting), with the
/// valid document's value (None: absent unless mutated).
type Fields = &'static [(&'static str, Option<&'static str>)];

const SPEC: Fields = &[
    ("name", Some("a")),
    ("command", Some("[x, --port, $PORT]")),
    ("slo.latency_s", Some("0.1")),
    ("slo.percentile", None),
    ("processing_time_s", Some("0.01")),
    ("cpus", None),
    ("gpus", None),
    ("min_replicas", None),
    ("max_replicas", None),
    ("initial_replicas", None),
    ("max_concurrent", None),
    ("max_queue", None),
    ("port", None),
    ("ready_timeout_s", None),
    ("readiness_path", None),
    ("env", None),
    ("ray", None),
    ("kubernetes", None),
];

const MANIFEST: Fields = &[
    ("name", Some("j")),
    ("description", None),
    ("version", None),
    ("learners", Some("1")),
    ("cpus", Some("1")),
    ("gpus", None),
    ("memory", None),
    ("gpu_type", None),
    ("max_restarts", None),
    ("priority", None),
    ("queue", None),
    ("data_stores", None),
    ("evaluation_metrics", None),
    ("framework.name", Some("custom")),
    ("framework.version", None),
    ("framework.command", Some("'echo hi'")),
];

const CONFIG: Fields = &[
    ("listen", Some("127.0.0.1:8080")),
    ("data_dir", Some("/nonexistent/pharos-fuzz")),
    ("capacity.cpus", Some("4")),
    ("capacity.memory", Some("8GiB")),
    ("tick_ms", Some("200")),
    ("halt_grace_s", Some("10")),
    ("restart_backoff_s", Some("1")),
    ("restart_backoff_max_s", Some("60")),
    ("history_interval_s", Some("10")),
    ("history_hours", Some("6")),
    ("max_request_bytes", Some("1048576")),
    ("max_upload_bytes", Some("67108864")),
    ("backend", Some("local")),
    ("autoscaler.policy", Some("faro-fairsum")),
    ("autoscaler.params", None),
    ("listener.header_read_timeout_s", Some("10")),
    ("listener.idle_timeout_s", Some("30")),
    ("listener.max_connections", Some("4096")),
    ("sandbox.mode", Some("auto")),
    ("sandbox.uid_base", Some("200000")),
    ("sandbox.uid_count", Some("100000")),
    ("sandbox.max_processes", Some("2048")),
    ("sandbox.max_open_files", Some("4096")),
    ("tenant_limits.max_priority", Some("10")),
    ("tenant_limits.max_services", Some("20")),
    ("tenant_limits.max_replicas", Some("200")),
    ("tenant_limits.max_jobs", Some("1000")),
    ("tenant_limits.max_cpus", Some("256")),
    ("ray.address", None),
    ("ray.timeout_s", Some("10")),
    ("scheduler.las_threshold_gpu_s", Some("3600")),
    ("queues", None),
];

/// The document with `changes` (field path -> scalar) applied, sections in block or
/// flow style; and each field's line (1-based).
fn render(
    fields: Fields,
    changes: &[(&str, String)],
    flow_sections: bool,
) -> (String, HashMap<&'static str, usize>) {
    let value = |i: usize| -> Option<String> {
        changes
            .iter()
            .rev()
            .find(|(p, _)| *p == fields[i].0)
            .map(|(_, v)| v.clone())
            .or_else(|| fields[i].1.map(String::from))
    };
    let mut out = String::new();
    let mut lines = HashMap::new();
    let mut line = 1;
    let mut i = 0;
    while i < fields.len() {
        let path = fields[i].0;
        match path.split_once('.') {
            None => {
                if let Some(v) = value(i) {
                    out.push_str(&format!("{path}: {v}\n"));
                    lines.insert(path, line);
                    line += 1;
                }
                i += 1;
            }
            Some((section, _)) => {
                // The section's contiguous fields.
                let mut members = Vec::new();
                while i < fields.len() && fields[i].0.split_once('.').map(|s| s.0) == Some(section)
                {
                    if let Some(v) = value(i) {
                        members.push((fields[i].0, v));
                    }
                    i += 1;
                }
                if members.is_empty() {
                    continue;
                }
                if flow_sections {
                    let items: Vec<String> = members
                        .iter()
                        .map(|(p, v)| format!("{}: {v}", &p[section.len() + 1..]))
                        .collect();
                    out.push_str(&format!("{section}: {{ {} }}\n", items.join(", ")));
                    for (p, _) in &members {
                        lines.insert(*p, line);
                    }
                    line += 1;
                } else {
                    out.push_str(&format!("{section}:\n"));
                    line += 1;
                    for (p, v) in &members {
                        out.push_str(&format!("  {}: {v}\n", &p[section.len() + 1..]));
                        lines.insert(*p, line);
                        line += 1;
                    }
                }
            }
        }
    }
    (out, lines)
}

/// One or two fields of `fields` (by path), each with a scalar (the last wins).
fn changes(fields: Fields) -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let paths: Vec<&'static str> = fields.iter().map(|f| f.0).collect();
    prop::collection::vec((prop::sample::select(paths), scalar()), 1..=2)
}

/// The line a YAML-layer error points at (`line N column M`).
fn error_line(e: &str) -> Option<usize> {
    // serde's `error: line L column C: ...`, or a spec's own `spec:L:C: ...`.
    let rest = match e.find("error: line ") {
        Some(i) => &e[i + 12..],
        None => e
            .strip_prefix("spec:")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))?,
    };
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
}

/// Whether `err` names one of the changed fields: a YAML-layer error points at one of
/// their lines; a validation error (`field: problem`) names one in its field part.
fn names_a_changed_field(
    err: &str,
    changes: &[(&str, String)],
    lines: &HashMap<&str, usize>,
) -> bool {
    let changed: Vec<&str> = changes.iter().map(|(p, _)| *p).collect();
    if let Some(l) = error_line(err) {
        return changed.iter().any(|p| lines.get(p) == Some(&l));
    }
    // `field: problem`, `field, other: problem`; `command[2]`, `evaluation_metrics.type`
    // (a spec's after its source's name, `spec: `).
    let err = err.strip_prefix("spec: ").unwrap_or(err);
    let head = err.split(": ").next().unwrap_or("");
    changed.iter().any(|p| {
        head.split(", ")
            .any(|h| h == *p || h.strip_prefix(p).is_some_and(|r| r.starts_with(['[', '.'])))
    })
}

// ----- the documented bounds ---------------------------------------------------------

fn in_f64(x: f64, lo: f64, hi: f64) -> bool {
    x.is_finite() && x >= lo && x <= hi
}

fn positive_at_most(x: f64, hi: f64) -> bool {
    x.is_finite() && x > 0.0 && x <= hi
}

/// Every number and size of an accepted spec within its documented range.
fn spec_in_bounds(s: &ServiceSpec) -> Result<(), String> {
    let mut bad = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            bad.push(what.to_string());
        }
    };
    need(
        !s.name.is_empty()
            && s.name.len() <= 40
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "name",
    );
    need(
        s.command.len() <= MAX_ARGS
            && s.command
                .iter()
                .all(|a| a.len() <= MAX_PATH && !a.contains('\0')),
        "command",
    );
    need(
        s.env.len() <= MAX_ENV
            && s.env.iter().all(|(k, v)| {
                !k.is_empty()
                    && k.len() <= MAX_SHORT
                    && v.len() <= MAX_PATH
                    && !k.contains(['=', '\0'])
                    && !v.contains('\0')
            }),
        "env",
    );
    need(
        s.readiness_path.starts_with('/') && s.readiness_path.len() <= MAX_PATH,
        "readiness_path",
    );
    need(in_f64(s.cpus, MIN_CPUS, MAX_CPUS), "cpus");
    need(
        s.gpus <= MAX_GPUS && (s.gpus == 0 || s.ray.is_some() || s.kubernetes.is_some()),
        "gpus",
    );
    need(
        positive_at_most(s.slo.latency_s, MAX_LATENCY_S),
        "slo.latency_s",
    );
    need(
        s.slo.percentile > 0.0 && s.slo.percentile < 100.0,
        "slo.percentile",
    );
    need(
        positive_at_most(s.processing_time_s, MAX_LATENCY_S),
        "processing_time_s",
    );
    need((1..=MAX_REPLICAS).contains(&s.max_replicas), "max_replicas");
    need(s.min_replicas <= s.max_replicas, "min_replicas");
    need(
        s.initial_replicas
            .is_none_or(|i| i >= s.min_replicas && i <= s.max_replicas),
        "initial_replicas",
    );
    need(
        (1..=MAX_CONCURRENT).contains(&s.max_concurrent),
        "max_concurrent",
    );
    need(s.max_queue <= MAX_QUEUE, "max_queue");
    need(s.port.is_none_or(|p| p >= MIN_PORT), "port");
    need(
        positive_at_most(s.ready_timeout_s, MAX_TIMEOUT_S),
        "ready_timeout_s",
    );
    let engines = [
        !s.command.is_empty(),
        s.ray.is_some(),
        s.kubernetes.is_some(),
    ];
    need(
        engines.iter().filter(|b| **b).count() <= 1,
        "command, ray, kubernetes",
    );
    if let Some(r) = &s.ray {
        need(
            r.import_path.len() <= 2 * MAX_SHORT
                && r.deployment.len() <= MAX_SHORT
                && r.working_dir.as_ref().is_none_or(|w| w.len() <= MAX_PATH),
            "ray",
        );
    }
    if let Some(k) = &s.kubernetes {
        need(
            k.port != 0
                && k.image.len() <= MAX_PATH
                && k.command.len() <= MAX_ARGS
                && k.args.len() <= MAX_ARGS
                && k.command.iter().chain(&k.args).all(|a| a.len() <= MAX_PATH),
            "kubernetes",
        );
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("out of bounds: {bad:?} in {s:?}"))
    }
}

/// Every number and size of an accepted manifest within its documented range.
fn manifest_in_bounds(m: &Manifest) -> Result<(), String> {
    let mut bad = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            bad.push(what.to_string());
        }
    };
    need(
        !m.name.is_empty()
            && m.name.len() <= 128
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "name",
    );
    need(
        m.description
            .as_ref()
            .is_none_or(|d| d.len() <= MAX_DESCRIPTION),
        "description",
    );
    need(
        m.version.as_ref().is_none_or(|v| v.len() <= MAX_SHORT),
        "version",
    );
    need((1..=MAX_LEARNERS).contains(&m.learners), "learners");
    need(in_f64(m.cpus, MIN_CPUS, MAX_CPUS), "cpus");
    need(m.gpus <= MAX_GPUS, "gpus");
    need(m.max_restarts <= MAX_RESTARTS, "max_restarts");
    need(
        (MIN_PRIORITY..=MAX_PRIORITY).contains(&m.priority),
        "priority",
    );
    need(
        !m.queue.trim().is_empty() && m.queue.len() <= MAX_SHORT,
        "queue",
    );
    need(
        m.memory.as_deref().is_none_or(|t| {
            pharos_core::parse_memory(t)
                .is_ok_and(|b| (MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&b))
        }),
        "memory",
    );
    need(
        (MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&m.per_learner().memory_bytes),
        "per_learner().memory_bytes",
    );
    need(
        m.gpu_type
            .as_ref()
            .is_none_or(|t| !t.trim().is_empty() && t.len() <= MAX_SHORT && m.gpus > 0),
        "gpu_type",
    );
    need(
        !m.framework.name.trim().is_empty() && m.framework.name.len() <= MAX_SHORT,
        "framework.name",
    );
    need(
        m.framework
            .version
            .as_ref()
            .is_none_or(|v| v.len() <= MAX_SHORT),
        "framework.version",
    );
    need(
        !m.framework.command.trim().is_empty()
            && m.framework.command.len() <= MAX_COMMAND_BYTES
            && !m.framework.command.contains('\0'),
        "framework.command",
    );
    need(m.data_stores.len() <= MAX_DATA_STORES, "data_stores");
    for d in &m.data_stores {
        need(
            !d.id.trim().is_empty()
                && d.id.len() <= MAX_SHORT
                && d.kind.len() <= MAX_SHORT
                && d.connection.len() <= MAX_CONNECTION_KEYS,
            "data_stores[]",
        );
        for c in [&d.training_data, &d.training_results]
            .into_iter()
            .flatten()
        {
            need(
                c.container.len() <= MAX_PATH
                    && std::path::Path::new(&c.container)
                        .components()
                        .all(|p| matches!(p, Component::Normal(_))),
                "data_stores[].container",
            );
        }
    }
    need(
        m.evaluation_metrics
            .as_ref()
            .is_none_or(|e| e.regex.len() <= MAX_REGEX && e.kind == "regex"),
        "evaluation_metrics",
    );
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("out of bounds: {bad:?} in {m:?}"))
    }
}

/// What `ServerConfig::validate` promises, and what the server builds from an accepted
/// configuration at start without further checks.
fn config_in_bounds(c: &ServerConfig) -> Result<(), String> {
    let mut bad = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            bad.push(what.to_string());
        }
    };
    need(c.capacity.cpus > 0.0, "capacity.cpus");
    need(
        pharos_core::parse_memory(&c.capacity.memory).is_ok(),
        "capacity.memory",
    );
    need(!c.queues.is_empty(), "queues");
    need(c.tick_ms > 0, "tick_ms");
    need(
        c.history_interval_s >= 0.1 && c.history_hours > 0.0,
        "history_interval_s, history_hours",
    );
    need(
        c.halt_grace_s >= 0.0 && c.restart_backoff_s >= 0.0,
        "halt_grace_s, restart_backoff_s",
    );
    let l = &c.listener;
    need(
        l.header_read_timeout_s > 0.0 && l.header_read_timeout_s <= 3600.0,
        "listener.header_read_timeout_s",
    );
    need(
        l.idle_timeout_s > 0.0 && l.idle_timeout_s <= 86_400.0,
        "listener.idle_timeout_s",
    );
    need(
        (1..=1_000_000).contains(&l.max_connections),
        "listener.max_connections",
    );
    let sb = &c.sandbox;
    need(
        sb.uid_base >= 1000 && sb.uid_count >= 1 && sb.uid_base.checked_add(sb.uid_count).is_some(),
        "sandbox.uid_base, uid_count",
    );
    need(
        sb.max_processes >= 16 && sb.max_open_files >= 64,
        "sandbox.max_processes, max_open_files",
    );
    for t in std::iter::once(&c.tenant_limits).chain(c.tenants.values()) {
        need(
            (MIN_PRIORITY..=MAX_PRIORITY).contains(&t.max_priority),
            "max_priority",
        );
        need(t.max_cpus.is_finite() && t.max_cpus > 0.0, "max_cpus");
    }
    // `serve` sleeps `history_interval_s` between samples (`Duration::from_secs_f64`).
    need(
        std::time::Duration::try_from_secs_f64(c.history_interval_s).is_ok(),
        "history_interval_s (as a Duration)",
    );
    need(
        std::time::Duration::try_from_secs_f64(l.header_read_timeout_s).is_ok(),
        "listener.header_read_timeout_s (as a Duration)",
    );
    need(
        std::time::Duration::try_from_secs_f64(l.idle_timeout_s).is_ok(),
        "listener.idle_timeout_s (as a Duration)",
    );
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("out of bounds: {bad:?} in {c:?}"))
    }
}

// ----- running the parsers -------------------------------------------------------------

/// Every text parser on `text`: none may panic, and what one accepts must be in bounds.
fn parse_all(text: &str) -> Result<(), TestCaseError> {
    if let Ok(s) = ServiceSpec::parse(text) {
        prop_assert!(
            spec_in_bounds(&s).is_ok(),
            "{}\n--- input:\n{text}",
            spec_in_bounds(&s).unwrap_err()
        );
    }
    let direct = serde_saphyr::from_str::<Manifest>(text)
        .map_err(|e| e.to_string())
        .and_then(|m| m.validate().map(|()| m).map_err(|e| e.to_string()));
    let via_controller = pharos_server::controller::parse_manifest(text);
    prop_assert_eq!(
        direct.is_ok(),
        via_controller.is_ok(),
        "the two manifest paths disagree on:\n{}",
        text
    );
    if let Ok(m) = &direct {
        prop_assert!(
            manifest_in_bounds(m).is_ok(),
            "{}\n--- input:\n{text}",
            manifest_in_bounds(m).unwrap_err()
        );
    }
    check_config_text(text)?;
    let _ = pharos_core::parse_memory(text);
    Ok(())
}

fn check_config_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(c) = serde_saphyr::from_str::<ServerConfig>(text)
        && c.validate().is_ok()
    {
        prop_assert!(
            config_in_bounds(&c).is_ok(),
            "{}\n--- input:\n{text}",
            config_in_bounds(&c).unwrap_err()
        );
        // What the server makes of the `ray` part at start with `backend: ray` (no
        // network here): an accepted configuration must not make it panic.
        let _ = pharos_ray::RayClient::new(&c.ray);
    }
    Ok(())
}

/// A valid document edited at the character level: an insertion, a deletion or a cut.
fn text_edit(base: &'static str) -> impl Strategy<Value = String> {
    (
        0..=base.len(),
        0..=base.len(),
        "[^\u{0}]{0,8}|[:\\-#\n\t {}\\[\\],'\"&*!|>]{1,4}",
        0..3u8,
    )
        .prop_map(move |(a, b, ins, op)| {
            let (a, b) = (a.min(b), a.max(b));
            let clamp = |i: usize| {
                (0..=i)
                    .rev()
                    .find(|j| base.is_char_boundary(*j))
                    .unwrap_or(0)
            };
            let (a, b) = (clamp(a), clamp(b));
            match op {
                0 => format!("{}{ins}{}", &base[..a], &base[a..]),
                1 => format!("{}{}", &base[..a], &base[b..]),
                _ => base[..a].to_string(),
            }
        })
}

const SPEC_TEXT: &str = "name: a\ncommand: [x, --port, $PORT]\nslo: { latency_s: 0.1 }\nprocessing_time_s: 0.01\nmax_replicas: 4\nmin_replicas: 1\nenv: { A: b }\n";
const MANIFEST_TEXT: &str = "name: j\nlearners: 1\ncpus: 1\nmemory: 1GiB\npriority: 5\ndata_stores:\n  - id: d\n    type: local\n    training_data: { container: data }\n    connection: { path: /tmp/x }\nframework:\n  name: custom\n  command: 'echo hi'\n";

#[test]
fn the_valid_documents_are_valid() {
    let (spec, _) = render(SPEC, &[], false);
    ServiceSpec::parse(&spec).unwrap();
    let (spec, _) = render(SPEC, &[], true);
    ServiceSpec::parse(&spec).unwrap();
    ServiceSpec::parse(SPEC_TEXT).unwrap();
    for flow in [false, true] {
        let (m, _) = render(MANIFEST, &[], flow);
        pharos_server::controller::parse_manifest(&m).unwrap();
        let (c, _) = render(CONFIG, &[], flow);
        let c: ServerConfig = serde_saphyr::from_str(&c).unwrap();
        c.validate().unwrap();
    }
    pharos_server::controller::parse_manifest(MANIFEST_TEXT).unwrap();
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn no_parser_panics_on_arbitrary_strings(text in any::<String>()) {
        parse_all(&text)?;
    }

    #[test]
    fn no_parser_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_all(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn no_parser_panics_on_yaml_of_the_real_keys(text in yaml_doc()) {
        parse_all(&text)?;
    }

    #[test]
    fn no_parser_panics_on_edited_documents(text in prop_oneof![text_edit(SPEC_TEXT), text_edit(MANIFEST_TEXT)]) {
        parse_all(&text)?;
    }

    #[test]
    fn a_mutated_spec_is_refused_by_name_or_within_bounds(changes in changes(SPEC), flow in any::<bool>()) {
        let (text, lines) = render(SPEC, &changes, flow);
        match ServiceSpec::parse(&text) {
            Ok(s) => prop_assert!(spec_in_bounds(&s).is_ok(), "{}\n--- input:\n{text}", spec_in_bounds(&s).unwrap_err()),
            Err(e) => prop_assert!(names_a_changed_field(&e, &changes, &lines), "the error does not name a changed field: {e}\n--- input:\n{text}"),
        }
    }

    #[test]
    fn a_mutated_manifest_is_refused_by_name_or_within_bounds(changes in changes(MANIFEST), flow in any::<bool>()) {
        let (text, lines) = render(MANIFEST, &changes, flow);
        let direct = serde_saphyr::from_str::<Manifest>(&text).map_err(|e| e.to_string()).and_then(|m| m.validate().map(|()| m).map_err(|e| e.to_string()));
        let via_controller = pharos_server::controller::parse_manifest(&text);
        prop_assert_eq!(direct.is_ok(), via_controller.is_ok(), "the two manifest paths disagree on:\n{}", text);
        match direct {
            Ok(m) => prop_assert!(manifest_in_bounds(&m).is_ok(), "{}\n--- input:\n{text}", manifest_in_bounds(&m).unwrap_err()),
            Err(e) => prop_assert!(names_a_changed_field(&e, &changes, &lines), "the error does not name a changed field: {e}\n--- input:\n{text}"),
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_mutated_config_is_refused_by_name_or_within_bounds(changes in changes(CONFIG), flow in any::<bool>()) {
        let (text, lines) = render(CONFIG, &changes, flow);
        let parsed = serde_saphyr::from_str::<ServerConfig>(&text).map_err(|e| e.to_string());
        match parsed.and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string())) {
            Ok(_) => check_config_text(&text)?,
            Err(e) => {
                // Validation messages name the field by its key (`capacity.cpus must ...`,
                // `halt_grace_s and restart_backoff_s ...`, `autoscaler: ...`).
                let named = names_a_changed_field(&e, &changes, &lines)
                    || changes.iter().any(|(p, _)| {
                        let leaf = p.rsplit('.').next().unwrap();
                        e.contains(leaf) || e.starts_with(p.split('.').next().unwrap())
                    });
                prop_assert!(named, "the error does not name a changed field: {e}\n--- input:\n{text}");
            }
        }
    }

}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn no_config_panics_on_yaml_of_the_real_keys(text in yaml_doc()) {
        check_config_text(&text)?;
    }
}

// ----- model archives -----------------------------------------------------------------

/// The paths `check_archive` must have looked at, as the tar crate reads them.
fn archive_paths_are_safe(bytes: &[u8]) -> Result<(), String> {
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let p = e.path().map_err(|e| e.to_string())?;
        if p.is_absolute()
            || p.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            })
        {
            return Err(format!("accepted entry {p:?}"));
        }
    }
    Ok(())
}

fn safe_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,12}", 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("no `..`", |p| p.split('/').all(|c| c != ".." && c != "."))
}

fn safe_archive() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (safe_name(), prop::collection::vec(any::<u8>(), 0..700)),
        0..4,
    )
    .prop_map(|files| {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, &name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    })
}

/// A path with a `..` component somewhere, or an absolute one.
fn escaping_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop::sample::select(&["a", "b.txt", "..", ".", "model"][..]),
            0..5,
        ),
        0..=5usize,
        0..4u8,
    )
        .prop_map(|(mut parts, at, lead)| {
            let at = at.min(parts.len());
            parts.insert(at, if lead == 3 { "" } else { ".." });
            let p = parts.join("/");
            match lead {
                0 => format!("./{p}"),
                3 => format!("/etc{p}"),
                _ => p,
            }
        })
}

#[derive(Debug, Clone, Copy)]
enum Form {
    Old,
    UstarName,
    UstarPrefix,
    Gnu,
    GnuLongName,
    Pax,
}

/// An archive of some safe files, then one whose path escapes, written into the header
/// bytes directly (the tar crate's builder refuses such paths).
fn escaping_archive() -> impl Strategy<Value = (Vec<u8>, String)> {
    (
        prop::collection::vec(safe_name(), 0..3),
        escaping_path(),
        prop::sample::select(
            &[
                Form::Old,
                Form::UstarName,
                Form::UstarPrefix,
                Form::Gnu,
                Form::GnuLongName,
                Form::Pax,
            ][..],
        ),
        prop::collection::vec(any::<u8>(), 0..100),
        any::<bool>(),
    )
        .prop_map(|(before, path, form, data, finish)| {
            let mut b = tar::Builder::new(Vec::new());
            for name in before {
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                h.set_mode(0o644);
                b.append_data(&mut h, &name, &b"x"[..]).unwrap();
            }
            let mut h = match form {
                Form::Old => tar::Header::new_old(),
                Form::UstarName | Form::UstarPrefix | Form::Pax => tar::Header::new_ustar(),
                Form::Gnu | Form::GnuLongName => tar::Header::new_gnu(),
            };
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            let set_name = |h: &mut tar::Header, name: &[u8]| {
                let n = &mut h.as_old_mut().name;
                n.fill(0);
                n[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
            };
            match form {
                Form::Old | Form::UstarName | Form::Gnu => set_name(&mut h, path.as_bytes()),
                Form::UstarPrefix => {
                    // prefix/name: the escape in the prefix.
                    let u = h.as_ustar_mut().unwrap();
                    let p = path.as_bytes();
                    u.prefix[..p.len().min(155)].copy_from_slice(&p[..p.len().min(155)]);
                    set_name(&mut h, b"file");
                }
                Form::GnuLongName => {
                    // A `././@LongLink` entry holding the (long) path first.
                    let long = format!("{path}/{}", "d".repeat(120));
                    let mut l = tar::Header::new_gnu();
                    set_name(&mut l, b"././@LongLink");
                    l.set_mode(0o644);
                    l.set_entry_type(tar::EntryType::GNULongName);
                    let mut bytes = long.into_bytes();
                    bytes.push(0);
                    l.set_size(bytes.len() as u64);
                    l.set_cksum();
                    b.append(&l, bytes.as_slice()).unwrap();
                    set_name(&mut h, b"short");
                }
                Form::Pax => {
                    let mut x = tar::Header::new_ustar();
                    set_name(&mut x, b"PaxHeader/x");
                    x.set_mode(0o644);
                    x.set_entry_type(tar::EntryType::XHeader);
                    let rest = format!(" path={path}\n");
                    let mut n = rest.len() + 1;
                    while n.to_string().len() + rest.len() != n {
                        n = n.to_string().len() + rest.len();
                    }
                    let record = format!("{n}{rest}");
                    x.set_size(record.len() as u64);
                    x.set_cksum();
                    b.append(&x, record.as_bytes()).unwrap();
                    set_name(&mut h, b"short");
                }
            }
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
            let bytes = if finish {
                b.into_inner().unwrap()
            } else {
                b.get_ref().clone()
            };
            (bytes, format!("{form:?} {path:?}"))
        })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn check_archive_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if pharos_server::api::check_archive(&bytes).is_ok() {
            prop_assert!(archive_paths_are_safe(&bytes).is_ok(), "{:?}", archive_paths_are_safe(&bytes));
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn check_archive_never_panics_on_corrupted_archives(
        (archive, escape) in (safe_archive(), escaping_archive()),
        pick in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = if pick { archive } else { escape.0 };
        if !bytes.is_empty() {
            for (i, v) in flips {
                let i = i.index(bytes.len());
                bytes[i] = v;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
        }
        if pharos_server::api::check_archive(&bytes).is_ok() {
            prop_assert!(archive_paths_are_safe(&bytes).is_ok(), "{:?}", archive_paths_are_safe(&bytes));
        }
    }

    #[test]
    fn check_archive_refuses_every_escaping_entry((bytes, what) in escaping_archive()) {
        prop_assert!(pharos_server::api::check_archive(&bytes).is_err(), "accepted {}", what);
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn check_archive_accepts_safe_archives(bytes in safe_archive()) {
        let r = pharos_server::api::check_archive(&bytes);
        prop_assert!(r.is_ok(), "{:?}", r.err());
    }
}
