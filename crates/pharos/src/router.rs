//! `pharos router`: a service's router on its own, in front of given replica URLs (for
//! benchmarks and for running replicas pharos does not start).

use anyhow::{Context, Result, bail};
use pharos_server::limits as pharos_core_limits;

#[derive(clap::Args)]
pub struct RouterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: String,
    /// A replica's base URL, e.g. http://127.0.0.1:8000 (repeatable).
    #[arg(long = "replica")]
    replicas: Vec<String>,
    /// Requests in flight per replica at most.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests waiting for a replica at most; more are dropped (HTTP 503).
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Where the router's control listens (`GET /router/stats`, `PUT /router/replicas`,
    /// `PUT /router/accept`): a loopback address, never the traffic port.
    #[arg(long, default_value = "127.0.0.1:8101")]
    control: String,
}

/// `pharos router`: one service's router in front of fixed replicas (the server will run
/// one per service and change its replicas as the autoscaler decides).
pub fn router(a: RouterArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if a.queue > pharos_core_limits::MAX_QUEUE || a.concurrency == 0 {
            bail!(
                "--queue must be at most {} and --concurrency at least 1",
                pharos_core_limits::MAX_QUEUE
            );
        }
        let control: std::net::SocketAddr = a
            .control
            .parse()
            .with_context(|| format!("--control {}: an address like 127.0.0.1:8101", a.control))?;
        if !control.ip().is_loopback() {
            bail!(
                "--control {}: the control port must be on a loopback address",
                a.control
            );
        }
        let router = pharos_server::router::Router::new(&a.replicas, a.concurrency, a.queue);
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let control_listener = tokio::net::TcpListener::bind(control)
            .await
            .with_context(|| format!("listening on {control}"))?;
        eprintln!(
            "pharos router on {} -> {} replica(s), {} in flight each, queue {}; control on {}",
            listener.local_addr()?,
            a.replicas.len(),
            a.concurrency,
            a.queue,
            control_listener.local_addr()?,
        );
        let limits = pharos_server::config::ListenerConfig::default();
        let control_app = pharos_server::router::control_app(router.clone());
        let control_task = tokio::spawn({
            let limits = limits.clone();
            async move {
                pharos_server::listen::serve(
                    control_listener,
                    control_app,
                    &limits,
                    std::future::pending(),
                )
                .await
            }
        });
        pharos_server::listen::serve(
            listener,
            pharos_server::router::app(router),
            &limits,
            std::future::pending(),
        )
        .await?;
        control_task.abort();
        Ok(())
    })
}
