//! Spliced packages: the bytes [`crate::archive::write_package`] would write, assembled
//! from segments compressed at publish time. Nothing is compressed but
//! `package_details.json`; the length is known before the first byte, and a byte range
//! maps to the stored pieces it touches. A segment's bytes are checked block by block
//! against the CRC-32s recorded at publish time before each block is sent, whole
//! segments and byte ranges alike (a segment stored before those were recorded is
//! checked whole, and a range that cuts it for its length only).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use fleetpack_resolver::{ARCHIVE_FORMAT, ObjectLocation, PlanEntry, SEGMENT_BLOCK, SegmentRef};

use crate::archive::{
    ArchiveError, GZIP_HEADER, INVALID_BLOCK, Totals, tar_entry_len, trailer,
    write_details_segment, write_end_segment,
};
use crate::{Store, StoreError, StoreObject};

/// One piece of a spliced package.
#[derive(Debug, Clone)]
enum Piece {
    /// Made for this response: gzip header and details segment, or end and trailer.
    Made(Bytes),
    /// A segment stored beside a binary at publish time.
    Stored {
        object: ObjectLocation,
        len: u64,
        crc32: u32,
        /// The CRC-32 of each [`SEGMENT_BLOCK`] bytes, when they were recorded.
        blocks: Option<Arc<[u32]>>,
    },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Made(bytes) => bytes.len() as u64,
            Piece::Stored { len, .. } => *len,
        }
    }
}

/// A full-payload package assembled from stored segments: the bytes [`write_package`]
/// would write, with nothing to compress but `package_details.json`, and a length known
/// before the first byte.
#[derive(Debug, Clone)]
pub struct Spliced {
    pieces: Vec<Piece>,
    len: u64,
}

/// The pieces of a spliced package that one response sends, opened.
#[derive(Debug)]
pub enum Part {
    Bytes(Bytes),
    /// A whole stored segment, checked as it streams: each block against its CRC-32
    /// before it is sent, or the whole against the CRC-32 of its bytes.
    Whole {
        object: StoreObject,
        key: String,
        crc32: u32,
        blocks: Option<Arc<[u32]>>,
    },
    /// A slice of a stored segment, read from the start of its first block to the end
    /// of its last, each block checked before its part of the slice is sent.
    Checked {
        object: StoreObject,
        key: String,
        /// Index of the first block read, and the CRC-32 of each block read.
        first_block: u64,
        crc32s: Vec<u32>,
        /// Bytes of the first block before the slice, and the slice's length.
        skip: u64,
        len: u64,
    },
    /// A slice of a stored segment without block checksums: checked for its length.
    Slice(StoreObject),
}

/// The block checksums of `segment`, when it has them for blocks of [`SEGMENT_BLOCK`].
fn block_crc32s(segment: &SegmentRef) -> Option<Arc<[u32]>> {
    let blocks = segment.blocks.as_ref()?;
    (blocks.size == SEGMENT_BLOCK)
        .then(|| blocks.crc32s())
        .flatten()
        .filter(|crcs| crcs.len() as u64 == segment.size.div_ceil(SEGMENT_BLOCK))
        .map(Arc::from)
}

impl Spliced {
    /// Plans the package, or `None` when some binary to send has no segment made for
    /// the current [`ARCHIVE_FORMAT`] (then the package is compressed as it streams).
    pub async fn plan<'a>(
        details: &[u8],
        entries: impl IntoIterator<Item = &'a PlanEntry>,
    ) -> Result<Option<Spliced>, ArchiveError> {
        let mut head = GZIP_HEADER.to_vec();
        let mut totals = Totals::default();
        write_details_segment(&mut head, &mut totals, details).await?;
        let mut pieces = vec![Piece::Made(head.into())];
        for entry in entries {
            let (Some(segment), Some(size)) = (&entry.segment, entry.size) else {
                return Ok(None);
            };
            let Ok(object) = ObjectLocation::parse(&segment.url) else {
                return Ok(None);
            };
            if segment.format != ARCHIVE_FORMAT {
                return Ok(None);
            }
            // The CRC of the whole is combined from each entry's, without reading them.
            let entry_len = tar_entry_len(size);
            totals.crc.combine(&crc32fast::Hasher::new_with_initial_len(
                segment.crc32,
                entry_len,
            ));
            totals.len += entry_len;
            pieces.push(Piece::Stored {
                object,
                len: segment.size,
                crc32: segment.bytes_crc32,
                blocks: block_crc32s(segment),
            });
        }
        let mut tail = Vec::new();
        write_end_segment(&mut tail, &mut totals).await?;
        tail.extend_from_slice(&trailer(&totals.crc, totals.len));
        // The end segment's bytes went into `tail`; its CRC went into `totals` too.
        pieces.push(Piece::Made(tail.into()));
        let len = pieces.iter().map(Piece::len).sum();
        Ok(Some(Spliced { pieces, len }))
    }

    /// The exact length of the package (never zero: a gzip member has a header).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held in memory for this plan (the pieces made at planning time).
    pub fn made_len(&self) -> usize {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Made(bytes) => bytes.len(),
                Piece::Stored { .. } => 0,
            })
            .sum()
    }

    /// Opens what the bytes `first..=last` of the package need (the whole package
    /// when `range` is `None`). A stored segment that is missing or of another length
    /// than its rule says fails here, before any byte is sent.
    pub async fn open<S: Store>(
        &self,
        store: &S,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<Part>, StoreError> {
        let (first, last) = range.unwrap_or((0, self.len.saturating_sub(1)));
        let mut parts = Vec::new();
        let mut offset = 0;
        for piece in &self.pieces {
            let (start, end) = (offset, offset + piece.len());
            offset = end;
            if end <= first || start > last {
                continue;
            }
            let from = first.saturating_sub(start);
            let to = (last + 1).min(end) - start;
            match piece {
                Piece::Made(bytes) => {
                    parts.push(Part::Bytes(bytes.slice(from as usize..to as usize)))
                }
                Piece::Stored {
                    object,
                    len,
                    crc32,
                    blocks,
                } if from == 0 && to == *len => {
                    let opened = store.open_object(object).await?;
                    if opened.len != *len {
                        return Err(StoreError::ShortObject {
                            key: object.key.clone(),
                            wanted: *len,
                            actual: opened.len,
                        });
                    }
                    parts.push(Part::Whole {
                        object: opened,
                        key: object.key.clone(),
                        crc32: *crc32,
                        blocks: blocks.clone(),
                    });
                }
                Piece::Stored {
                    object,
                    len,
                    blocks: Some(blocks),
                    ..
                } => {
                    let first_block = from / SEGMENT_BLOCK;
                    let start = first_block * SEGMENT_BLOCK;
                    let end = to.div_ceil(SEGMENT_BLOCK) * SEGMENT_BLOCK;
                    let end = end.min(*len);
                    let last_block = end.div_ceil(SEGMENT_BLOCK);
                    parts.push(Part::Checked {
                        object: store.open_object_range(object, start, end - start).await?,
                        key: object.key.clone(),
                        first_block,
                        crc32s: blocks[first_block as usize..last_block as usize].to_vec(),
                        skip: from - start,
                        len: to - from,
                    });
                }
                Piece::Stored { object, .. } => {
                    parts.push(Part::Slice(
                        store.open_object_range(object, from, to - from).await?,
                    ));
                }
            }
        }
        Ok(parts)
    }
}

/// Where a spliced package goes, from a blocking thread: blocks are handed on whole,
/// never copied.
pub trait BlockSink {
    fn send_block(&mut self, block: Bytes) -> io::Result<()>;
}

/// Discards what it is sent (for measuring the cost of assembly alone).
#[derive(Debug, Default)]
pub struct Discard;

impl BlockSink for Discard {
    fn send_block(&mut self, block: Bytes) -> io::Result<()> {
        drop(block);
        Ok(())
    }
}

/// Checks one block of a stored segment against the CRC-32 recorded for it.
fn check_block(block: &[u8], expected: u32, key: &str, index: u64) -> Result<(), ArchiveError> {
    let actual = crc32fast::hash(block);
    if actual != expected {
        return Err(ArchiveError::BlockMismatch {
            key: key.to_owned(),
            block: index,
            expected,
            actual,
        });
    }
    Ok(())
}

/// Writes opened parts of a spliced package, reading the stored segments block by block
/// on this thread, which must be a blocking one (streams are driven on `runtime`). One
/// thread reads, checks and hands on each block: no task hops between the disk and the
/// connection. A block whose bytes differ from what the segment's rule says is never
/// sent: the write fails before it (after an invalid block, when the bytes sent end on a
/// deflate boundary, as [`write_package`] does). A segment without block checksums is
/// checked whole and fails after it. CRC-32 rather than MD5: it keeps up with copying.
pub fn write_parts(
    out: &mut impl BlockSink,
    parts: Vec<Part>,
    runtime: &tokio::runtime::Handle,
) -> Result<(), ArchiveError> {
    for part in parts {
        match part {
            Part::Bytes(bytes) => out.send_block(bytes)?,
            Part::Slice(object) => {
                let mut blocks = object.into_blocks();
                while let Some(block) = blocks.next_block(runtime) {
                    out.send_block(block?)?;
                }
            }
            Part::Whole {
                object,
                key,
                blocks: Some(crc32s),
                ..
            } => {
                let mut blocks = object.into_blocks();
                for (index, expected) in crc32s.iter().enumerate() {
                    let block = match blocks.next_block(runtime) {
                        Some(block) => block?,
                        None => return Err(ArchiveError::Io(io::ErrorKind::UnexpectedEof.into())),
                    };
                    if let Err(error) = check_block(&block, *expected, &key, index as u64) {
                        // At the segment's start the bytes sent end on a deflate block
                        // boundary: an invalid block there stops every decoder.
                        if index == 0 {
                            let _ = out.send_block(Bytes::from_static(&INVALID_BLOCK));
                        }
                        return Err(error);
                    }
                    out.send_block(block)?;
                }
            }
            Part::Whole {
                object,
                key,
                crc32,
                blocks: None,
            } => {
                let mut digest = crc32fast::Hasher::new();
                let mut blocks = object.into_blocks();
                let mut failed = None;
                while let Some(block) = blocks.next_block(runtime) {
                    match block {
                        Ok(block) => {
                            digest.update(&block);
                            out.send_block(block)?;
                        }
                        Err(error) => {
                            failed = Some(error);
                            break;
                        }
                    }
                }
                let actual = digest.finalize();
                if failed.is_some() || actual != crc32 {
                    // Segments end byte-aligned: an invalid block right after stops every
                    // decoder, as in the streaming path.
                    let _ = out.send_block(Bytes::from_static(&INVALID_BLOCK));
                    return Err(match failed {
                        Some(error) => ArchiveError::Io(error),
                        None => ArchiveError::SegmentMismatch {
                            key,
                            expected: crc32,
                            actual,
                        },
                    });
                }
            }
            Part::Checked {
                object,
                key,
                first_block,
                crc32s,
                skip,
                len,
            } => {
                let mut blocks = object.into_blocks();
                let (mut skip, mut left) = (skip as usize, len as usize);
                for (at, expected) in crc32s.iter().enumerate() {
                    let block = match blocks.next_block(runtime) {
                        Some(block) => block?,
                        None => return Err(ArchiveError::Io(io::ErrorKind::UnexpectedEof.into())),
                    };
                    check_block(&block, *expected, &key, first_block + at as u64)?;
                    let end = block.len().min(skip + left);
                    out.send_block(block.slice(skip..end))?;
                    left -= end - skip;
                    skip = 0;
                }
            }
        }
    }
    Ok(())
}
