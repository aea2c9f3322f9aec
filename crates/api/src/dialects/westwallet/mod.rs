//! The WestWallet dialect (spec `westwallet.md`), mounted at the root and under
//! `/westwallet`: it only translates between that wire format and the engine.
//!
//! - Authentication accepts the signing styles of all four official clients
//!   (`auth`) within a timestamp window (`[westwallet]
//!   timestamp_window_secs`, default ±300 s).
//! - Business errors are HTTP 200 with `{"error": "<code>"}`; 401 `wrong_credentials`
//!   and 403 `not_allowed` for identity and permission; never a `message` key; amounts
//!   are strings; transaction objects carry exactly the keys the clients know.
//! - Transaction ids are the shared deposit/withdrawal ids of `kassa_core::transfers`
//!   (the ids IPNs carry).
//! - Replays: a signed request is identified by its timestamp and signature. Sending
//!   the same signed withdrawal again (same timestamp, same body) returns the
//!   withdrawal it created instead of paying twice; other requests are idempotent
//!   reads or create harmless new objects (an address, an invoice).

pub mod auth;
pub mod callbacks;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_chain::Priority;
use kassa_core::ledger::LedgerError;
use kassa_core::transfers::TransferKind;
use kassa_core::Currency;
use kassa_engine::invoices::InvoiceRequest;
use kassa_engine::merchants::{AuthError, Principal, Scope};
use kassa_engine::notifications::Origin;
use kassa_engine::transfers::Transfer;
use kassa_engine::withdrawals::{BulkPayment, Withdrawal, WithdrawalRequest};
use kassa_engine::idempotency::OnceRequest;
use kassa_engine::EngineError;
use kassa_engine::queries::TransferQuery;
use serde_json::{json, Map, Value};

use auth::{verify, Verified};
use crate::limits::{self, AuthFailed, Group, Limited};
use crate::wire;
use crate::AppState;

/// Longest address label the dialect accepts (the service's own limit).
const MAX_LABEL_CHARS: usize = 30;
/// Longest invoice lifetime, in minutes.
const MAX_INVOICE_TTL_MINUTES: u64 = 15;
/// Most transactions one list answer carries.
const MAX_LIST_LIMIT: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallet/currencies_data", get(currencies_data))
        .route("/wallet/balance", get(balance))
        .route("/wallet/balances", get(balances))
        .route("/wallet/create_withdrawal", post(create_withdrawal))
        .route("/wallet/create_withdrawal/many", post(create_withdrawal_many))
        .route("/wallet/transaction", post(transaction))
        .route("/wallet/transactions", post(transactions))
        .route("/address/generate", post(generate))
        .route("/address/create_invoice", post(create_invoice))
        .route("/address/invoice_transactions", get(invoice_transactions))
}

/// The WestWallet dialect's registration: at the root (where the official clients'
/// default base URL points) and under `/westwallet`.
pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "westwallet",
    default_mounts: &["", "/westwallet"],
    router,
    owns,
    refusal,
    limit_group,
    documented_limit: crate::dialects::no_documented_limit,
    callbacks: || vec![std::sync::Arc::new(callbacks::Ipn)],
    keys: Some(&KEYS),
};

/// A public key and an HMAC secret, as the official clients send them.
pub static KEYS: kassa_engine::merchants::KeyKind =
    kassa_engine::merchants::KeyKind { dialect: "westwallet", shape: kassa_engine::merchants::KeyShape::Hmac };

/// True for paths (relative to a mount) of this dialect.
fn owns(path: &str) -> bool {
    path.starts_with("/wallet/") || path.starts_with("/address/")
}

fn limit_group(method: &Method, path: &str) -> Group {
    match (method, path) {
        (&Method::POST, "/address/generate") => Group::Address,
        (&Method::POST, "/address/create_invoice") => Group::Invoice,
        _ => Group::Default,
    }
}

/// The server's own refusals in this dialect's shape: a flat code, never a `message`.
fn refusal(r: crate::dialects::Refusal) -> Response {
    use crate::dialects::Refusal;
    let (status, code) = match r {
        Refusal::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Refusal::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        Refusal::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
        Refusal::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
    };
    (status, Json(json!({ "error": code }))).into_response()
}

/// An answer in this dialect's shapes.
pub struct WwError {
    status: StatusCode,
    code: &'static str,
    /// A rate limit refused it (the HTTP layer words it and adds `Retry-After`).
    limited: Option<Limited>,
}

impl WwError {
    const fn new(status: StatusCode, code: &'static str) -> Self {
        Self { status, code, limited: None }
    }

    fn business(code: &'static str) -> Self {
        Self::new(StatusCode::OK, code)
    }
}

impl From<Limited> for WwError {
    fn from(l: Limited) -> Self {
        Self { limited: Some(l), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests") }
    }
}

impl IntoResponse for WwError {
    fn into_response(self) -> Response {
        if let Some(l) = self.limited {
            return l.into_response();
        }
        let mut r = (self.status, Json(json!({ "error": self.code }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.extensions_mut().insert(AuthFailed);
        }
        r
    }
}

impl From<AuthError> for WwError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Engine(inner) => inner.into(),
            e if e.is_unauthenticated() => Self::new(StatusCode::UNAUTHORIZED, "wrong_credentials"),
            _ => Self::new(StatusCode::FORBIDDEN, "not_allowed"),
        }
    }
}

/// The dialect's code for an engine refusal.
fn code_of(e: &EngineError) -> Option<&'static str> {
    Some(match e {
        EngineError::UnknownCurrency(_) | EngineError::InactiveCurrency(_) => "currency_not_found",
        EngineError::ChainNotConfigured(_) => "currency_not_found",
        EngineError::ChainHalted(_) => "currency_unavailable",
        EngineError::MerchantBlocked(_) => "account_blocked",
        EngineError::InsufficientFunds { .. } => "insufficient_funds",
        EngineError::Ledger(LedgerError::IdempotencyConflict { .. }) | EngineError::Conflict(_) | EngineError::InProgress(_) => "duplicate_request",
        EngineError::BelowMinimum(_) => "min_withdraw_error",
        EngineError::AboveMaximum(_) | EngineError::LimitReached(_) => "max_withdraw_error",
        EngineError::Invalid { field: "address", .. } => "bad_address",
        EngineError::Invalid { field: "duplicate_address", .. } => "duplicate_address",
        EngineError::Invalid { field: "url", .. } => "bad_ipn_url",
        EngineError::Invalid { field: "success_url", .. } => "bad_success_url",
        EngineError::Invalid { field: "label", .. } => "bad_label",
        EngineError::Invalid { field: "description", .. } => "bad_description",
        EngineError::Invalid { field: "currency", .. } | EngineError::Invalid { field: "currencies", .. } => "currency_not_found",
        EngineError::Invalid { field: "transactions", .. } => "bad_transactions",
        EngineError::Invalid { field: "amount", .. } | EngineError::Amount(_) => "bad_amount",
        EngineError::Invalid { .. } => "bad_request",
        EngineError::RatesUnavailable(_) => "rates_unavailable",
        EngineError::NotFound(_) => "not_found",
        _ => return None,
    })
}

impl From<EngineError> for WwError {
    fn from(e: EngineError) -> Self {
        match code_of(&e) {
            Some(code) => Self::business(code),
            None => {
                tracing::error!(error = %e, "westwallet: internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }
}

/// An authenticated request: who, its parameters (JSON body, or a GET's query; the Go
/// client sends GET parameters as a JSON body), and what identifies it (timestamp and
/// signature).
struct Signed {
    who: Principal,
    params: Map<String, Value>,
    request_key: String,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim()
}

/// Checks the request's key, timestamp and signature, and the merchant's standing.
/// `blocked_is_business`: a blocked merchant is told `account_blocked` (withdrawals)
/// rather than refused with 403.
async fn authenticate(state: &AppState, req: Request, blocked_is_business: bool) -> Result<Signed, WwError> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| WwError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"))?;
    let h = &parts.headers;
    let (key, ts, sign) = (header(h, "x-api-key"), header(h, "x-access-timestamp"), header(h, "x-access-sign"));
    if key.is_empty() || ts.is_empty() || sign.is_empty() {
        return Err(AuthError::Missing.into());
    }
    let now = state.engine.clock().now_secs();
    let ts_value: i64 = ts.parse().map_err(|_| WwError::from(AuthError::Unknown))?;
    if now.abs_diff(ts_value) > state.westwallet.timestamp_window_secs.unsigned_abs() {
        tracing::info!(timestamp = ts_value, now, "westwallet: timestamp outside the accepted window");
        return Err(AuthError::Unknown.into());
    }
    let (admitted, secret) = state.engine.hmac_key(key, KEYS.dialect, limits::client_ip(&parts.extensions)).await?;
    let query = parts.uri.query().unwrap_or("");
    let verified = verify(&secret, ts, sign, parts.method == Method::GET, query, &bytes).map_err(|_| WwError::from(AuthError::Unknown))?;
    // Only a correctly signed request learns why its key is refused.
    let who = match admitted {
        Ok(who) => who,
        Err(AuthError::MerchantBlocked) if blocked_is_business => return Err(WwError::business("account_blocked")),
        Err(e) => return Err(e.into()),
    };
    limits::admit_key(&parts.extensions, who.key_id)?;
    let params = match verified {
        Verified::Query(pairs) => pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
        Verified::NotText => return Err(WwError::business("bad_request")),
        Verified::Body(text) if text.trim().is_empty() || text.trim() == "null" => Map::new(),
        Verified::Body(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(WwError::business("bad_request")),
        },
    };
    Ok(Signed { who, params, request_key: format!("ww:{ts}:{}", sign.to_ascii_lowercase()) })
}

/// A string parameter; empty strings count as absent (the PHP client sends every key).
/// Another type is refused with `bad`.
fn param(p: &Map<String, Value>, key: &str, bad: &'static str) -> Result<Option<String>, WwError> {
    wire::amount_text(wire::non_blank(p.get(key))).map_err(|_| WwError::business(bad))
}

/// A whole-number parameter (a number, or a string of digits as the PHP client sends).
fn integer(p: &Map<String, Value>, key: &str, bad: &'static str) -> Result<Option<i64>, WwError> {
    wire::whole_number(wire::non_blank(p.get(key))).map_err(|_| WwError::business(bad))
}

/// A currency this dialect offers (`[westwallet] currencies`, else every active
/// currency carried by a chain).
fn offered<'a>(state: &'a AppState, code: &str) -> Result<&'a Currency, WwError> {
    let c = state.engine.currencies.get(code).map_err(|_| WwError::business("currency_not_found"))?;
    let listed = match &state.westwallet.currencies {
        Some(list) => list.iter().any(|l| l == c.code.as_str()),
        None => c.chain.is_some(),
    };
    if !listed || !c.active || c.chain.is_none() {
        return Err(WwError::business("currency_not_found"));
    }
    Ok(c)
}

fn offered_all(state: &AppState) -> Vec<&Currency> {
    state.engine.currencies.all().filter(|c| offered(state, c.code.as_str()).is_ok()).collect()
}

fn required_currency<'a>(state: &'a AppState, p: &Map<String, Value>) -> Result<&'a Currency, WwError> {
    let code = param(p, "currency", "currency_not_found")?.ok_or(WwError::business("currency_not_found"))?;
    offered(state, &code)
}

/// The dialect's status of a deposit or withdrawal.
fn ww_status(t: &Transfer) -> &'static str {
    match (t.kind, t.status.as_str()) {
        (TransferKind::Receive, "credited") | (TransferKind::Send, "confirmed") => "completed",
        (TransferKind::Receive, "reversed" | "dropped") | (TransferKind::Send, "cancelled") => "cancelled",
        (TransferKind::Send, "failed") => "network_error",
        _ => "pending",
    }
}

/// The transaction object: exactly the keys the official clients know (§3).
fn transaction_object(t: &Transfer) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("id".into(), json!(t.id));
    o.insert("type".into(), json!(t.kind.as_str()));
    o.insert("amount".into(), json!(t.amount));
    o.insert("address".into(), json!(t.address));
    o.insert("dest_tag".into(), json!(""));
    o.insert("label".into(), json!(t.label));
    o.insert("currency".into(), json!(t.currency));
    o.insert("status".into(), json!(ww_status(t)));
    o.insert("blockchain_confirmations".into(), json!(t.confirmations));
    o.insert("blockchain_hash".into(), json!(t.txid.clone().unwrap_or_default()));
    o.insert("fee".into(), json!(t.fee));
    o
}

/// A withdrawal just requested (or replayed), as a transfer.
fn sent(w: &Withdrawal) -> Result<Transfer, WwError> {
    Transfer::from_withdrawal(w).ok_or(WwError::business("not_found"))
}

/// A list item: the transaction object with its times and description.
fn history_item(t: &Transfer) -> Value {
    let mut o = transaction_object(t);
    o.insert("created_at".into(), json!(wire::datetime_seconds(t.created_at_ms)));
    o.insert("updated_at".into(), json!(wire::datetime_seconds(t.updated_at_ms)));
    o.insert("description".into(), json!(t.description.clone().unwrap_or_default()));
    Value::Object(o)
}

fn ok(mut o: Map<String, Value>) -> Json<Value> {
    o.insert("error".into(), json!("ok"));
    Json(Value::Object(o))
}

fn priority(p: &Map<String, Value>) -> Result<Priority, WwError> {
    match param(p, "priority", "bad_priority")? {
        None => Ok(Priority::Medium),
        Some(text) => Priority::parse(&text.to_ascii_lowercase()).ok_or(WwError::business("bad_priority")),
    }
}

/// Destination tags: no currency Kassa carries today takes one, so any tag is refused.
fn no_dest_tag(p: &Map<String, Value>) -> Result<(), WwError> {
    match param(p, "dest_tag", "bad_dest_tag")? {
        Some(_) => Err(WwError::business("bad_dest_tag")),
        None => Ok(()),
    }
}

async fn currencies_data(State(state): State<AppState>) -> impl IntoResponse {
    let list: Vec<Value> = offered_all(&state)
        .into_iter()
        .map(|c| {
            let number = |a: kassa_core::Amount| serde_json::from_str::<Value>(&a.to_string()).unwrap_or(Value::Null);
            let chain = c.chain.as_deref().and_then(|name| state.engine.chains.get(name));
            json!({
                "name": c.code.as_str(),
                "address_regex": chain.map(|ch| ch.adapter.address_regex()).unwrap_or_else(|| "^.+$".into()),
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

async fn available(state: &AppState, who: &Principal) -> Result<Vec<(String, String)>, WwError> {
    let held = state.engine.balances(who.merchant, None).await?;
    Ok(offered_all(state)
        .into_iter()
        .map(|c| {
            let a = held.iter().find(|b| b.currency == c.code.as_str()).map(|b| b.available.clone());
            (c.code.to_string(), a.unwrap_or_else(|| kassa_core::Amount::zero(c.precision).to_string()))
        })
        .collect())
}

async fn balance(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Read)?;
    let currency = required_currency(&state, &s.params)?.code.to_string();
    let all = available(&state, &s.who).await?;
    let balance = all.into_iter().find(|(c, _)| *c == currency).map(|(_, a)| a).ok_or(WwError::business("currency_not_found"))?;
    Ok(Json(json!({ "balance": balance, "currency": currency, "error": "ok" })))
}

async fn balances(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Read)?;
    Ok(ok(available(&state, &s.who).await?.into_iter().map(|(c, a)| (c, Value::String(a))).collect()))
}

/// A money-moving signed request, to be run once: a replay (same timestamp and
/// signature) is answered with what the first arrival did. Kept for three timestamp
/// windows; older replays fail the timestamp check anyway.
fn once<'a>(state: &AppState, s: &'a Signed, scope: &'a str) -> OnceRequest<'a> {
    OnceRequest {
        merchant: s.who.merchant,
        scope,
        key: &s.request_key,
        // The key is the timestamp and the signature over the body: the same key
        // cannot carry another request, so the key itself identifies it.
        request: s.request_key.as_bytes(),
        keep_for: std::time::Duration::from_secs(3 * state.westwallet.timestamp_window_secs.unsigned_abs()),
    }
}

async fn create_withdrawal(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, true).await?;
    s.who.require(Scope::Withdraw)?;
    let p = &s.params;
    // The spec's order: currency, address, tag, amount, limits, funds.
    let currency = required_currency(&state, p)?;
    let address = param(p, "address", "bad_address")?.ok_or(WwError::business("bad_address"))?;
    state.engine.check_withdrawal_address(currency.code.as_str(), &address)?;
    no_dest_tag(p)?;
    let amount = param(p, "amount", "bad_amount")?.ok_or(WwError::business("bad_amount"))?;
    let priority = priority(p)?;
    let description = param(p, "description", "bad_description")?;
    let callback_url = param(p, "ipn_url", "bad_ipn_url")?;
    let request = WithdrawalRequest {
        merchant: s.who.merchant,
        currency: currency.code.to_string(),
        address,
        amount,
        priority,
        idempotency_key: s.request_key.clone(),
        origin: Origin { dialect: "westwallet".into(), callback_url },
        description,
        pay_from: None,
    };
    let w = state
        .engine
        .once(once(&state, &s, "westwallet:create_withdrawal"), state.engine.request_withdrawal(request), || {
            state.engine.withdrawal_by_key(s.who.merchant, &s.request_key)
        })
        .await?;
    Ok(ok(transaction_object(&sent(&w)?)))
}

async fn create_withdrawal_many(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, true).await?;
    s.who.require(Scope::Withdraw)?;
    let p = &s.params;
    let currency = required_currency(&state, p)?;
    let priority = priority(p)?;
    let items = match p.get("transactions") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err(WwError::business("bad_transactions")),
    };
    // Each element's own shape; one with a wrong shape fails alone.
    let mut shaped: Vec<Result<BulkPayment, &'static str>> = Vec::new();
    for item in items {
        shaped.push(match item {
            Value::Object(o) => (|| {
                let address = param(o, "address", "bad_address").map_err(|e| e.code)?.ok_or("bad_address")?;
                no_dest_tag(o).map_err(|e| e.code)?;
                Ok(BulkPayment {
                    address,
                    amount: param(o, "amount", "bad_amount").map_err(|e| e.code)?.ok_or("bad_amount")?,
                    description: param(o, "description", "bad_description").map_err(|e| e.code)?,
                    callback_url: param(o, "ipn_url", "bad_ipn_url").map_err(|e| e.code)?,
                })
            })(),
            _ => Err("bad_request"),
        });
    }
    let good: Vec<BulkPayment> = shaped.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let outcomes = if good.is_empty() {
        Vec::new()
    } else {
        // A replay answers payment by payment with what the first arrival did.
        let req = once(&state, &s, "westwallet:create_withdrawal/many");
        state.engine.request_withdrawals_bulk(req, currency.code.as_str(), priority, good, "westwallet").await?
    };
    let mut outcomes = outcomes.into_iter();
    let mut results = Vec::new();
    for (item, shape) in items.iter().zip(shaped) {
        let echo = |key: &str| item.as_object().and_then(|o| param(o, key, "bad_request").ok().flatten()).unwrap_or_default();
        let failed = |code: &str| json!({"address": echo("address"), "amount": echo("amount"), "description": echo("description"), "error": code});
        let outcome = match shape {
            Err(code) => Err(code),
            // Payments that passed their shape checks, in order, one outcome each.
            Ok(_) => match outcomes.next() {
                Some(Ok(w)) => Ok(w),
                Some(Err(e)) => Err(WwError::from(e).code),
                None => Err("internal_error"),
            },
        };
        results.push(match outcome {
            Ok(w) => {
                let mut o = transaction_object(&sent(&w)?);
                o.insert("description".into(), json!(w.description.clone().unwrap_or_default()));
                o.insert("error".into(), json!("ok"));
                Value::Object(o)
            }
            Err(code) => failed(code),
        });
    }
    Ok(Json(json!({"error": "ok", "results": results})))
}

async fn transaction(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Read)?;
    let t = match (integer(&s.params, "id", "not_found")?, param(&s.params, "label", "bad_label")?) {
        (Some(id), _) => state.engine.transfer(s.who.merchant, id).await?,
        (None, Some(label)) => state.engine.latest_receive_by_label(s.who.merchant, &label).await?,
        (None, None) => return Err(WwError::business("bad_request")),
    };
    Ok(ok(transaction_object(&t)))
}

const PENDING_RECEIVES: &[&str] = &["seen", "confirming"];
const PENDING_SENDS: &[&str] = &["queued", "signed", "broadcast"];
const COMPLETED_RECEIVES: &[&str] = &["credited"];
const COMPLETED_SENDS: &[&str] = &["confirmed"];
const CANCELLED_RECEIVES: &[&str] = &["reversed", "dropped"];
const CANCELLED_SENDS: &[&str] = &["cancelled"];
const FAILED_SENDS: &[&str] = &["failed"];

async fn transactions(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Read)?;
    let p = &s.params;
    let currency = match param(p, "currency", "currency_not_found")? {
        Some(code) => Some(offered(&state, &code)?.code.to_string()),
        None => None,
    };
    let limit = integer(p, "limit", "bad_limit")?.unwrap_or(10);
    if !(1..=i64::from(MAX_LIST_LIMIT)).contains(&limit) {
        return Err(WwError::business("bad_limit"));
    }
    let offset = integer(p, "offset", "bad_offset")?.unwrap_or(0);
    let offset = u32::try_from(offset).map_err(|_| WwError::business("bad_offset"))?;
    let kind = match param(p, "type", "bad_type")? {
        None => None,
        Some(t) => Some(TransferKind::parse(&t).ok_or(WwError::business("bad_type"))?),
    };
    let ascending = match param(p, "order", "bad_order")?.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(WwError::business("bad_order")),
    };
    let (receive_statuses, send_statuses) = match param(p, "status", "bad_status")?.as_deref() {
        None => (None, None),
        Some("pending") => (Some(PENDING_RECEIVES), Some(PENDING_SENDS)),
        Some("completed") => (Some(COMPLETED_RECEIVES), Some(COMPLETED_SENDS)),
        Some("cancelled") => (Some(CANCELLED_RECEIVES), Some(CANCELLED_SENDS)),
        Some("network_error") => (Some(&[][..]), Some(FAILED_SENDS)),
        Some(_) => return Err(WwError::business("bad_status")),
    };
    let q = TransferQuery { currency, kind, receive_statuses, send_statuses, ascending, limit: limit as u32, offset, ..Default::default() };
    let (list, count) = state.engine.transfers(s.who.merchant, q).await?;
    Ok(Json(json!({"count": count, "error": "ok", "result": list.iter().map(history_item).collect::<Vec<_>>()})))
}

async fn generate(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Receive)?;
    let currency = required_currency(&state, &s.params)?.code.to_string();
    // The Go client sends `description` for the label.
    let label = match param(&s.params, "label", "bad_label")? {
        Some(l) => Some(l),
        None => param(&s.params, "description", "bad_label")?,
    };
    if label.as_ref().is_some_and(|l| l.chars().count() > MAX_LABEL_CHARS) {
        return Err(WwError::business("bad_label"));
    }
    let origin = Origin { dialect: "westwallet".into(), callback_url: param(&s.params, "ipn_url", "bad_ipn_url")? };
    let a = state.engine.create_deposit_address_from(s.who.merchant, &currency, label.clone(), None, origin, None).await?;
    Ok(Json(json!({ "address": a.address, "dest_tag": "", "currency": a.currency, "label": label.unwrap_or_default(), "error": "ok" })))
}

fn boolean(p: &Map<String, Value>, key: &str, bad: &'static str) -> Result<bool, WwError> {
    Ok(wire::flag(p.get(key)).map_err(|_| WwError::business(bad))?.unwrap_or(false))
}

async fn create_invoice(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Receive)?;
    let p = &s.params;
    let codes: Vec<String> = match p.get("currencies") {
        Some(Value::Array(list)) if !list.is_empty() => {
            list.iter().map(|v| v.as_str().map(str::to_string).ok_or(WwError::business("currency_not_found"))).collect::<Result<_, _>>()?
        }
        // One currency as a plain string.
        Some(Value::String(one)) if !one.trim().is_empty() => vec![one.trim().to_string()],
        _ => return Err(WwError::business("currency_not_found")),
    };
    let accepted = codes.iter().map(|c| offered(&state, c).map(|c| c.code.to_string())).collect::<Result<Vec<_>, _>>()?;
    let amount = param(p, "amount", "bad_amount")?.ok_or(WwError::business("bad_amount"))?;
    let in_usd = boolean(p, "amount_in_usd", "bad_amount_in_usd")? || accepted.len() > 1;
    let callback_url = param(p, "ipn_url", "bad_ipn_url")?.ok_or(WwError::business("bad_ipn_url"))?;
    let ttl_minutes = integer(p, "ttl", "bad_ttl")?.unwrap_or(MAX_INVOICE_TTL_MINUTES as i64);
    if !(1..=MAX_INVOICE_TTL_MINUTES as i64).contains(&ttl_minutes) {
        return Err(WwError::business("bad_ttl"));
    }
    let label = param(p, "label", "bad_label")?;
    if label.as_ref().is_some_and(|l| l.chars().count() > MAX_LABEL_CHARS) {
        return Err(WwError::business("bad_label"));
    }
    let currency = if in_usd {
        // Amounts in USD need USD configured (as fiat) and rates to it.
        state.engine.currencies.get("USD").map_err(|_| WwError::business("usd_not_supported"))?.code.to_string()
    } else {
        accepted[0].clone()
    };
    let invoice = state
        .engine
        .create_invoice(
            s.who.merchant,
            InvoiceRequest {
                order_id: format!("ww_{}", kassa_engine::secrets::random_alphanumeric(24)),
                amount,
                currency,
                accepted,
                ttl: Some(std::time::Duration::from_secs(ttl_minutes as u64 * 60)),
                description: param(p, "description", "bad_description")?.unwrap_or_default(),
                success_url: param(p, "success_url", "bad_success_url")?,
                origin: Origin { dialect: "westwallet".into(), callback_url: Some(callback_url) },
                label,
                ..Default::default()
            },
        )
        .await?;
    let options: Vec<Value> = invoice
        .options
        .iter()
        .map(|o| json!({"address": o.address, "amount": o.amount, "currency_code": o.currency, "dest_tag": ""}))
        .collect();
    Ok(Json(json!({
        "allowed_currencies_data": options,
        "expire_at": wire::datetime_seconds(invoice.expires_at_ms),
        "token": invoice.token,
        "url": invoice.url,
        "error": "ok",
    })))
}

async fn invoice_transactions(State(state): State<AppState>, req: Request) -> Result<Json<Value>, WwError> {
    let s = authenticate(&state, req, false).await?;
    s.who.require(Scope::Read)?;
    let token = param(&s.params, "token", "bad_request")?.ok_or(WwError::business("bad_request"))?;
    let (invoice_id, invoice) = state.engine.merchant_invoice_by_token(s.who.merchant, &token).await?;
    let q = TransferQuery { invoice_id: Some(invoice_id), kind: Some(TransferKind::Receive), limit: 1000, ..Default::default() };
    let (list, count) = state.engine.transfers(s.who.merchant, q).await?;
    let items: Vec<Value> = list
        .iter()
        .map(|t| {
            let mut item = history_item(t);
            item["description"] = json!(invoice.description);
            item
        })
        .collect();
    Ok(Json(json!({"count": count, "error": "ok", "result": items})))
}
