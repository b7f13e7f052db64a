//! The rules a snapshot serves, indexed, and the choice of one rule per app for a
//! device's query.
//!
//! Invariant: a [`RuleSet`] holds only rules that passed [`Rule::check`], at most one per
//! app and channel (ignoring letter case), and the same rules in any input order give
//! the same set and the same answers.

use std::collections::HashMap;

use crate::ident::excerpt;
use crate::location::ObjectLocation;
use crate::query::DeviceQuery;
use crate::rule::{Rule, RuleError};
use crate::version::compare_versions;

/// A rule that was left out of a [`RuleSet`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub rule: Rule,
    pub reason: RuleError,
}

/// An immutable, indexed snapshot of every servable rule.
///
/// Lookups go through hash maps keyed by lowercase names, so resolving a query costs the
/// same with ten rules or a hundred thousand.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<ServedRule>,
    /// app -> channel -> index into `rules`.
    by_app: HashMap<String, HashMap<String, usize>>,
    /// attribute -> channel -> indexes into `rules`, in `rules` order.
    by_attribute: HashMap<String, HashMap<String, Vec<usize>>>,
}

#[derive(Debug)]
struct ServedRule {
    rule: Rule,
    object: ObjectLocation,
    /// `rule.app` in lowercase, the key that selections of the same app meet under.
    app_key: String,
}

/// Why a rule was selected; when two selections name the same app, the higher reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The device's OS image, `os_<cpuArch>` on the `os` channel.
    Os,
    /// An `attr<Name>=<channel>` parameter matched the rule's `deviceAttr`.
    Attribute,
    /// An explicit `<app>=<channel>` parameter.
    Pin,
}

/// One selected binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected<'a> {
    pub rule: &'a Rule,
    pub object: &'a ObjectLocation,
    pub reason: Reason,
}

/// The binaries a query selects, one per app: the OS app first, then by app name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<'a> {
    pub items: Vec<Selected<'a>>,
}

/// No rule matched the query at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no deployment package found")]
pub struct NoPackage;

impl RuleSet {
    /// Indexes the servable rules. Disabled rules are skipped silently; invalid rules and
    /// rules that repeat an app and channel (ignoring letter case) are returned as
    /// rejected. Input order does not matter: rules are indexed in (app, channel) order.
    ///
    /// The same as [`RuleSet::build_holding`] for a store that holds every object.
    pub fn build(rules: impl IntoIterator<Item = Rule>) -> (RuleSet, Vec<Rejected>) {
        Self::build_holding(rules, |_| true)
    }

    /// Like [`RuleSet::build`], for a store that holds only the objects `holds` accepts:
    /// a valid rule whose object it refuses (one in another bucket) is rejected with
    /// [`RuleError::NotInStore`], before duplicates are looked for, so it never keeps
    /// a servable rule for the same app and channel out.
    pub fn build_holding(
        rules: impl IntoIterator<Item = Rule>,
        holds: impl Fn(&ObjectLocation) -> bool,
    ) -> (RuleSet, Vec<Rejected>) {
        let mut rules: Vec<Rule> = rules.into_iter().filter(|rule| rule.enabled).collect();
        // A total order, so that which of two rules for the same app and channel is kept
        // never depends on the order the store listed them in.
        rules.sort();
        let mut set = RuleSet::default();
        let mut rejected = Vec::new();
        for rule in rules {
            let object = match rule.check() {
                Ok(object) if holds(&object) => object,
                Ok(_) => {
                    let reason = RuleError::NotInStore {
                        url: excerpt(&rule.url),
                    };
                    rejected.push(Rejected { rule, reason });
                    continue;
                }
                Err(reason) => {
                    rejected.push(Rejected { rule, reason });
                    continue;
                }
            };
            let app = rule.app.to_ascii_lowercase();
            let channel = rule.channel.to_ascii_lowercase();
            let channels = set.by_app.entry(app.clone()).or_default();
            if channels.contains_key(&channel) {
                let reason = RuleError::Duplicate {
                    app: rule.app.clone(),
                    channel: rule.channel.clone(),
                };
                rejected.push(Rejected { rule, reason });
                continue;
            }
            let index = set.rules.len();
            channels.insert(channel.clone(), index);
            for (attribute, _) in rule.device_attr.iter().filter(|(_, on)| **on) {
                set.by_attribute
                    .entry(attribute.to_ascii_lowercase())
                    .or_default()
                    .entry(channel.clone())
                    .or_default()
                    .push(index);
            }
            set.rules.push(ServedRule {
                rule,
                object,
                app_key: app,
            });
        }
        (set, rejected)
    }

    /// Every servable rule, in (app, channel) order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.rules.iter().map(|served| &served.rule)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for `app` on `channel`, ignoring letter case.
    pub fn get(&self, app: &str, channel: &str) -> Option<&Rule> {
        self.lookup(&app.to_ascii_lowercase(), &channel.to_ascii_lowercase())
            .map(|index| &self.rules[index].rule)
    }

    fn lookup(&self, app: &str, channel: &str) -> Option<usize> {
        self.by_app.get(app)?.get(channel).copied()
    }

    /// Selects one rule per app for `query`.
    ///
    /// Precedence for an app selected more than once: an explicit pin beats an attribute
    /// match, which beats the OS rule. Between two attribute matches the higher version
    /// wins (see [`compare_versions`]), and on equal versions the channel that sorts
    /// first. A pin naming a channel without a rule selects nothing for that app.
    pub fn resolve(&self, query: &DeviceQuery) -> Result<Selection<'_>, NoPackage> {
        // app (lowercase) -> (reason, rule index)
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
            .map(|(app, (reason, index))| {
                let served = &self.rules[index];
                let selected = Selected {
                    rule: &served.rule,
                    object: &served.object,
                    reason,
                };
                (app != os_app, app, selected)
            })
            .collect();
        items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ok(Selection {
            items: items.into_iter().map(|(_, _, selected)| selected).collect(),
        })
    }

    fn app_key(&self, index: usize) -> &str {
        &self.rules[index].app_key
    }

    /// Whether an attribute match replaces the current choice for its app.
    fn attribute_beats(&self, candidate: (Reason, usize), current: (Reason, usize)) -> bool {
        if candidate.0 != current.0 {
            return candidate.0 > current.0;
        }
        let (new, old) = (&self.rules[candidate.1].rule, &self.rules[current.1].rule);
        compare_versions(&new.version, &old.version)
            .then_with(|| {
                old.channel
                    .to_ascii_lowercase()
                    .cmp(&new.channel.to_ascii_lowercase())
            })
            .is_gt()
    }
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
            let (set, rejected) = RuleSet::build_holding(fleet, holds_local);
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
            RuleSet::build_holding(vec![held.clone(), foreign.clone()], holds_local);
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
        let (set, rejected) = RuleSet::build_holding(vec![bad_md5.clone()], |_| false);
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
        let (holding, holding_rejected) = RuleSet::build_holding(fleet.clone(), |_| true);
        assert!(built.rules().eq(holding.rules()));
        assert_eq!(built.len(), fleet.len() - 1);
        assert_eq!(built_rejected, holding_rejected);
        assert_eq!(built_rejected.len(), 1);
        let (none, rejected) = RuleSet::build_holding(fleet.clone(), |_| false);
        assert!(none.is_empty());
        assert_eq!(rejected.len(), fleet.len());
        assert!(
            rejected
                .iter()
                .all(|r| matches!(r.reason, RuleError::NotInStore { .. }))
        );
    }
}
