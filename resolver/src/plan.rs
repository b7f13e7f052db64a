//! The answer to a device: which selected binaries are sent, the
//! `package_details.json` document, the ETag and whether the answer is 304.
//!
//! Invariant: a plan is a function of the selection, the `If-None-Match` and the payload
//! type alone, so every origin instance derives the same bytes and ETag for a request.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::conditional::IfNoneMatch;
use crate::format::{ARCHIVE_FORMAT, ETag, METADATA_FORMAT};
use crate::location::ObjectLocation;
use crate::query::PayloadType;
use crate::rule::SegmentRef;
use crate::serve::Served;

/// Whether an entry's binary goes into the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryStatus {
    /// The device does not have it: the binary is sent (`"status_code": 200`).
    Send,
    /// The device listed its digest in `If-None-Match` (`"status_code": 304`).
    NotModified,
}

impl EntryStatus {
    pub fn code(self) -> u16 {
        match self {
            EntryStatus::Send => 200,
            EntryStatus::NotModified => 304,
        }
    }
}

/// One app of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    pub app: String,
    pub channel: String,
    pub version: String,
    pub url: String,
    pub object: ObjectLocation,
    pub md5: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// The release is mandatory, or one the device skips on its way to it is.
    pub mandatory: bool,
    /// Devices below this version get it before anything newer.
    pub required: bool,
    /// The version the device runs, when its `If-None-Match` says so and it is another
    /// than `version`.
    pub installed_version: Option<String>,
    /// Lower than the version the device runs: the operator rolled back.
    pub downgrade: bool,
    /// The release's signed statement, a DSSE envelope's JSON text.
    pub envelope: Option<String>,
    pub status: EntryStatus,
    /// The binary's tar entry compressed at publish time, if it was.
    pub segment: Option<SegmentRef>,
    /// Deflate level of the binary's tar entry.
    pub deflate_level: u32,
}

impl PlanEntry {
    /// The binary's name in the tar: `<app>_<version>`.
    pub fn file_name(&self) -> String {
        format!("{}_{}", self.app, self.version)
    }
}

/// What a response carries: the selected apps in a fixed order, which of them are sent,
/// the `package_details.json` document, the response's ETag, and whether the answer is
/// 304 Not Modified instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagePlan {
    payload: PayloadType,
    entries: Vec<PlanEntry>,
    details: Vec<u8>,
    etag: ETag,
    not_modified: bool,
    /// The device's digests came in `If-None-Match`, so the body depends on the header.
    varies_with_if_none_match: bool,
}

impl PackagePlan {
    /// Marks every served binary whose MD5 or SHA-256 the device listed as not
    /// modified, renders the details document, derives the ETag and decides whether the
    /// answer is 304.
    pub fn new(served: &[Served<'_>], if_none_match: &IfNoneMatch, payload: PayloadType) -> Self {
        let entries: Vec<PlanEntry> = served
            .iter()
            .map(|served| {
                let rule = served.rule;
                let known = if_none_match.has_digest(&rule.md5)
                    || rule
                        .sha256
                        .as_deref()
                        .is_some_and(|sha| if_none_match.has_digest(sha));
                PlanEntry {
                    app: rule.app.clone(),
                    channel: rule.channel.clone(),
                    version: rule.version.clone(),
                    url: rule.url.clone(),
                    object: served.object.clone(),
                    md5: rule.md5.clone(),
                    sha256: rule.sha256.clone(),
                    size: rule.size,
                    mandatory: served.mandatory,
                    required: rule.required,
                    // Said only when it is news: another version than the one offered.
                    installed_version: served
                        .installed
                        .filter(|installed| *installed != rule.version)
                        .map(str::to_owned),
                    downgrade: served.downgrade,
                    envelope: rule.envelope.clone(),
                    segment: rule.segment.clone(),
                    deflate_level: rule.entry_deflate_level(),
                    status: if known {
                        EntryStatus::NotModified
                    } else {
                        EntryStatus::Send
                    },
                }
            })
            .collect();
        let details = render_details(&entries, payload);
        let format = match payload {
            PayloadType::FullPayload => ARCHIVE_FORMAT,
            PayloadType::MetadataOnly => METADATA_FORMAT,
        };
        let mut hasher = Sha256::new();
        hasher.update(format.as_bytes());
        hasher.update(b"\n");
        hasher.update(&details);
        // The level decides the bytes but is not in the details document.
        if payload == PayloadType::FullPayload {
            for entry in entries
                .iter()
                .filter(|entry| entry.status == EntryStatus::Send)
            {
                hasher.update(entry.deflate_level.to_le_bytes());
            }
        }
        let etag = ETag::from_sha256(&hasher.finalize().into());
        let not_modified = entries
            .iter()
            .all(|entry| entry.status != EntryStatus::Send)
            || if_none_match.matches(&etag);
        PackagePlan {
            payload,
            entries,
            details,
            etag,
            not_modified,
            varies_with_if_none_match: true,
        }
    }

    /// This plan for a device that listed what it has in the query (`installed=`):
    /// `If-None-Match` is then only a validator, which makes the answer 304 when it names
    /// this response's ETag, and the response does not vary with it.
    pub fn with_validators(self, validators: &IfNoneMatch) -> Self {
        PackagePlan {
            not_modified: self.not_modified || validators.matches(&self.etag),
            varies_with_if_none_match: false,
            ..self
        }
    }

    /// Whether the body depends on `If-None-Match` (the device's digests came in it), so
    /// a cache keyed on the URL must keep one response per header value.
    pub fn varies_with_if_none_match(&self) -> bool {
        self.varies_with_if_none_match
    }

    pub fn payload(&self) -> PayloadType {
        self.payload
    }

    /// Every selected app, the OS app first, then by app name.
    pub fn entries(&self) -> &[PlanEntry] {
        &self.entries
    }

    /// The entries whose binaries go into the package, in package order.
    pub fn to_send(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries
            .iter()
            .filter(|entry| entry.status == EntryStatus::Send)
    }

    /// `package_details.json`: the metadata-only body and the first file of a package.
    pub fn details_json(&self) -> &[u8] {
        &self.details
    }

    pub fn etag(&self) -> &ETag {
        &self.etag
    }

    /// Whether the answer is 304 Not Modified: the device has every selected binary, or
    /// its `If-None-Match` names this very response (or is `*`).
    pub fn is_not_modified(&self) -> bool {
        self.not_modified
    }
}

/// The AWS sample's shape, `{"<app>": {"latestVersion", "url", "status_code"}}`, with
/// fields added after those three and never renamed. Metadata-only answers add each
/// binary's `downloadUrl`; packages hold the binaries, so theirs stay as they were.
fn render_details(entries: &[PlanEntry], payload: PayloadType) -> Vec<u8> {
    struct Details<'a>(&'a [PlanEntry], PayloadType);

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Detail<'a> {
        latest_version: &'a str,
        url: &'a str,
        #[serde(rename = "status_code")]
        status_code: u16,
        channel: &'a str,
        md5: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        mandatory: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        required: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        installed_version: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        downgrade: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        envelope: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        download_url: Option<DownloadUrl<'a>>,
    }

    /// `/binaries/<sha256>`, written straight into the document.
    struct DownloadUrl<'a>(&'a str);

    impl Serialize for DownloadUrl<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&format_args!("{BINARIES_PREFIX}{}", self.0))
        }
    }

    impl Serialize for Details<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for entry in self.0 {
                let detail = Detail {
                    latest_version: &entry.version,
                    url: &entry.url,
                    status_code: entry.status.code(),
                    channel: &entry.channel,
                    md5: &entry.md5,
                    sha256: entry.sha256.as_deref(),
                    size: entry.size,
                    mandatory: entry.mandatory,
                    required: entry.required,
                    installed_version: entry.installed_version.as_deref(),
                    downgrade: entry.downgrade,
                    // Copied as it was signed and stored (checked to be JSON by
                    // `Rule::check`).
                    envelope: entry
                        .envelope
                        .as_deref()
                        .and_then(|text| serde_json::from_str(text).ok()),
                    download_url: entry
                        .sha256
                        .as_deref()
                        .filter(|_| self.1 == PayloadType::MetadataOnly)
                        .map(DownloadUrl),
                };
                map.serialize_entry(&entry.app, &detail)?;
            }
            map.end()
        }
    }

    let mut json = serde_json::to_vec_pretty(&Details(entries, payload))
        .expect("serializing strings and numbers into memory cannot fail");
    json.push(b'\n');
    json
}

/// The path prefix of binaries served on their own, by SHA-256.
pub const BINARIES_PREFIX: &str = "/binaries/";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{build, demo_fleet, demo_set, rule};
    use crate::format::DEFLATE_LEVEL;
    use crate::request::DeviceRequest;
    use crate::rule::Rule;
    use crate::rule_set::RuleSet;

    const SAMPLE_QUERY: &str = "cpuArch=armv8&attrGamer=prod&attrCellular=prod";

    fn plan(set: &RuleSet, raw: &str, if_none_match: &[&str]) -> PackagePlan {
        let request = DeviceRequest::parse(raw, if_none_match.iter().map(|line| line.as_bytes()))
            .expect("a valid request");
        set.answer(&request).expect("a package")
    }

    fn statuses(plan: &PackagePlan) -> Vec<(&str, u16)> {
        plan.entries()
            .iter()
            .map(|entry| (entry.app.as_str(), entry.status.code()))
            .collect()
    }

    fn md5(set: &RuleSet, app: &str) -> String {
        set.get(app, "prod").expect("a prod rule").md5.clone()
    }

    #[test]
    fn without_if_none_match_every_binary_is_sent() {
        let set = demo_set();
        let plan = plan(&set, SAMPLE_QUERY, &[]);
        assert_eq!(
            statuses(&plan),
            [
                ("os_armv8", 200),
                ("modemFW", 200),
                ("scoreboard", 200),
                ("videoStreamer", 200)
            ]
        );
        assert_eq!(plan.to_send().count(), 4);
        assert_eq!(plan.payload(), PayloadType::FullPayload);
        assert!(!plan.is_not_modified());
    }

    #[test]
    fn listed_md5_marks_its_entry_not_modified() {
        let set = demo_set();
        let os = md5(&set, "os_armv8");
        for line in [
            os.clone(),
            format!("\"{os}\""),
            format!("W/\"{os}\""),
            os.to_ascii_uppercase(),
        ] {
            let plan = plan(&set, SAMPLE_QUERY, &[&line]);
            assert_eq!(
                statuses(&plan),
                [
                    ("os_armv8", 304),
                    ("modemFW", 200),
                    ("scoreboard", 200),
                    ("videoStreamer", 200)
                ],
                "{line}"
            );
            let sent: Vec<_> = plan.to_send().map(PlanEntry::file_name).collect();
            assert_eq!(
                sent,
                ["modemFW_1.0", "scoreboard_1.0.0", "videoStreamer_0.0.1"]
            );
            assert!(!plan.is_not_modified());
        }
    }

    #[test]
    fn listed_sha256_marks_its_entry_not_modified() {
        let sha256 = "c0ffee".repeat(10) + "abcd";
        let mut fleet = demo_fleet();
        fleet.push(Rule {
            sha256: Some(sha256.clone()),
            ..rule("firmware", "prod", "3.0.0", &["gamer"])
        });
        let set = build(fleet);
        let plan = plan(
            &set,
            "cpuArch=armv8&attrGamer=prod",
            &[&sha256.to_ascii_uppercase()],
        );
        assert_eq!(
            statuses(&plan),
            [
                ("os_armv8", 200),
                ("firmware", 304),
                ("scoreboard", 200),
                ("videoStreamer", 200)
            ]
        );
    }

    #[test]
    fn unrelated_tags_mark_nothing() {
        let set = demo_set();
        let plan = plan(
            &set,
            SAMPLE_QUERY,
            &["0123456789abcdef0123456789abcdef, W/\"x\""],
        );
        assert_eq!(plan.to_send().count(), 4);
    }

    #[test]
    fn every_binary_known_is_not_modified() {
        let set = demo_set();
        let tags: Vec<String> = ["os_armv8", "modemFW", "scoreboard", "videoStreamer"]
            .iter()
            .map(|app| md5(&set, app))
            .collect();
        let all = tags.join(", ");
        let known = plan(&set, SAMPLE_QUERY, &[&all]);
        assert_eq!(
            statuses(&known),
            [
                ("os_armv8", 304),
                ("modemFW", 304),
                ("scoreboard", 304),
                ("videoStreamer", 304)
            ]
        );
        assert_eq!(known.to_send().count(), 0);
        assert!(known.is_not_modified());

        let three = tags[..3].join(",");
        let partly = plan(&set, SAMPLE_QUERY, &[&three]);
        assert!(!partly.is_not_modified());
        let two_lines = plan(&set, SAMPLE_QUERY, &[&three, &tags[3]]);
        assert!(two_lines.is_not_modified());
    }

    #[test]
    fn own_entity_tag_in_any_form_is_not_modified() {
        let set = demo_set();
        let unconditional = plan(&set, SAMPLE_QUERY, &[]);
        let etag = unconditional.etag();
        for line in [
            etag.to_string(),
            format!("W/{etag}"),
            etag.opaque().to_owned(),
            etag.opaque().to_ascii_uppercase(),
            format!("abc, {etag}"),
        ] {
            // The ETag is no binary's digest: every entry is still sent, so the plan is
            // the very response the tag names.
            let conditional = plan(&set, SAMPLE_QUERY, &[&line]);
            assert_eq!(conditional.to_send().count(), 4, "{line}");
            assert_eq!(conditional.etag(), etag, "{line}");
            assert!(conditional.is_not_modified(), "{line}");
        }
    }

    #[test]
    fn star_is_not_modified() {
        let plan = plan(&demo_set(), SAMPLE_QUERY, &["*"]);
        assert_eq!(plan.to_send().count(), 4);
        assert!(plan.is_not_modified());
    }

    #[test]
    fn other_entity_tag_is_modified() {
        let set = demo_set();
        let beta = plan(&set, "cpuArch=armv8&os=beta", &[]);
        let prod = plan(&set, "cpuArch=armv8", &[&beta.etag().to_string()]);
        assert!(!prod.is_not_modified());
        let quoted_star = plan(&set, "cpuArch=armv8", &["\"*\""]);
        assert!(!quoted_star.is_not_modified());
    }

    #[test]
    fn entries_carry_the_selected_rules() {
        let set = build(vec![Rule {
            sha256: Some("ab".repeat(32)),
            size: Some(1024),
            mandatory: true,
            url: "s3://bucket/os/os_armv8_1.1.0".to_owned(),
            ..rule("os_armv8", "prod", "1.1.0", &[])
        }]);
        let plan = plan(&set, "cpuArch=armv8", &[]);
        let rule = set.get("os_armv8", "prod").expect("the rule");
        assert_eq!(
            plan.entries(),
            [PlanEntry {
                app: "os_armv8".to_owned(),
                channel: "prod".to_owned(),
                version: "1.1.0".to_owned(),
                url: "s3://bucket/os/os_armv8_1.1.0".to_owned(),
                object: ObjectLocation {
                    bucket: Some("bucket".to_owned()),
                    key: "os/os_armv8_1.1.0".to_owned()
                },
                md5: rule.md5.clone(),
                sha256: Some("ab".repeat(32)),
                size: Some(1024),
                mandatory: true,
                required: false,
                installed_version: None,
                downgrade: false,
                envelope: None,
                status: EntryStatus::Send,
                segment: None,
                deflate_level: DEFLATE_LEVEL,
            }]
        );
        assert_eq!(plan.entries()[0].file_name(), "os_armv8_1.1.0");
    }

    #[test]
    fn details_json_has_the_sample_shape_plus_added_fields() {
        let set = build(vec![
            Rule {
                md5: "0123456789abcdef0123456789abcdef".to_owned(),
                sha256: Some("ab".repeat(32)),
                size: Some(1024),
                mandatory: true,
                ..rule("os_armv8", "prod", "1.1.0", &[])
            },
            Rule {
                md5: "fedcba9876543210fedcba9876543210".to_owned(),
                ..rule("scoreboard", "prod", "1.0.0", &["gamer"])
            },
        ]);
        let plan = plan(
            &set,
            "cpuArch=armv8&attrGamer=prod",
            &["fedcba9876543210fedcba9876543210"],
        );
        let expected = format!(
            r#"{{
  "os_armv8": {{
    "latestVersion": "1.1.0",
    "url": "local://os_armv8_1.1.0",
    "status_code": 200,
    "channel": "prod",
    "md5": "0123456789abcdef0123456789abcdef",
    "sha256": "{}",
    "size": 1024,
    "mandatory": true
  }},
  "scoreboard": {{
    "latestVersion": "1.0.0",
    "url": "local://scoreboard_1.0.0",
    "status_code": 304,
    "channel": "prod",
    "md5": "fedcba9876543210fedcba9876543210"
  }}
}}
"#,
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8_lossy(plan.details_json()), expected);
    }

    #[test]
    fn details_json_lists_apps_in_plan_order() {
        let set = demo_set();
        let os = md5(&set, "os_armv8");
        let plan = plan(&set, SAMPLE_QUERY, &[&os]);
        let json: serde_json::Value = serde_json::from_slice(plan.details_json()).expect("JSON");
        assert_eq!(
            json["os_armv8"],
            serde_json::json!({
                "latestVersion": "1.1.0", "url": "local://os_armv8_1.1.0", "status_code": 304,
                "channel": "prod", "md5": os,
            })
        );
        assert_eq!(json["modemFW"]["latestVersion"], "1.0");
        assert_eq!(json["modemFW"]["status_code"], 200);
        assert_eq!(json["scoreboard"]["latestVersion"], "1.0.0");
        assert_eq!(json["videoStreamer"]["latestVersion"], "0.0.1");
        assert_eq!(json.as_object().map(|apps| apps.len()), Some(4));

        let text = String::from_utf8_lossy(plan.details_json());
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        let apps = [
            "\"os_armv8\"",
            "\"modemFW\"",
            "\"scoreboard\"",
            "\"videoStreamer\"",
        ]
        .map(at);
        assert!(apps.is_sorted(), "{apps:?}");
        let fields = [
            "\"latestVersion\"",
            "\"url\"",
            "\"status_code\"",
            "\"channel\"",
            "\"md5\"",
        ]
        .map(at);
        assert!(fields.is_sorted(), "{fields:?}");
        assert!(fields[4] < apps[1]);
    }

    #[test]
    fn etag_is_32_lowercase_hex_digits_of_the_format_details_and_levels() {
        let plan = plan(&demo_set(), SAMPLE_QUERY, &[]);
        let opaque = plan.etag().opaque();
        assert_eq!(opaque.len(), 32);
        assert!(
            opaque
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{opaque}"
        );
        assert_eq!(plan.etag().to_string(), format!("\"{opaque}\""));
        let mut hasher = Sha256::new();
        hasher.update(format!("{ARCHIVE_FORMAT}\n").as_bytes());
        hasher.update(plan.details_json());
        for entry in plan.to_send() {
            hasher.update(entry.deflate_level.to_le_bytes());
        }
        assert_eq!(opaque, hex::encode(&hasher.finalize()[..16]));
    }

    #[test]
    fn etag_changes_with_a_binary_deflate_level() {
        let mut fleet = demo_fleet();
        let six = plan(&RuleSet::build(fleet.clone()).0, SAMPLE_QUERY, &[]);
        for rule in &mut fleet {
            rule.deflate_level = Some(0);
        }
        let stored = plan(&RuleSet::build(fleet).0, SAMPLE_QUERY, &[]);
        assert_eq!(stored.details_json(), six.details_json());
        assert_ne!(stored.etag(), six.etag());
    }

    #[test]
    fn etag_is_the_same_for_equal_inputs() {
        let mut reversed = demo_fleet();
        reversed.reverse();
        let one = plan(&demo_set(), SAMPLE_QUERY, &[]);
        let two = plan(
            &build(reversed),
            "attrCellular=PROD&CPUARCH=armv8&attrgamer=prod",
            &[],
        );
        assert_eq!(one.etag(), two.etag());
        assert_eq!(one, two);
    }

    #[test]
    fn etag_differs_between_full_payload_and_metadata_only() {
        let set = demo_set();
        let full = plan(&set, SAMPLE_QUERY, &[]);
        let metadata = plan(
            &set,
            &format!("{SAMPLE_QUERY}&payloadType=metadataOnly"),
            &[],
        );
        assert_eq!(metadata.payload(), PayloadType::MetadataOnly);
        assert_eq!(full.details_json(), metadata.details_json());
        assert_ne!(full.etag(), metadata.etag());
    }

    #[test]
    fn etag_differs_when_a_status_changes() {
        let set = demo_set();
        let sent = plan(&set, SAMPLE_QUERY, &[]);
        let known = plan(&set, SAMPLE_QUERY, &[&md5(&set, "scoreboard")]);
        assert_ne!(sent.etag(), known.etag());
    }

    #[test]
    fn etag_differs_when_a_version_or_digest_changes() {
        let base = plan(&demo_set(), SAMPLE_QUERY, &[]);
        let changed = |change: fn(&mut Rule)| {
            let mut fleet = demo_fleet();
            for rule in fleet.iter_mut().filter(|rule| rule.app == "modemFW") {
                change(rule);
            }
            plan(&build(fleet), SAMPLE_QUERY, &[]).etag().clone()
        };
        let bumped = changed(|rule| rule.version = "1.0.1".to_owned());
        let rebuilt = changed(|rule| rule.md5 = "00000000000000000000000000000000".to_owned());
        let hashed = changed(|rule| rule.sha256 = Some("0".repeat(64)));
        let etags = [base.etag(), &bumped, &rebuilt, &hashed];
        for (i, a) in etags.iter().enumerate() {
            for b in &etags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn entry_status_codes_are_200_and_304() {
        assert_eq!(EntryStatus::Send.code(), 200);
        assert_eq!(EntryStatus::NotModified.code(), 304);
    }
}
