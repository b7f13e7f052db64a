//! Choosing and opening a store from settings, in two stages: [`StoreOptions`] holds
//! the raw flags and environment variables and is checked without I/O into a
//! [`StoreChoice`], which [`StoreChoice::open`] turns into an [`AnyStore`]. Both
//! binaries take their store this way, so the dispatch over store kinds is written once.

use std::collections::HashSet;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use fleetpack_resolver::{ObjectLocation, Rule, StoredRules};

use crate::aws::{AwsStore, Created, StoreTimeouts};
use crate::local::LocalStore;
use crate::{ObjectDigests, Progress, RulesStamp, Store, StoreError, StoreObject};

/// Which store holds the rules and binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// A local directory (`--data-dir`): no cloud account needed.
    Local,
    /// A DynamoDB table (`--table`) and an S3 bucket (`--bucket`), reached through the
    /// standard AWS configuration (AWS_REGION, AWS_ENDPOINT_URL, profiles, roles).
    Aws,
}

/// Where the rules and binaries are; shared by `fleetpack-origin` and `fleetpack-seed`.
#[derive(Debug, Clone, Args)]
pub struct StoreOptions {
    /// Store that holds the rules and binaries.
    #[arg(long, env = "FLEETPACK_STORE", value_enum, default_value_t = StoreKind::Local)]
    pub store: StoreKind,

    /// Directory of the local store (created when missing).
    #[arg(long, env = "FLEETPACK_DATA_DIR", default_value = "fleetpack-data")]
    pub data_dir: PathBuf,

    /// DynamoDB table of the rules (AWS store).
    #[arg(long, env = "FLEETPACK_TABLE")]
    pub table: Option<String>,

    /// S3 bucket of the binaries (AWS store).
    #[arg(long, env = "FLEETPACK_BUCKET")]
    pub bucket: Option<String>,

    /// Longest wait for a connection to S3 or DynamoDB (AWS store).
    #[arg(long, env = "FLEETPACK_STORE_CONNECT_TIMEOUT", default_value = "3s")]
    pub store_connect_timeout: humantime::Duration,

    /// Longest wait for one S3 or DynamoDB call to answer, retries included (AWS store);
    /// a package whose store does not answer in time gets 503. Uploads are bounded by
    /// the connect timeout only.
    #[arg(long, env = "FLEETPACK_STORE_TIMEOUT", default_value = "10s")]
    pub store_timeout: humantime::Duration,
}

/// A store setting that cannot work, found before anything is opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    #[error("--store aws needs --table (or FLEETPACK_TABLE): the DynamoDB table of the rules")]
    MissingTable,
    #[error("--store aws needs --bucket (or FLEETPACK_BUCKET): the S3 bucket of the binaries")]
    MissingBucket,
    #[error(
        "table name `{0}` is not valid: use 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.'"
    )]
    BadTable(String),
    #[error("bucket name `{0}` is not valid: use 3 to 63 characters of a-z, 0-9, '.' and '-'")]
    BadBucket(String),
    #[error("--store-connect-timeout and --store-timeout must be longer than zero")]
    ZeroTimeout,
}

/// A checked store choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Local {
        data_dir: PathBuf,
    },
    Aws {
        table: String,
        bucket: String,
        timeouts: StoreTimeouts,
    },
}

impl StoreOptions {
    /// Checks that the chosen store has what it needs.
    pub fn check(&self) -> Result<StoreChoice, StoreConfigError> {
        match self.store {
            StoreKind::Local => Ok(StoreChoice::Local {
                data_dir: self.data_dir.clone(),
            }),
            StoreKind::Aws => {
                let table = self.table.clone().ok_or(StoreConfigError::MissingTable)?;
                let bucket = self.bucket.clone().ok_or(StoreConfigError::MissingBucket)?;
                let table_ok = (3..=255).contains(&table.len())
                    && table
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !table_ok {
                    return Err(StoreConfigError::BadTable(table));
                }
                if !fleetpack_resolver::is_bucket_name(&bucket) {
                    return Err(StoreConfigError::BadBucket(bucket));
                }
                let timeouts = StoreTimeouts {
                    connect: *self.store_connect_timeout,
                    call: *self.store_timeout,
                };
                if timeouts.connect.is_zero() || timeouts.call.is_zero() {
                    return Err(StoreConfigError::ZeroTimeout);
                }
                Ok(StoreChoice::Aws {
                    table,
                    bucket,
                    timeouts,
                })
            }
        }
    }
}

impl StoreChoice {
    /// Opens the chosen store: creates the local directory layout, or builds the AWS
    /// clients (which connect on first use).
    pub async fn open(self) -> Result<AnyStore, StoreError> {
        Ok(match self {
            StoreChoice::Local { data_dir } => AnyStore::Local(LocalStore::open(data_dir)?),
            StoreChoice::Aws {
                table,
                bucket,
                timeouts,
            } => AnyStore::Aws(AwsStore::connect(&table, &bucket, timeouts).await),
        })
    }
}

/// A store of either kind, as the settings chose it.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Local(LocalStore),
    Aws(AwsStore),
}

/// What [`AnyStore::init`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initialized {
    /// The directory layout is in place.
    Local {
        root: PathBuf,
    },
    Aws {
        table: Created,
        bucket: Created,
    },
}

impl AnyStore {
    /// Makes the store usable: on AWS, creates the table (the AWS sample's key schema)
    /// and the bucket when they are missing; never changes existing ones.
    pub async fn init(&self) -> Result<Initialized, StoreError> {
        match self {
            AnyStore::Local(store) => Ok(Initialized::Local {
                root: store.root().to_owned(),
            }),
            AnyStore::Aws(store) => {
                let (table, bucket) = store.init().await?;
                Ok(Initialized::Aws { table, bucket })
            }
        }
    }
}

impl From<LocalStore> for AnyStore {
    fn from(store: LocalStore) -> Self {
        AnyStore::Local(store)
    }
}

impl From<AwsStore> for AnyStore {
    fn from(store: AwsStore) -> Self {
        AnyStore::Aws(store)
    }
}

/// Calls the same method on whichever store this is.
macro_rules! on_either {
    ($any:expr, $store:ident => $call:expr) => {
        match $any {
            AnyStore::Local($store) => $call,
            AnyStore::Aws($store) => $call,
        }
    };
}

impl Store for AnyStore {
    fn describe(&self) -> String {
        on_either!(self, store => store.describe())
    }

    async fn load_rules(&self) -> Result<StoredRules, StoreError> {
        on_either!(self, store => store.load_rules().await)
    }

    async fn rules_stamp(&self) -> Result<Option<RulesStamp>, StoreError> {
        on_either!(self, store => store.rules_stamp().await)
    }

    fn holds(&self, object: &ObjectLocation) -> bool {
        on_either!(self, store => store.holds(object))
    }

    async fn open_object(&self, object: &ObjectLocation) -> Result<StoreObject, StoreError> {
        on_either!(self, store => store.open_object(object).await)
    }

    async fn open_object_range(
        &self,
        object: &ObjectLocation,
        offset: u64,
        len: u64,
    ) -> Result<StoreObject, StoreError> {
        on_either!(self, store => store.open_object_range(object, offset, len).await)
    }

    fn location(&self, key: &str) -> ObjectLocation {
        on_either!(self, store => store.location(key))
    }

    async fn object_md5(&self, object: &ObjectLocation) -> Result<Option<String>, StoreError> {
        on_either!(self, store => store.object_md5(object).await)
    }

    async fn put_object(
        &self,
        object: &ObjectLocation,
        source: PathBuf,
        digests: &ObjectDigests,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        on_either!(self, store => store.put_object(object, source, digests, progress).await)
    }

    async fn put_rule(&self, rule: Rule, expected: Option<&Rule>) -> Result<(), StoreError> {
        on_either!(self, store => store.put_rule(rule, expected).await)
    }

    async fn put_release(&self, release: Rule) -> Result<(), StoreError> {
        on_either!(self, store => store.put_release(release).await)
    }

    async fn missing_objects(
        &self,
        objects: Vec<ObjectLocation>,
    ) -> Result<HashSet<ObjectLocation>, StoreError> {
        on_either!(self, store => store.missing_objects(objects).await)
    }
}
