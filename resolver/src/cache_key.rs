//! The cache key form of a request. A CDN keys its cache on the query string and
//! `If-None-Match` as sent, so `cpuArch=armv8&attrGamer=prod` and
//! `attrgamer=PROD&cpuarch=armv8` would be two entries holding the same package. The
//! viewer-request function of the CloudFront template (`CacheKeyFunction` in
//! `cloudformation/fleetpack.yaml`) rewrites both into one form before the cache lookup;
//! these functions define that form. `tests/cache_key_vectors.json` holds the cases both
//! implementations are checked against, and `resolver/tests/cdn_function.rs` compares
//! them on generated inputs.
//!
//! Only requests the origin accepts are rewritten, and a rewritten request means
//! exactly what the original meant. Anything else is forwarded as sent, so the origin's
//! 400 names the problem in the device's own spelling.
//!
//! A device's `If-None-Match` moves into the query as `installed=` (an empty list when
//! it sends none), and the header is dropped: the cache key then holds what the device
//! has without leaning on a header that caches also send when they revalidate, and the
//! origin's answer to such a query does not vary with the header.
//!
//! A device's `deviceKey` never reaches the cache key: it would give every device an
//! entry of its own. The function holds the rollouts in progress ([`RolloutState`], the
//! stack's `RolloutState` parameter) and replaces the key by `cohort=<id>.<id>...`, the
//! rollouts the device is in among those its query can select, which the origin serves
//! as it would serve the key; or drops the key when there are none, so the device
//! shares the entry of devices that send no key.

use serde::{Deserialize, Serialize};

use crate::conditional::IfNoneMatch;
use crate::ident::is_ident_byte;
use crate::query::{
    DeviceQuery, INSTALLED, MAX_COHORTS, MAX_QUERY_BYTES, Selector, is_installed, parameters_len,
};
use crate::rollout::is_member;

/// A staged rollout in progress (0 < percent < 100), as the CDN's function knows it.
/// The function's state is a JSON list of these, fields in this order:
/// `[{"id":"2d1a5982","percent":10,"app":"os_armv8","channel":"prod","attributes":[]}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// The rollout's id, as [`crate::rollout_id`] gives it.
    pub id: String,
    /// The share of devices that take the rollout's candidate.
    pub percent: u8,
    /// The app of the rollout, in lowercase.
    pub app: String,
    /// The channel of the rollout, in lowercase.
    pub channel: String,
    /// The device attributes (`deviceAttr` names set to true) of the channel's current
    /// release, in lowercase: `attr<name>=<channel>` selects the app on the channel.
    pub attributes: Vec<String>,
}

impl RolloutState {
    /// Whether `query` can select this rollout's app on its channel: by the OS rule
    /// (`os_<cpuArch>` on the `os=` channel), by an `attr<name>=<channel>` of one of its
    /// attributes, or by a pin `<app>=<channel>`.
    ///
    /// Deliberately a superset of what [`crate::RuleSet::resolve`] selects, which also
    /// weighs a pin over an attribute match over the OS rule and may end up choosing
    /// another channel for the app: listing a rollout the origin then does not serve
    /// costs only a cache entry, while leaving out one it serves would give a member
    /// the current release instead of the candidate.
    fn can_be_selected_by(&self, query: &DeviceQuery) -> bool {
        let on_channel = |selector: &Selector| selector.channel == self.channel;
        let by_os = self.app.strip_prefix("os_") == Some(query.cpu_arch())
            && query.os_channel() == self.channel;
        let by_attribute = query
            .attributes()
            .iter()
            .any(|selector| on_channel(selector) && self.attributes.contains(&selector.name));
        let by_pin = query
            .pins()
            .iter()
            .any(|pin| on_channel(pin) && pin.name == self.app);
        by_os || by_attribute || by_pin
    }
}

/// The canonical form of a query string: parameter names and values in lowercase,
/// sorted by name, `os=prod` and `payloadType=fullPayload` (the defaults) left out, and
/// a `deviceKey` replaced by the rollouts of `rollouts` that the query can select and
/// the device is in (`cohort=<ids, sorted, joined by '.'>`, or nothing when there are
/// none; any `cohort` the device sent beside its key is replaced too).
///
/// `None` when the query is to be forwarded as sent: the origin refuses it; it uses
/// percent-encoding (rare, and a CDN may hand it over decoded or not); or the device is
/// in more such rollouts than one `cohort` value holds, or its cohorts would take the
/// query over [`MAX_QUERY_BYTES`] (the origin then computes them from the key).
pub fn canonical_query(raw: &str, rollouts: &[RolloutState]) -> Option<String> {
    if raw.contains('%') {
        return None;
    }
    let mut query = DeviceQuery::parse(raw).ok()?;
    if let Some(key) = query.device_key() {
        let cohorts = cohorts_of(&query, key, rollouts);
        if cohorts.len() > MAX_COHORTS {
            return None;
        }
        query = query.in_cohorts(cohorts);
    }
    let canonical = query.cache_key();
    // A cohort list can be longer than the key it replaces.
    (parameters_len(&canonical) <= MAX_QUERY_BYTES).then_some(canonical)
}

/// What the CDN's function makes of a request: the query it forwards, and whether it
/// drops `If-None-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub query: String,
    /// The header's list moved into the query as `installed=`.
    pub drops_if_none_match: bool,
}

/// The canonical form of a request: [`canonical_query`] of its query with the device's
/// `If-None-Match` (`None` when it sent none) moved into it as `installed=`, in the
/// form of [`canonical_if_none_match`]; the header is then dropped.
///
/// The header stays as sent when the query lists `installed=` already (the header is
/// then the device's validator, which the CDN answers itself), when it holds `*` or
/// something the origin refuses, or when the query cannot take the list (too many
/// parameters, a tag longer than a value may be): its answer is then the full
/// package, never another device's. `None` when the query is to be forwarded as sent.
pub fn canonical_request(
    raw: &str,
    if_none_match: Option<&str>,
    rollouts: &[RolloutState],
) -> Option<CanonicalRequest> {
    if !raw.split('&').any(is_installed) {
        let moved = match if_none_match {
            None => Some(String::new()),
            Some(value) => canonical_if_none_match(value).filter(|tags| !tags.starts_with('*')),
        };
        let listed =
            moved.and_then(|tags| canonical_query(&format!("{raw}&{INSTALLED}={tags}"), rollouts));
        if let Some(query) = listed {
            return Some(CanonicalRequest {
                query,
                drops_if_none_match: true,
            });
        }
    }
    canonical_query(raw, rollouts).map(|query| CanonicalRequest {
        query,
        drops_if_none_match: false,
    })
}

/// The ids of the rollouts `query` can select that the device with `key` is in, sorted,
/// without duplicates.
fn cohorts_of(query: &DeviceQuery, key: &str, rollouts: &[RolloutState]) -> Vec<String> {
    let mut ids: Vec<String> = rollouts
        .iter()
        .filter(|rollout| rollout.can_be_selected_by(query))
        .filter(|rollout| is_member(&rollout.id, key, rollout.percent))
        .map(|rollout| rollout.id.clone())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The canonical form of an `If-None-Match` value: tags unquoted, weak markers dropped
/// (tags compare weakly), in lowercase, sorted, without duplicates, joined by `,`; the
/// wildcard first, as `*`, when the header holds it (where it sorts anyway: `*` comes
/// before every tag character). The tags beside `*` are kept: the 304 to `*` carries
/// an ETag that depends on which of them name binaries the device is served. Empty
/// when the header lists nothing (the header can then be dropped).
///
/// `None` when the header is to be forwarded as sent: the origin refuses it, or a tag
/// holds characters other than `A-Z a-z 0-9 . _ -`, which an unquoted list could not
/// carry unchanged (and no digest or ETag of the origin contains).
pub fn canonical_if_none_match(value: &str) -> Option<String> {
    let parsed = IfNoneMatch::parse([value.as_bytes()]).ok()?;
    if !parsed.tags().all(|tag| tag.bytes().all(is_ident_byte)) {
        return None;
    }
    let wildcard = parsed.matches_any().then_some("*");
    let listed: Vec<&str> = wildcard.into_iter().chain(parsed.tags()).collect();
    Some(listed.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{demo_fleet, rule};
    use crate::query::QueryError;
    use crate::request::DeviceRequest;
    use crate::rule::{Rollout, Rule, StoredRules};
    use crate::rule_set::RuleSet;

    /// The shared vectors; the same file is run through the CloudFront Function by node.
    const VECTORS: &str = include_str!("../../tests/cache_key_vectors.json");

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Vectors {
        query: Vec<Vector>,
        query_with_rollouts: Vec<Vector>,
        if_none_match: Vec<Vector>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Vector {
        why: String,
        /// The function's rollout state; none in progress when left out.
        #[serde(default)]
        rollouts: Vec<RolloutState>,
        input: String,
        canonical: Option<String>,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(VECTORS).expect("tests/cache_key_vectors.json is valid")
    }

    /// What the origin serves for `raw`: for a device key, what it serves the device's
    /// cohorts.
    fn as_the_origin_reads(raw: &str, rollouts: &[RolloutState]) -> DeviceQuery {
        let query = DeviceQuery::parse(raw).expect("an accepted query");
        match query.device_key() {
            Some(key) => {
                let cohorts = cohorts_of(&query, key, rollouts);
                query.in_cohorts(cohorts)
            }
            None => query,
        }
    }

    /// What the origin reads from a request: its query (a key read as its cohorts),
    /// without `installed=`, and the list of what the device has.
    fn meaning(
        raw: &str,
        header: Option<&str>,
        rollouts: &[RolloutState],
    ) -> (DeviceQuery, IfNoneMatch) {
        let request = DeviceRequest::parse(raw, header.map(str::as_bytes)).expect("accepted");
        (
            as_the_origin_reads(raw, rollouts).without_installed(),
            request.if_none_match().clone(),
        )
    }

    #[test]
    fn query_vectors() {
        let vectors = vectors();
        for vector in vectors.query.iter().chain(&vectors.query_with_rollouts) {
            let what = format!("{} ({:?})", vector.why, vector.input);
            let rollouts = &vector.rollouts;
            let rewritten = canonical_request(&vector.input, None, rollouts);
            assert_eq!(
                rewritten.as_ref().map(|rewritten| &rewritten.query),
                vector.canonical.as_ref(),
                "{what}"
            );
            let Some(rewritten) = rewritten else {
                continue;
            };
            // The rewritten request means what the device sent, and is a fixed point.
            assert_eq!(
                meaning(&rewritten.query, None, rollouts),
                meaning(&vector.input, None, rollouts),
                "{what}"
            );
            assert_eq!(
                canonical_query(&rewritten.query, rollouts).as_ref(),
                Some(&rewritten.query),
                "{what}"
            );
        }
    }

    /// The demo fleet with a candidate at 40% on four channels: the armv8 OS image on
    /// prod and beta, scoreboard (gamer) on prod, videoStreamer (camera) on beta.
    fn fleet_with_rollouts() -> RuleSet {
        let mut stored = StoredRules::from(demo_fleet());
        for (app, channel) in [
            ("os_armv8", "prod"),
            ("os_armv8", "beta"),
            ("scoreboard", "prod"),
            ("videoStreamer", "beta"),
        ] {
            let head = stored
                .current
                .iter_mut()
                .find(|head| head.app == app && head.channel == channel)
                .expect("a channel of the demo fleet");
            head.rollout = Some(Rollout {
                version: "9.0.0".to_owned(),
                percent: 40,
            });
            stored.history.push(Rule {
                sequence: Some(1),
                ..rule(app, channel, "9.0.0", &[])
            });
        }
        let (set, rejected) = RuleSet::build_holding(stored, |_| true);
        assert_eq!(rejected, [], "every rule is valid");
        set
    }

    /// Leaving a rollout out of `cohort` is safe only when the origin would not serve
    /// it to that query: the rewritten query must get what the key gets.
    #[test]
    fn the_origin_serves_the_rewritten_query_what_it_serves_the_key() {
        let set = fleet_with_rollouts();
        let rollouts: Vec<RolloutState> = set.rollouts().cloned().collect();
        assert_eq!(rollouts.len(), 4);
        let answer = |raw: &str| {
            let request = DeviceRequest::parse(raw, []).expect("an accepted request");
            set.answer(&request).expect("a package")
        };
        let (mut listed, mut left_out) = (0, 0);
        for query in [
            "cpuArch=armv8",
            "cpuArch=armv8&os=beta",
            "cpuArch=armv7&os=beta",
            "cpuArch=armv8&attrGamer=prod",
            "cpuArch=armv7&attrGamer=beta&attrCamera=beta",
            "cpuArch=armv8&attrGamer=prod&scoreboard=beta",
            "cpuArch=armv8&os_armv8=beta&videoStreamer=beta",
        ] {
            for n in 0..100 {
                let key = format!("device-{n}");
                let keyed = format!("{query}&deviceKey={key}");
                let canonical = canonical_query(&keyed, &rollouts).expect("rewritten");
                assert_eq!(answer(&canonical), answer(&keyed), "{keyed} as {canonical}");
                let cohorts = DeviceQuery::parse(&canonical)
                    .expect("accepted")
                    .cohorts()
                    .len();
                let memberships = rollouts
                    .iter()
                    .filter(|rollout| is_member(&rollout.id, &key, rollout.percent))
                    .count();
                listed += usize::from(cohorts > 0);
                left_out += usize::from(cohorts < memberships);
            }
        }
        assert!(
            listed > 100 && left_out > 100,
            "{listed} listed, {left_out} left out"
        );
    }

    #[test]
    fn if_none_match_vectors() {
        const QUERY: &str = "cpuArch=armv8";
        for vector in vectors().if_none_match {
            let what = format!("{} ({:?})", vector.why, vector.input);
            let rewritten =
                canonical_request(QUERY, Some(&vector.input), &[]).expect("an accepted query");
            let parsed = DeviceQuery::parse(&rewritten.query).expect("accepted");
            let installed = rewritten
                .drops_if_none_match
                .then(|| parsed.installed().expect("the list moved").to_owned());
            assert_eq!(installed, vector.canonical, "{what}");
            if rewritten.drops_if_none_match {
                assert_eq!(
                    meaning(&rewritten.query, None, &[]),
                    meaning(QUERY, Some(&vector.input), &[]),
                    "{what}"
                );
            } else {
                assert_eq!(parsed.installed(), None, "{what}");
            }
        }
    }

    /// A device that lists `installed=` itself keeps its header: the CDN answers that
    /// validator, and the origin reads the list from the query alone.
    #[test]
    fn a_listed_installed_keeps_the_header() {
        let rewritten = canonical_request("installed=B,a&cpuArch=armv8", Some("\"abc\""), &[])
            .expect("an accepted query");
        assert_eq!(
            rewritten,
            CanonicalRequest {
                query: "cpuarch=armv8&installed=a,b".to_owned(),
                drops_if_none_match: false,
            }
        );
    }

    #[test]
    fn vectors_cover_every_refusal_the_function_must_pass_through() {
        let vectors = vectors();
        let refusals: Vec<QueryError> = vectors
            .query
            .iter()
            .chain(&vectors.query_with_rollouts)
            .filter_map(|vector| DeviceQuery::parse(&vector.input).err())
            .collect();
        let covered = |kind: fn(&QueryError) -> bool| refusals.iter().any(kind);
        assert!(covered(|e| matches!(e, QueryError::TooLong { .. })));
        assert!(covered(|e| matches!(e, QueryError::TooManyParameters)));
        assert!(covered(|e| matches!(e, QueryError::BadName { .. })));
        assert!(covered(|e| matches!(e, QueryError::BadValue { .. })));
        assert!(covered(|e| matches!(e, QueryError::Repeated { .. })));
        assert!(covered(|e| matches!(e, QueryError::BadEncoding { .. })));
        assert!(covered(|e| matches!(e, QueryError::MissingCpuArch)));
        assert!(covered(|e| matches!(e, QueryError::BadPayloadType { .. })));
        assert!(covered(|e| matches!(e, QueryError::BadCohort { .. })));
        let header_refusals = vectors
            .if_none_match
            .iter()
            .filter(|vector| IfNoneMatch::parse([vector.input.as_bytes()]).is_err())
            .count();
        assert!(header_refusals >= 3, "too long, too many tags, malformed");
    }
}
