//! The Kubernetes backend against an in-memory API server (tests/support/fake_kube.rs)
//! that keeps objects, answers list/get/create/patch/delete/watch and plays the
//! Deployment and Job controllers, the scheduler and the kubelet. A real `pharos
//! server` is started with `backend: kubernetes` and a kubeconfig pointing at the fake,
//! and driven through its API and CLI: full reconciles, restarts in the middle, and API
//! errors (409, 410 on watches, 5xx) injected.

mod common;
#[path = "support/fake_kube.rs"]
mod fake_kube;

use common::{ADMIN, Server, wait_until};
use fake_kube::FakeKube;
use serde_json::{Value, json};

const NS: &str = "ml";

fn start(fake: &FakeKube, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig(NS)).unwrap();
    let path = dir.keep().join("kubeconfig");
    Server::start(&format!(
        "backend: kubernetes\nkubernetes:\n  kubeconfig: {}\n  namespace: {NS}\n  timeout_s: 3\n{extra}",
        path.display()
    ))
}

fn spec(name: &str, replicas: u32) -> String {
    format!(
        "name: {name}\nkubernetes: {{image: 'registry.example/{name}:1', port: 8080}}\n\
         slo: {{latency_s: 0.5}}\nprocessing_time_s: 0.05\ncpus: 0.5\n\
         min_replicas: {replicas}\nmax_replicas: {replicas}\n"
    )
}

fn scale_patches(fake: &FakeKube, name: &str) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/deployments/{name}/scale")))
        .map(|r| {
            assert_eq!(r.content_type, "application/merge-patch+json");
            r.body
        })
        .collect()
}

fn count(fake: &FakeKube, method: &str, path_end: &str, from: usize) -> usize {
    fake.requests()[from..]
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(path_end))
        .count()
}

/// Every request pharos made is allowed by the Role (in the namespace) or the
/// ClusterRole (cluster-wide) that `pharos k8s manifests` prints.
fn assert_allowed_by_rbac(fake: &FakeKube) {
    let docs = pharos_kube::manifests::manifests(&Default::default());
    let rules = |kind: &str| -> Vec<Value> {
        docs.iter().find(|d| d["kind"] == kind).unwrap()["rules"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (role, cluster) = (rules("Role"), rules("ClusterRole"));
    let has = |v: &Value, x: &str| v.as_array().unwrap().iter().any(|y| y == x);
    for r in fake.requests() {
        let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let (group, rest) = match segs[0] {
            "api" => ("", &segs[2..]),
            _ => (segs[1], &segs[3..]),
        };
        let (namespaced, rest) = match rest {
            ["namespaces", _, rest @ ..] => (true, rest),
            _ => (false, rest),
        };
        let (resource, named) = match rest {
            [res] => (res.to_string(), false),
            [res, _] => (res.to_string(), true),
            [res, _, sub] => (format!("{res}/{sub}"), true),
            _ => panic!("unexpected path {}", r.path),
        };
        let verb = match (r.method.as_str(), named) {
            ("GET", false) if r.query.contains("watch=true") => "watch",
            ("GET", false) => "list",
            ("GET", true) => "get",
            ("POST", _) => "create",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => panic!("unexpected request {} {}", r.method, r.path),
        };
        let rules = if namespaced { &role } else { &cluster };
        let allowed = rules.iter().any(|rule| {
            has(&rule["apiGroups"], group)
                && has(&rule["resources"], &resource)
                && has(&rule["verbs"], verb)
        });
        assert!(
            allowed,
            "{} {} ({verb} {group}/{resource}) is not allowed by the printed RBAC",
            r.method, r.path
        );
    }
}

/// The requests made from `from` on other than watches and log reads: a steady state
/// reads everything from the watches' caches.
fn calls_besides_watches_and_logs(fake: &FakeKube, from: usize) -> Vec<String> {
    fake.requests()[from..]
        .iter()
        .filter(|r| !r.query.contains("watch=true") && !r.path.ends_with("/log"))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

/// The bodies of the merge patches of the Job `name`.
fn job_patches(fake: &FakeKube, name: &str) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/jobs/{name}")))
        .map(|r| r.body)
        .collect()
}

/// Submits a 2-learner job and waits until its two pods exist; its id and label.
fn running_gang(fake: &FakeKube, s: &Server, manifest: &str) -> (i64, String) {
    let id = s.submit(manifest);
    let label = id.to_string();
    s.wait_state(id, "PROCESSING", 30);
    wait_until(
        30,
        || pods_of(fake, "pharos.io/job", &label).len() == 2,
        || "no pods".into(),
    );
    (id, label)
}

/// Ends the pod of completion index `index` of the job labelled `label` with `code`.
fn end_learner(fake: &FakeKube, label: &str, index: u32, code: i32) {
    let pod = pods_of(fake, "pharos.io/job", label)
        .into_iter()
        .find(|p| {
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
                == index.to_string().as_str()
        })
        .expect("a pod of that index");
    fake.end_pod(NS, pod["metadata"]["name"].as_str().unwrap(), code);
}

fn pods_of(fake: &FakeKube, label: &str, value: &str) -> Vec<Value> {
    fake.objects("pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"][label] == value)
        .collect()
}

#[test]
fn a_service_is_a_deployment_scaled_through_its_scale_subresource() {
    let fake = FakeKube::start(&[("node-a", 8.0), ("node-b", 8.0)]);
    let mut s = start(&fake, "capacity: {cpus: 16}");
    let ready = |n: u64| move |v: &Value| v["ready_replicas"] == n && v["target_replicas"] == n;

    // Created with one replica.
    let (status, v) = s.apply(&spec("web", 1));
    assert_eq!(status, 201, "{v}");
    s.wait_service("web", 30, "1 ready", ready(1));
    let created: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/namespaces/ml/deployments"))
        .collect();
    assert_eq!(created.len(), 1);
    let d = &created[0].body;
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pharos"
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/web:1");
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["pharos.io/service"],
        "web"
    );

    // 1 -> 5 -> 2 through the scale subresource, and nothing else.
    s.apply(&spec("web", 5));
    let v = s.wait_service("web", 30, "5 ready", ready(5));
    assert_eq!(v["engine"]["name"], "kubernetes");
    s.apply(&spec("web", 2));
    s.wait_service("web", 30, "2 ready", ready(2));
    assert_eq!(
        scale_patches(&fake, "web"),
        vec![
            json!({"spec": {"replicas": 5}}),
            json!({"spec": {"replicas": 2}})
        ]
    );
    // The 3 pods the Deployment removes end gracefully (shown as stopping meanwhile).
    wait_until(
        10,
        || pods_of(&fake, "pharos.io/service", "web").len() == 2,
        || format!("{:?}", s.service("web")["replicas"]),
    );

    // The API fails (500) twice: the server says so once, backs off, and gets there.
    // (503, 429 and 504 the client itself retries at once.)
    fake.inject("PATCH", "/deployments/web/scale", 500, 2);
    s.apply(&spec("web", 3));
    s.wait_service("web", 60, "3 ready", ready(3));
    let ev = s.service_events("web");
    assert!(
        ev.contains("engine-unavailable") && ev.contains("engine-available"),
        "{ev}"
    );
    assert!(ev.contains("500"), "{ev}");

    // Every watch's history is gone (410 Gone): the watches list again and go on.
    let before = fake.requests().len();
    fake.expire_watches();
    s.apply(&spec("web", 4));
    s.wait_service("web", 60, "4 ready", ready(4));
    let relisted = fake.requests()[before..].iter().any(|r| {
        r.method == "GET"
            && r.path == "/api/v1/namespaces/ml/pods"
            && !r.query.contains("watch=true")
    });
    assert!(relisted, "the pods were not listed again after 410");
    assert!(
        fake.expired_served() >= 3,
        "pods, Jobs and Deployments are watched"
    );

    // A Deployment an HPA targets is refused, not fought over.
    fake.create_object(
        "horizontalpodautoscalers",
        NS,
        json!({"metadata": {"name": "guarded-hpa"}, "spec": {"maxReplicas": 5,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "guarded"}}}),
    );
    // (HPAs are known from a watch: one made the same instant as the service may be
    // seen a pass late, after which pharos stops scaling.)
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, _) = s.apply(&spec("guarded", 2));
    assert_eq!(status, 201);
    s.wait_service("guarded", 30, "HPA_CONFLICT", |v| {
        v["engine"]["status"] == "HPA_CONFLICT"
    });
    let ev = s.service_events("guarded");
    assert!(
        ev.contains("hpa-conflict") && ev.contains("guarded-hpa"),
        "{ev}"
    );
    // A Deployment of the same name made by someone else is left alone.
    fake.create_object(
        "deployments",
        NS,
        json!({"metadata": {"name": "taken", "labels": {"team": "other"}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "taken"}},
                        "template": {"metadata": {"labels": {"app": "taken"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    );
    s.apply(&spec("taken", 3));
    s.wait_service("taken", 30, "NOT_OURS", |v| {
        v["engine"]["status"] == "NOT_OURS"
    });
    common::wait_until(
        5,
        || s.service_events("taken").contains("not-ours"),
        || s.service_events("taken"),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !fake
            .objects("deployments")
            .iter()
            .any(|d| d["metadata"]["name"] == "guarded")
    );
    assert!(scale_patches(&fake, "guarded").is_empty() && scale_patches(&fake, "taken").is_empty());
    let taken = fake
        .objects("deployments")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "taken")
        .unwrap();
    assert_eq!(taken["spec"]["replicas"], 1);

    // A restarted server adopts the Deployment: nothing created or scaled again.
    s.kill();
    let mark = fake.requests().len();
    let pods: Vec<Value> = pods_of(&fake, "pharos.io/service", "web");
    s.spawn();
    s.wait_service("web", 30, "4 ready after the restart", ready(4));
    std::thread::sleep(std::time::Duration::from_secs(2));
    // (Only `taken`, whose Deployment is another's, is tried once more: 409.)
    let made: Vec<String> = fake.requests()[mark..]
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/deployments"))
        .map(|r| {
            r.body["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(made.iter().all(|n| n == "taken"), "{made:?}");
    assert_eq!(count(&fake, "PATCH", "/deployments/web/scale", mark), 0);
    assert_eq!(pods_of(&fake, "pharos.io/service", "web"), pods);
    // Steady: nothing is asked of the API but the watches.
    let quiet = fake.requests().len();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        calls_besides_watches_and_logs(&fake, quiet),
        Vec::<String>::new()
    );

    // A Deployment of this installation that no service wants (a server stopped between
    // deleting a service and its Deployment) is deleted; another installation's stays.
    let installation = std::fs::read_to_string(s.data().join("installation-id")).unwrap();
    for (name, inst) in [("ghost", installation.trim()), ("neighbour", "other0")] {
        fake.create_object(
            "deployments",
            NS,
            json!({"metadata": {"name": name, "labels": {
                    "app.kubernetes.io/managed-by": "pharos", "pharos.io/installation": inst,
                    "pharos.io/service": name}},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
    }
    let named = |n: &str| {
        fake.objects("deployments")
            .iter()
            .any(|d| d["metadata"]["name"] == n)
    };
    wait_until(
        20,
        || !named("ghost"),
        || "the orphan Deployment is still there".into(),
    );
    assert!(named("neighbour"));

    // Deleting the service deletes its Deployment and so its pods.
    let (status, _) = s.request("DELETE", "/v1/services/web", Some(ADMIN), None);
    assert_eq!(status, 200);
    wait_until(
        30,
        || {
            s.request("GET", "/v1/services/web", Some(ADMIN), None).0 == 404
                && pods_of(&fake, "pharos.io/service", "web").is_empty()
        },
        || format!("service web still there: {}", s.server_log()),
    );
    assert!(
        !fake
            .objects("deployments")
            .iter()
            .any(|d| d["metadata"]["name"] == "web")
    );
    assert!(s.server_log().matches("panicked").count() == 0);
    assert_allowed_by_rbac(&fake);
}

/// A function graph on Kubernetes: each function a Deployment of its container with its
/// vCPUs as the pod's request, ready through the graph's status; deleting the graph
/// deletes them.
#[test]
fn a_graph_runs_each_function_as_a_deployment() {
    let fake = FakeKube::start(&[("node-a", 8.0)]);
    let s = start(&fake, "capacity: {cpus: 8}");
    let function = |name: &str, cpus: f64, extra: &str| {
        format!(
            "  - name: {name}\n    kubernetes: {{image: 'registry.example/{name}:1', port: 8080}}\n    \
             cpus: {cpus}\n    processing_time_s: 0.01\n    min_replicas: 1\n    max_replicas: 1\n{extra}"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pair.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: graph\nname: pair\nfunctions:\n{}{}",
            function("front", 0.25, "    routes: [{to: back, p: 1.0}]\n"),
            function("back", 0.5, "")
        ),
    )
    .unwrap();
    let (ok, out, err) = s.cli(&["apply", "-f", file.to_str().unwrap()], ADMIN);
    assert!(ok, "{out}{err}");
    let status = || s.request("GET", "/v1/graphs/pair", Some(ADMIN), None).1;
    wait_until(
        30,
        || {
            status()["functions"]
                .as_array()
                .is_some_and(|f| f.len() == 2 && f.iter().all(|f| f["ready_replicas"] == 1))
        },
        || format!("{}\n{}", status(), s.server_log()),
    );
    for (name, cpu) in [("pair.front", "250m"), ("pair.back", "500m")] {
        let d = fake
            .objects("deployments")
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["cpu"], cpu, "{d}");
        assert!(
            c["image"]
                .as_str()
                .unwrap()
                .starts_with("registry.example/")
        );
        assert_eq!(pods_of(&fake, "pharos.io/service", name).len(), 1);
    }
    let (ok, _, err) = s.cli(&["delete", "graph", "pair"], ADMIN);
    assert!(ok, "{err}");
    wait_until(
        30,
        || {
            !fake.objects("deployments").iter().any(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("pair."))
            })
        },
        || s.server_log(),
    );
    assert!(s.server_log().matches("panicked").count() == 0);
    assert_allowed_by_rbac(&fake);
}

const MANIFEST: &str = "name: gang\nlearners: 2\ncpus: 2\nmemory: 1GiB\n\
    framework: {name: pytorch, command: python train.py}\n";

#[test]
fn a_gang_starts_only_when_every_learner_fits_and_survives_halt_resume_and_restarts() {
    let fake = FakeKube::start(&[("node-a", 2.0), ("node-b", 2.0)]);
    // Another team's pod holds 1.5 vCPU of node-a: one learner of 2 vCPU fits, not two.
    fake.create_object(
        "pods",
        "other",
        json!({"metadata": {"name": "busy"}, "spec": {"nodeName": "node-a", "containers": [
            {"name": "c", "image": "x", "resources": {"requests": {"cpu": "1500m"}}}]},
            "status": {"phase": "Running"}}),
    );
    let mut s = start(&fake, "capacity: {cpus: 8, memory: 16GiB}");
    // The first create conflicts (409): retried.
    fake.inject("POST", "/namespaces/ml/jobs", 409, 1);
    let id = s.submit(MANIFEST);
    let job_label = id.to_string();
    wait_until(
        30,
        || s.events(id).contains("the gang waits"),
        || format!("no waiting event: {}\n{}", s.events(id), s.server_log()),
    );
    let ev = s.events(id);
    assert!(ev.contains("room for 1"), "{ev}");
    assert!(
        ev.contains("409"),
        "the conflict is not in the events: {ev}"
    );
    let jobs = fake.objects("jobs");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["spec"]["suspend"], true);
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 2);
    assert_eq!(job["spec"]["parallelism"], 2);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |k: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == k)
            .map(|e| e["value"].clone())
    };
    assert_eq!(var("MASTER_ADDR"), Some(json!(format!("{name}-0.{name}"))));
    assert_eq!(var("NUM_LEARNERS"), Some(json!("2")));
    // No Service yet: it is made when the gang is let go.
    assert!(fake.objects("services").is_empty());
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(pods_of(&fake, "pharos.io/job", &job_label).is_empty());
    assert_eq!(s.job(id)["state"], "DOWNLOADING");
    // Said once, though asked again every 2 s.
    assert_eq!(
        s.events(id).matches("the gang waits").count(),
        1,
        "{}",
        s.events(id)
    );

    // Room for both: let go, and both run on their nodes.
    fake.delete_object("pods", "other", "busy");
    s.wait_state(id, "PROCESSING", 30);
    let svc = fake
        .objects("services")
        .into_iter()
        .find(|x| x["metadata"]["name"] == name.as_str())
        .expect("the learners' headless Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(
        svc["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    let unsuspend = job_patches(&fake, &name);
    assert_eq!(
        unsuspend,
        vec![
            json!({"metadata": {"annotations": {"pharos.io/attempt": "1"}}, "spec": {"suspend": false}})
        ]
    );
    wait_until(
        30,
        || {
            let pods = pods_of(&fake, "pharos.io/job", &job_label);
            pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running")
        },
        || format!("pods: {:?}", pods_of(&fake, "pharos.io/job", &job_label)),
    );
    for p in pods_of(&fake, "pharos.io/job", &job_label) {
        // (not all of it UTF-8: copied all the same)
        fake.set_log(
            p["metadata"]["name"].as_str().unwrap(),
            b"step=1 loss=0.50 \xff\xfe\n",
        );
    }
    wait_until(20, || s.log(id, 1).contains("loss=0.50"), || s.server_log());

    // A restart in the middle re-attaches: no Job made again, the same pods.
    s.kill();
    let mark = fake.requests().len();
    let pods = pods_of(&fake, "pharos.io/job", &job_label);
    s.spawn();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(s.job(id)["state"], "PROCESSING");
    assert_eq!(count(&fake, "POST", "/jobs", mark), 0);
    assert_eq!(pods_of(&fake, "pharos.io/job", &job_label), pods);
    // A running job costs the API its log reads (once a second per learner), nothing
    // else: statuses come from the watches.
    let quiet = fake.requests().len();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        calls_besides_watches_and_logs(&fake, quiet),
        Vec::<String>::new()
    );
    let logs = count(&fake, "GET", "/log", quiet);
    assert!(
        (2..=8).contains(&logs),
        "{logs} log reads in 2 s for 2 learners"
    );

    // Halt suspends the Job (its pods go); resume lets it go again as attempt 2.
    let (ok, out, err) = s.cli(&["train", "halt", &id.to_string()], ADMIN);
    assert!(ok, "{out}{err}");
    s.wait_state(id, "HALTED", 30);
    wait_until(
        20,
        || pods_of(&fake, "pharos.io/job", &job_label).is_empty(),
        || "pods left".into(),
    );
    let bodies = job_patches(&fake, &name);
    assert_eq!(bodies.last(), Some(&json!({"spec": {"suspend": true}})));
    let (ok, out, err) = s.cli(&["train", "resume", &id.to_string()], ADMIN);
    assert!(ok, "{out}{err}");
    s.wait_state(id, "PROCESSING", 30);
    let bodies = job_patches(&fake, &name);
    assert_eq!(
        bodies.last(),
        Some(
            &json!({"metadata": {"annotations": {"pharos.io/attempt": "2"}}, "spec": {"suspend": false}})
        )
    );
    assert_eq!(fake.objects("jobs").len(), 1);
    assert_eq!(count(&fake, "POST", "/jobs", mark), 0);

    // Both learners succeed: COMPLETED, their logs kept.
    wait_until(
        30,
        || pods_of(&fake, "pharos.io/job", &job_label).len() == 2,
        || "no pods".into(),
    );
    for p in pods_of(&fake, "pharos.io/job", &job_label) {
        let pod = p["metadata"]["name"].as_str().unwrap();
        fake.set_log(pod, b"step=2 loss=0.25\ndone\n");
        fake.end_pod(NS, pod, 0);
    }
    s.wait_state(id, "COMPLETED", 30);
    assert!(s.log(id, 2).contains("done"), "{}", s.log(id, 2));

    // Deleting the job deletes the Job, and with it its pods and Service; the API failing
    // the first delete (500) only delays it.
    fake.inject("DELETE", "/namespaces/ml/jobs/", 500, 1);
    let (ok, out, err) = s.cli(&["train", "delete", &id.to_string()], ADMIN);
    assert!(ok, "{out}{err}");
    wait_until(
        30,
        || {
            fake.objects("jobs").is_empty()
                && fake.objects("services").is_empty()
                && pods_of(&fake, "pharos.io/job", &job_label).is_empty()
        },
        || {
            format!(
                "left: {:?} {:?}",
                fake.objects("jobs"),
                fake.objects("services")
            )
        },
    );
    assert_eq!(count(&fake, "DELETE", &format!("/jobs/{name}"), 0), 2);
    assert!(!s.server_log().contains("panicked"));
    assert_allowed_by_rbac(&fake);
}

#[test]
fn two_gangs_let_go_together_never_share_the_same_room() {
    // Room for one gang of two 2-vCPU learners; pharos's own capacity would allow two.
    let fake = FakeKube::start(&[("node-a", 2.0), ("node-b", 2.0)]);
    let s = start(&fake, "capacity: {cpus: 8, memory: 16GiB}");
    let a = s.submit(MANIFEST);
    let b = s.submit(&MANIFEST.replace("name: gang", "name: gang-b"));
    // One runs, the other waits: never both let go (the second would wait for pods
    // that cannot be placed, holding half a gang).
    wait_until(
        30,
        || {
            let states = [s.job(a)["state"].clone(), s.job(b)["state"].clone()];
            states.contains(&json!("PROCESSING")) && states.contains(&json!("DOWNLOADING"))
        },
        || format!("{} {}\n{}", s.job(a), s.job(b), s.server_log()),
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (first, second) = if s.job(a)["state"] == "PROCESSING" {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(s.job(second)["state"], "DOWNLOADING");
    let let_go = fake
        .objects("jobs")
        .into_iter()
        .filter(|j| j["spec"]["suspend"] == false)
        .count();
    assert_eq!(let_go, 1, "{:?}", fake.objects("jobs"));
    assert!(
        s.events(second).contains("the gang waits"),
        "{}",
        s.events(second)
    );
    // The first ends: the second is let go.
    wait_until(
        30,
        || pods_of(&fake, "pharos.io/job", &first.to_string()).len() == 2,
        || "pods".into(),
    );
    for p in pods_of(&fake, "pharos.io/job", &first.to_string()) {
        fake.end_pod(NS, p["metadata"]["name"].as_str().unwrap(), 0);
    }
    s.wait_state(first, "COMPLETED", 30);
    s.wait_state(second, "PROCESSING", 30);
    assert_allowed_by_rbac(&fake);
}

#[test]
fn a_halted_gang_with_a_finished_learner_resumes_as_a_new_job() {
    // An indexed Job does not run a completed index again: resuming it would leave the
    // finished learner out of the new attempt's rendezvous.
    let fake = FakeKube::start(&[("node-a", 4.0)]);
    let s = start(&fake, "capacity: {cpus: 4}");
    let manifest = "name: halves\nlearners: 2\ncpus: 1\n\
        framework: {name: pytorch, command: python train.py}\n";
    let (id, label) = running_gang(&fake, &s, manifest);
    let first_uid = fake.objects("jobs")[0]["metadata"]["uid"].clone();
    end_learner(&fake, &label, 0, 0);
    wait_until(
        10,
        || fake.objects("jobs")[0]["status"]["succeeded"] == 1,
        || "".into(),
    );
    let (ok, out, err) = s.cli(&["train", "halt", &id.to_string()], ADMIN);
    assert!(ok, "{out}{err}");
    s.wait_state(id, "HALTED", 30);
    let (ok, out, err) = s.cli(&["train", "resume", &id.to_string()], ADMIN);
    assert!(ok, "{out}{err}");
    s.wait_state(id, "PROCESSING", 30);
    wait_until(
        30,
        || {
            let jobs = fake.objects("jobs");
            jobs.len() == 1
                && jobs[0]["metadata"]["uid"] != first_uid
                && jobs[0]["metadata"]["annotations"]["pharos.io/attempt"] == "2"
                && pods_of(&fake, "pharos.io/job", &label)
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
                    == 2
        },
        || {
            format!(
                "{:?}\n{}\n{}",
                fake.objects("jobs"),
                s.events(id),
                s.server_log()
            )
        },
    );
    assert_allowed_by_rbac(&fake);
}

#[test]
fn a_gpu_gang_tolerates_the_gpu_taint_and_waits_for_gpus() {
    let fake = FakeKube::start(&[("node-a", 8.0)]);
    let s = start(&fake, "capacity: {cpus: 8, gpus: {t4: 1}}");
    let id = s.submit(
        "name: gpu\nlearners: 1\ncpus: 1\ngpus: 1\ngpu_type: t4\n\
         framework: {name: pytorch, command: python train.py}\n",
    );
    wait_until(
        30,
        || s.events(id).contains("the gang waits"),
        || format!("{}\n{}", s.events(id), s.server_log()),
    );
    assert!(
        s.events(id).contains("1 nvidia.com/gpu"),
        "{}",
        s.events(id)
    );
    let job = &fake.objects("jobs")[0];
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists"}])
    );
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.product"], "t4");
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(job["spec"]["suspend"], true);
}

#[test]
fn a_failed_learner_restarts_the_gang_as_a_new_job_and_a_vanished_job_is_lost() {
    let fake = FakeKube::start(&[("node-a", 4.0)]);
    let s = start(&fake, "capacity: {cpus: 4}");
    let manifest = "name: flaky\nlearners: 2\ncpus: 1\nmax_restarts: 1\n\
        framework: {name: pytorch, command: python train.py}\n";
    let (id, label) = running_gang(&fake, &s, manifest);
    // Learner 2 fails: the Job fails; pharos deletes it and makes attempt 2's.
    end_learner(&fake, &label, 1, 3);
    wait_until(
        60,
        || {
            fake.objects("jobs")
                .iter()
                .any(|j| j["metadata"]["annotations"]["pharos.io/attempt"] == "2")
        },
        || format!("no second attempt: {}\n{}", s.events(id), s.server_log()),
    );
    assert!(
        s.events(id).contains("exited with code 3"),
        "{}",
        s.events(id)
    );
    s.wait_state(id, "PROCESSING", 30);
    // The Job vanishes behind pharos's back: its learners are lost, and with no
    // restart left the job fails saying so.
    let name = fake.objects("jobs")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    fake.delete_object("jobs", NS, &name);
    let v = s.wait_state(id, "FAILED", 60);
    assert!(s.events(id).contains("lost"), "{v} {}", s.events(id));
    assert_allowed_by_rbac(&fake);
}

#[test]
fn the_printed_manifests_are_valid_for_the_api() {
    let out = std::process::Command::new(common::PHAROS)
        .args([
            "k8s",
            "manifests",
            "--namespace",
            "ml-platform",
            "--database-secret",
            "db",
        ])
        .args(["--router-port", "9000", "--access-mode", "ReadWriteMany"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    for d in &docs {
        pharos_kube::manifests::validate(d).unwrap();
        if d["kind"] != "Namespace" && !d["kind"].as_str().unwrap().starts_with("Cluster") {
            assert_eq!(d["metadata"]["namespace"], "ml-platform", "{d}");
        }
    }
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("PHAROS_DATABASE_URL") && env.contains("\"db\""),
        "{env}"
    );
    let pvc = docs
        .iter()
        .find(|d| d["kind"] == "PersistentVolumeClaim")
        .unwrap();
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
    // A bad flag is an error naming it, not a manifest.
    let out = std::process::Command::new(common::PHAROS)
        .args(["k8s", "manifests", "--access-mode", "Sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--access-mode"));
}

#[test]
fn specs_for_another_engine_are_refused_naming_the_field() {
    let fake = FakeKube::start(&[("node-a", 4.0)]);
    let s = start(&fake, "");
    let (status, v) = s.apply(
        "name: local\ncommand: [pharos-replica]\nslo: {latency_s: 0.5}\nprocessing_time_s: 0.05\n",
    );
    assert_eq!(status, 400);
    assert!(v.to_string().contains("kubernetes"), "{v}");
    let (status, v) = s.apply(
        "name: both\ncommand: [x]\nkubernetes: {image: a}\nslo: {latency_s: 0.5}\nprocessing_time_s: 0.05\n",
    );
    assert_eq!(status, 400);
    assert!(v.to_string().contains("command, ray, kubernetes"), "{v}");
    let (status, v) = s.apply(
        "name: noimage\nkubernetes: {image: ''}\nslo: {latency_s: 0.5}\nprocessing_time_s: 0.05\n",
    );
    assert_eq!(status, 400);
    assert!(v.to_string().contains("kubernetes.image"), "{v}");
}
