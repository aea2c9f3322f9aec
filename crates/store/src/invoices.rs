//! Invoices, their currency options (one deposit address each) and their payments
//! (the deposits to those addresses). An invoice's status is recomputed inside every
//! transaction that changes one of its deposits (`report_changes!`), and by the expiry
//! sweep, and each change writes its `invoice.<status>` event in that transaction.

use kassa_core::deposit::DepositStatus;
use kassa_core::invoices::{InvoiceChange, InvoiceState, InvoiceStatus, Payment};
use kassa_core::ledger::MerchantId;
use serde_json::json;

use crate::events::{write_events, NewEvent};
use crate::{duplicate_as, on_pool, parse_units, Db, Result, Store, StoreError};

/// One accepted currency of a new invoice, with its address.
#[derive(Clone, Debug)]
pub struct NewInvoiceOption {
    pub currency: String,
    pub chain: String,
    pub address: String,
    pub due_units: i128,
    /// The currency's minimum deposit: smaller payments do not count.
    pub min_units: i128,
    pub rate: Option<String>,
    /// Deposits to it are converted to this currency on arrival (the invoice's).
    pub convert_to: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewInvoice {
    pub public_id: String,
    pub token: String,
    pub merchant: MerchantId,
    pub order_id: String,
    pub request_hash: Vec<u8>,
    pub currency: String,
    pub amount_units: i128,
    pub description: String,
    pub success_url: Option<String>,
    pub tolerance_e6: i64,
    pub expires_at_ms: i64,
    pub options: Vec<NewInvoiceOption>,
    /// The API dialect it came through, its own callback URL, and its addresses' label.
    pub origin: String,
    pub callback_url: Option<String>,
    pub label: Option<String>,
    /// Where its addresses' deposits are reported (the invoice's origin, or one that
    /// routes nowhere when the API reports invoice payments as the invoice's only).
    pub address_origin: String,
    pub title: String,
    pub failure_url: Option<String>,
    pub payer_email: Option<String>,
    /// The payer's pick of a currency fixes its rate (else it is fixed at creation).
    pub rate_on_pick: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRow {
    pub id: i64,
    pub public_id: String,
    pub token: String,
    pub merchant_id: i64,
    pub order_id: String,
    pub request_hash: Vec<u8>,
    pub currency: String,
    pub amount_units: i128,
    pub description: String,
    pub success_url: Option<String>,
    pub tolerance_e6: i64,
    pub status: InvoiceStatus,
    pub expires_at_ms: i64,
    pub paid_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub origin: String,
    pub callback_url: Option<String>,
    pub title: String,
    pub failure_url: Option<String>,
    pub payer_email: Option<String>,
    pub rate_on_pick: bool,
    /// When its rate was fixed: at creation, or when the payer picked a currency.
    pub rate_fixed_at_ms: Option<i64>,
}

impl InvoiceRow {
    /// What the invoice machine reads of this row.
    pub fn state(&self) -> InvoiceState {
        InvoiceState { status: self.status, paid_at_ms: self.paid_at_ms, tolerance_e6: i128::from(self.tolerance_e6), expires_at_ms: self.expires_at_ms }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct InvoiceRecord {
    id: i64,
    public_id: String,
    token: String,
    merchant_id: i64,
    order_id: String,
    request_hash: Vec<u8>,
    currency: String,
    amount_units: String,
    description: String,
    success_url: Option<String>,
    tolerance_e6: i64,
    status: String,
    expires_at_ms: i64,
    paid_at_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
    origin: String,
    callback_url: Option<String>,
    title: String,
    failure_url: Option<String>,
    payer_email: Option<String>,
    rate_on_pick: bool,
    rate_fixed_at_ms: Option<i64>,
}

impl TryFrom<InvoiceRecord> for InvoiceRow {
    type Error = StoreError;
    fn try_from(r: InvoiceRecord) -> Result<Self> {
        Ok(InvoiceRow {
            amount_units: parse_units(&r.amount_units, "invoice amount")?,
            id: r.id,
            public_id: r.public_id,
            token: r.token,
            merchant_id: r.merchant_id,
            order_id: r.order_id,
            request_hash: r.request_hash,
            currency: r.currency,
            description: r.description,
            success_url: r.success_url,
            tolerance_e6: r.tolerance_e6,
            status: InvoiceStatus::parse(&r.status).ok_or_else(|| StoreError::Corrupt(format!("invoice {}: unknown status {:?}", r.id, r.status)))?,
            expires_at_ms: r.expires_at_ms,
            paid_at_ms: r.paid_at_ms,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            origin: r.origin,
            callback_url: r.callback_url,
            title: r.title,
            failure_url: r.failure_url,
            payer_email: r.payer_email,
            rate_on_pick: r.rate_on_pick,
            rate_fixed_at_ms: r.rate_fixed_at_ms,
        })
    }
}

pub(crate) const INVOICE_COLUMNS: &str = "SELECT id, public_id, token, merchant_id, order_id, request_hash, currency,
        CAST(amount_units AS TEXT) AS amount_units, description, success_url, tolerance_e6, status, expires_at_ms, paid_at_ms,
        created_at_ms, updated_at_ms, origin, callback_url, title, failure_url, payer_email, rate_on_pick, rate_fixed_at_ms FROM invoices";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceOptionRow {
    pub currency: String,
    pub address: String,
    pub address_id: i64,
    pub due_units: i128,
    pub rate: Option<String>,
}

/// A payment to an invoice: one deposit output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoicePaymentRow {
    pub currency: String,
    pub address: String,
    pub txid: String,
    pub vout: i64,
    pub units: i128,
    pub due_units: i128,
    pub status: DepositStatus,
    pub confirmations: i64,
    pub first_seen_ms: i64,
    /// Below the currency's minimum deposit: booked as dust, so it pays nothing.
    pub below_minimum: bool,
    pub deposit_id: i64,
    /// The fees its credit booked (none before it is credited).
    pub fee_units: Option<i128>,
    pub exchange_fee_units: Option<i128>,
}

impl InvoicePaymentRow {
    /// This payment as the invoice machine counts it; `None` below the minimum.
    pub fn counted(&self) -> Option<Payment> {
        (!self.below_minimum).then(|| Payment {
            currency: self.currency.clone(),
            due_units: self.due_units,
            units: self.units,
            status: self.status,
            first_seen_ms: self.first_seen_ms,
        })
    }
}

pub(crate) const PAYMENTS_SQL: &str = "SELECT o.currency, a.address, d.txid, d.vout, CAST(d.amount_units AS TEXT), CAST(o.due_units AS TEXT),
        d.status, d.confirmations, d.first_seen_at_ms, CAST(o.min_units AS TEXT), d.id, CAST(d.fee_units AS TEXT),
        CAST(d.exchange_fee_units AS TEXT)
     FROM deposits d JOIN invoice_options o ON o.address_id = d.address_id JOIN deposit_addresses a ON a.id = d.address_id
     WHERE o.invoice_id = $1 ORDER BY d.id";

/// An invoice's options: currency, address, address id, due units, rate.
pub(crate) const OPTIONS_SQL: &str = "SELECT o.currency, a.address, a.id, CAST(o.due_units AS TEXT), o.rate FROM invoice_options o
     JOIN deposit_addresses a ON a.id = o.address_id WHERE o.invoice_id = $1 ORDER BY o.currency";

pub(crate) type OptionTuple = (String, String, i64, String, Option<String>);

pub(crate) type PaymentTuple = (String, String, String, i64, String, String, String, i64, i64, String, i64, Option<String>, Option<String>);

pub(crate) fn payment_from(t: PaymentTuple) -> Result<InvoicePaymentRow> {
    let status = DepositStatus::parse(&t.6).ok_or_else(|| StoreError::Corrupt(format!("deposit {}:{}: unknown status {:?}", t.2, t.3, t.6)))?;
    Ok(InvoicePaymentRow {
        currency: t.0,
        address: t.1,
        txid: t.2,
        vout: t.3,
        units: parse_units(&t.4, "payment amount")?,
        due_units: parse_units(&t.5, "invoice due amount")?,
        status,
        confirmations: t.7,
        first_seen_ms: t.8,
        below_minimum: parse_units(&t.4, "payment amount")? < parse_units(&t.9, "invoice minimum")?,
        deposit_id: t.10,
        fee_units: t.11.as_deref().map(|u| parse_units(u, "deposit fee")).transpose()?,
        exchange_fee_units: t.12.as_deref().map(|u| parse_units(u, "exchange fee")).transpose()?,
    })
}

/// The status an invoice has now, from its row and payments, when it changed.
pub(crate) fn restate(inv: &InvoiceRow, payments: &[InvoicePaymentRow], now: i64) -> Option<InvoiceChange> {
    let pays: Vec<Payment> = payments.iter().filter_map(InvoicePaymentRow::counted).collect();
    inv.state().restate(&pays, now)
}

/// The event of an invoice's change, with its options and every payment.
pub(crate) fn change_event(inv: &InvoiceRow, change: &InvoiceChange, options: &[OptionTuple], payments: &[InvoicePaymentRow]) -> NewEvent {
    let (new, paid_at) = (change.status, change.paid_at_ms);
    NewEvent {
        merchant_id: inv.merchant_id,
        event_type: change.event.into(),
        object_kind: "invoice".into(),
        object_id: inv.id,
        origin: inv.origin.clone(),
        callback_url: inv.callback_url.clone(),
        // Everything a dialect's callback shows: the options and every payment.
        data: json!({
            "id": inv.public_id, "order_id": inv.order_id, "status": new.as_str(), "previous_status": inv.status.as_str(),
            "currency": inv.currency, "amount_units": inv.amount_units.to_string(), "expires_at_ms": inv.expires_at_ms,
            "paid_at_ms": paid_at, "created_at_ms": inv.created_at_ms, "row_id": inv.id, "title": inv.title,
            "rate_fixed_at_ms": inv.rate_fixed_at_ms,
            "options": options.iter().map(|(currency, address, address_id, due, rate)| json!({"currency": currency, "address": address,
                "address_id": address_id, "due_units": due, "rate": rate})).collect::<Vec<_>>(),
            // The currency a dialect's callback reports in: the last counted payment's, or
            // the first option's.
            "source_currency": payments.iter().rev().find(|p| p.counted().is_some() && !matches!(p.status, DepositStatus::Dropped | DepositStatus::Reversed))
                .map(|p| p.currency.as_str()).or(options.first().map(|o| o.0.as_str())),
            "payments": payments.iter().map(|p| json!({"deposit_id": p.deposit_id, "currency": p.currency, "address": p.address, "txid": p.txid, "vout": p.vout,
                "amount_units": p.units.to_string(), "status": p.status.as_str(), "confirmations": p.confirmations,
                "counted": p.counted().is_some(), "fee_units": p.fee_units.map(|u| u.to_string()),
                "exchange_fee_units": p.exchange_fee_units.map(|u| u.to_string())})).collect::<Vec<_>>(),
        }),
        only_endpoint: None,
    }
}

/// Recomputes the invoices `$ids` inside the open transaction `$tx`, updating their
/// status and returning the events to write.
macro_rules! restate_invoices {
    ($tx:expr, $now:expr, $ids:expr) => {{
        let mut events: Vec<$crate::events::NewEvent> = Vec::new();
        let now = $now;
        for id in $ids {
            // Take the invoice's row lock first (a no-op write; PostgreSQL row lock,
            // SQLite already writes): two transactions restating one invoice run one
            // after the other, and the second sees the first's payments.
            sqlx::query("UPDATE invoices SET updated_at_ms = updated_at_ms WHERE id = $1").bind(id).execute(&mut *$tx).await?;
            let sql = format!("{} WHERE id = $1", $crate::invoices::INVOICE_COLUMNS);
            let rec: Option<$crate::invoices::InvoiceRecord> = sqlx::query_as(&sql).bind(id).fetch_optional(&mut *$tx).await?;
            let Some(rec) = rec else { continue };
            let inv = $crate::invoices::InvoiceRow::try_from(rec)?;
            let rows: Vec<$crate::invoices::PaymentTuple> = sqlx::query_as($crate::invoices::PAYMENTS_SQL).bind(id).fetch_all(&mut *$tx).await?;
            let payments = rows.into_iter().map($crate::invoices::payment_from).collect::<$crate::Result<Vec<_>>>()?;
            if let Some(change) = $crate::invoices::restate(&inv, &payments, now) {
                let n = sqlx::query(
                    "UPDATE invoices SET status = $1, paid_at_ms = $2, updated_at_ms = $3 WHERE id = $4 AND status = $5")
                    .bind(change.status.as_str())
                    .bind(change.paid_at_ms)
                    .bind(now)
                    .bind(id)
                    .bind(inv.status.as_str())
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    // Its options are read only for the event of a change.
                    let options: Vec<$crate::invoices::OptionTuple> =
                        sqlx::query_as($crate::invoices::OPTIONS_SQL).bind(id).fetch_all(&mut *$tx).await?;
                    events.push($crate::invoices::change_event(&inv, &change, &options, &payments));
                }
            }
        }
        events
    }};
}
pub(crate) use restate_invoices;


impl Store {
    /// Stores an invoice with its addresses and options in one transaction; a
    /// repeated order id is `Duplicate`.
    pub async fn insert_invoice(&self, inv: &NewInvoice) -> Result<InvoiceRow> {
        let now = self.now_ms();
        let n = self.numeric();
        let insert = format!(
            "INSERT INTO invoices (public_id, token, merchant_id, order_id, request_hash, currency, amount_units, description, success_url,
                 tolerance_e6, status, expires_at_ms, created_at_ms, updated_at_ms, origin, callback_url, title, failure_url, payer_email,
                 rate_on_pick, rate_fixed_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7{n}, $8, $9, $10, 'new', $11, $12, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id"
        );
        let option = format!(
            "INSERT INTO invoice_options (invoice_id, currency, address_id, due_units, rate, min_units) VALUES ($1, $2, $3, $4{n}, $5, $6{n})"
        );
        let id: i64 = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(&insert)
                .bind(&inv.public_id)
                .bind(&inv.token)
                .bind(inv.merchant.0)
                .bind(&inv.order_id)
                .bind(&inv.request_hash)
                .bind(&inv.currency)
                .bind(inv.amount_units.to_string())
                .bind(&inv.description)
                .bind(&inv.success_url)
                .bind(inv.tolerance_e6)
                .bind(inv.expires_at_ms)
                .bind(now)
                .bind(&inv.origin)
                .bind(&inv.callback_url)
                .bind(&inv.title)
                .bind(&inv.failure_url)
                .bind(&inv.payer_email)
                .bind(inv.rate_on_pick)
                .bind((!inv.rate_on_pick).then_some(now))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| duplicate_as(e, "an invoice with this order id"))?;
            for o in &inv.options {
                let address_id: i64 = sqlx::query_scalar(
                    "INSERT INTO deposit_addresses (merchant_id, currency, chain, address, label, created_at_ms, origin, callback_url, convert_to)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id")
                    .bind(inv.merchant.0)
                    .bind(&o.currency)
                    .bind(&o.chain)
                    .bind(&o.address)
                    .bind(inv.label.clone().unwrap_or_else(|| format!("invoice {}", inv.public_id)))
                    .bind(now)
                    .bind(&inv.address_origin)
                    .bind(&inv.callback_url)
                    .bind(&o.convert_to)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(&option)
                    .bind(id)
                    .bind(&o.currency)
                    .bind(address_id)
                    .bind(o.due_units.to_string())
                    .bind(&o.rate)
                    .bind(o.min_units.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            id
        });
        self.invoice_by_id(id).await?.ok_or(StoreError::NotFound { what: "invoice" })
    }

    /// `clause` compares a text column to $1 and merchant_id to $2.
    async fn invoice_where(&self, clause: &str, a: &str, merchant: i64) -> Result<Option<InvoiceRow>> {
        let sql = format!("{INVOICE_COLUMNS} WHERE {clause}");
        let r: Option<InvoiceRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(a).bind(merchant).fetch_optional(pool).await?);
        r.map(InvoiceRow::try_from).transpose()
    }

    async fn invoice_by_id(&self, id: i64) -> Result<Option<InvoiceRow>> {
        let sql = format!("{INVOICE_COLUMNS} WHERE id = $1");
        let r: Option<InvoiceRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        r.map(InvoiceRow::try_from).transpose()
    }

    pub async fn invoice(&self, merchant: MerchantId, public_id: &str) -> Result<Option<InvoiceRow>> {
        self.invoice_where("public_id = $1 AND merchant_id = $2", public_id, merchant.0).await
    }

    pub async fn invoice_by_order(&self, merchant: MerchantId, order_id: &str) -> Result<Option<InvoiceRow>> {
        self.invoice_where("order_id = $1 AND merchant_id = $2", order_id, merchant.0).await
    }

    /// The invoice of a payment page.
    pub async fn invoice_by_token(&self, token: &str) -> Result<Option<InvoiceRow>> {
        let sql = format!("{INVOICE_COLUMNS} WHERE token = $1");
        let r: Option<InvoiceRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(token).fetch_optional(pool).await?);
        r.map(InvoiceRow::try_from).transpose()
    }

    pub async fn invoices(&self, merchant: MerchantId, before_id: Option<i64>, limit: u32) -> Result<Vec<InvoiceRow>> {
        let sql = format!("{INVOICE_COLUMNS} WHERE merchant_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3");
        let r: Vec<InvoiceRecord> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).bind(before_id).bind(i64::from(limit)).fetch_all(pool).await?);
        r.into_iter().map(InvoiceRow::try_from).collect()
    }

    pub async fn invoice_options(&self, invoice_id: i64) -> Result<Vec<InvoiceOptionRow>> {
        let rows: Vec<OptionTuple> = on_pool!(self, pool => sqlx::query_as(OPTIONS_SQL).bind(invoice_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(currency, address, address_id, due, rate)| {
                Ok(InvoiceOptionRow { currency, address, address_id, due_units: parse_units(&due, "invoice due amount")?, rate })
            })
            .collect()
    }

    /// The rate an invoice fixed for payments to one of its addresses that it converts
    /// to `to`, and when the invoice expires(d); none while its rates are estimates
    /// (until the payer picks).
    pub async fn invoice_rate_of_address(&self, address_id: i64, to: &str) -> Result<Option<(String, i64)>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT o.rate, i.expires_at_ms FROM invoice_options o JOIN invoices i ON i.id = o.invoice_id
                 WHERE o.address_id = $1 AND i.currency = $2 AND o.rate IS NOT NULL AND i.rate_fixed_at_ms IS NOT NULL")
            .bind(address_id)
            .bind(to)
            .fetch_optional(pool)
            .await?))
    }

    /// Fixes the rates of an invoice that fixes them when the payer picks a currency:
    /// each option's due amount and rate, and the invoice's new expiry (the rate's
    /// window). Once only, while it is new and nothing was paid to it; false otherwise.
    pub async fn fix_invoice_rates(&self, invoice_id: i64, dues: &[(String, i128, Option<String>)], now: i64, expires_at_ms: i64) -> Result<bool> {
        let n = self.numeric();
        let option = format!("UPDATE invoice_options SET due_units = $1{n}, rate = $2 WHERE invoice_id = $3 AND currency = $4");
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let fixed = sqlx::query(
                "UPDATE invoices SET rate_fixed_at_ms = $1, expires_at_ms = $2, updated_at_ms = $1
                 WHERE id = $3 AND rate_on_pick AND rate_fixed_at_ms IS NULL AND status = 'new' AND expires_at_ms >= $1
                   AND NOT EXISTS (SELECT 1 FROM deposits d JOIN invoice_options o ON o.address_id = d.address_id WHERE o.invoice_id = $3)")
                .bind(now)
                .bind(expires_at_ms)
                .bind(invoice_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if fixed {
                for (currency, due, rate) in dues {
                    sqlx::query(&option).bind(due.to_string()).bind(rate).bind(invoice_id).bind(currency).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            fixed
        }))
    }

    pub async fn invoice_payments(&self, invoice_id: i64) -> Result<Vec<InvoicePaymentRow>> {
        let rows: Vec<PaymentTuple> = on_pool!(self, pool => sqlx::query_as(PAYMENTS_SQL).bind(invoice_id).fetch_all(pool).await?);
        rows.into_iter().map(payment_from).collect()
    }

    /// Expires unpaid invoices whose time is up, with their events; returns how many.
    pub async fn expire_invoices(&self) -> Result<usize> {
        let now = self.now_ms();
        // Not while a chain an invoice can be paid on lags: a payment may be waiting
        // in blocks its node has not seen yet.
        let due = "SELECT id FROM invoices WHERE status = 'new' AND expires_at_ms < $1
             AND NOT EXISTS (SELECT 1 FROM invoice_options o JOIN deposit_addresses a ON a.id = o.address_id
                 JOIN chain_state c ON c.chain = a.chain WHERE o.invoice_id = invoices.id AND c.lagging_since_ms IS NOT NULL)
             ORDER BY id LIMIT 500";
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let ids: Vec<i64> = sqlx::query_scalar(due).bind(now).fetch_all(&mut *tx).await?;
                let events = restate_invoices!(tx, now, ids);
                let n = write_events!(tx, self.write_ctx_at(now), events).len();
                tx.commit().await?;
                self.events_committed();
                n
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let ids: Vec<i64> = sqlx::query_scalar(&format!("{due} FOR UPDATE SKIP LOCKED")).bind(now).fetch_all(&mut *tx).await?;
                let events = restate_invoices!(tx, now, ids);
                let n = write_events!(tx, self.write_ctx_at(now), events).len();
                tx.commit().await?;
                self.events_committed();
                n
            }
        })
    }
}
