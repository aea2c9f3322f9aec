//! The chain watcher: gap-free scanning from a persisted checkpoint (height + hash),
//! reorg detection by parent hash, mempool visibility, crediting at the currency's
//! confirmation threshold, reversal of credits whose block was reorged out, and a halt
//! when a reorg is deeper than allowed.
//!
//! Crash safety: a block and its deposits are recorded in one database transaction;
//! credits and reversals are ledger transactions with deterministic idempotency keys
//! (`deposit:<id>:credit:<k>`), recorded on the deposit afterwards. Re-running any step
//! after a crash replays instead of booking twice. Node hooks only wake the loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kassa_chain::{Asset, ChainAdapter, Checkpoint, IncomingTransfer};
use kassa_core::ledger::{AccountKey, Action, Leg, LedgerError, MerchantId, SystemAccount, TxRequest};
use kassa_core::{Amount, Currency, CurrencyCode};
use kassa_store::{CreditConversion, DepositConversion, DepositRow, FoundDeposit};
use tokio::sync::{watch, Notify};

use crate::chains::ChainSettings;
use crate::{Engine, EngineError};

/// Most open deposits handled per cycle.
const MAX_OPEN_DEPOSITS: u32 = 10_000;
/// Addresses loaded per refresh query.
const ADDRESS_PAGE: u32 = 50_000;
/// Ids below the highest seen that each refresh reads again.
const ADDRESS_LOOKBACK: i64 = 1_000;

#[derive(Clone, Copy, Debug)]
struct Watched {
    address_id: i64,
    merchant_id: i64,
}

/// What one cycle did (tests and logs read it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub scanned_to: u64,
    pub blocks: u64,
    pub reorg_depth: Option<u64>,
    pub credited: u64,
    pub reversed: u64,
    pub halted: bool,
    /// The node's tip has not moved for longer than the chain's stall time, or the
    /// scan has not caught up with it since.
    pub lagging: bool,
}

pub struct Watcher {
    engine: Engine,
    adapter: Arc<dyn ChainAdapter>,
    settings: ChainSettings,
    chain: String,
    /// The chain's assets and the currency each is booked as.
    assets: HashMap<String, (Asset, Currency)>,
    addresses: HashMap<Box<str>, Watched>,
    last_address_id: i64,
    mempool_known: HashSet<String>,
    prepared: bool,
    /// The node's tip as last seen, and since when (engine clock).
    tip_since: Option<(String, i64)>,
    /// Whether the store marks this chain lagging (read once, then kept in step).
    marked_lagging: Option<bool>,
}

impl Watcher {
    /// A watcher for `chain`, crediting the currencies of its assets.
    pub fn new(engine: Engine, chain: &str) -> Result<Self, EngineError> {
        let entry = engine.chains.get(chain).ok_or_else(|| EngineError::ChainNotConfigured(chain.to_string()))?;
        let assets = engine.chain_assets(chain)?;
        Ok(Self {
            adapter: entry.adapter.clone(),
            settings: entry.settings.clone(),
            chain: chain.to_string(),
            assets,
            engine,
            addresses: HashMap::new(),
            last_address_id: 0,
            mempool_known: HashSet::new(),
            prepared: false,
            tip_since: None,
            marked_lagging: None,
        })
    }

    /// Number of addresses being watched.
    pub fn watched(&self) -> usize {
        self.addresses.len()
    }

    /// Polls until `shutdown` turns true; `wake` (node hooks) starts a cycle at once.
    /// Scans until `shutdown` turns true: one instance at a time (the chain's lease),
    /// every poll interval or when a node hook wakes it.
    pub async fn run(self, wake: Arc<Notify>, shutdown: watch::Receiver<bool>) {
        let pace = crate::worker::Pace {
            name: format!("watcher {}", self.chain),
            interval: self.settings.poll_interval,
            lease: Some((self.chain.clone(), (self.settings.poll_interval * 3).max(Duration::from_secs(2)))),
            wake: Some(wake),
        };
        crate::worker::run(self.engine.clone(), pace, self, shutdown).await
    }

    /// Loads addresses created since the last refresh; returns how many are new.
    async fn refresh_addresses(&mut self) -> Result<usize, EngineError> {
        // Ids can commit out of order on PostgreSQL (a lower id committing after a
        // higher one was read), so each refresh looks back over a window of ids.
        let mut after = self.last_address_id.saturating_sub(ADDRESS_LOOKBACK);
        let mut added = 0;
        loop {
            let rows = self.engine.store.deposit_addresses_after(&self.chain, after, ADDRESS_PAGE).await?;
            let n = rows.len();
            for r in rows {
                after = after.max(r.id);
                self.last_address_id = self.last_address_id.max(r.id);
                if self.addresses.insert(r.address.into_boxed_str(), Watched { address_id: r.id, merchant_id: r.merchant_id }).is_none() {
                    added += 1;
                }
            }
            if n < ADDRESS_PAGE as usize {
                return Ok(added);
            }
        }
    }

    /// The transfers that pay a watched address, in ledger units.
    fn found_in<'a>(&self, transfers: impl IntoIterator<Item = &'a IncomingTransfer>) -> Vec<FoundDeposit> {
        transfers
            .into_iter()
            .filter_map(|t| {
                let w = self.addresses.get(t.address.as_str())?;
                let (asset, currency) = self.assets.get(&t.asset)?;
                let chain_amount = Amount::from_units(t.amount, asset.decimals).ok()?;
                // Deposits round down to the ledger precision; the remainder is dust.
                let (units, dust) = chain_amount.rescale_down(currency.precision).ok()?;
                Some(FoundDeposit {
                    currency: currency.code.to_string(),
                    txid: t.txid.clone(),
                    vout: t.index,
                    address_id: w.address_id,
                    merchant_id: w.merchant_id,
                    amount_units: units.units(),
                    dust_units: dust,
                })
            })
            .collect()
    }

    /// Since when the node's tip has been `hash` (engine clock): from this process's
    /// last look, or from the lag mark a previous process left at that same tip.
    async fn tip_since(&mut self, hash: &str) -> Result<i64, EngineError> {
        let now = self.engine.now_ms();
        match &self.tip_since {
            Some((h, since)) if h == hash => return Ok(*since),
            Some(_) => {}
            None => {
                let marked = self.engine.store.chain_lagging(&self.chain).await?;
                self.marked_lagging = Some(marked.is_some());
                if let Some((since, h)) = marked {
                    if h == hash {
                        self.tip_since = Some((h, since));
                        return Ok(since);
                    }
                }
            }
        }
        self.tip_since = Some((hash.to_string(), now));
        Ok(now)
    }

    /// Marks the chain lagging once its tip has stood still past the stall time, and
    /// clears the mark once the tip moves again and the scan has caught up.
    async fn judge_lag(&mut self, tip: &kassa_chain::BlockRef, since_ms: i64, scanned: u64) -> Result<bool, EngineError> {
        let store = &self.engine.store;
        let age_ms = self.engine.now_ms().saturating_sub(since_ms);
        metrics::gauge!("kassa_chain_tip_age_seconds", "chain" => self.chain.clone()).set(age_ms as f64 / 1000.0);
        let stalled = self.settings.stall_after.is_some_and(|limit| age_ms >= limit.as_millis() as i64);
        let marked = self.marked_lagging.unwrap_or(false);
        let lagging = if stalled {
            if !marked {
                store.set_chain_lagging(&self.chain, since_ms, &tip.hash).await?;
                tracing::error!(chain = %self.chain, height = tip.height, tip = %tip.hash, stalled_for_secs = age_ms / 1000,
                    "ALERT: the node's tip has not moved although it answers as synced; invoices on this chain do not expire until it catches up");
            }
            true
        } else if marked && scanned >= tip.height {
            store.clear_chain_lagging(&self.chain).await?;
            tracing::info!(chain = %self.chain, height = tip.height, "the chain caught up: its tip moves again and every block is scanned");
            false
        } else {
            marked
        };
        self.marked_lagging = Some(lagging);
        metrics::gauge!("kassa_chain_lagging", "chain" => self.chain.clone()).set(if lagging { 1.0 } else { 0.0 });
        Ok(lagging)
    }

    /// One pass: addresses, reorg check, new blocks, mempool, credits and reversals.
    pub async fn cycle(&mut self) -> Result<CycleReport, EngineError> {
        let mut report = CycleReport::default();
        let store = self.engine.store.clone();
        if store.chain_halted(&self.chain).await?.is_some() {
            report.halted = true;
            metrics::gauge!("kassa_chain_halted", "chain" => self.chain.clone()).set(1.0);
            return Ok(report);
        }
        if !self.prepared {
            self.adapter.prepare().await.map_err(EngineError::Chain)?;
            self.prepared = true;
        }
        if self.refresh_addresses().await? > 0 {
            // A payment to a new address may have reached the mempool before the
            // address was loaded (and its transaction been looked at): look again.
            self.mempool_known.clear();
        }
        let chain_err = EngineError::Chain;
        let (mut height, mut hash) = match store.chain_checkpoint(&self.chain).await? {
            Some(cp) => cp,
            None => {
                // First start: scanning begins at start_height (default: the tip).
                let tip = self.adapter.tip().await.map_err(chain_err)?;
                let start = self.settings.start_height.unwrap_or(tip.height).min(tip.height);
                let h = start.saturating_sub(1);
                let hash = self.adapter.block_hash(h).await.map_err(chain_err)?;
                store.init_chain_checkpoint(&self.chain, h, &hash).await?;
                (h, hash)
            }
        };
        let max_blocks = self.settings.max_blocks_per_cycle;
        let mut update = self.adapter.scan(&Checkpoint { height, hash: hash.clone() }, max_blocks).await.map_err(chain_err)?;
        let tip = update.tip.clone();
        metrics::gauge!("kassa_chain_tip_height", "chain" => self.chain.clone()).set(tip.height as f64);
        let tip_since = self.tip_since(&tip.hash).await?;

        // Reorg: our checkpoint left the node's best chain. Walk back to the last block
        // we share with it.
        if update.reorged {
            let keep = self.keep_blocks();
            let mut fork = height;
            loop {
                if height - fork > self.settings.max_reorg_depth || fork == 0 || height - fork >= keep {
                    let depth = height - fork;
                    let reason = format!(
                        "reorg deeper than {} blocks below height {height} (at least {depth}); crediting and sending are halted",
                        self.settings.max_reorg_depth
                    );
                    tracing::error!(chain = %self.chain, %reason, "ALERT: chain halted");
                    store.halt_chain(&self.chain, &reason).await?;
                    metrics::gauge!("kassa_chain_halted", "chain" => self.chain.clone()).set(1.0);
                    report.halted = true;
                    report.reorg_depth = Some(depth);
                    return Ok(report);
                }
                fork -= 1;
                let ours = store.chain_block_hash(&self.chain, fork).await?;
                let theirs = if fork <= tip.height { Some(self.adapter.block_hash(fork).await.map_err(chain_err)?) } else { None };
                if ours.is_some() && ours == theirs {
                    break;
                }
            }
            let depth = height - fork;
            tracing::warn!(chain = %self.chain, depth, fork_height = fork, "reorg: rolling back");
            store.rollback_blocks(&self.chain, fork).await?;
            report.reorg_depth = Some(depth);
            height = fork;
            hash = store.chain_block_hash(&self.chain, fork).await?.unwrap_or_default();
            // If the chain changed yet again, the scan says so and the next cycle walks back.
            update = self.adapter.scan(&Checkpoint { height, hash: hash.clone() }, max_blocks).await.map_err(chain_err)?;
        }

        // New blocks, in order, each checked against its parent.
        for b in update.blocks {
            if b.parent_hash.as_deref() != Some(hash.as_str()) || b.block.height != height + 1 {
                // The chain changed under us; the next cycle's reorg check handles it.
                break;
            }
            let found = self.found_in(&b.transfers);
            store.record_block(&self.chain, b.block.height, &b.block.hash, &found, self.keep_blocks()).await?;
            height = b.block.height;
            hash = b.block.hash;
            report.blocks += 1;
        }
        report.scanned_to = height;
        metrics::gauge!("kassa_chain_scanned_height", "chain" => self.chain.clone()).set(height as f64);
        metrics::gauge!("kassa_chain_lag_blocks", "chain" => self.chain.clone()).set(update.tip.height.saturating_sub(height) as f64);
        report.lagging = self.judge_lag(&tip, tip_since, height).await?;

        // Mempool: deposits seen with zero confirmations (each transaction recorded once
        // per address set).
        let mut by_tx: HashMap<&str, Vec<&IncomingTransfer>> = HashMap::new();
        for t in &update.mempool {
            by_tx.entry(t.txid.as_str()).or_default().push(t);
        }
        for (txid, transfers) in &by_tx {
            if self.mempool_known.contains(*txid) {
                continue;
            }
            let found = self.found_in(transfers.iter().copied());
            if !found.is_empty() {
                store.record_mempool_deposits(&self.chain, &found).await?;
            }
        }
        self.mempool_known = by_tx.keys().map(|t| t.to_string()).collect();
        let mempool = &self.mempool_known;

        // Confirmations, credits, reversals, drops.
        for d in store.open_deposits(&self.chain, MAX_OPEN_DEPOSITS).await? {
            let net_credited = d.credits > d.reversals;
            match d.block_height {
                None if net_credited => {
                    self.reverse(&d).await?;
                    report.reversed += 1;
                }
                None => {
                    if d.status == "seen" && !mempool.contains(&d.txid) {
                        match self.adapter.transfers(&d.txid).await {
                            Err(e) if e.is_not_found() => {
                                tracing::info!(chain = %self.chain, txid = %d.txid, "deposit left the mempool unconfirmed (double-spent or evicted)");
                                store.mark_deposit_dropped(d.id).await?;
                            }
                            Err(e) => return Err(EngineError::Chain(e)),
                            Ok(_) => {}
                        }
                    }
                }
                Some(block_height) => {
                    let confirmations = (height as i64 - block_height + 1).max(0);
                    if !net_credited && confirmations >= i64::from(self.currency_of(&d)?.confirmations.max(1)) {
                        self.credit(&d, confirmations).await?;
                        report.credited += 1;
                    } else {
                        store.set_deposit_confirmations(d.id, confirmations).await?;
                    }
                }
            }
        }
        Ok(report)
    }

    fn currency_of(&self, d: &DepositRow) -> Result<&Currency, EngineError> {
        self.assets
            .values()
            .map(|(_, c)| c)
            .find(|c| c.code.as_str() == d.currency)
            .ok_or_else(|| EngineError::invalid("currency", format!("{} is no longer carried by chain {}", d.currency, self.chain)))
    }

    fn keep_blocks(&self) -> u64 {
        self.settings.max_reorg_depth + 16
    }

    async fn credit(&self, d: &DepositRow, confirmations: i64) -> Result<(), EngineError> {
        let k = d.credits + 1;
        let currency = self.currency_of(d)?;
        let code = currency.code.clone();
        let ledger = &self.engine.ledger;
        let hot = ledger.account(&AccountKey::System { account: SystemAccount::HotWallet, currency: code.clone() }).await?;
        let below_minimum = d.amount_units < currency.min_receive.units();
        let to = if below_minimum {
            // Too small to credit: the value stays booked, as dust.
            ledger.account(&AccountKey::System { account: SystemAccount::Dust, currency: code.clone() }).await?
        } else {
            ledger.account(&AccountKey::Merchant { merchant: MerchantId(d.merchant_id), currency: code.clone() }).await?
        };
        let mut legs = vec![Leg { from: hot, to, currency: code.clone(), units: d.amount_units }];
        // A deposit credited before (then reversed) pays the fee it paid then.
        let fee = match d.fee_units {
            Some(fee) => fee,
            None => currency.deposit_fee_units(d.amount_units)?,
        };
        if fee > 0 && !below_minimum {
            let fees = ledger.account(&AccountKey::System { account: SystemAccount::FeesEarned, currency: code.clone() }).await?;
            legs.push(Leg { from: to, to: fees, currency: code.clone(), units: fee });
        }
        let conversion = match (&d.convert_to, d.fee_units) {
            (None, _) => CreditConversion::None,
            // Credited before (then reversed): converted as that first credit was.
            (Some(_), Some(_)) => d.conversion.clone(),
            (Some(_), None) if below_minimum => {
                CreditConversion::Unconverted(format!("below the least deposit credited, {} {}", currency.min_receive, currency.code))
            }
            (Some(to), None) => match self.engine.futures_conversion(d, to, d.amount_units - fee).await? {
                Some(fixed) => CreditConversion::Converted(fixed),
                None => match self.engine.invoice_conversion(d, to, d.amount_units - fee).await? {
                    Some(fixed) => CreditConversion::Converted(fixed),
                    None => self.engine.deposit_conversion(currency, to, d.amount_units - fee),
                },
            },
        };
        // Converted on arrival: the credit and the exchange are one ledger transaction.
        if let CreditConversion::Converted(c) = &conversion {
            legs.extend(self.exchange_legs(d, &code, c, fee, false).await?);
        }
        if d.amount_units > 0 {
            let memo = serde_json::json!({"type": "deposit", "deposit_id": d.id, "txid": d.txid, "vout": d.vout,
                "below_minimum": below_minimum, "converted_to": d.convert_to})
            .to_string();
            ledger.submit(TxRequest { idempotency_key: format!("deposit:{}:credit:{k}", d.id), action: Action::Transfer(legs), memo }).await?;
        }
        self.engine.store.mark_deposit_credited(d.id, k, confirmations, fee, conversion).await?;
        tracing::info!(chain = %self.chain, deposit = d.id, txid = %d.txid, amount_units = d.amount_units, confirmations, "deposit credited");
        Ok(())
    }

    /// The legs of a deposit's conversion on arrival (its exchange fee to fees earned),
    /// or with `reverse`, of taking it back: what is converted is the deposit less its
    /// `deposit_fee`.
    async fn exchange_legs(&self, d: &DepositRow, code: &CurrencyCode, c: &DepositConversion, deposit_fee: i128, reverse: bool) -> Result<Vec<Leg>, EngineError> {
        let ledger = &self.engine.ledger;
        let merchant = MerchantId(d.merchant_id);
        let to_code = self.engine.currencies.get(&c.currency)?.code.clone();
        let m_from = ledger.account(&AccountKey::Merchant { merchant, currency: code.clone() }).await?;
        let m_to = ledger.account(&AccountKey::Merchant { merchant, currency: to_code.clone() }).await?;
        let house_from = ledger.account(&AccountKey::System { account: SystemAccount::ExchangeHouse, currency: code.clone() }).await?;
        let house_to = ledger.account(&AccountKey::System { account: SystemAccount::ExchangeHouse, currency: to_code.clone() }).await?;
        let fees = ledger.account(&AccountKey::System { account: SystemAccount::FeesEarned, currency: code.clone() }).await?;
        let sent = d.amount_units - deposit_fee;
        let mut legs = vec![
            Leg { from: m_from, to: house_from, currency: code.clone(), units: sent - c.fee_units },
            Leg { from: m_from, to: fees, currency: code.clone(), units: c.fee_units },
            Leg { from: house_to, to: m_to, currency: to_code, units: c.units },
        ];
        if reverse {
            // Taken back in the converted currency first: what the merchant holds of it.
            legs.reverse();
            for leg in &mut legs {
                std::mem::swap(&mut leg.from, &mut leg.to);
            }
        }
        legs.retain(|l| l.units > 0);
        Ok(legs)
    }

    /// Takes back a credit whose block left the best chain. What the merchant no longer
    /// holds is booked against suspense for the operator to settle.
    async fn reverse(&self, d: &DepositRow) -> Result<(), EngineError> {
        let k = d.reversals + 1;
        let currency = self.currency_of(d)?;
        let code = currency.code.clone();
        let ledger = &self.engine.ledger;
        let hot = ledger.account(&AccountKey::System { account: SystemAccount::HotWallet, currency: code.clone() }).await?;
        let below_minimum = d.amount_units < currency.min_receive.units();
        let owner = if below_minimum {
            ledger.account(&AccountKey::System { account: SystemAccount::Dust, currency: code.clone() }).await?
        } else {
            ledger.account(&AccountKey::Merchant { merchant: MerchantId(d.merchant_id), currency: code.clone() }).await?
        };
        // Mirrors the credit: the fee it booked, whatever the fee rule says now.
        let fee = match d.fee_units {
            Some(fee) => fee,
            None => currency.deposit_fee_units(d.amount_units)?,
        };
        let credited = d.amount_units - fee;
        let key = format!("deposit:{}:reversal:{k}", d.id);
        let memo = serde_json::json!({"type": "deposit_reversal", "deposit_id": d.id, "txid": d.txid, "vout": d.vout}).to_string();
        let mut legs = Vec::new();
        // A converted deposit is taken back in both currencies: the conversion first.
        if let CreditConversion::Converted(c) = &d.conversion {
            legs.extend(self.exchange_legs(d, &code, c, fee, true).await?);
        }
        if credited > 0 {
            legs.push(Leg { from: owner, to: hot, currency: code.clone(), units: credited });
        }
        if fee > 0 {
            let fees = ledger.account(&AccountKey::System { account: SystemAccount::FeesEarned, currency: code.clone() }).await?;
            legs.push(Leg { from: fees, to: hot, currency: code.clone(), units: fee });
        }
        if !legs.is_empty() {
            // Both forms share one key: after a crash, a retry of the full form either
            // replays it or conflicts with the split form already booked; either way done.
            let first = ledger.submit(TxRequest { idempotency_key: key.clone(), action: Action::Transfer(legs.clone()), memo: memo.clone() }).await;
            if let Err(EngineError::Ledger(LedgerError::IdempotencyConflict { .. })) = first {
                // Booked earlier in its split form.
            } else if let Err(EngineError::Ledger(LedgerError::InsufficientFunds { account, available, .. })) = first {
                // The owner already spent some of it (of a converted deposit: of the
                // converted currency): take what is there, the rest from suspense.
                let available = available.max(0);
                let mut split = Vec::new();
                for leg in legs {
                    if leg.from == account && leg.units > available {
                        let suspense = ledger.account(&AccountKey::System { account: SystemAccount::Suspense, currency: leg.currency.clone() }).await?;
                        if available > 0 {
                            split.push(Leg { units: available, ..leg.clone() });
                        }
                        split.push(Leg { from: suspense, units: leg.units - available, ..leg });
                    } else {
                        split.push(leg);
                    }
                }
                tracing::error!(chain = %self.chain, deposit = d.id, "reversed deposit was partly spent; the shortfall is booked to suspense");
                ledger.submit(TxRequest { idempotency_key: key, action: Action::Transfer(split), memo }).await?;
            } else {
                first?;
            }
        }
        self.engine.store.mark_deposit_reversed(d.id, k).await?;
        tracing::warn!(chain = %self.chain, deposit = d.id, txid = %d.txid, "credited deposit reorged out; credit reversed");
        Ok(())
    }
}

impl crate::worker::Worker for Watcher {
    async fn cycle(&mut self) {
        match Watcher::cycle(self).await {
            Ok(r) if r.blocks > 0 || r.credited > 0 || r.reversed > 0 || r.reorg_depth.is_some() => {
                tracing::info!(chain = %self.chain, scanned_to = r.scanned_to, blocks = r.blocks, credited = r.credited,
                    reversed = r.reversed, reorg_depth = ?r.reorg_depth, "watcher cycle");
            }
            Ok(_) => {}
            Err(e) => {
                // The node may have restarted without Kassa's wallet: prepare again.
                self.prepared = false;
                tracing::warn!(chain = %self.chain, error = %e, "watcher cycle failed; retrying")
            }
        }
    }
}

/// Starts a watcher task per configured chain; they stop when `shutdown` turns true.
pub fn spawn_watchers(engine: &Engine, shutdown: watch::Receiver<bool>) -> Result<Vec<tokio::task::JoinHandle<()>>, EngineError> {
    let mut handles = Vec::new();
    for name in engine.chains.names() {
        let watcher = Watcher::new(engine.clone(), name)?;
        let wake = engine.chains.get(name).expect("listed").wake.clone();
        handles.push(tokio::spawn(watcher.run(wake, shutdown.clone())));
    }
    Ok(handles)
}
