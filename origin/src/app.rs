//! What every request shares (the store, the rules, the counters, the settings) and why
//! a request can fail; `service::error_response` turns each failure into a status.

use fleetpack_resolver::{BadRequest, NoPackage};
use fleetpack_store::StoreError;
use http::header::InvalidHeaderValue;

use crate::answers::AnswerError;
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::snapshot::Rules;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App<S> {
    pub store: S,
    pub rules: Rules,
    pub metrics: Metrics,
    pub config: ServeConfig,
}

/// Why a request failed; `service::error_response` maps each kind to its status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    #[error(transparent)]
    NoPackage(#[from] NoPackage),
    #[error("no such resource; devices call GET /package?cpuArch=<arch>")]
    UnknownPath,
    #[error(
        "`{name}` does not name a binary: use /binaries/<sha256>, 64 lowercase hex digits, as `downloadUrl` gives it"
    )]
    BadBinaryName { name: String },
    #[error(
        "no release in the current rules has this binary; take `downloadUrl` from a metadata answer (payloadType=metadataOnly)"
    )]
    NoBinary,
    #[error(
        "an HTTP/1.1 request carries exactly one Host header (RFC 9112, section 3.2); this one has {0}"
    )]
    BadHost(usize),
    #[error(
        "this origin answers only requests that come through its CDN (they carry the X-Origin-Verify header); call the CDN's address"
    )]
    NotThroughCdn,
    #[error("method not allowed; use GET or HEAD")]
    MethodNotAllowed,
    #[error("the release rules are not loaded yet; retry shortly")]
    NotReady,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the range starts past the end of the {len}-byte body; ask for bytes below {len}")]
    RangeNotSatisfiable { len: u64 },
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("a response header cannot hold the value made for it")]
    Header(#[from] InvalidHeaderValue),
    #[error("object `{key}` is {actual} bytes long, but its rule says {expected}")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
}
