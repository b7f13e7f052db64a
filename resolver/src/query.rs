//! A device's query string, validated and put in one canonical form.
//!
//! Invariant: every name and value in a [`DeviceQuery`] passed the identifier check and
//! is in ASCII lowercase (but the device key, whose letter case is part of it), so the
//! same request in any parameter order or letter case gives an equal query, and only
//! such text reaches a lookup or a log line.

use std::borrow::Cow;

use crate::conditional::{MAX_ENTITY_TAGS, MAX_IF_NONE_MATCH_BYTES};
use crate::ident::{excerpt, is_ident, is_ident_bytes};
use crate::rollout::ROLLOUT_ID_LEN;

/// Longest query string accepted, in bytes: its parameters and one `&` between each
/// two. Empty `&&` segments do not count; the CDN's function, which sees the parameters
/// only, counts the same way. `installed=` does not count either: it has the limits of
/// the `If-None-Match` it stands for.
pub const MAX_QUERY_BYTES: usize = 2048;
/// The parameter that carries a device's `If-None-Match` list in the query.
pub const INSTALLED: &str = "installed";
/// Most parameters accepted in one query.
pub const MAX_PARAMETERS: usize = 32;

const ATTRIBUTE_PREFIX: &str = "attr";
const DEFAULT_CHANNEL: &str = "prod";
/// Rollout ids a `cohort` value holds at most: 7 ids of 8 digits and their separators
/// fill the 64 characters of a value.
pub(crate) const MAX_COHORTS: usize = 7;

/// What the device wants in the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadType {
    /// A gzip tar of the binaries and `package_details.json` (the default).
    FullPayload,
    /// Only the JSON that describes the package.
    MetadataOnly,
}

impl PayloadType {
    /// The value as a device spells it in `payloadType=`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadType::FullPayload => "fullPayload",
            PayloadType::MetadataOnly => "metadataOnly",
        }
    }
}

/// One `attr<Name>=<channel>` or `<app>=<channel>` parameter, both parts in ASCII lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    pub name: String,
    pub channel: String,
}

/// A device's query, validated. Every name and value is in ASCII lowercase, and the
/// attribute and pin lists are sorted, so the same request in another parameter order
/// or letter case gives an equal value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceQuery {
    cpu_arch: String,
    os_channel: String,
    payload: PayloadType,
    attributes: Vec<Selector>,
    pins: Vec<Selector>,
    /// `deviceKey=`: a random value the device made once, to take part in staged
    /// rollouts; kept in its own letter case.
    device_key: Option<String>,
    /// `cohort=`: the rollouts the device is in, as the CDN computed them from its key;
    /// sorted.
    cohorts: Vec<String>,
    /// `installed=`: the tags the device would list in `If-None-Match` (digests of the
    /// binaries it has, ETags of responses it keeps), in lowercase, sorted, without
    /// duplicates, joined by `,`; empty when it lists none.
    installed: Option<String>,
}

/// Why a query string was refused. Every message names the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `len` counts the parameters and the `&` between them, as [`MAX_QUERY_BYTES`] does.
    #[error("the query string is {len} bytes long; send at most {MAX_QUERY_BYTES} bytes")]
    TooLong { len: usize },
    #[error("the query has more than {MAX_PARAMETERS} parameters; send at most {MAX_PARAMETERS}")]
    TooManyParameters,
    #[error(
        "parameter name `{name}` is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    BadName { name: String },
    #[error(
        "parameter `{name}` has the value `{value}`, which is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    BadValue { name: String, value: String },
    #[error("parameter `{name}` is given more than once (names ignore letter case); send it once")]
    Repeated { name: String },
    #[error("`{text}` is not valid percent-encoding: write a byte as '%' and two hex digits")]
    BadEncoding { text: String },
    #[error("the required parameter `cpuArch` is missing; add it, for example `cpuArch=armv8`")]
    MissingCpuArch,
    #[error(
        "payloadType `{value}` is not supported; use `fullPayload` (the default) or `metadataOnly`"
    )]
    BadPayloadType { value: String },
    #[error(
        "cohort `{value}` is not a list of rollout ids: send at most {MAX_COHORTS} ids of {ROLLOUT_ID_LEN} hex digits, separated by '.'"
    )]
    BadCohort { value: String },
    #[error(
        "installed `{value}` is not a list of digests: send at most {MAX_ENTITY_TAGS} unquoted tags of 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-', separated by ',', {MAX_IF_NONE_MATCH_BYTES} bytes in all"
    )]
    BadInstalled { value: String },
}

impl DeviceQuery {
    /// Parses the raw query string of a request (the part after `?`, still percent-encoded).
    ///
    /// Names and channel values ignore letter case. Empty `&&` segments are skipped, and
    /// count toward neither [`MAX_QUERY_BYTES`] nor [`MAX_PARAMETERS`].
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let len = parameters_len(raw);
        if len > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong { len });
        }
        let mut params: Vec<Param<'_>> = Vec::new();
        for part in raw.split('&').filter(|part| !part.is_empty()) {
            if params.len() == MAX_PARAMETERS {
                return Err(QueryError::TooManyParameters);
            }
            let (raw_name, raw_value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(raw_name)?;
            if !is_ident_bytes(&name) {
                return Err(QueryError::BadName {
                    name: excerpt(raw_name),
                });
            }
            let value = percent_decode(raw_value)?;
            let name = lowercase_ident(&name);
            // A list, checked as one when the query is read.
            if name != INSTALLED && !is_ident_bytes(&value) {
                return Err(QueryError::BadValue {
                    name: excerpt(raw_name),
                    value: excerpt(raw_value),
                });
            }
            if params.iter().any(|param| param.name == name) {
                return Err(QueryError::Repeated {
                    name: excerpt(raw_name),
                });
            }
            params.push(Param {
                name,
                value: String::from_utf8(value.into_owned()).map_err(|_| {
                    QueryError::BadInstalled {
                        value: excerpt(raw_value),
                    }
                })?,
                raw_value,
            });
        }
        Self::from_params(params)
    }

    fn from_params(params: Vec<Param<'_>>) -> Result<Self, QueryError> {
        let mut cpu_arch = None;
        let mut os_channel = None;
        let mut payload = PayloadType::FullPayload;
        let mut attributes = Vec::new();
        let mut pins = Vec::new();
        let mut device_key = None;
        let mut cohorts = Vec::new();
        let mut installed = None;
        for Param {
            name,
            value: original,
            raw_value,
        } in params
        {
            let value = original.to_ascii_lowercase();
            match name.as_str() {
                "cpuarch" => cpu_arch = Some(value),
                "os" => os_channel = Some(value),
                "devicekey" => device_key = Some(original),
                INSTALLED => {
                    installed =
                        Some(
                            installed_list(&value).ok_or_else(|| QueryError::BadInstalled {
                                value: excerpt(raw_value),
                            })?,
                        );
                }
                "cohort" => {
                    cohorts = value.split('.').map(str::to_owned).collect();
                    let is_id = |id: &String| {
                        id.len() == ROLLOUT_ID_LEN
                            && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    };
                    if cohorts.len() > MAX_COHORTS || !cohorts.iter().all(is_id) {
                        return Err(QueryError::BadCohort {
                            value: excerpt(raw_value),
                        });
                    }
                    cohorts.sort_unstable();
                    cohorts.dedup();
                }
                "payloadtype" => {
                    payload = match value.as_str() {
                        "fullpayload" => PayloadType::FullPayload,
                        "metadataonly" => PayloadType::MetadataOnly,
                        _ => {
                            return Err(QueryError::BadPayloadType {
                                value: excerpt(raw_value),
                            });
                        }
                    }
                }
                _ => match name.strip_prefix(ATTRIBUTE_PREFIX) {
                    Some(attribute) if !attribute.is_empty() => attributes.push(Selector {
                        name: attribute.to_owned(),
                        channel: value,
                    }),
                    _ => pins.push(Selector {
                        name,
                        channel: value,
                    }),
                },
            }
        }
        attributes.sort();
        pins.sort();
        Ok(DeviceQuery {
            cpu_arch: cpu_arch.ok_or(QueryError::MissingCpuArch)?,
            os_channel: os_channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_owned()),
            payload,
            attributes,
            pins,
            device_key,
            cohorts,
            installed,
        })
    }

    /// The device's CPU architecture; selects the app `os_<cpuArch>`.
    pub fn cpu_arch(&self) -> &str {
        &self.cpu_arch
    }

    /// The channel of the OS image (`os=`, default `prod`).
    pub fn os_channel(&self) -> &str {
        &self.os_channel
    }

    /// The name of the OS app this device runs: `os_<cpuArch>`, lowercase.
    pub fn os_app(&self) -> String {
        format!("os_{}", self.cpu_arch)
    }

    pub fn payload(&self) -> PayloadType {
        self.payload
    }

    /// `attr<Name>=<channel>` parameters, sorted by name.
    pub fn attributes(&self) -> &[Selector] {
        &self.attributes
    }

    /// `<app>=<channel>` parameters, sorted by app.
    pub fn pins(&self) -> &[Selector] {
        &self.pins
    }

    /// The device's rollout key (`deviceKey=`), in its own letter case.
    pub fn device_key(&self) -> Option<&str> {
        self.device_key.as_deref()
    }

    /// The rollouts the CDN found the device in (`cohort=`), sorted.
    pub fn cohorts(&self) -> &[String] {
        &self.cohorts
    }

    /// The device's `If-None-Match` list when it sent it in the query (`installed=`):
    /// tags joined by `,`, empty when it lists none.
    pub fn installed(&self) -> Option<&str> {
        self.installed.as_deref()
    }

    /// This query without `installed=`.
    #[cfg(test)]
    pub(crate) fn without_installed(self) -> Self {
        DeviceQuery {
            installed: None,
            ..self
        }
    }

    /// This query for a device in `cohorts` (sorted): what the CDN forwards in place of
    /// the device's key, and what the origin then serves as it would for the key.
    pub(crate) fn in_cohorts(self, cohorts: Vec<String>) -> Self {
        DeviceQuery {
            device_key: None,
            cohorts,
            ..self
        }
    }

    /// This query as one canonical query string: names and values in lowercase, sorted
    /// by name, default values left out. Equal queries give equal strings, and parsing
    /// the string gives this query back, without its device key: a key would make one
    /// cache entry per device, so it is left out ([`crate::canonical_query`] puts the
    /// device in its cohorts first, with [`DeviceQuery::in_cohorts`]).
    pub fn cache_key(&self) -> String {
        let mut params = vec![("cpuarch".to_owned(), self.cpu_arch.as_str())];
        if self.os_channel != DEFAULT_CHANNEL {
            params.push(("os".to_owned(), &self.os_channel));
        }
        if self.payload == PayloadType::MetadataOnly {
            params.push(("payloadtype".to_owned(), "metadataonly"));
        }
        for attribute in &self.attributes {
            params.push((
                format!("{ATTRIBUTE_PREFIX}{}", attribute.name),
                &attribute.channel,
            ));
        }
        for pin in &self.pins {
            params.push((pin.name.clone(), &pin.channel));
        }
        let cohorts = self.cohorts.join(".");
        if !cohorts.is_empty() {
            params.push(("cohort".to_owned(), &cohorts));
        }
        if let Some(installed) = &self.installed {
            params.push((INSTALLED.to_owned(), installed));
        }
        params.sort_unstable();
        let pairs: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        pairs.join("&")
    }
}

/// One parameter while a query is read: its name in lowercase, its value decoded.
struct Param<'a> {
    name: String,
    value: String,
    /// The value as sent, for error messages.
    raw_value: &'a str,
}

/// The length [`MAX_QUERY_BYTES`] limits: the non-empty parameters but `installed=`,
/// each with one `&` but the last.
pub(crate) fn parameters_len(raw: &str) -> usize {
    raw.split('&')
        .filter(|part| !part.is_empty() && !is_installed(part))
        .map(|part| part.len() + 1)
        .sum::<usize>()
        .saturating_sub(1)
}

/// Whether a raw parameter is `installed=`, in any letter case, not percent-encoded.
pub(crate) fn is_installed(part: &str) -> bool {
    let name = part.split_once('=').map_or(part, |(name, _)| name);
    name.eq_ignore_ascii_case(INSTALLED)
}

/// The canonical form of an `installed=` list (lowercase already): tags sorted, without
/// duplicates, joined by `,`; empty elements skipped. `None` when it is longer than an
/// `If-None-Match` may be, holds too many tags, or a tag is not an identifier.
fn installed_list(value: &str) -> Option<String> {
    if value.len() > MAX_IF_NONE_MATCH_BYTES {
        return None;
    }
    let mut tags: Vec<&str> = value.split(',').filter(|tag| !tag.is_empty()).collect();
    if tags.len() > MAX_ENTITY_TAGS || !tags.iter().all(|tag| is_ident(tag)) {
        return None;
    }
    tags.sort_unstable();
    tags.dedup();
    Some(tags.join(","))
}

fn lowercase_ident(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}

fn percent_decode(text: &str) -> Result<Cow<'_, [u8]>, QueryError> {
    if !text.contains('%') {
        return Ok(Cow::Borrowed(text.as_bytes()));
    }
    let bad = || QueryError::BadEncoding {
        text: excerpt(text),
    };
    let mut decoded = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(hex_value).ok_or_else(bad)?;
            let low = bytes.next().and_then(hex_value).ok_or_else(bad)?;
            decoded.push(high << 4 | low);
        } else {
            decoded.push(byte);
        }
    }
    Ok(Cow::Owned(decoded))
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::MAX_IDENT_LEN;

    fn parse(raw: &str) -> DeviceQuery {
        DeviceQuery::parse(raw).expect("a valid query")
    }

    fn error(raw: &str) -> QueryError {
        DeviceQuery::parse(raw).expect_err("an invalid query")
    }

    fn selector(name: &str, channel: &str) -> Selector {
        Selector {
            name: name.to_owned(),
            channel: channel.to_owned(),
        }
    }

    fn bad_value(name: &str, value: &str) -> QueryError {
        QueryError::BadValue {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn cpu_arch_alone_means_prod_os_and_full_payload() {
        let query = parse("cpuArch=armv8");
        assert_eq!(query.cpu_arch(), "armv8");
        assert_eq!(query.os_channel(), "prod");
        assert_eq!(query.os_app(), "os_armv8");
        assert_eq!(query.payload(), PayloadType::FullPayload);
        assert_eq!(query.attributes(), []);
        assert_eq!(query.pins(), []);
    }

    #[test]
    fn os_parameter_sets_the_os_channel() {
        assert_eq!(parse("cpuArch=armv8&os=beta").os_channel(), "beta");
    }

    #[test]
    fn missing_cpu_arch_is_rejected() {
        assert_eq!(error("os=beta&attrGamer=prod"), QueryError::MissingCpuArch);
        assert_eq!(error(""), QueryError::MissingCpuArch);
        assert_eq!(error("&&"), QueryError::MissingCpuArch);
    }

    #[test]
    fn payload_type_accepts_both_values_in_any_case() {
        for (raw, payload) in [
            ("fullPayload", PayloadType::FullPayload),
            ("FULLPAYLOAD", PayloadType::FullPayload),
            ("fullpayload", PayloadType::FullPayload),
            ("metadataOnly", PayloadType::MetadataOnly),
            ("METADATAonly", PayloadType::MetadataOnly),
            ("metadataonly", PayloadType::MetadataOnly),
        ] {
            let query = parse(&format!("cpuArch=armv8&payloadType={raw}"));
            assert_eq!(query.payload(), payload, "payloadType={raw}");
        }
        assert_eq!(
            parse("cpuArch=armv8&PAYLOADTYPE=metadataOnly").payload(),
            PayloadType::MetadataOnly
        );
    }

    #[test]
    fn unknown_payload_type_is_rejected() {
        assert_eq!(
            error("cpuArch=armv8&payloadType=tarball"),
            QueryError::BadPayloadType {
                value: "tarball".to_owned()
            }
        );
        assert_eq!(
            error("cpuArch=armv8&payloadType=JSON"),
            QueryError::BadPayloadType {
                value: "JSON".to_owned()
            }
        );
    }

    #[test]
    fn payload_type_as_str_is_the_device_spelling() {
        assert_eq!(PayloadType::FullPayload.as_str(), "fullPayload");
        assert_eq!(PayloadType::MetadataOnly.as_str(), "metadataOnly");
    }

    #[test]
    fn repeated_parameter_is_rejected() {
        assert_eq!(
            error("cpuArch=armv8&cpuArch=armv8"),
            QueryError::Repeated {
                name: "cpuArch".to_owned()
            }
        );
        assert_eq!(
            error("cpuArch=armv8&scoreboard=prod&scoreboard=beta"),
            QueryError::Repeated {
                name: "scoreboard".to_owned()
            }
        );
    }

    #[test]
    fn parameter_repeated_in_another_case_is_rejected() {
        assert_eq!(
            error("cpuArch=armv8&os=beta&OS=prod"),
            QueryError::Repeated {
                name: "OS".to_owned()
            }
        );
        assert_eq!(
            error("cpuArch=armv8&attrGamer=prod&ATTRgamer=prod"),
            QueryError::Repeated {
                name: "ATTRgamer".to_owned()
            }
        );
        assert_eq!(
            error("cpuArch=armv8&videoStreamer=beta&videostreamer=prod"),
            QueryError::Repeated {
                name: "videostreamer".to_owned()
            }
        );
    }

    #[test]
    fn parameter_repeated_through_percent_encoding_is_rejected() {
        assert_eq!(
            error("cpuArch=armv8&os=beta&%6Fs=prod"),
            QueryError::Repeated {
                name: "%6Fs".to_owned()
            }
        );
    }

    #[test]
    fn names_and_values_of_64_chars_are_accepted() {
        let name = "n".repeat(64);
        let value = "v".repeat(64);
        let query = parse(&format!("cpuArch={value}&{name}={value}"));
        assert_eq!(query.cpu_arch(), value);
        assert_eq!(query.pins(), [selector(&name, &value)]);
    }

    #[test]
    fn name_of_65_chars_is_rejected() {
        let name = "n".repeat(65);
        assert_eq!(
            error(&format!("cpuArch=armv8&{name}=prod")),
            QueryError::BadName {
                name: format!("{}...", &name[..64])
            }
        );
    }

    #[test]
    fn value_of_65_chars_is_rejected() {
        let value = "v".repeat(65);
        let shown = format!("{}...", &value[..64]);
        assert_eq!(
            error(&format!("cpuArch={value}")),
            bad_value("cpuArch", &shown)
        );
    }

    #[test]
    fn empty_value_and_missing_equals_sign_are_rejected() {
        assert_eq!(error("cpuArch="), bad_value("cpuArch", ""));
        assert_eq!(error("cpuArch"), bad_value("cpuArch", ""));
        assert_eq!(error("cpuArch=armv8&os"), bad_value("os", ""));
    }

    #[test]
    fn empty_name_is_rejected() {
        assert_eq!(
            error("cpuArch=armv8&=prod"),
            QueryError::BadName {
                name: String::new()
            }
        );
    }

    #[test]
    fn values_outside_the_identifier_characters_are_rejected() {
        for value in [
            "arm v8",
            "arm+v8",
            "arm/v8",
            "armv8=x",
            "a%20b",
            "a%2Fb",
            "a%26os=beta",
            "%C3%A9",
            "é",
            "a;b",
            "a*",
        ] {
            assert_eq!(
                error(&format!("cpuArch={value}")),
                bad_value("cpuArch", value),
                "{value}"
            );
        }
    }

    #[test]
    fn names_outside_the_identifier_characters_are_rejected() {
        for name in ["a b", "a+b", "a/b", "%2E%2F", "%C3%A9", "é", "attr:gamer"] {
            assert_eq!(
                error(&format!("cpuArch=armv8&{name}=prod")),
                QueryError::BadName {
                    name: name.to_owned()
                },
                "{name}"
            );
        }
    }

    #[test]
    fn dots_underscores_and_hyphens_are_valid_characters() {
        let query = parse("cpuArch=..&os=a_b-c.d&my.app-1_x=..");
        assert_eq!(query.cpu_arch(), "..");
        assert_eq!(query.os_channel(), "a_b-c.d");
        assert_eq!(query.pins(), [selector("my.app-1_x", "..")]);
    }

    #[test]
    fn thirty_two_parameters_are_accepted() {
        let mut raw = "cpuArch=armv8".to_owned();
        for n in 0..31 {
            raw.push_str(&format!("&p{n}=prod"));
        }
        assert_eq!(parse(&raw).pins().len(), 31);
    }

    #[test]
    fn thirty_three_parameters_are_rejected() {
        let mut raw = "cpuArch=armv8".to_owned();
        for n in 0..32 {
            raw.push_str(&format!("&p{n}=prod"));
        }
        assert_eq!(error(&raw), QueryError::TooManyParameters);
    }

    #[test]
    fn empty_segments_are_skipped_and_not_counted() {
        let mut raw = "&&cpuArch=armv8&&".to_owned();
        for n in 0..31 {
            raw.push_str(&format!("p{n}=prod&&&"));
        }
        let query = parse(&raw);
        assert_eq!(query.cpu_arch(), "armv8");
        assert_eq!(query.pins().len(), 31);
    }

    /// `cpuArch=armv8` and app pins of up to 64-character values, `len` bytes in all.
    fn query_of_length(len: usize) -> String {
        let mut raw = "cpuArch=armv8".to_owned();
        for n in 0.. {
            let left = len - raw.len();
            if left == 0 {
                break;
            }
            let name = format!("&p{n}=");
            let value = "v".repeat((left - name.len()).min(MAX_IDENT_LEN));
            raw.push_str(&format!("{name}{value}"));
        }
        raw
    }

    #[test]
    fn query_of_2048_bytes_is_accepted() {
        let raw = query_of_length(MAX_QUERY_BYTES);
        assert_eq!(raw.len(), 2048);
        assert_eq!(parse(&raw).cpu_arch(), "armv8");
    }

    #[test]
    fn query_of_2049_bytes_is_rejected_before_anything_else() {
        let raw = query_of_length(MAX_QUERY_BYTES + 1);
        assert_eq!(raw.len(), 2049);
        assert_eq!(error(&raw), QueryError::TooLong { len: 2049 });
        assert_eq!(error(&"%".repeat(2049)), QueryError::TooLong { len: 2049 });
    }

    #[test]
    fn empty_segments_do_not_count_toward_the_length_limit() {
        let raw = query_of_length(MAX_QUERY_BYTES).replace('&', "&&&&");
        let padded = format!("{}{raw}{}", "&".repeat(3000), "&".repeat(3000));
        assert_eq!(parse(&padded), parse(&query_of_length(MAX_QUERY_BYTES)));
        let over = format!(
            "&&{}&&",
            query_of_length(MAX_QUERY_BYTES + 1).replace('&', "&&")
        );
        assert_eq!(error(&over), QueryError::TooLong { len: 2049 });
        assert_eq!(error(&"&".repeat(5000)), QueryError::MissingCpuArch);
    }

    #[test]
    fn cache_key_leaves_the_device_key_out() {
        let keyed = parse("cpuArch=armv8&deviceKey=Device-1&cohort=0a1b2c3d");
        assert_eq!(keyed.device_key(), Some("Device-1"));
        assert_eq!(keyed.cache_key(), "cohort=0a1b2c3d&cpuarch=armv8");
        let cohorts = vec!["00000001".to_owned(), "0a1b2c3d".to_owned()];
        assert_eq!(
            keyed.in_cohorts(cohorts).cache_key(),
            "cohort=00000001.0a1b2c3d&cpuarch=armv8"
        );
    }

    #[test]
    fn percent_encoded_bytes_are_decoded() {
        assert_eq!(parse("cpuArch=armv%38"), parse("cpuArch=armv8"));
        assert_eq!(
            parse("cpu%41rch=armv8&%6fs=b%65ta"),
            parse("cpuArch=armv8&os=beta")
        );
        assert_eq!(parse("cpuArch=%2E%2e").cpu_arch(), "..");
    }

    #[test]
    fn bad_percent_encoding_is_rejected() {
        for (raw, text) in [
            ("cpuArch=armv%G1", "armv%G1"),
            ("cpuArch=armv%4", "armv%4"),
            ("cpuArch=armv%", "armv%"),
            ("cpuArch=%%41", "%%41"),
            ("cpuArch=%é1", "%é1"),
            ("cpu%ZZrch=armv8", "cpu%ZZrch"),
        ] {
            assert_eq!(
                error(raw),
                QueryError::BadEncoding {
                    text: text.to_owned()
                },
                "{raw}"
            );
        }
    }

    #[test]
    fn attr_prefix_selects_a_lowercase_attribute() {
        let query = parse("cpuArch=armv8&attrGamer=PROD");
        assert_eq!(query.attributes(), [selector("gamer", "prod")]);
        assert_eq!(query.pins(), []);
    }

    #[test]
    fn parameter_named_exactly_attr_is_an_app_pin() {
        let query = parse("cpuArch=armv8&ATTR=beta");
        assert_eq!(query.attributes(), []);
        assert_eq!(query.pins(), [selector("attr", "beta")]);
    }

    #[test]
    fn names_and_values_are_lowercased() {
        let query = parse(
            "CPUARCH=ARMv8&OS=Beta&VideoStreamer=BETA&AttrCamera=Prod&payloadtype=MetadataOnly",
        );
        assert_eq!(query.cpu_arch(), "armv8");
        assert_eq!(query.os_app(), "os_armv8");
        assert_eq!(query.os_channel(), "beta");
        assert_eq!(query.payload(), PayloadType::MetadataOnly);
        assert_eq!(query.attributes(), [selector("camera", "prod")]);
        assert_eq!(query.pins(), [selector("videostreamer", "beta")]);
    }

    #[test]
    fn attributes_and_pins_are_sorted_whatever_the_parameter_order() {
        let query = parse("zeta=prod&attrZ=beta&cpuArch=armv8&alpha=beta&attrA=prod&mid=x");
        assert_eq!(
            query.attributes(),
            [selector("a", "prod"), selector("z", "beta")]
        );
        assert_eq!(
            query.pins(),
            [
                selector("alpha", "beta"),
                selector("mid", "x"),
                selector("zeta", "prod")
            ]
        );
        assert_eq!(
            query,
            parse("mid=x&attrA=prod&alpha=beta&cpuArch=armv8&attrZ=beta&zeta=prod")
        );
        assert_eq!(
            query,
            parse("MID=X&ATTRa=PROD&Alpha=Beta&CpuArch=ARMV8&attrz=BETA&ZETA=prod")
        );
    }

    #[test]
    fn error_messages_name_the_offending_input() {
        let cases = [
            ("cpuArch=armv8&payloadType=tarball", "`tarball`"),
            ("cpuArch=armv8&os=beta&OS=prod", "`OS`"),
            ("cpuArch=armv8&bad%20name=prod", "`bad%20name`"),
            ("cpuArch=arm+v8", "`cpuArch` has the value `arm+v8`"),
            ("cpuArch=armv%G1", "`armv%G1`"),
            ("os=beta", "`cpuArch` is missing"),
        ];
        for (raw, needle) in cases {
            let message = error(raw).to_string();
            assert!(message.contains(needle), "{raw}: {message}");
        }
        assert_eq!(
            QueryError::TooLong { len: 4000 }.to_string(),
            "the query string is 4000 bytes long; send at most 2048 bytes"
        );
        assert_eq!(
            QueryError::TooManyParameters.to_string(),
            "the query has more than 32 parameters; send at most 32"
        );
    }

    #[test]
    fn long_offending_input_is_cut_short_in_errors() {
        let name = "n".repeat(500);
        assert_eq!(
            error(&format!("cpuArch=armv8&{name}=prod")),
            QueryError::BadName {
                name: format!("{}...", "n".repeat(64))
            }
        );
    }
}
