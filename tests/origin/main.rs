//! The origin over real HTTP: the device API README.md documents, against the demo fleet, with
//! packages read by GNU tar and Python's tarfile, and the built `fleetpack-origin` and
//! `fleetpack-seed` binaries (run `cargo build --workspace --bins` first).

mod aws;
mod binaries;
mod cdn;
#[path = "../cdn/nginx.rs"]
mod cdn_nginx;
#[path = "../cdn/tap.rs"]
mod cdn_tap;
#[path = "../cdn/varnish.rs"]
mod cdn_varnish;
mod conditional;
mod decode;
mod determinism;
mod errors;
mod harness;
mod health;
mod integrity;
mod methods;
mod releases;
mod sample;
mod seed_cli;
mod segments;
mod server;
mod signing;
mod spliced;
