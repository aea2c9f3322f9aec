//! Test harness shared by Kassa's integration tests: a fresh database per test on
//! either backend (SQLite in a temporary file; PostgreSQL as a new database on the
//! server that `scripts/postgres.sh` starts), the engine over it, the real HTTP app
//! on port 0, and the invariant check every scenario ends with.

use std::net::SocketAddr;

use kassa_core::currency::CurrencyConfig;
use kassa_core::ledger::{AccountId, AccountKey, MerchantId, SystemAccount};
use kassa_core::{Clock, CurrencyCode};
use kassa_engine::adjustments::AdjustmentRequest;
use kassa_engine::currencies::Currencies;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::merchants::Scope;
use kassa_engine::secrets::MasterKey;
use kassa_engine::{Engine, Store, StoreOptions};
pub use kassa_store::Backend;

pub mod litecoin;
pub mod node;
pub mod process;
pub mod receiver;

/// The PostgreSQL server tests create their databases on.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";

/// Runs an async test body once per backend: `both_backends!(name, body_fn);` makes
/// `name::sqlite` and `name::postgres`. The PostgreSQL variant fails (never skips)
/// when no server is configured.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$body($crate::Backend::Postgres).await
            }
        }
    };
}

/// A fresh, empty, migrated database. SQLite files are removed and PostgreSQL
/// databases dropped when it goes out of scope.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// The clock every store (and engine) on this database reads; tests move it
    /// forward instead of sleeping.
    pub clock: Clock,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::TempDir::new().expect("temporary directory");
                let url = dir.path().join("kassa.db").display().to_string();
                TestDb { url, backend, clock: Clock::adjustable(), _dir: Some(dir), pg: None }
            }
            Backend::Postgres => {
                let server = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
                    panic!("{POSTGRES_ENV} is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
                });
                let name = format!("kassa_test_{}", uuid::Uuid::new_v4().simple());
                let url = kassa_store::create_postgres_database(&server, &name)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create a test database on {server}: {e}"));
                TestDb { url, backend, clock: Clock::adjustable(), _dir: None, pg: Some((server, name)) }
            }
        }
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&StoreOptions { url: self.url.clone(), max_connections: 16 }).await.expect("connect");
        let store = store.with_clock(self.clock.clone());
        store.migrate().await.expect("migrate");
        store
    }

    /// Runs raw SQL against the database (tests that corrupt data on purpose).
    pub async fn execute_raw(&self, sql: &str) {
        if let Err(e) = self.try_execute_raw(sql).await {
            panic!("raw SQL {sql:?}: {e}");
        }
    }

    /// Runs SQL (one or more statements, on one connection) and returns the database's
    /// error message if it refuses.
    pub async fn try_execute_raw(&self, sql: &str) -> Result<(), String> {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.url)).await.expect("connect");
                let result = sqlx::raw_sql(sql).execute(&pool).await;
                pool.close().await;
                result.map(|_| ()).map_err(|e| e.to_string())
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
                let result = sqlx::raw_sql(sql).execute(&pool).await;
                pool.close().await;
                result.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = self.pg.take() {
            // Best effort, on a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(kassa_store::drop_postgres_database(&server, &name)).ok()
            })
            .join();
        }
    }
}

/// The currencies tests run with, as a configuration file would declare them.
pub const TEST_CURRENCIES: &str = r#"
[LTC]
name = "Litecoin"
kind = "crypto"
chain = "litecoin"
precision = 8
confirmations = 3
min_withdrawal = "0.001"
max_withdrawal = "100"
fees.withdrawal = { fixed = "0.0001", percent = "0.5" }
fees.payout_plan = { fixed = "0.0001", percent = "3" }

[BTC]
name = "Bitcoin"
kind = "crypto"
chain = "bitcoin"
precision = 8

[EUR]
name = "Euro"
kind = "fiat"
precision = 2

[USD]
name = "US Dollar"
kind = "fiat"
precision = 2
"#;

pub fn test_currencies() -> Currencies {
    let raw: std::collections::BTreeMap<String, CurrencyConfig> = toml::from_str(TEST_CURRENCIES).expect("test currencies");
    Currencies::new(kassa_core::currency::validate_currencies(&raw).expect("valid"))
}

pub const TEST_MASTER_KEY: &str = "4b617373612074657374206d6173746572206b6579206f6e6c79212021212121";

/// An engine over a fresh database.
pub struct TestEngine {
    pub db: TestDb,
    pub engine: Engine,
}

impl TestEngine {
    pub async fn new(backend: Backend) -> TestEngine {
        Self::with_options(backend, LedgerOptions::default()).await
    }

    pub async fn with_options(backend: Backend, options: LedgerOptions) -> TestEngine {
        let db = TestDb::new(backend).await;
        let engine = engine_on(&db, options).await;
        TestEngine { db, engine }
    }

    /// A second, independent engine on the same database (another "instance").
    pub async fn another_instance(&self, options: LedgerOptions) -> Engine {
        engine_on(&self.db, options).await
    }

    /// Moves business time forward (quote lifetimes, expiry, retry schedules, leases).
    pub fn advance(&self, by: std::time::Duration) {
        self.db.clock.advance(by);
    }

    pub async fn merchant(&self, name: &str) -> MerchantId {
        MerchantId(self.engine.create_merchant(name).await.expect("create merchant").id)
    }

    /// Credits a merchant through an operator adjustment.
    pub async fn fund(&self, merchant: MerchantId, currency: &str, amount: &str) {
        self.engine
            .adjust(AdjustmentRequest {
                merchant,
                currency: currency.into(),
                amount: amount.into(),
                reason: "test funding".into(),
                operator: "test".into(),
                idempotency_key: None,
            })
            .await
            .expect("fund");
    }

    pub async fn merchant_account(&self, merchant: MerchantId, currency: &str) -> AccountId {
        let currency = CurrencyCode::parse(currency).unwrap();
        self.engine.ledger.account(&AccountKey::Merchant { merchant, currency }).await.unwrap()
    }

    pub async fn system_account(&self, account: SystemAccount, currency: &str) -> AccountId {
        let currency = CurrencyCode::parse(currency).unwrap();
        self.engine.ledger.account(&AccountKey::System { account, currency }).await.unwrap()
    }

    /// (balance, available) of an account in units.
    pub async fn balance(&self, account: AccountId) -> (i128, i128) {
        let s = self.engine.store.account_state(account).await.unwrap().expect("account exists");
        (s.balance, s.available())
    }

    /// L3: the books must balance after every scenario.
    pub async fn assert_books_balance(&self) {
        let report = self.engine.check().await.expect("check runs");
        assert!(report.ok(), "ledger invariants violated: {:#?}", report.violations);
    }
}

async fn engine_on(db: &TestDb, options: LedgerOptions) -> Engine {
    let store = db.store().await;
    kassa_api::dialects::register(Engine::new(store, test_currencies(), MasterKey::from_hex(TEST_MASTER_KEY).unwrap(), options))
}

/// An engine with a node configured as its chain (`N::CHAIN`, currency `N::CURRENCY`;
/// by default a Litecoin regtest node as chain `litecoin`, currency LTC).
pub struct ChainWorld<N: node::TestNode = litecoin::LitecoinNode> {
    pub t: TestEngine,
    pub node: N,
}

impl ChainWorld<litecoin::LitecoinNode> {
    pub async fn new(backend: Backend, settings: kassa_engine::chains::ChainSettings) -> Self {
        Self::start(backend, settings).await
    }
}

impl<N: node::TestNode> ChainWorld<N> {
    /// A fresh node and a fresh database, the node's "kassa" wallet as the chain.
    pub async fn start(backend: Backend, settings: kassa_engine::chains::ChainSettings) -> Self {
        let node = N::start().await;
        let mut t = TestEngine::new(backend).await;
        let mut chains = kassa_engine::chains::Chains::default();
        chains.add(node.adapter("kassa").await, settings);
        t.engine = t.engine.clone().with_chains(chains);
        ChainWorld { t, node }
    }

    pub fn watcher(&self) -> kassa_engine::watcher::Watcher {
        kassa_engine::watcher::Watcher::new(self.t.engine.clone(), N::CHAIN).expect("watcher")
    }

    /// Kassa's adapter of this chain (the one the engine uses).
    pub fn adapter(&self) -> std::sync::Arc<dyn kassa_chain::ChainAdapter> {
        self.t.engine.chains.get(N::CHAIN).expect("configured").adapter.clone()
    }
}

/// The real HTTP application on a free port.
pub struct TestApp {
    pub t: TestEngine,
    pub address: SocketAddr,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, kassa_api::HttpOptions::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: kassa_api::HttpOptions) -> TestApp {
        Self::serve(TestEngine::new(backend).await, options).await
    }

    /// The app over an engine the test has set up (chains, callback policy).
    pub async fn serve(t: TestEngine, options: kassa_api::HttpOptions) -> TestApp {
        let app = kassa_api::app(t.engine.clone(), &options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum_serve(listener, app).await;
        });
        TestApp { t, address, client: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A merchant with a native bearer token of the given scopes.
    pub async fn merchant_with_token(&self, name: &str, scopes: &[Scope]) -> (MerchantId, String) {
        let m = self.t.merchant(name).await;
        let key = self.t.engine.create_key(m, "native", scopes.to_vec(), vec![], "test").await.unwrap();
        (m, key.token.unwrap())
    }

    /// POST a JSON body with a bearer token; returns (status, JSON body).
    pub async fn post(&self, path: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self.client.post(self.url(path)).bearer_auth(token).json(&body).send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered non-JSON ({status}): {text}"));
        (status, body)
    }

    /// GET with a bearer token; returns (status, JSON body).
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered non-JSON ({status}): {text}"));
        (status, body)
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.expect("serve");
}
