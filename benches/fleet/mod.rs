//! The fleets and requests of the resolver benchmarks, shared by `resolve` (wall time) and
//! `instructions` (instruction counts) so that both measure the same work.

use fleetpack_resolver::{
    ARCHIVE_FORMAT, DeviceQuery, DeviceRequest, IfNoneMatch, MAX_IF_NONE_MATCH_BYTES, PayloadType,
    Rule, RuleSet, SegmentRef, StoredRules, archive_format_id,
};
use sha2::{Digest, Sha256};

/// Rule set sizes: a demo, a large fleet, and far more than any fleet has.
pub const FLEET_SIZES: [usize; 3] = [10, 1_000, 100_000];

/// A device on its OS image's prod channel, in attribute group 0 (four apps, on prod),
/// with one of those apps pinned to beta: five apps, whatever the size of the fleet.
pub const TYPICAL_QUERY: &str =
    "cpuArch=armv8&attrGroup0=prod&camera-00001=beta&payloadType=metadataOnly";

/// Apps selected by [`TYPICAL_QUERY`], the OS image included.
const TYPICAL_APPS: usize = 5;

const BUCKET: &str = "fleetpack-binaries";
const ARCHES: [&str; 4] = ["armv8", "armv7", "x86_64", "riscv64"];
const KINDS: [&str; 8] = [
    "telemetry",
    "camera",
    "modem",
    "gps",
    "scoreboard",
    "video",
    "sensors",
    "agent",
];
const CHANNELS: [&str; 5] = ["prod", "beta", "canary", "dev", "nightly"];

/// The first `size` rules of a fleet that only grows: the OS image `os_armv8` and the apps
/// of group 0 on prod and beta (the 10 rules [`TYPICAL_QUERY`] can select), the OS images
/// of three other architectures, then apps with one to five channels each, every fourth
/// built for one architecture, four to an attribute group, mostly with a second attribute
/// (`true` or `false`), sizes, SHA-256s and stored segments as `publish` writes them.
pub fn fleet(size: usize) -> Vec<Rule> {
    let format_id = archive_format_id();
    let mut rules: Vec<Rule> = os_rules(ARCHES[0], 2, &format_id)
        .chain((0..4).flat_map(|app| app_rules(app, 2, &format_id)))
        .chain(
            ARCHES[1..]
                .iter()
                .flat_map(|arch| os_rules(arch, 3, &format_id)),
        )
        .collect();
    let mut app = 4;
    while rules.len() < size {
        let channels = 1 + app % CHANNELS.len();
        rules.extend(app_rules(app, channels, &format_id));
        app += 1;
    }
    rules.truncate(size);
    rules
}

/// [`fleet`], indexed; every rule is valid.
pub fn rule_set(size: usize) -> RuleSet {
    rule_set_with_history(size, 1)
}

/// [`fleet`] with `releases` releases kept per app and channel: the current one and
/// `releases - 1` published before it (one in ten mandatory), indexed.
pub fn rule_set_with_history(size: usize, releases: usize) -> RuleSet {
    let current = fleet(size);
    let history = current
        .iter()
        .flat_map(|rule| {
            (1..releases).map(move |earlier| {
                let version = format!("0.{earlier}.0");
                let digest = Sha256::digest(format!("{}/{}/{version}", rule.app, rule.channel));
                Rule {
                    version,
                    md5: hex::encode(&digest[..16]),
                    sha256: Some(hex::encode(Sha256::digest(digest))),
                    sequence: Some(earlier as u64),
                    mandatory: earlier % 10 == 0,
                    ..rule.clone()
                }
            })
        })
        .collect();
    let stored = StoredRules { current, history };
    let (rules, rejected) = RuleSet::build_holding(stored, |_| true);
    assert!(rejected.is_empty(), "rejected: {rejected:?}");
    assert_eq!(rules.len(), size);
    let query = DeviceQuery::parse(TYPICAL_QUERY).expect("a valid query");
    let selected = rules.resolve(&query).expect("a package").items.len();
    assert_eq!(selected, TYPICAL_APPS, "{size} rules");
    rules
}

fn os_rules<'a>(
    arch: &'a str,
    channels: usize,
    format_id: &'a str,
) -> impl Iterator<Item = Rule> + 'a {
    CHANNELS[..channels].iter().map(move |&channel| {
        let version = if channel == "prod" {
            "5.4.2"
        } else {
            "5.5.0-rc.3"
        };
        Rule {
            cpu_arch: Some(arch.to_owned()),
            mandatory: channel == "prod",
            ..published(&format!("os_{arch}"), channel, version, 0, format_id)
        }
    })
}

fn app_rules(app: usize, channels: usize, format_id: &str) -> Vec<Rule> {
    let name = format!("{}-{app:05}", KINDS[app % KINDS.len()]);
    CHANNELS[..channels]
        .iter()
        .map(|&channel| {
            let minor = app % 10;
            let version = match channel {
                "prod" => format!("1.{minor}.{}", app % 7),
                "beta" => format!("1.{}.0-beta.{}", minor + 1, 1 + app % 4),
                "canary" => format!("1.{}.0-rc.1", minor + 1),
                "dev" => format!("2.0.0-dev.{}", app % 100),
                _ => format!("2.0.0-nightly.2025{:02}{:02}", 1 + app % 12, 1 + app % 28),
            };
            let mut rule = published(&name, channel, &version, app, format_id);
            if app % 4 == 3 {
                rule.cpu_arch = Some(ARCHES[app / 4 % ARCHES.len()].to_owned());
            }
            rule.device_attr.insert(format!("group{}", app / 4), true);
            if !app.is_multiple_of(5) {
                let kind = KINDS[app % KINDS.len()].to_owned();
                rule.device_attr.insert(kind, !app.is_multiple_of(3));
            }
            rule.mandatory = app.is_multiple_of(10);
            rule
        })
        .collect()
}

/// A rule as `publish` writes it: digests, size, level and the stored segment.
fn published(app: &str, channel: &str, version: &str, seed: usize, format_id: &str) -> Rule {
    let file = format!("{app}_{version}");
    let digest = Sha256::digest(file.as_bytes());
    let size = (seed as u64 % 64 + 1) * 1_048_576 + seed as u64;
    let level = if app.starts_with("video") { 0 } else { 6 };
    let crc = u32::from_le_bytes([digest[16], digest[17], digest[18], digest[19]]);
    Rule {
        size: Some(size),
        sha256: Some(hex::encode(Sha256::digest(digest))),
        created_at: Some("2025-06-01T12:00:00Z".to_owned()),
        segment: Some(SegmentRef {
            url: format!("s3://{BUCKET}/{file}.{format_id}.deflate"),
            size: size / 10 * 9,
            crc32: crc,
            md5: hex::encode(&digest[16..]),
            bytes_crc32: crc.rotate_left(7),
            format: ARCHIVE_FORMAT.to_owned(),
            blocks: None,
        }),
        deflate_level: Some(level),
        ..Rule::new(
            app,
            channel,
            version,
            format!("s3://{BUCKET}/{file}"),
            hex::encode(&digest[..16]),
        )
    }
}

/// An `If-None-Match` of `count` tags in the forms devices send (quoted, bare, weak, some in
/// uppercase), led by the digests in `known`.
///
/// 256 MD5 digests do not fit in `MAX_IF_NONE_MATCH_BYTES` (8192 bytes hold at most 248 bare
/// ones), so the tags after `known` are cut to the longest hex that lets `count` of them
/// fit: 256 tags make the largest header the origin accepts, in tags and nearly in bytes.
pub fn if_none_match(count: usize, known: &[&str]) -> String {
    let header = |len: usize| {
        (0..count)
            .map(|i| {
                let tag = match known.get(i) {
                    Some(digest) => (*digest).to_owned(),
                    None => {
                        let digest = hex::encode(Sha256::digest(format!("cached/{i}")));
                        let tag = &digest[..len];
                        if i % 4 == 0 {
                            tag.to_ascii_uppercase()
                        } else {
                            tag.to_owned()
                        }
                    }
                };
                match i % 3 {
                    0 => format!("\"{tag}\""),
                    1 => tag,
                    _ => format!("W/\"{tag}\""),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let header = (1..=32)
        .rev()
        .map(header)
        .find(|header| header.len() <= MAX_IF_NONE_MATCH_BYTES)
        .expect("at most 256 tags fit in 8 KiB");
    let parsed = IfNoneMatch::parse([header.as_bytes()]).expect("a valid If-None-Match");
    assert_eq!(parsed.is_empty(), count == 0);
    header
}

/// An `If-None-Match` of `tags` tags for [`TYPICAL_QUERY`], led by the MD5s of two
/// binaries it selects, so that the plan marks those not modified; empty for 0 tags.
pub fn typical_if_none_match(rules: &RuleSet, tags: usize) -> String {
    let known: Vec<&str> = [("os_armv8", "prod"), ("telemetry-00000", "prod")]
        .iter()
        .map(|(app, channel)| rules.get(app, channel).expect("a rule").md5.as_str())
        .collect();
    if_none_match(tags, &known)
}

/// The header lines a request with `header` carries: none when it is empty.
pub fn header_lines(header: &str) -> Vec<&[u8]> {
    if header.is_empty() {
        vec![]
    } else {
        vec![header.as_bytes()]
    }
}

/// The resolver's part of a metadata-only request, as the origin runs it: parse the query
/// and `If-None-Match`, resolve, plan (render `package_details.json` and the ETag), then
/// either 304 (`None`) or the body, copied as the response takes it.
pub fn metadata_request(rules: &RuleSet, query: &str, if_none_match: &[&[u8]]) -> Option<Vec<u8>> {
    let request =
        DeviceRequest::parse(query, if_none_match.iter().copied()).expect("a valid request");
    let plan = rules.answer(&request).expect("a package");
    debug_assert_eq!(plan.payload(), PayloadType::MetadataOnly);
    if plan.is_not_modified() {
        return None;
    }
    Some(plan.details_json().to_vec())
}
