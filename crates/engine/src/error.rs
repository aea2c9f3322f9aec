//! The engine's error type: what happened, in terms a dialect can map to its own codes.

use kassa_core::ledger::LedgerError;
use kassa_core::AmountError;
use kassa_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("currency {0} is not active")]
    InactiveCurrency(String),
    #[error("merchant {0:?} not found")]
    MerchantNotFound(String),
    #[error("merchant {0} is blocked")]
    MerchantBlocked(i64),
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the ledger writer is not running")]
    LedgerStopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    ChainHalted(String),
    #[error("limit reached: {0}")]
    LimitReached(String),
    #[error("invalid amount: {0}")]
    BelowMinimum(String),
    #[error("invalid amount: {0}")]
    AboveMaximum(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("chain {0} is not configured")]
    ChainNotConfigured(String),
    #[error("chain: {0}")]
    Chain(#[from] kassa_chain::ChainError),
    #[error("secret could not be decrypted: wrong master key or corrupted data")]
    Decrypt,
    #[error("exchange rates unavailable: {0}")]
    RatesUnavailable(String),
    #[error("{0}")]
    QuoteExpired(String),
    #[error("the request does not match the quote: {0}")]
    QuoteMismatch(String),
}

impl EngineError {
    pub fn invalid(field: &'static str, message: impl std::fmt::Display) -> Self {
        EngineError::Invalid { field, message: message.to_string() }
    }

    /// Whether this is an answer to the request (bad input, a rule, a limit, funds),
    /// as opposed to Kassa failing to answer (storage, the ledger writer, a node,
    /// secrets): a refusal is final for that request, a failure is not.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, EngineError::LedgerStopped | EngineError::Store(_) | EngineError::Chain(_) | EngineError::Decrypt)
    }
}

/// Free text a merchant gives (labels, descriptions): 1 to `max_chars` characters, no
/// control characters but tab and line breaks (a NUL cannot even be stored in
/// PostgreSQL).
pub fn check_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), EngineError> {
    let count = value.chars().count();
    if count == 0 || count > max_chars {
        return Err(EngineError::invalid(field, format!("must be 1-{max_chars} characters")));
    }
    if value.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(EngineError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}
