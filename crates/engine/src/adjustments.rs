//! Operator adjustments: a credit or debit of a merchant's balance against the owner
//! equity account, recorded with who made it and why (this is how fiat balances are
//! funded). Also the merchant-facing balance and history reads.

use kassa_core::ledger::{AccountKey, Action, Leg, MerchantId, SystemAccount, TxRequest, UserId};
use kassa_core::{Amount, SignPolicy};
use kassa_store::{HistoryEntry, HistoryQuery};
use serde::Serialize;

use crate::timefmt::format_ms;
use crate::{Engine, EngineError};

/// Longest reason accepted for an adjustment.
pub const MAX_REASON_LEN: usize = 500;

#[derive(Clone, Debug)]
pub struct AdjustmentRequest {
    pub merchant: MerchantId,
    pub currency: String,
    /// Signed decimal text: positive credits the merchant, negative debits it.
    pub amount: String,
    pub reason: String,
    pub operator: String,
    /// Makes a retried command safe; a fresh one is generated when absent.
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AdjustmentResult {
    pub transaction_id: i64,
    pub replayed: bool,
    pub merchant_id: i64,
    pub currency: String,
    pub amount: String,
    pub balance: String,
    pub available: String,
}

/// A balance as merchants see it, formatted at the currency's precision.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Balance {
    pub currency: String,
    /// Total: everything posted.
    #[schema(value_type = crate::schemas::Amount)]
    pub balance: String,
    /// What can be spent: balance less pending outgoing holds.
    #[schema(value_type = crate::schemas::Amount)]
    pub available: String,
    /// Reserved by pending holds (e.g. withdrawals in flight).
    #[schema(value_type = crate::schemas::Amount)]
    pub pending_out: String,
    /// Incoming value held pending.
    #[schema(value_type = crate::schemas::Amount)]
    pub pending_in: String,
}

/// A history line as merchants see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = HistoryEntry)]
pub struct HistoryLine {
    /// Entry id; pass as `before` to page.
    pub id: i64,
    pub transaction_id: i64,
    #[schema(schema_with = crate::schemas::history_kind)]
    pub kind: String,
    pub currency: String,
    /// Signed: negative leaves the account.
    #[schema(value_type = crate::schemas::Amount)]
    pub amount: String,
    /// True for a hold's reservation (see hold_status).
    pub pending: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schemas::hold_status)]
    pub hold_status: Option<String>,
    /// The other account of the movement, e.g. system:owner_equity:EUR.
    pub counterparty: String,
    /// What the movement was, and who made it (adjustments: operator and reason).
    #[schema(value_type = Object)]
    pub memo: serde_json::Value,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl Engine {
    pub async fn adjust(&self, req: AdjustmentRequest) -> Result<AdjustmentResult, EngineError> {
        let currency = self.currencies.get(&req.currency)?;
        let amount = Amount::parse(req.amount.trim(), currency.precision, SignPolicy::Any)?;
        if amount.is_zero() {
            return Err(EngineError::invalid("amount", "an adjustment must not be zero"));
        }
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(EngineError::invalid("reason", format!("give a reason of 1-{MAX_REASON_LEN} characters")));
        }
        if req.operator.trim().is_empty() {
            return Err(EngineError::invalid("operator", "say who makes the adjustment"));
        }
        self.store
            .merchant(req.merchant)
            .await?
            .ok_or_else(|| EngineError::MerchantNotFound(req.merchant.to_string()))?;
        let code = currency.code.clone();
        let merchant_account =
            self.ledger.account(&AccountKey::Merchant { merchant: req.merchant, currency: code.clone() }).await?;
        let equity =
            self.ledger.account(&AccountKey::System { account: SystemAccount::OwnerEquity, currency: code.clone() }).await?;
        let (from, to) = if amount.is_negative() { (merchant_account, equity) } else { (equity, merchant_account) };
        let memo = serde_json::json!({
            "type": "adjustment",
            "operator": req.operator.trim(),
            "reason": reason,
        })
        .to_string();
        let key = match req.idempotency_key {
            Some(k) => format!("adjust:{}:{k}", req.merchant.0),
            None => format!("adjust:{}:{}", req.merchant.0, crate::secrets::random_alphanumeric(24)),
        };
        let outcome = self
            .ledger
            .submit(TxRequest {
                idempotency_key: key,
                action: Action::Transfer(vec![Leg { from, to, currency: code, units: amount.units().abs() }]),
                memo,
            })
            .await
            .map_err(|e| e.in_currency(currency))?;
        let state = self.store.account_state(merchant_account).await?.ok_or(EngineError::LedgerStopped)?;
        tracing::info!(merchant = req.merchant.0, currency = %currency.code, amount = %amount, operator = req.operator.trim(),
            transaction = outcome.tx_id.0, replayed = outcome.replayed, "operator adjustment");
        Ok(AdjustmentResult {
            transaction_id: outcome.tx_id.0,
            replayed: outcome.replayed,
            merchant_id: req.merchant.0,
            currency: currency.code.to_string(),
            amount: amount.to_string(),
            balance: currency.amount(state.balance)?.to_string(),
            available: currency.amount(state.available())?.to_string(),
        })
    }

    /// Balances of a merchant (or one of its users), one per configured currency.
    pub async fn balances(&self, merchant: MerchantId, user: Option<UserId>) -> Result<Vec<Balance>, EngineError> {
        let key = (merchant.0, user.map(|u| u.0));
        let generation = self.ledger.generation();
        let stored = match self.balance_cache.get(&key, generation) {
            Some(cached) => cached,
            None => {
                let read = self.store.balances(merchant, user).await?;
                self.balance_cache.put(key, read.clone(), generation);
                read
            }
        };
        let mut out = Vec::new();
        for currency in self.currencies.all() {
            let row = stored.iter().find(|b| b.currency == currency.code.as_str());
            let (b, pd, pc) = row.map(|r| (r.balance, r.pending_debits, r.pending_credits)).unwrap_or((0, 0, 0));
            out.push(Balance {
                currency: currency.code.to_string(),
                balance: currency.amount(b)?.to_string(),
                available: currency.amount(b - pd)?.to_string(),
                pending_out: currency.amount(pd)?.to_string(),
                pending_in: currency.amount(pc)?.to_string(),
            });
        }
        Ok(out)
    }

    /// Ledger history of a merchant (or user), newest first, paged by entry id.
    pub async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryLine>, EngineError> {
        if let Some(c) = &query.currency {
            self.currencies.get(c)?;
        }
        let rows: Vec<HistoryEntry> = self.store.history(&query).await?;
        rows.into_iter()
            .map(|e| {
                let currency = self.currencies.get(&e.currency)?;
                Ok(HistoryLine {
                    id: e.entry_id,
                    transaction_id: e.tx_id,
                    kind: e.kind,
                    currency: e.currency.clone(),
                    amount: currency.amount(e.units)?.to_string(),
                    pending: e.pending,
                    hold_status: e.hold_status,
                    counterparty: e.counterparty,
                    memo: serde_json::from_str(&e.memo).unwrap_or(serde_json::Value::String(e.memo)),
                    created_at: format_ms(e.created_at_ms),
                })
            })
            .collect()
    }
}
