//! Log output of both binaries: to stderr, filtered by `FLEETPACK_LOG` (tracing's
//! `EnvFilter` syntax, e.g. `info` or `fleetpack_store=debug`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the process's log subscriber; `default` is the filter when `FLEETPACK_LOG`
/// is unset or unreadable.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLEETPACK_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
