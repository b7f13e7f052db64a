//! Publishing a binary and its rule, the same way on every store, and building the
//! compressed segment of a rule stored without one.
//!
//! A binary is read twice at most: once for its digests, its deflate level and its
//! compressed tar entry together, once more to upload it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fleetpack_resolver::{
    ARCHIVE_FORMAT, DEFLATE_LEVEL, ObjectLocation, Rule, RuleError, SEGMENT_BLOCK, SegmentBlocks,
    SegmentRef, archive_format_id,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::archive::{ArchiveError, Binary, write_segment};
use crate::digest::{Digesting, ObjectDigests};
use crate::releases::{Changed, Channel, ReleaseError, Signer, add_release};
use crate::{Progress, Store, StoreError};

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
    /// Devices below this version get it before anything newer.
    pub required: bool,
    pub enabled: bool,
    /// Serve it to this percent of the devices that send a key, as the candidate of a
    /// staged rollout, instead of making it current at once.
    pub rollout: Option<u8>,
}

impl Release {
    /// An enabled, current release of `version` of `app` on `channel`, for devices of any
    /// CPU and no attribute; set the rest with struct-update syntax.
    pub fn new(
        app: impl Into<String>,
        channel: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Release {
            app: app.into(),
            channel: channel.into(),
            version: version.into(),
            cpu_arch: None,
            attributes: Vec::new(),
            mandatory: false,
            required: false,
            enabled: true,
            rollout: None,
        }
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The release as published.
    pub rule: Rule,
    /// The channel's current release before and after.
    pub changed: Changed,
    /// False when the same bytes were already stored under this app and version.
    pub uploaded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Invalid(#[from] RuleError),
    #[error(
        "attribute `{0}` is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    BadAttribute(String),
    #[error("cannot read `{}`", path.display())]
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
    #[error("cannot build the compressed segment of `{name}`")]
    Segment {
        name: String,
        #[source]
        source: ArchiveError,
    },
    #[error(
        "the stored segment `{url}` has MD5 {existing}, this one {new}; remove it and build it again"
    )]
    SegmentTaken {
        url: String,
        existing: String,
        new: String,
    },
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishes the file at `path` as `release`: stores the object first (under
/// `<app>_<version>`) and its compressed segment, then the release in the channel's
/// history and as its current release or rollout candidate, so a device never sees a
/// rule whose object is missing. An app's version always names the same bytes:
/// publishing other bytes under a version that exists is refused.
pub async fn publish<S: Store>(
    store: &S,
    release: &Release,
    path: &Path,
    progress: &Progress,
    signer: Option<&Signer>,
) -> Result<Published, PublishError> {
    for attribute in &release.attributes {
        if !fleetpack_resolver::is_ident(attribute) {
            return Err(PublishError::BadAttribute(attribute.clone()));
        }
    }
    let unreadable = |source| PublishError::Source {
        path: path.to_owned(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let len = file.metadata().await.map_err(unreadable)?.len();
    let location = store.location(&format!("{}_{}", release.app, release.version));
    let mut binary = Digesting::new(file);
    let entry = compress_entry(
        Binary {
            name: format!("{}_{}", release.app, release.version),
            key: location.key.clone(),
            md5: None,
            level: DEFLATE_LEVEL,
        },
        None,
        len,
        &mut binary,
    )
    .await?;
    let digests = binary.digester.finish();
    let mut rule = Rule {
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
        required: release.required,
        created_at: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
        deflate_level: Some(entry.level),
        ..Rule::new(
            release.app.clone(),
            release.channel.clone(),
            release.version.clone(),
            location.url(),
            digests.md5.clone(),
        )
    };
    rule.check()?;

    let taken = |existing: String| PublishError::VersionTaken {
        app: rule.app.clone(),
        version: rule.version.clone(),
        existing,
        new: digests.md5.clone(),
    };
    let stored_rules = store.load_rules().await?;
    if let Some(other) = stored_rules.all().find(|other| {
        other.app.eq_ignore_ascii_case(&rule.app)
            && other.version == rule.version
            && other.md5 != rule.md5
    }) {
        return Err(taken(other.md5.clone()));
    }
    if let Some(other) = stored_rules.all().find(|other| {
        other.app.eq_ignore_ascii_case(&rule.app)
            && other.channel.eq_ignore_ascii_case(&rule.channel)
            && (other.app != rule.app || other.channel != rule.channel)
    }) {
        return Err(PublishError::OtherSpelling {
            app: other.app.clone(),
            channel: other.channel.clone(),
        });
    }
    // Refused before anything is stored, so a refused publish leaves no trace.
    Channel::of(&stored_rules, &rule.app, &rule.channel).check_signer(signer)?;
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
    rule.segment = Some(store_segment(store, &location, entry).await?);
    let changed = add_release(store, &stored_rules, rule.clone(), release.rollout, signer).await?;
    Ok(Published {
        rule,
        changed,
        uploaded,
    })
}

/// What [`build_segments`] did.
#[derive(Debug)]
pub struct SegmentsBuilt {
    /// Each rule that lacked a segment, and whether it has one now.
    pub built: Vec<(Rule, Result<(), PublishError>)>,
    /// Rules whose segment was already made for the current archive format.
    pub current: usize,
}

/// Builds and stores the compressed segment of every stored rule that lacks one for the
/// current archive format (a table made by the AWS sample, say) or lacks its block
/// checksums (a segment stored before they were recorded), and writes the rules with it: current releases and history alike, each binary compressed once. A missing
/// size or deflate level is filled in; each binary is checked against its rule's MD5
/// and size as it is read. One rule that fails is reported and the others go on.
pub async fn build_segments<S: Store>(store: &S) -> Result<SegmentsBuilt, StoreError> {
    let stored = store.load_rules().await?;
    let mut made: Vec<Rule> = Vec::new();
    let mut outcome = SegmentsBuilt {
        built: Vec::new(),
        current: 0,
    };
    let lacking = |rule: &Rule| {
        rule.segment
            .as_ref()
            .is_none_or(|segment| segment.format != ARCHIVE_FORMAT || segment.blocks.is_none())
    };
    let items = stored
        .current
        .iter()
        .map(|rule| (rule, true))
        .chain(stored.history.iter().map(|rule| (rule, false)));
    for (rule, is_current) in items {
        if !lacking(rule) {
            outcome.current += 1;
            continue;
        }
        let result = async {
            // Releases of one binary share its segment: it is made once.
            let filled = match made.iter().find(|done| done.url == rule.url) {
                Some(done) => Rule {
                    size: done.size,
                    deflate_level: done.deflate_level,
                    segment: done.segment.clone(),
                    ..rule.clone()
                },
                None => {
                    let filled = with_segment(store, rule).await?;
                    made.push(filled.clone());
                    filled
                }
            };
            if is_current {
                let revision = Some(rule.revision.unwrap_or(0) + 1);
                store
                    .put_rule(Rule { revision, ..filled }, Some(rule))
                    .await?;
            } else {
                store.put_release(filled).await?;
            }
            Ok(())
        }
        .await;
        outcome.built.push((rule.clone(), result));
    }
    Ok(outcome)
}

/// `rule` with the compressed segment of its stored binary, built and stored.
async fn with_segment<S: Store>(store: &S, rule: &Rule) -> Result<Rule, PublishError> {
    let location = ObjectLocation::parse(&rule.url).map_err(RuleError::from)?;
    let object = store.open_object(&location).await?;
    let len = object.len;
    if let Some(size) = rule.size.filter(|&size| size != len) {
        return Err(PublishError::Segment {
            name: rule.file_name(),
            source: ArchiveError::LengthMismatch {
                key: location.key,
                expected: size,
                actual: len,
            },
        });
    }
    let entry = compress_entry(
        Binary {
            name: rule.file_name(),
            key: location.key.clone(),
            md5: Some(rule.md5.clone()),
            level: DEFLATE_LEVEL,
        },
        rule.deflate_level,
        len,
        object.into_reader(),
    )
    .await?;
    Ok(Rule {
        size: Some(len),
        deflate_level: Some(entry.level),
        segment: Some(store_segment(store, &location, entry).await?),
        ..rule.clone()
    })
}

/// How much of a binary decides its deflate level.
const LEVEL_SAMPLE: usize = 4 * 1024 * 1024;

/// The deflate level for a binary whose first bytes are `sample`: stored blocks (0)
/// when the default level saves less than 2% of them, as for encrypted or already
/// compressed firmware; the default level otherwise.
fn choose_level(sample: &[u8]) -> u32 {
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

/// A binary's tar entry compressed into a scratch file, ready to be stored.
#[derive(Debug)]
struct CompressedEntry {
    scratch: tempfile::TempPath,
    /// Digests and length of the segment's bytes.
    digests: ObjectDigests,
    /// CRC-32 of the uncompressed tar entry.
    entry_crc32: u32,
    level: u32,
}

/// Compresses `binary`'s tar entry, `len` bytes from `reader`, into a scratch file, at
/// `level`, or when that is `None` at the level its first [`LEVEL_SAMPLE`] bytes call
/// for (`binary.level` is replaced by the level used).
async fn compress_entry(
    mut binary: Binary,
    level: Option<u32>,
    len: u64,
    mut reader: impl AsyncRead + Unpin,
) -> Result<CompressedEntry, PublishError> {
    let failed = |name: &str| {
        let name = name.to_owned();
        move |source| PublishError::Segment { name, source }
    };
    let mut sample = Vec::with_capacity(LEVEL_SAMPLE.min(len as usize));
    (&mut reader)
        .take(LEVEL_SAMPLE as u64)
        .read_to_end(&mut sample)
        .await
        .map_err(|error| failed(&binary.name)(ArchiveError::Io(error)))?;
    let (sample, level) = match level {
        Some(level) => (sample, level),
        // Compressing the sample takes a while: not on an async worker.
        None => tokio::task::spawn_blocking(move || {
            let level = choose_level(&sample);
            (sample, level)
        })
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic())),
    };
    binary.level = level;
    let scratch = tempfile::NamedTempFile::new().map_err(|source| PublishError::Source {
        path: std::env::temp_dir(),
        source,
    })?;
    let file = scratch.reopen().map_err(|source| PublishError::Source {
        path: scratch.path().to_owned(),
        source,
    })?;
    let mut out = Digesting::new(tokio::fs::File::from_std(file));
    let totals = write_segment(&mut out, &binary, len, (&sample[..]).chain(reader))
        .await
        .map_err(failed(&binary.name))?;
    out.inner
        .flush()
        .await
        .map_err(|error| failed(&binary.name)(ArchiveError::Io(error)))?;
    Ok(CompressedEntry {
        scratch: scratch.into_temp_path(),
        digests: out.digester.finish(),
        entry_crc32: totals.crc32,
        level: binary.level,
    })
}

/// Stores a compressed entry beside its binary (at `binary`, plus the archive format's
/// id), unless the same bytes are there already, and says where it is and what it holds.
async fn store_segment<S: Store>(
    store: &S,
    binary: &ObjectLocation,
    entry: CompressedEntry,
) -> Result<SegmentRef, PublishError> {
    let location = store.location(&format!("{}.{}.deflate", binary.key, archive_format_id()));
    let digests = entry.digests;
    match store.object_md5(&location).await? {
        Some(existing) if existing == digests.md5 => {}
        Some(existing) => {
            return Err(PublishError::SegmentTaken {
                url: location.url(),
                existing,
                new: digests.md5,
            });
        }
        None => {
            store
                .put_object(&location, entry.scratch.to_path_buf(), &digests, &|_| {})
                .await?
        }
    }
    Ok(SegmentRef {
        url: location.url(),
        size: digests.size,
        crc32: entry.entry_crc32,
        bytes_crc32: digests.crc32,
        md5: digests.md5,
        format: ARCHIVE_FORMAT.to_owned(),
        blocks: Some(SegmentBlocks::new(SEGMENT_BLOCK, &digests.block_crc32s)),
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
