//! What each selected app serves one device: the rollout it is in, the version it runs
//! (read from the digests it lists), a required release on the way, mandatory releases
//! it skips, and no downgrade unless the operator rolled back on purpose.
//!
//! Invariant: the answer is a function of the rules, the query and `If-None-Match`
//! alone, so a CDN may cache it and every origin instance gives the same one.

use crate::conditional::IfNoneMatch;
use crate::location::ObjectLocation;
use crate::query::DeviceQuery;
use crate::rollout::is_member;
use crate::rule::Rule;
use crate::rule_set::{RuleSet, Selected};

/// The release an app serves one device, and what the device needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served<'a> {
    pub rule: &'a Rule,
    pub object: &'a ObjectLocation,
    /// The version the device runs, when its `If-None-Match` names a release of the app
    /// (the highest one, when it names several).
    pub installed: Option<&'a str>,
    /// The served release is mandatory, or one the device skips on its way to it is.
    pub mandatory: bool,
    /// The served version is lower than the one the device runs: the operator rolled
    /// the channel back, and the device is to take it.
    pub downgrade: bool,
}

/// What a request tells about the device.
#[derive(Debug)]
pub(crate) struct Device<'a> {
    query: &'a DeviceQuery,
    /// (app key, release) of the highest release of each app the device lists a
    /// digest of; a handful of apps at most, so a list.
    installed: Vec<(&'a str, usize)>,
}

impl RuleSet {
    /// Reads what the device runs from the digests it lists: one table lookup per tag,
    /// whatever the number of releases kept.
    pub(crate) fn device<'a>(
        &'a self,
        query: &'a DeviceQuery,
        if_none_match: &IfNoneMatch,
    ) -> Device<'a> {
        let mut installed: Vec<(&str, usize)> = Vec::new();
        for (prefix, tag) in if_none_match.tags_by_prefix() {
            let Some(releases) = self.by_digest.get(&prefix) else {
                continue;
            };
            for &index in releases {
                let release = &self.releases[index];
                if release.rule.md5 != tag && release.rule.sha256.as_deref() != Some(tag) {
                    continue;
                }
                match installed
                    .iter_mut()
                    .find(|(app, _)| *app == release.app_key)
                {
                    Some((_, best)) if self.releases[*best].rank >= release.rank => {}
                    Some((_, best)) => *best = index,
                    None => installed.push((&release.app_key, index)),
                }
            }
        }
        Device { query, installed }
    }

    /// The release `selected`'s channel serves `device`.
    pub(crate) fn serve<'a>(&'a self, selected: &Selected<'a>, device: &Device<'_>) -> Served<'a> {
        let channel = &self.channels[selected.channel];
        let member = |id: &str, percent: u8| match device.query.device_key() {
            Some(key) => is_member(id, key, percent),
            None => device.query.cohorts().iter().any(|cohort| cohort == id),
        };
        let target = match &channel.candidate {
            Some(candidate) if member(&candidate.id, candidate.percent) => candidate.release,
            _ => channel.stable,
        };
        let installed = device
            .installed
            .iter()
            .find(|(app, _)| *app == channel.app_key)
            .map(|&(_, index)| index);
        let release = |index: usize| &self.releases[index];
        let served = |index: usize, mandatory: bool, downgrade: bool| Served {
            rule: &release(index).rule,
            object: &release(index).object,
            installed: installed.map(|index| release(index).rule.version.as_str()),
            mandatory,
            downgrade,
        };
        let Some(installed) = installed else {
            return served(target, release(target).rule.mandatory, false);
        };
        let (have, want) = (release(installed).rank, release(target).rank);
        if want < have {
            if channel.rolled_back && target == channel.stable {
                return served(target, release(target).rule.mandatory, true);
            }
            // Never an accidental downgrade: the device keeps what it runs.
            return served(installed, false, false);
        }
        // The ladder holds the channel's enabled releases by version; the device skips
        // those above the one it runs and below the one it gets, and stops at the first
        // required one among them.
        let ladder = &channel.ladder;
        let above = ladder.partition_point(|step| step.rank <= have);
        let below = ladder.partition_point(|step| step.rank < want);
        let (target, until) = match ladder.get(above) {
            Some(step) if step.next_required < below => {
                (ladder[step.next_required].release, step.next_required)
            }
            _ => (target, below),
        };
        let skipped_mandatory = channel.mandatory_before[until] > channel.mandatory_before[above];
        served(
            target,
            release(target).rule.mandatory || skipped_mandatory,
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::rule;
    use crate::request::DeviceRequest;
    use crate::rollout::{is_member, rollout_id};
    use crate::rule::{Rollout, StoredRules};

    /// Release `version` of os_armv8 on `channel`, published `sequence`-th there.
    fn release(channel: &str, version: &str, sequence: u64) -> Rule {
        Rule {
            sequence: Some(sequence),
            ..rule("os_armv8", channel, version, &[])
        }
    }

    fn set(current: Vec<Rule>, history: Vec<Rule>) -> RuleSet {
        let (set, rejected) = RuleSet::build_holding(StoredRules { current, history }, |_| true);
        assert_eq!(rejected, [], "every rule is valid");
        set
    }

    /// (version, mandatory, required, installedVersion, downgrade, status) of os_armv8.
    fn answer(
        set: &RuleSet,
        query: &str,
        if_none_match: &[&str],
    ) -> (String, bool, bool, Option<String>, bool, u16) {
        let request = DeviceRequest::parse(query, if_none_match.iter().map(|line| line.as_bytes()))
            .expect("a valid request");
        let plan = set.answer(&request).expect("a package");
        let entry = &plan.entries()[0];
        (
            entry.version.clone(),
            entry.mandatory,
            entry.required,
            entry.installed_version.clone(),
            entry.downgrade,
            entry.status.code(),
        )
    }

    fn version(set: &RuleSet, query: &str, if_none_match: &[&str]) -> String {
        answer(set, query, if_none_match).0
    }

    /// Releases 1.0, 1.1 and 1.2 on prod, 1.2 current.
    fn three(flags: impl Fn(Rule) -> Rule) -> RuleSet {
        let history: Vec<Rule> = [("1.0", 1), ("1.1", 2), ("1.2", 3)]
            .into_iter()
            .map(|(version, sequence)| flags(release("prod", version, sequence)))
            .collect();
        set(vec![history[2].clone()], history)
    }

    #[test]
    fn a_disabled_current_release_falls_back_to_the_one_before_it() {
        let history = vec![
            release("prod", "1.0", 1),
            release("prod", "1.1", 2),
            Rule {
                enabled: false,
                ..release("prod", "1.2", 3)
            },
        ];
        let current = history[2].clone();
        assert_eq!(
            version(
                &set(vec![current.clone()], history.clone()),
                "cpuArch=armv8",
                &[]
            ),
            "1.1"
        );
        // Disabled on the current item alone (an edit in the table) falls back too.
        let mut enabled_history = history.clone();
        enabled_history[2].enabled = true;
        let off = Rule {
            enabled: false,
            ..current
        };
        assert_eq!(
            version(&set(vec![off], enabled_history), "cpuArch=armv8", &[]),
            "1.1"
        );
        // Never nothing while one release is enabled.
        let only_first = vec![
            release("prod", "1.0", 1),
            Rule {
                enabled: false,
                ..release("prod", "1.1", 2)
            },
        ];
        let head = Rule {
            enabled: false,
            ..release("prod", "1.1", 2)
        };
        assert_eq!(
            version(&set(vec![head], only_first), "cpuArch=armv8", &[]),
            "1.0"
        );
    }

    #[test]
    fn a_rollout_serves_its_candidate_to_members_only() {
        let history = vec![release("prod", "1.0", 1), release("prod", "1.1", 2)];
        let head = Rule {
            rollout: Some(Rollout {
                version: "1.1".to_owned(),
                percent: 10,
            }),
            ..history[0].clone()
        };
        let set = set(vec![head], history);
        let id = rollout_id("os_armv8", "prod", "1.1");
        let keys: Vec<String> = (0..2000).map(|i| format!("key-{i}")).collect();
        let (members, others): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|key| is_member(&id, key, 10));
        assert!(!members.is_empty() && !others.is_empty());
        for key in &members {
            assert_eq!(
                version(&set, &format!("cpuArch=armv8&deviceKey={key}"), &[]),
                "1.1"
            );
        }
        for key in others.iter().take(200) {
            assert_eq!(
                version(&set, &format!("cpuArch=armv8&deviceKey={key}"), &[]),
                "1.0"
            );
        }
        assert_eq!(version(&set, "cpuArch=armv8", &[]), "1.0", "no key: stable");
        // The CDN's form: the rollouts the device is in.
        assert_eq!(
            version(&set, &format!("cpuArch=armv8&cohort={id}"), &[]),
            "1.1"
        );
        assert_eq!(version(&set, "cpuArch=armv8&cohort=00000000", &[]), "1.0");
    }

    #[test]
    fn a_halted_or_disabled_candidate_is_served_to_nobody() {
        let id = rollout_id("os_armv8", "prod", "1.1");
        for (percent, candidate_enabled) in [(0, true), (50, false)] {
            let history = vec![
                release("prod", "1.0", 1),
                Rule {
                    enabled: candidate_enabled,
                    ..release("prod", "1.1", 2)
                },
            ];
            let head = Rule {
                rollout: Some(Rollout {
                    version: "1.1".to_owned(),
                    percent,
                }),
                ..history[0].clone()
            };
            let set = set(vec![head], history);
            assert_eq!(
                version(&set, &format!("cpuArch=armv8&cohort={id}"), &[]),
                "1.0"
            );
        }
    }

    #[test]
    fn a_mandatory_release_the_device_skips_makes_the_update_mandatory() {
        let set = three(|rule| Rule {
            mandatory: rule.version == "1.1",
            ..rule
        });
        let md5 = |version: &str| release("prod", version, 0).md5;
        let on_1_0 = answer(&set, "cpuArch=armv8", &[&md5("1.0")]);
        assert_eq!(
            on_1_0,
            (
                "1.2".to_owned(),
                true,
                false,
                Some("1.0".to_owned()),
                false,
                200
            )
        );
        let on_1_1 = answer(&set, "cpuArch=armv8", &[&md5("1.1")]);
        assert_eq!(
            on_1_1,
            (
                "1.2".to_owned(),
                false,
                false,
                Some("1.1".to_owned()),
                false,
                200
            )
        );
        // A device that says nothing of itself gets the release's own flag.
        assert!(!answer(&set, "cpuArch=armv8", &[]).1);
    }

    #[test]
    fn a_required_release_comes_before_anything_newer() {
        let set = three(|rule| Rule {
            required: rule.version == "1.1",
            ..rule
        });
        let md5 = |version: &str| release("prod", version, 0).md5;
        let on_1_0 = answer(&set, "cpuArch=armv8", &[&md5("1.0")]);
        assert_eq!(
            on_1_0,
            (
                "1.1".to_owned(),
                false,
                true,
                Some("1.0".to_owned()),
                false,
                200
            )
        );
        assert_eq!(version(&set, "cpuArch=armv8", &[&md5("1.1")]), "1.2");
        assert_eq!(version(&set, "cpuArch=armv8", &[]), "1.2", "a new device");
        // The device lists two versions it has: the higher one is what it runs.
        assert_eq!(
            version(&set, "cpuArch=armv8", &[&md5("1.0"), &md5("1.1")]),
            "1.2"
        );
    }

    #[test]
    fn no_version_lower_than_the_device_runs_unless_rolled_back() {
        let beta = release("beta", "2.0.0", 1);
        let prod = release("prod", "1.1.0", 1);
        let set_of = |prod_head: Rule| {
            set(
                vec![beta.clone(), prod_head],
                vec![beta.clone(), prod.clone()],
            )
        };
        let plain = set_of(prod.clone());
        // A device on beta's 2.0.0 asking for prod keeps 2.0.0.
        assert_eq!(
            answer(&plain, "cpuArch=armv8", &[&beta.md5]),
            ("2.0.0".to_owned(), false, false, None, false, 304)
        );
        let rolled_back = set_of(Rule {
            rolled_back: true,
            ..prod.clone()
        });
        assert_eq!(
            answer(&rolled_back, "cpuArch=armv8", &[&beta.md5]),
            (
                "1.1.0".to_owned(),
                false,
                false,
                Some("2.0.0".to_owned()),
                true,
                200
            )
        );
    }

    #[test]
    fn installed_versions_are_found_by_md5_and_sha256() {
        let with_sha = Rule {
            sha256: Some("ab".repeat(32)),
            ..release("prod", "1.0", 1)
        };
        let newer = release("prod", "1.1", 2);
        let set = set(vec![newer.clone()], vec![with_sha, newer]);
        let sha = "AB".repeat(32);
        assert_eq!(
            answer(&set, "cpuArch=armv8", &[&sha]).3,
            Some("1.0".to_owned())
        );
    }
}
