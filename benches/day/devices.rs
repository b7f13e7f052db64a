//! The fleet: every configuration the demo fleet's rules let a device have, devices drawn
//! over them by a Zipf law, and when each device polls during the day.

use std::collections::BTreeSet;

use fleetpack_store::demo::DEMO_FLEET;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::draws::{Zipf, shuffle, uniform};
use crate::releases::{DAY, HOUR, Millis};

const SHORTEST_INTERVAL: Millis = HOUR;
const LONGEST_INTERVAL: Millis = 6 * HOUR;
/// Each wait between two polls is the device's interval, give or take this share.
const JITTER: f64 = 0.1;
/// Share of devices whose firmware sends a `deviceKey` and so can take part in staged
/// rollouts; older firmware sends none and gets a channel's current release.
const KEYED_SHARE: f64 = 0.8;

/// One device: what it is (its query, in the documented spelling), how often it polls,
/// and its rollout key when it has one.
#[derive(Debug)]
pub struct Device {
    pub configuration: usize,
    pub interval: Millis,
    pub key: Option<String>,
}

/// A poll of one device at one time.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub at: Millis,
    pub device: u32,
}

/// Every query the demo fleet's rules can tell apart: each architecture that has an OS
/// image, the OS channel (`prod` when left out), and for each device attribute no
/// value or one of the channels where an app has it.
pub fn configurations() -> Vec<String> {
    let os_images = || DEMO_FLEET.iter().filter(|demo| demo.cpu_arch.is_some());
    let architectures = distinct(os_images().filter_map(|demo| demo.cpu_arch));
    let mut dimensions: Vec<Vec<Option<String>>> = vec![
        architectures
            .map(|arch| Some(format!("cpuArch={arch}")))
            .collect(),
        optional(
            "os",
            distinct(os_images().map(|demo| demo.channel)).filter(|&channel| channel != "prod"),
        ),
    ];
    let attributes = distinct(
        DEMO_FLEET
            .iter()
            .flat_map(|demo| demo.attributes.iter().copied()),
    );
    for attribute in attributes {
        let channels = DEMO_FLEET
            .iter()
            .filter(|demo| demo.attributes.contains(&attribute))
            .map(|demo| demo.channel);
        dimensions.push(optional(&format!("attr{attribute}"), distinct(channels)));
    }
    // Every combination of one choice per dimension.
    dimensions
        .iter()
        .fold(vec![String::new()], |queries, choices| {
            queries
                .iter()
                .flat_map(|query| {
                    choices.iter().map(move |choice| match choice {
                        None => query.clone(),
                        Some(param) if query.is_empty() => param.clone(),
                        Some(param) => format!("{query}&{param}"),
                    })
                })
                .collect()
        })
}

/// The parameter `name` left out, or set to one of `values`.
fn optional<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(values.map(|value| Some(format!("{name}={value}"))))
        .collect()
}

/// `values` sorted, each once.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    values.collect::<BTreeSet<_>>().into_iter()
}

/// `count` devices over `configurations` configurations, ranked in a shuffled order and
/// drawn by a Zipf law, each with its own poll interval and, mostly, a rollout key.
pub fn devices(configurations: usize, count: usize, rng: &mut ChaCha8Rng) -> Vec<Device> {
    let mut ranking: Vec<usize> = (0..configurations).collect();
    shuffle(rng, &mut ranking);
    let zipf = Zipf::new(configurations);
    (0..count)
        .map(|_| {
            let rank = zipf.draw(rng);
            let interval = SHORTEST_INTERVAL
                + ((LONGEST_INTERVAL - SHORTEST_INTERVAL) as f64 * uniform(rng)) as Millis;
            let key = (uniform(rng) < KEYED_SHARE).then(|| format!("{:016x}", rng.next_u64()));
            Device {
                configuration: ranking[rank],
                interval,
                key,
            }
        })
        .collect()
}

/// Every poll of the day in time order: each device first polls at a random time in its
/// first interval, then waits its interval, jittered, between polls.
pub fn polls(devices: &[Device], rng: &mut ChaCha8Rng) -> Vec<Poll> {
    let mut polls = Vec::new();
    for (device, Device { interval, .. }) in devices.iter().enumerate() {
        let device = u32::try_from(device).expect("fewer than 2^32 devices");
        let mut at = (*interval as f64 * uniform(rng)) as Millis;
        while at < DAY {
            polls.push(Poll { at, device });
            let jitter = 1.0 + JITTER * (2.0 * uniform(rng) - 1.0);
            at += (*interval as f64 * jitter) as Millis;
        }
    }
    polls.sort_unstable_by_key(|poll| (poll.at, poll.device));
    polls
}

pub fn seeded(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
