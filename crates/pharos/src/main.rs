//! `pharos`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pharos_experiment::{Experiment, Overrides, report};
use pharos_sim::OverCapacity;
use pharos_trace::Format;

#[derive(Parser)]
#[command(
    name = "pharos",
    version,
    about = "Capacity for the ML work of one cluster: inference autoscaling, function graphs, training - and a simulator to measure it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment file: every policy on every cluster size and seed, on a trace.
    ///
    /// Prints a table (or JSON with --json) and writes results.json, timing.json,
    /// summary.md, summary.svg, a per-minute CSV timeline per run and an SVG plot per
    /// policy and cluster size (of the first seed).
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// The experiment file (YAML), e.g. examples/faro-10jobs.yaml.
    experiment: PathBuf,
    /// Replay this trace file instead of the experiment's (the experiment's day, previous
    /// day and job selection are dropped; --day and --jobs select in the new trace).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The trace's format (detected when absent): faro-jsonl, minute-csv, azure-functions.
    #[arg(long, value_parser = parse_format)]
    trace_format: Option<Format>,
    /// Replay this day of the trace.
    #[arg(long)]
    day: Option<u32>,
    /// Replay these jobs (names or unique prefixes, comma-separated).
    #[arg(long, value_delimiter = ',')]
    jobs: Option<Vec<String>>,
    /// Replay minutes START:END of the trace (END exclusive).
    #[arg(long, value_parser = parse_range)]
    minutes: Option<[usize; 2]>,
    /// A cluster size in vCPUs (repeatable); replaces the experiment's sizes.
    #[arg(long = "cpus", value_parser = parse_cpus)]
    cpus: Vec<f64>,
    /// A policy name, or a label from the experiment's list (repeatable); replaces the
    /// experiment's policies.
    #[arg(long = "policy")]
    policies: Vec<String>,
    /// A seed (repeatable); replaces the experiment's seeds.
    #[arg(long = "seed")]
    seeds: Vec<u64>,
    /// What the cluster does with targets that do not fit: trim (the Faro controller's
    /// rule) or wait (replicas wait for capacity, first come first served).
    #[arg(long, value_parser = parse_over_capacity)]
    over_capacity: Option<OverCapacity>,
    /// Output directory [default: out/<experiment name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Runs at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| {
        format!(
            "unknown trace format {s:?} (known: {})",
            Format::NAMES.join(", ")
        )
    })
}

fn parse_over_capacity(s: &str) -> Result<OverCapacity, String> {
    match s {
        "trim" => Ok(OverCapacity::Trim),
        "wait" => Ok(OverCapacity::Wait),
        _ => Err(format!("{s:?} is neither trim nor wait")),
    }
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of vCPUs > 0")),
    }
}

fn parse_range(s: &str) -> Result<[usize; 2], String> {
    let (a, b) = s.split_once(':').ok_or("expected START:END")?;
    let a = a.parse().map_err(|_| format!("{a:?} is not a minute"))?;
    let b = b.parse().map_err(|_| format!("{b:?} is not a minute"))?;
    if a >= b {
        return Err(format!("empty range {a}:{b}"));
    }
    Ok([a, b])
}

fn simulate(args: SimulateArgs) -> Result<()> {
    let ov = Overrides {
        trace: args.trace,
        trace_format: args.trace_format,
        day: args.day,
        jobs: args.jobs,
        minutes: args.minutes,
        cpus: args.cpus,
        policies: args.policies,
        seeds: args.seeds,
        over_capacity: args.over_capacity,
    };
    let exp = Experiment::load(&args.experiment, &ov)?;
    let runs = exp.runs().len();
    let bar = ProgressBar::new(runs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs {msg}",
        )
        .context("progress bar template")?,
    );
    let last = Mutex::new(String::new());
    let results = exp.run_all(args.threads, |r| {
        if let Ok(mut l) = last.lock() {
            *l = format!(
                "{} @ {} vCPUs: {:.1}% violations",
                r.policy,
                r.cpus,
                r.summary.slo_violation_rate * 100.0
            );
            bar.set_message(l.clone());
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if results.len() != runs {
        bail!("{} of {runs} runs finished", results.len());
    }
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&exp.spec.name));
    let written = report::write_all(&exp, &results, &out)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::summary_rows(&results))?
        );
    } else {
        println!(
            "{}: {} jobs, {} minutes, {:.0} requests expected per run\n",
            exp.spec.name,
            exp.jobs.len(),
            exp.trace.minutes(),
            exp.trace.total_requests()
        );
        print!("{}", report::table(&results));
        println!("\nwrote {} files to {}", written.len(), out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(a) => simulate(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pharos: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
