//! The day's releases: the demo fleet at midnight with realistic binary sizes, a new OS
//! image at noon, and a staged rollout of an app over the afternoon. Each change is a
//! new rule set, built from the rules a store would hold (current releases and their
//! history), as the origin builds its snapshot.

use fleetpack_resolver::{Rollout, Rule, RuleSet, StoredRules};
use fleetpack_store::demo::{DEMO_FLEET, DemoRelease};
use sha2::{Digest, Sha256};

/// Simulated time: milliseconds since midnight.
pub type Millis = u64;

pub const MINUTE: Millis = 60_000;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

const MIB: u64 = 1 << 20;
const BUCKET: &str = "fleetpack-binaries";

/// The OS release published at noon: (app, channel, version).
pub const NOON_RELEASE: (&str, &str, &str) = ("os_armv8", "prod", "1.2.0");
pub const NOON: Millis = 12 * HOUR;

/// The app release rolled out in stages over the afternoon, and when each share starts.
pub const CANDIDATE: (&str, &str, &str) = ("scoreboard", "prod", "1.1.0");
const ROLLOUT_STEPS: [(Millis, u8); 3] = [(13 * HOUR, 10), (15 * HOUR, 50), (17 * HOUR, 100)];
/// When the candidate becomes every device's release.
pub const ROLLOUT_COMPLETE: Millis = ROLLOUT_STEPS[2].0;

/// The rules served from `at` on.
#[derive(Debug)]
pub struct Change {
    pub at: Millis,
    pub what: String,
    pub rules: RuleSet,
}

/// The day's rule sets in time order, the first at midnight; and every release
/// published during the day (history included), for a digest catalog.
pub fn timeline() -> (Vec<Change>, Vec<Rule>) {
    let mut stored = StoredRules {
        current: DEMO_FLEET
            .iter()
            .map(|demo| demo_release(demo, 1))
            .collect(),
        history: DEMO_FLEET
            .iter()
            .map(|demo| demo_release(demo, 1))
            .collect(),
    };
    let mut changes = vec![change(0, "the demo fleet".to_owned(), &stored)];

    let (app, channel, version) = NOON_RELEASE;
    let noon_os = Rule {
        sequence: Some(2),
        ..published(&of(app, channel), version)
    };
    stored.history.push(noon_os.clone());
    *current_mut(&mut stored, app, channel) = noon_os;
    changes.push(change(
        NOON,
        format!(
            "{app} {version} on {channel}, {} MiB",
            binary_size(app) / MIB
        ),
        &stored,
    ));

    let (app, channel, version) = CANDIDATE;
    let candidate = Rule {
        sequence: Some(2),
        ..published(&of(app, channel), version)
    };
    stored.history.push(candidate.clone());
    for (at, percent) in ROLLOUT_STEPS {
        let current = current_mut(&mut stored, app, channel);
        *current = if percent == 100 {
            // As `fleetpack-seed rollout --percent 100` does: the candidate becomes current.
            candidate.clone()
        } else {
            Rule {
                rollout: Some(Rollout {
                    version: version.to_owned(),
                    percent,
                }),
                ..current.clone()
            }
        };
        let what = format!(
            "{app} {version} on {channel} to {percent}% of keyed devices, {} MiB",
            binary_size(app) / MIB
        );
        changes.push(change(at, what, &stored));
    }
    (changes, stored.history)
}

fn change(at: Millis, what: String, stored: &StoredRules) -> Change {
    let (rules, rejected) = RuleSet::build_holding(stored.clone(), |_| true);
    assert!(rejected.is_empty(), "rejected: {rejected:?}");
    Change { at, what, rules }
}

/// The demo release of `app` on `channel`.
fn of(app: &str, channel: &str) -> DemoRelease {
    *DEMO_FLEET
        .iter()
        .find(|demo| demo.app == app && demo.channel == channel)
        .expect("a release of the demo fleet")
}

fn current_mut<'a>(stored: &'a mut StoredRules, app: &str, channel: &str) -> &'a mut Rule {
    stored
        .current
        .iter_mut()
        .find(|rule| rule.is(app, channel))
        .expect("a current release")
}

fn demo_release(demo: &DemoRelease, sequence: u64) -> Rule {
    Rule {
        sequence: Some(sequence),
        ..published(demo, demo.version)
    }
}

/// A release of `demo`'s app, channel, architecture and attributes at `version`, with the
/// fields `publish` writes that matter here: size and digests. The digests stand for
/// the binary's bytes, which are never made.
fn published(demo: &DemoRelease, version: &str) -> Rule {
    let file = format!("{}_{version}", demo.app);
    let content = Sha256::digest(file.as_bytes());
    Rule {
        cpu_arch: demo.cpu_arch.map(str::to_owned),
        device_attr: demo
            .attributes
            .iter()
            .map(|name| ((*name).to_owned(), true))
            .collect(),
        size: Some(binary_size(demo.app)),
        sha256: Some(hex::encode(Sha256::digest(content))),
        ..Rule::new(
            demo.app,
            demo.channel,
            version,
            format!("s3://{BUCKET}/{file}"),
            hex::encode(&content[..16]),
        )
    }
}

/// Binary sizes of a real fleet: an OS image of tens of MiB, apps of a few MiB.
fn binary_size(app: &str) -> u64 {
    match app {
        "videoStreamer" => 8 * MIB,
        "scoreboard" => 4 * MIB,
        "modemFW" => MIB,
        os_image => {
            assert!(os_image.starts_with("os_"), "no size for {os_image}");
            40 * MIB
        }
    }
}
