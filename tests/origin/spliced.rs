//! Full payloads spliced from the segments stored at publish time: one gzip member with
//! an exact length, byte for byte what the live path compresses, and single ranges for
//! resumable downloads (docs/splicing.md).

use std::time::Duration;

use fleetpack_store::demo::{DemoRelease, write_demo_binary};
use fleetpack_store::publish::Release;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::decode::{Member, decode_all, flate2_one_member, gnu_tar, read_tar, zlib_one_member};
use crate::harness::{
    FULL_SAMPLE, Origin, Response, SAMPLE_QUERIES, TestStore, demo_binary, eventually, object_keys,
    package_details_of, request,
};
use crate::segments::find;

/// gzip header of every package (docs/splicing.md): deflate, no flags, MTIME 0, OS 255.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// The empty final deflate block with fixed codes, just before the 8-byte trailer.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// xorshift64: the same "random" cuts and ranges on every run, without a crate.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..bound` (the modulo bias does not matter here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn package(query: &str) -> String {
    format!("/package?{query}")
}

/// A 200 full payload as the spliced path sends it.
fn assert_spliced(response: &Response, label: &str) {
    assert_eq!(response.status, StatusCode::OK, "{label}");
    assert_eq!(
        response.header("content-type"),
        "application/gzip",
        "{label}"
    );
    assert_eq!(
        response.header("content-length"),
        response.body.len().to_string(),
        "{label}"
    );
    assert_eq!(response.header("accept-ranges"), "bytes", "{label}");
    assert!(!response.has_header("transfer-encoding"), "{label}");
    assert!(!response.has_header("content-range"), "{label}");
    response.etag();
}

/// A 200 full payload as the live path streams it: chunked, no length, no ranges.
fn assert_live(response: &Response, label: &str) {
    assert_eq!(response.status, StatusCode::OK, "{label}");
    assert_eq!(
        response.header("content-type"),
        "application/gzip",
        "{label}"
    );
    assert_eq!(response.header("transfer-encoding"), "chunked", "{label}");
    assert!(!response.has_header("content-length"), "{label}");
    assert!(!response.has_header("content-range"), "{label}");
    assert_eq!(response.header("accept-ranges"), "none", "{label}");
    response.etag();
}

/// Equal bytes, or a message that says where they part.
fn assert_same_bytes(actual: &[u8], expected: &[u8], label: &str) {
    if actual != expected {
        let at = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{label}: {} bytes, expected {}; first difference at byte {at}",
            actual.len(),
            expected.len()
        );
    }
}

/// A 206 for bytes `first..=last` of `full`, with the headers of the 200.
fn assert_partial(response: &Response, full: &Response, first: u64, last: u64, label: &str) {
    let len = full.body.len();
    assert_eq!(
        response.status,
        StatusCode::PARTIAL_CONTENT,
        "{label}: {:?}",
        response.headers
    );
    assert_eq!(
        response.header("content-range"),
        format!("bytes {first}-{last}/{len}"),
        "{label}"
    );
    assert_eq!(
        response.header("content-length"),
        (last - first + 1).to_string(),
        "{label}"
    );
    assert_eq!(response.etag(), full.etag(), "{label}");
    for name in ["content-type", "cache-control"] {
        assert_eq!(response.header(name), full.header(name), "{label}: {name}");
    }
    let (first, last) = (
        usize::try_from(first).expect("usize"),
        usize::try_from(last).expect("usize"),
    );
    assert_same_bytes(&response.body, &full.body[first..=last], label);
}

/// A 200 that ignored the request's Range: the whole package.
fn assert_whole(response: &Response, full: &Response, label: &str) {
    assert_spliced(response, label);
    assert_eq!(response.etag(), full.etag(), "{label}");
    assert_same_bytes(&response.body, &full.body, label);
}

/// The demo fleet with its rules' segments removed, as before `seed segments` ran: its
/// origin compresses every package as it streams (the live path). On the AWS pass the
/// binaries are in the bucket [`Origin::demo`] uses, so the packages name the same urls.
async fn live_origin() -> Origin {
    let store = TestStore::demo(false).await;
    store.strip_segments().await;
    let rules = store.load_rules().await;
    assert!(rules.iter().all(|rule| rule.segment.is_none()));
    Origin::serve(store).await
}

/// The files a package must hold: `package_details.json` (the metadataOnly body), then
/// each binary it lists with status 200, in its order.
async fn expected_members(origin: &Origin, query: &str, headers: &[(&str, &str)]) -> Vec<Member> {
    let metadata = origin
        .get_with(
            &package(&format!("{query}&payloadType=metadataOnly")),
            headers,
        )
        .await;
    assert_eq!(metadata.status, StatusCode::OK, "{query}");
    let details = metadata.json();
    let mut members = vec![Member::expected(
        "package_details.json",
        &package_details_of(&metadata.body),
    )];
    for app in object_keys(&metadata.body) {
        if details[&app]["status_code"] == 304 {
            continue;
        }
        let channel = details[&app]["channel"].as_str().expect("channel");
        let binary = demo_binary(&app, channel);
        let name = format!("{app}_{}", binary.release.version);
        members.push(Member::expected(&name, &binary.bytes));
    }
    members
}

/// Offsets in `body` where one piece of the splice ends and the next begins: after the
/// gzip header, around each stored segment, before the final block and the trailer.
async fn piece_boundaries(origin: &Origin, body: &[u8]) -> Vec<u64> {
    let len = body.len() as u64;
    let mut boundaries = vec![10, len - 10, len - 8];
    let mut found = 0;
    for rule in origin.store.load_rules().await {
        let segment = rule.segment.expect("every demo rule has a segment");
        let bytes = origin.store.read(&segment.url).await;
        if let Some(at) = find(body, &bytes) {
            found += 1;
            boundaries.extend([at as u64, (at + bytes.len()) as u64]);
        }
    }
    assert_eq!(found, 4, "the full sample sends four stored segments");
    boundaries.sort_unstable();
    boundaries.dedup();
    boundaries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_package_is_the_live_package_with_an_exact_length() {
    let spliced = Origin::demo().await;
    let live = live_origin().await;
    let md5 = |app| demo_binary(app, "prod").md5.as_str();
    let marked = [
        (SAMPLE_QUERIES[2], md5("scoreboard").to_owned()),
        (
            FULL_SAMPLE,
            format!("\"{}\", {}", md5("os_armv8"), md5("modemFW")),
        ),
    ];
    let cases = SAMPLE_QUERIES.iter().map(|&query| (query, None)).chain(
        marked
            .iter()
            .map(|(query, tags)| (*query, Some(tags.as_str()))),
    );
    for (query, tags) in cases {
        let label = format!("{query} If-None-Match: {tags:?}");
        let headers: Vec<(&str, &str)> = tags.iter().map(|tags| ("if-none-match", *tags)).collect();
        let from_segments = spliced.get_with(&package(query), &headers).await;
        let compressed = live.get_with(&package(query), &headers).await;
        assert_same_bytes(&from_segments.body, &compressed.body, &label);
        assert_eq!(from_segments.etag(), compressed.etag(), "{label}");
        let members = gnu_tar(&from_segments.body).expect("GNU tar reads the package");
        assert_eq!(
            members,
            expected_members(&spliced, query, &headers).await,
            "{label}"
        );
        if tags.is_some() {
            // package_details.json and the two binaries not marked.
            assert_eq!(members.len(), 3, "{label}: {members:?}");
        }
        for name in ["content-type", "content-disposition", "cache-control"] {
            assert_eq!(
                from_segments.header(name),
                compressed.header(name),
                "{label}: {name}"
            );
        }
        assert_spliced(&from_segments, &label);
        assert_live(&compressed, &label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_package_is_one_gzip_member_that_every_decoder_reads() {
    let origin = Origin::demo().await;
    for query in SAMPLE_QUERIES {
        let response = origin.get(&package(query)).await;
        let body = &response.body[..];
        assert_eq!(
            decode_all(body),
            expected_members(&origin, query, &[]).await,
            "{query}"
        );
        let tar = flate2_one_member(body).expect("one gzip member");
        let len = body.len();
        assert_eq!(body[..10], GZIP_HEADER, "{query}");
        assert_eq!(body[len - 10..len - 8], FINAL_BLOCK, "{query}");
        let isize = u32::from_le_bytes(body[len - 4..].try_into().expect("4 bytes"));
        assert_eq!(isize, tar.len() as u32, "{query}");
        assert_spliced(&response, query);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_spliced_package_has_the_get_headers_and_no_body() {
    let origin = Origin::demo().await;
    let headers = |response: &Response| {
        let mut lines: Vec<(String, String)> = response
            .headers
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(name, value)| {
                let value = value.to_str().expect("ASCII header");
                (name.to_string(), value.to_owned())
            })
            .collect();
        lines.sort();
        lines
    };
    for query in [SAMPLE_QUERIES[0], FULL_SAMPLE] {
        let get = origin.get(&package(query)).await;
        let head = request(origin.addr, Method::HEAD, &package(query), &[]).await;
        assert_eq!(head.status, StatusCode::OK, "{query}");
        assert!(head.body.is_empty(), "{query}");
        assert_eq!(headers(&head), headers(&get), "{query}");
        assert_spliced(&get, query);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_are_206_slices_of_the_full_body() {
    let origin = Origin::demo().await;
    let target = package(FULL_SAMPLE);
    let full = origin.get(&target).await;
    assert_spliced(&full, FULL_SAMPLE);
    let len = full.body.len() as u64;

    // (Range header, first byte, last byte)
    let mut ranges: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".to_owned(), 0, 0),
        ("bytes=0-".to_owned(), 0, len - 1),
        ("bytes=-1".to_owned(), len - 1, len - 1),
        (format!("bytes={}-{}", len - 1, len - 1), len - 1, len - 1),
        (format!("bytes={}-", len - 1), len - 1, len - 1),
        (format!("bytes=0-{}", len - 1), 0, len - 1),
        (format!("bytes=-{len}"), 0, len - 1),
        ("bytes=10-".to_owned(), 10, len - 1),
        ("bytes=-10".to_owned(), len - 10, len - 1),
        // RFC 9110 14.1.2: a last position past the end, or a suffix longer than the
        // representation, stops at its end.
        (
            format!("bytes={}-{}", len - 5, len + 1000),
            len - 5,
            len - 1,
        ),
        (format!("bytes=-{}", len + 1000), 0, len - 1),
    ];
    let boundaries = piece_boundaries(&origin, &full.body).await;
    for &at in &boundaries {
        ranges.push((format!("bytes={}-{at}", at - 1), at - 1, at));
        ranges.push((format!("bytes={at}-{at}"), at, at));
        let (first, last) = (at.saturating_sub(100), (at + 99).min(len - 1));
        ranges.push((format!("bytes={first}-{last}"), first, last));
    }
    // Whole pieces between a first and a last partial one.
    for pair in boundaries.windows(3) {
        let (first, last) = (pair[0] - 3, (pair[2] + 2).min(len - 1));
        ranges.push((format!("bytes={first}-{last}"), first, last));
    }
    let mut random = XorShift(0x5eed_f1ee_7ac0_ffee);
    for _ in 0..32 {
        let first = random.below(len);
        let last = first + random.below(len - first);
        ranges.push((format!("bytes={first}-{last}"), first, last));
    }
    for _ in 0..6 {
        let suffix = 1 + random.below(len);
        ranges.push((format!("bytes=-{suffix}"), len - suffix, len - 1));
    }
    for (range, first, last) in ranges {
        let partial = origin.get_with(&target, &[("range", &range)]).await;
        assert_partial(&partial, &full, first, last, &range);
    }

    // A package without a binary the device has: ranges of that smaller package.
    let known = [(
        "if-none-match",
        demo_binary("scoreboard", "prod").md5.as_str(),
    )];
    let smaller = origin.get_with(&target, &known).await;
    assert_spliced(&smaller, "If-None-Match");
    assert!(smaller.body.len() < full.body.len());
    let len = smaller.body.len() as u64;
    for _ in 0..4 {
        let first = random.below(len);
        let last = first + random.below(len - first);
        let range = format!("bytes={first}-{last}");
        let partial = origin
            .get_with(&target, &[known[0], ("range", &range)])
            .await;
        assert_partial(&partial, &smaller, first, last, &range);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_range_is_416_with_the_full_length() {
    let origin = Origin::demo().await;
    let target = package(FULL_SAMPLE);
    let full = origin.get(&target).await;
    let len = full.body.len();
    for range in [
        format!("bytes={len}-"),
        format!("bytes={len}-{}", len + 10),
        format!("bytes={}-{}", len + 1000, len + 2000),
        "bytes=-0".to_owned(),
    ] {
        let response = origin.get_with(&target, &[("range", &range)]).await;
        assert_eq!(
            response.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}: {:?}",
            response.headers
        );
        assert_eq!(
            response.header("content-range"),
            format!("bytes */{len}"),
            "{range}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_or_an_invalid_range_give_the_full_body() {
    let origin = Origin::demo().await;
    let target = package(FULL_SAMPLE);
    let full = origin.get(&target).await;
    assert_spliced(&full, FULL_SAMPLE);
    for range in [
        // Several ranges: no multipart/byteranges, the whole package.
        "bytes=0-1,5-9",
        "bytes=0-0, -1",
        "bytes=-1,0-",
        // Not a byte range at all.
        "bytes=x-y",
        "items=0-1",
        "bytes=",
        "bytes=-",
        "bytes 0-1",
        "bytes=1.5-3",
        // RFC 9110 14.1.1: a last position before the first makes the range invalid.
        "bytes=5-2",
    ] {
        let response = origin.get_with(&target, &[("range", range)]).await;
        assert_whole(&response, &full, range);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_allows_a_range_only_with_the_current_etag() {
    let origin = Origin::demo().await;
    let target = package(FULL_SAMPLE);
    let full = origin.get(&target).await;
    let etag = full.etag();
    let range = ("range", "bytes=100-199");

    let partial = origin.get_with(&target, &[range, ("if-range", etag)]).await;
    assert_partial(&partial, &full, 100, 199, "If-Range: current ETag");

    let other = origin.get(&package("cpuArch=armv8&os=beta")).await;
    let opaque = etag.trim_matches('"');
    let weak = format!("W/{etag}");
    let listed = format!("{etag}, {}", other.etag());
    for if_range in [
        other.etag(),
        &weak,
        opaque,
        &listed,
        "*",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Fri, 01 Jan 2100 00:00:00 GMT",
    ] {
        let response = origin
            .get_with(&target, &[range, ("if-range", if_range)])
            .await;
        assert_whole(&response, &full, &format!("If-Range: {if_range}"));
    }

    // RFC 9110 13.2.2: If-Range is evaluated before Range; when it fails, the Range,
    // satisfiable or not, is ignored.
    let len = full.body.len();
    let unsatisfiable = format!("bytes={len}-");
    let response = origin
        .get_with(
            &target,
            &[("range", &unsatisfiable), ("if-range", other.etag())],
        )
        .await;
    assert_whole(&response, &full, "stale If-Range, unsatisfiable Range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_cut_at_a_random_byte_resumes_with_range_and_if_range() {
    let origin = Origin::demo().await;
    let mut random = XorShift(0xc0ff_ee15_600d);
    let cuts = SAMPLE_QUERIES
        .iter()
        .map(|&query| (query, 1))
        .chain([(FULL_SAMPLE, 4)]);
    for (query, times) in cuts {
        let target = package(query);
        let full = origin.get(&target).await;
        assert_spliced(&full, query);
        let expected = gnu_tar(&full.body).expect("GNU tar reads the package");
        let len = full.body.len() as u64;
        for _ in 0..times {
            // What arrived before the link failed: at least one byte, never all of them.
            let cut = 1 + random.below(len - 1);
            let label = format!("{query} cut at {cut} of {len}");
            let mut resumed = full.body[..usize::try_from(cut).expect("usize")].to_vec();
            let rest = origin
                .get_with(
                    &target,
                    &[
                        ("range", &format!("bytes={cut}-")),
                        ("if-range", full.etag()),
                    ],
                )
                .await;
            assert_partial(&rest, &full, cut, len - 1, &label);
            resumed.extend_from_slice(&rest.body);
            assert_same_bytes(&resumed, &full.body, &label);
            assert_eq!(
                gnu_tar(&resumed).expect("GNU tar reads the resumed package"),
                expected,
                "{label}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_path_ignores_range_and_says_accept_ranges_none() {
    let live = live_origin().await;
    let target = package(FULL_SAMPLE);
    let full = live.get(&target).await;
    assert_live(&full, "no Range");
    let etag = full.etag();
    for headers in [
        vec![("range", "bytes=0-99")],
        vec![("range", "bytes=-1")],
        vec![("range", "bytes=100-")],
        vec![("range", "bytes=100-199"), ("if-range", etag)],
    ] {
        let label = format!("{headers:?}");
        let response = live.get_with(&target, &headers).await;
        assert_live(&response, &label);
        assert_eq!(response.etag(), etag, "{label}");
        assert_same_bytes(&response.body, &full.body, &label);
    }
}

/// The decoders above would notice what they are here to catch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_checks_refuse_a_second_member_a_cut_and_a_bad_tar() {
    let origin = Origin::demo().await;
    let body = origin.get(&package(SAMPLE_QUERIES[0])).await.body;
    let tar = flate2_one_member(&body).expect("one gzip member");
    assert_eq!(read_tar(&tar).expect("a valid tar").len(), 2);

    let twice = [&body[..], &body[..]].concat();
    let cut = &body[..body.len() - 1];
    for (label, bytes) in [("two members", &twice[..]), ("cut", cut)] {
        assert!(zlib_one_member(bytes).is_err(), "zlib took {label}");
        assert!(flate2_one_member(bytes).is_err(), "flate2 took {label}");
    }
    let mut renamed = tar.clone();
    renamed[0] ^= 1;
    let end = tar.len() - 512;
    for (label, bytes) in [
        ("bad checksum", &renamed[..]),
        ("one end block", &tar[..end]),
        ("a block after the end", &[&tar[..], &[0; 512]].concat()[..]),
    ] {
        assert!(read_tar(bytes).is_err(), "read_tar took {label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_leaves_mid_package_is_counted_as_gone_not_as_a_failure() {
    // Far more than the socket buffers hold, so the origin is still sending.
    const SIZE: u64 = 48 * 1024 * 1024;
    let store = TestStore::demo(false).await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let path = scratch.path().join("os_bulk");
    let demo = DemoRelease {
        app: "os_bulk",
        channel: "prod",
        version: "1.0.0",
        cpu_arch: Some("bulk"),
        attributes: &[],
    };
    write_demo_binary(&demo, SIZE, &path).expect("binary");
    let release = Release {
        cpu_arch: Some("bulk".to_owned()),
        ..Release::new("os_bulk", "prod", "1.0.0")
    };
    store.publish(&release, &path).await;
    let origin = Origin::serve(store).await;

    let mut stream = tokio::net::TcpStream::connect(origin.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /package?cpuArch=bulk HTTP/1.1\r\nHost: origin\r\n\r\n")
        .await
        .expect("send request");
    let mut start = [0u8; 4096];
    stream
        .read_exact(&mut start)
        .await
        .expect("the first bytes");
    assert!(start.starts_with(b"HTTP/1.1 200 OK"));
    drop(stream);

    eventually(
        Duration::from_secs(10),
        "the package counted as cut by the client",
        || async { origin.metric("fleetpack_packages_client_gone_total").await == 1 },
    )
    .await;
    assert_eq!(origin.metric("fleetpack_packages_aborted_total").await, 0);
    assert_eq!(origin.metric("fleetpack_packages_completed_total").await, 0);
    assert_eq!(origin.metric("fleetpack_packages_spliced_total").await, 1);
}
