//! Payout plans (scheduled split payouts): a merchant asks for a plan paying several
//! addresses and gets a fresh deposit address and the amount to deposit (payouts +
//! fee). The plan follows its deposit (`kassa_core::payout_plan`); once the deposit is
//! credited (the currency's confirmations) the payouts are settled by the documented
//! rule (`kassa_core::payout_plan::settle`), the fee is booked (the referrer's share to
//! its balance) and the payouts are stored and held as withdrawals that share one
//! batch key and are not sent before the delay has passed: the broadcaster pays them
//! in one transaction, exactly once, as every withdrawal. Time is the engine's clock.

use std::time::Duration;

use kassa_chain::Priority;
use kassa_core::ledger::{AccountKey, Action, Leg, MerchantId, SystemAccount, TxRequest};
use kassa_core::payout_plan::{expected_deposit, referral_share, settle, PayoutPlan, PayoutPlanInput, PayoutPlanStatus, PlanShape};
use kassa_core::withdrawal::WithdrawalStatus;
use kassa_core::{Currency, SignPolicy};
use kassa_store::{NewPayoutPlan, NewWithdrawal, PayoutPlanRow, PlanUpdate, StoreError, WithdrawalRow};
use rand::distributions::{Distribution, Uniform};

use crate::withdrawals::request_hash;
use crate::{Engine, EngineError};

const HOUR_MS: i64 = 3_600_000;

/// Payout plan rules (configuration `[payout_plans]`).
#[derive(Clone, Debug)]
pub struct PayoutPlanSettings {
    /// How long a plan waits for its deposit.
    pub validity: Duration,
    /// The longest delay a plan may ask for, in hours.
    pub max_delay_hours: i64,
    /// Most payouts per plan (never more than a transaction of the chain pays).
    pub max_payouts: usize,
    /// The referrer's share of a plan's fee, percent × 10^6.
    pub referral_share_e6: i128,
    /// The currency of plans that name none (default: the first that can be sent in bulk).
    pub default_currency: Option<String>,
}

impl Default for PayoutPlanSettings {
    fn default() -> Self {
        Self { validity: Duration::from_secs(24 * 3600), max_delay_hours: 168, max_payouts: 20, referral_share_e6: 0, default_currency: None }
    }
}

/// What a plan pays, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanPayouts {
    /// Address and amount (text) of each payout.
    Fixed(Vec<(String, String)>),
    /// Addresses that share the deposit evenly.
    Split(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub merchant: MerchantId,
    /// Default: `[payout_plans] default_currency`.
    pub currency: Option<String>,
    pub delay_hours: i64,
    pub payouts: PlanPayouts,
    pub ref_code: Option<String>,
    /// The API it came through.
    pub origin: String,
}

/// A plan as its API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanView {
    pub id: String,
    /// `pending`, `confirming`, `processing`, `complete` or `expired`.
    pub status: &'static str,
    pub currency: String,
    pub deposit_address: String,
    /// What to deposit (a fixed plan), the least deposit that pays every address (a
    /// split plan), or, once paid out, what was deposited.
    pub deposit_amount: String,
    pub deposit_txid: Option<String>,
    /// Address and amount of each payout (a split plan's are `0` until its deposit).
    pub payouts: Vec<(String, String)>,
    pub txid: Option<String>,
    pub fee: String,
    pub delay_hours: i64,
    pub ref_code: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The status a plan's API reports: the payouts on their way, or stopped for an
/// operator, are `processing`.
pub fn reported_status(s: PayoutPlanStatus) -> &'static str {
    match s {
        PayoutPlanStatus::Pending => "pending",
        PayoutPlanStatus::Confirming => "confirming",
        PayoutPlanStatus::Processing | PayoutPlanStatus::Sent | PayoutPlanStatus::Failed => "processing",
        PayoutPlanStatus::Complete => "complete",
        PayoutPlanStatus::Expired => "expired",
    }
}

/// An amount as the plan API writes it: no trailing zeros.
fn plain(c: &Currency, units: i128) -> Result<String, EngineError> {
    let text = c.amount(units)?.to_string();
    Ok(if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text })
}

/// A plan's public id: 16 uppercase letters and digits.
fn plan_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let pick = Uniform::from(0..CHARS.len());
    let mut rng = rand::thread_rng();
    (0..16).map(|_| CHARS[pick.sample(&mut rng)] as char).collect()
}

/// What the payout worker did in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanReport {
    pub changed: u64,
    pub scheduled: u64,
}

impl Engine {
    /// The currency of a plan that names `asked` (or none).
    fn plan_currency(&self, asked: Option<&str>) -> Result<Currency, EngineError> {
        if let Some(code) = asked.or(self.plan_settings.default_currency.as_deref()) {
            return Ok(self.currencies.active(code)?.clone());
        }
        self.currencies
            .all()
            .filter(|c| c.active && c.can_send && c.can_receive)
            .find(|c| c.chain.as_deref().and_then(|ch| self.chains.get(ch)).is_some_and(|ch| ch.adapter.max_payments_per_tx() > 1))
            .cloned()
            .ok_or_else(|| EngineError::invalid("currency", "no currency can pay payout plans"))
    }

    /// Whether `address` is valid for the currency plans pay in by default (checksum
    /// and network, by the chain's own rules).
    pub fn validate_plan_address(&self, address: &str) -> Result<bool, EngineError> {
        let c = self.plan_currency(None)?;
        let (_, chain) = self.chain_of(c.code.as_str())?;
        Ok(chain.adapter.validate_address(address.trim()).is_ok())
    }

    /// Creates a plan: checks everything, takes a fresh deposit address, stores it.
    pub async fn create_payout_plan(&self, r: PlanRequest) -> Result<PlanView, EngineError> {
        let currency = self.plan_currency(r.currency.as_deref())?;
        let (currency, chain_name, adapter) = self.withdrawal_checks(currency.code.as_str()).await?;
        if !currency.can_receive {
            return Err(EngineError::invalid("currency", format!("{} cannot receive deposits", currency.code)));
        }
        if r.delay_hours < 0 || r.delay_hours > self.plan_settings.max_delay_hours {
            return Err(EngineError::invalid("delay", format!("must be 0-{} hours", self.plan_settings.max_delay_hours)));
        }
        let most = self.plan_settings.max_payouts.min(adapter.max_payments_per_tx()).max(1);
        let asked: Vec<(String, Option<String>)> = match &r.payouts {
            PlanPayouts::Fixed(list) => list.iter().map(|(a, v)| (a.clone(), Some(v.clone()))).collect(),
            PlanPayouts::Split(list) => list.iter().map(|a| (a.clone(), None)).collect(),
        };
        if asked.is_empty() || asked.len() > most {
            return Err(EngineError::invalid("payouts", format!("name 1-{most} payouts")));
        }
        let mut payouts: Vec<(String, Option<i128>)> = Vec::with_capacity(asked.len());
        for (address, amount) in &asked {
            let address = adapter.validate_address(address.trim()).map_err(|e| EngineError::invalid("payouts", format!("{address}: {e}")))?;
            if payouts.iter().any(|(a, _)| *a == address) {
                return Err(EngineError::invalid("payouts", format!("{address} is named twice")));
            }
            let units = match amount {
                Some(text) => {
                    let amount = currency.parse_amount(text.trim(), SignPolicy::Positive).map_err(|e| EngineError::invalid("payouts", format!("{address}: {e}")))?;
                    if amount < currency.min_withdrawal {
                        return Err(EngineError::BelowMinimum(format!("the least payout is {} {}", currency.min_withdrawal, currency.code)));
                    }
                    Some(amount.units())
                }
                None => None,
            };
            payouts.push((address, units));
        }
        let ref_code = match r.ref_code.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(code) => {
                crate::error::check_text("refCode", code, 64)?;
                match self.store.referral_code(code).await? {
                    None => return Err(EngineError::invalid("refCode", format!("{code:?} is not a referral code"))),
                    Some(referrer) if referrer == r.merchant.0 => return Err(EngineError::invalid("refCode", "a plan cannot refer its own merchant")),
                    Some(_) => {}
                }
                Some(code.to_string())
            }
            None => None,
        };
        let split = matches!(r.payouts, PlanPayouts::Split(_));
        let (expected, fee) = if split {
            (None, None)
        } else {
            let amounts: Vec<i128> = payouts.iter().filter_map(|(_, u)| *u).collect();
            let (deposit, fee) = expected_deposit(&amounts, currency.fees.payout_plan).map_err(|e| EngineError::invalid("payouts", e))?;
            (Some(deposit), Some(fee))
        };
        let (_, chain) = self.chain_of(currency.code.as_str())?;
        let validity = i64::try_from(self.plan_settings.validity.as_millis()).unwrap_or(i64::MAX / 2);
        for _ in 0..3 {
            let public_id = plan_id();
            let address = Self::new_address(chain, currency.code.as_str(), &format!("plan {public_id}")).await?;
            let new = NewPayoutPlan {
                public_id,
                merchant: r.merchant,
                currency: currency.code.to_string(),
                chain: chain_name.clone(),
                address,
                split,
                delay_hours: r.delay_hours,
                ref_code: ref_code.clone(),
                expected_units: expected,
                fee_units: fee,
                valid_until_ms: self.now_ms().saturating_add(validity),
                payouts: payouts.clone(),
                origin: r.origin.clone(),
            };
            match self.store.insert_payout_plan(&new).await {
                Ok(row) => {
                    tracing::info!(merchant = r.merchant.0, plan = %row.public_id, currency = %row.currency, payouts = payouts.len(),
                        delay_hours = r.delay_hours, "payout plan created");
                    return self.plan_view(&row).await;
                }
                Err(StoreError::Duplicate { .. }) => continue, // a 1-in-36^16 id clash: draw again
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Conflict("could not draw a free plan id".into()))
    }

    pub async fn payout_plan(&self, merchant: MerchantId, id: &str) -> Result<PlanView, EngineError> {
        let row = self.store.payout_plan(merchant, id).await?.ok_or(EngineError::NotFound("payout plan"))?;
        self.plan_view(&row).await
    }

    /// A merchant's plans, newest first, and how many there are.
    pub async fn payout_plans(&self, merchant: MerchantId, limit: u32, offset: u64) -> Result<(Vec<PlanView>, i64), EngineError> {
        let (rows, total) = self.store.payout_plans(merchant, limit, offset).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.plan_view(row).await?);
        }
        Ok((out, total))
    }

    async fn plan_view(&self, p: &PayoutPlanRow) -> Result<PlanView, EngineError> {
        let c = self.currencies.get(&p.currency)?;
        let rows = self.store.payout_plan_payouts(p.id).await?;
        let payouts = rows
            .iter()
            .map(|r| Ok((r.address.clone(), plain(c, r.paid_units.or(r.planned_units).unwrap_or(0))?)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let (deposit, fee) = match (p.deposit_units, p.expected_units, p.fee_units) {
            (Some(d), _, f) => (d, f.unwrap_or(0)),
            (None, Some(e), f) => (e, f.unwrap_or(0)),
            // A split plan before its deposit: the least that pays every address.
            (None, None, _) => {
                let least = c.min_withdrawal.units().max(1) * rows.len() as i128;
                expected_deposit(&[least], c.fees.payout_plan).map_err(|e| EngineError::invalid("payouts", e))?
            }
        };
        Ok(PlanView {
            id: p.public_id.clone(),
            status: reported_status(p.status),
            currency: p.currency.clone(),
            deposit_address: p.address.clone(),
            deposit_amount: plain(c, deposit)?,
            deposit_txid: p.deposit_txid.clone(),
            payouts,
            txid: p.txid.clone(),
            fee: plain(c, fee)?,
            delay_hours: p.delay_hours,
            ref_code: p.ref_code.clone(),
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        })
    }

    /// Registers a referral code for a merchant (`kassa plans referral-code`).
    pub async fn add_referral_code(&self, code: &str, merchant: MerchantId) -> Result<(), EngineError> {
        let code = code.trim();
        if code.is_empty() || code.len() > 64 || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(EngineError::invalid("code", "1-64 letters, digits, - or _"));
        }
        self.store.merchant(merchant).await?.ok_or_else(|| EngineError::MerchantNotFound(merchant.0.to_string()))?;
        match self.store.insert_referral_code(code, merchant).await {
            Err(StoreError::Duplicate { .. }) => Err(EngineError::Conflict(format!("referral code {code:?} exists"))),
            r => Ok(r?),
        }
    }

    pub async fn referral_codes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        Ok(self.store.referral_codes().await?)
    }

    /// One pass over the open plans: follow deposits, settle and schedule the payouts
    /// of plans whose deposit is credited, follow the payouts to confirmation, expire.
    pub async fn advance_payout_plans(&self) -> Result<PlanReport, EngineError> {
        let mut report = PlanReport::default();
        let mut after = 0;
        // Bounded: at most 100 pages of 500 plans a pass.
        for _ in 0..100 {
            let page = self.store.open_payout_plans(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for plan in page {
                let id = plan.public_id.clone();
                if let Err(e) = self.advance_plan(plan, &mut report).await {
                    tracing::warn!(plan = %id, error = %e, "payout plan not advanced; retrying");
                }
            }
        }
        Ok(report)
    }

    async fn set_plan(&self, p: &PayoutPlanRow, u: PlanUpdate, report: &mut PlanReport) -> Result<Option<PayoutPlanRow>, EngineError> {
        if !self.store.update_payout_plan(p.id, p.status, p.scheduled, &u).await? {
            return Ok(None); // changed meanwhile: the next pass looks again
        }
        report.changed += 1;
        if let Some(s) = u.status.filter(|s| *s != p.status) {
            tracing::info!(plan = %p.public_id, from = %p.status, to = %s, "payout plan");
        }
        Ok(self.store.payout_plan_by_id(p.id).await?)
    }

    async fn advance_plan(&self, mut p: PayoutPlanRow, report: &mut PlanReport) -> Result<(), EngineError> {
        let now = self.now_ms();
        let machine = |p: &PayoutPlanRow| PayoutPlan {
            status: p.status,
            valid_until_ms: p.valid_until_ms,
            delay_ms: p.delay_hours.saturating_mul(HOUR_MS),
            confirmed_at_ms: p.confirmed_at_ms,
        };
        use PayoutPlanInput::*;
        use PayoutPlanStatus::*;
        if matches!(p.status, Pending | Confirming | Expired) {
            let live = self.plan_deposits(&p).await?;
            let credited = live.iter().any(|d| d.status == "credited");
            let first_txid = live.first().map(|d| d.txid.clone());
            let mut m = machine(&p);
            if !live.is_empty() {
                m = m.after(DepositSeen, now).unwrap_or(m);
            }
            if credited {
                m = m.after(DepositConfirmed, now).unwrap_or(m);
            }
            if live.is_empty() && m.status == Confirming {
                m = m.after(DepositGone, now).unwrap_or(m);
            }
            m = m.after(Tick, now).unwrap_or(m);
            if m != machine(&p) {
                let u = PlanUpdate {
                    status: Some(m.status),
                    deposit_txid: first_txid,
                    confirmed_at_ms: (m.confirmed_at_ms != p.confirmed_at_ms).then_some(m.confirmed_at_ms),
                    ..PlanUpdate::default()
                };
                match self.set_plan(&p, u, report).await? {
                    Some(next) => p = next,
                    None => return Ok(()),
                }
            }
        }
        if p.status == Processing && !p.scheduled {
            match self.schedule_plan(&p, report).await? {
                Some(next) => p = next,
                None => return Ok(()),
            }
        }
        if p.status == Processing && p.scheduled && self.plan_deposits(&p).await?.iter().all(|d| d.status != "credited") {
            // The deposit left the chain before the payouts went out.
            return self.stop_plan_payouts(&p, report).await;
        }
        if matches!(p.status, Processing | Sent) && p.scheduled {
            self.follow_plan_payouts(p, now, machine, report).await?;
        }
        Ok(())
    }

    /// The deposits a plan counts: on their way or credited, and at least the
    /// currency's least deposit (dust is booked to the dust account, never the merchant).
    async fn plan_deposits(&self, p: &PayoutPlanRow) -> Result<Vec<kassa_store::DepositRow>, EngineError> {
        let least = self.currencies.get(&p.currency)?.min_receive.units();
        Ok(self
            .store
            .deposits_at_address(p.address_id, 100)
            .await?
            .into_iter()
            .filter(|d| matches!(d.status.as_str(), "seen" | "confirming" | "credited") && d.amount_units >= least)
            .collect())
    }

    fn batch_key(p: &PayoutPlanRow) -> String {
        format!("payout-plan:{}", p.public_id)
    }

    fn plan_key(p: &PayoutPlanRow, i: usize) -> String {
        format!("payout-plan:{}:{i}", p.public_id)
    }

    /// Settles a plan whose deposit is credited (once: the settlement is stored first),
    /// books its fee, stores and holds its payouts and queues them together.
    async fn schedule_plan(&self, p: &PayoutPlanRow, report: &mut PlanReport) -> Result<Option<PayoutPlanRow>, EngineError> {
        let c = self.currencies.get(&p.currency)?.clone();
        let rows = self.store.payout_plan_payouts(p.id).await?;
        let mut p = p.clone();
        if p.deposit_units.is_none() {
            // What the merchant was credited for the plan's deposits (the deposit fee aside).
            let deposits = self.plan_deposits(&p).await?;
            let deposit: i128 = deposits.iter().filter(|d| d.status == "credited").map(|d| d.amount_units - d.fee_units.unwrap_or(0)).sum();
            let shape = if p.split { PlanShape::Split(rows.len()) } else { PlanShape::Fixed(rows.iter().map(|r| r.planned_units.unwrap_or(0)).collect()) };
            let settled = settle(&shape, deposit, c.fees.payout_plan);
            let failure = match &settled {
                Err(e) => Some(format!("the deposit of {} {} cannot be paid out: {e}", plain(&c, deposit)?, c.code)),
                Ok(s) if s.payouts.iter().any(|u| *u < c.min_withdrawal.units().max(1)) => {
                    Some(format!("the deposit of {} {} pays a payout below the least payout of {} {}", plain(&c, deposit)?, c.code, c.min_withdrawal, c.code))
                }
                Ok(_) => None,
            };
            if let Some(failure) = failure {
                // Nothing is sent: the deposit stays in the merchant's balance for an operator.
                tracing::warn!(plan = %p.public_id, reason = %failure, "payout plan stopped; its deposit stays in the merchant's balance");
                let m = PayoutPlan { status: p.status, valid_until_ms: p.valid_until_ms, delay_ms: 0, confirmed_at_ms: p.confirmed_at_ms };
                let status = m.after(PayoutPlanInput::PayoutsFailed, self.now_ms()).map(|m| m.status).unwrap_or(PayoutPlanStatus::Failed);
                return self.set_plan(&p, PlanUpdate { status: Some(status), failure: Some(failure), ..PlanUpdate::default() }, report).await;
            }
            let s = settled.map_err(|e| EngineError::invalid("deposit", e))?;
            let u = PlanUpdate { settlement: Some((deposit, s.fee, s.payouts.clone())), ..PlanUpdate::default() };
            match self.set_plan(&p, u, report).await? {
                Some(next) => p = next,
                None => return Ok(None),
            }
        }
        let rows = self.store.payout_plan_payouts(p.id).await?;
        let fee = p.fee_units.unwrap_or(0);
        self.book_plan_fee(&p, &c, fee).await?;
        let (_, chain) = self.chain_of(c.code.as_str())?;
        let due = p.confirmed_at_ms.unwrap_or_else(|| self.now_ms()).saturating_add(p.delay_hours.saturating_mul(HOUR_MS));
        let mut held: Vec<(i64, i64)> = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let units = r.paid_units.ok_or_else(|| EngineError::Store(StoreError::Corrupt(format!("plan {} payout {i} has no amount", p.public_id))))?;
            let new = NewWithdrawal {
                merchant: MerchantId(p.merchant_id),
                currency: c.code.to_string(),
                chain: chain.adapter.chain().to_string(),
                address: r.address.clone(),
                amount_units: units,
                fee_units: 0, // the plan's fee pays for it
                priority: Priority::Medium.as_str().to_string(),
                idempotency_key: Self::plan_key(&p, i),
                request_hash: request_hash(c.code.as_str(), &r.address, units, Priority::Medium),
                origin: p.origin.clone(),
                callback_url: None,
                description: Some(format!("payout plan {}", p.public_id)),
                daily_limit: None,
                source: None,
                approval_reason: None,
                approval_day_limit: None,
                not_before_ms: Some(due),
                batch_key: Some(Self::batch_key(&p)),
            };
            let w = match self.store.insert_withdrawal(&new).await {
                Ok(id) => self.store.withdrawal(id).await?,
                Err(StoreError::Duplicate { .. }) => self.store.withdrawal_by_key(new.merchant, &new.idempotency_key).await?,
                Err(e) => return Err(e.into()),
            }
            .ok_or(EngineError::LedgerStopped)?;
            // Only this plan's own payout (another API may have used the key for
            // something else): never adopt a withdrawal that is not it.
            if w.batch_key != new.batch_key || w.request_hash != new.request_hash {
                return Err(EngineError::Conflict(format!(
                    "withdrawal key {} is taken by withdrawal {} that is not this plan's payout; the plan waits for an operator",
                    new.idempotency_key, w.id
                )));
            }
            let tx = match w.hold_tx_id {
                Some(tx) => tx,
                None => match self.hold(&w, &c).await {
                    Ok(tx) => tx,
                    Err(e) => {
                        if matches!(e, EngineError::InsufficientFunds { .. }) {
                            self.store.delete_requested_withdrawal(w.id).await?;
                        }
                        return Err(e);
                    }
                },
            };
            held.push((w.id, tx));
        }
        // All at once: the broadcaster sees every payout of the plan or none.
        self.store.set_withdrawals_queued(&held).await?;
        report.scheduled += 1;
        tracing::info!(plan = %p.public_id, payouts = held.len(), due_ms = due, "payout plan scheduled");
        self.set_plan(&p, PlanUpdate { mark_scheduled: true, ..PlanUpdate::default() }, report).await
    }

    /// A scheduled plan whose deposit was reversed (a reorg) before its payouts were
    /// sent: the payouts still queued are failed and their holds voided, the fee is
    /// returned, and the plan stops (`failed`) for an operator. One already claimed by
    /// a payout is on its way and cannot be stopped (alerted).
    async fn stop_plan_payouts(&self, p: &PayoutPlanRow, report: &mut PlanReport) -> Result<(), EngineError> {
        let reason = "its deposit was reversed (a reorg) before the payouts were sent";
        let mut stopped = 0;
        for w in self.store.withdrawals_of_batch(&Self::batch_key(p)).await? {
            if w.status == WithdrawalStatus::Queued && w.payout_id.is_none() && self.store.fail_queued_withdrawal(w.id, reason).await? {
                if let Some(hold) = w.hold_tx_id {
                    self.void_withdrawal_hold(w.id, hold, reason).await?;
                }
                stopped += 1;
            } else if !matches!(w.status, WithdrawalStatus::Failed | WithdrawalStatus::Cancelled) {
                tracing::error!(plan = %p.public_id, withdrawal = w.id, status = w.status.as_str(),
                    "ALERT: a payout plan's deposit was reversed after its payout was claimed for sending; an operator must settle it");
            }
        }
        self.return_plan_fee(p).await?;
        tracing::warn!(plan = %p.public_id, stopped, reason, "payout plan stopped");
        let u = PlanUpdate { status: Some(PayoutPlanStatus::Failed), failure: Some(reason.into()), ..PlanUpdate::default() };
        self.set_plan(p, u, report).await?;
        Ok(())
    }

    /// Takes back a stopped plan's fee (once; a scheduled plan's fee is booked): from
    /// fees earned, and the referrer's share from the referrer while it still holds it.
    async fn return_plan_fee(&self, p: &PayoutPlanRow) -> Result<(), EngineError> {
        let c = self.currencies.get(&p.currency)?.clone();
        let (booked, _) = self.plan_fee_legs(p, &c, p.fee_units.unwrap_or(0)).await?;
        if booked.is_empty() {
            return Ok(());
        }
        let legs: Vec<Leg> = booked.into_iter().map(|l| Leg { from: l.to, to: l.from, currency: l.currency, units: l.units }).collect();
        let memo = serde_json::json!({"type": "payout_plan_fee_returned", "plan": p.public_id}).to_string();
        let request = TxRequest { idempotency_key: format!("payout-plan:{}:fee:returned", p.public_id), action: Action::Transfer(legs), memo };
        if let Err(e) = self.ledger.submit(request).await {
            tracing::warn!(plan = %p.public_id, error = %e, "payout plan fee not returned (the referrer may have spent its share); an operator may settle it");
        }
        Ok(())
    }

    /// Books a plan's fee: the merchant's balance pays it to fees earned, the
    /// referrer's share to the referrer's balance (once, by the plan's key).
    async fn book_plan_fee(&self, p: &PayoutPlanRow, c: &Currency, fee: i128) -> Result<(), EngineError> {
        let (legs, share) = self.plan_fee_legs(p, c, fee).await?;
        if legs.is_empty() {
            return Ok(());
        }
        let memo = serde_json::json!({"type": "payout_plan_fee", "plan": p.public_id, "ref_code": p.ref_code, "referral_share": share.to_string()}).to_string();
        let request = TxRequest { idempotency_key: format!("payout-plan:{}:fee", p.public_id), action: Action::Transfer(legs), memo };
        self.ledger.submit(request).await.map_err(|e| e.in_currency(c))?;
        Ok(())
    }

    /// The legs of a plan's fee and the referrer's share.
    async fn plan_fee_legs(&self, p: &PayoutPlanRow, c: &Currency, fee: i128) -> Result<(Vec<Leg>, i128), EngineError> {
        let code = c.code.clone();
        let merchant = self.ledger.account(&AccountKey::Merchant { merchant: MerchantId(p.merchant_id), currency: code.clone() }).await?;
        let fees = self.ledger.account(&AccountKey::System { account: SystemAccount::FeesEarned, currency: code.clone() }).await?;
        let referrer = p.referrer_id.filter(|r| *r != p.merchant_id);
        let share = match referrer {
            Some(_) => referral_share(fee, self.plan_settings.referral_share_e6),
            None => 0,
        };
        let mut legs = vec![Leg { from: merchant, to: fees, currency: code.clone(), units: fee - share }];
        if let Some(referrer) = referrer.filter(|_| share > 0) {
            let to = self.ledger.account(&AccountKey::Merchant { merchant: MerchantId(referrer), currency: code.clone() }).await?;
            legs.push(Leg { from: merchant, to, currency: code.clone(), units: share });
        }
        legs.retain(|l| l.units > 0);
        Ok((legs, share))
    }

    async fn follow_plan_payouts(
        &self,
        p: PayoutPlanRow,
        now: i64,
        machine: impl Fn(&PayoutPlanRow) -> PayoutPlan,
        report: &mut PlanReport,
    ) -> Result<(), EngineError> {
        let count = self.store.payout_plan_payouts(p.id).await?.len();
        let mut ws: Vec<WithdrawalRow> = Vec::with_capacity(count);
        for i in 0..count {
            match self.store.withdrawal_by_key(MerchantId(p.merchant_id), &Self::plan_key(&p, i)).await? {
                Some(w) => ws.push(w),
                None => return Err(EngineError::Store(StoreError::Corrupt(format!("plan {} payout {i} has no withdrawal", p.public_id)))),
            }
        }
        let mut m = machine(&p);
        let mut u = PlanUpdate::default();
        if let Some(w) = ws.iter().find(|w| matches!(w.status, WithdrawalStatus::Failed | WithdrawalStatus::Cancelled)) {
            m = m.after(PayoutPlanInput::PayoutsFailed, now).unwrap_or(m);
            u.failure = Some(format!("payout to {} {}: {}", w.address, w.status.as_str(), w.failure.clone().unwrap_or_default()));
        } else {
            let sent = ws.iter().all(|w| w.txid.is_some() && matches!(w.status, WithdrawalStatus::Broadcast | WithdrawalStatus::Confirmed));
            if sent && m.status == PayoutPlanStatus::Processing {
                m = m.after(PayoutPlanInput::PayoutsSent, now).unwrap_or(m);
                u.txid = ws.first().and_then(|w| w.txid.clone());
            }
            if m.status == PayoutPlanStatus::Sent && ws.iter().all(|w| w.status == WithdrawalStatus::Confirmed) {
                m = m.after(PayoutPlanInput::PayoutsConfirmed, now).unwrap_or(m);
            }
            // A replacement (RBF) of the payout: the plan shows the transaction that pays.
            if m.status != PayoutPlanStatus::Processing {
                let txid = ws.first().and_then(|w| w.txid.clone());
                if txid != p.txid {
                    u.txid = txid;
                }
            }
        }
        if m.status != p.status || u.txid.is_some() {
            u.status = Some(m.status);
            self.set_plan(&p, u, report).await?;
        }
        Ok(())
    }
}

/// Advances payout plans every second under one lease (one instance at a time).
pub fn spawn_payout_plans(engine: &Engine, shutdown: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let lease = "payout-plans".to_string();
    let pace = crate::worker::Pace { name: lease.clone(), interval: Duration::from_secs(1), lease: Some((lease, Duration::from_secs(5))), wake: None };
    let e = engine.clone();
    let sweep = crate::worker::Sweep(move || {
        let e = e.clone();
        async move {
            if let Err(err) = e.advance_payout_plans().await {
                tracing::warn!(error = %err, "cannot advance payout plans; retrying");
            }
        }
    });
    tokio::spawn(crate::worker::run(engine.clone(), pace, sweep, shutdown))
}
