//! The broadcaster: sends the queued withdrawals of one chain and follows them to
//! confirmation.
//!
//! Exactly once across crashes: the payout transaction is signed and stored (txid and
//! raw bytes) before it is broadcast. After a restart the broadcaster asks the node
//! about a stored transaction and re-broadcasts the same bytes, never a new payment;
//! a payout that was never signed goes back to the queue. A transaction replaced on
//! the network (RBF) is matched by what it pays, not by its txid.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kassa_chain::{Asset, ChainAdapter, ChainError, Payment, Priority};
use kassa_core::ledger::{AccountKey, Action, Leg, SystemAccount, TxId, TxRequest};
use kassa_core::withdrawal::PayoutStatus;
use kassa_core::Currency;
use kassa_store::{PayoutRow, StoreError, WithdrawalRow};
use tokio::sync::watch;

use crate::withdrawals::crash_point;
use crate::worker::{self, Pace, Worker};
use crate::{Engine, EngineError};

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
    /// Coins the wallet may still hold reserved for a payout that was never stored
    /// or sent (at start, after a crash or a refusal): released in the next cycle.
    release_reserved: std::sync::atomic::AtomicBool,
}

/// Most payouts one cycle sends per currency (each may spend the last one's change).
const MAX_PAYOUTS_PER_CYCLE: usize = 8;
/// Most withdrawals one payout pays (several may share an output).
const MAX_WITHDRAWALS_PER_PAYOUT: usize = 2000;

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
    /// Payouts the hot wallet could not fund, by currency, with what blocked them.
    pub unfunded: Vec<(String, Shortfall)>,
}

/// What keeps the hot wallet from funding a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// It holds less than the payout needs: it must be topped up.
    TooLittle,
    /// Enough, but part is coins reserved for a payout never sent (released).
    Reserved,
    /// Enough, but part is unconfirmed change of earlier payouts.
    Unconfirmed,
    /// Enough by the node's figures; the node still refuses (its message is logged).
    Refused,
    /// The holdings could not be read.
    Unknown,
}

impl Broadcaster {
    pub fn new(engine: Engine, chain: &str, batch_window: Duration) -> Result<Self, EngineError> {
        let entry = engine.chains.get(chain).ok_or_else(|| EngineError::ChainNotConfigured(chain.to_string()))?;
        let assets = engine.chain_assets(chain)?;
        Ok(Self {
            adapter: entry.adapter.clone(),
            chain: chain.to_string(),
            assets,
            engine,
            batch_window,
            lease: None,
            release_reserved: std::sync::atomic::AtomicBool::new(true),
        })
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

    /// Runs cycles every `poll` under the chain's broadcaster lease (one instance
    /// sends; the lease is checked again right before signing) until shutdown.
    pub async fn run(mut self, poll: Duration, shutdown: watch::Receiver<bool>) {
        let ttl = (poll * 3).max(Duration::from_secs(2));
        let lease = format!("{}#broadcaster", self.chain);
        self.lease = Some((lease.clone(), ttl));
        let pace = Pace { name: lease.clone(), interval: poll, lease: Some((lease, ttl)), wake: None };
        worker::run(self.engine.clone(), pace, self, shutdown).await
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
            self.release_reserved.store(true, std::sync::atomic::Ordering::SeqCst);
            report.recovered += 1;
        }
        // Coins the wallet reserved for a payout that was never stored (a crash right
        // after signing) or refused: free them, keeping those of stored transactions.
        if self.release_reserved.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let keep: Vec<String> = store
                .payouts_in(&self.chain, &[PayoutStatus::Signed, PayoutStatus::Broadcast])
                .await?
                .into_iter()
                .filter_map(|p| p.raw_hex)
                .collect();
            match self.adapter.release_reserved(&keep).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(chain = %self.chain, coins = n, "released coins reserved for payouts that were never sent");
                    report.recovered += 1;
                }
                Err(e) => {
                    self.release_reserved.store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::warn!(chain = %self.chain, error = %e, "could not release reserved coins; retrying next cycle");
                }
            }
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
        let now_ms = self.engine.now_ms();
        // Scheduled withdrawals (a payout plan's) wait for their time.
        let queued: Vec<WithdrawalRow> = store.due_withdrawals(&self.chain, now_ms, 10_000).await?;
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

    async fn send_due_in(&self, report: &mut BroadcastReport, currency: &Currency, mut queued: Vec<WithdrawalRow>) -> Result<(), EngineError> {
        let now_ms = self.engine.now_ms();
        let urgent = queued.iter().any(|w| w.priority != "low");
        let oldest_low_due = queued.iter().any(|w| w.priority == "low" && now_ms - w.created_at_ms >= self.batch_window.as_millis() as i64);
        let outputs = self.adapter.max_payments_per_tx().max(1);
        if !urgent && !oldest_low_due && distinct_destinations(&queued) < outputs {
            return Ok(()); // low priority waits for its batch window
        }
        queued.sort_by_key(|w| w.id);
        for _ in 0..MAX_PAYOUTS_PER_CYCLE {
            if queued.is_empty() {
                break;
            }
            let (batch, rest) = next_batch(queued, outputs);
            queued = rest;
            if !self.send_batch(report, currency, &batch).await? {
                break; // the wallet cannot fund it now: the rest waits too
            }
        }
        Ok(())
    }

    /// Sends one payout; `false` when the wallet cannot fund it now (alerted).
    async fn send_batch(&self, report: &mut BroadcastReport, currency: &Currency, batch: &[WithdrawalRow]) -> Result<bool, EngineError> {
        let batch: Vec<&WithdrawalRow> = batch.iter().collect();
        let priority = batch.iter().map(|w| Priority::parse(&w.priority).unwrap_or(Priority::Medium)).max_by_key(|p| *p as u8).unwrap_or(Priority::Medium);
        match self.send(currency, &batch, priority).await {
            Ok(()) => {}
            Err(SendError::Refused(ChainError::InsufficientFunds(why))) => {
                report.unfunded.push((currency.code.to_string(), self.alert_unfunded(currency, &batch, &why).await));
                return Ok(false);
            }
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
                        Err(SendError::Refused(ChainError::InsufficientFunds(why))) => {
                            report.unfunded.push((currency.code.to_string(), self.alert_unfunded(currency, &[*w], &why).await));
                            return Ok(false);
                        }
                        Err(SendError::Refused(e)) if e.is_permanent_refusal() => self.fail(w, &e.to_string()).await?,
                        Err(SendError::Refused(e)) => return Err(EngineError::Chain(e)),
                        Err(SendError::Other(e)) => return Err(e),
                    }
                }
                return Ok(true);
            }
            Err(SendError::Refused(e)) => return Err(EngineError::Chain(e)),
            Err(SendError::Other(e)) => return Err(e),
        }
        report.payouts_sent += 1;
        report.withdrawals_sent += batch.len() as u64;
        Ok(true)
    }

    /// Says what keeps the hot wallet from funding a payout: too little money, or
    /// money it cannot spend yet (unconfirmed change, coins reserved by a payout that
    /// was never sent).
    async fn alert_unfunded(&self, currency: &Currency, batch: &[&WithdrawalRow], node_says: &str) -> Shortfall {
        let code = currency.code.as_str();
        let needed: i128 = batch.iter().map(|w| w.amount_units).sum();
        let show = |chain_units: i128| self.chain_amount(currency, chain_units);
        let needed_text = currency.amount(needed).map(|a| a.to_string()).unwrap_or_else(|_| needed.to_string());
        let funds = match self.adapter.wallet_funds(code).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(chain = %self.chain, currency = code, withdrawals = batch.len(), needed = %needed_text, node = node_says, error = %e,
                    "ALERT: the hot wallet cannot fund queued withdrawals, and its holdings cannot be read");
                return Shortfall::Unknown;
            }
        };
        let needed_chain = self.chain_units(currency, needed).unwrap_or(i128::MAX);
        let (confirmed, unconfirmed, reserved) = (show(funds.confirmed), show(funds.unconfirmed), show(funds.reserved));
        if funds.reserved > 0 {
            self.release_reserved.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let total = funds.confirmed + funds.unconfirmed + funds.reserved;
        if total < needed_chain {
            tracing::error!(chain = %self.chain, currency = code, withdrawals = batch.len(), needed = %needed_text,
                confirmed = %confirmed, unconfirmed = %unconfirmed, reserved = %reserved, node = node_says,
                "ALERT: the hot wallet holds less than the queued withdrawals need (plus the network fee): top it up; they are sent once it can pay");
            return Shortfall::TooLittle;
        }
        let (shortfall, what) = if funds.reserved > 0 {
            (Shortfall::Reserved, "coins reserved for a payout that was never sent (released now)")
        } else if funds.unconfirmed > 0 {
            (Shortfall::Unconfirmed, "unconfirmed change of earlier payouts (spendable once confirmed; the node limits chains of unconfirmed transactions)")
        } else {
            (Shortfall::Refused, "coins the node will not spend now")
        };
        tracing::warn!(chain = %self.chain, currency = code, withdrawals = batch.len(), needed = %needed_text,
            confirmed = %confirmed, unconfirmed = %unconfirmed, reserved = %reserved, node = node_says,
            "the hot wallet holds enough but part of it is {what}; the withdrawals wait for it");
        shortfall
    }

    /// A chain amount in the currency's decimals, for logs.
    fn chain_amount(&self, currency: &Currency, units: i128) -> String {
        let decimals = self.assets.get(currency.code.as_str()).map(|(a, _)| a.decimals).unwrap_or(currency.precision);
        kassa_core::Amount::from_units(units, decimals).map(|a| a.to_string()).unwrap_or_else(|_| units.to_string())
    }

    /// Signs, records and broadcasts one payout for `batch`.
    async fn send(&self, currency: &Currency, batch: &[&WithdrawalRow], priority: Priority) -> Result<(), SendError> {
        let store = &self.engine.store;
        // One output per destination: withdrawals to the same address share it.
        let mut payments: Vec<Payment> = Vec::new();
        let mut output_of = Vec::with_capacity(batch.len());
        for w in batch {
            let amount = self.chain_units(currency, w.amount_units)?;
            match payments.iter().position(|p| p.address == w.address) {
                Some(i) => {
                    payments[i].amount += amount;
                    output_of.push(i);
                }
                None => {
                    output_of.push(payments.len());
                    payments.push(Payment { address: w.address.clone(), tag: None, asset: currency.code.to_string(), amount });
                }
            }
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
                // Funding may have reserved coins before the refusal.
                self.release_reserved.store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(SendError::Refused(e));
            }
        };
        crash_point("after_sign");
        if signed.indexes.len() != payments.len() {
            return Err(SendError::Other(EngineError::Chain(ChainError::Transient(format!(
                "the signed transaction names {} outputs for {} payments",
                signed.indexes.len(),
                payments.len()
            )))));
        }
        let vouts: Vec<(i64, u32)> = ids.iter().copied().zip(output_of.iter().map(|i| signed.indexes[*i])).collect();
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
        self.engine.void_withdrawal_hold(withdrawal, hold, reason).await
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
                // What the payout pays each destination (withdrawals to one address share an output).
                let mut owed: Vec<(String, String, i128)> = Vec::new();
                for w in store.withdrawals_of_payout(p.id).await? {
                    let amount = self.chain_units(&currency, w.amount_units)?;
                    match owed.iter_mut().find(|(a, c, _)| *a == w.address && *c == w.currency) {
                        Some(entry) => entry.2 += amount,
                        None => owed.push((w.address.clone(), w.currency.clone(), amount)),
                    }
                }
                let mut adopted = false;
                for candidate in &status.conflicts {
                    let Ok(transfers) = self.adapter.transfers(candidate).await else {
                        continue;
                    };
                    let pays_all = owed.iter().all(|(address, asset, amount)| {
                        transfers.iter().filter(|t| t.address == *address && t.asset == *asset).map(|t| t.amount).sum::<i128>() == *amount
                    });
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

impl Worker for Broadcaster {
    async fn cycle(&mut self) {
        match Broadcaster::cycle(self).await {
            Ok(r) if r != BroadcastReport::default() => {
                tracing::info!(chain = %self.chain, payouts = r.payouts_sent, withdrawals = r.withdrawals_sent,
                    confirmed = r.confirmed, recovered = r.recovered, unfunded = r.unfunded.len(), "broadcaster cycle");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(chain = %self.chain, error = %e, "broadcaster cycle failed; retrying"),
        }
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

/// How many destinations (outputs) the withdrawals pay.
fn distinct_destinations(queued: &[WithdrawalRow]) -> usize {
    queued.iter().map(|w| w.address.as_str()).collect::<HashSet<_>>().len()
}

/// The next payout's withdrawals, oldest first: every queued withdrawal whose
/// destination is already in it or fits in `outputs` destinations, up to
/// [`MAX_WITHDRAWALS_PER_PAYOUT`]; and the rest. Withdrawals that share a batch key
/// (a payout plan's) go together or wait together for the next payout.
fn next_batch(queued: Vec<WithdrawalRow>, outputs: usize) -> (Vec<WithdrawalRow>, Vec<WithdrawalRow>) {
    // Groups in the order of their oldest withdrawal: a batch key's, or one alone.
    let mut groups: Vec<Vec<WithdrawalRow>> = Vec::new();
    let mut group_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for w in queued {
        match w.batch_key.clone() {
            Some(key) => match group_of.get(&key) {
                Some(&i) => groups[i].push(w),
                None => {
                    group_of.insert(key, groups.len());
                    groups.push(vec![w]);
                }
            },
            None => groups.push(vec![w]),
        }
    }
    let mut destinations: HashSet<String> = HashSet::new();
    let (mut batch, mut rest) = (Vec::new(), Vec::new());
    for group in groups {
        let new: HashSet<&str> = group.iter().map(|w| w.address.as_str()).filter(|a| !destinations.contains(*a)).collect();
        // An empty batch takes any group (a plan never has more payouts than a transaction has outputs).
        let fits = batch.is_empty() || (batch.len() + group.len() <= MAX_WITHDRAWALS_PER_PAYOUT && destinations.len() + new.len() <= outputs);
        if fits {
            destinations.extend(group.iter().map(|w| w.address.clone()));
            batch.extend(group);
        } else {
            rest.extend(group);
        }
    }
    (batch, rest)
}
