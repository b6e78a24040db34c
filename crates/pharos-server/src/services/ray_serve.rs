//! Services on Ray Serve. Each service is a Serve application (route prefix
//! `/<name>`, `external_scaler_enabled`) whose deployment's replica count pharos sets
//! through Serve's external scaling endpoint; pharos's router stays in front of Serve's
//! HTTP proxy, so the autoscaler reads the same counters as with local replicas.
//!
//! Every pass reads Serve's state (`GET /api/serve/applications/`) once: replicas
//! `RUNNING` take traffic (the router has one entry per running replica, all at the
//! proxy), others start or stop. Serve's config is declarative and covers every
//! application, so a deploy sends pharos's applications together with the ones pharos
//! does not own, as Serve reported them. An application that disappears from Serve
//! behind pharos's back is deployed again (with an event); Ray unreachable is an event
//! per service and a back-off (1 s, 2 s, ... 30 s), with the last known replicas kept.

use super::*;
use crate::ray::{RayClient, RayError};

/// What Serve last said about one service's application.
#[derive(Default)]
pub(super) struct RaySvc {
    /// The uploaded `working_dir` package.
    pub working_dir: Option<String>,
    /// Serve's replicas: id and phase.
    pub replicas: Vec<(String, Phase)>,
    /// Serve has the application (as of the last look).
    pub present: bool,
    /// pharos deployed it (so its absence means someone removed it).
    pub deployed: bool,
    /// The application config pharos last deployed (without the replica count).
    pub put: Option<Value>,
    pub status: String,
    pub message: String,
    /// When Serve's state was read.
    pub seen: Option<Instant>,
    /// The service was told Ray is unreachable (and will be told when it answers).
    pub told_unavailable: bool,
    /// A config Serve refused (not sent again until the spec changes).
    pub refused: Option<Value>,
    /// A working_dir that could not be packed (said once).
    pub package_error: Option<String>,
    /// When the deploy without this deleted service's application was last sent.
    pub removal_sent: Option<Instant>,
}

#[derive(Default)]
pub(super) struct RayLoop {
    failures: u32,
    next_try: Option<Instant>,
}

/// One service as the loop needs it, taken under the lock.
struct Want {
    name: String,
    spec: ServiceSpec,
    target: u32,
    deleting: bool,
    working_dir: Option<String>,
    put: Option<Value>,
    deployed: bool,
    refused: Option<Value>,
    /// Packing its working_dir failed this pass.
    package_error: Option<String>,
    removal_due: bool,
}

/// The application config of a service (the replica count is added when deploying).
fn app_config(spec: &ServiceSpec, working_dir: Option<&str>) -> Value {
    let app = spec.ray.as_ref().expect("a Ray service");
    let mut runtime_env = json!({ "env_vars": spec.env });
    if let Some(w) = working_dir {
        runtime_env["working_dir"] = json!(w);
    }
    let mut actor = json!({ "num_cpus": spec.cpus });
    if spec.gpus > 0 {
        actor["num_gpus"] = json!(spec.gpus);
    }
    json!({
        "name": spec.name,
        "route_prefix": format!("/{}", spec.name),
        "import_path": app.import_path,
        "runtime_env": runtime_env,
        "external_scaler_enabled": true,
        "deployments": [{
            "name": app.deployment,
            "max_ongoing_requests": spec.max_concurrent,
            "ray_actor_options": actor,
        }],
    })
}

/// Whether Serve's deployed config of an application is `cfg` (up to the replica count
/// and the defaults Serve fills in).
fn same_app(deployed: &Value, cfg: &Value) -> bool {
    let (d, c) = (&deployed["deployments"][0], &cfg["deployments"][0]);
    let num = |v: &Value| v.as_f64();
    deployed["import_path"] == cfg["import_path"]
        && deployed["route_prefix"] == cfg["route_prefix"]
        && deployed["runtime_env"]["working_dir"] == cfg["runtime_env"]["working_dir"]
        && deployed["runtime_env"]["env_vars"] == cfg["runtime_env"]["env_vars"]
        && deployed["external_scaler_enabled"] == cfg["external_scaler_enabled"]
        && d["name"] == c["name"]
        && num(&d["max_ongoing_requests"]) == num(&c["max_ongoing_requests"])
        && num(&d["ray_actor_options"]["num_cpus"]) == num(&c["ray_actor_options"]["num_cpus"])
        && num(&d["ray_actor_options"]["num_gpus"]).unwrap_or(0.0)
            == num(&c["ray_actor_options"]["num_gpus"]).unwrap_or(0.0)
}

fn phase_of(state: &str) -> Option<Phase> {
    match state {
        "RUNNING" => Some(Phase::Ready),
        "STARTING" | "UPDATING" | "RECOVERING" | "PENDING_MIGRATION" => Some(Phase::Starting),
        "STOPPING" => Some(Phase::Stopping),
        _ => None,
    }
}

/// Serve's HTTP options from the proxy URL pharos's routers use.
fn http_options(serve_url: &str) -> Value {
    let hostport = serve_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().unwrap_or(8000)),
        None => (hostport, 80),
    };
    json!({ "host": host, "port": port })
}

/// Ray failed: an event per service for the first failure of a streak, then a back-off.
async fn failed(state: &AppState, what: &str, e: &RayError, events: &mut Events) {
    let mut g = state.services.inner.lock().await;
    g.ray.failures += 1;
    let n = g.ray.failures;
    let wait = Duration::from_secs((1u64 << (n - 1).min(5)).min(30));
    g.ray.next_try = Some(Instant::now() + wait);
    warn!(failures = n, "{what}: {e}");
    for s in g
        .svcs
        .values_mut()
        .filter(|s| !s.deleting && !s.remote.told_unavailable)
    {
        s.remote.told_unavailable = true;
        events.push((
            s.spec.name.clone(),
            "ray-unavailable",
            format!("{what}: {e}; keeping the last known replicas, retrying with back-off"),
        ));
    }
}

pub(super) async fn sync(state: &AppState, client: &RayClient, events: &mut Events) {
    let services = &state.services;
    let mut wants: Vec<Want> = {
        let g = services.inner.lock().await;
        if g.svcs.is_empty() || g.ray.next_try.is_some_and(|t| Instant::now() < t) {
            return;
        }
        g.svcs
            .values()
            .map(|s| Want {
                name: s.spec.name.clone(),
                spec: s.spec.clone(),
                target: s.target,
                deleting: s.deleting,
                working_dir: s.remote.working_dir.clone(),
                put: s.remote.put.clone(),
                deployed: s.remote.deployed,
                refused: s.remote.refused.clone(),
                package_error: None,
                // Sent again every 10 s while Serve still lists the application.
                removal_due: s
                    .remote
                    .removal_sent
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10)),
            })
            .collect()
    };
    // The code of new applications.
    for w in wants
        .iter_mut()
        .filter(|w| !w.deleting && w.working_dir.is_none())
    {
        if let Some(dir) = w.spec.ray.as_ref().and_then(|r| r.working_dir.clone()) {
            match client.upload_dir(Path::new(&dir)).await {
                Ok(uri) => w.working_dir = Some(uri),
                // This service's own problem: it waits, the others go on.
                Err(e @ (RayError::Package(_) | RayError::Status(400..=499, _))) => {
                    w.package_error = Some(e.to_string());
                }
                Err(e) => return failed(state, "uploading the working_dir", &e, events).await,
            }
        }
    }
    let details = match client.serve_details().await {
        Ok(d) => d,
        Err(e) => return failed(state, "reading Serve's applications", &e, events).await,
    };
    let seen = Instant::now();
    let empty = serde_json::Map::new();
    let apps = details["applications"].as_object().unwrap_or(&empty);
    // What should run; whether Serve's config must be sent again.
    let desired: Vec<(&Want, Value)> = wants
        .iter()
        .filter(|w| {
            !w.deleting
                && (w.working_dir.is_some()
                    || w.spec.ray.as_ref().is_some_and(|r| r.working_dir.is_none()))
        })
        .map(|w| (w, app_config(&w.spec, w.working_dir.as_deref())))
        // A config Serve refused stays out until its spec changes.
        .filter(|(w, cfg)| w.refused.as_ref() != Some(cfg))
        .collect();
    let mut redeploy = Vec::new();
    let mut adopt = Vec::new();
    // A deleted service's application leaves with a deploy without it (Serve may take a
    // while to remove it: the deploy is repeated every 10 s meanwhile, not every pass).
    let mut need_put = wants
        .iter()
        .any(|w| w.deleting && w.removal_due && apps.contains_key(&w.name));
    for (w, cfg) in &desired {
        if !apps.contains_key(&w.name) {
            if w.deployed {
                redeploy.push(w.name.clone());
            }
            need_put = true;
        } else if w.put.as_ref() != Some(cfg) {
            if w.put.is_none() && same_app(&apps[&w.name]["deployed_app_config"], cfg) {
                // Deployed by a previous server: adopted as it is.
                adopt.push(w.name.clone());
            } else {
                need_put = true;
            }
        }
    }
    let mut put_ok = false;
    let mut refused_now: Vec<(String, Value, String)> = Vec::new();
    if need_put {
        let mut list: Vec<Value> = desired
            .iter()
            .map(|(w, cfg)| {
                let mut c = cfg.clone();
                c["deployments"][0]["num_replicas"] = json!(w.target);
                c
            })
            .collect();
        // Applications pharos does not own stay as Serve has them.
        for (name, a) in apps {
            if !wants.iter().any(|w| &w.name == name)
                && let Some(c) = a.get("deployed_app_config").filter(|c| !c.is_null())
            {
                list.push(c.clone());
            }
        }
        let config = json!({
            "http_options": http_options(&state.config.ray.serve_url),
            "applications": list,
        });
        match client.put_serve_config(&config).await {
            Ok(()) => put_ok = true,
            Err(e @ RayError::Status(400..=499, _)) => {
                // Refused (a bad import path, say): the applications whose config is
                // new are held back until their spec changes; said once.
                for (w, cfg) in desired
                    .iter()
                    .filter(|(w, cfg)| w.put.as_ref() != Some(cfg))
                {
                    refused_now.push((w.name.clone(), cfg.clone(), e.to_string()));
                }
            }
            Err(e) => return failed(state, "deploying Serve's applications", &e, events).await,
        }
    }
    if !need_put {
        // Replica counts through the external scaler.
        for (w, _) in &desired {
            let dep = &w.spec.ray.as_ref().expect("a Ray service").deployment;
            // Not there yet while Serve deploys it (it gets the count from the config).
            let Some(current) = apps[&w.name]["deployments"][dep]["target_num_replicas"].as_u64()
            else {
                continue;
            };
            if current == w.target as u64 {
                continue;
            }
            match client.scale(&w.name, dep, w.target).await {
                Ok(()) => {}
                Err(e @ RayError::Unreachable(..)) => {
                    return failed(state, "scaling", &e, events).await;
                }
                Err(e) => warn!(service = w.name, "scaling to {}: {e}", w.target),
            }
        }
    }
    let mut g = services.inner.lock().await;
    let n = g.ray.failures;
    for s in g.svcs.values_mut().filter(|s| s.remote.told_unavailable) {
        s.remote.told_unavailable = false;
        events.push((
            s.spec.name.clone(),
            "ray-available",
            format!("Ray answers again after {n} failed call(s)"),
        ));
    }
    g.ray = RayLoop::default();
    for (name, cfg, e) in refused_now {
        if let Some(s) = g.svcs.get_mut(&name) {
            s.remote.refused = Some(cfg);
            events.push((
                name,
                "deploy-failed",
                format!("Serve refused the application: {e}"),
            ));
        }
    }
    for w in &wants {
        if let Some(s) = g.svcs.get_mut(&w.name) {
            if w.package_error.is_some() && s.remote.package_error != w.package_error {
                events.push((
                    w.name.clone(),
                    "deploy-failed",
                    format!(
                        "the working_dir cannot be sent to Ray: {}",
                        w.package_error.as_deref().unwrap_or("")
                    ),
                ));
            }
            s.remote.package_error = w.package_error.clone();
        }
    }
    let serve_url = state.config.ray.serve_url.trim_end_matches('/').to_string();
    for s in g.svcs.values_mut() {
        let name = s.spec.name.clone();
        if let Some(w) = wants.iter().find(|w| w.name == name) {
            s.remote.working_dir = w.working_dir.clone().or(s.remote.working_dir.take());
        }
        if adopt.contains(&name)
            && let Some((_, cfg)) = desired.iter().find(|(w, _)| w.name == name)
        {
            events.push((
                name.clone(),
                "adopted",
                "the application Serve runs is adopted after a restart".into(),
            ));
            s.remote.put = Some(cfg.clone());
            s.remote.deployed = true;
        }
        if put_ok && let Some((_, cfg)) = desired.iter().find(|(w, _)| w.name == name) {
            if redeploy.contains(&name) {
                events.push((
                    name.clone(),
                    "redeployed",
                    "the application was removed from Serve behind pharos's back; deployed again"
                        .into(),
                ));
            } else if s.remote.put.is_none() {
                events.push((
                    name.clone(),
                    "deployed",
                    format!("deployed to Ray Serve as /{name}"),
                ));
            }
            s.remote.put = Some(cfg.clone());
            s.remote.deployed = true;
        }
        if put_ok && s.deleting {
            s.remote.removal_sent = Some(Instant::now());
        }
        s.remote.seen = Some(seen);
        let Some(a) = apps.get(&name) else {
            s.remote.present = false;
            s.remote.replicas.clear();
            s.remote.status = "NOT_DEPLOYED".into();
            if !s.deleting {
                s.router.set_replicas(&[]);
            }
            continue;
        };
        s.remote.present = true;
        let status = a["status"].as_str().unwrap_or("").to_string();
        let message = a["message"].as_str().unwrap_or("").to_string();
        if status == "DEPLOY_FAILED" && (s.remote.status != status || s.remote.message != message) {
            events.push((name.clone(), "deploy-failed", message.clone()));
        }
        s.remote.status = status;
        s.remote.message = message;
        let dep = s
            .spec
            .ray
            .as_ref()
            .map(|r| r.deployment.clone())
            .unwrap_or_default();
        let replicas: Vec<(String, Phase)> = a["deployments"][&dep]["replicas"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        Some((
                            r["replica_id"].as_str()?.to_string(),
                            phase_of(r["state"].as_str()?)?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (id, p) in &replicas {
            let was = s.remote.replicas.iter().find(|r| &r.0 == id).map(|r| r.1);
            if *p == Phase::Ready && was != Some(Phase::Ready) {
                events.push((name.clone(), "ready", format!("Ray replica {id} running")));
            }
        }
        s.remote.replicas = replicas;
        if !s.deleting {
            let bases: Vec<String> = s
                .remote
                .replicas
                .iter()
                .filter(|r| r.1 == Phase::Ready)
                .map(|r| format!("{serve_url}/{name}#{}", r.0))
                .collect();
            s.router.set_replicas(&bases);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_config_from_a_spec() {
        let spec = ServiceSpec::parse(
            "name: m\nray: {import_path: 'model:app', deployment: Model}\ncpus: 0.5\nenv: {SERVICE_MS: '20'}\n\
             slo: {latency_s: 0.2}\nprocessing_time_s: 0.02\nmax_concurrent: 2\n",
        )
        .unwrap();
        let c = app_config(&spec, Some("gcs://_ray_pkg_ab.zip"));
        assert_eq!(c["route_prefix"], "/m");
        assert_eq!(c["external_scaler_enabled"], true);
        assert_eq!(c["runtime_env"]["working_dir"], "gcs://_ray_pkg_ab.zip");
        assert_eq!(c["runtime_env"]["env_vars"]["SERVICE_MS"], "20");
        let d = &c["deployments"][0];
        assert_eq!(d["name"], "Model");
        assert_eq!(d["max_ongoing_requests"], 2);
        assert_eq!(d["ray_actor_options"]["num_cpus"], 0.5);
        // No autoscaling config: Serve refuses one next to an external scaler.
        assert!(d.get("autoscaling_config").is_none());
        assert_eq!(
            http_options("http://127.0.0.1:8000"),
            json!({"host": "127.0.0.1", "port": 8000})
        );
        // What Serve reports back (floats, its replica count) is the same application;
        // another working_dir is not.
        let mut deployed = c.clone();
        deployed["deployments"][0]["num_replicas"] = json!(3);
        deployed["deployments"][0]["ray_actor_options"]["num_cpus"] = json!(0.5f64);
        deployed["deployments"][0]["max_ongoing_requests"] = json!(2.0f64);
        assert!(same_app(&deployed, &c));
        deployed["runtime_env"]["working_dir"] = json!("gcs://_ray_pkg_cd.zip");
        assert!(!same_app(&deployed, &c));
    }

    #[test]
    fn serve_replica_states_as_phases() {
        assert_eq!(phase_of("RUNNING"), Some(Phase::Ready));
        assert_eq!(phase_of("STARTING"), Some(Phase::Starting));
        assert_eq!(phase_of("RECOVERING"), Some(Phase::Starting));
        assert_eq!(phase_of("STOPPING"), Some(Phase::Stopping));
        assert_eq!(phase_of("???"), None);
    }
}
