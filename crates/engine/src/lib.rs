//! Kassa's application services over the store: the batched ledger writer, merchants
//! and their credentials, operator adjustments, and the invariant checker. Dialect
//! modules in `kassa-api` call these services and hold no business rules themselves.

pub mod adjustments;
pub mod approvals;
pub mod broadcaster;
pub mod cache;
pub mod callbacks;
pub mod chains;
pub mod check;
pub mod currencies;
pub mod event_bodies;
pub mod error;
pub mod invoices;
pub mod exchange;
pub mod futures;
pub mod idempotency;
pub mod ledger;
pub mod merchants;
pub mod notifications;
pub mod notifier;
pub mod payout_plans;
pub mod rates;
pub mod relay;
pub mod schemas;
pub mod transfers;
pub mod secrets;
pub mod special_addresses;
pub mod timefmt;
pub mod watcher;
pub mod webhooks;
pub mod withdrawals;
pub mod worker;

use std::sync::Arc;

pub use error::EngineError;
pub use kassa_store::{Store, StoreOptions};

/// The filters of the engine's list queries, as the API dialects fill them in.
pub mod queries {
    pub use kassa_store::{DeliveryQuery, DepositQuery, HistoryQuery, TransferQuery, WithdrawalQuery};
}

use chains::Chains;
use currencies::Currencies;
use ledger::{Ledger, LedgerOptions};
use secrets::MasterKey;

/// API keys with their decrypted secrets, by public key.
pub type KeyCache = cache::ReadCache<String, (kassa_store::ApiKeyRow, Vec<u8>)>;
/// Stored balances by (merchant, user).
pub type BalanceCache = cache::ReadCache<(i64, Option<i64>), Vec<kassa_store::AccountBalance>>;

/// Everything a request handler or a command needs, cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub currencies: Arc<Currencies>,
    pub ledger: Ledger,
    pub master_key: Arc<MasterKey>,
    pub chains: Arc<Chains>,
    /// This process's name in leases that keep one instance per worker kind and chain
    /// (several instances may share one PostgreSQL).
    pub instance: Arc<str>,
    /// Where callbacks may go (SSRF guard); loopback only in development.
    pub target_policy: webhooks::TargetPolicy,
    /// Exchange rates (none: no exchanges or quotes).
    pub rates: Option<Arc<rates::Rates>>,
    /// Invoice defaults and where payment pages are reached.
    pub invoices: Arc<invoices::InvoiceSettings>,
    /// API keys with their decrypted secrets, by public key (off unless configured).
    pub key_cache: Arc<KeyCache>,
    /// Balances by (merchant, user), tied to this process's ledger commits.
    pub balance_cache: Arc<BalanceCache>,
    /// The dialects' callback formats (Kassa's own `standard` is built in).
    pub callbacks: Arc<callbacks::CallbackFormats>,
    /// How each dialect's API keys look (registered by the dialects).
    pub key_kinds: Arc<Vec<&'static merchants::KeyKind>>,
    /// Payout plan rules.
    pub plan_settings: Arc<payout_plans::PayoutPlanSettings>,
}

impl Engine {
    /// Builds the services and starts the ledger writer (stopped when the last clone drops).
    pub fn new(store: Store, currencies: Currencies, master_key: MasterKey, ledger: LedgerOptions) -> Self {
        let ledger = Ledger::start(store.clone(), ledger);
        let clock = store.clock().clone();
        Self { store, currencies: Arc::new(currencies), ledger, master_key: Arc::new(master_key),
            chains: Arc::new(Chains::default()),
            instance: format!("kassa-{}-{}", std::process::id(), secrets::random_alphanumeric(8)).into(),
            target_policy: webhooks::TargetPolicy::default(),
            rates: None,
            invoices: Arc::new(invoices::InvoiceSettings::default()),
            key_cache: Arc::new(cache::ReadCache::new(std::time::Duration::ZERO, clock.clone())),
            balance_cache: Arc::new(cache::ReadCache::new(std::time::Duration::ZERO, clock)),
            callbacks: Arc::default(),
            key_kinds: Arc::default(),
            plan_settings: Arc::default(),
        }
    }

    /// The same engine with read caches of these lifetimes (zero: off). API keys: a key
    /// revoked or a merchant blocked by another process stops working within
    /// `keys`; balances: writes by another process are seen within `balances` (this
    /// process's own ledger commits are seen at once).
    pub fn with_read_caches(mut self, keys: std::time::Duration, balances: std::time::Duration) -> Self {
        self.key_cache = Arc::new(cache::ReadCache::new(keys, self.clock().clone()));
        self.balance_cache = Arc::new(cache::ReadCache::new(balances, self.clock().clone()));
        self
    }

    /// The clock every time rule reads (the store stamps rows with the same one).
    pub fn clock(&self) -> &kassa_core::Clock {
        self.store.clock()
    }

    /// Now, in Unix milliseconds, by the engine's clock.
    pub fn now_ms(&self) -> i64 {
        self.store.clock().now_ms()
    }

    /// Whether the database answers (readiness).
    pub async fn database_ready(&self) -> bool {
        self.store.ping().await
    }

    /// The database backend's name: `sqlite` or `postgres`.
    pub fn database_backend(&self) -> &'static str {
        self.store.backend().as_str()
    }

    /// Takes or renews the lease on `worker` (e.g. a chain's watcher) for this instance.
    /// Only the holder runs that worker; a dead holder's lease lapses after `ttl`.
    pub async fn lease(&self, worker: &str, ttl: std::time::Duration) -> Result<bool, EngineError> {
        Ok(self.store.acquire_chain_lease(worker, &self.instance, ttl.as_millis() as i64).await?)
    }

    /// The same engine with these callback formats; the outbox routes each dialect's
    /// objects by them from now on.
    pub fn with_callback_formats(mut self, formats: callbacks::CallbackFormats) -> Self {
        self.store.set_callback_routes(formats.routes());
        self.callbacks = Arc::new(formats);
        self
    }

    /// The same engine issuing and checking API keys of these kinds.
    pub fn with_key_kinds(mut self, kinds: Vec<&'static merchants::KeyKind>) -> Self {
        self.key_kinds = Arc::new(kinds);
        self
    }

    /// The same engine with this callback target policy.
    pub fn with_target_policy(mut self, policy: webhooks::TargetPolicy) -> Self {
        self.target_policy = policy;
        self
    }

    /// The same engine with these rate sources and pairs.
    pub fn with_rates(mut self, rates: Arc<rates::Rates>) -> Self {
        self.rates = Some(rates);
        self
    }

    /// The same engine with these invoice settings.
    pub fn with_invoice_settings(mut self, settings: invoices::InvoiceSettings) -> Self {
        self.invoices = Arc::new(settings);
        self
    }

    /// The same engine with these payout plan rules.
    pub fn with_payout_plan_settings(mut self, settings: payout_plans::PayoutPlanSettings) -> Self {
        self.plan_settings = Arc::new(settings);
        self
    }

    /// The same engine with these chains (adapters and watch settings).
    pub fn with_chains(mut self, chains: Chains) -> Self {
        self.chains = Arc::new(chains);
        self
    }
}
