//! What only the AWS store has: starting before its table exists, refreshes that fail,
//! rules naming other buckets, conditional rule writes, multipart uploads, and tables
//! made the way the AWS sample's init.py makes them. Against the S3/DynamoDB-compatible
//! server the test command starts (the HTTP contract tests also run on this store in
//! their own pass, FLEETPACK_TEST_STORE=aws).

use std::collections::HashMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use fleetpack_origin::config::ServeConfig;
use fleetpack_store::Store;
use fleetpack_store::demo::publish_demo;
use http::StatusCode;
use md5::{Digest, Md5};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::decode::decode_both;
use crate::harness::{
    DEMO_SIZE, Origin, SAMPLE_QUERIES, TestStore, aws_names, aws_store, command, eventually,
    s3_client,
};

async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

fn seed(table: &str, bucket: &str, args: &[&str]) -> Output {
    command("fleetpack-seed")
        .args(["--store", "aws", "--table", table, "--bucket", bucket])
        .args(args)
        .output()
        .expect("run fleetpack-seed")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

fn quick_refresh() -> ServeConfig {
    ServeConfig {
        rules_refresh: Duration::from_millis(200),
        ..ServeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_started_before_its_table_recovers_by_itself() {
    let (table, bucket) = aws_names();
    let store = fleetpack_store::AwsStore::connect(&table, &bucket, Default::default()).await;
    let origin = Origin::serve_with(
        TestStore::aws(store.clone(), table.clone(), bucket.clone()),
        ServeConfig::default(),
    )
    .await;

    let ready = origin.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let report = ready.json();
    assert_eq!(report["ready"], json!(false));
    let error = report["lastRefreshError"]
        .as_str()
        .expect("the failure is reported");
    assert!(error.contains(&table), "{error}");
    let package = origin.get("/package?cpuArch=armv8").await;
    package.assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the release rules are not loaded yet; retry shortly",
    );
    assert_eq!(package.header("cache-control"), "no-store");
    assert_eq!(package.header("retry-after"), "5");

    let created = aws_store(&table, &bucket).await;
    for (_, outcome) in publish_demo(&created, DEMO_SIZE).await.expect("publish") {
        outcome.expect("publish demo release");
    }
    eventually(Duration::from_secs(10), "origin ready", || async {
        origin.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    let package = origin
        .get("/package?cpuArch=armv8&payloadType=metadataOnly")
        .await;
    assert_eq!(package.status, StatusCode::OK);
    assert_eq!(package.json()["os_armv8"]["latestVersion"], json!("1.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_refresh_keeps_serving_the_last_good_rules() {
    let (table, bucket) = aws_names();
    let store = aws_store(&table, &bucket).await;
    for (_, outcome) in publish_demo(&store, DEMO_SIZE).await.expect("publish") {
        outcome.expect("publish demo release");
    }
    let origin = Origin::serve_with(
        TestStore::aws(store, table.clone(), bucket),
        quick_refresh(),
    )
    .await;
    let target = "/package?cpuArch=armv8&attrGamer=prod&payloadType=metadataOnly";
    let before = origin.get(target).await;
    assert_eq!(before.status, StatusCode::OK);

    dynamodb_client()
        .await
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("delete table");
    eventually(
        Duration::from_secs(10),
        "refresh failure reported",
        || async { !origin.get("/readyz").await.json()["lastRefreshError"].is_null() },
    )
    .await;
    let ready = origin.get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "the last good rules still serve"
    );
    assert_eq!(ready.json()["rules"], json!(9));
    assert!(
        origin
            .metric("fleetpack_rules_refresh_failures_total")
            .await
            >= 1
    );
    let after = origin.get(target).await;
    assert_eq!(after.status, StatusCode::OK);
    assert!(after.body == before.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_naming_another_bucket_are_left_out_by_the_origin_and_seed_alike() {
    let (table, bucket) = aws_names();
    let store = aws_store(&table, &bucket).await;
    for (_, outcome) in publish_demo(&store, DEMO_SIZE).await.expect("publish") {
        outcome.expect("publish demo release");
    }
    let item = HashMap::from([
        ("app".to_owned(), AttributeValue::S("scoreboard".to_owned())),
        ("env".to_owned(), AttributeValue::S("nightly".to_owned())),
        ("version".to_owned(), AttributeValue::S("9.0.0".to_owned())),
        (
            "url".to_owned(),
            AttributeValue::S("s3://someone-elses-bucket/scoreboard_9.0.0".to_owned()),
        ),
        (
            "md5".to_owned(),
            AttributeValue::S("0123456789abcdef0123456789abcdef".to_owned()),
        ),
    ]);
    dynamodb_client()
        .await
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put foreign rule");
    let origin = Origin::serve(TestStore::aws(store, table.clone(), bucket.clone())).await;
    let report = origin.get("/readyz").await.json();
    assert_eq!(report["rules"], json!(9));
    assert_eq!(report["rejectedRules"], json!(1));
    origin
        .get("/package?cpuArch=mips&scoreboard=nightly")
        .await
        .assert_error(StatusCode::NOT_FOUND, "no deployment package found");

    // The operator's preview agrees with the origin: the foreign rule is not served, so
    // pinning scoreboard to its channel leaves scoreboard out.
    let query = "cpuArch=armv8&scoreboard=nightly&payloadType=metadataOnly";
    let served = origin.get(&format!("/package?{query}")).await;
    assert_eq!(served.status, StatusCode::OK);
    assert!(
        served.json().get("scoreboard").is_none(),
        "{}",
        served.text()
    );
    let resolved = seed(&table, &bucket, &["resolve", query]);
    assert_eq!(
        resolved.status.code(),
        Some(0),
        "{}",
        text(&resolved.stderr)
    );
    assert!(
        text(&resolved.stdout).ends_with(served.text()),
        "seed: {}\norigin: {}",
        text(&resolved.stdout),
        served.text()
    );
    assert!(
        text(&resolved.stdout).contains(&format!("ETag {}", served.etag())),
        "{}",
        text(&resolved.stdout)
    );
    assert!(
        text(&resolved.stderr).contains(
            "rule scoreboard on nightly is not served: url `s3://someone-elses-bucket/scoreboard_9.0.0` names an object this store does not hold"
        ),
        "{}",
        text(&resolved.stderr)
    );
    // An item that is not a rule is skipped by both, and seed says so on stderr.
    dynamodb_client()
        .await
        .put_item()
        .table_name(&table)
        .item("app", AttributeValue::S("junk".to_owned()))
        .item("env", AttributeValue::S("prod".to_owned()))
        .send()
        .await
        .expect("put an item that is not a rule");
    let listed = seed(&table, &bucket, &["list"]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stderr).contains("item is not a rule; left out")
            && text(&listed.stderr).contains("attribute `version` is missing"),
        "{}",
        text(&listed.stderr)
    );
    let nightly: Vec<&str> = text(&listed.stdout)
        .lines()
        .filter(|line| line.starts_with("scoreboard") && line.contains("nightly"))
        .collect();
    assert_eq!(nightly.len(), 1, "{}", text(&listed.stdout));
    assert!(nightly[0].contains("not served: url"), "{}", nightly[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_on_aws_creates_publishes_refuses_and_resolves() {
    let (table, bucket) = aws_names();
    let init = seed(&table, &bucket, &["init"]);
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    assert_eq!(
        text(&init.stdout),
        format!("table {table}: created\nbucket {bucket}: created\n")
    );
    let again = seed(&table, &bucket, &["init"]);
    assert_eq!(
        text(&again.stdout),
        format!(
            "table {table}: already there, left as it is\nbucket {bucket}: already there, left as it is\n"
        )
    );

    let demo = seed(&table, &bucket, &["demo", "--size", &DEMO_SIZE.to_string()]);
    assert_eq!(demo.status.code(), Some(0), "{}", text(&demo.stderr));
    assert_eq!(text(&demo.stdout).lines().count(), 9);

    let scratch = tempfile::tempdir().expect("temp dir");
    let other = scratch.path().join("other.bin");
    std::fs::write(&other, b"other bytes").expect("write");
    let other = other.to_str().expect("UTF-8 path");
    let refused = seed(
        &table,
        &bucket,
        &[
            "publish",
            other,
            "--app",
            "modemFW",
            "--channel",
            "beta",
            "--version",
            "1.0",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr)
            .contains("app `modemFW` version `1.0` is already published with other bytes"),
        "{}",
        text(&refused.stderr)
    );
    let newer = seed(
        &table,
        &bucket,
        &[
            "publish",
            other,
            "--app",
            "modemFW",
            "--channel",
            "prod",
            "--version",
            "1.1",
            "--attr",
            "cellular",
        ],
    );
    assert_eq!(newer.status.code(), Some(0), "{}", text(&newer.stderr));
    assert!(
        text(&newer.stdout).contains("published modemFW 1.1 on prod (11 bytes"),
        "{}",
        text(&newer.stdout)
    );
    assert!(
        text(&newer.stdout).contains("replacing 1.0"),
        "{}",
        text(&newer.stdout)
    );

    let listed = seed(&table, &bucket, &["list"]);
    let modem: Vec<&str> = text(&listed.stdout)
        .lines()
        .filter(|line| line.starts_with("modemFW"))
        .collect();
    assert_eq!(modem.len(), 1, "{modem:?}");
    assert!(
        modem[0].contains("1.1") && modem[0].ends_with("served"),
        "{}",
        modem[0]
    );

    let store = aws_store(&table, &bucket).await;
    let origin = Origin::serve(TestStore::aws(store, table.clone(), bucket.clone())).await;
    let query = "cpuArch=armv8&attrCellular=prod&payloadType=metadataOnly";
    let served = origin.get(&format!("/package?{query}")).await;
    let resolved = seed(&table, &bucket, &["resolve", query]);
    assert_eq!(
        resolved.status.code(),
        Some(0),
        "{}",
        text(&resolved.stderr)
    );
    assert!(
        text(&resolved.stdout).ends_with(served.text()),
        "{}",
        text(&resolved.stdout)
    );
    assert_eq!(served.json()["modemFW"]["latestVersion"], json!("1.1"));
}

async fn cloudfront_client() -> aws_sdk_cloudfront::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_cloudfront::Client::new(&config)
}

/// A distribution on the emulator, for `--distribution-id`; returns its id.
async fn create_distribution(cloudfront: &aws_sdk_cloudfront::Client) -> String {
    use aws_sdk_cloudfront::types::{
        CustomOriginConfig, DefaultCacheBehavior, DistributionConfig, Origin as CdnOrigin,
        OriginProtocolPolicy, Origins, ViewerProtocolPolicy,
    };
    let origin = CdnOrigin::builder()
        .id("origin")
        .domain_name("origin.example.com")
        .custom_origin_config(
            CustomOriginConfig::builder()
                .http_port(80)
                .https_port(443)
                .origin_protocol_policy(OriginProtocolPolicy::HttpOnly)
                .build()
                .expect("origin config"),
        )
        .build()
        .expect("origin");
    let config = DistributionConfig::builder()
        .caller_reference(aws_names().0)
        .comment("fleetpack test")
        .enabled(true)
        .origins(
            Origins::builder()
                .quantity(1)
                .items(origin)
                .build()
                .expect("origins"),
        )
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id("origin")
                .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
                .build()
                .expect("behaviour"),
        )
        .build()
        .expect("distribution config");
    let created = cloudfront
        .create_distribution()
        .distribution_config(config)
        .send()
        .await
        .expect("create a distribution");
    created
        .distribution()
        .expect("a distribution")
        .id()
        .to_owned()
}

/// The paths of each invalidation of the distribution.
async fn invalidations(cloudfront: &aws_sdk_cloudfront::Client, id: &str) -> Vec<Vec<String>> {
    let listed = cloudfront
        .list_invalidations()
        .distribution_id(id)
        .send()
        .await
        .expect("list invalidations");
    let mut paths = Vec::new();
    for summary in listed
        .invalidation_list()
        .map(|list| list.items())
        .unwrap_or_default()
    {
        let invalidation = cloudfront
            .get_invalidation()
            .distribution_id(id)
            .id(summary.id())
            .send()
            .await
            .expect("get invalidation");
        paths.push(
            invalidation
                .invalidation()
                .and_then(|invalidation| invalidation.invalidation_batch())
                .and_then(|batch| batch.paths())
                .map(|paths| paths.items().to_vec())
                .unwrap_or_default(),
        );
    }
    paths
}

/// A store behind a distribution on the emulator.
#[derive(Debug, Clone, Copy)]
struct Cdn<'a> {
    table: &'a str,
    bucket: &'a str,
    id: &'a str,
    cloudfront: &'a aws_sdk_cloudfront::Client,
}

impl Cdn<'_> {
    /// Runs fleetpack-seed with --distribution-id and no --invalidation-delay,
    /// expecting exit `status`; returns how many invalidations it made.
    async fn seed(&self, args: &[&str], status: i32) -> usize {
        self.seed_with(&["--invalidation-delay", "0s"], args, status)
            .await
    }

    /// Like [`Cdn::seed`], with `options` before the command.
    async fn seed_with(&self, options: &[&str], args: &[&str], status: i32) -> usize {
        let before = invalidations(self.cloudfront, self.id).await.len();
        let output = seed(
            self.table,
            self.bucket,
            &[&["--distribution-id", self.id][..], options, args].concat(),
        );
        assert_eq!(
            output.status.code(),
            Some(status),
            "{args:?}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        let after = invalidations(self.cloudfront, self.id).await;
        assert!(
            after.iter().all(|paths| paths == &["/package*"]),
            "every invalidation names /package* alone: {after:?}"
        );
        let added = after.len() - before;
        let said = text(&output.stdout).contains(&format!(
            "of /package* created on CloudFront distribution {}",
            self.id
        ));
        assert_eq!(said, added == 1, "{args:?}: {}", text(&output.stdout));
        added
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_invalidates_the_packages_once_per_change_and_never_for_no_change() {
    let (table, bucket) = aws_names();
    aws_store(&table, &bucket).await;
    let cloudfront = cloudfront_client().await;
    let id = create_distribution(&cloudfront).await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let (first, second) = (scratch.path().join("1.0"), scratch.path().join("1.1"));
    std::fs::write(&first, b"firmware 1.0").expect("write");
    std::fs::write(&second, b"firmware 1.1").expect("write");
    let (first, second) = (
        first.to_str().expect("UTF-8 path"),
        second.to_str().expect("UTF-8 path"),
    );
    let slot = ["--app", "modemFW", "--channel", "prod"];
    let cdn = Cdn {
        table: &table,
        bucket: &bucket,
        id: &id,
        cloudfront: &cloudfront,
    };

    let publish = |file, version| {
        [
            &["publish", file][..],
            &slot[..],
            &["--version", version][..],
        ]
        .concat()
    };
    assert_eq!(
        cdn.seed(&publish(first, "1.0"), 0).await,
        1,
        "a new release"
    );
    assert_eq!(invalidations(&cloudfront, &id).await, [["/package*"]]);
    assert_eq!(
        cdn.seed(&publish(first, "1.0"), 0).await,
        0,
        "the same release again"
    );
    assert_eq!(
        cdn.seed(&publish(second, "1.1"), 0).await,
        1,
        "a newer release"
    );
    // The invalidation waits for the origins to load the change.
    let rollback = [&["rollback"][..], &slot[..]].concat();
    let started = std::time::Instant::now();
    let delay = ["--invalidation-delay", "2s"];
    assert_eq!(cdn.seed_with(&delay, &rollback, 0).await, 1, "a rollback");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Nothing a device gets changes: no invalidation.
    let enable = |version| [&["enable"][..], &slot[..], &["--version", version][..]].concat();
    assert_eq!(
        cdn.seed(&enable("1.0"), 0).await,
        0,
        "enabling the enabled current release"
    );
    let require = [&["require-signatures"][..], &slot[..]].concat();
    assert_eq!(cdn.seed(&require, 0).await, 0, "a rule for publishers");
    let unrequire = [&["require-signatures"][..], &slot[..], &["--off"][..]].concat();
    assert_eq!(cdn.seed(&unrequire, 0).await, 0, "a rule for publishers");
    for readonly in [vec!["list"], vec!["cdn-state"], vec!["segments"]] {
        assert_eq!(cdn.seed(&readonly, 0).await, 0, "nothing to change");
    }
    // A release in the history that is not served still changes answers (the releases
    // a device passes on its way are the enabled ones).
    let disable = [&["disable"][..], &slot[..], &["--version", "1.1"][..]].concat();
    assert_eq!(
        cdn.seed(&disable, 0).await,
        1,
        "disabling a release in the history"
    );
    assert_eq!(cdn.seed(&enable("1.1"), 0).await, 1, "enabling it again");
    // A command that fails changes nothing.
    let missing = [&["rollout"][..], &slot[..], &["--percent", "50"][..]].concat();
    assert_eq!(cdn.seed(&missing, 1).await, 0, "no rollout to change");
    assert_eq!(invalidations(&cloudfront, &id).await.len(), 5);

    // A distribution that does not exist: the release is published, and the operator is
    // told so and how to invalidate by hand.
    std::fs::write(scratch.path().join("1.2"), b"firmware 1.2").expect("write");
    let third = scratch.path().join("1.2");
    let absent = seed(
        &table,
        &bucket,
        &[
            &[
                "--distribution-id",
                "E0000000000000",
                "--invalidation-delay",
                "0s",
            ][..],
            &["publish"],
            &[third.to_str().expect("UTF-8 path")],
            &slot[..],
            &["--version", "1.2"],
        ]
        .concat(),
    );
    assert_eq!(absent.status.code(), Some(1), "{}", text(&absent.stderr));
    let said = text(&absent.stderr);
    for part in [
        "the store change is kept",
        "distribution `E0000000000000`",
        "NoSuchDistribution",
        "aws cloudfront create-invalidation --distribution-id E0000000000000 --paths '/package*'",
        "fleetpack-seed --distribution-id E0000000000000 invalidate",
    ] {
        assert!(said.contains(part), "{part}: {said}");
    }
    assert!(
        text(&absent.stdout).contains("published modemFW 1.2 on prod"),
        "{}",
        text(&absent.stdout)
    );
    let listed = seed(&table, &bucket, &["list"]);
    let modem: Vec<&str> = text(&listed.stdout)
        .lines()
        .filter(|line| line.starts_with("modemFW"))
        .collect();
    assert!(
        modem.len() == 1 && modem[0].contains(" 1.2 ") && modem[0].ends_with("served"),
        "{modem:?}"
    );
    assert_eq!(invalidations(&cloudfront, &id).await.len(), 5);

    // `invalidate` does by hand what a failed invalidation left undone.
    assert_eq!(cdn.seed(&["invalidate"], 0).await, 1, "invalidate");
    // An id that cannot be one is refused before anything changes.
    let malformed = seed(
        &table,
        &bucket,
        &[
            &["--distribution-id", "E1/../x", "publish"][..],
            &[second],
            &["--app", "modemFW", "--channel", "beta", "--version", "1.1"],
        ]
        .concat(),
    );
    assert_eq!(malformed.status.code(), Some(2));
    assert!(
        text(&malformed.stderr).contains("distribution id `E1/../x` is not valid"),
        "{}",
        text(&malformed.stderr)
    );
    let history = seed(
        &table,
        &bucket,
        &["history", "--app", "modemFW", "--channel", "beta"],
    );
    assert_eq!(history.status.code(), Some(1), "beta was never published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_that_gets_no_answer_fails_within_the_store_timeout() {
    let (table, bucket) = aws_names();
    aws_store(&table, &bucket).await;
    let id = create_distribution(&cloudfront_client().await).await;
    let relay = Relay::start().await;
    relay.hang(true);
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("os.img");
    std::fs::write(&file, b"os image").expect("write");
    let started = std::time::Instant::now();
    let output = {
        let (table, bucket, url) = (table.clone(), bucket.clone(), relay.url.clone());
        tokio::task::spawn_blocking(move || {
            command("fleetpack-seed")
                // CloudFront alone goes through the relay; the store answers.
                .env("AWS_ENDPOINT_URL_CLOUDFRONT", url)
                .args(["--store", "aws", "--table", &table, "--bucket", &bucket])
                .args(["--store-connect-timeout", "1s", "--store-timeout", "2s"])
                .args([
                    "--distribution-id",
                    &id,
                    "--invalidation-delay",
                    "0s",
                    "publish",
                ])
                .arg(&file)
                .args(["--app", "os_armv8", "--channel", "prod", "--version", "1.0"])
                .output()
                .expect("run fleetpack-seed")
        })
        .await
        .expect("seed ran")
    };
    let waited = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(
        text(&output.stderr).contains("timed out") && text(&output.stderr).contains("after 2s"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("published os_armv8 1.0 on prod"),
        "{}",
        text(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_binaries_are_uploaded_in_parts() {
    let (table, bucket) = aws_names();
    let scratch = tempfile::tempdir().expect("temp dir");
    let path = scratch.path().join("image.bin");
    // Just over the 64 MiB threshold: five parts, the last one short.
    let bytes: Vec<u8> = (0..(64 * 1024 * 1024 + 12_345u32))
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &bytes).expect("write");
    let path = path.to_str().expect("UTF-8 path");
    assert_eq!(seed(&table, &bucket, &["init"]).status.code(), Some(0));
    let published = seed(
        &table,
        &bucket,
        &[
            "publish",
            path,
            "--app",
            "os_armv8",
            "--channel",
            "prod",
            "--version",
            "3.0.0",
        ],
    );
    assert_eq!(
        published.status.code(),
        Some(0),
        "{}",
        text(&published.stderr)
    );

    let object = s3_client()
        .await
        .get_object()
        .bucket(&bucket)
        .key("os_armv8_3.0.0")
        .send()
        .await
        .expect("get object");
    let stored = object
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes();
    assert!(
        stored.len() == bytes.len() && stored == bytes,
        "the stored object differs"
    );
    let md5 = hex::encode(Md5::digest(&bytes));
    let store = aws_store(&table, &bucket).await;
    let rules = store.load_rules().await.expect("rules").current;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].md5, md5);
    assert_eq!(rules[0].size, Some(bytes.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_made_like_the_sample_is_served_unchanged() {
    let (table, bucket) = aws_names();
    let fixture = sample_fixture(&table, &bucket);
    let store = fleetpack_store::AwsStore::connect(&table, &bucket, Default::default()).await;
    let origin = Origin::serve(TestStore::aws(store, table, bucket.clone())).await;
    let local = Origin::serve(TestStore::demo_local().await).await;
    for query in SAMPLE_QUERIES {
        let metadata = origin
            .get(&format!("/package?{query}&payloadType=metadataOnly"))
            .await;
        let expected = local
            .get(&format!("/package?{query}&payloadType=metadataOnly"))
            .await;
        assert_eq!(
            metadata.status,
            StatusCode::OK,
            "{query}: {}",
            metadata.text()
        );
        let (served, reference) = (metadata.json(), expected.json());
        let apps: Vec<(&String, &serde_json::Value)> =
            served.as_object().expect("object").iter().collect();
        let reference_apps: Vec<&String> = reference.as_object().expect("object").keys().collect();
        assert_eq!(
            apps.iter().map(|(app, _)| *app).collect::<Vec<_>>(),
            reference_apps,
            "{query}"
        );
        for (app, detail) in apps {
            let written = fixture
                .iter()
                .find(|item| {
                    item["app"] == json!(app) && item["version"] == detail["latestVersion"]
                })
                .unwrap_or_else(|| {
                    panic!("{query}: {app} {detail} was not written by the fixture")
                });
            assert_eq!(
                detail["latestVersion"], reference[app]["latestVersion"],
                "{query}"
            );
            assert_eq!(detail["md5"], written["md5"], "{query}");
            assert_eq!(
                detail["url"],
                json!(format!(
                    "s3://{bucket}/{}",
                    written["key"].as_str().expect("key")
                ))
            );
            assert_eq!(detail["status_code"], json!(200));
        }
        let package = origin.get(&format!("/package?{query}")).await;
        let members = decode_both(&package.body);
        assert_eq!(members.len(), served.as_object().expect("object").len() + 1);
        for member in &members[1..] {
            let (app, version) = member.name.rsplit_once('_').expect("<app>_<version>");
            assert_eq!(
                json!(member.md5),
                served[app]["md5"],
                "{query}: {app} {version}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_shared_with_the_sample_keeps_its_current_items_right() {
    let (table, bucket) = aws_names();
    let fixture = sample_fixture(&table, &bucket);
    let sample_md5 = |app: &str, env: &str| {
        fixture
            .iter()
            .find(|item| item["app"] == json!(app) && item["env"] == json!(env))
            .and_then(|item| item["md5"].as_str())
            .expect("the fixture's item")
            .to_owned()
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("os.img");
    std::fs::write(&file, b"a newer OS image".repeat(500)).expect("write");
    let file = file.to_str().expect("UTF-8 path");
    let published = seed(
        &table,
        &bucket,
        &[
            "publish",
            file,
            "--app",
            "os_armv8",
            "--channel",
            "prod",
            "--version",
            "1.2.0",
            "--cpu-arch",
            "armv8",
        ],
    );
    assert_eq!(
        published.status.code(),
        Some(0),
        "{}",
        text(&published.stderr)
    );

    // What the sample reads: the item (app, env) is the current release, in its own
    // attributes; the one it replaced is kept under a key no sample query asks for.
    let dynamodb = dynamodb_client().await;
    let item = |env: &str| {
        let dynamodb = dynamodb.clone();
        let table = table.clone();
        let env = env.to_owned();
        async move {
            dynamodb
                .get_item()
                .table_name(table)
                .key("app", AttributeValue::S("os_armv8".to_owned()))
                .key("env", AttributeValue::S(env))
                .send()
                .await
                .expect("get item")
                .item
        }
    };
    let current = item("prod").await.expect("the current item");
    assert_eq!(current["version"], AttributeValue::S("1.2.0".to_owned()));
    assert_eq!(
        current["url"],
        AttributeValue::S(format!("s3://{bucket}/os_armv8_1.2.0"))
    );
    assert_eq!(current["cpuArch"], AttributeValue::S("armv8".to_owned()));
    let kept = item("prod#1.1.0")
        .await
        .expect("the replaced release, kept");
    assert_eq!(
        kept["md5"],
        AttributeValue::S(sample_md5("os_armv8", "prod"))
    );
    // A sample-style query for a channel finds current items only.
    let prod = dynamodb
        .scan()
        .table_name(&table)
        .filter_expression("env = :env")
        .expression_attribute_values(":env", AttributeValue::S("prod".to_owned()))
        .send()
        .await
        .expect("scan");
    assert_eq!(prod.items().len(), 5, "{:?}", prod.items());

    let history = seed(
        &table,
        &bucket,
        &["history", "--app", "os_armv8", "--channel", "prod"],
    );
    let rows: Vec<&str> = text(&history.stdout).lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{}", text(&history.stdout));
    assert!(rows[0].contains("1.1.0") && rows[1].contains("1.2.0") && rows[1].contains("current"));

    let rolled_back = seed(
        &table,
        &bucket,
        &["rollback", "--app", "os_armv8", "--channel", "prod"],
    );
    assert_eq!(
        rolled_back.status.code(),
        Some(0),
        "{}",
        text(&rolled_back.stderr)
    );
    let current = item("prod").await.expect("the current item");
    assert_eq!(current["version"], AttributeValue::S("1.1.0".to_owned()));
    assert_eq!(
        current["md5"],
        AttributeValue::S(sample_md5("os_armv8", "prod"))
    );
}

/// Runs tests/fixtures/aws_sample_init.py (boto3, as the sample's init.py) and returns
/// what it wrote.
fn sample_fixture(table: &str, bucket: &str) -> Vec<serde_json::Value> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = crate::harness::tools_python()
        .arg(workspace.join("tests/fixtures/aws_sample_init.py"))
        .args([table, bucket])
        .output()
        .expect("run the sample's fixture");
    assert!(
        output.status.success(),
        "fixture failed: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("fixture prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_segments_builds_what_a_sample_table_lacks() {
    let (table, bucket) = aws_names();
    sample_fixture(&table, &bucket);
    let built = seed(&table, &bucket, &["segments"]);
    assert_eq!(built.status.code(), Some(0), "{}", text(&built.stderr));
    assert!(
        text(&built.stdout).ends_with("9 segments built, 0 already current\n"),
        "{}",
        text(&built.stdout)
    );
    let again = seed(&table, &bucket, &["segments"]);
    assert_eq!(text(&again.stdout), "0 segments built, 9 already current\n");

    let store = aws_store(&table, &bucket).await;
    let rules = store.load_rules().await.expect("rules").current;
    let origin = Origin::serve(TestStore::aws(store, table, bucket)).await;
    let package = origin.get("/package?cpuArch=armv8&attrGamer=prod").await;
    for app in ["os_armv8", "scoreboard", "videoStreamer"] {
        let rule = rules
            .iter()
            .find(|rule| rule.app == app && rule.channel == "prod")
            .expect("rule");
        assert!(rule.size.is_some(), "{app} got no size");
        let segment = rule.segment.as_ref().expect("segment");
        let bytes = origin.store.read(&segment.url).await;
        assert!(
            crate::segments::find(&package.body, &bytes).is_some(),
            "the package lacks the segment of {app}"
        );
    }
}

/// A TCP relay to the S3/DynamoDB-compatible server that can be told to hang: from then
/// on it accepts connections and forwards nothing, like a store that stopped answering.
struct Relay {
    url: String,
    hanging: Arc<AtomicBool>,
}

impl Relay {
    async fn start() -> Self {
        let target = std::env::var("AWS_ENDPOINT_URL").expect("the test server's endpoint");
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let hanging = Arc::new(AtomicBool::new(false));
        let hang = Arc::clone(&hanging);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&target).await.expect("the test server");
                let hang = Arc::clone(&hang);
                tokio::spawn(async move {
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        forward(client_read, server_write, Arc::clone(&hang)),
                        forward(server_read, client_write, hang),
                    );
                });
            }
        });
        Relay { url, hanging }
    }

    fn hang(&self, hanging: bool) {
        self.hanging.store(hanging, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` while the relay is not hanging; when it is, holds both open and
/// sends nothing more.
async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    hanging: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(read) = from.read(&mut buf).await else {
            return;
        };
        if hanging.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        if read == 0 || to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_answering_gives_503_within_the_bound() {
    let (table, bucket) = aws_names();
    publish_demo(&aws_store(&table, &bucket).await, DEMO_SIZE)
        .await
        .expect("publish");
    let relay = Relay::start().await;
    let timeouts = fleetpack_store::StoreTimeouts {
        connect: Duration::from_secs(1),
        call: Duration::from_secs(2),
    };
    let loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(&relay.url);
    let store = fleetpack_store::AwsStore::connect_with(&table, &bucket, timeouts, loader).await;
    let config = ServeConfig {
        rules_refresh: Duration::from_millis(300),
        max_rules_age: Duration::from_secs(2),
        ..ServeConfig::default()
    };
    let origin = Origin::serve_with(TestStore::aws(store, table, bucket), config).await;
    assert_eq!(origin.get("/readyz").await.status, StatusCode::OK);
    let served = origin.get("/package?cpuArch=armv8").await;
    assert_eq!(served.status, StatusCode::OK);

    relay.hang(true);
    let started = std::time::Instant::now();
    let hung = origin.get("/package?cpuArch=armv8&os=beta").await;
    let waited = started.elapsed();
    assert_eq!(
        hung.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        hung.text()
    );
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(hung.header("cache-control"), "no-store");
    assert!(hung.has_header("retry-after"));
    // The refreshes fail too, visibly, and the origin turns unready once the rules it
    // serves are older than allowed (it still answers from them).
    eventually(Duration::from_secs(20), "unready", || async {
        let report = origin.get("/readyz").await;
        report.status == StatusCode::SERVICE_UNAVAILABLE
            && report.json()["lastRefreshError"].is_string()
    })
    .await;
    assert!(
        origin
            .metric("fleetpack_rules_refresh_failures_total")
            .await
            >= 1
    );
    assert_eq!(
        origin
            .get("/package?cpuArch=armv8&payloadType=metadataOnly")
            .await
            .status,
        StatusCode::OK
    );

    relay.hang(false);
    eventually(Duration::from_secs(20), "ready again", || async {
        origin.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        origin.get("/package?cpuArch=armv8&os=beta").await.status,
        StatusCode::OK
    );
}
