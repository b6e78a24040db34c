//! `pharos history`: a service's per-minute load history on a server - import its past
//! from a trace file, show what is stored.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, Conn};

#[derive(clap::Subcommand)]
pub enum HistoryCommand {
    /// Load a service's past arrivals from a trace file (any format `pharos simulate`
    /// reads): the job's days, oldest first, end at the minute before now (or start at
    /// --start), the first minute a day's first minute. Minutes the server observed
    /// are kept.
    Import(ImportArgs),
    /// Print a service's stored minutes: CSV, or with --json one object per minute.
    Show(ShowArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The service.
    #[arg(long)]
    service: String,
    /// The trace file.
    file: PathBuf,
    /// The job of the trace whose load this is [default: the file's only job].
    #[arg(long)]
    job: Option<String>,
    /// The file's format (faro-jsonl, minute-csv, azure-functions) [default: detected].
    #[arg(long)]
    format: Option<String>,
    /// Only these days of the file (`1-10`, `3`).
    #[arg(long)]
    days: Option<String>,
    /// Multiply every count by this (rounded).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Sum every N minutes into one (for a run that replays the trace N times faster:
    /// its days are 1440 / N minutes long).
    #[arg(long, default_value_t = 1)]
    compress: usize,
    /// The unix minute of the first imported minute [default: so that the last one is
    /// the minute before now].
    #[arg(long)]
    start: Option<i64>,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The service.
    name: String,
    /// From this unix minute [default: a day before --to].
    #[arg(long)]
    from: Option<i64>,
    /// Up to this unix minute, not included [default: now].
    #[arg(long)]
    to: Option<i64>,
    #[arg(long)]
    json: bool,
}

/// Minutes sent per request.
const BATCH: usize = 20_000;

pub fn history(cmd: HistoryCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        HistoryCommand::Import(a) => import(&c, a),
        HistoryCommand::Show(a) => show(&c, a),
    }
}

/// The `first-last` days of `spec` (`3` or `1-10`).
fn day_range(spec: &str) -> Result<(u32, u32)> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u32>()
            .with_context(|| format!("--days {spec:?}: {s:?} is not a day number"))
    };
    let (a, b) = match spec.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(spec)?, parse(spec)?),
    };
    if b < a {
        bail!("--days {spec:?}: the last day is before the first");
    }
    Ok((a, b))
}

/// The job's arrivals per minute over its days (oldest first), compressed and scaled.
fn arrivals(a: &ImportArgs) -> Result<Vec<u64>> {
    let format = match &a.format {
        Some(f) => Some(pharos_trace::Format::parse(f).with_context(|| {
            format!(
                "--format {f:?}: known formats are {}",
                pharos_trace::Format::NAMES.join(", ")
            )
        })?),
        None => None,
    };
    if !(a.scale.is_finite() && a.scale >= 0.0) {
        bail!("--scale must be a finite number >= 0, got {}", a.scale);
    }
    if a.compress == 0 || a.compress > 1440 {
        bail!("--compress must be 1-1440, got {}", a.compress);
    }
    let raw = pharos_trace::read_trace(&a.file, format)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut jobs: Vec<&str> = raw.series.iter().map(|s| s.job.as_str()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let job = match (&a.job, jobs.as_slice()) {
        (Some(j), _) => j.clone(),
        (None, [only]) => only.to_string(),
        (None, _) => bail!(
            "{} holds {} jobs; name one with --job ({}{})",
            a.file.display(),
            jobs.len(),
            jobs.iter().take(10).copied().collect::<Vec<_>>().join(", "),
            if jobs.len() > 10 { ", ..." } else { "" }
        ),
    };
    let range = a.days.as_deref().map(day_range).transpose()?;
    let mut series: Vec<&pharos_trace::Series> = raw
        .series
        .iter()
        .filter(|s| s.job == job)
        .filter(|s| match (range, s.day) {
            (Some((lo, hi)), Some(d)) => (lo..=hi).contains(&d),
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    if series.is_empty() {
        bail!(
            "{}: no minutes of job {job}{}",
            a.file.display(),
            a.days
                .as_ref()
                .map(|d| format!(" on days {d}"))
                .unwrap_or_default()
        );
    }
    series.sort_by_key(|s| s.day);
    let minutes: Vec<f64> = series
        .iter()
        .flat_map(|s| s.requests_per_min.iter().copied())
        .collect();
    Ok(minutes
        .chunks(a.compress)
        .map(|c| (c.iter().sum::<f64>() * a.scale).round().max(0.0) as u64)
        .collect())
}

fn import(c: &Client, a: ImportArgs) -> Result<()> {
    let counts = arrivals(&a)?;
    let path = format!("/v1/services/{}/history", a.service);
    let start = match a.start {
        Some(s) => s,
        None => {
            let now = c.get(&format!("{path}?from=0&to=0"))?["now_minute"]
                .as_i64()
                .context("the server did not say what minute it is")?;
            now - counts.len() as i64
        }
    };
    let (mut written, mut kept) = (0, 0);
    for (i, batch) in counts.chunks(BATCH).enumerate() {
        let v = c.send_json(
            "POST",
            &path,
            &json!({
                "start": start + (i * BATCH) as i64,
                "arrivals": batch,
                "day_start": i == 0,
            }),
        )?;
        written += v["written"].as_u64().unwrap_or(0);
        kept += v["kept_observed"].as_u64().unwrap_or(0);
    }
    println!(
        "{}: {} minutes imported from minute {start} ({written} written, {kept} observed kept)",
        a.service,
        counts.len()
    );
    Ok(())
}

fn show(c: &Client, a: ShowArgs) -> Result<()> {
    let mut q = vec![];
    if let Some(f) = a.from {
        q.push(format!("from={f}"));
    }
    if let Some(t) = a.to {
        q.push(format!("to={t}"));
    }
    if !a.json {
        q.push("format=csv".into());
    }
    let v = c.get(&format!("/v1/services/{}/history?{}", a.name, q.join("&")))?;
    if a.json {
        let minutes = v["minutes"].as_array().cloned().unwrap_or_default();
        println!("{}", serde_json::to_string_pretty(&Value::Array(minutes))?);
    } else {
        // The server's CSV, as it sent it.
        print!("{}", v.as_str().context("the server did not answer CSV")?);
    }
    Ok(())
}
