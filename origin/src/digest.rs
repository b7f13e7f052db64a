//! MD5, SHA-256 and CRC-32 of binaries, computed as they are read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::store::ObjectDigests;

/// Reads the file at `path` once and returns its digests and length.
pub fn digest_file(path: &Path) -> io::Result<ObjectDigests> {
    let mut file = File::open(path)?;
    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    let mut crc32 = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            break;
        }
        md5.update(&buf[..read]);
        sha256.update(&buf[..read]);
        crc32.update(&buf[..read]);
        size += read as u64;
    }
    Ok(ObjectDigests {
        md5: hex::encode(md5.finalize()),
        sha256: hex::encode(sha256.finalize()),
        crc32: crc32.finalize(),
        size,
    })
}
