//! The CoinsPaid-style dialect (spec `coinspaid.md`): v1 (WllxPay) and v2 (WallexPay),
//! mounted under `/api` (so `/api/v1/…` and `/api/v2/…`). It only translates between
//! that wire format and the engine.
//!
//! - Authentication: `X-Processing-Key` and `X-Processing-Signature` (hex HMAC-SHA512
//!   of the raw body, `auth`), checked before the body is parsed; failures are 403
//!   `{"error", "code"}`.
//! - Success: v2 `{"data": …}`, v1 `{"status": "ok", "data": …}`; 200 for reads, 201
//!   for what creates something. Refusals: 400 `{"errors": {"<field>": "<message>"}}`,
//!   every value a string; v1 adds `error_code`.
//! - Decimals are strings at the currency's precision; ids are integers.
//!
//! Served so far: `ping`, `currencies/list`, `currencies/pairs`, `currencies/rates`,
//! `accounts/list`, `exchange/calculate`, `exchange/now`, `exchange/fixed` and
//! `addresses/take` (v1 and v2; v2 with `convert_to`: conversion on deposit),
//! `withdrawal/crypto` (v2, with `convert_to`: withdrawal with exchange),
//! `withdrawal/make` (v1), and `futures/rates` and `futures/confirm` (v2).

pub mod auth;
pub mod callbacks;
pub mod terminal;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_core::currency::{CurrencyKind, Fee};
use kassa_core::{Amount, Currency};
use kassa_engine::callbacks::CallbackFormat;
use kassa_engine::merchants::{AuthError, Principal, Scope};
use kassa_engine::notifications::Origin;
use kassa_engine::invoices::InvoiceRequest;
use kassa_engine::EngineError;
use serde_json::{json, Map, Value};

use crate::limits::{self, AuthFailed, Group, Limited};
use crate::wire;
use crate::AppState;

/// Longest `foreign_id` the dialect accepts.
const MAX_FOREIGN_ID_CHARS: usize = 128;

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "coinspaid",
    default_mounts: &["/api"],
    router,
    owns,
    refusal,
    limit_group,
    documented_limit,
    callbacks,
    keys: Some(&KEYS),
};

/// A public key (`X-Processing-Key`) and an HMAC secret.
pub static KEYS: kassa_engine::merchants::KeyKind =
    kassa_engine::merchants::KeyKind { dialect: "coinspaid", shape: kassa_engine::merchants::KeyShape::Hmac };

fn callbacks() -> Vec<Arc<dyn CallbackFormat>> {
    vec![Arc::new(callbacks::Callback::V1), Arc::new(callbacks::Callback::V2)]
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/ping", get(ping))
        .route("/v2/currencies/list", post(|s: State<AppState>, r: Request| v2(currencies_list(s, r))))
        .route("/v2/currencies/pairs", post(|s: State<AppState>, r: Request| v2(currencies_pairs(s, r, false))))
        .route("/v2/currencies/rates", post(|s: State<AppState>, r: Request| v2(currencies_pairs(s, r, true))))
        .route("/v2/accounts/list", post(|s: State<AppState>, r: Request| v2(accounts_list(s, r))))
        .route("/v2/exchange/calculate", post(|s: State<AppState>, r: Request| v2(exchange_calculate(s, r))))
        .route("/v2/exchange/now", post(|s: State<AppState>, r: Request| v2(exchange_now(s, r, false))))
        .route("/v2/exchange/fixed", post(|s: State<AppState>, r: Request| v2(exchange_now(s, r, true))))
        .route("/v2/futures/rates", post(|s: State<AppState>, r: Request| v2(futures_rates(s, r))))
        .route("/v2/futures/confirm", post(|s: State<AppState>, r: Request| v2(futures_confirm(s, r))))
        .route("/v2/invoices/create", post(|s: State<AppState>, r: Request| v2(invoices_create(s, r))))
        .route("/v2/addresses/take", post(|s: State<AppState>, r: Request| v2(addresses_take(s, r, Version::V2))))
        .route("/v1/addresses/take", post(|s: State<AppState>, r: Request| v1(addresses_take(s, r, Version::V1))))
        .route("/v2/withdrawal/crypto", post(|s: State<AppState>, r: Request| v2(withdraw(s, r, Version::V2))))
        .route("/v1/withdrawal/make", post(|s: State<AppState>, r: Request| v1(withdraw(s, r, Version::V1))))
}

/// True for paths (relative to a mount) of this dialect.
fn owns(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/v2/")
}

fn limit_group(method: &Method, path: &str) -> Group {
    match (method, path) {
        (&Method::POST, "/v1/addresses/take" | "/v2/addresses/take") => Group::Address,
        (&Method::POST, "/v2/exchange/calculate") => Group::Quote,
        _ => Group::Default,
    }
}

/// The seed's own limit: 30 `exchange/calculate` a minute per client IP.
fn documented_limit(method: &Method, path: &str) -> Option<crate::dialects::DocumentedLimit> {
    (method == Method::POST && path == "/v2/exchange/calculate")
        .then_some(crate::dialects::DocumentedLimit { name: "coinspaid_exchange_calculate", per_ip: crate::limits::Rate::new(30, 60) })
}

/// The server's own refusals, in the errors envelope.
fn refusal(r: crate::dialects::Refusal) -> Response {
    use crate::dialects::Refusal;
    let (status, field, message) = match r {
        Refusal::NotFound => (StatusCode::NOT_FOUND, "path", "no such endpoint".to_string()),
        Refusal::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body", "the request body is too large".to_string()),
        Refusal::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "request", "the request took too long".to_string()),
        Refusal::TooManyRequests { retry_after_secs } => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit", format!("too many requests; retry after {retry_after_secs} s"))
        }
    };
    (status, Json(json!({ "errors": { field: message } }))).into_response()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A refusal in this dialect's shapes.
pub struct CpError {
    status: StatusCode,
    /// The field it is about (the key in `errors`).
    field: &'static str,
    message: String,
    /// v1's `error_code`, and the `code` of an authentication failure.
    code: &'static str,
    /// A rate limit refused it (the HTTP layer words it and adds `Retry-After`).
    limited: Option<Limited>,
}

impl CpError {
    fn bad(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, field, message: message.into(), code, limited: None }
    }

    fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, field: "auth", message: message.into(), code, limited: None }
    }

    fn render(self, version: Version) -> Response {
        if let Some(l) = self.limited {
            return l.into_response();
        }
        if self.status == StatusCode::FORBIDDEN {
            let mut r = (self.status, Json(json!({ "error": self.message, "code": self.code }))).into_response();
            if matches!(self.code, "missing_key" | "bad_key" | "bad_signature") {
                r.extensions_mut().insert(AuthFailed);
            }
            return r;
        }
        let mut body = json!({ "errors": { self.field: self.message } });
        if version == Version::V1 {
            body["error_code"] = json!(self.code);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<Limited> for CpError {
    fn from(l: Limited) -> Self {
        Self { limited: Some(l), ..Self::bad("rate_limit", "too_many_requests", "too many requests") }
    }
}

impl From<AuthError> for CpError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Engine(inner) => return inner.into(),
            AuthError::Missing => "missing_key",
            AuthError::Unknown | AuthError::Revoked | AuthError::WrongDialect => "bad_key",
            AuthError::MerchantBlocked => "account_blocked",
            AuthError::IpNotAllowed => "ip_not_allowed",
            AuthError::MissingScope(_) => "forbidden",
        };
        // An unknown, revoked or foreign key is not told apart (no probing for keys).
        let message = if code == "bad_key" { "the processing key is not valid".to_string() } else { e.to_string() };
        Self::forbidden(code, message)
    }
}

impl From<EngineError> for CpError {
    fn from(e: EngineError) -> Self {
        let (field, code) = match &e {
            EngineError::UnknownCurrency(_) | EngineError::InactiveCurrency(_) | EngineError::ChainNotConfigured(_) => ("currency", "forbidden_currency"),
            EngineError::ChainHalted(_) => ("currency", "currency_unavailable"),
            EngineError::MerchantBlocked(_) => ("account", "account_blocked"),
            EngineError::InsufficientFunds { .. } => ("amount", "not_enough_balance"),
            EngineError::Ledger(kassa_core::ledger::LedgerError::IdempotencyConflict { .. }) | EngineError::Conflict(_) => ("foreign_id", "duplicate_foreign_id"),
            EngineError::BelowMinimum(_) => ("amount", "amount_too_small"),
            EngineError::AboveMaximum(_) | EngineError::LimitReached(_) => ("amount", "amount_too_large"),
            EngineError::Amount(_) => ("amount", "invalid_amount"),
            EngineError::Invalid { field: "address", .. } => ("address", "invalid_address"),
            EngineError::Invalid { field: "foreign_id", .. } => ("foreign_id", "invalid_foreign_id"),
            EngineError::Invalid { field: "currency", .. } => ("currency", "forbidden_currency"),
            EngineError::QuoteExpired(_) => ("price", "quote_expired"),
            EngineError::QuoteMismatch(_) => ("price", "quote_mismatch"),
            EngineError::Invalid { field: "pair", .. } => ("currency_to", "pair_not_exchangeable"),
            EngineError::Invalid { field: "to_currency", .. } => ("receiver_currency", "pair_not_exchangeable"),
            EngineError::Invalid { field: "amount", .. } => ("amount", "invalid_amount"),
            EngineError::Invalid { .. } => ("request", "bad_request"),
            EngineError::RatesUnavailable(_) => ("rates", "rates_unavailable"),
            EngineError::NotFound(_) => ("id", "not_found"),
            _ => {
                tracing::error!(error = %e, "coinspaid: internal error");
                return Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    field: "server",
                    message: "internal error".into(),
                    code: "internal_error",
                    limited: None,
                };
            }
        };
        // The field is the key of `errors`: its message says the rest.
        let message = match &e {
            EngineError::Invalid { message, .. } => message.clone(),
            e => e.client_message(),
        };
        Self::bad(field, code, message)
    }
}

async fn v2(handler: impl std::future::Future<Output = Result<(StatusCode, Value), CpError>>) -> Response {
    match handler.await {
        Ok((status, data)) => (status, Json(json!({ "data": data }))).into_response(),
        Err(e) => e.render(Version::V2),
    }
}

async fn v1(handler: impl std::future::Future<Output = Result<(StatusCode, Value), CpError>>) -> Response {
    match handler.await {
        Ok((status, data)) => (status, Json(json!({ "status": "ok", "data": data }))).into_response(),
        Err(e) => e.render(Version::V1),
    }
}

/// An authenticated request: who, and its parameters.
struct Signed {
    who: Principal,
    params: Map<String, Value>,
}

/// Checks the key and the signature over the raw body, then the merchant's standing,
/// and only then reads the body.
async fn authenticate(state: &AppState, req: Request) -> Result<Signed, CpError> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| CpError { status: StatusCode::PAYLOAD_TOO_LARGE, ..CpError::bad("body", "body_too_large", "the request body is too large") })?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_string();
    let (key, signature) = (header("x-processing-key"), header("x-processing-signature"));
    if key.is_empty() {
        return Err(CpError::forbidden("missing_key", "the X-Processing-Key header is missing"));
    }
    if signature.is_empty() {
        return Err(CpError::forbidden("bad_signature", "the X-Processing-Signature header is missing"));
    }
    let (admitted, secret) = state.engine.hmac_key(&key, KEYS.dialect, limits::client_ip(&parts.extensions)).await?;
    auth::verify(&secret, &signature, &bytes).map_err(|e| CpError::forbidden("bad_signature", e.to_string()))?;
    // Only a correctly signed request learns why its key is refused.
    let who = admitted?;
    limits::admit_key(&parts.extensions, who.key_id)?;
    let params = auth::params(&bytes).map_err(|m| CpError::bad("request", "bad_request", m))?;
    Ok(Signed { who, params })
}

/// A string parameter (a JSON string or number; blank counts as absent).
fn text(p: &Map<String, Value>, key: &'static str) -> Result<Option<String>, CpError> {
    wire::amount_text(wire::non_blank(p.get(key))).map_err(|_| CpError::bad(key, "bad_request", format!("{key} must be a string")))
}

fn required(p: &Map<String, Value>, key: &'static str) -> Result<String, CpError> {
    text(p, key)?.ok_or_else(|| CpError::bad(key, "bad_request", format!("{key} is required")))
}

/// The client's `foreign_id`: required, at most `MAX_FOREIGN_ID_CHARS` characters.
fn foreign_id(p: &Map<String, Value>) -> Result<String, CpError> {
    let id = required(p, "foreign_id")?;
    if id.chars().count() > MAX_FOREIGN_ID_CHARS {
        return Err(CpError::bad("foreign_id", "invalid_foreign_id", format!("foreign_id must be at most {MAX_FOREIGN_ID_CHARS} characters")));
    }
    Ok(id)
}

/// A currency this dialect offers: every active currency Kassa is configured with.
fn offered<'a>(state: &'a AppState, field: &'static str, code: &str) -> Result<&'a Currency, CpError> {
    match state.engine.currencies.get(code) {
        Ok(c) if c.active => Ok(c),
        _ => Err(CpError::bad(field, "forbidden_currency", format!("{code} is not a currency this account can use"))),
    }
}

fn kind(c: &Currency) -> &'static str {
    match c.kind {
        CurrencyKind::Crypto => "crypto",
        CurrencyKind::Fiat => "fiat",
    }
}

/// A fee's percentage as a decimal string without trailing zeros ("0", "1.5").
fn percent(fee: Fee) -> String {
    let text = Amount::from_units(fee.percent_e6, 6).map(|a| a.to_string()).unwrap_or_else(|_| "0".into());
    match text.split_once('.') {
        Some((whole, frac)) if frac.trim_end_matches('0').is_empty() => whole.to_string(),
        Some((whole, frac)) => format!("{whole}.{}", frac.trim_end_matches('0')),
        None => text,
    }
}

/// A currency's `id`: the same for a code whatever else is configured (the first 31
/// bits of the SHA-256 of its code).
fn currency_id(c: &Currency) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(c.code.as_str().as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 1
}

async fn ping() -> &'static str {
    "OK"
}

async fn currencies_list(State(state): State<AppState>, req: Request) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Read)?;
    let visible = wire::flag(s.params.get("visible")).map_err(|_| CpError::bad("visible", "bad_request", "visible must be true or false"))?;
    let list: Vec<Value> = state
        .engine
        .currencies
        .all()
        .filter(|c| visible.is_none_or(|v| v == c.active))
        .map(|c| {
            json!({
                "id": currency_id(c),
                "type": kind(c),
                "currency": c.code.as_str(),
                "minimum_amount": c.min_withdrawal.to_string(),
                "deposit_fee_percent": percent(c.fees.deposit),
                "withdrawal_fee_percent": percent(c.fees.withdrawal),
                "precision": c.precision,
            })
        })
        .collect();
    Ok((StatusCode::OK, Value::Array(list)))
}

async fn accounts_list(State(state): State<AppState>, req: Request) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Read)?;
    let held = state.engine.balances(s.who.merchant, None).await?;
    let list: Vec<Value> = state
        .engine
        .currencies
        .all()
        .filter(|c| c.active)
        .map(|c| {
            let balance = held.iter().find(|b| b.currency == c.code.as_str()).map(|b| b.available.clone());
            json!({
                "currency": c.code.as_str(),
                "type": kind(c),
                "balance": balance.unwrap_or_else(|| Amount::zero(c.precision).to_string()),
            })
        })
        .collect();
    Ok((StatusCode::OK, Value::Array(list)))
}

async fn addresses_take(State(state): State<AppState>, req: Request, version: Version) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Receive)?;
    let p = &s.params;
    let foreign_id = foreign_id(p)?;
    let code = required(p, "currency")?;
    let currency = offered(&state, "currency", &code)?;
    if currency.chain.is_none() {
        return Err(CpError::bad("currency", "forbidden_currency", format!("{code} has no deposit addresses")));
    }
    // v1 has no conversion on deposit.
    let convert_to = match version {
        Version::V2 => text(p, "convert_to")?.map(|to| offered(&state, "convert_to", &to).map(|c| c.code.to_string())).transpose()?,
        Version::V1 => None,
    };
    let a = state
        .engine
        .create_deposit_address_from(s.who.merchant, currency.code.as_str(), None, Some(foreign_id), origin(version), convert_to.as_deref())
        .await
        .map_err(|e| match e {
            EngineError::Invalid { field: "convert_to", message } => CpError::bad("convert_to", "pair_not_exchangeable", message),
            e => e.into(),
        })?;
    let data = match version {
        Version::V1 => json!({ "id": a.id, "address": a.address, "foreign_id": a.foreign_id, "tag": null }),
        Version::V2 => address_object(&a),
    };
    Ok((StatusCode::CREATED, data))
}

/// An address object, as `addresses/take` (v2) shows it.
fn address_object(a: &kassa_engine::chains::DepositAddress) -> Value {
    json!({ "id": a.id, "currency": a.currency, "convert_to": a.convert_to, "address": a.address, "tag": null, "foreign_id": a.foreign_id })
}

/// Futures refusals by their field.
fn futures_error(e: EngineError) -> CpError {
    match e {
        EngineError::Invalid { field: "address", message } => CpError::bad("address", "invalid_address", message),
        EngineError::Invalid { field: "receiver_amount", message } if message.starts_with("over the futures limit") => {
            CpError::bad("receiver_amount", "futures_limit_exceeded", message)
        }
        EngineError::Invalid { field: f @ ("sender_currency" | "receiver_currency"), message } => CpError::bad(f, "pair_not_exchangeable", message),
        EngineError::Invalid { field: "receiver_amount" | "amount", message } => CpError::bad("receiver_amount", "invalid_amount", message),
        EngineError::Amount(a) => CpError::bad("receiver_amount", "invalid_amount", a.to_string()),
        e => e.into(),
    }
}

/// `futures/rates`: prices per receiver amount for one of the merchant's conversion
/// addresses, held from `ts_fixed` to `ts_release`.
async fn futures_rates(State(state): State<AppState>, req: Request) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Exchange)?;
    let address = required(&s.params, "address")?;
    let f = state.engine.futures_rates(s.who.merchant, &address).await.map_err(futures_error)?;
    let prices: Map<String, Value> = f.tiers.iter().map(|(amount, price)| (amount.clone(), json!(price))).collect();
    let mut rates = Map::new();
    rates.insert(format!("{}{}", f.sender_currency, f.receiver_currency), Value::Object(prices));
    Ok((
        StatusCode::OK,
        json!({
            "addresses": [address_object(&f.address)],
            "ts_fixed": f.ts_fixed_ms.div_euclid(1000),
            "ts_release": f.ts_release_ms.div_euclid(1000),
            "rates": rates,
        }),
    ))
}

/// `futures/confirm`: fixes the price for `receiver_amount`; the next deposit of exactly
/// `sender_amount` to the address before `ts_release` converts at it.
async fn futures_confirm(State(state): State<AppState>, req: Request) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Exchange)?;
    let p = &s.params;
    let (address, from, to, amount) = (required(p, "address")?, required(p, "sender_currency")?, required(p, "receiver_currency")?, required(p, "receiver_amount")?);
    let f = state.engine.confirm_futures(s.who.merchant, &address, &from, &to, &amount).await.map_err(futures_error)?;
    Ok((
        StatusCode::OK,
        json!({
            "futures_id": f.id,
            "sender_currency": f.sender_currency,
            "receiver_currency": f.receiver_currency,
            "fee_currency": f.sender_currency,
            "price": f.price,
            "address": address_object(&f.address),
            "sender_amount": f.sender_amount,
            "receiver_amount": f.receiver_amount,
            "fee_amount": f.fee_amount,
            "ts_fixed": f.ts_fixed_ms.div_euclid(1000),
            "ts_release": f.ts_release_ms.div_euclid(1000),
        }),
    ))
}

/// `invoices/create` (v2): an invoice for `amount` of `currency`, the merchant's
/// credit converted to it from what the payer sends. With `timer` its rates are fixed
/// at creation and it lasts `invoices.rate_window_secs` (15 minutes); without, it lasts
/// `invoices.max_ttl_secs` and the payer's pick of a currency on the page fixes the
/// rates for the window. `sender_currency` names the one currency it is paid in (else
/// the payer picks among those with a rate to `currency`). Once per `foreign_id`: the
/// same request again answers the same invoice.
async fn invoices_create(State(state): State<AppState>, req: Request) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Receive)?;
    let p = &s.params;
    let timer = wire::flag(p.get("timer")).map_err(|_| CpError::bad("timer", "bad_request", "timer must be true or false"))?.unwrap_or(false);
    // The seed says `title`, CoinsPaid's own documents `name`.
    let title = match text(p, "title")? {
        Some(t) => t,
        None => text(p, "name")?.ok_or_else(|| CpError::bad("title", "bad_request", "title is required"))?,
    };
    let foreign_id = foreign_id(p)?;
    let code = required(p, "currency")?;
    let currency = offered(&state, "currency", &code)?.code.to_string();
    let sender_currency = text(p, "sender_currency")?;
    let accepted = match sender_currency.clone() {
        Some(sender) => {
            let c = offered(&state, "sender_currency", &sender)?;
            if c.chain.is_none() {
                return Err(CpError::bad("sender_currency", "forbidden_currency", format!("{sender} cannot be sent to an address")));
            }
            vec![c.code.to_string()]
        }
        None => Vec::new(),
    };
    let settings = state.engine.invoices.clone();
    let request = InvoiceRequest {
        order_id: foreign_id,
        amount: required(p, "amount")?,
        currency,
        accepted,
        ttl: Some(if timer { settings.rate_window } else { settings.max_ttl }),
        description: text(p, "description")?.unwrap_or_default(),
        success_url: text(p, "url_success")?,
        origin: origin(Version::V2),
        title,
        failure_url: text(p, "url_failed")?,
        payer_email: text(p, "email_user")?,
        rate_on_pick: !timer,
        invoice_callbacks_only: true,
        convert: true,
        ..Default::default()
    };
    let inv = state.engine.create_invoice(s.who.merchant, request).await.map_err(|e| match e {
        EngineError::Ledger(kassa_core::ledger::LedgerError::IdempotencyConflict { .. }) => {
            CpError::bad("foreign_id", "duplicate_foreign_id", "The foreign id has already been taken.")
        }
        EngineError::Invalid { field, message } => {
            let (field, code) = match field {
                "currencies" => ("sender_currency", "forbidden_currency"),
                "success_url" => ("url_success", "bad_request"),
                "failure_url" => ("url_failed", "bad_request"),
                "email" => ("email_user", "bad_request"),
                "order_id" => ("foreign_id", "invalid_foreign_id"),
                "amount" | "rate" => ("amount", "invalid_amount"),
                "title" => ("title", "bad_request"),
                "description" => ("description", "bad_request"),
                _ => ("request", "bad_request"),
            };
            CpError::bad(field, code, message)
        }
        e => e.into(),
    })?;
    Ok((StatusCode::OK, invoice_object(&inv, sender_currency.is_some())))
}

/// An invoice as `invoices/create` answers it: the address and amount when it is paid
/// in the one currency the merchant `named`, and the rate's window once fixed.
fn invoice_object(inv: &kassa_engine::invoices::Invoice, named: bool) -> Value {
    let fixed = inv.rate_fixed_at_ms.is_some();
    // Where to pay only once the rate is fixed (a payment before converts at the market).
    let single = inv.options.first().filter(|_| named && fixed && inv.options.len() == 1);
    json!({
        "id": inv.row_id,
        "url": inv.url,
        "foreign_id": inv.order_id,
        "address": single.map(|o| o.address.clone()),
        "name": inv.title,
        "status": "created",
        "currency": inv.currency,
        "amount": inv.amount,
        "sender_currency": single.map(|o| o.currency.clone()),
        "sender_amount": single.filter(|_| fixed).map(|o| o.amount.clone()),
        "fixed_at": inv.rate_fixed_at_ms.map(|ms| ms.div_euclid(1000)),
        "release_at": fixed.then(|| inv.expires_at_ms.div_euclid(1000)),
    })
}

/// One direction of an exchangeable pair, as `currencies/pairs` shows it.
fn pair_object(state: &AppState, from: &Currency, to: &Currency) -> Result<Value, CpError> {
    let rate = state.engine.rate(from.code.as_str(), to.code.as_str())?;
    let mut sending = json!({
        "currency": from.code.as_str(),
        "type": kind(from),
        "min_amount": state.engine.min_exchange_amount(from.code.as_str(), to.code.as_str())?,
    });
    // Only a currency with deposit addresses is converted on deposit.
    if from.chain.is_some() && from.can_receive {
        sending["min_amount_deposit_with_exchange"] = json!(state.engine.min_deposit_exchange_amount(from.code.as_str(), to.code.as_str())?);
    }
    Ok(json!({
        "currency_from": sending,
        "currency_to": { "currency": to.code.as_str(), "type": kind(to) },
        "rate_from": "1",
        "rate_to": rate.rate,
    }))
}

/// `currencies/pairs` (optional filters) and `currencies/rates` (both currencies
/// required): each exchangeable direction with its current rate, spread taken.
async fn currencies_pairs(State(state): State<AppState>, req: Request, one: bool) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Read)?;
    let (from, to) = if one {
        (Some(required(&s.params, "currency_from")?), Some(required(&s.params, "currency_to")?))
    } else {
        (text(&s.params, "currency_from")?, text(&s.params, "currency_to")?)
    };
    let from = from.map(|c| offered(&state, "currency_from", &c).map(|c| c.code.to_string())).transpose()?;
    let to = to.map(|c| offered(&state, "currency_to", &c).map(|c| c.code.to_string())).transpose()?;
    let mut list = Vec::new();
    for p in state.engine.pairs()? {
        for (a, b) in [(&p.base, &p.quote), (&p.quote, &p.base)] {
            if from.as_ref().is_some_and(|f| f != a) || to.as_ref().is_some_and(|t| t != b) {
                continue;
            }
            let (Ok(fa), Ok(fb)) = (offered(&state, "currency_from", a), offered(&state, "currency_to", b)) else { continue };
            // A pair without a fresh rate is not offered until it has one.
            match pair_object(&state, fa, fb) {
                Ok(o) => list.push(o),
                Err(e) if one => return Err(e),
                Err(_) => {}
            }
        }
    }
    if one && list.is_empty() {
        let (f, t) = (from.unwrap_or_default(), to.unwrap_or_default());
        return Err(CpError::bad("currency_to", "pair_not_exchangeable", format!("{f} → {t} is not an exchangeable pair")));
    }
    Ok((StatusCode::OK, Value::Array(list)))
}

/// What an exchange request names: the two currencies and one of the amounts.
fn exchange_request<'a>(state: &'a AppState, p: &Map<String, Value>) -> Result<(&'a Currency, &'a Currency, kassa_engine::exchange::Side), CpError> {
    let from = offered(state, "sender_currency", &required(p, "sender_currency")?)?;
    let to = offered(state, "receiver_currency", &required(p, "receiver_currency")?)?;
    let side = match (text(p, "sender_amount")?, text(p, "receiver_amount")?) {
        (Some(a), None) => kassa_engine::exchange::Side::Sender(a),
        (None, Some(a)) => kassa_engine::exchange::Side::Receiver(a),
        _ => return Err(CpError::bad("sender_amount", "bad_request", "give one of sender_amount and receiver_amount")),
    };
    Ok((from, to, side))
}

/// An exchange refusal: a pair that does not exist is about `receiver_currency` here.
fn exchange_error(e: EngineError) -> CpError {
    let mut e = CpError::from(e);
    if e.field == "currency_to" {
        e.field = "receiver_currency";
    }
    e
}

/// A quote: its amounts and price held for `fix_period` seconds.
async fn exchange_calculate(State(state): State<AppState>, req: Request) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Exchange)?;
    let (from, to, side) = exchange_request(&state, &s.params)?;
    let q = state.engine.quote(s.who.merchant, from.code.as_str(), to.code.as_str(), side).await.map_err(exchange_error)?;
    let (fixed, release) = (q.created_at_ms.div_euclid(1000), q.expires_at_ms.div_euclid(1000));
    Ok((
        StatusCode::OK,
        json!({
            "sender_amount": q.sender_amount,
            "sender_currency": q.from_currency,
            "receiver_amount": q.receiver_amount,
            "receiver_currency": q.to_currency,
            "fee_amount": q.fee_amount,
            "fee_currency": q.fee_currency,
            "price": q.rate,
            "ts_fixed": fixed,
            "ts_release": release,
            "fix_period": state.engine.quote_lifetime()?.as_secs(),
        }),
    ))
}

/// An exchange once per `foreign_id` (a repeated `foreign_id` is refused and changes
/// nothing): at the current rate, or `fixed` at the `price` of one of the merchant's
/// live quotes for that amount.
async fn exchange_now(State(state): State<AppState>, req: Request, fixed: bool) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Exchange)?;
    let foreign_id = foreign_id(&s.params)?;
    let (from, to, side) = exchange_request(&state, &s.params)?;
    let duplicate = || CpError::bad("foreign_id", "duplicate_foreign_id", format!("an exchange with foreign_id {foreign_id} exists already"));
    let (merchant, from, to) = (s.who.merchant, from.code.as_str(), to.code.as_str());
    let done = if fixed {
        let price = required(&s.params, "price")?;
        state.engine.execute_quote_by_price(merchant, from, to, side, &price, &foreign_id, "coinspaid_v2").await
    } else {
        state.engine.exchange_now(merchant, from, to, side, &foreign_id, "coinspaid_v2").await
    };
    let x = done.map_err(|e| match e {
        // Another foreign_id took this quote first.
        EngineError::Conflict(_) if fixed => CpError::bad("price", "quote_used", "that quote has been executed already: ask for a new one"),
        e => match exchange_error(e) {
            e if e.code == "duplicate_foreign_id" => duplicate(),
            e => e,
        },
    })?;
    if x.replayed {
        return Err(duplicate());
    }
    Ok((
        StatusCode::CREATED,
        json!({
            "id": x.number,
            "foreign_id": x.client_id,
            "type": "exchange",
            "sender_amount": x.sender_amount,
            "sender_currency": x.from_currency,
            "receiver_amount": x.receiver_amount,
            "receiver_currency": x.to_currency,
            "fee_amount": x.fee_amount,
            "fee_currency": x.fee_currency,
            "price": x.rate,
            "status": "processing",
        }),
    ))
}

/// The dialect's name for objects made through `version` (their callbacks' format).
fn origin(version: Version) -> Origin {
    Origin { dialect: if version == Version::V1 { "coinspaid_v1" } else { "coinspaid_v2" }.into(), callback_url: None }
}

/// `withdrawal/crypto` (v2) and `withdrawal/make` (v1): a withdrawal once per
/// `foreign_id` (a repeated one is refused and changes nothing); its amount plus fee
/// is held at once. `sender_amount` is what the balance gives (amount and fee),
/// `receiver_amount` what the address receives.
async fn withdraw(State(state): State<AppState>, req: Request, version: Version) -> Result<(StatusCode, Value), CpError> {
    let s = authenticate(&state, req).await?;
    s.who.require(Scope::Withdraw)?;
    let p = &s.params;
    let foreign_id = foreign_id(p)?;
    let debited = offered(&state, "currency", &required(p, "currency")?)?;
    // v2's convert_to: `amount` is debited in `currency`, the address receives convert_to.
    let convert_to = match version {
        Version::V2 => text(p, "convert_to")?.map(|to| offered(&state, "convert_to", &to)).transpose()?,
        Version::V1 => None,
    };
    let currency = convert_to.unwrap_or(debited);
    if currency.chain.is_none() {
        let field = if convert_to.is_some() { "convert_to" } else { "currency" };
        return Err(CpError::bad(field, "forbidden_currency", format!("{} cannot be withdrawn to an address", currency.code)));
    }
    let amount = required(p, "amount")?;
    let address = required(p, "address")?;
    // With convert_to, what is wrong with the currency sent is about convert_to.
    let about_sent = |e: CpError| match e.field {
        "currency" | "currency_to" if convert_to.is_some() => CpError { field: "convert_to", ..e },
        _ => e,
    };
    let address = state.engine.check_withdrawal_address(currency.code.as_str(), &address).map_err(|e| about_sent(e.into()))?;
    // A null or empty tag is no tag (clients send both); this server's chains take none.
    if text(p, "tag")?.is_some() {
        return Err(CpError::bad("tag", "bad_request", format!("{} withdrawals take no tag", currency.code)));
    }
    let request = kassa_engine::withdrawals::WithdrawalRequest {
        merchant: s.who.merchant,
        currency: currency.code.to_string(),
        address,
        amount,
        priority: kassa_chain::Priority::Medium,
        idempotency_key: foreign_id.clone(),
        origin: origin(version),
        description: None,
        pay_from: convert_to.map(|_| debited.code.to_string()),
    };
    let duplicate = || CpError::bad("foreign_id", "duplicate_foreign_id", format!("a withdrawal with foreign_id {foreign_id} exists already"));
    let w = state.engine.request_withdrawal(request).await.map_err(|e| match e {
        // A concurrent request with this foreign_id is still holding its funds.
        EngineError::InProgress(_) => duplicate(),
        e => match CpError::from(e) {
            e if e.code == "duplicate_foreign_id" => duplicate(),
            e if e.code == "pair_not_exchangeable" => CpError { field: "convert_to", ..e },
            e => about_sent(e),
        },
    })?;
    if w.replayed {
        return Err(duplicate());
    }
    let status = if w.status == "pending" { "pending" } else { "processing" };
    let data = match version {
        Version::V1 => json!({
            "id": w.id, "currency": w.currency, "currency_fee": w.currency, "address": w.address, "tag": null, "amount": w.amount, "status": status,
        }),
        Version::V2 => match (&w.source_currency, &w.source_amount) {
            // With exchange: `amount` (as asked) and sender_amount are in the debited currency.
            (Some(from), Some(gave)) => json!({
                "id": w.id, "foreign_id": w.idempotency_key, "type": "withdrawal_exchange", "status": status, "amount": gave,
                "sender_amount": gave, "sender_currency": from, "receiver_amount": w.amount, "receiver_currency": w.currency,
            }),
            _ => {
                let parse = |a: &str| currency.parse_amount(a, kassa_core::SignPolicy::NonNegative).map_err(EngineError::from);
                let sent = parse(&w.amount)?.checked_add(parse(&w.fee)?).map_err(EngineError::from)?;
                json!({
                    "id": w.id, "foreign_id": w.idempotency_key, "type": "withdrawal", "status": status, "amount": w.amount,
                    "sender_amount": sent.to_string(), "sender_currency": w.currency, "receiver_amount": w.amount, "receiver_currency": w.currency,
                })
            }
        },
    };
    Ok((StatusCode::CREATED, data))
}
