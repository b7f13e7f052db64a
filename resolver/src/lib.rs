//! The pure core of fleetpack: what a device asked for, which binaries that means,
//! and the package that answers it.
//!
//! Data flows one way: [`DeviceRequest::parse`] turns the raw query string and
//! `If-None-Match` into a typed request, and [`RuleSet::answer`] gives its
//! [`PackagePlan`]: [`RuleSet::resolve`] selects one rule per app, and
//! [`PackagePlan::new`] applies the device's `If-None-Match` and fixes the package's
//! content, its strong [`ETag`] and whether the answer is 304. The HTTP origin and the
//! operator CLI both take this path, so they cannot disagree about what a device gets.
//!
//! Modules depend downwards only: `request` on `plan`, `plan` on `rule_set`, `rule_set`
//! on `rule`, `rule` on `location` and `format`.
//!
//! Invariant: this crate does no I/O and has no async code. Everything here is a function
//! of its inputs, so every origin instance computes the same plan, bytes and ETag.

mod cache_key;
mod conditional;
#[cfg(test)]
mod fixtures;
mod format;
mod ident;
mod location;
mod plan;
mod query;
mod request;
mod rollout;
mod rule;
mod rule_set;
mod serve;
mod version;

pub use cache_key::{
    CanonicalRequest, RolloutState, canonical_if_none_match, canonical_query, canonical_request,
};
pub use conditional::{ConditionalError, IfNoneMatch, MAX_ENTITY_TAGS, MAX_IF_NONE_MATCH_BYTES};
pub use format::{
    ARCHIVE_FORMAT, DEFLATE_LEVEL, DETAILS_FILE_NAME, ETag, METADATA_FORMAT, TAR_ENTRY_MODE,
    TAR_ENTRY_MTIME, archive_format_id,
};
pub use ident::{MAX_IDENT_LEN, is_ident};
pub use location::{BadUrl, ObjectLocation, is_bucket_name};
pub use plan::{BINARIES_PREFIX, EntryStatus, PackagePlan, PlanEntry};
pub use query::{
    DeviceQuery, INSTALLED, MAX_PARAMETERS, MAX_QUERY_BYTES, PayloadType, QueryError, Selector,
};
pub use request::{BadRequest, DeviceRequest};
pub use rollout::{ROLLOUT_ID_LEN, is_member, rollout_id, rollout_position};
pub use rule::{Rollout, Rule, RuleError, SEGMENT_BLOCK, SegmentBlocks, SegmentRef, StoredRules};
pub use rule_set::{NoPackage, Reason, Rejected, RuleSet, Selected, Selection};
pub use serve::Served;
pub use version::compare_versions;
