//! A merchant's transaction history: deposits and withdrawals listed together, for the
//! API dialects that show both as one list of transactions.

use kassa_core::ledger::MerchantId;
use kassa_core::transfers::TransferKind;
use kassa_core::withdrawal::WithdrawalState;

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
    /// Withdrawals: the fee charged. Deposits: the fee their credit booked (None until
    /// credited: the schedule gives the prospective fee).
    pub fee_units: Option<i128>,
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
    fee_units: Option<String>,
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
            fee_units: r.fee_units.as_deref().map(|f| parse_units(f, "transfer fee")).transpose()?,
            status: r.status,
            txid: r.txid,
            confirmations: r.confirmations,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

enum Bind {
    Int(i64),
    Text(String),
}

/// The query's rows as one table `t`: a branch per kind, each filtered on its own
/// table's columns (so its indexes serve), with numbered parameters in `binds`.
/// `None` when no row can match.
fn transfers_from(q: &TransferQuery, binds: &mut Vec<Bind>) -> Option<String> {
    let param = |b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        format!("${}", binds.len())
    };
    let mut branches = Vec::new();
    let receive_only = q.label.is_some() || q.invoice_id.is_some();
    if q.kind != Some(TransferKind::Send) && q.receive_statuses != Some(&[]) {
        let mut cond = vec!["1 = 1".to_string()];
        if let Some(m) = q.merchant {
            cond.push(format!("d.merchant_id = {}", param(Bind::Int(m.0), binds)));
        }
        if let Some(c) = &q.currency {
            cond.push(format!("d.currency = {}", param(Bind::Text(c.clone()), binds)));
        }
        if let Some(l) = &q.label {
            cond.push(format!("a.label = {}", param(Bind::Text(l.clone()), binds)));
        }
        if let Some(i) = q.invoice_id {
            cond.push(format!("d.address_id IN (SELECT address_id FROM invoice_options WHERE invoice_id = {})", param(Bind::Int(i), binds)));
        }
        if let Some(id) = q.row_id {
            cond.push(format!("d.id = {}", param(Bind::Int(id), binds)));
        }
        if let Some(list) = q.receive_statuses {
            cond.push(format!("d.status IN ({})", quoted(list)));
        }
        branches.push(format!(
            "SELECT 'receive' AS kind, d.id AS id, d.merchant_id AS merchant_id, d.currency AS currency, a.address AS address,
                a.label AS label, CAST(NULL AS TEXT) AS description, CAST(d.amount_units AS TEXT) AS amount_units, CAST(d.fee_units AS TEXT) AS fee_units,
                d.status AS status, d.txid AS txid, d.confirmations AS confirmations, d.first_seen_at_ms AS created_at_ms,
                d.updated_at_ms AS updated_at_ms
             FROM deposits d JOIN deposit_addresses a ON a.id = d.address_id WHERE {}",
            cond.join(" AND ")
        ));
    }
    if q.kind != Some(TransferKind::Receive) && !receive_only && q.send_statuses != Some(&[]) {
        // A withdrawal still `requested` is not yet holding funds: not a transaction yet.
        let mut cond = vec![format!("w.status <> '{}'", WithdrawalState::NEW.status)];
        if let Some(m) = q.merchant {
            cond.push(format!("w.merchant_id = {}", param(Bind::Int(m.0), binds)));
        }
        if let Some(c) = &q.currency {
            cond.push(format!("w.currency = {}", param(Bind::Text(c.clone()), binds)));
        }
        if let Some(id) = q.row_id {
            cond.push(format!("w.id = {}", param(Bind::Int(id), binds)));
        }
        if let Some(list) = q.send_statuses {
            cond.push(format!("w.status IN ({})", quoted(list)));
        }
        branches.push(format!(
            "SELECT 'send' AS kind, w.id AS id, w.merchant_id AS merchant_id, w.currency AS currency, w.address AS address,
                CAST(NULL AS TEXT) AS label, w.description AS description, CAST(w.amount_units AS TEXT) AS amount_units,
                CAST(w.fee_units AS TEXT) AS fee_units, w.status AS status, w.txid AS txid, w.confirmations AS confirmations,
                w.created_at_ms AS created_at_ms, w.updated_at_ms AS updated_at_ms
             FROM withdrawals w WHERE {}",
            cond.join(" AND ")
        ));
    }
    (!branches.is_empty()).then(|| format!("({}) t", branches.join(" UNION ALL ")))
}

fn quoted(list: &[&str]) -> String {
    list.iter().map(|s| format!("'{}'", s.replace('\'', "''"))).collect::<Vec<_>>().join(", ")
}

macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for b in $binds {
            query = match b {
                Bind::Int(v) => query.bind(*v),
                Bind::Text(v) => query.bind(v.clone()),
            };
        }
        query
    }};
}

impl Store {
    /// Deposits and withdrawals matching `q`, by creation time (newest first unless
    /// `ascending`), with `offset` and `limit`.
    pub async fn transfers(&self, q: &TransferQuery) -> Result<Vec<TransferRow>> {
        let mut binds = Vec::new();
        let Some(from) = transfers_from(q, &mut binds) else { return Ok(Vec::new()) };
        let order = if q.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT t.kind, t.id, t.merchant_id, t.currency, t.address, t.label, t.description, t.amount_units, t.fee_units, t.status,
                    t.txid, t.confirmations, t.created_at_ms, t.updated_at_ms
             FROM {from} ORDER BY t.created_at_ms {order}, t.kind {order}, t.id {order} LIMIT {} OFFSET {}",
            q.limit, q.offset
        );
        let rows: Vec<TransferRecord> = on_pool!(self, pool => bind_all!(sqlx::query_as(&sql), &binds).fetch_all(pool).await?);
        rows.into_iter().map(TransferRow::try_from).collect()
    }

    /// How many transfers match `q` (its order, limit and offset aside).
    pub async fn count_transfers(&self, q: &TransferQuery) -> Result<i64> {
        let mut binds = Vec::new();
        let Some(from) = transfers_from(q, &mut binds) else { return Ok(0) };
        let sql = format!("SELECT COUNT(*) FROM {from}");
        Ok(on_pool!(self, pool => bind_all!(sqlx::query_scalar(&sql), &binds).fetch_one(pool).await?))
    }
}
