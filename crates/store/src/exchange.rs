//! Quotes and exchanges. An exchange is recorded `pending` before its ledger
//! transaction (deterministic key `exchange:<id>`) and `done` after it, together with
//! its `exchange.done` event; `failed` when the ledger refused it. Rows are never
//! deleted: the client id and quote stay bound to the one ledger key, and the ledger
//! transaction, when it exists, is the truth (a `failed` row it exists for is `done`).

use kassa_core::ledger::MerchantId;
use serde_json::json;

use crate::events::{write_events, NewEvent};
use crate::{duplicate_as, on_pool, parse_units, Result, Store, StoreError};

#[derive(Clone, Debug)]
pub struct NewQuote {
    pub public_id: String,
    pub merchant: MerchantId,
    pub from_currency: String,
    pub to_currency: String,
    pub sender_units: i128,
    pub fee_units: i128,
    pub receiver_units: i128,
    pub rate: String,
    pub source: String,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteRow {
    pub id: i64,
    pub public_id: String,
    pub merchant_id: i64,
    pub from_currency: String,
    pub to_currency: String,
    pub sender_units: i128,
    pub fee_units: i128,
    pub receiver_units: i128,
    pub rate: String,
    pub source: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct QuoteRecord {
    id: i64,
    public_id: String,
    merchant_id: i64,
    from_currency: String,
    to_currency: String,
    sender_units: String,
    fee_units: String,
    receiver_units: String,
    rate: String,
    source: String,
    created_at_ms: i64,
    expires_at_ms: i64,
}

impl TryFrom<QuoteRecord> for QuoteRow {
    type Error = StoreError;
    fn try_from(r: QuoteRecord) -> Result<Self> {
        Ok(QuoteRow {
            id: r.id,
            public_id: r.public_id,
            merchant_id: r.merchant_id,
            from_currency: r.from_currency,
            to_currency: r.to_currency,
            sender_units: parse_units(&r.sender_units, "quote sender amount")?,
            fee_units: parse_units(&r.fee_units, "quote fee")?,
            receiver_units: parse_units(&r.receiver_units, "quote receiver amount")?,
            rate: r.rate,
            source: r.source,
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
        })
    }
}

const QUOTE_COLUMNS: &str = "SELECT id, public_id, merchant_id, from_currency, to_currency, CAST(sender_units AS TEXT) AS sender_units,
        CAST(fee_units AS TEXT) AS fee_units, CAST(receiver_units AS TEXT) AS receiver_units, rate, source, created_at_ms, expires_at_ms
     FROM quotes";

#[derive(Clone, Debug)]
pub struct NewExchange {
    pub public_id: String,
    pub merchant: MerchantId,
    pub client_id: String,
    pub request_hash: Vec<u8>,
    pub kind: String,
    pub quote_id: Option<i64>,
    pub from_currency: String,
    pub to_currency: String,
    pub sender_units: i128,
    pub fee_units: i128,
    pub receiver_units: i128,
    pub rate: String,
    /// The API dialect it was made through.
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeRow {
    pub id: i64,
    pub public_id: String,
    pub merchant_id: i64,
    pub client_id: String,
    pub request_hash: Vec<u8>,
    pub kind: String,
    pub quote_id: Option<i64>,
    pub from_currency: String,
    pub to_currency: String,
    pub sender_units: i128,
    pub fee_units: i128,
    pub receiver_units: i128,
    pub rate: String,
    pub status: String,
    pub ledger_tx_id: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub origin: String,
}

#[derive(sqlx::FromRow)]
struct ExchangeRecord {
    id: i64,
    public_id: String,
    merchant_id: i64,
    client_id: String,
    request_hash: Vec<u8>,
    kind: String,
    quote_id: Option<i64>,
    from_currency: String,
    to_currency: String,
    sender_units: String,
    fee_units: String,
    receiver_units: String,
    rate: String,
    status: String,
    ledger_tx_id: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
    origin: String,
}

impl TryFrom<ExchangeRecord> for ExchangeRow {
    type Error = StoreError;
    fn try_from(r: ExchangeRecord) -> Result<Self> {
        Ok(ExchangeRow {
            id: r.id,
            public_id: r.public_id,
            merchant_id: r.merchant_id,
            client_id: r.client_id,
            request_hash: r.request_hash,
            kind: r.kind,
            quote_id: r.quote_id,
            from_currency: r.from_currency,
            to_currency: r.to_currency,
            sender_units: parse_units(&r.sender_units, "exchange sender amount")?,
            fee_units: parse_units(&r.fee_units, "exchange fee")?,
            receiver_units: parse_units(&r.receiver_units, "exchange receiver amount")?,
            rate: r.rate,
            status: r.status,
            ledger_tx_id: r.ledger_tx_id,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            origin: r.origin,
        })
    }
}

const EXCHANGE_COLUMNS: &str = "SELECT id, public_id, merchant_id, client_id, request_hash, kind, quote_id, from_currency, to_currency,
        CAST(sender_units AS TEXT) AS sender_units, CAST(fee_units AS TEXT) AS fee_units, CAST(receiver_units AS TEXT) AS receiver_units,
        rate, status, ledger_tx_id, created_at_ms, updated_at_ms, origin
     FROM exchanges";

impl Store {
    pub async fn insert_quote(&self, q: &NewQuote) -> Result<QuoteRow> {
        let sql = format!(
            "INSERT INTO quotes (public_id, merchant_id, from_currency, to_currency, sender_units, fee_units, receiver_units, rate, source,
                 created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5{n}, $6{n}, $7{n}, $8, $9, $10, $11) RETURNING id",
            n = self.numeric()
        );
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(&sql)
            .bind(&q.public_id)
            .bind(q.merchant.0)
            .bind(&q.from_currency)
            .bind(&q.to_currency)
            .bind(q.sender_units.to_string())
            .bind(q.fee_units.to_string())
            .bind(q.receiver_units.to_string())
            .bind(&q.rate)
            .bind(&q.source)
            .bind(self.now_ms())
            .bind(q.expires_at_ms)
            .fetch_one(pool)
            .await?);
        self.quote_by_id(id).await?.ok_or(StoreError::NotFound { what: "quote" })
    }

    async fn quote_by_id(&self, id: i64) -> Result<Option<QuoteRow>> {
        let sql = format!("{QUOTE_COLUMNS} WHERE id = $1");
        let r: Option<QuoteRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        r.map(QuoteRow::try_from).transpose()
    }

    pub async fn quote(&self, merchant: MerchantId, public_id: &str) -> Result<Option<QuoteRow>> {
        let sql = format!("{QUOTE_COLUMNS} WHERE public_id = $1 AND merchant_id = $2");
        let r: Option<QuoteRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(public_id).bind(merchant.0).fetch_optional(pool).await?);
        r.map(QuoteRow::try_from).transpose()
    }

    /// The merchant's unexpired, unexecuted quotes of one direction, newest first,
    /// among its latest `window` quotes (a bounded scan however many it has asked for).
    pub async fn live_quotes(&self, merchant: MerchantId, from: &str, to: &str, now_ms: i64, window: u32) -> Result<Vec<QuoteRow>> {
        let sql = format!(
            "SELECT * FROM ({QUOTE_COLUMNS} WHERE merchant_id = $1 ORDER BY id DESC LIMIT $2) AS q
             WHERE from_currency = $3 AND to_currency = $4 AND expires_at_ms >= $5
               AND NOT EXISTS (SELECT 1 FROM exchanges x WHERE x.quote_id = q.id)
             ORDER BY id DESC"
        );
        let rows: Vec<QuoteRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(merchant.0)
            .bind(i64::from(window))
            .bind(from)
            .bind(to)
            .bind(now_ms)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(QuoteRow::try_from).collect()
    }

    /// Records an exchange as `pending`. A repeated client id or quote is `Duplicate`.
    pub async fn insert_exchange(&self, x: &NewExchange) -> Result<ExchangeRow> {
        let now = self.now_ms();
        let sql = format!(
            "INSERT INTO exchanges (public_id, merchant_id, client_id, request_hash, kind, quote_id, from_currency, to_currency,
                 sender_units, fee_units, receiver_units, rate, status, created_at_ms, updated_at_ms, origin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9{n}, $10{n}, $11{n}, $12, 'pending', $13, $13, $14) RETURNING id",
            n = self.numeric()
        );
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(&sql)
            .bind(&x.public_id)
            .bind(x.merchant.0)
            .bind(&x.client_id)
            .bind(&x.request_hash)
            .bind(&x.kind)
            .bind(x.quote_id)
            .bind(&x.from_currency)
            .bind(&x.to_currency)
            .bind(x.sender_units.to_string())
            .bind(x.fee_units.to_string())
            .bind(x.receiver_units.to_string())
            .bind(&x.rate)
            .bind(now)
            .bind(&x.origin)
            .fetch_one(pool)
            .await
            .map_err(|e| duplicate_as(e, "an exchange with this client id or quote"))?);
        self.exchange(id).await?.ok_or(StoreError::NotFound { what: "exchange" })
    }

    pub async fn exchange(&self, id: i64) -> Result<Option<ExchangeRow>> {
        let sql = format!("{EXCHANGE_COLUMNS} WHERE id = $1");
        let r: Option<ExchangeRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        r.map(ExchangeRow::try_from).transpose()
    }

    pub async fn exchange_by_client_id(&self, merchant: MerchantId, client_id: &str) -> Result<Option<ExchangeRow>> {
        let sql = format!("{EXCHANGE_COLUMNS} WHERE merchant_id = $1 AND client_id = $2");
        let r: Option<ExchangeRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).bind(client_id).fetch_optional(pool).await?);
        r.map(ExchangeRow::try_from).transpose()
    }

    pub async fn exchange_by_quote(&self, quote_id: i64) -> Result<Option<ExchangeRow>> {
        let sql = format!("{EXCHANGE_COLUMNS} WHERE quote_id = $1");
        let r: Option<ExchangeRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(quote_id).fetch_optional(pool).await?);
        r.map(ExchangeRow::try_from).transpose()
    }

    pub async fn exchanges(&self, merchant: MerchantId, before_id: Option<i64>, limit: u32) -> Result<Vec<ExchangeRow>> {
        let sql = format!("{EXCHANGE_COLUMNS} WHERE merchant_id = $1 AND status = 'done' AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3");
        let r: Vec<ExchangeRecord> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).bind(before_id).bind(i64::from(limit)).fetch_all(pool).await?);
        r.into_iter().map(ExchangeRow::try_from).collect()
    }

    /// Exchanges not done, created before `before_ms`: pending ones a crash interrupted,
    /// and failed ones (a ledger transaction may have committed after all).
    /// Failed ones are looked at while they failed after `failed_since_ms` only.
    pub async fn unfinished_exchanges(&self, before_ms: i64, failed_since_ms: i64) -> Result<Vec<ExchangeRow>> {
        let sql = format!(
            "{EXCHANGE_COLUMNS} WHERE (status = 'pending' AND created_at_ms < $1) OR (status = 'failed' AND updated_at_ms > $2)
             ORDER BY id LIMIT 1000"
        );
        let r: Vec<ExchangeRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(before_ms).bind(failed_since_ms).fetch_all(pool).await?);
        r.into_iter().map(ExchangeRow::try_from).collect()
    }

    /// Marks a pending exchange failed (its ledger transaction was refused, or never
    /// submitted before a crash); false if it was not pending.
    pub async fn fail_exchange(&self, id: i64, failure: &str) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("UPDATE exchanges SET status = 'failed', failure = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'pending'")
            .bind(failure)
            .bind(self.now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Why an exchange failed.
    pub async fn exchange_failure(&self, id: i64) -> Result<Option<String>> {
        let r: Option<Option<String>> =
            on_pool!(self, pool => sqlx::query_scalar("SELECT failure FROM exchanges WHERE id = $1").bind(id).fetch_optional(pool).await?);
        Ok(r.flatten())
    }

    /// Marks an exchange done (its ledger transaction committed) and writes its
    /// `exchange.done` event, in one database transaction.
    pub async fn complete_exchange(&self, id: i64, ledger_tx_id: i64) -> Result<()> {
        let x = self.exchange(id).await?.ok_or(StoreError::NotFound { what: "exchange" })?;
        let now = self.now_ms();
        let event = NewEvent {
            merchant_id: x.merchant_id,
            event_type: "exchange.done".into(),
            object_kind: "exchange".into(),
            object_id: x.id,
            origin: x.origin.clone(),
            callback_url: None,
            data: json!({
                "id": x.public_id, "number": x.id, "client_id": x.client_id, "kind": x.kind, "from_currency": x.from_currency,
                "to_currency": x.to_currency, "sender_units": x.sender_units.to_string(), "fee_units": x.fee_units.to_string(),
                "receiver_units": x.receiver_units.to_string(), "rate": x.rate, "status": "done",
                "created_at_ms": x.created_at_ms, "updated_at_ms": now,
            }),
            only_endpoint: None,
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE exchanges SET status = 'done', ledger_tx_id = $1, failure = NULL, updated_at_ms = $2
                                 WHERE id = $3 AND status IN ('pending', 'failed')")
                .bind(ledger_tx_id)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                write_events!(tx, self.write_ctx(), vec![event]);
            }
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// The id of the ledger transaction with this idempotency key, if it exists.
    pub async fn ledger_tx_by_key(&self, key: &str) -> Result<Option<i64>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar("SELECT id FROM ledger_transactions WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?))
    }
}
