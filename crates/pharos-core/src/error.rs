use thiserror::Error;

/// A specification (an SLO, a job, a policy parameter) that cannot be used.
///
/// `field` names what is wrong in the terms a user wrote it in, e.g.
/// `jobs[3].slo.latency_s`.
#[derive(Debug, Clone, PartialEq, Error)]
pub struct SpecError {
    pub field: String,
    pub problem: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Prefix the field with the path of the value that contains it.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }

    /// `Ok(())` when `value` is finite and > 0, otherwise an error naming `field`.
    pub fn check_positive(field: &str, value: f64) -> Result<(), SpecError> {
        if value.is_finite() && value > 0.0 {
            Ok(())
        } else {
            Err(SpecError::new(
                field,
                format!("must be a finite number > 0, got {value}"),
            ))
        }
    }

    /// `Ok(())` when `value` is finite and >= 0, otherwise an error naming `field`.
    pub fn check_non_negative(field: &str, value: f64) -> Result<(), SpecError> {
        if value.is_finite() && value >= 0.0 {
            Ok(())
        } else {
            Err(SpecError::new(
                field,
                format!("must be a finite number >= 0, got {value}"),
            ))
        }
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}
