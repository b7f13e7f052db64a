//! Rules and rule sets shared by the unit tests of several modules.

use sha2::{Digest, Sha256};

use crate::rule::Rule;
use crate::rule_set::RuleSet;

/// A valid, enabled rule stored at `local://<app>_<version>`, with an MD5 derived
/// from app, channel and version so that every rule has its own.
pub(crate) fn rule(app: &str, channel: &str, version: &str, attributes: &[&str]) -> Rule {
    let digest = Sha256::digest(format!("{app}/{channel}/{version}"));
    Rule {
        device_attr: attributes
            .iter()
            .map(|name| ((*name).to_owned(), true))
            .collect(),
        ..Rule::new(
            app,
            channel,
            version,
            format!("local://{app}_{version}"),
            hex::encode(&digest[..16]),
        )
    }
}

/// The AWS sample's demo fleet.
pub(crate) fn demo_fleet() -> Vec<Rule> {
    let os = |channel, version| Rule {
        cpu_arch: Some("armv8".to_owned()),
        ..rule("os_armv8", channel, version, &[])
    };
    vec![
        os("beta", "2.0.0"),
        os("prod", "1.1.0"),
        rule("os_armv7", "beta", "2.0.0", &[]),
        rule("os_armv7", "prod", "1.0.0", &[]),
        rule("scoreboard", "beta", "2.0.0", &["gamer"]),
        rule("scoreboard", "prod", "1.0.0", &["gamer"]),
        rule("videoStreamer", "beta", "0.1.2", &["camera"]),
        rule("videoStreamer", "prod", "0.0.1", &["camera", "gamer"]),
        rule("modemFW", "prod", "1.0", &["cellular"]),
    ]
}

/// The rule set of `rules`, all of which must be valid.
pub(crate) fn build(rules: Vec<Rule>) -> RuleSet {
    let (set, rejected) = RuleSet::build(rules);
    assert_eq!(rejected, [], "every rule is valid");
    set
}

pub(crate) fn demo_set() -> RuleSet {
    build(demo_fleet())
}
