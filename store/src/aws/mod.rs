//! The production store: rules in a DynamoDB table laid out like the AWS sample's
//! (partition key `app`, sort key `env`), binaries in one S3 bucket.
//!
//! Region, credentials and endpoint come from the standard AWS chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, profiles, task and instance roles), so tests point it at a local
//! S3/DynamoDB-compatible server without a code path of their own.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use fleetpack_resolver::{ObjectLocation, Rule, StoredRules};
use tokio::io::AsyncReadExt;

mod item;

pub use item::ItemError;
use item::{ItemKind, item_from_rule, rule_from_item};

use crate::{ObjectDigests, Progress, RulesStamp, Store, StoreError, StoreObject};

/// Files larger than this are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
const PART_SIZE: u64 = 16 * 1024 * 1024;
const TABLE_CREATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
/// User metadata on objects this store uploads.
const MD5_METADATA: &str = "md5";
const SHA256_METADATA: &str = "sha256";

/// DynamoDB table + S3 bucket.
#[derive(Debug, Clone)]
pub struct AwsStore {
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    table: String,
    bucket: String,
    timeouts: StoreTimeouts,
}

/// What [`AwsStore::init`] found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyThere,
}

/// A failed SDK call as a store error that keeps the SDK's error as its source: the
/// service's error code and message when it answered, else the chain of causes
/// (connection refused, timeout, ...).
fn service<E, R>(action: String) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |error| StoreError::Service {
        action,
        source: Box::new(error),
    }
}

/// Passes an error that says the resource is missing; any other fails `action`.
fn only_missing<E, R>(
    error: SdkError<E, R>,
    is_missing: impl FnOnce(&E) -> bool,
    action: String,
) -> Result<(), StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error.as_service_error() {
        Some(answer) if is_missing(answer) => Ok(()),
        _ => Err(service(action)(error)),
    }
}

/// The outcome of a create call; a resource someone else created meanwhile is there too.
fn created_unless_taken<T, E, R>(
    result: Result<T, SdkError<E, R>>,
    is_taken: impl FnOnce(&E) -> bool,
    action: String,
) -> Result<Created, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(Created::Created),
        Err(error) if error.as_service_error().is_some_and(is_taken) => Ok(Created::AlreadyThere),
        Err(error) => Err(service(action)(error)),
    }
}

/// How long S3 and DynamoDB calls may take before they fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTimeouts {
    /// To open a connection.
    pub connect: Duration,
    /// For one call to answer, its retries included. Uploads, whose time grows with
    /// their size, are bounded by `connect` alone.
    pub call: Duration,
}

impl StoreTimeouts {
    /// The AWS SDK's timeouts for calls bounded by these: a connection within
    /// `connect`, a whole call (its retries included) within `call`.
    pub fn sdk_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_timeout(self.call)
            .build()
    }
}

impl Default for StoreTimeouts {
    fn default() -> Self {
        StoreTimeouts {
            connect: Duration::from_secs(3),
            call: Duration::from_secs(10),
        }
    }
}

impl AwsStore {
    /// Builds the clients from the standard AWS configuration chain.
    pub async fn connect(table: &str, bucket: &str, timeouts: StoreTimeouts) -> Self {
        Self::connect_with(
            table,
            bucket,
            timeouts,
            aws_config::defaults(BehaviorVersion::latest()),
        )
        .await
    }

    /// Like [`AwsStore::connect`], from `loader` (for instance with another endpoint).
    pub async fn connect_with(
        table: &str,
        bucket: &str,
        timeouts: StoreTimeouts,
        loader: aws_config::ConfigLoader,
    ) -> Self {
        // A store that accepts connections but never answers must fail requests within
        // the bound, not hold them (and their connection slots) for minutes.
        let config = loader.timeout_config(timeouts.sdk_config()).load().await;
        // S3-compatible servers on a custom endpoint rarely resolve bucket subdomains.
        let path_style = config.endpoint_url().is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(path_style)
            .build();
        AwsStore {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            table: table.to_owned(),
            bucket: bucket.to_owned(),
            timeouts,
        }
    }

    /// The timeouts of an upload: a connection within the bound, and all the time the
    /// body needs.
    fn upload_timeouts(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.timeouts.connect)
                .disable_operation_timeout()
                .disable_operation_attempt_timeout()
                .disable_read_timeout()
                .build(),
        )
    }

    /// Creates the table (the sample's key schema, on-demand) and the bucket when they
    /// are missing. Never changes existing ones.
    pub async fn init(&self) -> Result<(Created, Created), StoreError> {
        Ok((self.ensure_table().await?, self.ensure_bucket().await?))
    }

    async fn ensure_table(&self) -> Result<Created, StoreError> {
        match self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => return Ok(Created::AlreadyThere),
            Err(error) => only_missing(
                error,
                |e| e.is_resource_not_found_exception(),
                format!("cannot describe table `{}`", self.table),
            )?,
        }
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .expect("name and key type are set")
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set")
        };
        let created = self
            .dynamodb
            .create_table()
            .table_name(&self.table)
            .key_schema(key("app", KeyType::Hash))
            .key_schema(key("env", KeyType::Range))
            .attribute_definitions(attribute("app"))
            .attribute_definitions(attribute("env"))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        let created = created_unless_taken(
            created,
            |e| e.is_resource_in_use_exception(),
            format!("cannot create table `{}`", self.table),
        )?;
        if created == Created::Created {
            // DynamoDB creates tables asynchronously; writes fail until it is active.
            self.dynamodb
                .wait_until_table_exists()
                .table_name(&self.table)
                .wait(TABLE_CREATION_LIMIT)
                .await
                .map_err(|error| StoreError::Service {
                    action: format!("table `{}` did not become active", self.table),
                    source: Box::new(error),
                })?;
        }
        Ok(created)
    }

    async fn ensure_bucket(&self) -> Result<Created, StoreError> {
        match self.s3.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(Created::AlreadyThere),
            Err(error) => only_missing(
                error,
                |e| e.is_not_found(),
                format!("cannot reach bucket `{}`", self.bucket),
            )?,
        }
        let mut create = self.s3.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses a location constraint.
        if let Some(region) = self
            .s3
            .config()
            .region()
            .map(|region| region.as_ref().to_owned())
            && region != "us-east-1"
        {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(region.as_str().into())
                    .build(),
            );
        }
        created_unless_taken(
            create.send().await,
            |e| e.is_bucket_already_owned_by_you(),
            format!("cannot create bucket `{}`", self.bucket),
        )
    }

    async fn put_small(
        &self,
        object: &ObjectLocation,
        source: &Path,
        digests: &ObjectDigests,
    ) -> Result<(), StoreError> {
        let body = ByteStream::from_path(source)
            .await
            .map_err(|error| StoreError::io("cannot read", source)(std::io::Error::other(error)))?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&object.key)
            .body(body)
            .content_md5(content_md5(&digests.md5))
            .metadata(MD5_METADATA, &digests.md5)
            .metadata(SHA256_METADATA, &digests.sha256)
            .customize()
            .config_override(self.upload_timeouts())
            .send()
            .await
            .map_err(service(format!("cannot upload `{}`", object.url())))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        object: &ObjectLocation,
        source: &Path,
        digests: &ObjectDigests,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let failed = |what: &str| format!("cannot {what} `{}`", object.url());
        let upload = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&object.key)
            .metadata(MD5_METADATA, &digests.md5)
            .metadata(SHA256_METADATA, &digests.sha256)
            .send()
            .await
            .map_err(service(failed("start the upload of")))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let result = self
            .upload_parts(object, source, digests.size, &upload_id, progress)
            .await;
        let parts = match result {
            Ok(parts) => parts,
            Err(error) => {
                // Leave no half upload behind to be billed for.
                let _ = self
                    .s3
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&object.key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(error);
            }
        };
        let completed = self
            .s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&object.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            // Some S3-compatible servers answer with a document the SDK cannot read (moto
            // names its root CompleteMultipartUploadResponse). The object then tells.
            Err(error) if error.as_service_error().is_some_and(|e| e.code().is_none()) => {
                let head = self
                    .head(object)
                    .await
                    .map_err(service(failed("look up the uploaded")))?;
                let md5 = head
                    .metadata()
                    .and_then(|metadata| metadata.get(MD5_METADATA));
                let size = head
                    .content_length()
                    .and_then(|len| u64::try_from(len).ok());
                if md5 == Some(&digests.md5) && size == Some(digests.size) {
                    tracing::warn!(url = %object.url(), "could not read the answer to CompleteMultipartUpload; the object is complete");
                    Ok(())
                } else {
                    Err(service(failed("complete the upload of"))(error))
                }
            }
            Err(error) => Err(service(failed("complete the upload of"))(error)),
        }
    }

    async fn upload_parts(
        &self,
        object: &ObjectLocation,
        source: &Path,
        size: u64,
        upload_id: &str,
        progress: &Progress,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(StoreError::io("cannot open", source))?;
        let mut parts = Vec::new();
        let mut sent = 0u64;
        let mut buf = Vec::with_capacity(PART_SIZE as usize);
        for number in 1.. {
            if sent == size {
                break;
            }
            buf.clear();
            (&mut file)
                .take(PART_SIZE)
                .read_to_end(&mut buf)
                .await
                .map_err(StoreError::io("cannot read", source))?;
            if buf.is_empty() {
                return Err(StoreError::io("cannot read", source)(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&buf));
            let part = self
                .s3
                .upload_part()
                .bucket(&self.bucket)
                .key(&object.key)
                .upload_id(upload_id)
                .part_number(number)
                .content_md5(content_md5(&md5))
                .body(ByteStream::from(buf.clone()))
                .customize()
                .config_override(self.upload_timeouts())
                .send()
                .await
                .map_err(service(format!(
                    "cannot upload part {number} of `{}`",
                    object.url()
                )))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            sent += buf.len() as u64;
            progress(sent);
        }
        Ok(parts)
    }

    /// HeadObject: an object's length, ETag and metadata.
    async fn head(
        &self,
        object: &ObjectLocation,
    ) -> Result<HeadObjectOutput, SdkError<HeadObjectError>> {
        let request = self.s3.head_object().bucket(&self.bucket).key(&object.key);
        request.send().await
    }

    /// GetObject, whole or a byte range `(offset, len)` of it.
    async fn get(
        &self,
        object: &ObjectLocation,
        range: Option<(u64, u64)>,
    ) -> Result<StoreObject, StoreError> {
        let request = self.s3.get_object().bucket(&self.bucket).key(&object.key);
        let request = match range {
            Some((_, 0)) => {
                return Ok(StoreObject::new(0, tokio::io::empty()));
            }
            Some((offset, len)) => request.range(format!("bytes={offset}-{}", offset + len - 1)),
            None => request,
        };
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(StoreError::MissingObject {
                    key: object.key.clone(),
                });
            }
            Err(error) => return Err(service(format!("cannot get `{}`", object.url()))(error)),
        };
        let len = output
            .content_length()
            .and_then(|len| u64::try_from(len).ok())
            .ok_or_else(|| StoreError::Service {
                action: format!("cannot get `{}`", object.url()),
                source: "the response has no Content-Length".into(),
            })?;
        Ok(StoreObject::new(len, output.body.into_async_read()))
    }
}

/// Sends a conditional PutItem: a failed condition is `refused()`, any other failure
/// fails `action`.
async fn put_unless_refused(
    put: PutItemFluentBuilder,
    action: String,
    refused: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    match put.send().await {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Err(refused())
        }
        Err(error) => Err(service(action)(error)),
    }
}

fn content_md5(hex_md5: &str) -> String {
    let bytes = hex::decode(hex_md5).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Store for AwsStore {
    fn describe(&self) -> String {
        format!(
            "DynamoDB table {} and S3 bucket {}",
            self.table, self.bucket
        )
    }

    async fn load_rules(&self) -> Result<StoredRules, StoreError> {
        let mut items = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .into_paginator()
            .items()
            .send();
        let mut rules = StoredRules::default();
        while let Some(item) = items.next().await {
            let item = item.map_err(service(format!("cannot scan table `{}`", self.table)))?;
            match rule_from_item(&item) {
                Ok((rule, ItemKind::Current)) => rules.current.push(rule),
                Ok((rule, ItemKind::Release)) => rules.history.push(rule),
                Err(reason) => {
                    tracing::warn!(table = %self.table, reason = &reason as &dyn std::error::Error, "item is not a rule; left out")
                }
            }
        }
        Ok(rules)
    }

    async fn rules_stamp(&self) -> Result<Option<RulesStamp>, StoreError> {
        Ok(None)
    }

    fn holds(&self, object: &ObjectLocation) -> bool {
        object.bucket.as_deref() == Some(self.bucket.as_str())
    }

    async fn open_object(&self, object: &ObjectLocation) -> Result<StoreObject, StoreError> {
        self.get(object, None).await
    }

    async fn open_object_range(
        &self,
        object: &ObjectLocation,
        offset: u64,
        len: u64,
    ) -> Result<StoreObject, StoreError> {
        let ranged = self.get(object, Some((offset, len))).await?;
        if ranged.len != len {
            return Err(StoreError::ShortObject {
                key: object.key.clone(),
                wanted: offset.saturating_add(len),
                actual: offset.saturating_add(ranged.len),
            });
        }
        Ok(ranged)
    }

    fn location(&self, key: &str) -> ObjectLocation {
        ObjectLocation {
            bucket: Some(self.bucket.clone()),
            key: key.to_owned(),
        }
    }

    /// MD5 of an object: our own metadata, else a single-part ETag (which is the MD5),
    /// else the bytes themselves.
    async fn object_md5(&self, object: &ObjectLocation) -> Result<Option<String>, StoreError> {
        let head = match self.head(object).await {
            Ok(head) => head,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => {
                return Ok(None);
            }
            Err(error) => return Err(service(format!("cannot look up `{}`", object.url()))(error)),
        };
        if let Some(md5) = head
            .metadata()
            .and_then(|metadata| metadata.get(MD5_METADATA))
        {
            return Ok(Some(md5.clone()));
        }
        let etag = head.e_tag().unwrap_or_default().trim_matches('"');
        if etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Some(etag.to_ascii_lowercase()));
        }
        let mut reader = self.open_object(object).await?.into_reader();
        let mut md5 = <md5::Md5 as md5::Digest>::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let read = reader
                .read(&mut buf)
                .await
                .map_err(|error| StoreError::Service {
                    action: format!("cannot read `{}`", object.url()),
                    source: Box::new(error),
                })?;
            if read == 0 {
                break;
            }
            md5::Digest::update(&mut md5, &buf[..read]);
        }
        Ok(Some(hex::encode(md5::Digest::finalize(md5))))
    }

    async fn put_object(
        &self,
        object: &ObjectLocation,
        source: PathBuf,
        digests: &ObjectDigests,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        if digests.size > MULTIPART_THRESHOLD {
            self.put_multipart(object, &source, digests, progress).await
        } else {
            self.put_small(object, &source, digests).await?;
            progress(digests.size);
            Ok(())
        }
    }

    async fn put_rule(&self, rule: Rule, expected: Option<&Rule>) -> Result<(), StoreError> {
        let put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_from_rule(&rule, ItemKind::Current)));
        // Written only if the current release is still the one the caller read: two
        // operators racing on one app and channel cannot overwrite each other unseen.
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(app)"),
            Some(Rule {
                revision: Some(revision),
                ..
            }) => put
                .condition_expression("#revision = :revision")
                .expression_attribute_names("#revision", "revision")
                .expression_attribute_values(":revision", AttributeValue::N(revision.to_string())),
            // An item written by the AWS sample, or before revisions.
            Some(expected) => put
                .condition_expression(
                    "attribute_not_exists(#revision) AND #version = :version AND md5 = :md5",
                )
                .expression_attribute_names("#revision", "revision")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(
                    ":version",
                    AttributeValue::S(expected.version.clone()),
                )
                .expression_attribute_values(":md5", AttributeValue::S(expected.md5.clone())),
        };
        let action = format!("cannot write the rule for {} on {}", rule.app, rule.channel);
        put_unless_refused(put, action, || StoreError::Conflict {
            app: rule.app,
            channel: rule.channel,
        })
        .await
    }

    /// One listing of the bucket (a request per 1,000 keys) rather than a HEAD per
    /// object: rules sets share few buckets and hold many objects.
    async fn missing_objects(
        &self,
        objects: Vec<ObjectLocation>,
    ) -> Result<HashSet<ObjectLocation>, StoreError> {
        if objects.is_empty() {
            return Ok(HashSet::new());
        }
        let mut keys = HashSet::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(service(format!("cannot list bucket `{}`", self.bucket)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
        }
        Ok(objects
            .into_iter()
            .filter(|object| !keys.contains(&object.key))
            .collect())
    }

    async fn put_release(&self, release: Rule) -> Result<(), StoreError> {
        // Never other bytes under a version that is there: a version names one binary.
        let put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_from_rule(&release, ItemKind::Release)))
            .condition_expression("attribute_not_exists(app) OR md5 = :md5")
            .expression_attribute_values(":md5", AttributeValue::S(release.md5.clone()));
        let action = format!(
            "cannot write release {} of {} on {}",
            release.version, release.app, release.channel
        );
        put_unless_refused(put, action, || StoreError::OtherBytes {
            app: release.app,
            channel: release.channel,
            version: release.version,
        })
        .await
    }
}
