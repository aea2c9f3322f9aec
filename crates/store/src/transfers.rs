//! A merchant's transaction history: deposits and withdrawals listed together, for the
//! API dialects that show both as one list of transactions.

use kassa_core::ledger::MerchantId;
use kassa_core::transfers::TransferKind;

use crate::{on_pool, parse_units, Result, Store, StoreError};

/// Which transfers to list. Status lists are matched per kind (a deposit's
/// `confirmed` is not a withdrawal's); `None` lists any status.
#[derive(Clone, Debug, Default)]
pub struct TransferQuery {
    pub merchant: Option<MerchantId>,
    pub currency: Option<String>,
    pub kind: Option<TransferKind>,
    pub receive_statuses: Option<&'static [&'static str]>,
    pub send_statuses: Option<&'static [&'static str]>,
    /// Deposits to addresses with this label.
    pub label: Option<String>,
    /// Deposits to this invoice's addresses.
    pub invoice_id: Option<i64>,
    /// One row: the deposit or withdrawal with this row id (with `kind`).
    pub row_id: Option<i64>,
    pub ascending: bool,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub kind: TransferKind,
    pub row_id: i64,
    pub merchant_id: i64,
    pub currency: String,
    pub address: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub amount_units: i128,
    /// Withdrawals: the fee charged. Deposits: 0 (their fee follows from the schedule).
    pub fee_units: i128,
    pub status: String,
    pub txid: Option<String>,
    pub confirmations: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct TransferRecord {
    kind: String,
    id: i64,
    merchant_id: i64,
    currency: String,
    address: String,
    label: Option<String>,
    description: Option<String>,
    amount_units: String,
    fee_units: String,
    status: String,
    txid: Option<String>,
    confirmations: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<TransferRecord> for TransferRow {
    type Error = StoreError;
    fn try_from(r: TransferRecord) -> Result<Self> {
        Ok(TransferRow {
            kind: TransferKind::parse(&r.kind).ok_or_else(|| StoreError::Corrupt(format!("transfer kind {:?}", r.kind)))?,
            row_id: r.id,
            merchant_id: r.merchant_id,
            currency: r.currency,
            address: r.address,
            label: r.label,
            description: r.description,
            amount_units: parse_units(&r.amount_units, "transfer amount")?,
            fee_units: parse_units(&r.fee_units, "transfer fee")?,
            status: r.status,
            txid: r.txid,
            confirmations: r.confirmations,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

/// Both kinds with the same columns; $1 merchant, $2 currency, $3 label, $4 invoice, $5 row id.
const TRANSFERS: &str = "(SELECT 'receive' AS kind, d.id AS id, d.merchant_id AS merchant_id, d.currency AS currency, a.address AS address,
        a.label AS label, CAST(NULL AS TEXT) AS description, CAST(d.amount_units AS TEXT) AS amount_units, '0' AS fee_units,
        d.status AS status, d.txid AS txid, d.confirmations AS confirmations, d.first_seen_at_ms AS created_at_ms,
        d.updated_at_ms AS updated_at_ms, d.address_id AS address_id
     FROM deposits d JOIN deposit_addresses a ON a.id = d.address_id WHERE ($1 IS NULL OR d.merchant_id = $1)
     UNION ALL
     SELECT 'send', w.id, w.merchant_id, w.currency, w.address, NULL, w.description, CAST(w.amount_units AS TEXT), CAST(w.fee_units AS TEXT),
        w.status, w.txid, w.confirmations, w.created_at_ms, w.updated_at_ms, NULL
     FROM withdrawals w WHERE ($1 IS NULL OR w.merchant_id = $1) AND w.status <> 'requested') t
     WHERE ($2 IS NULL OR t.currency = $2) AND ($3 IS NULL OR t.label = $3)
       AND ($4 IS NULL OR t.address_id IN (SELECT address_id FROM invoice_options WHERE invoice_id = $4))
       AND ($5 IS NULL OR t.id = $5)";

fn quoted(list: &[&str]) -> String {
    list.iter().map(|s| format!("'{}'", s.replace('\'', "''"))).collect::<Vec<_>>().join(", ")
}

/// The kind and status conditions (from the code's own constants, never from input).
fn kind_clause(q: &TransferQuery) -> String {
    let mut clause = String::new();
    if let Some(kind) = q.kind {
        clause.push_str(&format!(" AND t.kind = '{}'", kind.as_str()));
    }
    if q.receive_statuses.is_some() || q.send_statuses.is_some() {
        let side = |kind: &str, list: Option<&[&str]>| match list {
            Some([]) => "1 = 0".to_string(),
            Some(l) => format!("(t.kind = '{kind}' AND t.status IN ({}))", quoted(l)),
            None => format!("t.kind = '{kind}'"),
        };
        clause.push_str(&format!(" AND ({} OR {})", side("receive", q.receive_statuses), side("send", q.send_statuses)));
    }
    clause
}

impl Store {
    /// Deposits and withdrawals matching `q`, by creation time (newest first unless
    /// `ascending`), with `offset` and `limit`.
    pub async fn transfers(&self, q: &TransferQuery) -> Result<Vec<TransferRow>> {
        let order = if q.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT t.kind, t.id, t.merchant_id, t.currency, t.address, t.label, t.description, t.amount_units, t.fee_units, t.status,
                    t.txid, t.confirmations, t.created_at_ms, t.updated_at_ms
             FROM {TRANSFERS}{} ORDER BY t.created_at_ms {order}, t.kind {order}, t.id {order} LIMIT $6 OFFSET $7",
            kind_clause(q)
        );
        let rows: Vec<TransferRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(q.merchant.map(|m| m.0))
            .bind(&q.currency)
            .bind(&q.label)
            .bind(q.invoice_id)
            .bind(q.row_id)
            .bind(i64::from(q.limit))
            .bind(i64::from(q.offset))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TransferRow::try_from).collect()
    }

    /// How many transfers match `q` (its order, limit and offset aside).
    pub async fn count_transfers(&self, q: &TransferQuery) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {TRANSFERS}{}", kind_clause(q));
        Ok(on_pool!(self, pool => sqlx::query_scalar(&sql)
            .bind(q.merchant.map(|m| m.0))
            .bind(&q.currency)
            .bind(&q.label)
            .bind(q.invoice_id)
            .bind(q.row_id)
            .fetch_one(pool)
            .await?))
    }
}
