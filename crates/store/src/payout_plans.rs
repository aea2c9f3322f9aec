//! Payout plans (scheduled split payouts) and referral codes. A plan is stored with its
//! deposit address and payouts in one transaction; its status changes only from the
//! status it was read in (a compare-and-set), as the plan state machine
//! (`kassa_core::payout_plan`) returned it.

use kassa_core::ledger::MerchantId;
use kassa_core::payout_plan::PayoutPlanStatus;

use crate::{duplicate_as, on_pool, parse_units, Result, Store, StoreError};

#[derive(Clone, Debug)]
pub struct NewPayoutPlan {
    pub public_id: String,
    pub merchant: MerchantId,
    pub currency: String,
    pub chain: String,
    pub address: String,
    /// The payouts split the deposit (no amounts) rather than fixed amounts.
    pub split: bool,
    pub delay_hours: i64,
    pub ref_code: Option<String>,
    /// A fixed plan's deposit (payouts + fee) and fee.
    pub expected_units: Option<i128>,
    pub fee_units: Option<i128>,
    pub valid_until_ms: i64,
    /// Address and, for a fixed plan, amount of each payout.
    pub payouts: Vec<(String, Option<i128>)>,
    /// The API it came through (its address's deposits are reported in its format).
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutPlanRow {
    pub id: i64,
    pub public_id: String,
    pub merchant_id: i64,
    pub currency: String,
    pub chain: String,
    pub address_id: i64,
    pub address: String,
    pub split: bool,
    pub delay_hours: i64,
    pub ref_code: Option<String>,
    /// The merchant the referral code belongs to.
    pub referrer_id: Option<i64>,
    pub status: PayoutPlanStatus,
    pub expected_units: Option<i128>,
    pub fee_units: Option<i128>,
    /// What the plan took as its deposit (set when the payouts are scheduled).
    pub deposit_units: Option<i128>,
    pub deposit_txid: Option<String>,
    pub valid_until_ms: i64,
    pub confirmed_at_ms: Option<i64>,
    /// Its payouts are stored and held as withdrawals.
    pub scheduled: bool,
    pub txid: Option<String>,
    pub failure: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The API it came through (its payouts are reported in that API's format).
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanPayoutRow {
    pub position: i64,
    pub address: String,
    pub planned_units: Option<i128>,
    /// What it is paid (set when the payouts are scheduled).
    pub paid_units: Option<i128>,
}

#[derive(sqlx::FromRow)]
struct PlanRecord {
    id: i64,
    public_id: String,
    merchant_id: i64,
    currency: String,
    chain: String,
    address_id: i64,
    address: String,
    split: bool,
    delay_hours: i64,
    ref_code: Option<String>,
    referrer_id: Option<i64>,
    status: String,
    expected_units: Option<String>,
    fee_units: Option<String>,
    deposit_units: Option<String>,
    deposit_txid: Option<String>,
    valid_until_ms: i64,
    confirmed_at_ms: Option<i64>,
    scheduled: bool,
    txid: Option<String>,
    failure: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    origin: String,
}

fn units(text: &Option<String>, what: &str) -> Result<Option<i128>> {
    text.as_deref().map(|t| parse_units(t, what)).transpose()
}

impl TryFrom<PlanRecord> for PayoutPlanRow {
    type Error = StoreError;
    fn try_from(r: PlanRecord) -> Result<Self> {
        Ok(PayoutPlanRow {
            status: PayoutPlanStatus::parse(&r.status).ok_or_else(|| StoreError::Corrupt(format!("payout plan {} status {:?}", r.id, r.status)))?,
            expected_units: units(&r.expected_units, "plan deposit")?,
            fee_units: units(&r.fee_units, "plan fee")?,
            deposit_units: units(&r.deposit_units, "plan deposit received")?,
            id: r.id,
            public_id: r.public_id,
            merchant_id: r.merchant_id,
            currency: r.currency,
            chain: r.chain,
            address_id: r.address_id,
            address: r.address,
            split: r.split,
            delay_hours: r.delay_hours,
            ref_code: r.ref_code,
            referrer_id: r.referrer_id,
            deposit_txid: r.deposit_txid,
            valid_until_ms: r.valid_until_ms,
            confirmed_at_ms: r.confirmed_at_ms,
            scheduled: r.scheduled,
            txid: r.txid,
            failure: r.failure,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            origin: r.origin,
        })
    }
}

const PLAN_COLUMNS: &str = "SELECT p.id, p.public_id, p.merchant_id, p.currency, a.chain, p.address_id, a.address, p.split, p.delay_hours,
        p.ref_code, r.merchant_id AS referrer_id, p.status, CAST(p.expected_units AS TEXT) AS expected_units,
        CAST(p.fee_units AS TEXT) AS fee_units, CAST(p.deposit_units AS TEXT) AS deposit_units, p.deposit_txid, p.valid_until_ms,
        p.confirmed_at_ms, p.scheduled, p.txid, p.failure, p.created_at_ms, p.updated_at_ms, a.origin
     FROM payout_plans p JOIN deposit_addresses a ON a.id = p.address_id LEFT JOIN referral_codes r ON r.code = p.ref_code";

/// What a plan's next state writes.
#[derive(Clone, Debug, Default)]
pub struct PlanUpdate {
    pub status: Option<PayoutPlanStatus>,
    pub deposit_txid: Option<String>,
    /// `Some(None)` clears it (the deposit left the chain).
    pub confirmed_at_ms: Option<Option<i64>>,
    pub txid: Option<String>,
    pub failure: Option<String>,
    /// The plan is settled: what the deposit gave, the fee, and each payout.
    pub settlement: Option<(i128, i128, Vec<i128>)>,
    /// Its payouts are stored and held.
    pub mark_scheduled: bool,
}

impl Store {
    /// Stores a plan with its deposit address and payouts, all or nothing.
    pub async fn insert_payout_plan(&self, plan: &NewPayoutPlan) -> Result<PayoutPlanRow> {
        let now = self.now_ms();
        let n = self.numeric();
        let insert = format!(
            "INSERT INTO payout_plans (public_id, merchant_id, currency, address_id, split, delay_hours, ref_code, status, expected_units,
                 fee_units, valid_until_ms, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9{n}, $10{n}, $11, $12, $12) RETURNING id"
        );
        let payout = format!("INSERT INTO payout_plan_payouts (plan_id, position, address, planned_units) VALUES ($1, $2, $3, $4{n})");
        let id: i64 = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let address_id: i64 = sqlx::query_scalar(
                "INSERT INTO deposit_addresses (merchant_id, currency, chain, address, label, created_at_ms, origin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
                .bind(plan.merchant.0)
                .bind(&plan.currency)
                .bind(&plan.chain)
                .bind(&plan.address)
                .bind(format!("payout plan {}", plan.public_id))
                .bind(now)
                .bind(&plan.origin)
                .fetch_one(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(&insert)
                .bind(&plan.public_id)
                .bind(plan.merchant.0)
                .bind(&plan.currency)
                .bind(address_id)
                .bind(plan.split)
                .bind(plan.delay_hours)
                .bind(&plan.ref_code)
                .bind(PayoutPlanStatus::Pending.as_str())
                .bind(plan.expected_units.map(|u| u.to_string()))
                .bind(plan.fee_units.map(|u| u.to_string()))
                .bind(plan.valid_until_ms)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| duplicate_as(e, "a payout plan with this id"))?;
            for (i, (address, amount)) in plan.payouts.iter().enumerate() {
                sqlx::query(&payout).bind(id).bind(i as i64).bind(address).bind(amount.map(|u| u.to_string())).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            id
        });
        self.payout_plan_by_id(id).await?.ok_or(StoreError::NotFound { what: "payout plan" })
    }

    pub async fn payout_plan_by_id(&self, id: i64) -> Result<Option<PayoutPlanRow>> {
        let sql = format!("{PLAN_COLUMNS} WHERE p.id = $1");
        let r: Option<PlanRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        r.map(PayoutPlanRow::try_from).transpose()
    }

    /// A merchant's plan by its public id (another merchant's is not found).
    pub async fn payout_plan(&self, merchant: MerchantId, public_id: &str) -> Result<Option<PayoutPlanRow>> {
        let sql = format!("{PLAN_COLUMNS} WHERE p.public_id = $1 AND p.merchant_id = $2");
        let r: Option<PlanRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(public_id).bind(merchant.0).fetch_optional(pool).await?);
        r.map(PayoutPlanRow::try_from).transpose()
    }

    /// A merchant's plans, newest first, and how many there are in all.
    pub async fn payout_plans(&self, merchant: MerchantId, limit: u32, offset: u64) -> Result<(Vec<PayoutPlanRow>, i64)> {
        let sql = format!("{PLAN_COLUMNS} WHERE p.merchant_id = $1 ORDER BY p.id DESC LIMIT $2 OFFSET $3");
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let (rows, total): (Vec<PlanRecord>, i64) = on_pool!(self, pool => {
            let rows = sqlx::query_as(&sql).bind(merchant.0).bind(i64::from(limit)).bind(offset).fetch_all(pool).await?;
            let total = sqlx::query_scalar("SELECT COUNT(*) FROM payout_plans WHERE merchant_id = $1").bind(merchant.0).fetch_one(pool).await?;
            (rows, total)
        });
        Ok((rows.into_iter().map(PayoutPlanRow::try_from).collect::<Result<_>>()?, total))
    }

    pub async fn payout_plan_payouts(&self, plan: i64) -> Result<Vec<PlanPayoutRow>> {
        let rows: Vec<(i64, String, Option<String>, Option<String>)> = on_pool!(self, pool => sqlx::query_as(
                "SELECT position, address, CAST(planned_units AS TEXT), CAST(paid_units AS TEXT) FROM payout_plan_payouts
                 WHERE plan_id = $1 ORDER BY position")
            .bind(plan)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|(position, address, planned, paid)| {
                Ok(PlanPayoutRow { position, address, planned_units: units(&planned, "planned payout")?, paid_units: units(&paid, "payout")? })
            })
            .collect()
    }

    /// Plans the payout worker still follows: not final, or expired with a deposit on
    /// its way (paid out like any other), oldest first.
    pub async fn open_payout_plans(&self, after_id: i64, limit: u32) -> Result<Vec<PayoutPlanRow>> {
        let sql = format!(
            "{PLAN_COLUMNS} WHERE p.id > $1 AND (p.status IN ('pending', 'confirming', 'processing', 'sent')
                 OR (p.status = 'expired' AND EXISTS (SELECT 1 FROM deposits d WHERE d.address_id = p.address_id
                     AND d.status IN ('seen', 'confirming', 'credited'))))
             ORDER BY p.id LIMIT $2"
        );
        let r: Vec<PlanRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(after_id).bind(i64::from(limit)).fetch_all(pool).await?);
        r.into_iter().map(PayoutPlanRow::try_from).collect()
    }

    /// Applies `u` to a plan still in `status` and `scheduled` as read; false (nothing
    /// written) when another writer changed it first.
    pub async fn update_payout_plan(&self, id: i64, status: PayoutPlanStatus, scheduled: bool, u: &PlanUpdate) -> Result<bool> {
        let now = self.now_ms();
        let n = self.numeric();
        let sql = format!(
            "UPDATE payout_plans SET status = COALESCE($1, status), deposit_txid = COALESCE($2, deposit_txid),
                 confirmed_at_ms = CASE WHEN $3 THEN $4 ELSE confirmed_at_ms END, txid = COALESCE($5, txid),
                 failure = COALESCE($6, failure), scheduled = (scheduled OR $7),
                 deposit_units = COALESCE($8{n}, deposit_units), fee_units = COALESCE($9{n}, fee_units), updated_at_ms = $10
             WHERE id = $11 AND status = $12 AND scheduled = $13 AND (NOT $14 OR deposit_units IS NULL)"
        );
        let paid = format!("UPDATE payout_plan_payouts SET paid_units = $1{n} WHERE plan_id = $2 AND position = $3");
        let (deposit, fee) = match &u.settlement {
            Some((d, f, _)) => (Some(d.to_string()), Some(f.to_string())),
            None => (None, None),
        };
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let done = sqlx::query(&sql)
                .bind(u.status.map(|s| s.as_str()))
                .bind(&u.deposit_txid)
                .bind(u.confirmed_at_ms.is_some())
                .bind(u.confirmed_at_ms.flatten())
                .bind(&u.txid)
                .bind(&u.failure)
                .bind(u.mark_scheduled)
                .bind(deposit)
                .bind(fee)
                .bind(now)
                .bind(id)
                .bind(status.as_str())
                .bind(scheduled)
                .bind(u.settlement.is_some()) // a plan is settled once
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if done {
                for (i, units) in u.settlement.iter().flat_map(|(_, _, p)| p.iter().enumerate()) {
                    sqlx::query(&paid).bind(units.to_string()).bind(id).bind(i as i64).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            done
        }))
    }

    /// Registers a referral code for a merchant (a code names one merchant, for good).
    pub async fn insert_referral_code(&self, code: &str, merchant: MerchantId) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO referral_codes (code, merchant_id, created_at_ms) VALUES ($1, $2, $3)")
                .bind(code)
                .bind(merchant.0)
                .bind(self.now_ms())
                .execute(pool)
                .await
                .map_err(|e| duplicate_as(e, "this referral code"))?;
        });
        Ok(())
    }

    /// The merchant a referral code belongs to.
    pub async fn referral_code(&self, code: &str) -> Result<Option<i64>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar("SELECT merchant_id FROM referral_codes WHERE code = $1").bind(code).fetch_optional(pool).await?))
    }

    /// Every referral code with its merchant.
    pub async fn referral_codes(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_pool!(self, pool => sqlx::query_as("SELECT code, merchant_id FROM referral_codes ORDER BY code").fetch_all(pool).await?))
    }
}
