//! Deposit addresses and deposits: each scanned block and mempool pass recorded with
//! its deposits in one transaction, and every deposit transition applied as the
//! deposit state machine (`kassa_core::deposit`) says.

use kassa_core::deposit::{DepositInput, DepositState, DepositStatus};
use kassa_core::ledger::MerchantId;

use crate::events::report_changes;
use crate::{duplicate_as, on_pool, parse_units, Db, Result, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DepositAddressRow {
    pub id: i64,
    pub merchant_id: i64,
    pub user_id: Option<i64>,
    pub currency: String,
    pub chain: String,
    pub address: String,
    pub label: Option<String>,
    pub foreign_id: Option<String>,
    pub created_at_ms: i64,
    /// The API dialect that created the address (its deposits are reported in its format).
    pub origin: String,
    pub callback_url: Option<String>,
    /// The currency its deposits are converted to on arrival.
    pub convert_to: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewDepositAddress {
    pub merchant: MerchantId,
    pub user_id: Option<i64>,
    pub currency: String,
    pub chain: String,
    pub address: String,
    pub label: Option<String>,
    pub foreign_id: Option<String>,
    pub origin: String,
    pub callback_url: Option<String>,
    pub convert_to: Option<String>,
}

/// What a deposit's credit converted (fixed by its first credit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositConversion {
    /// The currency it was converted to.
    pub currency: String,
    /// What it gave in that currency.
    pub units: i128,
    /// The exchange fee, in the deposit's currency.
    pub fee_units: i128,
    pub rate: String,
    /// The futures whose fixed price it converted at.
    pub futures_id: Option<i64>,
}

/// How a credit treats a deposit to an address with conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreditConversion {
    /// The address converts nothing.
    None,
    Converted(DepositConversion),
    /// Credited as received, and why.
    Unconverted(String),
}

/// An output paying a watched address, as the scanner found it.
#[derive(Clone, Debug)]
pub struct FoundDeposit {
    pub currency: String,
    pub txid: String,
    pub vout: u32,
    pub address_id: i64,
    pub merchant_id: i64,
    pub amount_units: i128,
    pub dust_units: i128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRow {
    pub id: i64,
    pub chain: String,
    pub currency: String,
    pub txid: String,
    pub vout: i64,
    pub address_id: i64,
    pub address: String,
    pub merchant_id: i64,
    pub amount_units: i128,
    pub dust_units: i128,
    pub status: String,
    pub block_height: Option<i64>,
    pub block_hash: Option<String>,
    pub confirmations: i64,
    pub credits: i64,
    pub reversals: i64,
    /// The fee its first credit booked (None until credited).
    pub fee_units: Option<i128>,
    pub first_seen_at_ms: i64,
    pub updated_at_ms: i64,
    /// Its address's conversion currency.
    pub convert_to: Option<String>,
    /// What its first credit did about that conversion (`None` until credited, and
    /// for addresses without conversion).
    pub conversion: CreditConversion,
}

impl DepositRow {
    /// Its state as the deposit state machine sees it.
    pub fn state(&self) -> Result<DepositState> {
        Ok(DepositState {
            status: DepositStatus::parse(&self.status).ok_or_else(|| StoreError::Corrupt(format!("deposit status {:?}", self.status)))?,
            in_block: self.block_height.is_some(),
            credits: self.credits,
            reversals: self.reversals,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct DepositQuery {
    pub merchant: Option<MerchantId>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

const DEPOSIT_COLUMNS: &str = "SELECT d.id, d.chain, d.currency, d.txid, d.vout, d.address_id, a.address, d.merchant_id,
        CAST(d.amount_units AS TEXT) AS amount_units, CAST(d.dust_units AS TEXT) AS dust_units, d.status, d.block_height, d.block_hash,
        d.confirmations, d.credits, d.reversals, CAST(d.fee_units AS TEXT) AS fee_units, d.first_seen_at_ms, d.updated_at_ms,
        a.convert_to, d.converted_currency, CAST(d.converted_units AS TEXT) AS converted_units,
        CAST(d.exchange_fee_units AS TEXT) AS exchange_fee_units, d.exchange_rate, d.conversion_note, d.futures_id
     FROM deposits d JOIN deposit_addresses a ON a.id = d.address_id";

/// A deposit's state-machine fields, by key (in a writing transaction).
const STATE_BY_OUTPUT: &str = "SELECT id, status, CASE WHEN block_height IS NULL THEN 0 ELSE 1 END AS in_block, credits, reversals
     FROM deposits WHERE chain = $1 AND txid = $2 AND vout = $3";
const STATE_BY_ID: &str = "SELECT id, status, CASE WHEN block_height IS NULL THEN 0 ELSE 1 END AS in_block, credits, reversals
     FROM deposits WHERE id = $1";

#[derive(sqlx::FromRow)]
struct StateTuple {
    id: i64,
    status: String,
    in_block: i32,
    credits: i64,
    reversals: i64,
}

impl StateTuple {
    fn state(&self) -> Result<DepositState> {
        Ok(DepositState {
            status: DepositStatus::parse(&self.status).ok_or_else(|| StoreError::Corrupt(format!("deposit {} status {:?}", self.id, self.status)))?,
            in_block: self.in_block != 0,
            credits: self.credits,
            reversals: self.reversals,
        })
    }
}

/// The state `input` leads a found output to: a new deposit's, or an existing one's next.
fn found_state(existing: Option<&StateTuple>, input: DepositInput) -> Result<DepositState> {
    match existing {
        Some(row) => row.state()?.after(input).map_err(|e| StoreError::Corrupt(format!("deposit {}: {e}", row.id))),
        None => DepositState::found(input).ok_or_else(|| StoreError::Corrupt(format!("{input:?} cannot introduce a deposit"))),
    }
}

#[derive(sqlx::FromRow)]
struct DepositTuple {
    id: i64,
    chain: String,
    currency: String,
    txid: String,
    vout: i64,
    address_id: i64,
    address: String,
    merchant_id: i64,
    amount_units: String,
    dust_units: String,
    status: String,
    block_height: Option<i64>,
    block_hash: Option<String>,
    confirmations: i64,
    credits: i64,
    reversals: i64,
    fee_units: Option<String>,
    first_seen_at_ms: i64,
    updated_at_ms: i64,
    #[sqlx(flatten)]
    conversion: ConversionColumns,
}

/// A deposit's conversion columns (its address's `convert_to` and what its first
/// credit did), as read with it.
#[derive(sqlx::FromRow)]
pub(crate) struct ConversionColumns {
    pub(crate) convert_to: Option<String>,
    pub(crate) converted_currency: Option<String>,
    pub(crate) converted_units: Option<String>,
    pub(crate) exchange_fee_units: Option<String>,
    pub(crate) exchange_rate: Option<String>,
    pub(crate) conversion_note: Option<String>,
    pub(crate) futures_id: Option<i64>,
}

fn conversion_from(id: i64, t: &ConversionColumns) -> Result<CreditConversion> {
    Ok(match (&t.converted_currency, &t.converted_units, &t.exchange_fee_units, &t.exchange_rate, &t.conversion_note) {
        (Some(currency), Some(units), Some(fee), Some(rate), _) => CreditConversion::Converted(DepositConversion {
            currency: currency.clone(),
            units: parse_units(units, "deposit conversion")?,
            fee_units: parse_units(fee, "deposit exchange fee")?,
            rate: rate.clone(),
            futures_id: t.futures_id,
        }),
        (None, None, None, None, Some(note)) => CreditConversion::Unconverted(note.clone()),
        (None, None, None, None, None) => CreditConversion::None,
        _ => return Err(StoreError::Corrupt(format!("deposit {id}: a partly recorded conversion"))),
    })
}

fn deposit_from(t: DepositTuple) -> Result<DepositRow> {
    let conversion = conversion_from(t.id, &t.conversion)?;
    Ok(DepositRow {
        id: t.id,
        chain: t.chain,
        currency: t.currency,
        txid: t.txid,
        vout: t.vout,
        address_id: t.address_id,
        address: t.address,
        merchant_id: t.merchant_id,
        amount_units: parse_units(&t.amount_units, "deposit amount")?,
        dust_units: parse_units(&t.dust_units, "deposit dust")?,
        status: t.status,
        block_height: t.block_height,
        block_hash: t.block_hash,
        confirmations: t.confirmations,
        credits: t.credits,
        reversals: t.reversals,
        fee_units: t.fee_units.as_deref().map(|f| parse_units(f, "deposit fee")).transpose()?,
        first_seen_at_ms: t.first_seen_at_ms,
        updated_at_ms: t.updated_at_ms,
        convert_to: t.conversion.convert_to,
        conversion,
    })
}

/// What a deposit transition writes besides the state machine's fields.
#[derive(Clone)]
enum DepositUpdate {
    Status,
    /// A credit: its confirmations, the fee it booked and what it converted.
    Credited { confirmations: i64, fee_units: i128, conversion: CreditConversion },
}

impl Store {
    pub(crate) fn numeric(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => "::numeric",
        }
    }

    pub async fn insert_deposit_address(&self, a: &NewDepositAddress) -> Result<DepositAddressRow> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "INSERT INTO deposit_addresses (merchant_id, user_id, currency, chain, address, label, foreign_id, created_at_ms,
                     origin, callback_url, convert_to)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 RETURNING id, merchant_id, user_id, currency, chain, address, label, foreign_id, created_at_ms, origin, callback_url, convert_to")
            .bind(a.merchant.0)
            .bind(a.user_id)
            .bind(&a.currency)
            .bind(&a.chain)
            .bind(&a.address)
            .bind(&a.label)
            .bind(&a.foreign_id)
            .bind(self.now_ms())
            .bind(&a.origin)
            .bind(&a.callback_url)
            .bind(&a.convert_to)
            .fetch_one(pool)
            .await
            .map_err(|e| duplicate_as(e, "a deposit address with this foreign_id"))?))
    }

    pub async fn deposit_address_by_foreign_id(&self, merchant: MerchantId, currency: &str, foreign_id: &str) -> Result<Option<DepositAddressRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT id, merchant_id, user_id, currency, chain, address, label, foreign_id, created_at_ms, origin, callback_url, convert_to
                 FROM deposit_addresses WHERE merchant_id = $1 AND currency = $2 AND foreign_id = $3")
            .bind(merchant.0)
            .bind(currency)
            .bind(foreign_id)
            .fetch_optional(pool)
            .await?))
    }

    /// A merchant's deposit address by its text (another merchant's is not found).
    pub async fn merchant_deposit_address(&self, merchant: MerchantId, address: &str) -> Result<Option<DepositAddressRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT id, merchant_id, user_id, currency, chain, address, label, foreign_id, created_at_ms, origin, callback_url, convert_to
                 FROM deposit_addresses WHERE merchant_id = $1 AND address = $2 ORDER BY id LIMIT 1")
            .bind(merchant.0)
            .bind(address)
            .fetch_optional(pool)
            .await?))
    }

    /// Addresses of `chain` with an id above `after_id`, oldest first (the watcher's refresh).
    pub async fn deposit_addresses_after(&self, chain: &str, after_id: i64, limit: u32) -> Result<Vec<DepositAddressRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT id, merchant_id, user_id, currency, chain, address, label, foreign_id, created_at_ms, origin, callback_url, convert_to
                 FROM deposit_addresses WHERE chain = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(chain)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?))
    }

    /// Records one scanned block and the deposits it carries, in one database
    /// transaction, so a crash leaves either all of it or none. Re-recording a block
    /// only refreshes its deposits' block data.
    pub async fn record_block(&self, chain: &str, height: u64, hash: &str, found: &[FoundDeposit], keep_blocks: u64) -> Result<()> {
        let now = self.now_ms();
        let upsert = format!(
            "INSERT INTO deposits (chain, currency, txid, vout, address_id, merchant_id, amount_units, dust_units, status,
                 block_height, block_hash, confirmations, first_seen_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7{n}, $8{n}, $12, $9, $10, 0, $11, $11)
             ON CONFLICT (chain, txid, vout) DO UPDATE SET block_height = excluded.block_height,
                 block_hash = excluded.block_hash, status = excluded.status, updated_at_ms = excluded.updated_at_ms",
            n = self.numeric()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for d in found {
                let existing: Option<StateTuple> = sqlx::query_as(STATE_BY_OUTPUT)
                    .bind(chain).bind(&d.txid).bind(i64::from(d.vout)).fetch_optional(&mut *tx).await?;
                let next = found_state(existing.as_ref(), DepositInput::Mined)?;
                sqlx::query(&upsert)
                    .bind(chain)
                    .bind(&d.currency)
                    .bind(&d.txid)
                    .bind(i64::from(d.vout))
                    .bind(d.address_id)
                    .bind(d.merchant_id)
                    .bind(d.amount_units.to_string())
                    .bind(d.dust_units.to_string())
                    .bind(height as i64)
                    .bind(hash)
                    .bind(now)
                    .bind(next.status.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO chain_blocks (chain, height, hash) VALUES ($1, $2, $3)
                         ON CONFLICT (chain, height) DO UPDATE SET hash = excluded.hash")
                .bind(chain)
                .bind(height as i64)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM chain_blocks WHERE chain = $1 AND height < $2")
                .bind(chain)
                .bind(height as i64 - keep_blocks as i64)
                .execute(&mut *tx)
                .await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// Forgets blocks above `fork_height` (a reorg): their deposits lose their block.
    pub async fn rollback_blocks(&self, chain: &str, fork_height: u64) -> Result<u64> {
        let n = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let rows: Vec<StateTuple> = sqlx::query_as(
                "SELECT id, status, 1 AS in_block, credits, reversals FROM deposits WHERE chain = $1 AND block_height > $2 ORDER BY id")
                .bind(chain)
                .bind(fork_height as i64)
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                let next = found_state(Some(row), DepositInput::LeftChain)?;
                sqlx::query("UPDATE deposits SET block_height = NULL, block_hash = NULL, confirmations = 0, status = $1, updated_at_ms = $2
                             WHERE id = $3")
                    .bind(next.status.as_str())
                    .bind(self.now_ms())
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            let n = rows.len() as u64;
            sqlx::query("DELETE FROM chain_blocks WHERE chain = $1 AND height > $2")
                .bind(chain)
                .bind(fork_height as i64)
                .execute(&mut *tx)
                .await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
            n
        });
        Ok(n)
    }

    /// Outputs seen in the mempool (known ones are left as they are).
    pub async fn record_mempool_deposits(&self, chain: &str, found: &[FoundDeposit]) -> Result<()> {
        let now = self.now_ms();
        let sql = format!(
            "INSERT INTO deposits (chain, currency, txid, vout, address_id, merchant_id, amount_units, dust_units, status,
                 confirmations, first_seen_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7{n}, $8{n}, $10, 0, $9, $9)
             ON CONFLICT (chain, txid, vout) DO UPDATE SET status = excluded.status",
            n = self.numeric()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for d in found {
                let existing: Option<StateTuple> = sqlx::query_as(STATE_BY_OUTPUT)
                    .bind(chain).bind(&d.txid).bind(i64::from(d.vout)).fetch_optional(&mut *tx).await?;
                let next = found_state(existing.as_ref(), DepositInput::InMempool)?;
                if existing.as_ref().is_some_and(|e| e.status == next.status.as_str()) {
                    continue; // known, nothing changes
                }
                sqlx::query(&sql)
                    .bind(chain)
                    .bind(&d.currency)
                    .bind(&d.txid)
                    .bind(i64::from(d.vout))
                    .bind(d.address_id)
                    .bind(d.merchant_id)
                    .bind(d.amount_units.to_string())
                    .bind(d.dust_units.to_string())
                    .bind(now)
                    .bind(next.status.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// Deposits of a chain that may still change: not yet credited, credited but
    /// without a block (reorged out), or credited and not yet past `final_depth`.
    pub async fn open_deposits(&self, chain: &str, limit: u32) -> Result<Vec<DepositRow>> {
        let sql = format!(
            "{DEPOSIT_COLUMNS} WHERE d.chain = $1 AND (d.status IN ('seen', 'confirming')
                 OR (d.status = 'credited' AND d.block_height IS NULL)) ORDER BY d.id LIMIT $2"
        );
        let rows: Vec<DepositTuple> = on_pool!(self, pool => sqlx::query_as(&sql).bind(chain).bind(i64::from(limit)).fetch_all(pool).await?);
        rows.into_iter().map(deposit_from).collect()
    }

    pub async fn set_deposit_confirmations(&self, id: i64, confirmations: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE deposits SET confirmations = $1, updated_at_ms = $2 WHERE id = $3 AND confirmations <> $1")
            .bind(confirmations)
            .bind(self.now_ms())
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records credit number `k` (1-based) and the fee it booked (kept from the
    /// first credit on); a repeat is a no-op.
    pub async fn mark_deposit_credited(&self, id: i64, k: i64, confirmations: i64, fee_units: i128, conversion: CreditConversion) -> Result<()> {
        self.apply_deposit(id, DepositInput::Credit { k }, DepositUpdate::Credited { confirmations, fee_units, conversion }).await
    }

    /// Records reversal number `k` (1-based); a repeat is a no-op.
    pub async fn mark_deposit_reversed(&self, id: i64, k: i64) -> Result<()> {
        self.apply_deposit(id, DepositInput::Reverse { k }, DepositUpdate::Status).await
    }

    /// Marks a deposit still only in the mempool as dropped (otherwise a no-op).
    pub async fn mark_deposit_dropped(&self, id: i64) -> Result<()> {
        self.apply_deposit(id, DepositInput::LeftMempool, DepositUpdate::Status).await
    }

    /// Applies `input` to deposit `id` as the state machine says, in one transaction
    /// with its events; a transition the machine refuses (a repeat) changes nothing.
    async fn apply_deposit(&self, id: i64, input: DepositInput, update: DepositUpdate) -> Result<()> {
        let lock = if matches!(self.db, Db::Postgres(_)) { " FOR UPDATE" } else { "" };
        let credited_sql = format!(
            "UPDATE deposits SET status = $1, credits = $2, reversals = $3, updated_at_ms = $4, confirmations = $5,
                 fee_units = COALESCE(fee_units, $6{n}), converted_currency = CASE WHEN fee_units IS NULL THEN $7 ELSE converted_currency END,
                 converted_units = CASE WHEN fee_units IS NULL THEN $8{n} ELSE converted_units END,
                 exchange_fee_units = CASE WHEN fee_units IS NULL THEN $9{n} ELSE exchange_fee_units END,
                 exchange_rate = CASE WHEN fee_units IS NULL THEN $10 ELSE exchange_rate END,
                 conversion_note = CASE WHEN fee_units IS NULL THEN $11 ELSE conversion_note END,
                 futures_id = CASE WHEN fee_units IS NULL THEN $13 ELSE futures_id END WHERE id = $12",
            n = self.numeric()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<StateTuple> = sqlx::query_as(&format!("{STATE_BY_ID}{lock}")).bind(id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Err(StoreError::Corrupt(format!("no deposit {id}"))) };
            let next = match row.state()?.after(input) {
                Ok(next) => next,
                Err(refused) => {
                    tracing::debug!(deposit = id, %refused, "deposit transition not applied");
                    return Ok(());
                }
            };
            let q = match update {
                DepositUpdate::Status => sqlx::query(
                    "UPDATE deposits SET status = $1, credits = $2, reversals = $3, updated_at_ms = $4 WHERE id = $5"),
                DepositUpdate::Credited { .. } => sqlx::query(&credited_sql),
            };
            let q = q.bind(next.status.as_str()).bind(next.credits).bind(next.reversals).bind(self.now_ms());
            let q = match &update {
                DepositUpdate::Status => q.bind(id),
                DepositUpdate::Credited { confirmations, fee_units, conversion } => {
                    let (currency, units, fee, rate, note, futures) = match conversion {
                        CreditConversion::None => (None, None, None, None, None, None),
                        CreditConversion::Converted(c) => {
                            (Some(c.currency.clone()), Some(c.units.to_string()), Some(c.fee_units.to_string()), Some(c.rate.clone()), None, c.futures_id)
                        }
                        CreditConversion::Unconverted(why) => (None, None, None, None, Some(why.clone()), None),
                    };
                    q.bind(*confirmations).bind(fee_units.to_string()).bind(currency).bind(units).bind(fee).bind(rate).bind(note).bind(id).bind(futures)
                }
            };
            q.execute(&mut *tx).await?;
            report_changes!(tx, self.write_ctx());
            tx.commit().await?;
            self.events_committed();
        });
        Ok(())
    }

    /// The deposits to one address, oldest first.
    pub async fn deposits_at_address(&self, address_id: i64, limit: u32) -> Result<Vec<DepositRow>> {
        self.deposits_at_address_ordered(address_id, limit, false).await
    }

    /// The latest deposits to one address, newest first.
    pub async fn latest_deposits_at_address(&self, address_id: i64, limit: u32) -> Result<Vec<DepositRow>> {
        self.deposits_at_address_ordered(address_id, limit, true).await
    }

    async fn deposits_at_address_ordered(&self, address_id: i64, limit: u32, newest_first: bool) -> Result<Vec<DepositRow>> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = format!("{DEPOSIT_COLUMNS} WHERE d.address_id = $1 ORDER BY d.id {order} LIMIT $2");
        let rows: Vec<DepositTuple> = on_pool!(self, pool => sqlx::query_as(&sql).bind(address_id).bind(i64::from(limit)).fetch_all(pool).await?);
        rows.into_iter().map(deposit_from).collect()
    }

    pub async fn deposits(&self, q: &DepositQuery) -> Result<Vec<DepositRow>> {
        let sql = format!(
            "{DEPOSIT_COLUMNS} WHERE ($1 IS NULL OR d.merchant_id = $1) AND ($2 IS NULL OR d.currency = $2)
                 AND ($3 IS NULL OR d.status = $3) AND ($4 IS NULL OR d.id < $4)
             ORDER BY d.id DESC LIMIT $5"
        );
        let rows: Vec<DepositTuple> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(q.merchant.map(|m| m.0))
            .bind(&q.currency)
            .bind(&q.status)
            .bind(q.before_id)
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(deposit_from).collect()
    }

}

impl Store {
    /// Inserts many watched addresses at once (benchmarks and imports), in one
    /// database transaction; returns how many were inserted.
    pub async fn insert_deposit_addresses_bulk(&self, merchant: MerchantId, currency: &str, chain: &str, addresses: &[String]) -> Result<u64> {
        const ROWS: usize = 4000;
        let now = self.now_ms();
        let mut inserted = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in addresses.chunks(ROWS) {
                let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, $2, $3, $4, ${})", i + 5)).collect();
                let sql = format!(
                    "INSERT INTO deposit_addresses (merchant_id, currency, chain, created_at_ms, address) VALUES {}
                     ON CONFLICT (chain, address) DO NOTHING",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(merchant.0).bind(currency).bind(chain).bind(now);
                for a in chunk {
                    q = q.bind(a);
                }
                inserted += q.execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }
}
