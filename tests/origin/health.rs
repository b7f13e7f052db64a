//! Liveness, readiness and the background refresh of the rules snapshot.

use std::time::Duration;

use fleetpack_origin::config::ServeConfig;
use fleetpack_store::publish::Release;
use http::StatusCode;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::decode::{Member, decode_both};
use crate::harness::{
    Origin, TestStore, eventually, expected_details, object_keys, object_url, package_details_of,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok_and_readyz_reports_nine_rules() {
    let origin = Origin::demo().await;
    let health = origin.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.header("content-type"), "text/plain");
    assert_eq!(health.header("cache-control"), "no-store");
    assert_eq!(health.text(), "ok\n");

    let ready = origin.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.header("content-type"), "application/json");
    assert_eq!(ready.header("cache-control"), "no-store");
    let report = ready.json();
    assert_eq!(report["ready"], json!(true));
    assert_eq!(report["rules"], json!(9));
    assert_eq!(report["rejectedRules"], json!(0));
    assert_eq!(report["lastRefreshError"], Value::Null);
    assert_eq!(report["store"], json!(origin.store.describe()));
}

async fn served_rules(origin: &Origin) -> Value {
    origin.get("/readyz").await.json()["rules"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_that_find_the_same_rules_keep_the_snapshot_and_its_answers() {
    let config = ServeConfig {
        rules_refresh: Duration::from_millis(100),
        ..ServeConfig::default()
    };
    let origin = Origin::serve_with(TestStore::demo(false).await, config).await;
    let target = "/package?cpuArch=armv8&attrGamer=prod&payloadType=metadataOnly";
    let first = origin.get(target).await;
    assert_eq!(first.status, StatusCode::OK);
    // The local store stamps its rules by file: the same rules in a new file make the
    // refresh read them again, as the AWS store's refreshes always do.
    origin.store.rewrite_rules_unchanged();
    let refreshes = origin.metric("fleetpack_rules_refreshes_total").await;
    eventually(Duration::from_secs(10), "three more refreshes", || async {
        origin.metric("fleetpack_rules_refreshes_total").await >= refreshes + 3
    })
    .await;
    let second = origin.get(target).await;
    assert!(second.body == first.body, "the answer changed");
    assert_eq!(origin.metric("fleetpack_answers_reused_total").await, 1);
    assert_eq!(origin.metric("fleetpack_rules_snapshots_total").await, 1);
    assert_eq!(
        origin
            .metric("fleetpack_rules_refresh_failures_total")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_published_while_serving_is_picked_up_by_the_refresh_and_ends_reuse() {
    let origin = Origin::demo().await;
    let target = "/package?cpuArch=armv8&attrGamer=prod&payloadType=metadataOnly";
    let before = origin.get(target).await;
    assert_eq!(
        object_keys(&before.body),
        ["os_armv8", "scoreboard", "videoStreamer"]
    );
    // The same request again reuses the answer of the first one.
    assert_eq!(origin.get(target).await.body, before.body);
    assert_eq!(origin.metric("fleetpack_answers_reused_total").await, 1);

    let scratch = tempfile::tempdir().expect("temp dir");
    let binary = scratch.path().join("thermostat.bin");
    let bytes: Vec<u8> = (0..70_000u32).map(|n| (n * 7 % 251) as u8).collect();
    std::fs::write(&binary, &bytes).expect("write binary");
    // An upper-case name sorts between the others only when case is ignored.
    let release = Release {
        attributes: vec!["gamer".to_owned()],
        mandatory: true,
        ..Release::new("Thermostat", "prod", "3.1.0")
    };
    origin.store.publish(&release, &binary).await;

    eventually(Duration::from_secs(10), "tenth rule served", || async {
        served_rules(&origin).await == json!(10)
    })
    .await;
    // New rules, new answers: nothing is reused from the old snapshot.
    let after = origin.get(target).await;
    assert_eq!(origin.metric("fleetpack_answers_reused_total").await, 1);
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(
        object_keys(&after.body),
        ["os_armv8", "scoreboard", "Thermostat", "videoStreamer"]
    );
    let md5 = hex::encode(Md5::digest(&bytes));
    let mut expected = expected_details(
        &[
            ("os_armv8", "prod"),
            ("scoreboard", "prod"),
            ("videoStreamer", "prod"),
        ],
        &[],
    );
    expected["Thermostat"] = json!({
        "latestVersion": "3.1.0",
        "url": object_url("Thermostat_3.1.0"),
        "status_code": 200,
        "channel": "prod",
        "md5": md5,
        "sha256": hex::encode(Sha256::digest(&bytes)),
        "size": bytes.len(),
        "mandatory": true,
        "downloadUrl": format!("/binaries/{}", hex::encode(Sha256::digest(&bytes))),
    });
    assert_eq!(after.json(), expected);
    assert_ne!(after.etag(), before.etag());
    assert_eq!(origin.metric("fleetpack_rules_snapshots_total").await, 2);

    let package = origin.get("/package?cpuArch=armv8&attrGamer=prod").await;
    let members = decode_both(&package.body);
    let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "package_details.json",
            "os_armv8_1.1.0",
            "scoreboard_1.0.0",
            "Thermostat_3.1.0",
            "videoStreamer_0.0.1"
        ]
    );
    assert_eq!(
        members[0],
        Member::expected("package_details.json", &package_details_of(&after.body))
    );
    assert_eq!(members[3], Member::expected("Thermostat_3.1.0", &bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_rules_are_served_only_once_two_reads_agree() {
    let store = TestStore::demo_local().await;
    let rules_path = store.rules_file().expect("a local store");
    let rules: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&rules_path).expect("rules.json")).expect("JSON");
    // A writer that changes the rules every 30 ms, as a publish in progress would.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let writing = std::sync::Arc::clone(&writing);
        let rules_path = rules_path.clone();
        tokio::spawn(async move {
            let mut turn = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                turn += 1;
                let mut changed = rules.clone();
                changed.truncate(7 + (turn % 3) as usize);
                changed[0]["createdAt"] = json!(format!("2026-01-01T00:00:{:02}Z", turn % 60));
                let temporary = rules_path.with_extension(format!("{turn}.tmp"));
                std::fs::write(&temporary, serde_json::to_vec(&changed).expect("JSON"))
                    .expect("write");
                std::fs::rename(&temporary, &rules_path).expect("rename");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            std::fs::write(&rules_path, serde_json::to_vec(&rules).expect("JSON")).expect("write");
        })
    };
    let config = ServeConfig {
        rules_refresh: Duration::from_millis(100),
        ..ServeConfig::default()
    };
    let origin = Origin::serve_with(store, config).await;
    for _ in 0..20 {
        assert_eq!(
            origin.get("/readyz").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            origin.get("/package?cpuArch=armv8").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    eventually(Duration::from_secs(10), "ready", || async {
        origin.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    assert_eq!(served_rules(&origin).await, json!(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_whose_binary_is_missing_is_left_out_until_it_arrives() {
    let store = TestStore::demo(true).await;
    let binary = crate::harness::demo_binary("modemFW", "prod");
    store.tamper("modemFW", "1.0", None).await;
    let config = ServeConfig {
        rules_refresh: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let origin = Origin::serve_with(store, config).await;
    let report = origin.get("/readyz").await.json();
    assert_eq!(report["rules"], json!(8));
    // The current release and its history entry.
    assert_eq!(report["rejectedRules"], json!(2));
    let target = "/package?cpuArch=armv8&attrCellular=prod&payloadType=metadataOnly";
    assert!(origin.get(target).await.json().get("modemFW").is_none());

    origin
        .store
        .tamper("modemFW", "1.0", Some(&binary.bytes))
        .await;
    eventually(Duration::from_secs(10), "the rule served", || async {
        served_rules(&origin).await == json!(9)
    })
    .await;
    assert_eq!(
        origin.get(target).await.json()["modemFW"]["latestVersion"],
        "1.0"
    );
}
