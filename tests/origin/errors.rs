//! Bad input is 400 and unknown things are 404, each with a JSON body naming the problem.

use http::StatusCode;

use crate::harness::{Origin, Response, raw_exchange};

const NAME_RULE: &str = "use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'";

async fn get_inm(origin: &Origin, lines: &[impl AsRef<str>]) -> Response {
    let headers: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| ("if-none-match", line.as_ref()))
        .collect();
    origin.get_with("/package?cpuArch=armv8", &headers).await
}

fn many_params(count: usize) -> String {
    let mut query = "cpuArch=armv8".to_owned();
    for n in 1..count {
        query.push_str(&format!("&p{n}=prod"));
    }
    query
}

/// A query of exactly `len` bytes (at least 17) that is valid but for its length: pins
/// with names and values of up to 64 characters, which the limit counts in full.
fn query_of_len(len: usize) -> String {
    let mut query = "cpuArch=armv8".to_owned();
    for first in b'a'..=b'z' {
        let left = len - query.len();
        if left == 0 {
            return query;
        }
        // `&<name>=<value>` takes 4 to 130 bytes; leave none or at least 4 for the next.
        let mut take = left.min(130);
        if (1..4).contains(&(left - take)) {
            take = left - 4;
        }
        let name_len = (take - 3).min(64);
        let name = format!("{}{}", first as char, "n".repeat(name_len - 1));
        query.push_str(&format!("&{name}={}", "v".repeat(take - 2 - name_len)));
    }
    panic!("{len} bytes need more parameters than letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_is_400_naming_the_problem() {
    let origin = Origin::demo().await;
    let long = "v".repeat(65);
    let cases = [
        (
            String::new(),
            "the required parameter `cpuArch` is missing; add it, for example `cpuArch=armv8`"
                .to_owned(),
        ),
        (
            "os=beta&attrGamer=prod".to_owned(),
            "the required parameter `cpuArch` is missing; add it, for example `cpuArch=armv8`"
                .to_owned(),
        ),
        (
            "cpuArch=armv8&payloadType=tarball".to_owned(),
            "payloadType `tarball` is not supported; use `fullPayload` (the default) or `metadataOnly`"
                .to_owned(),
        ),
        (
            "cpuArch=armv8&os=beta&OS=prod".to_owned(),
            "parameter `OS` is given more than once (names ignore letter case); send it once"
                .to_owned(),
        ),
        (
            "cpuArch=arm%20v8".to_owned(),
            format!("parameter `cpuArch` has the value `arm%20v8`, which is not valid: {NAME_RULE}"),
        ),
        (
            format!("cpuArch={long}"),
            format!(
                "parameter `cpuArch` has the value `{}...`, which is not valid: {NAME_RULE}",
                &long[..64]
            ),
        ),
        (
            "cpuArch=".to_owned(),
            format!("parameter `cpuArch` has the value ``, which is not valid: {NAME_RULE}"),
        ),
        (
            "cpuArch=armv8&my%20app=prod".to_owned(),
            format!("parameter name `my%20app` is not valid: {NAME_RULE}"),
        ),
        (
            "cpuArch=%zz".to_owned(),
            "`%zz` is not valid percent-encoding: write a byte as '%' and two hex digits"
                .to_owned(),
        ),
        (
            many_params(33),
            "the query has more than 32 parameters; send at most 32".to_owned(),
        ),
        (
            query_of_len(2049),
            "the query string is 2049 bytes long; send at most 2048 bytes".to_owned(),
        ),
    ];
    for (query, message) in cases {
        let response = origin.get(&format!("/package?{query}")).await;
        response.assert_error(StatusCode::BAD_REQUEST, &message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_if_none_match_is_400_naming_the_problem() {
    let origin = Origin::demo().await;
    let md5s = vec!["0123456789abcdef0123456789abcdef"; 250].join(", ");
    let tags: Vec<String> = (0..257).map(|n| format!("{n:x}")).collect();
    let cases = [
        (
            vec![md5s],
            "If-None-Match is 8498 bytes long; send at most 8192 bytes (up to 248 MD5 digests separated by commas)",
        ),
        (
            vec!["a".repeat(4096), "b".repeat(4097)],
            "If-None-Match is 8193 bytes long; send at most 8192 bytes (up to 248 MD5 digests separated by commas)",
        ),
        (
            vec![tags.join(",")],
            "If-None-Match lists more than 256 entity tags; send at most 256",
        ),
        (
            vec!["\"abc".to_owned()],
            "If-None-Match is malformed near `\"abc`: send a comma-separated list of digests or entity tags, such as `\"<md5>\", <md5>`",
        ),
    ];
    for (lines, message) in cases {
        get_inm(&origin, &lines)
            .await
            .assert_error(StatusCode::BAD_REQUEST, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_at_each_limit_is_accepted() {
    let origin = Origin::demo().await;
    let metadata = "cpuArch=armv8&payloadType=metadataOnly";
    for query in [
        many_params(32),
        query_of_len(2048),
        // Empty `&&` segments do not count: a CDN that hands the query on parsed cannot
        // see them.
        format!("{metadata}{}", "&".repeat(4096)),
        format!("{metadata}&{}={}", "n".repeat(64), "v".repeat(64)),
    ] {
        let response = origin.get(&format!("/package?{query}")).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    }
    let tags: Vec<String> = (0..256).map(|n| format!("{n:x}")).collect();
    for lines in [
        vec![tags.join(",")],
        vec![format!("a{}", ",".repeat(8191))],
        vec!["a".repeat(4096), "b".repeat(4096)],
    ] {
        let response = get_inm(&origin, &lines).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_rule_is_404_no_deployment_package_found() {
    let origin = Origin::demo().await;
    for query in [
        "cpuArch=mips",
        "cpuArch=mips&payloadType=metadataOnly",
        "cpuArch=armv8&os=gamma",
    ] {
        origin
            .get(&format!("/package?{query}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "no deployment package found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404() {
    let origin = Origin::demo().await;
    for target in [
        "/",
        "/packages?cpuArch=armv8",
        "/package/x",
        "/objects/os_armv8_1.1.0",
    ] {
        origin.get(target).await.assert_error(
            StatusCode::NOT_FOUND,
            "no such resource; devices call GET /package?cpuArch=<arch>",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_requests_carry_exactly_one_host() {
    let origin = Origin::demo().await;
    let target = "/package?cpuArch=armv8&payloadType=metadataOnly";
    for (request, status) in [
        (
            format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n"),
            400,
        ),
        (
            format!("GET {target} HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"),
            400,
        ),
        (
            "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
            400,
        ),
        (
            format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            200,
        ),
        // HTTP/1.0 has no Host requirement.
        (format!("GET {target} HTTP/1.0\r\n\r\n"), 200),
    ] {
        let wire = raw_exchange(origin.addr, &request).await;
        let head = String::from_utf8_lossy(&wire);
        let status_line = head.lines().next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1.") && status_line[9..].starts_with(&status.to_string()),
            "{request:?}: {status_line}"
        );
        if status == 400 {
            assert!(head.contains("exactly one Host header"), "{head}");
        }
    }
}
