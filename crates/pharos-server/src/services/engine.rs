//! The services loop's side of the [`ServiceEngine`] seam (the trait is in
//! `pharos-engine`; the engines are `pharos-local`, `pharos-ray` and `pharos-kube`).
//!
//! Every pass the services loop hands the engine each service's wanted state (its spec,
//! the autoscaler's target, whether it is being deleted, the vCPUs free for it, what
//! its router has in flight at each replica) and gets back what runs: each replica's
//! phase and, for ready ones, where the router sends requests. The engine
//! owns everything about its API (what to create, scale or delete, and what it has
//! already said); the loop owns the routers, the autoscaler and the events. While the
//! engine cannot be reached the last known replicas are kept, each service is told once
//! (`engine-unavailable`), and the loop retries after 1 s, 2 s, 4 s ... 30 s.

use super::*;
use pharos_engine::host::Backoff;
use pharos_engine::service::{EngineReplica, ReplicaProcess, ServiceEngine, Want};

/// What the engine last reported of one service.
#[derive(Default)]
pub(super) struct RemoteSvc {
    /// Its replicas, as reported.
    pub replicas: Vec<EngineReplica>,
    /// The engine holds something of it (as of the last look).
    pub present: bool,
    pub status: String,
    pub message: String,
    /// Its replicas keep failing to start, and how (see `Report::failing`).
    pub failing: Option<String>,
    /// When the engine was last read.
    pub seen: Option<Instant>,
    /// The service was told the engine is unreachable (and will be told when it
    /// answers).
    pub told_unavailable: bool,
}

#[derive(Default)]
pub(super) struct EngineLoop {
    failures: u32,
    next_try: Option<Instant>,
}

pub(super) async fn sync(state: &AppState, engine: &dyn ServiceEngine, events: &mut Events) {
    let services = &state.services;
    let wants: Vec<Want> = {
        let g = services.inner.lock().await;
        // Asked even without services: the engine may have leftovers to clean up.
        if g.engine.next_try.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let capacity_cpus = state.services.capacity_left(state);
        g.svcs
            .values()
            .map(|s| Want {
                name: s.spec.name.clone(),
                spec: ServiceSpec {
                    cpus: s.cpus(),
                    ..s.spec.clone()
                },
                target: s.target,
                deleting: s.deleting,
                capacity_cpus,
                in_flight: s.router.in_flight_by_replica(),
                run_as: s.run_as,
            })
            .collect()
    };
    let result = engine.sync(&wants).await;
    if let Some(nodes) = engine.nodes() {
        services.set_cluster(nodes);
    }
    let seen = Instant::now();
    let mut g = services.inner.lock().await;
    let reports = match result {
        Ok(r) => r,
        Err(e) => {
            g.engine.failures += 1;
            let n = g.engine.failures;
            g.engine.next_try = Some(seen + Backoff::seconds(30).after(n));
            warn!(failures = n, engine = engine.name(), "{e}");
            for s in g
                .svcs
                .values_mut()
                .filter(|s| !s.deleting && !s.remote.told_unavailable)
            {
                s.remote.told_unavailable = true;
                events.push((
                    s.spec.name.clone(),
                    engine.event_kinds().0,
                    format!("{e}; keeping the last known replicas, retrying with back-off"),
                ));
            }
            return;
        }
    };
    let failures = std::mem::take(&mut g.engine.failures);
    g.engine.next_try = None;
    for s in g.svcs.values_mut() {
        let name = s.spec.name.clone();
        if s.remote.told_unavailable {
            s.remote.told_unavailable = false;
            events.push((
                name.clone(),
                engine.event_kinds().1,
                format!(
                    "{} answers again after {failures} failed pass(es)",
                    engine.name()
                ),
            ));
        }
        // A service applied while the engine was being asked has no report yet.
        let Some(r) = reports.iter().find(|r| r.name == name) else {
            continue;
        };
        for (kind, message) in &r.events {
            events.push((name.clone(), kind, message.clone()));
        }
        for rep in &r.replicas {
            let was = s
                .remote
                .replicas
                .iter()
                .find(|x| x.id == rep.id)
                .map(|x| x.phase);
            if rep.phase == Phase::Ready && was != Some(Phase::Ready) {
                let how = match &rep.process {
                    Some(p) if p.adopted => " (adopted)".to_string(),
                    Some(ReplicaProcess {
                        cold_start_s: Some(c),
                        ..
                    }) => {
                        s.cold_starts.push(*c);
                        format!(" after {c:.3} s (cold start)")
                    }
                    _ => String::new(),
                };
                let message = match &rep.process {
                    Some(p) if p.adopted => format!("replica {}{how} ready", rep.id),
                    _ => format!("replica {} ready{how}", rep.id),
                };
                events.push((name.clone(), "ready", message));
            }
        }
        s.remote.present = r.present;
        s.remote.seen = Some(seen);
        s.remote.status = r.status.clone();
        s.remote.message = r.message.clone();
        match (&s.remote.failing, &r.failing) {
            (None, Some(why)) => events.push((
                name.clone(),
                "crash-loop",
                format!("{why}; its target is not raised until a replica is ready"),
            )),
            (Some(_), None) => events.push((
                name.clone(),
                "recovered",
                "a replica started; the crash loop is over".into(),
            )),
            _ => {}
        }
        s.remote.failing = r.failing.clone();
        s.remote.replicas = r.replicas.clone();
        if !s.deleting {
            let urls: Vec<String> = r
                .replicas
                .iter()
                .filter(|rep| rep.phase == Phase::Ready)
                .filter_map(|rep| rep.url.clone())
                .collect();
            s.router.set_replicas(&urls);
        }
    }
}
