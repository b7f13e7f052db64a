//! CloudFront invalidations (`--distribution-id`): after a command changed what devices
//! get, one invalidation of `/package*` tells the CDN to drop the packages it keeps, so
//! devices get the change within minutes instead of when the cached copies expire.
//!
//! Region, credentials and endpoint come from the standard AWS configuration, as for
//! the store (`AWS_ENDPOINT_URL`, or `AWS_ENDPOINT_URL_CLOUDFRONT` for CloudFront alone,
//! points it at an emulator); every call is bounded by the store's timeouts.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_cloudfront::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use fleetpack_store::StoreTimeouts;

/// The one path every invalidation names: every package answer (`/package?...`, with
/// any query). CloudFront bills a wildcard path as one path. Binaries are not in it:
/// they are immutable.
pub const PACKAGE_PATHS: &str = "/package*";

/// Why no invalidation was made.
#[derive(Debug, thiserror::Error)]
pub enum InvalidationError {
    #[error(
        "distribution id `{0}` is not valid: a CloudFront distribution id is 1 to 128 letters and digits, such as E2QWRUHAPOMQZL (the stack's DistributionId output)"
    )]
    BadId(String),
    #[error(
        "--store-connect-timeout and --store-timeout must be longer than zero: they bound the CloudFront call too"
    )]
    ZeroTimeout,
    #[error(
        "cannot create the CloudFront invalidation of `{PACKAGE_PATHS}` on distribution `{distribution_id}`: {detail}. Check the id (the stack's DistributionId output) and that your credentials allow cloudfront:CreateInvalidation, then run `fleetpack-seed --distribution-id {distribution_id} invalidate` or `aws cloudfront create-invalidation --distribution-id {distribution_id} --paths '{PACKAGE_PATHS}'`"
    )]
    Failed {
        distribution_id: String,
        /// The service's error code and message, or the chain of causes (connection
        /// refused, timeout, ...).
        detail: String,
    },
}

/// The CloudFront distribution in front of the origin.
#[derive(Debug, Clone)]
pub struct Distribution {
    client: aws_sdk_cloudfront::Client,
    id: String,
}

impl Distribution {
    /// Checks `id` and builds the client (which connects on first use).
    pub async fn connect(id: &str, timeouts: StoreTimeouts) -> Result<Self, InvalidationError> {
        let id_ok = (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok {
            return Err(InvalidationError::BadId(id.to_owned()));
        }
        if timeouts.connect.is_zero() || timeouts.call.is_zero() {
            return Err(InvalidationError::ZeroTimeout);
        }
        // CloudFront is global: its API lives in us-east-1 whatever region is set.
        let region = RegionProviderChain::default_provider().or_else("us-east-1");
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts.sdk_config())
            .load()
            .await;
        Ok(Distribution {
            client: aws_sdk_cloudfront::Client::new(&config),
            id: id.to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Creates one invalidation of [`PACKAGE_PATHS`]; returns its id.
    pub async fn invalidate_packages(&self) -> Result<String, InvalidationError> {
        let failed = |detail: String| InvalidationError::Failed {
            distribution_id: self.id.clone(),
            detail,
        };
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Unique per call: CloudFront takes a repeated reference for the same request.
        let reference = format!(
            "fleetpack-seed-{}-{}",
            since_epoch.as_nanos(),
            std::process::id()
        );
        let batch = Paths::builder()
            .quantity(1)
            .items(PACKAGE_PATHS)
            .build()
            .and_then(|paths| {
                InvalidationBatch::builder()
                    .paths(paths)
                    .caller_reference(reference)
                    .build()
            })
            .map_err(|error| failed(error.to_string()))?;
        let created = self
            .client
            .create_invalidation()
            .distribution_id(&self.id)
            .invalidation_batch(batch)
            .send()
            .await
            .map_err(|error| failed(describe(&error)))?;
        Ok(created
            .invalidation()
            .map(|invalidation| invalidation.id().to_owned())
            .unwrap_or_default())
    }
}

/// The service's error code and message when it answered, else the chain of causes
/// (`dispatch failure: io error: ...: Connection refused`).
fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let text = match error.as_service_error() {
        Some(answer) if answer.code().is_some() => format!(
            "{}: {}",
            answer.code().unwrap_or_default(),
            answer.message().unwrap_or("no message")
        ),
        _ => {
            let mut causes: Vec<String> = Vec::new();
            let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
            while let Some(cause) = next {
                let text = cause.to_string();
                if causes.last() != Some(&text) {
                    causes.push(text);
                }
                next = cause.source();
            }
            causes.join(": ")
        }
    };
    text.trim_end_matches('.').to_owned()
}
