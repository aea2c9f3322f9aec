//! The scheduled split-payout API (spec `whir.md`), mounted at `/whir/api` (its seed
//! has `/api`; `http.mounts.whir = ["/api"]` gives that). It only translates between
//! that wire format and the engine's payout plans (`kassa_engine::payout_plans`).
//!
//! - `status` and `validateAddress/{address}` are public; the rest take
//!   `Authorization: Bearer {api_key}`.
//! - A transaction object's keys come in the spec's order, every amount a string, and
//!   it carries `signature`: base64 HMAC-SHA256, under the key's own response secret,
//!   of its values joined by `|` (an object as its keys, then its values, joined by
//!   `,`), exactly as rendered (`signature`).
//! - Errors: HTTP status = `code`, body `{"code", "description"}`.

pub mod signature;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kassa_engine::merchants::{AuthError, KeyKind, KeyShape, Principal, Scope};
use kassa_engine::payout_plans::{PlanPayouts, PlanRequest, PlanView};
use kassa_engine::timefmt::format_offset_seconds;
use kassa_engine::EngineError;
use serde_json::Value;

use crate::limits::{self, AuthFailed, Group, Limited};
use crate::AppState;

pub static KEYS: KeyKind = KeyKind { dialect: "whir", shape: KeyShape::Token { prefix: "whir_", hex: false, response_secret: true } };

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "whir",
    default_mounts: &["/whir/api"],
    router,
    owns,
    refusal,
    limit_group,
    documented_limit: crate::dialects::no_documented_limit,
    callbacks: Vec::new,
    keys: Some(&KEYS),
};

/// Most transactions one list answer carries.
const MAX_LIST_LIMIT: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(status))
        .route("/validateAddress/{address}", get(validate_address))
        .route("/createTransaction", post(create_transaction))
        .route("/transactions", get(transactions))
        .route("/transaction/{id}", get(transaction))
}

/// Everything under its mount is its own (unknown paths get its 404).
fn owns(_path: &str) -> bool {
    true
}

fn limit_group(method: &Method, path: &str) -> Group {
    match (method, path) {
        (&Method::POST, "/createTransaction") => Group::Address,
        _ => Group::Default,
    }
}

fn refusal(r: crate::dialects::Refusal) -> Response {
    use crate::dialects::Refusal;
    match r {
        Refusal::NotFound => WhirError::new(StatusCode::NOT_FOUND, "Endpoint does not exist."),
        Refusal::BodyTooLarge => WhirError::new(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large."),
        Refusal::Timeout => WhirError::new(StatusCode::SERVICE_UNAVAILABLE, "Service is temporarily unavailable."),
        Refusal::TooManyRequests { retry_after_secs } => {
            WhirError::new(StatusCode::TOO_MANY_REQUESTS, format!("Too many requests; retry after {retry_after_secs} s."))
        }
    }
    .into_response()
}

/// A refusal: HTTP status = `code`.
pub struct WhirError {
    status: StatusCode,
    description: String,
    limited: Option<Limited>,
}

impl WhirError {
    fn new(status: StatusCode, description: impl Into<String>) -> Self {
        Self { status, description: description.into(), limited: None }
    }

    fn bad(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, description)
    }
}

impl IntoResponse for WhirError {
    fn into_response(self) -> Response {
        if let Some(l) = self.limited {
            return l.into_response();
        }
        let body = serde_json::json!({ "code": self.status.as_u16(), "description": self.description });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.extensions_mut().insert(AuthFailed);
        }
        r
    }
}

impl From<Limited> for WhirError {
    fn from(l: Limited) -> Self {
        Self { limited: Some(l), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests.") }
    }
}

impl From<AuthError> for WhirError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Engine(inner) => inner.into(),
            e if e.is_unauthenticated() => Self::new(StatusCode::UNAUTHORIZED, "Missing or invalid API key."),
            AuthError::MerchantBlocked => Self::new(StatusCode::FORBIDDEN, "The account is blocked."),
            e => Self::new(StatusCode::FORBIDDEN, format!("The API is blocked for this key: {e}.")),
        }
    }
}

/// The one engine-error → whir map.
impl From<EngineError> for WhirError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::Invalid { field, message } => Self::bad(format!("Invalid {field}: {message}.")),
            EngineError::Amount(_) | EngineError::BelowMinimum(_) | EngineError::AboveMaximum(_) | EngineError::UnknownCurrency(_)
            | EngineError::InactiveCurrency(_) => Self::bad(format!("{}{}", capitalised(&e.to_string()), ".")),
            EngineError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "Transaction not found."),
            EngineError::MerchantBlocked(_) => Self::new(StatusCode::FORBIDDEN, "The account is blocked."),
            EngineError::ChainHalted(_) | EngineError::ChainNotConfigured(_) | EngineError::Chain(_) => {
                tracing::warn!(error = %e, "whir: chain unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Service is temporarily unavailable.")
            }
            _ => {
                tracing::error!(error = %e, "whir: request failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Service is temporarily unavailable.")
            }
        }
    }
}

fn capitalised(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// JSON text in the order it is built (the spec fixes the key order).
fn json_response(body: String) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    if !state.engine.database_ready().await {
        return WhirError::new(StatusCode::SERVICE_UNAVAILABLE, "Service is temporarily unavailable.").into_response();
    }
    let now = state.engine.now_ms();
    let body = format!(r#"{{"status":"ok","timestamp":{},"datetime":{}}}"#, now.div_euclid(1000), quoted(&format_offset_seconds(now)));
    json_response(body)
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

async fn validate_address(State(state): State<AppState>, Path(address): Path<String>) -> Result<Response, WhirError> {
    let valid = state.engine.validate_plan_address(&address)?;
    Ok(json_response(format!(r#"{{"result":"{valid}"}}"#)))
}

/// The authenticated merchant, with its key's response secret.
async fn authenticate(state: &AppState, parts: &axum::http::request::Parts, scope: Scope) -> Result<(Principal, Vec<u8>), WhirError> {
    let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("").trim();
    let who = state.engine.authenticate_bearer(token, KEYS.dialect, limits::client_ip(&parts.extensions)).await?;
    limits::admit_key(&parts.extensions, who.key_id)?;
    who.require(scope)?;
    let secret = state.engine.response_secret(&who).await?;
    Ok((who, secret))
}

/// A transaction object, in the spec's key order, signed.
fn transaction_json(p: &PlanView, secret: &[u8]) -> String {
    let mut fields: Vec<(&str, signature::Field)> = vec![
        ("id", p.id.clone().into()),
        ("status", p.status.to_string().into()),
        ("depositAddress", p.deposit_address.clone().into()),
        ("depositAmount", p.deposit_amount.clone().into()),
    ];
    if let Some(txid) = &p.deposit_txid {
        fields.push(("depositTxid", txid.clone().into()));
    }
    fields.push(("payouts", signature::Field::Object(p.payouts.clone())));
    if let Some(txid) = &p.txid {
        fields.push(("txid", txid.clone().into()));
    }
    fields.push(("fee", p.fee.clone().into()));
    fields.push(("delay", p.delay_hours.to_string().into()));
    if let Some(code) = &p.ref_code {
        fields.push(("refCode", code.clone().into()));
    }
    fields.push(("updated", format_offset_seconds(p.updated_at_ms).into()));
    fields.push(("created", format_offset_seconds(p.created_at_ms).into()));
    signature::signed_object(&fields, secret)
}

async fn transaction(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Result<Response, WhirError> {
    let (parts, _) = req.into_parts();
    let (who, secret) = authenticate(&state, &parts, Scope::Read).await?;
    let plan = state.engine.payout_plan(who.merchant, id.trim()).await?;
    Ok(json_response(transaction_json(&plan, &secret)))
}

async fn transactions(State(state): State<AppState>, Query(q): Query<Vec<(String, String)>>, req: Request) -> Result<Response, WhirError> {
    let (parts, _) = req.into_parts();
    let (who, secret) = authenticate(&state, &parts, Scope::Read).await?;
    let param = |name: &str| q.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    let limit_text = param("limit");
    let limit = match &limit_text {
        Some(t) => match t.parse::<u32>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => return Err(WhirError::bad(format!("Invalid limit: must be a whole number 1-{MAX_LIST_LIMIT}."))),
        },
        None => 30,
    };
    let offset = match param("offset") {
        Some(t) => t.parse::<u64>().map_err(|_| WhirError::bad("Invalid offset: must be a whole number from 0."))?,
        None => 0,
    };
    let (plans, total) = state.engine.payout_plans(who.merchant, limit, offset).await?;
    let list: Vec<String> = plans.iter().map(|p| transaction_json(p, &secret)).collect();
    // `limit` as given (the seed echoes the query's text), `offset` a number.
    let limit_json = match limit_text {
        Some(t) => quoted(&t),
        None => limit.to_string(),
    };
    Ok(json_response(format!(r#"{{"transactions":[{}],"totalTransactions":{total},"limit":{limit_json},"offset":{offset}}}"#, list.join(","))))
}

/// `payouts` in the request's order: an object of address → amount, or a list of addresses.
enum PayoutsField {
    Map(Vec<(String, Value)>),
    List(Vec<Value>),
    Other,
}

impl<'de> serde::Deserialize<'de> for PayoutsField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PayoutsField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<PayoutsField, A::Error> {
                let mut out = Vec::new();
                // Bounded by the body limit; checked against the plan limit by the engine.
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(PayoutsField::Map(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<PayoutsField, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Value>()? {
                    out.push(v);
                }
                Ok(PayoutsField::List(out))
            }
            fn visit_unit<E>(self) -> Result<PayoutsField, E> {
                Ok(PayoutsField::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<PayoutsField, E> {
                Ok(PayoutsField::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<PayoutsField, E> {
                Ok(PayoutsField::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<PayoutsField, E> {
                Ok(PayoutsField::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<PayoutsField, E> {
                Ok(PayoutsField::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<PayoutsField, E> {
                Ok(PayoutsField::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(serde::Deserialize)]
struct CreateBody {
    #[serde(default)]
    payouts: Option<PayoutsField>,
}

async fn create_transaction(State(state): State<AppState>, req: Request) -> Result<Response, WhirError> {
    let (parts, body) = req.into_parts();
    let (who, secret) = authenticate(&state, &parts, Scope::Withdraw).await?;
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|_| WhirError::new(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large."))?;
    let invalid_json = || WhirError::bad("Invalid JSON data.");
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid_json())?;
    let obj = value.as_object().ok_or_else(invalid_json)?;
    let ordered: CreateBody = serde_json::from_slice(&bytes).map_err(|_| invalid_json())?;
    let delay = match crate::wire::whole_number(obj.get("delay")) {
        Ok(Some(d)) => d,
        Ok(None) => return Err(WhirError::bad("Invalid delay: it is required (whole hours).")),
        Err(_) => return Err(WhirError::bad("Invalid delay: must be a whole number of hours.")),
    };
    let text = |v: &Value, what: &str| -> Result<String, WhirError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(WhirError::bad(format!("Invalid payouts: each {what} must be a string."))),
        }
    };
    let payouts = match ordered.payouts {
        Some(PayoutsField::Map(entries)) => {
            PlanPayouts::Fixed(entries.iter().map(|(a, v)| Ok((a.clone(), text(v, "amount")?))).collect::<Result<_, WhirError>>()?)
        }
        Some(PayoutsField::List(items)) => PlanPayouts::Split(
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(WhirError::bad("Invalid payouts: each address must be a string.")),
                })
                .collect::<Result<_, WhirError>>()?,
        ),
        Some(PayoutsField::Other) | None => {
            return Err(WhirError::bad("Invalid payouts: an object of address → amount, or an array of addresses, is required."))
        }
    };
    let string_field = |key: &str| -> Result<Option<String>, WhirError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(WhirError::bad(format!("Invalid {key}: must be a string."))),
        }
    };
    let request = PlanRequest {
        merchant: who.merchant,
        currency: string_field("currency")?,
        delay_hours: delay,
        payouts,
        ref_code: string_field("refCode")?,
        origin: KEYS.dialect.to_string(),
    };
    let plan = state.engine.create_payout_plan(request).await?;
    Ok(json_response(transaction_json(&plan, &secret)))
}
