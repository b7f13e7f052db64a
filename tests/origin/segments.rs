//! Publishing compresses each binary's tar entry ahead of time into a deflate segment
//! stored beside it: the very bytes the origin writes for that entry in a package.

use fleetpack_resolver::ARCHIVE_FORMAT;
use md5::{Digest, Md5};

use crate::harness::{FULL_SAMPLE, Origin};

/// Where `needle` starts in `haystack`, if it is there.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_segments_are_the_bytes_packages_carry() {
    let origin = Origin::demo().await;
    let package = origin.get(&format!("/package?{FULL_SAMPLE}")).await;
    let details = origin
        .get(&format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly"))
        .await
        .json();
    let rules = origin.store.load_rules().await;
    assert_eq!(rules.len(), 9);
    let mut offsets = Vec::new();
    for rule in &rules {
        let segment = rule
            .segment
            .as_ref()
            .unwrap_or_else(|| panic!("{} {} has no segment", rule.app, rule.version));
        assert_eq!(segment.format, ARCHIVE_FORMAT);
        let bytes = origin.store.read(&segment.url).await;
        assert_eq!(bytes.len() as u64, segment.size);
        assert_eq!(hex::encode(Md5::digest(&bytes)), segment.md5);
        assert_eq!(crc32fast::hash(&bytes), segment.bytes_crc32);
        let selected = details[&rule.app]["latestVersion"] == rule.version.as_str();
        if selected {
            let at = find(&package.body, &bytes)
                .unwrap_or_else(|| panic!("the package lacks the segment of {}", rule.app));
            offsets.push((at, rule.app.clone()));
        }
    }
    offsets.sort();
    let order: Vec<&str> = offsets.iter().map(|(_, app)| app.as_str()).collect();
    assert_eq!(
        order,
        ["os_armv8", "modemFW", "scoreboard", "videoStreamer"]
    );
}
