//! fleetpack's stores and what is written to them: where rules and binaries live (the
//! [`Store`] trait, a local directory or DynamoDB + S3, opened from settings by
//! [`StoreOptions`]), the bytes of a package ([`archive`], [`splice`]), publishing
//! ([`publish`], with the [`demo`] fleet) and which stored rules a store can serve
//! ([`rule_set`]).
//!
//! Shared by the origin, which reads, and `fleetpack-seed`, which writes. Invariant: a
//! rule is written only after its binary and segment are stored, so no reader ever
//! sees a rule whose bytes are missing.

pub mod archive;
mod aws;
pub mod binary;
pub mod demo;
mod digest;
mod local;
mod logging;
mod object;
mod open;
pub mod publish;
pub mod releases;
pub mod signing;
pub mod splice;

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;

use fleetpack_resolver::{ObjectLocation, Rejected, Rule, RuleError, RuleSet, StoredRules};

pub use aws::{AwsStore, Created, ItemError, StoreTimeouts};
pub use digest::ObjectDigests;
pub use local::LocalStore;
pub use logging::init_logging;
pub use object::{Blocks, StoreObject};
pub use open::{AnyStore, Initialized, StoreChoice, StoreConfigError, StoreKind, StoreOptions};

/// Called with the bytes uploaded so far while a binary is stored.
pub type Progress = dyn Fn(u64) + Send + Sync;

/// The cause of a failed call to a cloud service, as the service's SDK reported it.
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// A failed store operation. Messages name the object or file involved; they are for
/// operators and logs, never sent to devices.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object `{key}` is not in the store")]
    MissingObject { key: String },
    #[error("{action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rules file `{}` is not valid JSON of rules", path.display())]
    BadRulesFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{action}")]
    Service {
        action: String,
        #[source]
        source: ServiceError,
    },
    #[error("object `{key}` is {actual} bytes long, too short for {wanted} bytes")]
    ShortObject {
        key: String,
        wanted: u64,
        actual: u64,
    },
    #[error(
        "the current release of app `{app}` on `{channel}` changed while this command ran; run it again"
    )]
    Conflict { app: String, channel: String },
    #[error(
        "the history of app `{app}` on `{channel}` already holds version `{version}` with other bytes; a version names one binary forever"
    )]
    OtherBytes {
        app: String,
        channel: String,
        version: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}

/// An opaque token that changes whenever the stored rules change.
pub type RulesStamp = String;

/// Rules and binaries, read by the origin and written by `seed`.
pub trait Store: Send + Sync + 'static {
    /// One line naming the store, for logs and `/readyz`.
    fn describe(&self) -> String;

    /// Every stored rule, current and history, including disabled and invalid ones.
    fn load_rules(&self) -> impl Future<Output = Result<StoredRules, StoreError>> + Send;

    /// A token that changes when the rules change, or `None` when the store cannot tell
    /// cheaply (then the origin reloads on every refresh).
    fn rules_stamp(&self) -> impl Future<Output = Result<Option<RulesStamp>, StoreError>> + Send;

    /// Whether this store can serve `object` (the AWS store serves one bucket). Rules
    /// naming other objects are left out of the snapshot.
    fn holds(&self, object: &ObjectLocation) -> bool {
        let _ = object;
        true
    }

    /// Opens a binary for streaming.
    fn open_object(
        &self,
        object: &ObjectLocation,
    ) -> impl Future<Output = Result<StoreObject, StoreError>> + Send;

    /// Opens `len` bytes of a stored object from `offset` on, for Range requests and
    /// spliced packages. Fails when the object is shorter.
    fn open_object_range(
        &self,
        object: &ObjectLocation,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<StoreObject, StoreError>> + Send;

    /// Where this store keeps the object with `key`.
    fn location(&self, key: &str) -> ObjectLocation;

    /// The MD5 of a stored object, or `None` when there is no such object.
    fn object_md5(
        &self,
        object: &ObjectLocation,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Stores the file at `source` as `object`, replacing nothing: the caller has checked
    /// that the object is absent.
    fn put_object(
        &self,
        object: &ObjectLocation,
        source: PathBuf,
        digests: &ObjectDigests,
        progress: &Progress,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `rule` as the current release of its app and channel (names ignore letter
    /// case), if the current one is still `expected` (`None`: there is none); else
    /// fails with [`StoreError::Conflict`] and writes nothing.
    fn put_rule(
        &self,
        rule: Rule,
        expected: Option<&Rule>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The objects among `objects` that the store does not hold (yet).
    fn missing_objects(
        &self,
        objects: Vec<ObjectLocation>,
    ) -> impl Future<Output = Result<HashSet<ObjectLocation>, StoreError>> + Send;

    /// Adds `release` to the history of its app and channel, or replaces the entry of
    /// the same version when it has the same bytes (a change of flags); an entry with
    /// other bytes fails with [`StoreError::OtherBytes`].
    fn put_release(&self, release: Rule) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The stored rules that `store` can serve, indexed, and the others with the reason: the
/// one place where the origin's snapshot and `fleetpack-seed list` and `resolve` get
/// them from, so that they never disagree on what is served. A rule whose binary is not
/// in the store (yet) is left out: a publish stores the binary first, so such a rule is
/// an edit by hand or a store read halfway through one.
pub async fn rule_set<S: Store>(
    store: &S,
    stored: StoredRules,
) -> Result<(RuleSet, Vec<Rejected>), StoreError> {
    let objects: HashSet<ObjectLocation> = stored
        .all()
        .filter_map(|rule| ObjectLocation::parse(&rule.url).ok())
        .filter(|object| store.holds(object))
        .collect();
    let missing = store.missing_objects(objects.into_iter().collect()).await?;
    let is_missing = |rule: &Rule| {
        ObjectLocation::parse(&rule.url).is_ok_and(|object| missing.contains(&object))
    };
    let (current, current_missing): (Vec<Rule>, Vec<Rule>) = stored
        .current
        .into_iter()
        .partition(|rule| !is_missing(rule));
    let (history, history_missing): (Vec<Rule>, Vec<Rule>) = stored
        .history
        .into_iter()
        .partition(|rule| !is_missing(rule));
    let (rules, mut rejected) =
        RuleSet::build_holding(StoredRules { current, history }, |object| {
            store.holds(object)
        });
    rejected.extend(
        current_missing
            .into_iter()
            .chain(history_missing)
            .map(|rule| Rejected {
                reason: RuleError::MissingObject {
                    url: rule.url.clone(),
                },
                rule,
            }),
    );
    Ok((rules, rejected))
}
