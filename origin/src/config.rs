//! Settings, in two stages: [`Options`] holds the raw flags and environment variables
//! (checked without I/O by [`Options::check`]); `main` then turns the result into
//! a store and a listener.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser};
use fleetpack_store::{StoreChoice, StoreConfigError, StoreKind, StoreOptions};
use http::HeaderValue;

/// fleetpack origin: assembles update packages for IoT devices behind a CDN.
///
/// Devices call `GET /package?cpuArch=<arch>&os=<channel>&attr<Name>=<channel>...`
/// and get a gzip tar of the binaries they lack, metadata-only JSON, or 304.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetpack-origin", version, max_term_width = 100)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, env = "FLEETPACK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub store: StoreOptions,

    /// Fill an empty store with the demo fleet (the AWS sample's nine rules) and
    /// print example requests.
    #[arg(long, env = "FLEETPACK_DEMO")]
    pub demo: bool,

    /// Size in bytes of each demo binary.
    #[arg(long, env = "FLEETPACK_DEMO_SIZE", default_value_t = 1024 * 1024)]
    pub demo_size: u64,

    #[command(flatten)]
    pub serve: ServeOptions,
}

/// Settings of the HTTP server itself.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// max-age of 200 and 304 responses (how long a device or browser may reuse them).
    #[arg(long, env = "FLEETPACK_MAX_AGE", default_value = "100s")]
    pub max_age: humantime::Duration,

    /// s-maxage of 200 and 304 responses (how long the CDN may reuse them).
    #[arg(long, env = "FLEETPACK_S_MAXAGE", default_value = "100s")]
    pub s_maxage: humantime::Duration,

    /// stale-while-revalidate of 200 and 304 responses.
    #[arg(long, env = "FLEETPACK_STALE_WHILE_REVALIDATE", default_value = "60s")]
    pub stale_while_revalidate: humantime::Duration,

    /// stale-if-error of 200 and 304 responses: how long a cache may serve a stored
    /// package while the origin fails.
    #[arg(long, env = "FLEETPACK_STALE_IF_ERROR", default_value = "1day")]
    pub stale_if_error: humantime::Duration,

    /// max-age of 4xx responses (kept short: a fixed rule table fixes them).
    #[arg(long, env = "FLEETPACK_ERROR_MAX_AGE", default_value = "10s")]
    pub error_max_age: humantime::Duration,

    /// Retry-After of 503 responses (rules not loaded, store unavailable).
    #[arg(long, env = "FLEETPACK_RETRY_AFTER", default_value = "5s")]
    pub retry_after: humantime::Duration,

    /// Most connections served at once; further clients wait in the listen backlog.
    #[arg(long, env = "FLEETPACK_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Time a client has to send its request headers.
    #[arg(long, env = "FLEETPACK_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: humantime::Duration,

    /// On SIGTERM or SIGINT, how long running downloads may go on before they are cut.
    #[arg(long, env = "FLEETPACK_SHUTDOWN_GRACE", default_value = "30s")]
    pub shutdown_grace: humantime::Duration,

    /// Shared secret the CDN sends in `X-Origin-Verify`; when set, every request without
    /// it gets 403, except /healthz and /readyz (for the load balancer).
    #[arg(long, env = "FLEETPACK_ORIGIN_SECRET", hide_env_values = true)]
    pub origin_secret: Option<String>,

    /// Memory for reusing answers (plans and metadata of packages) between requests
    /// while the rules stay the same, in bytes; 0 turns reuse off.
    #[arg(long, env = "FLEETPACK_ANSWER_CACHE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub answer_cache_bytes: u64,

    /// How often the store is checked for changed rules [default: 1s on the local store,
    /// 30s on the AWS store, where each check scans the table].
    #[arg(long, env = "FLEETPACK_RULES_REFRESH")]
    pub rules_refresh: Option<humantime::Duration>,

    /// How old the rules served may grow (the time since a refresh last read the store)
    /// before /readyz answers 503, so that a load balancer drains an origin that lost
    /// its store. Requests are still answered from the last good rules.
    #[arg(long, env = "FLEETPACK_MAX_RULES_AGE", default_value = "5min")]
    pub max_rules_age: humantime::Duration,
}

/// A setting that cannot work, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--max-connections must be at least 1")]
    NoConnections,
    #[error("--rules-refresh must be at least 100ms, not {0}")]
    RefreshTooOften(humantime::Duration),
    #[error(
        "--max-rules-age ({age}) must be longer than --rules-refresh ({refresh}), or every origin would turn unready between two refreshes"
    )]
    RulesAgeBelowRefresh {
        age: humantime::Duration,
        refresh: humantime::Duration,
    },
    #[error("--demo-size must be at most 1 GiB (1073741824 bytes), not {0}")]
    DemoTooLarge(u64),
    #[error(transparent)]
    Store(#[from] StoreConfigError),
    #[error(
        "--origin-secret must be {MIN_SECRET_LEN} to 1024 characters of visible ASCII (no spaces), so it can travel in a header and resists guessing"
    )]
    BadOriginSecret,
}

/// Shortest origin secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// The shared secret that proves a request came through the CDN.
#[derive(Clone)]
pub struct OriginSecret(Vec<u8>);

impl OriginSecret {
    pub fn new(secret: &str) -> Result<Self, ConfigError> {
        if (MIN_SECRET_LEN..=1024).contains(&secret.len())
            && secret.bytes().all(|b| b.is_ascii_graphic())
        {
            Ok(OriginSecret(secret.as_bytes().to_vec()))
        } else {
            Err(ConfigError::BadOriginSecret)
        }
    }

    /// Whether `sent` is the secret. Takes the same time wherever the first differing
    /// byte is, so response times do not reveal a prefix of the secret.
    pub fn verifies(&self, sent: &[u8]) -> bool {
        sent.len() == self.0.len()
            && sent
                .iter()
                .zip(&self.0)
                .fold(0u8, |differences, (a, b)| differences | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for OriginSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("OriginSecret(..)")
    }
}

/// Cache-Control values per kind of response, rendered once.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// 200 and 304.
    pub success: HeaderValue,
    /// 4xx.
    pub client_error: HeaderValue,
    /// Seconds for `Retry-After` on 503.
    pub retry_after: HeaderValue,
}

/// The validated settings of the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub cache: CachePolicy,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub rules_refresh: Duration,
    pub max_rules_age: Duration,
    pub origin_secret: Option<OriginSecret>,
    pub answer_cache_bytes: u64,
}

impl Options {
    /// Checks every setting and the rules between them.
    pub fn check(&self) -> Result<(StoreChoice, ServeConfig), ConfigError> {
        if self.demo_size > 1 << 30 {
            return Err(ConfigError::DemoTooLarge(self.demo_size));
        }
        let store = self.store.check()?;
        Ok((store, self.serve.to_config(self.store.store)?))
    }
}

impl ServeOptions {
    pub fn to_config(&self, store: StoreKind) -> Result<ServeConfig, ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        let rules_refresh = self.rules_refresh.map_or(
            match store {
                StoreKind::Local => Duration::from_secs(1),
                StoreKind::Aws => Duration::from_secs(30),
            },
            Into::into,
        );
        if rules_refresh < Duration::from_millis(100) {
            return Err(ConfigError::RefreshTooOften(rules_refresh.into()));
        }
        let max_rules_age = *self.max_rules_age;
        if max_rules_age <= rules_refresh {
            return Err(ConfigError::RulesAgeBelowRefresh {
                age: self.max_rules_age,
                refresh: rules_refresh.into(),
            });
        }
        let origin_secret = self
            .origin_secret
            .as_deref()
            .map(OriginSecret::new)
            .transpose()?;
        let seconds = |duration: humantime::Duration| duration.as_secs();
        let success = format!(
            "public, max-age={}, s-maxage={}, stale-while-revalidate={}, stale-if-error={}",
            seconds(self.max_age),
            seconds(self.s_maxage),
            seconds(self.stale_while_revalidate),
            seconds(self.stale_if_error),
        );
        let client_error = format!("public, max-age={}", seconds(self.error_max_age));
        Ok(ServeConfig {
            cache: CachePolicy {
                success: HeaderValue::try_from(success).expect("digits and ASCII text"),
                client_error: HeaderValue::try_from(client_error).expect("digits and ASCII text"),
                retry_after: HeaderValue::from(seconds(self.retry_after).max(1)),
            },
            max_connections: self.max_connections,
            header_read_timeout: *self.header_read_timeout,
            shutdown_grace: *self.shutdown_grace,
            rules_refresh,
            max_rules_age,
            origin_secret,
            answer_cache_bytes: self.answer_cache_bytes,
        })
    }
}

impl ServeConfig {
    /// The command line's defaults for `store`, whatever the environment holds: what
    /// tests and embedding programs start from.
    pub fn defaults(store: StoreKind) -> Self {
        let matches = defaults_command().get_matches_from(["defaults"]);
        ServeOptions::from_arg_matches(&matches)
            .expect("the defaults parse")
            .to_config(store)
            .expect("the default settings are valid")
    }
}

impl Default for ServeConfig {
    /// [`ServeConfig::defaults`] of the local store.
    fn default() -> Self {
        ServeConfig::defaults(StoreKind::Local)
    }
}

/// The server's settings with their defaults, and with no environment variable read.
fn defaults_command() -> clap::Command {
    ServeOptions::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_read_no_environment_variable() {
        let command = defaults_command();
        let with_env: Vec<_> = command
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(with_env.is_empty(), "{with_env:?}");
        // The variables exist on the command line's own settings.
        let options = ServeOptions::augment_args(clap::Command::new("origin"));
        assert!(options.get_arguments().all(|arg| arg.get_env().is_some()));
    }

    #[test]
    fn default_settings_are_the_documented_ones() {
        let config = ServeConfig::default();
        assert_eq!(
            config.cache.success,
            "public, max-age=100, s-maxage=100, stale-while-revalidate=60, stale-if-error=86400"
        );
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.rules_refresh, Duration::from_secs(1));
        assert_eq!(
            ServeConfig::defaults(StoreKind::Aws).rules_refresh,
            Duration::from_secs(30)
        );
        assert!(config.origin_secret.is_none());
    }
}
