use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A latency service-level objective: `percentile` of requests finish within `latency_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// The latency bound in seconds.
    pub latency_s: f64,
    /// The percentile in (0, 100), e.g. 99.0 for p99.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
}

fn default_percentile() -> f64 {
    99.0
}

impl Slo {
    pub fn p99(latency_s: f64) -> Self {
        Self {
            latency_s,
            percentile: 99.0,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        SpecError::check_positive("latency_s", self.latency_s)?;
        if !(self.percentile > 0.0 && self.percentile < 100.0) {
            return Err(SpecError::new(
                "percentile",
                format!("must be in (0, 100), got {}", self.percentile),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(Slo::p99(0.72).validate().is_ok());
        let e = Slo::p99(-0.1).validate().unwrap_err();
        assert_eq!(e.field, "latency_s");
        let e = Slo {
            latency_s: 1.0,
            percentile: 100.0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "percentile");
        assert!(Slo::p99(f64::NAN).validate().is_err());
    }
}
