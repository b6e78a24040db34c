//! `pharos server`: the control plane, with the engines the configuration names
//! (chosen and wired here, and nowhere else).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use pharos_engine::{Backend, ServiceEngine};
use pharos_server::config::BackendKind;

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
            pharos_engine::host::installation_id(&config.data_dir)
                .with_context(|| format!("the installation id in {}", config.data_dir.display()))
        };
        // The binary alone chooses and wires the engines: one for training, one for
        // services.
        type Engines = (Arc<dyn Backend>, Arc<dyn ServiceEngine>);
        let data_dir = std::path::absolute(&config.data_dir)?;
        let (backend, engine): Engines = match config.backend {
            BackendKind::Local => (
                Arc::new(pharos_local::LocalBackend::new(exe)),
                Arc::new(local_replicas(&data_dir, config.local.cpu_limits)?),
            ),
            BackendKind::Ray => {
                let client = pharos_ray::RayClient::new(&config.ray)?;
                (
                    Arc::new(pharos_ray::RayBackend::new(
                        client.clone(),
                        installation()?,
                        config.ray.storage(&data_dir)?,
                    )?),
                    Arc::new(pharos_ray::RayServe::new(client, &config.ray, &data_dir)),
                )
            }
            BackendKind::Kubernetes => {
                let kube = Arc::new(
                    pharos_kube::Kube::connect(&config.kubernetes, installation()?).await?,
                );
                (
                    Arc::new(pharos_kube::KubeBackend::new(kube.clone())),
                    Arc::new(pharos_kube::KubeEngine::new(kube)),
                )
            }
        };
        let listen = config.listen.clone();
        let data_dir = std::path::absolute(&config.data_dir)?;
        let state = pharos_server::open_with_engine(config, backend, Some(engine)).await?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        // Clients of this user on this machine find its admin token from its address.
        crate::login::record_server(&listener.local_addr()?.to_string(), &data_dir);
        pharos_server::serve(state, listener).await
    })
}

/// The local engine's replicas, held to their vCPUs as `mode` says.
fn local_replicas(
    data_dir: &std::path::Path,
    mode: pharos_engine::config::CpuLimitsMode,
) -> Result<pharos_local::LocalReplicas> {
    use pharos_engine::config::CpuLimitsMode;
    let replicas = pharos_local::LocalReplicas::new(data_dir);
    if mode == CpuLimitsMode::Off {
        return Ok(replicas);
    }
    match pharos_local::CpuLimits::detect(data_dir) {
        Ok(l) => {
            tracing::info!("replicas are held to their vCPUs (cgroups)");
            Ok(replicas.with_cpu_limits(l))
        }
        Err(e) if mode == CpuLimitsMode::Auto => {
            tracing::warn!("local.cpu_limits: off ({e})");
            Ok(replicas)
        }
        Err(e) => {
            anyhow::bail!("local.cpu_limits is on, but the CPU controller cannot be used: {e}")
        }
    }
}
