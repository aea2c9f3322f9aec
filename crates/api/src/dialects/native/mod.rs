//! Kassa's own API (`/kassa/v1`), described by the OpenAPI document it serves at
//! `/kassa/v1/openapi.json`. Bearer keys of the `native` dialect authenticate it.

mod error;
mod operator;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_engine::merchants::{Dialect, Principal, Scope};
use kassa_engine::queries::HistoryQuery;
use serde_json::json;

pub use error::ApiError;

use crate::AppState;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Kassa's own API's registration: under `/kassa/v1`. It also words the refusals
/// on paths no dialect owns.
pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "native",
    default_mounts: &["/kassa/v1"],
    router,
    owns: |_| true,
    refusal,
    callbacks: Vec::new,
};

pub(crate) fn refusal(r: crate::dialects::Refusal) -> axum::response::Response {
    use crate::dialects::Refusal;
    let (status, code, message) = match r {
        Refusal::NotFound => (axum::http::StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        Refusal::BodyTooLarge => (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body is larger than the server accepts"),
        Refusal::Timeout => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took longer than the server allows"),
    };
    ApiError { status, code, message: message.into() }.into_response()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(operator::router())
        .route("/openapi.json", get(openapi))
        .route("/currencies", get(currencies))
        .route("/balances", get(balances))
        .route("/history", get(history))
        .route("/addresses", post(create_address))
        .route("/deposits", get(deposits))
        .route("/withdrawals", post(create_withdrawal).get(list_withdrawals))
        .route("/withdrawals/{id}", get(get_withdrawal))
        .route("/webhook-endpoints", post(create_endpoint).get(list_endpoints))
        .route("/webhook-endpoints/{id}/rotate-secret", post(rotate_endpoint_secret))
        .route("/webhook-endpoints/{id}/enable", post(enable_endpoint))
        .route("/webhook-endpoints/{id}/disable", post(disable_endpoint))
        .route("/webhook-endpoints/{id}/test", post(test_endpoint))
        .route("/events", get(list_events))
        .route("/events/{id}/redeliver", post(redeliver_event))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/redeliver", post(redeliver_failed))
        .route("/deliveries/{id}", get(get_delivery))
        .route("/pairs", get(list_pairs))
        .route("/rates", get(get_rate))
        .route("/quotes", post(create_quote))
        .route("/exchanges", post(create_exchange).get(list_exchanges))
        .route("/invoices", post(create_invoice).get(list_invoices))
        .route("/invoices/{id}", get(get_invoice))
}

async fn create_invoice(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Receive)?;
    body.only(&["order_id", "amount", "currency", "currencies", "ttl_secs", "description", "success_url"])?;
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
                ..Default::default()
            },
        )
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(invoice))))
}

async fn get_invoice(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(json!(state.engine.invoice(who.merchant, &id).await?)))
}

async fn list_invoices(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["before", "limit"])?;
    Ok(Json(json!({ "invoices": state.engine.invoices(who.merchant, before, limit.min(100)).await? })))
}

fn amount_field(body: &JsonObject, key: &str) -> Result<Option<String>, ApiError> {
    match body.0.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a decimal string or number"))),
    }
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

async fn list_pairs(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(json!({ "pairs": state.engine.pairs()? })))
}

async fn get_rate(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    page_params(&params, &["from", "to"])?;
    let from = params.get("from").ok_or_else(|| ApiError::bad_request("from is required"))?;
    let to = params.get("to").ok_or_else(|| ApiError::bad_request("to is required"))?;
    Ok(Json(json!(state.engine.rate(from, to)?)))
}

async fn create_quote(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Exchange)?;
    body.only(&["from_currency", "to_currency", "sender_amount", "receiver_amount"])?;
    let q = state.engine.quote(who.merchant, &body.required("from_currency")?, &body.required("to_currency")?, side(&body)?).await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(q))))
}

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
            state.engine.execute_quote(who.merchant, &quote, &client_id, check).await?
        }
        None => {
            body.only(&["client_id", "from_currency", "to_currency", "sender_amount", "receiver_amount"])?;
            let (from, to) = (body.required("from_currency")?, body.required("to_currency")?);
            state.engine.exchange_now(who.merchant, &from, &to, side(&body)?, &client_id).await?
        }
    };
    Ok((axum::http::StatusCode::CREATED, Json(json!(x))))
}

async fn list_exchanges(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let (before, limit) = page_params(&params, &["before", "limit"])?;
    let list = state.engine.exchanges(who.merchant, before, limit).await?;
    Ok(Json(json!({ "exchanges": list })))
}

fn not_found(what: &str) -> ApiError {
    ApiError { status: axum::http::StatusCode::NOT_FOUND, code: "not_found", message: format!("{what} not found") }
}

fn path_id(id: &str, what: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| not_found(what))
}

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
    Ok((axum::http::StatusCode::CREATED, Json(json!(created))))
}

async fn list_endpoints(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(json!({ "webhook_endpoints": state.engine.endpoints(who.merchant).await? })))
}

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
    Ok(Json(json!(rotated)))
}

async fn enable_endpoint(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    Ok(Json(json!(state.engine.set_endpoint_enabled(who.merchant, path_id(&id, "webhook endpoint")?, true).await?)))
}

async fn disable_endpoint(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    Ok(Json(json!(state.engine.set_endpoint_enabled(who.merchant, path_id(&id, "webhook endpoint")?, false).await?)))
}

async fn test_endpoint(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    let event = state.engine.send_test_event(who.merchant, path_id(&id, "webhook endpoint")?).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(json!({ "event_id": event }))))
}

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
    Ok(Json(json!({ "events": events, "next_after": next })))
}

async fn redeliver_event(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    let n = state.engine.redeliver_event(Some(who.merchant), &id).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(json!({ "redelivering": n }))))
}

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
    Ok(Json(json!({ "deliveries": list, "next_before": next })))
}

async fn get_delivery(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(json!(state.engine.delivery(Some(who.merchant), path_id(&id, "delivery")?).await?)))
}

/// RFC 3339 time to Unix milliseconds.
fn parse_time(body: &JsonObject, key: &str) -> Result<i64, ApiError> {
    let text = body.required(key)?;
    let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::bad_request(format!("{key} must be an RFC 3339 time like 2026-01-31T12:00:00Z")))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

async fn redeliver_failed(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Manage)?;
    body.only(&["from", "to"])?;
    let (from, to) = (parse_time(&body, "from")?, parse_time(&body, "to")?);
    let n = state.engine.redeliver_failed(Some(who.merchant), from, to).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(json!({ "redelivering": n }))))
}

async fn create_withdrawal(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Withdraw)?;
    body.only(&["currency", "address", "amount", "priority", "idempotency_key"])?;
    let amount = match body.0.get("amount") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ApiError::bad_request("amount must be a decimal string or number")),
        None => return Err(ApiError::bad_request("amount is required")),
    };
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
            origin: kassa_engine::notifications::Origin::native(),
            description: body.string("description")?,
        })
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(w))))
}

async fn get_withdrawal(State(state): State<AppState>, Auth(who): Auth, axum::extract::Path(id): axum::extract::Path<String>) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let id: i64 = id.parse().map_err(|_| ApiError { status: axum::http::StatusCode::NOT_FOUND, code: "not_found", message: "withdrawal not found".into() })?;
    Ok(Json(json!(state.engine.withdrawal(who.merchant, id).await?)))
}

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
    Ok(Json(json!({ "withdrawals": list, "next_before": next })))
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

async fn create_address(State(state): State<AppState>, Auth(who): Auth, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Receive)?;
    body.only(&["currency", "label", "foreign_id"])?;
    let currency = body.required("currency")?;
    let address = state.engine.create_deposit_address(who.merchant, &currency, body.string("label")?, body.string("foreign_id")?).await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(address))))
}

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
    Ok(Json(json!({ "deposits": list, "next_before": next })))
}

/// The authenticated merchant of a request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("").trim();
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let principal = state.engine.authenticate_bearer(token, Dialect::Native, ip).await?;
        Ok(Auth(principal))
    }
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn currencies(State(state): State<AppState>) -> impl IntoResponse {
    let list: Vec<_> = state
        .engine
        .currencies
        .all()
        .map(|c| {
            let fee = |f: kassa_core::Fee| {
                json!({
                    "fixed": c.amount(f.fixed_units).map(|a| a.to_string()).unwrap_or_default(),
                    "percent": kassa_core::Amount::from_units(f.percent_e6, kassa_core::currency::PERCENT_SCALE)
                        .map(|a| a.to_string()).unwrap_or_default(),
                })
            };
            json!({
                "code": c.code,
                "name": c.name,
                "kind": c.kind,
                "chain": c.chain,
                "precision": c.precision,
                "confirmations": c.confirmations,
                "min_receive": c.min_receive.to_string(),
                "min_withdrawal": c.min_withdrawal.to_string(),
                "max_withdrawal": c.max_withdrawal.map(|a| a.to_string()),
                "max_withdrawals_per_day": c.max_withdrawals_per_day,
                "fees": {
                    "deposit": fee(c.fees.deposit),
                    "withdrawal": fee(c.fees.withdrawal),
                    "internal_move": fee(c.fees.internal_move),
                    "exchange": fee(c.fees.exchange),
                },
                "active": c.active,
                "can_send": c.can_send,
                "can_receive": c.can_receive,
            })
        })
        .collect();
    Json(json!({ "currencies": list }))
}

async fn balances(State(state): State<AppState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    who.require(Scope::Read)?;
    let balances = state.engine.balances(who.merchant, None).await?;
    Ok(Json(json!({ "balances": balances })))
}

/// Most history lines per page.
const MAX_PAGE: u32 = 500;

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
    Ok(Json(json!({ "entries": lines, "next_before": next })))
}
