//! A package whose binary cannot be sent intact is never delivered as if complete.

use http::{Method, StatusCode};

use crate::decode::{gnu_tar, python_tarfile};
use fleetpack_resolver::SEGMENT_BLOCK;
use fleetpack_store::demo::{DemoRelease, write_demo_binary};
use fleetpack_store::publish::Release;

use crate::harness::{
    FULL_SAMPLE, Origin, Response, TestStore, demo_binary, raw_exchange, request_allowing_abort,
};
use crate::segments::find;

/// What an aborted body may carry past its last real byte: the filler that pushes the
/// real bytes out of the connection's buffers.
const SINK_SLACK: usize = 2 * 64 * 1024;

const STORE_UNAVAILABLE: &str = "the package store is unavailable; retry later";

/// A package aborted after its status line: the connection was cut, no decoder reads
/// the bytes as a whole archive, and the origin counted an abort, not a completion.
async fn assert_cut_and_counted(origin: &Origin, response: &Response) {
    assert!(
        response.body_error.is_some(),
        "the body ended cleanly after {} bytes",
        response.body.len()
    );
    // A device that ignores the cut connection must still fail to decode: Python's `r|gz`
    // checks no gzip trailer, so the origin ends the bytes with an invalid deflate block.
    assert!(gnu_tar(&response.body).is_err(), "GNU tar read it whole");
    assert!(
        python_tarfile(&response.body).is_err(),
        "Python's tarfile read it whole"
    );
    assert_eq!(origin.metric("fleetpack_packages_aborted_total").await, 1);
    assert_eq!(origin.metric("fleetpack_packages_completed_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_changed_after_publish_aborts_the_package_mid_body() {
    let origin = Origin::demo_with_own_objects().await;
    origin.store.corrupt_segment("scoreboard", "1.0.0").await;

    let target = format!("/package?{FULL_SAMPLE}");
    let response = request_allowing_abort(origin.addr, Method::GET, &target, &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    let announced: usize = response.header("content-length").parse().expect("a length");
    assert!(
        response.body.len() < announced,
        "all {announced} bytes arrived"
    );
    assert_cut_and_counted(&origin, &response).await;
}

/// Flips one byte in block `block` of a segment: same length, one bad block.
async fn corrupt_block(origin: &Origin, app: &str, version: &str, block: usize) {
    origin
        .store
        .tamper_segment(app, version, |mut bytes| {
            bytes[block * SEGMENT_BLOCK as usize + 100] ^= 1;
            Some(bytes)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_inside_a_corrupted_block_is_aborted_and_other_blocks_still_serve() {
    // A binary of several blocks (the demo's are smaller than one), incompressible.
    let store = TestStore::demo(true).await;
    let files = tempfile::tempdir().expect("temp dir");
    let path = files.path().join("big.bin");
    let big = DemoRelease {
        app: "bigApp",
        channel: "prod",
        version: "1.0",
        cpu_arch: None,
        attributes: &["big"],
    };
    write_demo_binary(&big, 5 * SEGMENT_BLOCK, &path).expect("write");
    let release = Release {
        attributes: vec!["big".to_owned()],
        ..Release::new("bigApp", "prod", "1.0")
    };
    store.publish(&release, &path).await;
    let origin = Origin::serve(store).await;
    let target = "/package?cpuArch=armv8&attrBig=prod";
    let package = origin.get(target).await;
    assert_eq!(package.status, StatusCode::OK);
    let rule = origin
        .store
        .load_rules()
        .await
        .into_iter()
        .find(|rule| rule.app == "bigApp")
        .expect("bigApp");
    let segment = rule.segment.expect("a segment");
    assert!(
        segment.size > 3 * SEGMENT_BLOCK,
        "a segment of several blocks"
    );
    let at =
        find(&package.body, &origin.store.read(&segment.url).await).expect("the segment") as u64;
    corrupt_block(&origin, "bigApp", "1.0", 2).await;

    // Inside block 2: never a complete 206.
    let (first, last) = (at + 2 * SEGMENT_BLOCK + 50, at + 2 * SEGMENT_BLOCK + 150);
    let range = format!("bytes={first}-{last}");
    let cut = request_allowing_abort(origin.addr, Method::GET, target, &[("range", &range)]).await;
    assert_eq!(cut.status, StatusCode::PARTIAL_CONTENT);
    assert!(cut.body_error.is_some(), "the range ended cleanly");
    assert!(cut.body.len() < 101, "all {} bytes arrived", cut.body.len());
    assert_eq!(origin.metric("fleetpack_packages_aborted_total").await, 1);

    // Blocks 0 and 1 are as published, across their boundary.
    let (first, last) = (at + SEGMENT_BLOCK - 70, at + SEGMENT_BLOCK + 70);
    let good = origin
        .get_with(target, &[("range", &format!("bytes={first}-{last}"))])
        .await;
    assert_eq!(good.status, StatusCode::PARTIAL_CONTENT);
    assert!(good.body_error.is_none());
    assert_eq!(
        &good.body[..],
        &package.body[first as usize..=last as usize]
    );

    // The whole package stops before the bad block and no decoder reads it.
    let whole = request_allowing_abort(origin.addr, Method::GET, target, &[]).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body_error.is_some(), "the package ended cleanly");
    assert!(whole.body.len() <= (at + 2 * SEGMENT_BLOCK) as usize + SINK_SLACK);
    assert!(gnu_tar(&whole.body).is_err(), "GNU tar read it whole");
    assert!(
        python_tarfile(&whole.body).is_err(),
        "Python's tarfile read it whole"
    );
    assert_eq!(origin.metric("fleetpack_packages_aborted_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_segment_falls_back_to_the_same_bytes_compressed_live() {
    let origin = Origin::demo_with_own_objects().await;
    let target = format!("/package?{FULL_SAMPLE}");
    let spliced = origin.get(&target).await;
    assert_eq!(spliced.header("accept-ranges"), "bytes");
    origin
        .store
        .tamper_segment("modemFW", "1.0", |_| None)
        .await;
    let live = origin.get(&target).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.header("transfer-encoding"), "chunked");
    assert_eq!(live.header("accept-ranges"), "none");
    assert_eq!(live.etag(), spliced.etag());
    assert!(live.body == spliced.body, "the fallback sent other bytes");
    assert_eq!(origin.metric("fleetpack_spliced_fallbacks_total").await, 1);

    // A segment of another length than its rule says is not used either.
    origin
        .store
        .tamper_segment("scoreboard", "1.0.0", |_| Some(b"short".to_vec()))
        .await;
    let live = origin.get(&target).await;
    assert!(live.body == spliced.body, "the fallback sent other bytes");
    assert_eq!(origin.metric("fleetpack_spliced_fallbacks_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_changed_after_publish_aborts_the_package_mid_body() {
    let origin = Origin::demo_streaming().await;
    let original = &demo_binary("scoreboard", "prod").bytes;
    let forged: Vec<u8> = original.iter().map(|b| !b).collect();
    origin
        .store
        .tamper("scoreboard", "1.0.0", Some(&forged))
        .await;

    let target = format!("/package?{FULL_SAMPLE}");
    let response = request_allowing_abort(origin.addr, Method::GET, &target, &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("transfer-encoding"), "chunked");
    assert_cut_and_counted(&origin, &response).await;

    let wire = raw_exchange(
        origin.addr,
        &format!("GET {target} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(wire.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        !wire.ends_with(b"\r\n0\r\n\r\n"),
        "the chunked body was terminated"
    );
    assert_eq!(origin.metric("fleetpack_packages_aborted_total").await, 2);

    // Packages without that binary are unaffected.
    let unaffected = origin.get("/package?cpuArch=armv8&attrCellular=prod").await;
    assert_eq!(unaffected.status, StatusCode::OK);
    assert_eq!(origin.metric("fleetpack_packages_completed_total").await, 1);
}

async fn assert_503_before_body(origin: &Origin) {
    let response = origin.get(&format!("/package?{FULL_SAMPLE}")).await;
    response.assert_error(StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE);
    assert_eq!(response.header("retry-after"), "5");
    assert_eq!(response.header("cache-control"), "no-store");
    assert_eq!(
        origin
            .metric("fleetpack_responses_total{status=\"503\"}")
            .await,
        1
    );
    assert_eq!(origin.metric("fleetpack_packages_started_total").await, 0);
    // Metadata needs no binary.
    let metadata = origin
        .get(&format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly"))
        .await;
    assert_eq!(metadata.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_is_503_with_retry_after_before_any_body() {
    let origin = Origin::demo_streaming().await;
    // Once the rules are served: a snapshot built after the object went leaves its rule
    // out instead.
    assert_eq!(origin.get("/readyz").await.status, StatusCode::OK);
    origin.store.tamper("modemFW", "1.0", None).await;
    assert_503_before_body(&origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_of_another_length_is_503_before_any_body() {
    let origin = Origin::demo_streaming().await;
    let short = &demo_binary("videoStreamer", "prod").bytes[..1000];
    origin
        .store
        .tamper("videoStreamer", "0.0.1", Some(short))
        .await;
    assert_503_before_body(&origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_package_reads_no_objects() {
    let origin = Origin::demo_with_own_objects().await;
    let target = format!("/package?{FULL_SAMPLE}");
    let before = request_allowing_abort(origin.addr, Method::HEAD, &target, &[]).await;
    origin.store.tamper("modemFW", "1.0", None).await;
    origin
        .store
        .tamper_segment("modemFW", "1.0", |_| None)
        .await;
    let head = request_allowing_abort(origin.addr, Method::HEAD, &target, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-type"), "application/gzip");
    assert_eq!(head.header("etag"), before.header("etag"));
    assert_eq!(
        head.header("content-length"),
        before.header("content-length")
    );
    assert_eq!(
        origin.get(&target).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
