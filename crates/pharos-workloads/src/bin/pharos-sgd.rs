//! `pharos-sgd`: an example data-parallel training learner for the pharos training
//! service.
//!
//! It fits a linear regression `y = w·x + b` with mini-batch SGD on a synthetic data set
//! drawn deterministically from `--seed` (or on `$DATA_DIR/train.csv`, rows
//! `x1,...,xD,y`, when that file exists). The control plane starts one process per
//! learner; they form a gang of `WORLD_SIZE` ranks that exchange gradients over TCP, so
//! every rank holds the same model after every step.
//!
//! Environment: `RANK` (0-based, default 0, else `LEARNER_ID - 1`), `WORLD_SIZE`
//! (default 1, else `NUM_LEARNERS`), `MASTER_ADDR` and `MASTER_PORT` (required when
//! `WORLD_SIZE > 1`), `CHECKPOINT_DIR` and `RESULT_DIR` (default `.`), `DATA_DIR`
//! (optional). `LEARNER_ID` and `NUM_LEARNERS`, when set, must agree with `RANK` and
//! `WORLD_SIZE`.
//!
//! Data: rank `r` draws the mini-batch of step `s` from a SplitMix64 stream seeded by
//! `(seed, r, s)`, so ranks see different data and a run restarted at step `s` sees the
//! same batches as the original run. With a CSV file, row `i` belongs to rank
//! `i % WORLD_SIZE` and batches are sampled from the rank's rows.
//!
//! Protocol: rank 0 listens on `MASTER_ADDR:MASTER_PORT`, the other ranks connect
//! (retrying for 60 s). All integers and floats are 8-byte little-endian words.
//! - hello, rank r -> rank 0: `MAGIC, r, WORLD_SIZE, D, start_step`;
//! - ack, rank 0 -> rank r, once every rank has said hello: `MAGIC, start_step`;
//! - each step s, rank r -> rank 0: `s, g_1..g_D, g_b, loss` (the local gradient of the
//!   mean squared error and the local batch loss); rank 0 -> rank r: `s` followed by the
//!   same `D + 2` values averaged over all ranks. Every rank applies the averaged
//!   gradient; rank 0 reports the averaged loss.
//!
//! A step number that does not match, a peer that disconnects or stays silent for 120 s
//! ends the learner with exit code 4: the platform restarts the gang, which resumes from
//! the last checkpoint. Rank 0 writes `$CHECKPOINT_DIR/checkpoint.json` every
//! `--checkpoint-every` steps and at the end (atomically), every rank reads it at start,
//! and rank 0 writes `$RESULT_DIR/model.json` at the end.
//!
//! Exit codes: 0 done, 1 runtime failure (files, divergence), 2 invalid flags,
//! environment or input data, 3 crash on purpose (`--crash-at-step`, `--always-crash`),
//! 4 peer or network failure.

use std::fmt::Display;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const EXIT_RUNTIME: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_CRASH: i32 = 3;
const EXIT_PEER: i32 = 4;

/// Marks the hello of this program (and of this protocol version): "PHRSGD01".
const MAGIC: u64 = u64::from_le_bytes(*b"PHRSGD01");
const CONNECT_RETRY_FOR: Duration = Duration::from_secs(60);
const CONNECT_RETRY_EVERY: Duration = Duration::from_millis(100);
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const BIND_RETRY_FOR: Duration = Duration::from_secs(30);
const ACCEPT_POLL_EVERY: Duration = Duration::from_millis(50);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

const CHECKPOINT_FILE: &str = "checkpoint.json";
const CRASH_MARKER: &str = "crashed-once";
const MODEL_FILE: &str = "model.json";
const TRAIN_FILE: &str = "train.csv";
const DEFAULT_FEATURES: usize = 8;
/// Standard deviation of the Gaussian noise added to synthetic targets.
const NOISE_STD: f64 = 0.05;
/// The stream index of the true model (ranks are always smaller).
const TRUTH_STREAM: u64 = u64::MAX;

const USAGE: &str = "\
usage: pharos-sgd [options]

Data-parallel SGD on a linear regression; one process per learner.

options:
  --steps N             steps to train (default 200)
  --lr F                learning rate (default 0.1)
  --batch N             mini-batch size per learner (default 64)
  --features D          features of the synthetic data set (default 8)
  --seed S              seed of the data set and the batches (default 7)
  --sleep-ms M          pause after every step (default 0)
  --checkpoint-every K  checkpoint every K steps (default 10)
  --crash-at-step N     exit with code 3 after step N, unless
                        $CHECKPOINT_DIR/crashed-once exists (it is created)
  --always-crash        exit with code 3 at the first step, every time
  --help                print this text

environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, CHECKPOINT_DIR,
RESULT_DIR, DATA_DIR, LEARNER_ID, NUM_LEARNERS";

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("pharos-sgd: {}", failure.message);
            failure.code
        }
    };
    std::process::exit(code);
}

/// Why the learner stops early, and with which exit code.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_RUNTIME,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    fn crash(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_CRASH,
            message: message.into(),
        }
    }

    fn peer(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_PEER,
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// Prints one line on stdout and flushes it; a closed stdout is not an error.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run() -> Result<()> {
    let options = match parse_args(std::env::args().skip(1))? {
        Command::Help => {
            say(USAGE);
            return Ok(());
        }
        Command::Train(options) => options,
    };
    let env = read_env()?;
    say(&format!(
        "learner rank={} world_size={} master={}:{}",
        env.rank, env.world_size, env.master_addr, env.master_port
    ));
    let data = load_dataset(&options, &env)?;
    train(&options, &env, &data)
}

// ---------------------------------------------------------------------------------------
// Flags

/// The command-line options.
#[derive(Debug, Clone)]
struct Options {
    steps: u64,
    lr: f64,
    batch: usize,
    /// `None` when not given: the CSV file's width, else `DEFAULT_FEATURES`.
    features: Option<usize>,
    seed: u64,
    sleep_ms: u64,
    checkpoint_every: u64,
    crash_at_step: Option<u64>,
    always_crash: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            steps: 200,
            lr: 0.1,
            batch: 64,
            features: None,
            seed: 7,
            sleep_ms: 0,
            checkpoint_every: 10,
            crash_at_step: None,
            always_crash: false,
        }
    }
}

enum Command {
    Train(Options),
    Help,
}

/// Parses `--name value` (or `--name=value`) flags.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--always-crash" => {
                if inline.is_some() {
                    return Err(Failure::usage("--always-crash takes no value"));
                }
                options.always_crash = true;
                continue;
            }
            _ => {}
        }
        let mut value = || inline.clone().or_else(|| args.next());
        match name.as_str() {
            "--steps" => options.steps = flag_value(&name, value())?,
            "--lr" => options.lr = flag_value(&name, value())?,
            "--batch" => options.batch = flag_value(&name, value())?,
            "--features" => options.features = Some(flag_value(&name, value())?),
            "--seed" => options.seed = flag_value(&name, value())?,
            "--sleep-ms" => options.sleep_ms = flag_value(&name, value())?,
            "--checkpoint-every" => options.checkpoint_every = flag_value(&name, value())?,
            "--crash-at-step" => options.crash_at_step = Some(flag_value(&name, value())?),
            _ => {
                return Err(Failure::usage(format!(
                    "unknown argument {arg:?}\n\n{USAGE}"
                )));
            }
        }
    }
    validate(&options)?;
    Ok(Command::Train(options))
}

fn flag_value<T: FromStr>(name: &str, value: Option<String>) -> Result<T>
where
    T::Err: Display,
{
    let value = value.ok_or_else(|| Failure::usage(format!("{name} needs a value")))?;
    value
        .parse()
        .map_err(|e| Failure::usage(format!("invalid value {value:?} for {name}: {e}")))
}

fn validate(options: &Options) -> Result<()> {
    if options.steps == 0 {
        return Err(Failure::usage("--steps must be at least 1"));
    }
    if !(options.lr.is_finite() && options.lr > 0.0) {
        return Err(Failure::usage("--lr must be a positive number"));
    }
    if options.batch == 0 {
        return Err(Failure::usage("--batch must be at least 1"));
    }
    if options.features == Some(0) {
        return Err(Failure::usage("--features must be at least 1"));
    }
    if options.checkpoint_every == 0 {
        return Err(Failure::usage("--checkpoint-every must be at least 1"));
    }
    if options.crash_at_step == Some(0) {
        return Err(Failure::usage("--crash-at-step must be at least 1"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Environment

/// What the platform tells the learner through its environment.
#[derive(Debug, Clone)]
struct Env {
    rank: usize,
    world_size: usize,
    master_addr: String,
    master_port: u16,
    checkpoint_dir: PathBuf,
    result_dir: PathBuf,
    data_dir: Option<PathBuf>,
}

/// A variable's value; unset and empty are the same, non-UTF-8 is an error.
fn env_string(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::usage(format!(
            "environment variable {name} is not valid UTF-8"
        ))),
    }
}

fn env_parse<T: FromStr>(name: &str) -> Result<Option<T>>
where
    T::Err: Display,
{
    match env_string(name)? {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| Failure::usage(format!("invalid environment variable {name}={v:?}: {e}"))),
    }
}

fn read_env() -> Result<Env> {
    let learner_id: Option<usize> = env_parse("LEARNER_ID")?;
    let num_learners: Option<usize> = env_parse("NUM_LEARNERS")?;
    if learner_id == Some(0) {
        return Err(Failure::usage(
            "LEARNER_ID is 1-based and must be at least 1",
        ));
    }
    let rank = match env_parse::<usize>("RANK")? {
        Some(rank) => rank,
        None => learner_id.map_or(0, |id| id - 1),
    };
    let world_size = env_parse::<usize>("WORLD_SIZE")?
        .or(num_learners)
        .unwrap_or(1);
    if world_size == 0 {
        return Err(Failure::usage("WORLD_SIZE must be at least 1"));
    }
    if rank >= world_size {
        return Err(Failure::usage(format!(
            "RANK={rank} is out of range for WORLD_SIZE={world_size}"
        )));
    }
    if let Some(id) = learner_id.filter(|&id| id != rank + 1) {
        return Err(Failure::usage(format!(
            "LEARNER_ID={id} does not match RANK={rank}"
        )));
    }
    if let Some(n) = num_learners.filter(|&n| n != world_size) {
        return Err(Failure::usage(format!(
            "NUM_LEARNERS={n} does not match WORLD_SIZE={world_size}"
        )));
    }
    let (master_addr, master_port) = master(world_size)?;
    let dir = |name: &str| -> Result<PathBuf> {
        Ok(env_string(name)?.map_or_else(|| PathBuf::from("."), PathBuf::from))
    };
    Ok(Env {
        rank,
        world_size,
        master_addr,
        master_port,
        checkpoint_dir: dir("CHECKPOINT_DIR")?,
        result_dir: dir("RESULT_DIR")?,
        data_dir: env_string("DATA_DIR")?.map(PathBuf::from),
    })
}

/// `MASTER_ADDR` and `MASTER_PORT`: required for a gang, defaults for a lone learner.
fn master(world_size: usize) -> Result<(String, u16)> {
    let addr = env_string("MASTER_ADDR")?;
    let port: Option<u16> = env_parse("MASTER_PORT")?;
    if world_size > 1 {
        let addr =
            addr.ok_or_else(|| Failure::usage("MASTER_ADDR must be set when WORLD_SIZE > 1"))?;
        let port =
            port.ok_or_else(|| Failure::usage("MASTER_PORT must be set when WORLD_SIZE > 1"))?;
        if port == 0 {
            return Err(Failure::usage("MASTER_PORT must not be 0"));
        }
        Ok((addr, port))
    } else {
        Ok((
            addr.unwrap_or_else(|| "127.0.0.1".into()),
            port.unwrap_or(29500),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Random numbers and data

/// SplitMix64: a small, fast, well-mixed generator, ample for synthetic data.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Standard normal (Box-Muller).
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The SplitMix64 output function.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream `(seed, stream, step)`: distinct streams for distinct triples.
fn stream_seed(seed: u64, stream: u64, step: u64) -> u64 {
    let h = mix64(seed ^ 0x5048_4152_4F53_5347);
    let h = mix64(h ^ mix64(stream.wrapping_add(0x1234_5678_9ABC_DEF1)));
    mix64(h ^ mix64(step.wrapping_add(0x0FED_CBA9_8765_4321)))
}

/// Where the examples come from.
enum Dataset {
    /// `y = weights·x + bias + noise`, `x ~ U[-1, 1]^D`, drawn without end.
    Synthetic { weights: Vec<f64>, bias: f64 },
    /// This rank's rows of a CSV file, each `x1..xD, y`.
    Table {
        features: usize,
        rows: Vec<Vec<f64>>,
    },
}

impl Dataset {
    fn synthetic(seed: u64, features: usize) -> Self {
        let mut rng = SplitMix64::new(stream_seed(seed, TRUTH_STREAM, 0));
        let weights = (0..features).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let bias = rng.uniform(-1.0, 1.0);
        Dataset::Synthetic { weights, bias }
    }

    fn features(&self) -> usize {
        match self {
            Dataset::Synthetic { weights, .. } => weights.len(),
            Dataset::Table { features, .. } => *features,
        }
    }

    /// Draws one example: fills `x` and returns its target.
    fn sample(&self, rng: &mut SplitMix64, x: &mut [f64]) -> f64 {
        match self {
            Dataset::Synthetic { weights, bias } => {
                for xj in x.iter_mut() {
                    *xj = rng.uniform(-1.0, 1.0);
                }
                dot(weights, x) + bias + NOISE_STD * rng.gaussian()
            }
            Dataset::Table { features, rows } => {
                let row = &rows[rng.below(rows.len())];
                x.copy_from_slice(&row[..*features]);
                row[*features]
            }
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `$DATA_DIR/train.csv` when it exists, else the synthetic data set.
fn load_dataset(options: &Options, env: &Env) -> Result<Dataset> {
    let csv = env
        .data_dir
        .as_ref()
        .map(|d| d.join(TRAIN_FILE))
        .filter(|p| p.is_file());
    let Some(path) = csv else {
        let features = options.features.unwrap_or(DEFAULT_FEATURES);
        return Ok(Dataset::synthetic(options.seed, features));
    };
    let text = fs::read_to_string(&path)
        .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", path.display())))?;
    let data = parse_csv(&text, env.rank, env.world_size)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    if let Some(d) = options.features.filter(|&d| d != data.features()) {
        return Err(Failure::usage(format!(
            "--features {d} but {} has {} feature columns",
            path.display(),
            data.features()
        )));
    }
    say(&format!(
        "data {} rows_for_rank={} features={}",
        path.display(),
        match &data {
            Dataset::Table { rows, .. } => rows.len(),
            Dataset::Synthetic { .. } => 0,
        },
        data.features()
    ));
    Ok(data)
}

/// Parses rows `x1,...,xD,y` (a first line that is not numeric is a header; blank lines
/// and `#` comments are skipped) and keeps row `i` when `i % world_size == rank`.
fn parse_csv(text: &str, rank: usize, world_size: usize) -> std::result::Result<Dataset, String> {
    let mut width = None;
    let mut index = 0usize;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed: std::result::Result<Vec<f64>, _> =
            line.split(',').map(|f| f.trim().parse::<f64>()).collect();
        let row = match parsed {
            Ok(row) => row,
            Err(_) if width.is_none() => {
                width = Some(line.split(',').count());
                continue; // header
            }
            Err(e) => return Err(format!("line {}: {e}", n + 1)),
        };
        let expected = *width.get_or_insert(row.len());
        if row.len() != expected {
            return Err(format!(
                "line {}: {} columns, expected {expected}",
                n + 1,
                row.len()
            ));
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(format!("line {}: values must be finite", n + 1));
        }
        if index % world_size == rank {
            rows.push(row);
        }
        index += 1;
    }
    let width = width.unwrap_or(0);
    if width < 2 {
        return Err("needs at least two columns (features, then the target)".into());
    }
    if rows.is_empty() {
        return Err(format!(
            "no rows for rank {rank} of {world_size} ({index} rows in all)"
        ));
    }
    Ok(Dataset::Table {
        features: width - 1,
        rows,
    })
}

// ---------------------------------------------------------------------------------------
// Model

#[derive(Debug, Clone)]
struct Model {
    weights: Vec<f64>,
    bias: f64,
}

impl Model {
    fn zeros(features: usize) -> Self {
        Model {
            weights: vec![0.0; features],
            bias: 0.0,
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        dot(&self.weights, x) + self.bias
    }

    /// One SGD update with `gradient` = `[dL/dw_1..dL/dw_D, dL/db]`.
    fn apply(&mut self, gradient: &[f64], lr: f64) {
        for (w, g) in self.weights.iter_mut().zip(gradient) {
            *w -= lr * g;
        }
        self.bias -= lr * gradient[self.weights.len()];
    }
}

/// The gradient of the mean squared error over one mini-batch, followed by that error:
/// `[dL/dw_1..dL/dw_D, dL/db, L]`.
fn local_gradient(model: &Model, data: &Dataset, rng: &mut SplitMix64, batch: usize) -> Vec<f64> {
    let d = model.weights.len();
    let mut out = vec![0.0; d + 2];
    let mut x = vec![0.0; d];
    for _ in 0..batch {
        let y = data.sample(rng, &mut x);
        let err = model.predict(&x) - y;
        for (g, xj) in out[..d].iter_mut().zip(&x) {
            *g += 2.0 * err * xj;
        }
        out[d] += 2.0 * err;
        out[d + 1] += err * err;
    }
    let scale = 1.0 / batch as f64;
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

// ---------------------------------------------------------------------------------------
// Checkpoints and results

#[derive(Debug, Clone)]
struct Checkpoint {
    step: u64,
    model: Model,
    /// The global loss of the checkpoint's step.
    loss: Option<f64>,
}

fn load_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::runtime(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    parse_checkpoint(&text)
        .map(Some)
        .map_err(|e| Failure::runtime(format!("invalid checkpoint {}: {e}", path.display())))
}

fn parse_checkpoint(text: &str) -> std::result::Result<Checkpoint, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let step = value["step"]
        .as_u64()
        .ok_or("\"step\" must be a non-negative integer")?;
    let weights = value["weights"]
        .as_array()
        .ok_or("\"weights\" must be an array")?
        .iter()
        .map(|w| w.as_f64().ok_or("\"weights\" must hold numbers"))
        .collect::<std::result::Result<Vec<f64>, _>>()?;
    let bias = value["bias"].as_f64().ok_or("\"bias\" must be a number")?;
    let loss = value.get("loss").and_then(Value::as_f64);
    Ok(Checkpoint {
        step,
        model: Model { weights, bias },
        loss,
    })
}

fn save_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let value = json!({
        "step": checkpoint.step,
        "weights": checkpoint.model.weights,
        "bias": checkpoint.model.bias,
        "loss": checkpoint.loss,
    });
    write_json(&dir.join(CHECKPOINT_FILE), &value)
}

fn save_model(env: &Env, model: &Model, loss: Option<f64>, steps: u64) -> Result<()> {
    let value = json!({
        "weights": model.weights,
        "bias": model.bias,
        "final_loss": loss,
        "steps": steps,
        "world_size": env.world_size,
    });
    write_json(&env.result_dir.join(MODEL_FILE), &value)
}

/// Writes `value` to `path` atomically: a temporary file in the same folder, then a
/// rename over the target.
fn write_json(path: &Path, value: &Value) -> Result<()> {
    let fail = |e: io::Error| Failure::runtime(format!("cannot write {}: {e}", path.display()));
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::runtime(format!("cannot encode {}: {e}", path.display())))?;
    text.push('\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// Leaves `$CHECKPOINT_DIR/crashed-once` behind so that the next run goes on.
fn mark_crashed(dir: &Path) -> Result<()> {
    let path = dir.join(CRASH_MARKER);
    fs::create_dir_all(dir)
        .and_then(|()| fs::write(&path, b"crashed on purpose (--crash-at-step)\n"))
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------
// Gradient exchange

/// The learner's view of the gang.
enum Group {
    /// `WORLD_SIZE = 1`: no networking.
    Solo,
    /// Rank 0 with a connection to every other rank, `peers[i]` being rank `i + 1`.
    Leader { peers: Vec<TcpStream> },
    /// Any other rank, connected to rank 0.
    Follower { leader: TcpStream },
}

impl Group {
    /// Averages `local` over all ranks for `step`; every rank gets the same bits back.
    fn all_reduce(&mut self, step: u64, local: &[f64]) -> Result<Vec<f64>> {
        match self {
            Group::Solo => Ok(local.to_vec()),
            Group::Leader { peers } => {
                let mut sum = local.to_vec();
                for (i, peer) in peers.iter_mut().enumerate() {
                    let values = read_frame(peer, step, local.len(), i + 1)?;
                    for (s, v) in sum.iter_mut().zip(&values) {
                        *s += v;
                    }
                }
                let world = (peers.len() + 1) as f64;
                sum.iter_mut().for_each(|s| *s /= world);
                for (i, peer) in peers.iter_mut().enumerate() {
                    write_frame(peer, step, &sum).map_err(|e| peer_failure(i + 1, &e))?;
                }
                Ok(sum)
            }
            Group::Follower { leader } => {
                write_frame(leader, step, local).map_err(|e| peer_failure(0, &e))?;
                read_frame(leader, step, local.len(), 0)
            }
        }
    }
}

fn peer_failure(rank: usize, e: &io::Error) -> Failure {
    let what = match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "disconnected".to_string()
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("sent nothing for {} s", PEER_TIMEOUT.as_secs())
        }
        _ => format!("failed: {e}"),
    };
    Failure::peer(format!("connection to rank {rank} {what}"))
}

fn write_words(stream: &mut TcpStream, words: &[u64]) -> io::Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    stream.write_all(&bytes)?;
    stream.flush()
}

fn read_words(stream: &mut TcpStream, n: usize) -> io::Result<Vec<u64>> {
    let mut bytes = vec![0u8; 8 * n];
    stream.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Sends `step, values...`.
fn write_frame(stream: &mut TcpStream, step: u64, values: &[f64]) -> io::Result<()> {
    let words: Vec<u64> = std::iter::once(step)
        .chain(values.iter().map(|v| v.to_bits()))
        .collect();
    write_words(stream, &words)
}

/// Receives `step, values...` from rank `from` and checks the step number.
fn read_frame(stream: &mut TcpStream, step: u64, n: usize, from: usize) -> Result<Vec<f64>> {
    let words = read_words(stream, n + 1).map_err(|e| peer_failure(from, &e))?;
    if words[0] != step {
        return Err(Failure::peer(format!(
            "rank {from} is at step {}, this rank at step {step}",
            words[0]
        )));
    }
    Ok(words[1..].iter().map(|&w| f64::from_bits(w)).collect())
}

/// Connects the gang: rank 0 accepts the others, the others connect to rank 0.
fn rendezvous(env: &Env, features: usize, start_step: u64) -> Result<Group> {
    if env.world_size == 1 {
        Ok(Group::Solo)
    } else if env.rank == 0 {
        lead(env, features, start_step)
    } else {
        follow(env, features, start_step)
    }
}

fn configure(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))
}

/// Binds `MASTER_ADDR:MASTER_PORT`, retrying while the port is still taken (a previous
/// attempt's process may not be gone yet). std sets SO_REUSEADDR on Unix.
fn bind(env: &Env) -> Result<TcpListener> {
    let started = Instant::now();
    loop {
        match TcpListener::bind((env.master_addr.as_str(), env.master_port)) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == ErrorKind::AddrInUse && started.elapsed() < BIND_RETRY_FOR => {
                thread::sleep(CONNECT_RETRY_EVERY);
            }
            Err(e) => {
                return Err(Failure::peer(format!(
                    "cannot listen on {}:{}: {e}",
                    env.master_addr, env.master_port
                )));
            }
        }
    }
}

/// Rank 0: accepts one connection per other rank, checks their hellos, then acks.
fn lead(env: &Env, features: usize, start_step: u64) -> Result<Group> {
    let listener = bind(env)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::peer(format!("cannot configure the listener: {e}")))?;
    let mut slots: Vec<Option<TcpStream>> = (1..env.world_size).map(|_| None).collect();
    let mut missing = slots.len();
    let started = Instant::now();
    while missing > 0 {
        let (stream, from) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if started.elapsed() > PEER_TIMEOUT {
                    return Err(Failure::peer(format!(
                        "{missing} of {} ranks did not connect within {} s",
                        env.world_size - 1,
                        PEER_TIMEOUT.as_secs()
                    )));
                }
                thread::sleep(ACCEPT_POLL_EVERY);
                continue;
            }
            Err(e) => return Err(Failure::peer(format!("accept failed: {e}"))),
        };
        let greeted = greet(stream_for_hello(stream), from, env, features, start_step)?;
        let Some((rank, stream)) = greeted else {
            continue;
        };
        if slots[rank - 1].is_some() {
            return Err(Failure::peer(format!("rank {rank} connected twice")));
        }
        slots[rank - 1] = Some(stream);
        missing -= 1;
    }
    let mut peers: Vec<TcpStream> = slots.into_iter().flatten().collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        configure(peer, PEER_TIMEOUT)
            .and_then(|()| write_words(peer, &[MAGIC, start_step]))
            .map_err(|e| peer_failure(i + 1, &e))?;
    }
    Ok(Group::Leader { peers })
}

/// Makes an accepted stream blocking, with the short timeout of the hello.
fn stream_for_hello(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_nonblocking(false)?;
    configure(&stream, HELLO_TIMEOUT)?;
    Ok(stream)
}

/// Reads and checks a hello. A connection that does not speak the protocol is dropped
/// (`Ok(None)`); a learner of this gang whose settings differ is a failure.
fn greet(
    stream: io::Result<TcpStream>,
    from: SocketAddr,
    env: &Env,
    features: usize,
    start_step: u64,
) -> Result<Option<(usize, TcpStream)>> {
    let hello = stream.and_then(|mut s| read_words(&mut s, 5).map(|words| (s, words)));
    let (stream, words) = match hello {
        Ok((stream, words)) if words[0] == MAGIC => (stream, words),
        Ok(_) => {
            eprintln!("pharos-sgd: ignoring a connection from {from}: not a pharos-sgd learner");
            return Ok(None);
        }
        Err(e) => {
            eprintln!("pharos-sgd: ignoring a connection from {from}: {e}");
            return Ok(None);
        }
    };
    let (rank, world, their_features, their_start) = (words[1], words[2], words[3], words[4]);
    if world != env.world_size as u64 {
        return Err(Failure::peer(format!(
            "rank {rank} has WORLD_SIZE={world}, rank 0 has {}",
            env.world_size
        )));
    }
    if rank == 0 || rank >= world {
        return Err(Failure::peer(format!(
            "a learner from {from} claims rank {rank}"
        )));
    }
    if their_features != features as u64 {
        return Err(Failure::peer(format!(
            "rank {rank} has {their_features} features, rank 0 has {features}"
        )));
    }
    if their_start != start_step {
        return Err(Failure::peer(format!(
            "rank {rank} starts at step {their_start}, rank 0 at step {start_step}"
        )));
    }
    Ok(Some((rank as usize, stream)))
}

/// Any rank but 0: connects to rank 0 (retrying for a while), says hello, awaits the ack.
fn follow(env: &Env, features: usize, start_step: u64) -> Result<Group> {
    let mut leader = connect(env)?;
    let hello = [
        MAGIC,
        env.rank as u64,
        env.world_size as u64,
        features as u64,
        start_step,
    ];
    configure(&leader, PEER_TIMEOUT)
        .and_then(|()| write_words(&mut leader, &hello))
        .map_err(|e| peer_failure(0, &e))?;
    let ack = read_words(&mut leader, 2).map_err(|e| peer_failure(0, &e))?;
    if ack[0] != MAGIC {
        return Err(Failure::peer(
            "rank 0 does not speak the pharos-sgd protocol",
        ));
    }
    if ack[1] != start_step {
        return Err(Failure::peer(format!(
            "rank 0 starts at step {}, this rank at step {start_step}",
            ack[1]
        )));
    }
    Ok(Group::Follower { leader })
}

fn connect(env: &Env) -> Result<TcpStream> {
    let started = Instant::now();
    let mut last_error = String::from("no address");
    while started.elapsed() < CONNECT_RETRY_FOR {
        match try_connect(&env.master_addr, env.master_port) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e.to_string(),
        }
        thread::sleep(CONNECT_RETRY_EVERY);
    }
    Err(Failure::peer(format!(
        "cannot connect to rank 0 at {}:{} within {} s: {last_error}",
        env.master_addr,
        env.master_port,
        CONNECT_RETRY_FOR.as_secs()
    )))
}

fn try_connect(addr: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, format!("{addr} resolves to nothing"));
    for candidate in (addr, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&candidate, CONNECT_ATTEMPT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------
// Training

fn train(options: &Options, env: &Env, data: &Dataset) -> Result<()> {
    let features = data.features();
    let leader = env.rank == 0;
    // Decided once, so that every rank of this attempt agrees.
    let crashed_before = env.checkpoint_dir.join(CRASH_MARKER).exists();
    let (mut model, start, mut loss) = resume(env, features)?;
    if options.always_crash {
        return Err(Failure::crash(format!(
            "crashing on purpose at step {} (--always-crash)",
            start + 1
        )));
    }
    let mut group = rendezvous(env, features, start)?;
    let mut step = start;
    while step < options.steps {
        step += 1;
        let mut rng = SplitMix64::new(stream_seed(options.seed, env.rank as u64, step));
        let local = local_gradient(&model, data, &mut rng, options.batch);
        let mut mean = group.all_reduce(step, &local)?;
        let global_loss = mean.pop().unwrap_or(f64::NAN);
        if !global_loss.is_finite() {
            return Err(Failure::runtime(format!(
                "training diverged at step {step} (loss is not finite); lower --lr"
            )));
        }
        model.apply(&mean, options.lr);
        loss = Some(global_loss);
        report_step(options, env, step, global_loss);
        if leader && (step % options.checkpoint_every == 0 || step == options.steps) {
            save_checkpoint(
                &env.checkpoint_dir,
                &Checkpoint {
                    step,
                    model: model.clone(),
                    loss,
                },
            )?;
        }
        if options.crash_at_step == Some(step) && !crashed_before {
            mark_crashed(&env.checkpoint_dir)?;
            return Err(Failure::crash(format!(
                "crashing on purpose after step {step} (--crash-at-step)"
            )));
        }
        if options.sleep_ms > 0 {
            thread::sleep(Duration::from_millis(options.sleep_ms));
        }
    }
    finish(env, &model, loss, step)
}

/// The model and step to start from: the checkpoint's, or zeros at step 0.
fn resume(env: &Env, features: usize) -> Result<(Model, u64, Option<f64>)> {
    let Some(checkpoint) = load_checkpoint(&env.checkpoint_dir)? else {
        return Ok((Model::zeros(features), 0, None));
    };
    if checkpoint.model.weights.len() != features {
        return Err(Failure::usage(format!(
            "the checkpoint in {} has {} weights but the data has {features} features",
            env.checkpoint_dir.display(),
            checkpoint.model.weights.len()
        )));
    }
    say(&format!(
        "resumed from checkpoint at step {}",
        checkpoint.step
    ));
    Ok((checkpoint.model, checkpoint.step, checkpoint.loss))
}

fn report_step(options: &Options, env: &Env, step: u64, loss: f64) {
    if env.rank == 0 {
        say(&format!("step={step} loss={loss:.6} lr={}", options.lr));
    } else if step.is_multiple_of(50) {
        say(&format!("rank {} step={step}", env.rank));
    }
}

fn finish(env: &Env, model: &Model, loss: Option<f64>, step: u64) -> Result<()> {
    if env.rank == 0 {
        save_model(env, model, loss, step)?;
        say(&format!(
            "done step={step} loss={:.6}",
            loss.unwrap_or(f64::NAN)
        ));
    } else {
        say(&format!("rank {} done step={step}", env.rank));
    }
    Ok(())
}
