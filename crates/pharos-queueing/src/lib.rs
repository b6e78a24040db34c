//! Queueing formulas and SLO utilities.
//!
//! - [`erlang_b`], [`erlang_c`]: blocking and waiting probabilities, computed by the
//!   stable recursion on the number of servers (no factorials, fine for thousands of
//!   servers);
//! - [`mmc_mean_wait_s`], [`md1_mean_wait_s`]: closed-form mean waits used to check the
//!   simulator;
//! - [`LatencyModel`]: predicted tail latency (the upper bound and Faro's M/D/c model);
//! - [`relaxed_utility`], [`step_utility`], [`eval_drop_penalty`], [`solver_drop_penalty`]:
//!   the SLO utility functions and availability penalties of the Faro spec.

mod latency;
mod queues;
mod utility;

pub use latency::{LatencyModel, RELAXED_RHO, replicas_for_slo};
pub use queues::{erlang_b, erlang_c, md1_mean_wait_s, mmc_mean_wait_s};
pub use utility::{eval_drop_penalty, relaxed_utility, solver_drop_penalty, step_utility};
