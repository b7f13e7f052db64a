//! Answers reused across requests. While the rules snapshot stays the same, a package's
//! plan is a function of the raw query string and `If-None-Match`, so a request that
//! repeats one of them costs a lookup instead of parsing, resolution, rendering and
//! hashing. Each snapshot has its own cache, dropped with it: a rules change never
//! serves an old answer.

use std::sync::Arc;

use bytes::Bytes;
use fleetpack_resolver::{PackagePlan, PayloadType};
use fleetpack_store::archive::ArchiveError;
use fleetpack_store::splice::Spliced;
use http::HeaderValue;
use http::header::InvalidHeaderValue;

/// What a request's query and `If-None-Match` resolve to under one rules snapshot.
#[derive(Debug)]
pub struct Answer {
    pub plan: PackagePlan,
    /// 304: the device has every binary, or listed this response's ETag or `*`.
    pub not_modified: bool,
    pub etag: HeaderValue,
    /// The metadata document, ready to send, and its length as a header value.
    pub details: Bytes,
    pub details_len: HeaderValue,
    /// How to splice the full payload from stored segments; `None` for metadata
    /// answers and when some binary has no segment.
    pub spliced: Option<Spliced>,
}

impl Answer {
    /// Everything a response of `plan` needs that can be made ahead: header values, the
    /// metadata document as bytes, and for a full payload, how to splice it.
    pub async fn new(plan: PackagePlan) -> Result<Self, AnswerError> {
        let not_modified = plan.is_not_modified();
        let spliced = if not_modified || plan.payload() == PayloadType::MetadataOnly {
            None
        } else {
            Spliced::plan(plan.details_json(), plan.to_send()).await?
        };
        Ok(Answer {
            not_modified,
            etag: HeaderValue::try_from(plan.etag().to_string())?,
            details: Bytes::copy_from_slice(plan.details_json()),
            details_len: HeaderValue::from(plan.details_json().len()),
            spliced,
            plan,
        })
    }
}

/// Why an answer could not be made: a bug, never the device's input.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("the ETag is not a valid header value")]
    Header(#[from] InvalidHeaderValue),
}

/// Answers keyed by the raw request parts they were computed from, bounded in bytes.
#[derive(Debug, Clone)]
pub struct AnswerCache {
    answers: Option<moka::sync::Cache<Vec<u8>, Arc<Answer>>>,
}

impl AnswerCache {
    /// A cache of at most `max_bytes` of answers (0: no reuse).
    pub fn new(max_bytes: u64) -> Self {
        let answers = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &Vec<u8>, answer: &Arc<Answer>| {
                    let spliced = answer.spliced.as_ref().map_or(0, Spliced::made_len);
                    let weight = key.len() + 2 * answer.details.len() + spliced + 512;
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .build()
        });
        AnswerCache { answers }
    }

    pub fn get(&self, key: &RequestKey) -> Option<Arc<Answer>> {
        self.answers.as_ref()?.get(key.as_bytes())
    }

    pub fn insert(&self, key: RequestKey, answer: Arc<Answer>) {
        if let Some(answers) = &self.answers {
            answers.insert(key.into_bytes(), answer);
        }
    }
}

/// The raw query string and `If-None-Match` lines of a request, as one key. Most
/// requests carry no `If-None-Match`; their key borrows the query.
#[derive(Debug)]
pub enum RequestKey<'a> {
    Query(&'a str),
    WithConditions(Vec<u8>),
}

impl<'a> RequestKey<'a> {
    pub fn new<'h>(query: &'a str, if_none_match: impl IntoIterator<Item = &'h [u8]>) -> Self {
        let mut lines = if_none_match.into_iter().peekable();
        if lines.peek().is_none() {
            return RequestKey::Query(query);
        }
        // A NUL cannot appear in a request target, so the two parts cannot run together.
        let mut key = query.as_bytes().to_vec();
        for line in lines {
            key.push(0);
            key.extend_from_slice(line);
        }
        RequestKey::WithConditions(key)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestKey::Query(query) => query.as_bytes(),
            RequestKey::WithConditions(key) => key,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            RequestKey::Query(query) => query.as_bytes().to_vec(),
            RequestKey::WithConditions(key) => key,
        }
    }
}
