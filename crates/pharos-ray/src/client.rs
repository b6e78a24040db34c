//! A thin client of a Ray cluster's dashboard REST API (Serve and Jobs), with an
//! optional bearer token (Ray's token auth mode), and the content-addressed packages
//! Ray takes as a `working_dir`.
//!
//! Every call has a timeout; a connection refused or timed out is [`RayError::Unreachable`],
//! an answer that is not 2xx is [`RayError::Status`] with Ray's own text.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
pub use pharos_engine::config::RayConfig;
use serde_json::Value;
use sha2::Digest;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RayError {
    #[error("Ray at {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("Ray answered {0}: {1}")]
    Status(u16, String),
    #[error("Ray's answer is not understood: {0}")]
    Malformed(String),
    /// The directory could not be packed (unreadable, too large).
    #[error("packing the code: {0}")]
    Package(String),
}

impl RayError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RayError::Status(404, _))
    }
}

#[derive(Clone)]
pub struct RayClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    client: Client<HttpConnector, Body>,
}

impl RayClient {
    pub fn new(cfg: &RayConfig) -> anyhow::Result<Self> {
        let token = match (&cfg.token, &cfg.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("ray.token_file {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        anyhow::ensure!(
            cfg.address.starts_with("http://"),
            "ray.address: {:?} must be an http:// URL",
            cfg.address
        );
        anyhow::ensure!(
            cfg.timeout_s.is_finite() && cfg.timeout_s > 0.0,
            "ray.timeout_s must be positive"
        );
        Ok(Self {
            base: cfg.address.trim_end_matches('/').to_string(),
            token,
            timeout: Duration::from_secs_f64(cfg.timeout_s),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    pub fn address(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Vec<u8>), RayError> {
        let timeout = if path.starts_with("/api/packages/") {
            self.timeout * 10
        } else {
            self.timeout
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, bytes)) => req.header("content-type", ct).body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .map_err(|e| RayError::Malformed(format!("request {path}: {e}")))?;
        let unreachable = |e: String| RayError::Unreachable(self.base.clone(), e);
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer to {path} within {timeout:?}")))?
            .map_err(|e| unreachable(format!("{path}: {e}")))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .map_err(|_| unreachable(format!("{path}: the answer stalled")))?
            .map_err(|e| unreachable(format!("{path}: {e}")))?
            .to_bytes()
            .to_vec();
        Ok((status, bytes))
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Vec<u8>, RayError> {
        let (status, bytes) = self.call(method, path, body).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            // Tracebacks: the last line says what went wrong.
            let short = text
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(400)
                .collect();
            Err(RayError::Status(status.as_u16(), short))
        }
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RayError> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let bytes = self.ok(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| RayError::Malformed(format!("{path}: {e}")))
    }

    /// `GET /api/version`: Ray's version (and a check that the cluster answers).
    pub async fn version(&self) -> Result<String, RayError> {
        let v = self.json(Method::GET, "/api/version", None).await?;
        Ok(v["ray_version"].as_str().unwrap_or("unknown").to_string())
    }

    /// Uploads `dir` as a zip package unless Ray has it; returns its `gcs://` URI.
    pub async fn upload_dir(&self, dir: &Path) -> Result<String, RayError> {
        let owned = dir.to_path_buf();
        let zip = tokio::task::spawn_blocking(move || zip_dir(&owned))
            .await
            .map_err(|e| RayError::Package(e.to_string()))?
            .map_err(|e| RayError::Package(format!("{}: {e}", dir.display())))?;
        let hash = hex(&sha2::Sha256::digest(&zip)[..20]);
        let name = format!("_ray_pkg_{hash}.zip");
        let path = format!("/api/packages/gcs/{name}");
        let (status, _) = self.call(Method::GET, &path, None).await?;
        if !status.is_success() {
            self.ok(Method::PUT, &path, Some(("application/octet-stream", zip)))
                .await?;
        }
        Ok(format!("gcs://{name}"))
    }

    /// `GET /api/v0/nodes` (Ray's state API): the cluster's nodes, alive and dead (at
    /// most [`MAX_NODES`]; a larger cluster is refused rather than read in part).
    pub async fn nodes(&self) -> Result<Vec<RayNode>, RayError> {
        let v = self
            .json(
                Method::GET,
                &format!("/api/v0/nodes?limit={MAX_NODES}&detail=false"),
                None,
            )
            .await?;
        let result = &v["data"]["result"];
        let total = result["total"].as_u64().unwrap_or(0);
        if total > MAX_NODES as u64 {
            return Err(RayError::Malformed(format!(
                "the cluster has {total} nodes; pharos reads at most {MAX_NODES}"
            )));
        }
        let list = result["result"]
            .as_array()
            .ok_or_else(|| RayError::Malformed("/api/v0/nodes: no node list".into()))?;
        Ok(list.iter().filter_map(RayNode::from_state).collect())
    }

    /// `GET /api/serve/applications/`: Serve's applications with their deployments and
    /// replicas.
    pub async fn serve_details(&self) -> Result<Value, RayError> {
        self.json(Method::GET, "/api/serve/applications/", None)
            .await
    }

    /// `PUT /api/serve/applications/`: the whole declarative Serve config.
    pub async fn put_serve_config(&self, config: &Value) -> Result<(), RayError> {
        self.json(Method::PUT, "/api/serve/applications/", Some(config))
            .await
            .map(|_| ())
    }

    /// The external scaler: sets a deployment's replica count.
    pub async fn scale(&self, app: &str, deployment: &str, replicas: u32) -> Result<(), RayError> {
        let body = serde_json::json!({ "target_num_replicas": replicas });
        self.json(
            Method::POST,
            &format!("/api/v1/applications/{app}/deployments/{deployment}/scale"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `POST /api/jobs/`; a submission id Ray already has is not an error (submission is
    /// idempotent by id).
    pub async fn submit_job(&self, request: &Value) -> Result<(), RayError> {
        match self.json(Method::POST, "/api/jobs/", Some(request)).await {
            Ok(_) => Ok(()),
            Err(RayError::Status(_, m)) if m.contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/jobs/{id}`: None when Ray does not know the job.
    pub async fn job(&self, id: &str) -> Result<Option<Value>, RayError> {
        match self
            .json(Method::GET, &format!("/api/jobs/{id}"), None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn job_logs(&self, id: &str) -> Result<String, RayError> {
        let v = self
            .json(Method::GET, &format!("/api/jobs/{id}/logs"), None)
            .await?;
        Ok(v["logs"].as_str().unwrap_or("").to_string())
    }

    pub async fn stop_job(&self, id: &str) -> Result<(), RayError> {
        self.unless_gone(Method::POST, &format!("/api/jobs/{id}/stop"))
            .await
    }

    pub async fn delete_job(&self, id: &str) -> Result<(), RayError> {
        self.unless_gone(Method::DELETE, &format!("/api/jobs/{id}"))
            .await
    }

    /// A call whose work is done when Ray no longer knows the job (404 is success).
    async fn unless_gone(&self, method: Method, path: &str) -> Result<(), RayError> {
        match self.json(method, path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The most nodes pharos reads from a cluster.
pub const MAX_NODES: usize = 10_000;

/// One node as Ray's state API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RayNode {
    pub id: String,
    pub ip: String,
    pub alive: bool,
    pub head: bool,
    /// Its total resources (`CPU`, `GPU`, `memory`, `accelerator_type:<model>`, custom
    /// ones).
    pub resources: std::collections::BTreeMap<String, f64>,
}

impl RayNode {
    fn from_state(v: &Value) -> Option<RayNode> {
        let resources = v["resources_total"]
            .as_object()
            .map(|r| {
                r.iter()
                    .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Some(RayNode {
            id: v["node_id"].as_str()?.to_string(),
            ip: v["node_ip"].as_str()?.to_string(),
            alive: v["state"].as_str() == Some("ALIVE"),
            head: v["is_head_node"].as_bool().unwrap_or(false),
            resources,
        })
    }

    pub fn resource(&self, name: &str) -> f64 {
        self.resources.get(name).copied().unwrap_or(0.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ray keeps packages in its GCS; larger trees are refused.
pub const MAX_PACKAGE_BYTES: u64 = 256 << 20;

/// A zip archive (stored, not compressed) of the files under `dir`, paths relative to
/// it, in name order - the same tree gives the same bytes, so the same package name.
pub fn zip_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut total = 0u64;
    for rel in &files {
        let data = std::fs::read(dir.join(rel))?;
        total += data.len() as u64;
        if total > MAX_PACKAGE_BYTES {
            return Err(std::io::Error::other(format!(
                "more than {} MiB of files",
                MAX_PACKAGE_BYTES >> 20
            )));
        }
        let name = rel.as_bytes();
        let crc = crc32(&data);
        let size = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other(format!("{rel}: larger than 4 GiB")))?;
        let offset = out.len() as u32;
        // Local file header: version 2.0, no flags, stored, DOS time 1980-01-01.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for v in [20u16, 0, 0, 0, 0x21] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, size, size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&data);
        // Its central directory entry (unix, mode 0644).
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for v in [0x031eu16, 20, 0, 0, 0, 0x21] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, size, size] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [name.len() as u16, 0, 0, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, files.len() as u16, files.len() as u16] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        let name = entry.file_name();
        if name == "__pycache__" || name == ".git" {
            continue;
        }
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_str()
                .ok_or_else(|| std::io::Error::other(format!("{}: not UTF-8", path.display())))?
                .to_string();
            out.push(rel);
        }
    }
    if out.len() > u16::MAX as usize {
        return Err(std::io::Error::other("more than 65535 files"));
    }
    Ok(())
}

/// CRC-32 (IEEE), as zip needs it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Ray's job status as a learner status: `PENDING`/`RUNNING` run (Ray may still be
/// placing it), `SUCCEEDED` is exit 0, `FAILED` the driver's exit code (1 when Ray gives
/// none), `STOPPED` a SIGTERM.
pub fn learner_status(job: &Value) -> pharos_engine::LearnerStatus {
    use pharos_engine::LearnerStatus;
    match job["status"].as_str().unwrap_or("") {
        "SUCCEEDED" => LearnerStatus::Exited {
            code: Some(0),
            signal: None,
        },
        "FAILED" => LearnerStatus::Exited {
            code: Some(
                job["driver_exit_code"]
                    .as_i64()
                    .map(|c| c as i32)
                    .filter(|c| *c != 0)
                    .unwrap_or(1),
            ),
            signal: None,
        },
        "STOPPED" => LearnerStatus::Exited {
            code: None,
            signal: Some(libc::SIGTERM),
        },
        _ => LearnerStatus::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_a_known_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn the_zip_of_a_tree_is_the_same_bytes_each_time() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pkg/__pycache__")).unwrap();
        std::fs::write(d.path().join("b.py"), "print(2)\n").unwrap();
        std::fs::write(d.path().join("pkg/a.py"), "x = 1\n").unwrap();
        std::fs::write(d.path().join("pkg/__pycache__/a.pyc"), "junk").unwrap();
        let z = zip_dir(d.path()).unwrap();
        assert_eq!(z, zip_dir(d.path()).unwrap());
        // Two entries, names in order, no cache files; the end record counts them.
        let text = String::from_utf8_lossy(&z);
        assert!(text.contains("b.py") && text.contains("pkg/a.py"));
        assert!(!text.contains("a.pyc"));
        let end = &z[z.len() - 22..];
        assert_eq!(&end[..4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 2);
    }

    #[test]
    fn ray_job_statuses_map_onto_learner_statuses() {
        use pharos_engine::LearnerStatus;
        let s = |v: Value| learner_status(&v);
        assert_eq!(
            s(serde_json::json!({"status": "PENDING"})),
            LearnerStatus::Running
        );
        assert!(s(serde_json::json!({"status": "SUCCEEDED"})).succeeded());
        assert_eq!(
            s(serde_json::json!({"status": "FAILED", "driver_exit_code": 3})),
            LearnerStatus::Exited {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            s(serde_json::json!({"status": "FAILED", "driver_exit_code": null})),
            LearnerStatus::Exited {
                code: Some(1),
                signal: None
            }
        );
        assert_eq!(
            s(serde_json::json!({"status": "STOPPED"})),
            LearnerStatus::Exited {
                code: None,
                signal: Some(libc::SIGTERM)
            }
        );
    }
}
