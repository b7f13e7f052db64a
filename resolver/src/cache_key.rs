//! The cache key form of a request. A CDN keys its cache on the query string and
//! `If-None-Match` as sent, so `cpuArch=armv8&attrGamer=prod` and
//! `attrgamer=PROD&cpuarch=armv8` would be two entries holding the same package. The
//! viewer-request function of the CloudFront template (`CacheKeyFunction` in
//! `cloudformation/fleetpack.yaml`) rewrites both into one form before the cache lookup;
//! these functions define that form, and `tests/cache_key_vectors.json` holds the cases
//! both implementations are checked against.
//!
//! Only requests the origin accepts are rewritten, and a rewritten request means
//! exactly what the original meant. Anything else is forwarded as sent, so the origin's
//! 400 names the problem in the device's own spelling.

use crate::conditional::IfNoneMatch;
use crate::ident::is_ident_byte;
use crate::query::DeviceQuery;

/// The canonical form of a query string: parameter names and values in lowercase,
/// sorted by name, `os=prod` and `payloadType=fullPayload` (the defaults) left out.
///
/// `None` when the query is to be forwarded as sent: the origin refuses it, or it uses
/// percent-encoding (rare, and a CDN may hand it over decoded or not).
pub fn canonical_query(raw: &str) -> Option<String> {
    if raw.contains('%') {
        return None;
    }
    DeviceQuery::parse(raw).ok().map(|query| query.cache_key())
}

/// The canonical form of an `If-None-Match` value: tags unquoted, weak markers dropped
/// (tags compare weakly), in lowercase, sorted, without duplicates, joined by `,`;
/// `*` alone when the header holds the wildcard; empty when it lists nothing (the
/// header can then be dropped).
///
/// `None` when the header is to be forwarded as sent: the origin refuses it, or a tag
/// holds characters other than `A-Z a-z 0-9 . _ -`, which an unquoted list could not
/// carry unchanged (and no digest or ETag of the origin contains).
pub fn canonical_if_none_match(value: &str) -> Option<String> {
    let parsed = IfNoneMatch::parse([value.as_bytes()]).ok()?;
    if !parsed.tags().all(|tag| tag.bytes().all(is_ident_byte)) {
        return None;
    }
    if parsed.matches_any() {
        return Some("*".to_owned());
    }
    Some(parsed.tags().collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::query::QueryError;

    /// The shared vectors; the same file is run through the CloudFront Function by node.
    const VECTORS: &str = include_str!("../../tests/cache_key_vectors.json");

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Vectors {
        query: Vec<Vector>,
        if_none_match: Vec<Vector>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Vector {
        why: String,
        input: String,
        canonical: Option<String>,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(VECTORS).expect("tests/cache_key_vectors.json is valid")
    }

    #[test]
    fn query_vectors() {
        for vector in vectors().query {
            let what = format!("{} ({:?})", vector.why, vector.input);
            assert_eq!(canonical_query(&vector.input), vector.canonical, "{what}");
            let Some(canonical) = vector.canonical else {
                continue;
            };
            // The rewritten query means what the device sent, and is a fixed point.
            assert_eq!(
                DeviceQuery::parse(&canonical),
                DeviceQuery::parse(&vector.input),
                "{what}"
            );
            assert_eq!(
                canonical_query(&canonical).as_ref(),
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
            // `*` answers 304 whatever else is listed.
            if sent.matches_any() {
                assert!(
                    rewritten.matches_any() && rewritten.tags().len() == 0,
                    "{what}"
                );
            } else {
                assert_eq!(rewritten, sent, "{what}");
            }
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
        let header_refusals = vectors
            .if_none_match
            .iter()
            .filter(|vector| IfNoneMatch::parse([vector.input.as_bytes()]).is_err())
            .count();
        assert!(header_refusals >= 3, "too long, too many tags, malformed");
    }
}
