//! Cross-cutting HTTP layers: request ids, structured request logs, request metrics,
//! body size limits and timeouts, and a JSON 404.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::HttpOptions;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok().map(RequestId::new)
    }
}

pub fn wrap(router: Router, options: &HttpOptions) -> Router {
    router
        .fallback(not_found)
        .layer(middleware::from_fn(record_metrics))
        .layer(RequestBodyLimitLayer::new(options.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, options.request_timeout))
        .layer(middleware::from_fn(json_limit_errors))
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

async fn not_found(uri: axum::http::Uri) -> Response {
    if crate::westwallet::is_westwallet_path(uri.path()) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response();
    }
    (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": "no such endpoint"}}))).into_response()
}

/// tower-http answers oversized bodies and timeouts in plain text; give them the same
/// JSON shape as every other error.
async fn json_limit_errors(req: Request, next: Next) -> Response {
    let westwallet = crate::westwallet::is_westwallet_path(req.uri().path());
    let response = next.run(req).await;
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match response.status() {
        // The WestWallet dialect's shape: a flat code, never a `message` key.
        StatusCode::PAYLOAD_TOO_LARGE if westwallet && !is_json => (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"error": "body_too_large"}))).into_response(),
        StatusCode::SERVICE_UNAVAILABLE if westwallet && !is_json => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "timeout"}))).into_response(),
        StatusCode::PAYLOAD_TOO_LARGE if !is_json => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": {"code": "body_too_large", "message": "request body is larger than the server accepts"}})),
        )
            .into_response(),
        StatusCode::SERVICE_UNAVAILABLE if !is_json => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "timeout", "message": "the request took longer than the server allows"}})),
        )
            .into_response(),
        _ => response,
    }
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
