//! Queueing formulas and SLO utilities.
//!
//! - [`erlang_b`], [`erlang_c`]: blocking and waiting probabilities, computed by the
//!   stable recursion on the number of servers (no factorials, fine for thousands of
//!   servers);
//! - [`mmc_mean_wait_s`], [`md1_mean_wait_s`]: closed-form mean waits used to check the
//!   simulator;
//! - [`relaxed_utility`], [`step_utility`], [`eval_drop_penalty`], [`solver_drop_penalty`]:
//!   the SLO utility functions and availability penalties of the Faro spec.

mod queues;
mod utility;

pub use queues::{erlang_b, erlang_c, md1_mean_wait_s, mmc_mean_wait_s};
pub use utility::{eval_drop_penalty, relaxed_utility, solver_drop_penalty, step_utility};
