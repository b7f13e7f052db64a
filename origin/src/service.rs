//! The request path: parse -> resolve -> plan -> respond (or stream), and the one
//! function that turns an error into a response.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use fleetpack_resolver::{
    ConditionalError, DeviceQuery, ETag, IfNoneMatch, NoPackage, PackagePlan, PayloadType,
    QueryError,
};
use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE, RETRY_AFTER, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::answers::{Answer, RequestKey};
use crate::archive::{self, ArchiveError, PackageObject, Part, Spliced};
use crate::body::{self, Body, ChannelSink};
use crate::config::{CachePolicy, ServeConfig};
use crate::metrics::Metrics;
use crate::range::{self, RangeRequest};
use crate::snapshot::Rules;
use crate::store::{Store, StoreError};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const GZIP: HeaderValue = HeaderValue::from_static("application/gzip");
const ATTACHMENT: HeaderValue =
    HeaderValue::from_static("attachment; filename=\"ota-package.tar.gz\"");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");
/// The header in which the CDN sends the origin secret.
const ORIGIN_VERIFY: &str = "x-origin-verify";
/// A package's body depends on `If-None-Match` (binaries the device has are left out),
/// so a cache keyed on the URL alone must keep one response per header value.
const VARY_IF_NONE_MATCH: HeaderValue = HeaderValue::from_static("if-none-match");

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App<S> {
    pub store: S,
    pub rules: Rules,
    pub metrics: Metrics,
    pub config: ServeConfig,
}

/// Why a request failed; [`error_response`] maps each kind to its status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Conditional(#[from] ConditionalError),
    #[error(transparent)]
    NoPackage(#[from] NoPackage),
    #[error("no such resource; devices call GET /package?cpuArch=<arch>")]
    UnknownPath,
    #[error(
        "this origin answers only requests that come through its CDN (they carry the X-Origin-Verify header); call the CDN's address"
    )]
    NotThroughCdn,
    #[error("method not allowed; use GET or HEAD")]
    MethodNotAllowed,
    #[error("the release rules are not loaded yet; retry shortly")]
    NotReady,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the range starts past the end of the {len}-byte package; ask for bytes below {len}")]
    RangeNotSatisfiable { len: u64 },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("object `{key}` is {actual} bytes long, but its rule says {expected}")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
}

/// Answers one request. Never fails: every error becomes a response here.
pub async fn handle<S: Store, B>(
    app: Arc<App<S>>,
    request: Request<B>,
) -> Result<Response<Body>, Infallible> {
    let response = match route(&app, &request).await {
        Ok(response) => response,
        Err(error) => error_response(&error, &app.config),
    };
    app.metrics.count_response(response.status().as_u16());
    Ok(response)
}

async fn route<S: Store, B>(
    app: &Arc<App<S>>,
    request: &Request<B>,
) -> Result<Response<Body>, RequestError> {
    let path = request.uri().path();
    let probe = matches!(path, "/healthz" | "/readyz");
    if let Some(secret) = app.config.origin_secret.as_ref().filter(|_| !probe) {
        let sent = request.headers().get(ORIGIN_VERIFY);
        if !sent.is_some_and(|sent| secret.verifies(sent.as_bytes())) {
            return Err(RequestError::NotThroughCdn);
        }
    }
    if !probe && !matches!(path, "/package" | "/metrics") {
        return Err(RequestError::UnknownPath);
    }
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    match path {
        "/package" => package(app, request, head).await,
        "/healthz" => Ok(respond(
            StatusCode::OK,
            "text/plain",
            NO_STORE,
            "ok\n",
            head,
        )),
        "/readyz" => Ok(readiness(app, head)),
        _ => Ok(respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            NO_STORE,
            app.metrics.render(),
            head,
        )),
    }
}

async fn package<S: Store, B>(
    app: &Arc<App<S>>,
    request: &Request<B>,
    head: bool,
) -> Result<Response<Body>, RequestError> {
    let query = request.uri().query().unwrap_or_default();
    let if_none_match = request.headers().get_all(IF_NONE_MATCH);
    let key = RequestKey::new(query, if_none_match.iter().map(HeaderValue::as_bytes));
    let reused = app
        .rules
        .peek()
        .as_ref()
        .and_then(|snapshot| snapshot.answers.get(&key));
    let answer = match reused {
        Some(answer) => {
            Metrics::increment(&app.metrics.answers_reused);
            answer
        }
        None => {
            // Bad input is a 400 even before the rules are loaded.
            let query = DeviceQuery::parse(query)?;
            let if_none_match =
                IfNoneMatch::parse(if_none_match.iter().map(HeaderValue::as_bytes))?;
            let snapshot = app.rules.current().ok_or(RequestError::NotReady)?;
            let selection = snapshot.rules.resolve(&query)?;
            let plan = PackagePlan::new(&selection, &if_none_match, query.payload());
            let answer = Arc::new(answer_for(plan, &if_none_match).await?);
            snapshot.answers.insert(key, Arc::clone(&answer));
            answer
        }
    };
    let cache = &app.config.cache;
    if answer.not_modified || answer.plan.payload() == PayloadType::MetadataOnly {
        return Ok(small_response(&answer, cache, head));
    }
    let response = full_payload(&answer, cache);
    if answer.spliced.is_some() {
        spliced_package(app, request, head, answer, response).await
    } else {
        live_package(app, head, answer, response).await
    }
}

async fn answer_for(
    plan: PackagePlan,
    if_none_match: &IfNoneMatch,
) -> Result<Answer, RequestError> {
    let not_modified = plan.is_not_modified(if_none_match);
    let spliced = if not_modified || plan.payload() == PayloadType::MetadataOnly {
        None
    } else {
        Spliced::plan(plan.details_json(), plan.to_send()).await?
    };
    Ok(Answer {
        not_modified,
        etag: etag_value(plan.etag()),
        details: Bytes::copy_from_slice(plan.details_json()),
        details_len: HeaderValue::from(plan.details_json().len()),
        spliced,
        plan,
    })
}

/// A package assembled from stored segments: exact length, byte ranges.
async fn spliced_package<S: Store, B>(
    app: &Arc<App<S>>,
    request: &Request<B>,
    head: bool,
    answer: Arc<Answer>,
    response: http::response::Builder,
) -> Result<Response<Body>, RequestError> {
    let spliced = answer.spliced.as_ref().expect("a spliced answer");
    let len = spliced.len();
    let etag = answer.etag.to_str().expect("an ETag is quoted hex");
    let headers = request.headers();
    let range = range::evaluate(
        headers.get(RANGE).map(HeaderValue::as_bytes),
        headers.get(IF_RANGE).map(HeaderValue::as_bytes),
        etag,
        len,
    );
    let response = response.header(ACCEPT_RANGES, "bytes");
    if head {
        // HEAD reads no objects and ignores Range: it tells the whole package's length.
        return Ok(response
            .header(CONTENT_LENGTH, len)
            .body(body::empty())
            .expect("valid response parts"));
    }
    let (response, first_last) = match range {
        RangeRequest::Unsatisfiable => return Err(RequestError::RangeNotSatisfiable { len }),
        RangeRequest::Full => (response, None),
        RangeRequest::Partial { first, last } => (
            response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_RANGE, format!("bytes {first}-{last}/{len}")),
            Some((first, last)),
        ),
    };
    let parts = match spliced.open(&app.store, first_last).await {
        Ok(parts) => parts,
        Err(error) => {
            // Never a wrong body: a segment that is missing or of another length sends
            // this request down the streaming path, which compresses the same bytes.
            tracing::warn!(etag = %etag, error = %error, "stored segment unusable; compressing this package as it streams");
            Metrics::increment(&app.metrics.spliced_fallbacks);
            let response = full_payload(&answer, &app.config.cache);
            return live_package(app, false, answer, response).await;
        }
    };
    let sent = first_last.map_or(len, |(first, last)| last - first + 1);
    let (sink, body) = body::channel(Some(sent));
    Metrics::increment(&app.metrics.packages_spliced);
    tokio::spawn(stream_package(
        Arc::clone(app),
        Arc::clone(&answer),
        Source::Spliced(parts),
        sink,
    ));
    Ok(response.body(body).expect("valid response parts"))
}

/// A package compressed as it streams: no length ahead, no ranges.
async fn live_package<S: Store>(
    app: &Arc<App<S>>,
    head: bool,
    answer: Arc<Answer>,
    response: http::response::Builder,
) -> Result<Response<Body>, RequestError> {
    let response = response.header(ACCEPT_RANGES, "none");
    if head {
        return Ok(response.body(body::empty()).expect("valid response parts"));
    }
    let objects = open_objects(&app.store, &answer.plan).await?;
    let (sink, body) = body::channel(None);
    tokio::spawn(stream_package(
        Arc::clone(app),
        answer,
        Source::Live(objects),
        sink,
    ));
    Ok(response.body(body).expect("valid response parts"))
}

/// Where a package's bytes come from.
#[derive(Debug)]
enum Source {
    Live(Vec<PackageObject>),
    Spliced(Vec<Part>),
}

/// Opens every binary to send before the status line, so that a missing object is a
/// clean 503 rather than a cut connection.
async fn open_objects<S: Store>(
    store: &S,
    plan: &PackagePlan,
) -> Result<Vec<PackageObject>, RequestError> {
    let mut objects = Vec::new();
    for entry in plan.to_send() {
        let object = store.open_object(&entry.object).await?;
        if let Some(expected) = entry.size.filter(|&size| size != object.len) {
            return Err(RequestError::SizeMismatch {
                key: entry.object.key.clone(),
                expected,
                actual: object.len,
            });
        }
        objects.push(PackageObject {
            entry: entry.clone(),
            object,
        });
    }
    Ok(objects)
}

async fn stream_package<S: Store>(
    app: Arc<App<S>>,
    answer: Arc<Answer>,
    source: Source,
    mut sink: ChannelSink,
) {
    let metrics = &app.metrics;
    Metrics::increment(&metrics.packages_started);
    let written = match source {
        Source::Live(objects) => archive::write_package(&mut sink, &answer.details, objects).await,
        Source::Spliced(parts) => {
            // The whole download on one blocking thread (bounded by the connection cap):
            // each block goes from the disk read to the connection without a task hop.
            let runtime = tokio::runtime::Handle::current();
            let sent = tokio::task::spawn_blocking(move || {
                let written = archive::write_parts(&mut sink, parts, &runtime);
                (sink, written)
            })
            .await;
            match sent {
                Ok((returned, written)) => {
                    sink = returned;
                    written
                }
                Err(panicked) => {
                    Metrics::increment(&metrics.packages_aborted);
                    tracing::error!(etag = %answer.plan.etag(), error = %panicked, "package writer failed");
                    return;
                }
            }
        }
    };
    match written {
        Ok(()) => Metrics::increment(&metrics.packages_completed),
        Err(error) if sink.is_closed() => {
            Metrics::increment(&metrics.packages_client_gone);
            tracing::debug!(etag = %answer.plan.etag(), error = %error, "client left during a package");
        }
        Err(error) => {
            Metrics::increment(&metrics.packages_aborted);
            tracing::error!(etag = %answer.plan.etag(), error = %error, "package aborted after the status line");
            sink.abort(io::Error::other(error.to_string())).await;
        }
    }
}

fn readiness<S: Store>(app: &App<S>, head: bool) -> Response<Body> {
    let snapshot = app.rules.current();
    let state = app.rules.state();
    let rfc3339 = |time| humantime::format_rfc3339_seconds(time).to_string();
    let report = serde_json::json!({
        "ready": snapshot.is_some(),
        "store": app.store.describe(),
        "rules": snapshot.as_ref().map(|snapshot| snapshot.rules.len()),
        "rejectedRules": snapshot.as_ref().map(|snapshot| snapshot.rejected),
        "loadedAt": snapshot.as_ref().map(|snapshot| rfc3339(snapshot.loaded_at)),
        "lastRefreshError": state.last_error,
        "lastRefreshErrorAt": state.last_error_at.map(rfc3339),
    });
    let status = if snapshot.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut text = serde_json::to_vec_pretty(&report).expect("JSON values serialize");
    text.push(b'\n');
    respond(status, "application/json", NO_STORE, text, head)
}

/// The one place where an error becomes a status code: bad input 400, nothing to
/// serve 404, store trouble 503 with `Retry-After`. Store details go to the log, not
/// to the device.
fn error_response(error: &RequestError, config: &ServeConfig) -> Response<Body> {
    let (status, message) = match error {
        RequestError::Query(_) | RequestError::Conditional(_) => {
            (StatusCode::BAD_REQUEST, error.to_string())
        }
        RequestError::NoPackage(_) | RequestError::UnknownPath => {
            (StatusCode::NOT_FOUND, error.to_string())
        }
        RequestError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, error.to_string()),
        RequestError::NotThroughCdn => (StatusCode::FORBIDDEN, error.to_string()),
        RequestError::RangeNotSatisfiable { .. } => {
            (StatusCode::RANGE_NOT_SATISFIABLE, error.to_string())
        }
        RequestError::Archive(_) => {
            tracing::error!(error = %error, "cannot plan a package");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the package cannot be built; this is a bug in the origin".to_owned(),
            )
        }
        RequestError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        RequestError::Store(_) | RequestError::SizeMismatch { .. } => {
            tracing::error!(error = %error, "package store failure");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the package store is unavailable; retry later".to_owned(),
            )
        }
    };
    // Neither a store outage nor a request that skipped the CDN may be cached.
    let cache_control = match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::FORBIDDEN => NO_STORE,
        _ => config.cache.client_error.clone(),
    };
    let mut text = serde_json::to_vec(&serde_json::json!({ "error": message }))
        .expect("JSON values serialize");
    text.push(b'\n');
    let mut response = respond(status, "application/json", cache_control, text, false);
    let headers = response.headers_mut();
    // A malformed If-None-Match is a 400 of its own.
    headers.insert(VARY, VARY_IF_NONE_MATCH);
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(ALLOW, GET_HEAD);
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(RETRY_AFTER, config.cache.retry_after.clone());
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            if let RequestError::RangeNotSatisfiable { len } = error {
                let unsatisfied = HeaderValue::try_from(format!("bytes */{len}"));
                headers.insert(CONTENT_RANGE, unsatisfied.expect("digits and ASCII"));
            }
        }
        _ => {}
    }
    response
}

/// What every 200, 206 and 304 of a package carries.
fn cache_headers(headers: &mut HeaderMap, etag: &HeaderValue, cache: &CachePolicy) {
    headers.insert(ETAG, etag.clone());
    headers.insert(CACHE_CONTROL, cache.success.clone());
    headers.insert(VARY, VARY_IF_NONE_MATCH);
}

/// A 304 or a metadata 200, from an answer: the path of most metadata requests, so
/// every header is a clone of a value made once.
fn small_response(answer: &Answer, cache: &CachePolicy, head: bool) -> Response<Body> {
    let metadata = !answer.not_modified;
    let mut response = Response::new(if metadata && !head {
        body::full(answer.details.clone())
    } else {
        body::empty()
    });
    let headers = response.headers_mut();
    cache_headers(headers, &answer.etag, cache);
    if metadata {
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(CONTENT_LENGTH, answer.details_len.clone());
    } else {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    response
}

/// The head of a full payload: a file to save, not an encoding to undo.
fn full_payload(answer: &Answer, cache: &CachePolicy) -> http::response::Builder {
    let mut response = Response::builder().status(StatusCode::OK);
    if let Some(headers) = response.headers_mut() {
        cache_headers(headers, &answer.etag, cache);
        headers.insert(CONTENT_TYPE, GZIP);
        headers.insert(CONTENT_DISPOSITION, ATTACHMENT);
    }
    response
}

fn etag_value(etag: &ETag) -> HeaderValue {
    HeaderValue::try_from(etag.to_string()).expect("an ETag is quoted hex")
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    cache_control: HeaderValue,
    bytes: impl Into<bytes::Bytes>,
    head: bool,
) -> Response<Body> {
    let response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, cache_control);
    with_body(response, bytes, head)
}

/// Finishes a response with an in-memory body; HEAD gets its length but not its bytes.
fn with_body(
    response: http::response::Builder,
    bytes: impl Into<bytes::Bytes>,
    head: bool,
) -> Response<Body> {
    let bytes = bytes.into();
    let response = response.header(CONTENT_LENGTH, bytes.len());
    let body = if head {
        body::empty()
    } else {
        body::full(bytes)
    };
    response.body(body).expect("valid response parts")
}
