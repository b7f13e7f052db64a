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
use tokio::sync::mpsc;

pub use aws::{AwsStore, Created};
pub use local::LocalStore;

/// Called with the bytes uploaded so far while a binary is stored.
pub type Progress = dyn Fn(u64) + Send + Sync;

/// Bytes per block when an object is sent as blocks: large enough that a read and a
/// hand-off cost little per byte, small enough that a download buffers well under a
/// MiB (a block being read, one read ahead, and the body channel's two).
const BLOCK: usize = 128 * 1024;

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

    /// The `len` bytes as blocks, read ahead of the consumer by one block. A local file
    /// is read in blocking threads straight into each block, so a block reaches the
    /// socket with no copy in between. Fewer bytes than `len` end in an error.
    pub fn into_blocks(self) -> Blocks {
        let (sender, receiver) = mpsc::channel(1);
        let len = self.len;
        match self.source {
            Source::File(file) => tokio::spawn(send_file_blocks(file, len, sender)),
            Source::Reader(reader) => tokio::spawn(send_reader_blocks(reader, len, sender)),
        };
        Blocks { receiver }
    }
}

/// An object's bytes in blocks, from [`StoreObject::into_blocks`].
#[derive(Debug)]
pub struct Blocks {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
}

impl Blocks {
    /// The next block; `None` after the last.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        self.receiver.recv().await
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the object ended before its length",
    )
}

async fn send_file_blocks(
    mut file: std::fs::File,
    mut left: u64,
    sender: mpsc::Sender<io::Result<Bytes>>,
) {
    use std::io::Read;
    while left > 0 {
        let want = left.min(BLOCK as u64);
        // read_to_end fills the block's spare capacity without zeroing it first.
        let read = tokio::task::spawn_blocking(move || {
            let mut block = Vec::with_capacity(want as usize);
            let read = (&mut file).take(want).read_to_end(&mut block);
            (file, read.map(|_| block))
        })
        .await;
        let failure = match read {
            Ok((rest, Ok(block))) if !block.is_empty() => {
                file = rest;
                left -= block.len() as u64;
                if sender.send(Ok(Bytes::from(block))).await.is_err() {
                    return;
                }
                continue;
            }
            Ok((_, Ok(_))) => truncated(),
            Ok((_, Err(error))) => error,
            Err(join) => io::Error::other(join),
        };
        let _ = sender.send(Err(failure)).await;
        return;
    }
}

async fn send_reader_blocks(
    mut reader: Pin<Box<dyn AsyncRead + Send>>,
    mut left: u64,
    sender: mpsc::Sender<io::Result<Bytes>>,
) {
    use tokio::io::AsyncReadExt;
    while left > 0 {
        let want = left.min(BLOCK as u64) as usize;
        let mut block = BytesMut::with_capacity(want);
        while block.len() < want {
            match (&mut reader)
                .take((want - block.len()) as u64)
                .read_buf(&mut block)
                .await
            {
                Ok(0) => {
                    let _ = sender.send(Err(truncated())).await;
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            }
        }
        left -= block.len() as u64;
        if sender.send(Ok(block.freeze())).await.is_err() {
            return;
        }
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
