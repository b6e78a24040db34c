//! The seams between the control plane and the engines that run tenants' code, and
//! what every engine shares.
//!
//! - [`training`]: the [`Backend`] trait a training engine implements (prepare, start,
//!   poll, signal, store results, remove a job's learners) and what it is given
//!   ([`JobRun`]: the manifest, the job's directories, the attempt, the placement).
//! - [`service`]: the spec of an inference service ([`ServiceSpec`]), the phases of a
//!   replica, and the [`ServiceEngine`] trait an engine that runs replicas elsewhere
//!   implements (one `sync` of wanted states to reported replicas); [`graph`]: the spec
//!   of a function graph ([`GraphSpec`]), whose functions run as services.
//! - [`sandbox`]: how tenants' code is kept from the server (its own user per tenant,
//!   limits), [`job_files`]: the learners' environment and the job's files on this
//!   machine, [`config`]: the engines' sections of the server's configuration, [`host`]:
//!   the one atomic write, free-port helper and back-off.
//!
//! Architecture invariant: depends on no engine and not on the server; the server and
//! every engine (`pharos-local`, `pharos-ray`, `pharos-kube`) depend on this crate, and
//! only the binary knows them all.

pub mod config;
pub mod graph;
pub mod host;
pub mod job_files;
pub mod sandbox;
pub mod service;
pub mod training;
pub mod yaml;

pub use graph::GraphSpec;
pub use service::{Phase, ServiceEngine, ServiceSpec};
pub use training::{Backend, BackendError, JobPaths, JobRun, LearnerStatus};
