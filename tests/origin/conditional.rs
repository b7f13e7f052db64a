//! If-None-Match as devices (digests) and caches (entity tags) send it.

use http::StatusCode;

use crate::decode::{Member, decode_both};
use crate::harness::{
    CACHE_CONTROL_OK, FULL_SAMPLE, Origin, Response, demo_binary, expected_details,
    package_details_of,
};

const SAMPLE_APPS: [(&str, &str); 4] = [
    ("os_armv8", "prod"),
    ("modemFW", "prod"),
    ("scoreboard", "prod"),
    ("videoStreamer", "prod"),
];
const METADATA: &str = "&payloadType=metadataOnly";

fn md5(app: &str) -> &'static str {
    &demo_binary(app, "prod").md5
}

async fn get(origin: &Origin, target: &str, lines: &[impl AsRef<str>]) -> Response {
    let headers: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| ("if-none-match", line.as_ref()))
        .collect();
    origin.get_with(target, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_binary_in_any_if_none_match_form_is_left_out() {
    let origin = Origin::demo().await;
    let os = demo_binary("os_armv8", "prod");
    let unrelated = "0123456789abcdef0123456789abcdef";
    let cases: [(&str, Vec<String>, &[&str]); 8] = [
        ("bare", vec![os.md5.clone()], &["os_armv8"]),
        ("quoted", vec![format!("\"{}\"", os.md5)], &["os_armv8"]),
        ("weak", vec![format!("W/\"{}\"", os.md5)], &["os_armv8"]),
        (
            "upper case",
            vec![os.md5.to_ascii_uppercase()],
            &["os_armv8"],
        ),
        (
            "spaces and tabs",
            vec![format!(
                "{unrelated} ,\t \"{}\"\t, W/\"{unrelated}\"",
                os.md5
            )],
            &["os_armv8"],
        ),
        (
            "sample style, trailing comma",
            vec![format!("{},{},", os.md5, md5("scoreboard"))],
            &["os_armv8", "scoreboard"],
        ),
        (
            "two header lines",
            vec![os.md5.clone(), format!("\"{}\"", md5("modemFW"))],
            &["os_armv8", "modemFW"],
        ),
        ("sha256", vec![os.sha256.clone()], &["os_armv8"]),
    ];
    let plain_metadata = origin
        .get(&format!("/package?{FULL_SAMPLE}{METADATA}"))
        .await;
    let plain_package = origin.get(&format!("/package?{FULL_SAMPLE}")).await;

    for (label, lines, known) in cases {
        let metadata = get(
            &origin,
            &format!("/package?{FULL_SAMPLE}{METADATA}"),
            &lines,
        )
        .await;
        assert_eq!(metadata.status, StatusCode::OK, "{label}");
        assert_eq!(
            metadata.json(),
            expected_details(&SAMPLE_APPS, known),
            "{label}"
        );
        assert_ne!(metadata.etag(), plain_metadata.etag(), "{label}");

        let package = get(&origin, &format!("/package?{FULL_SAMPLE}"), &lines).await;
        assert_eq!(package.status, StatusCode::OK, "{label}");
        assert_eq!(package.header("cache-control"), CACHE_CONTROL_OK);
        assert_ne!(package.etag(), plain_package.etag(), "{label}");
        let mut expected = vec![Member::expected(
            "package_details.json",
            &package_details_of(&metadata.body),
        )];
        for (app, channel) in SAMPLE_APPS
            .into_iter()
            .filter(|(app, _)| !known.contains(app))
        {
            let binary = demo_binary(app, channel);
            let name = format!("{app}_{}", binary.release.version);
            expected.push(Member::expected(&name, &binary.bytes));
        }
        assert_eq!(decode_both(&package.body), expected, "{label}");
    }
}

fn assert_not_modified(response: &Response, etag: Option<&str>, label: &str) {
    assert_eq!(response.status, StatusCode::NOT_MODIFIED, "{label}");
    assert_eq!(
        response.header("cache-control"),
        CACHE_CONTROL_OK,
        "{label}"
    );
    let sent = response.etag();
    if let Some(etag) = etag {
        assert_eq!(sent, etag, "{label}");
    }
    assert!(response.body.is_empty(), "{label}");
    assert!(!response.has_header("content-type"), "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_known_is_304_without_body() {
    let origin = Origin::demo().await;
    let all: Vec<&str> = SAMPLE_APPS.iter().map(|&(app, _)| md5(app)).collect();
    for payload in ["", METADATA] {
        let target = format!("/package?{FULL_SAMPLE}{payload}");
        let one_line = get(&origin, &target, &[all.join(", ")]).await;
        assert_not_modified(&one_line, None, &target);
        let lines: Vec<String> = all.iter().map(|md5| format!("\"{md5}\"")).collect();
        let four_lines = get(&origin, &target, &lines).await;
        assert_not_modified(&four_lines, Some(one_line.etag()), &target);

        let three = get(&origin, &target, &[all[..3].join(",")]).await;
        assert_eq!(three.status, StatusCode::OK, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_etag_or_star_is_304_with_the_same_etag() {
    let origin = Origin::demo().await;
    for payload in ["", METADATA] {
        let target = format!("/package?{FULL_SAMPLE}{payload}");
        let fresh = origin.get(&target).await;
        assert_eq!(fresh.status, StatusCode::OK);
        let etag = fresh.etag();
        for line in [
            etag.to_owned(),
            format!("W/{etag}"),
            "*".to_owned(),
            format!("\"0123456789ABCDEF0123456789ABCDEF\", {etag}"),
        ] {
            let cached = get(&origin, &target, &[&line]).await;
            assert_not_modified(&cached, Some(etag), &format!("{target} {line}"));
        }

        let other = origin
            .get(&format!("/package?cpuArch=armv8&os=beta{payload}"))
            .await;
        // Neither another response's tag nor a quoted `*` matches this response.
        for line in [other.etag().to_owned(), "\"*\"".to_owned()] {
            let changed = get(&origin, &target, &[&line]).await;
            assert_eq!(changed.status, StatusCode::OK, "{target} {line}");
            assert_eq!(changed.etag(), etag, "{target} {line}");
            assert!(changed.body == fresh.body, "{target} {line}");
        }
    }
}
