//! The live server schedules with the same policy object as the simulator: one small
//! job set goes through `pharos_sim::training` and through the server's controller
//! (store, reconcile passes, the configured `GangScheduler`) with a dry-run backend that
//! starts no processes, and at every arrival and completion both start and preempt the
//! same jobs.
//!
//! The server builds `PendingJob::submitted_s` from the wall-clock submission time and
//! passes an attained service of 0, where the simulator uses the trace's arrival times
//! and real service. Jobs are submitted in arrival order, so both see the same arrival
//! order (ties broken by id, which follows it too); the orders checked here (FIFO with
//! and without backfill, priority with preemption) use nothing else of either. The
//! server's `started_s` is the wall-clock time of a job's first start, the simulator's
//! the simulated time of its latest; preemption picks the youngest victim first, so the
//! job set is chosen so that no victim choice depends on the difference (every
//! preemption has victims whose start order follows their ids, none restarted).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use pharos_core::{JobState, SchedDecision, SchedView, TrainingScheduler};
use pharos_engine::training::{Backend, BackendError, JobRun, LearnerStatus};
use pharos_policy::training::{GangParams, GangScheduler, Order, Placement};
use pharos_server::AppState;
use pharos_server::config::{Capacity, ServerConfig};
use pharos_server::controller::cache::JobCache;
use pharos_server::controller::{parse_manifest, reconcile};
use pharos_server::store::{Desired, NewJob};
use pharos_sim::training::{GpuPool, TraceJob, TrainRunResult, TrainSimConfig};

/// GPUs of the single node (one model) in both the simulator and the server.
const NODE_GPUS: u32 = 8;
const GPU_MODEL: &str = "v100";
/// CPUs per GPU: the simulator's learner size and node size; the server's manifests and
/// capacity are built from it so both see the same node and the same learners.
const CPUS_PER_GPU: f64 = 4.0;

/// One job of the set.
struct Spec {
    arrival_s: f64,
    gpus: u32,
    duration_s: f64,
    priority: i32,
}

const fn job(arrival_s: f64, gpus: u32, duration_s: f64, priority: i32) -> Spec {
    Spec {
        arrival_s,
        gpus,
        duration_s,
        priority,
    }
}

/// The job set, in arrival order (job k is `j<k>`). On 8 GPUs it builds queues: j2
/// (4 GPUs) cannot fit behind j0 and j1, so j3 and j6 either wait behind it with GPUs
/// free (no backfill) or start around it (backfill); j4 needs the whole node; j5
/// (priority 5) and j7 (priority 3) arrive when the node is full and, under the
/// priority order, halt lower-priority jobs.
const JOBS: &[Spec] = &[
    job(0.0, 4, 100.0, 0),  // j0
    job(10.0, 2, 50.0, 0),  // j1
    job(20.0, 4, 60.0, 0),  // j2
    job(30.0, 2, 40.0, 0),  // j3
    job(40.0, 8, 50.0, 0),  // j4
    job(50.0, 4, 100.0, 5), // j5
    job(55.0, 1, 30.0, 0),  // j6
    job(80.0, 2, 40.0, 3),  // j7
    job(90.0, 1, 20.0, 0),  // j8
    job(160.0, 3, 30.0, 1), // j9
];

/// What happened at one event time: the jobs (indices into [`JOBS`]) that started and
/// those that were preempted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    t: String,
    started: BTreeSet<usize>,
    preempted: BTreeSet<usize>,
}

// ----- the simulator ----------------------------------------------------------------

/// The scheduler under test, with a log of every decision the simulator asked for.
struct Recorder {
    inner: GangScheduler,
    log: Vec<(f64, SchedDecision)>,
}

impl TrainingScheduler for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn decide(&mut self, view: &SchedView<'_>) -> SchedDecision {
        let d = self.inner.decide(view);
        self.log.push((view.now_s, d.clone()));
        d
    }
    fn needs_ticks(&self) -> bool {
        self.inner.needs_ticks()
    }
}

fn simulate(params: &GangParams) -> (TrainRunResult, Vec<(f64, SchedDecision)>) {
    let cfg = TrainSimConfig {
        pools: vec![GpuPool {
            gpu_type: GPU_MODEL.into(),
            nodes: 1,
            gpus_per_node: NODE_GPUS,
        }],
        jobs: JOBS
            .iter()
            .enumerate()
            .map(|(i, j)| TraceJob {
                id: i as u64,
                arrival_s: j.arrival_s,
                gpus: j.gpus,
                job_type: "dry-run".into(),
                duration_s: BTreeMap::from([(GPU_MODEL.to_string(), j.duration_s)]),
                source: "measured".into(),
            })
            .collect(),
        cpus_per_gpu: CPUS_PER_GPU,
        // No checkpoint is ever reached: a preempted job starts over, so every end time
        // is an exact sum of the given numbers.
        checkpoint_interval_s: 1e9,
        restart_cost_s: 0.0,
        tick_s: 1e9,
        priorities: JOBS.iter().map(|j| j.priority).collect(),
        cross_node_slowdown: 0.0,
        preemptible: vec![],
    };
    let mut rec = Recorder {
        inner: GangScheduler::new(params.clone()),
        log: Vec::new(),
    };
    let result = pharos_sim::training::run(&cfg, &mut rec).expect("the simulation runs");
    assert!(
        result.never_ran.is_empty(),
        "every job fits the node: {:?}",
        result.never_ran
    );
    (result, rec.log)
}

// ----- the dry-run backend ----------------------------------------------------------

#[derive(Default)]
struct DryState {
    /// Attempts whose learners were started: (job, attempt) -> killed.
    started: HashMap<(i64, u32), bool>,
    /// Jobs whose learners have finished their work (exit code 0).
    finished: HashSet<i64>,
    /// Stop signals received, by job.
    signals: HashMap<i64, u32>,
}

/// Runs nothing: remembers which learners were started, killed or declared finished.
#[derive(Default)]
struct DryRun {
    state: Mutex<DryState>,
}

impl DryRun {
    fn finish(&self, id: i64) {
        self.state.lock().unwrap().finished.insert(id);
    }
}

impl Backend for DryRun {
    fn name(&self) -> &str {
        "dry-run"
    }
    fn supports_store(&self, kind: &str) -> bool {
        kind == "local"
    }
    fn prepare(&self, _job: &JobRun) -> Result<(), BackendError> {
        Ok(())
    }
    fn start(&self, job: &JobRun) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        s.started.entry((job.id, job.attempt)).or_insert(false);
        Ok(())
    }
    fn poll(&self, job: &JobRun) -> Result<Vec<LearnerStatus>, BackendError> {
        let s = self.state.lock().unwrap();
        let status = match s.started.get(&(job.id, job.attempt)) {
            None => LearnerStatus::NotStarted,
            Some(true) => LearnerStatus::Exited {
                code: None,
                signal: Some(15),
            },
            Some(false) if s.finished.contains(&job.id) => LearnerStatus::Exited {
                code: Some(0),
                signal: None,
            },
            Some(false) => LearnerStatus::Running,
        };
        Ok(vec![status; job.manifest.learners as usize])
    }
    fn signal(&self, job: &JobRun, _kill: bool) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        *s.signals.entry(job.id).or_insert(0) += 1;
        if let Some(killed) = s.started.get_mut(&(job.id, job.attempt)) {
            *killed = true;
        }
        Ok(())
    }
    fn store_results(&self, _job: &JobRun, _outcome: &str) -> Result<(), BackendError> {
        Ok(())
    }
    fn remove(&self, _job: &JobRun) -> Result<(), BackendError> {
        Ok(())
    }
}

// ----- the server -------------------------------------------------------------------

async fn server(params: &GangParams, dir: &Path, backend: Arc<DryRun>) -> Arc<AppState> {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        admin_token: Some("dry-run-admin-token-0123456789".into()),
        capacity: Capacity {
            cpus: CPUS_PER_GPU * NODE_GPUS as f64,
            // The simulator's node: 64 GiB per GPU.
            memory: format!("{}GiB", 64 * NODE_GPUS),
            gpus: BTreeMap::from([(GPU_MODEL.to_string(), NODE_GPUS)]),
            gpu_devices: BTreeMap::new(),
        },
        scheduler: params.clone(),
        halt_grace_s: 0.0,
        restart_backoff_s: 0.0,
        ..ServerConfig::default()
    };
    let state = pharos_server::open(config, backend).await.unwrap();
    assert_eq!(state.scheduler.lock().unwrap().params, *params);
    state
}

/// A job of `gpus` GPUs as the simulator runs it: a gang of `gpus` learners with one
/// GPU, `CPUS_PER_GPU` CPUs and 1 GiB each.
fn manifest(k: usize, spec: &Spec) -> String {
    let text = format!(
        "name: j{k}\nlearners: {}\ncpus: {CPUS_PER_GPU}\ngpus: 1\ngpu_type: {GPU_MODEL}\n\
         memory: 1GiB\npriority: {}\nmax_restarts: 0\n\
         framework: {{name: custom, command: 'true'}}\n",
        spec.gpus, spec.priority
    );
    parse_manifest(&text).unwrap().validate().unwrap();
    text
}

type Snapshot = BTreeMap<i64, (JobState, Desired, i64, bool)>;

async fn snapshot(state: &AppState) -> Snapshot {
    state
        .store
        .jobs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|j| {
            (
                j.id,
                (j.state, j.desired, j.attempt, j.stop_sent_ms.is_some()),
            )
        })
        .collect()
}

fn holds_resources(s: JobState) -> bool {
    matches!(
        s,
        JobState::Pending | JobState::Downloading | JobState::Processing | JobState::Storing
    )
}

/// Reconcile passes until one changes nothing; returns the snapshot after each pass
/// (the first is the one before any pass).
async fn settle(state: &AppState, cache: &mut JobCache) -> Vec<Snapshot> {
    let mut snaps = vec![snapshot(state).await];
    for _ in 0..20 {
        reconcile(state, cache).await.unwrap();
        let next = snapshot(state).await;
        let stable = Some(&next) == snaps.last();
        snaps.push(next);
        if stable {
            return snaps;
        }
    }
    panic!("the controller did not settle in 20 passes: {snaps:#?}");
}

/// One job set run through each side, step by step.
struct Run {
    sim: TrainRunResult,
    sim_steps: Vec<Step>,
    server_steps: Vec<Step>,
    /// Events at which a queued job needed no more GPUs than were free, in the server
    /// after it settled: (time, job).
    waited_though_fitting: Vec<(String, usize)>,
    /// Wait reasons the server stored, by job, at any event.
    wait_reasons: Vec<(usize, String)>,
    signals: usize,
}

/// The steps at which something started or was preempted, one a line.
fn show(steps: &[Step]) -> String {
    steps
        .iter()
        .filter(|s| !s.started.is_empty() || !s.preempted.is_empty())
        .map(|s| format!("t={}: start {:?} preempt {:?}", s.t, s.started, s.preempted))
        .collect::<Vec<_>>()
        .join("\n")
}

fn fmt_t(t: f64) -> String {
    format!("{t}")
}

async fn run_both(name: &str, params: GangParams) -> Run {
    let (sim, log) = simulate(&params);

    // Every instant anything happens: arrivals, real completions, and decisions.
    let mut times: Vec<f64> = JOBS.iter().map(|j| j.arrival_s).collect();
    times.extend(sim.jobs.iter().map(|o| o.end_s));
    times.extend(log.iter().map(|(t, _)| *t));
    times.sort_by(f64::total_cmp);
    times.dedup();

    let sim_steps: Vec<Step> = times
        .iter()
        .map(|&t| {
            let decisions: Vec<&SchedDecision> = log
                .iter()
                .filter(|(at, _)| *at == t)
                .map(|(_, d)| d)
                .collect();
            assert!(decisions.len() <= 1, "one decision per instant");
            Step {
                t: fmt_t(t),
                started: decisions
                    .iter()
                    .flat_map(|d| d.start.iter().map(|(id, _)| *id as usize))
                    .collect(),
                preempted: decisions
                    .iter()
                    .flat_map(|d| d.preempt.iter().map(|id| *id as usize))
                    .collect(),
            }
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(DryRun::default());
    let state = server(&params, dir.path(), backend.clone()).await;
    // One copy of the jobs for the whole run, kept up to date from the store's changes
    // as the server's controller keeps it.
    let mut cache = JobCache::new(GangScheduler::new(params.clone()), 1000);
    let mut ids: Vec<i64> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    let mut server_steps = Vec::new();
    let mut waited_though_fitting = Vec::new();
    let mut wait_reasons = Vec::new();
    for &t in &times {
        // Completions first (the simulator's end times), then arrivals, then the
        // controller - as the simulator handles every event of an instant before its
        // one decision.
        for o in sim.jobs.iter().filter(|o| o.end_s == t) {
            backend.finish(ids[o.id as usize]);
        }
        for (k, spec) in JOBS.iter().enumerate().filter(|(_, j)| j.arrival_s == t) {
            assert_eq!(k, ids.len(), "submitted in arrival order");
            let text = manifest(k, spec);
            let name = format!("j{k}");
            let (id, created) = state
                .store
                .insert_job(&NewJob {
                    tenant: "dry-run",
                    name: &name,
                    manifest: &text,
                    queue: "default",
                    priority: spec.priority as i64,
                    model_sha256: None,
                    idempotency_key: None,
                })
                .await
                .unwrap();
            assert!(created);
            ids.push(id);
            index.insert(id, k);
        }
        let snaps = settle(&state, &mut cache).await;
        let mut step = Step {
            t: fmt_t(t),
            started: BTreeSet::new(),
            preempted: BTreeSet::new(),
        };
        for w in snaps.windows(2) {
            for (id, &(after, ..)) in &w[1] {
                let before = w[0].get(id).map(|s| s.0).unwrap_or(JobState::Queued);
                if before == JobState::Queued && holds_resources(after) {
                    step.started.insert(index[id]);
                }
                if holds_resources(before) && after == JobState::Queued {
                    step.preempted.insert(index[id]);
                }
            }
        }
        server_steps.push(step);
        let e = server_steps.len() - 1;
        assert_eq!(
            server_steps[e],
            sim_steps[e],
            "{name}: the server decided differently at t={t}\n-- simulator:\n{}\n-- server:\n{}",
            show(&sim_steps[..=e]),
            show(&server_steps)
        );
        // Jobs the simulator finished now are done in the server too.
        let last = snaps.last().unwrap();
        for o in sim.jobs.iter().filter(|o| o.end_s == t) {
            let id = ids[o.id as usize];
            assert_eq!(last[&id].0, JobState::Completed, "j{} at t={t}", o.id);
        }
        let rows = state.store.jobs(None).await.unwrap();
        let used: u32 = rows
            .iter()
            .filter(|r| holds_resources(r.state))
            .map(|r| JOBS[index[&r.id]].gpus)
            .sum();
        assert!(used <= NODE_GPUS, "t={t}: {used} GPUs held");
        for r in rows.iter().filter(|r| r.state == JobState::Queued) {
            let k = index[&r.id];
            if JOBS[k].gpus <= NODE_GPUS - used {
                waited_though_fitting.push((fmt_t(t), k));
            }
            if let Some(why) = &r.wait_reason {
                wait_reasons.push((k, why.clone()));
            }
        }
    }
    // The server ends with every job completed, as the simulator does.
    for r in state.store.jobs(None).await.unwrap() {
        assert_eq!(r.state, JobState::Completed, "{}", r.name);
    }
    let signals = backend.state.lock().unwrap().signals.values().sum::<u32>() as usize;
    state.store.close().await;
    Run {
        sim,
        sim_steps,
        server_steps,
        waited_though_fitting,
        wait_reasons,
        signals,
    }
}

/// The simulator and the server started and preempted the same jobs at every event.
fn assert_same_decisions(name: &str, run: &Run) {
    assert_eq!(
        run.sim_steps,
        run.server_steps,
        "{name}: the server decided differently\n-- simulator:\n{}\n-- server:\n{}",
        show(&run.sim_steps),
        show(&run.server_steps)
    );
    let starts: usize = run.server_steps.iter().map(|s| s.started.len()).sum();
    let preemptions: usize = run.server_steps.iter().map(|s| s.preempted.len()).sum();
    let sim_preemptions: u32 = run.sim.jobs.iter().map(|o| o.preemptions).sum();
    assert_eq!(preemptions, sim_preemptions as usize, "{name}");
    assert_eq!(starts, JOBS.len() + preemptions, "{name}");
}

fn first_start(run: &Run, k: usize) -> f64 {
    run.sim.jobs[k].first_start_s
}

fn params(order: Order, backfill: bool, preemption: bool) -> GangParams {
    GangParams {
        order,
        backfill,
        preemption,
        placement: Placement::Pack,
        ..GangParams::default()
    }
}

#[tokio::test]
async fn fifo_without_backfill_decides_as_in_the_simulator() {
    let name = "fifo, no backfill";
    let run = run_both(name, params(Order::Fifo, false, true)).await;
    assert_same_decisions(name, &run);
    // Head-of-line blocking really happens: j3 (2 GPUs) arrives at 30 with 2 GPUs free
    // and waits behind j2, and the server says why.
    assert!(
        run.waited_though_fitting.contains(&("30".into(), 3)),
        "{:?}",
        run.waited_though_fitting
    );
    assert!(first_start(&run, 3) > JOBS[3].arrival_s);
    assert!(
        run.wait_reasons
            .iter()
            .any(|(k, why)| *k == 3 && why.contains("no backfill")),
        "{:?}",
        run.wait_reasons
    );
    assert_eq!(run.signals, 0, "FIFO never preempts");
}

#[tokio::test]
async fn fifo_with_backfill_decides_as_in_the_simulator() {
    let name = "fifo, backfill";
    let run = run_both(name, params(Order::Fifo, true, true)).await;
    assert_same_decisions(name, &run);
    // Backfill: nothing that fits ever waits, and j3 starts around the blocked j2.
    assert!(
        run.waited_though_fitting.is_empty(),
        "{:?}",
        run.waited_though_fitting
    );
    assert_eq!(first_start(&run, 3), JOBS[3].arrival_s);
    assert!(first_start(&run, 2) > JOBS[2].arrival_s);
    assert_eq!(run.signals, 0, "FIFO never preempts");
}

#[tokio::test]
async fn priority_with_preemption_decides_as_in_the_simulator() {
    let name = "priority, preemption";
    let run = run_both(name, params(Order::Priority, true, true)).await;
    assert_same_decisions(name, &run);
    // The high-priority jobs start on arrival by halting lower-priority ones.
    assert_eq!(first_start(&run, 5), JOBS[5].arrival_s);
    assert_eq!(first_start(&run, 7), JOBS[7].arrival_s);
    let preempted: BTreeSet<usize> = run
        .server_steps
        .iter()
        .flat_map(|s| s.preempted.iter().copied())
        .collect();
    assert!(!preempted.is_empty());
    assert!(
        preempted
            .iter()
            .all(|&k| JOBS[k].priority < JOBS[5].priority)
    );
    assert!(run.signals > 0, "preempted learners were stopped");
}

/// The three parameter sets lead to different decisions on this job set, so a server
/// that ignored its configured scheduler could not match all three.
#[tokio::test]
async fn the_job_set_tells_the_policies_apart() {
    let logs: Vec<Vec<Step>> = [
        params(Order::Fifo, false, true),
        params(Order::Fifo, true, true),
        params(Order::Priority, true, true),
    ]
    .iter()
    .map(|p| {
        let (sim, log) = simulate(p);
        assert_eq!(sim.jobs.len(), JOBS.len());
        log.into_iter()
            .map(|(t, d)| Step {
                t: fmt_t(t),
                started: d.start.iter().map(|(id, _)| *id as usize).collect(),
                preempted: d.preempt.iter().map(|id| *id as usize).collect(),
            })
            .filter(|s| !s.started.is_empty() || !s.preempted.is_empty())
            .collect()
    })
    .collect();
    for i in 0..logs.len() {
        for j in i + 1..logs.len() {
            assert_ne!(logs[i], logs[j], "parameter sets {i} and {j}");
        }
    }
}
