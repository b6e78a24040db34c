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

mod client;
mod history;
mod load;
mod login;
mod router;
mod server;
mod services;
mod token;
mod train;

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
    /// Workload forecasting.
    #[command(subcommand)]
    Forecast(ForecastCommand),
    /// Separated continuous linear programs (fluid models of function graphs).
    #[command(subcommand)]
    Fluid(FluidCommand),
    /// Run a function-graph experiment: apps of functions on a shared pool, every
    /// autoscaler on every capacity, load level and seed.
    ///
    /// Prints the summary tables and writes results.json, timing.json and summary.md.
    Graph(GraphArgs),
    /// Run the control plane: the REST API, the store and the controller that
    /// schedules training jobs and supervises their learners on this machine.
    Server(server::ServerArgs),
    /// Training jobs on a pharos server: submit, list, show, logs, metrics, halt,
    /// resume, delete.
    Train(TrainArgs),
    /// API tokens on a pharos server.
    Token(TokenArgs),
    /// Keep a server's URL and token as a context of the client configuration (and
    /// make it current), after checking the token with the server.
    Login(LoginArgs),
    /// The client configuration's contexts: list, use, delete.
    #[command(subcommand)]
    Context(login::ContextCommand),
    /// Create or update an inference service from its spec (YAML).
    Apply(ApplyArgs),
    /// Show inference services.
    Get(GetArgs),
    /// Delete an inference service or a function graph.
    Delete(DeleteArgs),
    /// A service's or graph function's replica output: --replica, --follow, --since,
    /// --tail.
    Logs(LogsArgs),
    /// A service's per-minute load history: import its past, show what is stored.
    History(HistoryArgs),
    /// Replay a trace against a URL (open loop: Poisson arrivals within each trace
    /// minute, time compressed and rate scaled) and report per-minute latency, SLO
    /// violations and drops as the simulator does.
    Load(load::LoadArgs),
    /// A service's router: a bounded queue in front of replicas that each serve a few
    /// requests at a time, dropping (503) when the queue is full.
    Router(router::RouterArgs),
    /// Kubernetes: the manifests that run pharos in a cluster.
    #[command(subcommand)]
    K8s(K8sCommand),
}

#[derive(clap::Subcommand)]
enum K8sCommand {
    /// Print the manifests that run pharos in a cluster with the Kubernetes backend (a
    /// namespace, a ServiceAccount with least-privilege RBAC, the configuration, a
    /// PersistentVolumeClaim for the data directory, the server's Deployment and
    /// Service); apply them with `kubectl apply -f -`. See docs/kubernetes.md.
    Manifests(K8sManifestsArgs),
}

#[derive(clap::Args)]
struct K8sManifestsArgs {
    /// The namespace pharos runs in and creates jobs and services in.
    #[arg(long, default_value = "pharos")]
    namespace: String,
    /// pharos's container image (built from the repository's Dockerfile).
    #[arg(long, default_value = "pharos:0.1.0")]
    image: String,
    /// Size of the data directory's PersistentVolumeClaim.
    #[arg(long, default_value = "20Gi")]
    storage: String,
    /// Its storage class [default: the cluster's default].
    #[arg(long)]
    storage_class: Option<String>,
    /// Its access mode: ReadWriteMany lets learners on other nodes mount it.
    #[arg(long, default_value = "ReadWriteOnce", value_parser = ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"])]
    access_mode: String,
    /// A Secret whose key `url` is a postgres:// URL: the store goes to PostgreSQL
    /// instead of SQLite on the claim.
    #[arg(long)]
    database_secret: Option<String>,
    /// A Secret whose key `token` is the admin token [default: the server makes one and
    /// writes it to /var/lib/pharos/admin-token].
    #[arg(long)]
    admin_token_secret: Option<String>,
    /// vCPUs of the cluster pharos plans with (training and inference together).
    #[arg(long, default_value_t = 16.0)]
    cpus: f64,
    /// Memory pharos plans with.
    #[arg(long, default_value = "64GiB")]
    memory: String,
    /// The learners' default image.
    #[arg(long, default_value = "python:3.12-slim")]
    learner_image: String,
    /// Do not let pharos read nodes and pods cluster-wide (gangs are then admitted on
    /// the planned capacity alone).
    #[arg(long)]
    no_node_check: bool,
    /// A router port to expose on pharos's Service (repeat; give services these ports).
    #[arg(long = "router-port")]
    router_ports: Vec<u16>,
}

fn k8s_manifests(a: K8sManifestsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.cpus > 0.0, "--cpus must be positive");
    let o = pharos_kube::manifests::Options {
        namespace: a.namespace,
        image: a.image,
        storage: a.storage,
        storage_class: a.storage_class,
        access_mode: a.access_mode,
        database_secret: a.database_secret,
        admin_token_secret: a.admin_token_secret,
        cpus: a.cpus,
        memory: a.memory,
        learner_image: a.learner_image,
        node_check: !a.no_node_check,
        router_ports: a.router_ports,
    };
    for doc in pharos_kube::manifests::manifests(&o) {
        pharos_kube::manifests::validate(&doc).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    print!("{}", pharos_kube::manifests::yaml(&o));
    Ok(())
}

#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: train::TrainCommand,
}

#[derive(clap::Args)]
struct ApplyArgs {
    #[command(flatten)]
    conn: client::Conn,
    /// The service spec (YAML), e.g. examples/services/echo.yaml.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
}

#[derive(clap::Args)]
struct GetArgs {
    #[command(flatten)]
    conn: client::Conn,
    /// Print it again whenever it changes (asked every 2 s), until interrupted.
    #[arg(long, short, global = true)]
    watch: bool,
    #[command(subcommand)]
    command: services::GetCommand,
}

#[derive(clap::Args)]
struct DeleteArgs {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: services::DeleteCommand,
}

#[derive(clap::Args)]
struct LogsArgs {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: services::LogsCommand,
}

#[derive(clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: history::HistoryCommand,
}

#[derive(clap::Args)]
struct LoginArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    url: String,
    /// A file holding the token (a server's admin-token file, or one `pharos token
    /// create` printed).
    #[arg(long)]
    token_file: PathBuf,
    /// The context's name [default: the URL's host and port].
    #[arg(long)]
    name: Option<String>,
}

#[derive(clap::Args)]
struct TokenArgs {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: token::TokenCommand,
}

#[derive(clap::Args)]
struct GraphArgs {
    /// The experiment file (YAML), e.g. examples/graphs/chain.yaml.
    experiment: PathBuf,
    /// A pool size in CPUs (repeatable); replaces the experiment's.
    #[arg(long = "cpus", value_parser = parse_cpus)]
    cpus: Vec<f64>,
    /// A policy label from the experiment's list (repeatable): run only these.
    #[arg(long = "policy")]
    policies: Vec<String>,
    /// A seed (repeatable); replaces the experiment's seeds.
    #[arg(long = "seed")]
    seeds: Vec<u64>,
    /// Output directory [default: out/<experiment name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// An experiment's rows as JSON (`--json`), or its summary and the files written.
fn print_rows<T: serde::Serialize>(
    json: bool,
    rows: &[T],
    summary: &str,
    written: &[PathBuf],
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        println!("{summary}");
        for w in written {
            println!("wrote {}", w.display());
        }
    }
    Ok(())
}

/// A training-scheduler experiment (`kind: training`): every cluster x policy.
fn simulate_training(args: SimulateArgs) -> Result<()> {
    use pharos_experiment::training::{TrainingExperiment, summary, write_all};
    let exp = TrainingExperiment::load(&args.experiment)?;
    let rows = exp.run_all()?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&exp.spec.name));
    let written = write_all(&exp, &rows, &out)?;
    print_rows(args.json, &rows, &summary(&exp, &rows), &written)
}

/// A shared-cluster experiment (`kind: shared-cluster`): static slices and shared
/// policies on one GPU cluster.
fn simulate_shared(args: SimulateArgs) -> Result<()> {
    use pharos_experiment::shared::{SharedExperiment, summary, write_all};
    let exp = SharedExperiment::load(&args.experiment)?;
    let rows = exp.run_all(args.threads)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&exp.spec.name));
    let written = write_all(&exp, &rows, &out)?;
    print_rows(args.json, &rows, &summary(&exp, &rows), &written)
}

fn graph(args: GraphArgs) -> Result<()> {
    use pharos_experiment::graph::{GraphExperiment, summary, timing, write_all};
    let ov = Overrides {
        cpus: args.cpus,
        policies: args.policies,
        seeds: args.seeds,
        ..Overrides::default()
    };
    let exp = GraphExperiment::load(&args.experiment, &ov)?;
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let runs = exp.run_all(threads)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&exp.spec.name));
    let written = write_all(&exp, &runs, &out)?;
    println!("{}", summary(&exp, &runs));
    println!("decision time per policy (wall clock):");
    for (p, n, mean, max) in timing(&runs) {
        println!(
            "  {p}: {n} decisions, mean {:.3} ms, max {:.3} ms",
            mean * 1e3,
            max * 1e3
        );
    }
    for w in written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum FluidCommand {
    /// Solve an SCLP given as JSON (fields G, H, F, a, b, c, d, alpha, gamma, T).
    Solve(FluidSolveArgs),
    /// Write a random multiclass queueing network instance as SCLP JSON.
    Gen(FluidGenArgs),
}

#[derive(clap::Args)]
struct FluidSolveArgs {
    file: PathBuf,
    /// `exact`: the simplex-type homotopy (verified primal = dual), falling back to the
    /// LP below (with the reason) when it cannot solve the problem; `lp`: the
    /// time-discretised LP, with the dual SCLP's LP on the same grid as a bound on the
    /// exact optimum; `refine`: the same on a grid refined on the solutions' events
    /// until the bound is within --tol.
    #[arg(long, default_value = "exact")]
    method: String,
    /// Intervals of the discretised LP (the starting grid of `refine`).
    #[arg(long, default_value_t = 200)]
    intervals: usize,
    /// `refine`: stop when the certified gap is within this share of the objective.
    #[arg(long, default_value_t = 1e-8)]
    tol: f64,
    /// `refine`: at most this many rounds.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// The LP's grid: uniform, or dense (t_n = T (n/N)^2, dense near 0).
    #[arg(long, default_value = "uniform")]
    grid: String,
    /// Print the whole solution as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct FluidGenArgs {
    /// Buffers.
    #[arg(long)]
    k: usize,
    /// Servers.
    #[arg(long)]
    servers: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Horizon T.
    #[arg(long, default_value_t = 100.0)]
    horizon: f64,
}

#[derive(Subcommand)]
enum ForecastCommand {
    /// Fit forecasters on training days of a trace and score them on test days: RMSE
    /// of the median, pinball loss at q = 0.5/0.6/0.9, coverage of the 0.9 quantile,
    /// fit and predict time.
    Eval(ForecastEvalArgs),
}

#[derive(clap::Args)]
struct ForecastEvalArgs {
    /// The trace file (whole days of every job).
    #[arg(long)]
    trace: PathBuf,
    /// The trace's format (detected when absent): faro-jsonl, minute-csv, azure-functions
    /// (also: csv, faro-json, azure2019).
    #[arg(long, value_parser = parse_format)]
    trace_format: Option<Format>,
    /// Days to fit on: a range A-B or a list A,B,C.
    #[arg(long)]
    train_days: String,
    /// Days to score on.
    #[arg(long)]
    test_days: String,
    /// The first forecast origin of a test day, in minutes (the context a window needs).
    #[arg(long, default_value_t = pharos_forecast::eval::DEFAULT_CONTEXT)]
    context_min: usize,
    /// Minutes forecast from each origin.
    #[arg(long, default_value_t = pharos_forecast::eval::DEFAULT_HORIZON)]
    horizon_min: usize,
    /// A model (repeatable): NAME or NAME+cal; all the default ones when absent.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// The experiment file (YAML), e.g. examples/faro-10jobs.yaml.
    experiment: PathBuf,
    /// Replay this trace file instead of the experiment's (the experiment's day, history
    /// days and job selection are dropped; --day and --jobs select in the new trace). A
    /// file of several days replays its last day (or --day), and its earlier days are
    /// the history forecasters fit on and read.
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
    /// Replay minutes FROM..TO of the trace (TO excluded; FROM:TO also reads).
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

/// Minutes `FROM..TO` (or `FROM:TO`), TO excluded.
fn parse_range(s: &str) -> Result<[usize; 2], String> {
    let (a, b) = s
        .split_once("..")
        .or_else(|| s.split_once(':'))
        .ok_or("expected FROM..TO, e.g. 0..60")?;
    let a = a.parse().map_err(|_| format!("{a:?} is not a minute"))?;
    let b = b.parse().map_err(|_| format!("{b:?} is not a minute"))?;
    if a >= b {
        return Err(format!("empty range {a}..{b}: FROM must be below TO"));
    }
    Ok([a, b])
}

fn simulate(args: SimulateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.experiment).unwrap_or_default();
    if pharos_experiment::training::is_training(&text) {
        return simulate_training(args);
    }
    if pharos_experiment::shared::is_shared(&text) {
        return simulate_shared(args);
    }
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
    let mut written = report::write_all(&exp, &results, &out)?;
    // How well the policies' forecasters forecast the run (as `forecast eval` scores).
    let scores = exp.forecast_scores(
        pharos_forecast::eval::DEFAULT_CONTEXT,
        pharos_forecast::eval::DEFAULT_HORIZON,
    )?;
    if !scores.is_empty() {
        let path = out.join("forecast.json");
        std::fs::write(&path, serde_json::to_string_pretty(&scores)?)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
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
        for s in &scores {
            if s.windows == 0 {
                println!(
                    "\nforecaster {}: the run is too short to score (the next {} minutes from each minute after the first {})",
                    s.model,
                    pharos_forecast::eval::DEFAULT_HORIZON,
                    pharos_forecast::eval::DEFAULT_CONTEXT,
                );
                continue;
            }
            println!(
                "\nforecaster {}: RMSE {:.2} requests/min, 0.9-quantile coverage {:.1}% (the next {} minutes from each minute after the first {}; fitted on the {} history minutes)",
                s.model,
                s.rmse,
                s.coverage_90 * 100.0,
                pharos_forecast::eval::DEFAULT_HORIZON,
                pharos_forecast::eval::DEFAULT_CONTEXT,
                exp.past_rpm.first().map_or(0, Vec::len),
            );
        }
        println!("\nwrote {} files to {}", written.len(), out.display());
    }
    Ok(())
}

fn forecast_eval(args: ForecastEvalArgs) -> Result<()> {
    use pharos_forecast::ForecasterSpec;
    use pharos_forecast::eval::{self, EvalConfig, EvalSet};
    let raw = pharos_trace::read_trace(&args.trace, args.trace_format)?;
    let at = |e: pharos_forecast::ForecastError| anyhow::anyhow!("{}: {e}", args.trace.display());
    let mut series = Vec::with_capacity(raw.series.len());
    for s in raw.series {
        let Some(day) = s.day else {
            bail!(
                "{}: job {} has no day numbers; evaluation needs whole days (a CSV with a `day` column, or Azure files named ...dNN.csv)",
                args.trace.display(),
                s.job
            );
        };
        series.push((s.job, day, s.requests_per_min));
    }
    let set = EvalSet::from_days(series).map_err(at)?;
    let days = |flag: &str, s: &str| {
        pharos_trace::parse_days(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let cfg = EvalConfig {
        train_days: days("train-days", &args.train_days)?,
        test_days: days("test-days", &args.test_days)?,
        context: args.context_min,
        horizon: args.horizon_min,
    };
    let models: Vec<ForecasterSpec> = if args.models.is_empty() {
        eval::default_models()
    } else {
        args.models
            .iter()
            .map(|m| m.parse().map_err(|e: String| anyhow::anyhow!(e)))
            .collect::<Result<_>>()?
    };
    let mut rows = Vec::new();
    for m in models {
        let row = eval::evaluate(&set, &cfg, m).map_err(|e| anyhow::anyhow!("{m}: {e}"))?;
        if !args.json {
            eprintln!(
                "{:<24} rmse {:>8.2}  coverage_90 {:>5.1}%  fit {:.2} s",
                row.model,
                row.rmse,
                row.coverage_90 * 100.0,
                row.fit_s
            );
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{}: {} jobs, {}-minute days; train days {:?}, test days {:?}; context {} min, horizon {} min; {} windows per model\n",
        args.trace.display(),
        set.jobs.len(),
        set.day_minutes,
        cfg.train_days,
        cfg.test_days,
        cfg.context,
        cfg.horizon,
        rows.first().map_or(0, |r| r.windows)
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "model", "rmse", "pin_50", "pin_60", "pin_90", "cov_90", "fit_s", "pred_ms"
    );
    for r in &rows {
        println!(
            "{:<24} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.1}% {:>8.2} {:>10.4}",
            r.model,
            r.rmse,
            r.pinball_50,
            r.pinball_60,
            r.pinball_90,
            r.coverage_90 * 100.0,
            r.fit_s,
            r.predict_ms_per_job
        );
    }
    println!("\nRMSE per job:");
    print!("{:<24}", "model");
    for j in &set.jobs {
        print!(" {:>9}", j.chars().take(9).collect::<String>());
    }
    println!();
    for r in &rows {
        print!("{:<24}", r.model);
        for j in &r.per_job {
            print!(" {:>9.1}", j.rmse);
        }
        println!();
    }
    Ok(())
}

fn fluid_solve(args: FluidSolveArgs) -> Result<()> {
    use pharos_fluid::{Sclp, lp};
    let at = |e: pharos_fluid::FluidError| anyhow::anyhow!("{}: {e}", args.file.display());
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    // An optional `cost_constant` beside the SCLP: the problem is a cost minimised as
    // the constant minus the SCLP's objective (a queueing network's holding cost).
    let mut doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", args.file.display()))?;
    let cost_constant =
        match doc.as_object_mut().and_then(|o| o.remove("cost_constant")) {
            None => None,
            Some(v) => Some(v.as_f64().filter(|x| x.is_finite()).with_context(|| {
                format!("{}: cost_constant must be a number", args.file.display())
            })?),
        };
    let p = Sclp::from_json(&doc.to_string()).map_err(at)?;
    let grid = match args.grid.as_str() {
        "uniform" => lp::Grid::Uniform(args.intervals),
        "dense" => lp::Grid::Dense(args.intervals),
        g => bail!("--grid {g:?}: expected uniform or dense"),
    };
    let s = match args.method.as_str() {
        "lp" => lp::solve_bracketed(&p, &grid).map_err(at)?,
        "refine" => lp::refine(&p, args.intervals, args.tol, args.rounds).map_err(at)?,
        "exact" => pharos_fluid::exact::solve_auto(&p, &grid).map_err(at)?,
        m => bail!("--method {m:?}: expected lp, refine or exact"),
    };
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(k) = cost_constant {
            v["cost"] = serde_json::json!(k - s.objective);
            v["cost_lower_bound"] = serde_json::json!(k - s.dual_objective);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: K = {}, J = {}, I = {}, L = {}, T = {}",
        args.file.display(),
        p.k(),
        p.j(),
        p.i(),
        p.l(),
        p.t
    );
    if let Some(why) = &s.fallback {
        println!("the exact solver did not solve it ({why}); the LP answers");
    }
    println!(
        "method {}\nobjective {:.6}\nupper bound {:.6} (the dual's objective)\nexact optimum within {:.3e} (relative {:.2e})\nintervals {}\nsolver iterations {}\ntime {:.3} s",
        s.method,
        s.objective,
        s.dual_objective,
        s.dual_objective - s.objective,
        s.relative_gap(),
        s.u.len(),
        s.iterations,
        s.solve_s
    );
    if let Some(k) = cost_constant {
        println!(
            "cost {:.6} (cost_constant {k} - objective), at least {:.6}",
            k - s.objective,
            k - s.dual_objective
        );
    }
    Ok(())
}

fn fluid_gen(args: FluidGenArgs) -> Result<()> {
    let spec = pharos_fluid::generate::McqnSpec {
        horizon: args.horizon,
        ..pharos_fluid::generate::McqnSpec::new(args.k, args.servers, args.seed)
    };
    let p = pharos_fluid::generate::mcqn(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", p.to_json());
    Ok(())
}

fn main() -> ExitCode {
    // The supervisor of one learner process, started by the server's local backend.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__learner") {
        return ExitCode::from(pharos_local::learner_main(&args[2..]) as u8);
    }
    // A service's router in a process of its own, started by the server.
    if args.get(1).map(String::as_str) == Some("__router") {
        return ExitCode::from(pharos_server::dataplane::router_main(&args[2..]) as u8);
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Train(_)
            | Command::Token(_)
            | Command::Context(_)
            | Command::Get(_)
            | Command::Delete(_)
            | Command::Logs(_)
            | Command::History(_)
    ) {
        // Client commands end quietly when their output is piped into `head`. (Not the
        // server: a client closing its socket must not kill it.)
        // SAFETY: restoring the default disposition of SIGPIPE before any I/O.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Simulate(a) => simulate(a),
        Command::Forecast(ForecastCommand::Eval(a)) => forecast_eval(a),
        Command::Fluid(FluidCommand::Solve(a)) => fluid_solve(a),
        Command::Fluid(FluidCommand::Gen(a)) => fluid_gen(a),
        Command::Graph(a) => graph(a),
        Command::Server(a) => server::server(a),
        Command::Train(a) => train::train(a.command, &a.conn),
        Command::Token(a) => token::token(a.command, &a.conn),
        Command::Login(a) => login::login(&a.url, &a.token_file, a.name.as_deref()),
        Command::Context(c) => login::context(c),
        Command::Apply(a) => services::apply(&a.file, &a.conn),
        Command::Get(a) => services::get(a.command, &a.conn, a.watch),
        Command::Delete(a) => services::delete(a.command, &a.conn),
        Command::Logs(a) => services::logs(a.command, &a.conn),
        Command::History(a) => history::history(a.command, &a.conn),
        Command::Load(a) => load::load(a),
        Command::Router(a) => router::router(a),
        Command::K8s(K8sCommand::Manifests(a)) => k8s_manifests(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pharos: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
