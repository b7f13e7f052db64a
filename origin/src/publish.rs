//! Publishing a binary and its rule, the same way on every store.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::io::{Read, Write};

use fleetpack_resolver::{
    ARCHIVE_FORMAT, DEFLATE_LEVEL, ObjectLocation, Rule, RuleError, SegmentRef, archive_format_id,
};

use crate::archive::{Binary, write_segment};
use crate::digest::digest_file;
use crate::store::{Progress, Store, StoreError, StoreObject};

/// What to publish: an app's version on a channel, and which devices it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub app: String,
    pub channel: String,
    pub version: String,
    pub cpu_arch: Option<String>,
    /// Device attributes (`attr<Name>=` on the device side) this app is for.
    pub attributes: Vec<String>,
    pub mandatory: bool,
    pub enabled: bool,
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub rule: Rule,
    /// The rule that served this app and channel before, if any.
    pub replaced: Option<Rule>,
    /// False when the same bytes were already stored under this app and version.
    pub uploaded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(#[from] RuleError),
    #[error(
        "attribute `{0}` is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    BadAttribute(String),
    #[error("cannot read `{}`: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "app `{app}` version `{version}` is already published with other bytes (MD5 {existing}, this file has {new}); publish this file under a new version"
    )]
    VersionTaken {
        app: String,
        version: String,
        existing: String,
        new: String,
    },
    #[error(
        "the store already has app `{app}` on `{channel}`, spelled that way; names ignore letter case, so publish under that spelling"
    )]
    OtherSpelling { app: String, channel: String },
    #[error("cannot build the compressed segment of `{name}`: {detail}")]
    Segment { name: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishes the file at `path` as `release`: stores the object first (under
/// `<app>_<version>`), then the rule, so a device never sees a rule whose object is
/// missing. An app's version always names the same bytes: publishing other bytes under
/// a version that exists is refused.
pub async fn publish<S: Store>(
    store: &S,
    release: &Release,
    path: &Path,
    progress: &Progress,
) -> Result<Published, PublishError> {
    for attribute in &release.attributes {
        if !fleetpack_resolver::is_ident(attribute) {
            return Err(PublishError::BadAttribute(attribute.clone()));
        }
    }
    let (digests, deflate_level) = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let sample = read_sample(&path);
            digest_file(&path)
                .and_then(|digests| Ok((digests, choose_level(&sample?))))
                .map_err(|source| PublishError::Source { path, source })
        })
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))?
    };
    let location = store.location(&format!("{}_{}", release.app, release.version));
    let rule = Rule {
        app: release.app.clone(),
        channel: release.channel.clone(),
        version: release.version.clone(),
        url: location.url(),
        md5: digests.md5.clone(),
        cpu_arch: release.cpu_arch.clone(),
        device_attr: release
            .attributes
            .iter()
            .map(|name| (name.clone(), true))
            .collect(),
        size: Some(digests.size),
        sha256: Some(digests.sha256.clone()),
        enabled: release.enabled,
        mandatory: release.mandatory,
        created_at: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
        segment: None,
        deflate_level: Some(deflate_level),
    };
    rule.check()?;

    let taken = |existing: String| PublishError::VersionTaken {
        app: rule.app.clone(),
        version: rule.version.clone(),
        existing,
        new: digests.md5.clone(),
    };
    let stored_rules = store.load_rules().await?;
    if let Some(other) = stored_rules.iter().find(|other| {
        other.app.eq_ignore_ascii_case(&rule.app)
            && other.version == rule.version
            && other.md5 != rule.md5
    }) {
        return Err(taken(other.md5.clone()));
    }
    if let Some(other) = stored_rules.iter().find(|other| {
        other.app.eq_ignore_ascii_case(&rule.app)
            && other.channel.eq_ignore_ascii_case(&rule.channel)
            && (other.app != rule.app || other.channel != rule.channel)
    }) {
        return Err(PublishError::OtherSpelling {
            app: other.app.clone(),
            channel: other.channel.clone(),
        });
    }
    let uploaded = match store.object_md5(&location).await? {
        Some(existing) if existing != digests.md5 => return Err(taken(existing)),
        Some(_) => false,
        None => {
            store
                .put_object(&location, path.to_owned(), &digests, progress)
                .await?;
            true
        }
    };
    let mut rule = rule;
    let source = open_file(path, digests.size).await?;
    rule.segment = Some(store_segment(store, &rule, source).await?);
    let same_rule = stored_rules.iter().find(|other| {
        let republished = Rule {
            created_at: other.created_at.clone(),
            ..rule.clone()
        };
        **other == republished
    });
    if let Some(existing) = same_rule
        && !uploaded
    {
        // Publishing the same release again changes nothing, not even `createdAt`.
        return Ok(Published {
            rule: existing.clone(),
            replaced: Some(existing.clone()),
            uploaded,
        });
    }
    let replaced = store.put_rule(rule.clone()).await?;
    Ok(Published {
        rule,
        replaced,
        uploaded,
    })
}

/// How much of a binary decides its deflate level.
pub const LEVEL_SAMPLE: usize = 4 * 1024 * 1024;

fn read_sample(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut sample = Vec::with_capacity(LEVEL_SAMPLE);
    std::fs::File::open(path)?
        .take(LEVEL_SAMPLE as u64)
        .read_to_end(&mut sample)?;
    Ok(sample)
}

/// The deflate level for a binary whose first bytes are `sample`: stored blocks (0)
/// when the default level saves less than 2% of them, as for encrypted or already
/// compressed firmware; the default level otherwise.
pub fn choose_level(sample: &[u8]) -> u32 {
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(sample.len()),
        flate2::Compression::new(DEFLATE_LEVEL),
    );
    let compressed = encoder
        .write_all(sample)
        .and_then(|()| encoder.finish())
        .map_or(sample.len(), |bytes| bytes.len());
    if compressed * 100 >= sample.len() * 98 {
        0
    } else {
        DEFLATE_LEVEL
    }
}

async fn open_file(path: &Path, len: u64) -> Result<StoreObject, PublishError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| PublishError::Source {
            path: path.to_owned(),
            source,
        })?;
    Ok(StoreObject::new(len, file))
}

/// Compresses `rule`'s binary, read from `object`, into its tar entry's deflate segment
/// (the bytes the origin would compress for it), stores the segment beside the binary
/// unless it is there already, and returns where it is and what it holds.
pub async fn store_segment<S: Store>(
    store: &S,
    rule: &Rule,
    object: StoreObject,
) -> Result<SegmentRef, PublishError> {
    let binary_location = ObjectLocation::parse(&rule.url)?;
    let binary = Binary {
        name: rule.file_name(),
        key: binary_location.key.clone(),
        md5: rule.md5.clone(),
        level: rule.entry_deflate_level(),
    };
    let location = store.location(&format!(
        "{}.{}.deflate",
        binary_location.key,
        archive_format_id()
    ));
    let scratch = tempfile::NamedTempFile::new().map_err(|source| PublishError::Source {
        path: std::env::temp_dir(),
        source,
    })?;
    let scratch_path = scratch.path().to_owned();
    let written = scratch.reopen().map_err(|source| PublishError::Source {
        path: scratch_path.clone(),
        source,
    })?;
    let totals = write_segment(&mut tokio::fs::File::from_std(written), &binary, object)
        .await
        .map_err(|error| PublishError::Segment {
            name: binary.name.clone(),
            detail: error.to_string(),
        })?;
    let digests = {
        let path = scratch_path.clone();
        tokio::task::spawn_blocking(move || digest_file(&path))
            .await
            .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
            .map_err(|source| PublishError::Source {
                path: scratch_path.clone(),
                source,
            })?
    };
    match store.object_md5(&location).await? {
        Some(existing) if existing == digests.md5 => {}
        Some(existing) => {
            return Err(PublishError::Segment {
                name: binary.name,
                detail: format!(
                    "the stored segment `{}` has MD5 {existing}, this one {}; remove it and build it again",
                    location.url(),
                    digests.md5
                ),
            });
        }
        None => {
            store
                .put_object(&location, scratch_path, &digests, &|_| {})
                .await?
        }
    }
    Ok(SegmentRef {
        url: location.url(),
        size: digests.size,
        crc32: totals.crc32,
        bytes_crc32: digests.crc32,
        md5: digests.md5,
        format: ARCHIVE_FORMAT.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompressible_binaries_get_stored_blocks_and_the_rest_the_default_level() {
        let mut state = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..LEVEL_SAMPLE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        assert_eq!(choose_level(&noise), 0);
        let text: Vec<u8> = b"GNU/Linux firmware image, build 42\n".repeat(10_000);
        assert_eq!(choose_level(&text), DEFLATE_LEVEL);
        assert_eq!(choose_level(&[]), 0);
    }
}
