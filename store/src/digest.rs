//! MD5, SHA-256 and CRC-32 of binaries and segments, computed as their bytes pass.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use fleetpack_resolver::SEGMENT_BLOCK;
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Digests and length of a binary or a segment, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigests {
    pub md5: String,
    pub sha256: String,
    /// CRC-32 of the bytes: what a stored segment is checked against as it is sent.
    pub crc32: u32,
    /// CRC-32 of each [`SEGMENT_BLOCK`] bytes (the last block may be shorter): what each
    /// block of a stored segment is checked against before it is sent.
    pub block_crc32s: Vec<u32>,
    pub size: u64,
}

/// Every digest of [`ObjectDigests`] at once, fed as the bytes go by.
#[derive(Debug, Clone, Default)]
pub struct Digester {
    md5: Md5,
    sha256: Sha256,
    crc32: crc32fast::Hasher,
    /// The CRC-32 of each whole block so far, and of the block being read.
    block_crc32s: Vec<u32>,
    block: crc32fast::Hasher,
    size: u64,
}

impl Digester {
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha256.update(bytes);
        self.crc32.update(bytes);
        while !bytes.is_empty() {
            let room = SEGMENT_BLOCK - self.size % SEGMENT_BLOCK;
            let (head, rest) = bytes.split_at(bytes.len().min(room as usize));
            self.block.update(head);
            self.size += head.len() as u64;
            if self.size.is_multiple_of(SEGMENT_BLOCK) {
                let full = std::mem::take(&mut self.block);
                self.block_crc32s.push(full.finalize());
            }
            bytes = rest;
        }
    }

    pub fn finish(mut self) -> ObjectDigests {
        if !self.size.is_multiple_of(SEGMENT_BLOCK) {
            self.block_crc32s.push(self.block.finalize());
        }
        ObjectDigests {
            md5: hex::encode(self.md5.finalize()),
            sha256: hex::encode(self.sha256.finalize()),
            crc32: self.crc32.finalize(),
            block_crc32s: self.block_crc32s,
            size: self.size,
        }
    }
}

/// Reads the file at `path` once and returns its digests and length.
pub fn digest_file(path: &Path) -> io::Result<ObjectDigests> {
    let mut file = File::open(path)?;
    let mut digester = Digester::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            return Ok(digester.finish());
        }
        digester.update(&buf[..read]);
    }
}

/// Passes reads or writes through to `inner`, digesting the bytes on the way, so that
/// a publish learns a binary's digests in the same pass that compresses it.
#[derive(Debug)]
pub(crate) struct Digesting<T> {
    pub inner: T,
    pub digester: Digester,
}

impl<T> Digesting<T> {
    pub fn new(inner: T) -> Self {
        Digesting {
            inner,
            digester: Digester::default(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Digesting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        self.digester.update(read);
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Digesting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.digester.update(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_checksums_do_not_depend_on_how_the_bytes_arrive() {
        let len = 2 * SEGMENT_BLOCK as usize + 1000;
        let bytes: Vec<u8> = (0..len).map(|n| (n % 253) as u8).collect();
        let mut digester = Digester::default();
        for piece in bytes.chunks(77_777) {
            digester.update(piece);
        }
        let digests = digester.finish();
        let expected: Vec<u32> = bytes
            .chunks(SEGMENT_BLOCK as usize)
            .map(crc32fast::hash)
            .collect();
        assert_eq!(digests.block_crc32s, expected);
        assert_eq!(digests.block_crc32s.len(), 3);
        assert_eq!(digests.size, len as u64);
        assert_eq!(digests.crc32, crc32fast::hash(&bytes));

        let whole = Digester::default().finish();
        assert_eq!(whole.block_crc32s, Vec::<u32>::new(), "no bytes, no blocks");
    }
}
