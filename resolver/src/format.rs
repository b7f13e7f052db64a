//! The fixed layout of a response body and the entity tag that names it.
//!
//! Invariant: a response's bytes depend only on its plan and these constants, so any
//! change to them must change [`ARCHIVE_FORMAT`] or [`METADATA_FORMAT`], which every
//! [`ETag`] covers. This module imports no other module of the crate.

use std::fmt;

use sha2::{Digest, Sha256};

/// Name of the JSON document that opens every package, and the metadata-only body.
pub const DETAILS_FILE_NAME: &str = "package_details.json";
/// Permission bits of every tar entry.
pub const TAR_ENTRY_MODE: u32 = 0o644;
/// Modification time of every tar entry, in seconds since the epoch.
pub const TAR_ENTRY_MTIME: u64 = 0;
/// Deflate level of `package_details.json`, the end of the archive, and every binary
/// whose rule names none (flate2's miniz_oxide backend).
pub const DEFLATE_LEVEL: u32 = 6;
/// Names everything besides the plan that decides an archive's bytes: the tar entry
/// layout above and how each entry is compressed. It goes into every package ETag, so
/// change it whenever any of the constants above or the compressor changes.
pub const ARCHIVE_FORMAT: &str = "fleetpack-archive/1 ustar mode=644 uid=0 gid=0 mtime=0 deflate=miniz_oxide level=6-or-per-entry segment-per-entry";
/// A short name of [`ARCHIVE_FORMAT`] for object keys: 8 hex digits of its SHA-256.
pub fn archive_format_id() -> String {
    hex::encode(&Sha256::digest(ARCHIVE_FORMAT.as_bytes())[..4])
}

/// The same for the metadata-only JSON body.
pub const METADATA_FORMAT: &str = "fleetpack-metadata/1";

/// A strong entity tag: 32 lowercase hex digits, a digest of everything that decides the
/// response's bytes, so every origin instance computes the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// The tag of a response whose deciding inputs hash to `sha256`: its first 16 bytes.
    pub(crate) fn from_sha256(sha256: &[u8; 32]) -> Self {
        ETag(hex::encode(&sha256[..16]))
    }

    /// The tag without quotes.
    pub fn opaque(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_format_names_the_entry_layout_constants() {
        // The ETag covers these constants only through ARCHIVE_FORMAT.
        assert!(ARCHIVE_FORMAT.contains(&format!(" mode={:o} ", TAR_ENTRY_MODE)));
        assert!(ARCHIVE_FORMAT.contains(&format!(" mtime={TAR_ENTRY_MTIME} ")));
        assert!(ARCHIVE_FORMAT.contains(&format!(" level={DEFLATE_LEVEL}-or-per-entry ")));
        assert_ne!(ARCHIVE_FORMAT, METADATA_FORMAT);
        assert_eq!(DETAILS_FILE_NAME, "package_details.json");
    }
}
