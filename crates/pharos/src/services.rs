//! `pharos apply`, `pharos get` and `pharos delete`: inference services (and jobs)
//! from the command line.

use std::path::Path;

use crate::client::*;
use anyhow::{Context, Result};

#[derive(clap::Subcommand, Clone)]
pub enum GetCommand {
    /// Every service: replicas (ready/target), the router's URL, requests.
    Services {
        #[arg(long)]
        json: bool,
    },
    /// One service: status, replicas, cold starts and events.
    Service {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Every function graph: its entry URL and requests.
    Graphs {
        #[arg(long)]
        json: bool,
    },
    /// One function graph: its entry URL, requests, and each function's replicas and
    /// requests.
    Graph {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The autoscaler: its policy and its recent decisions, with what it was shown.
    Autoscaler {
        #[arg(long)]
        json: bool,
    },
    /// The cluster's capacity and who holds it: totals by resource and tenant, each
    /// training job's and service's share, and what waits and why.
    Cluster {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum DeleteCommand {
    /// Delete a service: its router stops at once, its replicas are stopped.
    Service { name: String },
    /// Delete a function graph: its entry stops at once, its functions' replicas are
    /// stopped.
    Graph { name: String },
}

/// A Ray application's code directory, named relative to the spec file: absolute.
fn beside(file: &Path, dir: &str) -> Result<String> {
    let base = file.parent().unwrap_or(Path::new("."));
    let path =
        std::path::absolute(base.join(dir)).with_context(|| format!("ray.working_dir {dir}"))?;
    Ok(path.display().to_string())
}

/// `pharos apply -f FILE`: creates or updates the service (or, with `kind: graph`, the
/// function graph) the file describes.
pub fn apply(file: &Path, conn: &Conn) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if pharos_engine::GraphSpec::is_graph(&text) {
        let mut spec = pharos_engine::GraphSpec::parse_named(&text, &file.display().to_string())?;
        for f in &mut spec.functions {
            if let Some(dir) = f.ray.as_mut().and_then(|r| r.working_dir.as_mut()) {
                *dir = beside(file, dir)?;
            }
        }
        let c = Client::new(conn);
        let body = serde_json::to_value(&spec)?;
        let v = c.send_json("PUT", &format!("/v1/graphs/{}", spec.name), &body)?;
        println!(
            "graph {} applied: {} ({} functions)",
            spec.name,
            v["url"].as_str().unwrap_or("?"),
            spec.functions.len()
        );
        return Ok(());
    }
    let mut spec = pharos_engine::ServiceSpec::parse_named(&text, &file.display().to_string())?;
    if let Some(dir) = spec.ray.as_mut().and_then(|r| r.working_dir.as_mut()) {
        *dir = beside(file, dir)?;
    }
    let c = Client::new(conn);
    let body = serde_json::to_value(&spec)?;
    let v = c.send_json("PUT", &format!("/v1/services/{}", spec.name), &body)?;
    println!(
        "service {} applied: {} (target {} replicas)",
        spec.name,
        v["url"].as_str().unwrap_or("?"),
        v["target_replicas"]
    );
    Ok(())
}

pub fn get(cmd: GetCommand, conn: &Conn, watch: bool) -> Result<()> {
    let c = Client::new(conn);
    if watch {
        return crate::client::watch(|| render(cmd.clone(), &c));
    }
    print!("{}", render(cmd, &c)?);
    Ok(())
}

/// What `pharos get` prints.
fn render(cmd: GetCommand, c: &Client) -> Result<String> {
    let mut o = String::new();
    match cmd {
        GetCommand::Services { json } => {
            let v = c.get("/v1/services")?;
            if json {
                wln!(o, "{}", serde_json::to_string_pretty(&v)?);
                return Ok(o);
            }
            wln!(
                o,
                "{:<20} {:<14} {:>7} {:>8} {:>9} {:>9} {:>9}  URL",
                "NAME",
                "STATUS",
                "READY",
                "TARGET",
                "ARRIVALS",
                "DROPPED",
                "FAILED"
            );
            for s in v["services"].as_array().into_iter().flatten() {
                let n = &s["counters"];
                wln!(
                    o,
                    "{:<20} {:<14} {:>7} {:>8} {:>9} {:>9} {:>9}  {}",
                    s["name"].as_str().unwrap_or("?"),
                    status_word(s),
                    s["ready_replicas"].to_string(),
                    s["target_replicas"].to_string(),
                    n["arrivals"].to_string(),
                    n["dropped"].to_string(),
                    n["failed"].to_string(),
                    s["url"].as_str().unwrap_or("?"),
                );
            }
        }
        GetCommand::Graphs { json } => {
            let v = c.get("/v1/graphs")?;
            if json {
                wln!(o, "{}", serde_json::to_string_pretty(&v)?);
                return Ok(o);
            }
            wln!(
                o,
                "{:<20} {:>9} {:>9} {:>9} {:>9}  URL",
                "NAME",
                "FUNCTIONS",
                "ARRIVALS",
                "COMPLETED",
                "FAILED"
            );
            for g in v["graphs"].as_array().into_iter().flatten() {
                let n = &g["counters"];
                wln!(
                    o,
                    "{:<20} {:>9} {:>9} {:>9} {:>9}  {}",
                    g["name"].as_str().unwrap_or("?"),
                    g["functions"].as_array().map_or(0, Vec::len),
                    n["arrivals"].to_string(),
                    n["completions"].to_string(),
                    n["failed"].to_string(),
                    g["url"].as_str().unwrap_or("?"),
                );
            }
        }
        GetCommand::Graph { name, json } => {
            let v = c.get(&format!("/v1/graphs/{name}"))?;
            if json {
                wln!(o, "{}", serde_json::to_string_pretty(&v)?);
                return Ok(o);
            }
            let n = &v["counters"];
            let r = &n["response_s"];
            wln!(
                o,
                "graph {name}: {} (entry {})",
                v["url"].as_str().unwrap_or("?"),
                v["entry"].as_str().unwrap_or("?")
            );
            wln!(
                o,
                "  requests: {} arrived, {} completed, {} failed ({} dropped, {} timed out, {} errors); \
                 response mean {} ms, p99 {} ms",
                n["arrivals"],
                n["completions"],
                n["failed"],
                n["dropped"],
                n["timeouts"],
                n["errors"],
                ms_of(&r["mean_s"]),
                ms_of(&r["p99_s"])
            );
            conditions(&mut o, &v["conditions"], "  ", 18);
            wln!(
                o,
                "  {:<20} {:>6} {:>7} {:>6} {:>9} {:>9} {:>7} {:>8}",
                "FUNCTION",
                "READY",
                "TARGET",
                "CPUS",
                "ARRIVALS",
                "COMPLETED",
                "DROPS",
                "TIMEOUTS"
            );
            for f in v["functions"].as_array().into_iter().flatten() {
                let n = &f["counters"];
                wln!(
                    o,
                    "  {:<20} {:>6} {:>7} {:>6} {:>9} {:>9} {:>7} {:>8}",
                    f["name"].as_str().unwrap_or("?"),
                    f["ready_replicas"].to_string(),
                    f["target_replicas"].to_string(),
                    f["resources_per_replica"]["cpus"].to_string(),
                    n["arrivals"].to_string(),
                    n["completions"].to_string(),
                    n["drops"].to_string(),
                    n["timeouts"].to_string(),
                );
            }
        }
        GetCommand::Cluster { json } => {
            let v = c.get("/v1/cluster")?;
            if json {
                wln!(o, "{}", serde_json::to_string_pretty(&v)?);
                return Ok(o);
            }
            let mem = |x: &serde_json::Value| pharos_server::format_memory(x.as_u64().unwrap_or(0));
            let num = |x: &serde_json::Value| fmt_num(x.as_f64().unwrap_or(0.0));
            let cap = &v["capacity"];
            wln!(
                o,
                "capacity: {} vCPUs, {}, {} GPUs",
                num(&cap["cpus"]),
                mem(&cap["memory_bytes"]),
                cap["gpus"]
            );
            let (t, sv, f) = (&v["held"]["training"], &v["held"]["services"], &v["free"]);
            wln!(
                o,
                "held:     training {} vCPUs, {}, {} GPUs; services {} vCPUs",
                num(&t["cpus"]),
                mem(&t["memory_bytes"]),
                t["gpus"],
                num(&sv["cpus"])
            );
            wln!(
                o,
                "free:     {} vCPUs, {}, {} GPUs",
                num(&f["cpus"]),
                mem(&f["memory_bytes"]),
                f["gpus"]
            );
            wln!(
                o,
                "\n{:<24} {:>8} {:>11} {:>5}",
                "TENANT",
                "VCPUS",
                "MEMORY",
                "GPUS"
            );
            for t in v["tenants"].as_array().into_iter().flatten() {
                wln!(
                    o,
                    "{:<24} {:>8} {:>11} {:>5}",
                    t["tenant"].as_str().unwrap_or("?"),
                    num(&t["cpus"]),
                    mem(&t["memory_bytes"]),
                    t["gpus"].to_string()
                );
            }
            wln!(
                o,
                "\n{:<28} {:<9} {:<12} {:>8} {:>11} {:>5}  WHAT",
                "HOLDER",
                "KIND",
                "TENANT",
                "VCPUS",
                "MEMORY",
                "GPUS"
            );
            for h in v["holders"].as_array().into_iter().flatten() {
                let what = match h["kind"].as_str() {
                    Some("service") => {
                        format!("{} replicas (target {})", h["replicas"], h["target"])
                    }
                    _ => format!(
                        "{} learners, {}",
                        h["learners"],
                        h["state"].as_str().unwrap_or("?")
                    ),
                };
                wln!(
                    o,
                    "{:<28} {:<9} {:<12} {:>8} {:>11} {:>5}  {what}",
                    holder_name(h),
                    h["kind"].as_str().unwrap_or("?"),
                    h["tenant"].as_str().unwrap_or("?"),
                    num(&h["cpus"]),
                    mem(&h["memory_bytes"]),
                    h["gpus"].to_string()
                );
            }
            let waiting = v["waiting"].as_array().cloned().unwrap_or_default();
            if !waiting.is_empty() {
                wln!(o, "\n{:<28} {:<9} {:<12} WHY", "WAITING", "KIND", "TENANT");
                for w in &waiting {
                    wln!(
                        o,
                        "{:<28} {:<9} {:<12} {}",
                        holder_name(w),
                        w["kind"].as_str().unwrap_or("?"),
                        w["tenant"].as_str().unwrap_or("?"),
                        w["reason"].as_str().unwrap_or("")
                    );
                }
                let all = v["waiting_count"].as_u64().unwrap_or(0);
                if all > waiting.len() as u64 {
                    wln!(
                        o,
                        "... and {} more (pharos train list --state QUEUED)",
                        all - waiting.len() as u64
                    );
                }
            }
        }
        GetCommand::Autoscaler { json } => {
            let v = c.get("/v1/autoscaler")?;
            if json {
                wln!(o, "{}", serde_json::to_string_pretty(&v)?);
                return Ok(o);
            }
            wln!(
                o,
                "policy {} ({} calls, every {} s)",
                v["policy"].as_str().unwrap_or("?"),
                v["calls"],
                v["interval_s"]
            );
            for d in v["decisions"].as_array().into_iter().flatten() {
                let moves: Vec<String> = d["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["target_before"] != s["target_after"])
                    .map(|s| {
                        format!(
                            "{} {} -> {} ({} ready, {} queued)",
                            s["service"].as_str().unwrap_or("?"),
                            s["target_before"],
                            s["target_after"],
                            s["ready_replicas"],
                            s["queued"]
                        )
                    })
                    .collect();
                wln!(
                    o,
                    "  {} t={:.0}s{}: {}",
                    ms(&d["time_ms"]),
                    d["policy_time_s"].as_f64().unwrap_or(0.0),
                    if d["initial"] == true {
                        " (initial)"
                    } else {
                        ""
                    },
                    if moves.is_empty() {
                        "accept rates".to_string()
                    } else {
                        moves.join(", ")
                    }
                );
            }
        }
        GetCommand::Service { name, json } => {
            let mut v = c.get(&format!("/v1/services/{name}"))?;
            v["events"] = c.get(&format!("/v1/services/{name}/events"))?["events"].clone();
            if json {
                wln!(o, "{}", serde_json::to_string_pretty(&v)?);
                return Ok(o);
            }
            wln!(o, "service {name}: {}", v["url"].as_str().unwrap_or("?"));
            wln!(
                o,
                "  replicas: {} ready, {} starting, {} stopping, target {}",
                v["ready_replicas"],
                v["starting_replicas"],
                v["stopping_replicas"],
                v["target_replicas"]
            );
            let n = &v["counters"];
            wln!(
                o,
                "  requests: {} arrived, {} completed, {} dropped, {} failed; {} queued, {} in flight",
                n["arrivals"],
                n["completed"],
                n["dropped"],
                n["failed"],
                v["queued"],
                v["in_flight"]
            );
            let cold = &v["cold_start_s"];
            if let (Some(m), Some(e)) = (cold["mean"].as_f64(), cold["expected"].as_f64()) {
                wln!(
                    o,
                    "  cold start: mean {m:.3} s over the latest {} of {} (the autoscaler plans \
                     for {e:.3} s)",
                    cold["latest"].as_array().map_or(0, Vec::len),
                    cold["count"]
                );
            }
            wln!(o, "  conditions:");
            conditions(&mut o, &v["conditions"], "    ", 18);
            wln!(o, "  events:");
            for e in v["events"].as_array().into_iter().flatten() {
                wln!(
                    o,
                    "    {} {:<12} {}",
                    ms(&e["time_ms"]),
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(o)
}

/// One line per condition: its type (padded to `width`), status, reason and message.
pub fn conditions(o: &mut String, list: &serde_json::Value, indent: &str, width: usize) {
    for c in list.as_array().into_iter().flatten() {
        wln!(
            o,
            "{indent}{:<width$} {:<6} {}: {}",
            c["type"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or("?"),
            c["message"].as_str().unwrap_or("")
        );
    }
}

/// Seconds as milliseconds to one decimal; `-` when there are none.
fn ms_of(s: &serde_json::Value) -> String {
    s.as_f64().map_or("-".into(), |s| format!("{:.1}", s * 1e3))
}

/// A holder or waiter: `training-3 (sgd)`, or a service's name.
fn holder_name(h: &serde_json::Value) -> String {
    let id = h["id"].as_str().unwrap_or("?");
    match h["name"].as_str() {
        Some(n) if n != id => format!("{id} ({n})"),
        _ => id.to_string(),
    }
}

/// A number as people write it: integers without a fraction, others to at most six
/// decimals without trailing zeros.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 1e15 || (x != 0.0 && x.abs() < 1e-6) {
        format!("{x:e}")
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A service's state in one word: its first condition that holds other than `Ready`
/// (`CrashLoop`, `Unschedulable`, ...), else why it is or is not ready.
fn status_word(s: &serde_json::Value) -> &str {
    let conditions = s["conditions"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    conditions
        .iter()
        .find(|c| c["type"] != "Ready" && c["status"] == "True")
        .and_then(|c| c["type"].as_str())
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["reason"].as_str())
                .map(|r| if r == "TargetReady" { "Ready" } else { r })
        })
        .unwrap_or("?")
}

pub fn delete(cmd: DeleteCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        DeleteCommand::Service { name } => {
            c.delete(&format!("/v1/services/{name}"))?;
            println!("service {name} deleted");
        }
        DeleteCommand::Graph { name } => {
            c.delete(&format!("/v1/graphs/{name}"))?;
            println!("graph {name} deleted");
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum LogsCommand {
    /// A service's replica output (the newest replica's unless --replica).
    Service {
        name: String,
        #[command(flatten)]
        opts: LogOpts,
    },
    /// A graph function's replica output.
    Function {
        graph: String,
        function: String,
        #[command(flatten)]
        opts: LogOpts,
    },
}

#[derive(clap::Args)]
pub struct LogOpts {
    /// The replica's id (see `pharos get service NAME`) [default: the newest].
    #[arg(long)]
    replica: Option<String>,
    /// Keep printing new output until the replica stops.
    #[arg(long, short)]
    follow: bool,
    /// Only output written in the last DURATION (`30s`, `5m`, `2h`, `1d`; to within
    /// about a second).
    #[arg(long, value_parser = parse_duration_s)]
    since: Option<f64>,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
}

/// `30`, `30s`, `5m`, `2h`, `1d` as seconds.
pub fn parse_duration_s(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 5m, 2h or 1d"))?;
    let factor = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    let v = n * factor;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(v)
}

/// `pharos logs service NAME` / `pharos logs function GRAPH FUNCTION`: streams the
/// replica's output to stdout.
pub fn logs(cmd: LogsCommand, conn: &Conn) -> Result<()> {
    use std::io::{Read, Write};
    let (name, o) = match cmd {
        LogsCommand::Service { name, opts } => (name, opts),
        LogsCommand::Function {
            graph,
            function,
            opts,
        } => (format!("{graph}.{function}"), opts),
    };
    let c = Client::new(conn);
    let mut q = vec![format!("follow={}", o.follow)];
    if let Some(r) = &o.replica {
        q.push(format!("replica={r}"));
    }
    if let Some(s) = o.since {
        q.push(format!("since_s={s}"));
    }
    if let Some(t) = o.tail {
        q.push(format!("tail={t}"));
    }
    let resp = c.get_response(&format!("/v1/services/{name}/logs?{}", q.join("&")))?;
    if !resp.status().is_success() {
        c.check(resp)?;
        return Ok(());
    }
    if let Some(r) = resp.headers().get("x-pharos-replica")
        && o.replica.is_none()
    {
        eprintln!("replica {}", r.to_str().unwrap_or("?"));
    }
    let mut reader = resp.into_body().into_reader();
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}
