//! Training jobs: the manifest (FfDL's fields, plus what its users asked for: restarts,
//! priorities, queues, local and NFS data), its validation, the lifecycle and the
//! error codes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A training job as its user writes it (YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Learner processes (distributed training).
    #[serde(default = "one")]
    pub learners: u32,
    /// Per learner.
    #[serde(default = "one_f")]
    pub cpus: f64,
    #[serde(default)]
    pub gpus: u32,
    /// Per learner, like `1Gb`, `16GiB`, `512MiB` (default 1GiB).
    #[serde(default)]
    pub memory: Option<String>,
    /// The GPU model; selects the resource flavour (any model when absent).
    #[serde(default)]
    pub gpu_type: Option<String>,
    #[serde(default)]
    pub data_stores: Vec<DataStore>,
    pub framework: Framework,
    #[serde(default)]
    pub evaluation_metrics: Option<EvaluationMetrics>,
    /// Restarts of a crashed learner (from its checkpoint) before the job fails.
    #[serde(default = "three")]
    pub max_restarts: u32,
    /// Higher runs first and may preempt lower.
    #[serde(default)]
    pub priority: i32,
    /// The queue (and so the quota) the job is charged to.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// How a gang's learners are laid over the nodes of a multi-node engine (Ray):
    /// `pack` (as few nodes as fit them, the default) or `spread` (each learner on a
    /// node of its own; the gang waits until there are enough nodes).
    #[serde(default)]
    pub placement: Option<LearnerPlacement>,
}

/// How a gang's learners are laid over an engine's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LearnerPlacement {
    Pack,
    Spread,
}

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn three() -> u32 {
    3
}
fn default_queue() -> String {
    "default".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataStore {
    pub id: String,
    /// `local` or `nfs` (a directory on this machine or a mounted share), or an object
    /// store kind another backend knows.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub training_data: Option<Container>,
    #[serde(default)]
    pub training_results: Option<Container>,
    /// Kind-specific settings (`path` for local and NFS stores).
    #[serde(default)]
    pub connection: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    /// A shell command; may use ${DATA_DIR}, ${RESULT_DIR}, ${MODEL_DIR},
    /// ${CHECKPOINT_DIR}, $NUM_LEARNERS, $LEARNER_ID, $JOB_STATE_DIR.
    pub command: String,
}

/// How metrics are read from the learners' logs: every line matching `regex` gives one
/// value per named group (`(?P<loss>[0-9.]+)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationMetrics {
    #[serde(rename = "type")]
    pub kind: String,
    pub regex: String,
}

/// What one learner asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerResources {
    pub cpus: f64,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub gpu_type: Option<String>,
}

impl Manifest {
    /// Every field usable; the error names the field (error code C101, or C104 for a
    /// resource).
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(SpecError::new(
                "name",
                "1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        use crate::limits::*;
        if let Some(d) = &self.description {
            check_len("description", d, MAX_DESCRIPTION)?;
        }
        if let Some(v) = &self.version {
            check_len("version", v, MAX_SHORT)?;
        }
        check_int("learners", self.learners, 1, MAX_LEARNERS)?;
        check_f64("cpus", self.cpus, MIN_CPUS, MAX_CPUS)?;
        check_int("gpus", self.gpus, 0, MAX_GPUS)?;
        check_int("max_restarts", self.max_restarts, 0, MAX_RESTARTS)?;
        check_int("priority", self.priority, MIN_PRIORITY, MAX_PRIORITY)?;
        check_len("queue", &self.queue, MAX_SHORT)?;
        check_len("framework.name", &self.framework.name, MAX_SHORT)?;
        if let Some(v) = &self.framework.version {
            check_len("framework.version", v, MAX_SHORT)?;
        }
        check_len(
            "framework.command",
            &self.framework.command,
            MAX_COMMAND_BYTES,
        )?;
        if self.framework.command.contains('\0') {
            return Err(SpecError::new(
                "framework.command",
                "must not contain a NUL byte",
            ));
        }
        if let Some(t) = &self.gpu_type {
            check_len("gpu_type", t, MAX_SHORT)?;
        }
        check_count("data_stores", self.data_stores.len(), MAX_DATA_STORES)?;
        for (i, d) in self.data_stores.iter().enumerate() {
            let at = |f: &str| format!("data_stores[{i}].{f}");
            check_len(&at("id"), &d.id, MAX_SHORT)?;
            check_len(&at("type"), &d.kind, MAX_SHORT)?;
            check_count(&at("connection"), d.connection.len(), MAX_CONNECTION_KEYS)?;
            for (k, v) in &d.connection {
                check_len(&at("connection"), k, MAX_SHORT)?;
                check_len(&at(&format!("connection.{k}")), v, MAX_PATH)?;
            }
            for (c, f) in [
                (&d.training_data, "training_data.container"),
                (&d.training_results, "training_results.container"),
            ] {
                if let Some(c) = c {
                    check_len(&at(f), &c.container, MAX_PATH)?;
                    if std::path::Path::new(&c.container)
                        .components()
                        .any(|p| !matches!(p, std::path::Component::Normal(_)))
                    {
                        return Err(SpecError::new(
                            at(f),
                            "must be a relative path inside the store (no '..', no leading '/')",
                        ));
                    }
                }
            }
        }
        if let Some(m) = &self.evaluation_metrics {
            check_len("evaluation_metrics.regex", &m.regex, MAX_REGEX)?;
        }
        if let Some(m) = &self.memory {
            let bytes = parse_memory(m).map_err(|p| SpecError::new("memory", p))?;
            crate::limits::check_int(
                "memory",
                bytes,
                crate::limits::MIN_MEMORY_BYTES,
                crate::limits::MAX_MEMORY_BYTES,
            )
            .map_err(|_| {
                SpecError::new("memory", format!("{m:?}: must be between 1MiB and 4TiB"))
            })?;
        }
        if self
            .gpu_type
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(SpecError::new("gpu_type", "must not be empty"));
        }
        if self.gpu_type.is_some() && self.gpus == 0 {
            return Err(SpecError::new("gpu_type", "given, but gpus is 0"));
        }
        if self.framework.name.trim().is_empty() {
            return Err(SpecError::new("framework.name", "must not be empty"));
        }
        if self.framework.command.trim().is_empty() {
            return Err(SpecError::new("framework.command", "must not be empty"));
        }
        if self.queue.trim().is_empty() {
            return Err(SpecError::new("queue", "must not be empty"));
        }
        for (i, d) in self.data_stores.iter().enumerate() {
            let at = |f: &str| format!("data_stores[{i}].{f}");
            if d.id.trim().is_empty() {
                return Err(SpecError::new(at("id"), "must not be empty"));
            }
            if self.data_stores[..i].iter().any(|e| e.id == d.id) {
                return Err(SpecError::new(
                    at("id"),
                    format!("{:?} appears twice", d.id),
                ));
            }
            if matches!(d.kind.as_str(), "local" | "nfs") {
                match d.connection.get("path") {
                    Some(p) if p.starts_with('/') => {}
                    _ => {
                        return Err(SpecError::new(
                            at("connection.path"),
                            "a local or NFS store needs an absolute path",
                        ));
                    }
                }
            }
        }
        if let Some(m) = &self.evaluation_metrics {
            if m.kind != "regex" {
                return Err(SpecError::new(
                    "evaluation_metrics.type",
                    format!("{:?}: only `regex` is supported", m.kind),
                ));
            }
            if !m.regex.contains("(?P<") && !m.regex.contains("(?<") {
                return Err(SpecError::new(
                    "evaluation_metrics.regex",
                    "needs at least one named group, like (?P<loss>[0-9.]+)",
                ));
            }
        }
        Ok(())
    }

    /// One learner's resources (memory defaults to 1 GiB).
    pub fn per_learner(&self) -> LearnerResources {
        LearnerResources {
            cpus: self.cpus,
            memory_bytes: self
                .memory
                .as_deref()
                .and_then(|m| parse_memory(m).ok())
                .unwrap_or(1 << 30),
            gpus: self.gpus,
            gpu_type: self.gpu_type.clone(),
        }
    }
}

/// Bytes in `1Gb`, `16GiB`, `512MiB`, `2 GB`, `100M`, `4096` (bytes): decimal for `kb`,
/// `mb`, `gb`, `tb` (any case; FfDL writes `Gb` for gigabytes), binary for `KiB`..`TiB`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1Gb, 16GiB or 512MiB"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    let bytes = value * factor;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes.round() as u64)
}

/// Bytes for people: `512 B`, `1.5 KiB`, `16 GiB`, `2.3 TiB` (binary units, at most one
/// decimal, none when whole).
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    let tenths = (v * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0} {}", UNITS[u])
    } else {
        format!("{tenths:.1} {}", UNITS[u])
    }
}

/// The lifecycle of a training job (FfDL's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Pending,
    Downloading,
    Processing,
    Storing,
    Completed,
    Failed,
    Halted,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Pending,
        JobState::Downloading,
        JobState::Processing,
        JobState::Storing,
        JobState::Completed,
        JobState::Failed,
        JobState::Halted,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Halted
        )
    }

    fn rank(self) -> u8 {
        match self {
            JobState::Queued => 0,
            JobState::Pending => 1,
            JobState::Downloading => 2,
            JobState::Processing => 3,
            JobState::Storing => 4,
            _ => 5,
        }
    }

    /// Whether `self -> next` is allowed: PENDING from QUEUED; DOWNLOADING from
    /// PENDING; PROCESSING from PENDING, DOWNLOADING or PROCESSING; STORING from any
    /// earlier non-terminal state; a terminal state from any non-terminal one. Back to
    /// QUEUED: a running job preempted (halted to its checkpoint and re-queued), or a
    /// HALTED job resumed. COMPLETED and FAILED are final.
    pub fn can_go_to(self, next: JobState) -> bool {
        use JobState::*;
        match (self, next) {
            (Completed | Failed, _) => false,
            (Halted, Queued) => true,
            (Halted, _) => false,
            (Pending | Downloading | Processing | Storing, Queued) => true,
            (Queued, Pending) => true,
            (Pending, Downloading) => true,
            (Pending | Downloading | Processing, Processing) => true,
            (s, Storing) => s.rank() < Storing.rank(),
            (_, Completed | Failed | Halted) => true,
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Pending => "PENDING",
            JobState::Downloading => "DOWNLOADING",
            JobState::Processing => "PROCESSING",
            JobState::Storing => "STORING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Halted => "HALTED",
        }
    }
}

/// Why a job failed: S = the platform, C = the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Not enough resources to place the job.
    S100,
    /// Deploying the learners failed.
    S101,
    /// The store failed.
    S200,
    /// The queue failed.
    S201,
    /// Loading the training data failed.
    S300,
    /// Storing the results failed.
    S301,
    /// The manifest is not valid.
    C101,
    /// The model archive is not valid.
    C102,
    /// Credentials of a data store are not valid.
    C103,
    /// The resource request is not valid.
    C104,
    /// A learner crashed more than `max_restarts` times.
    C201,
}

impl ErrorCode {
    /// Every code, platform's first.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::S100,
        ErrorCode::S101,
        ErrorCode::S200,
        ErrorCode::S201,
        ErrorCode::S300,
        ErrorCode::S301,
        ErrorCode::C101,
        ErrorCode::C102,
        ErrorCode::C103,
        ErrorCode::C104,
        ErrorCode::C201,
    ];

    /// The code named `s` (`S100`, ...).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| format!("{c:?}") == s)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::S100 => "insufficient resources",
            ErrorCode::S101 => "deploying the learners failed",
            ErrorCode::S200 => "the store failed",
            ErrorCode::S201 => "the queue failed",
            ErrorCode::S300 => "loading the training data failed",
            ErrorCode::S301 => "storing the results failed",
            ErrorCode::C101 => "invalid manifest",
            ErrorCode::C102 => "invalid model archive",
            ErrorCode::C103 => "invalid data store credentials",
            ErrorCode::C104 => "invalid resource request",
            ErrorCode::C201 => "a learner crashed more than max_restarts times",
        }
    }

    /// The code for a manifest error in `field`.
    pub fn for_manifest_field(field: &str) -> ErrorCode {
        if ["cpus", "gpus", "memory", "gpu_type", "learners"].contains(&field) {
            ErrorCode::C104
        } else {
            ErrorCode::C101
        }
    }
}

// ---------------------------------------------------------------------------------
// The scheduling seam: what a training scheduler sees and decides. Schedulers are pure
// (no clock, no I/O), so the same object runs in the control plane and the simulator.

/// A machine learners can run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub cpus: f64,
    pub memory_bytes: u64,
    /// GPUs by model.
    #[serde(default)]
    pub gpus: BTreeMap<String, u32>,
}

/// A queue and its quota: resource key (`cpu`, `memory`, `gpu`, `gpu/<model>`) ->
/// most held at once by its running jobs; a key not listed is unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub name: String,
    #[serde(default)]
    pub quota: BTreeMap<String, f64>,
}

/// A job waiting to run.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingJob {
    pub id: u64,
    pub queue: String,
    pub priority: i32,
    pub submitted_s: f64,
    pub learners: u32,
    pub per_learner: LearnerResources,
    /// Known run time on each GPU model, when the platform knows it (traces, profiles);
    /// empty otherwise.
    pub duration_s: BTreeMap<String, f64>,
    /// GPU-seconds of service it has had (before a preemption).
    pub attained_gpu_s: f64,
}

/// A job holding resources.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJob {
    pub id: u64,
    pub queue: String,
    pub priority: i32,
    pub started_s: f64,
    pub per_learner: LearnerResources,
    pub placement: GangPlacement,
    /// Whether it may be halted to its checkpoint for a job of higher priority.
    pub preemptible: bool,
    /// GPU-seconds of service so far.
    pub attained_gpu_s: f64,
}

/// Per learner: the node index and the GPU model it holds (if any).
pub type GangPlacement = Vec<(usize, Option<String>)>;

/// What a scheduler sees.
#[derive(Debug, Clone)]
pub struct SchedView<'a> {
    pub now_s: f64,
    pub nodes: &'a [Node],
    pub queues: &'a [QueueSpec],
    pub pending: &'a [PendingJob],
    pub running: &'a [RunningJob],
    /// Whether to say why each waiting job waits (the control plane shows it; the
    /// simulator does not need it).
    pub explain: bool,
}

/// A scheduler's answer: jobs to start with each learner's node and GPU model, running
/// jobs to halt first (preemption), and why each other pending job waits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedDecision {
    pub start: Vec<(u64, GangPlacement)>,
    pub preempt: Vec<u64>,
    pub waiting: Vec<(u64, String)>,
}

pub trait TrainingScheduler: Send {
    fn name(&self) -> &str;
    fn decide(&mut self, view: &SchedView<'_>) -> SchedDecision;
    /// Whether decisions change with time alone (not only on arrivals and completions),
    /// so that the caller should also ask periodically.
    fn needs_ticks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod error_doc_tests {
    use super::ErrorCode;

    /// docs/errors.md lists every code, with the meaning the CLI prints, and no other.
    #[test]
    fn every_error_code_is_documented_as_the_cli_explains_it() {
        let doc = include_str!("../../../docs/errors.md");
        let rows: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let mut cells = l.split('|').map(str::trim).skip(1);
                let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code, cells.next()?))
            })
            .collect();
        assert_eq!(rows.len(), ErrorCode::ALL.len(), "{rows:?}");
        for c in ErrorCode::ALL {
            let name = format!("{c:?}");
            let row = rows.iter().find(|(code, _)| *code == name);
            assert_eq!(row.map(|r| r.1), Some(c.describe()), "{name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "mnist-2".into(),
            description: None,
            version: None,
            learners: 2,
            cpus: 1.0,
            gpus: 0,
            memory: Some("1Gb".into()),
            gpu_type: None,
            data_stores: vec![],
            framework: Framework {
                name: "custom".into(),
                version: None,
                command: "python train.py".into(),
            },
            evaluation_metrics: None,
            max_restarts: 3,
            priority: 0,
            queue: "default".into(),
            placement: None,
        }
    }

    #[test]
    fn memory_sizes_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_memory("1Gb").unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("16GiB").unwrap(), 16 << 30);
        assert_eq!(format_memory(16 << 30), "16 GiB");
        assert_eq!(ErrorCode::parse("C201"), Some(ErrorCode::C201));
        assert_eq!(ErrorCode::parse("X1"), None);
        assert_eq!(format_memory(512), "512 B");
        assert_eq!(format_memory(1536), "1.5 KiB");
        assert_eq!(format_memory(1_000_000_000), "953.7 MiB");
        assert_eq!(format_memory(5 << 40), "5 TiB");
        assert_eq!(parse_memory("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_memory(" 2 GB ").unwrap(), 2_000_000_000);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("-1Gb").is_err());
        assert!(parse_memory("1Zb").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn manifests_are_checked_field_by_field() {
        manifest().validate().unwrap();
        let bad = |f: fn(&mut Manifest), field: &str| {
            let mut m = manifest();
            f(&mut m);
            let e = m.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        };
        bad(|m| m.cpus = -1.0, "cpus");
        bad(|m| m.learners = 0, "learners");
        bad(|m| m.memory = Some("1Zb".into()), "memory");
        bad(|m| m.framework.command = " ".into(), "framework.command");
        bad(|m| m.name = "a b".into(), "name");
        bad(|m| m.gpu_type = Some("v100".into()), "gpu_type");
        bad(
            |m| {
                m.data_stores.push(DataStore {
                    id: "d".into(),
                    kind: "local".into(),
                    training_data: None,
                    training_results: None,
                    connection: BTreeMap::new(),
                })
            },
            "data_stores[0].connection.path",
        );
        bad(
            |m| {
                m.evaluation_metrics = Some(EvaluationMetrics {
                    kind: "regex".into(),
                    regex: "loss ([0-9.]+)".into(),
                })
            },
            "evaluation_metrics.regex",
        );
        assert_eq!(ErrorCode::for_manifest_field("cpus"), ErrorCode::C104);
        assert_eq!(
            ErrorCode::for_manifest_field("framework.command"),
            ErrorCode::C101
        );
    }

    #[test]
    fn the_lifecycle_keeps_final_states_and_allows_resume() {
        use JobState::*;
        assert!(Queued.can_go_to(Pending));
        assert!(!Queued.can_go_to(Processing));
        assert!(Pending.can_go_to(Processing) && Downloading.can_go_to(Processing));
        assert!(Processing.can_go_to(Processing));
        assert!(Queued.can_go_to(Storing) && !Storing.can_go_to(Storing));
        for s in JobState::ALL {
            assert!(!Completed.can_go_to(s) && !Failed.can_go_to(s));
            if !s.is_terminal() {
                assert!(s.can_go_to(Failed) && s.can_go_to(Halted));
            }
        }
        assert!(Halted.can_go_to(Queued) && !Halted.can_go_to(Processing));
        assert!(Processing.can_go_to(Queued), "preempted and re-queued");
        // The manifest's YAML names: SCREAMING case on the wire.
        assert_eq!(
            serde_json::to_string(&Processing).unwrap(),
            "\"PROCESSING\""
        );
    }
}
