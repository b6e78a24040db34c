//! Random durations (service times, router delays), sampled from a seeded RNG.

use pharos_core::SpecError;
use rand::RngExt;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

/// A distribution of a duration in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Dist {
    /// Always `value_s`.
    Constant { value_s: f64 },
    /// Exponential with mean `mean_s`.
    Exponential { mean_s: f64 },
    /// `loc_s + scale_s * exp(shape * Z)`, Z standard normal (scipy's `lognorm(shape,
    /// loc, scale)`; the Faro profiles are given this way).
    Lognormal {
        loc_s: f64,
        scale_s: f64,
        shape: f64,
    },
    /// An empirical distribution given by quantiles: `points` are `[q, value_s]` pairs
    /// with q rising from 0 to 1; samples interpolate the inverse CDF linearly.
    Quantiles { points: Vec<[f64; 2]> },
}

impl Dist {
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            Dist::Constant { value_s } => SpecError::check_non_negative("value_s", *value_s),
            Dist::Exponential { mean_s } => SpecError::check_positive("mean_s", *mean_s),
            Dist::Lognormal {
                loc_s,
                scale_s,
                shape,
            } => {
                SpecError::check_non_negative("loc_s", *loc_s)?;
                SpecError::check_positive("scale_s", *scale_s)?;
                SpecError::check_non_negative("shape", *shape)
            }
            Dist::Quantiles { points } => {
                if points.len() < 2 {
                    return Err(SpecError::new(
                        "points",
                        "needs at least two [q, value_s] pairs",
                    ));
                }
                if points[0][0] != 0.0 || points[points.len() - 1][0] != 1.0 {
                    return Err(SpecError::new(
                        "points",
                        "the first q must be 0 and the last 1",
                    ));
                }
                for (i, w) in points.windows(2).enumerate() {
                    let ([q0, v0], [q1, v1]) = (w[0], w[1]);
                    let ok = q1 > q0 && v1 >= v0 && v0 >= 0.0 && v1.is_finite();
                    if !ok {
                        return Err(SpecError::new(
                            format!("points[{}]", i + 1),
                            "q must rise and values must be finite, >= 0 and not fall",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The mean of the distribution.
    pub fn mean_s(&self) -> f64 {
        match self {
            Dist::Constant { value_s } => *value_s,
            Dist::Exponential { mean_s } => *mean_s,
            Dist::Lognormal {
                loc_s,
                scale_s,
                shape,
            } => loc_s + scale_s * (shape * shape / 2.0).exp(),
            Dist::Quantiles { points } => points
                .windows(2)
                .map(|w| (w[1][0] - w[0][0]) * (w[0][1] + w[1][1]) / 2.0)
                .sum(),
        }
    }

    /// Whether every sample is zero (lets the simulator skip scheduling a delay).
    pub fn is_zero(&self) -> bool {
        matches!(self, Dist::Constant { value_s } if *value_s == 0.0)
    }

    #[inline]
    pub fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match self {
            Dist::Constant { value_s } => *value_s,
            Dist::Exponential { mean_s } => {
                let e: f64 = Exp1.sample(rng);
                e * mean_s
            }
            Dist::Lognormal {
                loc_s,
                scale_s,
                shape,
            } => {
                let z: f64 = StandardNormal.sample(rng);
                loc_s + scale_s * (shape * z).exp()
            }
            Dist::Quantiles { points } => {
                let u: f64 = rng.random();
                let i = points
                    .partition_point(|p| p[0] <= u)
                    .clamp(1, points.len() - 1);
                let ([q0, v0], [q1, v1]) = (points[i - 1], points[i]);
                v0 + (v1 - v0) * (u - q0) / (q1 - q0)
            }
        }
    }

    /// A log-normal `exp(mu + sigma Z)` through a measured median and 99th percentile.
    pub fn lognormal_from_p50_p99(p50_s: f64, p99_s: f64) -> Result<Dist, SpecError> {
        SpecError::check_positive("p50", p50_s)?;
        if !(p99_s >= p50_s && p99_s.is_finite()) {
            return Err(SpecError::new(
                "p99",
                format!("must be >= p50 ({p50_s}), got {p99_s}"),
            ));
        }
        const Z99: f64 = 2.326_347_874_040_841;
        Ok(Dist::Lognormal {
            loc_s: 0.0,
            scale_s: p50_s,
            shape: (p99_s / p50_s).ln() / Z99,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    fn sample_mean(d: &Dist, n: usize) -> f64 {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        (0..n).map(|_| d.sample(&mut rng)).sum::<f64>() / n as f64
    }

    #[test]
    fn sample_means_match_the_formula() {
        let faro = Dist::Lognormal {
            loc_s: 0.079302,
            scale_s: 0.068581,
            shape: 0.42247,
        };
        // The Faro ResNet34 profile: mean about 154 ms.
        assert!((faro.mean_s() - 0.1540).abs() < 0.001, "{}", faro.mean_s());
        for d in [
            faro,
            Dist::Exponential { mean_s: 0.2 },
            Dist::Quantiles {
                points: vec![[0.0, 0.1], [0.5, 0.2], [1.0, 0.6]],
            },
        ] {
            let (m, s) = (d.mean_s(), sample_mean(&d, 200_000));
            assert!((m - s).abs() / m < 0.01, "{d:?}: {m} vs {s}");
        }
    }

    #[test]
    fn fitted_lognormal_hits_its_quantiles() {
        let d = Dist::lognormal_from_p50_p99(0.05, 0.12).unwrap();
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let mut v: Vec<f64> = (0..100_000).map(|_| d.sample(&mut rng)).collect();
        v.sort_by(f64::total_cmp);
        assert!((v[50_000] - 0.05).abs() < 0.001);
        assert!((v[99_000] - 0.12).abs() < 0.004, "{}", v[99_000]);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Dist::Exponential { mean_s: 0.0 }.validate().is_err());
        assert!(
            Dist::Quantiles {
                points: vec![[0.0, 1.0], [0.5, 0.5], [1.0, 2.0]]
            }
            .validate()
            .is_err()
        );
        assert!(Dist::lognormal_from_p50_p99(0.1, 0.05).is_err());
    }
}
