//! The WestWallet dialect (spec `westwallet.md`), mounted at the root and under
//! `/westwallet`: it only translates. Authentication accepts the signing styles of
//! all four official clients (`westwallet_auth`); business errors are HTTP 200 with
//! `{"error": "<code>"}` and never a `message` key; amounts are strings.
//!
//! Served so far: `GET /wallet/currencies_data`, `GET /wallet/balance`,
//! `GET /wallet/balances`, `POST /address/generate`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_engine::merchants::{AuthError, Dialect, Principal, Scope};
use kassa_engine::notifications::Origin;
use kassa_engine::EngineError;
use serde_json::{json, Map, Value};

use crate::westwallet_auth::{verify, Verified};
use crate::AppState;

/// Accepted distance between a request's timestamp and the server's clock.
const TIMESTAMP_WINDOW_SECS: i64 = 300;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallet/currencies_data", get(currencies_data))
        .route("/wallet/balance", get(balance))
        .route("/wallet/balances", get(balances))
        .route("/address/generate", post(generate))
}

/// An answer in this dialect's shapes.
pub struct WwError {
    status: StatusCode,
    code: &'static str,
}

impl WwError {
    fn business(code: &'static str) -> Self {
        Self { status: StatusCode::OK, code }
    }
}

impl IntoResponse for WwError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.code }))).into_response()
    }
}

impl From<AuthError> for WwError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Engine(inner) => inner.into(),
            e if e.is_unauthenticated() => Self { status: StatusCode::UNAUTHORIZED, code: "wrong_credentials" },
            _ => Self { status: StatusCode::FORBIDDEN, code: "not_allowed" },
        }
    }
}

impl From<EngineError> for WwError {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::UnknownCurrency(_) | EngineError::InactiveCurrency(_) => "currency_not_found",
            EngineError::ChainNotConfigured(_) | EngineError::ChainHalted(_) => "currency_not_found",
            EngineError::MerchantBlocked(_) => "account_blocked",
            EngineError::Ledger(kassa_core::ledger::LedgerError::InsufficientFunds { .. }) => "insufficient_funds",
            EngineError::Invalid { field: "url", .. } => "bad_ipn_url",
            EngineError::Invalid { field: "label", .. } => "bad_label",
            EngineError::Invalid { .. } | EngineError::Amount(_) => "bad_request",
            EngineError::NotFound(_) => "not_found",
            _ => {
                tracing::error!(error = %e, "westwallet: internal error");
                return Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal_error" };
            }
        };
        Self::business(code)
    }
}

/// An authenticated request: who, and its parameters (JSON body, or a GET's query;
/// the Go client sends GET parameters as a JSON body).
struct Signed {
    who: Principal,
    params: Map<String, Value>,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim()
}

async fn authenticate(state: &AppState, req: Request) -> Result<Signed, WwError> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|_| WwError::business("bad_request"))?;
    let h = &parts.headers;
    let (key, ts, sign) = (header(h, "x-api-key"), header(h, "x-access-timestamp"), header(h, "x-access-sign"));
    if key.is_empty() || ts.is_empty() || sign.is_empty() {
        return Err(AuthError::Missing.into());
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ts_value: i64 = ts.parse().map_err(|_| WwError::from(AuthError::Unknown))?;
    if (now - ts_value).abs() > TIMESTAMP_WINDOW_SECS {
        return Err(AuthError::Unknown.into());
    }
    let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (who, secret) = state.engine.hmac_key(key, Dialect::Westwallet, ip).await?;
    let query = parts.uri.query().unwrap_or("");
    let verified = verify(&secret, ts, sign, parts.method == Method::GET, query, &bytes).map_err(|_| WwError::from(AuthError::Unknown))?;
    let params = match verified {
        Verified::Query(pairs) => pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
        Verified::Body(text) if text.trim().is_empty() || text.trim() == "null" => Map::new(),
        Verified::Body(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(WwError::business("bad_request")),
        },
    };
    Ok(Signed { who, params })
}

/// A string parameter; empty strings count as absent (the PHP client sends every key).
fn param(p: &Map<String, Value>, key: &str) -> Result<Option<String>, WwError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(WwError::business("bad_request")),
    }
}

async fn currencies_data(State(state): State<AppState>) -> impl IntoResponse {
    let list: Vec<Value> = state
        .engine
        .currencies
        .all()
        .filter(|c| c.chain.is_some())
        .map(|c| {
            let number = |a: kassa_core::Amount| serde_json::from_str::<Value>(&a.to_string()).unwrap_or(Value::Null);
            json!({
                "name": c.code.as_str(),
                "address_regex": ".*",
                "require_dest_tag": false,
                "tickers": [c.code.as_str()],
                "min_receive": number(c.min_receive),
                "min_withdraw": number(c.min_withdrawal),
                "max_withdraw_per_transaction": c.max_withdrawal.map(number).unwrap_or(Value::Null),
                "max_withdraw_transactions_per_day": c.max_withdrawals_per_day,
                "active": c.active,
                "send_active": c.active && c.can_send,
                "receive_active": c.active && c.can_receive,
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn balance(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Read)?;
    let code = param(&s.params, "currency")?.ok_or(WwError::business("currency_not_found"))?;
    let currency = state.engine.currencies.active(&code)?.code.to_string();
    let all = state.engine.balances(s.who.merchant, None).await?;
    let available = all.into_iter().find(|b| b.currency == currency).map(|b| b.available);
    let zero = || state.engine.currencies.get(&currency).map(|c| kassa_core::Amount::zero(c.precision).to_string());
    let balance = match available {
        Some(a) => a,
        None => zero()?,
    };
    Ok(Json(json!({ "balance": balance, "currency": currency, "error": "ok" })))
}

async fn balances(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Read)?;
    let held = state.engine.balances(s.who.merchant, None).await?;
    let mut out = Map::new();
    for c in state.engine.currencies.all().filter(|c| c.active && c.chain.is_some()) {
        let available = held.iter().find(|b| b.currency == c.code.as_str()).map(|b| b.available.clone());
        out.insert(c.code.to_string(), Value::String(available.unwrap_or_else(|| kassa_core::Amount::zero(c.precision).to_string())));
    }
    out.insert("error".into(), Value::String("ok".into()));
    Ok(Json(Value::Object(out)))
}

async fn generate(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Receive)?;
    let currency = param(&s.params, "currency")?.ok_or(WwError::business("currency_not_found"))?;
    // The Go client sends `description` for the label.
    let label = match param(&s.params, "label")? {
        Some(l) => Some(l),
        None => param(&s.params, "description")?,
    };
    if label.as_ref().is_some_and(|l| l.chars().count() > 30) {
        return Err(WwError::business("bad_label"));
    }
    let origin = Origin { dialect: "westwallet".into(), callback_url: param(&s.params, "ipn_url")? };
    let a = state.engine.create_deposit_address_from(s.who.merchant, &currency, label.clone(), None, origin).await?;
    Ok(Json(json!({ "address": a.address, "dest_tag": "", "currency": a.currency, "label": label.unwrap_or_default(), "error": "ok" })))
}
