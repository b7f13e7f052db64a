//! The pure core of fleetpack: what a device asked for, which binaries that means,
//! and the package that answers it.
//!
//! Data flows one way: [`DeviceQuery::parse`] turns the raw query string into a typed
//! query, [`RuleSet::resolve`] selects one rule per app, and [`PackagePlan::new`] applies
//! the device's `If-None-Match` and fixes the package's content and strong [`ETag`].
//!
//! Invariant: this crate does no I/O and has no async code. Everything here is a function
//! of its inputs, so every origin instance computes the same plan, bytes and ETag.

mod cache_key;
mod conditional;
mod ident;
mod plan;
mod query;
mod rules;
mod version;

pub use cache_key::{canonical_if_none_match, canonical_query};
pub use conditional::{ConditionalError, IfNoneMatch, MAX_ENTITY_TAGS, MAX_IF_NONE_MATCH_BYTES};
pub use ident::{MAX_IDENT_LEN, is_ident};
pub use plan::{
    ARCHIVE_FORMAT, DEFLATE_LEVEL, DETAILS_FILE_NAME, ETag, EntryStatus, METADATA_FORMAT,
    PackagePlan, PlanEntry, TAR_ENTRY_MODE, TAR_ENTRY_MTIME, archive_format_id,
};
pub use query::{DeviceQuery, MAX_PARAMETERS, MAX_QUERY_BYTES, PayloadType, QueryError, Selector};
pub use rules::{
    NoPackage, ObjectLocation, Reason, Rejected, Rule, RuleError, RuleSet, SegmentRef, Selected,
    Selection, is_bucket_name,
};
pub use version::compare_versions;
