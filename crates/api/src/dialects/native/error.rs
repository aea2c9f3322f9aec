//! Errors of Kassa's own API: `{"error": {"code": "...", "message": "..."}}` with a
//! fitting HTTP status. Internal details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kassa_core::ledger::LedgerError;
use kassa_engine::merchants::AuthError;
use kassa_engine::EngineError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "invalid_request", message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Engine(inner) => inner.into(),
            e if e.is_unauthenticated() => Self { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: e.to_string() },
            e => Self { status: StatusCode::FORBIDDEN, code: "forbidden", message: e.to_string() },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::Ledger(LedgerError::InsufficientFunds { .. }) => (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"),
            EngineError::Ledger(LedgerError::IdempotencyConflict { .. }) => (StatusCode::CONFLICT, "idempotency_conflict"),
            EngineError::Ledger(_) | EngineError::Amount(_) | EngineError::Invalid { .. } | EngineError::BelowMinimum(_) | EngineError::AboveMaximum(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            EngineError::UnknownCurrency(_) => (StatusCode::BAD_REQUEST, "unknown_currency"),
            EngineError::InactiveCurrency(_) => (StatusCode::BAD_REQUEST, "inactive_currency"),
            EngineError::MerchantNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::MerchantBlocked(_) => (StatusCode::FORBIDDEN, "forbidden"),
            EngineError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            EngineError::ChainNotConfigured(_) | EngineError::ChainHalted(_) => (StatusCode::SERVICE_UNAVAILABLE, "currency_unavailable"),
            EngineError::LimitReached(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit_reached"),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::RatesUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "rates_unavailable"),
            EngineError::QuoteExpired(_) => (StatusCode::CONFLICT, "quote_expired"),
            EngineError::QuoteMismatch(_) => (StatusCode::CONFLICT, "quote_mismatch"),
            EngineError::Chain(_) => {
                tracing::error!(error = %e, "chain node error");
                return Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "node_unavailable", message: "the currency's node is not answering; try again later".into() };
            }
            EngineError::LedgerStopped | EngineError::Store(_) | EngineError::Decrypt => {
                tracing::error!(error = %e, "internal error");
                return Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: "internal error; see the server log".into() };
            }
        };
        Self { status, code, message: e.to_string() }
    }
}
