//! What a device does before it installs: `verify` a package or `verify-metadata`, with
//! the checks of the reference verifier for devices (devices/python/fleetpack_verify.py):
//! a trusted key's signature over DSSE's encoding, the statement naming this app,
//! channel and version, the binary's SHA-256 and size, an expiry still ahead, and a
//! sequence not below the one the device saw.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use fleetpack_resolver::DETAILS_FILE_NAME;
use fleetpack_store::signing::{Expected, TrustedKeys, VerifyError, check};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Outcome;

/// A binary found in a package: its SHA-256 and size.
type Found = (String, u64);

pub fn package(path: &Path, keys: &[PathBuf], min_sequence: u64) -> anyhow::Result<Outcome> {
    let trusted = TrustedKeys::read(keys)?;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut details = None;
    let mut binaries: HashMap<String, Found> = HashMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("`{}` is not a gzip tar", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("`{}` is cut or corrupt", path.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == DETAILS_FILE_NAME {
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            details = Some(text);
            continue;
        }
        let mut digest = Sha256::new();
        let size = std::io::copy(&mut entry, &mut digest)
            .with_context(|| format!("`{}` is cut or corrupt", path.display()))?;
        binaries.insert(name, (hex::encode(digest.finalize()), size));
    }
    let details =
        details.with_context(|| format!("`{}` holds no {DETAILS_FILE_NAME}", path.display()))?;
    report(&trusted, &parse(&details)?, Some(&binaries), min_sequence)
}

pub fn metadata(path: &Path, keys: &[PathBuf], min_sequence: u64) -> anyhow::Result<Outcome> {
    let trusted = TrustedKeys::read(keys)?;
    let text = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    report(&trusted, &parse(&text)?, None, min_sequence)
}

fn parse(details: &[u8]) -> anyhow::Result<Map<String, Value>> {
    serde_json::from_slice(details).context("the package metadata is not a JSON object")
}

/// Verifies every app of `details` (the binaries of a package when `binaries` holds
/// them), printing one line each; any failure fails the whole.
fn report(
    trusted: &TrustedKeys,
    details: &Map<String, Value>,
    binaries: Option<&HashMap<String, Found>>,
    min_sequence: u64,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::Success;
    for (app, entry) in details {
        match verify_entry(trusted, app, entry, binaries, min_sequence) {
            Ok(line) => println!("ok: {line}"),
            Err(error) => {
                eprintln!("fleetpack-seed: refused: {error:#}");
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(outcome)
}

fn verify_entry(
    trusted: &TrustedKeys,
    app: &str,
    entry: &Value,
    binaries: Option<&HashMap<String, Found>>,
    min_sequence: u64,
) -> anyhow::Result<String> {
    let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
    let version = field("latestVersion");
    let envelope = entry.get("envelope").ok_or_else(|| VerifyError::Unsigned {
        app: app.to_owned(),
    })?;
    let statement = trusted.open(app, &envelope.to_string())?;
    // What the device holds: the binary in the package, else (metadata, or a binary it
    // already has) what the metadata says of it.
    let in_package = entry["status_code"] == 200 && binaries.is_some();
    let (sha256, size) = match binaries {
        Some(binaries) if in_package => binaries
            .get(&format!("{app}_{version}"))
            .cloned()
            .with_context(|| format!("{app} {version} is not in the package"))?,
        _ => (field("sha256"), entry["size"].as_u64().unwrap_or_default()),
    };
    check(
        &statement,
        &Expected {
            app,
            channel: &field("channel"),
            version: &version,
            sha256: &sha256,
            size,
        },
        SystemTime::now(),
        min_sequence,
    )?;
    Ok(format!(
        "{app} {version} on {} (sequence {}, expires {}){}",
        statement.channel,
        statement.sequence,
        statement.expires,
        if in_package { ", binary checked" } else { "" }
    ))
}
