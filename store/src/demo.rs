//! The demo fleet: the AWS sample's nine rules, with pseudo-random binaries that are
//! the same on every machine for the same size (so their digests can be compared).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::Store;
use crate::publish::{PublishError, Published, Release, publish};

/// One release of the demo fleet.
#[derive(Debug, Clone, Copy)]
pub struct DemoRelease {
    pub app: &'static str,
    pub channel: &'static str,
    pub version: &'static str,
    pub cpu_arch: Option<&'static str>,
    pub attributes: &'static [&'static str],
}

const fn release(
    app: &'static str,
    channel: &'static str,
    version: &'static str,
    cpu_arch: Option<&'static str>,
    attributes: &'static [&'static str],
) -> DemoRelease {
    DemoRelease {
        app,
        channel,
        version,
        cpu_arch,
        attributes,
    }
}

/// The AWS sample's demo data, rule for rule.
pub const DEMO_FLEET: [DemoRelease; 9] = [
    release("os_armv8", "beta", "2.0.0", Some("armv8"), &[]),
    release("os_armv8", "prod", "1.1.0", Some("armv8"), &[]),
    release("os_armv7", "beta", "2.0.0", Some("armv7"), &[]),
    release("os_armv7", "prod", "1.0.0", Some("armv7"), &[]),
    release("scoreboard", "beta", "2.0.0", None, &["gamer"]),
    release("scoreboard", "prod", "1.0.0", None, &["gamer"]),
    release("videoStreamer", "beta", "0.1.2", None, &["camera"]),
    release("videoStreamer", "prod", "0.0.1", None, &["camera", "gamer"]),
    release("modemFW", "prod", "1.0", None, &["cellular"]),
];

/// Default size of each demo binary.
pub const DEFAULT_DEMO_SIZE: u64 = 1024 * 1024;

/// Writes `size` pseudo-random bytes determined by the app and version to `path`.
pub fn write_demo_binary(demo: &DemoRelease, size: u64, path: &Path) -> io::Result<()> {
    let seed: [u8; 32] =
        Sha256::digest(format!("fleetpack demo {}_{}", demo.app, demo.version)).into();
    let mut rng = ChaCha8Rng::from_seed(seed);
    let mut out = BufWriter::new(File::create(path)?);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let take = chunk.len().min(left as usize);
        rng.fill_bytes(&mut chunk[..take]);
        out.write_all(&chunk[..take])?;
        left -= take as u64;
    }
    out.into_inner()?.sync_all()
}

/// Publishes the demo fleet with binaries of `size` bytes, one release after another; a
/// release that fails is reported in its slot and the others go on. Publishing the fleet
/// twice with the same size changes nothing.
pub async fn publish_demo<S: Store>(
    store: &S,
    size: u64,
) -> Result<Vec<(DemoRelease, Result<Published, PublishError>)>, PublishError> {
    let scratch = tempfile::tempdir().map_err(|source| PublishError::Source {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut outcomes = Vec::with_capacity(DEMO_FLEET.len());
    for demo in DEMO_FLEET {
        let path = scratch
            .path()
            .join(format!("{}_{}", demo.app, demo.version));
        outcomes.push((demo, publish_one(store, &demo, size, path).await));
    }
    Ok(outcomes)
}

async fn publish_one<S: Store>(
    store: &S,
    demo: &DemoRelease,
    size: u64,
    path: PathBuf,
) -> Result<Published, PublishError> {
    let written = {
        let (demo, path) = (*demo, path.clone());
        tokio::task::spawn_blocking(move || write_demo_binary(&demo, size, &path))
            .await
            .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
    };
    written.map_err(|source| PublishError::Source {
        path: path.clone(),
        source,
    })?;
    let release = Release {
        cpu_arch: demo.cpu_arch.map(str::to_owned),
        attributes: demo
            .attributes
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        ..Release::new(demo.app, demo.channel, demo.version)
    };
    publish(store, &release, &path, &|_| {}, None).await
}
