//! HEAD answers like GET without the body; other methods are 405.

use http::{HeaderMap, Method, StatusCode};

use crate::harness::{FULL_SAMPLE, Origin, demo_binary, request};

/// Headers but `Date` and the body's framing: a streamed GET is chunked, and a HEAD has
/// no body to frame (RFC 9110, section 9.3.2).
fn comparable(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "transfer-encoding"))
        .map(|(name, value)| {
            let value = value.to_str().expect("ASCII header");
            (name.as_str().to_owned(), value.to_owned())
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_the_status_and_headers_of_get_and_no_body() {
    let origin = Origin::demo().await;
    let os_md5 = demo_binary("os_armv8", "prod").md5.as_str();
    let cases: [(String, &[(&str, &str)]); 6] = [
        (
            format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly"),
            &[],
        ),
        (format!("/package?{FULL_SAMPLE}"), &[]),
        (
            "/package?cpuArch=armv8".to_owned(),
            &[("if-none-match", os_md5)],
        ),
        (
            "/package?cpuArch=armv8&payloadType=metadataOnly".to_owned(),
            &[("if-none-match", os_md5)],
        ),
        ("/package?cpuArch=mips".to_owned(), &[]),
        ("/package?os=beta".to_owned(), &[]),
    ];
    for (target, headers) in cases {
        let get = request(origin.addr, Method::GET, &target, headers).await;
        let head = request(origin.addr, Method::HEAD, &target, headers).await;
        assert_eq!(head.status, get.status, "{target}");
        assert!(head.body.is_empty(), "{target}");
        assert_eq!(
            comparable(&head.headers),
            comparable(&get.headers),
            "{target}"
        );
        assert!(!head.has_header("transfer-encoding"), "{target}");
        if get.has_header("content-length") {
            assert_eq!(
                head.header("content-length"),
                get.body.len().to_string(),
                "{target}"
            );
        } else if get.status == StatusCode::OK {
            assert_eq!(get.header("transfer-encoding"), "chunked", "{target}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_405_with_allow_get_head() {
    let origin = Origin::demo().await;
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for target in ["/package?cpuArch=armv8", "/healthz"] {
            let response = request(origin.addr, method.clone(), target, &[]).await;
            response.assert_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; use GET or HEAD",
            );
            assert_eq!(response.header("allow"), "GET, HEAD", "{method} {target}");
        }
    }
}
