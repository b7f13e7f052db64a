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
//! A device's `deviceKey` never reaches the cache key: it would give every device an
//! entry of its own. The function holds the rollouts in progress ([`RolloutState`], the
//! stack's `RolloutState` parameter) and replaces the key by `cohort=<id>.<id>...`, the
//! rollouts the device is in, which the origin serves as it would serve the key; or
//! drops the key when the device is in none, so the device shares the entry of devices
//! that send no key.

use serde::{Deserialize, Serialize};

use crate::conditional::IfNoneMatch;
use crate::ident::is_ident_byte;
use crate::query::{DeviceQuery, MAX_COHORTS, MAX_QUERY_BYTES};
use crate::rollout::is_member;

/// A staged rollout in progress (0 < percent < 100), as the CDN's function knows it.
/// The function's state is a JSON list of these: `[{"id":"2d1a5982","percent":10}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// The rollout's id, as [`crate::rollout_id`] gives it.
    pub id: String,
    /// The share of devices that take the rollout's candidate.
    pub percent: u8,
}

/// The canonical form of a query string: parameter names and values in lowercase,
/// sorted by name, `os=prod` and `payloadType=fullPayload` (the defaults) left out, and
/// a `deviceKey` replaced by the rollouts of `rollouts` the device is in
/// (`cohort=<ids, sorted, joined by '.'>`, or nothing when it is in none; any `cohort`
/// the device sent beside its key is replaced too).
///
/// `None` when the query is to be forwarded as sent: the origin refuses it; it uses
/// percent-encoding (rare, and a CDN may hand it over decoded or not); or the device is
/// in more rollouts than one `cohort` value holds, or its cohorts would take the query
/// over [`MAX_QUERY_BYTES`] (the origin then computes them from the key).
pub fn canonical_query(raw: &str, rollouts: &[RolloutState]) -> Option<String> {
    if raw.contains('%') {
        return None;
    }
    let mut query = DeviceQuery::parse(raw).ok()?;
    if let Some(key) = query.device_key() {
        let cohorts = cohorts_of(key, rollouts);
        if cohorts.len() > MAX_COHORTS {
            return None;
        }
        query = query.in_cohorts(cohorts);
    }
    let canonical = query.cache_key();
    // A cohort list can be longer than the key it replaces.
    (canonical.len() <= MAX_QUERY_BYTES).then_some(canonical)
}

/// The ids of the rollouts the device with `key` is in, sorted, without duplicates.
fn cohorts_of(key: &str, rollouts: &[RolloutState]) -> Vec<String> {
    let mut ids: Vec<String> = rollouts
        .iter()
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
    use crate::query::QueryError;

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
                let cohorts = cohorts_of(key, rollouts);
                query.in_cohorts(cohorts)
            }
            None => query,
        }
    }

    #[test]
    fn query_vectors() {
        let vectors = vectors();
        for vector in vectors.query.iter().chain(&vectors.query_with_rollouts) {
            let what = format!("{} ({:?})", vector.why, vector.input);
            let rollouts = &vector.rollouts;
            let canonical = canonical_query(&vector.input, rollouts);
            assert_eq!(canonical, vector.canonical, "{what}");
            let Some(canonical) = canonical else {
                continue;
            };
            // The rewritten query means what the device sent, and is a fixed point.
            assert_eq!(
                DeviceQuery::parse(&canonical),
                Ok(as_the_origin_reads(&vector.input, rollouts)),
                "{what}"
            );
            assert_eq!(
                canonical_query(&canonical, rollouts).as_ref(),
                Some(&canonical),
                "{what}"
            );
        }
    }

    #[test]
    fn if_none_match_vectors() {
        for vector in vectors().if_none_match {
            let what = format!("{} ({:?})", vector.why, vector.input);
            assert_eq!(
                canonical_if_none_match(&vector.input),
                vector.canonical,
                "{what}"
            );
            let Some(canonical) = vector.canonical else {
                continue;
            };
            let sent = IfNoneMatch::parse([vector.input.as_bytes()]).expect("accepted");
            let rewritten = IfNoneMatch::parse([canonical.as_bytes()]).expect("accepted");
            assert_eq!(rewritten, sent, "{what}");
            assert_eq!(
                canonical_if_none_match(&canonical).as_ref(),
                Some(&canonical),
                "{what}"
            );
        }
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
