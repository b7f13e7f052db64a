//! A binary on its own, as `/binaries/<sha256>` sends it: read block by block on a
//! blocking thread and checked against its SHA-256 before its last block leaves, so a
//! binary that differs from what was published never arrives whole.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::StoreObject;
use crate::archive::ArchiveError;
use crate::splice::BlockSink;

/// Writes `object` (stored under `key`) to `out`, holding back one block until it and
/// every byte before it are hashed: a SHA-256 other than `sha256` (lowercase hex) fails
/// before the last block is sent. Fewer bytes than the object's length fail too.
pub fn write_checked(
    out: &mut impl BlockSink,
    object: StoreObject,
    key: &str,
    sha256: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<(), ArchiveError> {
    let mut digest = Sha256::new();
    let mut held: Option<Bytes> = None;
    let mut blocks = object.into_blocks();
    while let Some(block) = blocks.next_block(runtime) {
        let block = block?;
        digest.update(&block);
        if let Some(previous) = held.replace(block) {
            out.send_block(previous)?;
        }
    }
    let actual = hex::encode(digest.finalize());
    if actual != sha256 {
        return Err(ArchiveError::DigestMismatch {
            key: key.to_owned(),
            digest: "SHA-256",
            expected: sha256.to_owned(),
            actual,
        });
    }
    if let Some(last) = held {
        out.send_block(last)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what it is sent.
    #[derive(Default)]
    struct Kept(Vec<u8>);

    impl BlockSink for Kept {
        fn send_block(&mut self, block: Bytes) -> std::io::Result<()> {
            self.0.extend_from_slice(&block);
            Ok(())
        }
    }

    /// A binary of several blocks.
    fn binary() -> Vec<u8> {
        (0..700_000u32).map(|n| (n % 251) as u8).collect()
    }

    /// What `write_checked` sends of `data` stored with length `len`, checked against
    /// `sha256`, and how it ended.
    fn sent(data: Vec<u8>, len: u64, sha256: String) -> (Vec<u8>, Result<(), ArchiveError>) {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let handle = runtime.handle().clone();
        runtime.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let mut kept = Kept::default();
                let object = StoreObject::new(len, std::io::Cursor::new(data));
                let written = write_checked(&mut kept, object, "app_1.0", &sha256, &handle);
                (kept.0, written)
            })
            .await
            .expect("the writer ran")
        })
    }

    #[test]
    fn a_binary_as_published_is_sent_whole() {
        let data = binary();
        let sha256 = hex::encode(Sha256::digest(&data));
        let (out, written) = sent(data.clone(), data.len() as u64, sha256);
        written.expect("sent");
        assert_eq!(out, data);
    }

    #[test]
    fn a_changed_binary_never_arrives_whole() {
        let published = binary();
        let sha256 = hex::encode(Sha256::digest(&published));
        let mut changed = published.clone();
        // In the last block: everything before it has been sent when the check fails.
        *changed.last_mut().expect("bytes") ^= 1;
        let (out, written) = sent(changed, published.len() as u64, sha256);
        let error = written.expect_err("a changed binary fails");
        assert!(
            matches!(error, ArchiveError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("SHA-256"), "{error}");
        assert!(out.len() < published.len(), "{} bytes sent", out.len());
    }

    #[test]
    fn a_short_binary_fails() {
        let data = binary();
        let sha256 = hex::encode(Sha256::digest(&data));
        let (out, written) = sent(data[..1000].to_vec(), data.len() as u64, sha256);
        assert!(written.is_err());
        assert!(out.len() < data.len());
    }
}
