//! `pharos-replica`: an example inference replica - an HTTP server whose every request
//! does real computation (dense matrix products, a small network's worth of arithmetic),
//! calibrated at start-up so that one request takes a target service time on a core of
//! this machine: a request costs `--service-ms` of CPU time on average, its HTTP
//! handling included (the replica measures what its requests cost and paces their work
//! to match), so held to `c` vCPUs by a CPU limit it takes about `service-ms / c` of wall
//! time.
//!
//! ```text
//! pharos-replica [--port P] [--service-ms 50] [--dist exp|det] [--concurrency 1] [--seed S]
//! ```
//! `GET|POST /infer` serves one request; `GET /healthz` answers once calibrated (the
//! server listens only then, so "ready" means "calibrated"). The port defaults to
//! `$PORT`, then 8000; the address is `$HOST` (pharos's local backend gives
//! 127.0.0.1), else every address (in a container). Service times are exponential (`exp`, the M/M/c model the
//! autoscalers assume) or constant (`det`) around the target mean.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

const N: usize = 48;

/// One unit of work: a product of two N x N matrices (the result feeds the next unit,
/// so the compiler cannot skip it).
fn unit(a: &[f32], b: &mut [f32], c: &mut [f32]) {
    for i in 0..N {
        for k in 0..N {
            let aik = a[i * N + k];
            for j in 0..N {
                c[i * N + j] += aik * b[k * N + j];
            }
        }
    }
    for (x, y) in b.iter_mut().zip(c.iter()) {
        *x = (*x * 0.5 + y * 1e-3).tanh();
    }
}

/// Runs `units` units of work; returns a checksum.
fn work(units: u64) -> f32 {
    let a: Vec<f32> = (0..N * N).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let mut b: Vec<f32> = (0..N * N).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut c = vec![0.0f32; N * N];
    for _ in 0..units {
        unit(&a, &mut b, &mut c);
    }
    c.iter().sum()
}

/// CPU time of the calling thread, seconds: calibration counts the work's CPU time, not
/// wall time, so that a replica started under a CPU limit (a quota that stops it part of
/// every period) or beside busy neighbours still learns what a unit costs.
fn thread_cpu_s() -> f64 {
    cpu_clock_s(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every thread), seconds.
fn process_cpu_s() -> f64 {
    cpu_clock_s(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock_s(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Units of work per millisecond of CPU on this machine (the best of a few timed runs).
fn calibrate() -> f64 {
    let mut best = 0.0f64;
    let mut units = 4u64;
    // Runs of at least 5 ms of CPU (the clock counts nanoseconds): a replica held to
    // 0.1 vCPU is ready in about half a second.
    for _ in 0..12 {
        let t0 = thread_cpu_s();
        std::hint::black_box(work(units));
        let ms = (thread_cpu_s() - t0) * 1e3;
        if !ms.is_finite() {
            break;
        }
        if ms < 5.0 {
            units *= 2;
            continue;
        }
        best = best.max(units as f64 / ms);
    }
    best.max(1e-3)
}

/// Requests per adjustment of [`Pace`].
const PACE_WINDOW: u32 = 32;

/// What a request's work must be scaled by so that the whole request - the work, the
/// HTTP handling, the runtime, handing the work to a thread - costs the CPU its draw
/// says: over each window of requests, the draws' sum over the process's CPU time,
/// applied damped (its square root). Calibration alone misses the rest of a request
/// (some 0.6 ms here, 30% of a 2 ms request) and a unit's cost on a busy machine;
/// paced, a replica held to `c` vCPUs serves `c / service-ms` requests a second, the
/// rate its function's `processing_time_s` promises.
struct Pace {
    scale: f64,
    /// Process CPU seconds when the window began (None: before the first request).
    start: Option<f64>,
    draws_ms: f64,
    n: u32,
}

impl Pace {
    /// Counts a served request whose draw was `ms`.
    fn served(&mut self, ms: f64) {
        let now = process_cpu_s();
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        self.draws_ms += ms;
        self.n += 1;
        if self.n < PACE_WINDOW {
            return;
        }
        let cpu_ms = (now - start) * 1e3;
        if cpu_ms.is_finite() && cpu_ms > 0.0 {
            self.scale = (self.scale * (self.draws_ms / cpu_ms).sqrt()).clamp(0.01, 4.0);
        }
        self.start = Some(now);
        self.draws_ms = 0.0;
        self.n = 0;
    }
}

struct Replica {
    units_per_ms: f64,
    service_ms: f64,
    exponential: bool,
    seed: AtomicU64,
    permits: tokio::sync::Semaphore,
    served: AtomicU64,
    pace: std::sync::Mutex<Pace>,
}

impl Replica {
    /// The next service time in milliseconds (SplitMix64 draws).
    fn draw_ms(&self) -> f64 {
        if !self.exponential {
            return self.service_ms;
        }
        let mut z = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        -(1.0 - u).ln() * self.service_ms
    }
}

async fn infer(State(r): State<Arc<Replica>>) -> Result<String, (axum::http::StatusCode, String)> {
    let ms = r.draw_ms();
    let scale = r.pace.lock().map(|p| p.scale).unwrap_or(1.0);
    let units = (ms * scale * r.units_per_ms).round() as u64;
    let _permit = r.permits.acquire().await.map_err(|e| {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("shutting down: {e}"),
        )
    })?;
    let t0 = Instant::now();
    let (sum, work_s) = tokio::task::spawn_blocking(move || {
        let c0 = thread_cpu_s();
        let sum = work(units);
        (sum, thread_cpu_s() - c0)
    })
    .await
    .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    r.served.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut p) = r.pace.lock() {
        p.served(ms);
    }
    Ok(format!(
        "{{\"units\":{units},\"target_ms\":{ms:.3},\"pace\":{scale:.3},\"work_cpu_ms\":{:.3},\"served_ms\":{:.3},\"checksum\":{sum}}}",
        work_s * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    ))
}

fn usage(msg: &str) -> ! {
    eprintln!("pharos-replica: {msg}");
    eprintln!(
        "usage: pharos-replica [--port P] [--service-ms MS] [--dist exp|det] [--concurrency N] [--seed S]"
    );
    std::process::exit(2);
}

fn main() {
    let mut port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8000);
    let mut service_ms = 50.0f64;
    let mut exponential = true;
    let mut concurrency = 1usize;
    let mut seed = 1u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
                .clone()
        };
        match flag.as_str() {
            "--port" => {
                port = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--port: a port number"))
            }
            "--service-ms" => {
                service_ms = value()
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v > 0.0 && v.is_finite())
                    .unwrap_or_else(|| usage("--service-ms: a positive number"))
            }
            "--dist" => {
                exponential = match value().as_str() {
                    "exp" => true,
                    "det" => false,
                    _ => usage("--dist: exp or det"),
                }
            }
            "--concurrency" => {
                concurrency = value()
                    .parse()
                    .ok()
                    .filter(|c| *c > 0)
                    .unwrap_or_else(|| usage("--concurrency: a positive integer"))
            }
            "--seed" => {
                seed = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seed: an integer"))
            }
            "-h" | "--help" => usage("an example inference replica"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let t0 = Instant::now();
    let units_per_ms = calibrate();
    eprintln!(
        "pharos-replica: calibrated in {:.0} ms ({units_per_ms:.2} units/ms); serving {service_ms} ms requests on port {port}",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let replica = Arc::new(Replica {
        units_per_ms,
        service_ms,
        exponential,
        seed: AtomicU64::new(seed),
        permits: tokio::sync::Semaphore::new(concurrency),
        served: AtomicU64::new(0),
        pace: std::sync::Mutex::new(Pace {
            scale: 1.0,
            start: None,
            draws_ms: 0.0,
            n: 0,
        }),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("starting the runtime: {e}")));
    let result: std::io::Result<()> = rt.block_on(async move {
        let app = Router::new()
            .route("/infer", get(infer).post(infer))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(replica);
        // HOST (the local backend gives 127.0.0.1, behind its router); a container's
        // default is every address.
        // (Only an address: some shells export HOST as the machine's name.)
        let host: std::net::IpAddr = std::env::var("HOST")
            .ok()
            .and_then(|h| h.parse().ok())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let listener = tokio::net::TcpListener::bind((host, port)).await?;
        axum::serve(listener, app).await
    });
    if let Err(e) = result {
        eprintln!("pharos-replica: {e}");
        std::process::exit(1);
    }
}
