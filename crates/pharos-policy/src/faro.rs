//! The SLO-utility autoscaler (after Faro) and the MArk-style predictive baseline.

use pharos_core::{Candidate, ClusterView, Decision, Explanation, InferencePolicy, JobView};
use pharos_forecast::{BaseModel, ForecastData, Forecaster, ForecasterSpec};
use pharos_queueing::{LatencyModel, replicas_for_slo};
use serde::{Deserialize, Serialize};

use crate::alloc::{self, AllocJob, Objective, Problem, UtilityKind};
use crate::window::CounterWindow;

/// Which latency model the policy plans with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    UpperBound,
    #[default]
    Mdc,
}

impl ModelKind {
    fn model(self) -> LatencyModel {
        match self {
            ModelKind::UpperBound => LatencyModel::UpperBound,
            ModelKind::Mdc => LatencyModel::MdcHalfMmc,
        }
    }
}

/// Where the predicted rates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// No prediction: the last minute's rate for the whole window.
    None,
    /// The forecaster's forecast at the policy's quantile.
    #[default]
    Forecast,
}

/// Parameters of the SLO-utility autoscaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaroParams {
    /// Period of the reactive loop (and the policy's tick).
    pub interval_s: f64,
    /// Period of the predictive loop ...
    pub predictive_interval_s: f64,
    /// ... which first runs at this time.
    pub first_predictive_s: f64,
    /// Prediction window: steps of `step_s`.
    pub window_steps: usize,
    pub forecaster: ForecasterSpec,
    pub prediction: Prediction,
    /// The per-step forecast quantile.
    pub quantile: f64,
    /// Raise the quantile by 0.1 (up to `max_quantile`) while more than `slack_cpus`
    /// are left unallocated.
    pub raise_quantile: bool,
    pub max_quantile: f64,
    pub slack_cpus: f64,
    pub utility: UtilityKind,
    /// The latency model the allocation plans with; by default M/D/c for the fairness
    /// objectives (Fair, FairSum) and the upper bound for the others (Sum, PenaltySum,
    /// PenaltyFairSum), which otherwise pack jobs up to the edge of M/D/c's optimistic
    /// latency when capacity is tight (chosen on day 10 of the Faro trace with its load
    /// scaled by 1.15; see docs/results).
    pub latency_model: Option<ModelKind>,
    /// Steps a scale-up takes to be felt when the cluster has no free capacity.
    pub cold_start_steps: usize,
    /// Plan each scale-up to serve only once its replicas can be ready: the job's
    /// measured cold start (`JobView::cold_start_s`), rounded up to whole window steps,
    /// during which the current replicas carry the forecast load (and at least
    /// `cold_start_steps` when the cluster is full). Off, or before a job's first
    /// measured start, a scale-up counts at once when there is free capacity.
    pub actuation_delay: bool,
    /// The reactive loop: +1 replica after `reactive_checks` consecutive checks whose
    /// mean latency over `reactive_look_back_s` is over the SLO.
    pub reactive: bool,
    pub reactive_look_back_s: f64,
    pub reactive_checks: u32,
    /// Drop replicas that add less than 1e-4 of objective (the shrink stage).
    pub shrink: bool,
    /// Utility charged per replica taken from a job (Faro has none): a replica moves
    /// between jobs only when that gains more than this. Moving one costs the cluster a
    /// minute or more (the old pod idles 30 s before its vCPU is free, the new one takes
    /// 35 s to start), which Faro's model does not see. 0.1 was chosen on day 10 of the
    /// Faro trace (0.05-0.2 did equally well there).
    pub move_cost: f64,
    /// Utility charged per replica held (Faro has none, and spends capacity while it
    /// adds any utility): the allocation keeps a replica only when it is worth this
    /// much, so raising it trades SLO attainment for replica-hours (the knob that walks
    /// the policy along its cost-quality frontier). Pair it with `spread_leftover: false`
    /// and `raise_quantile: false` (else the capacity it leaves idle is handed out, or
    /// spent on a higher forecast quantile) and a `move_cost` below it (else a replica,
    /// once given, is kept). Separable objectives only (`faro-sum`, `faro-penaltysum`).
    pub replica_cost: f64,
    /// Hand capacity the allocation leaves idle to the busiest jobs (ours; Faro leaves
    /// it idle).
    pub spread_leftover: bool,
    /// When the reactive loop adds a replica to a full cluster, take it from the job
    /// that stays least busy without it, if its utilisation stays below
    /// `donor_max_utilisation` (ours; Faro's reactive loop only adds).
    pub rebalance: bool,
    pub donor_max_utilisation: f64,
    /// Size the deployment that exists when the run starts by a predictive decision on
    /// the days before the run (when the run has history days; ours, like a cluster
    /// that was running the day before). Without it every job starts at its initial
    /// replicas until the first predictive tick.
    pub initial_from_forecast: bool,
    /// A predictive decision plans every job for at least the highest per-minute rate
    /// it saw over the last this many seconds (whole minutes, rounded up), so a dip of
    /// a few minutes does not take replicas away just before the load returns: the
    /// counterpart of the HPA's scale-down stabilisation window (ours; Faro plans on the
    /// forecast alone). 0 (the default) turns it off.
    pub downscale_stabilization_s: f64,
    /// Between predictive decisions, raise a job at once to the replicas the plan's
    /// latency model needs for the arrival rate measured over `reactive_look_back_s`,
    /// when that rate (times the job's accept rate) is above the highest the last plan was
    /// made for and needs more than the job has (ours: the load outran the forecast;
    /// Faro's reactive loop adds one replica at a time, after its latency was seen high).
    /// Runs inside the reactive loop (`reactive` must be on). Off by default.
    pub reactive_sizing: bool,
    /// Plan with each job's measured mean service time (busy replica-seconds per
    /// completed request since the start, once `MIN_MEASURED` requests completed) in
    /// place of the processing time the operator gave (ours; Faro plans with a profiled
    /// one). Exact for replicas that serve one request at a time; where a replica serves
    /// several at once (or in batches) busy time per request understates what each
    /// request takes. Off by default.
    pub measured_processing: bool,
    /// Plan every job for a latency this many times its SLO (1: the SLO itself). Above 1
    /// the plan holds fewer replicas and leaves the SLO to the reactive paths, below 1 it
    /// keeps headroom: a knob that walks the policy's cost smoothly (ours). 0.1 to 10.
    /// Pair a factor above 1 with `spread_leftover: false` and `raise_quantile: false`
    /// (else the capacity it frees is handed out again or spent on a higher quantile).
    pub plan_slo_factor: f64,
}

/// Completed requests after which a job's measured service time replaces the given one.
pub const MIN_MEASURED: u64 = 200;

/// The processing time a job is planned with: its measured mean service time (busy
/// replica-seconds per completed request) when `measured` and enough requests
/// completed, else the one its operator gave.
fn processing_s(j: &JobView<'_>, measured: bool) -> f64 {
    let c = &j.counters;
    if measured && c.completed >= MIN_MEASURED {
        let m = c.busy_replica_s / c.completed as f64;
        if m.is_finite() && m > 0.0 {
            return m;
        }
    }
    j.processing_time_s
}

impl Default for FaroParams {
    fn default() -> Self {
        Self {
            interval_s: 10.0,
            predictive_interval_s: 300.0,
            first_predictive_s: 60.0,
            window_steps: 7,
            forecaster: ForecasterSpec::calibrated(BaseModel::Ensemble),
            prediction: Prediction::Forecast,
            quantile: 0.6,
            raise_quantile: true,
            max_quantile: 0.9,
            slack_cpus: 1.0,
            utility: UtilityKind::Relaxed { alpha: 1.0 },
            latency_model: None,
            cold_start_steps: 1,
            actuation_delay: true,
            reactive: true,
            reactive_look_back_s: 30.0,
            reactive_checks: 3,
            shrink: true,
            move_cost: 0.1,
            replica_cost: 0.0,
            spread_leftover: true,
            rebalance: true,
            donor_max_utilisation: 0.6,
            initial_from_forecast: true,
            downscale_stabilization_s: 0.0,
            reactive_sizing: false,
            measured_processing: false,
            plan_slo_factor: 1.0,
        }
    }
}

/// The reactive loop shared by Faro and MArk: +1 replica after consecutive checks whose
/// mean latency is over the SLO; never removes.
#[derive(Debug, Clone, Default)]
struct Reactive {
    window: CounterWindow,
    streak: Vec<u32>,
}

impl Reactive {
    /// A predictive decision was taken: clear the counters, and keep the window's
    /// snapshots current for the next checks.
    fn restart(&mut self, view: &ClusterView<'_>, look_back_s: f64) {
        self.streak.iter_mut().for_each(|s| *s = 0);
        self.window.record(view, look_back_s);
    }

    /// Add a replica to each job whose mean latency has been over its SLO for `checks`
    /// consecutive checks. With `donor_max_utilisation`, when the cluster has no room for
    /// that replica, take one from the job that would stay least busy without it
    /// (utilisation over the look-back window, scaled to one replica fewer), if that stays
    /// below the bound.
    fn check(
        &mut self,
        view: &ClusterView<'_>,
        look_back_s: f64,
        checks: u32,
        donor_max_utilisation: Option<f64>,
        d: &mut Decision,
    ) {
        self.window.record(view, look_back_s);
        self.streak.resize(view.jobs.len(), 0);
        let mut free = view.free_cpus;
        let mut targets: Vec<u32> = view.jobs.iter().map(|j| j.target_replicas).collect();
        let mut given = vec![false; view.jobs.len()];
        for (i, j) in view.jobs.iter().enumerate() {
            let w = self.window.delta(i, look_back_s);
            let latency = match w.mean_latency_s() {
                Some(l) => l,
                None if w.arrivals > 0 => f64::INFINITY,
                None => 0.0,
            };
            if latency <= j.slo.latency_s {
                self.streak[i] = 0;
                continue;
            }
            self.streak[i] += 1;
            if self.streak[i] < checks || targets[i] >= j.max_replicas {
                continue;
            }
            self.streak[i] = 0;
            if free < j.cpus_per_replica
                && let Some(bound) = donor_max_utilisation
            {
                let donor = view
                    .jobs
                    .iter()
                    .enumerate()
                    .filter(|(k, dj)| {
                        *k != i
                            && !given[*k]
                            && targets[*k] > dj.min_replicas.max(1)
                            && dj.ready_replicas >= 2
                    })
                    .filter_map(|(k, dj)| {
                        let u = self.window.delta(k, look_back_s).utilisation()?;
                        let after = u * dj.ready_replicas as f64 / (dj.ready_replicas - 1) as f64;
                        (after < bound).then_some((after, k))
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((_, k)) = donor {
                    targets[k] -= 1;
                    d.target_replicas[k] = Some(targets[k]);
                    free += view.jobs[k].cpus_per_replica;
                }
            }
            targets[i] += 1;
            given[i] = true;
            free -= j.cpus_per_replica;
            d.target_replicas[i] = Some(targets[i]);
        }
    }
}

fn is_predictive_tick(now: f64, first: f64, period: f64) -> bool {
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    near(now, first) || (now > first && near((now / period).round() * period, now))
}

/// The latency model an objective plans with by default (see
/// [`FaroParams::latency_model`]).
pub fn default_model(objective: Objective) -> ModelKind {
    match objective {
        Objective::Fair | Objective::FairSum => ModelKind::Mdc,
        Objective::Sum | Objective::PenaltySum | Objective::PenaltyFairSum => ModelKind::UpperBound,
    }
}

/// What a forecaster is shown of job `i`: the minutes known before the run (from
/// minute 0 of a day), then the run's complete minutes.
struct Histories {
    past: Vec<Vec<f64>>,
}

impl Histories {
    fn new(data: &ForecastData) -> Self {
        Self {
            past: data.past_rpm.clone(),
        }
    }

    /// Whether something is known of every job before the run.
    fn known(&self, jobs: usize) -> bool {
        self.past.len() == jobs && self.past.iter().all(|p| !p.is_empty())
    }

    fn of(&self, i: usize, j: &JobView<'_>) -> Vec<f64> {
        let mut h = self.past.get(i).cloned().unwrap_or_default();
        h.extend(j.minute_arrivals.iter().map(|c| *c as f64));
        h
    }

    /// Job `i`'s highest `q` forecast over the next `steps` minutes (requests a minute).
    fn peak_rpm(
        &self,
        forecaster: &mut dyn Forecaster,
        i: usize,
        j: &JobView<'_>,
        steps: usize,
        q: f64,
    ) -> f64 {
        forecaster
            .forecast(i, &self.of(i, j), steps.max(1), q)
            .into_iter()
            .fold(0.0, f64::max)
    }
}

/// The SLO-utility autoscaler: every `predictive_interval_s`, forecast every job's rate
/// over the window, solve the cross-job allocation for the objective (raising the
/// quantile while capacity is left over), and set replicas (and accept rates); between
/// predictive runs, the reactive loop.
pub struct Faro {
    name: String,
    objective: Objective,
    params: FaroParams,
    forecaster: Box<dyn Forecaster>,
    histories: Histories,
    reactive: Reactive,
    /// Per job, the highest rate (req/s) the last predictive plan was made for: reactive
    /// sizing acts only on a measured rate above it.
    planned_peak_rps: Vec<f64>,
    /// The reasons of the last decision (see [`InferencePolicy::explain`]).
    explained: Option<Vec<Option<Explanation>>>,
}

impl Faro {
    /// `forecaster` is fitted on `data`'s past (see [`ForecasterSpec::build`]).
    pub fn new(
        name: &str,
        objective: Objective,
        params: FaroParams,
        forecaster: Box<dyn Forecaster>,
        data: &ForecastData,
    ) -> Self {
        Self {
            name: name.to_string(),
            objective,
            forecaster,
            histories: Histories::new(data),
            params,
            reactive: Reactive::default(),
            planned_peak_rps: Vec::new(),
            explained: None,
        }
    }

    /// Every job's predicted requests per second over the window at quantile `q`;
    /// `hists[i]` is what the forecaster is shown of job i.
    fn predicted_rates(&mut self, hists: &[Vec<f64>], q: f64) -> Vec<Vec<f64>> {
        let h = self.params.window_steps.max(1);
        let held = (self.params.downscale_stabilization_s / 60.0).ceil() as usize;
        hists
            .iter()
            .enumerate()
            .map(|(i, hist)| {
                let rpm = match self.params.prediction {
                    Prediction::None => vec![hist.last().copied().unwrap_or(0.0); h],
                    Prediction::Forecast => self.forecaster.forecast(i, hist, h, q),
                };
                let floor = hist.iter().rev().take(held).copied().fold(0.0, f64::max);
                rpm.iter().map(|r| r.max(floor).max(0.0) / 60.0).collect()
            })
            .collect()
    }

    /// Window steps (minutes) at the start of the window during which a scale-up of
    /// job `j` decided now does not serve yet (see `FaroParams::actuation_delay`).
    fn cold_steps(&self, view: &ClusterView<'_>, j: &JobView<'_>) -> usize {
        let full = view.free_cpus < j.cpus_per_replica;
        let ready = match j.cold_start_s {
            Some(s) if self.params.actuation_delay && s.is_finite() && s > 0.0 => {
                (s / 60.0).ceil().min(self.params.window_steps as f64) as usize
            }
            _ => 0,
        };
        if full {
            ready.max(self.params.cold_start_steps)
        } else {
            ready
        }
    }

    fn problem(&self, view: &ClusterView<'_>, rates: Vec<Vec<f64>>) -> Problem {
        let jobs = view
            .jobs
            .iter()
            .zip(rates)
            .map(|(j, rates_rps)| AllocJob {
                weight: 1.0,
                cpus_per_replica: j.cpus_per_replica,
                min_replicas: j.min_replicas.max(1),
                max_replicas: j.max_replicas.max(j.min_replicas.max(1)),
                slo_s: j.slo.latency_s * self.params.plan_slo_factor,
                percentile: j.slo.percentile,
                processing_s: processing_s(j, self.params.measured_processing),
                rates_rps,
                current: j.provisioned_replicas().max(1),
                cold_steps: self.cold_steps(view, j),
                removal_cost: self.params.move_cost,
                replica_cost: self.params.replica_cost,
            })
            .collect();
        Problem {
            capacity_cpus: view.capacity_cpus,
            jobs,
            objective: self.objective,
            utility: self.params.utility,
            model: self.model(),
        }
    }

    /// The latency model the plan (and reactive sizing) uses.
    fn model(&self) -> LatencyModel {
        (self.params.latency_model)
            .unwrap_or_else(|| default_model(self.objective))
            .model()
    }

    fn predictive(&mut self, view: &ClusterView<'_>) -> Decision {
        let mut q = self.params.quantile;
        let mut chosen: Option<(alloc::Allocation, Problem)> = None;
        // Built once: the quantile may be raised several times on the same histories.
        let hists: Vec<Vec<f64>> = (view.jobs.iter().enumerate())
            .map(|(i, j)| self.histories.of(i, j))
            .collect();
        loop {
            let rates = self.predicted_rates(&hists, q);
            let p = self.problem(view, rates);
            let Ok(a) = alloc::solve_with(&p, self.params.shrink) else {
                break;
            };
            let left = view.capacity_cpus - p.cpus_used(&a.replicas);
            chosen = Some((a, p));
            if !self.params.raise_quantile
                || left <= self.params.slack_cpus
                || q >= self.params.max_quantile - 1e-9
            {
                break;
            }
            q = (q + 0.1).min(self.params.max_quantile);
        }
        let mut d = Decision::unchanged(view.jobs.len());
        if let Some((mut a, p)) = chosen {
            if self.params.spread_leftover {
                spread_leftover(&p, &mut a.replicas);
            }
            self.explained = Some(explain_allocation(&p, &a, q));
            self.planned_peak_rps = (p.jobs.iter()).map(AllocJob::peak_rps).collect();
            d.target_replicas = a.replicas.into_iter().map(Some).collect();
            if self.objective.uses_accept_rates() {
                d.accept_rate = a.accept.into_iter().map(Some).collect();
            } else {
                d.accept_rate = vec![Some(1.0); view.jobs.len()];
            }
        }
        d
    }
}

/// Hand capacity the allocation leaves idle to the jobs, one replica at a time: first
/// back to jobs the allocation would shrink (keeping replicas where they are costs no
/// move), then each to the job whose replicas would be busiest at its predicted peak
/// (idle capacity is free headroom against forecast errors).
fn spread_leftover(p: &Problem, x: &mut [u32]) {
    let mut left = p.capacity_cpus - p.cpus_used(x);
    for keep in [true, false] {
        loop {
            let busiest = p
                .jobs
                .iter()
                .enumerate()
                .filter(|(i, j)| {
                    x[*i] < j.max_replicas
                        && j.cpus_per_replica <= left + 1e-9
                        && (!keep || x[*i] < j.current)
                })
                .map(|(i, j)| {
                    let peak = j.peak_rps();
                    (peak * j.processing_s / x[i] as f64, i)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
            let Some((_, i)) = busiest else { break };
            x[i] += 1;
            left -= p.jobs[i].cpus_per_replica;
        }
    }
}

impl Faro {
    /// Raise each job whose measured rate over the look-back needs more replicas (by the
    /// plan's latency model) than its target, as far as free capacity goes.
    fn size_to_measured_rates(
        &self,
        view: &ClusterView<'_>,
        d: &mut Decision,
    ) -> Vec<Option<String>> {
        let model = self.model();
        let lb = self.params.reactive_look_back_s;
        let mut why = vec![None; view.jobs.len()];
        let mut free = view.free_cpus;
        for (i, j) in view.jobs.iter().enumerate() {
            if let Some(t) = d.target_replicas[i] {
                free -= (t as f64 - j.target_replicas as f64) * j.cpus_per_replica;
            }
        }
        for (i, j) in view.jobs.iter().enumerate() {
            let w = self.reactive.window.delta(i, lb);
            // A window without a snapshot at its start (a policy built anew on counters
            // that ran before it) would measure the rate since the counters began.
            if w.span_s <= 0.0 || w.span_s > lb + 2.0 * self.params.interval_s || w.arrivals == 0 {
                continue;
            }
            // What the router admits (the plan may have chosen to drop some).
            let rate = w.arrivals as f64 * j.accept_rate.clamp(0.0, 1.0) / w.span_s;
            // The plan already provisioned for this much.
            if rate <= self.planned_peak_rps.get(i).copied().unwrap_or(0.0) {
                continue;
            }
            let slo = j.slo.latency_s * self.params.plan_slo_factor;
            let processing = processing_s(j, self.params.measured_processing);
            // No replica count meets an SLO shorter than a request.
            if processing.is_nan() || processing >= slo || j.cpus_per_replica <= 0.0 {
                continue;
            }
            let target = d.target_replicas[i].unwrap_or(j.target_replicas);
            let room = (free / j.cpus_per_replica).floor().max(0.0) as u32;
            let cap = (j.max_replicas.max(j.min_replicas.max(1))).min(target.saturating_add(room));
            let (need, met) =
                match replicas_for_slo(model, rate, processing, j.slo.percentile, slo, cap) {
                    Some(n) => (n, true),
                    None => (cap, false),
                };
            if need <= target {
                continue;
            }
            d.target_replicas[i] = Some(need);
            free -= (need - target) as f64 * j.cpus_per_replica;
            why[i] = Some(format!(
                "reactive sizing: {rate:.2} req/s over the last {lb} s, above the {:.2} the plan was made for, {} by the latency model ({processing:.3} s a request, {slo:.3} s planned); {need} given",
                self.planned_peak_rps.get(i).copied().unwrap_or(0.0),
                if met {
                    format!("needs {need} replicas")
                } else {
                    format!("needs more than the {need} replicas there is room for")
                }
            ));
        }
        why
    }
}

impl InferencePolicy for Faro {
    fn name(&self) -> &str {
        &self.name
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn initial_decision(&mut self, view: &ClusterView<'_>) -> Decision {
        if self.params.initial_from_forecast && self.histories.known(view.jobs.len()) {
            self.predictive(view)
        } else {
            Decision::unchanged(view.jobs.len())
        }
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        self.explained = None;
        if is_predictive_tick(view.now_s, p.first_predictive_s, p.predictive_interval_s) {
            self.reactive.restart(view, p.reactive_look_back_s);
            return self.predictive(view);
        }
        let mut d = Decision::unchanged(view.jobs.len());
        if p.reactive {
            let (lb, checks) = (p.reactive_look_back_s, p.reactive_checks);
            let donor = p.rebalance.then_some(p.donor_max_utilisation);
            self.reactive.check(view, lb, checks, donor, &mut d);
            let looped: Vec<bool> = d.target_replicas.iter().map(Option::is_some).collect();
            let sized = if p.reactive_sizing {
                self.size_to_measured_rates(view, &mut d)
            } else {
                vec![None; view.jobs.len()]
            };
            let why = format!(
                "reactive loop: mean latency over the last {lb} s above the SLO at {checks} checks in a row"
            );
            self.explained = Some(
                d.target_replicas
                    .iter()
                    .zip(sized)
                    .zip(&looped)
                    .map(|((t, sized), looped)| {
                        t.map(|_| Explanation::Reactive {
                            reason: match (sized, looped) {
                                (Some(s), true) => format!("{why}; then {s}"),
                                (Some(s), false) => s,
                                (None, _) => why.clone(),
                            },
                        })
                    })
                    .collect(),
            );
        }
        d
    }

    fn explain(&self) -> Option<Vec<Option<Explanation>>> {
        self.explained.clone()
    }
}

/// A predictive decision's reasons per job: the forecast quantile, the peak predicted
/// rate over the window, each candidate replica count near the chosen one with its
/// predicted latency at that peak (the allocation's latency model) and its utility over
/// the window, and the allocation's objective.
fn explain_allocation(p: &Problem, a: &alloc::Allocation, q: f64) -> Vec<Option<Explanation>> {
    p.jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let x = a.replicas[i];
            let peak = j.peak_rps();
            let lo = x.saturating_sub(2).max(j.min_replicas).max(1);
            let hi = (x + 2).min(j.max_replicas);
            let candidates: Vec<Candidate> = (lo..=hi)
                .map(|c| {
                    let l = p
                        .model
                        .latency_s(peak, c as f64, j.processing_s, j.percentile);
                    let u = j
                        .rates_rps
                        .iter()
                        .map(|r| {
                            let l = p
                                .model
                                .latency_s(*r, c as f64, j.processing_s, j.percentile);
                            p.utility.eval(l, j.slo_s)
                        })
                        .sum::<f64>()
                        / j.rates_rps.len().max(1) as f64;
                    Candidate {
                        replicas: c,
                        latency_s: l.is_finite().then_some(l),
                        utility: u,
                        chosen: c == x,
                    }
                })
                .collect();
            Some(Explanation::Planned {
                quantile: q,
                peak_rate_rps: peak,
                ready_after_steps: j.cold_steps,
                replicas: x,
                accept_rate: a.accept.get(i).copied(),
                candidates,
                objective: a.objective,
            })
        })
        .collect()
}

/// Parameters of the MArk-style baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkParams {
    pub interval_s: f64,
    pub predictive_interval_s: f64,
    pub first_predictive_s: f64,
    pub window_steps: usize,
    pub forecaster: ForecasterSpec,
    pub quantile: f64,
    pub reactive: bool,
    pub reactive_look_back_s: f64,
    pub reactive_checks: u32,
    /// As Faro's: size the starting deployment from the forecast of the days before.
    pub initial_from_forecast: bool,
}

impl Default for MarkParams {
    fn default() -> Self {
        Self {
            interval_s: 10.0,
            predictive_interval_s: 300.0,
            first_predictive_s: 60.0,
            window_steps: 7,
            forecaster: ForecasterSpec::of(BaseModel::Adaptive),
            quantile: 0.5,
            reactive: true,
            reactive_look_back_s: 30.0,
            reactive_checks: 3,
            initial_from_forecast: true,
        }
    }
}

/// MArk/Cocktail/Barista: every 5 minutes per job, ceil(max predicted rate over the
/// window x p / SLO) replicas (the upper-bound model), no cross-job coordination
/// (capacity goes first come first served), plus the reactive +1 loop.
pub struct Mark {
    params: MarkParams,
    forecaster: Box<dyn Forecaster>,
    histories: Histories,
    reactive: Reactive,
}

impl Mark {
    pub fn new(params: MarkParams, forecaster: Box<dyn Forecaster>, data: &ForecastData) -> Self {
        Self {
            forecaster,
            histories: Histories::new(data),
            params,
            reactive: Reactive::default(),
        }
    }
}

impl Mark {
    /// Every job's replicas for its peak forecast rate over the window.
    fn predictive(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        let mut d = Decision::unchanged(view.jobs.len());
        for (i, j) in view.jobs.iter().enumerate() {
            let peak_rpm =
                self.histories
                    .peak_rpm(&mut *self.forecaster, i, j, p.window_steps, p.quantile);
            let x = (peak_rpm / 60.0 * j.processing_time_s / j.slo.latency_s).ceil() as u32;
            d.target_replicas[i] = Some(x.clamp(j.min_replicas.max(1), j.max_replicas));
        }
        d
    }
}

impl InferencePolicy for Mark {
    fn name(&self) -> &str {
        "mark"
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn initial_decision(&mut self, view: &ClusterView<'_>) -> Decision {
        if self.params.initial_from_forecast && self.histories.known(view.jobs.len()) {
            self.predictive(view)
        } else {
            Decision::unchanged(view.jobs.len())
        }
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        if is_predictive_tick(view.now_s, p.first_predictive_s, p.predictive_interval_s) {
            self.reactive.restart(view, p.reactive_look_back_s);
            return self.predictive(view);
        }
        let mut d = Decision::unchanged(view.jobs.len());
        if p.reactive {
            let (lb, checks) = (p.reactive_look_back_s, p.reactive_checks);
            self.reactive.check(view, lb, checks, None, &mut d);
        }
        d
    }
}

/// The forecast floor of HPA (`hpa` with `forecast`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HpaForecast {
    /// The forecast quantile of each minute's rate.
    pub quantile: f64,
    /// Minutes ahead whose highest forecast the floor covers.
    pub window_steps: usize,
    pub forecaster: ForecasterSpec,
}

impl Default for HpaForecast {
    fn default() -> Self {
        Self {
            quantile: 0.9,
            window_steps: 3,
            forecaster: ForecasterSpec::calibrated(BaseModel::Ensemble),
        }
    }
}

/// HPA with a forecast floor: each minute, every job's replicas for the `quantile`
/// forecast of its highest rate over the next `window_steps` minutes at HPA's target
/// utilisation (`rate x processing_time_s / target`); the target is never below the
/// floor, so replicas start before a forecast rise instead of after the utilisation
/// shows it, and HPA's reactive rule covers what the forecast misses. CPU metric only.
pub struct ForecastHpa {
    hpa: crate::baselines::Hpa,
    params: crate::baselines::HpaParams,
    forecast: HpaForecast,
    forecaster: Box<dyn Forecaster>,
    histories: Histories,
    /// The minute the floors were computed for, and the floors.
    minute: Option<usize>,
    floors: Vec<u32>,
}

impl ForecastHpa {
    pub fn new(
        params: crate::baselines::HpaParams,
        forecast: HpaForecast,
        forecaster: Box<dyn Forecaster>,
        data: &ForecastData,
    ) -> Self {
        Self {
            hpa: crate::baselines::Hpa::new(params.clone()),
            params,
            forecast,
            forecaster,
            histories: Histories::new(data),
            minute: None,
            floors: Vec::new(),
        }
    }
}

impl InferencePolicy for ForecastHpa {
    fn name(&self) -> &str {
        "hpa"
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let mut d = self.hpa.decide(view);
        let minute = (view.now_s / 60.0).floor() as usize;
        if self.minute != Some(minute) {
            self.minute = Some(minute);
            let f = &self.forecast;
            self.floors = view
                .jobs
                .iter()
                .enumerate()
                .map(|(i, j)| {
                    let peak_rpm = self.histories.peak_rpm(
                        &mut *self.forecaster,
                        i,
                        j,
                        f.window_steps,
                        f.quantile,
                    );
                    let x = peak_rpm / 60.0 * j.processing_time_s / self.params.target;
                    if x.is_finite() {
                        x.ceil().min(u32::MAX as f64) as u32
                    } else {
                        0
                    }
                })
                .collect();
        }
        for (i, j) in view.jobs.iter().enumerate() {
            let floor = crate::baselines::clamp_capped(
                j,
                self.floors.get(i).copied().unwrap_or(0),
                self.params.max_replicas,
            );
            let planned = d.target_replicas[i].unwrap_or(j.target_replicas);
            if floor > planned {
                d.target_replicas[i] = Some(floor);
            }
        }
        d
    }
}
