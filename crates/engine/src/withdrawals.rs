//! Withdrawals: request → checks (address, amount limits, daily count, balance with
//! fee) → hold → queue → broadcaster → txid recorded → confirmations → confirmed.
//! Failures void the hold. This is the service merchants call; sending is the
//! broadcaster's (`broadcaster.rs`).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use kassa_chain::{ChainAdapter, Priority};
use kassa_core::ledger::{AccountKey, Action, Leg, LedgerError, MerchantId, SystemAccount, TxRequest};
use kassa_core::withdrawal::WithdrawalInput;
use kassa_core::{Currency, SignPolicy};
use kassa_store::{ClaimOutcome, IdempotencyRecord, NewWithdrawal, StoreError, WithdrawalQuery, WithdrawalRow, WithdrawalSource};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::idempotency::OnceRequest;

/// How often, and how many times, a repeated request looks whether its first
/// arrival's hold has settled (5 s in all).
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(20);
const SETTLE_POLLS: u32 = 250;
/// Most arrivals of one request raced through before one is told to retry.
const MAX_CONCURRENT_REPEATS: usize = 32;
use crate::timefmt::format_ms;
use crate::{Engine, EngineError};

#[derive(Clone, Debug)]
pub struct WithdrawalRequest {
    pub merchant: MerchantId,
    pub currency: String,
    pub address: String,
    pub amount: String,
    pub priority: Priority,
    /// The client's id for this withdrawal: a retry returns the original.
    pub idempotency_key: String,
    /// The API it came through, and its own callback URL (checked here before storing).
    pub origin: crate::notifications::Origin,
    /// The merchant's note, shown back with the withdrawal.
    pub description: Option<String>,
    /// Paid from the merchant's balance in this currency (a withdrawal with exchange):
    /// `amount` is in it, what that balance gives; it is converted to `currency` at the
    /// current rate less spread and exchange fee, and the withdrawal fee is taken from
    /// the converted amount. The exchange and the hold are one ledger transaction.
    pub pay_from: Option<String>,
}

/// What became of a bulk payment that passed its checks.
enum Stored {
    /// Stored and held by this request.
    Held(WithdrawalRow),
    /// Stored by a concurrent duplicate of this request.
    Answered(Withdrawal),
}

/// One payment of a bulk request (`request_withdrawals_bulk`).
#[derive(Clone, Debug)]
pub struct BulkPayment {
    pub address: String,
    pub amount: String,
    pub description: Option<String>,
    pub callback_url: Option<String>,
}

/// Longest withdrawal description accepted.
const MAX_DESCRIPTION_LEN: usize = 1000;

/// A withdrawal as merchants see it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Withdrawal {
    pub id: i64,
    pub currency: String,
    pub address: String,
    #[schema(value_type = crate::schemas::Amount)]
    pub amount: String,
    /// Charged on top of the amount.
    #[schema(value_type = crate::schemas::Amount)]
    pub fee: String,
    #[schema(schema_with = crate::schemas::priority)]
    pub priority: String,
    pub idempotency_key: String,
    #[schema(schema_with = crate::schemas::withdrawal_status)]
    pub status: String,
    #[schema(required = true)]
    pub txid: Option<String>,
    pub confirmations: i64,
    #[schema(required = true)]
    pub failure: Option<String>,
    /// The description given with the request (withdrawals made through a dialect
    /// that takes one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Why it waits (or waited) for an operator's approval: over which limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_reason: Option<String>,
    /// A withdrawal with exchange (`pay_from`): the currency of the balance that paid it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_currency: Option<String>,
    /// A withdrawal with exchange: what that balance gave, the exchange fee included.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = crate::schemas::Amount)]
    pub source_amount: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[serde(skip)]
    pub created_at_ms: i64,
    #[serde(skip)]
    pub updated_at_ms: i64,
    /// This answer is the withdrawal an earlier request with the same idempotency key
    /// stored (dialects that refuse a repeated id instead of answering it read this).
    #[serde(skip)]
    pub replayed: bool,
}

/// Test-only fault injection: with `KASSATEST_CRASH_AT=<point>` in the environment the
/// process aborts at that point (of the withdrawal flow, or `before_delivery` of a
/// callback), as `kill -9` would.
pub(crate) fn crash_point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var("KASSATEST_CRASH_AT").ok()).as_deref() == Some(point) {
        eprintln!("KASSATEST_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// What a withdrawal's idempotency key stands for: a repeat must ask for the same.
pub(crate) fn request_hash(currency: &str, address: &str, units: i128, priority: Priority) -> Vec<u8> {
    let text = format!("{currency}|{address}|{units}|{}", priority.as_str());
    Sha256::digest(text.as_bytes()).to_vec()
}

impl Engine {
    fn withdrawal_view(&self, w: WithdrawalRow) -> Result<Withdrawal, EngineError> {
        let c = self.currencies.get(&w.currency)?;
        let source_amount = match &w.source {
            Some(s) => Some(self.currencies.get(&s.currency)?.amount(s.units)?.to_string()),
            None => None,
        };
        Ok(Withdrawal {
            id: w.id,
            currency: w.currency.clone(),
            address: w.address,
            amount: c.amount(w.amount_units)?.to_string(),
            fee: c.amount(w.fee_units)?.to_string(),
            priority: w.priority,
            idempotency_key: w.idempotency_key,
            status: w.status.as_str().to_string(),
            txid: w.txid,
            confirmations: w.confirmations,
            failure: w.failure,
            description: w.description,
            approval_reason: w.approval_reason,
            source_currency: w.source.map(|s| s.currency),
            source_amount,
            created_at: format_ms(w.created_at_ms),
            updated_at: format_ms(w.updated_at_ms),
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
            replayed: false,
        })
    }

    /// The checks every withdrawal passes before anything is stored: the currency can
    /// send on a running chain, and the address and amount are valid for it.
    pub(crate) async fn withdrawal_checks(&self, code: &str) -> Result<(Currency, String, Arc<dyn ChainAdapter>), EngineError> {
        let currency = self.currencies.active(code)?.clone();
        if !currency.can_send {
            return Err(EngineError::invalid("currency", format!("{} cannot be sent", currency.code)));
        }
        let chain_name = currency.chain.clone().unwrap_or_default();
        let chain = self.chains.get(&chain_name).ok_or_else(|| EngineError::ChainNotConfigured(chain_name.clone()))?;
        if let Some(reason) = self.store.chain_halted(&chain_name).await? {
            return Err(EngineError::ChainHalted(reason));
        }
        Ok((currency, chain_name, chain.adapter.clone()))
    }

    fn payment_checks(&self, currency: &Currency, adapter: &dyn ChainAdapter, address: &str, amount: &str) -> Result<(String, i128), EngineError> {
        let address = adapter.validate_address(address.trim()).map_err(|e| EngineError::invalid("address", e))?;
        let amount = currency.parse_amount(amount.trim(), SignPolicy::Positive)?;
        Self::amount_limits(currency, amount)?;
        Ok((address, amount.units()))
    }

    /// The currency's least and greatest withdrawal.
    fn amount_limits(currency: &Currency, amount: kassa_core::Amount) -> Result<(), EngineError> {
        if amount < currency.min_withdrawal {
            return Err(EngineError::BelowMinimum(format!("the minimum withdrawal is {} {}", currency.min_withdrawal, currency.code)));
        }
        if let Some(max) = currency.max_withdrawal {
            if amount > max {
                return Err(EngineError::AboveMaximum(format!("the maximum withdrawal is {max} {}", currency.code)));
            }
        }
        Ok(())
    }

    /// A withdrawal with exchange priced now: (amount sent, withdrawal fee, what the
    /// source balance gives). The converted amount pays the withdrawal fee.
    fn price_from(&self, currency: &Currency, from: &str, amount: &str) -> Result<(i128, i128, WithdrawalSource), EngineError> {
        let src = self.currencies.active(from)?.clone();
        if src.code == currency.code {
            return Err(EngineError::invalid("convert_to", "must differ from the currency paid from"));
        }
        let (c, rate, _) = self.price(&src, currency, &crate::exchange::Side::Sender(amount.to_string()))?;
        let fee = currency.fees.withdrawal.on(c.receiver_units)?.min(c.receiver_units);
        let units = c.receiver_units - fee;
        if units <= 0 {
            return Err(EngineError::BelowMinimum(format!("{amount} {} does not cover the withdrawal fee", src.code)));
        }
        Self::amount_limits(currency, currency.amount(units)?)?;
        Ok((units, fee, WithdrawalSource { currency: src.code.to_string(), units: c.sender_units, fee_units: c.fee_units, rate: rate.to_string() }))
    }

    /// A refused insert: the daily count reached, or another request's key.
    fn insert_error(&self, e: StoreError, currency: &Currency) -> EngineError {
        match e {
            StoreError::LimitReached { .. } => EngineError::LimitReached(format!(
                "at most {} {} withdrawals per day",
                currency.max_withdrawals_per_day.unwrap_or(0),
                currency.code
            )),
            StoreError::Duplicate { .. } => EngineError::Conflict("a concurrent identical request stored this withdrawal".into()),
            e => e.into(),
        }
    }

    fn check_description(description: &Option<String>) -> Result<(), EngineError> {
        match description {
            Some(d) => crate::error::check_text("description", d, MAX_DESCRIPTION_LEN),
            None => Ok(()),
        }
    }

    /// Checks an address for a currency's chain; returns its canonical form.
    pub fn check_withdrawal_address(&self, currency: &str, address: &str) -> Result<String, EngineError> {
        let (_, chain) = self.chain_of(currency)?;
        chain.adapter.validate_address(address.trim()).map_err(|e| EngineError::invalid("address", e))
    }

    /// Requests a withdrawal; its amount plus fee is held at once.
    pub async fn request_withdrawal(&self, r: WithdrawalRequest) -> Result<Withdrawal, EngineError> {
        if r.idempotency_key.is_empty() || r.idempotency_key.len() > 200 {
            return Err(EngineError::invalid("idempotency_key", "must be 1-200 characters"));
        }
        Self::check_description(&r.description)?;
        let (currency, chain_name, adapter) = self.withdrawal_checks(&r.currency).await?;
        let (address, units, fee, source, hash) = match &r.pay_from {
            None => {
                let (address, units) = self.payment_checks(&currency, adapter.as_ref(), &r.address, &r.amount)?;
                let hash = request_hash(&r.currency, &address, units, r.priority);
                (address, units, currency.fees.withdrawal.on(units)?, None, hash)
            }
            Some(from) => {
                let address = adapter.validate_address(r.address.trim()).map_err(|e| EngineError::invalid("address", e))?;
                let src = self.currencies.active(from)?;
                // What is asked (not what the rate makes of it): a repeat replays.
                let asked = src.parse_amount(r.amount.trim(), SignPolicy::Positive)?;
                let hash = request_hash(&format!("{}<-{}:{}", r.currency, src.code, asked.units()), &address, 0, r.priority);
                let (units, fee, source) = self.price_from(&currency, from, r.amount.trim())?;
                (address, units, fee, Some(source), hash)
            }
        };
        let callback_url = match &r.origin.callback_url {
            Some(url) => Some(self.check_callback_url(url).await?),
            None => None,
        };
        let (approval_reason, approval_day_limit) = self.approval_rule(r.merchant, &currency, units).await?;
        let new = NewWithdrawal {
            merchant: r.merchant,
            currency: currency.code.to_string(),
            chain: chain_name,
            address,
            amount_units: units,
            fee_units: fee,
            priority: r.priority.as_str().to_string(),
            idempotency_key: r.idempotency_key.clone(),
            request_hash: hash.clone(),
            origin: r.origin.dialect.clone(),
            callback_url,
            description: r.description.clone(),
            daily_limit: currency.max_withdrawals_per_day.map(i64::from),
            source,
            approval_reason,
            approval_day_limit,
            not_before_ms: None,
            batch_key: None,
        };
        // A repeat is answered from the stored withdrawal once its hold has settled;
        // one whose first arrival was refused (and removed) runs as new.
        let mut stored = None;
        // Each turn another arrival of the same request finished (it was refused, or
        // this one stored it): bounded by how many arrive together.
        for _ in 0..MAX_CONCURRENT_REPEATS {
            if let Some(existing) = self.store.withdrawal_by_key(r.merchant, &r.idempotency_key).await? {
                match self.settled(existing, &hash).await? {
                    Some(w) => return Ok(Withdrawal { replayed: true, ..w }),
                    None => continue,
                }
            }
            crash_point("before_store");
            match self.store.insert_withdrawal(&new).await {
                Ok(id) => {
                    stored = Some(id);
                    break;
                }
                Err(StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(self.insert_error(e, &currency)),
            }
        }
        let id = stored.ok_or_else(|| EngineError::InProgress("a request with this idempotency key is being processed; retry shortly".into()))?;
        let row = self.store.withdrawal(id).await?.ok_or(EngineError::LedgerStopped)?;
        self.hold_withdrawal(&row, &currency).await?;
        crash_point("after_hold");
        self.withdrawal_view(self.store.withdrawal(id).await?.ok_or(EngineError::LedgerStopped)?)
    }

    /// What a bulk request did under `req.key`, payment by payment: the withdrawal it
    /// stored, or the refusal recorded for it (`Conflict` for a payment it neither
    /// stored nor refused, i.e. one interrupted); `None` when it did nothing.
    async fn bulk_replay(&self, req: &OnceRequest<'_>, payments: usize) -> Result<Option<Vec<Result<Withdrawal, EngineError>>>, EngineError> {
        let mut out = Vec::new();
        let mut any = false;
        for i in 0..payments {
            let key = format!("{}:{i}", req.key);
            if let Some(w) = self.store.withdrawal_by_key(req.merchant, &key).await? {
                any = true;
                out.push(self.withdrawal_view(w));
                continue;
            }
            out.push(match self.store.idempotency_record(req.merchant, req.scope, &key).await? {
                Some(IdempotencyRecord { outcome: ClaimOutcome::Refused(r), .. }) => {
                    any = true;
                    Err(EngineError::from_record(&r).unwrap_or_else(|| EngineError::Conflict("this payment was refused the first time".into())))
                }
                _ => Err(EngineError::Conflict("this payment of a repeated request was not sent the first time".into())),
            });
        }
        Ok(any.then_some(out))
    }

    /// Several withdrawals of one currency, paid by one transaction, run once per
    /// `req` (the engine's idempotency entry point): a repeat answers payment by
    /// payment with what the first arrival stored or refused. Each payment is checked
    /// on its own and its result given in input order; those that pass are queued
    /// together. Fees: the largest payment that goes through pays the full fee, every
    /// further one the fee with half its fixed part. Payment `i` is stored under the
    /// idempotency key `{key}:{i}`.
    pub async fn request_withdrawals_bulk(
        &self,
        req: OnceRequest<'_>,
        currency: &str,
        priority: Priority,
        payments: Vec<BulkPayment>,
        dialect: &str,
    ) -> Result<Vec<Result<Withdrawal, EngineError>>, EngineError> {
        let n = payments.len();
        let fingerprint = Sha256::digest(req.request);
        let expires = self.now_ms().saturating_add(i64::try_from(req.keep_for.as_millis()).unwrap_or(i64::MAX / 2));
        let run = async {
            let mut results = self.send_bulk(req.merchant, currency, priority, payments, req.key, dialect).await?;
            // Nothing stored and nothing refused (every payment failed): a failure of the
            // whole request, recorded nowhere, so a repeat runs it again.
            if results.iter().all(|r| r.as_ref().is_err_and(|e| !e.is_refusal())) {
                return Err(results.swap_remove(0).err().unwrap_or(EngineError::LedgerStopped));
            }
            // Each refused payment's refusal is kept, to be answered again as itself; one
            // that cannot be kept leaves that payment to be answered as not sent.
            for (i, r) in results.iter().enumerate() {
                if let Some(refusal) = r.as_ref().err().and_then(EngineError::record) {
                    let outcome = ClaimOutcome::Refused(refusal);
                    let key = format!("{}:{i}", req.key);
                    if let Err(e) = self.store.record_idempotency(req.merchant, req.scope, &key, &fingerprint, &outcome, expires).await {
                        tracing::warn!(key, error = %e, "a bulk payment's refusal was not recorded");
                    }
                }
            }
            Ok(results)
        };
        self.once(req.clone(), run, || self.bulk_replay(&req, n)).await
    }

    async fn send_bulk(
        &self,
        merchant: MerchantId,
        currency: &str,
        priority: Priority,
        payments: Vec<BulkPayment>,
        key: &str,
        dialect: &str,
    ) -> Result<Vec<Result<Withdrawal, EngineError>>, EngineError> {
        let (currency, chain_name, adapter) = self.withdrawal_checks(currency).await?;
        let most = adapter.max_payments_per_tx();
        if most < 2 {
            return Err(EngineError::invalid("currency", format!("{} cannot be sent in bulk", currency.code)));
        }
        if payments.is_empty() || payments.len() > most {
            return Err(EngineError::invalid("transactions", format!("name 1-{most} payments")));
        }
        if key.is_empty() || key.len() > 180 {
            return Err(EngineError::invalid("idempotency_key", "must be 1-180 characters"));
        }
        let key_of = |i: usize| format!("{key}:{i}");
        // Each payment's own checks.
        let mut results: Vec<Option<Result<Withdrawal, EngineError>>> = (0..payments.len()).map(|_| None).collect();
        let mut passing = Vec::new();
        let mut addresses = HashSet::new();
        for (i, p) in payments.iter().enumerate() {
            let checked = async {
                Self::check_description(&p.description)?;
                let (address, units) = self.payment_checks(&currency, adapter.as_ref(), &p.address, &p.amount)?;
                // One transaction pays each address once.
                if !addresses.insert(address.clone()) {
                    return Err(EngineError::invalid("duplicate_address", "this address is already paid by this request"));
                }
                let callback_url = match &p.callback_url {
                    Some(url) => Some(self.check_callback_url(url).await?),
                    None => None,
                };
                Ok::<_, EngineError>((address, units, callback_url))
            }
            .await;
            match checked {
                Ok(ok) => passing.push((i, ok)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // Largest first: it pays the full fee; payments refused for funds pass the role on.
        // Once a payment is held it will be sent (a crash before it is queued is
        // recovered by the broadcaster), so from here on every failure is that payment's
        // own result, never the whole request's.
        passing.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
        let mut held: Vec<(usize, WithdrawalRow)> = Vec::new();
        for (i, (address, units, callback_url)) in passing {
            let fee_rule = if held.is_empty() { currency.fees.withdrawal } else { currency.fees.withdrawal.with_half_fixed() };
            let outcome = async {
                let fee = fee_rule.on(units)?;
                let (approval_reason, approval_day_limit) = self.approval_rule(merchant, &currency, units).await?;
                let new = NewWithdrawal {
                    merchant,
                    currency: currency.code.to_string(),
                    chain: chain_name.clone(),
                    address: address.clone(),
                    amount_units: units,
                    fee_units: fee,
                    priority: priority.as_str().to_string(),
                    idempotency_key: key_of(i),
                    request_hash: request_hash(currency.code.as_str(), &address, units, priority),
                    origin: dialect.to_string(),
                    callback_url,
                    description: payments[i].description.clone(),
                    daily_limit: currency.max_withdrawals_per_day.map(i64::from),
                    source: None,
                    approval_reason,
                    approval_day_limit,
                    not_before_ms: None,
                    batch_key: None,
                };
                let id = match self.store.insert_withdrawal(&new).await {
                    Ok(id) => id,
                    // A concurrent duplicate of this request stored it: that is its answer.
                    Err(StoreError::Duplicate { .. }) => {
                        let existing = self.store.withdrawal_by_key(merchant, &new.idempotency_key).await?.ok_or(EngineError::LedgerStopped)?;
                        return match self.settled(existing, &new.request_hash).await? {
                            Some(w) => Ok(Stored::Answered(w)),
                            None => Err(EngineError::InProgress("this payment of a concurrent repeat was refused; send the request again".into())),
                        };
                    }
                    Err(e) => return Err(self.insert_error(e, &currency)),
                };
                let row = self.store.withdrawal(id).await?.ok_or(EngineError::LedgerStopped)?;
                match self.hold(&row, &currency).await {
                    Ok(tx) => Ok(Stored::Held(WithdrawalRow { hold_tx_id: Some(tx), ..row })),
                    Err(e @ EngineError::InsufficientFunds { .. }) => {
                        self.store.delete_requested_withdrawal(id).await?;
                        Err(e)
                    }
                    Err(e) => Err(e),
                }
            }
            .await;
            match outcome {
                Ok(Stored::Held(row)) => held.push((i, row)),
                Ok(Stored::Answered(w)) => results[i] = Some(Ok(w)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // All held payments enter the queue at once, so one payout carries them.
        // Those over a limit wait for approval instead.
        let queued: Vec<(i64, i64)> =
            held.iter().filter(|(_, w)| w.approval_reason.is_none()).filter_map(|(_, w)| w.hold_tx_id.map(|tx| (w.id, tx))).collect();
        if let Err(e) = self.store.set_withdrawals_queued(&queued).await {
            tracing::warn!(error = %e, "held bulk withdrawals not queued yet; the broadcaster's recovery queues them");
        }
        for (_, w) in held.iter().filter(|(_, w)| w.approval_reason.is_some()) {
            if let Some(tx) = w.hold_tx_id {
                if let Err(e) = self.store.set_withdrawal_pending(w.id, tx).await {
                    tracing::warn!(error = %e, withdrawal = w.id, "held bulk withdrawal not marked pending yet; the broadcaster's recovery does");
                }
            }
        }
        for (i, row) in held {
            // As queued (or pending), whether or not the update above got through: it will be.
            let input = if row.approval_reason.is_some() { WithdrawalInput::ApprovalRequired } else { WithdrawalInput::Held };
            let status = row.state().after(input).map_or(row.status, |next| next.status);
            results[i] = Some(self.withdrawal_view(WithdrawalRow { status, ..row }));
        }
        tracing::info!(merchant = merchant.0, currency = %currency.code, payments = results.len(),
            sent = results.iter().filter(|r| matches!(r, Some(Ok(_)))).count(), "bulk withdrawal requested");
        Ok(results.into_iter().map(|r| r.unwrap_or(Err(EngineError::LedgerStopped))).collect())
    }

    /// The answer to a repeat of the request that stored `existing`: that withdrawal
    /// once its funds are held. While the first arrival is still holding them it is
    /// waited for (a bounded wait on another request, not business time): `None` when
    /// that hold was refused and the row removed (the repeat then runs as new, and is
    /// refused again unless funds arrived), `InProgress` when it does not settle.
    async fn settled(&self, mut existing: WithdrawalRow, hash: &[u8]) -> Result<Option<Withdrawal>, EngineError> {
        if existing.request_hash != hash {
            return Err(EngineError::Ledger(LedgerError::IdempotencyConflict { key: existing.idempotency_key }));
        }
        for _ in 0..SETTLE_POLLS {
            if existing.status != kassa_core::withdrawal::WithdrawalState::NEW.status {
                return self.withdrawal_view(existing).map(Some);
            }
            tokio::time::sleep(SETTLE_POLL).await;
            match self.store.withdrawal(existing.id).await? {
                Some(w) => existing = w,
                None => return Ok(None),
            }
        }
        Err(EngineError::InProgress("a request with this idempotency key is being processed; retry shortly".into()))
    }

    /// Holds amount + fee for a `requested` withdrawal and queues it; refused for
    /// insufficient funds, the withdrawal is removed (nothing stays stored).
    pub(crate) async fn hold_withdrawal(&self, w: &WithdrawalRow, currency: &Currency) -> Result<(), EngineError> {
        match self.hold(w, currency).await {
            // Over a limit: held, but waiting for an operator.
            Ok(tx) if w.approval_reason.is_some() => {
                self.store.set_withdrawal_pending(w.id, tx).await?;
                Ok(())
            }
            Ok(tx) => {
                self.store.set_withdrawal_queued(w.id, tx).await?;
                Ok(())
            }
            Err(e @ EngineError::InsufficientFunds { .. }) => {
                self.store.delete_requested_withdrawal(w.id).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Posts the hold of amount + fee (idempotent by the withdrawal's id); returns the
    /// ledger transaction.
    /// A withdrawal with exchange holds the source currency instead: merchant → exchange
    /// house (its exchange fee to fees earned) in it, exchange house → hot wallet (and
    /// the withdrawal fee) in the currency sent, all in the one hold, so a void returns
    /// the source currency.
    pub(crate) async fn hold(&self, w: &WithdrawalRow, currency: &Currency) -> Result<i64, EngineError> {
        let code = currency.code.clone();
        let account = |key: AccountKey| async move { self.ledger.account(&key).await };
        let merchant = MerchantId(w.merchant_id);
        let hot = account(AccountKey::System { account: SystemAccount::HotWallet, currency: code.clone() }).await?;
        let fees = account(AccountKey::System { account: SystemAccount::FeesEarned, currency: code.clone() }).await?;
        let payer = match &w.source {
            None => account(AccountKey::Merchant { merchant, currency: code.clone() }).await?,
            Some(_) => account(AccountKey::System { account: SystemAccount::ExchangeHouse, currency: code.clone() }).await?,
        };
        let mut legs = vec![Leg { from: payer, to: hot, currency: code.clone(), units: w.amount_units }, Leg {
            from: payer,
            to: fees,
            currency: code.clone(),
            units: w.fee_units,
        }];
        let mut refused_in = currency.clone();
        if let Some(s) = &w.source {
            let src = self.currencies.get(&s.currency)?.clone();
            let from = account(AccountKey::Merchant { merchant, currency: src.code.clone() }).await?;
            let house = account(AccountKey::System { account: SystemAccount::ExchangeHouse, currency: src.code.clone() }).await?;
            let src_fees = account(AccountKey::System { account: SystemAccount::FeesEarned, currency: src.code.clone() }).await?;
            legs.push(Leg { from, to: house, currency: src.code.clone(), units: s.units - s.fee_units });
            legs.push(Leg { from, to: src_fees, currency: src.code.clone(), units: s.fee_units });
            refused_in = src;
        }
        legs.retain(|l| l.units > 0);
        let memo = serde_json::json!({"type": "withdrawal", "withdrawal_id": w.id, "address": w.address,
            "exchange_rate": w.source.as_ref().map(|s| s.rate.clone())})
        .to_string();
        let request = TxRequest { idempotency_key: format!("withdrawal:{}:hold", w.id), action: Action::Hold(legs), memo };
        Ok(self.ledger.submit(request).await.map_err(|e| e.in_currency(&refused_in))?.tx_id.0)
    }

    /// A merchant's withdrawal by its idempotency key.
    pub async fn withdrawal_by_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Withdrawal>, EngineError> {
        self.store.withdrawal_by_key(merchant, key).await?.map(|w| self.withdrawal_view(w)).transpose()
    }

    pub async fn withdrawal(&self, merchant: MerchantId, id: i64) -> Result<Withdrawal, EngineError> {
        match self.store.withdrawal(id).await? {
            Some(w) if w.merchant_id == merchant.0 => self.withdrawal_view(w),
            _ => Err(EngineError::NotFound("withdrawal")),
        }
    }

    pub async fn withdrawals(&self, query: WithdrawalQuery) -> Result<Vec<Withdrawal>, EngineError> {
        if let Some(c) = &query.currency {
            self.currencies.get(c)?;
        }
        self.store.withdrawals(&query).await?.into_iter().map(|w| self.withdrawal_view(w)).collect()
    }
}
