use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Poisson};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::{JobTrace, Trace, TraceError};

/// A synthetic per-minute load shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Generator {
    /// The same rate every minute.
    Constant { rpm: f64 },
    /// A daily cycle: `mean_rpm + amplitude_rpm * sin(2 pi (minute + phase_min) / period_min)`,
    /// floored at 0.
    Diurnal {
        mean_rpm: f64,
        amplitude_rpm: f64,
        #[serde(default = "day_min")]
        period_min: f64,
        #[serde(default)]
        phase_min: f64,
    },
    /// `base_rpm`, with `burst_rpm` for `length_min` minutes every `every_min` minutes,
    /// starting at `offset_min`.
    Bursts {
        base_rpm: f64,
        burst_rpm: f64,
        every_min: usize,
        length_min: usize,
        #[serde(default)]
        offset_min: usize,
    },
    /// A Markov-modulated Poisson process: the rate jumps between `levels_rpm`, staying
    /// at each for a geometric number of minutes with mean `mean_dwell_min`; each
    /// minute's count is Poisson at the current level. Seeded.
    PoissonModulated {
        levels_rpm: Vec<f64>,
        mean_dwell_min: f64,
        seed: u64,
    },
}

fn day_min() -> f64 {
    1440.0
}

/// One generated job of a synthetic trace: `name` and the generator's fields side by
/// side (unknown fields are refused by the generator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedJob {
    pub name: String,
    #[serde(flatten)]
    pub generator: Generator,
}

impl Generator {
    fn validate(&self) -> Result<(), String> {
        let nonneg = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number >= 0, got {v}"))
            }
        };
        match self {
            Generator::Constant { rpm } => nonneg("rpm", *rpm),
            Generator::Diurnal {
                mean_rpm,
                amplitude_rpm,
                period_min,
                phase_min,
            } => {
                nonneg("mean_rpm", *mean_rpm)?;
                nonneg("amplitude_rpm", *amplitude_rpm)?;
                nonneg("phase_min", *phase_min)?;
                if !(period_min.is_finite() && *period_min > 0.0) {
                    return Err(format!("period_min must be > 0, got {period_min}"));
                }
                Ok(())
            }
            Generator::Bursts {
                base_rpm,
                burst_rpm,
                every_min,
                length_min,
                ..
            } => {
                nonneg("base_rpm", *base_rpm)?;
                nonneg("burst_rpm", *burst_rpm)?;
                if *every_min == 0 || length_min > every_min {
                    return Err(format!(
                        "need 0 < length_min <= every_min, got length_min {length_min}, every_min {every_min}"
                    ));
                }
                Ok(())
            }
            Generator::PoissonModulated {
                levels_rpm,
                mean_dwell_min,
                ..
            } => {
                if levels_rpm.is_empty() {
                    return Err("levels_rpm is empty".into());
                }
                for l in levels_rpm {
                    nonneg("levels_rpm[..]", *l)?;
                }
                if !(mean_dwell_min.is_finite() && *mean_dwell_min >= 1.0) {
                    return Err(format!("mean_dwell_min must be >= 1, got {mean_dwell_min}"));
                }
                Ok(())
            }
        }
    }

    /// Requests per minute for `minutes` minutes.
    pub fn generate(&self, minutes: usize) -> Result<Vec<f64>, TraceError> {
        self.validate().map_err(TraceError::invalid)?;
        Ok(match self {
            Generator::Constant { rpm } => vec![*rpm; minutes],
            Generator::Diurnal {
                mean_rpm,
                amplitude_rpm,
                period_min,
                phase_min,
            } => (0..minutes)
                .map(|m| {
                    let x = std::f64::consts::TAU * (m as f64 + phase_min) / period_min;
                    (mean_rpm + amplitude_rpm * x.sin()).max(0.0)
                })
                .collect(),
            Generator::Bursts {
                base_rpm,
                burst_rpm,
                every_min,
                length_min,
                offset_min,
            } => (0..minutes)
                .map(|m| {
                    let in_burst = m >= *offset_min && (m - offset_min) % every_min < *length_min;
                    if in_burst { *burst_rpm } else { *base_rpm }
                })
                .collect(),
            Generator::PoissonModulated {
                levels_rpm,
                mean_dwell_min,
                seed,
            } => {
                let mut rng = Pcg64Mcg::seed_from_u64(*seed);
                let leave = 1.0 / mean_dwell_min;
                let mut state = rng.random_range(0..levels_rpm.len());
                (0..minutes)
                    .map(|_| {
                        if levels_rpm.len() > 1 && rng.random::<f64>() < leave {
                            // Jump to one of the other levels.
                            let k = rng.random_range(0..levels_rpm.len() - 1);
                            state = if k >= state { k + 1 } else { k };
                        }
                        let rate = levels_rpm[state];
                        if rate > 0.0 {
                            Poisson::new(rate).map_or(rate, |p| p.sample(&mut rng))
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
        })
    }
}

/// A synthetic trace of `minutes` minutes from named generators.
pub fn generate_trace(jobs: &[GeneratedJob], minutes: usize) -> Result<Trace, TraceError> {
    if minutes == 0 {
        return Err(TraceError::invalid("a generated trace needs minutes > 0"));
    }
    let jobs = jobs
        .iter()
        .map(|j| {
            Ok(JobTrace {
                name: j.name.clone(),
                requests_per_min: j
                    .generator
                    .generate(minutes)
                    .map_err(|e| TraceError::invalid(format!("job {:?}: {e}", j.name)))?,
            })
        })
        .collect::<Result<Vec<_>, TraceError>>()?;
    let t = Trace { jobs };
    t.validate()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            Generator::Constant { rpm: 5.0 }.generate(3).unwrap(),
            vec![5.0; 3]
        );
        let d = Generator::Diurnal {
            mean_rpm: 100.0,
            amplitude_rpm: 50.0,
            period_min: 4.0,
            phase_min: 0.0,
        }
        .generate(4)
        .unwrap();
        assert!((d[0] - 100.0).abs() < 1e-9 && (d[1] - 150.0).abs() < 1e-9);
        assert!((d[3] - 50.0).abs() < 1e-9);
        let b = Generator::Bursts {
            base_rpm: 1.0,
            burst_rpm: 9.0,
            every_min: 3,
            length_min: 1,
            offset_min: 1,
        }
        .generate(6)
        .unwrap();
        assert_eq!(b, vec![1.0, 9.0, 1.0, 1.0, 9.0, 1.0]);
    }

    #[test]
    fn modulated_is_seeded_and_uses_its_levels() {
        let g = Generator::PoissonModulated {
            levels_rpm: vec![100.0, 1000.0],
            mean_dwell_min: 20.0,
            seed: 7,
        };
        let a = g.generate(600).unwrap();
        assert_eq!(a, g.generate(600).unwrap());
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!(mean > 150.0 && mean < 950.0, "{mean}");
        assert!(a.iter().any(|v| *v < 200.0) && a.iter().any(|v| *v > 800.0));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = Generator::Constant { rpm: -1.0 }.generate(3).unwrap_err();
        assert!(e.to_string().contains("rpm"), "{e}");
        let jobs = [GeneratedJob {
            name: "x".into(),
            generator: Generator::Bursts {
                base_rpm: 1.0,
                burst_rpm: 2.0,
                every_min: 2,
                length_min: 3,
                offset_min: 0,
            },
        }];
        let e = generate_trace(&jobs, 10).unwrap_err();
        assert!(e.to_string().contains("job \"x\""), "{e}");
    }
}
