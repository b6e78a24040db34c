//! A small in-memory Kubernetes API server for tests: it keeps objects, answers list,
//! get, create, merge-patch (the scale subresource too), delete, delete-collection,
//! pod logs (bytes) and watches (newline-delimited events from a resource version; a
//! version older than the kept history gets the API's `410 Expired` ERROR event), and
//! plays the cluster: a garbage collector (background: what lost its owner goes next
//! round; foreground: the owner stays, marked, until what it owns is gone), the kubelet
//! (a deleted pod is marked, fails with 143 after 300 ms, and is gone 200 ms later;
//! grace 0 removes it at once), Deployments keeping their count of pods that are not
//! terminating, indexed Jobs running a pod per completion index while not suspended
//! (terminating them when suspended; a pod failing by itself sets FailureTarget, then
//! Failed once the others ended), and a scheduler binding pods to the first node with
//! room for their CPU requests. Every request is recorded; errors can be injected for
//! the next matching requests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

struct Injected {
    method: String,
    path_contains: String,
    code: u16,
    times: u32,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (resource, namespace, name) -> object; cluster-scoped objects have namespace "".
    objects: BTreeMap<(String, String, String), Value>,
    /// (rv, resource, namespace, type, object)
    events: Vec<(u64, String, String, &'static str, Value)>,
    /// Watches from before this version get 410.
    oldest_rv: u64,
    /// Bumped to end every open watch.
    watch_epoch: u64,
    requests: Vec<Recorded>,
    injected: Vec<Injected>,
    logs: BTreeMap<String, Vec<u8>>,
    /// Pods ending gracefully, since when.
    terminating: BTreeMap<(String, String), std::time::Instant>,
    counter: u64,
    /// Watches answered 410 Gone.
    expired_served: u64,
}

#[derive(Clone)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    notify: tokio::sync::broadcast::Sender<()>,
    pub url: String,
    _rt: Arc<tokio::runtime::Runtime>,
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "pods" => ("Pod", "v1"),
        "services" => ("Service", "v1"),
        "nodes" => ("Node", "v1"),
        "jobs" => ("Job", "batch/v1"),
        "deployments" => ("Deployment", "apps/v1"),
        "horizontalpodautoscalers" => ("HorizontalPodAutoscaler", "autoscaling/v2"),
        _ => ("Unknown", "v1"),
    }
}

/// RFC 3339 of a time, to the second (as the API writes it).
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn fields_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            let path: Vec<&str> = k.split('.').collect();
            let mut x = obj;
            for p in path {
                x = &x[p];
            }
            x.as_str() != Some(v)
        } else {
            true
        }
    })
}

fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn put(&mut self, resource: &str, ns: &str, mut obj: Value, kind: &'static str) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.objects
            .insert((resource.into(), ns.into(), name), obj.clone());
        self.events
            .push((rv, resource.into(), ns.into(), kind, obj.clone()));
        obj
    }

    fn create(&mut self, resource: &str, ns: &str, mut obj: Value) -> Result<Value, (u16, Value)> {
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            let prefix = obj["metadata"]["generateName"]
                .as_str()
                .unwrap_or("x-")
                .to_string();
            self.counter += 1;
            name = format!("{prefix}{:05x}", self.counter);
            obj["metadata"]["name"] = json!(name);
        }
        if self
            .objects
            .contains_key(&(resource.into(), ns.into(), name.clone()))
        {
            return Err((
                409,
                status(
                    409,
                    "AlreadyExists",
                    &format!("{resource} \"{name}\" already exists"),
                ),
            ));
        }
        self.counter += 1;
        let (kind, api) = kind_of(resource);
        obj["kind"] = json!(kind);
        obj["apiVersion"] = json!(api);
        obj["metadata"]["uid"] = json!(format!("uid-{}", self.counter));
        obj["metadata"]["creationTimestamp"] = json!(timestamp(SystemTime::now()));
        if !ns.is_empty() {
            obj["metadata"]["namespace"] = json!(ns);
        }
        Ok(self.put(resource, ns, obj, "ADDED"))
    }

    fn modify(&mut self, resource: &str, ns: &str, name: &str, patch: &Value) -> Option<Value> {
        let mut obj = self
            .objects
            .get(&(resource.into(), ns.into(), name.into()))?
            .clone();
        merge(&mut obj, patch);
        Some(self.put(resource, ns, obj, "MODIFIED"))
    }

    /// Removes an object now (what it owns is collected by the next round).
    fn delete(&mut self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(resource.into(), ns.into(), name.into()))?;
        self.terminating.remove(&(ns.to_string(), name.to_string()));
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.events
            .push((rv, resource.into(), ns.into(), "DELETED", obj.clone()));
        Some(obj)
    }

    /// A delete as the API does it: a pod is terminated (deletionTimestamp now, SIGTERM,
    /// gone a moment later) unless its grace is 0; with `Foreground` propagation the
    /// owner stays, marked, until what it owns is gone; else it goes at once and what it
    /// owns is collected in the background.
    fn delete_api(&mut self, resource: &str, ns: &str, name: &str, opts: &Value) -> Option<Value> {
        let key = (resource.to_string(), ns.to_string(), name.to_string());
        let obj = self.objects.get(&key)?.clone();
        if resource == "pods" && opts["gracePeriodSeconds"].as_i64() != Some(0) {
            return Some(self.terminate(ns, name).unwrap_or(obj));
        }
        if opts["propagationPolicy"] == "Foreground" {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                return self.modify(
                    resource,
                    ns,
                    name,
                    &json!({"metadata": {
                    "deletionTimestamp": timestamp(SystemTime::now()),
                    "finalizers": ["foregroundDeletion"]}}),
                );
            }
            return Some(obj);
        }
        self.delete(resource, ns, name)
    }

    /// Starts a pod's graceful end.
    fn terminate(&mut self, ns: &str, name: &str) -> Option<Value> {
        let key = (ns.to_string(), name.to_string());
        if self.terminating.contains_key(&key) {
            return None;
        }
        self.terminating.insert(key, std::time::Instant::now());
        self.modify(
            "pods",
            ns,
            name,
            &json!({"metadata": {
            "deletionTimestamp": timestamp(SystemTime::now())}}),
        )
    }

    fn is_terminating(o: &Value) -> bool {
        !o["metadata"]["deletionTimestamp"].is_null()
    }

    fn list(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| r == resource && ns.is_none_or(|ns| n == ns))
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn owned_by(&self, resource: &str, uid: &Value) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, _, _), o)| {
                r == resource
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|x| &x["uid"] == uid))
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn new_pod(&mut self, ns: &str, name: String, template: &Value, owner: &Value, extra: Value) {
        let mut labels = template["metadata"]["labels"].clone();
        merge(&mut labels, &extra);
        let pod = json!({
            "metadata": {"name": name, "labels": labels, "ownerReferences": [{
                "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "controller": true}]},
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending"},
        });
        let _ = self.create("pods", ns, pod);
    }

    /// One round of the garbage collector, the controllers, the scheduler and the
    /// kubelet.
    fn reconcile(&mut self) {
        // The kubelet ends terminating pods: SIGTERM (exit 143, Failed) after 300 ms,
        // the object gone 200 ms later.
        let now = std::time::Instant::now();
        for ((ns, name), since) in self.terminating.clone() {
            let age = now - since;
            if age > Duration::from_millis(500) {
                self.delete("pods", &ns, &name);
            } else if age > Duration::from_millis(300) {
                let key = ("pods".to_string(), ns.clone(), name.clone());
                let running = self.objects.get(&key).is_some_and(|p| {
                    !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                });
                if running {
                    self.modify(
                        "pods",
                        &ns,
                        &name,
                        &json!({"status": {"phase": "Failed",
                        "conditions": [{"type": "Ready", "status": "False"}],
                        "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                            "image": "x", "imageID": "",
                            "state": {"terminated": {"exitCode": 143}}}]}}),
                    );
                }
            }
        }
        // The garbage collector: what lost its owner goes; an owner deleted in the
        // foreground goes once what it owns has gone.
        let uids: std::collections::BTreeSet<String> = self
            .objects
            .values()
            .filter_map(|o| o["metadata"]["uid"].as_str().map(String::from))
            .collect();
        let orphans: Vec<(String, String, String)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|rs| {
                        !rs.is_empty()
                            && rs
                                .iter()
                                .all(|r| !uids.contains(r["uid"].as_str().unwrap_or("")))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (r, ns, name) in orphans {
            if r == "pods" {
                self.terminate(&ns, &name);
            } else {
                self.delete(&r, &ns, &name);
            }
        }
        let foreground: Vec<(String, String, String, Value)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
            })
            .map(|((r, n, m), o)| {
                (
                    r.clone(),
                    n.clone(),
                    m.clone(),
                    o["metadata"]["uid"].clone(),
                )
            })
            .collect();
        for (r, ns, name, uid) in foreground {
            let owned: Vec<(String, String, String)> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|x| x["uid"] == uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            if owned.is_empty() {
                self.delete(&r, &ns, &name);
            }
            for (r2, n2, m2) in owned {
                if r2 == "pods" {
                    self.terminate(&n2, &m2);
                } else {
                    self.delete(&r2, &n2, &m2);
                }
            }
        }
        // Deployments keep their count of pods that are not terminating.
        for d in self.list("deployments", None) {
            if State::is_terminating(&d) {
                continue;
            }
            let ns = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let want = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
            let mut pods: Vec<Value> = self
                .owned_by("pods", &d["metadata"]["uid"])
                .into_iter()
                .filter(|p| !State::is_terminating(p))
                .collect();
            pods.sort_by_key(|p| {
                p["metadata"]["uid"]
                    .as_str()
                    .map(|u| u[4..].parse::<u64>().unwrap_or(0))
            });
            while pods.len() > want {
                let p = pods.pop().unwrap();
                self.terminate(&ns, p["metadata"]["name"].as_str().unwrap());
            }
            for _ in pods.len()..want {
                self.counter += 1;
                let name = format!(
                    "{}-{:05x}",
                    d["metadata"]["name"].as_str().unwrap(),
                    self.counter
                );
                self.new_pod(&ns, name, &d["spec"]["template"], &d, json!({}));
            }
            let pods: Vec<Value> = self
                .owned_by("pods", &d["metadata"]["uid"])
                .into_iter()
                .filter(|p| !State::is_terminating(p))
                .collect();
            let ready = pods
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            let st = json!({"status": {"replicas": pods.len(), "availableReplicas": ready, "readyReplicas": ready}});
            if d["status"]["replicas"] != st["status"]["replicas"]
                || d["status"]["availableReplicas"] != st["status"]["availableReplicas"]
            {
                self.modify(
                    "deployments",
                    &ns,
                    d["metadata"]["name"].as_str().unwrap(),
                    &st,
                );
            }
        }
        // Indexed Jobs: a pod per completion index while not suspended; a pod failing by
        // itself fails the Job (FailureTarget at once, Failed once the others ended).
        for j in self.list("jobs", None) {
            if State::is_terminating(&j) {
                continue;
            }
            let ns = j["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = j["metadata"]["name"].as_str().unwrap().to_string();
            let pods = self.owned_by("pods", &j["metadata"]["uid"]);
            let has = |c: &str| {
                j["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["type"] == c && x["status"] == "True"))
            };
            if has("Complete") || has("Failed") {
                continue;
            }
            let active: Vec<&Value> = pods
                .iter()
                .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
                .collect();
            let failed = pods
                .iter()
                .any(|p| p["status"]["phase"] == "Failed" && !State::is_terminating(p));
            if failed || has("FailureTarget") {
                if !has("FailureTarget") {
                    self.modify("jobs", &ns, &name, &json!({"status": {"conditions": [
                        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}]}}));
                }
                for p in &active {
                    self.terminate(&ns, p["metadata"]["name"].as_str().unwrap());
                }
                if active.is_empty() {
                    self.modify("jobs", &ns, &name, &json!({"status": {"conditions": [
                        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}));
                }
                continue;
            }
            if j["spec"]["suspend"].as_bool().unwrap_or(false) {
                for p in active {
                    self.terminate(&ns, p["metadata"]["name"].as_str().unwrap());
                }
                continue;
            }
            let n = j["spec"]["completions"].as_u64().unwrap_or(1);
            let mut succeeded = 0;
            for i in 0..n {
                let index = i.to_string();
                let of_index: Vec<&Value> = pods
                    .iter()
                    .filter(|p| {
                        p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"].as_str()
                            == Some(index.as_str())
                    })
                    .collect();
                if of_index.iter().any(|p| p["status"]["phase"] == "Succeeded") {
                    succeeded += 1;
                    continue;
                }
                if of_index.iter().all(|p| State::is_terminating(p)) {
                    self.counter += 1;
                    let pod = format!("{name}-{i}-{:05x}", self.counter);
                    self.new_pod(
                        &ns,
                        pod,
                        &j["spec"]["template"],
                        &j,
                        json!({
                            "batch.kubernetes.io/job-completion-index": index,
                            "job-name": name,
                        }),
                    );
                }
            }
            if succeeded == n {
                self.modify(
                    "jobs",
                    &ns,
                    &name,
                    &json!({"status": {"succeeded": n, "conditions": [
                    {"type": "Complete", "status": "True"}]}}),
                );
            } else if j["status"]["succeeded"].as_u64().unwrap_or(0) != succeeded {
                self.modify(
                    "jobs",
                    &ns,
                    &name,
                    &json!({"status": {"succeeded": succeeded}}),
                );
            }
        }
        // The scheduler and the kubelet: bind pending pods to a node with room, run them.
        let nodes = self.list("nodes", None);
        for p in self.list("pods", None) {
            if p["status"]["phase"] != "Pending" || State::is_terminating(&p) {
                continue;
            }
            let ns = p["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            let need = cpu_of(&p);
            let node = nodes.iter().find(|n| {
                let used: f64 = self
                    .list("pods", None)
                    .iter()
                    .filter(|q| {
                        q["spec"]["nodeName"] == n["metadata"]["name"]
                            && !matches!(
                                q["status"]["phase"].as_str(),
                                Some("Succeeded" | "Failed")
                            )
                    })
                    .map(cpu_of)
                    .sum();
                let cap = parse_cpu(n["status"]["allocatable"]["cpu"].as_str().unwrap_or("0"));
                used + need <= cap + 1e-9
            });
            if let Some(n) = node {
                self.counter += 1;
                let ip = format!("10.0.{}.{}", self.counter / 250, self.counter % 250 + 1);
                self.modify(
                    "pods",
                    &ns,
                    &name,
                    &json!({
                        "spec": {"nodeName": n["metadata"]["name"]},
                        "status": {"phase": "Running", "podIP": ip,
                                   "conditions": [{"type": "Ready", "status": "True"}]},
                    }),
                );
            }
        }
    }
}

fn parse_cpu(s: &str) -> f64 {
    match s.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap_or(0.0) / 1000.0,
        None => s.parse().unwrap_or(0.0),
    }
}

fn cpu_of(p: &Value) -> f64 {
    p["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| parse_cpu(c["resources"]["requests"]["cpu"].as_str().unwrap_or("0")))
                .sum()
        })
        .unwrap_or(0.0)
}

fn reply(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

impl FakeKube {
    /// Starts the fake on a free loopback port, with `nodes` as (name, vCPUs).
    pub fn start(nodes: &[(&str, f64)]) -> FakeKube {
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        );
        let (notify, _) = tokio::sync::broadcast::channel(1024);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeKube {
            state: Arc::new(Mutex::new(State::default())),
            notify,
            url,
            _rt: rt.clone(),
        };
        for (name, cpus) in nodes {
            fake.create_object(
                "nodes",
                "",
                json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "status": {"allocatable": {"cpu": cpus.to_string(), "memory": "64Gi"},
                               "conditions": [{"type": "Ready", "status": "True"}]},
                }),
            );
        }
        let f = fake.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let f = f.clone();
            async move { f.handle(req).await }
        });
        rt.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        // The controllers' own clock.
        let f = fake.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.with(|s| s.reconcile());
            }
        });
        fake
    }

    /// A kubeconfig that points at the fake.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: {namespace}}}\n\
             users:\n- name: fake\n  user: {{token: fake-token}}\n",
            self.url
        )
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let before;
        let out;
        {
            let mut s = self.state.lock().unwrap();
            before = s.rv;
            out = f(&mut s);
            if s.rv != before {
                let _ = self.notify.send(());
            }
        }
        out
    }

    pub fn create_object(&self, resource: &str, ns: &str, obj: Value) -> Value {
        self.with(|s| s.create(resource, ns, obj))
            .unwrap_or_else(|(_, e)| panic!("{e}"))
    }

    pub fn delete_object(&self, resource: &str, ns: &str, name: &str) {
        self.with(|s| s.delete(resource, ns, name));
    }

    pub fn objects(&self, resource: &str) -> Vec<Value> {
        self.with(|s| s.list(resource, None))
    }

    /// How many watches were answered 410 Gone.
    pub fn expired_served(&self) -> u64 {
        self.with(|s| s.expired_served)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// Ends a pod as Succeeded (code 0) or Failed.
    pub fn end_pod(&self, ns: &str, name: &str, code: i32) {
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        self.with(|s| {
            s.modify(
                "pods",
                ns,
                name,
                &json!({"status": {"phase": phase,
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "learner", "ready": false, "restartCount": 0,
                    "image": "x", "imageID": "", "state": {"terminated": {"exitCode": code}}}]}}),
            )
        });
    }

    pub fn set_log(&self, pod: &str, bytes: &[u8]) {
        self.with(|s| s.logs.insert(pod.to_string(), bytes.to_vec()));
    }

    /// The next `times` requests with `method` whose path contains `path_contains` get
    /// `code`.
    pub fn inject(&self, method: &str, path_contains: &str, code: u16, times: u32) {
        self.with(|s| {
            s.injected.push(Injected {
                method: method.into(),
                path_contains: path_contains.into(),
                code,
                times,
            })
        });
    }

    /// Forgets the event history and ends every open watch: each watcher's next watch is
    /// from a version the fake no longer has, so it gets 410 Gone and must list again.
    pub fn expire_watches(&self) {
        self.with(|s| {
            s.oldest_rv = s.rv + 1;
            s.events.clear();
            s.watch_epoch += 1;
            s.rv += 1;
        });
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let injected = self.with(|s| {
            s.requests.push(Recorded {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                content_type: content_type.clone(),
                body: body.clone(),
            });
            let hit = s
                .injected
                .iter_mut()
                .find(|i| i.times > 0 && i.method == method && path.contains(&i.path_contains))?;
            hit.times -= 1;
            Some(hit.code)
        });
        if let Some(code) = injected {
            let reason = match code {
                409 => "Conflict",
                410 => "Gone",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                _ => "Injected",
            };
            return reply(code, &status(code, reason, "injected by the test"));
        }
        // /api/v1/... or /apis/GROUP/VERSION/...
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match segs.first() {
            Some(&"api") if segs.len() >= 2 => &segs[2..],
            Some(&"apis") if segs.len() >= 3 => &segs[3..],
            _ => return reply(404, &status(404, "NotFound", "no such path")),
        };
        let (ns, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
            _ => (String::new(), rest),
        };
        let all_namespaces = ns.is_empty() && matches!(rest.first(), Some(&"pods"));
        match (method.as_str(), rest) {
            ("GET", [resource]) if query_param(&query, "watch").as_deref() == Some("true") => {
                self.watch(resource, &ns, &query)
            }
            ("GET", [resource]) => {
                let (kind, api) = kind_of(resource);
                let labels = query_param(&query, "labelSelector").unwrap_or_default();
                let fields = query_param(&query, "fieldSelector").unwrap_or_default();
                let (items, rv) = self.with(|s| {
                    let scope = if all_namespaces || *resource == "nodes" {
                        None
                    } else {
                        Some(ns.as_str())
                    };
                    let items: Vec<Value> = s
                        .list(resource, scope)
                        .into_iter()
                        .filter(|o| labels_match(o, &labels) && fields_match(o, &fields))
                        .collect();
                    (items, s.rv)
                });
                reply(
                    200,
                    &json!({"kind": format!("{kind}List"), "apiVersion": api,
                    "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
                )
            }
            ("POST", [resource]) => match self.with(|s| s.create(resource, &ns, body.clone())) {
                Ok(o) => reply(201, &o),
                Err((code, e)) => reply(code, &e),
            },
            ("GET", ["pods", name, "log"]) => {
                let log = self.with(|s| {
                    s.objects
                        .contains_key(&("pods".into(), ns.clone(), name.to_string()))
                        .then(|| s.logs.get(*name).cloned().unwrap_or_default())
                });
                match log {
                    Some(l) => Response::builder()
                        .status(200)
                        .header("content-type", "text/plain")
                        .body(Body::from(l))
                        .unwrap(),
                    None => reply(404, &status(404, "NotFound", "pod not found")),
                }
            }
            ("GET", ["deployments", name, "scale"]) | ("PATCH", ["deployments", name, "scale"]) => {
                let name = name.to_string();
                let out = self.with(|s| {
                    if method == "PATCH" {
                        let r = body["spec"]["replicas"].clone();
                        s.modify("deployments", &ns, &name, &json!({"spec": {"replicas": r}}))?;
                    }
                    s.objects
                        .get(&("deployments".into(), ns.clone(), name.clone()))
                        .cloned()
                });
                match out {
                    Some(d) => reply(
                        200,
                        &json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"replicas": d["spec"]["replicas"]},
                        "status": {"replicas": d["status"]["replicas"].as_u64().unwrap_or(0)}}),
                    ),
                    None => reply(404, &status(404, "NotFound", "not found")),
                }
            }
            ("GET", [resource, name]) => {
                let o = self.with(|s| {
                    s.objects
                        .get(&(resource.to_string(), ns.clone(), name.to_string()))
                        .cloned()
                });
                match o {
                    Some(o) => reply(200, &o),
                    None => reply(
                        404,
                        &status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
                    ),
                }
            }
            ("PATCH", [resource, name]) => {
                match self.with(|s| s.modify(resource, &ns, name, &body)) {
                    Some(o) => reply(200, &o),
                    None => reply(
                        404,
                        &status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
                    ),
                }
            }
            ("DELETE", [resource, name]) => {
                match self.with(|s| s.delete_api(resource, &ns, name, &body)) {
                    Some(o) => reply(200, &o),
                    None => reply(
                        404,
                        &status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
                    ),
                }
            }
            ("DELETE", [resource]) => {
                let labels = query_param(&query, "labelSelector").unwrap_or_default();
                self.with(|s| {
                    let names: Vec<String> = s
                        .list(resource, Some(&ns))
                        .into_iter()
                        .filter(|o| labels_match(o, &labels))
                        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
                        .collect();
                    for n in names {
                        s.delete_api(resource, &ns, &n, &body);
                    }
                });
                let (kind, api) = kind_of(resource);
                reply(
                    200,
                    &json!({"kind": format!("{kind}List"), "apiVersion": api, "metadata": {}, "items": []}),
                )
            }
            _ => reply(
                405,
                &status(405, "MethodNotAllowed", "not supported by the fake"),
            ),
        }
    }

    fn watch(&self, resource: &str, ns: &str, query: &str) -> Response<Body> {
        let from: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let labels = query_param(query, "labelSelector").unwrap_or_default();
        let (expired, epoch) = self.with(|s| {
            let expired = from < s.oldest_rv;
            s.expired_served += expired as u64;
            (expired, s.watch_epoch)
        });
        if expired {
            let ev = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(format!("{ev}\n")))
                .unwrap();
        }
        let (resource, ns) = (resource.to_string(), ns.to_string());
        let state = self.state.clone();
        let rx = self.notify.subscribe();
        let stream =
            futures_util::stream::unfold((from, rx, false), move |(mut last, mut rx, done)| {
                let (state, resource, ns, labels) =
                    (state.clone(), resource.clone(), ns.clone(), labels.clone());
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        let (lines, ended) = {
                            let s = state.lock().unwrap();
                            let mut lines = String::new();
                            for (rv, r, n, kind, obj) in &s.events {
                                if *rv > last
                                    && r == &resource
                                    && (ns.is_empty() || n == &ns)
                                    && labels_match(obj, &labels)
                                {
                                    lines.push_str(
                                        &json!({"type": kind, "object": obj}).to_string(),
                                    );
                                    lines.push('\n');
                                    last = *rv;
                                }
                            }
                            (lines, s.watch_epoch != epoch)
                        };
                        if !lines.is_empty() {
                            return Some((
                                Ok::<Bytes, std::io::Error>(Bytes::from(lines)),
                                (last, rx, ended),
                            ));
                        }
                        if ended {
                            return None;
                        }
                        let _ = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
                    }
                }
            });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap()
    }
}
