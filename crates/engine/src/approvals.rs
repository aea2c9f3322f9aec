//! Withdrawal limits and approval, for every dialect. Per merchant and currency, a
//! per-transaction and a per-day limit, in the currency or in a fiat equivalent at the
//! current rate. A withdrawal over a limit is accepted and held like any other, but
//! waits as `pending` until an operator approves it (it joins the queue) or declines
//! it (`cancelled`, its hold voided). Each decision is recorded once, with who, when
//! and why, in the same database transaction as the status it sets: two operators
//! deciding at once get one decision, and a crash right after an approval leaves a
//! queued withdrawal the broadcaster pays once.

use kassa_core::ledger::{Action, MerchantId, TxId, TxRequest};
use kassa_core::rates::convert_down;
use kassa_core::{Currency, SignPolicy};
use kassa_store::{Decided, WithdrawalDecisionRow, WithdrawalLimitsRow, WithdrawalQuery};
use serde::Serialize;

use crate::timefmt::format_ms;
use crate::withdrawals::{crash_point, Withdrawal};
use crate::{Engine, EngineError};

/// A merchant's withdrawal limits for one currency.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct WithdrawalLimits {
    pub merchant_id: i64,
    /// The currency withdrawn.
    pub currency: String,
    /// The currency the limits are given in: `currency` itself, or a fiat equivalent
    /// converted at the current rate.
    pub limit_currency: String,
    #[schema(value_type = Option<crate::schemas::Amount>)]
    pub per_transaction: Option<String>,
    #[schema(value_type = Option<crate::schemas::Amount>)]
    pub per_day: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// An operator's decision on a withdrawal that waited for approval.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct WithdrawalDecision {
    pub withdrawal_id: i64,
    /// `approved` or `declined`.
    pub decision: String,
    pub decided_by: String,
    #[schema(required = true)]
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub decided_at: String,
}

impl From<WithdrawalDecisionRow> for WithdrawalDecision {
    fn from(d: WithdrawalDecisionRow) -> Self {
        Self { withdrawal_id: d.withdrawal_id, decision: d.decision, decided_by: d.decided_by, reason: d.reason, decided_at: format_ms(d.decided_at_ms) }
    }
}

/// Longest operator name and reason recorded with a decision.
const MAX_DECISION_TEXT: usize = 1000;

impl Engine {
    fn limits_view(&self, l: WithdrawalLimitsRow) -> Result<WithdrawalLimits, EngineError> {
        let in_c = self.currencies.get(&l.limit_currency)?;
        let text = |u: Option<i128>| u.map(|u| in_c.amount(u).map(|a| a.to_string())).transpose();
        Ok(WithdrawalLimits {
            merchant_id: l.merchant_id,
            currency: l.currency,
            limit_currency: l.limit_currency.clone(),
            per_transaction: text(l.per_transaction_units)?,
            per_day: text(l.per_day_units)?,
            updated_at: format_ms(l.updated_at_ms),
        })
    }

    /// Sets a merchant's limits for `currency` (neither limit: removes them). With
    /// `limit_currency` (e.g. EUR) the limits are in that currency, converted at the
    /// current rate when a withdrawal is checked; it must form a pair with `currency`.
    pub async fn set_withdrawal_limits(
        &self,
        merchant: MerchantId,
        currency: &str,
        limit_currency: Option<&str>,
        per_transaction: Option<&str>,
        per_day: Option<&str>,
    ) -> Result<WithdrawalLimits, EngineError> {
        self.store.merchant(merchant).await?.ok_or(EngineError::NotFound("merchant"))?;
        let c = self.currencies.active(currency)?.clone();
        let in_c = match limit_currency {
            Some(code) if code != c.code.as_str() => {
                let in_c = self.currencies.active(code)?.clone();
                self.rates()?.pair(c.code.as_str(), in_c.code.as_str()).ok_or_else(|| {
                    EngineError::invalid("limit_currency", format!("{} → {} is not a configured pair: no rate to convert the limits with", in_c.code, c.code))
                })?;
                in_c
            }
            _ => c.clone(),
        };
        let parse = |field: &'static str, text: Option<&str>| {
            text.map(|t| in_c.parse_amount(t.trim(), SignPolicy::Positive).map(|a| a.units()).map_err(|e| EngineError::invalid(field, e.to_string())))
                .transpose()
        };
        let row = WithdrawalLimitsRow {
            merchant_id: merchant.0,
            currency: c.code.to_string(),
            limit_currency: in_c.code.to_string(),
            per_transaction_units: parse("per_transaction", per_transaction)?,
            per_day_units: parse("per_day", per_day)?,
            updated_at_ms: self.now_ms(),
        };
        self.store.set_withdrawal_limits(&row).await?;
        tracing::info!(merchant = merchant.0, currency = %c.code, limit_currency = %in_c.code, per_transaction = ?per_transaction, per_day = ?per_day,
            "withdrawal limits set");
        self.limits_view(WithdrawalLimitsRow { updated_at_ms: self.now_ms(), ..row })
    }

    /// Configured limits (of one merchant, or every merchant's).
    pub async fn withdrawal_limits(&self, merchant: Option<MerchantId>) -> Result<Vec<WithdrawalLimits>, EngineError> {
        self.store.all_withdrawal_limits(merchant).await?.into_iter().map(|l| self.limits_view(l)).collect()
    }

    /// Whether a withdrawal of `units` of `currency` waits for approval: the reason when
    /// it is over the per-transaction limit, and the per-day limit in units of
    /// `currency` (with its name) for the store to check against the day's total. In a
    /// fiat equivalent without a fresh rate, every withdrawal waits (the limits cannot
    /// be checked, so they are not assumed to hold).
    pub(crate) async fn approval_rule(&self, merchant: MerchantId, currency: &Currency, units: i128) -> Result<(Option<String>, Option<(i128, String)>), EngineError> {
        let Some(l) = self.store.withdrawal_limits(merchant, currency.code.as_str()).await? else { return Ok((None, None)) };
        let in_c = self.currencies.get(&l.limit_currency)?.clone();
        let to_units = |limit: i128| -> Result<i128, EngineError> {
            if in_c.code == currency.code {
                return Ok(limit);
            }
            let rate = self.rates()?.current(in_c.code.as_str(), currency.code.as_str())?.rate;
            convert_down(limit, rate, in_c.precision, currency.precision).map_err(|e| EngineError::invalid("limit", e))
        };
        let named = |limit: i128| in_c.amount(limit).map(|a| format!("{a} {}", in_c.code));
        let mut reason = None;
        let mut day = None;
        if let Some(limit) = l.per_transaction_units {
            match to_units(limit) {
                Ok(max) if units <= max => {}
                Ok(_) => reason = Some(format!("over the per-transaction limit of {}", named(limit)?)),
                Err(e) => reason = Some(format!("the per-transaction limit of {} cannot be checked: {}", named(limit)?, e.client_message())),
            }
        }
        if let Some(limit) = l.per_day_units {
            match to_units(limit) {
                Ok(max) => day = Some((max, named(limit)?)),
                Err(e) if reason.is_none() => reason = Some(format!("the per-day limit of {} cannot be checked: {}", named(limit)?, e.client_message())),
                Err(_) => {}
            }
        }
        Ok((reason, day))
    }

    /// Withdrawals waiting for approval (of one merchant, or all), oldest first.
    pub async fn pending_withdrawals(&self, merchant: Option<MerchantId>) -> Result<Vec<Withdrawal>, EngineError> {
        let mut list = self.withdrawals(WithdrawalQuery { merchant, status: Some("pending".into()), limit: 1000, ..Default::default() }).await?;
        list.reverse();
        Ok(list)
    }

    /// An operator's decision on a pending withdrawal (of `merchant` when given: a
    /// merchant's own API key): approved, it joins the queue; declined, it is cancelled
    /// and its hold voided. Acted on once: a second decision is refused with the first.
    pub async fn decide_withdrawal(
        &self,
        merchant: Option<MerchantId>,
        id: i64,
        approve: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(Withdrawal, WithdrawalDecision), EngineError> {
        let by = by.trim();
        if by.is_empty() {
            return Err(EngineError::invalid("operator", "name who decides"));
        }
        crate::error::check_text("operator", by, MAX_DECISION_TEXT)?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if let Some(r) = reason {
            crate::error::check_text("reason", r, MAX_DECISION_TEXT)?;
        }
        if !approve && reason.is_none() {
            return Err(EngineError::invalid("reason", "a declined withdrawal needs a reason"));
        }
        let row = match self.store.withdrawal(id).await? {
            Some(w) if merchant.is_none_or(|m| m.0 == w.merchant_id) => w,
            _ => return Err(EngineError::NotFound("withdrawal")),
        };
        let decision = match self.store.decide_withdrawal(id, approve, by, reason).await? {
            Decided::Done(d) => d,
            Decided::Already(d) => {
                return Err(EngineError::Conflict(format!(
                    "withdrawal {id} was {} by {} at {} already",
                    d.decision,
                    d.decided_by,
                    format_ms(d.decided_at_ms)
                )))
            }
            Decided::NotPending(status) => {
                let status = status.map_or("gone".to_string(), |s| s.as_str().to_string());
                return Err(EngineError::Conflict(format!("withdrawal {id} does not wait for approval (it is {status})")));
            }
        };
        crash_point("after_decision");
        if !approve {
            if let Some(hold) = row.hold_tx_id {
                self.void_withdrawal_hold(id, hold, "declined").await?;
            }
        }
        tracing::warn!(withdrawal = id, merchant = row.merchant_id, decision = %decision.decision, by, reason = ?reason, "withdrawal decided");
        Ok((self.withdrawal(MerchantId(row.merchant_id), id).await?, decision.into()))
    }

    /// Releases a withdrawal's held funds (it failed or was declined; idempotent).
    pub(crate) async fn void_withdrawal_hold(&self, withdrawal: i64, hold: i64, reason: &str) -> Result<(), EngineError> {
        let memo = serde_json::json!({"type": "withdrawal_failed", "withdrawal_id": withdrawal, "reason": reason}).to_string();
        self.ledger.submit(TxRequest { idempotency_key: format!("withdrawal:{withdrawal}:void"), action: Action::Void { hold: TxId(hold) }, memo }).await?;
        Ok(())
    }
}
