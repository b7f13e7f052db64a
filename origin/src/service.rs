//! The request path: route, then parse -> resolve -> plan (or reuse the answer) ->
//! respond from memory or stream the package; and the one function that turns an error
//! into a response.

use std::convert::Infallible;
use std::sync::Arc;

use fleetpack_resolver::{BINARIES_PREFIX, DeviceRequest, PackagePlan, PayloadType};
use fleetpack_store::archive::{self, PackageObject};
use fleetpack_store::splice::{self, Part};
use fleetpack_store::{Store, StoreError};
use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH, IF_RANGE, RANGE, RETRY_AFTER, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};

use crate::answers::{Answer, RequestKey};
use crate::app::{App, RequestError};
use crate::binaries;
use crate::body::{self, Body, BodyCounters, ChannelSink, end_body, on_blocking_thread};
use crate::config::{CachePolicy, ServeConfig};
use crate::metrics::Metrics;
use crate::range::{self, RangeRequest};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const GZIP: HeaderValue = HeaderValue::from_static("application/gzip");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain");
const PROMETHEUS_TEXT: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4");
const ATTACHMENT: HeaderValue =
    HeaderValue::from_static("attachment; filename=\"ota-package.tar.gz\"");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const NONE: HeaderValue = HeaderValue::from_static("none");
/// The header in which the CDN sends the origin secret.
const ORIGIN_VERIFY: &str = "x-origin-verify";
/// A package's body depends on `If-None-Match` (binaries the device has are left out),
/// so a cache keyed on the URL alone must keep one response per header value.
const VARY_IF_NONE_MATCH: HeaderValue = HeaderValue::from_static("if-none-match");

/// What a request's path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Package,
    Binary,
    Health,
    Ready,
    Metrics,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/package" => Some(Route::Package),
            "/healthz" => Some(Route::Health),
            "/readyz" => Some(Route::Ready),
            "/metrics" => Some(Route::Metrics),
            _ if path.starts_with(BINARIES_PREFIX) => Some(Route::Binary),
            _ => None,
        }
    }

    /// Probes answer the load balancer, which does not send the origin secret.
    fn is_probe(self) -> bool {
        matches!(self, Route::Health | Route::Ready)
    }
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
    let hosts = request.headers().get_all(HOST).iter().count();
    if request.version() == Version::HTTP_11 && hosts != 1 {
        return Err(RequestError::BadHost(hosts));
    }
    let route = Route::of(request.uri().path());
    if let Some(secret) = &app.config.origin_secret
        && !route.is_some_and(Route::is_probe)
    {
        // Exactly one line: with two, which one a proxy checked is anyone's guess.
        let mut sent = request.headers().get_all(ORIGIN_VERIFY).iter();
        let verified = match (sent.next(), sent.next()) {
            (Some(sent), None) => secret.verifies(sent.as_bytes()),
            _ => false,
        };
        if !verified {
            return Err(RequestError::NotThroughCdn);
        }
    }
    let route = route.ok_or(RequestError::UnknownPath)?;
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    match route {
        Route::Package => package(app, request, head).await,
        Route::Binary => binaries::binary(app, request, head).await,
        Route::Health => Ok(respond(StatusCode::OK, TEXT, NO_STORE, "ok\n", head)),
        Route::Ready => Ok(readiness(app, head)),
        Route::Metrics => Ok(respond(
            StatusCode::OK,
            PROMETHEUS_TEXT,
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
    let answer = answer(app, request).await?;
    if answer.not_modified || answer.plan.payload() == PayloadType::MetadataOnly {
        return Ok(small_response(&answer, &app.config.cache, head));
    }
    let delivery = delivery(app, request, &answer, head).await?;
    package_response(app, answer, delivery, head)
}

/// The answer to a request's query and `If-None-Match`: reused when the same request
/// was answered under the current rules, else parsed, resolved and planned.
async fn answer<S: Store, B>(
    app: &Arc<App<S>>,
    request: &Request<B>,
) -> Result<Arc<Answer>, RequestError> {
    let query = request.uri().query().unwrap_or_default();
    let if_none_match = request.headers().get_all(IF_NONE_MATCH);
    let key = RequestKey::new(query, if_none_match.iter().map(HeaderValue::as_bytes));
    let reused = app
        .rules
        .peek()
        .as_ref()
        .and_then(|snapshot| snapshot.answers.get(&key));
    if let Some(answer) = reused {
        Metrics::increment(&app.metrics.answers_reused);
        return Ok(answer);
    }
    // Bad input is a 400 even before the rules are loaded.
    let device = DeviceRequest::parse(query, if_none_match.iter().map(HeaderValue::as_bytes))?;
    let snapshot = app.rules.current().ok_or(RequestError::NotReady)?;
    let answer = Arc::new(Answer::new(snapshot.rules.answer(&device)?).await?);
    snapshot.answers.insert(key, Arc::clone(&answer));
    Ok(answer)
}

/// How a full payload reaches the device, decided once per request.
#[derive(Debug)]
enum Delivery {
    /// Spliced from stored segments: exact length, byte ranges. `range` is the one
    /// range asked for; `parts` are opened (none for HEAD, which reads nothing).
    Spliced {
        len: u64,
        range: Option<(u64, u64)>,
        parts: Vec<Part>,
    },
    /// Compressed as it streams: no length ahead, no ranges. The binaries are opened
    /// before the status line (none for HEAD).
    Live(Vec<PackageObject>),
}

/// Splices the package when its answer has stored segments and they open as their
/// rules say; else compresses it as it streams, which gives the same bytes.
async fn delivery<S: Store, B>(
    app: &App<S>,
    request: &Request<B>,
    answer: &Answer,
    head: bool,
) -> Result<Delivery, RequestError> {
    if let Some(spliced) = &answer.spliced {
        let len = spliced.len();
        if head {
            // HEAD reads no objects and ignores Range: it tells the whole length.
            return Ok(Delivery::Spliced {
                len,
                range: None,
                parts: Vec::new(),
            });
        }
        let headers = request.headers();
        let range = match range::evaluate(
            headers.get(RANGE).map(HeaderValue::as_bytes),
            headers.get(IF_RANGE).map(HeaderValue::as_bytes),
            answer.etag.as_bytes(),
            len,
        ) {
            RangeRequest::Unsatisfiable => return Err(RequestError::RangeNotSatisfiable { len }),
            RangeRequest::Full => None,
            RangeRequest::Partial { first, last } => Some((first, last)),
        };
        match spliced.open(&app.store, range).await {
            Ok(parts) => return Ok(Delivery::Spliced { len, range, parts }),
            // A store that does not answer would not answer the live path either.
            Err(error @ (StoreError::Service { .. } | StoreError::Io { .. })) => {
                return Err(error.into());
            }
            Err(error) => {
                // Never a wrong body: a segment that is missing or of another length
                // sends this request down the streaming path, same bytes, no ranges.
                tracing::warn!(etag = %answer.plan.etag(), error = &error as &dyn std::error::Error, "stored segment unusable; compressing this package as it streams");
                Metrics::increment(&app.metrics.spliced_fallbacks);
            }
        }
    }
    let objects = if head {
        Vec::new()
    } else {
        open_objects(&app.store, &answer.plan).await?
    };
    Ok(Delivery::Live(objects))
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

/// The response of a full payload: its head, and its body streamed by a task of its own.
fn package_response<S: Store>(
    app: &Arc<App<S>>,
    answer: Arc<Answer>,
    delivery: Delivery,
    head: bool,
) -> Result<Response<Body>, RequestError> {
    let mut response = Response::new(body::empty());
    let headers = response.headers_mut();
    cache_headers(headers, &answer, &app.config.cache);
    // A file to save, not an encoding to undo.
    headers.insert(CONTENT_TYPE, GZIP);
    headers.insert(CONTENT_DISPOSITION, ATTACHMENT);
    let body_len = match &delivery {
        Delivery::Spliced { len, range, .. } => {
            headers.insert(ACCEPT_RANGES, BYTES);
            let sent = match *range {
                Some((first, last)) => {
                    let range = format!("bytes {first}-{last}/{len}");
                    headers.insert(CONTENT_RANGE, HeaderValue::try_from(range)?);
                    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                    last - first + 1
                }
                None => *len,
            };
            Some(sent)
        }
        Delivery::Live(_) => {
            headers.insert(ACCEPT_RANGES, NONE);
            None
        }
    };
    if head {
        if let Some(len) = body_len {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        return Ok(response);
    }
    let (sink, body) = body::channel(body_len);
    if let Delivery::Spliced { .. } = delivery {
        Metrics::increment(&app.metrics.packages_spliced);
    }
    tokio::spawn(stream_package(Arc::clone(app), answer, delivery, sink));
    *response.body_mut() = body;
    Ok(response)
}

async fn stream_package<S: Store>(
    app: Arc<App<S>>,
    answer: Arc<Answer>,
    delivery: Delivery,
    mut sink: ChannelSink,
) {
    let metrics = &app.metrics;
    Metrics::increment(&metrics.packages_started);
    let written = match delivery {
        Delivery::Live(objects) => {
            let written = archive::write_package(&mut sink, &answer.details, objects).await;
            Some((sink, written))
        }
        // The whole download on one blocking thread (bounded by the connection cap):
        // each block goes from the disk read to the connection without a task hop.
        Delivery::Spliced { parts, .. } => {
            on_blocking_thread(sink, move |sink, runtime| {
                splice::write_parts(sink, parts, runtime)
            })
            .await
        }
    };
    let counters = BodyCounters {
        completed: &metrics.packages_completed,
        aborted: &metrics.packages_aborted,
        client_gone: &metrics.packages_client_gone,
    };
    end_body(written, counters, &answer.plan.etag().to_string()).await;
}

/// Ready while rules are served and a refresh read the store within the allowed age.
fn readiness<S: Store>(app: &App<S>, head: bool) -> Response<Body> {
    let snapshot = app.rules.current();
    let state = app.rules.state();
    let rfc3339 = |time| humantime::format_rfc3339_seconds(time).to_string();
    let age = state
        .confirmed_at
        .map(|at| at.elapsed().unwrap_or_default());
    let fresh = age.is_some_and(|age| age <= app.config.max_rules_age);
    let ready = snapshot.is_some() && fresh;
    let report = serde_json::json!({
        "ready": ready,
        "store": app.store.describe(),
        "rules": snapshot.as_ref().map(|snapshot| snapshot.rules.len()),
        "rejectedRules": snapshot.as_ref().map(|snapshot| snapshot.rejected),
        "loadedAt": snapshot.as_ref().map(|snapshot| rfc3339(snapshot.loaded_at)),
        "rulesAgeSeconds": age.map(|age| age.as_secs()),
        "maxRulesAgeSeconds": app.config.max_rules_age.as_secs(),
        "lastRefreshError": state.last_error,
        "lastRefreshErrorAt": state.last_error_at.map(rfc3339),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, JSON, NO_STORE, format!("{report:#}\n"), head)
}

/// The one place where an error becomes a status code: bad input 400, nothing to
/// serve 404, store trouble 503 with `Retry-After`. Store details go to the log, not
/// to the device.
fn error_response(error: &RequestError, config: &ServeConfig) -> Response<Body> {
    let (status, message) = match error {
        RequestError::BadRequest(_)
        | RequestError::BadHost(_)
        | RequestError::BadBinaryName { .. } => (StatusCode::BAD_REQUEST, error.to_string()),
        RequestError::NoPackage(_) | RequestError::UnknownPath | RequestError::NoBinary => {
            (StatusCode::NOT_FOUND, error.to_string())
        }
        RequestError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, error.to_string()),
        RequestError::NotThroughCdn => (StatusCode::FORBIDDEN, error.to_string()),
        RequestError::RangeNotSatisfiable { .. } => {
            (StatusCode::RANGE_NOT_SATISFIABLE, error.to_string())
        }
        RequestError::Answer(_) | RequestError::Header(_) => {
            tracing::error!(
                error = error as &dyn std::error::Error,
                "cannot plan a package"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the package cannot be built; this is a bug in the origin".to_owned(),
            )
        }
        RequestError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        RequestError::Store(_) | RequestError::SizeMismatch { .. } => {
            tracing::error!(
                error = error as &dyn std::error::Error,
                "package store failure"
            );
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
    let text = format!("{}\n", serde_json::json!({ "error": message }));
    let mut response = respond(status, JSON, cache_control, text, false);
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
            if let RequestError::RangeNotSatisfiable { len } = error
                && let Ok(unsatisfied) = HeaderValue::try_from(format!("bytes */{len}"))
            {
                headers.insert(CONTENT_RANGE, unsatisfied);
            }
        }
        _ => {}
    }
    response
}

/// What every 200, 206 and 304 of a package carries; `Vary: if-none-match` when the
/// device's digests came in that header rather than in `installed=`.
fn cache_headers(headers: &mut HeaderMap, answer: &Answer, cache: &CachePolicy) {
    headers.insert(ETAG, answer.etag.clone());
    headers.insert(CACHE_CONTROL, cache.success.clone());
    if answer.plan.varies_with_if_none_match() {
        headers.insert(VARY, VARY_IF_NONE_MATCH);
    }
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
    cache_headers(headers, answer, cache);
    if metadata {
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(CONTENT_LENGTH, answer.details_len.clone());
    } else {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    response
}

/// A response with an in-memory body; HEAD gets its length but not its bytes.
fn respond(
    status: StatusCode,
    content_type: HeaderValue,
    cache_control: HeaderValue,
    bytes: impl Into<bytes::Bytes>,
    head: bool,
) -> Response<Body> {
    let bytes = bytes.into();
    let len = HeaderValue::from(bytes.len());
    let mut response = Response::new(if head {
        body::empty()
    } else {
        body::full(bytes)
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, cache_control);
    headers.insert(CONTENT_LENGTH, len);
    response
}
