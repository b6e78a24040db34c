//! `pharos load`: an open-loop load generator that replays one job of a trace against a
//! URL - Poisson arrivals within each trace minute, time compressed and rate scaled -
//! and reports per-minute latency percentiles, SLO violations and drops with the
//! simulator's own metrics code (`pharos_sim::JobMetrics`), so a live run and a
//! simulated one are read the same way.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pharos_engine::host::LockExt;
use pharos_sim::{JobMetrics, MinuteRecord};
use pharos_trace::Format;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The trace file (any format `pharos simulate` reads).
    #[arg(long)]
    trace: PathBuf,
    /// The trace's format [default: detected].
    #[arg(long, value_parser = super::parse_format)]
    format: Option<Format>,
    /// The job to replay (a name or unique prefix) [default: the first].
    #[arg(long)]
    job: Option<String>,
    /// Only this day of a multi-day trace.
    #[arg(long)]
    day: Option<u32>,
    /// Trace minutes FROM..TO (end excluded) [default: all].
    #[arg(long, value_parser = super::parse_range)]
    minutes: Option<[usize; 2]>,
    /// The URL every request goes to (GET) [default: the service's, with --service].
    #[arg(long, required_unless_present = "service")]
    url: Option<String>,
    /// A service of the pharos server (see `pharos get services`): requests go to its
    /// router's `/infer`, and its SLO is the default of --slo-ms and --percentile.
    #[arg(long)]
    service: Option<String>,
    /// Time compression: one trace minute lasts 60 / SPEEDUP seconds.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Multiply every minute's request count by this.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// The latency SLO in milliseconds (of wall time) [default: the service's, named
    /// with --service or found by the URL's address among the server's services].
    #[arg(long)]
    slo_ms: Option<f64>,
    /// The SLO's percentile [default: the service's, else 99].
    #[arg(long)]
    percentile: Option<f64>,
    /// No progress lines (one per replayed minute, on stderr).
    #[arg(long, short)]
    quiet: bool,
    /// The pharos server asked about the service [default: as other commands find it:
    /// PHAROS_URL, the current context, http://127.0.0.1:8080].
    #[arg(long)]
    server: Option<String>,
    /// A request not answered within this many seconds counts as dropped.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// Seed of the arrival times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the per-minute records and the summary here (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// The send times (seconds from the start, wall time) and trace minute of every
/// request: each trace minute's count (scaled, rounded stochastically) as a Poisson
/// process of that rate over the minute's compressed span.
pub fn schedule(counts: &[f64], speedup: f64, scale: f64, seed: u64) -> Vec<(f64, u32)> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let span = 60.0 / speedup;
    let mut out = Vec::new();
    for (m, c) in counts.iter().enumerate() {
        let rate = c * scale / span; // requests per wall second
        if rate <= 0.0 {
            continue;
        }
        let mut t = 0.0;
        loop {
            let u: f64 = rng.random();
            t += -(1.0 - u).ln() / rate;
            if t >= span {
                break;
            }
            out.push((m as f64 * span + t, m as u32));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Served(f64),
    Dropped(DropCause),
}

/// Why a request counts as dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DropCause {
    /// Not answered within `--timeout-s`.
    Timeout,
    /// The connection failed (refused, reset, closed early).
    Connection,
    /// Answered with a status other than 2xx.
    Status,
}

/// The target and SLO a run measures against.
struct Target {
    url: String,
    slo_ms: f64,
    percentile: f64,
    /// Where the SLO came from, for the first line.
    slo_from: String,
}

/// The URL and SLO: as given, else the service's (named, or found by the URL's address
/// among the server's services).
fn target(a: &LoadArgs) -> Result<Target> {
    let given = |slo_ms: f64, percentile: f64, url: String, from: &str| Target {
        url,
        slo_ms,
        percentile,
        slo_from: from.into(),
    };
    if a.service.is_none()
        && let (Some(url), Some(slo)) = (&a.url, a.slo_ms)
    {
        return Ok(given(
            slo,
            a.percentile.unwrap_or(99.0),
            url.clone(),
            "--slo-ms",
        ));
    }
    let c = crate::client::Client::new(&crate::client::Conn::server(a.server.clone()));
    let svc = match &a.service {
        Some(name) => c
            .get(&format!("/v1/services/{name}"))
            .with_context(|| format!("--service {name}: asking {}", c.url))?,
        None => {
            let url = a.url.as_deref().unwrap_or_default();
            let list = c.get("/v1/services").with_context(|| {
                format!(
                    "no --slo-ms given, and the service behind {url} could not be looked up at {}",
                    c.url
                )
            })?;
            let addr = |u: &str| {
                u.split("://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .map(str::to_string)
            };
            list["services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["url"].as_str().and_then(addr) == addr(url))
                .cloned()
                .with_context(|| {
                    format!(
                        "no --slo-ms given, and no service of {} serves at {url}",
                        c.url
                    )
                })?
        }
    };
    let name = svc["name"].as_str().unwrap_or("?").to_string();
    let slo = &svc["spec"]["slo"];
    let url = match &a.url {
        Some(u) => u.clone(),
        None => format!(
            "{}/infer",
            svc["url"].as_str().context("the service has no URL")?
        ),
    };
    Ok(Target {
        url,
        slo_ms: a
            .slo_ms
            .or_else(|| slo["latency_s"].as_f64().map(|s| s * 1000.0))
            .context("the service states no SLO: give --slo-ms")?,
        percentile: a
            .percentile
            .or_else(|| slo["percentile"].as_f64())
            .unwrap_or(99.0),
        slo_from: format!("service {name}"),
    })
}

pub fn load(a: LoadArgs) -> Result<()> {
    anyhow::ensure!(
        (1e-3..=1e6).contains(&a.speedup),
        "--speedup must be 0.001-1000000"
    );
    anyhow::ensure!(
        a.timeout_s > 0.0 && a.timeout_s <= 86_400.0,
        "--timeout-s must be above 0 and at most 86400"
    );
    anyhow::ensure!(a.rate_scale >= 0.0, "--rate-scale must not be negative");
    if let Some(u) = &a.url
        && !u.starts_with("http://")
    {
        bail!("--url: only http:// is supported");
    }
    let t = target(&a)?;
    anyhow::ensure!(
        t.slo_ms > 0.0 && (0.0..=100.0).contains(&t.percentile),
        "--slo-ms must be positive and --percentile in 0..100"
    );
    let uri: hyper::Uri = t
        .url
        .parse()
        .with_context(|| format!("--url {:?} is not a URL", t.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url: only http:// is supported");
    }
    let raw = pharos_trace::read_trace(&a.trace, a.format)?;
    let selection = pharos_trace::Selection {
        jobs: a.job.clone().map(|j| vec![j]),
        day: a.day,
        stretch: None,
        minutes: a.minutes,
        peak_rpm: None,
        scale: None,
    };
    let trace = selection.apply(&raw)?;
    let job = trace.jobs.first().context("the trace has no job")?;
    let minutes = job.requests_per_min.len();
    let plan = schedule(&job.requests_per_min, a.speedup, a.rate_scale, a.seed);
    eprintln!(
        "replaying {} ({minutes} minutes, {} requests) against {} in {:.0} s; SLO p{} <= {} ms ({})",
        job.name,
        plan.len(),
        t.url,
        minutes as f64 * 60.0 / a.speedup,
        t.percentile,
        t.slo_ms,
        t.slo_from
    );
    let sent_per_minute = {
        let mut v = vec![0u64; minutes];
        for (_, m) in &plan {
            v[*m as usize] += 1;
        }
        v
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results: Arc<Mutex<Vec<(u32, Outcome)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(plan.len())));
    rt.block_on(async {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        let start = Instant::now();
        let timeout = Duration::from_secs_f64(a.timeout_s);
        let (all_done, done_rx) = tokio::sync::watch::channel(false);
        let progress = (!a.quiet).then(|| {
            tokio::spawn(progress(
                start,
                60.0 / a.speedup,
                sent_per_minute,
                results.clone(),
                t.slo_ms / 1000.0,
                done_rx,
            ))
        });
        let mut tasks = Vec::with_capacity(plan.len());
        for (at, minute) in plan {
            let due = start + Duration::from_secs_f64(at);
            tokio::time::sleep_until(due.into()).await;
            let client = client.clone();
            let uri = uri.clone();
            let results = results.clone();
            tasks.push(tokio::spawn(async move {
                let req = async {
                    let resp = client.get(uri).await?;
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await?;
                    Ok::<bool, Box<dyn std::error::Error + Send + Sync>>(ok)
                };
                // Open loop: latency from the scheduled send time.
                let outcome = match tokio::time::timeout(timeout, req).await {
                    Ok(Ok(true)) => Outcome::Served(due.elapsed().as_secs_f64()),
                    Ok(Ok(false)) => Outcome::Dropped(DropCause::Status),
                    Ok(Err(_)) => Outcome::Dropped(DropCause::Connection),
                    Err(_) => Outcome::Dropped(DropCause::Timeout),
                };
                results.lock_or_recover().push((minute, outcome));
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        // The minutes not yet reported are said at once.
        let _ = all_done.send(true);
        if let Some(p) = progress {
            let _ = p.await;
        }
    });
    let mut results = std::mem::take(&mut *results.lock_or_recover());
    results.sort_by_key(|r| r.0);
    let mut metrics = JobMetrics::new(t.slo_ms / 1000.0, t.percentile, 1.0, minutes);
    let mut why = [0u64; 3];
    for (minute, outcome) in &results {
        metrics.arrived(*minute);
        match outcome {
            Outcome::Served(l) => metrics.completed(*minute, *l),
            Outcome::Dropped(d) => {
                why[*d as usize] += 1;
                metrics.dropped(*minute)
            }
        }
    }
    metrics.finish(minutes);
    let mut served: Vec<f64> = results
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Served(l) => Some(*l),
            Outcome::Dropped(_) => None,
        })
        .collect();
    served.sort_by(f64::total_cmp);
    report(&a, &t, &job.name, &metrics.records, why, &served)
}

/// A line on stderr as each replayed minute ends: what was sent in it, and of that what
/// has been answered, dropped, and slower than the SLO so far.
async fn progress(
    start: Instant,
    span_s: f64,
    sent: Vec<u64>,
    results: Arc<Mutex<Vec<(u32, Outcome)>>>,
    slo_s: f64,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    for m in 0..sent.len() {
        let end = start + Duration::from_secs_f64((m + 1) as f64 * span_s);
        if !*done.borrow() {
            tokio::select! {
                _ = tokio::time::sleep_until(end.into()) => {}
                _ = done.changed() => {}
            }
        }
        let (mut answered, mut dropped, mut slow) = (0u64, 0u64, 0u64);
        for (minute, o) in results.lock_or_recover().iter() {
            if *minute as usize != m {
                continue;
            }
            match o {
                Outcome::Served(l) => {
                    answered += 1;
                    slow += u64::from(*l > slo_s);
                }
                Outcome::Dropped(_) => dropped += 1,
            }
        }
        eprintln!(
            "minute {}/{}: {} sent, {answered} answered ({slow} over the SLO), {dropped} dropped, {} pending",
            m + 1,
            sent.len(),
            sent[m],
            sent[m].saturating_sub(answered + dropped)
        );
    }
}

/// Mean, median and 99th percentile (nearest rank) of sorted latencies, milliseconds.
fn latency_ms(sorted: &[f64]) -> serde_json::Value {
    if sorted.is_empty() {
        return serde_json::Value::Null;
    }
    let rank = |q: f64| {
        sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1] * 1e3
    };
    serde_json::json!({
        "mean": sorted.iter().sum::<f64>() / sorted.len() as f64 * 1e3,
        "p50": rank(0.5),
        "p99": rank(0.99),
    })
}

/// `why`: the drops by cause, in `DropCause`'s order; `served`: the answered requests'
/// latencies, sorted.
fn report(
    a: &LoadArgs,
    t: &Target,
    job: &str,
    records: &[MinuteRecord],
    why: [u64; 3],
    served: &[f64],
) -> Result<()> {
    let arrivals: u64 = records.iter().map(|r| r.arrivals as u64).sum();
    let dropped: u64 = records.iter().map(|r| r.dropped as u64).sum();
    let violations: u64 = records.iter().map(|r| r.violations as u64).sum();
    let busy: Vec<&MinuteRecord> = records.iter().filter(|r| r.arrivals > 0).collect();
    // The simulator's violation rate: per minute, then the mean over minutes.
    let violation_rate = if busy.is_empty() {
        0.0
    } else {
        busy.iter()
            .map(|r| r.violations as f64 / r.arrivals as f64)
            .sum::<f64>()
            / busy.len() as f64
    };
    let summary = serde_json::json!({
        "job": job,
        "url": t.url,
        "speedup": a.speedup,
        "rate_scale": a.rate_scale,
        "slo_ms": t.slo_ms,
        "percentile": t.percentile,
        "seed": a.seed,
        "requests": arrivals,
        "dropped": dropped,
        "dropped_by": {"timeout": why[0], "connection": why[1], "status": why[2]},
        "violations": violations,
        "slo_violation_rate": violation_rate,
        "latency_ms": latency_ms(served),
    });
    if let Some(out) = &a.out {
        let doc = serde_json::json!({"summary": summary, "minutes": records});
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"summary": summary, "minutes": records})
        );
        return Ok(());
    }
    println!(
        "{:>6} {:>8} {:>8} {:>10} {:>10}",
        "minute", "requests", "dropped", "violations", "p99 ms"
    );
    for r in records {
        let p99 = r
            .p99_s
            .map(|v| format!("{:.1}", v * 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6} {:>8} {:>8} {:>10} {:>10}",
            r.minute, r.arrivals, r.dropped, r.violations, p99
        );
    }
    println!(
        "{arrivals} requests, {dropped} dropped, SLO violation rate {:.2}% (p{} <= {} ms)",
        violation_rate * 100.0,
        t.percentile,
        t.slo_ms
    );
    if dropped > 0 {
        println!(
            "dropped: {} timed out (--timeout-s {}), {} connection failures, {} non-2xx answers",
            why[0], a.timeout_s, why[1], why[2]
        );
    }
    if let Some(l) = summary["latency_ms"].as_object() {
        println!(
            "answered: mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
            l["mean"].as_f64().unwrap_or(f64::NAN),
            l["p50"].as_f64().unwrap_or(f64::NAN),
            l["p99"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_poisson_per_minute_and_deterministic() {
        let counts = [600.0, 0.0, 1200.0];
        let a = schedule(&counts, 6.0, 0.5, 3);
        assert_eq!(a, schedule(&counts, 6.0, 0.5, 3));
        assert_ne!(a, schedule(&counts, 6.0, 0.5, 4));
        // Each trace minute spans 10 s of wall time; its arrivals stay inside it.
        for (t, m) in &a {
            assert!(*t >= *m as f64 * 10.0 && *t < (*m as f64 + 1.0) * 10.0);
        }
        let n = |m| a.iter().filter(|x| x.1 == m).count() as f64;
        // Poisson counts: mean 300 and 600, sd ~17 and ~24.
        assert!((n(0) - 300.0).abs() < 80.0, "{}", n(0));
        assert_eq!(n(1), 0.0);
        assert!((n(2) - 600.0).abs() < 110.0, "{}", n(2));
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn latency_summary_is_the_mean_and_nearest_rank_percentiles() {
        assert!(latency_ms(&[]).is_null());
        let l: Vec<f64> = (1..=200).map(|i| i as f64 / 1000.0).collect();
        let v = latency_ms(&l);
        assert!((v["mean"].as_f64().unwrap() - 100.5).abs() < 1e-9);
        assert!((v["p50"].as_f64().unwrap() - 100.0).abs() < 1e-9);
        assert!((v["p99"].as_f64().unwrap() - 198.0).abs() < 1e-9);
    }
}
