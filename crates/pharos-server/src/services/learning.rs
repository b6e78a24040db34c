//! Live learning: every service's per-minute load history, kept in the store (see
//! [`crate::minutes`]) and in memory from a day's first minute (what forecasters are
//! shown), and the forecaster of the configured policy, fitted on it in the background
//! (never under the services' lock, never in the control loop) and handed to the
//! autoscaler, which rebuilds its policy on the new fit (the driver's schedule stays).
//!
//! Without a fit (less than a whole day of some service's history) the policy runs
//! with its forecaster unfitted, which forecasts from the latest minutes; an event says
//! so.

use super::*;
use crate::minutes::{self, Minute, Observed, Series, chunk_of};
use pharos_forecast::{ForecastData, Forecaster, ForecasterSpec};

/// A service's history state.
#[derive(Default)]
pub(super) struct SvcHistory {
    /// Whether the stored history was read in (done by the loop, not under the lock).
    pub loaded: bool,
    /// Days start where `(minute - day_origin) % day_minutes == 0`.
    pub day_origin: i64,
    /// The open minute and the router's counters at its start.
    mark: Option<Mark>,
    /// The current hour's minutes, as stored.
    chunk: Option<(i64, Vec<Option<Minute>>)>,
    /// Arrivals per minute from a day's first minute, up to the open minute.
    pub series: Series,
    /// The latest forecast (see [`forecast_json`]).
    pub forecast: Option<Value>,
}

#[derive(Clone, Copy)]
struct Mark {
    minute: i64,
    arrivals: u64,
    completed: u64,
    dropped: u64,
    over_slo: u64,
}

/// A fitted forecaster and what it was fitted on.
pub(super) struct Fitted {
    pub spec: ForecasterSpec,
    /// Cloned for each use (a forecaster is not shared between threads).
    pub model: std::sync::Mutex<Box<dyn Forecaster>>,
    /// The services in the order of the forecaster's jobs (the autoscaler's order).
    pub names: Vec<String>,
    pub fitted_at_ms: i64,
    pub days: usize,
}

/// The server's learning state.
#[derive(Default)]
pub(super) struct Learner {
    pub fit: Option<Arc<Fitted>>,
    /// Raised at every new fit (the autoscaler rebuilds its policy on it).
    pub generation: u64,
    fitting: bool,
    forecasting: bool,
    /// The minute of the last fit started, and of the last attempt.
    last_fit_min: Option<i64>,
    last_attempt_min: i64,
    /// The minute the forecasts shown were last refreshed.
    forecast_min: i64,
    /// Whether the lack of a fit has been reported since the last fit.
    fallback_noted: bool,
    /// Whether the fit was restored from the last run (reported once, as an event).
    pub restored: bool,
    pruned_hour: i64,
}

pub(super) fn unix_minute() -> i64 {
    now_ms().div_euclid(60_000)
}

/// Reads the stored history of services not read yet: the days a forecaster is shown.
pub(super) async fn load_histories(state: &AppState) {
    let cfg = &state.config.forecast;
    let day = i64::from(cfg.day_minutes);
    let todo: Vec<(String, i64)> = {
        let g = state.services.inner.lock().await;
        g.svcs
            .values()
            .filter(|s| !s.hist.loaded && !s.deleting)
            .map(|s| (s.spec.name.clone(), s.hist.day_origin))
            .collect()
    };
    for (name, origin) in todo {
        let now = unix_minute();
        let series = Series::starting_before(now - i64::from(cfg.fit_days) * day, origin, day);
        let chunks = match state
            .store
            .minute_chunks(
                &name,
                minutes::chunk_of(series.start).0,
                minutes::chunk_of(now).0,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(service = name, "reading the load history: {e}");
                continue;
            }
        };
        let mut recorded: Vec<(i64, u64)> = Vec::new();
        let mut current = None;
        for (hour, data) in chunks {
            let slots = match minutes::decode(&data) {
                Ok(s) => s,
                Err(e) => {
                    warn!(
                        service = name,
                        hour, "a damaged hour of load history is skipped: {e}"
                    );
                    continue;
                }
            };
            for (i, m) in slots.iter().enumerate() {
                if let Some(m) = m {
                    recorded.push((hour * minutes::CHUNK_MINUTES + i as i64, m.arrivals));
                }
            }
            if hour == minutes::chunk_of(now).0 {
                current = Some((hour, slots));
            }
        }
        // From the day of the first minute recorded in the window: the days before a
        // service's history are not days without load.
        let first = recorded
            .iter()
            .map(|r| r.0)
            .find(|m| *m >= series.start)
            .unwrap_or(now);
        let mut series = Series::starting_before(first, origin, day);
        for (m, a) in recorded {
            series.set(m, a);
        }
        let mut g = state.services.inner.lock().await;
        if let Some(s) = g.svcs.get_mut(&name) {
            // The open minute is counted from now on, not from the store.
            series.counts.truncate((now - series.start).max(0) as usize);
            series.extend_to(now);
            s.hist.series = series;
            s.hist.chunk = current;
            s.hist.loaded = true;
        }
    }
}

/// Closes the minutes that ended since the last pass: each service's minute goes to
/// its series and its hour's chunk; the chunks to store are returned.
pub(super) fn record(state: &AppState, g: &mut Inner, now: i64) -> Vec<(String, i64, Vec<u8>)> {
    let day = state.config.forecast.day_minutes as usize;
    let keep_days = state.config.forecast.fit_days as usize + 1;
    let mut writes = Vec::new();
    for s in g.svcs.values_mut().filter(|s| s.hist.loaded && !s.deleting) {
        // Nothing to do within the open minute.
        if s.hist.mark.is_some_and(|m| now <= m.minute) {
            continue;
        }
        let ready = s.count(Phase::Ready);
        let h = &mut s.hist;
        let st = s.router.stats();
        let c = &st.counters;
        let mark_now = Mark {
            minute: now,
            arrivals: c.arrivals,
            completed: c.completed,
            dropped: c.dropped,
            over_slo: c.over_slo,
        };
        let Some(m) = h.mark else {
            // The first minute seen is counted from here.
            h.mark = Some(mark_now);
            s.router.take_minute_window();
            continue;
        };
        let mut lat = s.router.take_minute_window();
        let p99 = history::percentile(&mut lat, 99.0);
        let minute = Minute {
            arrivals: c.arrivals.saturating_sub(m.arrivals),
            observed: Some(Observed {
                served: c.completed.saturating_sub(m.completed),
                dropped: c.dropped.saturating_sub(m.dropped),
                violations: c.over_slo.saturating_sub(m.over_slo),
                p99_s: p99,
                replicas: ready,
            }),
        };
        h.mark = Some(mark_now);
        // A loop that stalled over several minutes puts what it saw in the first.
        h.series.set(m.minute, minute.arrivals);
        h.series.extend_to(now);
        h.series.keep_days(keep_days, day);
        let (hour, slot) = minutes::chunk_of(m.minute);
        if h.chunk.as_ref().is_none_or(|(ch, _)| *ch != hour) {
            h.chunk = Some((hour, vec![None; minutes::CHUNK_MINUTES as usize]));
        }
        let (_, slots) = h.chunk.as_mut().expect("set above");
        slots[slot] = Some(minute);
        writes.push((s.spec.name.clone(), hour, minutes::encode(slots)));
    }
    writes
}

/// Deletes the minutes past the retention, once an hour.
pub(super) async fn prune(state: &AppState) {
    let hour = minutes::chunk_of(unix_minute()).0;
    {
        let mut g = state.services.inner.lock().await;
        if g.learn.pruned_hour == hour {
            return;
        }
        g.learn.pruned_hour = hour;
    }
    let keep_hours = (state.config.forecast.retention_days * 24.0).ceil() as i64;
    match state.store.prune_minutes(hour - keep_hours).await {
        Ok(0) => {}
        Ok(n) => info!("load history: {n} hour(s) past the retention deleted"),
        Err(e) => warn!("pruning the load history: {e}"),
    }
}

/// The forecaster of the configured policy (None: it does not forecast).
fn configured_forecaster(state: &AppState) -> Option<ForecasterSpec> {
    let a = &state.config.autoscaler;
    pharos_policy::forecaster_of(&a.policy, &a.params)
        .ok()
        .flatten()
}

/// The services the autoscaler runs for, in its order (a graph's functions have their
/// own).
pub(super) fn service_names(g: &Inner) -> Vec<String> {
    g.svcs
        .values()
        .filter(|s| !s.deleting && s.spec.graph.is_none())
        .map(|s| s.spec.name.clone())
        .collect()
}

/// Starts a background fit when one is due: the policy forecasts, every service's
/// history is loaded, and there is no fit yet, or it was for other services, or it is
/// `refit_every_minutes` old. Also refreshes the forecasts shown, once a minute.
pub(super) fn maybe_fit(state: &Arc<AppState>, g: &mut Inner, now: i64, events: &mut Events) {
    let cfg = &state.config.forecast;
    let Some(spec) = configured_forecaster(state) else {
        return;
    };
    let names = service_names(g);
    if names.is_empty() || names.iter().any(|n| !g.svcs[n].hist.loaded) {
        return;
    }
    let day = cfg.day_minutes as usize;
    if std::mem::take(&mut g.learn.restored)
        && let Some(f) = &g.learn.fit
    {
        let msg = format!(
            "forecaster {} restored from the last run (fitted {} on {} day(s)); the next fit is due {} min after it",
            f.spec,
            chrono_ms(f.fitted_at_ms),
            f.days,
            cfg.refit_every_minutes
        );
        for n in &names {
            events.push((n.clone(), "forecast-restored", msg.clone()));
        }
    }
    if !g.learn.forecasting
        && g.learn.forecast_min != now
        && let Some(fit) = g.learn.fit.clone()
    {
        g.learn.forecast_min = now;
        refresh_forecasts(state, g, fit);
    }
    let l = &g.learn;
    let stale = match (&l.fit, l.last_fit_min) {
        (Some(f), Some(at)) => f.names != names || now - at >= i64::from(cfg.refit_every_minutes),
        _ => true,
    };
    if l.fitting || !stale || l.last_attempt_min == now {
        return;
    }
    g.learn.last_attempt_min = now;
    let days = names
        .iter()
        .map(|n| g.svcs[n].hist.series.counts.len() / day)
        .min()
        .unwrap_or(0)
        .min(cfg.fit_days as usize);
    if days == 0 {
        if !g.learn.fallback_noted {
            g.learn.fallback_noted = true;
            let short: Vec<String> = names
                .iter()
                .filter(|n| g.svcs[*n].hist.series.counts.len() < day)
                .map(|n| format!("{n} ({} min)", g.svcs[n].hist.series.counts.len()))
                .collect();
            for n in &names {
                events.push((
                    n.clone(),
                    "forecast-fallback",
                    format!(
                        "forecaster {spec} not fitted: a fit needs a whole {day}-minute day of every service's history, and {} {} less; until then it forecasts from the latest minutes",
                        if short.len() > 5 {
                            format!("{} and {} more", short[..5].join(", "), short.len() - 5)
                        } else {
                            short.join(", ")
                        },
                        if short.len() == 1 { "has" } else { "have" }
                    ),
                ));
            }
        }
        return;
    }
    let jobs: Vec<Vec<f64>> = names
        .iter()
        .map(|n| {
            let s = &g.svcs[n].hist.series;
            s.whole_days(days, day)
                .iter()
                .map(|c| f64::from(*c))
                .collect()
        })
        .collect();
    g.learn.fitting = true;
    g.learn.last_fit_min = Some(now);
    let st = state.clone();
    tokio::spawn(async move {
        let t0 = Instant::now();
        let file = fit_file(&st);
        let kept_names = names.clone();
        let fit = tokio::task::spawn_blocking(move || {
            let data = ForecastData {
                past_rpm: jobs,
                day_minutes: Some(day),
                ..ForecastData::default()
            };
            let model = spec.build(&data)?;
            let fitted_at_ms = now_ms();
            // Kept, so that a restarted server decides on it before it refits.
            let saved = json!({
                "spec": spec.to_string(),
                "day_minutes": day,
                "names": kept_names,
                "days": days,
                "fitted_at_ms": fitted_at_ms,
                "state": model.save(),
            });
            let written = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    pharos_engine::host::write_atomic(&file, saved.to_string().as_bytes())
                });
            if let Err(e) = written {
                warn!("keeping the fitted forecaster in {}: {e}", file.display());
            }
            Ok::<_, pharos_forecast::ForecastError>((model, fitted_at_ms))
        })
        .await;
        let took = t0.elapsed().as_secs_f64();
        let (kind, msg) = {
            let mut g = st.services.inner.lock().await;
            g.learn.fitting = false;
            match fit {
                Ok(Ok((model, fitted_at_ms))) => {
                    g.learn.fit = Some(Arc::new(Fitted {
                        spec,
                        model: std::sync::Mutex::new(model),
                        names: names.clone(),
                        fitted_at_ms,
                        days,
                    }));
                    g.learn.generation += 1;
                    g.learn.fallback_noted = false;
                    (
                        "forecast-fitted",
                        format!(
                            "forecaster {spec} fitted on {days} day(s) of {} service(s) in {took:.2} s",
                            names.len()
                        ),
                    )
                }
                Ok(Err(e)) => ("forecast-failed", format!("forecaster {spec}: {e}")),
                Err(e) => (
                    "forecast-failed",
                    format!("forecaster {spec}: the fit failed: {e}"),
                ),
            }
        };
        for n in &names {
            st.services.event(&st, n, kind, &msg).await;
        }
    });
}

/// Where the latest fit is kept.
fn fit_file(state: &AppState) -> std::path::PathBuf {
    state.config.data_dir.join("forecast").join("fit.json")
}

/// Takes back the fit kept by the server that ran before (when it is of the configured
/// forecaster and day length), so that the first decision after a restart forecasts
/// with it; the next fit is due on the usual schedule.
pub(super) async fn restore(state: &AppState) {
    let cfg = &state.config.forecast;
    let Some(spec) = configured_forecaster(state) else {
        return;
    };
    let file = fit_file(state);
    let day = cfg.day_minutes as usize;
    let loaded = tokio::task::spawn_blocking(move || -> Result<Option<Fitted>, String> {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        if v["spec"] != spec.to_string() || v["day_minutes"] != day {
            return Ok(None);
        }
        let names: Vec<String> =
            serde_json::from_value(v["names"].clone()).map_err(|e| e.to_string())?;
        let mut model = spec.make(day, &[]);
        model.load(&v["state"]).map_err(|e| e.to_string())?;
        Ok(Some(Fitted {
            spec,
            model: std::sync::Mutex::new(model),
            names,
            fitted_at_ms: v["fitted_at_ms"].as_i64().unwrap_or(0),
            days: v["days"].as_u64().unwrap_or(0) as usize,
        }))
    })
    .await;
    match loaded {
        Ok(Ok(Some(fit))) => {
            let mut g = state.services.inner.lock().await;
            info!(
                "forecaster {} restored (fitted on {} day(s) of {} service(s))",
                fit.spec,
                fit.days,
                fit.names.len()
            );
            g.learn.last_fit_min = Some(fit.fitted_at_ms.div_euclid(60_000));
            g.learn.fit = Some(Arc::new(fit));
            g.learn.generation += 1;
            g.learn.restored = true;
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!("the kept forecaster fit is not used (a refit follows): {e}"),
        Err(e) => warn!("reading the kept forecaster fit: {e}"),
    }
}

/// The quantiles forecasts are shown at (their mean estimates the forecast's mean).
const GRID: [f64; 19] = [
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95,
];

/// Recomputes every fitted service's forecast in the background.
fn refresh_forecasts(state: &Arc<AppState>, g: &mut Inner, fit: Arc<Fitted>) {
    let horizon = state.config.forecast.horizon_minutes as usize;
    let hists: Vec<(usize, String, Vec<f64>, i64)> = fit
        .names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let s = &g.svcs.get(n)?.hist.series;
            (!s.counts.is_empty()).then(|| {
                (
                    i,
                    n.clone(),
                    s.counts.iter().map(|c| f64::from(*c)).collect(),
                    s.end(),
                )
            })
        })
        .collect();
    g.learn.forecasting = true;
    let st = state.clone();
    tokio::spawn(async move {
        let fit2 = fit.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut model = fit2.model.lock_or_recover().clone();
            hists
                .into_iter()
                .filter_map(|(i, n, h, first)| {
                    let q = model.predict(i, &h, horizon, &GRID).ok()?;
                    Some((n, forecast_json(&fit2, &q, first)))
                })
                .collect::<Vec<_>>()
        })
        .await;
        let mut g = st.services.inner.lock().await;
        g.learn.forecasting = false;
        for (n, v) in out.unwrap_or_default() {
            if let Some(s) = g.svcs.get_mut(&n) {
                s.hist.forecast = Some(v);
            }
        }
    });
}

/// `{model, fitted_at, horizon: [{minute, mean, q50, q90}]}` from quantiles `q` (of
/// [`GRID`]) of the minutes from unix minute `first`.
fn forecast_json(fit: &Fitted, q: &[Vec<f64>], first: i64) -> Value {
    let at = |p: f64| GRID.iter().position(|g| (g - p).abs() < 1e-9).unwrap_or(0);
    let steps = q.first().map_or(0, Vec::len);
    let horizon: Vec<Value> = (0..steps)
        .map(|h| {
            let mean = q.iter().map(|row| row[h].max(0.0)).sum::<f64>() / q.len() as f64;
            json!({
                "minute": first + h as i64,
                "mean": mean,
                "q50": q[at(0.5)][h].max(0.0),
                "q90": q[at(0.9)][h].max(0.0),
            })
        })
        .collect();
    json!({
        "model": fit.spec.to_string(),
        "fitted_at": chrono_ms(fit.fitted_at_ms),
        "fitted_at_ms": fit.fitted_at_ms,
        "days": fit.days,
        "horizon": horizon,
    })
}

/// RFC 3339 of unix milliseconds (UTC).
fn chrono_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Minutes one import may carry, at most.
pub const MAX_IMPORT_MINUTES: usize = 100_000;
/// Minutes one read may span, at most (31 days).
pub const MAX_READ_MINUTES: i64 = 31 * 1440;

impl Services {
    /// Every service's forecast of the next minute: (name, mean, q90).
    pub async fn next_minute_forecasts(&self) -> Vec<(String, f64, f64)> {
        let g = self.inner.lock().await;
        g.svcs
            .values()
            .filter(|s| !s.deleting)
            .filter_map(|s| {
                let h = s.hist.forecast.as_ref()?.get("horizon")?.get(0)?;
                Some((s.spec.name.clone(), h["mean"].as_f64()?, h["q90"].as_f64()?))
            })
            .collect()
    }

    /// Whether `tenant` (None: the admin) may see service `name`.
    async fn visible(&self, name: &str, tenant: Option<&str>) -> bool {
        let g = self.inner.lock().await;
        g.svcs
            .get(name)
            .is_some_and(|s| !s.deleting && tenant.is_none_or(|t| t == s.tenant))
    }

    /// The stored minutes of `name` in `from..to` (unix minutes; at most
    /// [`MAX_READ_MINUTES`]), None when the caller may not see it.
    pub async fn read_minutes(
        &self,
        state: &AppState,
        name: &str,
        tenant: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Option<Vec<(i64, Minute)>>, ApiError> {
        if !self.visible(name, tenant).await {
            return Ok(None);
        }
        if to < from || to - from > MAX_READ_MINUTES {
            return Err(ApiError::at(
                StatusCode::BAD_REQUEST,
                "to",
                format!(
                    "from={from}, to={to}: a read spans 0 to {MAX_READ_MINUTES} minutes; page through longer ones"
                ),
            ));
        }
        read(state, name, from, to).await.map(Some)
    }

    /// Imports past arrivals of `name` from unix minute `start`: minutes the server
    /// observed are kept, imported or absent ones replaced; the current and later
    /// minutes are refused. With `day_start`, `start` is the first minute of a day
    /// of the service's daily pattern. Returns (minutes written, observed ones kept),
    /// None when the caller may not see the service.
    pub async fn import_minutes(
        &self,
        state: &AppState,
        name: &str,
        tenant: Option<&str>,
        start: i64,
        arrivals: &[u64],
        day_start: bool,
    ) -> Result<Option<(usize, usize)>, ApiError> {
        if arrivals.is_empty() || arrivals.len() > MAX_IMPORT_MINUTES {
            return Err(ApiError::at(
                StatusCode::BAD_REQUEST,
                "arrivals",
                format!(
                    "an import carries 1 to {MAX_IMPORT_MINUTES} minutes, got {}",
                    arrivals.len()
                ),
            ));
        }
        let now = unix_minute();
        let end = start.saturating_add(arrivals.len() as i64);
        if end > now {
            return Err(ApiError::at(
                StatusCode::BAD_REQUEST,
                "start",
                format!(
                    "the import ends at minute {end}, after the current minute {now}: only the past can be imported"
                ),
            ));
        }
        // Under the lock: the loop writes the current hour from memory.
        let mut g = self.inner.lock().await;
        let Some(s) = g
            .svcs
            .get_mut(name)
            .filter(|s| !s.deleting && tenant.is_none_or(|t| t == s.tenant))
        else {
            return Ok(None);
        };
        let chunks = state
            .store
            .minute_chunks(name, chunk_of(start).0, chunk_of(end - 1).0)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut hours: BTreeMap<i64, Vec<Option<Minute>>> = BTreeMap::new();
        for (hour, data) in chunks {
            // A damaged hour is replaced by what is imported.
            hours.insert(
                hour,
                minutes::decode(&data).unwrap_or_else(|_| vec![None; 60]),
            );
        }
        if let Some((hour, slots)) = &s.hist.chunk {
            hours.insert(*hour, slots.clone());
        }
        let (mut written, mut kept) = (0, 0);
        for (i, a) in arrivals.iter().enumerate() {
            let (hour, slot) = chunk_of(start + i as i64);
            let slots = hours.entry(hour).or_insert_with(|| vec![None; 60]);
            if slots[slot].is_some_and(|m| m.observed.is_some()) {
                kept += 1;
            } else {
                slots[slot] = Some(Minute::imported(*a));
                written += 1;
            }
        }
        let (first, last) = (chunk_of(start).0, chunk_of(end - 1).0);
        let writes: Vec<(String, i64, Vec<u8>)> = hours
            .iter()
            .filter(|(h, _)| (first..=last).contains(*h))
            .map(|(h, slots)| (name.to_string(), *h, minutes::encode(slots)))
            .collect();
        state
            .store
            .put_minute_chunks(&writes)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if day_start {
            state
                .store
                .set_day_origin(name, start)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            s.hist.day_origin = start;
        }
        if let Some((hour, slots)) = &mut s.hist.chunk
            && let Some(new) = hours.get(hour)
        {
            *slots = new.clone();
        }
        // The series is read again from the store, with the imported minutes.
        s.hist.loaded = false;
        Ok(Some((written, kept)))
    }
}

/// The history of `name` in unix minutes `from..to`: one entry per recorded minute.
pub(super) async fn read(
    state: &AppState,
    name: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Minute)>, ApiError> {
    let chunks = state
        .store
        .minute_chunks(name, minutes::chunk_of(from).0, minutes::chunk_of(to - 1).0)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out = Vec::new();
    for (hour, data) in chunks {
        let slots = minutes::decode(&data).map_err(|e| {
            ApiError::internal(format!(
                "service {name}: hour {hour} of its history is damaged: {e}"
            ))
        })?;
        for (i, m) in slots.into_iter().enumerate() {
            let minute = hour * minutes::CHUNK_MINUTES + i as i64;
            if let Some(m) = m.filter(|_| (from..to).contains(&minute)) {
                out.push((minute, m));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_unix_ms() {
        assert_eq!(chrono_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_ms(1_798_761_599_000), "2026-12-31T23:59:59Z");
        assert_eq!(chrono_ms(951_825_600_000), "2000-02-29T12:00:00Z");
    }
}
