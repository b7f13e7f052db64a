//! The AWS sample README's requests, answered as the sample answers them, with the
//! headers README.md documents.

use crate::decode::{Member, decode_both};
use crate::harness::{
    CACHE_CONTROL_OK, Origin, Response, SAMPLE_QUERIES, demo_binary, expected_details, object_keys,
    package_details_of,
};
use http::StatusCode;

/// The apps each sample query selects, `(app, channel)` in package order: the OS first,
/// then by app name ignoring case.
fn sample_apps(query: &str) -> Vec<(&'static str, &'static str)> {
    match query {
        "cpuArch=armv8" => vec![("os_armv8", "prod")],
        "cpuArch=armv8&os=beta" => vec![("os_armv8", "beta")],
        "cpuArch=armv8&attrGamer=prod" => vec![
            ("os_armv8", "prod"),
            ("scoreboard", "prod"),
            ("videoStreamer", "prod"),
        ],
        "cpuArch=armv8&attrGamer=prod&attrCellular=prod" => vec![
            ("os_armv8", "prod"),
            ("modemFW", "prod"),
            ("scoreboard", "prod"),
            ("videoStreamer", "prod"),
        ],
        other => panic!("not a sample query: {other}"),
    }
}

fn assert_metadata(response: &Response, apps: &[(&str, &str)]) {
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), "application/json");
    assert_eq!(response.header("cache-control"), CACHE_CONTROL_OK);
    assert_eq!(
        response.header("content-length"),
        response.body.len().to_string()
    );
    assert!(!response.has_header("content-encoding"));
    response.etag();
    assert_eq!(response.json(), expected_details(apps, &[]));
    let names: Vec<&str> = apps.iter().map(|&(app, _)| app).collect();
    assert_eq!(object_keys(&response.body), names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_queries_metadata_only_lists_the_sample_apps_in_order() {
    let origin = Origin::demo().await;
    for query in SAMPLE_QUERIES {
        let response = origin
            .get(&format!("/package?{query}&payloadType=metadataOnly"))
            .await;
        assert_metadata(&response, &sample_apps(query));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_queries_full_payload_is_a_tar_gz_of_details_then_binaries() {
    let origin = Origin::demo().await;
    for query in SAMPLE_QUERIES {
        let apps = sample_apps(query);
        let metadata = origin
            .get(&format!("/package?{query}&payloadType=metadataOnly"))
            .await;
        assert_metadata(&metadata, &apps);
        let package = origin.get(&format!("/package?{query}")).await;
        assert_eq!(package.status, StatusCode::OK, "{query}");
        assert_eq!(package.header("content-type"), "application/gzip");
        assert_eq!(
            package.header("content-disposition"),
            "attachment; filename=\"ota-package.tar.gz\""
        );
        assert!(!package.has_header("content-encoding"), "{query}");
        assert_eq!(package.header("cache-control"), CACHE_CONTROL_OK);
        assert_ne!(package.etag(), metadata.etag(), "{query}");

        let mut expected = vec![Member::expected(
            "package_details.json",
            &package_details_of(&metadata.body),
        )];
        for &(app, channel) in &apps {
            let binary = demo_binary(app, channel);
            let name = format!("{app}_{}", binary.release.version);
            expected.push(Member::expected(&name, &binary.bytes));
        }
        assert_eq!(decode_both(&package.body), expected, "{query}");

        let explicit = origin
            .get(&format!("/package?{query}&payloadType=fullPayload"))
            .await;
        assert_eq!(explicit.etag(), package.etag(), "{query}");
        assert_eq!(explicit.body, package.body, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_channels_ignore_case_and_pins_beat_attributes_beat_os() {
    let origin = Origin::demo().await;
    let cases: [(&str, &[(&str, &str)]); 5] = [
        // The sample lowercased the query but not the table, so this pin never matched.
        (
            "cpuArch=armv8&videoStreamer=beta",
            &[("os_armv8", "prod"), ("videoStreamer", "beta")],
        ),
        (
            "CPUARCH=ARMV8&AttrGAMER=Prod&OS=BETA&payloadtype=METADATAONLY",
            &[
                ("os_armv8", "beta"),
                ("scoreboard", "prod"),
                ("videoStreamer", "prod"),
            ],
        ),
        // Two attributes select videoStreamer: the higher version wins, whatever the order.
        (
            "cpuArch=armv8&attrGamer=prod&attrCamera=beta",
            &[
                ("os_armv8", "prod"),
                ("scoreboard", "prod"),
                ("videoStreamer", "beta"),
            ],
        ),
        (
            "cpuArch=armv8&attrCamera=beta&attrGamer=prod&VideoStreamer=prod",
            &[
                ("os_armv8", "prod"),
                ("scoreboard", "prod"),
                ("videoStreamer", "prod"),
            ],
        ),
        ("cpuArch=armv8&os_armv8=beta", &[("os_armv8", "beta")]),
    ];
    for (query, apps) in cases {
        let target = if query.contains("payloadtype") {
            format!("/package?{query}")
        } else {
            format!("/package?{query}&payloadType=metadataOnly")
        };
        let response = origin.get(&target).await;
        assert_eq!(response.status, StatusCode::OK, "{query}");
        assert_eq!(response.json(), expected_details(apps, &[]), "{query}");
    }
}
