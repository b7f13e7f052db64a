//! The releases a snapshot serves, indexed, and the choice of one channel per app for a
//! device's query.
//!
//! Invariant: a [`RuleSet`] holds only rules that passed [`Rule::check`], at most one
//! current release per app and channel and one release per app, channel and version
//! (ignoring letter case), and the same stored rules in any order give the same set and
//! the same answers.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::cache_key::RolloutState;
use crate::ident::excerpt;
use crate::location::ObjectLocation;
use crate::query::DeviceQuery;
use crate::rollout::rollout_id;
use crate::rule::{Rule, RuleError, StoredRules};
use crate::version::compare_versions;

/// A rule that was left out of a [`RuleSet`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub rule: Rule,
    pub reason: RuleError,
}

/// An immutable, indexed snapshot of every servable release.
///
/// Lookups go through hash maps keyed by lowercase names, so resolving a query costs the
/// same with ten rules or a hundred thousand, and with one release per channel or fifty.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// Every valid release: the history, and current releases that have no history.
    pub(crate) releases: Vec<ServedRelease>,
    /// One per app and channel that has a release to serve.
    pub(crate) channels: Vec<Channel>,
    /// app -> channel -> index into `channels`.
    by_app: HashMap<String, HashMap<String, usize>>,
    /// attribute -> channel -> indexes into `channels`, in `channels` order.
    by_attribute: HashMap<String, HashMap<String, Vec<usize>>>,
    /// The first eight bytes of every release's MD5 and SHA-256 (hex) -> releases: tells
    /// which releases the digests in a device's `If-None-Match` name.
    pub(crate) by_digest: HashMap<u64, Vec<usize>, BuildHasherDefault<PrefixHasher>>,
}

/// A release the snapshot can serve.
#[derive(Debug)]
pub(crate) struct ServedRelease {
    pub rule: Rule,
    pub object: ObjectLocation,
    /// `rule.app` in lowercase, the key that selections of the same app meet under.
    pub app_key: String,
    /// Order of the release's version among every version of its app.
    pub rank: u32,
}

/// What one app serves on one channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub app_key: String,
    /// The release of every device outside a rollout: the current release, or the
    /// previous enabled one when the current release is disabled.
    pub stable: usize,
    /// A newer release for a share of the devices that send a key.
    pub candidate: Option<Candidate>,
    /// The operator rolled back to `stable`: devices on a newer version take it too.
    pub rolled_back: bool,
    /// The channel's enabled releases by version, lowest first: the releases a device
    /// skips between the version it runs and the one it gets.
    pub ladder: Vec<Step>,
    /// How many mandatory releases the ladder holds before each of its steps, and in
    /// all (one more entry than steps).
    pub mandatory_before: Vec<u32>,
}

/// One release on a channel's ladder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub release: usize,
    pub rank: u32,
    /// Index of the first required step at or after this one (the ladder's length when
    /// there is none).
    pub next_required: usize,
}

/// A rollout in progress: its candidate release, id and share of devices, and what the
/// CDN's function needs to tell which queries can select it.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub release: usize,
    pub id: String,
    pub percent: u8,
    pub state: RolloutState,
}

/// Hashes the eight-byte prefix of a hex digest: a multiplication spreads its ASCII
/// bytes over the table, in a handful of instructions per `If-None-Match` tag.
#[derive(Debug, Default)]
pub(crate) struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

/// Why a channel was selected; when two selections name the same app, the higher reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The device's OS image, `os_<cpuArch>` on the `os` channel.
    Os,
    /// An `attr<Name>=<channel>` parameter matched the rule's `deviceAttr`.
    Attribute,
    /// An explicit `<app>=<channel>` parameter.
    Pin,
}

/// One selected app: its channel's current release (the one served to a device that
/// says nothing of itself) and why it was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected<'a> {
    pub rule: &'a Rule,
    pub object: &'a ObjectLocation,
    pub reason: Reason,
    pub(crate) channel: usize,
}

/// The apps a query selects, one channel each: the OS app first, then by app name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<'a> {
    pub items: Vec<Selected<'a>>,
}

/// No rule matched the query at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no deployment package found")]
pub struct NoPackage;

/// The stored rules of one app and channel, checked.
#[derive(Default)]
struct Group {
    current: Option<(Rule, ObjectLocation)>,
    /// version -> release.
    history: BTreeMap<String, (Rule, ObjectLocation)>,
}

impl RuleSet {
    /// Indexes current releases without history: what a store made by the AWS sample
    /// holds. See [`RuleSet::build_holding`].
    pub fn build(rules: impl IntoIterator<Item = Rule>) -> (RuleSet, Vec<Rejected>) {
        let current: Vec<Rule> = rules.into_iter().collect();
        Self::build_holding(current.into(), |_| true)
    }

    /// Indexes the servable releases of `stored`, for a store that holds only the
    /// objects `holds` accepts. Invalid rules, rules whose object the store does not
    /// hold ([`RuleError::NotInStore`]) and rules that repeat an app and channel (or,
    /// in the history, an app, channel and version) are returned as rejected.
    ///
    /// Each channel serves its current release, or when that is disabled the enabled
    /// release published last before it (never nothing while one is enabled); a
    /// rollout in progress adds its candidate.
    pub fn build_holding(
        mut stored: StoredRules,
        holds: impl Fn(&ObjectLocation) -> bool,
    ) -> (RuleSet, Vec<Rejected>) {
        // A total order, so that which of two rules for the same app and channel is kept
        // never depends on the order the store listed them in.
        stored.sort();
        let mut rejected = Vec::new();
        let mut checked = |rule: Rule| match rule.check() {
            Ok(object) if holds(&object) => Some((rule, object)),
            Ok(_) => {
                let reason = RuleError::NotInStore {
                    url: excerpt(&rule.url),
                };
                rejected.push(Rejected { rule, reason });
                None
            }
            Err(reason) => {
                rejected.push(Rejected { rule, reason });
                None
            }
        };
        let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
        let mut duplicates = Vec::new();
        for (rule, object) in stored.current.into_iter().filter_map(&mut checked) {
            let group = groups.entry(group_key(&rule)).or_default();
            if group.current.is_some() {
                let reason = RuleError::Duplicate {
                    app: rule.app.clone(),
                    channel: rule.channel.clone(),
                };
                duplicates.push(Rejected { rule, reason });
            } else {
                group.current = Some((rule, object));
            }
        }
        for (rule, object) in stored.history.into_iter().filter_map(&mut checked) {
            let group = groups.entry(group_key(&rule)).or_default();
            if group.history.contains_key(&rule.version) {
                let reason = RuleError::DuplicateRelease {
                    app: rule.app.clone(),
                    channel: rule.channel.clone(),
                    version: rule.version.clone(),
                };
                duplicates.push(Rejected { rule, reason });
            } else {
                group.history.insert(rule.version.clone(), (rule, object));
            }
        }
        rejected.extend(duplicates);
        let mut set = RuleSet::default();
        for ((app, channel), group) in groups {
            set.add_channel(app, channel, group, &mut rejected);
        }
        set.rank_versions();
        (set, rejected)
    }

    /// Adds one app and channel's releases, and the channel when it has one to serve.
    fn add_channel(
        &mut self,
        app: String,
        channel: String,
        group: Group,
        rejected: &mut Vec<Rejected>,
    ) {
        let Group {
            mut current,
            history,
        } = group;
        if let Some((head, _)) = &current
            && let Some((release, _)) = history.get(&head.version)
            && release.md5 != head.md5
        {
            let (rule, _) = current.take().expect("checked just above");
            rejected.push(Rejected {
                reason: RuleError::DiffersFromHistory {
                    app: rule.app.clone(),
                    channel: rule.channel.clone(),
                    version: rule.version.clone(),
                },
                rule,
            });
        }
        let first = self.releases.len();
        // Releases in publishing order; the current release joins them when the history
        // lacks it (a store made by the AWS sample has no history).
        let mut releases: Vec<(Rule, ObjectLocation)> = history.into_values().collect();
        let head = current.map(|(head, object)| {
            if !releases
                .iter()
                .any(|(release, _)| release.version == head.version)
            {
                releases.push((head.clone(), object));
            }
            head
        });
        releases.sort_by_key(|(release, _)| release.sequence.unwrap_or(0));
        let enabled = |rule: &Rule| rule.enabled;
        let position = |version: &str| {
            releases
                .iter()
                .position(|(release, _)| release.version == version)
        };
        let (stable, candidate, rolled_back, attributes) = match &head {
            Some(head) => {
                let at = position(&head.version).expect("the current release is among them");
                let stable = if head.enabled && enabled(&releases[at].0) {
                    Some(at)
                } else {
                    // The release published last before the current one, else any.
                    releases[..at]
                        .iter()
                        .rposition(|(release, _)| enabled(release))
                        .or_else(|| releases.iter().rposition(|(release, _)| enabled(release)))
                };
                let candidate = head
                    .rollout
                    .as_ref()
                    .filter(|rollout| rollout.percent > 0)
                    .and_then(|rollout| {
                        position(&rollout.version)
                            .filter(|&at| enabled(&releases[at].0))
                            .map(|at| (at, rollout.percent))
                    });
                (
                    stable,
                    candidate,
                    head.rolled_back,
                    head.device_attr.clone(),
                )
            }
            None => {
                let stable = releases.iter().rposition(|(release, _)| enabled(release));
                let attributes = stable
                    .map(|at| releases[at].0.device_attr.clone())
                    .unwrap_or_default();
                (stable, None, false, attributes)
            }
        };
        let served: Vec<usize> = (first..first + releases.len()).collect();
        for (rule, object) in releases {
            self.releases.push(ServedRelease {
                rule,
                object,
                app_key: app.clone(),
                rank: 0,
            });
        }
        let Some(stable) = stable else {
            return;
        };
        let candidate = candidate
            .filter(|&(at, _)| at != stable)
            .map(|(at, percent)| {
                let id = rollout_id(&app, &channel, &self.releases[served[at]].rule.version);
                let state = RolloutState {
                    id: id.clone(),
                    percent,
                    app: app.clone(),
                    channel: channel.clone(),
                    attributes: attributes
                        .iter()
                        .filter(|(_, on)| **on)
                        .map(|(name, _)| name.to_ascii_lowercase())
                        .collect(),
                };
                Candidate {
                    release: served[at],
                    id,
                    percent,
                    state,
                }
            });
        let ladder = served
            .iter()
            .filter(|&&index| enabled(&self.releases[index].rule))
            .map(|&release| Step {
                release,
                rank: 0,
                next_required: 0,
            })
            .collect();
        let index = self.channels.len();
        self.channels.push(Channel {
            app_key: app.clone(),
            stable: served[stable],
            candidate,
            rolled_back,
            ladder,
            mandatory_before: Vec::new(),
        });
        self.by_app
            .entry(app)
            .or_default()
            .insert(channel.clone(), index);
        for (attribute, _) in attributes.iter().filter(|(_, on)| **on) {
            self.by_attribute
                .entry(attribute.to_ascii_lowercase())
                .or_default()
                .entry(channel.clone())
                .or_default()
                .push(index);
        }
    }

    /// Orders every app's versions (see [`compare_versions`]) into ranks, sorts each
    /// channel's ladder by them and indexes the releases' digests.
    fn rank_versions(&mut self) {
        let mut by_app: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, release) in self.releases.iter().enumerate() {
            by_app.entry(&release.app_key).or_default().push(index);
        }
        let mut ranks = vec![0u32; self.releases.len()];
        for indexes in by_app.values_mut() {
            indexes.sort_by(|&a, &b| {
                compare_versions(
                    &self.releases[a].rule.version,
                    &self.releases[b].rule.version,
                )
            });
            let mut rank = 0;
            for pair in 0..indexes.len() {
                if pair > 0
                    && compare_versions(
                        &self.releases[indexes[pair - 1]].rule.version,
                        &self.releases[indexes[pair]].rule.version,
                    )
                    .is_lt()
                {
                    rank += 1;
                }
                ranks[indexes[pair]] = rank;
            }
        }
        for (release, rank) in self.releases.iter_mut().zip(ranks) {
            release.rank = rank;
        }
        for channel in &mut self.channels {
            for step in &mut channel.ladder {
                step.rank = self.releases[step.release].rank;
            }
            channel.ladder.sort_by_key(|step| step.rank);
            let mut next_required = channel.ladder.len();
            for at in (0..channel.ladder.len()).rev() {
                if self.releases[channel.ladder[at].release].rule.required {
                    next_required = at;
                }
                channel.ladder[at].next_required = next_required;
            }
            let mut mandatory = 0;
            channel.mandatory_before = std::iter::once(0)
                .chain(channel.ladder.iter().map(|step| {
                    mandatory += u32::from(self.releases[step.release].rule.mandatory);
                    mandatory
                }))
                .collect();
        }
        for (index, release) in self.releases.iter().enumerate() {
            let digests = std::iter::once(&release.rule.md5).chain(&release.rule.sha256);
            for digest in digests {
                self.by_digest
                    .entry(crate::conditional::prefix(digest.as_bytes()))
                    .or_default()
                    .push(index);
            }
        }
    }

    /// The current release of every channel served, in (app, channel) order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.channels
            .iter()
            .map(|channel| &self.releases[channel.stable].rule)
    }

    /// The enabled release whose binary has this SHA-256 (lowercase hex), and where it is
    /// stored: what `/binaries/<sha256>` may send. Releases without a SHA-256 or a size
    /// cannot be reached this way.
    pub fn binary(&self, sha256: &str) -> Option<(&Rule, &ObjectLocation)> {
        self.by_digest
            .get(&crate::conditional::prefix(sha256.as_bytes()))?
            .iter()
            .map(|&index| &self.releases[index])
            .find(|release| {
                release.rule.enabled
                    && release.rule.size.is_some()
                    && release.rule.sha256.as_deref() == Some(sha256)
            })
            .map(|release| (&release.rule, &release.object))
    }

    /// The rollouts in progress, in (app, channel) order: what the CDN's function needs
    /// to tell devices' cohorts from their keys.
    pub fn rollouts(&self) -> impl Iterator<Item = &RolloutState> {
        self.channels
            .iter()
            .filter_map(|channel| channel.candidate.as_ref())
            .map(|candidate| &candidate.state)
    }

    /// How many app and channel pairs are served.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The release `app` serves on `channel` to devices outside any rollout, ignoring
    /// letter case.
    pub fn get(&self, app: &str, channel: &str) -> Option<&Rule> {
        self.lookup(&app.to_ascii_lowercase(), &channel.to_ascii_lowercase())
            .map(|index| self.stable(index))
    }

    fn lookup(&self, app: &str, channel: &str) -> Option<usize> {
        self.by_app.get(app)?.get(channel).copied()
    }

    fn stable(&self, channel: usize) -> &Rule {
        &self.releases[self.channels[channel].stable].rule
    }

    /// Selects one channel per app for `query`.
    ///
    /// Precedence for an app selected more than once: an explicit pin beats an attribute
    /// match, which beats the OS rule. Between two attribute matches the higher version
    /// wins (see [`compare_versions`]), and on equal versions the channel that sorts
    /// first. A pin naming a channel without a rule selects nothing for that app.
    pub fn resolve(&self, query: &DeviceQuery) -> Result<Selection<'_>, NoPackage> {
        // app (lowercase) -> (reason, channel index)
        let mut chosen: HashMap<&str, (Reason, usize)> = HashMap::new();
        let os_app = query.os_app();
        if let Some(index) = self.lookup(&os_app, query.os_channel()) {
            chosen.insert(self.app_key(index), (Reason::Os, index));
        }
        for selector in query.attributes() {
            let matches = self
                .by_attribute
                .get(&selector.name)
                .and_then(|channels| channels.get(&selector.channel));
            for &index in matches.into_iter().flatten() {
                let app = self.app_key(index);
                let candidate = (Reason::Attribute, index);
                match chosen.get(app) {
                    Some(&current) if !self.attribute_beats(candidate, current) => {}
                    _ => {
                        chosen.insert(app, candidate);
                    }
                }
            }
        }
        for pin in query.pins() {
            match self.lookup(&pin.name, &pin.channel) {
                Some(index) => chosen.insert(self.app_key(index), (Reason::Pin, index)),
                None => chosen.remove(pin.name.as_str()),
            };
        }
        if chosen.is_empty() {
            return Err(NoPackage);
        }
        let mut items: Vec<(bool, &str, Selected<'_>)> = chosen
            .into_iter()
            .map(|(app, (reason, channel))| {
                let release = &self.releases[self.channels[channel].stable];
                let selected = Selected {
                    rule: &release.rule,
                    object: &release.object,
                    reason,
                    channel,
                };
                (app != os_app, app, selected)
            })
            .collect();
        items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ok(Selection {
            items: items.into_iter().map(|(_, _, selected)| selected).collect(),
        })
    }

    fn app_key(&self, channel: usize) -> &str {
        &self.channels[channel].app_key
    }

    /// Whether an attribute match replaces the current choice for its app.
    fn attribute_beats(&self, candidate: (Reason, usize), current: (Reason, usize)) -> bool {
        if candidate.0 != current.0 {
            return candidate.0 > current.0;
        }
        let (new, old) = (self.stable(candidate.1), self.stable(current.1));
        compare_versions(&new.version, &old.version)
            .then_with(|| {
                old.channel
                    .to_ascii_lowercase()
                    .cmp(&new.channel.to_ascii_lowercase())
            })
            .is_gt()
    }
}

/// The key of a rule's app and channel: both in lowercase.
fn group_key(rule: &Rule) -> (String, String) {
    (
        rule.app.to_ascii_lowercase(),
        rule.channel.to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{build, demo_fleet, demo_set, rule};
    use crate::location::BadUrl;

    /// (app, channel, version, reason) of each selected rule, in selection order.
    fn picked<'a>(set: &'a RuleSet, raw: &str) -> Vec<(&'a str, &'a str, &'a str, Reason)> {
        let query = DeviceQuery::parse(raw).expect("a valid query");
        set.resolve(&query)
            .expect("a package")
            .items
            .iter()
            .map(|item| {
                let rule = item.rule;
                (
                    rule.app.as_str(),
                    rule.channel.as_str(),
                    rule.version.as_str(),
                    item.reason,
                )
            })
            .collect()
    }

    fn no_package(set: &RuleSet, raw: &str) -> bool {
        let query = DeviceQuery::parse(raw).expect("a valid query");
        set.resolve(&query) == Err(NoPackage)
    }

    #[test]
    fn binary_is_found_by_sha256_among_enabled_releases_with_a_size() {
        let sized = |app, version, sha: &str, enabled| Rule {
            sha256: Some(sha.repeat(64)),
            size: Some(10),
            enabled,
            ..rule(app, "prod", version, &["gamer"])
        };
        let unsized_rule = Rule {
            sha256: Some("c".repeat(64)),
            ..rule("scoreboard", "beta", "1.0.0", &["gamer"])
        };
        let set = build(vec![
            sized("modemFW", "1.0", "a", true),
            sized("videoStreamer", "1.0", "b", false),
            unsized_rule,
        ]);
        let (found, object) = set.binary(&"a".repeat(64)).expect("an enabled release");
        assert_eq!(
            (found.app.as_str(), object.key.as_str()),
            ("modemFW", "modemFW_1.0")
        );
        assert!(set.binary(&"b".repeat(64)).is_none(), "disabled");
        assert!(set.binary(&"c".repeat(64)).is_none(), "no size");
        assert!(set.binary(&"d".repeat(64)).is_none(), "unknown");
        assert!(set.binary(&"A".repeat(64)).is_none(), "lowercase only");
    }

    #[test]
    fn sample_query_cpu_arch_gets_the_prod_os_only() {
        assert_eq!(
            picked(&demo_set(), "cpuArch=armv8"),
            [("os_armv8", "prod", "1.1.0", Reason::Os)]
        );
    }

    #[test]
    fn sample_query_os_beta_gets_the_beta_os() {
        assert_eq!(
            picked(&demo_set(), "cpuArch=armv8&os=beta"),
            [("os_armv8", "beta", "2.0.0", Reason::Os)]
        );
    }

    #[test]
    fn sample_query_attr_gamer_adds_the_gamer_apps() {
        assert_eq!(
            picked(&demo_set(), "cpuArch=armv8&attrGamer=prod"),
            [
                ("os_armv8", "prod", "1.1.0", Reason::Os),
                ("scoreboard", "prod", "1.0.0", Reason::Attribute),
                ("videoStreamer", "prod", "0.0.1", Reason::Attribute),
            ]
        );
    }

    #[test]
    fn sample_query_attr_gamer_and_cellular_adds_the_modem_firmware() {
        assert_eq!(
            picked(
                &demo_set(),
                "cpuArch=armv8&attrGamer=prod&attrCellular=prod"
            ),
            [
                ("os_armv8", "prod", "1.1.0", Reason::Os),
                ("modemFW", "prod", "1.0", Reason::Attribute),
                ("scoreboard", "prod", "1.0.0", Reason::Attribute),
                ("videoStreamer", "prod", "0.0.1", Reason::Attribute),
            ]
        );
    }

    #[test]
    fn os_app_comes_first_then_apps_by_name_ignoring_case() {
        let set = build(vec![
            rule("os_zz", "prod", "1", &[]),
            rule("Beta", "prod", "1", &["x"]),
            rule("alpha", "prod", "1", &["x"]),
            rule("Zulu", "prod", "1", &["x"]),
            rule("charlie", "prod", "1", &["x"]),
            rule("os_aa", "prod", "1", &["x"]),
        ]);
        let apps: Vec<_> = picked(&set, "cpuArch=zz&attrX=prod")
            .iter()
            .map(|item| item.0)
            .collect();
        assert_eq!(apps, ["os_zz", "alpha", "Beta", "charlie", "os_aa", "Zulu"]);
    }

    #[test]
    fn selection_carries_the_rule_and_its_object() {
        let set = demo_set();
        let query = DeviceQuery::parse("cpuArch=armv8").expect("a valid query");
        let selection = set.resolve(&query).expect("a package");
        let item = selection.items[0];
        assert_eq!(item.rule, set.get("os_armv8", "prod").expect("the prod OS"));
        assert_eq!(
            *item.object,
            ObjectLocation {
                bucket: None,
                key: "os_armv8_1.1.0".to_owned()
            }
        );
        assert_eq!(item.rule.file_name(), "os_armv8_1.1.0");
    }

    #[test]
    fn attribute_selects_apps_on_its_own_channel() {
        assert_eq!(
            picked(&demo_set(), "cpuArch=armv7&os=beta&attrCamera=beta"),
            [
                ("os_armv7", "beta", "2.0.0", Reason::Os),
                ("videoStreamer", "beta", "0.1.2", Reason::Attribute),
            ]
        );
    }

    #[test]
    fn pin_matches_app_names_ignoring_case() {
        let expected = [
            ("os_armv8", "prod", "1.1.0", Reason::Os),
            ("videoStreamer", "beta", "0.1.2", Reason::Pin),
        ];
        let set = demo_set();
        assert_eq!(picked(&set, "cpuArch=armv8&videostreamer=beta"), expected);
        assert_eq!(picked(&set, "cpuArch=armv8&videoStreamer=beta"), expected);
        assert_eq!(picked(&set, "cpuArch=ARMV8&VIDEOSTREAMER=BETA"), expected);
    }

    #[test]
    fn table_names_match_ignoring_case() {
        let set = build(vec![
            rule("OS_ArmV8", "Prod", "1.1.0", &[]),
            rule("VideoStreamer", "Prod", "0.0.1", &["Camera"]),
        ]);
        let expected = [
            ("OS_ArmV8", "Prod", "1.1.0", Reason::Os),
            ("VideoStreamer", "Prod", "0.0.1", Reason::Attribute),
        ];
        assert_eq!(picked(&set, "cpuArch=armv8&attrCamera=prod"), expected);
        assert_eq!(picked(&set, "cpuArch=armv8&attrcamera=PROD"), expected);
        assert_eq!(
            picked(&set, "cpuArch=armv8&videoStreamer=prod")[1],
            ("VideoStreamer", "Prod", "0.0.1", Reason::Pin)
        );
        assert_eq!(
            set.get("videostreamer", "PROD")
                .map(|rule| rule.app.as_str()),
            Some("VideoStreamer")
        );
    }

    #[test]
    fn pin_beats_attribute_in_any_parameter_order() {
        let set = demo_set();
        let expected = [
            ("os_armv8", "prod", "1.1.0", Reason::Os),
            ("scoreboard", "prod", "1.0.0", Reason::Attribute),
            ("videoStreamer", "beta", "0.1.2", Reason::Pin),
        ];
        assert_eq!(
            picked(&set, "cpuArch=armv8&attrGamer=prod&videoStreamer=beta"),
            expected
        );
        assert_eq!(
            picked(&set, "videoStreamer=beta&attrGamer=prod&cpuArch=armv8"),
            expected
        );
    }

    #[test]
    fn pin_to_a_lower_version_beats_an_attribute_match() {
        let set = demo_set();
        assert_eq!(
            picked(&set, "cpuArch=armv8&attrGamer=beta&scoreboard=prod")[1],
            ("scoreboard", "prod", "1.0.0", Reason::Pin)
        );
    }

    #[test]
    fn pin_beats_the_os_rule() {
        assert_eq!(
            picked(&demo_set(), "cpuArch=armv8&os_armv8=beta"),
            [("os_armv8", "beta", "2.0.0", Reason::Pin)]
        );
    }

    #[test]
    fn attribute_beats_the_os_rule_even_with_a_lower_version() {
        let mut fleet = demo_fleet();
        fleet.push(rule("os_armv8", "lts", "0.9.0", &["legacy"]));
        let set = build(fleet);
        for raw in [
            "cpuArch=armv8&attrLegacy=lts",
            "attrLegacy=lts&cpuArch=armv8",
        ] {
            assert_eq!(
                picked(&set, raw),
                [("os_armv8", "lts", "0.9.0", Reason::Attribute)],
                "{raw}"
            );
        }
    }

    #[test]
    fn higher_semantic_version_wins_between_attribute_matches() {
        // "0.9.0" sorts after "0.10.0" as text; each channel and attribute name sorts on
        // both sides of the other, so neither decides the winner.
        for (low_channel, high_channel) in [("a", "b"), ("b", "a")] {
            let set = build(vec![
                rule("os_x", "prod", "1", &[]),
                rule("tool", low_channel, "0.9.0", &["left", "right"]),
                rule("tool", high_channel, "0.10.0", &["left", "right"]),
            ]);
            for raw in [
                format!("cpuArch=x&attrLeft={low_channel}&attrRight={high_channel}"),
                format!("cpuArch=x&attrLeft={high_channel}&attrRight={low_channel}"),
                format!("attrRight={low_channel}&cpuArch=x&attrLeft={high_channel}"),
            ] {
                assert_eq!(
                    picked(&set, &raw)[1],
                    ("tool", high_channel, "0.10.0", Reason::Attribute),
                    "{raw}"
                );
            }
        }
    }

    #[test]
    fn higher_version_wins_between_demo_attribute_matches() {
        assert_eq!(
            picked(&demo_set(), "cpuArch=armv8&attrGamer=prod&attrCamera=beta"),
            [
                ("os_armv8", "prod", "1.1.0", Reason::Os),
                ("scoreboard", "prod", "1.0.0", Reason::Attribute),
                ("videoStreamer", "beta", "0.1.2", Reason::Attribute),
            ]
        );
    }

    #[test]
    fn full_version_beats_the_same_version_with_missing_parts() {
        let set = build(vec![
            rule("os_x", "prod", "1", &[]),
            rule("tool", "a", "1.0.0", &["left"]),
            rule("tool", "b", "1.0", &["right"]),
        ]);
        assert_eq!(
            picked(&set, "cpuArch=x&attrLeft=a&attrRight=b")[1],
            ("tool", "a", "1.0.0", Reason::Attribute)
        );
    }

    #[test]
    fn equal_versions_are_won_by_the_channel_that_sorts_first_ignoring_case() {
        // "Beta" sorts before "alpha" as bytes, but after it ignoring case.
        for other in ["beta", "Beta"] {
            let set = build(vec![
                rule("os_x", "prod", "1", &[]),
                rule("tool", "alpha", "1.0.0", &["z"]),
                rule("tool", other, "1.0.0", &["a"]),
            ]);
            for raw in [
                "cpuArch=x&attrZ=alpha&attrA=beta",
                "attrA=beta&attrZ=alpha&cpuArch=x",
            ] {
                assert_eq!(
                    picked(&set, raw)[1],
                    ("tool", "alpha", "1.0.0", Reason::Attribute),
                    "{raw}"
                );
            }
        }
    }

    #[test]
    fn resolution_does_not_depend_on_parameter_order() {
        let set = demo_set();
        let params = [
            "cpuArch=armv8",
            "attrGamer=prod",
            "attrCamera=beta",
            "attrCellular=prod",
            "os=beta",
        ];
        let expected = picked(&set, &params.join("&"));
        assert_eq!(expected.len(), 4);
        for rotation in 1..params.len() {
            let mut rotated = params;
            rotated.rotate_left(rotation);
            rotated.swap(0, 1);
            assert_eq!(picked(&set, &rotated.join("&")), expected, "{rotated:?}");
        }
    }

    #[test]
    fn pin_to_a_channel_without_rule_removes_the_app() {
        let set = demo_set();
        assert_eq!(
            picked(&set, "cpuArch=armv8&attrGamer=prod&scoreboard=nightly"),
            [
                ("os_armv8", "prod", "1.1.0", Reason::Os),
                ("videoStreamer", "prod", "0.0.1", Reason::Attribute),
            ]
        );
        assert_eq!(
            picked(&set, "cpuArch=armv8&os_armv8=nightly&attrCellular=prod"),
            [("modemFW", "prod", "1.0", Reason::Attribute)]
        );
        assert!(no_package(&set, "cpuArch=armv8&os_armv8=nightly"));
    }

    #[test]
    fn pin_of_an_unknown_app_selects_nothing() {
        let set = demo_set();
        assert_eq!(
            picked(&set, "cpuArch=armv8&doom=prod"),
            [("os_armv8", "prod", "1.1.0", Reason::Os)]
        );
        assert!(no_package(&set, "cpuArch=x86&doom=prod"));
    }

    #[test]
    fn no_matching_rule_is_no_package() {
        let set = demo_set();
        assert!(no_package(&set, "cpuArch=x86"));
        assert!(no_package(&set, "cpuArch=armv8&os=nightly"));
        assert!(no_package(
            &set,
            "cpuArch=x86&attrGamer=nightly&attrUnknown=prod"
        ));
        assert!(no_package(&RuleSet::default(), "cpuArch=armv8"));
        assert_eq!(NoPackage.to_string(), "no deployment package found");
    }

    #[test]
    fn attribute_set_to_false_does_not_select_the_app() {
        let mut off = rule("scoreboard", "prod", "1.0.0", &[]);
        off.device_attr.insert("gamer".to_owned(), false);
        let set = build(vec![rule("os_armv8", "prod", "1.1.0", &[]), off]);
        assert_eq!(
            picked(&set, "cpuArch=armv8&attrGamer=prod"),
            [("os_armv8", "prod", "1.1.0", Reason::Os)]
        );
    }

    #[test]
    fn disabled_rules_are_skipped_silently() {
        let mut fleet = demo_fleet();
        for rule in &mut fleet {
            if rule.app == "os_armv8" && rule.channel == "prod" {
                rule.enabled = false;
            }
        }
        let (set, rejected) = RuleSet::build(fleet);
        assert_eq!(rejected, []);
        assert_eq!(set.len(), 8);
        assert_eq!(set.get("os_armv8", "prod"), None);
        assert!(no_package(&set, "cpuArch=armv8"));
        assert_eq!(
            picked(&set, "cpuArch=armv8&attrCellular=prod"),
            [("modemFW", "prod", "1.0", Reason::Attribute)]
        );
    }

    #[test]
    fn rule_set_lists_rules_in_app_and_channel_order() {
        let mut fleet = demo_fleet();
        fleet.reverse();
        let set = build(fleet);
        assert!(!set.is_empty());
        assert!(RuleSet::default().is_empty());
        let listed: Vec<_> = set
            .rules()
            .map(|rule| (rule.app.as_str(), rule.channel.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("modemFW", "prod"),
                ("os_armv7", "beta"),
                ("os_armv7", "prod"),
                ("os_armv8", "beta"),
                ("os_armv8", "prod"),
                ("scoreboard", "beta"),
                ("scoreboard", "prod"),
                ("videoStreamer", "beta"),
                ("videoStreamer", "prod"),
            ]
        );
    }

    #[test]
    fn invalid_rules_are_returned_as_rejected_and_not_served() {
        let mut bad_md5 = rule("scoreboard", "prod", "1.0.0", &["gamer"]);
        bad_md5.md5 = bad_md5.md5.to_ascii_uppercase();
        let bad_url = Rule {
            url: "file:///etc/passwd".to_owned(),
            ..rule("modemFW", "prod", "1.0", &["cellular"])
        };
        let (set, rejected) = RuleSet::build(vec![
            rule("os_armv8", "prod", "1.1.0", &[]),
            bad_md5.clone(),
            bad_url.clone(),
        ]);
        assert_eq!(set.len(), 1);
        assert_eq!(
            rejected,
            [
                Rejected {
                    reason: RuleError::BadUrl(BadUrl {
                        url: "file:///etc/passwd".to_owned(),
                        reason: "it must start with s3:// or local://"
                    }),
                    rule: bad_url,
                },
                Rejected {
                    reason: RuleError::BadDigest {
                        field: "md5",
                        value: bad_md5.md5.clone(),
                        digits: 32
                    },
                    rule: bad_md5,
                },
            ]
        );
        assert_eq!(
            picked(&set, "cpuArch=armv8&attrGamer=prod&attrCellular=prod"),
            [("os_armv8", "prod", "1.1.0", Reason::Os)]
        );
    }

    #[test]
    fn case_insensitive_duplicate_is_rejected_whatever_the_input_order() {
        let upper = rule("Scoreboard", "prod", "1.0.0", &["gamer"]);
        let lower = rule("scoreboard", "PROD", "2.0.0", &["gamer"]);
        for fleet in [
            vec![upper.clone(), lower.clone()],
            vec![lower.clone(), upper.clone()],
        ] {
            let (set, rejected) = RuleSet::build(fleet);
            assert_eq!(set.rules().collect::<Vec<_>>(), [&upper]);
            assert_eq!(
                rejected,
                [Rejected {
                    rule: lower.clone(),
                    reason: RuleError::Duplicate {
                        app: "scoreboard".to_owned(),
                        channel: "PROD".to_owned()
                    }
                }]
            );
        }
    }

    #[test]
    fn exact_duplicate_is_rejected_whatever_the_input_order() {
        // DynamoDB's key makes this impossible there, but a hand-edited rules file can
        // hold it, and every origin instance must still serve the same rule.
        let one = rule("scoreboard", "prod", "1.0.0", &["gamer"]);
        let two = rule("scoreboard", "prod", "2.0.0", &["gamer"]);
        for fleet in [
            vec![one.clone(), two.clone()],
            vec![two.clone(), one.clone()],
        ] {
            let (set, rejected) = RuleSet::build(fleet);
            assert_eq!(set.rules().collect::<Vec<_>>(), [&one]);
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].rule, two);
        }
    }

    /// A store that holds the `local://` objects only.
    fn holds_local(object: &ObjectLocation) -> bool {
        object.bucket.is_none()
    }

    #[test]
    fn rule_the_store_does_not_hold_is_rejected_and_not_served_whatever_the_input_order() {
        let held = rule("os_armv8", "prod", "1.1.0", &[]);
        let foreign = Rule {
            url: "s3://other-bucket/scoreboard_1.0.0".to_owned(),
            ..rule("scoreboard", "prod", "1.0.0", &["gamer"])
        };
        for fleet in [
            vec![held.clone(), foreign.clone()],
            vec![foreign.clone(), held.clone()],
        ] {
            let (set, rejected) = RuleSet::build_holding(fleet.into(), holds_local);
            assert_eq!(set.rules().collect::<Vec<_>>(), [&held]);
            assert_eq!(
                rejected,
                [Rejected {
                    rule: foreign.clone(),
                    reason: RuleError::NotInStore {
                        url: "s3://other-bucket/scoreboard_1.0.0".to_owned()
                    }
                }]
            );
            assert_eq!(
                picked(&set, "cpuArch=armv8&attrGamer=prod"),
                [("os_armv8", "prod", "1.1.0", Reason::Os)]
            );
        }
    }

    #[test]
    fn rule_the_store_does_not_hold_keeps_no_held_rule_out() {
        // "Scoreboard" sorts first, so as a duplicate candidate it would win the slot.
        let foreign = Rule {
            url: "s3://other-bucket/Scoreboard_2.0.0".to_owned(),
            ..rule("Scoreboard", "prod", "2.0.0", &["gamer"])
        };
        let held = rule("scoreboard", "prod", "1.0.0", &["gamer"]);
        let (set, rejected) =
            RuleSet::build_holding(vec![held.clone(), foreign.clone()].into(), holds_local);
        assert_eq!(set.rules().collect::<Vec<_>>(), [&held]);
        assert_eq!(
            rejected,
            [Rejected {
                rule: foreign,
                reason: RuleError::NotInStore {
                    url: "s3://other-bucket/Scoreboard_2.0.0".to_owned()
                }
            }]
        );
    }

    #[test]
    fn invalid_rule_is_rejected_for_its_fault_not_for_where_it_is() {
        let bad_md5 = Rule {
            md5: "XYZ".to_owned(),
            url: "s3://other-bucket/scoreboard_1.0.0".to_owned(),
            ..rule("scoreboard", "prod", "1.0.0", &["gamer"])
        };
        let (set, rejected) = RuleSet::build_holding(vec![bad_md5.clone()].into(), |_| false);
        assert!(set.is_empty());
        assert_eq!(
            rejected,
            [Rejected {
                rule: bad_md5,
                reason: RuleError::BadDigest {
                    field: "md5",
                    value: "XYZ".to_owned(),
                    digits: 32
                }
            }]
        );
    }

    #[test]
    fn build_is_build_holding_for_a_store_that_holds_everything() {
        let mut fleet = demo_fleet();
        fleet.push(Rule {
            url: "s3://other-bucket/firmware_3.0.0".to_owned(),
            ..rule("firmware", "prod", "3.0.0", &["gamer"])
        });
        fleet.push(rule("Scoreboard", "PROD", "9.0.0", &["gamer"]));
        let (built, built_rejected) = RuleSet::build(fleet.clone());
        let (holding, holding_rejected) = RuleSet::build_holding(fleet.clone().into(), |_| true);
        assert!(built.rules().eq(holding.rules()));
        assert_eq!(built.len(), fleet.len() - 1);
        assert_eq!(built_rejected, holding_rejected);
        assert_eq!(built_rejected.len(), 1);
        let (none, rejected) = RuleSet::build_holding(fleet.clone().into(), |_| false);
        assert!(none.is_empty());
        assert_eq!(rejected.len(), fleet.len());
        assert!(
            rejected
                .iter()
                .all(|r| matches!(r.reason, RuleError::NotInStore { .. }))
        );
    }
}
