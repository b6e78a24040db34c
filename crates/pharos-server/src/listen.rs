//! Serving an app on a TCP listener with bounds that hold against hostile clients (the
//! API's port and every service's router port):
//! - at most `max_connections` connections are served at once; more wait in the
//!   kernel's backlog, and the accept loop never spins on a full descriptor table;
//! - a request's headers must arrive within `header_read_timeout_s` (slow headers);
//! - a connection with no request in progress and no bytes moved for `idle_timeout_s`
//!   is closed (idle keep-alive connections, and ones that never send a byte). A
//!   request counts as in progress until its response body has been sent, so a long
//!   answer (a followed log, a slow replica) is never cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::config::ListenerConfig;

/// What a connection did last, and what it has in progress.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A request in progress until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that keeps its request in progress until it is done.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` with `limits` until `shutdown` completes; then stops
/// accepting and gives the open connections up to 5 s to finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: &ListenerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let header_timeout = Duration::from_secs_f64(limits.header_read_timeout_s);
    let idle = Duration::from_secs_f64(limits.idle_timeout_s);
    let check_every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors (or a connection reset before accept): wait
                    // instead of spinning.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        activity.touch();
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let app = app.clone();
        let act = activity.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InFlight::begin(&act);
            let mut app = app.clone();
            async move {
                let req = req.map(Body::new);
                let resp = match tower_service::Service::call(&mut app, req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(resp.map(|b| {
                    Body::new(Guarded {
                        inner: b,
                        _guard: guard,
                    })
                }))
            }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = tokio::time::sleep(check_every) => {
                        if activity.in_flight.load(Ordering::Relaxed) == 0
                            && activity.idle_for() >= idle
                        {
                            break;
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    // Let the connections still open finish, for a while.
    let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(max as u32)).await;
    Ok(())
}
