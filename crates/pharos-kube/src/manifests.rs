//! The manifests that run pharos itself in a cluster (`pharos k8s manifests`): a
//! namespace, a ServiceAccount with the least privilege the Kubernetes backend needs, a
//! ConfigMap with the server's configuration, a PersistentVolumeClaim for the data
//! directory (the SQLite store unless a PostgreSQL URL is given, model archives, logs,
//! checkpoints), the server's Deployment and its Service.

use serde_json::{Value, json};

/// What the manifests are made from (the command's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    /// pharos's own image.
    pub image: String,
    /// The data directory's claim: size, storage class, access mode.
    pub storage: String,
    pub storage_class: Option<String>,
    /// `ReadWriteOnce`, or `ReadWriteMany` when learners on other nodes mount it.
    pub access_mode: String,
    /// A Secret (key `url`) holding a `postgres://` URL; SQLite on the claim without.
    pub database_secret: Option<String>,
    /// A Secret (key `token`) holding the admin token; without, the server makes one
    /// and writes it to `<data_dir>/admin-token` on the claim.
    pub admin_token_secret: Option<String>,
    /// The vCPUs (and memory) of the cluster pharos plans with.
    pub cpus: f64,
    pub memory: String,
    /// The learners' default image.
    pub learner_image: String,
    /// Let pharos read nodes and pods cluster-wide to admit gangs only when they fit.
    pub node_check: bool,
    /// Ports of inference services' routers (give services these `port`s) to expose.
    pub router_ports: Vec<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: "pharos".into(),
            image: "pharos:0.1.0".into(),
            storage: "20Gi".into(),
            storage_class: None,
            access_mode: "ReadWriteOnce".into(),
            database_secret: None,
            admin_token_secret: None,
            cpus: 16.0,
            memory: "64GiB".into(),
            learner_image: "python:3.12-slim".into(),
            node_check: true,
            router_ports: Vec::new(),
        }
    }
}

const DATA: &str = "/var/lib/pharos";

/// The manifests, in the order to apply them.
pub fn manifests(o: &Options) -> Vec<Value> {
    let ns = &o.namespace;
    let labels =
        json!({"app.kubernetes.io/name": "pharos", "app.kubernetes.io/component": "server"});
    let meta = |name: &str| json!({"name": name, "namespace": ns, "labels": labels});
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels},
    })];
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("pharos")}));
    // Exactly the calls the backend makes, in its own namespace.
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": meta("pharos"),
        "rules": [
            {"apiGroups": ["batch"], "resources": ["jobs"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["pods"],
             "verbs": ["get", "list", "watch", "delete", "deletecollection"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"],
             "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
             "verbs": ["list", "watch"]},
        ],
    }));
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": meta("pharos"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pharos"},
        "subjects": [{"kind": "ServiceAccount", "name": "pharos", "namespace": ns}],
    }));
    if o.node_check {
        // Read-only, cluster-wide: what the nodes hold, to admit a gang only when it fits.
        let name = format!("pharos-{ns}-node-reader");
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list"]},
            ],
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "pharos", "namespace": ns}],
        }));
    }
    let mut kubernetes = json!({
        "namespace": ns,
        "image": o.learner_image,
        // The `pharos` framework's learners (pharos-sgd) are in pharos's own image.
        "images": {"pharos": o.image},
        "check_nodes": o.node_check,
    });
    // Learners mount the data claim only where pods on other nodes can: a
    // ReadWriteOnce claim is the server's alone (learners then keep their checkpoints in
    // the pod, and a restarted pod starts over).
    if o.access_mode == "ReadWriteMany" {
        kubernetes["data_claim"] = json!("pharos-data");
    }
    let config = json!({
        "listen": "0.0.0.0:8080",
        "data_dir": DATA,
        "backend": "kubernetes",
        "capacity": {"cpus": o.cpus, "memory": o.memory},
        "kubernetes": kubernetes,
    });
    let config_text = serde_saphyr::to_string(&config).unwrap_or_default();
    out.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("pharos-config"),
        "data": {"server.yaml": config_text},
    }));
    let mut pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("pharos-data"),
        "spec": {
            "accessModes": [o.access_mode],
            "resources": {"requests": {"storage": o.storage}},
        },
    });
    if let Some(c) = &o.storage_class {
        pvc["spec"]["storageClassName"] = json!(c);
    }
    out.push(pvc);
    let mut env = vec![json!({"name": "PHAROS_CONFIG", "value": "/etc/pharos/server.yaml"})];
    if let Some(secret) = &o.database_secret {
        env.push(json!({
            "name": "PHAROS_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}},
        }));
    }
    if let Some(secret) = &o.admin_token_secret {
        env.push(json!({
            "name": "PHAROS_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}},
        }));
    }
    let mut ports = vec![json!({"name": "api", "containerPort": 8080})];
    let mut service_ports = vec![json!({"name": "api", "port": 8080, "targetPort": "api"})];
    for p in &o.router_ports {
        ports.push(json!({"name": format!("router-{p}"), "containerPort": p}));
        service_ports.push(json!({"name": format!("router-{p}"), "port": p, "targetPort": p}));
    }
    out.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("pharos"),
        "spec": {
            "replicas": 1,
            // One server per data directory: the old one goes before the new one starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "pharos",
                    // The image runs as 65532; the claim is made writable for it.
                    "securityContext": {"runAsNonRoot": true, "fsGroup": 65532},
                    "containers": [{
                        "name": "pharos",
                        "image": o.image,
                        "args": ["server"],
                        "env": env,
                        "ports": ports,
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "api"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "api"},
                                          "periodSeconds": 20, "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
                        "volumeMounts": [
                            {"name": "data", "mountPath": DATA},
                            {"name": "config", "mountPath": "/etc/pharos", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": "pharos-data"}},
                        {"name": "config", "configMap": {"name": "pharos-config"}},
                    ],
                },
            },
        },
    }));
    out.push(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta("pharos"),
        "spec": {"selector": labels, "ports": service_ports},
    }));
    out
}

/// The manifests as one YAML stream.
pub fn yaml(o: &Options) -> String {
    let docs = manifests(o);
    let mut out = String::from(
        "# pharos on Kubernetes: apply with `kubectl apply -f -`; see docs/kubernetes.md\n",
    );
    for d in &docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(d).unwrap_or_default());
    }
    out
}

/// Checks one manifest against the schema of the Kubernetes API this crate is built
/// for: it must parse as its kind's type, with every field known (what the type would
/// write back is what was given). The error names the object and what differs.
pub fn validate(doc: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps, core, rbac};
    fn check<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<(), String> {
        let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
        match first_difference(doc, &back, "") {
            None => Ok(()),
            Some(path) => Err(format!("{path}: not in the schema (or not of its type)")),
        }
    }
    let kind = doc["kind"].as_str().unwrap_or("");
    let r = match kind {
        "Namespace" => check::<core::v1::Namespace>(doc),
        "ServiceAccount" => check::<core::v1::ServiceAccount>(doc),
        "ConfigMap" => check::<core::v1::ConfigMap>(doc),
        "PersistentVolumeClaim" => check::<core::v1::PersistentVolumeClaim>(doc),
        "Service" => check::<core::v1::Service>(doc),
        "Role" => check::<rbac::v1::Role>(doc),
        "RoleBinding" => check::<rbac::v1::RoleBinding>(doc),
        "ClusterRole" => check::<rbac::v1::ClusterRole>(doc),
        "ClusterRoleBinding" => check::<rbac::v1::ClusterRoleBinding>(doc),
        "Deployment" => check::<apps::v1::Deployment>(doc),
        other => Err(format!("unknown kind {other:?}")),
    };
    r.map_err(|e| {
        format!(
            "{kind} {}: {e}",
            doc["metadata"]["name"].as_str().unwrap_or("?")
        )
    })
}

/// The first path where `given` has something `back` lacks or differs on (numbers
/// compared as numbers: the API writes integers as integers).
fn first_difference(given: &Value, back: &Value, path: &str) -> Option<String> {
    match (given, back) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => first_difference(v, w, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]"))),
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (a, b) if a == b => None,
        _ => Some(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_is_valid_for_the_api_and_a_typo_is_caught() {
        let o = Options {
            database_secret: Some("pharos-db".into()),
            admin_token_secret: Some("pharos-admin".into()),
            router_ports: vec![9000],
            storage_class: Some("fast".into()),
            ..Default::default()
        };
        for doc in manifests(&o) {
            validate(&doc).unwrap();
        }
        // A misspelt field or a wrong type is not silently dropped.
        let mut bad = manifests(&o).pop().unwrap();
        bad["spec"]["selectr"] = json!({});
        let e = validate(&bad).unwrap_err();
        assert!(
            e.contains("Service pharos") && e.contains(".spec.selectr"),
            "{e}"
        );
        let mut bad = manifests(&o)[2].clone();
        bad["rules"][0]["verbs"] = json!("get");
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn least_privilege_and_the_configuration_inside() {
        let docs = manifests(&Options::default());
        let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
        let all: Vec<&Value> = role["rules"].as_array().unwrap().iter().collect();
        // No wildcard, no secrets, no write to anything cluster-wide.
        for r in &all {
            for v in r["verbs"].as_array().unwrap() {
                assert_ne!(v, "*");
            }
            assert!(
                !r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == "secrets" || x == "*")
            );
        }
        let cluster = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        assert_eq!(cluster["rules"][0]["verbs"], json!(["list"]));
        let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        let cfg: pharos_server::ServerConfig =
            serde_saphyr::from_str(cm["data"]["server.yaml"].as_str().unwrap()).unwrap();
        assert_eq!(cfg.backend, pharos_server::config::BackendKind::Kubernetes);
        assert_eq!(cfg.kubernetes.namespace.as_deref(), Some("pharos"));
        // The training example's framework has its image; a ReadWriteOnce claim is
        // not handed to learners that may run on other nodes, a ReadWriteMany one is.
        assert_eq!(cfg.kubernetes.images["pharos"], "pharos:0.1.0");
        assert_eq!(cfg.kubernetes.data_claim, None);
        let rwx = manifests(&Options {
            access_mode: "ReadWriteMany".into(),
            ..Default::default()
        });
        let cm = rwx.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        let cfg: pharos_server::ServerConfig =
            serde_saphyr::from_str(cm["data"]["server.yaml"].as_str().unwrap()).unwrap();
        assert_eq!(cfg.kubernetes.data_claim.as_deref(), Some("pharos-data"));
        // Without the node check, nothing cluster-wide at all.
        let o = Options {
            node_check: false,
            ..Default::default()
        };
        assert!(
            !manifests(&o)
                .iter()
                .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding")
        );
    }
}
