//! Binaries on their own (`/binaries/<sha256>`, the `downloadUrl` of metadata answers)
//! and the device's list in the query (`installed=`), on the store of this pass.

use std::time::Duration;

use http::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::harness::{
    DEMO_SIZE, FULL_SAMPLE, Origin, demo_binary, eventually, request, request_allowing_abort,
};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn binary_path(app: &str, channel: &str) -> String {
    format!("/binaries/{}", demo_binary(app, channel).sha256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_download_url_gives_the_binary_its_entry_describes() {
    let origin = Origin::demo().await;
    let metadata = origin
        .get(&format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly"))
        .await
        .json();
    let entries = metadata.as_object().expect("an object");
    assert_eq!(entries.len(), 4);
    for (app, entry) in entries {
        let url = entry["downloadUrl"].as_str().expect("a downloadUrl");
        assert_eq!(
            url,
            format!("/binaries/{}", entry["sha256"].as_str().expect("sha256"))
        );
        let response = origin.get(url).await;
        assert_eq!(response.status, StatusCode::OK, "{app}");
        assert_eq!(
            hex::encode(Sha256::digest(&response.body)),
            entry["sha256"],
            "{app}"
        );
        assert_eq!(response.body.len() as u64, entry["size"], "{app}");
        assert_eq!(response.header("content-type"), "application/octet-stream");
        assert_eq!(response.header("cache-control"), IMMUTABLE);
        assert_eq!(response.header("accept-ranges"), "bytes");
        assert_eq!(
            response.header("etag"),
            format!("\"{}\"", entry["sha256"].as_str().expect("sha256"))
        );
        assert!(!response.has_header("vary"), "{app}");
    }
    eventually(Duration::from_secs(5), "four binaries counted", || async {
        origin.metric("fleetpack_binaries_completed_total").await == 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_answer_ranges_validators_and_head_like_any_immutable_file() {
    let origin = Origin::demo_with_own_objects().await;
    let binary = demo_binary("scoreboard", "prod");
    let path = binary_path("scoreboard", "prod");
    let etag = format!("\"{}\"", binary.sha256);

    let part = origin
        .get_with(&path, &[("range", "bytes=1000-1999")])
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.header("content-range"),
        format!("bytes 1000-1999/{DEMO_SIZE}")
    );
    assert_eq!(&part.body[..], &binary.bytes[1000..2000]);
    let resumed = origin
        .get_with(&path, &[("range", "bytes=1000-"), ("if-range", &etag)])
        .await;
    assert_eq!(resumed.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&resumed.body[..], &binary.bytes[1000..]);
    let other = origin
        .get_with(
            &path,
            &[("range", "bytes=1000-"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(&other.body[..], &binary.bytes[..]);
    let past = origin
        .get_with(&path, &[("range", &format!("bytes={DEMO_SIZE}-"))])
        .await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), format!("bytes */{DEMO_SIZE}"));

    let revalidated = origin.get_with(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header("etag"), etag);
    assert!(revalidated.body.is_empty());

    // HEAD reads nothing: it answers with the object gone from the store, GET cannot.
    origin.store.tamper("scoreboard", "1.0.0", None).await;
    let head = request(origin.addr, Method::HEAD, &path, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), DEMO_SIZE.to_string());
    assert_eq!(head.header("etag"), etag);
    assert!(head.body.is_empty());
    let get = origin.get(&path).await;
    assert_eq!(get.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_binaries_of_releases_in_the_rules_are_reachable() {
    let origin = Origin::demo().await;
    let unknown = origin.get(&format!("/binaries/{}", "0".repeat(64))).await;
    unknown.assert_error(
        StatusCode::NOT_FOUND,
        "no release in the current rules has this binary; take `downloadUrl` from a metadata answer (payloadType=metadataOnly)",
    );
    let sha256 = &demo_binary("modemFW", "prod").sha256;
    for path in [
        format!("/binaries/{}", sha256.to_ascii_uppercase()),
        format!("/binaries/{}", &sha256[..63]),
        format!("/binaries/{sha256}/x"),
        "/binaries/../rules.json".to_owned(),
        "/binaries/".to_owned(),
    ] {
        let response = origin.get(&path).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(response.text().contains("does not name a binary"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_changed_in_the_store_never_arrives_whole() {
    let origin = Origin::demo_with_own_objects().await;
    let binary = demo_binary("modemFW", "prod");
    let mut changed = binary.bytes.clone();
    // Near the end: every block before it has been sent when the check fails.
    let last = changed.len() - 10;
    changed[last] ^= 1;
    origin.store.tamper("modemFW", "1.0", Some(&changed)).await;

    let path = binary_path("modemFW", "prod");
    let response = request_allowing_abort(origin.addr, Method::GET, &path, &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.body_error.is_some(), "the body ended cleanly");
    assert!(
        response.body.len() < binary.bytes.len(),
        "all {} bytes arrived",
        binary.bytes.len()
    );
    assert_eq!(origin.metric("fleetpack_binaries_aborted_total").await, 1);
    assert_eq!(origin.metric("fleetpack_binaries_completed_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_in_the_query_answers_as_if_none_match_does_without_vary() {
    let origin = Origin::demo().await;
    let os = demo_binary("os_armv8", "prod");
    let modem = demo_binary("modemFW", "prod");
    let digests = format!("{},{}", os.md5, modem.sha256);
    for payload in ["", "&payloadType=metadataOnly"] {
        let base = format!("/package?{FULL_SAMPLE}{payload}");
        let header = origin.get_with(&base, &[("if-none-match", &digests)]).await;
        let query = origin
            .get(&format!(
                "{base}&installed={}",
                digests.to_ascii_uppercase()
            ))
            .await;
        assert_eq!(header.status, StatusCode::OK, "{payload}");
        assert_eq!(query.status, StatusCode::OK, "{payload}");
        assert_eq!(query.body, header.body, "{payload}");
        assert_eq!(query.etag(), header.etag(), "{payload}");
        assert_eq!(header.header("vary"), "if-none-match", "{payload}");
        assert!(!query.has_header("vary"), "{payload}");

        // With installed=, If-None-Match is a validator only: the response's ETag
        // makes it 304, a digest changes nothing.
        let listed = format!("{base}&installed={digests}");
        let revalidated = origin
            .get_with(&listed, &[("if-none-match", query.etag())])
            .await;
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED, "{payload}");
        assert_eq!(revalidated.etag(), query.etag(), "{payload}");
        assert!(!revalidated.has_header("vary"), "{payload}");
        let scoreboard = &demo_binary("scoreboard", "prod").md5;
        let digest_in_header = origin
            .get_with(&listed, &[("if-none-match", scoreboard)])
            .await;
        assert_eq!(digest_in_header.body, query.body, "{payload}");
    }
    // An empty list: the device has nothing.
    let nothing = origin
        .get(&format!("/package?{FULL_SAMPLE}&installed="))
        .await;
    let plain = origin.get(&format!("/package?{FULL_SAMPLE}")).await;
    assert_eq!(nothing.body, plain.body);
    assert_eq!(nothing.etag(), plain.etag());
    let refused = origin
        .get(&format!(
            "/package?{FULL_SAMPLE}&installed=%22{}%22",
            os.md5
        ))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("installed"), "{}", refused.text());
}
