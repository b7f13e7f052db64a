//! Putting binaries into the store: `publish`, `demo` and `segments`.

use std::path::Path;

use anyhow::Context;
use fleetpack_store::AnyStore;
use fleetpack_store::demo::publish_demo;
use fleetpack_store::publish::{Published, Release, build_segments, publish as publish_file};
use fleetpack_store::releases::Signer;
use indicatif::{ProgressBar, ProgressStyle};

use crate::channels::serves_differently;
use crate::{Outcome, Ran};

pub async fn publish(
    store: &AnyStore,
    release: &Release,
    file: &Path,
    signer: Option<&Signer>,
) -> anyhow::Result<Ran> {
    let size = std::fs::metadata(file).map_or(0, |meta| meta.len());
    // Drawn only on a terminal: indicatif hides itself otherwise.
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {eta}")
            .expect("a valid template"),
    );
    let progress = {
        let bar = bar.clone();
        move |sent| bar.set_position(sent)
    };
    let published = publish_file(store, release, file, &progress, signer).await;
    bar.finish_and_clear();
    let published = published.with_context(|| format!("cannot publish `{}`", file.display()))?;
    report(&published);
    Ok(Ran {
        outcome: Outcome::Success,
        served_changed: serves_differently(&published.changed),
    })
}

/// Publishes the demo fleet; what devices get changed when one release changed what its
/// channel serves (not when the fleet was there already).
pub async fn demo(store: &AnyStore, size: u64) -> anyhow::Result<Ran> {
    let mut outcome = Outcome::Success;
    let mut served_changed = false;
    for (demo, result) in publish_demo(store, size).await? {
        match result {
            Ok(published) => {
                served_changed |= serves_differently(&published.changed);
                report(&published);
            }
            Err(error) => {
                eprintln!(
                    "fleetpack-seed: cannot publish {} {} on {}: {:#}",
                    demo.app,
                    demo.version,
                    demo.channel,
                    anyhow::Error::from(error)
                );
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(Ran {
        outcome,
        served_changed,
    })
}

fn report(published: &Published) {
    let rule = &published.rule;
    let stored = if published.uploaded {
        "stored"
    } else {
        "already stored"
    };
    let (before, after) = (&published.changed.before, &published.changed.after);
    let effect = match after {
        Some(after) if after.version == rule.version => match before {
            Some(before) if before.version != rule.version => {
                format!(", replacing {}", before.version)
            }
            _ => String::new(),
        },
        Some(after) => match &after.rollout {
            Some(rollout) if rollout.version == rule.version => format!(
                "; candidate for {}% of devices, {} stays current",
                rollout.percent, after.version
            ),
            _ => format!("; kept in the history, {} stays current", after.version),
        },
        None => "; kept in the history".to_owned(),
    };
    println!(
        "published {} {} on {} ({} bytes, md5 {}, binary {stored}{effect})",
        rule.app,
        rule.version,
        rule.channel,
        rule.size.unwrap_or_default(),
        rule.md5
    );
}

/// Builds missing segments. A segment built changes what devices get: a rule that
/// lacked `size` has it in `package_details.json` now, and packages get an exact
/// `Content-Length` and byte ranges.
pub async fn segments(store: &AnyStore) -> anyhow::Result<Ran> {
    let done = build_segments(store).await?;
    let mut outcome = Outcome::Success;
    let mut built = 0;
    for (rule, result) in done.built {
        match result {
            Ok(()) => {
                built += 1;
                println!(
                    "built the segment of {} {} on {}",
                    rule.app, rule.version, rule.channel
                );
            }
            Err(error) => {
                outcome = Outcome::Failed;
                eprintln!(
                    "fleetpack-seed: cannot build the segment of {} {} on {}: {:#}",
                    rule.app,
                    rule.version,
                    rule.channel,
                    anyhow::Error::from(error)
                );
            }
        }
    }
    println!("{built} segments built, {} already current", done.current);
    Ok(Ran {
        outcome,
        served_changed: built > 0,
    })
}
