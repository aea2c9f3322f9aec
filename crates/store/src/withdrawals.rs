//! Withdrawals and payouts (the on-chain transactions that pay them).

use kassa_core::ledger::MerchantId;

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
    pub status: String,
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
}

impl TryFrom<WithdrawalRecord> for WithdrawalRow {
    type Error = StoreError;
    fn try_from(r: WithdrawalRecord) -> Result<Self> {
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
            status: r.status,
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
        })
    }
}

const WITHDRAWAL_COLUMNS: &str = "SELECT id, merchant_id, currency, chain, address, CAST(amount_units AS TEXT) AS amount_units,
        CAST(fee_units AS TEXT) AS fee_units, priority, idempotency_key, request_hash, status, hold_tx_id, hold_posted,
        payout_id, txid, vout, confirmations, failure, description, created_at_ms, updated_at_ms FROM withdrawals";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutRow {
    pub id: i64,
    pub chain: String,
    pub currency: String,
    pub status: String,
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

impl Store {
    /// Inserts a withdrawal as `requested`; a repeated key is `Duplicate`, a full day
    /// `LimitReached`. The daily count is taken after the insert and under the
    /// merchant's row lock (PostgreSQL) or SQLite's write lock, so concurrent requests
    /// cannot pass the limit together.
    pub async fn insert_withdrawal(&self, w: &NewWithdrawal) -> Result<i64> {
        let sql = format!(
            "INSERT INTO withdrawals (merchant_id, currency, chain, address, amount_units, fee_units, priority, idempotency_key,
                 request_hash, status, created_at_ms, updated_at_ms, origin, callback_url, reported_status, description)
             VALUES ($1, $2, $3, $4, $5{n}, $6{n}, $7, $8, $9, 'requested', $10, $10, $11, $12, 'requested', $13) RETURNING id",
            n = self.numeric()
        );
        let now = self.now_ms();
        let day_start = now - now.rem_euclid(86_400_000);
        let lock = match self.db {
            Db::Postgres(_) if w.daily_limit.is_some() => Some("SELECT id FROM merchants WHERE id = $1 FOR UPDATE"),
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
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| duplicate_as(e, "a withdrawal with this idempotency key"))?;
            if let Some(limit) = w.daily_limit {
                let today: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM withdrawals WHERE merchant_id = $1 AND currency = $2 AND created_at_ms >= $3
                         AND status NOT IN ('failed', 'cancelled')")
                    .bind(w.merchant.0)
                    .bind(&w.currency)
                    .bind(day_start)
                    .fetch_one(&mut *tx)
                    .await?;
                if today > limit {
                    return Err(StoreError::LimitReached { what: "withdrawals per day" });
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
        Ok(on_pool!(self, pool => sqlx::query_scalar(
                "SELECT COUNT(*) FROM withdrawals WHERE merchant_id = $1 AND currency = $2 AND created_at_ms >= $3
                 AND status NOT IN ('failed', 'cancelled')")
            .bind(merchant.0)
            .bind(currency)
            .bind(since_ms)
            .fetch_one(pool)
            .await?))
    }

    /// Withdrawals of a chain in the given statuses, oldest first.
    pub async fn withdrawals_in(&self, chain: &str, statuses: &[&str], limit: u32) -> Result<Vec<WithdrawalRow>> {
        let list = statuses.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE chain = $1 AND status IN ({list}) ORDER BY id LIMIT $2");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(chain).bind(i64::from(limit)).fetch_all(pool).await?);
        rows(r)
    }

    pub async fn withdrawals_of_payout(&self, payout: i64) -> Result<Vec<WithdrawalRow>> {
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE payout_id = $1 ORDER BY id");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(payout).fetch_all(pool).await?);
        rows(r)
    }

    pub async fn set_withdrawal_queued(&self, id: i64, hold_tx_id: i64) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE withdrawals SET status = 'queued', hold_tx_id = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'requested'")
                .bind(hold_tx_id)
                .bind(self.now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
        });
        Ok(())
    }

    /// Queues several held withdrawals in one transaction, so a broadcaster sees all
    /// of them or none (a bulk request is paid by one transaction).
    pub async fn set_withdrawals_queued(&self, held: &[(i64, i64)]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let now = self.now_ms();
            for (id, hold_tx_id) in held {
                sqlx::query("UPDATE withdrawals SET status = 'queued', hold_tx_id = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'requested'")
                    .bind(hold_tx_id)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes a withdrawal that never held funds (refused for insufficient funds).
    pub async fn delete_requested_withdrawal(&self, id: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM withdrawals WHERE id = $1 AND status = 'requested' AND hold_tx_id IS NULL")
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Fails a withdrawal that no payout holds (still queued); false if it is not in that state.
    pub async fn fail_queued_withdrawal(&self, id: i64, failure: &str) -> Result<bool> {
        let n = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE withdrawals SET status = 'failed', failure = $1, updated_at_ms = $2
                 WHERE id = $3 AND status = 'queued' AND payout_id IS NULL")
                .bind(failure)
                .bind(self.now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            n
        });
        Ok(n == 1)
    }

    /// Failed withdrawals of a chain whose hold is still pending (a crash came between
    /// failing and releasing the funds).
    pub async fn failed_withdrawals_with_pending_hold(&self, chain: &str) -> Result<Vec<(i64, i64)>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT w.id, w.hold_tx_id FROM withdrawals w JOIN ledger_transactions h ON h.id = w.hold_tx_id
                 WHERE w.chain = $1 AND w.status = 'failed' AND h.hold_status = 'pending' LIMIT 1000")
            .bind(chain)
            .fetch_all(pool)
            .await?))
    }

    /// Withdrawals still `requested` (no hold yet) created before `before_ms`.
    pub async fn stale_requested_withdrawals(&self, chain: &str, before_ms: i64) -> Result<Vec<WithdrawalRow>> {
        let sql = format!("{WITHDRAWAL_COLUMNS} WHERE chain = $1 AND status = 'requested' AND created_at_ms < $2 ORDER BY id LIMIT 1000");
        let r: Vec<WithdrawalRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(chain).bind(before_ms).fetch_all(pool).await?);
        rows(r)
    }

    /// Creates a payout (`preparing`) for queued withdrawals, claiming them.
    pub async fn create_payout(&self, chain: &str, currency: &str, withdrawals: &[i64]) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO payouts (chain, currency, status, created_at_ms, updated_at_ms) VALUES ($1, $2, 'preparing', $3, $3) RETURNING id")
                .bind(chain)
                .bind(currency)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            for w in withdrawals {
                let n = sqlx::query("UPDATE withdrawals SET payout_id = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'queued' AND payout_id IS NULL")
                    .bind(id)
                    .bind(now)
                    .bind(w)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n != 1 {
                    return Err(StoreError::Corrupt(format!("withdrawal {w} was claimed by another payout")));
                }
            }
            tx.commit().await?;
            id
        }))
    }

    /// Records a signed payout transaction before it is broadcast.
    pub async fn payout_signed(&self, payout: i64, txid: &str, raw_hex: &str, network_fee_units: i128, vouts: &[(i64, u32)]) -> Result<()> {
        let now = self.now_ms();
        let sql = format!(
            "UPDATE payouts SET status = 'signed', txid = $1, raw_hex = $2, network_fee_units = $3{n}, updated_at_ms = $4
             WHERE id = $5 AND status = 'preparing'",
            n = self.numeric()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(&sql).bind(txid).bind(raw_hex).bind(network_fee_units.to_string()).bind(now).bind(payout).execute(&mut *tx).await?;
            for (w, vout) in vouts {
                sqlx::query("UPDATE withdrawals SET status = 'signed', txid = $1, vout = $2, updated_at_ms = $3 WHERE id = $4 AND payout_id = $5")
                    .bind(txid)
                    .bind(i64::from(*vout))
                    .bind(now)
                    .bind(w)
                    .bind(payout)
                    .execute(&mut *tx)
                    .await?;
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
        });
        Ok(())
    }

    /// Marks a payout and its withdrawals broadcast (under `txid`, which may be a replacement's).
    pub async fn payout_broadcast(&self, payout: i64, txid: &str) -> Result<()> {
        let now = self.now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE payouts SET status = 'broadcast', txid = $1, updated_at_ms = $2 WHERE id = $3 AND status IN ('signed', 'broadcast')")
                .bind(txid)
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE withdrawals SET status = 'broadcast', txid = $1, updated_at_ms = $2 WHERE payout_id = $3 AND status IN ('signed', 'broadcast')")
                .bind(txid)
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
        });
        Ok(())
    }

    /// A payout that never left Kassa: its withdrawals go back to the queue.
    pub async fn abandon_payout(&self, payout: i64, failure: &str) -> Result<()> {
        let now = self.now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE payouts SET status = 'failed', failure = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'preparing'")
                .bind(failure)
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE withdrawals SET payout_id = NULL, updated_at_ms = $1 WHERE payout_id = $2 AND status = 'queued'")
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
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

    pub async fn payout_confirmations(&self, payout: i64, confirmations: i64, confirmed: bool) -> Result<()> {
        let now = self.now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if confirmed {
                sqlx::query("UPDATE payouts SET status = 'confirmed', updated_at_ms = $1 WHERE id = $2")
                    .bind(now)
                    .bind(payout)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE withdrawals SET confirmations = $1, status = CASE WHEN $2 THEN 'confirmed' ELSE status END, updated_at_ms = $3
                 WHERE payout_id = $4 AND status IN ('broadcast', 'confirmed')")
                .bind(confirmations)
                .bind(confirmed)
                .bind(now)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
        });
        Ok(())
    }

    /// Payouts of a chain in the given statuses, oldest first.
    pub async fn payouts_in(&self, chain: &str, statuses: &[&str]) -> Result<Vec<PayoutRow>> {
        let list = statuses.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
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
                    status,
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
