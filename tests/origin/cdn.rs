//! Behind a CDN: the origin secret, `Vary`, the CloudFront Function's cache key form, and
//! real caches in front of the origin, obeying its Cache-Control: nginx
//! (tests/cdn/nginx.conf), keyed on the path, the query and `If-None-Match` as the
//! CloudFront cache policy was, or on the path and query alone as it is now; and
//! Varnish (tests/cdn/varnish.vcl), keyed on the URL alone. A tap between cache and
//! origin (tests/cdn/tap.rs) shows what the cache sent.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetpack_origin::config::ServeConfig;
use fleetpack_resolver::{
    RolloutState, canonical_if_none_match, canonical_query, canonical_request, is_member,
    rollout_id,
};
use http::{HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::cdn_nginx::{Cdn, Keying};
use crate::cdn_tap::Tap;
use crate::cdn_varnish::Varnish;
use crate::harness::{
    FULL_SAMPLE, Origin, Response, TestStore, demo_binary, request, request_allowing_abort,
};

const SECRET: &str = "s3cret-from-the-cdn-0123456789";
const NOT_THROUGH_CDN: &str = "this origin answers only requests that come through its CDN (they carry the X-Origin-Verify header); call the CDN's address";

/// The origin behind nginx keyed like the CloudFront cache policy: on the path and query.
async fn origin_behind_cdn(store: TestStore, config: ServeConfig) -> (Origin, Cdn) {
    origin_behind_cdn_keyed(store, config, Keying::PathAndQuery).await
}

async fn origin_behind_cdn_keyed(
    store: TestStore,
    config: ServeConfig,
    keying: Keying,
) -> (Origin, Cdn) {
    let origin = Origin::serve_with_secret(store, config, SECRET).await;
    let cdn = Cdn::start(origin.addr, SECRET, keying);
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

/// The form before `installed=`: a cache keyed on `If-None-Match` as well keeps one
/// entry per list, and forwards the list to the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_if_none_match_values_are_different_cache_entries() {
    let (origin, cdn) = origin_behind_cdn_keyed(
        TestStore::demo(false).await,
        ServeConfig::default(),
        Keying::PathQueryAndIfNoneMatch,
    )
    .await;
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

/// A cache keyed on the URL alone, like the CloudFront cache policy since devices' lists
/// moved into the query (`installed=`).
#[derive(Debug)]
enum UrlKeyed {
    Nginx(Cdn),
    Varnish(Varnish),
}

#[derive(Debug, Clone, Copy)]
enum CacheKind {
    Nginx,
    Varnish,
}

impl UrlKeyed {
    fn start(kind: CacheKind, origin: SocketAddr) -> Self {
        match kind {
            CacheKind::Nginx => UrlKeyed::Nginx(Cdn::start(origin, SECRET, Keying::PathAndQuery)),
            CacheKind::Varnish => UrlKeyed::Varnish(Varnish::start(origin, SECRET)),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            UrlKeyed::Nginx(cdn) => cdn.addr,
            UrlKeyed::Varnish(varnish) => varnish.addr,
        }
    }

    fn log(&self) -> String {
        match self {
            UrlKeyed::Nginx(cdn) => cdn.error_log(),
            UrlKeyed::Varnish(varnish) => varnish.log(),
        }
    }

    /// `X-Cache` of the request that found an entry expired and had the origin confirm
    /// it: nginx tells it apart; Varnish's object after a 304 is a new one, with no hits.
    fn revalidated(&self) -> &'static str {
        match self {
            UrlKeyed::Nginx(_) => "REVALIDATED",
            UrlKeyed::Varnish(_) => "MISS",
        }
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr(), Method::GET, target, headers).await
    }
}

/// The origin, a tap in front of it and a URL-keyed cache in front of the tap.
async fn behind_url_keyed(kind: CacheKind, config: ServeConfig) -> (Origin, Tap, UrlKeyed) {
    let origin = Origin::serve_with_secret(TestStore::demo(false).await, config, SECRET).await;
    let tap = Tap::start(origin.addr).await;
    let cache = UrlKeyed::start(kind, tap.addr);
    (origin, tap, cache)
}

/// Responses that a cache may keep for one second, and then only revalidate: no
/// stale-while-revalidate or stale-if-error.
fn short_lived() -> ServeConfig {
    let mut config = ServeConfig::default();
    config.cache.success = HeaderValue::from_static("public, max-age=1, s-maxage=1");
    config
}

/// The origin's 200 and 304 answers so far, read from `/metrics`; each read is a 200
/// itself, counted after it, which this takes off.
#[derive(Debug, Default)]
struct Answers {
    reads: u64,
}

impl Answers {
    async fn read(&mut self, origin: &Origin) -> (u64, u64) {
        let metrics = origin.get("/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        let count = |status: &str| -> u64 {
            let name = format!("fleetpack_responses_total{{status=\"{status}\"}} ");
            metrics
                .text()
                .lines()
                .find_map(|line| line.strip_prefix(&name))
                .unwrap_or_else(|| panic!("no {name} in:\n{}", metrics.text()))
                .parse()
                .expect("a counter")
        };
        let ok = count("200") - self.reads;
        self.reads += 1;
        (ok, count("304"))
    }
}

/// Asks for `target` until the cache finds its entry expired: hits until then, with
/// `body`; returns the first answer that is not a hit.
async fn until_expired(cache: &UrlKeyed, target: &str, body: &[u8]) -> Response {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = cache.get(target, &[]).await;
        if response.header("x-cache") != "HIT" {
            return response;
        }
        assert_eq!(response.body, body, "a hit with another body");
        assert!(
            Instant::now() < deadline,
            "still a hit 5 s after a 1 s lifetime"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A canonical request, the device's list in the query (`installed=`): a device that
/// has a copy of the package asks with its ETag; once the cached entry expires, the
/// cache asks the origin with the ETag it holds, the origin answers 304, and the entry
/// serves hits again without another origin request.
async fn an_expired_package_is_revalidated_with_its_etag_then_hits(kind: CacheKind) {
    let (origin, tap, cache) = behind_url_keyed(kind, short_lived()).await;
    let mut answers = Answers::default();
    // As the CDN's function forwards it: the list (none) moved into the query.
    let canonical = canonical_request(FULL_SAMPLE, None, &[]).expect("an accepted request");
    assert!(canonical.drops_if_none_match);
    assert!(
        canonical.query.ends_with("&installed="),
        "{}",
        canonical.query
    );
    let target = format!("/package?{}", canonical.query);
    // A device that lists `installed=` itself keeps its If-None-Match: a validator of
    // a copy it holds, here an old one.
    let old_copy = format!("\"{}\"", "0".repeat(32));
    let kept = canonical_request(&canonical.query, Some(&old_copy), &[]).expect("accepted");
    assert_eq!(kept.query, canonical.query);
    assert!(!kept.drops_if_none_match);

    let first = cache
        .get(&target, &[("if-none-match", old_copy.as_str())])
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", cache.log());
    assert_eq!(first.header("x-cache"), "MISS");
    assert!(!first.has_header("vary"), "{:?}", first.headers);
    let etag = first.etag().to_owned();
    let sent = tap.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].target(), target, "the cache changed the URL");
    assert!(
        sent[0].header("if-none-match").is_empty(),
        "the device's If-None-Match reached the origin: {sent:?}"
    );

    // A device holding the current copy: the cache answers it.
    let validated = cache.get(&target, &[("if-none-match", &etag)]).await;
    assert_eq!(validated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(validated.header("x-cache"), "HIT");
    assert!(validated.body.is_empty());
    assert_eq!(tap.requests().len(), 1);

    let revalidated = until_expired(&cache, &target, &first.body).await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.header("x-cache"), cache.revalidated());
    assert_eq!(revalidated.etag(), etag);
    assert_eq!(revalidated.body, first.body);
    let sent = tap.requests();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].target(), target);
    assert_eq!(sent[1].header("if-none-match"), [etag.as_str()], "{sent:?}");
    // One package sent, then one 304: the body came from the cache.
    assert_eq!(answers.read(&origin).await, (1, 1));

    let again = cache.get(&target, &[]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(again.body, first.body);
    assert_eq!(tap.requests().len(), 2);
    assert_eq!(answers.read(&origin).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_revalidates_an_expired_package_with_its_etag_then_hits() {
    an_expired_package_is_revalidated_with_its_etag_then_hits(CacheKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_revalidates_an_expired_package_with_its_etag_then_hits() {
    an_expired_package_is_revalidated_with_its_etag_then_hits(CacheKind::Varnish).await;
}

/// Why the list moved into the query. With a device's digests in `If-None-Match` (the
/// form before `installed=`) and `Vary: if-none-match` in the answer, Varnish keyed on
/// the URL never sends the digests to the origin (it drops conditional headers on a
/// miss), and it matches `Vary` against the request it sent the origin, not the
/// device's. So the device that lists a digest gets its whole package and misses
/// every time; and an entry revalidated with its ETag in `If-None-Match` is stored for
/// requests carrying that ETag, so the next device request misses again: the 304 saved
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_misses_packages_that_vary_by_if_none_match() {
    let (origin, tap, cache) = behind_url_keyed(CacheKind::Varnish, short_lived()).await;
    let mut answers = Answers::default();
    let os = &demo_binary("os_armv8", "prod").md5;
    let listed = canonical_if_none_match(os).expect("a digest");
    let old_form = |query: &str| {
        let query = canonical_query(query, &[]).expect("an accepted query");
        format!("/package?{query}")
    };

    let target = old_form(&format!("{FULL_SAMPLE}&payloadType=metadataOnly"));
    for attempt in 1..=2 {
        let has_os = cache.get(&target, &[("if-none-match", &listed)]).await;
        assert_eq!(has_os.status, StatusCode::OK, "{}", cache.log());
        assert_eq!(has_os.header("vary"), "if-none-match");
        assert_eq!(has_os.header("x-cache"), "MISS", "attempt {attempt}");
        // The origin never saw the digest: the device gets its OS image again.
        assert_eq!(has_os.json()["os_armv8"]["status_code"], 200);
        let sent = tap.requests();
        assert_eq!(sent.len(), attempt, "{sent:?}");
        assert!(sent[attempt - 1].header("if-none-match").is_empty());
    }
    assert_eq!(answers.read(&origin).await, (2, 0));
    // What was stored is the answer to a request without If-None-Match.
    let plain = cache.get(&target, &[]).await;
    assert_eq!(plain.header("x-cache"), "HIT");

    let target = old_form("cpuArch=armv8&payloadType=metadataOnly");
    let first = cache.get(&target, &[]).await;
    assert_eq!(first.header("x-cache"), "MISS");
    assert_eq!(first.header("vary"), "if-none-match");
    let etag = first.etag().to_owned();
    let revalidated = until_expired(&cache, &target, &first.body).await;
    assert_eq!(revalidated.header("x-cache"), "MISS");
    assert_eq!(revalidated.body, first.body);
    let sent = tap.requests();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[3].header("if-none-match"), [etag.as_str()]);
    assert_eq!(answers.read(&origin).await, (3, 1));
    // The revalidated entry is fresh, yet the next request misses and reaches the
    // origin (for the whole package, or for another 304 if it still finds the entry
    // that expired, which Varnish retires once the revalidation has ended).
    let again = cache.get(&target, &[]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("x-cache"), "MISS");
    assert_eq!(again.body, first.body);
    assert_eq!(tap.requests().len(), 5);
    let (ok, not_modified) = answers.read(&origin).await;
    assert_eq!(ok + not_modified, 5, "{ok} + {not_modified}");
}

/// Two devices asking for the same package with different `installed=` lists are two
/// cache entries; the binaries each lacks, fetched from their `downloadUrl`, are one
/// entry each, whoever asks.
async fn binaries_are_cached_once_for_every_installed_list(kind: CacheKind) {
    let (origin, tap, cache) = behind_url_keyed(kind, ServeConfig::default()).await;
    let os = &demo_binary("os_armv8", "prod").md5;
    let metadata = format!("{FULL_SAMPLE}&payloadType=metadataOnly");
    let mut wanted: Vec<Vec<(String, String)>> = Vec::new();
    for has in [None, Some(os.as_str())] {
        let canonical = canonical_request(&metadata, has, &[]).expect("an accepted request");
        assert!(canonical.drops_if_none_match);
        let answer = cache
            .get(&format!("/package?{}", canonical.query), &[])
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", cache.log());
        assert_eq!(answer.header("x-cache"), "MISS", "{has:?}");
        let details = answer.json();
        let lacking = details
            .as_object()
            .expect("an object")
            .values()
            .filter(|entry| entry["status_code"] == 200)
            .map(|entry| {
                let field = |name: &str| entry[name].as_str().expect(name).to_owned();
                (field("downloadUrl"), field("sha256"))
            })
            .collect();
        wanted.push(lacking);
    }
    let (everything, all_but_os) = (&wanted[0], &wanted[1]);
    assert_eq!(everything.len(), 4);
    assert_eq!(all_but_os.len(), 3);
    assert!(all_but_os.iter().all(|binary| everything.contains(binary)));

    let mut bodies = Vec::new();
    for (url, sha256) in everything {
        let binary = cache.get(url, &[]).await;
        assert_eq!(binary.status, StatusCode::OK, "{url}");
        assert_eq!(binary.header("x-cache"), "MISS", "{url}");
        assert_eq!(hex::encode(Sha256::digest(&binary.body)), *sha256);
        assert_eq!(binary.header("etag"), format!("\"{sha256}\""));
        bodies.push(binary.body);
    }
    for (url, _) in all_but_os {
        let binary = cache.get(url, &[]).await;
        assert_eq!(binary.header("x-cache"), "HIT", "{url}");
        let at = everything.iter().position(|(known, _)| known == url);
        assert_eq!(Some(&binary.body), at.map(|at| &bodies[at]), "{url}");
    }
    let fetched: Vec<String> = tap
        .requests()
        .iter()
        .map(|head| head.target().to_owned())
        .filter(|target| target.starts_with("/binaries/"))
        .collect();
    let expected: Vec<&String> = everything.iter().map(|(url, _)| url).collect();
    assert_eq!(fetched.iter().collect::<Vec<_>>(), expected);
    assert_eq!(origin.metric("fleetpack_binaries_started_total").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_caches_binaries_once_for_every_installed_list() {
    binaries_are_cached_once_for_every_installed_list(CacheKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_caches_binaries_once_for_every_installed_list() {
    binaries_are_cached_once_for_every_installed_list(CacheKind::Varnish).await;
}
