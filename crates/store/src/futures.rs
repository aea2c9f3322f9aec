//! Futures: a price fixed for the next deposit of an exact amount to a conversion
//! address before a release time. The deposit that takes one claims it once.

use kassa_core::ledger::MerchantId;

use crate::{on_pool, parse_units, Result, Store};

#[derive(Clone, Debug)]
pub struct NewFutures {
    pub merchant: MerchantId,
    pub address_id: i64,
    pub sender_currency: String,
    pub receiver_currency: String,
    pub sender_units: i128,
    pub receiver_units: i128,
    /// The exchange fee, in the sender currency.
    pub fee_units: i128,
    pub rate: String,
    pub ts_fixed_ms: i64,
    pub ts_release_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuturesRow {
    pub id: i64,
    pub merchant_id: i64,
    pub address_id: i64,
    pub sender_currency: String,
    pub receiver_currency: String,
    pub sender_units: i128,
    pub receiver_units: i128,
    pub fee_units: i128,
    pub rate: String,
    pub ts_fixed_ms: i64,
    pub ts_release_ms: i64,
    pub deposit_id: Option<i64>,
}

type FuturesTuple = (i64, i64, i64, String, String, String, String, String, String, i64, i64, Option<i64>);

const FUTURES_COLUMNS: &str = "SELECT id, merchant_id, address_id, sender_currency, receiver_currency, CAST(sender_units AS TEXT),
        CAST(receiver_units AS TEXT), CAST(fee_units AS TEXT), rate, ts_fixed_ms, ts_release_ms, deposit_id FROM futures";

fn futures_from(t: FuturesTuple) -> Result<FuturesRow> {
    Ok(FuturesRow {
        id: t.0,
        merchant_id: t.1,
        address_id: t.2,
        sender_currency: t.3,
        receiver_currency: t.4,
        sender_units: parse_units(&t.5, "futures sender amount")?,
        receiver_units: parse_units(&t.6, "futures receiver amount")?,
        fee_units: parse_units(&t.7, "futures fee")?,
        rate: t.8,
        ts_fixed_ms: t.9,
        ts_release_ms: t.10,
        deposit_id: t.11,
    })
}

impl Store {
    pub async fn insert_futures(&self, f: &NewFutures) -> Result<FuturesRow> {
        let n = self.numeric();
        let sql = format!(
            "INSERT INTO futures (merchant_id, address_id, sender_currency, receiver_currency, sender_units, receiver_units, fee_units, rate,
                 ts_fixed_ms, ts_release_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $5{n}, $6{n}, $7{n}, $8, $9, $10, $11) RETURNING id"
        );
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(&sql)
            .bind(f.merchant.0)
            .bind(f.address_id)
            .bind(&f.sender_currency)
            .bind(&f.receiver_currency)
            .bind(f.sender_units.to_string())
            .bind(f.receiver_units.to_string())
            .bind(f.fee_units.to_string())
            .bind(&f.rate)
            .bind(f.ts_fixed_ms)
            .bind(f.ts_release_ms)
            .bind(self.now_ms())
            .fetch_one(pool)
            .await?);
        let sql = format!("{FUTURES_COLUMNS} WHERE id = $1");
        let t: FuturesTuple = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_one(pool).await?);
        futures_from(t)
    }

    /// The futures a deposit of `units` to `address_id`, first seen at `seen_ms`,
    /// converts at: already claimed by this deposit, or else the oldest unclaimed one
    /// of exactly that amount released no earlier than the deposit arrived.
    pub async fn futures_for_deposit(&self, address_id: i64, units: i128, deposit_id: i64, seen_ms: i64) -> Result<Option<FuturesRow>> {
        let n = self.numeric();
        let sql = format!(
            "{FUTURES_COLUMNS} WHERE address_id = $1 AND (deposit_id = $2
                 OR (deposit_id IS NULL AND sender_units = $3{n} AND ts_release_ms >= $4 AND ts_fixed_ms <= $4))
             ORDER BY CASE WHEN deposit_id IS NULL THEN 1 ELSE 0 END, id LIMIT 1"
        );
        let t: Option<FuturesTuple> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(address_id).bind(deposit_id).bind(units.to_string()).bind(seen_ms).fetch_optional(pool).await?);
        t.map(futures_from).transpose()
    }

    /// Claims a futures for a deposit; false when another deposit took it first.
    pub async fn claim_futures(&self, id: i64, deposit_id: i64) -> Result<bool> {
        Ok(on_pool!(self, pool => sqlx::query("UPDATE futures SET deposit_id = $1 WHERE id = $2 AND (deposit_id IS NULL OR deposit_id = $1)")
            .bind(deposit_id)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
            == 1))
    }
}
