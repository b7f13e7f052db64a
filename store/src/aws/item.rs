//! Rules as DynamoDB items: the AWS sample's attributes (`app`, `env`, `version`,
//! `ident`, `url`, `md5`, `cpuArch`, `deviceAttr`) and fleetpack's optional ones.
//!
//! The item `(app, env = <channel>)` is the current release, as in the sample. Every
//! published release is kept beside it as `(app, env = <channel>#<version>)`: `#` is in
//! no channel name, so the sample's queries, which ask for a channel, never match one.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use fleetpack_resolver::{Rollout, Rule, SegmentBlocks, SegmentRef};

/// A DynamoDB item: attribute names and values.
pub(super) type Item = HashMap<String, AttributeValue>;

/// Separates channel and version in the `env` of a history item.
const HISTORY_SEPARATOR: char = '#';

/// Which of a channel's items a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemKind {
    /// `(app, <channel>)`: the release the channel serves, as the sample reads it.
    Current,
    /// `(app, <channel>#<version>)`: a release in the channel's history.
    Release,
}

/// Why a table item is not a rule. The item stays in the table; the store skips it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("attribute `{0}` is missing")]
    Missing(String),
    #[error("attribute `{name}` is not {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
    },
    #[error("attribute `{name}` is `{value}`, not {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("history item `{env}` holds version `{version}`, not the one its key names")]
    KeyVersion { env: String, version: String },
    /// An attribute of the item with this key is wrong.
    #[error("item {app} on {channel}")]
    InRule {
        app: String,
        channel: String,
        #[source]
        reason: Box<ItemError>,
    },
}

fn wrong_type(name: impl Into<String>, expected: &'static str) -> ItemError {
    ItemError::WrongType {
        name: name.into(),
        expected,
    }
}

fn bad_value(name: impl Into<String>, value: &str, expected: &'static str) -> ItemError {
    ItemError::BadValue {
        name: name.into(),
        value: value.to_owned(),
        expected,
    }
}

/// Reads an item with the sample's attributes (and our optional ones).
pub(super) fn rule_from_item(item: &Item) -> Result<(Rule, ItemKind), ItemError> {
    let app = required(item, "app")?;
    let env = required(item, "env")?;
    let in_rule = |reason: ItemError| ItemError::InRule {
        app: app.clone(),
        channel: env.clone(),
        reason: Box::new(reason),
    };
    match env.split_once(HISTORY_SEPARATOR) {
        None => read_rule(item, app.clone(), env.clone())
            .map(|rule| (rule, ItemKind::Current))
            .map_err(in_rule),
        Some((channel, version)) => {
            let rule = read_rule(item, app.clone(), channel.to_owned()).map_err(in_rule)?;
            if rule.version != version {
                return Err(in_rule(ItemError::KeyVersion {
                    env: env.clone(),
                    version: rule.version,
                }));
            }
            Ok((rule, ItemKind::Release))
        }
    }
}

fn read_rule(item: &Item, app: String, channel: String) -> Result<Rule, ItemError> {
    let device_attr = match item.get("deviceAttr") {
        None | Some(AttributeValue::Null(_)) => Default::default(),
        Some(AttributeValue::M(map)) => map
            .iter()
            .map(|(name, value)| match value {
                AttributeValue::Bool(on) => Ok((name.clone(), *on)),
                _ => Err(wrong_type(format!("deviceAttr.{name}"), "a boolean")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong_type("deviceAttr", "a map")),
    };
    let deflate_level = number(item, "deflateLevel")?
        .map(|level| {
            u32::try_from(level)
                .map_err(|_| bad_value("deflateLevel", &level.to_string(), "a deflate level"))
        })
        .transpose()?;
    Ok(Rule {
        cpu_arch: text(item, "cpuArch")?,
        device_attr,
        size: number(item, "size")?,
        sha256: text(item, "sha256")?,
        enabled: flag(item, "enabled")?.unwrap_or(true),
        mandatory: flag(item, "mandatory")?.unwrap_or(false),
        created_at: text(item, "createdAt")?,
        segment: segment_from_item(item.get("segment"))?,
        deflate_level,
        sequence: number(item, "sequence")?,
        required: flag(item, "required")?.unwrap_or(false),
        rollout: rollout_from_item(item.get("rollout"))?,
        rolled_back: flag(item, "rolledBack")?.unwrap_or(false),
        revision: number(item, "revision")?,
        envelope: text(item, "envelope")?,
        signatures_required: flag(item, "signaturesRequired")?.unwrap_or(false),
        ..Rule::new(
            app,
            channel,
            required(item, "version")?,
            required(item, "url")?,
            required(item, "md5")?,
        )
    })
}

/// A string attribute; numbers are read as their text.
fn text(item: &Item, name: &str) -> Result<Option<String>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(text) | AttributeValue::N(text)) => Ok(Some(text.clone())),
        Some(_) => Err(wrong_type(name, "a string")),
    }
}

fn required(item: &Item, name: &str) -> Result<String, ItemError> {
    text(item, name)?.ok_or_else(|| ItemError::Missing(name.to_owned()))
}

fn number(item: &Item, name: &str) -> Result<Option<u64>, ItemError> {
    text(item, name)?
        .map(|value| {
            value
                .parse()
                .map_err(|_| bad_value(name, &value, "a whole number"))
        })
        .transpose()
}

fn flag(item: &Item, name: &str) -> Result<Option<bool>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::Bool(on)) => Ok(Some(*on)),
        Some(_) => Err(wrong_type(name, "a boolean")),
    }
}

/// Reads the `rollout` map written by [`item_from_rule`].
fn rollout_from_item(value: Option<&AttributeValue>) -> Result<Option<Rollout>, ItemError> {
    let map = match value {
        None | Some(AttributeValue::Null(_)) => return Ok(None),
        Some(AttributeValue::M(map)) => map,
        Some(_) => return Err(wrong_type("rollout", "a map")),
    };
    let version = match map.get("version") {
        Some(AttributeValue::S(version)) => version.clone(),
        _ => return Err(wrong_type("rollout.version", "a string")),
    };
    let percent = match map.get("percent") {
        Some(AttributeValue::N(number)) => number
            .parse::<u8>()
            .map_err(|_| bad_value("rollout.percent", number, "a percent"))?,
        _ => return Err(wrong_type("rollout.percent", "a number")),
    };
    Ok(Some(Rollout { version, percent }))
}

/// Reads the `segment` map written by [`item_from_rule`].
fn segment_from_item(value: Option<&AttributeValue>) -> Result<Option<SegmentRef>, ItemError> {
    let map = match value {
        None | Some(AttributeValue::Null(_)) => return Ok(None),
        Some(AttributeValue::M(map)) => map,
        Some(_) => return Err(wrong_type("segment", "a map")),
    };
    let text = |name: &str| match map.get(name) {
        Some(AttributeValue::S(text)) => Ok(text.clone()),
        _ => Err(wrong_type(format!("segment.{name}"), "a string")),
    };
    let number = |name: &str| match map.get(name) {
        Some(AttributeValue::N(number)) => number
            .parse::<u64>()
            .map_err(|_| bad_value(format!("segment.{name}"), number, "a whole number")),
        _ => Err(wrong_type(format!("segment.{name}"), "a number")),
    };
    let crc32 = |name: &str| {
        let value = number(name)?;
        u32::try_from(value)
            .map_err(|_| bad_value(format!("segment.{name}"), &value.to_string(), "a CRC-32"))
    };
    Ok(Some(SegmentRef {
        url: text("url")?,
        size: number("size")?,
        crc32: crc32("crc32")?,
        md5: text("md5")?,
        bytes_crc32: crc32("bytesCrc32")?,
        format: text("format")?,
        blocks: match map.get("blockSize") {
            None => None,
            Some(_) => Some(SegmentBlocks {
                size: number("blockSize")?,
                crc32: text("blockCrc32")?,
            }),
        },
    }))
}

/// The item of `rule` as the current release of its channel or as a history entry.
pub(super) fn item_from_rule(rule: &Rule, kind: ItemKind) -> Item {
    let env = match kind {
        ItemKind::Current => rule.channel.clone(),
        ItemKind::Release => format!("{}{HISTORY_SEPARATOR}{}", rule.channel, rule.version),
    };
    let mut item = HashMap::from([
        ("app".to_owned(), AttributeValue::S(rule.app.clone())),
        ("env".to_owned(), AttributeValue::S(env)),
        (
            "version".to_owned(),
            AttributeValue::S(rule.version.clone()),
        ),
        // The sample's items carry `ident`; ours hold the binary's name there.
        ("ident".to_owned(), AttributeValue::S(rule.file_name())),
        ("url".to_owned(), AttributeValue::S(rule.url.clone())),
        ("md5".to_owned(), AttributeValue::S(rule.md5.clone())),
        ("enabled".to_owned(), AttributeValue::Bool(rule.enabled)),
    ]);
    let mut optional = |name: &str, value: Option<AttributeValue>| {
        if let Some(value) = value {
            item.insert(name.to_owned(), value);
        }
    };
    optional("cpuArch", rule.cpu_arch.clone().map(AttributeValue::S));
    optional("sha256", rule.sha256.clone().map(AttributeValue::S));
    optional(
        "size",
        rule.size.map(|size| AttributeValue::N(size.to_string())),
    );
    optional("createdAt", rule.created_at.clone().map(AttributeValue::S));
    optional(
        "deflateLevel",
        rule.deflate_level
            .map(|level| AttributeValue::N(level.to_string())),
    );
    optional(
        "mandatory",
        rule.mandatory.then_some(AttributeValue::Bool(true)),
    );
    optional(
        "required",
        rule.required.then_some(AttributeValue::Bool(true)),
    );
    optional(
        "rolledBack",
        rule.rolled_back.then_some(AttributeValue::Bool(true)),
    );
    optional(
        "signaturesRequired",
        rule.signatures_required
            .then_some(AttributeValue::Bool(true)),
    );
    optional("envelope", rule.envelope.clone().map(AttributeValue::S));
    let number = |value: Option<u64>| value.map(|value| AttributeValue::N(value.to_string()));
    optional("sequence", number(rule.sequence));
    optional("revision", number(rule.revision));
    optional(
        "rollout",
        rule.rollout.as_ref().map(|rollout| {
            AttributeValue::M(HashMap::from([
                (
                    "version".to_owned(),
                    AttributeValue::S(rollout.version.clone()),
                ),
                (
                    "percent".to_owned(),
                    AttributeValue::N(rollout.percent.to_string()),
                ),
            ]))
        }),
    );
    optional(
        "deviceAttr",
        (!rule.device_attr.is_empty()).then(|| {
            AttributeValue::M(
                rule.device_attr
                    .iter()
                    .map(|(name, on)| (name.clone(), AttributeValue::Bool(*on)))
                    .collect(),
            )
        }),
    );
    optional(
        "segment",
        rule.segment.as_ref().map(|segment| {
            AttributeValue::M(
                HashMap::from([
                    ("url".to_owned(), AttributeValue::S(segment.url.clone())),
                    (
                        "size".to_owned(),
                        AttributeValue::N(segment.size.to_string()),
                    ),
                    (
                        "crc32".to_owned(),
                        AttributeValue::N(segment.crc32.to_string()),
                    ),
                    ("md5".to_owned(), AttributeValue::S(segment.md5.clone())),
                    (
                        "bytesCrc32".to_owned(),
                        AttributeValue::N(segment.bytes_crc32.to_string()),
                    ),
                    (
                        "format".to_owned(),
                        AttributeValue::S(segment.format.clone()),
                    ),
                ])
                .into_iter()
                .chain(segment.blocks.iter().flat_map(|blocks| {
                    [
                        (
                            "blockSize".to_owned(),
                            AttributeValue::N(blocks.size.to_string()),
                        ),
                        (
                            "blockCrc32".to_owned(),
                            AttributeValue::S(blocks.crc32.clone()),
                        ),
                    ]
                }))
                .collect(),
            )
        }),
    );
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_field_survives_the_table() {
        let rule = Rule {
            cpu_arch: Some("armv8".to_owned()),
            device_attr: [("gamer".to_owned(), true), ("camera".to_owned(), false)].into(),
            size: Some(65_536),
            sha256: Some("ab".repeat(32)),
            enabled: false,
            mandatory: true,
            created_at: Some("2026-01-02T03:04:05Z".to_owned()),
            segment: Some(SegmentRef {
                url: "s3://ota-binaries/scoreboard_1.0.0.0a1b2c3d.deflate".to_owned(),
                size: 65_612,
                crc32: u32::MAX,
                md5: "fedcba9876543210fedcba9876543210".to_owned(),
                bytes_crc32: 0x1234_5678,
                format: "fleetpack-archive/1".to_owned(),
                blocks: Some(SegmentBlocks::new(262_144, &[u32::MAX])),
            }),
            deflate_level: Some(0),
            sequence: Some(7),
            required: true,
            rollout: Some(Rollout {
                version: "1.1.0".to_owned(),
                percent: 10,
            }),
            rolled_back: true,
            revision: Some(3),
            envelope: Some("{\"payloadType\":\"x\"}".to_owned()),
            signatures_required: true,
            ..Rule::new(
                "scoreboard",
                "prod",
                "1.0.0",
                "s3://ota-binaries/scoreboard_1.0.0",
                "0123456789abcdef0123456789abcdef",
            )
        };
        let item = item_from_rule(&rule, ItemKind::Current);
        assert_eq!(
            item["ident"],
            AttributeValue::S("scoreboard_1.0.0".to_owned())
        );
        assert_eq!(rule_from_item(&item), Ok((rule.clone(), ItemKind::Current)));
        let release = item_from_rule(&rule, ItemKind::Release);
        assert_eq!(release["env"], AttributeValue::S("prod#1.0.0".to_owned()));
        assert_eq!(rule_from_item(&release), Ok((rule, ItemKind::Release)));
    }

    #[test]
    fn an_item_written_by_the_sample_reads_as_a_rule() {
        let item = HashMap::from([
            (
                "app".to_owned(),
                AttributeValue::S("videoStreamer".to_owned()),
            ),
            ("env".to_owned(), AttributeValue::S("prod".to_owned())),
            ("version".to_owned(), AttributeValue::S("0.0.1".to_owned())),
            (
                "ident".to_owned(),
                AttributeValue::S("videoStreamer_0.0.1".to_owned()),
            ),
            (
                "url".to_owned(),
                AttributeValue::S("s3://b-1/videoStreamer_0.0.1".to_owned()),
            ),
            (
                "md5".to_owned(),
                AttributeValue::S("0123456789abcdef0123456789abcdef".to_owned()),
            ),
            (
                "deviceAttr".to_owned(),
                AttributeValue::M(HashMap::from([
                    ("camera".to_owned(), AttributeValue::Bool(true)),
                    ("gamer".to_owned(), AttributeValue::Bool(true)),
                ])),
            ),
        ]);
        let (rule, kind) = rule_from_item(&item).expect("a rule");
        assert_eq!(kind, ItemKind::Current);
        assert_eq!(rule.app, "videoStreamer");
        assert_eq!(rule.channel, "prod");
        assert_eq!(rule.device_attr.len(), 2);
        assert!(rule.enabled && rule.size.is_none() && rule.segment.is_none());
        let mut broken = item.clone();
        broken.insert(
            "deviceAttr".to_owned(),
            AttributeValue::S("gamer".to_owned()),
        );
        let refused = rule_from_item(&broken).expect_err("a map is required");
        assert_eq!(
            refused,
            ItemError::InRule {
                app: "videoStreamer".to_owned(),
                channel: "prod".to_owned(),
                reason: Box::new(wrong_type("deviceAttr", "a map")),
            }
        );
        assert_eq!(
            std::error::Error::source(&refused).map(ToString::to_string),
            Some("attribute `deviceAttr` is not a map".to_owned())
        );
        broken.remove("env");
        assert_eq!(
            rule_from_item(&broken),
            Err(ItemError::Missing("env".to_owned()))
        );
    }
}
