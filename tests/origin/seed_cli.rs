//! The operator's `fleetpack-seed` binary against a local store in a temp dir.

use std::path::Path;
use std::process::Output;

use fleetpack_store::LocalStore;
use fleetpack_store::demo::DEMO_FLEET;
use tempfile::TempDir;

use crate::harness::{DEMO_SIZE, Origin, TestStore, command, demo_binary, package_details_of};

fn seed(dir: &Path, args: &[&str]) -> Output {
    command("fleetpack-seed")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run fleetpack-seed")
}

fn stdout(output: &Output) -> &str {
    std::str::from_utf8(&output.stdout).expect("UTF-8 stdout")
}

fn stderr(output: &Output) -> &str {
    std::str::from_utf8(&output.stderr).expect("UTF-8 stderr")
}

fn seeded() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo = seed(dir.path(), &["demo", "--size", &DEMO_SIZE.to_string()]);
    assert_eq!(demo.status.code(), Some(0), "{}", stderr(&demo));
    let published: Vec<&str> = stdout(&demo).lines().collect();
    assert_eq!(published.len(), DEMO_FLEET.len(), "{published:?}");
    assert!(published.iter().all(|line| line.starts_with("published ")));
    dir
}

#[test]
fn seed_demo_then_list_shows_nine_served_rules() {
    let dir = seeded();
    let list = seed(dir.path(), &["list"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let mut lines = stdout(&list).lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "APP",
            "ENV",
            "VERSION",
            "CPUARCH",
            "ATTRIBUTES",
            "SIZE",
            "MD5",
            "ROLLOUT",
            "STATUS"
        ]
    );
    let rows: Vec<Vec<String>> = lines
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect();
    let mut fleet = DEMO_FLEET.to_vec();
    fleet.sort_by_key(|release| (release.app, release.channel));
    let expected: Vec<Vec<String>> = fleet
        .iter()
        .map(|release| {
            let or_dash = |text: String| {
                if text.is_empty() {
                    "-".to_owned()
                } else {
                    text
                }
            };
            vec![
                release.app.to_owned(),
                release.channel.to_owned(),
                release.version.to_owned(),
                or_dash(release.cpu_arch.unwrap_or_default().to_owned()),
                or_dash(release.attributes.join(",")),
                DEMO_SIZE.to_string(),
                demo_binary(release.app, release.channel).md5.clone(),
                "-".to_owned(),
                "served".to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn seed_publish_of_other_bytes_under_a_published_version_fails_and_changes_nothing() {
    let dir = seeded();
    let rules = std::fs::read(dir.path().join("rules.json")).expect("rules.json");
    let object_path = dir.path().join("objects/scoreboard_1.0.0");
    let object = std::fs::read(&object_path).expect("object");
    let objects = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("objects"))
            .expect("objects dir")
            .map(|entry| entry.expect("dir entry").file_name())
            .collect();
        names.sort();
        names
    };
    let before = objects();

    let other = dir.path().join("other.bin");
    std::fs::write(&other, b"other bytes").expect("write file");
    let existing = &demo_binary("scoreboard", "prod").md5;
    for (app, channel) in [("scoreboard", "beta"), ("Scoreboard", "prod")] {
        let publish = seed(
            dir.path(),
            &[
                "publish",
                other.to_str().expect("UTF-8 path"),
                "--app",
                app,
                "--channel",
                channel,
                "--version",
                "1.0.0",
                "--attr",
                "gamer",
            ],
        );
        assert_eq!(publish.status.code(), Some(1), "{app} {channel}");
        assert_eq!(
            stderr(&publish),
            format!(
                "fleetpack-seed: cannot publish `{}`: app `{app}` version `1.0.0` is already \
                 published with other bytes (MD5 {existing}, this file has \
                 6eff3450105497cc2ce22ea267f564ba); publish this file under a new version\n",
                other.display()
            )
        );
        assert_eq!(stdout(&publish), "");
    }
    assert!(std::fs::read(dir.path().join("rules.json")).expect("rules.json") == rules);
    assert!(std::fs::read(&object_path).expect("object") == object);
    assert_eq!(objects(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_resolve_prints_what_the_origin_serves() {
    let dir = seeded();
    let query = "cpuArch=armv8&attrGamer=prod";
    let resolve = seed(dir.path(), &["resolve", query]);
    assert_eq!(resolve.status.code(), Some(0), "{}", stderr(&resolve));

    let store = LocalStore::open(dir.path()).expect("open store");
    let origin = Origin::serve(TestStore::local(dir, store)).await;
    let package = origin.get(&format!("/package?{query}")).await;
    let metadata = origin
        .get(&format!("/package?{query}&payloadType=metadataOnly"))
        .await;
    assert_eq!(
        stdout(&resolve),
        format!(
            "200 OK (fullPayload), ETag {}\n\
             binaries sent: os_armv8_1.1.0, scoreboard_1.0.0, videoStreamer_0.0.1\n{}",
            package.etag(),
            String::from_utf8(package_details_of(&metadata.body)).expect("UTF-8")
        )
    );
}

#[test]
fn seed_resolve_exits_2_on_bad_input_and_1_when_nothing_matches() {
    let dir = seeded();
    let cases = [
        (
            vec!["resolve", "cpuArch=arm v8"],
            2,
            "400 Bad Request: parameter `cpuArch` has the value `arm v8`, which is not valid: \
             use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'\n",
        ),
        (
            vec!["resolve", "os=beta"],
            2,
            "400 Bad Request: the required parameter `cpuArch` is missing; add it, for example \
             `cpuArch=armv8`\n",
        ),
        (
            vec!["resolve", "cpuArch=armv8", "--if-none-match", "\"abc"],
            2,
            "400 Bad Request: If-None-Match is malformed near `\"abc`: send a comma-separated \
             list of digests or entity tags, such as `\"<md5>\", <md5>`\n",
        ),
        (
            vec!["resolve", "cpuArch=mips"],
            1,
            "404 Not Found: no deployment package found\n",
        ),
    ];
    for (args, code, message) in cases {
        let output = seed(dir.path(), &args);
        assert_eq!(output.status.code(), Some(code), "{args:?}");
        assert_eq!(stderr(&output), message, "{args:?}");
        assert_eq!(stdout(&output), "", "{args:?}");
    }
}

#[test]
fn seed_demo_run_again_changes_nothing() {
    let dir = seeded();
    let rules_path = dir.path().join("rules.json");
    let mut rules: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rules_path).expect("rules.json")).expect("JSON");
    // As if published long ago, so that a rewrite shows whatever the clock says.
    for rule in rules.as_array_mut().expect("an array of rules") {
        rule["createdAt"] = "2000-01-01T00:00:00Z".into();
    }
    std::fs::write(
        &rules_path,
        serde_json::to_vec_pretty(&rules).expect("JSON"),
    )
    .expect("write");

    let again = seed(dir.path(), &["demo", "--size", &DEMO_SIZE.to_string()]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stdout(&again)
            .lines()
            .all(|line| line.ends_with(", binary already stored)")),
        "{}",
        stdout(&again)
    );
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rules_path).expect("rules.json")).expect("JSON");
    assert_eq!(after, rules);
}

#[test]
fn seed_segments_builds_only_what_is_missing() {
    let dir = seeded();
    let current = seed(dir.path(), &["segments"]);
    assert_eq!(current.status.code(), Some(0), "{}", stderr(&current));
    // Nine current releases and their nine history entries.
    assert_eq!(stdout(&current), "0 segments built, 18 already current\n");

    let rules_path = dir.path().join("rules.json");
    let mut rules: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rules_path).expect("rules.json")).expect("JSON");
    let published = rules.clone();
    for rule in rules
        .as_array_mut()
        .expect("an array of rules")
        .iter_mut()
        .take(3)
    {
        rule.as_object_mut().expect("a rule").remove("segment");
    }
    // Segments stored before block checksums were recorded.
    for rule in rules
        .as_array_mut()
        .expect("an array of rules")
        .iter_mut()
        .skip(3)
        .take(2)
    {
        rule["segment"]
            .as_object_mut()
            .expect("a segment")
            .remove("blocks")
            .expect("block checksums");
    }
    std::fs::write(
        &rules_path,
        serde_json::to_vec_pretty(&rules).expect("JSON"),
    )
    .expect("write");

    let built = seed(dir.path(), &["segments"]);
    assert_eq!(built.status.code(), Some(0), "{}", stderr(&built));
    assert!(
        stdout(&built).ends_with("5 segments built, 13 already current\n"),
        "{}",
        stdout(&built)
    );
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rules_path).expect("rules.json")).expect("JSON");
    for (before, after) in published
        .as_array()
        .into_iter()
        .flatten()
        .zip(rebuilt.as_array().into_iter().flatten())
    {
        assert_eq!(after["segment"], before["segment"], "{}", after["app"]);
    }
}

#[test]
fn seed_refuses_a_malformed_distribution_id_before_it_changes_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flag = seed(dir.path(), &["--distribution-id", "E1 2", "demo"]);
    assert_eq!(flag.status.code(), Some(2), "{}", stderr(&flag));
    assert!(
        stderr(&flag).contains("distribution id `E1 2` is not valid"),
        "{}",
        stderr(&flag)
    );
    let env = command("fleetpack-seed")
        .env("FLEETPACK_DISTRIBUTION_ID", "d-1")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("demo")
        .output()
        .expect("run fleetpack-seed");
    assert_eq!(env.status.code(), Some(2), "{}", stderr(&env));
    assert!(
        stderr(&env).contains("distribution id `d-1` is not valid"),
        "{}",
        stderr(&env)
    );
    let list = seed(dir.path(), &["list"]);
    assert_eq!(stdout(&list).lines().count(), 1, "{}", stdout(&list));

    let unnamed = command("fleetpack-seed")
        .env_remove("FLEETPACK_DISTRIBUTION_ID")
        .arg("invalidate")
        .output()
        .expect("run fleetpack-seed");
    assert_eq!(unnamed.status.code(), Some(2));
    assert!(
        stderr(&unnamed).contains("invalidate needs --distribution-id"),
        "{}",
        stderr(&unnamed)
    );
}
