//! The bytes of a full-payload package: one gzip member whose deflate stream is a
//! sequence of segments, one per tar entry.
//!
//! Each tar entry (header, data, padding) is compressed by a fresh raw-deflate compressor
//! and ended with a sync flush, which leaves the segment byte-aligned and not final. The
//! end-of-archive blocks are one more such segment; an empty final block and the gzip
//! trailer close the member. Segments therefore depend only on their own entry, which is
//! what lets a segment computed ahead of time stand in for one compressed here, byte for
//! byte (docs/splicing.md has the byte-level layout).

use std::io;

use async_compression::Level;
use async_compression::tokio::write::DeflateEncoder;
use fleetpack_resolver::{
    DEFLATE_LEVEL, DETAILS_FILE_NAME, PlanEntry, TAR_ENTRY_MODE, TAR_ENTRY_MTIME,
};
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tar::{EntryType, Header};

use crate::StoreObject;

/// gzip header (RFC 1952): deflate, no flags, MTIME 0, no extra flags, OS "unknown".
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final deflate block with fixed Huffman codes: ends the deflate stream.
pub const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];
/// A final deflate block of the reserved type 3 (RFC 1951, 3.2.3): invalid everywhere.
pub(crate) const INVALID_BLOCK: [u8; 1] = [0x07];

const TAR_BLOCK: usize = 512;
const READ_CHUNK: usize = 128 * 1024;
const ZEROS: [u8; 2 * TAR_BLOCK] = [0; 2 * TAR_BLOCK];

/// A selected binary opened for the package.
#[derive(Debug)]
pub struct PackageObject {
    pub entry: PlanEntry,
    pub object: StoreObject,
}

/// Why a package could not be written to the end.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("object `{key}` is {actual} bytes long, but {expected} were expected")]
    LengthMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("object `{key}` has {digest} {actual}, but its rule says {expected}")]
    DigestMismatch {
        key: String,
        /// Which digest: MD5 or SHA-256.
        digest: &'static str,
        expected: String,
        actual: String,
    },
    #[error("stored segment `{key}` has CRC-32 {actual:08x}, but its rule says {expected:08x}")]
    SegmentMismatch {
        key: String,
        expected: u32,
        actual: u32,
    },
    #[error(
        "block {block} of stored segment `{key}` has CRC-32 {actual:08x}, but its rule says {expected:08x}"
    )]
    BlockMismatch {
        key: String,
        block: u64,
        expected: u32,
        actual: u32,
    },
    #[error("cannot make the tar entry `{name}`")]
    Header {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The tar header of a regular file with the fixed owner, mode and mtime of every entry.
pub fn tar_header(name: &str, size: u64) -> Result<Header, ArchiveError> {
    let mut header = Header::new_ustar();
    header
        .set_path(name)
        .map_err(|source| ArchiveError::Header {
            name: name.to_owned(),
            source,
        })?;
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(TAR_ENTRY_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(TAR_ENTRY_MTIME);
    header.set_cksum();
    Ok(header)
}

/// Zero bytes that pad `len` bytes of entry data to a whole tar block.
fn padding(len: u64) -> &'static [u8] {
    let rest = (len % TAR_BLOCK as u64) as usize;
    &ZEROS[..if rest == 0 { 0 } else { TAR_BLOCK - rest }]
}

/// CRC-32 and length of everything compressed so far: the gzip trailer.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub crc: crc32fast::Hasher,
    pub len: u64,
}

/// One tar entry's deflate segment being written.
struct Segment<'a, W: AsyncWrite + Unpin> {
    encoder: DeflateEncoder<&'a mut W>,
    totals: &'a mut Totals,
}

impl<'a, W: AsyncWrite + Unpin> Segment<'a, W> {
    fn start(out: &'a mut W, totals: &'a mut Totals, level: u32) -> Self {
        Segment {
            encoder: DeflateEncoder::with_quality(out, Level::Precise(level as i32)),
            totals,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.totals.crc.update(bytes);
        self.totals.len += bytes.len() as u64;
        self.encoder.write_all(bytes).await
    }

    /// Sync-flushes the compressor: the segment ends byte-aligned, without a final block.
    async fn finish(mut self) -> io::Result<()> {
        self.encoder.flush().await
    }

    /// Ends the deflate stream with a block of the reserved type, which every inflater
    /// refuses.
    async fn poison(mut self) -> io::Result<()> {
        self.encoder.flush().await?;
        let out = self.encoder.get_mut();
        out.write_all(&INVALID_BLOCK).await?;
        out.flush().await
    }
}

/// Writes a whole package: `package_details.json`, then each object in order.
///
/// Each object is checked against its rule while it streams: a length or MD5 that
/// differs fails the write before the archive is complete, so the caller can abort
/// the response instead of ending it.
pub async fn write_package<W: AsyncWrite + Unpin>(
    out: &mut W,
    details: &[u8],
    objects: Vec<PackageObject>,
) -> Result<(), ArchiveError> {
    let mut totals = Totals::default();
    out.write_all(&GZIP_HEADER).await?;
    write_details_segment(out, &mut totals, details).await?;
    let mut buf = vec![0u8; READ_CHUNK];
    for PackageObject { entry, object } in objects {
        let len = object.len;
        let binary = Binary::from(&entry);
        write_binary_segment(
            out,
            &mut totals,
            &binary,
            len,
            object.into_reader(),
            &mut buf,
        )
        .await?;
    }
    write_end_segment(out, &mut totals).await?;
    out.write_all(&trailer(&totals.crc, totals.len)).await?;
    out.flush().await?;
    Ok(())
}

pub(crate) async fn write_details_segment<W: AsyncWrite + Unpin>(
    out: &mut W,
    totals: &mut Totals,
    details: &[u8],
) -> Result<(), ArchiveError> {
    let header = tar_header(DETAILS_FILE_NAME, details.len() as u64)?;
    let mut segment = Segment::start(out, totals, DEFLATE_LEVEL);
    segment.write(header.as_bytes()).await?;
    segment.write(details).await?;
    segment.write(padding(details.len() as u64)).await?;
    segment.finish().await?;
    Ok(())
}

/// The two zero blocks that end a tar, as one more segment.
pub(crate) async fn write_end_segment<W: AsyncWrite + Unpin>(
    out: &mut W,
    totals: &mut Totals,
) -> io::Result<()> {
    let mut segment = Segment::start(out, totals, DEFLATE_LEVEL);
    segment.write(&ZEROS).await?;
    segment.finish().await
}

/// The final empty block and the gzip trailer: CRC-32, then the length modulo 2^32
/// (RFC 1952 ISIZE).
pub(crate) fn trailer(crc: &crc32fast::Hasher, len: u64) -> [u8; 10] {
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&FINAL_BLOCK);
    bytes[2..6].copy_from_slice(&crc.clone().finalize().to_le_bytes());
    bytes[6..].copy_from_slice(&(len as u32).to_le_bytes());
    bytes
}

/// Length of a binary's tar entry: header, data, padding.
pub(crate) fn tar_entry_len(size: u64) -> u64 {
    TAR_BLOCK as u64 + size.div_ceil(TAR_BLOCK as u64) * TAR_BLOCK as u64
}

/// A binary as it goes into a package: its entry name and what it must be.
#[derive(Debug, Clone)]
pub struct Binary {
    /// `<app>_<version>`.
    pub name: String,
    /// The object key, for errors.
    pub key: String,
    /// The MD5 its bytes must have; `None` while it is being published, when its
    /// digests are taken in the same pass.
    pub md5: Option<String>,
    /// Deflate level of its tar entry.
    pub level: u32,
}

impl From<&PlanEntry> for Binary {
    fn from(entry: &PlanEntry) -> Self {
        Binary {
            name: entry.file_name(),
            key: entry.object.key.clone(),
            md5: Some(entry.md5.clone()),
            level: entry.deflate_level,
        }
    }
}

/// CRC-32 and length of one uncompressed tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryTotals {
    pub crc32: u32,
    pub len: u64,
}

/// Compresses one binary's tar entry, `len` bytes read from `reader`, into `out` as a
/// segment of its own, exactly as [`write_package`] does: what publishing stores ahead
/// of time.
pub async fn write_segment<W: AsyncWrite + Unpin>(
    out: &mut W,
    binary: &Binary,
    len: u64,
    reader: impl AsyncRead + Unpin,
) -> Result<EntryTotals, ArchiveError> {
    let mut totals = Totals::default();
    let mut buf = vec![0u8; READ_CHUNK];
    write_binary_segment(out, &mut totals, binary, len, reader, &mut buf).await?;
    out.flush().await?;
    Ok(EntryTotals {
        crc32: totals.crc.finalize(),
        len: totals.len,
    })
}

/// One binary's segment: header, data checked for length and MD5 as it streams, padding.
async fn write_binary_segment<W: AsyncWrite + Unpin>(
    out: &mut W,
    totals: &mut Totals,
    binary: &Binary,
    len: u64,
    reader: impl AsyncRead + Unpin,
    buf: &mut [u8],
) -> Result<(), ArchiveError> {
    let header = tar_header(&binary.name, len)?;
    let mut segment = Segment::start(out, totals, binary.level);
    segment.write(header.as_bytes()).await?;
    if let Err(error) = copy_checked(&mut segment, binary, len, reader, buf).await {
        // The connection is aborted next, but a client that ignores that must not
        // decode a shorter archive either: Python's tarfile takes a gzip stream cut at
        // an entry boundary for the end of the archive.
        let _ = segment.poison().await;
        return Err(error);
    }
    segment.finish().await?;
    Ok(())
}

/// Streams one binary into its segment, checking its length and MD5, then pads it.
async fn copy_checked<W: AsyncWrite + Unpin>(
    segment: &mut Segment<'_, W>,
    binary: &Binary,
    len: u64,
    mut reader: impl AsyncRead + Unpin,
    buf: &mut [u8],
) -> Result<(), ArchiveError> {
    let mut md5 = binary.md5.as_ref().map(|_| Md5::new());
    let mut seen = 0u64;
    loop {
        let read = reader.read(buf).await?;
        if read == 0 {
            break;
        }
        seen += read as u64;
        if seen > len {
            break;
        }
        if let Some(md5) = &mut md5 {
            md5.update(&buf[..read]);
        }
        segment.write(&buf[..read]).await?;
    }
    if seen != len {
        return Err(ArchiveError::LengthMismatch {
            key: binary.key.clone(),
            expected: len,
            actual: seen,
        });
    }
    if let (Some(md5), Some(expected)) = (md5, &binary.md5) {
        let actual = hex::encode(md5.finalize());
        if actual != *expected {
            return Err(ArchiveError::DigestMismatch {
                key: binary.key.clone(),
                digest: "MD5",
                expected: expected.clone(),
                actual,
            });
        }
    }
    segment.write(padding(len)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use fleetpack_resolver::{ARCHIVE_FORMAT, EntryStatus, ObjectLocation};
    use sha2::{Digest as _, Sha256};
    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;

    /// Hands out its bytes in reads of varying, awkward sizes, as network streams do.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        sizes: &'static [usize],
        turn: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let end = (self.at + size.min(buf.remaining())).min(self.data.len());
            buf.put_slice(&self.data[self.at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }

    /// Half text (compressible), half pseudo-random (not).
    fn sample_binary() -> Vec<u8> {
        let mut data: Vec<u8> = (0..150_000u32)
            .map(|i| b"fleetpack sample binary\n"[i as usize % 24])
            .collect();
        let mut state = 0x9e37_79b9_u32;
        data.extend((0..150_000).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        }));
        data
    }

    fn object(data: &[u8], sizes: &'static [usize]) -> PackageObject {
        PackageObject {
            entry: PlanEntry {
                app: "demo".to_owned(),
                channel: "prod".to_owned(),
                version: "1.0.0".to_owned(),
                url: "local://demo_1.0.0".to_owned(),
                object: ObjectLocation::parse("local://demo_1.0.0").expect("valid url"),
                md5: hex::encode(Md5::digest(data)),
                sha256: None,
                size: Some(data.len() as u64),
                mandatory: false,
                required: false,
                installed_version: None,
                downgrade: false,
                envelope: None,
                status: EntryStatus::Send,
                segment: None,
                deflate_level: fleetpack_resolver::DEFLATE_LEVEL,
            },
            object: StoreObject::new(
                data.len() as u64,
                Trickle {
                    data: data.to_vec(),
                    at: 0,
                    sizes,
                    turn: 0,
                },
            ),
        }
    }

    async fn package(sizes: &'static [usize]) -> Vec<u8> {
        let mut out = Vec::new();
        write_package(&mut out, b"{}\n", vec![object(&sample_binary(), sizes)])
            .await
            .expect("package written");
        out
    }

    #[tokio::test]
    async fn package_bytes_do_not_depend_on_how_reads_are_cut() {
        let smooth = package(&[READ_CHUNK]).await;
        let rough = package(&[1, 7, 4096, 65_539, 300]).await;
        assert!(smooth == rough, "the same input compressed to other bytes");
    }

    /// Pins the bytes of a package. When this fails, the archive format changed (tar
    /// layout, deflate backend or level, segment framing): bump `ARCHIVE_FORMAT` so that
    /// ETags change with the bytes, then update the digest here.
    #[tokio::test]
    async fn package_bytes_match_the_archive_format() {
        let bytes = package(&[READ_CHUNK]).await;
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            "cce696713646a02bc24fcc6122fddb757deacdacc50039973e60b2741066a51d",
            "{ARCHIVE_FORMAT}"
        );
    }

    #[tokio::test]
    async fn package_is_one_gzip_member_holding_the_tar() {
        let bytes = package(&[READ_CHUNK]).await;
        let mut decoder = flate2::read::GzDecoder::new(&bytes[..]);
        let mut tar = Vec::new();
        decoder.read_to_end(&mut tar).expect("valid gzip");
        let binary = sample_binary();
        assert_eq!(
            tar.len(),
            512 + 512 + 512 + binary.len().div_ceil(512) * 512 + 1024
        );
        assert_eq!(&tar[..20], b"package_details.json");
        assert_eq!(&tar[512..515], b"{}\n");
        assert_eq!(&tar[1024..1040], b"demo_1.0.0\0\0\0\0\0\0");
        assert_eq!(&tar[1536..1536 + binary.len()], &binary[..]);
        assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));
    }

    #[tokio::test]
    async fn segment_written_ahead_is_the_bytes_the_package_carries() {
        let data = sample_binary();
        let object = object(&data, &[READ_CHUNK]);
        let binary = Binary::from(&object.entry);
        let mut segment = Vec::new();
        let len = object.object.len;
        let totals = write_segment(&mut segment, &binary, len, object.object.into_reader())
            .await
            .expect("segment written");

        // A segment never ends the deflate stream; the final block does.
        let mut entry = Vec::new();
        flate2::read::DeflateDecoder::new(&[&segment[..], &FINAL_BLOCK].concat()[..])
            .read_to_end(&mut entry)
            .expect("a raw deflate segment");
        assert_eq!(entry.len() as u64, totals.len);
        assert_eq!(crc32fast::hash(&entry), totals.crc32);
        assert_eq!(entry.len(), 512 + data.len().div_ceil(512) * 512);
        assert_eq!(&entry[512..512 + data.len()], &data[..]);

        // Without the binary the package is header, details, end, final block, trailer;
        // with it, the segment must sit between details and end, byte for byte.
        let empty = {
            let mut out = Vec::new();
            write_package(&mut out, b"{}\n", Vec::new())
                .await
                .expect("package");
            out
        };
        let full = package(&[READ_CHUNK]).await;
        let (inner_empty, inner_full) = (&empty[10..empty.len() - 8], &full[10..full.len() - 8]);
        assert_eq!(inner_full.len(), inner_empty.len() + segment.len());
        let spliced = (0..=inner_empty.len()).any(|at| {
            inner_full[..at] == inner_empty[..at]
                && inner_full[at..at + segment.len()] == segment[..]
                && inner_full[at + segment.len()..] == inner_empty[at..]
        });
        assert!(
            spliced,
            "the package does not carry the segment as written ahead"
        );
    }

    #[tokio::test]
    async fn a_binary_that_differs_from_its_rule_fails_the_package() {
        let data = sample_binary();
        let mut forged = object(&data, &[READ_CHUNK]);
        forged.entry.md5 = hex::encode(Md5::digest(b"other bytes"));
        let mut out = Vec::new();
        let error = write_package(&mut out, b"{}\n", vec![forged])
            .await
            .expect_err("a digest mismatch fails");
        assert!(
            matches!(error, ArchiveError::DigestMismatch { .. }),
            "{error}"
        );
        // Whatever was written must not decode as a whole archive.
        let mut decoder = flate2::read::GzDecoder::new(&out[..]);
        assert!(decoder.read_to_end(&mut Vec::new()).is_err());

        let mut short = object(&data, &[READ_CHUNK]);
        short.object.len += 1;
        let error = write_package(&mut Vec::new(), b"{}\n", vec![short])
            .await
            .expect_err("a length mismatch fails");
        assert!(
            matches!(error, ArchiveError::LengthMismatch { .. }),
            "{error}"
        );
    }
}
