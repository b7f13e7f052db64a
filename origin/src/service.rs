//! The request path: parse -> resolve -> plan -> respond (or stream), and the one
//! function that turns an error into a response.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use fleetpack_resolver::{
    ConditionalError, DeviceQuery, ETag, IfNoneMatch, NoPackage, PackagePlan, PayloadType,
    QueryError,
};
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    RETRY_AFTER,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::archive::{self, PackageObject};
use crate::body::{self, Body, ChannelSink};
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::snapshot::Rules;
use crate::store::{Store, StoreError};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const GZIP: HeaderValue = HeaderValue::from_static("application/gzip");
const ATTACHMENT: HeaderValue =
    HeaderValue::from_static("attachment; filename=\"ota-package.tar.gz\"");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

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
    #[error("method not allowed; use GET or HEAD")]
    MethodNotAllowed,
    #[error("the release rules are not loaded yet; retry shortly")]
    NotReady,
    #[error(transparent)]
    Store(#[from] StoreError),
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
    if !matches!(path, "/package" | "/healthz" | "/readyz" | "/metrics") {
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
    let query = DeviceQuery::parse(request.uri().query().unwrap_or_default())?;
    let if_none_match = IfNoneMatch::parse(
        request
            .headers()
            .get_all(IF_NONE_MATCH)
            .iter()
            .map(HeaderValue::as_bytes),
    )?;
    let snapshot = app.rules.current().ok_or(RequestError::NotReady)?;
    let selection = snapshot.rules.resolve(&query)?;
    let plan = PackagePlan::new(&selection, &if_none_match, query.payload());
    let cache = &app.config.cache;
    if plan.is_not_modified(&if_none_match) {
        return Ok(Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(ETAG, etag_value(plan.etag()))
            .header(CACHE_CONTROL, cache.success.clone())
            .body(body::empty())
            .expect("valid response parts"));
    }
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(ETAG, etag_value(plan.etag()))
        .header(CACHE_CONTROL, cache.success.clone());
    if query.payload() == PayloadType::MetadataOnly {
        let details = plan.details_json().to_vec();
        return Ok(with_body(
            response.header(CONTENT_TYPE, JSON),
            details,
            head,
        ));
    }
    let response = response
        .header(CONTENT_TYPE, GZIP)
        .header(CONTENT_DISPOSITION, ATTACHMENT);
    if head {
        return Ok(response.body(body::empty()).expect("valid response parts"));
    }
    let objects = open_objects(&app.store, &plan).await?;
    let (sink, body) = body::channel();
    tokio::spawn(stream_package(Arc::clone(app), plan, objects, sink));
    Ok(response.body(body).expect("valid response parts"))
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
    plan: PackagePlan,
    objects: Vec<PackageObject>,
    mut sink: ChannelSink,
) {
    let metrics = &app.metrics;
    Metrics::increment(&metrics.packages_started);
    match archive::write_package(&mut sink, plan.details_json(), objects).await {
        Ok(()) => Metrics::increment(&metrics.packages_completed),
        Err(error) if sink.is_closed() => {
            Metrics::increment(&metrics.packages_client_gone);
            tracing::debug!(etag = %plan.etag(), error = %error, "client left during a package");
        }
        Err(error) => {
            Metrics::increment(&metrics.packages_aborted);
            tracing::error!(etag = %plan.etag(), error = %error, "package aborted after the status line");
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
        RequestError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        RequestError::Store(_) | RequestError::SizeMismatch { .. } => {
            tracing::error!(error = %error, "package store failure");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the package store is unavailable; retry later".to_owned(),
            )
        }
    };
    let cache_control = if status == StatusCode::SERVICE_UNAVAILABLE {
        NO_STORE
    } else {
        config.cache.client_error.clone()
    };
    let mut text = serde_json::to_vec(&serde_json::json!({ "error": message }))
        .expect("JSON values serialize");
    text.push(b'\n');
    let mut response = respond(status, "application/json", cache_control, text, false);
    let headers = response.headers_mut();
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(ALLOW, GET_HEAD);
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(RETRY_AFTER, config.cache.retry_after.clone());
        }
        _ => {}
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
