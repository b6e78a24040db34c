//! The command-line client's connection to a server: where it is, the token, and the
//! HTTP calls every command makes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The server [env: PHAROS_URL; default: http://127.0.0.1:8080].
    #[arg(long, global = true)]
    url: Option<String>,
    /// The API token [env: PHAROS_TOKEN; default: the local server's admin token].
    #[arg(long, global = true)]
    token: Option<String>,
}

pub struct Client {
    pub url: String,
    token: Option<String>,
    pub agent: ureq::Agent,
}

impl Client {
    pub fn new(c: &Conn) -> Self {
        let url = c
            .url
            .clone()
            .or_else(|| std::env::var("PHAROS_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = c
            .token
            .clone()
            .or_else(|| std::env::var("PHAROS_TOKEN").ok())
            .or_else(|| {
                let dir = std::env::var_os("PHAROS_DATA_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(pharos_server::config::default_data_dir);
                std::fs::read_to_string(dir.join("admin-token"))
                    .ok()
                    .map(|t| t.trim().to_string())
            });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            url: url.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token.as_deref().unwrap_or(""))
    }

    pub fn check(&self, resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status();
        let mut body = resp.into_body();
        let text = body.read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let msg = v["error"].as_str().unwrap_or(&text).to_string();
            match v["field"].as_str() {
                Some(f) => bail!("{status}: {f}: {msg}"),
                None => bail!("{status}: {msg}"),
            }
        }
        Ok(v)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", self.auth())
            .call()
            .with_context(|| format!("reaching the server at {}", self.url))?;
        self.check(resp)
    }

    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.url);
        let text = body.to_string();
        let req = match method {
            "PATCH" => self.agent.patch(url),
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let resp = req
            .header("Authorization", self.auth())
            .content_type("application/json")
            .send(text.as_bytes())
            .with_context(|| format!("reaching the server at {}", self.url))?;
        self.check(resp)
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        let resp = self
            .agent
            .delete(format!("{}{path}", self.url))
            .header("Authorization", self.auth())
            .call()
            .with_context(|| format!("reaching the server at {}", self.url))?;
        self.check(resp)
    }
}

/// A tar archive of a directory's contents, in memory.
pub fn tar_dir(dir: &Path) -> Result<Vec<u8>> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(true);
    b.append_dir_all(".", dir)
        .with_context(|| format!("archiving {}", dir.display()))?;
    Ok(b.into_inner()?)
}

pub fn multipart(manifest: &[u8], archive: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!(
        "pharos-{:016x}",
        manifest.len() as u64 ^ archive.len() as u64 ^ 0x9e37_79b9_7f4a_7c15
    );
    let mut body = Vec::new();
    let _ = write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"; filename=\"manifest.yml\"\r\nContent-Type: application/yaml\r\n\r\n"
    );
    body.extend_from_slice(manifest);
    let _ = write!(
        body,
        "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model_definition\"; filename=\"model.tar\"\r\nContent-Type: application/x-tar\r\n\r\n"
    );
    body.extend_from_slice(archive);
    let _ = write!(body, "\r\n--{boundary}--\r\n");
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn id_path(id: &str) -> String {
    format!("/v1/models/{}", id.trim_start_matches("training-"))
}

pub fn ms(v: &Value) -> String {
    match v.as_i64() {
        Some(t) => {
            let secs = t / 1000;
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            format!("{h:02}:{m:02}:{s:02}Z")
        }
        None => "-".into(),
    }
}
