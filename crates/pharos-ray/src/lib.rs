//! pharos on Ray, through Ray's REST APIs only (no Python in the server):
//!
//! - [`client`]: the dashboard's Jobs and Serve APIs, with timeouts and errors that say
//!   whether to retry, and the `working_dir` packages uploaded to Ray.
//! - [`jobs`]: [`RayBackend`], training jobs as one Ray Job per learner.
//! - [`serve`]: [`RayServe`], services as Ray Serve applications whose replica count
//!   pharos sets.
//!
//! Architecture invariant: depends on the engine seams (`pharos-engine`), never on the
//! server or another engine; every call to Ray has a timeout.

pub mod client;
pub mod jobs;
pub mod serve;

pub use client::{RayClient, RayError, RayNode};
pub use jobs::RayBackend;
pub use serve::RayServe;
