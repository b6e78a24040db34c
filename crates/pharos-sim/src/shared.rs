//! One GPU cluster shared by inference services and training jobs.
//!
//! The inference simulator ([`Simulation`]) and the training simulator ([`TrainRun`])
//! run side by side on the same nodes, advanced together every `interval_s`. In the
//! capacity unit of the inference side a replica's `cpus_per_replica` is its GPUs.
//!
//! - [`Split::Static`]: the services own a fixed slice of GPUs (their policy sees only
//!   that slice), training the rest; nothing moves between them.
//! - [`Split::Shared`]: the services' policy sees the whole cluster, and what its
//!   targets ask for is held for it; training runs on everything else. A target is the
//!   policy's plan for the coming interval (a forecasting policy plans for the forecast),
//!   so training yields before the load arrives, not when replicas already lag. When
//!   the services need GPUs that are not free, running jobs are halted back to their
//!   last checkpoint, lowest priority first, then the least work lost; a job that is not
//!   preemptible, has run less than `min_run_s`, or was halted
//!   `max_preemptions_per_hour` times in the last hour is left alone (the services then
//!   wait for GPUs). GPUs the services give back go to training at once (halted jobs
//!   resume from their checkpoints through the training scheduler).
//!
//! Every halt made for the services is a [`YieldEvent`] naming the services that caused
//! it and the numbers behind it, and every resume of a halted job is one too (the
//! training scheduler's own preemptions, under a preemptive policy, are not events, but
//! their lost work counts in [`SharedResult::preemption_lost_gpu_hours`]). While the
//! services lack GPUs that could not be taken yet, that many free GPUs are kept free:
//! a job that ends does not hand its GPUs to another job first.

use pharos_core::{InferencePolicy, SpecError, TrainingScheduler};
use serde::Serialize;

use crate::config::SimConfig;
use crate::inference::{SimResult, Simulation};
use crate::training::{TrainRun, TrainRunResult, TrainSimConfig};

/// How the cluster is divided between services and training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// The services own this many GPUs; training the rest.
    Static { serving_gpus: u32 },
    /// The services take what their policy's targets ask for; training the rest.
    Shared,
}

/// What limits taking GPUs back from training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YieldRules {
    /// How often the split is revisited (seconds).
    #[serde(default = "d_interval")]
    pub interval_s: f64,
    /// A job is not halted before it has run this long (seconds) in its attempt.
    #[serde(default = "d_min_run")]
    pub min_run_s: f64,
    /// A job is halted at most this many times in any hour.
    #[serde(default = "d_max_pre")]
    pub max_preemptions_per_hour: u32,
    /// GPUs the services no longer ask for go back to training only once they have not
    /// asked for them for this long (seconds): a dip between two bursts does not start
    /// jobs that the next burst would halt.
    #[serde(default = "d_release")]
    pub release_after_s: f64,
    /// Move a gang that spans nodes onto one node right after its checkpoint, when one
    /// has room and the move saves more than it costs (the services' GPUs come and go
    /// and leave jobs started across nodes, running slower).
    #[serde(default = "d_consolidate")]
    pub consolidate: bool,
}

fn d_interval() -> f64 {
    10.0
}
fn d_min_run() -> f64 {
    300.0
}
fn d_max_pre() -> u32 {
    2
}
fn d_release() -> f64 {
    300.0
}
fn d_consolidate() -> bool {
    true
}

impl Default for YieldRules {
    fn default() -> Self {
        Self {
            interval_s: d_interval(),
            min_run_s: d_min_run(),
            max_preemptions_per_hour: d_max_pre(),
            release_after_s: d_release(),
            consolidate: d_consolidate(),
        }
    }
}

/// Everything a shared-cluster run needs besides the two policies.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// The services; `cluster.capacity_cpus` is replaced by the split's capacity.
    pub inference: SimConfig,
    /// The training jobs; its pools are the cluster's nodes.
    pub training: TrainSimConfig,
    pub split: Split,
    pub rules: YieldRules,
}

/// A halt or resume of a training job and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct YieldEvent {
    pub t_s: f64,
    /// `preempted`, `resumed`, or `moved` (a gang moved onto one node at its
    /// checkpoint).
    pub kind: &'static str,
    /// The job's id in the trace.
    pub job: u64,
    pub job_gpus: u32,
    /// The services whose targets rose at this step: (name, replicas before, after).
    pub services: Vec<(String, u32, u32)>,
    /// GPUs the services needed beyond what was free (preemptions).
    pub gpus_needed: u32,
    /// Productive seconds since the job's last checkpoint, lost.
    pub lost_s: f64,
    pub message: String,
}

/// Per hour of the run: mean GPUs held by services' pods, held for the services (the
/// static slice, or what the shared split holds for them: their pods' and the ones kept
/// for them; not the free GPUs set aside while they wait for more), and held by training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HourUse {
    pub inference_gpus: f64,
    pub serving_held_gpus: f64,
    pub training_gpus: f64,
}

/// What a shared-cluster run measured.
#[derive(Debug, Clone)]
pub struct SharedResult {
    pub inference: SimResult,
    pub training: TrainRunResult,
    /// Seconds simulated (the services' trace).
    pub horizon_s: f64,
    pub total_gpus: u32,
    /// Work of the training jobs done by the end, in GPU-hours of their own duration
    /// (a job's share done x its GPUs x its duration on its GPU model).
    pub useful_gpu_hours: f64,
    /// GPU-hours lost to halts and moves (work not checkpointed) and to restarts (every restart,
    /// also after the training scheduler's own preemptions).
    pub preemption_lost_gpu_hours: f64,
    pub restart_gpu_hours: f64,
    /// GPU-hours training held.
    pub training_busy_gpu_hours: f64,
    /// Jobs halted to make room for the services.
    pub preemptions: u32,
    /// Gangs moved onto one node.
    pub moves: u32,
    /// Jobs that arrived during the run, and those of them that finished in it.
    pub jobs_arrived: usize,
    pub jobs_completed: usize,
    /// Mean hours from arrival to completion over the jobs that arrived; a job still
    /// running or waiting at the end counts until the end (a lower bound).
    pub mean_jct_h: f64,
    pub events: Vec<YieldEvent>,
    pub hours: Vec<HourUse>,
}

/// Run the services under `policy` and the training jobs under `sched` on one cluster.
pub fn run<P: InferencePolicy>(
    cfg: &SharedConfig,
    policy: P,
    sched: &mut dyn TrainingScheduler,
) -> Result<SharedResult, SpecError> {
    let total: u32 = cfg
        .training
        .pools
        .iter()
        .try_fold(0u32, |sum, p| {
            p.nodes
                .checked_mul(p.gpus_per_node)
                .and_then(|g| sum.checked_add(g))
        })
        .ok_or_else(|| SpecError::new("training.pools", "more GPUs than a u32 counts"))?;
    if total < 2 {
        return Err(SpecError::new(
            "training.pools",
            "a shared cluster needs at least 2 GPUs",
        ));
    }
    if cfg.inference.jobs.is_empty() {
        return Err(SpecError::new("inference.jobs", "there are no services"));
    }
    SpecError::check_positive("rules.interval_s", cfg.rules.interval_s)?;
    SpecError::check_non_negative("rules.min_run_s", cfg.rules.min_run_s)?;
    SpecError::check_non_negative("rules.release_after_s", cfg.rules.release_after_s)?;
    for (i, j) in cfg.inference.jobs.iter().enumerate() {
        if j.cpus_per_replica.fract() != 0.0 || j.cpus_per_replica < 1.0 {
            return Err(SpecError::new(
                format!("jobs[{i}] ({}).gpus_per_replica", j.name),
                format!("must be a whole number of GPUs, got {}", j.cpus_per_replica),
            ));
        }
    }
    let mut inf_cfg = cfg.inference.clone();
    let claimable = match cfg.split {
        Split::Static { serving_gpus } => {
            if serving_gpus == 0 || serving_gpus >= total {
                return Err(SpecError::new(
                    "serving_gpus",
                    format!(
                        "must be between 1 and {} (the cluster's GPUs less one)",
                        total - 1
                    ),
                ));
            }
            serving_gpus
        }
        Split::Shared => total,
    };
    inf_cfg.cluster.capacity_cpus = claimable as f64;
    let horizon_s = inf_cfg.jobs[0].requests_per_min.len() as f64 * 60.0;
    let mut inf = Simulation::new(inf_cfg, policy)?;
    let mut tr = TrainRun::new(&cfg.training)?;
    let nodes = tr.node_gpus().len();
    let mut held = vec![0u32; nodes];
    match cfg.split {
        Split::Static { serving_gpus } => {
            // The slice: whole nodes from the last one down.
            let mut left = serving_gpus;
            for k in (0..nodes).rev() {
                let take = left.min(tr.node_gpus()[k].0);
                held[k] = take;
                left -= take;
            }
            tr.hold(&held)
                .map_err(|e| SpecError::new("serving_gpus", e))?;
            inf.set_pod_capacity(serving_gpus as f64);
        }
        Split::Shared => inf.set_pod_capacity(0.0),
    }
    // The replicas the run begins with.
    let mut asked = std::collections::VecDeque::new();
    if cfg.split == Split::Shared {
        let mut split = Resplit {
            held: &mut held,
            asked: &mut asked,
            total,
            cfg,
        };
        split.run(&mut inf, &mut tr, &mut Vec::new(), &[], sched);
    }
    let names: Vec<String> = cfg.inference.jobs.iter().map(|j| j.name.clone()).collect();
    let mut targets: Vec<u32> = (0..names.len()).map(|j| inf.target(j)).collect();
    let mut events = Vec::new();
    let mut hour_acc: Vec<(f64, f64, f64, u32)> = Vec::new();
    let mut was_running: Vec<usize> = Vec::new();
    let mut t = 0.0;
    while t < horizon_s {
        let t_next = (t + cfg.rules.interval_s).min(horizon_s);
        inf.run_until(t_next);
        tr.advance(t_next, sched);
        t = t_next;
        if cfg.split == Split::Shared {
            let now_targets: Vec<u32> = (0..names.len()).map(|j| inf.target(j)).collect();
            let rising: Vec<(String, u32, u32)> = names
                .iter()
                .zip(targets.iter().zip(&now_targets))
                .filter(|(_, (a, b))| b > a)
                .map(|(n, (a, b))| (n.clone(), *a, *b))
                .collect();
            targets = now_targets;
            let mut split = Resplit {
                held: &mut held,
                asked: &mut asked,
                total,
                cfg,
            };
            split.run(&mut inf, &mut tr, &mut events, &rising, sched);
        }
        if cfg.rules.consolidate {
            let moves = tr.consolidate(cfg.rules.interval_s);
            for (i, k, lost) in &moves {
                let job = &cfg.training.jobs[*i];
                events.push(YieldEvent {
                    t_s: t,
                    kind: "moved",
                    job: job.id,
                    job_gpus: job.gpus,
                    services: Vec::new(),
                    gpus_needed: 0,
                    lost_s: *lost,
                    message: format!(
                        "job {} moved onto node {k} at its checkpoint: its {} GPUs no longer span nodes, losing {:.0} s ({:.0}% done)",
                        job.id,
                        job.gpus,
                        lost,
                        tr.progress(*i) * 100.0
                    ),
                });
            }
            if !moves.is_empty() {
                tr.decide(sched);
            }
        }
        // Resumes: halted jobs running again.
        let running = tr.running();
        for r in &running {
            if !r.preempted_at.is_empty() && !was_running.contains(&r.index) {
                let job = &cfg.training.jobs[r.index];
                events.push(YieldEvent {
                    t_s: t,
                    kind: "resumed",
                    job: job.id,
                    job_gpus: job.gpus,
                    services: Vec::new(),
                    gpus_needed: 0,
                    lost_s: 0.0,
                    message: format!(
                        "job {} resumed from its checkpoint on {} GPUs ({:.0}% done)",
                        job.id,
                        job.gpus,
                        tr.progress(r.index) * 100.0
                    ),
                });
            }
        }
        was_running = running.iter().map(|r| r.index).collect();
        let hour = ((t - 1e-9).max(0.0) / 3600.0) as usize;
        if hour_acc.len() <= hour {
            hour_acc.resize(hour + 1, (0.0, 0.0, 0.0, 0));
        }
        let h = &mut hour_acc[hour];
        h.0 += inf.used_cpus();
        h.1 += held.iter().sum::<u32>() as f64;
        h.2 += tr.busy_gpus() as f64;
        h.3 += 1;
    }
    // Training stops with the trace; the requests still in the system finish.
    inf.run_until(f64::INFINITY);
    let mut useful = 0.0;
    let mut arrived = 0;
    let mut completed = 0;
    let mut jct = 0.0;
    for (i, job) in cfg.training.jobs.iter().enumerate() {
        let (came, done) = tr.state_of(i);
        if !came {
            continue;
        }
        arrived += 1;
        useful += tr.progress(i) * job.gpus as f64 * job.duration_s[tr.model_of(i)];
        if done.is_some() {
            completed += 1;
        }
        jct += done.unwrap_or(horizon_s) - job.arrival_s;
    }
    let (lost, restart) = tr.lost_gpu_s();
    let busy = tr.busy_gpu_s();
    let training = tr.result();
    let preemptions = events.iter().filter(|e| e.kind == "preempted").count() as u32;
    let moves = events.iter().filter(|e| e.kind == "moved").count() as u32;
    Ok(SharedResult {
        inference: inf.finish(),
        horizon_s,
        total_gpus: total,
        useful_gpu_hours: useful / 3600.0,
        preemption_lost_gpu_hours: lost / 3600.0,
        restart_gpu_hours: restart / 3600.0,
        training_busy_gpu_hours: busy / 3600.0,
        preemptions,
        moves,
        jobs_arrived: arrived,
        jobs_completed: completed,
        mean_jct_h: if arrived > 0 {
            jct / arrived as f64 / 3600.0
        } else {
            0.0
        },
        events,
        hours: hour_acc
            .into_iter()
            .map(|(i, s, t, n)| HourUse {
                inference_gpus: i / n.max(1) as f64,
                serving_held_gpus: s / n.max(1) as f64,
                training_gpus: t / n.max(1) as f64,
            })
            .collect(),
        training,
    })
}

/// The split's state between steps.
struct Resplit<'a> {
    /// Per node: GPUs held for the services.
    held: &'a mut [u32],
    /// What the services asked for recently: (time, GPUs), times rising, each GPUs
    /// above the ones after it (a running maximum over `release_after_s`).
    asked: &'a mut std::collections::VecDeque<(f64, u32)>,
    total: u32,
    cfg: &'a SharedConfig,
}

impl Resplit<'_> {
    /// Hold for the services what their targets ask for: take free GPUs first, then halt
    /// jobs as the rules allow; give back what they have not asked for in
    /// `release_after_s`.
    fn run<P: InferencePolicy>(
        &mut self,
        inf: &mut Simulation<P>,
        tr: &mut TrainRun<'_>,
        events: &mut Vec<YieldEvent>,
        rising: &[(String, u32, u32)],
        sched: &mut dyn TrainingScheduler,
    ) {
        let (held, total, cfg) = (&mut *self.held, self.total, self.cfg);
        let now = tr.now_s();
        let asked_now = (inf.wanted_cpus().ceil() as u32).min(total);
        while self.asked.back().is_some_and(|(_, g)| *g <= asked_now) {
            self.asked.pop_back();
        }
        self.asked.push_back((now, asked_now));
        while self
            .asked
            .front()
            .is_some_and(|(t, _)| *t < now - cfg.rules.release_after_s)
            && self.asked.len() > 1
        {
            self.asked.pop_front();
        }
        let recent = self.asked.front().map_or(asked_now, |(_, g)| *g);
        let have: u32 = held.iter().sum();
        // Take at once what is asked for; give back only what was not asked for lately.
        let want = if asked_now > have {
            asked_now
        } else {
            recent.min(have)
        };
        if want > have {
            let need = want - have;
            let free = |tr: &TrainRun<'_>, held: &[u32]| -> u32 {
                tr.node_gpus()
                    .iter()
                    .zip(held)
                    .map(|((g, u, _), h)| g - u - h)
                    .sum()
            };
            let mut free_now = free(tr, held);
            if free_now < need {
                let mut victims: Vec<_> = tr
                    .running()
                    .into_iter()
                    .filter(|r| {
                        r.preemptible
                            && now - r.started_s >= cfg.rules.min_run_s
                            && (r.preempted_at.iter().filter(|p| now - **p < 3600.0).count() as u32)
                                < cfg.rules.max_preemptions_per_hour
                    })
                    .collect();
                victims.sort_by(|a, b| {
                    a.priority
                        .cmp(&b.priority)
                        .then(a.lost_gpu_s.total_cmp(&b.lost_gpu_s))
                        .then(b.started_s.total_cmp(&a.started_s))
                });
                let short = need - free_now;
                for v in victims {
                    if free_now >= need {
                        break;
                    }
                    if tr.preempt(v.index) {
                        let job = &cfg.training.jobs[v.index];
                        free_now += job.gpus;
                        let why: Vec<String> = rising
                            .iter()
                            .map(|(n, a, b)| format!("service {n} planned {a} -> {b} replicas"))
                            .collect();
                        let why = if why.is_empty() {
                            "the services' plan".to_string()
                        } else {
                            why.join(", ")
                        };
                        events.push(YieldEvent {
                        t_s: now,
                        kind: "preempted",
                        job: job.id,
                        job_gpus: job.gpus,
                        services: rising.to_vec(),
                        gpus_needed: short,
                        lost_s: v.since_checkpoint_s,
                        message: format!(
                            "{why}: needs {short} more GPUs; job {} had checkpointed {:.0} s ago, losing {:.0} s of {} GPUs",
                            job.id, v.since_checkpoint_s, v.since_checkpoint_s, job.gpus
                        ),
                    });
                    }
                }
            }
            // Take free GPUs, on the nodes the services already use most (keeping whole
            // nodes free for gangs).
            let mut take = need.min(free_now);
            while take > 0 {
                let nodes = tr.node_gpus();
                let Some(k) = (0..nodes.len())
                    .filter(|k| nodes[*k].0 > nodes[*k].1 + held[*k])
                    .max_by_key(|k| (held[*k], nodes[*k].0 - nodes[*k].1 - held[*k], *k))
                else {
                    break;
                };
                let n = take.min(nodes[k].0 - nodes[k].1 - held[k]);
                held[k] += n;
                take -= n;
            }
        } else if want < have {
            // Give back from the nodes the services use least.
            let mut give = have - want;
            while give > 0 {
                let Some(k) = (0..held.len())
                    .filter(|k| held[*k] > 0)
                    .min_by_key(|k| (held[*k], std::cmp::Reverse(*k)))
                else {
                    break;
                };
                let n = give.min(held[k]);
                held[k] -= n;
                give -= n;
            }
        }
        let now_held: u32 = held.iter().sum();
        // What the services still lack stays free when training's jobs end.
        tr.set_aside(want.saturating_sub(now_held));
        if now_held == have {
            return;
        }
        tr.hold(held)
            .expect("GPUs held beside training's fit their nodes");
        inf.set_pod_capacity(now_held as f64);
        // GPUs given back, or freed by a halt beyond the need, go to training now.
        tr.decide(sched);
    }
}
