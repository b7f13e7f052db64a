//! The fleetpack origin: an HTTP server (hyper 1 + tokio) that answers devices'
//! `GET /package` with a streamed gzip tar, metadata-only JSON or 304.
//!
//! The request path is [`service`]: parse the query, resolve it against the current
//! [`snapshot`] of the rules, plan the package (or reuse the plan from [`answers`]),
//! and stream it from the [`store`] through [`archive`]. `seed` reuses [`store`], [`publish`] and [`demo`].
//!
//! Invariants: no request reads rules from the store; no whole object or package is
//! held in memory on the request path; a package that fails after its status line is
//! aborted, never ended as if complete.

pub mod answers;
pub mod archive;
pub mod body;
pub mod config;
pub mod demo;
pub mod digest;
pub mod metrics;
pub mod publish;
pub mod range;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod store;
