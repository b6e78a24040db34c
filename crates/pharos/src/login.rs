//! Where the command-line client finds a server and its token, as kubectl does: a
//! client configuration file of named contexts (`pharos login`, `pharos context`),
//! and, for a server on this machine, the record each server leaves of its data
//! directory, whose `admin-token` the same user may read.
//!
//! The configuration is `$PHAROS_CONFIG`, else `$XDG_CONFIG_HOME/pharos/config.yaml`,
//! else `~/.config/pharos/config.yaml` (mode 0600: it holds tokens):
//!
//! ```yaml
//! current: prod
//! contexts:
//!   prod: { url: "https://pharos.example:8080", token: "pht_..." }
//!   local: { url: "http://127.0.0.1:8080", token: "pht_..." }
//!   ha: { url: "http://10.0.0.1:8080", also: ["http://10.0.0.2:8080"], token: "pht_..." }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Entry>,
}

/// One server and the token to use there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub url: String,
    pub token: String,
    /// Other servers of the same control plane (on one PostgreSQL): tried in turn
    /// when `url` does not answer or does not lead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

/// The client configuration's path.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PHAROS_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pharos/config.yaml")
}

impl ClientConfig {
    /// The configuration at `path`; empty when there is none.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_saphyr::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes it readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_saphyr::to_string(self)?;
        let tmp = path.with_extension("yaml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The context named `name`, else the current one.
    pub fn context(&self, name: Option<&str>) -> Result<Option<(String, Entry)>> {
        let Some(n) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get(n) {
            Some(c) => Ok(Some((n.to_string(), c.clone()))),
            None if name.is_some() => bail!(
                "no context {n:?} in {}; contexts: {}",
                config_path().display(),
                self.names()
            ),
            None => Ok(None),
        }
    }

    fn names(&self) -> String {
        if self.contexts.is_empty() {
            "none (pharos login URL --token-file FILE makes one)".into()
        } else {
            self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// Where servers on this machine record their data directories, one file per listen
/// address: `$XDG_STATE_HOME/pharos/servers`, else `~/.local/state/pharos/servers`.
fn servers_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("pharos/servers"))
}

/// A listen address or URL as a file name: `127.0.0.1_8080`.
fn record_name(host_port: &str) -> String {
    host_port
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `host:port` of an `http://host:port/...` URL.
fn host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().filter(|h| !h.is_empty())
}

/// Records, for clients of the same user, that the server listening on `listen` (this
/// process) keeps its data (and its admin token, if it made one) in `data_dir`. Best
/// effort: a server without a writable home still runs.
pub fn record_server(listen: &str, data_dir: &Path) {
    let Some(dir) = servers_dir() else { return };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(record_name(listen));
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            record_name(listen),
            std::process::id()
        ));
        std::fs::write(
            &tmp,
            format!("{}\n{}\n", data_dir.display(), std::process::id()),
        )?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::debug!("recording the data directory in {}: {e}", dir.display());
    }
}

/// Whether `pid` is a live process of this user (the server that wrote a record, not a
/// stranger on its port after it stopped).
fn mine_and_alive(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    pid > 0 && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me)
}

/// The admin token file of the server at `url`, when that is a server of this user on
/// this machine that recorded its data directory and still runs: the token goes to
/// loopback only, and only to the process that made it.
pub fn local_admin_token_file(url: &str) -> Result<PathBuf, String> {
    let hp = host_port(url).ok_or("the URL names no host")?;
    let (host, port) = hp.rsplit_once(':').ok_or("the URL names no port")?;
    if !["127.0.0.1", "localhost", "[::1]"].contains(&host) {
        return Err(format!("{host} is not this machine's loopback"));
    }
    let dir = servers_dir().ok_or("no home directory")?;
    let names = [
        record_name(hp),
        record_name(&format!("127.0.0.1:{port}")),
        record_name(&format!("0.0.0.0:{port}")),
    ];
    let record = names
        .iter()
        .find_map(|n| std::fs::read_to_string(dir.join(n)).ok())
        .ok_or_else(|| {
            format!(
                "no server of yours recorded for port {port} in {}",
                dir.display()
            )
        })?;
    let mut lines = record.lines();
    let data_dir = lines.next().unwrap_or("").trim();
    let pid: i32 = lines
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    if !mine_and_alive(pid) {
        return Err(format!(
            "the server of yours recorded for port {port} (pid {pid}) no longer runs"
        ));
    }
    Ok(PathBuf::from(data_dir).join("admin-token"))
}

#[derive(clap::Subcommand)]
pub enum ContextCommand {
    /// The contexts of the client configuration (the current one marked *).
    List,
    /// Make a context the current one.
    Use { name: String },
    /// Forget a context.
    Delete { name: String },
}

/// `pharos login URL --token-file F [--name N]`: checks the token with the server and
/// keeps it as context N (default: the URL's host and port), made current.
pub fn login(url: &str, token_file: &Path, name: Option<&str>) -> Result<()> {
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the token from {}", token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(!token.is_empty(), "{} holds no token", token_file.display());
    let url = url.trim_end_matches('/').to_string();
    let conn = crate::client::Conn::explicit(&url, &token);
    let who = crate::client::Client::new(&conn)
        .get("/v1/whoami")
        .with_context(|| {
            format!(
                "checking the token from {} with {url}",
                token_file.display()
            )
        })?;
    // Several servers of one control plane: `URL,URL,...`.
    let mut urls = url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty());
    let url = urls.next().unwrap_or_default();
    let also: Vec<String> = urls.collect();
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| record_name(host_port(&url).unwrap_or(&url)));
    let path = config_path();
    let mut cfg = ClientConfig::load(&path)?;
    cfg.contexts.insert(
        name.clone(),
        Entry {
            url: url.clone(),
            token,
            also,
        },
    );
    cfg.current = Some(name.clone());
    cfg.save(&path)?;
    let who = if who["admin"] == true {
        "with an admin token".to_string()
    } else {
        format!("as tenant {}", who["tenant"].as_str().unwrap_or("?"))
    };
    println!(
        "logged in to {url} {who} (context {name}, in {})",
        path.display()
    );
    Ok(())
}

pub fn context(cmd: ContextCommand) -> Result<()> {
    let path = config_path();
    let mut cfg = ClientConfig::load(&path)?;
    match cmd {
        ContextCommand::List => {
            if cfg.contexts.is_empty() {
                println!("no contexts in {} ({})", path.display(), cfg.names());
            }
            for (n, c) in &cfg.contexts {
                let mark = if cfg.current.as_deref() == Some(n) {
                    "*"
                } else {
                    " "
                };
                println!("{mark} {n:<24} {}", c.url);
            }
        }
        ContextCommand::Use { name } => {
            cfg.context(Some(&name))?;
            cfg.current = Some(name.clone());
            cfg.save(&path)?;
            println!("context {name} is current");
        }
        ContextCommand::Delete { name } => {
            cfg.context(Some(&name))?;
            cfg.contexts.remove(&name);
            if cfg.current.as_deref() == Some(name.as_str()) {
                cfg.current = None;
            }
            cfg.save(&path)?;
            println!("context {name} deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_listen_addresses_name_the_same_record() {
        assert_eq!(
            host_port("http://127.0.0.1:8080/v1"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_port("127.0.0.1:8080"), Some("127.0.0.1:8080"));
        assert_eq!(record_name("127.0.0.1:8080"), "127.0.0.1_8080");
        assert_eq!(record_name("[::1]:80"), "___1__80");
    }
}
