//! The fleetpack origin: an HTTP server (hyper 1 + tokio) that answers devices'
//! `GET /package` with a streamed gzip tar, metadata-only JSON or 304, and
//! `GET /binaries/<sha256>` with one binary (`binaries`).
//!
//! [`run`] serves a store on a listener until shutdown. Each request takes one path
//! (`service`): parse and resolve it against the current rules snapshot (`snapshot`),
//! or reuse the answer computed for the same request (`answers`), then send it from
//! memory or stream the package from the store (`body`).
//!
//! Invariants: no request reads rules from the store; no whole object or package is
//! held in memory on the request path; a package that fails after its status line is
//! aborted, never ended as if complete.

mod answers;
mod app;
mod binaries;
mod body;
pub mod config;
mod metrics;
mod range;
mod server;
mod service;
mod snapshot;

pub use config::{ConfigError, OriginSecret, ServeConfig};
pub use server::{run, shutdown_signal};
