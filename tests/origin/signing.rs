//! Signed releases, on the store of this pass: keys made by `fleetpack-seed keygen`,
//! releases signed at publish, envelopes served as stored by two origin instances, and
//! both verifiers (`fleetpack-seed verify` and the device reference in
//! devices/python/fleetpack_verify.py) accepting them and refusing every kind of
//! tampering with a message that names it.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::harness::{Origin, TestStore, quick_refresh, request, tools_python};

const PACKAGE: &str = "/package?cpuArch=armv8&attrCellular=prod";
const METADATA: &str = "/package?cpuArch=armv8&attrCellular=prod&payloadType=metadataOnly";

/// A store, its origin, and a directory with keys and files.
struct Signed {
    dir: TempDir,
    origin: Origin,
}

impl Signed {
    async fn new() -> Self {
        let signed = Signed {
            dir: tempfile::tempdir().expect("temp dir"),
            origin: Origin::serve_with(TestStore::empty().await, quick_refresh()).await,
        };
        let keygen = signed.seed(&["keygen", "--out", &signed.path("keys")]);
        assert!(keygen.status.success(), "{}", text(&keygen.stderr));
        signed
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn seed(&self, args: &[&str]) -> Output {
        self.origin.store.seed(args)
    }

    /// Publishes `bytes` as `version` of `app`, with `extra` arguments.
    fn publish(&self, app: &str, version: &str, bytes: &[u8], extra: &[&str]) -> Output {
        let file = self.write(&format!("{app}-{version}.bin"), bytes);
        let mut args = vec![
            "publish",
            &file,
            "--app",
            app,
            "--channel",
            "prod",
            "--version",
            version,
        ];
        args.extend_from_slice(extra);
        self.seed(&args)
    }

    fn publish_signed(&self, app: &str, version: &str, extra: &[&str]) {
        let bytes = format!("{app} {version}\n").repeat(500).into_bytes();
        let key = self.path("keys/release.key");
        let mut args = vec!["--signing-key", key.as_str()];
        args.extend_from_slice(extra);
        let published = self.publish(app, version, &bytes, &args);
        assert!(published.status.success(), "{}", text(&published.stderr));
    }

    /// Waits until the origin serves both apps at these versions; their metadata.
    async fn serves(&self, os: &str, modem: &str) -> Value {
        self.metadata_when(|metadata| {
            metadata["os_armv8"]["latestVersion"] == os
                && metadata["modemFW"]["latestVersion"] == modem
        })
        .await
    }

    /// The metadata of both apps, once `condition` holds for it.
    async fn metadata_when(&self, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let response = self.origin.get(METADATA).await;
            if response.status == StatusCode::OK {
                let metadata = response.json();
                if condition(&metadata) {
                    return metadata;
                }
            }
            assert!(std::time::Instant::now() < deadline, "not served in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// Both verifiers on a package or a metadata file, trusting the key made at the
    /// start, with `extra` arguments for the Rust one and the Python one.
    fn verify(&self, file: &str, metadata: bool, rust: &[&str], python: &[&str]) -> [Output; 2] {
        self.verify_trusting(
            &[&self.path("keys/release.pub")],
            file,
            metadata,
            rust,
            python,
        )
    }

    /// Both verifiers, trusting the public keys in `keys`.
    fn verify_trusting(
        &self,
        keys: &[&str],
        file: &str,
        metadata: bool,
        rust: &[&str],
        python: &[&str],
    ) -> [Output; 2] {
        let trusted: Vec<&str> = keys.iter().flat_map(|key| ["--public-key", key]).collect();
        let command = if metadata {
            "verify-metadata"
        } else {
            "verify"
        };
        let seed = crate::harness::command("fleetpack-seed")
            .args([command, file])
            .args(&trusted)
            .args(rust)
            .output()
            .expect("run fleetpack-seed");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/python/fleetpack_verify.py");
        let mut python_command = tools_python();
        python_command.arg(script);
        if metadata {
            python_command.arg("--metadata");
        }
        let python = python_command
            .arg(file)
            .args(&trusted)
            .args(python)
            .output()
            .expect("run the device verifier");
        [seed, python]
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Both verifiers accepted.
fn accepted(outputs: [Output; 2]) {
    for output in outputs {
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    }
}

/// Both verifiers refused, each naming the problem.
fn refused(outputs: [Output; 2], rust: &str, python: &str) {
    let [seed, device] = outputs;
    assert_eq!(seed.status.code(), Some(1), "{}", text(&seed.stdout));
    assert!(text(&seed.stderr).contains(rust), "{}", text(&seed.stderr));
    assert_eq!(device.status.code(), Some(1), "{}", text(&device.stdout));
    assert!(
        text(&device.stderr).contains(python),
        "{}",
        text(&device.stderr)
    );
}

/// package_details.json of a package, and its files.
fn unpack(package: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(package));
    archive
        .entries()
        .expect("a tar")
        .map(|entry| {
            let mut entry = entry.expect("an entry");
            let name = entry.path().expect("a name").display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read");
            (name, bytes)
        })
        .collect()
}

/// A package of these files, as a device might be served it by someone else.
fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, &bytes[..])
            .expect("append");
    }
    builder
        .into_inner()
        .and_then(flate2::write::GzEncoder::finish)
        .expect("finish")
}

/// `metadata` with the envelope of `app` changed by `change`.
fn with_envelope(metadata: &Value, app: &str, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut changed = metadata.clone();
    change(&mut changed[app]["envelope"]);
    serde_json::to_vec(&changed).expect("JSON")
}

/// `text` (base64) with one bit of its decoded bytes flipped.
fn flip_base64(text: &Value, at: usize) -> Value {
    let mut bytes = BASE64
        .decode(text.as_str().expect("base64"))
        .expect("base64");
    bytes[at] ^= 1;
    Value::from(BASE64.encode(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_releases_reach_devices_as_stored_and_verify() {
    let signed = Signed::new().await;
    let key_mode = std::fs::metadata(signed.path("keys/release.key"))
        .expect("private key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let public = std::fs::read_to_string(signed.path("keys/release.pub")).expect("public key");
    let keyid = hex::encode(Sha256::digest(hex::decode(public.trim()).expect("hex")));
    signed.publish_signed("os_armv8", "1.0.0", &["--cpu-arch", "armv8"]);
    signed.publish_signed("modemFW", "1.0", &["--attr", "cellular"]);
    let metadata = signed.serves("1.0.0", "1.0").await;
    assert_eq!(
        metadata["os_armv8"]["envelope"]["signatures"][0]["keyid"],
        keyid
    );

    // Two origin instances serve the same bytes: the metadata and the package.
    let second = signed.origin.another_instance(quick_refresh()).await;
    let (one, two) = (
        signed.origin.get(METADATA).await,
        request(second, Method::GET, METADATA, &[]).await,
    );
    assert_eq!(one.body, two.body);
    let (package, again) = (
        signed.origin.get(PACKAGE).await,
        request(second, Method::GET, PACKAGE, &[]).await,
    );
    assert_eq!(package.body, again.body);
    // The archive's package_details.json carries the same envelopes.
    let files = unpack(&package.body);
    let details: Value = serde_json::from_slice(&files[0].1).expect("JSON");
    for app in ["os_armv8", "modemFW"] {
        assert_eq!(details[app]["envelope"], metadata[app]["envelope"], "{app}");
    }

    let package_file = signed.write("package.tar.gz", &package.body);
    accepted(signed.verify(&package_file, false, &[], &[]));
    let metadata_file = signed.write("details.json", &one.body);
    accepted(signed.verify(&metadata_file, true, &[], &[]));
    // The device keeps the sequences it saw, and refuses anything below them.
    let state = signed.path("state.json");
    accepted(signed.verify(&package_file, false, &[], &["--state", &state]));
    let seen: Value = serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("JSON");
    assert_eq!(seen["os_armv8/prod"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_old_and_foreign_statements_are_refused() {
    let signed = Signed::new().await;
    signed.publish_signed("os_armv8", "1.0.0", &["--cpu-arch", "armv8"]);
    signed.publish_signed("modemFW", "1.0", &["--attr", "cellular"]);
    let metadata = signed.serves("1.0.0", "1.0").await;
    let package = signed.origin.get(PACKAGE).await;

    // A bit flipped in a binary (in an archive that is otherwise valid).
    let mut files = unpack(&package.body);
    files[1].1[100] ^= 1;
    let forged = signed.write("forged.tar.gz", &pack(&files));
    refused(
        signed.verify(&forged, false, &[], &[]),
        "says sha256",
        "says sha256",
    );

    for (name, app, change, rust, python) in [
        (
            "payload.json",
            "os_armv8",
            Box::new(|envelope: &mut Value| {
                envelope["payload"] = flip_base64(&envelope["payload"], 20);
            }) as Box<dyn FnOnce(&mut Value)>,
            "does not verify",
            "does not verify",
        ),
        (
            "signature.json",
            "os_armv8",
            Box::new(|envelope: &mut Value| {
                envelope["signatures"][0]["sig"] =
                    flip_base64(&envelope["signatures"][0]["sig"], 5);
            }),
            "does not verify",
            "does not verify",
        ),
        (
            "other-app.json",
            "os_armv8",
            Box::new(|envelope: &mut Value| *envelope = metadata["modemFW"]["envelope"].clone()),
            "says app `modemFW`",
            "says app 'modemFW'",
        ),
    ] {
        let file = signed.write(name, &with_envelope(&metadata, app, change));
        refused(signed.verify(&file, true, &[], &[]), rust, python);
    }

    // A statement of another version: the one of 1.0.0 kept beside 1.1.0's entry.
    signed.publish_signed("os_armv8", "1.1.0", &["--cpu-arch", "armv8"]);
    let newer = signed.serves("1.1.0", "1.0").await;
    let old_statement = with_envelope(&newer, "os_armv8", |envelope| {
        *envelope = metadata["os_armv8"]["envelope"].clone();
    });
    let file = signed.write("other-version.json", &old_statement);
    refused(
        signed.verify(&file, true, &[], &[]),
        "says version `1.0.0`",
        "says version '1.0.0'",
    );

    // A sequence below one the device saw.
    let file = signed.write("details.json", &serde_json::to_vec(&newer).expect("JSON"));
    let state = signed.write(
        "state.json",
        br#"{"os_armv8/prod": 99, "modemFW/prod": 99}"#,
    );
    refused(
        signed.verify(&file, true, &["--min-sequence", "99"], &["--state", &state]),
        "lower than 99 already seen",
        "lower than 99 already seen",
    );

    // A key the device does not trust.
    let other = signed.seed(&["keygen", "--out", &signed.path("other")]);
    assert!(other.status.success());
    let other_key = signed.path("other/release.pub");
    refused(
        signed.verify_trusting(&[&other_key], &file, true, &[], &[]),
        "signed by no trusted key",
        "signed by no trusted key",
    );
    // Rotation: trusting both keys accepts it, whichever comes first.
    let own_key = signed.path("keys/release.pub");
    accepted(signed.verify_trusting(&[&other_key, &own_key], &file, true, &[], &[]));

    // An expired statement: signed for one second.
    signed.publish_signed(
        "os_armv8",
        "1.2.0",
        &["--cpu-arch", "armv8", "--expires-in", "1s"],
    );
    let short = signed.serves("1.2.0", "1.0").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let file = signed.write("expired.json", &serde_json::to_vec(&short).expect("JSON"));
    refused(
        signed.verify(&file, true, &[], &[]),
        "expired at",
        "expired at",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_releases_work_until_a_channel_requires_signatures() {
    let signed = Signed::new().await;
    let unsigned = signed.publish(
        "modemFW",
        "1.0",
        b"an unsigned modem",
        &["--attr", "cellular"],
    );
    assert!(unsigned.status.success(), "{}", text(&unsigned.stderr));
    signed.publish_signed("os_armv8", "1.0.0", &["--cpu-arch", "armv8"]);
    let metadata = signed.serves("1.0.0", "1.0").await;
    assert!(metadata["modemFW"].get("envelope").is_none());
    let file = signed.write(
        "details.json",
        &serde_json::to_vec(&metadata).expect("JSON"),
    );
    refused(
        signed.verify(&file, true, &[], &[]),
        "modemFW is not signed",
        "modemFW is not signed",
    );

    let required = signed.seed(&[
        "require-signatures",
        "--app",
        "os_armv8",
        "--channel",
        "prod",
    ]);
    assert!(required.status.success(), "{}", text(&required.stderr));
    let refused_publish = signed.publish(
        "os_armv8",
        "1.1.0",
        b"unsigned os",
        &["--cpu-arch", "armv8"],
    );
    assert_eq!(refused_publish.status.code(), Some(1));
    assert!(
        text(&refused_publish.stderr).contains("requires signed releases"),
        "{}",
        text(&refused_publish.stderr)
    );
    signed.publish_signed("os_armv8", "1.1.0", &["--cpu-arch", "armv8"]);
    signed.serves("1.1.0", "1.0").await;
    let rollback = signed.seed(&["rollback", "--app", "os_armv8", "--channel", "prod"]);
    assert_eq!(
        rollback.status.code(),
        Some(1),
        "{}",
        text(&rollback.stdout)
    );
    // Going back with the key signs 1.0.0 again, above every sequence devices saw.
    let key = signed.path("keys/release.key");
    let rollback = signed.seed(&[
        "rollback",
        "--app",
        "os_armv8",
        "--channel",
        "prod",
        "--signing-key",
        &key,
    ]);
    assert!(rollback.status.success(), "{}", text(&rollback.stderr));
    let back = signed.serves("1.0.0", "1.0").await;
    // The unsigned modem aside, the rolled-back OS image verifies above sequence 2.
    let only_os = serde_json::json!({ "os_armv8": back["os_armv8"] });
    let file = signed.write("back.json", &serde_json::to_vec(&only_os).expect("JSON"));
    accepted(signed.verify(&file, true, &["--min-sequence", "3"], &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_renews_what_every_channel_serves() {
    let signed = Signed::new().await;
    signed.publish_signed(
        "os_armv8",
        "1.0.0",
        &["--cpu-arch", "armv8", "--expires-in", "1h"],
    );
    signed.publish_signed(
        "modemFW",
        "1.0",
        &["--attr", "cellular", "--expires-in", "1h"],
    );
    let before = signed.serves("1.0.0", "1.0").await;
    let key = signed.path("keys/release.key");
    let resigned = signed.seed(&["resign", "--signing-key", &key, "--expires-in", "60d"]);
    assert!(resigned.status.success(), "{}", text(&resigned.stderr));
    assert!(
        text(&resigned.stdout).contains("signed os_armv8 1.0.0 on prod"),
        "{}",
        text(&resigned.stdout)
    );
    let after = signed
        .metadata_when(|after| after["os_armv8"]["envelope"] != before["os_armv8"]["envelope"])
        .await;
    let statement = |metadata: &Value| -> Value {
        let payload = BASE64
            .decode(
                metadata["os_armv8"]["envelope"]["payload"]
                    .as_str()
                    .expect("payload"),
            )
            .expect("base64");
        serde_json::from_slice(&payload).expect("JSON")
    };
    let (old, new) = (statement(&before), statement(&after));
    assert!(
        new["sequence"].as_u64() > old["sequence"].as_u64(),
        "{old} {new}"
    );
    assert!(
        new["expires"].as_str() > old["expires"].as_str(),
        "{old} {new}"
    );
    let file = signed.write("details.json", &serde_json::to_vec(&after).expect("JSON"));
    let seen = old["sequence"].as_u64().expect("a sequence") + 1;
    accepted(signed.verify(&file, true, &["--min-sequence", &seen.to_string()], &[]));
}

#[test]
fn keygen_never_replaces_a_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("UTF-8");
    let first = crate::harness::command("fleetpack-seed")
        .args(["keygen", "--out", out])
        .output()
        .expect("run");
    assert!(first.status.success());
    let key = std::fs::read(dir.path().join("release.key")).expect("key");
    let second = crate::harness::command("fleetpack-seed")
        .args(["keygen", "--out", out])
        .output()
        .expect("run");
    assert_eq!(second.status.code(), Some(1));
    assert!(text(&second.stderr).contains("an existing key is never replaced"));
    assert_eq!(
        std::fs::read(dir.path().join("release.key")).expect("key"),
        key
    );
}
