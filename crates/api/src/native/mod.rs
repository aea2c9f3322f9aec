//! Kassa's own API (`/kassa/v1`), described by the OpenAPI document it serves at
//! `/kassa/v1/openapi.json`. Bearer keys of the `native` dialect authenticate it.

mod error;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kassa_engine::merchants::{Dialect, Principal, Scope};
use kassa_store::HistoryQuery;
use serde_json::json;

pub use error::ApiError;

use crate::AppState;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/currencies", get(currencies))
        .route("/balances", get(balances))
        .route("/history", get(history))
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
    for key in params.keys() {
        if !["currency", "before", "limit"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("unknown query parameter {key:?} (expected currency, before, limit)")));
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
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::bad_request("before must be a positive entry id"))?),
        None => None,
    };
    let lines = state
        .engine
        .history(HistoryQuery { merchant: who.merchant, user: None, currency: params.get("currency").cloned(), before_entry: before, limit })
        .await?;
    let next = if lines.len() == limit as usize { lines.last().map(|l| l.id) } else { None };
    Ok(Json(json!({ "entries": lines, "next_before": next })))
}
