//! Keys and signatures: `keygen`, `resign`, `require-signatures`, and the signer that
//! `publish`, `promote` and `rollback` take with --signing-key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fleetpack_store::AnyStore;
use fleetpack_store::releases::{self, Signer};
use fleetpack_store::signing::ReleaseKey;

use crate::channels;
use crate::{Outcome, Ran};

/// File names `keygen` writes in its directory.
const PRIVATE_KEY_FILE: &str = "release.key";
const PUBLIC_KEY_FILE: &str = "release.pub";

/// The signer of --signing-key FILE and --expires-in, when a key is given.
pub fn signer(
    key: Option<&Path>,
    expires_in: humantime::Duration,
) -> anyhow::Result<Option<Signer>> {
    key.map(|path| {
        Ok(Signer {
            key: ReleaseKey::read(path)?,
            valid_for: *expires_in,
        })
    })
    .transpose()
}

pub fn keygen(out: &Path) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    let key = ReleaseKey::generate()?;
    // The private key is readable by its owner alone, and never replaces another.
    write_new(&out.join(PRIVATE_KEY_FILE), key.to_pem()?.as_bytes(), 0o600)?;
    write_new(
        &out.join(PUBLIC_KEY_FILE),
        format!("{}\n", key.public_hex()).as_bytes(),
        0o644,
    )?;
    println!(
        "private key {} (keep it offline), public key {}, keyid {}",
        out.join(PRIVATE_KEY_FILE).display(),
        out.join(PUBLIC_KEY_FILE).display(),
        key.keyid()
    );
    Ok(Outcome::Success)
}

fn write_new(path: &PathBuf, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create `{}` (an existing key is never replaced)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Signs again what every channel serves; each channel signed changes what devices get
/// (the `envelope` in `package_details.json`).
pub async fn resign(store: &AnyStore, signer: &Signer) -> anyhow::Result<Ran> {
    let mut outcome = Outcome::Success;
    let mut served_changed = false;
    for (app, channel, result) in releases::resign(store, signer).await? {
        match result {
            Ok(versions) => {
                served_changed = true;
                println!("signed {app} {} on {channel}", versions.join(" and "));
            }
            Err(error) => {
                eprintln!("fleetpack-seed: cannot sign {app} on {channel}: {error}");
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(Ran {
        outcome,
        served_changed,
    })
}

pub async fn require_signatures(
    store: &AnyStore,
    app: &str,
    channel: &str,
    required: bool,
) -> anyhow::Result<Ran> {
    let changed = releases::require_signatures(store, app, channel, required).await;
    if changed.is_ok() {
        let state = if required {
            "requires"
        } else {
            "no longer requires"
        };
        println!("{app} on {channel} {state} signed releases");
    }
    // The requirement binds publishers, not devices: it is in no answer (neither
    // `package_details.json` nor the ETag), so the CDN's packages stay valid.
    let ran = channels::report(app, channel, changed)?;
    Ok(Ran {
        served_changed: false,
        ..ran
    })
}
