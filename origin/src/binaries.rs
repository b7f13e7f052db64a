//! Binaries on their own, by SHA-256: `GET|HEAD /binaries/<sha256>` sends the bytes of
//! an enabled release in the rules snapshot and nothing else in the store. The path
//! names the content, so a response never changes: caches keep it for a year, keyed on
//! the path alone, and a publish never needs to invalidate it.

use std::sync::Arc;

use fleetpack_resolver::{BINARIES_PREFIX, IfNoneMatch, ObjectLocation};
use fleetpack_store::binary::write_checked;
use fleetpack_store::splice::{self, Part};
use fleetpack_store::{Store, StoreObject};
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    IF_RANGE, RANGE,
};
use http::{HeaderValue, Request, Response, StatusCode};

use crate::app::{App, RequestError};
use crate::body::{self, Body, BodyCounters, end_body, on_blocking_thread};
use crate::metrics::Metrics;
use crate::range::{self, RangeRequest};

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");

/// Answers `GET|HEAD /binaries/<sha256>`: 200 or 206 with the bytes, 304 when
/// `If-None-Match` names them. HEAD reads nothing from the store.
pub async fn binary<S: Store, B>(
    app: &Arc<App<S>>,
    request: &Request<B>,
    head: bool,
) -> Result<Response<Body>, RequestError> {
    let path = request.uri().path();
    let sha256 = path
        .strip_prefix(BINARIES_PREFIX)
        .filter(|name| is_sha256(name))
        .ok_or_else(|| RequestError::BadBinaryName {
            name: path.chars().take(100).collect(),
        })?;
    let headers = request.headers();
    let validators = IfNoneMatch::parse(
        headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .map(|value| value.as_bytes()),
    )
    .map_err(fleetpack_resolver::BadRequest::from)?;
    let snapshot = app.rules.current().ok_or(RequestError::NotReady)?;
    let (rule, object) = snapshot
        .rules
        .binary(sha256)
        .ok_or(RequestError::NoBinary)?;
    let len = rule
        .size
        .expect("RuleSet::binary finds releases with a size");
    let object = object.clone();
    let etag = HeaderValue::try_from(format!("\"{sha256}\""))?;

    let mut response = Response::new(body::empty());
    let response_headers = response.headers_mut();
    response_headers.insert(ETAG, etag.clone());
    response_headers.insert(CACHE_CONTROL, IMMUTABLE);
    if validators.matches_any() || validators.has_digest(sha256) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    response_headers.insert(CONTENT_TYPE, OCTET_STREAM);
    response_headers.insert(ACCEPT_RANGES, BYTES);
    if head {
        // HEAD ignores Range, as for packages: it tells the whole length.
        response_headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        return Ok(response);
    }
    let range = match range::evaluate(
        headers.get(RANGE).map(HeaderValue::as_bytes),
        headers.get(IF_RANGE).map(HeaderValue::as_bytes),
        etag.as_bytes(),
        len,
    ) {
        RangeRequest::Unsatisfiable => return Err(RequestError::RangeNotSatisfiable { len }),
        RangeRequest::Full => None,
        RangeRequest::Partial { first, last } => {
            Some((first, last)).filter(|_| first > 0 || last + 1 < len)
        }
    };
    let opened = open(&app.store, &object, len, range).await?;
    let sent = match range {
        Some((first, last)) => {
            let range = format!("bytes {first}-{last}/{len}");
            response_headers.insert(CONTENT_RANGE, HeaderValue::try_from(range)?);
            last - first + 1
        }
        None => len,
    };
    response_headers.insert(CONTENT_LENGTH, HeaderValue::from(sent));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let (sink, body) = body::channel(Some(sent));
    Metrics::increment(&app.metrics.binaries_started);
    let app = Arc::clone(app);
    let sha256 = sha256.to_owned();
    tokio::spawn(async move {
        let key = object.key;
        let name = format!("binary {sha256}");
        let written = on_blocking_thread(sink, move |sink, runtime| match range {
            // A whole binary is checked against its SHA-256 before its last block.
            None => write_checked(sink, opened, &key, &sha256, runtime),
            // A part of one can be checked for its length only.
            Some(_) => splice::write_parts(sink, vec![Part::Slice(opened)], runtime),
        })
        .await;
        let metrics = &app.metrics;
        let counters = BodyCounters {
            completed: &metrics.binaries_completed,
            aborted: &metrics.binaries_aborted,
            client_gone: &metrics.binaries_client_gone,
        };
        end_body(written, counters, &name).await;
    });
    *response.body_mut() = body;
    Ok(response)
}

/// 64 lowercase hex digits: the one spelling, so that caches keep one copy.
fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Opens the bytes to send before the status line, so a missing or resized object is a
/// clean 503 rather than a cut connection.
async fn open<S: Store>(
    store: &S,
    object: &ObjectLocation,
    len: u64,
    range: Option<(u64, u64)>,
) -> Result<StoreObject, RequestError> {
    if let Some((first, last)) = range {
        return Ok(store
            .open_object_range(object, first, last - first + 1)
            .await?);
    }
    let opened = store.open_object(object).await?;
    if opened.len != len {
        return Err(RequestError::SizeMismatch {
            key: object.key.clone(),
            expected: len,
            actual: opened.len,
        });
    }
    Ok(opened)
}
