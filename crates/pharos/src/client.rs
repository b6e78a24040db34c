//! The command-line client's connection to a server: where it is, the token, and the
//! HTTP calls every command makes.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use ureq::Body;
use ureq::http::Response;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! wln {
    ($o:expr, $($t:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($t)*);
    }};
}
pub(crate) use wln;

/// Prints what `render` makes, then again whenever it changes (asked every 2 s), until
/// interrupted: on a terminal the screen is redrawn, otherwise each new state follows
/// a line with its time. An error is shown as the state (the server may come back).
pub fn watch(mut render: impl FnMut() -> Result<String>) -> Result<()> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<String> = None;
    loop {
        let text = render().unwrap_or_else(|e| format!("error: {e:#}\n"));
        if last.as_ref() != Some(&text) {
            let mut out = std::io::stdout().lock();
            if tty {
                write!(out, "\x1b[2J\x1b[H")?;
            } else if last.is_some() {
                writeln!(out)?;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            writeln!(
                out,
                "{} (every 2 s until interrupted)",
                ms(&Value::from(now))
            )?;
            write!(out, "{text}")?;
            out.flush()?;
            last = Some(text);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The server [env: PHAROS_URL; default: the context's, else http://127.0.0.1:8080].
    #[arg(long, global = true)]
    url: Option<String>,
    /// The API token [env: PHAROS_TOKEN; default: the context's, else the admin token of
    /// the server on this machine at that URL].
    #[arg(long, global = true)]
    token: Option<String>,
    /// A context of the client configuration (see `pharos login`) [env: PHAROS_CONTEXT;
    /// default: the current one].
    #[arg(long, global = true)]
    context: Option<String>,
}

impl Conn {
    /// The server at `url` (else found as usual), the token found as usual.
    pub fn server(url: Option<String>) -> Self {
        Self {
            url,
            token: None,
            context: None,
        }
    }

    /// This URL and token, nothing looked up.
    pub fn explicit(url: &str, token: &str) -> Self {
        Self {
            url: Some(url.to_string()),
            token: Some(token.to_string()),
            context: None,
        }
    }
}

/// How long a command keeps trying the servers of a control plane (a fail-over takes
/// up to the election's lease).
pub const FAILOVER_S: u64 = 15;

/// The header a server that does not lead names the leader in (empty during an
/// election).
pub const LEADER_HEADER: &str = "x-pharos-leader";

pub struct Client {
    /// The first server named (messages name it).
    pub url: String,
    /// Every server of the control plane named (`--url`/`PHAROS_URL` as a
    /// comma-separated list, or a context's `url` and `also`), tried in turn.
    urls: Vec<String>,
    /// The one that answered last.
    active: std::cell::Cell<usize>,
    token: Option<String>,
    /// Where the token came from, for the advice on a 401.
    token_source: String,
    pub agent: ureq::Agent,
    /// A configuration that does not read, or a context named by --context or
    /// PHAROS_CONTEXT that is not in it: every call fails with it.
    refused: Option<String>,
}

impl Client {
    /// The server and token: flags, then the environment, then the context (named or
    /// current) of the client configuration, then - for a server on this machine - the
    /// admin token in its data directory.
    pub fn new(c: &Conn) -> Self {
        let path = crate::login::config_path();
        let named = c
            .context
            .clone()
            .or_else(|| std::env::var("PHAROS_CONTEXT").ok());
        let (context, config_error) = match crate::login::ClientConfig::load(&path)
            .and_then(|cfg| cfg.context(named.as_deref()))
        {
            Ok(ctx) => (ctx, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        // A context asked for by name must be there, and the configuration must read:
        // nothing is sent elsewhere instead.
        let refused = config_error;
        let url = c
            .url
            .clone()
            .or_else(|| std::env::var("PHAROS_URL").ok())
            .or_else(|| {
                context.as_ref().map(|(_, x)| {
                    std::iter::once(&x.url)
                        .chain(&x.also)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                })
            })
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let urls: Vec<String> = url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let url = urls.first().cloned().unwrap_or_default();
        let (token, token_source) = if let Some(t) = c.token.clone() {
            (Some(t), "--token".to_string())
        } else if let Ok(t) = std::env::var("PHAROS_TOKEN") {
            (Some(t), "PHAROS_TOKEN".into())
        } else if let Some((n, x)) = context.filter(|(_, x)| x.url.trim_end_matches('/') == url) {
            (Some(x.token), format!("context {n} of {}", path.display()))
        } else {
            match crate::login::local_admin_token_file(&url) {
                Ok(file) => match std::fs::read_to_string(&file) {
                    Ok(t) => (
                        Some(t.trim().to_string()),
                        format!("the local server's {}", file.display()),
                    ),
                    Err(e) => (None, format!("none ({}: {e})", file.display())),
                },
                Err(why) => (None, format!("none (no context, and {why})")),
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            url,
            urls,
            active: std::cell::Cell::new(0),
            token,
            token_source,
            agent,
            refused,
        }
    }

    /// Fails when the configuration or the context named cannot be used.
    fn usable(&self) -> Result<()> {
        match &self.refused {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }

    /// The Authorization header's value; an error when a context was named and cannot
    /// be used.
    pub fn auth(&self) -> Result<String> {
        self.usable()?;
        Ok(format!("Bearer {}", self.token.as_deref().unwrap_or("")))
    }

    pub fn check(&self, resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status();
        let mut body = resp.into_body();
        let text = body.read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let mut msg = v["error"].as_str().unwrap_or(&text).to_string();
            if let Some(c) = v["code"].as_str()
                && let Some(code) = pharos_server::ErrorCode::parse(c)
            {
                msg = format!("{msg} [{c}: {}]", code.describe());
            }
            if status == 401 {
                msg.push_str(&self.advice_401());
            }
            match v["field"].as_str() {
                Some(f) => bail!("{status}: {f}: {msg}"),
                None => bail!("{status}: {msg}"),
            }
        }
        Ok(v)
    }

    /// What to do about a refused or missing token.
    fn advice_401(&self) -> String {
        let mut a = match &self.token {
            Some(_) => format!(
                "\nthe token from {} was refused by {}",
                self.token_source, self.url
            ),
            None => format!("\nno token was sent to {}: {}", self.url, self.token_source),
        };
        a.push_str(
            "\ngive one with `pharos login URL --token-file FILE` (kept as a context), \
             --token or PHAROS_TOKEN; a server makes its admin token in its data \
             directory's admin-token file, and `pharos token create TENANT` makes a tenant's",
        );
        a
    }

    /// Sends the request `send` builds for a server's base URL, to the servers named in
    /// turn: the next one when one does not answer, the leader when one answers that
    /// it does not lead (`503` with `X-Pharos-Leader`), again after a moment while an
    /// election is under way - for up to [`FAILOVER_S`] seconds with several servers.
    /// One server named: one try, as before.
    pub fn call(
        &self,
        send: impl Fn(&str) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>> {
        self.call_as(true, send)
    }

    /// [`Self::call`]; a request that is not `idempotent` is sent to another server only
    /// when the first could not be reached at all (never after it may have been sent:
    /// it could have been carried out).
    pub fn call_as(
        &self,
        idempotent: bool,
        send: impl Fn(&str) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>> {
        self.usable()?;
        let n = self.urls.len().max(1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(FAILOVER_S);
        let mut redirect: Option<String> = None;
        loop {
            let mut last_err = None;
            for k in 0..n {
                let i = (self.active.get() + k) % n;
                let base = match redirect.take() {
                    Some(leader) => leader,
                    None => self.urls.get(i).cloned().unwrap_or_default(),
                };
                match send(&base) {
                    Ok(resp)
                        if resp.status() == 503 && resp.headers().contains_key(LEADER_HEADER) =>
                    {
                        let leader = resp.headers()[LEADER_HEADER]
                            .to_str()
                            .unwrap_or("")
                            .to_string();
                        if n == 1 || std::time::Instant::now() >= deadline {
                            return Ok(resp);
                        }
                        // Only to a server this command was given (the token is sent
                        // where the user said, nowhere else).
                        if !leader.is_empty() && leader != base && self.urls.contains(&leader) {
                            redirect = Some(leader);
                        }
                    }
                    Ok(resp) => {
                        self.active.set(i);
                        return Ok(resp);
                    }
                    Err(e) => {
                        let unsent = matches!(
                            &e,
                            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound
                        ) || matches!(&e, ureq::Error::Io(io)
                            if io.kind() == std::io::ErrorKind::ConnectionRefused);
                        if !idempotent && !unsent {
                            return Err(anyhow::Error::new(e)
                                .context(format!("reaching the server at {base}")));
                        }
                        last_err = Some((base, e));
                    }
                }
            }
            if (n == 1 || std::time::Instant::now() >= deadline)
                && let Some((base, e)) = last_err
            {
                return Err(anyhow::Error::new(e).context(format!("reaching the server at {base}")));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// `GET path` with the token, from the servers in turn ([`Self::call`]); the
    /// response unread (a stream's body is read as it comes).
    pub fn get_response(&self, path: &str) -> Result<Response<Body>> {
        let auth = self.auth()?;
        self.call(|base| {
            self.agent
                .get(format!("{base}{path}"))
                .header("Authorization", &auth)
                .call()
        })
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.check(self.get_response(path)?)
    }

    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let auth = self.auth()?;
        let text = body.to_string();
        let resp = self.call_as(method == "PUT", |base| {
            let url = format!("{base}{path}");
            let req = match method {
                "PATCH" => self.agent.patch(url),
                "PUT" => self.agent.put(url),
                _ => self.agent.post(url),
            };
            req.header("Authorization", &auth)
                .content_type("application/json")
                .send(text.as_bytes())
        })?;
        self.check(resp)
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        let auth = self.auth()?;
        let resp = self.call_as(false, |base| {
            self.agent
                .delete(format!("{base}{path}"))
                .header("Authorization", &auth)
                .call()
        })?;
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
