//! The documented bounds of every number and size a tenant can send (`docs/limits.md`
//! lists them). Specs are checked against these before anything is stored, so nothing a
//! tenant stores can make the server size a table, a loop or a process count by it.

use crate::SpecError;

/// The smallest CPU share a learner or replica may ask for: nominal shares are not
/// enforced on the local backend, so a finer grain would let one tenant pack hundreds of
/// processes onto a core.
pub const MIN_CPUS: f64 = 0.1;
/// The most CPUs one learner or replica may ask for.
pub const MAX_CPUS: f64 = 1024.0;
/// GPUs per learner or replica.
pub const MAX_GPUS: u32 = 64;
/// Learners of one training job.
pub const MAX_LEARNERS: u32 = 1024;
/// Memory per learner, bytes (1 MiB to 4 TiB).
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
pub const MAX_MEMORY_BYTES: u64 = 4 << 40;
/// Restarts of a crashed learner.
pub const MAX_RESTARTS: u32 = 100;
/// Job priorities; a tenant's own ceiling (set by the admin) may be lower.
pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;
/// Replicas of one service.
pub const MAX_REPLICAS: u32 = 1000;
/// Requests one replica holds at once.
pub const MAX_CONCURRENT: u32 = 10_000;
/// Requests a service's router queues.
pub const MAX_QUEUE: usize = 100_000;
/// The lowest port a service's router may ask for (below are the system's).
pub const MIN_PORT: u16 = 1024;
/// Latencies, processing times and timeouts, seconds.
pub const MAX_LATENCY_S: f64 = 3600.0;
pub const MAX_TIMEOUT_S: f64 = 86_400.0;
/// Strings: names, paths, commands, environment.
pub const MAX_SHORT: usize = 128;
pub const MAX_PATH: usize = 4096;
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
pub const MAX_ARGS: usize = 64;
pub const MAX_ENV: usize = 64;
pub const MAX_DATA_STORES: usize = 16;
pub const MAX_CONNECTION_KEYS: usize = 32;
pub const MAX_REGEX: usize = 1024;
pub const MAX_DESCRIPTION: usize = 4096;

/// `value` within `[lo, hi]` and finite, else an error naming the field and the range.
pub fn check_f64(field: &str, value: f64, lo: f64, hi: f64) -> Result<(), SpecError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must be between {lo} and {hi}, got {value}"),
        ))
    }
}

/// `value` within `(0, hi]` and finite.
pub fn check_positive_at_most(field: &str, value: f64, hi: f64) -> Result<(), SpecError> {
    if value.is_finite() && value > 0.0 && value <= hi {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must be > 0 and at most {hi}, got {value}"),
        ))
    }
}

/// An integer within `[lo, hi]`.
pub fn check_int<T>(field: &str, value: T, lo: T, hi: T) -> Result<(), SpecError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must be between {lo} and {hi}, got {value}"),
        ))
    }
}

/// A string of at most `max` bytes.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), SpecError> {
    if value.len() <= max {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ))
    }
}

/// A list of at most `max` items.
pub fn check_count(field: &str, n: usize, max: usize) -> Result<(), SpecError> {
    if n <= max {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must have at most {max} entries, got {n}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_and_the_range() {
        let e = check_f64("cpus", 0.0001, MIN_CPUS, MAX_CPUS).unwrap_err();
        assert_eq!(e.field, "cpus");
        assert!(
            e.problem.contains("0.1") && e.problem.contains("1024"),
            "{e}"
        );
        assert!(check_f64("cpus", f64::NAN, 0.0, 1.0).is_err());
        assert!(check_f64("cpus", f64::INFINITY, 0.0, f64::MAX).is_err());
        assert!(check_int("max_replicas", u32::MAX, 1, MAX_REPLICAS).is_err());
        assert!(check_int("max_replicas", MAX_REPLICAS, 1, MAX_REPLICAS).is_ok());
        assert!(check_len("name", &"x".repeat(129), MAX_SHORT).is_err());
        assert!(check_positive_at_most("t", 0.0, 1.0).is_err());
    }
}
