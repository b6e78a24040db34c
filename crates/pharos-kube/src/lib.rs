//! pharos on Kubernetes.
//!
//! - Training jobs ([`KubeBackend`], behind pharos's `Backend` seam): each job is one
//!   indexed Job (a pod per learner, `completionMode: Indexed`) with a headless Service
//!   for the rendezvous, created **suspended** and unsuspended only when the nodes have
//!   room for the whole gang (Kueue's way of all-or-nothing admission); halt suspends
//!   it (Kubernetes deletes its pods), resume unsuspends it. Learner statuses come from
//!   the pods, logs from the pods' logs.
//! - Inference services ([`KubeEngine`], behind the services' engine seam): each service
//!   is a Deployment whose replica count pharos sets through the scale subresource; a
//!   Deployment an HPA also targets is refused (with an event) rather than fought over.
//!   Ready pods join pharos's router, which keeps the request counters the autoscaler
//!   reads.
//! - [`manifests`]: what runs pharos itself in a cluster.
//!
//! Everything pharos creates carries `app.kubernetes.io/managed-by: pharos` and
//! `pharos.io/installation: <id>` (the data directory's installation id), so two pharos
//! servers in one namespace never take each other's objects, and a restarted server
//! finds its own. Pods, Jobs and Deployments (this installation's) and the namespace's
//! HorizontalPodAutoscalers are watched (kube-runtime's watcher and reflector: a 410
//! Gone on a watch relists); status reads come from those caches, so a pass costs no
//! API call unless something must change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use pharos_engine::config::KubernetesConfig;
use tracing::{debug, warn};

pub mod fit;
pub mod manifests;
pub mod serving;
pub mod training;

pub use serving::KubeEngine;
pub use training::KubeBackend;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const INSTALLATION: &str = "pharos.io/installation";
pub const JOB_LABEL: &str = "pharos.io/job";
pub const SERVICE_LABEL: &str = "pharos.io/service";
pub const ATTEMPT: &str = "pharos.io/attempt";
pub const FIELD_MANAGER: &str = "pharos";

/// One cache kept by a watch: its objects and whether the first list has arrived.
pub struct Watched<K: kube::Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    pub store: Store<K>,
    ready: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
}

impl<K> Watched<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Starts watching `api`'s objects with `labels` (all of them when empty) on the
    /// current runtime; the task runs for the life of the server, relisting after a 410
    /// and backing off after errors.
    fn spawn(api: Api<K>, labels: &str, what: &'static str) -> Self {
        let (store, writer) = reflector::store();
        let ready = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut cfg = watcher::Config::default().timeout(60);
        if !labels.is_empty() {
            cfg = cfg.labels(labels);
        }
        let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
        let (r, e) = (ready.clone(), errors.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        debug!(what, "watch listed");
                        r.store(true, Ordering::Release);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let n = e.fetch_add(1, Ordering::Relaxed) + 1;
                        warn!(what, errors = n, "watching: {err}; retrying with back-off");
                    }
                }
            }
        });
        Self {
            store,
            ready,
            errors,
        }
    }

    /// The objects, once the first list has arrived (before it, nothing is known).
    pub fn objects(&self) -> Option<Vec<Arc<K>>> {
        self.ready
            .load(Ordering::Acquire)
            .then(|| self.store.state())
    }

    /// Watch errors since the start (each retried).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// The cluster as pharos uses it: a client, the namespace, the configuration and the
/// watched caches of this installation's objects.
pub struct Kube {
    pub client: Client,
    pub namespace: String,
    pub config: KubernetesConfig,
    pub installation: String,
    pub pods: Watched<Pod>,
    pub jobs: Watched<Job>,
    pub deployments: Watched<Deployment>,
    /// Every HorizontalPodAutoscaler of the namespace (whoever made it).
    pub hpas: Watched<HorizontalPodAutoscaler>,
}

impl Kube {
    /// Connects (kubeconfig, or the pod's service account in a cluster) and starts the
    /// watches. Nothing is asked of the API here, so a server starts while the cluster
    /// is away and catches up when it answers.
    pub async fn connect(cfg: &KubernetesConfig, installation: String) -> anyhow::Result<Self> {
        let mut config = match &cfg.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?;
                let opts = kube::config::KubeConfigOptions {
                    context: cfg.context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer().await.context(
                "kubernetes: no kubeconfig given, none found, and not running in a cluster",
            )?,
        };
        let timeout = Duration::from_secs_f64(cfg.timeout_s.max(0.1));
        config.connect_timeout = Some(timeout);
        // Watches hold a response open for their timeout (60 s), plus a margin.
        config.read_timeout = Some(Duration::from_secs(75).max(timeout));
        config.write_timeout = Some(timeout);
        let namespace = cfg
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).context("kubernetes: building the client")?;
        Ok(Self::with_client(
            client,
            namespace,
            cfg.clone(),
            installation,
        ))
    }

    /// Starts the watches with `client` (tests give one bound to a fake API server).
    pub fn with_client(
        client: Client,
        namespace: String,
        config: KubernetesConfig,
        installation: String,
    ) -> Self {
        let labels = format!("{MANAGED_BY}=pharos,{INSTALLATION}={installation}");
        let pods = Watched::spawn(Api::namespaced(client.clone(), &namespace), &labels, "pods");
        let jobs = Watched::spawn(Api::namespaced(client.clone(), &namespace), &labels, "jobs");
        let deployments = Watched::spawn(
            Api::namespaced(client.clone(), &namespace),
            &labels,
            "deployments",
        );
        let hpas = Watched::spawn(Api::namespaced(client.clone(), &namespace), "", "hpas");
        Self {
            client,
            namespace,
            config,
            installation,
            pods,
            jobs,
            deployments,
            hpas,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The labels of everything this installation creates.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        [
            (MANAGED_BY.to_string(), "pharos".to_string()),
            (INSTALLATION.to_string(), self.installation.clone()),
        ]
        .into()
    }
}

/// Whether an API error is worth retrying (the cluster is away, busy, or a conflict a
/// later try resolves) rather than a refusal of what was sent.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => true,
        _ => false,
    }
}

/// An API error as one line: the status's message, or the error.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

/// The container security context of tenants' code (learners, replicas): no privilege
/// escalation, no Linux capabilities.
pub(crate) fn untrusted_security_context() -> serde_json::Value {
    serde_json::json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
    })
}
