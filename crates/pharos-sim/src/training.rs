//! Discrete-event simulation of a GPU cluster running training jobs under a
//! [`TrainingScheduler`] - the same scheduler objects the control plane runs.
//!
//! Nodes come in pools of one GPU model. A job of g GPUs is a gang of g learners of one
//! GPU each (and `cpus_per_gpu` CPUs), all on one GPU model; it runs for its duration on
//! that model. The scheduler is asked at every arrival and completion and every
//! `tick_s` (so that least-attained-service can preempt as service accumulates). A
//! preempted job loses the work since its last checkpoint (one every
//! `checkpoint_interval_s` of productive time) and pays `restart_cost_s` when it runs
//! again.

use std::collections::BTreeMap;

use pharos_core::{
    GangPlacement, LearnerResources, Node, PendingJob, QueueSpec, RunningJob, SchedView, SpecError,
    TrainingScheduler,
};
use serde::{Deserialize, Serialize};

use crate::queue::EventQueue;

/// One job of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceJob {
    pub id: u64,
    pub arrival_s: f64,
    pub gpus: u32,
    pub job_type: String,
    /// Run time on each GPU model.
    pub duration_s: BTreeMap<String, f64>,
    /// Whether the durations were measured or scaled from one GPU (optimistic).
    pub source: String,
}

/// Read the philly-gavel CSV (`job,arrival_s,gpus,job_type,total_steps,
/// duration_s_k80,duration_s_p100,duration_s_v100,duration_source`); GPU models are
/// the `duration_s_<model>` columns. Errors name the line and the column.
pub fn read_jobs_csv(text: &str) -> Result<Vec<TraceJob>, String> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or("the trace is empty")?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or(format!("line 1: no column {name:?}"))
    };
    let (c_job, c_arr, c_gpus, c_type) = (
        col("job")?,
        col("arrival_s")?,
        col("gpus")?,
        col("job_type")?,
    );
    let c_src = cols.iter().position(|c| *c == "duration_source");
    let models: Vec<(usize, String)> = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.strip_prefix("duration_s_").map(|m| (i, m.to_string())))
        .collect();
    if models.is_empty() {
        return Err("line 1: no duration_s_<gpu> column".into());
    }
    let mut jobs = Vec::new();
    for (n, line) in lines {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != cols.len() {
            return Err(format!(
                "line {line_no}: {} fields, the header has {}",
                f.len(),
                cols.len()
            ));
        }
        let num = |i: usize, what: &str| -> Result<f64, String> {
            let v: f64 = f[i]
                .trim()
                .parse()
                .map_err(|_| format!("line {line_no}: {what} {:?} is not a number", f[i]))?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("line {line_no}: {what} must be >= 0"))
            }
        };
        let gpus = num(c_gpus, "gpus")?;
        if !(1.0..=100_000.0).contains(&gpus) || gpus.fract() != 0.0 {
            return Err(format!(
                "line {line_no}: gpus must be a whole number in 1-100000"
            ));
        }
        let mut duration_s = BTreeMap::new();
        for (i, m) in &models {
            let d = num(*i, &format!("duration_s_{m}"))?;
            if d <= 0.0 {
                return Err(format!("line {line_no}: duration_s_{m} must be > 0"));
            }
            duration_s.insert(m.clone(), d);
        }
        jobs.push(TraceJob {
            id: num(c_job, "job")? as u64,
            arrival_s: num(c_arr, "arrival_s")?,
            gpus: gpus as u32,
            job_type: f[c_type].trim().to_string(),
            duration_s,
            source: c_src.map(|i| f[i].trim().to_string()).unwrap_or_default(),
        });
    }
    if jobs.windows(2).any(|w| w[1].arrival_s < w[0].arrival_s) {
        return Err("arrivals must not decrease".into());
    }
    Ok(jobs)
}

/// Nodes of one GPU model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuPool {
    pub gpu_type: String,
    pub nodes: u32,
    pub gpus_per_node: u32,
}

#[derive(Debug, Clone)]
pub struct TrainSimConfig {
    pub pools: Vec<GpuPool>,
    pub jobs: Vec<TraceJob>,
    pub cpus_per_gpu: f64,
    pub checkpoint_interval_s: f64,
    pub restart_cost_s: f64,
    pub tick_s: f64,
    /// Priority per job (by index; empty: all 0).
    pub priorities: Vec<i32>,
    /// A gang spread over more than one node runs this much slower (0.25: 25% longer),
    /// the cost of gradients crossing the network; what makes pack and spread differ.
    pub cross_node_slowdown: f64,
    /// Per job (by index): whether it may be halted (empty: all may).
    pub preemptible: Vec<bool>,
}

/// One job's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutcome {
    pub id: u64,
    pub gpus: u32,
    pub arrival_s: f64,
    pub first_start_s: f64,
    pub end_s: f64,
    pub preemptions: u32,
    /// The GPU model it finished on.
    pub gpu_type: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainRunResult {
    pub jobs: Vec<JobOutcome>,
    /// Jobs that never ran (could not fit the cluster).
    pub never_ran: Vec<u64>,
    pub makespan_s: f64,
    /// Busy GPU-seconds / (GPUs x makespan).
    pub gpu_utilisation: f64,
    /// Per hour: the share of GPUs busy.
    pub hourly_utilisation: Vec<f64>,
    pub decisions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Arrival(usize),
    Finish(usize, u64),
    Tick,
}

#[derive(Debug, Clone)]
struct Job {
    /// Work left as a share of the whole job, at the last checkpoint.
    saved_left: f64,
    attained_gpu_s: f64,
    first_start: Option<f64>,
    preemptions: u32,
    /// While running.
    run: Option<Running>,
    generation: u64,
    done: Option<(f64, String)>,
    /// When it was halted, oldest first.
    preempted_at: Vec<f64>,
    /// The GPU model of its last attempt.
    last_model: Option<String>,
}

/// A job's current attempt.
#[derive(Debug, Clone)]
struct Running {
    placement: GangPlacement,
    model: String,
    start: f64,
    /// When productive work begins (after the restart cost).
    productive_from: f64,
}

/// How much slower a gang runs on this placement (more than one node: the network).
fn slowdown(cfg: &TrainSimConfig, placement: &GangPlacement) -> f64 {
    let first = placement.first().map(|(n, _)| *n);
    if placement.iter().any(|(n, _)| Some(*n) != first) {
        1.0 + cfg.cross_node_slowdown
    } else {
        1.0
    }
}

/// Inserts a waiting job in id order.
fn insert_pending(pending: &mut Vec<PendingJob>, job: PendingJob) {
    let at = pending.partition_point(|p| p.id < job.id);
    pending.insert(at, job);
}

/// Run the trace through `sched`.
pub fn run(
    cfg: &TrainSimConfig,
    sched: &mut dyn TrainingScheduler,
) -> Result<TrainRunResult, SpecError> {
    let mut r = TrainRun::new(cfg)?;
    while let Some(t) = r.sim.events.next_time() {
        r.advance_instant(t, sched);
        if r.sim.remaining == 0 {
            break;
        }
        // Nothing runs, nothing is left to arrive and nothing started: the jobs still
        // waiting can never run.
        let s = &r.sim;
        if s.busy_gpus <= 0.0 && s.arrivals_left == 0 && !s.jobs.iter().any(|j| j.run.is_some()) {
            break;
        }
    }
    Ok(r.result())
}

/// A running job as whoever must take GPUs back sees it ([`TrainRun::running`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningInfo {
    /// The job's index in the configuration.
    pub index: usize,
    /// Its learners' nodes.
    pub nodes: Vec<usize>,
    pub priority: i32,
    pub preemptible: bool,
    /// When this attempt started.
    pub started_s: f64,
    /// Productive seconds since its last checkpoint: what halting it now loses.
    pub since_checkpoint_s: f64,
    /// GPU-seconds halting it now loses (`since_checkpoint_s` x its GPUs).
    pub lost_gpu_s: f64,
    /// Times it was halted, newest last.
    pub preempted_at: Vec<f64>,
}

/// A training run advanced step by step, on a cluster part of whose GPUs another
/// workload may hold ([`TrainRun::hold`]): what the shared-cluster simulation drives.
/// [`run`] is the same run to its end on the whole cluster.
pub struct TrainRun<'c> {
    sim: TrainSim<'c>,
}

impl<'c> TrainRun<'c> {
    pub fn new(cfg: &'c TrainSimConfig) -> Result<Self, SpecError> {
        validate(cfg)?;
        Ok(Self {
            sim: TrainSim::new(cfg),
        })
    }

    /// Every event up to `t_end` (each instant's events, then one decision), and the
    /// clock moved to `t_end`.
    pub fn advance(&mut self, t_end: f64, sched: &mut dyn TrainingScheduler) {
        while let Some(t) = self.sim.events.next_time() {
            if t > t_end {
                break;
            }
            self.advance_instant(t, sched);
        }
        if t_end.is_finite() && t_end > self.sim.now {
            self.sim.account_until(t_end);
        }
    }

    /// The events at `t` (the next instant), then one decision.
    fn advance_instant(&mut self, t: f64, sched: &mut dyn TrainingScheduler) {
        let sim = &mut self.sim;
        sim.account_until(t);
        while sim.events.next_time() == Some(t) {
            let ev = sim.events.pop().expect("peeked").1;
            sim.on_event(ev);
        }
        if sim.remaining > 0 {
            self.decide(sched);
        }
    }

    /// Ask the scheduler now (nothing happens when nobody waits).
    pub fn decide(&mut self, sched: &mut dyn TrainingScheduler) {
        let sim = &mut self.sim;
        sim.refresh_view();
        if sim.pending.is_empty() {
            return;
        }
        let d = sched.decide(&SchedView {
            explain: false,
            now_s: sim.now,
            nodes: &sim.nodes,
            queues: &sim.queues,
            pending: &sim.pending,
            running: &sim.running,
        });
        sim.decisions += 1;
        for id in &d.preempt {
            let i = *id as usize;
            if sim.preemptible(i) {
                sim.preempt(i);
            }
        }
        sim.running
            .retain(|r| sim.jobs[r.id as usize].run.is_some());
        for (id, placement) in d.start {
            // GPUs set aside for the other workload stay free.
            let free_after = sim.free_gpus().saturating_sub(placement.len() as u32);
            if sim.fits(&placement) && free_after >= sim.set_aside {
                sim.start(id as usize, placement);
            }
        }
        // Keep re-deciding while jobs wait (service accumulates, preemption may change).
        let waiting = (0..sim.jobs.len())
            .any(|i| sim.arrived[i] && sim.jobs[i].run.is_none() && sim.jobs[i].done.is_none());
        if waiting && !sim.ticking && sched.needs_ticks() {
            sim.ticking = true;
            sim.events.push(sim.now + sim.cfg.tick_s, Ev::Tick);
        }
    }

    /// The simulated time now.
    pub fn now_s(&self) -> f64 {
        self.sim.now
    }

    /// GPUs training jobs hold now.
    pub fn busy_gpus(&self) -> u32 {
        self.sim.busy_gpus.round() as u32
    }

    /// Per node: its GPUs, what training holds there and what the other workload holds.
    pub fn node_gpus(&self) -> Vec<(u32, u32, u32)> {
        let s = &self.sim;
        let used = s.used_per_node();
        (0..s.base_gpus.len())
            .map(|k| (s.base_gpus[k], used[k], s.held[k]))
            .collect()
    }

    /// Let the other workload hold `held[k]` GPUs of node `k` from now on. Each must fit
    /// beside what training holds there (halt jobs first, [`TrainRun::preempt`]).
    pub fn hold(&mut self, held: &[u32]) -> Result<(), String> {
        let nodes = self.node_gpus();
        if held.len() != nodes.len() {
            return Err(format!("{} nodes, {} holdings", nodes.len(), held.len()));
        }
        for (k, ((gpus, used, _), h)) in nodes.iter().zip(held).enumerate() {
            if *h > gpus - used {
                return Err(format!(
                    "node {k}: {h} GPUs held beside {used} of training's, of {gpus}"
                ));
            }
        }
        let s = &mut self.sim;
        for (k, h) in held.iter().enumerate() {
            s.held[k] = *h;
            for g in s.nodes[k].gpus.values_mut() {
                *g = s.base_gpus[k] - h;
            }
        }
        Ok(())
    }

    /// Keep `gpus` of the free GPUs free (for the other workload, which could not be
    /// given them yet): no start leaves fewer.
    pub fn set_aside(&mut self, gpus: u32) {
        self.sim.set_aside = gpus;
    }

    /// The running jobs, in index order.
    pub fn running(&self) -> Vec<RunningInfo> {
        let s = &self.sim;
        let mut out = Vec::new();
        for (i, j) in s.jobs.iter().enumerate() {
            let Some(r) = &j.run else { continue };
            let since = s.since_checkpoint(r);
            out.push(RunningInfo {
                index: i,
                nodes: r.placement.iter().map(|(n, _)| *n).collect(),
                priority: s.cfg.priorities.get(i).copied().unwrap_or(0),
                preemptible: s.preemptible(i),
                started_s: r.start,
                since_checkpoint_s: since,
                lost_gpu_s: since * r.placement.len() as f64,
                preempted_at: j.preempted_at.clone(),
            });
        }
        out
    }

    /// Halt job `i` now (back to its last checkpoint, waiting again); false when it is
    /// not running or may not be halted.
    pub fn preempt(&mut self, i: usize) -> bool {
        let s = &mut self.sim;
        if i >= s.jobs.len() || s.jobs[i].run.is_none() || !s.preemptible(i) {
            return false;
        }
        s.preempt(i);
        s.running.retain(|r| s.jobs[r.id as usize].run.is_some());
        true
    }

    /// Move gangs that span nodes onto one node, each right after a checkpoint (within
    /// `within_s` of one, losing at most that much work) and only where the time it
    /// saves by running without the cross-node slowdown exceeds the restart and the
    /// work lost. The target node is the one that fits the gang most tightly (what the
    /// job holds there counts as free). A move is not a halt: the job keeps its place
    /// and its count of preemptions; a job that may not be halted is not moved either. Returns (job, node, productive seconds lost) per move.
    pub fn consolidate(&mut self, within_s: f64) -> Vec<(usize, usize, f64)> {
        let s = &mut self.sim;
        if s.cfg.cross_node_slowdown <= 0.0 {
            return Vec::new();
        }
        let mut moves = Vec::new();
        for i in 0..s.jobs.len() {
            let Some(r) = &s.jobs[i].run else { continue };
            if !s.preemptible(i) {
                continue;
            }
            let first = r.placement[0].0;
            if r.placement.iter().all(|(n, _)| *n == first) || r.productive_from > s.now {
                continue;
            }
            let since = s.since_checkpoint(r);
            if since > within_s {
                continue;
            }
            let n = r.placement.len() as u32;
            let base = s.cfg.jobs[i].duration_s[&r.model];
            let left_now = s.jobs[i].saved_left
                - (s.now - r.productive_from).max(0.0) / (base * slowdown(s.cfg, &r.placement));
            let saved_s = left_now * base * s.cfg.cross_node_slowdown;
            if saved_s <= s.cfg.restart_cost_s + since {
                continue;
            }
            let used = s.used_per_node();
            let model = r.model.clone();
            let target = (0..s.base_gpus.len())
                .filter(|k| s.nodes[*k].gpus.contains_key(&model))
                .map(|k| {
                    let own = r.placement.iter().filter(|(m, _)| *m == k).count() as u32;
                    (s.base_gpus[k] - s.held[k] - used[k] + own, k)
                })
                .filter(|(free, _)| *free >= n)
                .min();
            let Some((_, k)) = target else { continue };
            s.migrate(i, vec![(k, Some(model)); n as usize]);
            moves.push((i, k, since));
        }
        moves
    }

    /// Job `i`'s share of its work done so far, counting the running attempt's progress.
    pub fn progress(&self, i: usize) -> f64 {
        let s = &self.sim;
        let j = &s.jobs[i];
        let mut left = j.saved_left;
        if let Some(r) = &j.run {
            let dur = s.cfg.jobs[i].duration_s[&r.model] * slowdown(s.cfg, &r.placement);
            left -= (s.now - r.productive_from).max(0.0) / dur;
        }
        (1.0 - left).clamp(0.0, 1.0)
    }

    /// The GPU model job `i` runs or last ran on (the first pool's before it ran).
    pub fn model_of(&self, i: usize) -> &str {
        let j = &self.sim.jobs[i];
        j.run
            .as_ref()
            .map(|r| r.model.as_str())
            .or(j.done.as_ref().map(|(_, m)| m.as_str()))
            .or(j.last_model.as_deref())
            .unwrap_or(&self.sim.cfg.pools[0].gpu_type)
    }

    /// Whether job `i` has arrived, and when it finished.
    pub fn state_of(&self, i: usize) -> (bool, Option<f64>) {
        (
            self.sim.arrived[i],
            self.sim.jobs[i].done.as_ref().map(|d| d.0),
        )
    }

    /// GPU-seconds lost so far: work halted jobs had not checkpointed, and restarts
    /// (of a restart still under way, the part served).
    pub fn lost_gpu_s(&self) -> (f64, f64) {
        let s = &self.sim;
        let unserved: f64 = s
            .jobs
            .iter()
            .filter_map(|j| j.run.as_ref())
            .map(|r| (r.productive_from - s.now).max(0.0) * r.placement.len() as f64)
            .sum();
        (s.lost_gpu_s, s.restart_gpu_s - unserved)
    }

    /// Busy GPU-seconds so far.
    pub fn busy_gpu_s(&self) -> f64 {
        self.sim.busy_gpu_s
    }

    pub fn result(self) -> TrainRunResult {
        self.sim.result()
    }
}

/// The configuration's problems, named.
fn validate(cfg: &TrainSimConfig) -> Result<(), SpecError> {
    if cfg.pools.is_empty()
        || cfg
            .pools
            .iter()
            .any(|p| p.nodes == 0 || p.gpus_per_node == 0)
    {
        return Err(SpecError::new(
            "pools",
            "needs at least one pool of nodes with GPUs",
        ));
    }
    SpecError::check_positive("checkpoint_interval_s", cfg.checkpoint_interval_s)?;
    SpecError::check_non_negative("restart_cost_s", cfg.restart_cost_s)?;
    SpecError::check_positive("tick_s", cfg.tick_s)?;
    SpecError::check_positive("cpus_per_gpu", cfg.cpus_per_gpu)?;
    SpecError::check_non_negative("cross_node_slowdown", cfg.cross_node_slowdown)?;
    for p in &cfg.pools {
        if cfg
            .jobs
            .first()
            .is_some_and(|j| !j.duration_s.contains_key(&p.gpu_type))
        {
            return Err(SpecError::new(
                "pools",
                format!("the trace has no durations for GPU model {:?}", p.gpu_type),
            ));
        }
    }
    Ok(())
}

/// One run's state: the cluster, every job, the event queue, the scheduler's view
/// (waiting and running jobs kept in id order as jobs arrive, start, finish and are
/// preempted: rebuilding them at every decision dominated long runs) and the
/// accounting.
struct TrainSim<'c> {
    cfg: &'c TrainSimConfig,
    nodes: Vec<Node>,
    queues: Vec<QueueSpec>,
    total_gpus: f64,
    jobs: Vec<Job>,
    events: EventQueue<Ev>,
    arrived: Vec<bool>,
    arrivals_left: usize,
    remaining: usize,
    batch_arrivals: Vec<usize>,
    pending: Vec<PendingJob>,
    running: Vec<RunningJob>,
    ticking: bool,
    now: f64,
    busy_gpus: f64,
    busy_gpu_s: f64,
    hourly: Vec<f64>,
    decisions: u64,
    /// Per node: its GPUs, and those another workload holds.
    base_gpus: Vec<u32>,
    held: Vec<u32>,
    /// GPU-seconds of work halted jobs had not checkpointed, and of restarts.
    lost_gpu_s: f64,
    restart_gpu_s: f64,
    /// Free GPUs starts must leave free.
    set_aside: u32,
}

impl<'c> TrainSim<'c> {
    fn new(cfg: &'c TrainSimConfig) -> Self {
        let nodes: Vec<Node> = cfg
            .pools
            .iter()
            .flat_map(|p| {
                (0..p.nodes).map(move |i| Node {
                    name: format!("{}-{i}", p.gpu_type),
                    cpus: p.gpus_per_node as f64 * cfg.cpus_per_gpu,
                    memory_bytes: u64::from(p.gpus_per_node) << 36,
                    gpus: BTreeMap::from([(p.gpu_type.clone(), p.gpus_per_node)]),
                })
            })
            .collect();
        let total_gpus: f64 = cfg
            .pools
            .iter()
            .map(|p| (p.nodes * p.gpus_per_node) as f64)
            .sum();
        let n = cfg.jobs.len();
        let jobs: Vec<Job> = (0..n)
            .map(|_| Job {
                saved_left: 1.0,
                attained_gpu_s: 0.0,
                first_start: None,
                preemptions: 0,
                run: None,
                generation: 0,
                done: None,
                preempted_at: Vec::new(),
                last_model: None,
            })
            .collect();
        let base_gpus: Vec<u32> = nodes.iter().map(|n| n.gpus.values().sum()).collect();
        let held = vec![0; base_gpus.len()];
        let mut events = EventQueue::new();
        for (i, j) in cfg.jobs.iter().enumerate() {
            events.push(j.arrival_s, Ev::Arrival(i));
        }
        Self {
            cfg,
            nodes,
            queues: vec![QueueSpec {
                name: "default".into(),
                quota: BTreeMap::new(),
            }],
            total_gpus,
            jobs,
            events,
            arrived: vec![false; n],
            arrivals_left: n,
            remaining: n,
            batch_arrivals: Vec::new(),
            pending: Vec::new(),
            running: Vec::new(),
            ticking: false,
            now: 0.0,
            busy_gpus: 0.0,
            busy_gpu_s: 0.0,
            hourly: Vec::new(),
            decisions: 0,
            base_gpus,
            held,
            lost_gpu_s: 0.0,
            restart_gpu_s: 0.0,
            set_aside: 0,
        }
    }

    /// GPUs neither training nor the other workload holds.
    fn free_gpus(&self) -> u32 {
        let total: u32 = self.base_gpus.iter().sum();
        let held: u32 = self.held.iter().sum();
        total.saturating_sub(held + self.busy_gpus.round() as u32)
    }

    fn preemptible(&self, i: usize) -> bool {
        self.cfg.preemptible.get(i).copied().unwrap_or(true)
    }

    /// Whether `placement` fits the GPUs free now (what training does not hold and the
    /// other workload does not either).
    fn fits(&self, placement: &GangPlacement) -> bool {
        let mut used = self.used_per_node();
        for (n, _) in placement {
            let Some(u) = used.get_mut(*n) else {
                return false;
            };
            *u += 1;
            if *u + self.held[*n] > self.base_gpus[*n] {
                return false;
            }
        }
        true
    }

    /// Per node: the GPUs training's running jobs hold.
    fn used_per_node(&self) -> Vec<u32> {
        let mut used = vec![0u32; self.base_gpus.len()];
        for r in &self.running {
            if self.jobs[r.id as usize].run.is_some() {
                for (n, _) in &r.placement {
                    used[*n] += 1;
                }
            }
        }
        used
    }

    /// Productive seconds of attempt `r` since its last checkpoint.
    fn since_checkpoint(&self, r: &Running) -> f64 {
        let productive = (self.now - r.productive_from).max(0.0);
        productive
            - (productive / self.cfg.checkpoint_interval_s).floor() * self.cfg.checkpoint_interval_s
    }

    fn per_learner(&self) -> LearnerResources {
        LearnerResources {
            cpus: self.cfg.cpus_per_gpu,
            memory_bytes: 1 << 30,
            gpus: 1,
            gpu_type: None,
        }
    }

    /// Job `i` as the scheduler sees it waiting (its durations scaled to the work left).
    fn pending_of(&self, i: usize) -> PendingJob {
        let tj = &self.cfg.jobs[i];
        let j = &self.jobs[i];
        PendingJob {
            id: i as u64,
            queue: self.queues[0].name.clone(),
            priority: self.cfg.priorities.get(i).copied().unwrap_or(0),
            submitted_s: tj.arrival_s,
            learners: tj.gpus,
            per_learner: self.per_learner(),
            duration_s: tj
                .duration_s
                .iter()
                .map(|(m, d)| (m.clone(), d * j.saved_left))
                .collect(),
            attained_gpu_s: j.attained_gpu_s,
        }
    }

    /// Accounts busy GPU time up to `t`, hour by hour, and moves the clock there.
    fn account_until(&mut self, t: f64) {
        let mut from = self.now;
        while from < t {
            let hour = (from / 3600.0) as usize;
            let until = ((hour + 1) as f64 * 3600.0).min(t);
            if self.hourly.len() <= hour {
                self.hourly.resize(hour + 1, 0.0);
            }
            self.hourly[hour] += self.busy_gpus * (until - from) / (3600.0 * self.total_gpus);
            self.busy_gpu_s += self.busy_gpus * (until - from);
            from = until;
        }
        self.now = t;
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Arrival(i) => {
                self.arrived[i] = true;
                self.arrivals_left -= 1;
                self.batch_arrivals.push(i);
            }
            Ev::Finish(i, generation) => {
                let now = self.now;
                let j = &mut self.jobs[i];
                if j.generation != generation || j.run.is_none() {
                    return;
                }
                let Running {
                    placement,
                    model,
                    start,
                    ..
                } = j.run.take().expect("running");
                j.attained_gpu_s += (now - start) * placement.len() as f64;
                self.busy_gpus -= placement.len() as f64;
                j.saved_left = 0.0;
                j.done = Some((now, model));
                self.remaining -= 1;
            }
            Ev::Tick => self.ticking = false,
        }
    }

    /// The scheduler's view brought up to now: new arrivals waiting, ended jobs gone,
    /// the running jobs' attained service.
    fn refresh_view(&mut self) {
        for i in std::mem::take(&mut self.batch_arrivals) {
            let p = self.pending_of(i);
            insert_pending(&mut self.pending, p);
        }
        let jobs = &self.jobs;
        self.running.retain(|r| jobs[r.id as usize].run.is_some());
        for r in &mut self.running {
            let i = r.id as usize;
            if let Some(run) = &jobs[i].run {
                r.attained_gpu_s =
                    jobs[i].attained_gpu_s + (self.now - run.start) * run.placement.len() as f64;
            }
        }
    }

    /// Job `i`'s attempt ended back at its last checkpoint: the work since it is lost,
    /// the part of its restart not yet served was not spent, its GPUs are free. Returns
    /// the attempt's model (None when it was not running).
    fn stop_at_checkpoint(&mut self, i: usize) -> Option<String> {
        let (cfg, now) = (self.cfg, self.now);
        let j = &mut self.jobs[i];
        let Running {
            placement,
            model,
            start,
            productive_from,
        } = j.run.take()?;
        let dur = cfg.jobs[i].duration_s[&model] * slowdown(cfg, &placement);
        let productive = (now - productive_from).max(0.0);
        let kept = (productive / cfg.checkpoint_interval_s).floor() * cfg.checkpoint_interval_s;
        j.saved_left = (j.saved_left - kept / dur).max(0.0);
        j.attained_gpu_s += (now - start) * placement.len() as f64;
        j.generation += 1;
        self.lost_gpu_s += (productive - kept) * placement.len() as f64;
        self.restart_gpu_s -= (productive_from - now).max(0.0) * placement.len() as f64;
        self.busy_gpus -= placement.len() as f64;
        Some(model)
    }

    /// Job `i` halted: back to its last checkpoint, waiting again.
    fn preempt(&mut self, i: usize) {
        let now = self.now;
        let Some(model) = self.stop_at_checkpoint(i) else {
            return;
        };
        let j = &mut self.jobs[i];
        j.preemptions += 1;
        j.preempted_at.push(now);
        j.last_model = Some(model);
        let p = self.pending_of(i);
        insert_pending(&mut self.pending, p);
    }

    /// Job `i` moved to `placement`: back to its last checkpoint and started again there
    /// at once (paying the restart), without counting as a halt.
    fn migrate(&mut self, i: usize, placement: GangPlacement) {
        if self.stop_at_checkpoint(i).is_none() {
            return;
        }
        self.running.retain(|r| r.id != i as u64);
        self.start(i, placement);
    }

    /// Job `i` started on `placement` (a restart pays the restart cost first).
    fn start(&mut self, i: usize, placement: GangPlacement) {
        let (cfg, now) = (self.cfg, self.now);
        let per_learner = self.per_learner();
        let queue = self.queues[0].name.clone();
        let j = &mut self.jobs[i];
        if j.run.is_some() || j.done.is_some() {
            return;
        }
        let model = placement
            .first()
            .and_then(|(_, m)| m.clone())
            .unwrap_or_else(|| cfg.pools[0].gpu_type.clone());
        let dur = cfg.jobs[i].duration_s[&model] * slowdown(cfg, &placement);
        let restart = if j.first_start.is_some() {
            cfg.restart_cost_s
        } else {
            0.0
        };
        j.first_start.get_or_insert(now);
        j.generation += 1;
        let productive_from = now + restart;
        self.busy_gpus += placement.len() as f64;
        self.restart_gpu_s += restart * placement.len() as f64;
        let end = productive_from + j.saved_left * dur;
        let held = RunningJob {
            id: i as u64,
            queue,
            priority: cfg.priorities.get(i).copied().unwrap_or(0),
            started_s: now,
            per_learner,
            placement: placement.clone(),
            preemptible: cfg.preemptible.get(i).copied().unwrap_or(true),
            attained_gpu_s: j.attained_gpu_s,
        };
        j.run = Some(Running {
            placement,
            model,
            start: now,
            productive_from,
        });
        self.events.push(end, Ev::Finish(i, j.generation));
        if let Ok(k) = self.pending.binary_search_by_key(&(i as u64), |p| p.id) {
            self.pending.remove(k);
        }
        let at = self.running.partition_point(|r| r.id < i as u64);
        self.running.insert(at, held);
    }

    fn result(self) -> TrainRunResult {
        let cfg = self.cfg;
        let mut outcomes = Vec::new();
        let mut never_ran = Vec::new();
        for (i, j) in self.jobs.iter().enumerate() {
            match (&j.done, j.first_start) {
                (Some((end, model)), Some(first)) => outcomes.push(JobOutcome {
                    id: cfg.jobs[i].id,
                    gpus: cfg.jobs[i].gpus,
                    arrival_s: cfg.jobs[i].arrival_s,
                    first_start_s: first,
                    end_s: *end,
                    preemptions: j.preemptions,
                    gpu_type: model.clone(),
                }),
                _ => never_ran.push(cfg.jobs[i].id),
            }
        }
        let makespan = outcomes.iter().map(|o| o.end_s).fold(0.0, f64::max);
        TrainRunResult {
            jobs: outcomes,
            never_ran,
            makespan_s: makespan,
            gpu_utilisation: if makespan > 0.0 {
                self.busy_gpu_s / (self.total_gpus * makespan)
            } else {
                0.0
            },
            hourly_utilisation: self.hourly,
            decisions: self.decisions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler that starts the first pending job on node 0 GPUs if free (for
    /// checking the simulator's accounting).
    struct Greedy;
    impl TrainingScheduler for Greedy {
        fn name(&self) -> &str {
            "greedy"
        }
        fn decide(&mut self, v: &SchedView<'_>) -> pharos_core::SchedDecision {
            let used: u32 = v.running.iter().map(|r| r.placement.len() as u32).sum();
            let mut d = pharos_core::SchedDecision::default();
            let mut free = 4 - used;
            for p in v.pending {
                if p.learners <= free {
                    free -= p.learners;
                    d.start
                        .push((p.id, vec![(0, Some("v100".into())); p.learners as usize]));
                }
            }
            d
        }
    }

    fn job(id: u64, arrival: f64, gpus: u32, dur: f64) -> TraceJob {
        TraceJob {
            id,
            arrival_s: arrival,
            gpus,
            job_type: "t".into(),
            duration_s: BTreeMap::from([("v100".into(), dur)]),
            source: "measured".into(),
        }
    }

    /// One pool of v100 nodes, checkpoints every 10 s, no restart cost or slowdown.
    fn config(nodes: u32, gpus_per_node: u32, jobs: Vec<TraceJob>) -> TrainSimConfig {
        TrainSimConfig {
            pools: vec![GpuPool {
                gpu_type: "v100".into(),
                nodes,
                gpus_per_node,
            }],
            jobs,
            cpus_per_gpu: 1.0,
            checkpoint_interval_s: 10.0,
            restart_cost_s: 0.0,
            tick_s: 1000.0,
            priorities: vec![],
            cross_node_slowdown: 0.0,
            preemptible: vec![],
        }
    }

    #[test]
    fn jobs_run_for_their_duration_and_utilisation_adds_up() {
        let cfg = TrainSimConfig {
            restart_cost_s: 5.0,
            ..config(1, 4, vec![job(0, 0.0, 4, 100.0), job(1, 10.0, 2, 50.0)])
        };
        let r = run(&cfg, &mut Greedy).unwrap();
        assert_eq!(r.jobs[0].end_s, 100.0);
        // Job 1 waits for job 0 (all 4 GPUs), then runs 50 s.
        assert_eq!(r.jobs[1].first_start_s, 100.0);
        assert_eq!(r.jobs[1].end_s, 150.0);
        // Busy: 4 x 100 + 2 x 50 = 500 GPU-s of 4 x 150.
        assert!((r.gpu_utilisation - 500.0 / 600.0).abs() < 1e-9);
    }

    /// Puts learner k of every job on node k % 2.
    struct Split;
    impl TrainingScheduler for Split {
        fn name(&self) -> &str {
            "split"
        }
        fn decide(&mut self, v: &SchedView<'_>) -> pharos_core::SchedDecision {
            let mut d = pharos_core::SchedDecision::default();
            if v.running.is_empty() {
                for p in v.pending.iter().take(1) {
                    let place = (0..p.learners as usize)
                        .map(|k| (k % 2, Some("v100".into())))
                        .collect();
                    d.start.push((p.id, place));
                }
            }
            d
        }
    }

    #[test]
    fn a_gang_across_nodes_runs_slower() {
        let cfg = |slowdown: f64| TrainSimConfig {
            cross_node_slowdown: slowdown,
            ..config(2, 4, vec![job(0, 0.0, 1, 100.0), job(1, 0.0, 2, 100.0)])
        };
        let r = run(&cfg(0.5), &mut Split).unwrap();
        assert_eq!(r.jobs[0].end_s, 100.0, "one learner: one node");
        assert_eq!(
            r.jobs[1].end_s - r.jobs[1].first_start_s,
            150.0,
            "two nodes: 50% slower"
        );
        let r = run(&cfg(0.0), &mut Split).unwrap();
        assert_eq!(r.jobs[1].end_s - r.jobs[1].first_start_s, 100.0);
    }

    /// A gang spanning nodes moves onto one at its checkpoint (paying the restart, not a
    /// halt) and ends sooner; between checkpoints, or when the rest of its run is too
    /// short to pay for the move, it stays.
    #[test]
    fn a_spanning_gang_moves_onto_one_node_at_its_checkpoint() {
        let cfg = TrainSimConfig {
            cross_node_slowdown: 0.5,
            restart_cost_s: 5.0,
            ..config(2, 4, vec![job(0, 0.0, 2, 1000.0)])
        };
        let mut tr = TrainRun::new(&cfg).unwrap();
        tr.advance(95.0, &mut Split);
        assert_eq!(tr.running()[0].nodes, vec![0, 1]);
        assert!(tr.consolidate(1.0).is_empty(), "5 s after its checkpoint");
        tr.advance(100.0, &mut Split);
        assert_eq!(tr.consolidate(1.0), vec![(0, 0, 0.0)]);
        let r = &tr.running()[0];
        assert_eq!(r.nodes, vec![0, 0]);
        assert!(r.preempted_at.is_empty(), "a move is not a halt");
        tr.advance(f64::INFINITY, &mut Split);
        // 100 s of 1500 done across nodes; the rest, 14/15 of 1000 s, after 5 s.
        let end = tr.state_of(0).1.unwrap();
        assert!((end - (105.0 + 1000.0 * 14.0 / 15.0)).abs() < 1e-6, "{end}");
        assert_eq!(tr.lost_gpu_s(), (0.0, 10.0));

        // 80 s of work, 120 s across nodes: at 90 s a move saves 10 s for 5, at 110 s
        // it would save 3.3 s.
        let cfg = TrainSimConfig {
            cross_node_slowdown: 0.5,
            restart_cost_s: 5.0,
            ..config(2, 4, vec![job(0, 0.0, 2, 80.0)])
        };
        let mut tr = TrainRun::new(&cfg).unwrap();
        tr.advance(110.0, &mut Split);
        assert!(tr.consolidate(1.0).is_empty());
        let mut tr = TrainRun::new(&cfg).unwrap();
        tr.advance(90.0, &mut Split);
        assert_eq!(tr.consolidate(1.0).len(), 1);
    }

    /// A job larger than the cluster never runs, and the run still ends (no endless
    /// ticking), with the others done.
    #[test]
    fn a_job_that_never_fits_ends_the_run_as_never_ran() {
        let cfg = TrainSimConfig {
            tick_s: 10.0,
            ..config(1, 4, vec![job(0, 0.0, 8, 100.0), job(1, 5.0, 2, 50.0)])
        };
        struct Ticking(Greedy);
        impl TrainingScheduler for Ticking {
            fn name(&self) -> &str {
                "ticking"
            }
            fn decide(&mut self, v: &SchedView<'_>) -> pharos_core::SchedDecision {
                self.0.decide(v)
            }
            fn needs_ticks(&self) -> bool {
                true
            }
        }
        let r = run(&cfg, &mut Ticking(Greedy)).unwrap();
        assert_eq!(r.never_ran, vec![0]);
        assert_eq!(r.jobs.len(), 1);
        assert_eq!(r.jobs[0].end_s, 55.0);
    }

    #[test]
    fn the_trace_reader_names_bad_lines() {
        let ok = "job,arrival_s,gpus,job_type,total_steps,duration_s_k80,duration_s_v100,duration_source\n0,0.0,2,x,5,10,4,measured\n";
        let jobs = read_jobs_csv(ok).unwrap();
        assert_eq!(jobs[0].gpus, 2);
        assert_eq!(jobs[0].duration_s["v100"], 4.0);
        let e = read_jobs_csv(&ok.replace("0,0.0,2", "0,0.0,-1")).unwrap_err();
        assert!(e.contains("line 2") && e.contains("gpus"), "{e}");
        let e = read_jobs_csv(&ok.replace(",4,measured", ",abc,measured")).unwrap_err();
        assert!(e.contains("duration_s_v100"), "{e}");
        assert!(
            read_jobs_csv("job,arrival_s\n")
                .unwrap_err()
                .contains("gpus")
        );
    }
}
