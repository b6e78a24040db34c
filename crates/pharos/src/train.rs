//! `pharos server`, `pharos train ...` and `pharos token ...`: the control plane and its
//! command-line client.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// A configuration file (YAML) [default: $PHAROS_CONFIG, else the embedded
    /// defaults]. The environment
    /// (PHAROS_LISTEN, PHAROS_DATA_DIR, PHAROS_DATABASE_URL, PHAROS_ADMIN_TOKEN) and
    /// these flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store, archives and job files live [default: ~/.local/share/pharos].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Log lines as JSON objects instead of text.
    #[arg(long)]
    json_logs: bool,
}

pub fn server(a: ServerArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHAROS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if a.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    let file = a
        .config
        .or_else(|| std::env::var_os("PHAROS_CONFIG").map(PathBuf::from));
    let mut config = pharos_server::ServerConfig::load(file.as_deref())?;
    if let Some(d) = a.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = a.listen {
        config.listen = l;
    }
    // Processes of the same user (learners among them) may not read this one's memory
    // or environment (/proc/PID/environ holds the admin token and database URL).
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let exe = std::env::current_exe().context("locating the pharos executable")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let installation = || {
            pharos_engine::fs::installation_id(&config.data_dir)
                .with_context(|| format!("the installation id in {}", config.data_dir.display()))
        };
        // The binary alone chooses and wires the engines: one for training, one for
        // services (none: the server runs replicas as local processes).
        let mut engine: Option<Arc<dyn pharos_engine::ServiceEngine>> = None;
        let backend: Arc<dyn pharos_engine::Backend> = match config.backend {
            pharos_server::config::BackendKind::Local => {
                Arc::new(pharos_local::LocalBackend::new(exe))
            }
            pharos_server::config::BackendKind::Ray => {
                let client = pharos_ray::RayClient::new(&config.ray)?;
                engine = Some(Arc::new(pharos_ray::RayServe::new(
                    client.clone(),
                    &config.ray,
                    &std::path::absolute(&config.data_dir)?,
                )));
                Arc::new(pharos_ray::RayBackend::new(client, installation()?)?)
            }
            pharos_server::config::BackendKind::Kubernetes => {
                let kube = Arc::new(
                    pharos_kube::Kube::connect(&config.kubernetes, installation()?).await?,
                );
                engine = Some(Arc::new(pharos_kube::KubeEngine::new(kube.clone())));
                Arc::new(pharos_kube::KubeBackend::new(kube))
            }
        };
        let listen = config.listen.clone();
        let state = pharos_server::open_with_engine(config, backend, engine).await?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        pharos_server::serve(state, listener).await
    })
}

// ----- the client ---------------------------------------------------------------

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The server [env: PHAROS_URL; default: http://127.0.0.1:8080].
    #[arg(long, global = true)]
    url: Option<String>,
    /// The API token [env: PHAROS_TOKEN; default: the local server's admin token].
    #[arg(long, global = true)]
    token: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Submit a training job: a manifest and, optionally, a model directory (uploaded
    /// as a tar archive; the learners find it in $MODEL_DIR).
    Submit {
        manifest: PathBuf,
        model_dir: Option<PathBuf>,
        /// Makes retries safe: a second submission with the same key returns the first
        /// job.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    List {
        /// Only jobs in this state (e.g. QUEUED).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A job's status, history and why it waits.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A learner's log lines.
    Logs {
        id: String,
        #[arg(long, default_value_t = 1)]
        learner: u32,
        /// Keep printing new lines until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Evaluation metrics extracted from the logs.
    Metrics {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A job's events (restarts, preemptions, halts).
    Events { id: String },
    /// Stop a job; its learners are stopped and its logs and results stored.
    Halt { id: String },
    /// Re-queue a halted job; its learners start from the latest checkpoint.
    Resume { id: String },
    /// Halt (if needed) and delete a job and its files.
    Delete { id: String },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for a tenant (needs an admin token); printed once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token (an admin token revokes any; a tenant's, its own).
    Revoke {
        /// The token to revoke.
        #[arg(value_name = "TOKEN")]
        revoked: String,
    },
}

struct Client {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(c: &Conn) -> Self {
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

    fn auth(&self) -> String {
        format!("Bearer {}", self.token.as_deref().unwrap_or(""))
    }

    fn check(&self, resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
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

    fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", self.auth())
            .call()
            .with_context(|| format!("reaching the server at {}", self.url))?;
        self.check(resp)
    }

    fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
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

    fn delete(&self, path: &str) -> Result<Value> {
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

fn multipart(manifest: &[u8], archive: &[u8]) -> (String, Vec<u8>) {
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

fn id_path(id: &str) -> String {
    format!("/v1/models/{}", id.trim_start_matches("training-"))
}

fn ms(v: &Value) -> String {
    match v.as_i64() {
        Some(t) => {
            let secs = t / 1000;
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            format!("{h:02}:{m:02}:{s:02}Z")
        }
        None => "-".into(),
    }
}

pub fn train(cmd: TrainCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        TrainCommand::Submit {
            manifest,
            model_dir,
            idempotency_key,
            json,
        } => {
            let text = std::fs::read(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let url = format!("{}/v1/models", c.url);
            let mut req = c.agent.post(url).header("Authorization", c.auth());
            if let Some(k) = &idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let resp = match &model_dir {
                Some(dir) => {
                    let archive = tar_dir(dir)?;
                    let (ct, body) = multipart(&text, &archive);
                    req.content_type(ct).send(&body[..])
                }
                None => req.content_type("application/yaml").send(&text[..]),
            }
            .with_context(|| format!("reaching the server at {}", c.url))?;
            let v = c.check(resp)?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "{} {}",
                    v["model_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                );
            }
        }
        TrainCommand::List { state, json } => {
            // Every page, in id order.
            let mut models = Vec::new();
            let mut after = 0i64;
            loop {
                let path = match &state {
                    Some(s) => format!("/v1/models?state={s}&after={after}"),
                    None => format!("/v1/models?after={after}"),
                };
                let page = c.get(&path)?;
                models.extend(page["models"].as_array().cloned().unwrap_or_default());
                match page["next_after"].as_i64() {
                    Some(n) => after = n,
                    None => break,
                }
            }
            let v = serde_json::json!({ "models": models });
            if json {
                println!("{}", serde_json::to_string_pretty(&v["models"])?);
                return Ok(());
            }
            println!(
                "{:<14} {:<24} {:<11} {:<10} {:>8} {:>8}  MESSAGE",
                "ID", "NAME", "STATE", "QUEUE", "LEARNERS", "RESTARTS"
            );
            for j in v["models"].as_array().into_iter().flatten() {
                let why = j["wait_reason"]
                    .as_str()
                    .map(|r| format!("waiting: {r}"))
                    .unwrap_or_else(|| j["message"].as_str().unwrap_or("").to_string());
                println!(
                    "{:<14} {:<24} {:<11} {:<10} {:>8} {:>8}  {}",
                    j["model_id"].as_str().unwrap_or(""),
                    j["name"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["queue"].as_str().unwrap_or(""),
                    j["learners"].to_string(),
                    j["restarts"].to_string(),
                    why
                );
            }
        }
        TrainCommand::Show { id, json } => {
            let v = c.get(&id_path(&id))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{} ({})",
                v["model_id"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or("")
            );
            println!("  state:     {}", v["state"].as_str().unwrap_or(""));
            if let Some(code) = v["error_code"].as_str() {
                println!("  error:     {code}");
            }
            println!("  message:   {}", v["message"].as_str().unwrap_or(""));
            println!(
                "  queue:     {} (priority {})",
                v["queue"].as_str().unwrap_or(""),
                v["priority"]
            );
            if let Some(p) = v["queue_position"].as_i64() {
                println!("  position:  {p}");
            }
            if let Some(r) = v["wait_reason"].as_str() {
                println!("  waiting:   {r}");
            }
            println!(
                "  learners:  {}  attempt {}  restarts {}",
                v["learners"], v["attempt"], v["restarts"]
            );
            println!(
                "  results:   {}",
                v["directories"]["results"].as_str().unwrap_or("")
            );
            println!("  history:");
            for h in v["status_history"].as_array().into_iter().flatten() {
                println!(
                    "    {}  {:<11} {}{}",
                    ms(&h["time_ms"]),
                    h["state"].as_str().unwrap_or(""),
                    h["message"].as_str().unwrap_or(""),
                    h["error_code"]
                        .as_str()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                );
            }
        }
        TrainCommand::Logs {
            id,
            learner,
            follow,
        } => {
            if follow {
                let resp = c
                    .agent
                    .get(format!(
                        "{}{}/logs?learner={learner}&follow=true",
                        c.url,
                        id_path(&id)
                    ))
                    .header("Authorization", c.auth())
                    .call()
                    .with_context(|| format!("reaching the server at {}", c.url))?;
                if !resp.status().is_success() {
                    c.check(resp)?;
                    return Ok(());
                }
                let mut reader = resp.into_body().into_reader();
                let mut out = std::io::stdout().lock();
                let mut buf = [0u8; 8192];
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
                return Ok(());
            }
            let mut offset = 0;
            loop {
                let v = c.get(&format!(
                    "{}/logs?learner={learner}&offset={offset}&limit=5000",
                    id_path(&id)
                ))?;
                let lines = v["lines"].as_array().cloned().unwrap_or_default();
                for l in &lines {
                    println!("{}", l.as_str().unwrap_or(""));
                }
                if lines.is_empty() {
                    break;
                }
                offset = v["next_offset"].as_u64().unwrap_or(0) as usize;
            }
        }
        TrainCommand::Metrics { id, json } => {
            let v = c.get(&format!("{}/metrics", id_path(&id)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for p in v["points"].as_array().into_iter().flatten() {
                let vals: Vec<String> = p["values"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, x)| format!("{k}={x}"))
                    .collect();
                println!(
                    "learner {} line {}: {}",
                    p["learner"],
                    p["line"],
                    vals.join(" ")
                );
            }
        }
        TrainCommand::Events { id } => {
            let v = c.get(&format!("{}/events", id_path(&id)))?;
            for e in v["events"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<15} {}",
                    ms(&e["time_ms"]),
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
        }
        TrainCommand::Halt { id } => {
            let v = c.send_json(
                "PATCH",
                &id_path(&id),
                &serde_json::json!({"status": "halt"}),
            )?;
            println!("{} halting", v["model_id"].as_str().unwrap_or(&id));
        }
        TrainCommand::Resume { id } => {
            let v = c.send_json(
                "PATCH",
                &id_path(&id),
                &serde_json::json!({"status": "resume"}),
            )?;
            println!(
                "{} {}",
                v["model_id"].as_str().unwrap_or(&id),
                v["state"].as_str().unwrap_or("")
            );
        }
        TrainCommand::Delete { id } => {
            c.delete(&id_path(&id))?;
            println!("{id} deleting");
        }
    }
    Ok(())
}

pub fn token(cmd: TokenCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        TokenCommand::Create {
            tenant,
            admin,
            label,
        } => {
            let v = c.send_json(
                "POST",
                "/v1/tokens",
                &serde_json::json!({"tenant": tenant, "admin": admin, "label": label}),
            )?;
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        TokenCommand::Revoke { revoked } => {
            c.send_json(
                "POST",
                "/v1/tokens/revoke",
                &serde_json::json!({ "token": revoked }),
            )?;
            println!("revoked");
        }
    }
    Ok(())
}

// ----- inference services ---------------------------------------------------------

#[derive(clap::Subcommand)]
pub enum GetCommand {
    /// Every service: replicas (ready/target), the router's URL, requests.
    Services {
        #[arg(long)]
        json: bool,
    },
    /// One service: status, replicas, cold starts and events.
    Service {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The autoscaler: its policy and its recent decisions, with what it was shown.
    Autoscaler {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum DeleteCommand {
    /// Delete a service: its router stops at once, its replicas are stopped.
    Service { name: String },
}

/// `pharos apply -f FILE`: creates or updates the service the file describes.
pub fn apply(file: &Path, conn: &Conn) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut spec = pharos_server::services::ServiceSpec::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    // A Ray application's code directory is named relative to the spec file.
    if let Some(dir) = spec.ray.as_mut().and_then(|r| r.working_dir.as_mut()) {
        let base = file.parent().unwrap_or(Path::new("."));
        let path = std::path::absolute(base.join(&*dir))
            .with_context(|| format!("ray.working_dir {dir}"))?;
        *dir = path.display().to_string();
    }
    let c = Client::new(conn);
    let body = serde_json::to_value(&spec)?;
    let v = c.send_json("PUT", &format!("/v1/services/{}", spec.name), &body)?;
    println!(
        "service {} applied: {} (target {} replicas)",
        spec.name,
        v["url"].as_str().unwrap_or("?"),
        v["target_replicas"]
    );
    Ok(())
}

pub fn get(cmd: GetCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        GetCommand::Services { json } => {
            let v = c.get("/v1/services")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<20} {:>7} {:>8} {:>9} {:>9} {:>9}  URL",
                "NAME", "READY", "TARGET", "ARRIVALS", "DROPPED", "FAILED"
            );
            for s in v["services"].as_array().into_iter().flatten() {
                let n = &s["counters"];
                println!(
                    "{:<20} {:>7} {:>8} {:>9} {:>9} {:>9}  {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["ready_replicas"].to_string(),
                    s["target_replicas"].to_string(),
                    n["arrivals"].to_string(),
                    n["dropped"].to_string(),
                    n["failed"].to_string(),
                    s["url"].as_str().unwrap_or("?"),
                );
            }
        }
        GetCommand::Autoscaler { json } => {
            let v = c.get("/v1/autoscaler")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "policy {} ({} calls, every {} s)",
                v["policy"].as_str().unwrap_or("?"),
                v["calls"],
                v["interval_s"]
            );
            for d in v["decisions"].as_array().into_iter().flatten() {
                let moves: Vec<String> = d["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["target_before"] != s["target_after"])
                    .map(|s| {
                        format!(
                            "{} {} -> {} ({} ready, {} queued)",
                            s["service"].as_str().unwrap_or("?"),
                            s["target_before"],
                            s["target_after"],
                            s["ready_replicas"],
                            s["queued"]
                        )
                    })
                    .collect();
                println!(
                    "  {} t={:.0}s{}: {}",
                    ms(&d["time_ms"]),
                    d["policy_time_s"].as_f64().unwrap_or(0.0),
                    if d["initial"] == true {
                        " (initial)"
                    } else {
                        ""
                    },
                    if moves.is_empty() {
                        "accept rates".to_string()
                    } else {
                        moves.join(", ")
                    }
                );
            }
        }
        GetCommand::Service { name, json } => {
            let mut v = c.get(&format!("/v1/services/{name}"))?;
            v["events"] = c.get(&format!("/v1/services/{name}/events"))?["events"].clone();
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("service {name}: {}", v["url"].as_str().unwrap_or("?"));
            println!(
                "  replicas: {} ready, {} starting, {} stopping, target {}",
                v["ready_replicas"],
                v["starting_replicas"],
                v["stopping_replicas"],
                v["target_replicas"]
            );
            let n = &v["counters"];
            println!(
                "  requests: {} arrived, {} completed, {} dropped, {} failed; {} queued, {} in flight",
                n["arrivals"],
                n["completed"],
                n["dropped"],
                n["failed"],
                v["queued"],
                v["in_flight"]
            );
            if let Some(m) = v["cold_start_s"]["mean"].as_f64() {
                println!(
                    "  cold start: mean {m:.3} s over {} replicas",
                    v["cold_start_s"]["count"]
                );
            }
            if let Some(e) = v["router_error"].as_str() {
                println!("  router: {e}");
            }
            println!("  events:");
            for e in v["events"].as_array().into_iter().flatten() {
                println!(
                    "    {} {:<12} {}",
                    ms(&e["time_ms"]),
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

pub fn delete(cmd: DeleteCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        DeleteCommand::Service { name } => {
            c.delete(&format!("/v1/services/{name}"))?;
            println!("service {name} deleted");
        }
    }
    Ok(())
}
