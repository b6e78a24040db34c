//! The live autoscaler: the configured inference policy, driven by the same
//! [`PolicyDriver`] as the simulator (tick schedule, clamping and trimming to the
//! capacity, accept-rate sanitising), shown the routers' live counters.

use super::*;
use pharos_policy::{OverCapacity, PolicyDriver, Step};

pub(super) struct Autoscaler {
    driver: PolicyDriver<Box<dyn InferencePolicy>>,
    /// The services it was built for, in view order.
    pub(super) names: Vec<String>,
    /// The forecaster fit its policy was built on ([`learning::Learner::generation`]).
    pub(super) generation: u64,
    started: Instant,
}

impl Autoscaler {
    pub(super) fn new(
        policy: Box<dyn InferencePolicy>,
        over: OverCapacity,
        names: Vec<String>,
        generation: u64,
    ) -> Self {
        Self {
            driver: PolicyDriver::new(policy, over),
            names,
            generation,
            started: Instant::now(),
        }
    }

    pub(super) fn interval_s(&self) -> f64 {
        self.driver.interval_s()
    }

    /// The policy time of the call due now, if one is: 0 for the initial decision, else
    /// the latest tick due (a loop that fell behind skips to it).
    fn due(&self) -> Option<f64> {
        if self.driver.initial_pending() {
            Some(0.0)
        } else {
            self.driver.due(self.started.elapsed().as_secs_f64())
        }
    }

    /// One call of the policy on `view` (at the time [`Autoscaler::due`] gave) and what
    /// the driver made of it. At the initial call each service's configured target is
    /// its current one.
    pub(super) fn step(&mut self, view: &ClusterView<'_>) -> Step {
        if self.driver.initial_pending() {
            let configured: Vec<u32> = view.jobs.iter().map(|j| j.target_replicas).collect();
            self.driver.initial(view, &configured)
        } else {
            self.driver.decide(view)
        }
    }
}

/// A decision that changed something, with what the policy was shown.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DecisionRecord {
    pub time_ms: i64,
    pub policy_time_s: f64,
    pub initial: bool,
    pub capacity_cpus: f64,
    pub free_cpus: f64,
    pub decide_seconds: f64,
    pub services: Vec<ServiceDecision>,
}

/// One service's part of a [`DecisionRecord`].
#[derive(Debug, Clone, Serialize)]
pub(super) struct ServiceDecision {
    pub service: String,
    pub ready_replicas: u32,
    pub starting_replicas: u32,
    pub target_before: u32,
    pub queued: u32,
    pub in_flight: u32,
    pub accept_rate_before: f64,
    pub arrivals: u64,
    pub completed: u64,
    pub dropped: u64,
    pub last_minute_arrivals: Option<u32>,
    pub replica_state_age_s: Option<f64>,
    pub explanation: Option<pharos_core::Explanation>,
    pub target_after: u32,
    pub accept_rate_after: f64,
}

/// The policy's view of service `s` with router statistics `st`.
pub(super) fn job_view<'a>(name: &'a str, s: &'a Svc, st: &crate::router::Stats) -> JobView<'a> {
    let c = &st.counters;
    JobView {
        name,
        slo: s.spec.slo,
        processing_time_s: s.spec.processing_time_s,
        cpus_per_replica: s.cpus(),
        min_replicas: s.spec.min_replicas,
        max_replicas: s.spec.max_replicas,
        max_concurrent: s.spec.max_concurrent,
        target_replicas: s.target,
        ready_replicas: s.count(Phase::Ready),
        starting_replicas: s.count(Phase::Starting),
        queued: st.queued as u32,
        in_flight: st.in_flight as u32,
        accept_rate: st.accept_rate,
        counters: JobCounters {
            arrivals: c.arrivals,
            dropped: c.dropped,
            completed: c.completed,
            latency_sum_s: c.latency_sum_s,
            ongoing_req_s: c.ongoing_req_s,
            busy_replica_s: c.busy_replica_s,
            ready_replica_s: c.ready_replica_s,
        },
        minute_arrivals: &s.hist.series.counts,
        cold_start_s: s.cold_starts.expected_s(),
    }
}

/// (Re)builds the autoscaler when the set of services changed; false when there is none.
fn ensure_built(state: &AppState, g: &mut Inner) -> bool {
    let names = learning::service_names(g);
    if names.is_empty() {
        g.autoscaler = None;
        return false;
    }
    let generation = g.learn.generation;
    let same = g.autoscaler.as_ref().is_some_and(|a| a.names == names);
    if same
        && g.autoscaler
            .as_ref()
            .is_some_and(|a| a.generation == generation)
    {
        return true;
    }
    let cfg = &state.config.autoscaler;
    // The forecaster fitted in the background for these services, if there is one.
    let day = state.config.forecast.day_minutes as usize;
    let forecast = match g.learn.fit.as_ref().filter(|f| f.names == names) {
        Some(f) => {
            pharos_forecast::ForecastData::prefitted(f.spec, f.model.lock_or_recover().clone(), day)
        }
        None => pharos_forecast::ForecastData {
            day_minutes: Some(day),
            ..Default::default()
        },
    };
    let ctx = pharos_policy::PolicyContext { forecast };
    match pharos_policy::build_with(&cfg.policy, &cfg.params, &ctx) {
        Ok(policy) if same => {
            // A new fit: the same schedule, the policy rebuilt on it.
            let a = g.autoscaler.as_mut().expect("same services");
            a.driver.replace_policy(policy);
            a.generation = generation;
            true
        }
        Ok(policy) => {
            g.autoscaler = Some(Autoscaler::new(
                policy,
                cfg.over_capacity,
                names,
                generation,
            ));
            true
        }
        Err(e) => {
            warn!("autoscaler: {e}");
            false
        }
    }
}

/// Calls the policy when it is due and applies the driver's targets and accept rates.
pub(super) fn autoscale(state: &AppState, g: &mut Inner, events: &mut Events) {
    if !ensure_built(state, g) {
        return;
    }
    let capacity = state.services.capacity_left(state);
    let free = capacity - held(g);
    let Some(now_s) = g.autoscaler.as_ref().and_then(Autoscaler::due) else {
        return;
    };
    let a = g.autoscaler.as_mut().expect("built above");
    let names = a.names.clone();
    let stats: Vec<_> = names.iter().map(|n| g.svcs[n].router.stats()).collect();
    // How old the replica states the policy is shown are (Ray: Serve's last answer;
    // local replicas are probed in the same pass).
    let ages: Vec<Option<f64>> = names
        .iter()
        .map(|n| g.svcs[n].remote.seen.map(|t| t.elapsed().as_secs_f64()))
        .collect();
    for a in ages.iter().flatten() {
        g.state_age.count += 1;
        g.state_age.sum_s += a;
        g.state_age.max_s = g.state_age.max_s.max(*a);
    }
    let views: Vec<JobView<'_>> = names
        .iter()
        .zip(&stats)
        .map(|(n, st)| job_view(n, &g.svcs[n], st))
        .collect();
    let view = ClusterView {
        now_s,
        capacity_cpus: capacity,
        free_cpus: free,
        jobs: &views,
    };
    let t0 = Instant::now();
    let step = a.step(&view);
    let took_s = t0.elapsed().as_secs_f64();
    state.metrics.record_decision(took_s);
    let explained = if step.decision.is_unchanged() {
        None
    } else {
        a.driver.explain()
    };
    // What the policy was shown, for the record of a decision that changes something.
    let mut shown: Vec<ServiceDecision> = if step.decision.is_unchanged() {
        Vec::new()
    } else {
        views
            .iter()
            .enumerate()
            .map(|(i, j)| ServiceDecision {
                service: j.name.to_string(),
                ready_replicas: j.ready_replicas,
                starting_replicas: j.starting_replicas,
                target_before: j.target_replicas,
                queued: j.queued,
                in_flight: j.in_flight,
                accept_rate_before: j.accept_rate,
                arrivals: j.counters.arrivals,
                completed: j.counters.completed,
                dropped: j.counters.dropped,
                last_minute_arrivals: j.minute_arrivals.last().copied(),
                replica_state_age_s: ages[i],
                explanation: explained.as_ref().and_then(|e| e.get(i)).cloned().flatten(),
                target_after: j.target_replicas,
                accept_rate_after: j.accept_rate,
            })
            .collect()
    };
    drop(views);
    g.calls += 1;
    g.last_call_ms = Some(now_ms());
    for (i, n) in names.iter().enumerate() {
        let s = g.svcs.get_mut(n).expect("listed");
        let t = s.allowed_target(step.targets[i]);
        if t != s.target {
            events.push((
                n.clone(),
                "scaled",
                format!(
                    "target {} -> {t} replicas ({})",
                    s.target, state.config.autoscaler.policy
                ),
            ));
            s.set_target(t);
        }
        if let Some(r) = step.accept_rate[i] {
            s.router.set_accept_rate(r);
        }
        if let Some(v) = shown.get_mut(i) {
            v.target_after = s.target;
            v.accept_rate_after = s.router.stats().accept_rate;
        }
    }
    if !shown.is_empty() {
        if g.decisions.len() >= DECISIONS_KEPT {
            g.decisions.pop_front();
        }
        g.decisions.push_back(DecisionRecord {
            time_ms: now_ms(),
            policy_time_s: now_s,
            initial: step.initial,
            capacity_cpus: capacity,
            free_cpus: free,
            decide_seconds: took_s,
            services: shown,
        });
    }
}

#[cfg(test)]
mod tests {
    //! The simulator and the server drive a policy through the same driver: the
    //! observations the simulator showed its policy, replayed through the server's
    //! autoscaler with a fresh policy of the same kind, give the steps the simulator
    //! took (seen in its next observation: the targets and accept rates it applied).
    use super::*;
    use pharos_sim::{ClusterConfig, Dist, SimConfig, SimJob, Simulation};
    use std::sync::{Arc, Mutex as StdMutex};

    /// An observation kept past the call (names and minute counts leaked: a test).
    struct Seen {
        now_s: f64,
        capacity_cpus: f64,
        free_cpus: f64,
        initial: bool,
        jobs: Vec<JobView<'static>>,
    }

    fn keep(v: &ClusterView<'_>, initial: bool) -> Seen {
        Seen {
            now_s: v.now_s,
            capacity_cpus: v.capacity_cpus,
            free_cpus: v.free_cpus,
            initial,
            jobs: v
                .jobs
                .iter()
                .map(|j| JobView {
                    name: Box::leak(j.name.to_string().into_boxed_str()),
                    minute_arrivals: Box::leak(j.minute_arrivals.to_vec().into_boxed_slice()),
                    ..*j
                })
                .collect(),
        }
    }

    /// The policy it wraps, with every observation it is shown kept.
    struct Recording {
        inner: Box<dyn InferencePolicy>,
        seen: Arc<StdMutex<Vec<Seen>>>,
    }

    impl InferencePolicy for Recording {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn interval_s(&self) -> f64 {
            self.inner.interval_s()
        }
        fn first_call_s(&self) -> f64 {
            self.inner.first_call_s()
        }
        fn initial_decision(&mut self, view: &ClusterView<'_>) -> pharos_core::Decision {
            self.seen.lock().unwrap().push(keep(view, true));
            self.inner.initial_decision(view)
        }
        fn decide(&mut self, view: &ClusterView<'_>) -> pharos_core::Decision {
            self.seen.lock().unwrap().push(keep(view, false));
            self.inner.decide(view)
        }
    }

    fn sim_config(capacity: f64) -> SimConfig {
        // Three jobs with bursty minutes, more load at the peaks than the capacity holds.
        let minutes = 30;
        let jobs = (0..3u32)
            .map(|k| SimJob {
                name: format!("job{k}"),
                slo: pharos_core::Slo::p99(0.4),
                processing_time_s: 0.1,
                cpus_per_replica: 1.0,
                max_concurrent: 1,
                max_queue: 1000,
                min_replicas: 1,
                max_replicas: 20,
                initial_replicas: 2 + k,
                service_time: Dist::Exponential { mean_s: 0.1 },
                batch_service: Vec::new(),
                router_delay: Dist::Constant { value_s: 0.0 },
                requests_per_min: (0..minutes)
                    .map(|m| (200 + 150 * k + if (m / 5 + k) % 3 == 0 { 2500 } else { 0 }) as f64)
                    .collect(),
            })
            .collect();
        SimConfig {
            jobs,
            cluster: ClusterConfig::with_capacity(capacity),
            arrivals: Default::default(),
            utility_alpha: 1.0,
            seed: 7,
        }
    }

    #[test]
    fn the_server_takes_the_simulators_steps_on_the_same_observations() {
        let mut all_trimmed = 0;
        for (policy, params) in [
            ("hpa", serde_json::json!({})),
            ("aiad", serde_json::json!({})),
            ("kpa", serde_json::json!({})),
            ("faro-fairsum", serde_json::json!({})),
        ] {
            let seen = Arc::new(StdMutex::new(Vec::new()));
            let recording = Recording {
                inner: pharos_policy::build(policy, &params).unwrap(),
                seen: seen.clone(),
            };
            let mut sim = Simulation::new(sim_config(12.0), recording).unwrap();
            sim.run_until(30.0 * 60.0);
            let seen = std::mem::take(&mut *seen.lock().unwrap());
            assert!(seen.len() > 20, "{policy}: {} calls", seen.len());
            // The server's autoscaler, with a fresh policy of the same kind.
            let mut server = Autoscaler::new(
                pharos_policy::build(policy, &params).unwrap(),
                OverCapacity::Trim,
                vec!["job0".into(), "job1".into(), "job2".into()],
                0,
            );
            let (mut moved, mut trimmed) = (0, 0);
            for (o, next) in seen.iter().zip(seen.iter().skip(1)) {
                let view = ClusterView {
                    now_s: o.now_s,
                    capacity_cpus: o.capacity_cpus,
                    free_cpus: o.free_cpus,
                    jobs: &o.jobs,
                };
                assert_eq!(o.initial, server.driver.initial_pending(), "{policy}");
                if !o.initial {
                    // The server's loop, woken a little late, is due the same tick.
                    assert_eq!(
                        server.driver.due(o.now_s + 0.013),
                        Some(o.now_s),
                        "{policy}"
                    );
                }
                let step = server.step(&view);
                let at = format!("{policy} at t={}", o.now_s);
                for (i, j) in next.jobs.iter().enumerate() {
                    assert_eq!(step.targets[i], j.target_replicas, "{at}: {}", j.name);
                    let rate = step.accept_rate[i].unwrap_or(o.jobs[i].accept_rate);
                    assert_eq!(rate, j.accept_rate, "{at}: {}", j.name);
                }
                if step
                    .targets
                    .iter()
                    .zip(&o.jobs)
                    .any(|(t, j)| *t != j.target_replicas)
                {
                    moved += 1;
                }
                let wanted = step.decision.target_replicas.iter().zip(&o.jobs);
                if wanted.clone().zip(&step.targets).any(|((w, j), t)| {
                    w.is_some_and(|w| w.clamp(j.min_replicas, j.max_replicas) != *t)
                }) {
                    trimmed += 1;
                }
                if let Some(next_call) = server.driver.next_call_s() {
                    assert_eq!(next_call, next.now_s, "{at}");
                }
            }
            // The replay compared decisions that moved targets, and some the capacity cut.
            assert!(moved > 0, "{policy}: no decision changed a target");
            eprintln!(
                "{policy}: {} calls, {moved} moved, {trimmed} trimmed",
                seen.len()
            );
            all_trimmed += trimmed;
        }
        // Some wanted targets did not fit: the capacity rule was exercised too.
        assert!(all_trimmed > 0);
    }
}
