//! The ledger's persistence: accounts, balanced transactions and their entries, holds.
//!
//! Writes go through `write_batch`: many transactions in one database transaction,
//! which is how the ledger reaches its throughput with durable commits. Inside that
//! database transaction the touched accounts are locked (PostgreSQL: `FOR UPDATE` in
//! id order; SQLite: `BEGIN IMMEDIATE` takes the single write lock), their balances are
//! read, every request is applied in memory by `kassa_core::ledger::apply` (which
//! refuses overdrafts), and the results are written back before the commit. So the
//! non-negative check and the write are one database transaction on both backends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures_util::TryStreamExt;
use kassa_core::ledger::{
    self, AccountId, AccountKey, AccountState, Action, HoldStatus, Leg, LedgerError, MerchantId, Resolved,
    TxId, TxKind, TxRequest, UserId,
};
use kassa_core::CurrencyCode;
use sqlx::{PgPool, Row, SqlitePool};

use crate::{on_pool, parse_units, Db, Result, Store, StoreError};

/// The result of one request of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOutcome {
    pub tx_id: TxId,
    /// True when the idempotency key had already been used for this same transaction.
    pub replayed: bool,
}

pub type BatchOutcome = Vec<std::result::Result<TxOutcome, LedgerError>>;

/// How often a batch is retried after a deadlock or a concurrent duplicate key.
const MAX_BATCH_ATTEMPTS: u32 = 8;
/// Rows per multi-row statement (SQLite allows 32766 bound values).
const ROWS_PER_STATEMENT: usize = 2000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountBalance {
    pub account: AccountId,
    pub currency: String,
    pub balance: i128,
    pub pending_debits: i128,
    pub pending_credits: i128,
}

impl AccountBalance {
    pub fn available(&self) -> i128 {
        self.balance - self.pending_debits
    }
}

#[derive(Clone, Debug)]
pub struct HistoryQuery {
    pub merchant: MerchantId,
    pub user: Option<UserId>,
    pub currency: Option<String>,
    /// Only entries with a smaller id (paging backwards from newest).
    pub before_entry: Option<i64>,
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub entry_id: i64,
    pub tx_id: i64,
    pub kind: String,
    pub currency: String,
    pub units: i128,
    pub pending: bool,
    pub hold_status: Option<String>,
    pub counterparty: String,
    pub memo: String,
    pub created_at_ms: i64,
}

/// One account as stored, for the invariant checker.
#[derive(Clone, Debug)]
pub struct CheckAccount {
    pub id: AccountId,
    pub code: String,
    pub currency: String,
    pub allow_negative: bool,
    pub balance: i128,
    pub pending_debits: i128,
    pub pending_credits: i128,
}

/// Sums recomputed from every entry, for the invariant checker.
#[derive(Clone, Debug, Default)]
pub struct CheckEntry {
    pub posted: i128,
    pub pending_debits: i128,
    pub pending_credits: i128,
    pub entries: u64,
}

#[derive(Clone, Debug, Default)]
pub struct CheckData {
    pub accounts: Vec<CheckAccount>,
    /// Per account, the sums of its entries.
    pub sums: BTreeMap<AccountId, CheckEntry>,
    /// Per currency, the sum of all posted entries (must be zero).
    pub currency_totals: BTreeMap<String, i128>,
    /// Transactions whose entries do not sum to zero per currency.
    pub unbalanced_transactions: Vec<(i64, String, i128)>,
    /// Entries whose currency differs from their account's.
    pub currency_mismatches: Vec<(i64, AccountId)>,
    /// Entries whose transaction, account or peer account does not exist ("an account", …).
    pub dangling_entries: Vec<(i64, &'static str)>,
    pub transactions: u64,
    pub entries: u64,
}

// ---- planning (pure) ----

struct LoadedHold {
    status: Option<HoldStatus>,
    kind: TxKind,
    legs: Vec<Leg>,
}

struct NewTx {
    request: usize,
    kind: TxKind,
    hold_id: Option<i64>,
    hold_status: Option<HoldStatus>,
    entries: Vec<(AccountId, AccountId, i128)>,
    currencies: Vec<CurrencyCode>,
    pending: bool,
}

struct Plan {
    results: Vec<Option<std::result::Result<TxOutcome, LedgerError>>>,
    new_txs: Vec<NewTx>,
    touched: BTreeSet<AccountId>,
    hold_updates: Vec<(i64, HoldStatus)>,
}

fn plan(
    reqs: &[TxRequest],
    hashes: &[[u8; 32]],
    existing: &HashMap<String, (i64, Vec<u8>)>,
    holds: &mut HashMap<i64, LoadedHold>,
    accounts: &mut BTreeMap<AccountId, AccountState>,
) -> Plan {
    let mut plan = Plan { results: Vec::with_capacity(reqs.len()), new_txs: Vec::new(), touched: BTreeSet::new(), hold_updates: Vec::new() };
    // Earlier requests of this batch by key: (request index, hash).
    let mut in_batch: HashMap<&str, usize> = HashMap::new();
    for (i, req) in reqs.iter().enumerate() {
        let result = (|| {
            req.validate()?;
            if let Some((id, hash)) = existing.get(&req.idempotency_key) {
                return if hash.as_slice() == hashes[i] {
                    Ok(Some(TxOutcome { tx_id: TxId(*id), replayed: true }))
                } else {
                    Err(LedgerError::IdempotencyConflict { key: req.idempotency_key.clone() })
                };
            }
            if let Some(&first) = in_batch.get(req.idempotency_key.as_str()) {
                return if hashes[first] == hashes[i] {
                    // A placeholder, resolved after the insert to whatever the first got.
                    Ok(Some(TxOutcome { tx_id: TxId(-(first as i64) - 1), replayed: true }))
                } else {
                    Err(LedgerError::IdempotencyConflict { key: req.idempotency_key.clone() })
                };
            }
            let (resolved_legs, kind, hold_id) = match &req.action {
                Action::Transfer(legs) => (legs.clone(), TxKind::Transfer, None),
                Action::Hold(legs) => (legs.clone(), TxKind::Hold, None),
                Action::Post { hold } | Action::Void { hold } => {
                    let loaded = holds.get(&hold.0).filter(|h| h.kind == TxKind::Hold);
                    let loaded = loaded.ok_or(LedgerError::HoldNotFound { hold: *hold })?;
                    match loaded.status {
                        Some(HoldStatus::Pending) => {}
                        Some(status) => return Err(LedgerError::HoldNotPending { hold: *hold, status }),
                        None => return Err(LedgerError::HoldNotFound { hold: *hold }),
                    }
                    (loaded.legs.clone(), req.action.kind(), Some(hold.0))
                }
            };
            let resolved = match kind {
                TxKind::Transfer => Resolved::Transfer(&resolved_legs),
                TxKind::Hold => Resolved::Hold(&resolved_legs),
                TxKind::Post => Resolved::Post(&resolved_legs),
                TxKind::Void => Resolved::Void(&resolved_legs),
            };
            let effect = ledger::apply(accounts, resolved)?;
            if let Some(hold) = hold_id {
                let status = if kind == TxKind::Post { HoldStatus::Posted } else { HoldStatus::Voided };
                holds.get_mut(&hold).expect("checked above").status = Some(status);
                plan.hold_updates.push((hold, status));
            }
            for leg in &resolved_legs {
                plan.touched.insert(leg.from);
                plan.touched.insert(leg.to);
            }
            // A void moves nothing: it writes no entries, only the hold's new status.
            let entries = if kind == TxKind::Void {
                Vec::new()
            } else {
                resolved_legs.iter().flat_map(|l| [(l.from, l.to, -l.units), (l.to, l.from, l.units)]).collect()
            };
            let currencies = if kind == TxKind::Void {
                Vec::new()
            } else {
                resolved_legs.iter().flat_map(|l| [l.currency.clone(), l.currency.clone()]).collect()
            };
            debug_assert_eq!(effect.entries.len(), resolved_legs.len() * 2);
            plan.new_txs.push(NewTx {
                request: i,
                kind,
                hold_id,
                hold_status: (kind == TxKind::Hold).then_some(HoldStatus::Pending),
                entries,
                currencies,
                pending: effect.pending,
            });
            Ok(None)
        })();
        if !existing.contains_key(&req.idempotency_key) {
            in_batch.entry(req.idempotency_key.as_str()).or_insert(i);
        }
        plan.results.push(match result {
            Ok(Some(outcome)) => Some(Ok(outcome)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        });
    }
    plan
}

fn hold_legs_from_entries(rows: Vec<(i64, i64, i64, String, i128)>, holds: &mut HashMap<i64, LoadedHold>) -> Result<()> {
    for (tx_id, account, peer, currency, units) in rows {
        if units >= 0 {
            continue;
        }
        let currency = CurrencyCode::parse(&currency).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Some(h) = holds.get_mut(&tx_id) {
            h.legs.push(Leg { from: AccountId(account), to: AccountId(peer), currency, units: -units });
        }
    }
    Ok(())
}

/// Requests that repeat an earlier key of the same batch were given a placeholder
/// (`-(index+1)`); they get the first request's outcome (as a replay) once known.
fn resolve_in_batch_replays(results: &mut [Option<std::result::Result<TxOutcome, LedgerError>>]) {
    for i in 0..results.len() {
        if let Some(Ok(TxOutcome { tx_id: TxId(id), replayed: true })) = results[i] {
            if id < 0 {
                let first = (-id - 1) as usize;
                results[i] = Some(match &results[first] {
                    Some(Ok(o)) => Ok(TxOutcome { tx_id: o.tx_id, replayed: true }),
                    Some(Err(e)) => Err(e.clone()),
                    None => unreachable!("the first request of a key always has a result"),
                });
            }
        }
    }
}

enum Attempt {
    Done(BatchOutcome),
    Retry(&'static str),
}

fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        // PostgreSQL: serialization_failure, deadlock_detected.
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001") | Some("40P01")),
        _ => false,
    }
}

fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

impl Store {
    /// The id of the account for `key`, creating it on first use.
    pub async fn ensure_account(&self, key: &AccountKey) -> Result<AccountId> {
        let code = key.code();
        let sql_insert = "INSERT INTO accounts (code, currency, kind, merchant_id, user_id, allow_negative, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (code) DO NOTHING";
        let id: i64 = on_pool!(self, pool => {
            sqlx::query(sql_insert)
                .bind(&code)
                .bind(key.currency().as_str())
                .bind(key.kind())
                .bind(key.merchant().map(|m| m.0))
                .bind(key.user().map(|u| u.0))
                .bind(key.allows_negative())
                .bind(self.now_ms())
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT id FROM accounts WHERE code = $1").bind(&code).fetch_one(pool).await?
        });
        Ok(AccountId(id))
    }

    /// Balances of a merchant's own accounts (`user` = None) or of one of its users.
    pub async fn balances(&self, merchant: MerchantId, user: Option<UserId>) -> Result<Vec<AccountBalance>> {
        let rows: Vec<(i64, String, String, String, String)> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT id, currency, balance, pending_debits, pending_credits FROM accounts
                     WHERE merchant_id = $1 AND user_id IS $2 AND kind IN ('merchant', 'user') ORDER BY currency",
                )
                .bind(merchant.0)
                .bind(user.map(|u| u.0))
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT id, currency, balance::text, pending_debits::text, pending_credits::text FROM accounts
                     WHERE merchant_id = $1 AND user_id IS NOT DISTINCT FROM $2 AND kind IN ('merchant', 'user')
                     ORDER BY currency",
                )
                .bind(merchant.0)
                .bind(user.map(|u| u.0))
                .fetch_all(pool)
                .await?
            }
        };
        rows.into_iter()
            .map(|(id, currency, b, pd, pc)| {
                Ok(AccountBalance {
                    account: AccountId(id),
                    currency,
                    balance: parse_units(&b, "balance")?,
                    pending_debits: parse_units(&pd, "pending_debits")?,
                    pending_credits: parse_units(&pc, "pending_credits")?,
                })
            })
            .collect()
    }

    /// One account's state (for checks and tests).
    pub async fn account_state(&self, id: AccountId) -> Result<Option<AccountState>> {
        let mut map = match &self.db {
            Db::Sqlite(pool) => {
                let mut c = pool.acquire().await?;
                load_accounts_sqlite(&mut c, &[id]).await?
            }
            Db::Postgres(pool) => {
                let mut c = pool.acquire().await?;
                load_accounts_pg(&mut c, &[id], false).await?
            }
        };
        Ok(map.remove(&id))
    }

    /// A merchant's (or user's) ledger entries, newest first.
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let units = match self.db {
            Db::Sqlite(_) => "e.units",
            Db::Postgres(_) => "e.units::text",
        };
        let user_match = match self.db {
            Db::Sqlite(_) => "a.user_id IS $2",
            Db::Postgres(_) => "a.user_id IS NOT DISTINCT FROM $2",
        };
        let sql = format!(
            "SELECT e.id, e.tx_id, t.kind, e.currency, {units}, e.pending, h.hold_status, p.code, t.memo, t.created_at_ms
             FROM ledger_entries e
             JOIN accounts a ON a.id = e.account_id
             JOIN accounts p ON p.id = e.peer_account_id
             JOIN ledger_transactions t ON t.id = e.tx_id
             LEFT JOIN ledger_transactions h ON h.id = CASE WHEN t.kind = 'hold' THEN t.id ELSE t.hold_id END
             WHERE a.merchant_id = $1 AND {user_match} AND a.kind IN ('merchant', 'user')
               AND ($3 IS NULL OR e.currency = $3) AND ($4 IS NULL OR e.id < $4)
             ORDER BY e.id DESC LIMIT $5"
        );
        type Row = (i64, i64, String, String, String, bool, Option<String>, String, String, i64);
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(q.merchant.0)
            .bind(q.user.map(|u| u.0))
            .bind(&q.currency)
            .bind(q.before_entry)
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|(entry_id, tx_id, kind, currency, units, pending, hold_status, counterparty, memo, created_at_ms)| {
                Ok(HistoryEntry {
                    entry_id,
                    tx_id,
                    kind,
                    currency,
                    units: parse_units(&units, "entry units")?,
                    pending,
                    hold_status,
                    counterparty,
                    memo,
                    created_at_ms,
                })
            })
            .collect()
    }

    /// Writes a batch of ledger transactions in one database transaction. Each request
    /// gets its own outcome: refused ones (overdraft, conflicting key, …) change
    /// nothing and do not stop the others.
    pub async fn write_batch(&self, reqs: &[TxRequest]) -> Result<BatchOutcome> {
        let hashes: Vec<[u8; 32]> = reqs.iter().map(|r| r.content_hash()).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &self.db {
                Db::Sqlite(pool) => write_batch_sqlite(pool, reqs, &hashes, self.now_ms()).await,
                Db::Postgres(pool) => write_batch_pg(pool, reqs, &hashes, self.now_ms()).await,
            };
            match result {
                Ok(Attempt::Done(outcome)) => return Ok(outcome),
                Ok(Attempt::Retry(why)) if attempt < MAX_BATCH_ATTEMPTS => {
                    tracing::debug!(attempt, why, "retrying ledger batch");
                }
                Err(StoreError::Database(e)) if is_retryable(&e) && attempt < MAX_BATCH_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "retrying ledger batch");
                }
                Ok(Attempt::Retry(why)) => {
                    return Err(StoreError::Corrupt(format!("ledger batch kept conflicting: {why}")))
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
        }
    }

    /// Everything the invariant checker needs: stored accounts, and sums recomputed
    /// from every entry (streamed in transaction order, so memory stays bounded by the
    /// number of accounts).
    pub async fn check_data(&self) -> Result<CheckData> {
        let mut data = CheckData::default();
        let (accounts_sql, entries_sql) = match self.db {
            Db::Sqlite(_) => (
                "SELECT id, code, currency, allow_negative, balance, pending_debits, pending_credits FROM accounts ORDER BY id",
                "SELECT e.id, e.tx_id, e.account_id, e.currency, e.units, e.pending, t.hold_status, a.currency,
                        t.id IS NOT NULL, p.id IS NOT NULL
                 FROM ledger_entries e LEFT JOIN ledger_transactions t ON t.id = e.tx_id
                 LEFT JOIN accounts a ON a.id = e.account_id LEFT JOIN accounts p ON p.id = e.peer_account_id
                 ORDER BY e.tx_id, e.id",
            ),
            Db::Postgres(_) => (
                "SELECT id, code, currency, allow_negative, balance::text, pending_debits::text, pending_credits::text
                 FROM accounts ORDER BY id",
                "SELECT e.id, e.tx_id, e.account_id, e.currency, e.units::text, e.pending, t.hold_status, a.currency,
                        t.id IS NOT NULL, p.id IS NOT NULL
                 FROM ledger_entries e LEFT JOIN ledger_transactions t ON t.id = e.tx_id
                 LEFT JOIN accounts a ON a.id = e.account_id LEFT JOIN accounts p ON p.id = e.peer_account_id
                 ORDER BY e.tx_id, e.id",
            ),
        };
        let rows: Vec<(i64, String, String, bool, String, String, String)> =
            on_pool!(self, pool => sqlx::query_as(accounts_sql).fetch_all(pool).await?);
        for (id, code, currency, allow_negative, b, pd, pc) in rows {
            data.accounts.push(CheckAccount {
                id: AccountId(id),
                code,
                currency,
                allow_negative,
                balance: parse_units(&b, "balance")?,
                pending_debits: parse_units(&pd, "pending_debits")?,
                pending_credits: parse_units(&pc, "pending_credits")?,
            });
        }
        data.transactions = on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ledger_transactions")
            .fetch_one(pool).await?) as u64;
        let mut current_tx: Option<i64> = None;
        let mut tx_sums: BTreeMap<String, i128> = BTreeMap::new();
        let finish_tx = |tx: Option<i64>, sums: &mut BTreeMap<String, i128>, out: &mut Vec<(i64, String, i128)>| {
            if let Some(tx) = tx {
                for (currency, sum) in std::mem::take(sums) {
                    if sum != 0 {
                        out.push((tx, currency, sum));
                    }
                }
            }
        };
        on_pool!(self, pool => {
            let mut stream = sqlx::query(entries_sql).fetch(pool);
            while let Some(row) = stream.try_next().await? {
                let entry_id: i64 = row.try_get(0)?;
                let tx_id: i64 = row.try_get(1)?;
                let account = AccountId(row.try_get(2)?);
                let currency: String = row.try_get(3)?;
                let units = parse_units(&row.try_get::<String, _>(4)?, "entry units")?;
                let pending: bool = row.try_get(5)?;
                let hold_status: Option<String> = row.try_get(6)?;
                let account_currency: Option<String> = row.try_get(7)?;
                let (tx_exists, peer_exists): (bool, bool) = (row.try_get(8)?, row.try_get(9)?);
                for (exists, what) in [(tx_exists, "a transaction"), (account_currency.is_some(), "an account"), (peer_exists, "a peer account")] {
                    if !exists {
                        data.dangling_entries.push((entry_id, what));
                    }
                }
                if current_tx != Some(tx_id) {
                    finish_tx(current_tx, &mut tx_sums, &mut data.unbalanced_transactions);
                    current_tx = Some(tx_id);
                }
                *tx_sums.entry(currency.clone()).or_default() += units;
                if account_currency.as_ref().is_some_and(|c| *c != currency) {
                    data.currency_mismatches.push((entry_id, account));
                }
                let sums = data.sums.entry(account).or_default();
                sums.entries += 1;
                data.entries += 1;
                if !pending {
                    sums.posted += units;
                    *data.currency_totals.entry(currency).or_default() += units;
                } else if hold_status.as_deref() == Some("pending") {
                    if units < 0 { sums.pending_debits -= units } else { sums.pending_credits += units }
                }
            }
        });
        finish_tx(current_tx, &mut tx_sums, &mut data.unbalanced_transactions);
        Ok(data)
    }
}

// ---- SQLite ----

async fn load_accounts_sqlite(
    conn: &mut sqlx::SqliteConnection,
    ids: &[AccountId],
) -> Result<BTreeMap<AccountId, AccountState>> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, currency, allow_negative, balance, pending_debits, pending_credits FROM accounts WHERE id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query_as::<_, (i64, String, bool, String, String, String)>(&sql);
        for id in chunk {
            q = q.bind(id.0);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let state = account_from_row(row)?;
            out.insert(state.id, state);
        }
    }
    Ok(out)
}

fn account_from_row((id, currency, allow_negative, b, pd, pc): (i64, String, bool, String, String, String)) -> Result<AccountState> {
    Ok(AccountState {
        id: AccountId(id),
        currency: CurrencyCode::parse(&currency).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        allow_negative,
        balance: parse_units(&b, "balance")?,
        pending_debits: parse_units(&pd, "pending_debits")?,
        pending_credits: parse_units(&pc, "pending_credits")?,
    })
}

fn accounts_of(reqs: &[TxRequest], holds: &HashMap<i64, LoadedHold>) -> Vec<AccountId> {
    let mut ids = BTreeSet::new();
    for r in reqs {
        if let Action::Transfer(legs) | Action::Hold(legs) = &r.action {
            for l in legs {
                ids.insert(l.from);
                ids.insert(l.to);
            }
        }
    }
    for h in holds.values() {
        for l in &h.legs {
            ids.insert(l.from);
            ids.insert(l.to);
        }
    }
    ids.into_iter().collect()
}

fn hold_ids_of(reqs: &[TxRequest]) -> Vec<i64> {
    let ids: BTreeSet<i64> = reqs
        .iter()
        .filter_map(|r| match r.action {
            Action::Post { hold } | Action::Void { hold } => Some(hold.0),
            _ => None,
        })
        .collect();
    ids.into_iter().collect()
}

fn distinct_keys(reqs: &[TxRequest]) -> Vec<&str> {
    let keys: BTreeSet<&str> = reqs.iter().map(|r| r.idempotency_key.as_str()).collect();
    keys.into_iter().collect()
}

async fn write_batch_sqlite(pool: &SqlitePool, reqs: &[TxRequest], hashes: &[[u8; 32]], now: i64) -> Result<Attempt> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // 1. Keys already used.
    let mut existing: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
    for chunk in distinct_keys(reqs).chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, idempotency_key, content_hash FROM ledger_transactions WHERE idempotency_key IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query_as::<_, (i64, String, Vec<u8>)>(&sql);
        for k in chunk {
            q = q.bind(*k);
        }
        for (id, key, hash) in q.fetch_all(&mut *tx).await? {
            existing.insert(key, (id, hash));
        }
    }
    // 2. Holds referenced by post/void, with their legs.
    let hold_ids = hold_ids_of(reqs);
    let mut holds: HashMap<i64, LoadedHold> = HashMap::new();
    for chunk in hold_ids.chunks(ROWS_PER_STATEMENT) {
        let list = vec!["?"; chunk.len()].join(", ");
        let sql = format!("SELECT id, kind, hold_status FROM ledger_transactions WHERE id IN ({list})");
        let mut q = sqlx::query_as::<_, (i64, String, Option<String>)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for (id, kind, status) in q.fetch_all(&mut *tx).await? {
            let kind = TxKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("transaction kind {kind:?}")))?;
            holds.insert(id, LoadedHold { status: status.as_deref().and_then(HoldStatus::parse), kind, legs: Vec::new() });
        }
        let sql = format!(
            "SELECT tx_id, account_id, peer_account_id, currency, units FROM ledger_entries WHERE tx_id IN ({list}) ORDER BY id"
        );
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String, String)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        let rows = q
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(t, a, p, c, u)| Ok((t, a, p, c, parse_units(&u, "entry units")?)))
            .collect::<Result<Vec<_>>>()?;
        hold_legs_from_entries(rows, &mut holds)?;
    }
    // 3. Accounts (the write lock is already ours).
    let mut accounts = load_accounts_sqlite(&mut tx, &accounts_of(reqs, &holds)).await?;
    // 4. Apply in memory.
    let mut plan = plan(reqs, hashes, &existing, &mut holds, &mut accounts);
    if plan.new_txs.is_empty() {
        tx.rollback().await?;
        resolve_in_batch_replays(&mut plan.results);
        return Ok(Attempt::Done(plan.results.into_iter().map(|r| r.expect("all resolved")).collect()));
    }
    // 5. Write transactions, entries, balances, hold statuses.
    let mut ids: HashMap<String, i64> = HashMap::new();
    for chunk in plan.new_txs.chunks(ROWS_PER_STATEMENT / 4) {
        let sql = format!(
            "INSERT INTO ledger_transactions (idempotency_key, content_hash, kind, hold_id, hold_status, memo, created_at_ms)
             VALUES {} RETURNING id, idempotency_key",
            placeholders(chunk.len(), 7)
        );
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for t in chunk {
            let r = &reqs[t.request];
            q = q
                .bind(&r.idempotency_key)
                .bind(&hashes[t.request][..])
                .bind(t.kind.as_str())
                .bind(t.hold_id)
                .bind(t.hold_status.map(HoldStatus::as_str))
                .bind(&r.memo)
                .bind(now);
        }
        for (id, key) in q.fetch_all(&mut *tx).await? {
            ids.insert(key, id);
        }
    }
    let entries: Vec<(i64, &NewTx, usize)> = plan
        .new_txs
        .iter()
        .flat_map(|t| {
            let id = ids[&reqs[t.request].idempotency_key];
            (0..t.entries.len()).map(move |i| (id, t, i))
        })
        .collect();
    for chunk in entries.chunks(ROWS_PER_STATEMENT / 3) {
        let sql = format!(
            "INSERT INTO ledger_entries (tx_id, account_id, peer_account_id, currency, units, pending) VALUES {}",
            placeholders(chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for (id, t, i) in chunk {
            let (account, peer, units) = t.entries[*i];
            q = q.bind(id).bind(account.0).bind(peer.0).bind(t.currencies[*i].as_str()).bind(units.to_string()).bind(t.pending);
        }
        q.execute(&mut *tx).await?;
    }
    let touched: Vec<&AccountState> = plan.touched.iter().map(|id| &accounts[id]).collect();
    for chunk in touched.chunks(ROWS_PER_STATEMENT / 4) {
        let sql = format!(
            "UPDATE accounts SET balance = v.column2, pending_debits = v.column3, pending_credits = v.column4
             FROM (VALUES {}) AS v WHERE accounts.id = v.column1",
            placeholders(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for a in chunk {
            q = q.bind(a.id.0).bind(a.balance.to_string()).bind(a.pending_debits.to_string()).bind(a.pending_credits.to_string());
        }
        q.execute(&mut *tx).await?;
    }
    for (hold, status) in &plan.hold_updates {
        sqlx::query("UPDATE ledger_transactions SET hold_status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(hold)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Attempt::Done(finish(plan, reqs, &ids)))
}

fn finish(mut plan: Plan, reqs: &[TxRequest], ids: &HashMap<String, i64>) -> BatchOutcome {
    for t in &plan.new_txs {
        let id = ids[&reqs[t.request].idempotency_key];
        plan.results[t.request] = Some(Ok(TxOutcome { tx_id: TxId(id), replayed: false }));
    }
    resolve_in_batch_replays(&mut plan.results);
    plan.results.into_iter().map(|r| r.expect("every request resolved")).collect()
}

// ---- PostgreSQL ----

async fn load_accounts_pg(
    conn: &mut sqlx::PgConnection,
    ids: &[AccountId],
    lock: bool,
) -> Result<BTreeMap<AccountId, AccountState>> {
    let sql = format!(
        "SELECT id, currency, allow_negative, balance::text, pending_debits::text, pending_credits::text
         FROM accounts WHERE id = ANY($1) ORDER BY id{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let ids: Vec<i64> = ids.iter().map(|a| a.0).collect();
    let rows = sqlx::query_as::<_, (i64, String, bool, String, String, String)>(&sql)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let state = account_from_row(row)?;
        out.insert(state.id, state);
    }
    Ok(out)
}

async fn write_batch_pg(pool: &PgPool, reqs: &[TxRequest], hashes: &[[u8; 32]], now: i64) -> Result<Attempt> {
    let mut tx = pool.begin().await?;
    let hold_ids = hold_ids_of(reqs);
    let mut holds: HashMap<i64, LoadedHold> = HashMap::new();
    if !hold_ids.is_empty() {
        // Lock order everywhere: holds (by id), then accounts (by id).
        for (id, kind, status) in sqlx::query_as::<_, (i64, String, Option<String>)>(
            "SELECT id, kind, hold_status FROM ledger_transactions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&hold_ids)
        .fetch_all(&mut *tx)
        .await?
        {
            let kind = TxKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("transaction kind {kind:?}")))?;
            holds.insert(id, LoadedHold { status: status.as_deref().and_then(HoldStatus::parse), kind, legs: Vec::new() });
        }
        let rows = sqlx::query_as::<_, (i64, i64, i64, String, String)>(
            "SELECT tx_id, account_id, peer_account_id, currency, units::text FROM ledger_entries
             WHERE tx_id = ANY($1) ORDER BY id",
        )
        .bind(&hold_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(t, a, p, c, u)| Ok((t, a, p, c, parse_units(&u, "entry units")?)))
        .collect::<Result<Vec<_>>>()?;
        hold_legs_from_entries(rows, &mut holds)?;
    }
    let mut accounts = load_accounts_pg(&mut tx, &accounts_of(reqs, &holds), true).await?;
    // Keys are read only now, under the locks: a concurrent transaction with the same
    // key that held them has committed, so it is seen here (a replay), never mistaken
    // for spent balance.
    let keys: Vec<&str> = distinct_keys(reqs);
    let mut existing: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
    for (id, key, hash) in sqlx::query_as::<_, (i64, String, Vec<u8>)>(
        "SELECT id, idempotency_key, content_hash FROM ledger_transactions WHERE idempotency_key = ANY($1)",
    )
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?
    {
        existing.insert(key, (id, hash));
    }
    let mut plan = plan(reqs, hashes, &existing, &mut holds, &mut accounts);
    if plan.new_txs.is_empty() {
        tx.rollback().await?;
        resolve_in_batch_replays(&mut plan.results);
        return Ok(Attempt::Done(plan.results.into_iter().map(|r| r.expect("all resolved")).collect()));
    }
    // Insert in key order so concurrent instances take key locks in the same order.
    let mut order: Vec<usize> = (0..plan.new_txs.len()).collect();
    order.sort_by(|a, b| reqs[plan.new_txs[*a].request].idempotency_key.cmp(&reqs[plan.new_txs[*b].request].idempotency_key));

    let (mut k, mut h, mut kind, mut hold_id, mut hold_status, mut memo) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for &i in &order {
        let t = &plan.new_txs[i];
        let r = &reqs[t.request];
        k.push(r.idempotency_key.as_str());
        h.push(hashes[t.request].to_vec());
        kind.push(t.kind.as_str());
        hold_id.push(t.hold_id);
        hold_status.push(t.hold_status.map(HoldStatus::as_str));
        memo.push(r.memo.as_str());
    }
    let inserted: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO ledger_transactions (idempotency_key, content_hash, kind, hold_id, hold_status, memo, created_at_ms)
         SELECT k, h, kind, hold_id, hold_status, memo, $7
         FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::int8[], $5::text[], $6::text[])
              AS v(k, h, kind, hold_id, hold_status, memo)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id, idempotency_key",
    )
    .bind(&k)
    .bind(&h)
    .bind(&kind)
    .bind(&hold_id)
    .bind(&hold_status)
    .bind(&memo)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    if inserted.len() != order.len() {
        // Another instance committed one of these keys since we looked: start over,
        // and that key will be seen as existing.
        tx.rollback().await?;
        return Ok(Attempt::Retry("idempotency key inserted concurrently"));
    }
    let ids: HashMap<String, i64> = inserted.into_iter().map(|(id, key)| (key, id)).collect();
    let (mut e_tx, mut e_acc, mut e_peer, mut e_cur, mut e_units, mut e_pending) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for t in &plan.new_txs {
        let id = ids[&reqs[t.request].idempotency_key];
        for (i, (account, peer, units)) in t.entries.iter().enumerate() {
            e_tx.push(id);
            e_acc.push(account.0);
            e_peer.push(peer.0);
            e_cur.push(t.currencies[i].as_str());
            e_units.push(units.to_string());
            e_pending.push(t.pending);
        }
    }
    if !e_tx.is_empty() {
        sqlx::query(
            "INSERT INTO ledger_entries (tx_id, account_id, peer_account_id, currency, units, pending)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[]::numeric[], $6::bool[])",
        )
        .bind(&e_tx)
        .bind(&e_acc)
        .bind(&e_peer)
        .bind(&e_cur)
        .bind(&e_units)
        .bind(&e_pending)
        .execute(&mut *tx)
        .await?;
    }
    let (mut a_id, mut a_b, mut a_pd, mut a_pc) = (vec![], vec![], vec![], vec![]);
    for id in &plan.touched {
        let a = &accounts[id];
        a_id.push(a.id.0);
        a_b.push(a.balance.to_string());
        a_pd.push(a.pending_debits.to_string());
        a_pc.push(a.pending_credits.to_string());
    }
    sqlx::query(
        "UPDATE accounts SET balance = v.b, pending_debits = v.pd, pending_credits = v.pc
         FROM UNNEST($1::int8[], $2::text[]::numeric[], $3::text[]::numeric[], $4::text[]::numeric[]) AS v(id, b, pd, pc)
         WHERE accounts.id = v.id",
    )
    .bind(&a_id)
    .bind(&a_b)
    .bind(&a_pd)
    .bind(&a_pc)
    .execute(&mut *tx)
    .await?;
    if !plan.hold_updates.is_empty() {
        let (ids_u, st): (Vec<i64>, Vec<&str>) = plan.hold_updates.iter().map(|(i, s)| (*i, s.as_str())).unzip();
        sqlx::query(
            "UPDATE ledger_transactions SET hold_status = v.s FROM UNNEST($1::int8[], $2::text[]) AS v(id, s)
             WHERE ledger_transactions.id = v.id",
        )
        .bind(&ids_u)
        .bind(&st)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Attempt::Done(finish(plan, reqs, &ids)))
}
