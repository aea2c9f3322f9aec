//! Kassa's own API (`/kassa/v1`), described by the OpenAPI document it serves at
//! `/kassa/v1/openapi.json`: the document is generated from the routes and the types
//! of their bodies (see `openapi.rs`). Bearer keys of the `native` dialect
//! authenticate it.

mod error;
mod openapi;
mod operator;
mod wire;

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::{Json, Router};
use kassa_engine::chains::DepositAddress;
use kassa_engine::exchange::{Exchange, Quote, RateView};
use kassa_engine::invoices::Invoice;
use kassa_engine::merchants::{Principal, Scope};
use kassa_engine::notifications::{DeliveryDetail, Endpoint, EndpointWithSecret, Origin};
use kassa_engine::queries::HistoryQuery;
use kassa_engine::withdrawals::Withdrawal;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ErrorCode};
pub use openapi::document;
use error::ErrorBody;
use wire::*;

use crate::limits::Group;
use crate::AppState;

/// Kassa's own API's registration: under `/kassa/v1`. It also words the refusals
/// on paths no dialect owns.
pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "native",
    default_mounts: &["/kassa/v1"],
    router,
    owns: |_| true,
    refusal,
    limit_group,
    documented_limit: crate::dialects::no_documented_limit,
    callbacks: Vec::new,
    keys: Some(&KEYS),
};

/// Bearer tokens that begin with their public id (`ksk_…`).
pub static KEYS: kassa_engine::merchants::KeyKind =
    kassa_engine::merchants::KeyKind { dialect: "native", shape: kassa_engine::merchants::KeyShape::NamedToken { prefix: "ksk_" } };

pub(crate) fn refusal(r: crate::dialects::Refusal) -> axum::response::Response {
    use crate::dialects::Refusal;
    let (status, code, message) = match r {
        Refusal::NotFound => (axum::http::StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such endpoint".to_string()),
        Refusal::BodyTooLarge => (axum::http::StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge, "request body is larger than the server accepts".to_string()),
        Refusal::Timeout => (axum::http::StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Timeout, "the request took longer than the server allows".to_string()),
        Refusal::TooManyRequests { retry_after_secs } => (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            format!("too many requests: retry in {retry_after_secs} s"),
        ),
    };
    ApiError { status, code, message }.into_response()
}

fn limit_group(method: &axum::http::Method, path: &str) -> Group {
    match (method, path) {
        (&axum::http::Method::POST, "/addresses") => Group::Address,
        (&axum::http::Method::POST, "/quotes") => Group::Quote,
        (&axum::http::Method::POST, "/invoices") => Group::Invoice,
        _ => Group::Default,
    }
}

pub fn router() -> Router<AppState> {
    routes().into()
}

/// Every route with its documentation: each is added through `routes!`, which takes
/// its method and path from the handler's `#[utoipa::path]`, so what is served and
/// what is documented are one list.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(currencies))
        .routes(routes!(balances))
        .routes(routes!(history))
        .routes(routes!(create_address))
        .routes(routes!(deposits))
        .routes(routes!(create_withdrawal, list_withdrawals))
        .routes(routes!(get_withdrawal))
        .routes(routes!(pending_withdrawals))
        .routes(routes!(approve_withdrawal))
        .routes(routes!(decline_withdrawal))
        .routes(routes!(list_limits))
        .routes(routes!(set_limits))
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(rotate_endpoint_secret))
        .routes(routes!(enable_endpoint))
        .routes(routes!(disable_endpoint))
        .routes(routes!(test_endpoint))
        .routes(routes!(list_events))
        .routes(routes!(redeliver_event))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver_failed))
        .routes(routes!(get_delivery))
        .routes(routes!(list_pairs))
        .routes(routes!(get_rate))
        .routes(routes!(create_quote))
        .routes(routes!(create_exchange, list_exchanges))
        .routes(routes!(create_invoice, list_invoices))
        .routes(routes!(get_invoice))
        .merge(operator::routes())
}

/// A body as JSON with its keys in sorted order, as this API has always sent them.
fn sorted(body: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(body).expect("API bodies serialize to JSON")
}

#[utoipa::path(
    post, path = "/invoices",
    summary = "Create an invoice (scope receive): an amount in a crypto currency or in fiat, payable in the accepted currencies (an address each, the amount fixed for the invoice's lifetime). Idempotent by order_id.",
    security(("bearer" = [])),
    request_body = NewInvoice,
    responses(
        (status = 201, description = "The invoice.", body = Invoice),
        (status = 400, description = "Bad request.", body = ErrorBody),
        (status = 409, description = "order_id used for another invoice.", body = ErrorBody),
        (status = 503, description = "Rates unavailable or stale (fiat invoices).", body = ErrorBody),
    )
)]
async fn create_invoice(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Receive)?;
    body.only(&[
        "order_id",
        "amount",
        "currency",
        "currencies",
        "ttl_secs",
        "description",
        "success_url",
        "title",
        "failure_url",
        "payer_email",
        "rate_on_pick",
        "convert",
    ])?;
    let accepted = match body.0.get("currencies") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request("currencies must be a list of currency codes")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("currencies must be a list of currency codes")),
    };
    let ttl = match body.0.get("ttl_secs") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(std::time::Duration::from_secs(v.as_u64().ok_or_else(|| ApiError::bad_request("ttl_secs must be a whole number of seconds"))?)),
    };
    let invoice = state
        .engine
        .create_invoice(
            who.merchant,
            kassa_engine::invoices::InvoiceRequest {
                order_id: body.required("order_id")?,
                amount: amount_field(&body, "amount")?.ok_or_else(|| ApiError::bad_request("amount is required"))?,
                currency: body.required("currency")?,
                accepted,
                ttl,
                description: body.string("description")?.unwrap_or_default(),
                success_url: body.string("success_url")?,
                title: body.string("title")?.unwrap_or_default(),
                failure_url: body.string("failure_url")?,
                payer_email: body.string("payer_email")?,
                rate_on_pick: body.boolean("rate_on_pick")?,
                convert: body.boolean("convert")?,
                ..Default::default()
            },
        )
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(sorted(invoice))))
}

#[utoipa::path(
    get, path = "/invoices/{id}", summary = "One invoice with its options and payments (scope read).", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "The invoice.", body = Invoice), (status = 404, description = "No such invoice of this merchant.", body = ErrorBody))
)]
async fn get_invoice(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(sorted(state.engine.invoice(who.merchant, &id).await?)))
}

#[utoipa::path(
    get, path = "/invoices", summary = "Invoices, newest first (scope read).", description = "At most 100 invoices a page.", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, description = "Invoices.", body = InvoiceList), (status = 400, description = "Bad parameter.", body = ErrorBody))
)]
async fn list_invoices(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["before", "limit"])?;
    Ok(Json(sorted(InvoiceList { invoices: state.engine.invoices(who.merchant, before, limit.min(100)).await? })))
}

fn amount_field(body: &JsonObject, key: &str) -> Result<Option<String>, ApiError> {
    crate::wire::amount_text(body.0.get(key)).map_err(|_| ApiError::bad_request(format!("{key} must be a decimal string or number")))
}

/// Exactly one of sender_amount / receiver_amount.
fn side(body: &JsonObject) -> Result<kassa_engine::exchange::Side, ApiError> {
    use kassa_engine::exchange::Side;
    match (amount_field(body, "sender_amount")?, amount_field(body, "receiver_amount")?) {
        (Some(a), None) => Ok(Side::Sender(a)),
        (None, Some(a)) => Ok(Side::Receiver(a)),
        _ => Err(ApiError::bad_request("give exactly one of sender_amount and receiver_amount")),
    }
}

#[utoipa::path(
    get, path = "/pairs", summary = "Exchangeable pairs with spreads, minimums and current rates (scope read).", security(("bearer" = [])),
    responses((status = 200, description = "Pairs.", body = PairList), (status = 503, description = "No rate sources configured.", body = ErrorBody))
)]
async fn list_pairs(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(sorted(PairList { pairs: state.engine.pairs()? })))
}

#[utoipa::path(
    get, path = "/rates", summary = "The current rate from one currency to another (scope read): the mid and what a quote gives (spread taken).", security(("bearer" = [])),
    params(RateParams),
    responses(
        (status = 200, description = "The rate.", body = RateView),
        (status = 400, description = "Unknown currency or pair.", body = ErrorBody),
        (status = 503, description = "Rates unavailable or stale.", body = ErrorBody),
    )
)]
async fn get_rate(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    page_params(&params, &["from", "to"])?;
    let from = params.get("from").ok_or_else(|| ApiError::bad_request("from is required"))?;
    let to = params.get("to").ok_or_else(|| ApiError::bad_request("to is required"))?;
    Ok(Json(sorted(state.engine.rate(from, to)?)))
}

#[utoipa::path(
    post, path = "/quotes",
    summary = "A quote (scope exchange): give exactly one of sender_amount (fee included) or receiver_amount. Held until expires_at.",
    security(("bearer" = [])),
    request_body = NewQuote,
    responses(
        (status = 201, description = "The quote.", body = Quote),
        (status = 400, description = "Unknown currency or pair, bad amount, below the pair's minimum.", body = ErrorBody),
        (status = 503, description = "Rates unavailable or stale.", body = ErrorBody),
    )
)]
async fn create_quote(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Exchange)?;
    body.only(&["from_currency", "to_currency", "sender_amount", "receiver_amount"])?;
    let q = state.engine.quote(who.merchant, &body.required("from_currency")?, &body.required("to_currency")?, side(&body)?).await?;
    Ok((axum::http::StatusCode::CREATED, Json(sorted(q))))
}

#[utoipa::path(
    post, path = "/exchanges",
    summary = "Execute a quote ({client_id, quote_id, and optionally the quoted sender_amount, receiver_amount, rate, which must match}) or exchange at the market ({client_id, from_currency, to_currency, sender_amount | receiver_amount}) (scope exchange). Idempotent by client_id; a quote executes once.",
    security(("bearer" = [])),
    request_body = NewExchange,
    responses(
        (status = 201, description = "The exchange (done).", body = Exchange),
        (status = 400, description = "Bad request.", body = ErrorBody),
        (status = 404, description = "No such quote of this merchant.", body = ErrorBody),
        (status = 409, description = "Quote expired, mismatched or executed already; client_id used for another request.", body = ErrorBody),
        (status = 422, description = "Insufficient funds.", body = ErrorBody),
        (status = 503, description = "Rates unavailable or stale.", body = ErrorBody),
    )
)]
async fn create_exchange(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Exchange)?;
    let client_id = body.required("client_id")?;
    let x = match body.string("quote_id")? {
        Some(quote) => {
            body.only(&["client_id", "quote_id", "sender_amount", "receiver_amount", "rate"])?;
            let check = kassa_engine::exchange::QuoteCheck {
                sender_amount: amount_field(&body, "sender_amount")?,
                receiver_amount: amount_field(&body, "receiver_amount")?,
                rate: amount_field(&body, "rate")?,
            };
            state.engine.execute_quote(who.merchant, &quote, &client_id, check, "native").await?
        }
        None => {
            body.only(&["client_id", "from_currency", "to_currency", "sender_amount", "receiver_amount"])?;
            let (from, to) = (body.required("from_currency")?, body.required("to_currency")?);
            state.engine.exchange_now(who.merchant, &from, &to, side(&body)?, &client_id, "native").await?
        }
    };
    Ok((axum::http::StatusCode::CREATED, Json(sorted(x))))
}

#[utoipa::path(
    get, path = "/exchanges", summary = "Exchanges, newest first (scope read).", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, description = "Exchanges.", body = ExchangeList), (status = 400, description = "Bad parameter.", body = ErrorBody))
)]
async fn list_exchanges(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["before", "limit"])?;
    let list = state.engine.exchanges(who.merchant, before, limit).await?;
    Ok(Json(sorted(ExchangeList { exchanges: list })))
}

fn not_found(what: &str) -> ApiError {
    ApiError { status: axum::http::StatusCode::NOT_FOUND, code: ErrorCode::NotFound, message: format!("{what} not found") }
}

fn path_id(id: &str, what: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| not_found(what))
}

#[utoipa::path(
    post, path = "/webhook-endpoints",
    summary = "Register a webhook endpoint (scope manage). The URL must not resolve to loopback, private, link-local or metadata addresses.",
    security(("bearer" = [])),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "The endpoint, with its secret (shown once).", body = EndpointWithSecret),
        (status = 400, description = "Bad URL, refused target, unknown format or event type.", body = ErrorBody),
    )
)]
async fn create_endpoint(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    body.only(&["url", "format", "events"])?;
    let events = match body.0.get("events") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request("events must be a list of event type strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("events must be a list of event type strings")),
    };
    let format = body.string("format")?.unwrap_or_else(|| "standard".into());
    let created = state.engine.create_endpoint(who.merchant, &body.required("url")?, &format, &events).await?;
    Ok((axum::http::StatusCode::CREATED, Json(sorted(created))))
}

#[utoipa::path(
    get, path = "/webhook-endpoints", summary = "The merchant's webhook endpoints (scope read)", security(("bearer" = [])),
    responses((status = 200, description = "Endpoints.", body = EndpointList))
)]
async fn list_endpoints(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(sorted(EndpointList { webhook_endpoints: state.engine.endpoints(who.merchant).await? })))
}

#[utoipa::path(
    post, path = "/webhook-endpoints/{id}/rotate-secret",
    summary = "A new secret (scope manage); the old one keeps signing for overlap_secs (default 86400, at most 604800).",
    security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body(content = Option<SecretRotation>, description = "Optional."),
    responses((status = 200, description = "Done.", body = EndpointWithSecret), (status = 404, description = "No such endpoint of this merchant.", body = ErrorBody))
)]
async fn rotate_endpoint_secret(
    State(state): State<AppState>,
    Auth(who): Auth,
    axum::extract::Path(id): axum::extract::Path<String>,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    let id = path_id(&id, "webhook endpoint")?;
    // The body is optional: `{"overlap_secs": N}` (default one day).
    let overlap = if bytes.iter().all(u8::is_ascii_whitespace) {
        86_400
    } else {
        let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(map)) => JsonObject(map),
            _ => return Err(ApiError::bad_request("the body must be a JSON object")),
        };
        body.only(&["overlap_secs"])?;
        match body.0.get("overlap_secs") {
            None | Some(serde_json::Value::Null) => 86_400,
            Some(v) => v.as_u64().ok_or_else(|| ApiError::bad_request("overlap_secs must be a whole number of seconds"))?,
        }
    };
    let rotated = state.engine.rotate_endpoint_secret(who.merchant, id, std::time::Duration::from_secs(overlap)).await?;
    Ok(Json(sorted(rotated)))
}

#[utoipa::path(
    post, path = "/webhook-endpoints/{id}/enable", summary = "Enable an endpoint again, e.g. after a 410 Gone (scope manage).", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, description = "Done.", body = Endpoint), (status = 404, description = "No such endpoint of this merchant.", body = ErrorBody))
)]
async fn enable_endpoint(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    Ok(Json(sorted(state.engine.set_endpoint_enabled(who.merchant, path_id(&id, "webhook endpoint")?, true).await?)))
}

#[utoipa::path(
    post, path = "/webhook-endpoints/{id}/disable", summary = "Disable an endpoint; its pending deliveries fail (scope manage).", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, description = "Done.", body = Endpoint), (status = 404, description = "No such endpoint of this merchant.", body = ErrorBody))
)]
async fn disable_endpoint(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    Ok(Json(sorted(state.engine.set_endpoint_enabled(who.merchant, path_id(&id, "webhook endpoint")?, false).await?)))
}

#[utoipa::path(
    post, path = "/webhook-endpoints/{id}/test", summary = "Send a webhook.test event to this endpoint (scope manage).", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 202, description = "Done.", body = TestEventSent),
        (status = 404, description = "No such endpoint of this merchant.", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled.", body = ErrorBody),
    )
)]
async fn test_endpoint(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    let event = state.engine.send_test_event(who.merchant, path_id(&id, "webhook endpoint")?).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(sorted(TestEventSent { event_id: event }))))
}

#[utoipa::path(
    get, path = "/events", summary = "Events after a sequence number, oldest first (scope read): reconcile after downtime.", security(("bearer" = [])),
    params(EventParams),
    responses((status = 200, description = "Events and the sequence to continue after.", body = EventPage), (status = 400, description = "Bad parameter.", body = ErrorBody))
)]
async fn list_events(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (_, limit) = page_params(&params, &["after", "limit"])?;
    let after = match params.get("after") {
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| ApiError::bad_request("after must be a sequence number (0 or more)"))?,
        None => 0,
    };
    let events = state.engine.events_after(who.merchant, after, limit).await?;
    let next = events.last().and_then(|e| e["sequence"].as_i64()).unwrap_or(after);
    Ok(Json(sorted(EventPage { events, next_after: next })))
}

#[utoipa::path(
    post, path = "/events/{id}/redeliver", summary = "Send every delivery of one event again, now (scope manage).", security(("bearer" = [])),
    params(("id" = String, Path, description = "evt_…")),
    responses((status = 202, description = "How many deliveries go again.", body = Redelivering), (status = 404, description = "No such event of this merchant.", body = ErrorBody))
)]
async fn redeliver_event(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    let n = state.engine.redeliver_event(Some(who.merchant), &id).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(sorted(Redelivering { redelivering: n }))))
}

#[utoipa::path(
    get, path = "/deliveries", summary = "Deliveries, newest first (scope read).", security(("bearer" = [])),
    params(DeliveryFilters, PageParams),
    responses((status = 200, description = "Deliveries.", body = DeliveryPage), (status = 400, description = "Bad parameter.", body = ErrorBody))
)]
async fn list_deliveries(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["status", "event", "before", "limit"])?;
    if let Some(s) = params.get("status") {
        if !["pending", "delivered", "failed"].contains(&s.as_str()) {
            return Err(ApiError::bad_request("status must be pending, delivered or failed"));
        }
    }
    let list = state
        .engine
        .deliveries(kassa_engine::queries::DeliveryQuery {
            merchant: Some(who.merchant),
            status: params.get("status").cloned(),
            event_public_id: params.get("event").cloned(),
            before_id: before,
            limit,
        })
        .await?;
    let next = if list.len() == limit as usize { list.last().map(|d| d.id) } else { None };
    Ok(Json(sorted(DeliveryPage { deliveries: list, next_before: next })))
}

#[utoipa::path(
    get, path = "/deliveries/{id}", summary = "One delivery with its body and every attempt (scope read).", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, description = "The delivery.", body = DeliveryDetail), (status = 404, description = "No such delivery of this merchant.", body = ErrorBody))
)]
async fn get_delivery(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(sorted(state.engine.delivery(Some(who.merchant), path_id(&id, "delivery")?).await?)))
}

/// RFC 3339 time to Unix milliseconds.
fn parse_time(body: &JsonObject, key: &str) -> Result<i64, ApiError> {
    let text = body.required(key)?;
    crate::wire::parse_rfc3339_ms(&text).ok_or_else(|| ApiError::bad_request(format!("{key} must be an RFC 3339 time like 2026-01-31T12:00:00Z")))
}

#[utoipa::path(
    post, path = "/deliveries/redeliver", summary = "Send every failed delivery created in [from, to) again (scope manage).", security(("bearer" = [])),
    request_body = RedeliverFailed,
    responses((status = 202, description = "How many deliveries go again.", body = Redelivering), (status = 400, description = "Bad times.", body = ErrorBody))
)]
async fn redeliver_failed(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    body.only(&["from", "to"])?;
    let (from, to) = (parse_time(&body, "from")?, parse_time(&body, "to")?);
    let n = state.engine.redeliver_failed(Some(who.merchant), from, to).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(sorted(Redelivering { redelivering: n }))))
}

#[utoipa::path(
    post, path = "/withdrawals", summary = "Request a withdrawal (scope withdraw)",
    description = "The amount plus fee is held at once. Low priority waits for a batch window to share a transaction; medium and high are sent at once. Retrying with the same idempotency_key returns the original withdrawal; the same key with different details is refused.",
    security(("bearer" = [])),
    request_body = NewWithdrawal,
    responses(
        (status = 201, description = "The withdrawal, queued.", body = Withdrawal),
        (status = 400, description = "Bad address, amount, currency or body.", body = ErrorBody),
        (status = 409, description = "The idempotency_key was used for a different withdrawal.", body = ErrorBody),
        (status = 422, description = "insufficient_funds, or limit_reached (daily count).", body = ErrorBody),
        (status = 503, description = "The currency's chain is halted or its node is unavailable.", body = ErrorBody),
    )
)]
async fn create_withdrawal(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Withdraw)?;
    body.only(&["currency", "address", "amount", "priority", "idempotency_key", "pay_from"])?;
    let amount = amount_field(&body, "amount")?.ok_or_else(|| ApiError::bad_request("amount is required"))?;
    let priority = match body.string("priority")? {
        Some(p) => kassa_chain::Priority::parse(&p).ok_or_else(|| ApiError::bad_request("priority must be low, medium or high"))?,
        None => kassa_chain::Priority::Medium,
    };
    let w = state
        .engine
        .request_withdrawal(kassa_engine::withdrawals::WithdrawalRequest {
            merchant: who.merchant,
            currency: body.required("currency")?,
            address: body.required("address")?,
            amount,
            priority,
            idempotency_key: body.required("idempotency_key")?,
            origin: Origin::native(),
            description: body.string("description")?,
            pay_from: body.string("pay_from")?,
        })
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(sorted(w))))
}

#[utoipa::path(
    get, path = "/withdrawals/{id}", summary = "One withdrawal (scope read)", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, description = "The withdrawal.", body = Withdrawal), (status = 404, description = "No such withdrawal of this merchant.", body = ErrorBody))
)]
async fn get_withdrawal(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let id: i64 = id.parse().map_err(|_| ApiError { status: axum::http::StatusCode::NOT_FOUND, code: ErrorCode::NotFound, message: "withdrawal not found".into() })?;
    Ok(Json(sorted(state.engine.withdrawal(who.merchant, id).await?)))
}

#[utoipa::path(
    get, path = "/withdrawals/pending", summary = "Withdrawals waiting for approval, oldest first (scope manage).", security(("bearer" = [])),
    responses((status = 200, description = "Every pending withdrawal of the merchant.", body = Vec<Withdrawal>))
)]
async fn pending_withdrawals(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    Ok(Json(sorted(state.engine.pending_withdrawals(Some(who.merchant)).await?)))
}

/// An approval or decline through the API: the operator defaults to the key's id.
async fn decide(state: &AppState, who: &kassa_engine::merchants::Principal, id: &str, body: JsonObject, approve: bool) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    body.only(&["operator", "reason"])?;
    let id = path_id(id, "withdrawal")?;
    let operator = body.string("operator")?.unwrap_or_else(|| format!("api key {}", who.key_id));
    let reason = body.string("reason")?;
    let (withdrawal, decision) = state.engine.decide_withdrawal(Some(who.merchant), id, approve, &operator, reason.as_deref()).await?;
    Ok(Json(sorted(wire::Decided { withdrawal, decision })))
}

#[utoipa::path(
    post, path = "/withdrawals/{id}/approve", summary = "Approve a pending withdrawal: it is queued and sent once (scope manage).", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body(content = Decision),
    responses(
        (status = 200, description = "Approved.", body = Decided),
        (status = 404, description = "No such withdrawal of this merchant.", body = ErrorBody),
        (status = 409, description = "Decided already, or not waiting for approval.", body = ErrorBody),
    )
)]
async fn approve_withdrawal(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    decide(&state, &who, &id, body, true).await
}

#[utoipa::path(
    post, path = "/withdrawals/{id}/decline", summary = "Decline a pending withdrawal (a reason is required): cancelled, its funds return (scope manage).", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body(content = Decision),
    responses(
        (status = 200, description = "Declined.", body = Decided),
        (status = 400, description = "No reason given.", body = ErrorBody),
        (status = 404, description = "No such withdrawal of this merchant.", body = ErrorBody),
        (status = 409, description = "Decided already, or not waiting for approval.", body = ErrorBody),
    )
)]
async fn decline_withdrawal(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    decide(&state, &who, &id, body, false).await
}

#[utoipa::path(
    get, path = "/withdrawal-limits", summary = "The merchant's withdrawal limits (scope manage).", security(("bearer" = [])),
    responses((status = 200, description = "One entry per currency with limits.", body = Vec<kassa_engine::approvals::WithdrawalLimits>))
)]
async fn list_limits(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    Ok(Json(sorted(state.engine.withdrawal_limits(Some(who.merchant)).await?)))
}

#[utoipa::path(
    put, path = "/withdrawal-limits/{currency}", summary = "Set a currency's withdrawal limits; a withdrawal over one waits for approval (scope manage).",
    security(("bearer" = [])),
    params(("currency" = String, Path)),
    request_body(content = NewLimits),
    responses((status = 200, description = "The limits now.", body = kassa_engine::approvals::WithdrawalLimits), (status = 400, description = "Bad amount or currency.", body = ErrorBody))
)]
async fn set_limits(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(currency): axum::extract::Path<String>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    body.only(&["per_transaction", "per_day", "limit_currency"])?;
    let (per_transaction, per_day) = (amount_field(&body, "per_transaction")?, amount_field(&body, "per_day")?);
    let limit_currency = body.string("limit_currency")?;
    let limits = state.engine.set_withdrawal_limits(who.merchant, &currency, limit_currency.as_deref(), per_transaction.as_deref(), per_day.as_deref()).await?;
    Ok(Json(sorted(limits)))
}

#[utoipa::path(
    get, path = "/withdrawals", summary = "The merchant's withdrawals (scope read)", security(("bearer" = [])),
    params(CurrencyFilter, StatusFilter, PageParams),
    responses((status = 200, description = "One page, newest first.", body = WithdrawalPage), (status = 400, description = "Bad parameter.", body = ErrorBody))
)]
async fn list_withdrawals(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["currency", "status", "before", "limit"])?;
    let list = state
        .engine
        .withdrawals(kassa_engine::queries::WithdrawalQuery {
            merchant: Some(who.merchant),
            currency: params.get("currency").cloned(),
            status: params.get("status").cloned(),
            before_id: before,
            limit,
        })
        .await?;
    let next = if list.len() == limit as usize { list.last().map(|w| w.id) } else { None };
    Ok(Json(sorted(WithdrawalPage { withdrawals: list, next_before: next })))
}

/// A JSON object body, parsed with errors in this API's format. Unknown fields are
/// refused so a misspelt option is not silently ignored.
pub struct JsonObject(pub serde_json::Map<String, serde_json::Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!("the body is not valid JSON: {e}"))),
        }
    }
}

impl JsonObject {
    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!("unknown field {k:?} (expected one of {})", allowed.join(", ")))),
            None => Ok(()),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
        }
    }

    fn required(&self, key: &str) -> Result<String, ApiError> {
        self.string(key)?.ok_or_else(|| ApiError::bad_request(format!("{key} is required")))
    }

    fn boolean(&self, key: &str) -> Result<bool, ApiError> {
        match self.0.get(key) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be true or false"))),
        }
    }
}

fn page_params(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(Option<i64>, u32), ApiError> {
    for key in params.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("unknown query parameter {key:?} (expected {})", allowed.join(", "))));
        }
    }
    let limit = match params.get("limit") {
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}")))?,
        None => 100,
    };
    let before = match params.get("before") {
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::bad_request("before must be a positive id"))?),
        None => None,
    };
    Ok((before, limit))
}

#[utoipa::path(
    post, path = "/addresses", summary = "A new deposit address (scope receive)", security(("bearer" = [])),
    request_body = NewAddress,
    responses(
        (status = 201, description = "The address (the existing one for a known foreign_id).", body = DepositAddress),
        (status = 400, description = "Bad body, unknown currency, or a currency that cannot receive.", body = ErrorBody),
        (status = 503, description = "The currency's node is not configured or not answering.", body = ErrorBody),
    )
)]
async fn create_address(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Receive)?;
    body.only(&["currency", "label", "foreign_id", "convert_to"])?;
    let currency = body.required("currency")?;
    let (label, foreign_id, convert_to) = (body.string("label")?, body.string("foreign_id")?, body.string("convert_to")?);
    let address =
        state.engine.create_deposit_address_from(who.merchant, &currency, label, foreign_id, Origin::native(), convert_to.as_deref()).await?;
    Ok((axum::http::StatusCode::CREATED, Json(sorted(address))))
}

#[utoipa::path(
    get, path = "/deposits", summary = "Deposits to the merchant's addresses (scope read)", security(("bearer" = [])),
    params(CurrencyFilter, StatusFilter, PageParams),
    responses((status = 200, description = "One page, newest first.", body = DepositPage), (status = 400, description = "Bad parameter.", body = ErrorBody))
)]
async fn deposits(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["currency", "status", "before", "limit"])?;
    let list = state
        .engine
        .deposits(kassa_engine::queries::DepositQuery {
            merchant: Some(who.merchant),
            currency: params.get("currency").cloned(),
            status: params.get("status").cloned(),
            before_id: before,
            limit,
        })
        .await?;
    let next = if list.len() == limit as usize { list.last().map(|d| d.id) } else { None };
    Ok(Json(sorted(DepositPage { deposits: list, next_before: next })))
}

/// The authenticated merchant of a request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    /// An [`ApiError`], or a rate limit's refusal (worded by the HTTP layer).
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("").trim();
        let ip = crate::limits::client_ip(&parts.extensions);
        let principal = state.engine.authenticate_bearer(token, KEYS.dialect, ip).await.map_err(|e| ApiError::from(e).into_response())?;
        crate::limits::admit_key(&parts.extensions, principal.key_id).map_err(IntoResponse::into_response)?;
        Ok(Auth(principal))
    }
}

#[utoipa::path(
    get, path = "/openapi.json", summary = "This document",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json"))
)]
async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], openapi::served())
}

#[utoipa::path(
    get, path = "/currencies", summary = "Configured currencies with their limits and fees",
    responses((status = 200, description = "All currencies.", body = CurrencyList))
)]
async fn currencies(State(state): State<AppState>) -> impl IntoResponse {
    let fee = |c: &kassa_core::Currency, f: kassa_core::Fee| Fee {
        fixed: c.amount(f.fixed_units).map(|a| a.to_string()).unwrap_or_default(),
        percent: kassa_core::Amount::from_units(f.percent_e6, kassa_core::currency::PERCENT_SCALE).map(|a| a.to_string()).unwrap_or_default(),
    };
    let currencies = state
        .engine
        .currencies
        .all()
        .map(|c| Currency {
            code: c.code.as_str().to_string(),
            name: c.name.clone(),
            kind: c.kind,
            chain: c.chain.clone(),
            precision: c.precision,
            confirmations: c.confirmations,
            min_receive: c.min_receive.to_string(),
            min_withdrawal: c.min_withdrawal.to_string(),
            max_withdrawal: c.max_withdrawal.map(|a| a.to_string()),
            max_withdrawals_per_day: c.max_withdrawals_per_day,
            fees: Fees {
                deposit: fee(c, c.fees.deposit),
                withdrawal: fee(c, c.fees.withdrawal),
                internal_move: fee(c, c.fees.internal_move),
                exchange: fee(c, c.fees.exchange),
            },
            active: c.active,
            can_send: c.can_send,
            can_receive: c.can_receive,
        })
        .collect();
    Json(sorted(CurrencyList { currencies }))
}

#[utoipa::path(
    get, path = "/balances", summary = "Balances of the authenticated merchant, one per currency", security(("bearer" = [])),
    responses((status = 200, description = "Balances.", body = BalanceList))
)]
async fn balances(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let balances = state.engine.balances(who.merchant, None).await?;
    Ok(Json(sorted(BalanceList { balances })))
}

/// Most history lines per page.
const MAX_PAGE: u32 = 500;

#[utoipa::path(
    get, path = "/history", summary = "Ledger history of the authenticated merchant, newest first", security(("bearer" = [])),
    params(CurrencyFilter, PageParams),
    responses((status = 200, description = "One page of entries.", body = HistoryPage), (status = 400, description = "Bad parameter or unknown currency.", body = ErrorBody))
)]
async fn history(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["currency", "before", "limit"])?;
    let lines = state
        .engine
        .history(HistoryQuery { merchant: who.merchant, user: None, currency: params.get("currency").cloned(), before_entry: before, limit })
        .await?;
    let next = if lines.len() == limit as usize { lines.last().map(|l| l.id) } else { None };
    Ok(Json(sorted(HistoryPage { entries: lines, next_before: next })))
}
