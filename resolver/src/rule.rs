//! A release rule as the store holds it, and the checks that decide whether it can be
//! served.
//!
//! Invariant: a rule that passes [`Rule::check`] has names, a version and digests that
//! are safe in a lookup, a tar entry name and a log line, and a url that names an
//! [`ObjectLocation`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::DEFLATE_LEVEL;
use crate::ident::{MAX_IDENT_LEN, excerpt, is_ident};
use crate::location::{BadUrl, ObjectLocation};

/// A ustar header holds a name of at most 100 bytes without a `/`.
const MAX_FILE_NAME_LEN: usize = 100;

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
    /// Position of this release in its channel's history: 1 for the first release
    /// published there, one more for each after it. Absent on items made by the AWS
    /// sample, which count as the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Devices below this version get this release before anything newer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// On a channel's current release: a newer release served to a share of devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// On a channel's current release: the operator rolled back to it on purpose, so
    /// devices that run a newer version take it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    /// On a channel's current release: how many times it was written, so that a writer
    /// can tell whether it changed since it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The signed statement of this release: a DSSE envelope's JSON text, copied into
    /// the package metadata as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    /// On a channel's current release: releases published here must be signed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signatures_required: bool,
}

/// A staged rollout: the release `version` (a candidate in the channel's history) for
/// `percent` of the devices that send a `deviceKey`, the current release for the rest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub version: String,
    /// 0 (halted: everyone on the current release) to 100.
    pub percent: u8,
}

/// Every item of a store: the current release of each app and channel (the items the
/// AWS sample reads) and every release ever published there (the history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StoredRules {
    pub current: Vec<Rule>,
    pub history: Vec<Rule>,
}

/// Current releases without history, as a store made by the AWS sample holds them.
impl From<Vec<Rule>> for StoredRules {
    fn from(current: Vec<Rule>) -> Self {
        StoredRules {
            current,
            history: Vec::new(),
        }
    }
}

impl StoredRules {
    /// Sorts both lists, so that equal contents compare and hash equal.
    pub fn sort(&mut self) {
        self.current.sort_unstable();
        self.history.sort_unstable();
    }

    /// Whether the store holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.history.is_empty()
    }

    /// The current release of `app` on `channel` (names ignore letter case).
    pub fn current(&self, app: &str, channel: &str) -> Option<&Rule> {
        self.current.iter().find(|rule| rule.is(app, channel))
    }

    /// Every release of `app` on `channel`, in publishing order (sequence, then version).
    pub fn history(&self, app: &str, channel: &str) -> Vec<&Rule> {
        let mut releases: Vec<&Rule> = self
            .history
            .iter()
            .filter(|rule| rule.is(app, channel))
            .collect();
        releases.sort_by(|a, b| {
            (a.sequence.unwrap_or(0), &a.version).cmp(&(b.sequence.unwrap_or(0), &b.version))
        });
        releases
    }

    /// Every stored rule, current and history, for checks that span both.
    pub fn all(&self) -> impl Iterator<Item = &Rule> {
        self.current.iter().chain(&self.history)
    }
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
    /// The CRC-32 of each block of the segment's bytes, so that any byte range is
    /// checked before it is sent. Segments stored before lack it until
    /// `fleetpack-seed segments` adds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<SegmentBlocks>,
}

/// Bytes per checked block of a segment: the blocks a download reads and sends.
pub const SEGMENT_BLOCK: u64 = 256 * 1024;

/// The CRC-32 of each fixed-size block of a segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentBlocks {
    /// Bytes per block; the last block may be shorter.
    pub size: u64,
    /// Each block's CRC-32, eight lowercase hex digits a block, one after another.
    pub crc32: String,
}

impl SegmentBlocks {
    pub fn new(size: u64, crc32s: &[u32]) -> Self {
        SegmentBlocks {
            size,
            crc32: crc32s.iter().map(|crc| format!("{crc:08x}")).collect(),
        }
    }

    /// Each block's CRC-32, or `None` when the text is not eight hex digits a block.
    pub fn crc32s(&self) -> Option<Vec<u32>> {
        if !self.crc32.len().is_multiple_of(8) || !self.crc32.is_ascii() {
            return None;
        }
        (0..self.crc32.len())
            .step_by(8)
            .map(|at| u32::from_str_radix(&self.crc32[at..at + 8], 16).ok())
            .collect()
    }

    /// Whether these are the checksums of a segment of `len` bytes: a positive block
    /// size, and one well-formed CRC-32 a block.
    fn fit(&self, len: u64) -> bool {
        self.size > 0
            && self
                .crc32s()
                .is_some_and(|crcs| crcs.len() as u64 == len.div_ceil(self.size))
    }
}

fn default_enabled() -> bool {
    true
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
    #[error("rollout percent {percent} is not a share of devices; use 0 to 100")]
    BadPercent { percent: u8 },
    #[error("envelope `{value}` is not a JSON object; sign the release again")]
    BadEnvelope { value: String },
    #[error(
        "the block checksums of segment `{url}` do not fit its {size} bytes; run `fleetpack-seed segments` to make them again"
    )]
    BadSegmentBlocks { url: String, size: u64 },
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    #[error(
        "url `{url}` names an object this store does not hold (another bucket): publish the binary to this store, or point the rule at an object in it"
    )]
    NotInStore { url: String },
    #[error(
        "the binary at `{url}` is not in the store (yet): publish it again, or wait for the publish in progress to end"
    )]
    MissingObject { url: String },
    #[error(
        "another rule already serves app `{app}` on channel `{channel}` (names ignore letter case)"
    )]
    Duplicate { app: String, channel: String },
    #[error(
        "the history of app `{app}` on channel `{channel}` holds version `{version}` twice (names ignore letter case)"
    )]
    DuplicateRelease {
        app: String,
        channel: String,
        version: String,
    },
    #[error(
        "the current release of app `{app}` on channel `{channel}`, version `{version}`, has other bytes than that version in the history; publish or roll back to fix it"
    )]
    DiffersFromHistory {
        app: String,
        channel: String,
        version: String,
    },
}

impl Rule {
    /// A rule of the five fields every rule needs; the others at their defaults:
    /// enabled, not mandatory, no attributes, no extension. Set others with
    /// struct-update syntax: `Rule { size: Some(3), ..Rule::new(..) }`.
    pub fn new(
        app: impl Into<String>,
        channel: impl Into<String>,
        version: impl Into<String>,
        url: impl Into<String>,
        md5: impl Into<String>,
    ) -> Rule {
        Rule {
            app: app.into(),
            channel: channel.into(),
            version: version.into(),
            url: url.into(),
            md5: md5.into(),
            cpu_arch: None,
            device_attr: BTreeMap::new(),
            size: None,
            sha256: None,
            enabled: default_enabled(),
            mandatory: false,
            created_at: None,
            segment: None,
            deflate_level: None,
            sequence: None,
            required: false,
            rollout: None,
            rolled_back: false,
            revision: None,
            envelope: None,
            signatures_required: false,
        }
    }

    /// This release as a history entry: without what only a channel's current item
    /// carries (its rollout, rollback mark, revision and signature requirement).
    pub fn as_release(&self) -> Rule {
        Rule {
            rollout: None,
            rolled_back: false,
            revision: None,
            signatures_required: false,
            ..self.clone()
        }
    }

    /// Whether this is a rule of `app` on `channel` (names ignore letter case).
    pub fn is(&self, app: &str, channel: &str) -> bool {
        self.app.eq_ignore_ascii_case(app) && self.channel.eq_ignore_ascii_case(channel)
    }

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
        if let Some(envelope) = &self.envelope
            && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(envelope).is_err()
        {
            return Err(RuleError::BadEnvelope {
                value: excerpt(envelope),
            });
        }
        if let Some(segment) = &self.segment
            && segment
                .blocks
                .as_ref()
                .is_some_and(|blocks| !blocks.fit(segment.size))
        {
            return Err(RuleError::BadSegmentBlocks {
                url: excerpt(&segment.url),
                size: segment.size,
            });
        }
        if let Some(rollout) = &self.rollout {
            if !is_version(&rollout.version) {
                return Err(RuleError::BadVersion {
                    value: excerpt(&rollout.version),
                });
            }
            if rollout.percent > 100 {
                return Err(RuleError::BadPercent {
                    percent: rollout.percent,
                });
            }
        }
        Ok(ObjectLocation::parse(&self.url)?)
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
        && text.len() <= MAX_IDENT_LEN
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{demo_fleet, rule};

    fn check_error(rule: Rule) -> RuleError {
        rule.check().expect_err("an invalid rule")
    }

    #[test]
    fn demo_fleet_rules_are_valid() {
        for rule in demo_fleet() {
            let object = rule.check().expect("a valid rule");
            assert_eq!(object.key, rule.file_name());
        }
    }

    #[test]
    fn new_rule_has_every_optional_field_at_its_default() {
        let rule = Rule::new(
            "os_armv8",
            "prod",
            "1.1.0",
            "local://os_armv8_1.1.0",
            "0123456789abcdef0123456789abcdef",
        );
        assert_eq!(rule.app, "os_armv8");
        assert_eq!(rule.channel, "prod");
        assert_eq!(rule.version, "1.1.0");
        assert_eq!(rule.url, "local://os_armv8_1.1.0");
        assert_eq!(rule.md5, "0123456789abcdef0123456789abcdef");
        assert_eq!(rule.cpu_arch, None);
        assert_eq!(rule.device_attr, BTreeMap::new());
        assert_eq!(rule.size, None);
        assert_eq!(rule.sha256, None);
        assert!(rule.enabled);
        assert!(!rule.mandatory);
        assert_eq!(rule.created_at, None);
        assert_eq!(rule.segment, None);
        assert_eq!(rule.deflate_level, None);
        let stored: Rule = serde_json::from_str(
            r#"{"app": "os_armv8", "env": "prod", "version": "1.1.0", "url": "local://os_armv8_1.1.0", "md5": "0123456789abcdef0123456789abcdef"}"#,
        )
        .expect("a minimal item");
        assert_eq!(stored, rule);
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
    fn deflate_level_must_be_0_to_9() {
        for level in [0, 9] {
            let good = Rule {
                deflate_level: Some(level),
                ..rule("app", "prod", "1.0.0", &[])
            };
            assert_eq!(good.check().map(|_| good.entry_deflate_level()), Ok(level));
        }
        let bad = Rule {
            deflate_level: Some(10),
            ..rule("app", "prod", "1.0.0", &[])
        };
        assert_eq!(check_error(bad), RuleError::BadLevel { level: 10 });
        assert_eq!(
            rule("app", "prod", "1.0.0", &[]).entry_deflate_level(),
            DEFLATE_LEVEL
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
                cpu_arch: Some("armv8".to_owned()),
                device_attr: [("camera".to_owned(), false), ("gamer".to_owned(), true)].into(),
                ..Rule::new(
                    "os_armv8",
                    "prod",
                    "1.1.0",
                    "s3://cf-iot-ota-appbinaries-xxxx/os_armv8_1.1.0",
                    "0123456789abcdef0123456789abcdef",
                )
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
        let bad_url = Rule {
            url: "s3://UPPER/k".to_owned(),
            ..rule("a", "prod", "1", &[])
        };
        assert_eq!(
            check_error(bad_url).to_string(),
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
        assert_eq!(
            RuleError::NotInStore {
                url: "s3://other-bucket/k".to_owned()
            }
            .to_string(),
            "url `s3://other-bucket/k` names an object this store does not hold (another bucket): publish the binary to this store, or point the rule at an object in it"
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
