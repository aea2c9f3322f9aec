//! Cross-cutting HTTP layers: request ids, structured request logs, request metrics,
//! rate limits, body size limits and timeouts, and refusals (404, 413, 503) in the shape of the
//! dialect a path belongs to.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::dialects::{self, Dialect, Refusal};
use crate::limits::{AuthFailed, ClientIp, Group, Limited, Limiter, RequestLimits};
use crate::HttpOptions;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok().map(RequestId::new)
    }
}

/// Mount prefixes and their dialects, longest first.
pub type Mounts = Arc<Vec<(String, &'static Dialect)>>;

pub fn wrap(router: Router, options: &HttpOptions, mounts: Mounts, limiter: Arc<Limiter>) -> Router {
    let for_fallback = mounts.clone();
    let for_limits = mounts.clone();
    let (max_body, drain_for) = (options.max_body_bytes, options.request_timeout);
    router
        .fallback(move |uri: axum::http::Uri| {
            let mounts = for_fallback.clone();
            async move { (dialects::owner(&mounts, uri.path()).refusal)(Refusal::NotFound) }
        })
        .layer(middleware::from_fn(record_metrics))
        .layer(RequestBodyLimitLayer::new(options.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, options.request_timeout))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let mounts = mounts.clone();
            async move { dialect_limit_errors(&mounts, (max_body, drain_for), req, next).await }
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let (mounts, limiter) = (for_limits.clone(), limiter.clone());
            async move { rate_limits(&mounts, limiter, req, next).await }
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<Body>| {
                    // The path only: query strings may carry credentials in some dialects.
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
}

/// How much of a declared oversized body is read (and dropped) before it is refused,
/// as a multiple of the body limit.
const DRAIN_FACTOR: usize = 16;

/// tower-http answers oversized bodies and timeouts in plain text; give them the
/// shape of the dialect the path belongs to. A body declared larger than the limit
/// (`Content-Length`) is refused without being parsed, after reading and dropping it
/// up to `DRAIN_FACTOR` times the limit (within the request timeout): a client still
/// writing it then receives the refusal, instead of a reset connection.
async fn dialect_limit_errors(mounts: &[(String, &'static Dialect)], limit: (usize, std::time::Duration), req: Request, next: Next) -> Response {
    let (max_body, drain_for) = limit;
    let dialect = dialects::owner(mounts, req.uri().path());
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > max_body) {
        use futures_util::StreamExt;
        let mut stream = req.into_body().into_data_stream();
        let drain = async {
            let mut read = 0usize;
            while read <= max_body.saturating_mul(DRAIN_FACTOR) {
                match stream.next().await {
                    Some(Ok(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(drain_for, drain).await;
        tracing::info!(declared_bytes = len, limit_bytes = max_body, "refused a request body over the limit");
        let mut refused = (dialect.refusal)(Refusal::BodyTooLarge);
        refused.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
        return refused;
    }
    let response = next.run(req).await;
    let content_type = response.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    // An answer with a body of its own (JSON, or HTML for payers) is kept; the others
    // are worded by the dialect.
    let own_body = content_type.starts_with(b"application/json") || content_type.starts_with(b"text/html");
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !own_body => (dialect.refusal)(Refusal::BodyTooLarge),
        StatusCode::SERVICE_UNAVAILABLE if !own_body => (dialect.refusal)(Refusal::Timeout),
        _ => response,
    }
}

/// Finds the client's address and the request's rate limit group, admits the request
/// against the client's budgets (the key's are checked where it is authenticated),
/// counts failed authentications, and words every rate limit refusal in the dialect
/// the path belongs to, with `Retry-After`.
async fn rate_limits(mounts: &[(String, &'static Dialect)], limiter: Arc<Limiter>, mut req: Request, next: Next) -> Response {
    let (dialect, rest) = dialects::route_of(mounts, req.uri().path());
    let group = (dialect.limit_group)(req.method(), rest);
    let documented = (dialect.documented_limit)(req.method(), rest);
    let ip = limiter.client_ip(req.headers(), req.extensions());
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip));
        if let Err(limited) = limiter.admit_ip(ip, group) {
            return refuse(dialect, group, limited);
        }
        if let Some(documented) = documented {
            if let Err(limited) = limiter.admit_documented(ip, documented) {
                tracing::info!(client_ip = %ip, limit = documented.name, "a documented rate limit refused a request");
                return refuse(dialect, group, limited);
            }
        }
    }
    req.extensions_mut().insert(RequestLimits { limiter: limiter.clone(), group });
    let response = next.run(req).await;
    if let (Some(ip), Some(AuthFailed)) = (ip, response.extensions().get::<AuthFailed>()) {
        limiter.failed_auth(ip);
    }
    match response.extensions().get::<Limited>() {
        Some(limited) => refuse(dialect, group, *limited),
        None => response,
    }
}

fn refuse(dialect: &Dialect, group: Group, limited: Limited) -> Response {
    metrics::counter!("kassa_http_rate_limited_total", "group" => group.name()).increment(1);
    let mut response = (dialect.refusal)(Refusal::TooManyRequests { retry_after_secs: limited.retry_after_secs });
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, limited.header());
    response
}

async fn record_metrics(req: Request, next: Next) -> Response {
    use metrics::SharedString;
    let started = Instant::now();
    let path = match req.extensions().get::<MatchedPath>() {
        Some(p) => SharedString::from(p.as_str().to_string()),
        None => SharedString::const_str("unmatched"),
    };
    // Labels without an allocation for the usual methods and statuses (every request
    // passes here).
    let method = match *req.method() {
        axum::http::Method::GET => SharedString::const_str("GET"),
        axum::http::Method::POST => SharedString::const_str("POST"),
        axum::http::Method::PUT => SharedString::const_str("PUT"),
        axum::http::Method::DELETE => SharedString::const_str("DELETE"),
        ref other => SharedString::from(other.to_string()),
    };
    let response = next.run(req).await;
    let status = match response.status().as_u16() {
        200 => SharedString::const_str("200"),
        201 => SharedString::const_str("201"),
        400 => SharedString::const_str("400"),
        401 => SharedString::const_str("401"),
        403 => SharedString::const_str("403"),
        404 => SharedString::const_str("404"),
        code => SharedString::from(code.to_string()),
    };
    let labels = [("method", method), ("path", path), ("status", status)];
    metrics::counter!("kassa_http_requests_total", &labels).increment(1);
    metrics::histogram!("kassa_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
