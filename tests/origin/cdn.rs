//! Behind a CDN: the origin secret, `Vary`, the CloudFront Function's cache key form, and
//! nginx as a caching CDN in front of the origin (tests/cdn/nginx.conf), keyed like the
//! CloudFront cache policy and obeying the origin's Cache-Control.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetpack_origin::config::ServeConfig;
use fleetpack_resolver::{RolloutState, canonical_query, is_member, rollout_id};
use http::{HeaderValue, Method, StatusCode};

use crate::cdn_nginx::Cdn;
use crate::harness::{
    FULL_SAMPLE, Origin, Response, TestStore, demo_binary, request, request_allowing_abort,
};

const SECRET: &str = "s3cret-from-the-cdn-0123456789";
const NOT_THROUGH_CDN: &str = "this origin answers only requests that come through its CDN (they carry the X-Origin-Verify header); call the CDN's address";

async fn origin_behind_cdn(store: TestStore, config: ServeConfig) -> (Origin, Cdn) {
    let origin = Origin::serve_with_secret(store, config, SECRET).await;
    let cdn = Cdn::start(origin.addr, SECRET);
    (origin, cdn)
}

/// Responses with status 200 the origin sent (reading them is counted after the read).
async fn origin_200s(origin: &Origin) -> u64 {
    origin
        .metric("fleetpack_responses_total{status=\"200\"}")
        .await
}

async fn through(cdn: &Cdn, target: &str, headers: &[(&str, &str)]) -> Response {
    request(cdn.addr, Method::GET, target, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_origin_secret_only_health_and_readiness_answer() {
    let origin =
        Origin::serve_with_secret(TestStore::demo(false).await, ServeConfig::default(), SECRET)
            .await;
    let target = format!("/package?{FULL_SAMPLE}");
    let almost = format!("{}X", &SECRET[..SECRET.len() - 1]);
    for headers in [vec![], vec![("x-origin-verify", almost.as_str())]] {
        for path in [target.as_str(), "/metrics", "/nowhere"] {
            let response = request(origin.addr, Method::GET, path, &headers).await;
            assert_eq!(response.status, StatusCode::FORBIDDEN, "{path} {headers:?}");
            assert_eq!(response.json()["error"], NOT_THROUGH_CDN);
            assert_eq!(response.header("cache-control"), "no-store");
        }
        for probe in ["/healthz", "/readyz"] {
            let response = request(origin.addr, Method::GET, probe, &headers).await;
            assert_eq!(response.status, StatusCode::OK, "{probe}");
        }
    }
    assert_eq!(origin.get(&target).await.status, StatusCode::OK);
    assert_eq!(origin.get("/metrics").await.status, StatusCode::OK);
    assert_eq!(
        origin
            .metric("fleetpack_responses_total{status=\"403\"}")
            .await,
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_secret_counts_only_when_sent_once() {
    let origin =
        Origin::serve_with_secret(TestStore::demo(false).await, ServeConfig::default(), SECRET)
            .await;
    let target = format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly");
    for (lines, status) in [
        (vec![SECRET], StatusCode::OK),
        (vec![SECRET, SECRET], StatusCode::FORBIDDEN),
        (
            vec![SECRET, "something else entirely"],
            StatusCode::FORBIDDEN,
        ),
        (
            vec!["something else entirely", SECRET],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let headers: Vec<(&str, &str)> = lines
            .iter()
            .map(|line| ("x-origin-verify", *line))
            .collect();
        let response = request(origin.addr, Method::GET, &target, &headers).await;
        assert_eq!(response.status, status, "{lines:?}");
    }
}

#[test]
fn an_origin_secret_that_is_short_or_not_a_header_value_is_refused() {
    for secret in ["short", "long enough but with spaces"] {
        let origin = crate::harness::command("fleetpack-origin")
            .args(["--origin-secret", secret])
            .output()
            .expect("run fleetpack-origin");
        assert_eq!(origin.status.code(), Some(2), "{secret}");
        let stderr = String::from_utf8_lossy(&origin.stderr);
        assert!(
            stderr.contains("--origin-secret must be 16 to 1024 characters"),
            "{stderr}"
        );
        assert!(!stderr.contains(secret), "the secret is echoed: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_responses_vary_by_if_none_match() {
    let origin = Origin::demo().await;
    let target = format!("/package?{FULL_SAMPLE}");
    let full = origin.get(&target).await;
    let metadata = origin
        .get(&format!("{target}&payloadType=metadataOnly"))
        .await;
    let not_modified = origin
        .get_with(&target, &[("if-none-match", full.etag())])
        .await;
    let bad_header = origin
        .get_with(&target, &[("if-none-match", "\"unterminated")])
        .await;
    for (response, status) in [
        (&full, StatusCode::OK),
        (&metadata, StatusCode::OK),
        (&not_modified, StatusCode::NOT_MODIFIED),
        (&bad_header, StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(response.status, status);
        assert_eq!(response.header("vary"), "if-none-match", "{status}");
    }
}

#[test]
fn cloudfront_function_passes_the_shared_vectors() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("node")
        .arg(workspace.join("tests/cache_key_function.mjs"))
        .arg(workspace.join("cloudformation/fleetpack.yaml"))
        .arg(workspace.join("tests/cache_key_vectors.json"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run node ({error}); install Node.js"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_device_requests_reach_the_origin_once() {
    let (origin, cdn) =
        origin_behind_cdn(TestStore::demo(false).await, ServeConfig::default()).await;
    for target in [
        format!("/package?{FULL_SAMPLE}"),
        format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly"),
    ] {
        let first = through(&cdn, &target, &[]).await;
        assert_eq!(first.status, StatusCode::OK, "{}", cdn.error_log());
        assert_eq!(first.header("x-cache"), "MISS");
        for _ in 0..3 {
            let again = through(&cdn, &target, &[]).await;
            assert_eq!(again.header("x-cache"), "HIT");
            assert_eq!(again.body, first.body);
            assert_eq!(again.etag(), first.etag());
        }
    }
    assert_eq!(origin_200s(&origin).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_if_none_match_values_are_different_cache_entries() {
    let (origin, cdn) =
        origin_behind_cdn(TestStore::demo(false).await, ServeConfig::default()).await;
    let target = format!("/package?{FULL_SAMPLE}&payloadType=metadataOnly");
    let os = &demo_binary("os_armv8", "prod").md5;
    let modem = &demo_binary("modemFW", "prod").md5;
    let cases = [None, Some(os.as_str()), Some(modem.as_str())];
    let mut bodies = Vec::new();
    for round in 0..2 {
        for known in cases {
            let headers: Vec<(&str, &str)> = known
                .map(|tag| ("if-none-match", tag))
                .into_iter()
                .collect();
            let response = through(&cdn, &target, &headers).await;
            assert_eq!(response.status, StatusCode::OK);
            let expected = if round == 0 { "MISS" } else { "HIT" };
            assert_eq!(response.header("x-cache"), expected, "{known:?}");
            let details = response.json();
            for (app, md5) in [("os_armv8", os), ("modemFW", modem)] {
                let status = if known == Some(md5.as_str()) {
                    304
                } else {
                    200
                };
                assert_eq!(details[app]["status_code"], status, "{known:?}: {app}");
            }
            bodies.push(response.body);
        }
    }
    assert_eq!(origin_200s(&origin).await, 3);
    assert_ne!(bodies[0], bodies[1]);
    assert_ne!(bodies[1], bodies[2]);
    // Each hit is the body its own miss stored.
    assert_eq!(bodies[3..], bodies[..3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_a_cached_package_while_the_origin_is_down() {
    let mut config = ServeConfig::default();
    config.cache.success =
        HeaderValue::from_static("public, max-age=1, s-maxage=1, stale-if-error=86400");
    let (origin, cdn) = origin_behind_cdn(TestStore::demo(false).await, config).await;
    let target = format!("/package?{FULL_SAMPLE}");
    let fresh = through(&cdn, &target, &[]).await;
    assert_eq!(fresh.header("x-cache"), "MISS");
    drop(origin);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let stale = through(&cdn, &target, &[]).await;
    assert_eq!(stale.status, StatusCode::OK, "{}", cdn.error_log());
    assert_eq!(stale.header("x-cache"), "STALE");
    assert_eq!(stale.body, fresh.body);
    // A package nobody cached has nothing stale to fall back on.
    let uncached = through(&cdn, "/package?cpuArch=armv7", &[]).await;
    assert_eq!(uncached.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_package_is_never_cached() {
    let (origin, cdn) =
        origin_behind_cdn(TestStore::demo(true).await, ServeConfig::default()).await;
    origin.store.corrupt_segment("scoreboard", "1.0.0").await;
    let target = format!("/package?{FULL_SAMPLE}");
    for attempt in 1..=2 {
        let response = request_allowing_abort(cdn.addr, Method::GET, &target, &[]).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("x-cache"), "MISS", "attempt {attempt}");
        assert!(
            response.body_error.is_some(),
            "attempt {attempt}: the CDN ended a cut package cleanly"
        );
        assert_eq!(
            origin.metric("fleetpack_packages_aborted_total").await,
            attempt
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_behind_the_cdn_caches_two_cohorts_and_never_mixes_them() {
    let store = TestStore::demo(true).await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("os.img");
    std::fs::write(&file, b"the candidate OS image".repeat(300)).expect("write");
    let published = store.seed(&[
        "publish",
        file.to_str().expect("UTF-8 path"),
        "--app",
        "os_armv8",
        "--channel",
        "prod",
        "--version",
        "1.2.0",
        "--cpu-arch",
        "armv8",
        "--rollout",
        "30",
    ]);
    assert_eq!(published.status.code(), Some(0), "{:?}", published);
    // What the operator deploys to the CDN's function.
    let state = store.seed(&["cdn-state"]);
    let rollouts: Vec<RolloutState> =
        serde_json::from_slice(&state.stdout).expect("the rollout state as JSON");
    let id = rollout_id("os_armv8", "prod", "1.2.0");
    assert_eq!(
        rollouts,
        [RolloutState {
            id: id.clone(),
            percent: 30,
            app: "os_armv8".to_owned(),
            channel: "prod".to_owned(),
            attributes: Vec::new(),
        }]
    );
    let (origin, cdn) = origin_behind_cdn(store, ServeConfig::default()).await;
    let mut keys_seen = std::collections::HashSet::new();
    for n in 0..120 {
        let key = format!("k{n:03}-{}", n * 7919 % 1000);
        let raw = format!("cpuArch=armv8&payloadType=metadataOnly&deviceKey={key}");
        let keyed = canonical_query(&raw, &rollouts).expect("a query the origin accepts");
        assert!(
            !keyed.contains(&key),
            "the raw key reached the cache key: {keyed}"
        );
        keys_seen.insert(keyed.clone());
        let response = through(&cdn, &format!("/package?{keyed}"), &[]).await;
        assert_eq!(response.status, StatusCode::OK);
        let expected = if is_member(&id, &key, 30) {
            "1.2.0"
        } else {
            "1.1.0"
        };
        assert_eq!(
            response.json()["os_armv8"]["latestVersion"],
            expected,
            "{key}: {}",
            response.header("x-cache")
        );
    }
    // Two cohorts, two cache entries: members and everyone else.
    assert_eq!(keys_seen.len(), 2, "{keys_seen:?}");
    // A device of another architecture is in no rollout its query can select: its key
    // is dropped whatever its memberships.
    let armv7 = canonical_query("cpuArch=armv7&deviceKey=k001-919", &rollouts);
    assert_eq!(armv7.as_deref(), Some("cpuarch=armv7"));
    assert_eq!(origin_200s(&origin).await, 2);
    // A full package through the CDN holds the cohort's binary, never the other's.
    for (query, binary) in [
        (format!("cpuArch=armv8&cohort={id}"), "os_armv8_1.2.0"),
        ("cpuArch=armv8".to_owned(), "os_armv8_1.1.0"),
    ] {
        for _ in 0..2 {
            let package = through(&cdn, &format!("/package?{query}"), &[]).await;
            let names: Vec<String> = crate::decode::decode_both(&package.body)
                .into_iter()
                .map(|member| member.name)
                .collect();
            assert_eq!(names, ["package_details.json", binary], "{query}");
        }
    }
}
