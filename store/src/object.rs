//! A stored object opened for reading: its exact length, and its bytes as a stream or,
//! on a blocking thread, as blocks handed on without a copy.

use std::io;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Bytes per block when an object is sent as blocks: large enough that a read and a
/// hand-off cost little per byte, small enough that a download buffers well under a
/// MiB (the block being read, and the body channel's two). The checked blocks of a
/// segment, so that a read from a block's start gives one checked block at a time.
const BLOCK: usize = fleetpack_resolver::SEGMENT_BLOCK as usize;

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
