//! The engine's error type: what happened, in terms a dialect can map to its own codes.

use kassa_core::ledger::LedgerError;
use kassa_core::{AmountError, Currency};
use kassa_store::StoreError;

/// Refusals serialise (see [`EngineError::record`]); failures do not.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// The merchant's id goes to the log only.
    #[error("the merchant account is blocked")]
    MerchantBlocked(i64),
    #[error("invalid {field}: {message}")]
    Invalid {
        #[serde(deserialize_with = "kassa_core::names::deserialize")]
        field: kassa_core::names::Name,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    /// The same request is still being processed (its first arrival has not finished):
    /// retry shortly. Not a refusal: never kept as the request's answer.
    #[error("{0}")]
    #[serde(skip)]
    InProgress(String),
    #[error("the ledger writer is not running")]
    #[serde(skip)]
    LedgerStopped,
    #[error(transparent)]
    #[serde(skip)]
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
    NotFound(#[serde(deserialize_with = "kassa_core::names::deserialize")] kassa_core::names::Name),
    #[error("chain {0} is not configured")]
    ChainNotConfigured(String),
    #[error("chain: {0}")]
    #[serde(skip)]
    Chain(#[from] kassa_chain::ChainError),
    #[error("secret could not be decrypted: wrong master key or corrupted data")]
    #[serde(skip)]
    Decrypt,
    #[error("exchange rates unavailable: {0}")]
    RatesUnavailable(String),
    #[error("{0}")]
    QuoteExpired(String),
    #[error("the request does not match the quote: {0}")]
    QuoteMismatch(String),
    /// A balance too low, in the currency's amounts (what a client can act on).
    #[error("insufficient funds: {available} {currency} available, {required} {currency} needed")]
    InsufficientFunds { currency: String, available: String, required: String },
}

impl EngineError {
    pub fn invalid(field: &'static str, message: impl std::fmt::Display) -> Self {
        EngineError::Invalid { field, message: message.to_string() }
    }

    /// Whether this is an answer to the request (bad input, a rule, a limit, funds),
    /// as opposed to Kassa failing to answer (storage, the ledger writer, a node,
    /// secrets): a refusal is final for that request, a failure is not.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, EngineError::LedgerStopped | EngineError::InProgress(_) | EngineError::Store(_) | EngineError::Chain(_) | EngineError::Decrypt)
    }

    /// A ledger refusal for funds, said in the currency's decimal amounts; the
    /// account and its units go to the log only. Other errors pass unchanged.
    pub fn in_currency(self, c: &Currency) -> Self {
        match self {
            EngineError::Ledger(LedgerError::InsufficientFunds { account, available, required }) => {
                tracing::info!(account = account.0, available_units = available, required_units = required, currency = %c.code, "insufficient funds");
                let text = |units: i128| c.amount(units).map(|a| a.to_string()).unwrap_or_else(|_| format!("{units} units"));
                EngineError::InsufficientFunds { currency: c.code.to_string(), available: text(available), required: text(required) }
            }
            e => e,
        }
    }

    /// What a client is told: a ledger refusal without the internal account, hold or
    /// unit figures it carries (those go to the log); anything else as it reads.
    pub fn client_message(&self) -> String {
        let EngineError::Ledger(e) = self else { return self.to_string() };
        let text = match e {
            LedgerError::NonPositiveLeg { .. } => "the amount must be positive".to_string(),
            LedgerError::SameAccount { .. } => "funds cannot move from an account to itself".to_string(),
            LedgerError::UnknownAccount { .. } => "the account does not exist".to_string(),
            LedgerError::CurrencyMismatch { account_currency, leg_currency, .. } => {
                format!("the account holds {account_currency}, not {leg_currency}")
            }
            LedgerError::InsufficientFunds { .. } => "insufficient funds".to_string(),
            LedgerError::Overflow { .. } => "the balance would exceed the largest amount Kassa holds".to_string(),
            LedgerError::HoldNotFound { .. } => "the reservation does not exist".to_string(),
            LedgerError::HoldNotPending { status, .. } => format!("the reservation is already {}", status.as_str()),
            LedgerError::BadIdempotencyKey | LedgerError::NoLegs | LedgerError::TooManyLegs { .. } | LedgerError::IdempotencyConflict { .. } => {
                return e.to_string();
            }
        };
        tracing::info!(error = %e, "ledger refusal");
        text
    }

    /// A refusal as text to keep, so that a repeat of the request can be answered
    /// with the very same refusal ([`EngineError::from_record`]); `None` for a failure.
    pub fn record(&self) -> Option<String> {
        if !self.is_refusal() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// The refusal kept by [`EngineError::record`].
    pub fn from_record(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_core::ledger::{AccountId, HoldStatus, TxId};

    #[test]
    fn a_refusal_reads_back_as_itself() {
        let refusals = vec![
            EngineError::Ledger(LedgerError::InsufficientFunds { account: AccountId(9), available: 0, required: 10i128.pow(30) }),
            EngineError::Ledger(LedgerError::HoldNotPending { hold: TxId(3), status: HoldStatus::Voided }),
            EngineError::Amount(AmountError::TooManyDecimals { text: "1.123".into(), precision: 2 }),
            EngineError::Amount(AmountError::WrongType { found: "boolean" }),
            EngineError::UnknownCurrency("XYZ".into()),
            EngineError::MerchantBlocked(4),
            EngineError::invalid("address", "not a Litecoin address"),
            EngineError::Conflict("used".into()),
            EngineError::LimitReached("at most 3 LTC withdrawals per day".into()),
            EngineError::BelowMinimum("below 0.001".into()),
            EngineError::AboveMaximum("above 10".into()),
            EngineError::NotFound("withdrawal"),
            EngineError::QuoteExpired("expired".into()),
            EngineError::InsufficientFunds { currency: "LTC".into(), available: "0.1".into(), required: "0.2".into() },
        ];
        for e in refusals {
            let text = e.record().expect("a refusal is recorded");
            let back = EngineError::from_record(&text).expect("and read back");
            assert_eq!(format!("{back:?}"), format!("{e:?}"), "{text}");
        }
        assert_eq!(EngineError::LedgerStopped.record(), None, "a failure is not a refusal");
        assert!(EngineError::from_record("{\"Nonsense\":1}").is_none());
    }

    #[test]
    fn clients_are_not_told_internal_ids_or_units() {
        let (a, h) = (AccountId(9017), TxId(7731));
        let ltc = kassa_core::currency::CurrencyCode::parse("LTC").unwrap();
        let eur = kassa_core::currency::CurrencyCode::parse("EUR").unwrap();
        let ledger = [
            LedgerError::NonPositiveLeg { units: -5 },
            LedgerError::SameAccount { account: a },
            LedgerError::UnknownAccount { account: a },
            LedgerError::CurrencyMismatch { account: a, account_currency: ltc, leg_currency: eur },
            LedgerError::InsufficientFunds { account: a, available: 0, required: 1_010_000 },
            LedgerError::Overflow { account: a },
            LedgerError::HoldNotFound { hold: h },
            LedgerError::HoldNotPending { hold: h, status: HoldStatus::Voided },
            LedgerError::NoLegs,
            LedgerError::TooManyLegs { count: 9999 },
        ];
        for e in ledger {
            let internal = e.to_string();
            let told = EngineError::Ledger(e).client_message();
            for leak in ["9017", "7731", "units", "1010000", "account 9"] {
                assert!(!told.contains(leak), "{told:?} (from {internal:?}) tells {leak:?}");
            }
        }
        assert_eq!(EngineError::MerchantBlocked(4017).client_message(), "the merchant account is blocked");
    }
}
