//! Withdrawals and payouts (the on-chain transactions that pay them). Every status
//! written here is the one core's state machines return: a writing transaction reads
//! the current states (`FOR UPDATE` on PostgreSQL, under SQLite's write lock taken by
//! `BEGIN IMMEDIATE`), asks the machine for the next ones and writes them with their
//! events; a refused transition changes nothing.

use kassa_core::ledger::MerchantId;
use kassa_core::withdrawal::{PayoutInput, PayoutStatus, WithdrawalInput, WithdrawalState, WithdrawalStatus};

use crate::events::report_changes;
use crate::{duplicate_as, on_pool, parse_units, Db, Result, Store, StoreError};

#[derive(Clone, Debug)]
pub struct NewWithdrawal {
    pub merchant: MerchantId,
    pub currency: String,
    pub chain: String,
    pub address: String,
    pub amount_units: i128,
    pub fee_units: i128,
    pub priority: String,
    pub idempotency_key: String,
    pub request_hash: Vec<u8>,
    /// The API dialect the withdrawal was requested through, and its own callback URL.
    pub origin: String,
    pub callback_url: Option<String>,
    /// The merchant's own note (shown back in transaction lists).
    pub description: Option<String>,
    /// Most withdrawals of this merchant and currency per UTC day (failed and cancelled
    /// ones aside), enforced inside the insert's transaction.
    pub daily_limit: Option<i64>,
    /// Paid from a balance in another currency (a withdrawal with exchange).
    pub source: Option<WithdrawalSource>,
    /// Why it waits for approval, decided before it is stored (over the
    /// per-transaction limit), if so.
    pub approval_reason: Option<String>,
    /// The per-day approval limit in units of its currency, and how to name it: over it
    /// with this merchant's other withdrawals of the UTC day (counted inside the
    /// insert's transaction, so concurrent requests cannot pass it together), it waits
    /// for approval.
    pub approval_day_limit: Option<(i128, String)>,
    /// Not sent before this time (Unix ms; `None`: as soon as it is queued).
    pub not_before_ms: Option<i64>,
    /// Withdrawals with one batch key are paid by one transaction.
    pub batch_key: Option<String>,
}

/// What a withdrawal with exchange takes from the balance it is paid from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalSource {
    pub currency: String,
    /// What that balance gives, the exchange fee included.
    pub units: i128,
    /// The exchange fee, in that currency.
    pub fee_units: i128,
    /// Units of the withdrawal's currency per unit of the source currency.
    pub rate: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalRow {
    pub id: i64,
    pub merchant_id: i64,
    pub currency: String,
    pub chain: String,
    pub address: String,
    pub amount_units: i128,
    pub fee_units: i128,
    pub priority: String,
    pub idempotency_key: String,
    pub request_hash: Vec<u8>,
    pub status: WithdrawalStatus,
    pub hold_tx_id: Option<i64>,
    pub hold_posted: bool,
    pub payout_id: Option<i64>,
    pub txid: Option<String>,
    pub vout: Option<i64>,
    pub confirmations: i64,
    pub failure: Option<String>,
    pub description: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub source: Option<WithdrawalSource>,
    /// Why it waits (or waited) for an operator's approval.
    pub approval_reason: Option<String>,
    /// Not sent before this time (Unix ms).
    pub not_before_ms: Option<i64>,
    /// Withdrawals with one batch key are paid by one transaction.
    pub batch_key: Option<String>,
}

#[derive(sqlx::FromRow)]
struct WithdrawalRecord {
    id: i64,
    merchant_id: i64,
    currency: String,
    chain: String,
    address: String,
    amount_units: String,
    fee_units: String,
    priority: String,
    idempotency_key: String,
    request_hash: Vec<u8>,
    status: String,
    hold_tx_id: Option<i64>,
    hold_posted: bool,
    payout_id: Option<i64>,
    txid: Option<String>,
    vout: Option<i64>,
    confirmations: i64,
    failure: Option<String>,
    description: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    source_currency: Option<String>,
    source_units: Option<String>,
    source_fee_units: Option<String>,
    exchange_rate: Option<String>,
    approval_reason: Option<String>,
    not_before_ms: Option<i64>,
    batch_key: Option<String>,
}

impl WithdrawalRow {
    /// Its state-machine fields.
    pub fn state(&self) -> WithdrawalState {
        WithdrawalState { status: self.status, payout: self.payout_id }
    }
}

impl TryFrom<WithdrawalRecord> for WithdrawalRow {
    type Error = StoreError;
    fn try_from(r: WithdrawalRecord) -> Result<Self> {
        let source = match (&r.source_currency, &r.source_units, &r.source_fee_units, &r.exchange_rate) {
            (Some(currency), Some(units), Some(fee), Some(rate)) => Some(WithdrawalSource {
                currency: currency.clone(),
                units: parse_units(units, "withdrawal source amount")?,
                fee_units: parse_units(fee, "withdrawal exchange fee")?,
                rate: rate.clone(),
            }),
            (None, None, None, None) => None,
            _ => return Err(StoreError::Corrupt(format!("withdrawal {}: a partly recorded exchange", r.id))),
        };
        Ok(WithdrawalRow {
            id: r.id,
            merchant_id: r.merchant_id,
            currency: r.currency,
            chain: r.chain,
            address: r.address,
            amount_units: parse_units(&r.amount_units, "withdrawal amount")?,
            fee_units: parse_units(&r.fee_units, "withdrawal fee")?,
            priority: r.priority,
            idempotency_key: r.idempotency_key,
            request_hash: r.request_hash,
            status: WithdrawalStatus::parse(&r.status).ok_or_else(|| StoreError::Corrupt(format!("withdrawal {} status {:?}", r.id, r.status)))?,
            hold_tx_id: r.hold_tx_id,
            hold_posted: r.hold_posted,
            payout_id: r.payout_id,
            txid: r.txid,
            vout: r.vout,
            confirmations: r.confirmations,
            failure: r.failure,
            description: r.description,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            source,
            approval_reason: r.approval_reason,
            not_before_ms: r.not_before_ms,
            batch_key: r.batch_key,
        })
    }
}

const WITHDRAWAL_COLUMNS: &str = "SELECT id, merchant_id, currency, chain, address, CAST(amount_units AS TEXT) AS amount_units,
        CAST(fee_units AS TEXT) AS fee_units, priority, idempotency_key, request_hash, status, hold_tx_id, hold_posted,
        payout_id, txid, vout, confirmations, failure, description, created_at_ms, updated_at_ms, source_currency,
        CAST(source_units AS TEXT) AS source_units, CAST(source_fee_units AS TEXT) AS source_fee_units, exchange_rate, approval_reason,
        not_before_ms, batch_key
     FROM withdrawals";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutRow {
    pub id: i64,
    pub chain: String,
    pub currency: String,
    pub status: PayoutStatus,
    pub txid: Option<String>,
    pub raw_hex: Option<String>,
    pub network_fee_units: Option<i128>,
    pub fee_booked: bool,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, Default)]
pub struct WithdrawalQuery {
    pub merchant: Option<MerchantId>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

fn rows(records: Vec<WithdrawalRecord>) -> Result<Vec<WithdrawalRow>> {
    records.into_iter().map(WithdrawalRow::try_from).collect()
}

/// Statuses as an SQL list (`'failed', 'cancelled'`): fixed words, never input.
fn status_list(statuses: impl IntoIterator<Item = &'static str>) -> String {
    statuses.into_iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

/// The statuses not counted against the daily limit.
fn uncounted() -> String {
    status_list(WithdrawalStatus::ALL.into_iter().filter(|s| !s.counts_toward_limit()).map(WithdrawalStatus::as_str))
}

/// A withdrawal's state-machine fields, as a writing transaction reads them.
#[derive(sqlx::FromRow)]
struct StateTuple {
    id: i64,
    status: String,
    payout_id: Option<i64>,
}

impl StateTuple {
    fn state(&self) -> Result<WithdrawalState> {
        let status = WithdrawalStatus::parse(&self.status).ok_or_else(|| StoreError::Corrupt(format!("withdrawal {} status {:?}", self.id, self.status)))?;
        Ok(WithdrawalState { status, payout: self.payout_id })
    }

    /// The state `input` leads to; `None` (logged) when the machine refuses it.
    fn after(&self, input: WithdrawalInput) -> Result<Option<WithdrawalState>> {
        Ok(match self.state()?.after(input) {
            Ok(next) => Some(next),
            Err(refused) => {
                tracing::debug!(withdrawal = self.id, %refused, "withdrawal transition not applied");
                None
            }
        })
    }
}

/// The states of withdrawals (`$where` with one parameter), read for update in id
/// order, inside the open transaction `$tx`.
macro_rules! withdrawal_states {
    ($store:expr, $tx:expr, $where:literal, $bind:expr) => {{
        let sql = format!("SELECT id, status, payout_id FROM withdrawals WHERE {} ORDER BY id{}", $where, $store.for_update());
        let rows: Vec<StateTuple> = sqlx::query_as(&sql).bind($bind).fetch_all(&mut *$tx).await?;
        rows
    }};
}

/// The status `input` leads payout `$payout` to, read for update inside the open
/// transaction `$tx`; `None` (logged) when the machine refuses it or there is no payout.
macro_rules! payout_after {
    ($store:expr, $tx:expr, $payout:expr, $input:expr) => {{
        let sql = format!("SELECT status FROM payouts WHERE id = $1{}", $store.for_update());
        let status: Option<String> = sqlx::query_scalar(&sql).bind($payout).fetch_optional(&mut *$tx).await?;
        match status {
            None => None,
            Some(text) => {
                let status = PayoutStatus::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("payout {} status {text:?}", $payout)))?;
                match status.after($input) {
                    Ok(next) => Some(next),
                    Err(refused) => {
                        tracing::debug!(payout = $payout, %refused, "payout transition not applied");
                        None
                    }
                }
            }
        }
    }};
}

impl Store {
    /// How a transaction that reads states and writes their successors begins: on
    /// SQLite with the write lock, so nothing changes between the read and the write.
    pub(crate) fn begin_write(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }

    /// Row locks for the states a transaction reads (PostgreSQL; SQLite holds its write lock).
    fn for_update(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE",
        }
    }

    /// Inserts a withdrawal as `requested`; a repeated key is `Duplicate`, a full day
    /// `LimitReached`. The daily count is taken after the insert and under the
    /// merchant's row lock (PostgreSQL) or SQLite's write lock, so concurrent requests
    /// cannot pass the limit together.
    pub async fn insert_withdrawal(&self, w: &NewWithdrawal) -> Result<i64> {
        let sql = format!(
            "INSERT INTO withdrawals (merchant_id, currency, chain, address, amount_units, fee_units, priority, idempotency_key,
                 request_hash, status, created_at_ms, updated_at_ms, origin, callback_url, reported_status, description,
                 source_currency, source_units, source_fee_units, exchange_rate, approval_reason, not_before_ms, batch_key)
             VALUES ($1, $2, $3, $4, $5{n}, $6{n}, $7, $8, $9, $14, $10, $10, $11, $12, $14, $13, $15, $16{n}, $17{n}, $18, $19, $20, $21) RETURNING id",
            n = self.numeric()
        );
        let now = self.now_ms();
        let day_start = now - now.rem_euclid(86_400_000);
        let lock = match self.db {
            Db::Postgres(_) if w.daily_limit.is_some() || w.approval_day_limit.is_some() => Some("SELECT id FROM merchants WHERE id = $1 FOR UPDATE"),
            _ => None,
        };
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(w.merchant.0).execute(&mut *tx).await?;
            }
            let id: i64 = sqlx::query_scalar(&sql)
                .bind(w.merchant.0)
                .bind(&w.currency)
                .bind(&w.chain)
                .bind(&w.address)
                .bind(w.amount_units.to_string())
                .bind(w.fee_units.to_string())
                .bind(&w.priority)
                .bind(&w.idempotency_key)
                .bind(&w.request_hash)
                .bind(now)
                .bind(&w.origin)
                .bind(&w.callback_url)
                .bind(&w.description)
                .bind(WithdrawalState::NEW.status.as_str())
                .bind(w.source.as_ref().map(|s| s.currency.clone()))
                .bind(w.source.as_ref().map(|s| s.units.to_string()))
                .bind(w.source.as_ref().map(|s| s.fee_units.to_string()))
                .bind(w.source.as_ref().map(|s| s.rate.clone()))
                .bind(&w.approval_reason)
                .bind(w.not_before_ms)
                .bind(&w.batch_key)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| duplicate_as(e, "a withdrawal with this idempotency key"))?;
            // The day's withdrawals (this one included), for the daily count and the
            // per-day approval limit.
            let approval_day = w.approval_day_limit.as_ref().filter(|_| w.approval_reason.is_none());
            let day: Option<(i64, Option<String>)> = if w.daily_limit.is_some() || approval_day.is_some() {
                Some(sqlx::query_as(&format!(
                        "SELECT COUNT(*), CAST(SUM(amount_units) AS TEXT) FROM withdrawals WHERE merchant_id = $1 AND currency = $2
                         AND created_at_ms >= $3 AND status NOT IN ({})", uncounted()))
                    .bind(w.merchant.0)
                    .bind(&w.currency)
                    .bind(day_start)
                    .fetch_one(&mut *tx)
                    .await?)
            } else {
                None
            };
            if let (Some(limit), Some((today, _))) = (w.daily_limit, &day) {
                if *today > limit {
                    return Err(StoreError::LimitReached { what: "withdrawals per day" });
                }
            }
            if let (Some((limit, named)), Some((_, total))) = (approval_day, &day) {
                let total = match total {
                    Some(t) => parse_units(t.split('.').next().unwrap_or("0"), "withdrawals of the day")?,
                    None => 0,
                };
                if total > *limit {
                    sqlx::query("UPDATE withdrawals SET approval_reason = $1 WHERE id = $2")
                        .bind(format!("over the per-day limit of {named}"))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            id
        }))
    }

    pub async fn withdrawal(&self, id: i64) -> Result<Option<WithdrawalRow>> {
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE id = $1");
        let r: Option<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        r.map(WithdrawalRow::try_from).transpose()
    }

    pub async fn withdrawal_by_key(&self, merchant: MerchantId, key: &str) -> Result<Option<WithdrawalRow>> {
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE merchant_id = $1 AND idempotency_key = $2");
        let r: Option<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).bind(key).fetch_optional(pool).await?);
        r.map(WithdrawalRow::try_from).transpose()
    }

    pub async fn withdrawals(&self, q: &WithdrawalQuery) -> Result<Vec<WithdrawalRow>> {
        let sql = format!(
            "{WITHDRAWAL_COLUMNS} WHERE ($1 IS NULL OR merchant_id = $1) AND ($2 IS NULL OR currency = $2)
                 AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        );
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(q.merchant.map(|m| m.0))
            .bind(&q.currency)
            .bind(&q.status)
            .bind(q.before_id)
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?);
        rows(r)
    }

    /// Withdrawals of a merchant in a currency created since `since_ms`, not failed or cancelled.
    pub async fn count_withdrawals_since(&self, merchant: MerchantId, currency: &str, since_ms: i64) -> Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM withdrawals WHERE merchant_id = $1 AND currency = $2 AND created_at_ms >= $3 AND status NOT IN ({})",
            uncounted()
        );
        Ok(on_pool!(self, pool => sqlx::query_scalar(&sql)
            .bind(merchant.0)
            .bind(currency)
            .bind(since_ms)
            .fetch_one(pool)
            .await?))
    }

    /// Withdrawals of a chain in the given statuses, oldest first.
    pub async fn withdrawals_in(&self, chain: &str, statuses: &[WithdrawalStatus], limit: u32) -> Result<Vec<WithdrawalRow>> {
        let list = status_list(statuses.iter().map(|s| s.as_str()));
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE chain = $1 AND status IN ({list}) ORDER BY id LIMIT $2");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(chain).bind(i64::from(limit)).fetch_all(pool).await?);
        rows(r)
    }

    /// Queued withdrawals of a chain no payout has claimed and due by `now_ms` (not
    /// scheduled later), oldest first.
    pub async fn due_withdrawals(&self, chain: &str, now_ms: i64, limit: u32) -> Result<Vec<WithdrawalRow>> {
        let sql = format!(
            "{WITHDRAWAL_COLUMNS} WHERE chain = $1 AND status = $2 AND payout_id IS NULL AND (not_before_ms IS NULL OR not_before_ms <= $3)
             ORDER BY id LIMIT $4"
        );
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(chain)
            .bind(WithdrawalStatus::Queued.as_str())
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        rows(r)
    }

    /// The withdrawals sharing a batch key, oldest first.
    pub async fn withdrawals_of_batch(&self, batch_key: &str) -> Result<Vec<WithdrawalRow>> {
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE batch_key = $1 ORDER BY id");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(batch_key).fetch_all(pool).await?);
        rows(r)
    }

    pub async fn withdrawals_of_payout(&self, payout: i64) -> Result<Vec<WithdrawalRow>> {
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE payout_id = $1 ORDER BY id");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(payout).fetch_all(pool).await?);
        rows(r)
    }

    /// A withdrawal's funds are held: it joins the queue (a repeat changes nothing).
    pub async fn set_withdrawal_queued(&self, id: i64, hold_tx_id: i64) -> Result<()> {
        self.set_withdrawals_queued(&[(id, hold_tx_id)]).await
    }

    /// A held withdrawal that waits for approval: `pending`.
    pub async fn set_withdrawal_pending(&self, id: i64, hold_tx_id: i64) -> Result<()> {
        self.set_withdrawals_held(&[(id, hold_tx_id)], WithdrawalInput::ApprovalRequired).await
    }

    /// Queues several held withdrawals in one transaction, so a broadcaster sees all
    /// of them or none (a bulk request is paid by one transaction).
    pub async fn set_withdrawals_queued(&self, held: &[(i64, i64)]) -> Result<()> {
        self.set_withdrawals_held(held, WithdrawalInput::Held).await
    }

    async fn set_withdrawals_held(&self, held: &[(i64, i64)], input: WithdrawalInput) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let now = self.now_ms();
            let mut held = held.to_vec();
            held.sort_unstable(); // rows locked in id order
            for (id, hold_tx_id) in &held {
                for row in withdrawal_states!(self, tx, "id = $1", id) {
                    let Some(next) = row.after(input)? else { continue };
                    sqlx::query("UPDATE withdrawals SET status = $1, hold_tx_id = $2, updated_at_ms = $3 WHERE id = $4")
                        .bind(next.status.as_str())
                        .bind(hold_tx_id)
                        .bind(now)
                        .bind(row.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// Removes a withdrawal that never held funds (refused for insufficient funds).
    pub async fn delete_requested_withdrawal(&self, id: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM withdrawals WHERE id = $1 AND status = $2 AND hold_tx_id IS NULL")
                .bind(id)
                .bind(WithdrawalState::NEW.status.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Fails a withdrawal that no payout holds (still queued); false if the machine
    /// refuses (claimed by a payout, or no longer queued).
    pub async fn fail_queued_withdrawal(&self, id: i64, failure: &str) -> Result<bool> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let mut failed = false;
            for row in withdrawal_states!(self, tx, "id = $1", id) {
                let Some(next) = row.after(WithdrawalInput::Failed)? else { continue };
                sqlx::query("UPDATE withdrawals SET status = $1, failure = $2, updated_at_ms = $3 WHERE id = $4")
                    .bind(next.status.as_str())
                    .bind(failure)
                    .bind(self.now_ms())
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
                failed = true;
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
            failed
        }))
    }

    /// Failed and cancelled withdrawals of a chain whose hold is still pending (a crash
    /// came between failing or declining and releasing the funds).
    pub async fn failed_withdrawals_with_pending_hold(&self, chain: &str) -> Result<Vec<(i64, i64)>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT w.id, w.hold_tx_id FROM withdrawals w JOIN ledger_transactions h ON h.id = w.hold_tx_id
                 WHERE w.chain = $1 AND w.status IN ($2, $3) AND h.hold_status = 'pending' LIMIT 1000")
            .bind(chain)
            .bind(WithdrawalStatus::Failed.as_str())
            .bind(WithdrawalStatus::Cancelled.as_str())
            .fetch_all(pool)
            .await?))
    }

    /// Withdrawals still `requested` (no hold yet) created before `before_ms`.
    pub async fn stale_requested_withdrawals(&self, chain: &str, before_ms: i64) -> Result<Vec<WithdrawalRow>> {
        // A payout plan's withdrawals (a batch key) are held and queued together by the
        // plan worker, never one by one here.
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE chain = $1 AND status = $3 AND created_at_ms < $2 AND batch_key IS NULL ORDER BY id LIMIT 1000");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(chain)
            .bind(before_ms)
            .bind(WithdrawalState::NEW.status.as_str())
            .fetch_all(pool)
            .await?);
        rows(r)
    }

    /// Creates a payout (`preparing`) for queued withdrawals, claiming them; refused
    /// (nothing stored) if one of them cannot be claimed.
    pub async fn create_payout(&self, chain: &str, currency: &str, withdrawals: &[i64]) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO payouts (chain, currency, status, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $4) RETURNING id")
                .bind(chain)
                .bind(currency)
                .bind(PayoutStatus::Preparing.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            for w in withdrawals {
                let rows = withdrawal_states!(self, tx, "id = $1", w);
                let claimed = match rows.first() {
                    Some(row) => row.after(WithdrawalInput::Batched { payout: id })?,
                    None => None,
                };
                let Some(next) = claimed else {
                    return Err(StoreError::Corrupt(format!("withdrawal {w} was claimed by another payout")));
                };
                sqlx::query("UPDATE withdrawals SET status = $1, payout_id = $2, updated_at_ms = $3 WHERE id = $4")
                    .bind(next.status.as_str())
                    .bind(next.payout)
                    .bind(now)
                    .bind(w)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            id
        }))
    }

    /// Records a signed payout transaction before it is broadcast.
    pub async fn payout_signed(&self, payout: i64, txid: &str, raw_hex: &str, network_fee_units: i128, vouts: &[(i64, u32)]) -> Result<()> {
        let now = self.now_ms();
        let sql = format!(
            "UPDATE payouts SET status = $1, txid = $2, raw_hex = $3, network_fee_units = $4{n}, updated_at_ms = $5 WHERE id = $6",
            n = self.numeric()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let Some(status) = payout_after!(self, tx, payout, PayoutInput::Signed) else { return Ok(()) };
            sqlx::query(&sql)
                .bind(status.as_str())
                .bind(txid)
                .bind(raw_hex)
                .bind(network_fee_units.to_string())
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            for (w, vout) in vouts {
                for row in withdrawal_states!(self, tx, "id = $1", w) {
                    let Some(next) = row.after(WithdrawalInput::Signed { payout })? else { continue };
                    sqlx::query("UPDATE withdrawals SET status = $1, txid = $2, vout = $3, updated_at_ms = $4 WHERE id = $5")
                        .bind(next.status.as_str())
                        .bind(txid)
                        .bind(i64::from(*vout))
                        .bind(now)
                        .bind(row.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// Marks a payout and its withdrawals broadcast under `txid` (a repeat changes nothing).
    pub async fn payout_broadcast(&self, payout: i64, txid: &str) -> Result<()> {
        self.payout_on_network(payout, txid, PayoutInput::Broadcast, WithdrawalInput::Broadcast).await
    }

    /// A broadcast payout replaced on the network by `txid`, which pays the same
    /// withdrawals: followed from now on.
    pub async fn payout_replaced(&self, payout: i64, txid: &str) -> Result<()> {
        self.payout_on_network(payout, txid, PayoutInput::Replaced, WithdrawalInput::Replaced).await
    }

    async fn payout_on_network(&self, payout: i64, txid: &str, input: PayoutInput, each: WithdrawalInput) -> Result<()> {
        let now = self.now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let Some(status) = payout_after!(self, tx, payout, input) else { return Ok(()) };
            sqlx::query("UPDATE payouts SET status = $1, txid = $2, updated_at_ms = $3 WHERE id = $4")
                .bind(status.as_str())
                .bind(txid)
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            for row in withdrawal_states!(self, tx, "payout_id = $1", payout) {
                let Some(next) = row.after(each)? else { continue };
                sqlx::query("UPDATE withdrawals SET status = $1, txid = $2, updated_at_ms = $3 WHERE id = $4")
                    .bind(next.status.as_str())
                    .bind(txid)
                    .bind(now)
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// A payout that never left Kassa: its withdrawals go back to the queue.
    pub async fn abandon_payout(&self, payout: i64, failure: &str) -> Result<()> {
        let now = self.now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let Some(status) = payout_after!(self, tx, payout, PayoutInput::Abandoned) else { return Ok(()) };
            sqlx::query("UPDATE payouts SET status = $1, failure = $2, updated_at_ms = $3 WHERE id = $4")
                .bind(status.as_str())
                .bind(failure)
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            for row in withdrawal_states!(self, tx, "payout_id = $1", payout) {
                let Some(next) = row.after(WithdrawalInput::ReturnedToQueue { payout })? else { continue };
                sqlx::query("UPDATE withdrawals SET status = $1, payout_id = $2, updated_at_ms = $3 WHERE id = $4")
                    .bind(next.status.as_str())
                    .bind(next.payout)
                    .bind(now)
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn set_hold_posted(&self, withdrawal: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE withdrawals SET hold_posted = TRUE, updated_at_ms = $1 WHERE id = $2")
                .bind(self.now_ms())
                .bind(withdrawal)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn set_payout_fee_booked(&self, payout: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE payouts SET fee_booked = TRUE, updated_at_ms = $1 WHERE id = $2")
                .bind(self.now_ms())
                .bind(payout)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A broadcast payout's confirmations; `confirmed` once they reach the currency's threshold.
    pub async fn payout_confirmations(&self, payout: i64, confirmations: i64, confirmed: bool) -> Result<()> {
        let now = self.now_ms();
        let each = if confirmed { WithdrawalInput::Confirmed } else { WithdrawalInput::Confirmations };
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            if confirmed {
                let Some(status) = payout_after!(self, tx, payout, PayoutInput::Confirmed) else { return Ok(()) };
                sqlx::query("UPDATE payouts SET status = $1, updated_at_ms = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(now)
                    .bind(payout)
                    .execute(&mut *tx)
                    .await?;
            }
            for row in withdrawal_states!(self, tx, "payout_id = $1", payout) {
                let Some(next) = row.after(each)? else { continue };
                sqlx::query("UPDATE withdrawals SET status = $1, confirmations = $2, updated_at_ms = $3 WHERE id = $4")
                    .bind(next.status.as_str())
                    .bind(confirmations)
                    .bind(now)
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// Payouts of a chain in the given statuses, oldest first.
    pub async fn payouts_in(&self, chain: &str, statuses: &[PayoutStatus]) -> Result<Vec<PayoutRow>> {
        let list = status_list(statuses.iter().map(|s| s.as_str()));
        let sql = format!(
            "SELECT id, chain, currency, status, txid, raw_hex, CAST(network_fee_units AS TEXT), fee_booked, created_at_ms
             FROM payouts WHERE chain = $1 AND status IN ({list}) ORDER BY id LIMIT 1000"
        );
        type Row = (i64, String, String, String, Option<String>, Option<String>, Option<String>, bool, i64);
        let r: Vec<Row> = on_pool!(self, pool => sqlx::query_as(&sql).bind(chain).fetch_all(pool).await?);
        r.into_iter()
            .map(|(id, chain, currency, status, txid, raw_hex, fee, fee_booked, created_at_ms)| {
                Ok(PayoutRow {
                    id,
                    chain,
                    currency,
                    status: PayoutStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("payout {id} status {status:?}")))?,
                    txid,
                    raw_hex,
                    network_fee_units: fee.map(|f| parse_units(&f, "network fee")).transpose()?,
                    fee_booked,
                    created_at_ms,
                })
            })
            .collect()
    }
}

/// A merchant's withdrawal limits for one currency, in units of `limit_currency` (the
/// currency itself, or a fiat equivalent at the current rate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalLimitsRow {
    pub merchant_id: i64,
    pub currency: String,
    pub limit_currency: String,
    pub per_transaction_units: Option<i128>,
    pub per_day_units: Option<i128>,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct LimitsRecord {
    merchant_id: i64,
    currency: String,
    limit_currency: String,
    per_transaction_units: Option<String>,
    per_day_units: Option<String>,
    updated_at_ms: i64,
}

impl TryFrom<LimitsRecord> for WithdrawalLimitsRow {
    type Error = StoreError;
    fn try_from(r: LimitsRecord) -> Result<Self> {
        Ok(WithdrawalLimitsRow {
            merchant_id: r.merchant_id,
            currency: r.currency,
            limit_currency: r.limit_currency,
            per_transaction_units: r.per_transaction_units.as_deref().map(|u| parse_units(u, "per-transaction limit")).transpose()?,
            per_day_units: r.per_day_units.as_deref().map(|u| parse_units(u, "per-day limit")).transpose()?,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

const LIMITS_COLUMNS: &str = "SELECT merchant_id, currency, limit_currency, CAST(per_transaction_units AS TEXT) AS per_transaction_units,
        CAST(per_day_units AS TEXT) AS per_day_units, updated_at_ms FROM withdrawal_limits";

/// An operator's decision on a withdrawal that waited for approval.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct WithdrawalDecisionRow {
    pub withdrawal_id: i64,
    /// `approved` or `declined`.
    pub decision: String,
    pub decided_by: String,
    pub reason: Option<String>,
    pub decided_at_ms: i64,
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Recorded, and the withdrawal moved on (queued, or cancelled).
    Done(WithdrawalDecisionRow),
    /// Decided before (by this or another operator): that decision.
    Already(WithdrawalDecisionRow),
    /// The withdrawal does not wait for approval (and never did, or no such one).
    NotPending(Option<WithdrawalStatus>),
}

impl Store {
    /// Sets (or, with neither limit, removes) a merchant's limits for a currency.
    pub async fn set_withdrawal_limits(&self, l: &WithdrawalLimitsRow) -> Result<()> {
        let n = self.numeric();
        on_pool!(self, pool => {
            if l.per_transaction_units.is_none() && l.per_day_units.is_none() {
                sqlx::query("DELETE FROM withdrawal_limits WHERE merchant_id = $1 AND currency = $2")
                    .bind(l.merchant_id).bind(&l.currency).execute(pool).await?;
            } else {
                sqlx::query(&format!(
                    "INSERT INTO withdrawal_limits (merchant_id, currency, limit_currency, per_transaction_units, per_day_units, updated_at_ms)
                     VALUES ($1, $2, $3, $4{n}, $5{n}, $6)
                     ON CONFLICT (merchant_id, currency) DO UPDATE SET limit_currency = $3, per_transaction_units = $4{n},
                         per_day_units = $5{n}, updated_at_ms = $6"))
                    .bind(l.merchant_id)
                    .bind(&l.currency)
                    .bind(&l.limit_currency)
                    .bind(l.per_transaction_units.map(|u| u.to_string()))
                    .bind(l.per_day_units.map(|u| u.to_string()))
                    .bind(self.now_ms())
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    pub async fn withdrawal_limits(&self, merchant: MerchantId, currency: &str) -> Result<Option<WithdrawalLimitsRow>> {
        let sql = format!("{LIMITS_COLUMNS} WHERE merchant_id = $1 AND currency = $2");
        let r: Option<LimitsRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).bind(currency).fetch_optional(pool).await?);
        r.map(WithdrawalLimitsRow::try_from).transpose()
    }

    /// Every configured limit (of one merchant, or all).
    pub async fn all_withdrawal_limits(&self, merchant: Option<MerchantId>) -> Result<Vec<WithdrawalLimitsRow>> {
        let sql = format!("{LIMITS_COLUMNS} WHERE ($1 IS NULL OR merchant_id = $1) ORDER BY merchant_id, currency LIMIT 10000");
        let r: Vec<LimitsRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.map(|m| m.0)).fetch_all(pool).await?);
        r.into_iter().map(WithdrawalLimitsRow::try_from).collect()
    }

    /// Records an operator's decision on a `pending` withdrawal and moves it on
    /// (approved: queued; declined: cancelled) in one transaction, so it is acted on
    /// once: a second decision, concurrent or later, finds the first.
    pub async fn decide_withdrawal(&self, id: i64, approve: bool, by: &str, reason: Option<&str>) -> Result<Decided> {
        let input = if approve { WithdrawalInput::Approved } else { WithdrawalInput::Rejected };
        let decision = if approve { "approved" } else { "declined" };
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let rows = withdrawal_states!(self, tx, "id = $1", id);
            let Some(row) = rows.into_iter().next() else { return Ok(Decided::NotPending(None)) };
            let earlier: Option<WithdrawalDecisionRow> = sqlx::query_as(
                    "SELECT withdrawal_id, decision, decided_by, reason, decided_at_ms FROM withdrawal_decisions WHERE withdrawal_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(earlier) = earlier {
                return Ok(Decided::Already(earlier));
            }
            let Some(next) = row.after(input)? else { return Ok(Decided::NotPending(Some(row.state()?.status))) };
            let now = self.now_ms();
            let recorded = WithdrawalDecisionRow { withdrawal_id: id, decision: decision.into(), decided_by: by.into(), reason: reason.map(str::to_string), decided_at_ms: now };
            sqlx::query("INSERT INTO withdrawal_decisions (withdrawal_id, decision, decided_by, reason, decided_at_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(decision)
                .bind(by)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| duplicate_as(e, "a decision on this withdrawal"))?;
            let failure = (!approve).then(|| format!("declined by {by}: {}", reason.unwrap_or("no reason given")));
            sqlx::query("UPDATE withdrawals SET status = $1, failure = COALESCE($2, failure), updated_at_ms = $3 WHERE id = $4")
                .bind(next.status.as_str())
                .bind(failure)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
            Decided::Done(recorded)
        }))
    }

    pub async fn withdrawal_decision(&self, id: i64) -> Result<Option<WithdrawalDecisionRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT withdrawal_id, decision, decided_by, reason, decided_at_ms FROM withdrawal_decisions WHERE withdrawal_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?))
    }
}
