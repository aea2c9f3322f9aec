//! Kassa's persistence layer: every SQL statement of the product lives in this crate.
//! One `Store` type fronts two backends, SQLite (embedded default, one file, WAL) and
//! PostgreSQL (production, several instances side by side), with versioned migrations
//! per backend. Amounts cross this boundary as `i128` units only.

mod chains;
mod checkpoint;
mod deliveries;
mod deposits;
mod endpoints;
mod events;
mod exchange;
mod futures;
mod idempotency;
mod invoices;
mod ledger;
mod merchants;
mod payout_plans;
mod transfers;
mod withdrawals;

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::ConnectOptions;

use kassa_core::events::CallbackRoute;
use kassa_core::Clock;

pub use ledger::{
    AccountBalance, BatchOutcome, CheckData, CheckEntry, CheckAccount, HistoryEntry, HistoryQuery, TxOutcome,
};
pub use deposits::{CreditConversion, DepositAddressRow, DepositConversion, DepositQuery, DepositRow, FoundDeposit, NewDepositAddress};
pub use deliveries::{Attempt, AttemptResult, AttemptRow, ClaimedDelivery, DeliveryQuery, DeliveryRow};
pub use endpoints::{EndpointRow, NewEndpoint};
pub use events::{EventRow, NewEvent, Relayed, RELAY_BATCH};
pub use exchange::{ExchangeRow, NewExchange, NewQuote, QuoteRow};
pub use futures::{FuturesRow, NewFutures};
pub use idempotency::{ClaimOutcome, IdempotencyRecord};
pub use invoices::{InvoiceOptionRow, InvoicePaymentRow, InvoiceRow, NewInvoice, NewInvoiceOption};
pub use merchants::{ApiKeyRow, MerchantRow, NewApiKey};
pub use payout_plans::{NewPayoutPlan, PayoutPlanRow, PlanPayoutRow, PlanUpdate};
pub use transfers::{TransferQuery, TransferRow};
pub use withdrawals::{Decided, NewWithdrawal, PayoutRow, WithdrawalDecisionRow, WithdrawalLimitsRow, WithdrawalQuery, WithdrawalRow, WithdrawalSource};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{what} already exists")]
    Duplicate { what: &'static str },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("limit reached: {what}")]
    LimitReached { what: &'static str },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database URL {url:?} is not understood: use a file path, sqlite://PATH or postgres://…")]
    BadUrl { url: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `postgres://…`, `sqlite://PATH`, or a plain file path (SQLite).
    pub url: String,
    pub max_connections: u32,
}

/// The persistence handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    /// Where every stored time comes from (creation, expiry, leases, retries).
    pub(crate) clock: Clock,
    /// How objects of each API dialect are reported (shared by every clone; set once
    /// the dialects are registered).
    pub(crate) callback_routes: Arc<RwLock<Arc<Vec<CallbackRoute>>>>,
    /// Signalled after a commit that wrote events to the outbox (wakes the relay), and
    /// after the relay created deliveries (wakes the notifier).
    pub(crate) wakes: Arc<Wakes>,
    /// The SQLite checkpoint task, awaited by `close` (it ends when the pool closes or
    /// the last clone is dropped).
    checkpointer: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// What wakes the relay and the notifier in this process (other processes' writes are
/// found by polling).
#[derive(Debug, Default)]
pub struct Wakes {
    pub outbox: Arc<tokio::sync::Notify>,
    pub deliveries: Arc<tokio::sync::Notify>,
}

/// Runs the same code against whichever pool the store has. The body is compiled
/// once per backend, so it may only use SQL both understand.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;


pub(crate) fn parse_units(text: &str, what: &str) -> Result<i128> {
    i128::from_str(text).map_err(|_| StoreError::Corrupt(format!("{what} is not an integer: {text:?}")))
}

/// The list of callback formats the first schema checked webhook endpoints against.
const SQLITE_FORMAT_CHECK: &str = " CHECK (format IN ('standard', 'westwallet', 'coinspaid_v1', 'coinspaid_v2'))";

/// The withdrawal statuses the first schema allowed (before approvals).
const SQLITE_WITHDRAWAL_STATUSES: &str = "CHECK (status IN ('requested', 'queued', 'signed', 'broadcast', 'confirmed', 'failed', 'cancelled'))";

/// CHECK constraints changed after their table was created. SQLite cannot alter a
/// CHECK constraint, and its migrations run inside a transaction where foreign keys
/// cannot be switched off, so such a table is rebuilt here, once: callback formats are
/// registered by the dialects and checked at start-up, not listed in the schema; a
/// withdrawal may wait for approval (`pending`).
async fn rewrite_sqlite_checks(pool: &SqlitePool) -> Result<()> {
    rewrite_sqlite_table(pool, "webhook_endpoints", SQLITE_FORMAT_CHECK, "").await?;
    let widened = SQLITE_WITHDRAWAL_STATUSES.replacen("'requested', ", "'requested', 'pending', ", 1);
    rewrite_sqlite_table(pool, "withdrawals", SQLITE_WITHDRAWAL_STATUSES, &widened).await
}

/// Rebuilds `table` with `old` replaced by `new` in its definition, if it still has
/// `old`: on one connection with foreign keys off, in one transaction (a crash leaves
/// the old table), its rows, indexes and AUTOINCREMENT sequence kept, then checked.
async fn rewrite_sqlite_table(pool: &SqlitePool, table: &str, old: &str, new: &str) -> Result<()> {
    let sql: Option<String> = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1").bind(table).fetch_optional(pool).await?;
    let Some(sql) = sql.filter(|s| s.contains(old)) else { return Ok(()) };
    let indexes: Vec<String> = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL")
        .bind(table)
        .fetch_all(pool)
        .await?;
    let rebuilt_name = format!("{table}_rebuilt");
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
    let rebuilt: Result<()> = async {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let create = sql.replacen(old, new, 1).replacen(&format!("CREATE TABLE {table}"), &format!("CREATE TABLE {rebuilt_name}"), 1);
        sqlx::query(&create).execute(&mut *tx).await?;
        let sequence: Option<i64> = if sql.contains("AUTOINCREMENT") {
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1").bind(table).fetch_optional(&mut *tx).await?
        } else {
            None
        };
        sqlx::query(&format!("INSERT INTO {rebuilt_name} SELECT * FROM {table}")).execute(&mut *tx).await?;
        sqlx::query(&format!("DROP TABLE {table}")).execute(&mut *tx).await?;
        sqlx::query(&format!("ALTER TABLE {rebuilt_name} RENAME TO {table}")).execute(&mut *tx).await?;
        if let Some(seq) = sequence {
            // Ids of deleted rows are never given again.
            sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, $1) WHERE name = $2").bind(seq).bind(table).execute(&mut *tx).await?;
        }
        for index in &indexes {
            sqlx::query(index).execute(&mut *tx).await?;
        }
        let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check").fetch_all(&mut *tx).await?;
        if !broken.is_empty() {
            return Err(StoreError::Corrupt(format!("rebuilding {table} broke foreign keys of {broken:?}")));
        }
        tx.commit().await?;
        Ok(())
    }
    .await;
    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
    rebuilt?;
    tracing::info!(table, "table rebuilt with its changed CHECK constraint");
    Ok(())
}

/// Maps a unique-constraint violation to `Duplicate`.
pub(crate) fn duplicate_as(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate { what },
        _ => StoreError::Database(err),
    }
}

impl Store {
    /// Connects (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(options: &StoreOptions) -> Result<Self> {
        let url = options.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|_| StoreError::BadUrl { url: redact(url) })?
                .disable_statement_logging()
                // Plan each statement for the tables as they are: a plan cached while
                // a fresh database's tables were nearly empty (sequential scans) would
                // otherwise stay until autovacuum's first ANALYZE, slowing every
                // statement as the tables grow.
                .options([("plan_cache_mode", "force_custom_plan")]);
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect)
                .await?;
            return Ok(Self::over(Db::Postgres(pool)));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(StoreError::BadUrl { url: redact(url) });
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives power loss once it has returned (NORMAL in WAL
            // mode may lose the last commits).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", checkpoint::COMMIT_CHECKPOINT_PAGES)
            .busy_timeout(Duration::from_secs(30))
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await?;
        let store = Self::over(Db::Sqlite(pool.clone()));
        let task = checkpoint::spawn(pool, connect, Arc::downgrade(&store.checkpointer));
        *store.checkpointer.lock().expect("checkpointer") = Some(task);
        Ok(store)
    }

    fn over(db: Db) -> Self {
        Self { db, clock: Clock::system(), callback_routes: Arc::default(), wakes: Arc::default(), checkpointer: Arc::default() }
    }

    /// The same store reading time from `clock` (tests pass one they can move).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock this store stamps rows with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Tells the outbox how each dialect's objects are reported (every clone of this
    /// store, and the engine over it, sees the same routes).
    pub fn set_callback_routes(&self, routes: Vec<CallbackRoute>) {
        *self.callback_routes.write().expect("callback routes") = Arc::new(routes);
    }

    pub(crate) fn write_ctx(&self) -> events::WriteCtx {
        self.write_ctx_at(self.now_ms())
    }

    pub(crate) fn write_ctx_at(&self, now_ms: i64) -> events::WriteCtx {
        events::WriteCtx { now_ms }
    }

    /// Now, in Unix milliseconds, by this store's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize> {
        let before = self.applied_migrations().await.unwrap_or(0);
        match &self.db {
            Db::Sqlite(pool) => {
                SQLITE_MIGRATIONS.run(pool).await?;
                rewrite_sqlite_checks(pool).await?;
            }
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    async fn applied_migrations(&self) -> Result<usize> {
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?);
        Ok(n as usize)
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        let r: Result<i32, sqlx::Error> =
            on_pool!(self, pool => sqlx::query_scalar("SELECT 1").fetch_one(pool).await);
        r.is_ok()
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        let checkpointer = self.checkpointer.lock().expect("checkpointer").take();
        if let Some(task) = checkpointer {
            task.await.ok();
        }
    }
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("postgres://kassa:s3cret@db:5432/k"), "postgres://kassa:***@db:5432/k");
        assert_eq!(super::redact("postgres://db/k"), "postgres://db/k");
        assert_eq!(super::redact("/var/lib/kassa.db"), "/var/lib/kassa.db");
    }
}

/// Creates an empty PostgreSQL database `name` on the server of `url` and returns the
/// URL that reaches it (benchmarks and tests get a fresh database each).
pub async fn create_postgres_database(url: &str, name: &str) -> Result<String> {
    let target = postgres_url_with_database(url, name)?;
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&pool).await?;
    pool.close().await;
    Ok(target)
}

/// Drops database `name` on the server of `url` (closing its sessions first).
pub async fn drop_postgres_database(url: &str, name: &str) -> Result<()> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

fn postgres_url_with_database(url: &str, name: &str) -> Result<String> {
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StoreError::BadUrl { url: name.to_string() });
    }
    let mut parsed = url::Url::parse(url).map_err(|_| StoreError::BadUrl { url: redact(url) })?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

impl Store {
    /// The settings that decide whether a commit is durable, as the database reports them.
    pub async fn durability(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        match &self.db {
            Db::Sqlite(pool) => {
                for pragma in ["journal_mode", "synchronous"] {
                    let value: String = match pragma {
                        "journal_mode" => sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await?,
                        _ => {
                            let n: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await?;
                            match n {
                                0 => "OFF".into(),
                                1 => "NORMAL".into(),
                                2 => "FULL".into(),
                                3 => "EXTRA".into(),
                                n => n.to_string(),
                            }
                        }
                    };
                    out.push((pragma.to_string(), value));
                }
            }
            Db::Postgres(pool) => {
                for setting in ["synchronous_commit", "fsync", "wal_sync_method"] {
                    let v: String = sqlx::query_scalar(&format!("SHOW {setting}")).fetch_one(pool).await?;
                    out.push((setting.to_string(), v));
                }
            }
        }
        Ok(out)
    }
}
