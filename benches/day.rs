//! A day of a fleet behind a CloudFront-like cache, in simulated time (no waiting, no
//! network), under four cache settings; prints what reached the origin and how fast the
//! fleet took the day's releases.
//!
//! The model:
//! - 100,000 devices over the demo fleet's configurations (a Zipf law), each polling
//!   every 1 to 6 hours (its own interval, drawn uniformly), each wait jittered by
//!   +-10%, the first poll at a random time within the first interval. 80% send a
//!   `deviceKey` of their own; older firmware sends none.
//! - At midnight every device runs its configuration's current releases, and the cache
//!   is empty. At noon a new OS image (os_armv8 1.2.0 on prod, 40 MiB) is published; at
//!   13:00 an app release (scoreboard 1.1.0 on prod) starts a staged rollout to 10% of
//!   keyed devices, raised to 50% at 15:00 and completed (100%) at 17:00.
//! - What devices get is the resolver's answer (`RuleSet::answer`) under the rules of
//!   the moment: real ETags, 304s and package contents; bodies are counted as
//!   `package_details.json` plus the binaries sent (OS images 40 MiB, apps 1 to 8 MiB).
//!   A device that gets a package runs what it holds from then on and lists those
//!   MD5s in its next request.
//! - The CDN's function rewrites each request as the template's does
//!   (`canonical_request`, with the rollouts in progress; `canonical_query` and the
//!   header as sent for "today").
//!   Each rule change reaches the function's rollout state at once, and an
//!   invalidation takes effect at once.
//! - The cache: see `day/cdn.rs`; in the first scenario, a revalidation's 304 refreshes
//!   nothing devices hit (`Vary: if-none-match` with `If-None-Match` in the key, as
//!   Varnish 7.1 files it), so the next request fetches the whole body.
//!
//! Scenarios, each over the same day, fleet and polls:
//! 1. today: the key is the canonical query and `If-None-Match`, `s-maxage=100`;
//! 2. query key: the function moves the device's list into the query
//!    (`installed=<tags>`) and drops the header, so a revalidation's 304 refreshes the
//!    entry devices hit; `s-maxage=100`;
//! 3. long + invalidation: as 2, `s-maxage` one day, every package path invalidated at
//!    each publish and rollout change;
//! 4. binaries: as 3, but devices ask for metadata only and download each binary they
//!    lack from `/binaries/<sha256>` (keyed by path, immutable, never invalidated).
//!
//! `cargo bench --bench day`.

#[path = "day/cdn.rs"]
mod cdn;
#[path = "day/devices.rs"]
mod devices;
mod draws;
#[path = "day/origin.rs"]
mod origin;
#[path = "day/releases.rs"]
mod releases;

use std::time::Instant;

use fleetpack_resolver::{
    DeviceQuery, RolloutState, Rule, RuleSet, canonical_query, canonical_request,
};

use cdn::{Cdn, PackageRequest, RESPONSE_HEAD, Settings, Traffic};
use devices::{Device, Poll};
use draws::ZIPF_EXPONENT;
use origin::{BinaryId, Catalog, Origin, SetId};
use releases::{
    CANDIDATE, Change, DAY, HOUR, MINUTE, Millis, NOON, NOON_RELEASE, ROLLOUT_COMPLETE,
};

const DEVICES: usize = 100_000;
const FLEET_SEED: u64 = 2026;
const POLL_SEED: u64 = 7;
/// Share of the devices concerned that must run a release for it to count as out.
const REACH_PERCENT: usize = 99;

/// The goals the best settings are to meet.
const GOAL_REQUESTS_FROM_CDN: f64 = 0.99;
const GOAL_BYTES_FROM_CDN: f64 = 0.999;
/// One poll interval at most, plus a minute: the longest interval is 6 h (before jitter).
const GOAL_NOON_RELEASE_WITHIN: Millis = 6 * HOUR + MINUTE;

/// Where the device's `If-None-Match` list goes in the cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListIn {
    /// The header, as sent (canonical form); responses vary on it.
    Header,
    /// A query parameter `installed=`, the header dropped.
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// The package with every binary the device lacks.
    Package,
    /// The metadata JSON, then each binary the device lacks from `/binaries/<sha256>`.
    MetadataThenBinaries,
}

#[derive(Debug)]
struct Scenario {
    name: &'static str,
    list_in: ListIn,
    s_maxage: Millis,
    invalidate_on_change: bool,
    payload: Payload,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "today",
        list_in: ListIn::Header,
        s_maxage: 100_000,
        invalidate_on_change: false,
        payload: Payload::Package,
    },
    Scenario {
        name: "query key",
        list_in: ListIn::Query,
        s_maxage: 100_000,
        invalidate_on_change: false,
        payload: Payload::Package,
    },
    Scenario {
        name: "long + invalidation",
        list_in: ListIn::Query,
        s_maxage: DAY,
        invalidate_on_change: true,
        payload: Payload::Package,
    },
    Scenario {
        name: "binaries",
        list_in: ListIn::Query,
        s_maxage: DAY,
        invalidate_on_change: true,
        payload: Payload::MetadataThenBinaries,
    },
];

impl Scenario {
    /// A device's poll as the CDN's function forwards it.
    fn request(
        &self,
        configuration: &str,
        key: Option<&str>,
        if_none_match: &str,
        rollouts: &[RolloutState],
    ) -> PackageRequest {
        let mut raw = configuration.to_owned();
        if self.payload == Payload::MetadataThenBinaries {
            raw.push_str("&payloadType=metadataOnly");
        }
        if let Some(key) = key {
            raw.push_str("&deviceKey=");
            raw.push_str(key);
        }
        match self.list_in {
            ListIn::Header => {
                let query = canonical_query(&raw, rollouts).expect("the fleet's queries are valid");
                PackageRequest {
                    cache_key: format!("{query} If-None-Match: {if_none_match}"),
                    query,
                    if_none_match: if_none_match.to_owned(),
                }
            }
            ListIn::Query => {
                let moved = canonical_request(&raw, Some(if_none_match), rollouts)
                    .filter(|moved| moved.drops_if_none_match)
                    .expect("the fleet's lists move into the query");
                PackageRequest {
                    cache_key: moved.query.clone(),
                    query: moved.query,
                    if_none_match: String::new(),
                }
            }
        }
    }
}

/// What the scenarios share: the fleet, its polls and the day's rules.
#[derive(Debug)]
struct Day {
    configurations: Vec<String>,
    devices: Vec<Device>,
    polls: Vec<Poll>,
    changes: Vec<Change>,
    /// What each configuration runs at midnight.
    runs_at_midnight: Vec<SetId>,
}

/// How far one release got: the devices it concerns, and when enough ran it.
#[derive(Debug)]
struct Adoption {
    binary: BinaryId,
    concerned: Vec<bool>,
    needed: usize,
    running: usize,
    reached: Option<Millis>,
}

impl Adoption {
    /// Tracks `md5`, published at `since`, among the devices whose configuration selects
    /// it under `rules` and that poll after `since`.
    fn new(day: &Day, catalog: &Catalog, rules: &RuleSet, md5: &str, since: Millis) -> Adoption {
        let selects: Vec<bool> = day
            .configurations
            .iter()
            .map(|query| {
                let query = DeviceQuery::parse(query).expect("a valid query");
                let selection = rules.resolve(&query).expect("a package");
                selection.items.iter().any(|item| item.rule.md5 == md5)
            })
            .collect();
        let mut polls_after = vec![false; day.devices.len()];
        for poll in day.polls.iter().filter(|poll| poll.at >= since) {
            polls_after[poll.device as usize] = true;
        }
        let concerned: Vec<bool> = day
            .devices
            .iter()
            .zip(polls_after)
            .map(|(device, polls)| polls && selects[device.configuration])
            .collect();
        let devices = concerned.iter().filter(|&&concerned| concerned).count();
        Adoption {
            binary: catalog.binary(md5),
            concerned,
            needed: (devices * REACH_PERCENT).div_ceil(100),
            running: 0,
            reached: None,
        }
    }

    fn update(&mut self, now: Millis, device: usize, had: bool, has: bool) {
        if !self.concerned[device] || had == has {
            return;
        }
        if has {
            self.running += 1;
        } else {
            self.running -= 1;
        }
        if self.reached.is_none() && self.running >= self.needed {
            self.reached = Some(now);
        }
    }
}

#[derive(Debug)]
struct Outcome {
    traffic: Traffic,
    /// When 99% of the devices concerned ran the noon release, and the candidate.
    noon_release: Option<Millis>,
    candidate: Option<Millis>,
}

fn main() {
    let started = Instant::now();
    let (changes, releases) = releases::timeline();
    let mut catalog = Catalog::new(&releases);
    let configurations = devices::configurations();
    let devices = devices::devices(
        configurations.len(),
        DEVICES,
        &mut devices::seeded(FLEET_SEED),
    );
    let polls = devices::polls(&devices, &mut devices::seeded(POLL_SEED));
    let mut midnight = Origin::new(&changes[0].rules);
    let runs_at_midnight = configurations
        .iter()
        .map(|query| {
            let query = canonical_query(query, &[]).expect("a valid query");
            midnight.answer(&mut catalog, &query, "", None).runs
        })
        .collect();
    let day = Day {
        configurations,
        devices,
        polls,
        changes,
        runs_at_midnight,
    };

    println!(
        "{} devices ({} of them keyed), {} configurations (Zipf s={ZIPF_EXPONENT}), polls every \
         1-6 h (+-10%): {} polls in the day",
        thousands(day.devices.len() as u64),
        thousands(
            day.devices
                .iter()
                .filter(|device| device.key.is_some())
                .count() as u64
        ),
        day.configurations.len(),
        thousands(day.polls.len() as u64),
    );
    for change in &day.changes {
        println!("{}  {}", clock(change.at), change.what);
    }
    println!(
        "Assumed: with If-None-Match in the key and Vary: if-none-match, a revalidation's 304 is \
         filed under its own variant and refreshes nothing devices hit (Varnish 7.1)."
    );
    println!(
        "Bodies: package_details.json and the binaries sent (no tar or gzip framing); \
         {RESPONSE_HEAD} bytes of headers per response; rule changes and invalidations take \
         effect at once."
    );
    println!();
    println!(
        "| scenario | requests | bytes delivered | origin requests | origin bytes | 304s from origin | hit ratio, requests | hit ratio, bytes | noon release on 99% | candidate on 99% after 100% |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut outcomes = Vec::new();
    for scenario in &SCENARIOS {
        let outcome = simulate(scenario, &day, &mut catalog);
        let traffic = &outcome.traffic;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            scenario.name,
            thousands(traffic.requests),
            bytes(traffic.delivered_bytes),
            thousands(traffic.origin_requests),
            bytes(traffic.origin_bytes),
            thousands(traffic.origin_not_modified),
            percent(request_hit_ratio(traffic), 2),
            percent(byte_hit_ratio(traffic), 3),
            after(outcome.noon_release, NOON),
            after(outcome.candidate, ROLLOUT_COMPLETE),
        );
        outcomes.push(outcome);
    }

    println!();
    let names: Vec<&str> = SCENARIOS.iter().map(|scenario| scenario.name).collect();
    println!("| goal (for the best settings) | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(SCENARIOS.len()));
    print_goal(
        &format!(
            ">= {} of requests served by the CDN",
            percent(GOAL_REQUESTS_FROM_CDN, 0)
        ),
        &outcomes,
        |outcome| request_hit_ratio(&outcome.traffic) >= GOAL_REQUESTS_FROM_CDN,
    );
    print_goal(
        &format!(
            ">= {} of bytes served by the CDN",
            percent(GOAL_BYTES_FROM_CDN, 1)
        ),
        &outcomes,
        |outcome| byte_hit_ratio(&outcome.traffic) >= GOAL_BYTES_FROM_CDN,
    );
    print_goal(
        &format!(
            "99% of polling devices on the noon release within {}",
            duration(GOAL_NOON_RELEASE_WITHIN)
        ),
        &outcomes,
        |outcome| {
            outcome
                .noon_release
                .is_some_and(|at| at - NOON <= GOAL_NOON_RELEASE_WITHIN)
        },
    );
    println!();
    println!("simulated in {:.1} s", started.elapsed().as_secs_f64());
}

/// Runs the day under `scenario`.
fn simulate(scenario: &Scenario, day: &Day, catalog: &mut Catalog) -> Outcome {
    let last_rules = &day.changes.last().expect("a change").rules;
    let (app, channel, version) = NOON_RELEASE;
    let noon_md5 = &release(last_rules, app, channel, version).md5;
    let mut noon_release = Adoption::new(day, catalog, last_rules, noon_md5, NOON);
    let (app, channel, version) = CANDIDATE;
    let candidate_md5 = &release(last_rules, app, channel, version).md5;
    let mut candidate = Adoption::new(day, catalog, last_rules, candidate_md5, ROLLOUT_COMPLETE);

    let mut installed: Vec<SetId> = day
        .devices
        .iter()
        .map(|device| day.runs_at_midnight[device.configuration])
        .collect();
    let mut cdn = Cdn::new(Settings {
        s_maxage: scenario.s_maxage,
        refreshes_on_304: scenario.list_in == ListIn::Query,
    });
    let (midnight, later) = day.changes.split_first().expect("the midnight rules");
    let mut origin = Origin::new(&midnight.rules);
    let mut rollouts: Vec<RolloutState> = midnight.rules.rollouts().cloned().collect();
    let mut changes = later.iter().peekable();
    for poll in &day.polls {
        while let Some(change) = changes.next_if(|change| change.at <= poll.at) {
            origin = Origin::new(&change.rules);
            rollouts = change.rules.rollouts().cloned().collect();
            if scenario.invalidate_on_change {
                cdn.invalidate_packages();
            }
        }
        let index = poll.device as usize;
        let device = &day.devices[index];
        let request = scenario.request(
            &day.configurations[device.configuration],
            device.key.as_deref(),
            &catalog.set(installed[index]).if_none_match,
            &rollouts,
        );
        let answer = cdn.package(poll.at, &request, &mut origin, catalog);
        if answer.not_modified {
            continue;
        }
        if scenario.payload == Payload::MetadataThenBinaries {
            for &binary in &answer.missing {
                cdn.binary(binary, catalog.size(binary));
            }
        }
        let (ran, runs) = (catalog.set(installed[index]), catalog.set(answer.runs));
        for adoption in [&mut noon_release, &mut candidate] {
            let binary = adoption.binary;
            adoption.update(poll.at, index, ran.contains(binary), runs.contains(binary));
        }
        installed[index] = answer.runs;
    }
    Outcome {
        traffic: cdn.traffic,
        noon_release: noon_release.reached,
        candidate: candidate.reached,
    }
}

/// The release `app` serves on `channel` at the end of the day, checked to be `version`.
fn release<'a>(rules: &'a RuleSet, app: &str, channel: &str, version: &str) -> &'a Rule {
    let rule = rules.get(app, channel).expect("a current release");
    assert_eq!(rule.version, version);
    rule
}

fn request_hit_ratio(traffic: &Traffic) -> f64 {
    traffic.hits as f64 / traffic.requests as f64
}

fn byte_hit_ratio(traffic: &Traffic) -> f64 {
    traffic.delivered_from_cache as f64 / traffic.delivered_bytes as f64
}

fn print_goal(goal: &str, outcomes: &[Outcome], met: impl Fn(&Outcome) -> bool) {
    let cells: Vec<&str> = outcomes
        .iter()
        .map(|outcome| if met(outcome) { "met" } else { "not met" })
        .collect();
    println!("| {goal} | {} |", cells.join(" | "));
}

fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::new();
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Bytes in GiB, or in MiB below 1 GiB.
fn bytes(count: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mib = count as f64 / MIB;
    if mib < 1024.0 {
        format!("{mib:.1} MiB")
    } else {
        let tenths = (mib / 102.4).round() as u64;
        format!("{}.{} GiB", thousands(tenths / 10), tenths % 10)
    }
}

fn percent(ratio: f64, decimals: usize) -> String {
    format!("{:.decimals$}%", 100.0 * ratio)
}

/// A time of day, `hh:mm`.
fn clock(at: Millis) -> String {
    format!("{:02}:{:02}", at / HOUR, at % HOUR / MINUTE)
}

fn duration(span: Millis) -> String {
    format!("{} h {:02} min", span / HOUR, span % HOUR / MINUTE)
}

/// How long after `since` something happened, if it did within the day.
fn after(reached: Option<Millis>, since: Millis) -> String {
    reached.map_or("not within the day".to_owned(), |at| duration(at - since))
}
