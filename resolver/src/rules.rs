use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ident::{excerpt, is_ident};
use crate::plan::DEFLATE_LEVEL;
use crate::query::DeviceQuery;
use crate::version::compare_versions;

/// One release rule: "app `app` on channel `env` is `version`, stored at `url`".
///
/// The field names are the attribute names of the AWS sample's DynamoDB table, so a rule
/// reads the same from the table, from the local store's `rules.json` and in `seed list`.
/// Everything after `deviceAttr` is an optional extension.
///
/// Rules order by `app`, then `env`, then the other fields (declaration order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub app: String,
    /// The channel (`prod`, `beta`, ...); the table's sort key.
    #[serde(rename = "env")]
    pub channel: String,
    pub version: String,
    /// Where the binary is: `s3://<bucket>/<key>` or, on the local store, `local://<key>`.
    pub url: String,
    /// MD5 of the binary, lowercase hex.
    pub md5: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_arch: Option<String>,
    /// Device attributes this app is for: `attr<Name>=<channel>` selects it when true.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_attr: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the binary, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A disabled rule is kept in the store but never served.
    #[serde(default = "default_enabled", skip_serializing_if = "Clone::clone")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mandatory: bool,
    /// When the rule was published, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The binary's tar entry compressed at publish time, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRef>,
    /// Deflate level (0 to 9) of the binary's tar entry, chosen at publish time by what
    /// compression gains; absent means `DEFLATE_LEVEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deflate_level: Option<u32>,
}

/// A binary's tar entry (header, data, padding) compressed ahead of time into one raw
/// deflate segment that ends with a sync flush: the bytes the origin would compress for
/// that entry itself (see `ARCHIVE_FORMAT`), stored beside the binary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRef {
    /// Where the segment is stored, in the form of a rule's `url`.
    pub url: String,
    /// Length of the segment in bytes.
    pub size: u64,
    /// CRC-32 of the uncompressed tar entry.
    pub crc32: u32,
    /// MD5 of the segment's bytes, lowercase hex.
    pub md5: String,
    /// CRC-32 of the segment's bytes: checked as they are sent, at a cost far below MD5's.
    pub bytes_crc32: u32,
    /// The `ARCHIVE_FORMAT` it was made for; one made for another format is not used.
    pub format: String,
}

fn default_enabled() -> bool {
    true
}

/// Where a binary lives, taken from a rule's `url`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectLocation {
    /// The S3 bucket for `s3://` urls; `None` for `local://`.
    pub bucket: Option<String>,
    /// The object key: `/`-separated segments of `A-Z a-z 0-9 . _ + -`, none of them `.`
    /// or `..`, so it is safe both as an S3 key and as a path below a data directory.
    pub key: String,
}

/// Why a rule cannot be served. The rule stays in the store; the snapshot leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "{field} `{value}` is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    BadName { field: &'static str, value: String },
    #[error(
        "version `{value}` is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '+' and '-'"
    )]
    BadVersion { value: String },
    #[error(
        "`{name}` is too long for a tar entry name: app and version together must stay within {MAX_FILE_NAME_LEN} bytes"
    )]
    FileNameTooLong { name: String },
    #[error("{field} `{value}` is not a {digits}-digit hex digest")]
    BadDigest {
        field: &'static str,
        value: String,
        digits: usize,
    },
    #[error("deflateLevel {level} is not a deflate level; use 0 to 9")]
    BadLevel { level: u32 },
    #[error("url `{url}` is not usable: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error(
        "another rule already serves app `{app}` on channel `{channel}` (names ignore letter case)"
    )]
    Duplicate { app: String, channel: String },
}

impl Rule {
    /// Checks every field that reaches a lookup, a file name or a store call.
    pub fn check(&self) -> Result<ObjectLocation, RuleError> {
        for (field, value) in [("app", &self.app), ("env", &self.channel)] {
            if !is_ident(value) {
                return Err(RuleError::BadName {
                    field,
                    value: excerpt(value),
                });
            }
        }
        if !is_version(&self.version) {
            return Err(RuleError::BadVersion {
                value: excerpt(&self.version),
            });
        }
        if self.file_name().len() > MAX_FILE_NAME_LEN {
            return Err(RuleError::FileNameTooLong {
                name: excerpt(&self.file_name()),
            });
        }
        if let Some(level) = self.deflate_level.filter(|&level| level > 9) {
            return Err(RuleError::BadLevel { level });
        }
        check_digest("md5", &self.md5, 32)?;
        if let Some(sha256) = &self.sha256 {
            check_digest("sha256", sha256, 64)?;
        }
        ObjectLocation::parse(&self.url)
    }

    /// The name of this binary inside a package: `<app>_<version>`.
    pub fn file_name(&self) -> String {
        format!("{}_{}", self.app, self.version)
    }

    /// The deflate level of this binary's tar entry: the rule's, else [`DEFLATE_LEVEL`].
    pub fn entry_deflate_level(&self) -> u32 {
        self.deflate_level.unwrap_or(DEFLATE_LEVEL)
    }
}

fn is_version(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= crate::MAX_IDENT_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

fn check_digest(field: &'static str, value: &str, digits: usize) -> Result<(), RuleError> {
    let lowercase_hex = value
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if value.len() == digits && lowercase_hex {
        Ok(())
    } else {
        Err(RuleError::BadDigest {
            field,
            value: excerpt(value),
            digits,
        })
    }
}

const MAX_KEY_LEN: usize = 1024;
/// A ustar header holds a name of at most 100 bytes without a `/`.
const MAX_FILE_NAME_LEN: usize = 100;

impl ObjectLocation {
    /// Parses `s3://<bucket>/<key>` or `local://<key>`.
    pub fn parse(url: &str) -> Result<Self, RuleError> {
        let bad = |reason| RuleError::BadUrl {
            url: excerpt(url),
            reason,
        };
        let (bucket, key) = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| bad("an s3:// url needs a bucket and a key"))?;
            if !is_bucket_name(bucket) {
                return Err(bad("the bucket name is not a valid S3 bucket name"));
            }
            (Some(bucket.to_owned()), key)
        } else if let Some(key) = url.strip_prefix("local://") {
            (None, key)
        } else {
            return Err(bad("it must start with s3:// or local://"));
        };
        if !is_safe_key(key) {
            return Err(bad(
                "the key must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_', '+' and '-', none of them '.' or '..'",
            ));
        }
        Ok(ObjectLocation {
            bucket,
            key: key.to_owned(),
        })
    }

    /// The url that names this location.
    pub fn url(&self) -> String {
        match &self.bucket {
            Some(bucket) => format!("s3://{bucket}/{}", self.key),
            None => format!("local://{}", self.key),
        }
    }
}

/// Whether `name` is usable as an S3 bucket name: 3 to 63 of `a-z 0-9 . -`.
pub fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
        })
}

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
    pub fn build(rules: impl IntoIterator<Item = Rule>) -> (RuleSet, Vec<Rejected>) {
        let mut rules: Vec<Rule> = rules.into_iter().filter(|rule| rule.enabled).collect();
        // A total order, so that which of two rules for the same app and channel is kept
        // never depends on the order the store listed them in.
        rules.sort();
        let mut set = RuleSet::default();
        let mut rejected = Vec::new();
        for rule in rules {
            let object = match rule.check() {
                Ok(object) => object,
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
pub(crate) mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// A valid, enabled rule stored at `local://<app>_<version>`, with an MD5 derived
    /// from app, channel and version so that every rule has its own.
    pub(crate) fn rule(app: &str, channel: &str, version: &str, attributes: &[&str]) -> Rule {
        let digest = Sha256::digest(format!("{app}/{channel}/{version}"));
        Rule {
            app: app.to_owned(),
            channel: channel.to_owned(),
            version: version.to_owned(),
            url: format!("local://{app}_{version}"),
            md5: hex::encode(&digest[..16]),
            cpu_arch: None,
            device_attr: attributes
                .iter()
                .map(|name| ((*name).to_owned(), true))
                .collect(),
            size: None,
            sha256: None,
            enabled: true,
            mandatory: false,
            created_at: None,
            segment: None,
            deflate_level: None,
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

    pub(crate) fn build(rules: Vec<Rule>) -> RuleSet {
        let (set, rejected) = RuleSet::build(rules);
        assert_eq!(rejected, [], "every rule is valid");
        set
    }

    pub(crate) fn demo_set() -> RuleSet {
        build(demo_fleet())
    }

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

    fn check_error(rule: Rule) -> RuleError {
        rule.check().expect_err("an invalid rule")
    }

    fn bad_url(url: &str) -> RuleError {
        ObjectLocation::parse(url).expect_err("an unusable url")
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
    fn demo_fleet_rules_are_valid() {
        for rule in demo_fleet() {
            let object = rule.check().expect("a valid rule");
            assert_eq!(object.key, rule.file_name());
        }
    }

    #[test]
    fn bad_app_or_channel_name_is_rejected() {
        for app in ["", "my app", "../etc", "a/b", "app*", "é", &"a".repeat(65)] {
            assert_eq!(
                check_error(rule(app, "prod", "1.0.0", &[])),
                RuleError::BadName {
                    field: "app",
                    value: excerpt(app)
                },
                "{app}"
            );
        }
        assert_eq!(
            check_error(rule("app", "pr/od", "1.0.0", &[])),
            RuleError::BadName {
                field: "env",
                value: "pr/od".to_owned()
            }
        );
        assert!(rule(&"a".repeat(64), "prod", "1.0.0", &[]).check().is_ok());
    }

    #[test]
    fn bad_version_is_rejected() {
        for version in ["", "1.0 beta", "1/0", "../1", "1.0*", &"1".repeat(65)] {
            let mut bad = rule("app", "prod", "1.0.0", &[]);
            bad.version = version.to_owned();
            assert_eq!(
                check_error(bad),
                RuleError::BadVersion {
                    value: excerpt(version)
                },
                "{version}"
            );
        }
        for version in ["1.0.0+build.5", "1.0_rc-1", "latest", &"1".repeat(64)] {
            let mut good = rule("app", "prod", "1.0.0", &[]);
            good.version = version.to_owned();
            assert!(good.check().is_ok(), "{version}");
        }
    }

    #[test]
    fn file_name_must_fit_a_ustar_header() {
        let mut fits = rule(&"a".repeat(64), "prod", "1.0.0", &[]);
        fits.version = "1".repeat(35);
        assert_eq!(fits.file_name().len(), 100);
        assert!(fits.check().is_ok());
        let mut long = fits.clone();
        long.version.push('1');
        assert_eq!(
            check_error(long.clone()),
            RuleError::FileNameTooLong {
                name: excerpt(&long.file_name())
            }
        );
    }

    #[test]
    fn md5_must_be_32_lowercase_hex_digits() {
        let valid = "0123456789abcdef0123456789abcdef";
        for md5 in [
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
            "",
        ] {
            let bad = Rule {
                md5: md5.to_owned(),
                ..rule("app", "prod", "1.0.0", &[])
            };
            assert_eq!(
                check_error(bad),
                RuleError::BadDigest {
                    field: "md5",
                    value: md5.to_owned(),
                    digits: 32
                },
                "{md5}"
            );
        }
        let good = Rule {
            md5: valid.to_owned(),
            ..rule("app", "prod", "1.0.0", &[])
        };
        assert!(good.check().is_ok());
    }

    #[test]
    fn sha256_when_present_must_be_64_lowercase_hex_digits() {
        let valid = "ab".repeat(32);
        for sha256 in [
            "AB".repeat(32),
            "ab".repeat(31),
            format!("{valid}0"),
            "zz".repeat(32),
        ] {
            let bad = Rule {
                sha256: Some(sha256.clone()),
                ..rule("app", "prod", "1.0.0", &[])
            };
            assert_eq!(
                check_error(bad),
                RuleError::BadDigest {
                    field: "sha256",
                    value: excerpt(&sha256),
                    digits: 64
                },
                "{sha256}"
            );
        }
        let good = Rule {
            sha256: Some(valid),
            ..rule("app", "prod", "1.0.0", &[])
        };
        assert!(good.check().is_ok());
    }

    #[test]
    fn s3_and_local_urls_give_their_object_location() {
        for (url, bucket, key) in [
            ("s3://bucket/key", Some("bucket"), "key"),
            ("s3://b-ucket/a/b/c", Some("b-ucket"), "a/b/c"),
            (
                "s3://my.bucket-1/os_armv8_1.1.0+b",
                Some("my.bucket-1"),
                "os_armv8_1.1.0+b",
            ),
            ("local://k", None, "k"),
            ("local://apps/os_armv8_1.1.0", None, "apps/os_armv8_1.1.0"),
            ("local://a/..b/c..", None, "a/..b/c.."),
        ] {
            let location = ObjectLocation::parse(url).expect("a usable url");
            assert_eq!(
                location,
                ObjectLocation {
                    bucket: bucket.map(str::to_owned),
                    key: key.to_owned()
                },
                "{url}"
            );
            assert_eq!(location.url(), url);
        }
    }

    #[test]
    fn urls_that_could_escape_or_are_not_ours_are_rejected() {
        for (url, reason) in [
            ("file:///etc/passwd", "it must start with s3:// or local://"),
            (
                "https://example.com/k",
                "it must start with s3:// or local://",
            ),
            ("S3://bucket/k", "it must start with s3:// or local://"),
            ("s3://bucket", "an s3:// url needs a bucket and a key"),
            (
                "s3://UPPER/k",
                "the bucket name is not a valid S3 bucket name",
            ),
            ("s3://ab/k", "the bucket name is not a valid S3 bucket name"),
            ("s3:///k", "the bucket name is not a valid S3 bucket name"),
            (
                "s3://bu_cket/k",
                "the bucket name is not a valid S3 bucket name",
            ),
        ] {
            assert_eq!(
                bad_url(url),
                RuleError::BadUrl {
                    url: url.to_owned(),
                    reason
                },
                "{url}"
            );
        }
        for url in [
            "s3://bucket/../x",
            "s3://bucket/",
            "s3://bucket/a/./b",
            "s3://bucket/a%2Fb",
            "local://a//b",
            "local:///abs",
            "local://..",
            "local://a/..",
            "local://a/",
            "local://",
            "local://a\\b",
            "local://a b",
            "local://é",
        ] {
            assert!(
                matches!(bad_url(url), RuleError::BadUrl { reason, .. } if reason.starts_with("the key must be")),
                "{url}"
            );
        }
        let long_key = format!("local://{}", "k".repeat(1025));
        assert!(matches!(bad_url(&long_key), RuleError::BadUrl { .. }));
        assert!(ObjectLocation::parse(&format!("local://{}", "k".repeat(1024))).is_ok());
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
                    reason: RuleError::BadUrl {
                        url: "file:///etc/passwd".to_owned(),
                        reason: "it must start with s3:// or local://"
                    },
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

    #[test]
    fn rule_reads_the_sample_table_item_and_ignores_unknown_fields() {
        let item = r#"{
            "app": "os_armv8", "env": "prod", "version": "1.1.0",
            "url": "s3://cf-iot-ota-appbinaries-xxxx/os_armv8_1.1.0",
            "md5": "0123456789abcdef0123456789abcdef",
            "cpuArch": "armv8", "deviceAttr": {"gamer": true, "camera": false},
            "ident": "os_armv8-prod"
        }"#;
        let rule: Rule = serde_json::from_str(item).expect("a sample item");
        assert_eq!(
            rule,
            Rule {
                app: "os_armv8".to_owned(),
                channel: "prod".to_owned(),
                version: "1.1.0".to_owned(),
                url: "s3://cf-iot-ota-appbinaries-xxxx/os_armv8_1.1.0".to_owned(),
                md5: "0123456789abcdef0123456789abcdef".to_owned(),
                cpu_arch: Some("armv8".to_owned()),
                device_attr: [("camera".to_owned(), false), ("gamer".to_owned(), true)].into(),
                size: None,
                sha256: None,
                enabled: true,
                mandatory: false,
                created_at: None,
                segment: None,
                deflate_level: None,
            }
        );
    }

    #[test]
    fn rule_without_optional_fields_is_enabled() {
        let rule: Rule = serde_json::from_str(
            r#"{"app": "a", "env": "prod", "version": "1", "url": "local://a_1", "md5": "0123456789abcdef0123456789abcdef"}"#,
        )
        .expect("a minimal item");
        assert!(rule.enabled);
        assert!(!rule.mandatory);
        assert_eq!(rule.device_attr, BTreeMap::new());
    }

    #[test]
    fn rule_serializes_with_the_table_attribute_names() {
        let full = Rule {
            cpu_arch: Some("armv8".to_owned()),
            size: Some(1024),
            sha256: Some("ab".repeat(32)),
            enabled: false,
            mandatory: true,
            created_at: Some("2024-01-02T03:04:05Z".to_owned()),
            segment: None,
            deflate_level: None,
            ..rule("os_armv8", "prod", "1.1.0", &["gamer"])
        };
        let json = serde_json::to_value(&full).expect("a JSON rule");
        let expected = serde_json::json!({
            "app": "os_armv8", "env": "prod", "version": "1.1.0",
            "url": "local://os_armv8_1.1.0", "md5": full.md5,
            "cpuArch": "armv8", "deviceAttr": {"gamer": true}, "size": 1024,
            "sha256": "ab".repeat(32), "enabled": false, "mandatory": true,
            "createdAt": "2024-01-02T03:04:05Z",
        });
        assert_eq!(json, expected);
        let back: Rule = serde_json::from_value(json).expect("the same rule");
        assert_eq!(back, full);
    }

    #[test]
    fn rule_leaves_out_defaults_when_serialized() {
        let minimal = rule("a", "prod", "1", &[]);
        let json = serde_json::to_value(&minimal).expect("a JSON rule");
        let expected = serde_json::json!({
            "app": "a", "env": "prod", "version": "1", "url": "local://a_1", "md5": minimal.md5,
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn rule_errors_name_the_offending_value() {
        assert_eq!(
            bad_url("s3://UPPER/k").to_string(),
            "url `s3://UPPER/k` is not usable: the bucket name is not a valid S3 bucket name"
        );
        assert_eq!(
            RuleError::Duplicate {
                app: "Scoreboard".to_owned(),
                channel: "prod".to_owned()
            }
            .to_string(),
            "another rule already serves app `Scoreboard` on channel `prod` (names ignore letter case)"
        );
        assert!(
            check_error(rule("my app", "prod", "1", &[]))
                .to_string()
                .starts_with("app `my app` is not valid")
        );
        let mut bad = rule("a", "prod", "1", &[]);
        bad.md5 = "XYZ".to_owned();
        assert_eq!(
            check_error(bad).to_string(),
            "md5 `XYZ` is not a 32-digit hex digest"
        );
    }
}
