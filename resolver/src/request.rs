//! What a device gets: its request, parsed, and the plan that answers it.
//!
//! The HTTP origin and the operator CLI both answer through [`DeviceRequest::parse`] and
//! [`RuleSet::answer`], so they cannot disagree about what a device receives.

use crate::conditional::{ConditionalError, IfNoneMatch};
use crate::plan::PackagePlan;
use crate::query::{DeviceQuery, QueryError};
use crate::rule_set::{NoPackage, RuleSet};
use crate::serve::Served;

/// A device's request, parsed: its query and its If-None-Match.
///
/// A device lists what it has in `If-None-Match`, or in the query as `installed=` (the
/// CDN's function moves it there, so that its cache key does not hang on a header that
/// caches also use to revalidate). With `installed=`, the header is only a validator: it
/// turns the answer into 304 when it names the response's ETag, as for any resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    query: DeviceQuery,
    if_none_match: IfNoneMatch,
    /// The header when the list came in the query.
    validators: Option<IfNoneMatch>,
}

/// Why a device's request was refused: its query or its If-None-Match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Conditional(#[from] ConditionalError),
}

impl DeviceRequest {
    /// Parses the raw query string (the part after `?`, still percent-encoded) and every
    /// `If-None-Match` header line, in order. The query is checked first.
    pub fn parse<'a>(
        query: &str,
        if_none_match: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, BadRequest> {
        let query = DeviceQuery::parse(query)?;
        let header = IfNoneMatch::parse(if_none_match)?;
        Ok(match query.installed() {
            Some(installed) => DeviceRequest {
                if_none_match: IfNoneMatch::parse([installed.as_bytes()])?,
                validators: Some(header),
                query,
            },
            None => DeviceRequest {
                query,
                if_none_match: header,
                validators: None,
            },
        })
    }

    pub fn query(&self) -> &DeviceQuery {
        &self.query
    }

    /// What the device has: `installed=`, else its `If-None-Match`.
    pub fn if_none_match(&self) -> &IfNoneMatch {
        &self.if_none_match
    }
}

impl RuleSet {
    /// The plan that answers `request`: one channel per app for its query, the release
    /// each serves this device (its rollouts, the versions it runs), then what of it
    /// the device already has.
    pub fn answer(&self, request: &DeviceRequest) -> Result<PackagePlan, NoPackage> {
        let selection = self.resolve(request.query())?;
        let device = self.device(request.query(), request.if_none_match());
        let served: Vec<Served<'_>> = selection
            .items
            .iter()
            .map(|selected| self.serve(selected, &device))
            .collect();
        let plan = PackagePlan::new(&served, request.if_none_match(), request.query().payload());
        Ok(match &request.validators {
            Some(validators) => plan.with_validators(validators),
            None => plan,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::demo_set;

    const SAMPLE_QUERY: &str = "cpuArch=armv8&attrGamer=prod&attrCellular=prod";

    fn request(query: &str, if_none_match: &[&str]) -> Result<DeviceRequest, BadRequest> {
        DeviceRequest::parse(query, if_none_match.iter().map(|line| line.as_bytes()))
    }

    #[test]
    fn bad_query_is_refused_as_a_query_error() {
        assert_eq!(
            request("os=beta", &[]),
            Err(BadRequest::Query(QueryError::MissingCpuArch))
        );
        // A bad query is named even when the header is bad too.
        assert_eq!(
            request("cpuArch=armv8&cpuarch=armv7", &["\"open"]),
            Err(BadRequest::Query(QueryError::Repeated {
                name: "cpuarch".to_owned()
            }))
        );
    }

    #[test]
    fn bad_if_none_match_is_refused_as_a_conditional_error() {
        assert_eq!(
            request("cpuArch=armv8", &["ok, \"open"]),
            Err(BadRequest::Conditional(ConditionalError::Malformed {
                near: "\"open".to_owned()
            }))
        );
    }

    #[test]
    fn refusal_keeps_the_message_of_its_cause() {
        let query = request("os=beta", &[]).expect_err("no cpuArch");
        assert_eq!(query.to_string(), QueryError::MissingCpuArch.to_string());
        let header = request("cpuArch=armv8", &["a b"]).expect_err("malformed");
        assert_eq!(
            header.to_string(),
            ConditionalError::Malformed {
                near: "a b".to_owned()
            }
            .to_string()
        );
    }

    #[test]
    fn request_holds_the_parsed_query_and_if_none_match() {
        let request = request(SAMPLE_QUERY, &["a, \"b\"", "W/\"c\""]).expect("a valid request");
        assert_eq!(
            request.query(),
            &DeviceQuery::parse(SAMPLE_QUERY).expect("a valid query")
        );
        assert!(request.if_none_match().tags().eq(["a", "b", "c"]));
    }

    #[test]
    fn answer_is_the_plan_of_parse_resolve_and_new_by_hand() {
        let set = demo_set();
        let os = &set.get("os_armv8", "prod").expect("the prod OS").md5;
        for (query, lines) in [
            (SAMPLE_QUERY, vec![]),
            (SAMPLE_QUERY, vec![os.as_str()]),
            ("cpuArch=armv8&os=beta&payloadType=metadataOnly", vec!["*"]),
            ("cpuArch=armv7&attrCamera=beta", vec!["x", "y, z"]),
        ] {
            let by_hand = {
                let parsed = DeviceQuery::parse(query).expect("a valid query");
                let if_none_match = IfNoneMatch::parse(lines.iter().map(|line| line.as_bytes()))
                    .expect("a valid If-None-Match");
                let selection = set.resolve(&parsed).expect("a package");
                // Without history or rollouts, each app serves its current release, and
                // a device runs the version whose digest it lists.
                let served: Vec<Served<'_>> = selection
                    .items
                    .iter()
                    .map(|selected| Served {
                        rule: selected.rule,
                        object: selected.object,
                        installed: if_none_match
                            .has_digest(&selected.rule.md5)
                            .then_some(selected.rule.version.as_str()),
                        mandatory: selected.rule.mandatory,
                        downgrade: false,
                    })
                    .collect();
                PackagePlan::new(&served, &if_none_match, parsed.payload())
            };
            let answered = set
                .answer(&request(query, &lines).expect("a valid request"))
                .expect("a package");
            assert_eq!(answered, by_hand, "{query} {lines:?}");
        }
    }

    #[test]
    fn answer_is_not_modified_when_the_device_names_it() {
        let set = demo_set();
        let first = set
            .answer(&request(SAMPLE_QUERY, &[]).expect("a valid request"))
            .expect("a package");
        assert!(!first.is_not_modified());
        let again = set
            .answer(&request(SAMPLE_QUERY, &[&first.etag().to_string()]).expect("a valid request"))
            .expect("a package");
        assert!(again.is_not_modified());
        assert_eq!(again.etag(), first.etag());
    }

    #[test]
    fn answer_without_a_matching_rule_is_no_package() {
        let request = request("cpuArch=x86", &[]).expect("a valid request");
        assert_eq!(demo_set().answer(&request), Err(NoPackage));
    }
}
