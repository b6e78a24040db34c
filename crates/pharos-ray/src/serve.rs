//! Services on Ray Serve, behind the services' engine seam. Each service is a Serve
//! application (route prefix `/<name>`, `external_scaler_enabled`) whose deployment's
//! replica count pharos sets through Serve's external scaling endpoint; pharos's router
//! stays in front of Serve's HTTP proxy, so the autoscaler reads the same counters as
//! with local replicas.
//!
//! Every pass reads Serve's state (`GET /api/serve/applications/`) once: replicas
//! `RUNNING` take traffic (the router has one entry per running replica, all at the
//! proxy), others start or stop. Serve's config is declarative and covers every
//! application, so a deploy sends pharos's applications together with the ones pharos
//! does not own, as Serve reported them. An application that disappears from Serve
//! behind pharos's back is deployed again (with an event); while Ray is unreachable the
//! services loop keeps the last known replicas and backs off (`ray-unavailable`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex as SyncMutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use pharos_engine::config::RayConfig;
use pharos_engine::host::LockExt;
use pharos_engine::service::{EngineReplica, Phase, Report, ServiceEngine, ServiceSpec, Want};
use serde_json::{Value, json};
use tracing::warn;

use crate::client::{RayClient, RayError};

/// What pharos last did with one service's application.
#[derive(Default, Clone)]
struct App {
    /// The uploaded `working_dir` package.
    working_dir: Option<String>,
    /// pharos deployed it (so its absence means someone removed it).
    deployed: bool,
    /// The application config pharos last deployed (without the replica count).
    put: Option<Value>,
    /// A config Serve refused (not sent again until the spec changes).
    refused: Option<Value>,
    /// A working_dir that could not be packed (said once).
    package_error: Option<String>,
    /// When the deploy without this deleted service's application was last sent.
    removal_sent: Option<Instant>,
    /// Serve's status and message, as last said in an event.
    status: String,
    message: String,
    /// The node (id, address) of each replica Serve reported last pass.
    nodes: BTreeMap<String, (String, String)>,
    /// Replicas gone from Serve whose node still looked alive.
    gone: Vec<Gone>,
}

/// A replica gone from Serve, its node, and when it went.
#[derive(Clone, Debug)]
struct Gone {
    replica: String,
    node_id: String,
    ip: String,
    at: Instant,
}

/// How long a gone replica's node is watched for its death.
const LOST_WATCH: Duration = Duration::from_secs(60);

/// The node (id, address) of each replica of `app`'s deployment `dep`, as Serve
/// reports them.
fn replica_nodes(app: &Value, dep: &str) -> BTreeMap<String, (String, String)> {
    app["deployments"][dep]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["replica_id"].as_str()?.to_string(),
                (
                    r["node_id"].as_str()?.to_string(),
                    r["node_ip"].as_str().unwrap_or("").to_string(),
                ),
            ))
        })
        .collect()
}

pub struct RayServe {
    client: RayClient,
    /// Serve's HTTP proxy, where the routers send requests.
    serve_url: String,
    /// Where application code may not come from (the server's data) and may (roots).
    data_dir: PathBuf,
    code_roots: Vec<PathBuf>,
    apps: SyncMutex<BTreeMap<String, App>>,
    /// The cluster's alive nodes as last read, and when (read every [`NODES_EVERY`]).
    nodes: SyncMutex<Option<(Instant, Vec<pharos_core::Node>)>>,
}

/// How often the services loop reads the cluster's nodes.
const NODES_EVERY: Duration = Duration::from_secs(5);

/// A Ray node as pharos's capacity sees it: its CPUs, memory and GPUs (of the model its
/// `accelerator_type:<model>` resource names, else `gpu`).
fn as_node(n: &crate::client::RayNode) -> pharos_core::Node {
    let mut gpus = BTreeMap::new();
    let count = n.resource("GPU").floor().max(0.0) as u32;
    if count > 0 {
        let model = n
            .resources
            .keys()
            .find_map(|k| k.strip_prefix("accelerator_type:"))
            .unwrap_or("gpu");
        gpus.insert(model.to_string(), count);
    }
    pharos_core::Node {
        name: n.ip.clone(),
        cpus: n.resource("CPU"),
        memory_bytes: n.resource("memory").max(0.0) as u64,
        gpus,
    }
}

impl RayServe {
    /// Services on the Ray cluster `client` reaches; `data_dir` is the server's (never a
    /// source of application code).
    pub fn new(client: RayClient, ray: &RayConfig, data_dir: &Path) -> Self {
        Self {
            client,
            serve_url: ray.serve_url.trim_end_matches('/').to_string(),
            data_dir: data_dir.to_path_buf(),
            code_roots: ray.code_roots.clone(),
            apps: SyncMutex::new(BTreeMap::new()),
            nodes: SyncMutex::new(None),
        }
    }

    fn apps(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, App>> {
        self.apps.lock_or_recover()
    }
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

/// Serve's HTTP options from the proxy URL pharos's routers use. Serve runs a proxy on
/// every node with the same options: a loopback URL keeps them on loopback (a cluster
/// on the server's machine); any other address has them listen on every interface,
/// since a node cannot bind another node's address.
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
    let ip = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>();
    let host = match ip {
        _ if host == "localhost" => host,
        Ok(a) if a.is_loopback() => host,
        Ok(std::net::IpAddr::V6(_)) => "::",
        _ => "0.0.0.0",
    };
    json!({ "host": host, "port": port })
}

/// Whether `dir` may be uploaded as application code: a directory that does not
/// overlap the server's data directory (tokens, store, other tenants' jobs) and lies
/// under one of `ray.code_roots` when those are set.
fn check_code_dir(data_dir: &Path, roots: &[PathBuf], dir: &str) -> Result<(), String> {
    let canon = |p: &Path| std::fs::canonicalize(p);
    let d = canon(Path::new(dir)).map_err(|e| format!("{dir}: {e}"))?;
    if !d.is_dir() {
        return Err(format!("{dir} is not a directory on the server's machine"));
    }
    let data = canon(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if d.starts_with(&data) || data.starts_with(&d) {
        return Err(format!("{dir} overlaps the server's data directory"));
    }
    if !roots.is_empty()
        && !roots
            .iter()
            .filter_map(|r| canon(r).ok())
            .any(|r| d.starts_with(r))
    {
        return Err(format!("{dir} is not under one of ray.code_roots"));
    }
    Ok(())
}

impl ServiceEngine for RayServe {
    fn name(&self) -> &'static str {
        "ray"
    }

    fn event_kinds(&self) -> (&'static str, &'static str) {
        ("ray-unavailable", "ray-available")
    }

    fn check(&self, spec: &ServiceSpec) -> Result<(), String> {
        let Some(app) = &spec.ray else {
            return Err(
                "ray: this server runs services on Ray; give ray.import_path and ray.deployment"
                    .into(),
            );
        };
        if let Some(dir) = &app.working_dir {
            check_code_dir(&self.data_dir, &self.code_roots, dir)
                .map_err(|e| format!("ray.working_dir: {e}"))?;
        }
        Ok(())
    }

    fn sync<'a>(&'a self, wants: &'a [Want]) -> BoxFuture<'a, Result<Vec<Report>, String>> {
        Box::pin(async move {
            self.read_nodes().await;
            self.sync_all(wants).await
        })
    }

    fn nodes(&self) -> Option<Vec<pharos_core::Node>> {
        self.nodes
            .lock_or_recover()
            .as_ref()
            .map(|(_, n)| n.clone())
    }
}

/// What a pass must do on Serve, worked out from what Serve runs and what pharos last
/// did.
struct Plan<'w> {
    /// The applications that should run, each with its config (no replica count).
    desired: Vec<(&'w Want, Value)>,
    /// Applications pharos deployed that Serve no longer has.
    redeploy: Vec<String>,
    /// Applications a previous server deployed, taken as they are.
    adopt: Vec<String>,
    /// Serve's config must be sent again (else replica counts go through the scaler).
    need_put: bool,
}

/// What the deploy of a pass came to.
#[derive(Default)]
struct Deployed {
    put_ok: bool,
    /// Applications whose new config Serve refused: name, config, why.
    refused: Vec<(String, Value, String)>,
}

impl RayServe {
    /// Reads the cluster's alive nodes when the last read is [`NODES_EVERY`] old; a
    /// failed read keeps the last (Ray's own unavailability is said by the pass).
    async fn read_nodes(&self) {
        let due = self
            .nodes
            .lock_or_recover()
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= NODES_EVERY);
        if !due {
            return;
        }
        match self.client.nodes().await {
            Ok(nodes) => {
                let alive = nodes.iter().filter(|n| n.alive).map(as_node).collect();
                *self.nodes.lock_or_recover() = Some((Instant::now(), alive));
            }
            Err(e) => warn!("reading the Ray cluster's nodes: {e}"),
        }
    }

    async fn sync_all(&self, wants: &[Want]) -> Result<Vec<Report>, String> {
        // Forget what no service is any more.
        self.apps()
            .retain(|name, _| wants.iter().any(|w| &w.name == name));
        let ray_wants: Vec<&Want> = wants.iter().filter(|w| w.spec.ray.is_some()).collect();
        if ray_wants.is_empty() {
            return Ok(Vec::new());
        }
        let package_errors = self.upload_code(&ray_wants).await?;
        let details = self
            .client
            .serve_details()
            .await
            .map_err(|e| format!("reading Serve's applications: {e}"))?;
        let empty = serde_json::Map::new();
        let apps = details["applications"].as_object().unwrap_or(&empty);
        // A copy (the lock is not held across the calls to Ray below), read by reference.
        let mem = self.apps().clone();
        let plan = plan(&ray_wants, apps, &mem);
        let (lost, mut still_gone) = self.lost_replicas(&ray_wants, apps, &mem).await;
        let deployed = if plan.need_put {
            self.deploy(wants, &plan, apps, &mem).await?
        } else {
            self.scale_all(&plan.desired, apps).await?;
            Deployed::default()
        };
        let mut reports = Vec::new();
        let mut gone = Vec::new();
        let mut mem = self.apps();
        for w in ray_wants {
            let a = mem.entry(w.name.clone()).or_default();
            let mut r = self.report(w, a, apps, &plan, &deployed, package_errors.get(&w.name));
            let dep = w
                .spec
                .ray
                .as_ref()
                .map(|x| x.deployment.as_str())
                .unwrap_or("");
            a.nodes = apps
                .get(&w.name)
                .map(|x| replica_nodes(x, dep))
                .unwrap_or_default();
            a.gone = still_gone.remove(&w.name).unwrap_or_default();
            for m in lost.get(&w.name).into_iter().flatten() {
                r.events.push(("replica-lost", m.clone()));
            }
            if w.deleting && !r.present {
                // Gone from Serve: a service applied again under this name starts
                // clean (its code uploaded anew, nothing held back).
                gone.push(w.name.clone());
            }
            reports.push(r);
        }
        for name in gone {
            mem.remove(&name);
        }
        Ok(reports)
    }

    /// For each service, what to say of replicas gone since the last pass whose node
    /// Ray reports dead (or no longer lists), and the gone replicas whose node still
    /// looks alive (Serve may notice a dead replica before Ray declares its node dead:
    /// they are looked at again for [`LOST_WATCH`]). The nodes are read only while
    /// there is such a replica; a failed read says nothing now (the replicas are
    /// replaced either way).
    async fn lost_replicas(
        &self,
        wants: &[&Want],
        apps: &serde_json::Map<String, Value>,
        mem: &BTreeMap<String, App>,
    ) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<Gone>>) {
        let mut gone: BTreeMap<String, Vec<Gone>> = BTreeMap::new();
        for w in wants {
            let (Some(a), Some(r)) = (mem.get(&w.name), &w.spec.ray) else {
                continue;
            };
            let list = gone.entry(w.name.clone()).or_default();
            list.extend(a.gone.iter().cloned());
            let now = apps
                .get(&w.name)
                .map(|app| replica_nodes(app, &r.deployment))
                .unwrap_or_default();
            for (id, (node_id, ip)) in &a.nodes {
                if !now.contains_key(id) {
                    list.push(Gone {
                        replica: id.clone(),
                        node_id: node_id.clone(),
                        ip: ip.clone(),
                        at: Instant::now(),
                    });
                }
            }
        }
        gone.retain(|_, l| !l.is_empty());
        let mut said: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if gone.is_empty() {
            return (said, gone);
        }
        let Ok(nodes) = self.client.nodes().await else {
            return (said, gone);
        };
        for (name, list) in gone.iter_mut() {
            list.retain(|g| {
                if nodes.iter().any(|n| n.id == g.node_id && n.alive) {
                    return g.at.elapsed() < LOST_WATCH;
                }
                let short: String = g.node_id.chars().take(12).collect();
                said.entry(name.clone()).or_default().push(format!(
                    "replica {} was lost with its node {} ({short}); Serve starts another on the nodes left",
                    g.replica, g.ip
                ));
                false
            });
        }
        (said, gone)
    }

    /// Uploads the code of new applications; a service whose code cannot be sent waits
    /// (its problem returned by name), the others go on.
    async fn upload_code(&self, ray_wants: &[&Want]) -> Result<BTreeMap<String, String>, String> {
        let mut package_errors: BTreeMap<String, String> = BTreeMap::new();
        for w in ray_wants.iter().filter(|w| !w.deleting) {
            let known = self.apps().get(&w.name).and_then(|a| a.working_dir.clone());
            if known.is_some() {
                continue;
            }
            if let Some(dir) = w.spec.ray.as_ref().and_then(|r| r.working_dir.clone()) {
                match self.client.upload_dir(Path::new(&dir)).await {
                    Ok(uri) => {
                        self.apps().entry(w.name.clone()).or_default().working_dir = Some(uri)
                    }
                    // This service's own problem: it waits, the others go on.
                    Err(e @ (RayError::Package(_) | RayError::Status(400..=499, _))) => {
                        package_errors.insert(w.name.clone(), e.to_string());
                    }
                    Err(e) => return Err(format!("uploading the working_dir: {e}")),
                }
            }
        }
        Ok(package_errors)
    }

    /// Sends Serve's whole config: pharos's applications with their replica counts,
    /// and the ones pharos does not own as Serve has them.
    async fn deploy(
        &self,
        wants: &[Want],
        plan: &Plan<'_>,
        apps: &serde_json::Map<String, Value>,
        mem: &BTreeMap<String, App>,
    ) -> Result<Deployed, String> {
        let mut list: Vec<Value> = plan
            .desired
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
            "http_options": http_options(&self.serve_url),
            "applications": list,
        });
        match self.client.put_serve_config(&config).await {
            Ok(()) => Ok(Deployed {
                put_ok: true,
                refused: Vec::new(),
            }),
            Err(e @ RayError::Status(400..=499, _)) => {
                // Refused (a bad import path, say): the applications whose config is
                // new are held back until their spec changes; said once.
                let refused = plan
                    .desired
                    .iter()
                    .filter(|(w, cfg)| mem.get(&w.name).and_then(|a| a.put.as_ref()) != Some(cfg))
                    .map(|(w, cfg)| (w.name.clone(), cfg.clone(), e.to_string()))
                    .collect();
                Ok(Deployed {
                    put_ok: false,
                    refused,
                })
            }
            Err(e) => Err(format!("deploying Serve's applications: {e}")),
        }
    }

    /// Replica counts through the external scaler, where Serve's differ.
    async fn scale_all(
        &self,
        desired: &[(&Want, Value)],
        apps: &serde_json::Map<String, Value>,
    ) -> Result<(), String> {
        for (w, _) in desired {
            let dep = &w.spec.ray.as_ref().expect("a Ray service").deployment;
            // Not there yet while Serve deploys it (it gets the count from the config).
            let Some(current) = apps[&w.name]["deployments"][dep]["target_num_replicas"].as_u64()
            else {
                continue;
            };
            if current == w.target as u64 {
                continue;
            }
            match self.client.scale(&w.name, dep, w.target).await {
                Ok(()) => {}
                Err(e @ RayError::Unreachable(..)) => return Err(format!("scaling: {e}")),
                Err(e) => warn!(service = w.name, "scaling to {}: {e}", w.target),
            }
        }
        Ok(())
    }

    /// One service's report, with the events of this pass; `a` is updated with what
    /// was done and said.
    fn report(
        &self,
        w: &Want,
        a: &mut App,
        apps: &serde_json::Map<String, Value>,
        plan: &Plan<'_>,
        deployed: &Deployed,
        package_error: Option<&String>,
    ) -> Report {
        let name = w.name.clone();
        let mut r = Report {
            name: name.clone(),
            ..Default::default()
        };
        if let Some((_, cfg, e)) = deployed.refused.iter().find(|x| x.0 == name) {
            a.refused = Some(cfg.clone());
            r.events.push((
                "deploy-failed",
                format!("Serve refused the application: {e}"),
            ));
        }
        if let Some(pe) = package_error
            && a.package_error.as_ref() != Some(pe)
        {
            r.events.push((
                "deploy-failed",
                format!("the working_dir cannot be sent to Ray: {pe}"),
            ));
        }
        a.package_error = package_error.cloned();
        let cfg = plan
            .desired
            .iter()
            .find(|(d, _)| d.name == name)
            .map(|x| x.1.clone());
        if plan.adopt.contains(&name)
            && let Some(cfg) = &cfg
        {
            r.events.push((
                "adopted",
                "the application Serve runs is adopted after a restart".into(),
            ));
            a.put = Some(cfg.clone());
            a.deployed = true;
        }
        if deployed.put_ok
            && let Some(cfg) = &cfg
        {
            if plan.redeploy.contains(&name) {
                r.events.push((
                    "redeployed",
                    "the application was removed from Serve behind pharos's back; deployed again"
                        .into(),
                ));
            } else if a.put.is_none() {
                r.events
                    .push(("deployed", format!("deployed to Ray Serve as /{name}")));
            }
            a.put = Some(cfg.clone());
            a.deployed = true;
        }
        if deployed.put_ok && w.deleting {
            a.removal_sent = Some(Instant::now());
        }
        let Some(app) = apps.get(&name) else {
            r.present = false;
            r.status = "NOT_DEPLOYED".into();
            return r;
        };
        r.present = true;
        let status = app["status"].as_str().unwrap_or("").to_string();
        let message = app["message"].as_str().unwrap_or("").to_string();
        if status == "DEPLOY_FAILED" && (a.status != status || a.message != message) {
            r.events.push(("deploy-failed", message.clone()));
        }
        a.status = status.clone();
        a.message = message.clone();
        r.status = status;
        r.message = message;
        let dep = w
            .spec
            .ray
            .as_ref()
            .map(|x| x.deployment.clone())
            .unwrap_or_default();
        r.replicas = self.replicas_of(app, &dep, &name);
        r
    }

    /// The replicas Serve reports of a deployment; ready ones routed through Serve's
    /// proxy.
    fn replicas_of(&self, app: &Value, dep: &str, name: &str) -> Vec<EngineReplica> {
        app["deployments"][dep]["replicas"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|x| {
                        let id = x["replica_id"].as_str()?.to_string();
                        let phase = phase_of(x["state"].as_str()?)?;
                        let url = (phase == Phase::Ready)
                            .then(|| format!("{}/{name}#{id}", self.serve_url));
                        Some(EngineReplica {
                            id,
                            phase,
                            url,
                            process: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What should run on Serve and whether its config must be sent again.
fn plan<'w>(
    ray_wants: &[&'w Want],
    apps: &serde_json::Map<String, Value>,
    mem: &BTreeMap<String, App>,
) -> Plan<'w> {
    let unknown = App::default();
    let state_of = |name: &str| mem.get(name).unwrap_or(&unknown);
    let desired: Vec<(&Want, Value)> = ray_wants
        .iter()
        .copied()
        .filter(|w| {
            let a = state_of(&w.name);
            !w.deleting
                && (a.working_dir.is_some()
                    || w.spec.ray.as_ref().is_some_and(|r| r.working_dir.is_none()))
        })
        .map(|w| {
            (
                w,
                app_config(&w.spec, state_of(&w.name).working_dir.as_deref()),
            )
        })
        // A config Serve refused stays out until its spec changes.
        .filter(|(w, cfg)| state_of(&w.name).refused.as_ref() != Some(cfg))
        .collect();
    let mut redeploy = Vec::new();
    let mut adopt = Vec::new();
    // A deleted service's application leaves with a deploy without it (Serve may take
    // a while to remove it: the deploy is repeated every 10 s meanwhile, not every
    // pass).
    let mut need_put = ray_wants.iter().any(|w| {
        w.deleting
            && apps.contains_key(&w.name)
            && state_of(&w.name)
                .removal_sent
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
    });
    for (w, cfg) in &desired {
        let a = state_of(&w.name);
        if !apps.contains_key(&w.name) {
            if a.deployed {
                redeploy.push(w.name.clone());
            }
            need_put = true;
        } else if a.put.as_ref() != Some(cfg) {
            if a.put.is_none() && same_app(&apps[&w.name]["deployed_app_config"], cfg) {
                // Deployed by a previous server: adopted as it is.
                adopt.push(w.name.clone());
            } else {
                need_put = true;
            }
        }
    }
    Plan {
        desired,
        redeploy,
        adopt,
        need_put,
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
        // A proxy on every node of a multi-host cluster: each listens on all interfaces.
        assert_eq!(
            http_options("http://10.1.2.3:8001/"),
            json!({"host": "0.0.0.0", "port": 8001})
        );
        assert_eq!(
            http_options("http://[fd00::2]:8000"),
            json!({"host": "::", "port": 8000})
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
