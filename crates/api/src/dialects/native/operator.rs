//! The operator part of Kassa's own API (`/kassa/v1/operator/...`): actions on
//! merchants that only the operator of the installation may take. Authenticated by
//! the configured `operator_token` (a bearer token), never by a merchant's key; when
//! no token is configured every call is refused.

use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kassa_engine::timefmt::format_ms;
use kassa_engine::merchants::MerchantRow;
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ErrorCode};
use super::wire::{BlockMerchant, UnblockMerchant};
use super::{sorted, ApiError, JsonObject};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_merchants)).routes(routes!(block_merchant)).routes(routes!(unblock_merchant))
}

/// A request carrying the operator's token.
pub struct Operator;

impl axum::extract::FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| ApiError { status: StatusCode::UNAUTHORIZED, code: ErrorCode::Unauthorized, message: message.into() };
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

/// A merchant as the operator sees it.
#[derive(Serialize, ToSchema)]
pub struct OperatorMerchant {
    id: i64,
    name: String,
    #[schema(schema_with = kassa_engine::schemas::merchant_status)]
    status: String,
    /// Why it is blocked (null while active).
    #[schema(required = true)]
    blocked_reason: Option<String>,
    #[schema(format = DateTime, required = true)]
    status_changed_at: Option<String>,
    /// Keys not revoked.
    active_keys: i64,
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct MerchantList {
    merchants: Vec<OperatorMerchant>,
}

fn view(m: &MerchantRow) -> OperatorMerchant {
    OperatorMerchant {
        id: m.id,
        name: m.name.clone(),
        status: m.status.clone(),
        blocked_reason: m.blocked_reason.clone(),
        status_changed_at: m.status_changed_at_ms.map(format_ms),
        active_keys: m.active_keys,
        created_at: format_ms(m.created_at_ms),
    }
}

#[utoipa::path(
    get, path = "/operator/merchants", summary = "Every merchant with its status (operator).", security(("operator" = [])),
    responses((status = 200, description = "The merchants.", body = MerchantList))
)]
async fn list_merchants(State(state): State<AppState>, _: Operator) -> Result<impl IntoResponse, ApiError> {
    let list = state.engine.list_merchants().await?;
    Ok(Json(sorted(MerchantList { merchants: list.iter().map(view).collect() })))
}

#[utoipa::path(
    post, path = "/operator/merchants/{id}/block",
    summary = "Block a merchant (operator): every API call with its keys is refused, in every dialect, until it is unblocked. Deposits to its addresses are still credited; withdrawals already queued complete.",
    security(("operator" = [])),
    params(("id" = i64, Path, description = "The merchant's id.")),
    request_body = BlockMerchant,
    responses(
        (status = 200, description = "Blocked.", body = OperatorMerchant),
        (status = 400, description = "No reason, or an unknown field.", body = ErrorBody),
        (status = 404, description = "No such merchant.", body = ErrorBody),
        (status = 409, description = "The merchant already has that status.", body = ErrorBody),
    )
)]
async fn block_merchant(State(state): State<AppState>, _: Operator, Path(id): Path<i64>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    body.only(&["reason", "operator"])?;
    let reason = body.required("reason")?;
    let operator = body.string("operator")?.unwrap_or_else(|| "api".into());
    let m = state.engine.block_merchant(&id.to_string(), &reason, &operator).await?;
    Ok(Json(sorted(view(&m))))
}

#[utoipa::path(
    post, path = "/operator/merchants/{id}/unblock", summary = "Unblock a blocked merchant (operator).", security(("operator" = [])),
    params(("id" = i64, Path, description = "The merchant's id.")),
    request_body = UnblockMerchant,
    responses(
        (status = 200, description = "Active again.", body = OperatorMerchant),
        (status = 404, description = "No such merchant.", body = ErrorBody),
        (status = 409, description = "The merchant already has that status.", body = ErrorBody),
    )
)]
async fn unblock_merchant(State(state): State<AppState>, _: Operator, Path(id): Path<i64>, body: JsonObject) -> Result<impl IntoResponse, ApiError> {
    body.only(&["operator"])?;
    let operator = body.string("operator")?.unwrap_or_else(|| "api".into());
    let m = state.engine.unblock_merchant(&id.to_string(), &operator).await?;
    Ok(Json(sorted(view(&m))))
}
