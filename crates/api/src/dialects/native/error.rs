//! Errors of Kassa's own API: `{"error": {"code": "...", "message": "..."}}` with a
//! fitting HTTP status. Internal details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kassa_core::ledger::LedgerError;
use kassa_engine::merchants::AuthError;
use kassa_engine::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// Every code this API answers an error with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    UnknownCurrency,
    InactiveCurrency,
    BodyTooLarge,
    Timeout,
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    LimitReached,
    CurrencyUnavailable,
    NodeUnavailable,
    RatesUnavailable,
    QuoteExpired,
    QuoteMismatch,
    TooManyRequests,
    Internal,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

/// The body of every error.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    #[schema(inline)]
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(inline)]
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: ErrorCode::InvalidRequest, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let failed_auth = self.code == ErrorCode::Unauthorized;
        let mut r = (self.status, Json(ErrorBody { error: ErrorDetail { code: self.code, message: self.message } })).into_response();
        if failed_auth {
            r.extensions_mut().insert(crate::limits::AuthFailed);
        }
        r
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Engine(inner) => inner.into(),
            e if e.is_unauthenticated() => Self { status: StatusCode::UNAUTHORIZED, code: ErrorCode::Unauthorized, message: e.to_string() },
            e => Self { status: StatusCode::FORBIDDEN, code: ErrorCode::Forbidden, message: e.to_string() },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use ErrorCode::*;
        let (status, code) = match &e {
            EngineError::InsufficientFunds { .. } => (StatusCode::UNPROCESSABLE_ENTITY, InsufficientFunds),
            EngineError::Ledger(LedgerError::IdempotencyConflict { .. }) => (StatusCode::CONFLICT, IdempotencyConflict),
            EngineError::Ledger(_) | EngineError::Amount(_) | EngineError::Invalid { .. } | EngineError::BelowMinimum(_) | EngineError::AboveMaximum(_) => (StatusCode::BAD_REQUEST, InvalidRequest),
            EngineError::UnknownCurrency(_) => (StatusCode::BAD_REQUEST, UnknownCurrency),
            EngineError::InactiveCurrency(_) => (StatusCode::BAD_REQUEST, InactiveCurrency),
            EngineError::MerchantNotFound(_) => (StatusCode::NOT_FOUND, NotFound),
            EngineError::MerchantBlocked(_) => (StatusCode::FORBIDDEN, Forbidden),
            EngineError::Conflict(_) | EngineError::InProgress(_) => (StatusCode::CONFLICT, Conflict),
            EngineError::ChainNotConfigured(_) | EngineError::ChainHalted(_) => (StatusCode::SERVICE_UNAVAILABLE, CurrencyUnavailable),
            EngineError::LimitReached(_) => (StatusCode::UNPROCESSABLE_ENTITY, LimitReached),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, NotFound),
            EngineError::RatesUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, RatesUnavailable),
            EngineError::QuoteExpired(_) => (StatusCode::CONFLICT, QuoteExpired),
            EngineError::QuoteMismatch(_) => (StatusCode::CONFLICT, QuoteMismatch),
            EngineError::Chain(_) => {
                tracing::error!(error = %e, "chain node error");
                return Self { status: StatusCode::SERVICE_UNAVAILABLE, code: NodeUnavailable, message: "the currency's node is not answering; try again later".into() };
            }
            EngineError::LedgerStopped | EngineError::Store(_) | EngineError::Decrypt => {
                tracing::error!(error = %e, "internal error");
                return Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: Internal, message: "internal error; see the server log".into() };
            }
        };
        Self { status, code, message: e.client_message() }
    }
}
