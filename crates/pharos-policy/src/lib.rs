//! Inference autoscaling policies behind the [`pharos_core::InferencePolicy`] seam.
//!
//! The baselines (see [`baselines`]): `fairshare`, `oneshot`, `aiad`, `rayserve`,
//! `kpa`, `hpa`. [`build`] makes any of them from a name and parameters (JSON, as read
//! from an experiment file), with unknown names and parameters reported clearly.
//!
//! Architecture invariant: no I/O, no clock; a policy is a function of the views it is
//! shown and its own state.

pub mod alloc;
pub mod baselines;
pub mod driver;
pub mod faro;
pub mod graph;
pub mod training;
mod window;

pub use baselines::{
    FairShare, FairShareParams, Hpa, HpaMetric, HpaParams, Kpa, KpaParams, RayServe,
    RayServeParams, Threshold, ThresholdParams,
};
pub use driver::{OverCapacity, PolicyDriver, Step};
pub use window::{CounterWindow, WindowDelta};

use pharos_core::InferencePolicy;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The policies [`build`] knows.
pub const POLICY_NAMES: [&str; 12] = [
    "fairshare",
    "oneshot",
    "aiad",
    "rayserve",
    "kpa",
    "hpa",
    "mark",
    "faro-sum",
    "faro-fair",
    "faro-fairsum",
    "faro-penaltysum",
    "faro-penaltyfairsum",
];

/// What some policies need to know of the run beyond the views they are shown: what
/// their forecasters may learn from (the days before the run; the whole run for the `oracle`,
/// an upper bound on forecasting for experiments only).
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    pub forecast: pharos_forecast::ForecastData,
}

#[derive(Debug, Error, PartialEq)]
pub enum PolicyError {
    #[error("unknown policy {name:?} (known: {})", POLICY_NAMES.join(", "))]
    Unknown { name: String },
    #[error("policy {name}: {problem}")]
    BadParams { name: String, problem: String },
}

fn params<T: DeserializeOwned>(name: &str, v: &serde_json::Value) -> Result<T, PolicyError> {
    let v = if v.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        v.clone()
    };
    serde_json::from_value(v).map_err(|e| PolicyError::BadParams {
        name: name.to_string(),
        problem: e.to_string(),
    })
}

fn check(name: &str, field: &str, v: f64, min_exclusive: f64) -> Result<(), PolicyError> {
    if v.is_finite() && v > min_exclusive {
        Ok(())
    } else {
        Err(PolicyError::BadParams {
            name: name.to_string(),
            problem: format!("{field} must be a finite number > {min_exclusive}, got {v}"),
        })
    }
}

fn check_cap(name: &str, cap: Option<u32>) -> Result<(), PolicyError> {
    if cap == Some(0) {
        return Err(PolicyError::BadParams {
            name: name.to_string(),
            problem: "max_replicas must be at least 1".into(),
        });
    }
    Ok(())
}

/// The most minutes ahead a policy may forecast (a day).
pub const MAX_WINDOW_STEPS: usize = 1440;

fn check_window(name: &str, steps: usize) -> Result<(), PolicyError> {
    if (1..=MAX_WINDOW_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(PolicyError::BadParams {
            name: name.to_string(),
            problem: format!("window_steps must be 1 to {MAX_WINDOW_STEPS}, got {steps}"),
        })
    }
}

fn check_quantile(name: &str, q: f64) -> Result<(), PolicyError> {
    if q > 0.0 && q < 1.0 {
        Ok(())
    } else {
        Err(PolicyError::BadParams {
            name: name.to_string(),
            problem: format!("quantiles must be in (0, 1), got {q}"),
        })
    }
}

/// The forecaster a policy forecasts with (None: it does not forecast).
pub fn forecaster_of(
    name: &str,
    p: &serde_json::Value,
) -> Result<Option<pharos_forecast::ForecasterSpec>, PolicyError> {
    Ok(match name {
        "mark" => Some(params::<faro::MarkParams>(name, p)?.forecaster),
        "hpa" => params::<HpaParams>(name, p)?.forecast.map(|f| f.forecaster),
        _ if name.starts_with("faro-") => {
            let fp: faro::FaroParams = params(name, p)?;
            (fp.prediction == faro::Prediction::Forecast).then_some(fp.forecaster)
        }
        _ => None,
    })
}

/// Build a policy from its name and parameters (a JSON object of the policy's parameter
/// struct's fields; `null` or `{}` for the defaults), without run context.
pub fn build(name: &str, p: &serde_json::Value) -> Result<Box<dyn InferencePolicy>, PolicyError> {
    build_with(name, p, &PolicyContext::default())
}

/// [`build`] with the run's context (needed by the `oracle` forecaster).
pub fn build_with(
    name: &str,
    p: &serde_json::Value,
    ctx: &PolicyContext,
) -> Result<Box<dyn InferencePolicy>, PolicyError> {
    let forecaster = |f: pharos_forecast::ForecasterSpec| {
        let bad = |problem: String| PolicyError::BadParams {
            name: name.to_string(),
            problem,
        };
        if f.is_oracle() && ctx.forecast.truth_rpm.is_empty() {
            return Err(bad("the oracle forecaster needs the run's trace".into()));
        }
        f.build(&ctx.forecast)
            .map_err(|e| bad(format!("forecaster {f}: {e}")))
    };
    Ok(match name {
        "fairshare" => Box::new(FairShare::new(params(name, p)?)),
        "oneshot" | "aiad" => {
            let tp: ThresholdParams = params(name, p)?;
            check(name, "interval_s", tp.interval_s, 0.0)?;
            check(name, "look_back_s", tp.look_back_s, 0.0)?;
            check(name, "upscale_delay_s", tp.upscale_delay_s, -1e-12)?;
            check(name, "downscale_delay_s", tp.downscale_delay_s, -1e-12)?;
            if let Some(d) = tp.drop_latency_s {
                check(name, "drop_latency_s", d, -1e-12)?;
            }
            if name == "oneshot" {
                Box::new(Threshold::oneshot(tp))
            } else {
                Box::new(Threshold::aiad(tp))
            }
        }
        "rayserve" => {
            let rp: RayServeParams = params(name, p)?;
            check(name, "interval_s", rp.interval_s, 0.0)?;
            check(name, "look_back_period_s", rp.look_back_period_s, 0.0)?;
            check(
                name,
                "target_ongoing_requests",
                rp.target_ongoing_requests,
                0.0,
            )?;
            check(name, "upscaling_factor", rp.upscaling_factor, 0.0)?;
            check(name, "downscaling_factor", rp.downscaling_factor, 0.0)?;
            check(name, "upscale_delay_s", rp.upscale_delay_s, -1e-12)?;
            check(name, "downscale_delay_s", rp.downscale_delay_s, -1e-12)?;
            check_cap(name, rp.max_replicas)?;
            Box::new(RayServe::new(rp))
        }
        "kpa" => {
            let kp: KpaParams = params(name, p)?;
            check(name, "interval_s", kp.interval_s, 0.0)?;
            check(name, "stable_window_s", kp.stable_window_s, 0.0)?;
            check(name, "panic_window_s", kp.panic_window_s, 0.0)?;
            check(name, "target_utilization", kp.target_utilization, 0.0)?;
            check(name, "max_scale_up_rate", kp.max_scale_up_rate, 1.0 - 1e-12)?;
            check(
                name,
                "max_scale_down_rate",
                kp.max_scale_down_rate,
                1.0 - 1e-12,
            )?;
            check(name, "panic_threshold", kp.panic_threshold, 0.0)?;
            if let Some(t) = kp.target_concurrency {
                check(name, "target_concurrency", t, 0.0)?;
            }
            check_cap(name, kp.max_replicas)?;
            Box::new(Kpa::new(kp))
        }
        "hpa" => {
            let hp: HpaParams = params(name, p)?;
            check(name, "interval_s", hp.interval_s, 0.0)?;
            check(name, "target", hp.target, 0.0)?;
            check(name, "tolerance", hp.tolerance, -1e-12)?;
            check(
                name,
                "downscale_stabilization_s",
                hp.downscale_stabilization_s,
                -1e-12,
            )?;
            check_cap(name, hp.max_replicas)?;
            match hp.forecast.clone() {
                None => Box::new(Hpa::new(hp)),
                Some(f) => {
                    check_quantile(name, f.quantile)?;
                    check_window(name, f.window_steps)?;
                    if hp.metric != HpaMetric::Cpu {
                        return Err(PolicyError::BadParams {
                            name: name.to_string(),
                            problem: "a forecast floor needs metric cpu (it sizes replicas \
                                      by utilisation)"
                                .into(),
                        });
                    }
                    let fc = forecaster(f.forecaster)?;
                    Box::new(faro::ForecastHpa::new(hp, f, fc, &ctx.forecast))
                }
            }
        }
        "mark" => {
            let mp: faro::MarkParams = params(name, p)?;
            check(name, "interval_s", mp.interval_s, 0.0)?;
            check(name, "predictive_interval_s", mp.predictive_interval_s, 0.0)?;
            check_quantile(name, mp.quantile)?;
            check_window(name, mp.window_steps)?;
            let f = forecaster(mp.forecaster)?;
            Box::new(faro::Mark::new(mp, f, &ctx.forecast))
        }
        _ if name.starts_with("faro-") => {
            let objective = match name {
                "faro-sum" => alloc::Objective::Sum,
                "faro-fair" => alloc::Objective::Fair,
                "faro-fairsum" => alloc::Objective::FairSum,
                "faro-penaltysum" => alloc::Objective::PenaltySum,
                "faro-penaltyfairsum" => alloc::Objective::PenaltyFairSum,
                _ => {
                    return Err(PolicyError::Unknown {
                        name: name.to_string(),
                    });
                }
            };
            let fp: faro::FaroParams = params(name, p)?;
            if fp.replica_cost > 0.0 && objective.fair() {
                return Err(PolicyError::BadParams {
                    name: name.to_string(),
                    problem: "replica_cost applies to faro-sum and faro-penaltysum: a fairness \
                              objective compares the jobs' utilities, which a price per \
                              replica would skew against jobs that need more replicas"
                        .into(),
                });
            }
            check(name, "interval_s", fp.interval_s, 0.0)?;
            check(name, "predictive_interval_s", fp.predictive_interval_s, 0.0)?;
            check(name, "slack_cpus", fp.slack_cpus, -1e-12)?;
            check(name, "replica_cost", fp.replica_cost, -1e-12)?;
            check(
                name,
                "downscale_stabilization_s",
                fp.downscale_stabilization_s,
                -1e-12,
            )?;
            if !(0.1..=10.0).contains(&fp.plan_slo_factor) {
                return Err(PolicyError::BadParams {
                    name: name.to_string(),
                    problem: format!(
                        "plan_slo_factor must be 0.1 to 10, got {}",
                        fp.plan_slo_factor
                    ),
                });
            }
            if fp.reactive_sizing && !fp.reactive {
                return Err(PolicyError::BadParams {
                    name: name.to_string(),
                    problem: "reactive_sizing runs in the reactive loop: it needs reactive: true"
                        .into(),
                });
            }
            if fp.downscale_stabilization_s > 86_400.0 {
                return Err(PolicyError::BadParams {
                    name: name.to_string(),
                    problem: format!(
                        "downscale_stabilization_s must be at most 86400 (a day), got {}",
                        fp.downscale_stabilization_s
                    ),
                });
            }
            check_quantile(name, fp.quantile)?;
            check_window(name, fp.window_steps)?;
            check_quantile(name, fp.max_quantile)?;
            if let alloc::UtilityKind::Relaxed { alpha } = fp.utility {
                check(name, "utility.alpha", alpha, 0.0)?;
            }
            let f = forecaster(fp.forecaster)?;
            Box::new(faro::Faro::new(name, objective, fp, f, &ctx.forecast))
        }
        _ => {
            return Err(PolicyError::Unknown {
                name: name.to_string(),
            });
        }
    })
}

#[cfg(test)]
mod tests;
