//! Releases over time, on the store of this pass, through `fleetpack-seed` and real
//! sockets: history, staged rollouts, rollback, disable and enable, promote, mandatory
//! and required releases, no accidental downgrades, and operators racing each other.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fleetpack_resolver::{is_member, rollout_id};
use fleetpack_store::publish::{Release, publish};
use http::{Method, StatusCode};
use md5::{Digest, Md5};
use serde_json::Value;
use tempfile::TempDir;

use crate::harness::{Origin, TestStore, eventually, quick_refresh, request};

const APP: &str = "os_armv8";
const QUERY: &str = "/package?cpuArch=armv8&payloadType=metadataOnly";

/// Binaries of each version, and the store and origin they are published to.
struct Fleet {
    files: TempDir,
    origin: Origin,
}

impl Fleet {
    async fn new() -> Self {
        Fleet {
            files: tempfile::tempdir().expect("temp dir"),
            origin: Origin::serve_with(TestStore::empty().await, quick_refresh()).await,
        }
    }

    /// The bytes of `version`: its own, so that each version has its own digest.
    fn bytes(version: &str) -> Vec<u8> {
        format!("os image {version}\n").repeat(400).into_bytes()
    }

    fn md5(version: &str) -> String {
        hex::encode(Md5::digest(Self::bytes(version)))
    }

    fn file(&self, version: &str) -> PathBuf {
        let path = self.files.path().join(format!("{APP}_{version}"));
        if !path.exists() {
            std::fs::write(&path, Self::bytes(version)).expect("write binary");
        }
        path
    }

    fn seed(&self, args: &[&str]) -> Output {
        self.origin.store.seed(args)
    }

    /// `fleetpack-seed ARGS`, which must succeed; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let output = self.seed(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "fleetpack-seed {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Sets the share of the prod rollout with `fleetpack-seed rollout`.
    fn rollout(&self, percent: u8) -> String {
        let percent = percent.to_string();
        self.run(&[
            "rollout",
            "--app",
            APP,
            "--channel",
            "prod",
            "--percent",
            &percent,
        ])
    }

    /// Publishes `version` of the OS image on `channel` with `fleetpack-seed`.
    fn publish(&self, channel: &str, version: &str, extra: &[&str]) -> String {
        let file = self.file(version);
        let file = file.to_str().expect("UTF-8 path");
        let mut args = vec![
            "publish",
            file,
            "--app",
            APP,
            "--channel",
            channel,
            "--version",
            version,
            "--cpu-arch",
            "armv8",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The metadata entry of the OS image for a device asking `query` with `if_none_match`.
    async fn entry(&self, query: &str, if_none_match: &[&str]) -> Value {
        let header = if_none_match.join(", ");
        let headers: Vec<(&str, &str)> = if header.is_empty() {
            Vec::new()
        } else {
            vec![("if-none-match", header.as_str())]
        };
        let response = self.origin.get_with(query, &headers).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        response.json()[APP].clone()
    }

    async fn version(&self, query: &str) -> String {
        let entry = self.entry(query, &[]).await;
        entry["latestVersion"]
            .as_str()
            .expect("a version")
            .to_owned()
    }

    /// Waits until a device asking `query` is served `version` (the rules may not be
    /// loaded yet: a 404 is a wait too).
    async fn serves_to(&self, query: &str, version: &str) {
        eventually(
            Duration::from_secs(15),
            &format!("{version} served"),
            || async {
                let response = self.origin.get(query).await;
                response.status == StatusCode::OK
                    && response.json()[APP]["latestVersion"] == version
            },
        )
        .await;
    }

    /// Waits until a device without a key is served `version`.
    async fn serves(&self, version: &str) {
        self.serves_to(QUERY, version).await;
    }
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("device-{i:04}.k")).collect()
}

/// The devices among `keys` that get the candidate, by asking the origin.
async fn members(fleet: &Fleet, keys: &[String], candidate: &str) -> Vec<String> {
    let mut members = Vec::new();
    for key in keys {
        let version = fleet.version(&format!("{QUERY}&deviceKey={key}")).await;
        if version == candidate {
            members.push(key.clone());
        }
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_percent_rollout_is_raised_halted_and_completed() {
    let fleet = Fleet::new().await;
    fleet.publish("prod", "1.0.0", &[]);
    let out = fleet.publish("prod", "1.1.0", &["--rollout", "10"]);
    assert!(
        out.contains("candidate for 10% of devices, 1.0.0 stays current"),
        "{out}"
    );
    let id = rollout_id(APP, "prod", "1.1.0");
    let keys = keys(300);
    let expected = |percent| -> Vec<String> {
        keys.iter()
            .filter(|key| is_member(&id, key, percent))
            .cloned()
            .collect()
    };
    fleet
        .serves_to(&format!("{QUERY}&cohort={id}"), "1.1.0")
        .await;
    // Devices without a key, and those outside the share, stay on the current release.
    assert_eq!(fleet.version(QUERY).await, "1.0.0");
    let at_ten = members(&fleet, &keys, "1.1.0").await;
    assert_eq!(at_ten, expected(10));
    assert!(!at_ten.is_empty() && at_ten.len() < 60, "{}", at_ten.len());

    fleet.rollout(50);
    eventually(Duration::from_secs(15), "rollout raised", || async {
        members(&fleet, &keys[..40], "1.1.0").await
            == expected(50)
                .into_iter()
                .filter(|key| keys[..40].contains(key))
                .collect::<Vec<_>>()
    })
    .await;
    let at_fifty = members(&fleet, &keys, "1.1.0").await;
    assert_eq!(at_fifty, expected(50));
    assert!(
        at_ten.iter().all(|key| at_fifty.contains(key)),
        "a device left the rollout"
    );
    // A second origin instance on the same store gives every device the same answer,
    // byte for byte.
    let second = fleet.origin.another_instance(quick_refresh()).await;
    for key in &keys {
        let target = format!("{QUERY}&deviceKey={key}");
        let (one, two) = (
            fleet.origin.get(&target).await,
            request(second, Method::GET, &target, &[]).await,
        );
        assert_eq!(one.body, two.body, "{key}");
        assert_eq!(one.etag(), two.etag(), "{key}");
    }

    let halted = fleet.rollout(0);
    assert!(
        halted.contains("serves 1.0.0, 1.1.0 to 0% of devices"),
        "{halted}"
    );
    eventually(Duration::from_secs(15), "rollout halted", || async {
        members(&fleet, &at_fifty, "1.1.0").await.is_empty()
    })
    .await;

    fleet.rollout(100);
    fleet.serves("1.1.0").await;
    assert!(members(&fleet, &keys, "1.0.0").await.is_empty());
    let history = fleet.run(&["history", "--app", APP, "--channel", "prod"]);
    assert!(
        history
            .lines()
            .any(|line| line.contains("1.1.0") && line.contains("current")),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_falls_back_and_rollback_takes_devices_back_on_purpose() {
    let fleet = Fleet::new().await;
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        fleet.publish("prod", version, &[]);
    }
    fleet.serves("1.2.0").await;
    let disabled = fleet.run(&[
        "disable",
        "--app",
        APP,
        "--channel",
        "prod",
        "--version",
        "1.2.0",
    ]);
    assert!(disabled.contains("serves 1.1.0 (was 1.2.0)"), "{disabled}");
    fleet.serves("1.1.0").await;
    // A device that installed 1.2.0 keeps it, so it has all it is offered: disabling
    // is not a rollback.
    let on_1_2 = fleet
        .origin
        .get_with(QUERY, &[("if-none-match", &Fleet::md5("1.2.0"))])
        .await;
    assert_eq!(on_1_2.status, StatusCode::NOT_MODIFIED);

    let enabled = fleet.run(&[
        "enable",
        "--app",
        APP,
        "--channel",
        "prod",
        "--version",
        "1.2.0",
    ]);
    assert!(enabled.contains("serves 1.1.0, as before"), "{enabled}");

    let rolled_back = fleet.run(&["rollback", "--app", APP, "--channel", "prod"]);
    assert!(
        rolled_back.contains("serves 1.0.0 (rolled back)"),
        "{rolled_back}"
    );
    fleet.serves("1.0.0").await;
    // Now devices on newer versions are taken back, and told so.
    let on_1_1 = fleet.entry(QUERY, &[&Fleet::md5("1.1.0")]).await;
    assert_eq!(on_1_1["latestVersion"], "1.0.0");
    assert_eq!(on_1_1["downgrade"], true);
    assert_eq!(on_1_1["installedVersion"], "1.1.0");
    assert_eq!(on_1_1["status_code"], 200);

    fleet.run(&[
        "rollback",
        "--app",
        APP,
        "--channel",
        "prod",
        "--to",
        "1.2.0",
    ]);
    fleet.serves("1.2.0").await;
    let refused = fleet.seed(&[
        "rollback",
        "--app",
        APP,
        "--channel",
        "prod",
        "--to",
        "9.9.9",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("has no version `9.9.9`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_mandatory_releases_and_required_steps_reach_the_device() {
    let fleet = Fleet::new().await;
    fleet.publish("prod", "1.0.0", &[]);
    fleet.publish("prod", "1.1.0", &["--mandatory"]);
    fleet.publish("prod", "1.2.0", &[]);
    fleet.serves("1.2.0").await;
    let on_1_0 = fleet.entry(QUERY, &[&Fleet::md5("1.0.0")]).await;
    assert_eq!(on_1_0["latestVersion"], "1.2.0");
    assert_eq!(on_1_0["mandatory"], true);
    assert_eq!(on_1_0["installedVersion"], "1.0.0");
    let on_1_1 = fleet.entry(QUERY, &[&Fleet::md5("1.1.0")]).await;
    assert_eq!(on_1_1["latestVersion"], "1.2.0");
    assert!(on_1_1.get("mandatory").is_none(), "{on_1_1}");

    fleet.publish("prod", "1.3.0", &["--required"]);
    fleet.publish("prod", "1.4.0", &[]);
    fleet.serves("1.4.0").await;
    // A device below the required release gets it first, and the mandatory 1.1.0 it
    // skipped on the way makes it mandatory.
    let step = fleet.entry(QUERY, &[&Fleet::md5("1.0.0")]).await;
    assert_eq!(step["latestVersion"], "1.3.0");
    assert_eq!(step["required"], true);
    assert_eq!(step["mandatory"], true);
    let after_step = fleet.entry(QUERY, &[&Fleet::md5("1.3.0")]).await;
    assert_eq!(after_step["latestVersion"], "1.4.0");
    // A device that says nothing of itself gets the newest.
    assert_eq!(fleet.version(QUERY).await, "1.4.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_a_newer_channel_is_not_offered_an_older_release() {
    let fleet = Fleet::new().await;
    fleet.publish("prod", "1.1.0", &[]);
    fleet.publish("beta", "2.0.0", &[]);
    fleet.serves("1.1.0").await;
    fleet.serves_to(&format!("{QUERY}&os=beta"), "2.0.0").await;
    // The device keeps what it runs: it has all it is offered, so the answer is 304,
    // and with another app beside it, the OS entry says 2.0.0 and 304.
    let full = fleet
        .origin
        .get_with(
            "/package?cpuArch=armv8",
            &[("if-none-match", &Fleet::md5("2.0.0"))],
        )
        .await;
    assert_eq!(full.status, StatusCode::NOT_MODIFIED);
    let modem = Fleet::bytes("modem");
    let modem_file = fleet.files.path().join("modem");
    std::fs::write(&modem_file, &modem).expect("write binary");
    fleet.run(&[
        "publish",
        path_text(&modem_file),
        "--app",
        "modemFW",
        "--channel",
        "prod",
        "--version",
        "1.0",
        "--attr",
        "cellular",
    ]);
    let both = format!("{QUERY}&attrCellular=prod");
    eventually(Duration::from_secs(15), "modem served", || async {
        let response = fleet.origin.get(&both).await;
        response.status == StatusCode::OK && response.json().get("modemFW").is_some()
    })
    .await;
    let on_beta = fleet.entry(&both, &[&Fleet::md5("2.0.0")]).await;
    assert_eq!(on_beta["latestVersion"], "2.0.0");
    assert_eq!(on_beta["status_code"], 304);
    assert_eq!(on_beta["channel"], "beta");
    assert!(on_beta.get("downgrade").is_none(), "{on_beta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_serves_the_same_bytes_on_another_channel() {
    let fleet = Fleet::new().await;
    fleet.publish("beta", "2.0.0", &[]);
    fleet.publish("prod", "1.1.0", &[]);
    let promoted = fleet.run(&["promote", "--app", APP, "--from", "beta", "--to", "prod"]);
    assert!(promoted.contains("serves 2.0.0 (was 1.1.0)"), "{promoted}");
    fleet.serves("2.0.0").await;
    let entry = fleet.entry(QUERY, &[]).await;
    assert_eq!(entry["channel"], "prod");
    assert_eq!(entry["md5"], Fleet::md5("2.0.0"));
    let beta = fleet.entry(&format!("{QUERY}&os=beta"), &[]).await;
    assert_eq!(entry["url"], beta["url"], "no second copy of the binary");
    let package = fleet.origin.get("/package?cpuArch=armv8").await;
    assert_eq!(package.status, StatusCode::OK);
    let members = crate::decode::decode_both(&package.body);
    let binary = members
        .iter()
        .find(|member| member.name == format!("{APP}_2.0.0"))
        .expect("the promoted binary in the package");
    assert_eq!(binary.md5, Fleet::md5("2.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_publishes_keep_fifty_releases() {
    let fleet = Fleet::new().await;
    for minor in 0..50 {
        let version = format!("1.{minor}.0");
        let release = Release {
            cpu_arch: Some("armv8".to_owned()),
            ..Release::new(APP, "prod", version.as_str())
        };
        publish(
            &fleet.origin.store.store,
            &release,
            &fleet.file(&version),
            &|_| {},
            None,
        )
        .await
        .expect("publish");
    }
    let history = fleet.run(&["history", "--app", APP, "--channel", "prod"]);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 50, "{history}");
    for (at, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[0], (at + 1).to_string(), "{row}");
        assert_eq!(fields[1], format!("1.{at}.0"), "{row}");
    }
    assert!(rows[49].contains("current"), "{}", rows[49]);
    fleet.serves("1.49.0").await;
    fleet.run(&[
        "rollback",
        "--app",
        APP,
        "--channel",
        "prod",
        "--to",
        "1.7.0",
    ]);
    fleet.serves("1.7.0").await;
    let json: Value =
        serde_json::from_str(&fleet.run(&["history", "--app", APP, "--channel", "prod", "--json"]))
            .expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_operators_lose_nothing() {
    let fleet = Fleet::new().await;
    fleet.publish("prod", "1.0.0", &[]);
    let versions: Vec<String> = (1..=6).map(|minor| format!("1.{minor}.0")).collect();
    let files: Vec<PathBuf> = versions.iter().map(|version| fleet.file(version)).collect();
    let args = fleet.origin.store.args();
    let racers: Vec<std::process::Child> = versions
        .iter()
        .zip(&files)
        .map(|(version, file)| {
            crate::harness::command("fleetpack-seed")
                .args(&args)
                .args([
                    "publish",
                    path_text(file),
                    "--app",
                    APP,
                    "--channel",
                    "prod",
                ])
                .args(["--version", version, "--cpu-arch", "armv8"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn fleetpack-seed")
        })
        .collect();
    let mut won = Vec::new();
    for (version, racer) in versions.iter().zip(racers) {
        let output = racer.wait_with_output().expect("fleetpack-seed ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => won.push(version.clone()),
            Some(1) => assert!(stderr.contains("run it again"), "{stderr}"),
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    assert!(!won.is_empty());
    // Every release published is in the history; the current one is a winner's.
    let stored = fleet.origin.store.load_stored().await;
    for version in &versions {
        assert!(
            stored
                .history
                .iter()
                .any(|release| &release.version == version),
            "{version} lost from the history"
        );
    }
    let current = stored.current(APP, "prod").expect("a current release");
    assert!(
        won.contains(&current.version),
        "{} {won:?}",
        current.version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_resolve_with_a_device_key_answers_as_the_origin() {
    let fleet = Fleet::new().await;
    fleet.publish("prod", "1.0.0", &[]);
    fleet.publish("prod", "1.1.0", &["--rollout", "30", "--mandatory"]);
    let id = rollout_id(APP, "prod", "1.1.0");
    fleet
        .serves_to(&format!("{QUERY}&cohort={id}"), "1.1.0")
        .await;
    let keys = keys(40);
    let member = keys
        .iter()
        .find(|key| is_member(&id, key, 30))
        .expect("a member");
    let other = keys
        .iter()
        .find(|key| !is_member(&id, key, 30))
        .expect("a non-member");
    for key in [member, other] {
        let md5 = Fleet::md5("1.0.0");
        let served = fleet
            .origin
            .get_with(
                &format!("{QUERY}&deviceKey={key}"),
                &[("if-none-match", &md5)],
            )
            .await;
        let resolved = fleet.run(&[
            "resolve",
            &QUERY["/package?".len()..],
            "--device-key",
            key,
            "--if-none-match",
            &md5,
        ]);
        assert!(
            resolved.ends_with(served.text()),
            "{resolved}\n{}",
            served.text()
        );
        assert!(resolved.contains(served.header("etag")), "{resolved}");
    }
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
