//! Where rules and binaries live. The one extension point of the origin: the local
//! store (a directory, the default) and the AWS store (DynamoDB + S3) implement [`Store`].

mod aws;
mod local;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use fleetpack_resolver::{ObjectLocation, Rule};
use tokio::io::{AsyncRead, AsyncReadExt as _};

pub use aws::{AwsStore, Created};
pub use local::LocalStore;

/// Called with the bytes uploaded so far while a binary is stored.
pub type Progress = dyn Fn(u64) + Send + Sync;

/// Bytes per block when an object is sent as blocks: large enough that a read and a
/// hand-off cost little per byte, small enough that a download buffers well under a
/// MiB (the block being read, and the body channel's two).
const BLOCK: usize = 256 * 1024;

/// A binary opened for streaming, with its exact length.
pub struct StoreObject {
    pub len: u64,
    source: Source,
}

enum Source {
    Reader(Pin<Box<dyn AsyncRead + Send>>),
    /// A local file positioned at the first byte to send.
    File(std::fs::File),
}

impl StoreObject {
    pub fn new(len: u64, reader: impl AsyncRead + Send + 'static) -> Self {
        StoreObject {
            len,
            source: Source::Reader(Box::pin(reader)),
        }
    }

    /// `len` bytes of a local file from its current position on.
    pub(crate) fn file(len: u64, file: std::fs::File) -> Self {
        StoreObject {
            len,
            source: Source::File(file),
        }
    }

    /// The bytes as a stream (at most `len` of them).
    pub fn into_reader(self) -> Pin<Box<dyn AsyncRead + Send>> {
        match self.source {
            Source::Reader(reader) => reader,
            Source::File(file) => Box::pin(tokio::fs::File::from_std(file).take(self.len)),
        }
    }

    /// The `len` bytes as blocks, for a blocking thread: a local file is read straight
    /// into each block, so a block reaches the socket with no copy in between.
    pub fn into_blocks(self) -> Blocks {
        Blocks {
            left: self.len,
            source: self.source,
        }
    }
}

/// An object's bytes in blocks, read on the calling (blocking) thread; see
/// [`StoreObject::into_blocks`].
pub struct Blocks {
    left: u64,
    source: Source,
}

impl Blocks {
    /// The next block; `None` after the last. Fewer bytes than the object's length end
    /// in an error. Blocks the thread (a stream is driven on `runtime`): never call it
    /// on an async worker.
    pub fn next_block(&mut self, runtime: &tokio::runtime::Handle) -> Option<io::Result<Bytes>> {
        if self.left == 0 {
            return None;
        }
        let want = self.left.min(BLOCK as u64);
        let block = match &mut self.source {
            Source::File(file) => {
                use std::io::Read;
                // read_to_end fills the block's spare capacity without zeroing it first.
                let mut block = Vec::with_capacity(want as usize);
                file.take(want)
                    .read_to_end(&mut block)
                    .map(|_| Bytes::from(block))
            }
            Source::Reader(reader) => runtime.block_on(async {
                let mut block = BytesMut::with_capacity(want as usize);
                while (block.len() as u64) < want {
                    let left = want - block.len() as u64;
                    if reader.as_mut().take(left).read_buf(&mut block).await? == 0 {
                        break;
                    }
                }
                Ok(block.freeze())
            }),
        };
        Some(match block {
            Ok(block) if block.is_empty() => {
                self.left = 0;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object ended before its length",
                ))
            }
            Ok(block) => {
                self.left -= block.len() as u64;
                Ok(block)
            }
            Err(error) => {
                self.left = 0;
                Err(error)
            }
        })
    }
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks").field("left", &self.left).finish()
    }
}

impl std::fmt::Debug for StoreObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreObject")
            .field("len", &self.len)
            .finish()
    }
}

/// Digests and length of a binary, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigests {
    pub md5: String,
    pub sha256: String,
    /// CRC-32 of the bytes: what a stored segment is checked against as it is sent.
    pub crc32: u32,
    pub size: u64,
}

/// A failed store operation. Messages name the object or file involved; they are for
/// operators and logs, never sent to devices.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object `{key}` is not in the store")]
    MissingObject { key: String },
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rules file `{}` is not valid JSON of rules: {source}", path.display())]
    BadRulesFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{action}: {detail}")]
    Service { action: String, detail: String },
    #[error("object `{key}` is {actual} bytes long, too short for {wanted} bytes")]
    ShortObject {
        key: String,
        wanted: u64,
        actual: u64,
    },
    #[error(
        "the rule for app `{app}` on `{channel}` changed while it was being published; run the publish again"
    )]
    Conflict { app: String, channel: String },
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

    /// Every stored rule, including disabled and invalid ones.
    fn load_rules(&self) -> impl Future<Output = Result<Vec<Rule>, StoreError>> + Send;

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

    /// Writes `rule`, replacing the rule for the same app and channel (ignoring letter
    /// case). Returns the rule it replaced.
    fn put_rule(&self, rule: Rule)
    -> impl Future<Output = Result<Option<Rule>, StoreError>> + Send;
}
