//! The operator part of Kassa's own API (`/kassa/v1/operator/...`): actions on
//! merchants that only the operator of the installation may take. Authenticated by
//! the configured `operator_token` (a bearer token), never by a merchant's key; when
//! no token is configured every call is refused.

use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_engine::adjustments::format_ms;
use kassa_engine::merchants::MerchantRow;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{ApiError, JsonObject};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/operator/merchants", get(list_merchants))
        .route("/operator/merchants/{id}/block", post(block_merchant))
        .route("/operator/merchants/{id}/unblock", post(unblock_merchant))
}

/// A request carrying the operator's token.
pub struct Operator;

impl axum::extract::FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: message.into() };
        let Some(expected) = state.operator_token.as_deref() else {
            return Err(unauthorized("the operator API is off: set operator_token in the configuration"));
        };
        let given = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if given.is_empty() || !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(unauthorized("the operator API needs Authorization: Bearer <operator_token>"));
        }
        Ok(Operator)
    }
}

fn view(m: &MerchantRow) -> serde_json::Value {
    json!({
        "id": m.id,
        "name": m.name,
        "status": m.status,
        "blocked_reason": m.blocked_reason,
        "status_changed_at": m.status_changed_at_ms.map(format_ms),
        "active_keys": m.active_keys,
        "created_at": format_ms(m.created_at_ms),
    })
}

async fn list_merchants(State(state): State<AppState>, _: Operator) -> Result<impl IntoResponse, ApiError> {
    let list = state.engine.list_merchants().await?;
    Ok(Json(json!({ "merchants": list.iter().map(view).collect::<Vec<_>>() })))
}

async fn block_merchant(State(state): State<AppState>, _: Operator, Path(id): Path<i64>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    body.only(&["reason", "operator"])?;
    let reason = body.required("reason")?;
    let operator = body.string("operator")?.unwrap_or_else(|| "api".into());
    let m = state.engine.block_merchant(&id.to_string(), &reason, &operator).await?;
    Ok(Json(view(&m)))
}

async fn unblock_merchant(State(state): State<AppState>, _: Operator, Path(id): Path<i64>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    body.only(&["operator"])?;
    let operator = body.string("operator")?.unwrap_or_else(|| "api".into());
    let m = state.engine.unblock_merchant(&id.to_string(), &operator).await?;
    Ok(Json(view(&m)))
}
