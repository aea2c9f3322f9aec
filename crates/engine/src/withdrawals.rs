//! Withdrawals: request → checks (address, amount limits, daily count, balance with
//! fee) → hold → queue → broadcaster → txid recorded → confirmations → confirmed.
//! Failures void the hold.
//!
//! Exactly once across crashes: the payout transaction is signed and stored (txid and
//! raw bytes) before it is broadcast. After a restart the broadcaster asks the node
//! about a stored transaction and re-broadcasts the same bytes, never a new payment;
//! a payout that was never signed goes back to the queue. A transaction replaced on
//! the network (RBF) is matched by what it pays, not by its txid.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kassa_chain::{Asset, ChainAdapter, ChainError, Payment, Priority};
use kassa_core::ledger::{AccountKey, Action, Leg, LedgerError, MerchantId, SystemAccount, TxId, TxRequest};
use kassa_core::withdrawal::{PayoutStatus, WithdrawalInput, WithdrawalStatus};
use kassa_core::{Currency, SignPolicy};
use kassa_store::{NewWithdrawal, PayoutRow, StoreError, WithdrawalQuery, WithdrawalRow};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::adjustments::format_ms;
use crate::{Engine, EngineError};

/// Most withdrawals paid by one transaction.
pub const MAX_BATCH: usize = 100;

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
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[serde(skip)]
    pub created_at_ms: i64,
    #[serde(skip)]
    pub updated_at_ms: i64,
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
fn request_hash(currency: &str, address: &str, units: i128, priority: Priority) -> Vec<u8> {
    let text = format!("{currency}|{address}|{units}|{}", priority.as_str());
    Sha256::digest(text.as_bytes()).to_vec()
}

impl Engine {
    fn withdrawal_view(&self, w: WithdrawalRow) -> Result<Withdrawal, EngineError> {
        let c = self.currencies.get(&w.currency)?;
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
            created_at: format_ms(w.created_at_ms),
            updated_at: format_ms(w.updated_at_ms),
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
        })
    }

    /// The checks every withdrawal passes before anything is stored: the currency can
    /// send on a running chain, and the address and amount are valid for it.
    async fn withdrawal_checks(&self, code: &str) -> Result<(Currency, String, Arc<dyn ChainAdapter>), EngineError> {
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
        if amount < currency.min_withdrawal {
            return Err(EngineError::BelowMinimum(format!("the minimum withdrawal is {} {}", currency.min_withdrawal, currency.code)));
        }
        if let Some(max) = currency.max_withdrawal {
            if amount > max {
                return Err(EngineError::AboveMaximum(format!("the maximum withdrawal is {max} {}", currency.code)));
            }
        }
        Ok((address, amount.units()))
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
        let (address, units) = self.payment_checks(&currency, adapter.as_ref(), &r.address, &r.amount)?;
        let hash = request_hash(&r.currency, &address, units, r.priority);
        if let Some(existing) = self.store.withdrawal_by_key(r.merchant, &r.idempotency_key).await? {
            return self.replay(existing, &hash);
        }
        let callback_url = match &r.origin.callback_url {
            Some(url) => Some(self.check_callback_url(url).await?),
            None => None,
        };
        let fee = currency.fees.withdrawal.on(units)?;
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
        };
        let id = match self.store.insert_withdrawal(&new).await {
            Ok(id) => id,
            Err(StoreError::Duplicate { .. }) => {
                let existing = self.store.withdrawal_by_key(r.merchant, &r.idempotency_key).await?.ok_or(EngineError::LedgerStopped)?;
                return self.replay(existing, &hash);
            }
            Err(e) => return Err(self.insert_error(e, &currency)),
        };
        let row = self.store.withdrawal(id).await?.ok_or(EngineError::LedgerStopped)?;
        self.hold_withdrawal(&row, &currency).await?;
        crash_point("after_hold");
        self.withdrawal_view(self.store.withdrawal(id).await?.ok_or(EngineError::LedgerStopped)?)
    }

    /// What a bulk request stored under `key`, payment by payment (`Conflict` for a
    /// payment it did not store): the answer to a repeated request.
    pub async fn bulk_replay(&self, merchant: MerchantId, key: &str, payments: usize) -> Result<Vec<Result<Withdrawal, EngineError>>, EngineError> {
        let mut out = Vec::new();
        for i in 0..payments {
            out.push(match self.store.withdrawal_by_key(merchant, &format!("{key}:{i}")).await? {
                Some(w) => self.withdrawal_view(w),
                None => Err(EngineError::Conflict("this payment of a repeated request was not sent the first time".into())),
            });
        }
        Ok(out)
    }

    /// Several withdrawals of one currency, paid by one transaction. Each payment is
    /// checked on its own and its result given in input order; those that pass are
    /// queued together. Fees: the largest payment that goes through pays the full fee,
    /// every further one the fee with half its fixed part. Payment `i` is stored under
    /// the idempotency key `{key}:{i}`: a repeated request answers with what the first
    /// stored, and `Conflict` for payments it did not store.
    pub async fn request_withdrawals_bulk(
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
        let earlier = self.bulk_replay(merchant, key, payments.len()).await?;
        if earlier.iter().any(Result::is_ok) {
            return Ok(earlier);
        }
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
                };
                let id = self.store.insert_withdrawal(&new).await.map_err(|e| self.insert_error(e, &currency))?;
                let row = self.store.withdrawal(id).await?.ok_or(EngineError::LedgerStopped)?;
                match self.hold(&row, &currency).await {
                    Ok(tx) => Ok(WithdrawalRow { hold_tx_id: Some(tx), ..row }),
                    Err(e @ EngineError::Ledger(LedgerError::InsufficientFunds { .. })) => {
                        self.store.delete_requested_withdrawal(id).await?;
                        Err(e)
                    }
                    Err(e) => Err(e),
                }
            }
            .await;
            match outcome {
                Ok(row) => held.push((i, row)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // All held payments enter the queue at once, so one payout carries them.
        let queued: Vec<(i64, i64)> = held.iter().filter_map(|(_, w)| w.hold_tx_id.map(|tx| (w.id, tx))).collect();
        if let Err(e) = self.store.set_withdrawals_queued(&queued).await {
            tracing::warn!(error = %e, "held bulk withdrawals not queued yet; the broadcaster's recovery queues them");
        }
        for (i, row) in held {
            // As queued, whether or not the queueing above got through: it will be.
            let status = row.state().after(WithdrawalInput::Held).map_or(row.status, |next| next.status);
            results[i] = Some(self.withdrawal_view(WithdrawalRow { status, ..row }));
        }
        tracing::info!(merchant = merchant.0, currency = %currency.code, payments = results.len(),
            sent = results.iter().filter(|r| matches!(r, Some(Ok(_)))).count(), "bulk withdrawal requested");
        Ok(results.into_iter().map(|r| r.unwrap_or(Err(EngineError::LedgerStopped))).collect())
    }

    fn replay(&self, existing: WithdrawalRow, hash: &[u8]) -> Result<Withdrawal, EngineError> {
        if existing.request_hash != hash {
            return Err(EngineError::Ledger(LedgerError::IdempotencyConflict { key: existing.idempotency_key }));
        }
        self.withdrawal_view(existing)
    }

    /// Holds amount + fee for a `requested` withdrawal and queues it; refused for
    /// insufficient funds, the withdrawal is removed (nothing stays stored).
    async fn hold_withdrawal(&self, w: &WithdrawalRow, currency: &Currency) -> Result<(), EngineError> {
        match self.hold(w, currency).await {
            Ok(tx) => {
                self.store.set_withdrawal_queued(w.id, tx).await?;
                Ok(())
            }
            Err(e @ EngineError::Ledger(LedgerError::InsufficientFunds { .. })) => {
                self.store.delete_requested_withdrawal(w.id).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Posts the hold of amount + fee (idempotent by the withdrawal's id); returns the
    /// ledger transaction.
    async fn hold(&self, w: &WithdrawalRow, currency: &Currency) -> Result<i64, EngineError> {
        let code = currency.code.clone();
        let merchant = self.ledger.account(&AccountKey::Merchant { merchant: MerchantId(w.merchant_id), currency: code.clone() }).await?;
        let hot = self.ledger.account(&AccountKey::System { account: SystemAccount::HotWallet, currency: code.clone() }).await?;
        let mut legs = vec![Leg { from: merchant, to: hot, currency: code.clone(), units: w.amount_units }];
        if w.fee_units > 0 {
            let fees = self.ledger.account(&AccountKey::System { account: SystemAccount::FeesEarned, currency: code.clone() }).await?;
            legs.push(Leg { from: merchant, to: fees, currency: code, units: w.fee_units });
        }
        let memo = serde_json::json!({"type": "withdrawal", "withdrawal_id": w.id, "address": w.address}).to_string();
        Ok(self.ledger.submit(TxRequest { idempotency_key: format!("withdrawal:{}:hold", w.id), action: Action::Hold(legs), memo }).await?.tx_id.0)
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

/// Sends queued withdrawals of one chain and follows them to confirmation.
pub struct Broadcaster {
    engine: Engine,
    adapter: Arc<dyn ChainAdapter>,
    chain: String,
    /// The chain's assets, each with the currency it is booked as.
    assets: HashMap<String, (Asset, Currency)>,
    /// Low-priority withdrawals wait up to this long to share a transaction.
    pub batch_window: Duration,
    /// The lease this broadcaster runs under (checked again right before signing).
    lease: Option<(String, Duration)>,
}

/// Why a payout was not sent.
enum SendError {
    /// The node refused to build or sign it: nothing was recorded or sent.
    Refused(ChainError),
    Other(EngineError),
}

impl From<EngineError> for SendError {
    fn from(e: EngineError) -> Self {
        SendError::Other(e)
    }
}

impl From<kassa_store::StoreError> for SendError {
    fn from(e: kassa_store::StoreError) -> Self {
        SendError::Other(e.into())
    }
}

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    pub payouts_sent: u64,
    pub withdrawals_sent: u64,
    pub confirmed: u64,
    pub recovered: u64,
}

impl Broadcaster {
    pub fn new(engine: Engine, chain: &str, batch_window: Duration) -> Result<Self, EngineError> {
        let entry = engine.chains.get(chain).ok_or_else(|| EngineError::ChainNotConfigured(chain.to_string()))?;
        let assets = engine.chain_assets(chain)?;
        Ok(Self { adapter: entry.adapter.clone(), chain: chain.to_string(), assets, engine, batch_window, lease: None })
    }

    /// Ledger units of `currency` in its asset's smallest unit (the chain edge). A
    /// ledger finer than the asset is refused at start-up by configuration.
    fn chain_units(&self, currency: &Currency, units: i128) -> Result<i128, EngineError> {
        let (asset, _) = self
            .assets
            .get(currency.code.as_str())
            .ok_or_else(|| EngineError::invalid("currency", format!("{} is not carried by chain {}", currency.code, self.chain)))?;
        let extra = asset.decimals.checked_sub(currency.precision).ok_or_else(|| {
            EngineError::invalid("currency", format!("{} has more ledger decimals ({}) than its asset ({})", currency.code, currency.precision, asset.decimals))
        })?;
        units.checked_mul(10i128.pow(u32::from(extra))).ok_or_else(|| EngineError::invalid("amount", "too large for the chain"))
    }

    fn currency(&self, code: &str) -> Result<&Currency, EngineError> {
        self.assets.get(code).map(|(_, c)| c).ok_or_else(|| EngineError::invalid("currency", format!("{code} is not carried by chain {}", self.chain)))
    }

    pub async fn run(mut self, poll: Duration, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(chain = %self.chain, "broadcaster started");
        let ttl = (poll * 3).max(Duration::from_secs(2));
        let lease = format!("{}#broadcaster", self.chain);
        self.lease = Some((lease.clone(), ttl));
        loop {
            let leader = match self.engine.lease(&lease, ttl).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(chain = %self.chain, error = %e, "cannot take the broadcaster lease");
                    false
                }
            };
            let result = if leader { self.cycle().await } else { Ok(BroadcastReport::default()) };
            match result {
                Ok(r) if r != BroadcastReport::default() => {
                    tracing::info!(chain = %self.chain, payouts = r.payouts_sent, withdrawals = r.withdrawals_sent,
                        confirmed = r.confirmed, recovered = r.recovered, "broadcaster cycle");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(chain = %self.chain, error = %e, "broadcaster cycle failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                tracing::info!(chain = %self.chain, "broadcaster stopped");
                return;
            }
        }
    }

    /// One pass: finish what a crash interrupted, send what is due, follow confirmations.
    pub async fn cycle(&self) -> Result<BroadcastReport, EngineError> {
        let mut report = BroadcastReport::default();
        let store = &self.engine.store;
        if store.chain_halted(&self.chain).await?.is_some() {
            return Ok(report);
        }
        // The node may have restarted without Kassa's wallet loaded.
        self.adapter.prepare().await?;
        // Withdrawals whose hold a crash interrupted (old enough that no request is
        // still working on them).
        let now_ms = self.engine.now_ms();
        for w in store.stale_requested_withdrawals(&self.chain, now_ms - 60_000).await? {
            let _ = self.engine.hold_withdrawal(&w, self.currency(&w.currency)?).await;
            report.recovered += 1;
        }
        // Failed withdrawals whose funds a crash left held.
        for (id, hold) in store.failed_withdrawals_with_pending_hold(&self.chain).await? {
            self.void_hold(id, hold, "failed").await?;
            report.recovered += 1;
        }
        // Payouts never signed: nothing left Kassa; their withdrawals return to the queue.
        for p in store.payouts_in(&self.chain, &[PayoutStatus::Preparing]).await? {
            store.abandon_payout(p.id, "interrupted before signing").await?;
            report.recovered += 1;
        }
        // Signed payouts: broadcast the stored bytes (the node may already have them).
        // Never re-signed, never failed here: the bytes may already be on the network.
        for p in store.payouts_in(&self.chain, &[PayoutStatus::Signed]).await? {
            match self.broadcast_signed(&p).await {
                Ok(()) => report.recovered += 1,
                Err(e) => tracing::error!(chain = %self.chain, payout = p.id, txid = ?p.txid, error = %e,
                    "ALERT: a signed payout cannot be broadcast; retrying (an operator may need to look)"),
            }
        }
        self.send_due(&mut report).await?;
        self.follow_broadcast(&mut report).await?;
        Ok(report)
    }

    async fn send_due(&self, report: &mut BroadcastReport) -> Result<(), EngineError> {
        let store = &self.engine.store;
        let queued: Vec<WithdrawalRow> = store.withdrawals_in(&self.chain, &[WithdrawalStatus::Queued], 10_000).await?.into_iter().filter(|w| w.payout_id.is_none()).collect();
        // One payout pays one asset.
        let mut by_currency: Vec<(String, Vec<WithdrawalRow>)> = Vec::new();
        for w in queued {
            match by_currency.iter_mut().find(|(c, _)| *c == w.currency) {
                Some((_, list)) => list.push(w),
                None => by_currency.push((w.currency.clone(), vec![w])),
            }
        }
        for (code, queued) in by_currency {
            let currency = self.currency(&code)?.clone();
            self.send_due_in(report, &currency, queued).await?;
        }
        Ok(())
    }

    async fn send_due_in(&self, report: &mut BroadcastReport, currency: &Currency, queued: Vec<WithdrawalRow>) -> Result<(), EngineError> {
        let now_ms = self.engine.now_ms();
        let urgent = queued.iter().any(|w| w.priority != "low");
        let oldest_low_due = queued.iter().any(|w| w.priority == "low" && now_ms - w.created_at_ms >= self.batch_window.as_millis() as i64);
        if !urgent && !oldest_low_due && queued.len() < MAX_BATCH {
            return Ok(()); // low priority waits for its batch window
        }
        // One transaction: distinct addresses only (a repeated address waits for the next).
        let mut seen = HashSet::new();
        let batch: Vec<&WithdrawalRow> = queued.iter().filter(|w| seen.insert(w.address.clone())).take(MAX_BATCH).collect();
        let priority = batch.iter().map(|w| Priority::parse(&w.priority).unwrap_or(Priority::Medium)).max_by_key(|p| *p as u8).unwrap_or(Priority::Medium);
        match self.send(currency, &batch, priority).await {
            Ok(()) => {}
            // A batch the node refuses for good (nothing was recorded or sent): send each
            // alone so one bad withdrawal cannot block the others; those refused alone
            // fail and their holds are voided.
            Err(SendError::Refused(e)) if e.is_permanent_refusal() => {
                tracing::warn!(chain = %self.chain, error = %e, withdrawals = batch.len(), "payout refused; trying each withdrawal alone");
                for w in &batch {
                    match self.send(currency, &[*w], priority).await {
                        Ok(()) => {
                            report.payouts_sent += 1;
                            report.withdrawals_sent += 1;
                        }
                        Err(SendError::Refused(e)) if e.is_permanent_refusal() => self.fail(w, &e.to_string()).await?,
                        Err(SendError::Refused(e)) => return Err(EngineError::Chain(e)),
                        Err(SendError::Other(e)) => return Err(e),
                    }
                }
                return Ok(());
            }
            Err(SendError::Refused(e)) => return Err(EngineError::Chain(e)),
            Err(SendError::Other(e)) => return Err(e),
        }
        report.payouts_sent += 1;
        report.withdrawals_sent += batch.len() as u64;
        Ok(())
    }

    /// Signs, records and broadcasts one payout for `batch`.
    async fn send(&self, currency: &Currency, batch: &[&WithdrawalRow], priority: Priority) -> Result<(), SendError> {
        let store = &self.engine.store;
        let mut payments = Vec::with_capacity(batch.len());
        for w in batch {
            let amount = self.chain_units(currency, w.amount_units)?;
            payments.push(Payment { address: w.address.clone(), tag: None, asset: currency.code.to_string(), amount });
        }
        let ids: Vec<i64> = batch.iter().map(|w| w.id).collect();
        let payout = store.create_payout(&self.chain, currency.code.as_str(), &ids).await?;
        if let Some((lease, ttl)) = &self.lease {
            // Another instance may have taken over while this one was slow.
            if !self.engine.lease(lease, *ttl).await? {
                store.abandon_payout(payout, "broadcaster lease lost").await?;
                return Err(SendError::Other(EngineError::Conflict("broadcaster lease lost".into())));
            }
        }
        let signed = match self.adapter.sign_payments(&payments, priority).await {
            Ok(s) => s,
            Err(e) => {
                // Nothing was sent: back to the queue.
                store.abandon_payout(payout, &e.to_string()).await?;
                if matches!(e, ChainError::InsufficientFunds(_)) {
                    tracing::error!(chain = %self.chain, error = %e, "ALERT: the hot wallet cannot pay queued withdrawals");
                }
                return Err(SendError::Refused(e));
            }
        };
        crash_point("after_sign");
        let vouts: Vec<(i64, u32)> = ids.iter().copied().zip(signed.indexes.iter().copied()).collect();
        store.payout_signed(payout, &signed.txid, &signed.raw_hex, signed.fee, &vouts).await?;
        crash_point("after_record_signed");
        let row = store.payouts_in(&self.chain, &[PayoutStatus::Signed]).await?.into_iter().find(|p| p.id == payout).ok_or(EngineError::LedgerStopped)?;
        Ok(self.broadcast_signed(&row).await?)
    }

    /// A withdrawal that cannot be paid: failed first (only while no payout holds it),
    /// then its hold voided so the funds return. A crash in between is finished by the
    /// next cycle (failed withdrawals with a pending hold).
    async fn fail(&self, w: &WithdrawalRow, reason: &str) -> Result<(), EngineError> {
        if !self.engine.store.fail_queued_withdrawal(w.id, reason).await? {
            return Ok(()); // claimed by a payout meanwhile: not ours to fail
        }
        if let Some(hold) = w.hold_tx_id {
            self.void_hold(w.id, hold, reason).await?;
        }
        tracing::warn!(chain = %self.chain, withdrawal = w.id, reason, "withdrawal failed; its funds are available again");
        Ok(())
    }

    async fn void_hold(&self, withdrawal: i64, hold: i64, reason: &str) -> Result<(), EngineError> {
        let memo = serde_json::json!({"type": "withdrawal_failed", "withdrawal_id": withdrawal, "reason": reason}).to_string();
        self.engine
            .ledger
            .submit(TxRequest { idempotency_key: format!("withdrawal:{withdrawal}:void"), action: Action::Void { hold: TxId(hold) }, memo })
            .await?;
        Ok(())
    }

    async fn broadcast_signed(&self, p: &PayoutRow) -> Result<(), EngineError> {
        let (Some(txid), Some(raw)) = (&p.txid, &p.raw_hex) else {
            return Err(EngineError::Store(StoreError::Corrupt(format!("signed payout {} has no transaction", p.id))));
        };
        match self.adapter.payment_status(txid).await {
            Ok(_) => {} // the node has it already: broadcast before a crash
            Err(e) if e.is_not_found() => {
                self.adapter.broadcast(raw).await?;
                crash_point("after_broadcast");
            }
            Err(e) => return Err(e.into()),
        }
        self.engine.store.payout_broadcast(p.id, txid).await?;
        tracing::info!(chain = %self.chain, payout = p.id, txid, "payout broadcast");
        self.book_payout(p.id).await
    }

    /// Posts the holds of a broadcast payout and books its network fee (idempotent).
    async fn book_payout(&self, payout: i64) -> Result<(), EngineError> {
        let store = &self.engine.store;
        for w in store.withdrawals_of_payout(payout).await? {
            if w.hold_posted {
                continue;
            }
            let hold = w.hold_tx_id.ok_or_else(|| EngineError::Store(StoreError::Corrupt(format!("withdrawal {} has no hold", w.id))))?;
            let memo = serde_json::json!({"type": "withdrawal_sent", "withdrawal_id": w.id, "txid": w.txid}).to_string();
            self.engine
                .ledger
                .submit(TxRequest { idempotency_key: format!("withdrawal:{}:post", w.id), action: Action::Post { hold: TxId(hold) }, memo })
                .await?;
            store.set_hold_posted(w.id).await?;
        }
        let p = store.payouts_in(&self.chain, &[PayoutStatus::Broadcast, PayoutStatus::Confirmed]).await?.into_iter().find(|p| p.id == payout);
        if let Some(p) = p.filter(|p| !p.fee_booked) {
            let fee = p.network_fee_units.unwrap_or(0);
            if fee > 0 {
                self.book_network_fee(&format!("payout:{}:network_fee", p.id), fee, p.txid.as_deref().unwrap_or_default()).await?;
            }
            store.set_payout_fee_booked(p.id).await?;
        }
        Ok(())
    }

    /// Books a network fee (in the chain's fee asset) as an expense of that asset's
    /// currency: network fees → hot wallet.
    async fn book_network_fee(&self, key: &str, fee: i128, txid: &str) -> Result<(), EngineError> {
        let fee_asset = self.adapter.fee_asset().code.clone();
        let (asset, currency) = self.assets.get(&fee_asset).ok_or_else(|| EngineError::ChainNotConfigured(format!("{}: fee asset {fee_asset}", self.chain)))?;
        let code = currency.code.clone();
        // Rounded up to the ledger precision: the books never show less spent than was.
        let factor = 10i128.pow(u32::from(asset.decimals.saturating_sub(currency.precision)));
        let units = (fee + factor - 1) / factor;
        let network = self.engine.ledger.account(&AccountKey::System { account: SystemAccount::NetworkFees, currency: code.clone() }).await?;
        let hot = self.engine.ledger.account(&AccountKey::System { account: SystemAccount::HotWallet, currency: code.clone() }).await?;
        let memo = serde_json::json!({"type": "network_fee", "txid": txid}).to_string();
        self.engine
            .ledger
            .submit(TxRequest {
                idempotency_key: key.to_string(),
                action: Action::Transfer(vec![Leg { from: network, to: hot, currency: code, units }]),
                memo,
            })
            .await?;
        Ok(())
    }

    async fn follow_broadcast(&self, report: &mut BroadcastReport) -> Result<(), EngineError> {
        let store = &self.engine.store;
        for p in store.payouts_in(&self.chain, &[PayoutStatus::Broadcast]).await? {
            self.book_payout(p.id).await?; // in case a crash came between broadcast and booking
            let Some(txid) = &p.txid else { continue };
            let status = self.adapter.payment_status(txid).await?;
            if status.confirmations < 0 {
                // Conflicted: adopt a replacement that pays the same outputs (RBF, C2).
                let currency = self.currency(&p.currency)?.clone();
                let mut withdrawals = Vec::new();
                for w in store.withdrawals_of_payout(p.id).await? {
                    let amount = self.chain_units(&currency, w.amount_units)?;
                    withdrawals.push((w, amount));
                }
                let mut adopted = false;
                for candidate in &status.conflicts {
                    let Ok(transfers) = self.adapter.transfers(candidate).await else {
                        continue;
                    };
                    let pays_all =
                        withdrawals.iter().all(|(w, amount)| transfers.iter().any(|t| t.address == w.address && t.asset == w.currency && t.amount == *amount));
                    if pays_all {
                        adopted = true;
                        tracing::warn!(chain = %self.chain, payout = p.id, old = %txid, new = %candidate, "payout replaced; following the replacement");
                        store.payout_replaced(p.id, candidate).await?;
                        // A fee bump pays more network fee: book the difference once.
                        let new_fee = self.adapter.payment_status(candidate).await?.fee.unwrap_or(0);
                        let extra = new_fee - p.network_fee_units.unwrap_or(0);
                        if extra > 0 {
                            self.book_network_fee(&format!("payout:{}:network_fee:{candidate}", p.id), extra, candidate).await?;
                        }
                        break;
                    }
                }
                if !adopted {
                    tracing::error!(chain = %self.chain, payout = p.id, txid = %txid, conflicts = ?status.conflicts,
                        "ALERT: a broadcast payout was double-spent by a transaction that does not pay its withdrawals; an operator must settle it");
                }
                continue;
            }
            let threshold = i64::from(self.currency(&p.currency)?.confirmations.max(1));
            let confirmed = status.confirmations >= threshold;
            store.payout_confirmations(p.id, status.confirmations, confirmed).await?;
            if confirmed {
                report.confirmed += 1;
            }
        }
        Ok(())
    }
}

/// Starts a broadcaster per configured chain.
pub fn spawn_broadcasters(
    engine: &Engine,
    poll: Duration,
    batch_window: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, EngineError> {
    let mut handles = Vec::new();
    for name in engine.chains.names() {
        let b = Broadcaster::new(engine.clone(), name, batch_window)?;
        handles.push(tokio::spawn(b.run(poll, shutdown.clone())));
    }
    Ok(handles)
}
