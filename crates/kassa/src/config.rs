//! Configuration: one TOML file plus `KASSA_*` environment overrides (nested keys
//! with `__`: `KASSA_HTTP__MAX_BODY_BYTES=2097152`). Invalid configuration fails at
//! start-up with a message naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use kassa_core::currency::{validate_currencies, CurrencyConfig};
use kassa_engine::currencies::Currencies;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::secrets::MasterKey;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SQLite file path (or `sqlite://PATH`), or a `postgres://` URL.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    #[serde(default = "default_max_connections")]
    pub database_max_connections: u32,
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// File holding the 64-hex-character master key that encrypts secrets at rest.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself (prefer `KASSA_MASTER_KEY` in the environment to a file entry).
    #[serde(default)]
    pub master_key: Option<String>,
    /// Development mode: generates a master key file when none exists (and says so).
    #[serde(default)]
    pub dev_mode: bool,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub currencies: BTreeMap<String, CurrencyConfig>,
    /// Chains and their nodes, by name (the `chain` of a currency).
    #[serde(default)]
    pub chains: BTreeMap<String, ChainConfig>,
    /// Secret that node hooks (`-walletnotify`, `-blocknotify`) present to
    /// `POST /hooks/chain/NAME?token=…`; hooks are refused while it is unset.
    #[serde(default)]
    pub hook_token: Option<String>,
    /// Bearer token of the operator API (`/kassa/v1/operator/...`: block and unblock
    /// merchants); the operator API is off while it is unset.
    #[serde(default)]
    pub operator_token: Option<String>,
    #[serde(default)]
    pub withdrawals: WithdrawalsConfig,
    #[serde(default)]
    pub notifications: NotificationsConfig,
    #[serde(default)]
    pub rates: RatesConfig,
    #[serde(default)]
    pub invoices: InvoicesConfig,
    #[serde(default)]
    pub payout_plans: PayoutPlansConfig,
    /// Where customers reach this server (payment page links); default http://LISTEN.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub westwallet: WestwalletConfig,
    #[serde(default)]
    pub coinspaid: CoinspaidConfig,
}

/// `[coinspaid]`: the CoinsPaid-style API.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinspaidConfig {
    /// Per merchant name: the origins (`https://shop.example`) that may embed its
    /// payment terminal (`is_iframe`).
    #[serde(default)]
    pub terminal_frame_ancestors: std::collections::BTreeMap<String, Vec<String>>,
}

/// `[westwallet]`: the WestWallet-compatible API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WestwalletConfig {
    /// Currencies it offers (default: every currency carried by a configured chain).
    #[serde(default)]
    pub currencies: Option<Vec<String>>,
    /// Accepted distance between a request's `X-ACCESS-TIMESTAMP` and the clock.
    #[serde(default = "default_timestamp_window")]
    pub timestamp_window_secs: u64,
}

fn default_timestamp_window() -> u64 {
    300
}

impl Default for WestwalletConfig {
    fn default() -> Self {
        Self { currencies: None, timestamp_window_secs: default_timestamp_window() }
    }
}

/// `[payout_plans]`: scheduled split payouts (the fee itself is per currency:
/// `currencies.CODE.fees.payout_plan`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutPlansConfig {
    /// How long a plan waits for its deposit before it expires.
    #[serde(default = "default_plan_validity")]
    pub validity_hours: u64,
    /// The longest delay a plan may ask for.
    #[serde(default = "default_plan_max_delay")]
    pub max_delay_hours: u64,
    /// Most payouts per plan (never more than one transaction of the chain pays).
    #[serde(default = "default_plan_max_payouts")]
    pub max_payouts: usize,
    /// The referrer's share of a plan's fee, in percent.
    #[serde(default = "default_referral_share")]
    pub referral_share_percent: String,
    /// The currency of plans that name none (default: the first configured currency
    /// that a transaction with several outputs can pay).
    #[serde(default)]
    pub default_currency: Option<String>,
}

impl Default for PayoutPlansConfig {
    fn default() -> Self {
        Self {
            validity_hours: default_plan_validity(),
            max_delay_hours: default_plan_max_delay(),
            max_payouts: default_plan_max_payouts(),
            referral_share_percent: default_referral_share(),
            default_currency: None,
        }
    }
}

fn default_plan_validity() -> u64 {
    24
}
fn default_plan_max_delay() -> u64 {
    168
}
fn default_plan_max_payouts() -> usize {
    20
}
fn default_referral_share() -> String {
    "0".into()
}

/// `[invoices]`: defaults of invoices.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoicesConfig {
    #[serde(default = "default_invoice_ttl")]
    pub default_ttl_secs: u64,
    #[serde(default = "default_invoice_max_ttl")]
    pub max_ttl_secs: u64,
    /// A payment short or over by at most this percentage counts as exact.
    #[serde(default = "default_tolerance")]
    pub tolerance_percent: String,
    /// How long a rate the payer fixes by picking a currency holds (and so the time
    /// left to pay such an invoice).
    #[serde(default = "default_invoice_ttl")]
    pub rate_window_secs: u64,
}

impl Default for InvoicesConfig {
    fn default() -> Self {
        Self {
            default_ttl_secs: default_invoice_ttl(),
            max_ttl_secs: default_invoice_max_ttl(),
            tolerance_percent: default_tolerance(),
            rate_window_secs: default_invoice_ttl(),
        }
    }
}

fn default_invoice_ttl() -> u64 {
    900
}
fn default_invoice_max_ttl() -> u64 {
    7 * 86_400
}
fn default_tolerance() -> String {
    "0".into()
}

/// `[rates]`: where exchange rates come from and which pairs can be exchanged.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RatesConfig {
    /// Sources in priority order: kraken, coinbase, binance, fixed.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default = "default_rate_max_age")]
    pub max_age_secs: u64,
    #[serde(default = "default_rate_refresh")]
    pub refresh_secs: u64,
    #[serde(default = "default_quote_ttl")]
    pub quote_ttl_secs: u64,
    #[serde(default = "default_rate_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_kraken")]
    pub kraken_url: String,
    #[serde(default = "default_coinbase")]
    pub coinbase_url: String,
    #[serde(default = "default_binance")]
    pub binance_url: String,
    /// `"BASE/QUOTE" = "rate"` for the `fixed` source.
    #[serde(default)]
    pub fixed: BTreeMap<String, String>,
    /// `[rates.pairs."BASE/QUOTE"]`: the pairs that can be exchanged.
    #[serde(default)]
    pub pairs: BTreeMap<String, PairConfig>,
    /// How long a futures price holds (CoinsPaid-style `futures/*`).
    #[serde(default = "default_futures_window")]
    pub futures_window_secs: u64,
    /// The most a futures may receive, in `futures_limit_currency`.
    #[serde(default = "default_futures_limit")]
    pub futures_limit: String,
    #[serde(default = "default_futures_limit_currency")]
    pub futures_limit_currency: String,
}

fn default_futures_window() -> u64 {
    6000
}
fn default_futures_limit() -> String {
    "10000".into()
}
fn default_futures_limit_currency() -> String {
    "EUR".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    /// Taken from the mid price, in percent.
    #[serde(default)]
    pub spread_percent: Option<String>,
    /// Least amount exchanged, in the base currency.
    #[serde(default)]
    pub min_amount: Option<String>,
    /// Least deposit converted on arrival, in the base currency (default: `min_amount`).
    #[serde(default)]
    pub min_amount_deposit_with_exchange: Option<String>,
}

fn default_rate_max_age() -> u64 {
    120
}
fn default_rate_refresh() -> u64 {
    30
}
fn default_quote_ttl() -> u64 {
    60
}
fn default_rate_timeout() -> u64 {
    10
}
fn default_kraken() -> String {
    "https://api.kraken.com".into()
}
fn default_coinbase() -> String {
    "https://api.coinbase.com".into()
}
fn default_binance() -> String {
    "https://api.binance.com".into()
}

/// `[notifications]`: how callbacks are delivered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Development only: allow callbacks to loopback addresses (a local receiver).
    /// Private, link-local and metadata addresses stay refused.
    #[serde(default)]
    pub allow_loopback: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time a receiver has to answer.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    #[serde(default = "default_notify_poll")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_in_flight_endpoint")]
    pub max_in_flight_per_endpoint: usize,
    /// Retries are spread by up to this percentage of their delay.
    #[serde(default = "default_jitter")]
    pub jitter_percent: u32,
    /// Delays in seconds before each retry, per format (standard, westwallet,
    /// coinspaid_v1, coinspaid_v2); each format has a documented default.
    #[serde(default)]
    pub retry_schedule_secs: BTreeMap<String, Vec<u64>>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            connect_timeout_ms: default_connect_timeout(),
            response_timeout_ms: default_response_timeout(),
            poll_interval_ms: default_notify_poll(),
            max_in_flight: default_in_flight(),
            max_in_flight_per_endpoint: default_in_flight_endpoint(),
            jitter_percent: default_jitter(),
            retry_schedule_secs: BTreeMap::new(),
        }
    }
}

fn default_connect_timeout() -> u64 {
    5000
}
fn default_response_timeout() -> u64 {
    15_000
}
fn default_notify_poll() -> u64 {
    500
}
fn default_in_flight() -> usize {
    64
}
fn default_in_flight_endpoint() -> usize {
    4
}
fn default_jitter() -> u32 {
    10
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalsConfig {
    /// How often the broadcaster looks for due withdrawals and confirmations.
    #[serde(default = "default_broadcast_poll")]
    pub poll_interval_ms: u64,
    /// Low-priority withdrawals wait this long to share one transaction.
    #[serde(default = "default_batch_window")]
    pub batch_window_secs: u64,
}

impl Default for WithdrawalsConfig {
    fn default() -> Self {
        Self { poll_interval_ms: default_broadcast_poll(), batch_window_secs: default_batch_window() }
    }
}

fn default_broadcast_poll() -> u64 {
    2000
}
fn default_batch_window() -> u64 {
    300
}

/// One `[chains.NAME]` table: how the chain is watched, and its kind's own section
/// (`[chains.NAME.bitcoind]`). Adding a chain kind adds its crate, its section here and
/// its line in `ChainConfig::adapter`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The adapter: `bitcoind` (Bitcoin Core's JSON-RPC: bitcoind, litecoind, dogecoind).
    pub kind: String,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_reorg")]
    pub max_reorg_depth: u64,
    #[serde(default)]
    pub start_height: Option<u64>,
    /// A tip unchanged this long marks the chain lagging (alert; invoices on it do not
    /// expire until it catches up). Default: 12 average block intervals (none on
    /// regtest); 0 turns it off.
    #[serde(default)]
    pub stall_after_secs: Option<u64>,
    /// `[chains.NAME.bitcoind]`: the node of a `bitcoind` chain.
    #[serde(default)]
    pub bitcoind: Option<kassa_chain_bitcoind::BitcoindSection>,
}

/// Every chain kind Kassa has an adapter for.
const CHAIN_KINDS: &[&str] = &[kassa_chain_bitcoind::KIND];

impl ChainConfig {
    /// Checks the table and builds the chain's adapter; `currencies` are the codes of
    /// the currencies that name this chain. Errors name the key.
    fn adapter(&self, name: &str, currencies: &[String]) -> anyhow::Result<std::sync::Arc<dyn kassa_chain::ChainAdapter>> {
        let key = |k: &str| {
            if k.is_empty() {
                format!("chains.{name}")
            } else {
                format!("chains.{name}.{k}")
            }
        };
        if !CHAIN_KINDS.contains(&self.kind.as_str()) {
            bail!("{}: {:?} is not a supported chain kind ({})", key("kind"), self.kind, CHAIN_KINDS.join(", "));
        }
        let sections = [(kassa_chain_bitcoind::KIND, self.bitcoind.is_some())];
        for (kind, present) in sections {
            if present && kind != self.kind {
                bail!("{}: a section for kind {kind}, but the chain's kind is {:?}", key(kind), self.kind);
            }
        }
        let missing = || anyhow!("{}: missing; a {} chain needs its section [chains.{name}.{}]", key(&self.kind), self.kind, self.kind);
        let built = match self.kind.as_str() {
            kassa_chain_bitcoind::KIND => {
                let section = self.bitcoind.as_ref().ok_or_else(missing)?;
                section.build(name, currencies).map(|a| std::sync::Arc::new(a) as std::sync::Arc<dyn kassa_chain::ChainAdapter>)
            }
            other => unreachable!("kind {other} is listed in CHAIN_KINDS without an adapter"),
        };
        built.map_err(|(k, message)| anyhow!("{}: {message}", key(&k)))
    }
}

fn default_poll_ms() -> u64 {
    5000
}
fn default_reorg() -> u64 {
    10
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Lifetime of cached API keys: a key revoked (or a merchant blocked) by another
    /// process stops working within it. 0 turns the cache off.
    #[serde(default = "default_read_cache_ms")]
    pub key_cache_ms: u64,
    /// Lifetime of cached balances: ledger writes of another process (an instance, a
    /// CLI command) are seen within it; this process's own are seen at once. 0: off.
    #[serde(default = "default_read_cache_ms")]
    pub balance_cache_ms: u64,
    /// Mount prefixes by dialect (`""` is the root), instead of each dialect's
    /// defaults: e.g. `westwallet = ["/westwallet"]` takes it off the root.
    #[serde(default)]
    pub mounts: BTreeMap<String, Vec<String>>,
    /// A header a trusted reverse proxy sets to the client's address (its last entry
    /// is used). Unset: the TCP peer is the client and no header is believed.
    #[serde(default)]
    pub client_ip_header: Option<String>,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
}

/// `[http.rate_limits]`: budgets like `"60/min"` (N/s, N/min, N/h) or `"off"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Failed authentications per client IP before it is refused for a while.
    pub auth_failures: Option<String>,
    #[serde(default)]
    pub default: GroupLimitsConfig,
    #[serde(default)]
    pub address: GroupLimitsConfig,
    #[serde(default)]
    pub quote: GroupLimitsConfig,
    #[serde(default)]
    pub invoice: GroupLimitsConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLimitsConfig {
    pub per_key: Option<String>,
    pub per_ip: Option<String>,
}

impl RateLimitsConfig {
    /// The limits, with the defaults where a key is absent; names the key it refuses.
    pub fn options(&self, client_ip_header: Option<&str>) -> anyhow::Result<kassa_api::limits::RateLimitOptions> {
        use kassa_api::limits::{Group, Rate, RateLimitOptions};
        fn rate(key: &str, given: &Option<String>, default: Option<Rate>) -> anyhow::Result<Option<Rate>> {
            match given.as_deref().map(str::trim) {
                None => Ok(default),
                Some("off") => Ok(None),
                Some(text) => text.parse().map(Some).map_err(|e| anyhow!("http.rate_limits.{key}: {e}")),
            }
        }
        let mut options = RateLimitOptions::default();
        options.auth_failures = rate("auth_failures", &self.auth_failures, options.auth_failures)?;
        for (i, (group, given)) in Group::ALL.into_iter().zip([&self.default, &self.address, &self.quote, &self.invoice]).enumerate() {
            let limits = &mut options.groups[i];
            limits.per_key = rate(&format!("{}.per_key", group.name()), &given.per_key, limits.per_key)?;
            limits.per_ip = rate(&format!("{}.per_ip", group.name()), &given.per_ip, limits.per_ip)?;
        }
        if let Some(name) = client_ip_header {
            options.client_ip_header = Some(
                axum::http::HeaderName::try_from(name.trim())
                    .map_err(|_| anyhow!("http.client_ip_header: {name:?} is not a header name (e.g. \"X-Forwarded-For\")"))?,
            );
        }
        Ok(options)
    }
}

fn default_read_cache_ms() -> u64 {
    1000
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            request_timeout_secs: default_request_timeout(),
            shutdown_grace_secs: default_shutdown_grace(),
            key_cache_ms: default_read_cache_ms(),
            balance_cache_ms: default_read_cache_ms(),
            mounts: BTreeMap::new(),
            client_ip_header: None,
            rate_limits: RateLimitsConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    #[serde(default = "default_writers")]
    pub writers: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { max_batch: default_max_batch(), queue_capacity: default_queue(), writers: default_writers() }
    }
}

fn default_database_url() -> String {
    "kassa.db".into()
}
fn default_max_connections() -> u32 {
    16
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_request_timeout() -> u64 {
    30
}
fn default_shutdown_grace() -> u64 {
    20
}
fn default_max_batch() -> usize {
    1024
}
fn default_queue() -> usize {
    16_384
}
fn default_writers() -> usize {
    1
}

/// The configuration after validation.
pub struct Settings {
    pub config: Config,
    pub listen: SocketAddr,
    pub currencies: Currencies,
    pub path: PathBuf,
    pub rate_limits: kassa_api::limits::RateLimitOptions,
}

impl Config {
    /// Reads the file at `path` (which must exist) and the environment.
    pub fn load(path: &Path) -> anyhow::Result<Settings> {
        if !path.exists() {
            bail!(
                "configuration file {} not found (give one with --config or KASSA_CONFIG; kassa.example.toml shows every key)",
                path.display()
            );
        }
        Self::extract(Figment::new().merge(Toml::file(path)), path)
    }

    /// Reads configuration text (the dev command's built-in file) and the environment;
    /// relative paths are taken relative to `base`.
    pub fn from_toml(text: &str, base: &Path) -> anyhow::Result<Settings> {
        Self::extract(Figment::new().merge(Toml::string(text)), base)
    }

    fn extract(figment: Figment, path: &Path) -> anyhow::Result<Settings> {
        let figment = figment.merge(Env::prefixed("KASSA_").split("__").ignore(&["config"]));
        let config: Config = figment.extract().map_err(|e| {
            // figment's errors already name the key and where it came from.
            let mut message = String::new();
            for err in e {
                message.push_str(&format!("\n  {err}"));
            }
            anyhow!("invalid configuration in {}:{message}", path.display())
        })?;
        config.validate(path)
    }

    fn validate(self, path: &Path) -> anyhow::Result<Settings> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| anyhow!("listen: {:?} is not an address like 127.0.0.1:8080", self.listen))?;
        if !["text", "json"].contains(&self.log_format.as_str()) {
            bail!("log_format: must be \"text\" or \"json\", not {:?}", self.log_format);
        }
        if self.database_url.trim().is_empty() {
            bail!("database_url: must not be empty");
        }
        if !(1..=1000).contains(&self.database_max_connections) {
            bail!("database_max_connections: must be 1-1000");
        }
        if self.http.max_body_bytes < 1024 {
            bail!("http.max_body_bytes: must be at least 1024");
        }
        if !(1..=3600).contains(&self.http.request_timeout_secs) {
            bail!("http.request_timeout_secs: must be 1-3600");
        }
        if !(1..=100_000).contains(&self.ledger.max_batch) {
            bail!("ledger.max_batch: must be 1-100000");
        }
        if !(1..=64).contains(&self.ledger.writers) {
            bail!("ledger.writers: must be 1-64");
        }
        if self.ledger.queue_capacity < 1 {
            bail!("ledger.queue_capacity: must be at least 1");
        }
        let currencies = validate_currencies(&self.currencies).map_err(|e| anyhow!("{e}"))?;
        for (name, chain) in &self.chains {
            let key = |k: &str| format!("chains.{name}.{k}");
            let carried: Vec<String> = currencies.iter().filter(|c| c.chain.as_deref() == Some(name.as_str())).map(|c| c.code.to_string()).collect();
            let adapter = chain.adapter(name, &carried)?;
            for asset in adapter.assets() {
                let c = currencies.iter().find(|c| c.code.as_str() == asset.code).expect("assets are carried currencies");
                if c.precision > asset.decimals {
                    bail!("currencies.{}.precision: {} is finer than the chain's {} decimals of {}", c.code, c.precision, asset.decimals, asset.code);
                }
            }
            if !(100..=3_600_000).contains(&chain.poll_interval_ms) {
                bail!("{}: must be 100-3600000", key("poll_interval_ms"));
            }
            if !(1..=1000).contains(&chain.max_reorg_depth) {
                bail!("{}: must be 1-1000", key("max_reorg_depth"));
            }
        }
        if !(100..=3_600_000).contains(&self.withdrawals.poll_interval_ms) {
            bail!("withdrawals.poll_interval_ms: must be 100-3600000");
        }
        if self.withdrawals.batch_window_secs > 86_400 {
            bail!("withdrawals.batch_window_secs: must be at most 86400");
        }
        let n = &self.notifications;
        if !(100..=120_000).contains(&n.connect_timeout_ms) {
            bail!("notifications.connect_timeout_ms: must be 100-120000");
        }
        if !(100..=300_000).contains(&n.response_timeout_ms) {
            bail!("notifications.response_timeout_ms: must be 100-300000");
        }
        if !(50..=60_000).contains(&n.poll_interval_ms) {
            bail!("notifications.poll_interval_ms: must be 50-60000");
        }
        if !(1..=10_000).contains(&n.max_in_flight) {
            bail!("notifications.max_in_flight: must be 1-10000");
        }
        if !(1..=1000).contains(&n.max_in_flight_per_endpoint) {
            bail!("notifications.max_in_flight_per_endpoint: must be 1-1000");
        }
        if n.jitter_percent > 100 {
            bail!("notifications.jitter_percent: must be 0-100");
        }
        let formats = kassa_api::dialects::callback_formats();
        for (format, delays) in &n.retry_schedule_secs {
            if !formats.knows(format) {
                bail!("notifications.retry_schedule_secs.{format}: not a callback format ({})", formats.names().join(", "));
            }
            if delays.len() > 50 || delays.iter().any(|d| !(1..=7 * 86_400).contains(d)) {
                bail!("notifications.retry_schedule_secs.{format}: at most 50 delays, each 1-604800 seconds");
            }
        }
        rates_options(&self.rates, &currencies)?;
        invoice_tolerance(&self.invoices)?;
        payout_plan_settings(&self.payout_plans, &currencies)?;
        if !(1..=self.invoices.max_ttl_secs).contains(&self.invoices.default_ttl_secs) || self.invoices.max_ttl_secs > 365 * 86_400 {
            bail!("invoices.default_ttl_secs: must be 1 to invoices.max_ttl_secs (at most a year)");
        }
        if !(60..=86_400).contains(&self.invoices.rate_window_secs) || self.invoices.rate_window_secs > self.invoices.max_ttl_secs {
            bail!("invoices.rate_window_secs: must be 60 to 86400, and at most invoices.max_ttl_secs");
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || url_has_no_host(u) {
                bail!("public_url: must be an http:// or https:// URL like https://pay.example.com");
            }
        }
        if self.hook_token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("hook_token: must be at least 16 characters");
        }
        if self.operator_token.as_ref().is_some_and(|t| t.len() < 32 || !t.chars().all(|c| c.is_ascii_graphic())) {
            bail!("operator_token: must be at least 32 printable ASCII characters (e.g. head -c 32 /dev/urandom | xxd -p -c 64)");
        }
        if let Err(e) = kassa_api::dialects::mounts(&self.http.mounts) {
            bail!("{e}");
        }
        let rate_limits = self.http.rate_limits.options(self.http.client_ip_header.as_deref())?;
        if self.http.key_cache_ms > 60_000 {
            bail!("http.key_cache_ms: must be 0-60000");
        }
        if self.http.balance_cache_ms > 60_000 {
            bail!("http.balance_cache_ms: must be 0-60000");
        }
        for (merchant, origins) in &self.coinspaid.terminal_frame_ancestors {
            for o in origins {
                let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")).unwrap_or("");
                if rest.is_empty() || !rest.is_ascii() || rest.chars().any(|c| c.is_ascii_control() || "/ ;,'\"*".contains(c)) {
                    bail!("coinspaid.terminal_frame_ancestors.{merchant}: {o:?} is not an origin like https://shop.example");
                }
            }
        }
        if !(5..=3600).contains(&self.westwallet.timestamp_window_secs) {
            bail!("westwallet.timestamp_window_secs: must be 5-3600");
        }
        for code in self.westwallet.currencies.iter().flatten() {
            match currencies.iter().find(|c| c.code.as_str() == code) {
                Some(c) if c.chain.as_ref().is_some_and(|chain| self.chains.contains_key(chain)) => {}
                Some(_) => bail!("westwallet.currencies: {code} is not carried by a configured chain"),
                None => bail!("westwallet.currencies: {code} is not a configured currency"),
            }
        }
        Ok(Settings { listen, currencies: Currencies::new(currencies), path: path.to_path_buf(), rate_limits, config: self })
    }
}

impl Settings {
    pub fn ledger_options(&self) -> LedgerOptions {
        LedgerOptions {
            max_batch: self.config.ledger.max_batch,
            queue_capacity: self.config.ledger.queue_capacity,
            writers: self.config.ledger.writers,
        }
    }

    /// Lifetimes of the API key and balance read caches.
    pub fn read_caches(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.config.http.key_cache_ms), Duration::from_millis(self.config.http.balance_cache_ms))
    }

    pub fn http_options(&self) -> kassa_api::HttpOptions {
        kassa_api::HttpOptions {
            max_body_bytes: self.config.http.max_body_bytes,
            request_timeout: Duration::from_secs(self.config.http.request_timeout_secs),
            hook_token: self.config.hook_token.clone(),
            operator_token: self.config.operator_token.clone(),
            mounts: self.config.http.mounts.clone(),
            westwallet: kassa_api::WestwalletOptions {
                currencies: self.config.westwallet.currencies.clone(),
                timestamp_window_secs: self.config.westwallet.timestamp_window_secs as i64,
            },
            rate_limits: self.rate_limits.clone(),
            terminal_frame_ancestors: self.config.coinspaid.terminal_frame_ancestors.clone(),
        }
    }

    pub fn notifier_options(&self) -> kassa_engine::notifier::NotifierOptions {
        let n = &self.config.notifications;
        kassa_engine::notifier::NotifierOptions {
            connect_timeout: Duration::from_millis(n.connect_timeout_ms),
            response_timeout: Duration::from_millis(n.response_timeout_ms),
            poll_interval: Duration::from_millis(n.poll_interval_ms),
            max_in_flight: n.max_in_flight,
            max_in_flight_per_endpoint: n.max_in_flight_per_endpoint,
            jitter_percent: n.jitter_percent,
            retry_schedule_secs: n
                .retry_schedule_secs
                .iter()
                .map(|(f, d)| (f.clone(), d.clone()))
                .collect(),
        }
    }

    /// The rate sources and pairs, if any pair is configured.
    pub fn rates_options(&self) -> Option<kassa_engine::rates::RatesOptions> {
        let all: Vec<kassa_core::Currency> = self.currencies.all().cloned().collect();
        rates_options(&self.config.rates, &all).expect("validated")
    }

    pub fn invoice_settings(&self) -> kassa_engine::invoices::InvoiceSettings {
        let c = &self.config.invoices;
        kassa_engine::invoices::InvoiceSettings {
            default_ttl: Duration::from_secs(c.default_ttl_secs),
            max_ttl: Duration::from_secs(c.max_ttl_secs),
            tolerance_e6: invoice_tolerance(c).expect("validated"),
            rate_window: Duration::from_secs(c.rate_window_secs),
            public_url: self.config.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)),
        }
    }

    pub fn payout_plan_settings(&self) -> kassa_engine::payout_plans::PayoutPlanSettings {
        let all: Vec<kassa_core::Currency> = self.currencies.all().cloned().collect();
        payout_plan_settings(&self.config.payout_plans, &all).expect("validated")
    }

    pub fn target_policy(&self) -> kassa_engine::webhooks::TargetPolicy {
        kassa_engine::webhooks::TargetPolicy { allow_loopback: self.config.notifications.allow_loopback }
    }

    /// The chain adapters and their watch settings.
    pub fn chains(&self) -> kassa_engine::chains::Chains {
        let mut chains = kassa_engine::chains::Chains::default();
        for (name, c) in &self.config.chains {
            let carried: Vec<String> =
                self.currencies.all().filter(|cur| cur.chain.as_deref() == Some(name.as_str())).map(|cur| cur.code.to_string()).collect();
            let adapter = c.adapter(name, &carried).expect("validated");
            let stall_after = match c.stall_after_secs {
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
                None => adapter.expected_block_interval().map(|b| b * 12),
            };
            let settings = kassa_engine::chains::ChainSettings {
                poll_interval: Duration::from_millis(c.poll_interval_ms),
                max_reorg_depth: c.max_reorg_depth,
                start_height: c.start_height,
                stall_after,
                ..Default::default()
            };
            chains.add(adapter, settings);
        }
        chains
    }

    /// The master key: from `master_key` (env), else `master_key_file`, else in dev
    /// mode a generated file beside the configuration.
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        if let Some(hex) = &self.config.master_key {
            return MasterKey::from_hex(hex).context("master_key (KASSA_MASTER_KEY)");
        }
        if let Some(file) = &self.config.master_key_file {
            let file = self.relative(file);
            if file.exists() || !self.config.dev_mode {
                return MasterKey::from_file(&file).context("master_key_file");
            }
        }
        if !self.config.dev_mode {
            bail!("master_key_file: no master key configured (set master_key_file, or KASSA_MASTER_KEY to 64 hex characters)");
        }
        let file = self.relative(self.config.master_key_file.as_deref().unwrap_or(Path::new("master.key")));
        if file.exists() {
            return MasterKey::from_file(&file).context("master_key_file");
        }
        let key = MasterKey::generate_into(&file).context("master_key_file")?;
        tracing::warn!(path = %file.display(), "dev mode: generated a new master key; it encrypts every API secret, so back it up with the database");
        Ok(key)
    }

    /// A path from the configuration, taken relative to the configuration file.
    pub fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.path.parent().map(|d| d.join(p)).unwrap_or_else(|| p.to_path_buf())
    }

    /// The database URL, with a relative SQLite path taken relative to the config file.
    pub fn database_url(&self) -> String {
        let url = self.config.database_url.trim();
        if url.contains("://") && !url.starts_with("sqlite://") {
            return url.to_string();
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        self.relative(Path::new(path)).display().to_string()
    }
}

/// Checks `[rates]` against the currencies and builds the options (None without pairs).
fn rates_options(r: &RatesConfig, currencies: &[kassa_core::Currency]) -> anyhow::Result<Option<kassa_engine::rates::RatesOptions>> {
    use kassa_core::rates::Rate;
    use kassa_engine::rates::{PairConfig as Pair, RatesOptions, Source};
    if r.pairs.is_empty() {
        return Ok(None);
    }
    let currency = |code: &str, key: &str| {
        currencies.iter().find(|c| c.code.as_str() == code).ok_or_else(|| anyhow!("{key}: {code} is not a configured currency"))
    };
    let mut pairs = Vec::new();
    for (name, p) in &r.pairs {
        let key = format!("rates.pairs.\"{name}\"");
        let (base, quote) = name.split_once('/').ok_or_else(|| anyhow!("{key}: a pair is written BASE/QUOTE, like LTC/EUR"))?;
        let base_c = currency(base, &key)?;
        currency(quote, &key)?;
        if base == quote {
            bail!("{key}: the two currencies must differ");
        }
        let spread = match &p.spread_percent {
            Some(t) => kassa_core::Amount::parse(t, kassa_core::currency::PERCENT_SCALE, kassa_core::SignPolicy::NonNegative)
                .map_err(|e| anyhow!("{key}.spread_percent: {e}"))?
                .units(),
            None => 0,
        };
        if spread >= 100_000_000 {
            bail!("{key}.spread_percent: must be below 100");
        }
        let min = match &p.min_amount {
            Some(t) => base_c.parse_amount(t, kassa_core::SignPolicy::NonNegative).map_err(|e| anyhow!("{key}.min_amount: {e}"))?.units(),
            None => 0,
        };
        let min_deposit = match &p.min_amount_deposit_with_exchange {
            Some(t) => base_c
                .parse_amount(t, kassa_core::SignPolicy::NonNegative)
                .map_err(|e| anyhow!("{key}.min_amount_deposit_with_exchange: {e}"))?
                .units(),
            None => min,
        };
        if r.pairs.contains_key(&format!("{quote}/{base}")) {
            bail!("{key}: {quote}/{base} is configured too; a pair is exchanged both ways, configure it once");
        }
        pairs.push(Pair { base: base.into(), quote: quote.into(), spread_e6: spread, min_base_units: min, min_deposit_base_units: min_deposit });
    }
    if r.sources.is_empty() {
        bail!("rates.sources: list at least one source (kraken, coinbase, binance, fixed) for the configured pairs");
    }
    let mut sources = Vec::new();
    for s in &r.sources {
        sources.push(match s.as_str() {
            "kraken" => Source::Kraken { base_url: r.kraken_url.clone() },
            "coinbase" => Source::Coinbase { base_url: r.coinbase_url.clone() },
            "binance" => Source::Binance { base_url: r.binance_url.clone() },
            "fixed" => {
                let mut rates = BTreeMap::new();
                for (pair, text) in &r.fixed {
                    let rate = Rate::parse(text).map_err(|e| anyhow!("rates.fixed.\"{pair}\": {e}"))?;
                    if !r.pairs.contains_key(pair) {
                        bail!("rates.fixed.\"{pair}\": not a pair in [rates.pairs]");
                    }
                    rates.insert(pair.clone(), rate);
                }
                Source::Fixed { rates }
            }
            other => bail!("rates.sources: {other:?} is not a source (kraken, coinbase, binance, fixed)"),
        });
    }
    for (key, v) in [("max_age_secs", r.max_age_secs), ("refresh_secs", r.refresh_secs), ("quote_ttl_secs", r.quote_ttl_secs), ("request_timeout_secs", r.request_timeout_secs)] {
        if !(1..=86_400).contains(&v) {
            bail!("rates.{key}: must be 1-86400");
        }
    }
    if !(60..=7 * 86_400).contains(&r.futures_window_secs) {
        bail!("rates.futures_window_secs: must be 60-604800");
    }
    match currencies.iter().find(|c| c.code.as_str() == r.futures_limit_currency) {
        Some(c) => {
            c.parse_amount(r.futures_limit.trim(), kassa_core::SignPolicy::NonNegative).map_err(|e| anyhow!("rates.futures_limit: {e}"))?;
        }
        None if r.futures_limit_currency == default_futures_limit_currency() => {} // no EUR configured: futures refuse, naming it
        None => bail!("rates.futures_limit_currency: {:?} is not a configured currency", r.futures_limit_currency),
    }
    if r.max_age_secs <= r.refresh_secs {
        bail!("rates.max_age_secs: must exceed rates.refresh_secs ({}), or rates go stale between refreshes", r.refresh_secs);
    }
    Ok(Some(RatesOptions {
        sources,
        pairs,
        max_age: Duration::from_secs(r.max_age_secs),
        refresh_interval: Duration::from_secs(r.refresh_secs),
        quote_ttl: Duration::from_secs(r.quote_ttl_secs),
        request_timeout: Duration::from_secs(r.request_timeout_secs),
        futures_window: Duration::from_secs(r.futures_window_secs),
        futures_limit: r.futures_limit.trim().to_string(),
        futures_limit_currency: r.futures_limit_currency.clone(),
    }))
}

fn url_has_no_host(u: &str) -> bool {
    u.split("://").nth(1).is_none_or(|rest| rest.split('/').next().unwrap_or("").is_empty())
}

fn payout_plan_settings(c: &PayoutPlansConfig, currencies: &[kassa_core::Currency]) -> anyhow::Result<kassa_engine::payout_plans::PayoutPlanSettings> {
    if !(1..=24 * 365).contains(&c.validity_hours) {
        bail!("payout_plans.validity_hours: must be 1-8760");
    }
    if c.max_delay_hours > 24 * 365 {
        bail!("payout_plans.max_delay_hours: at most 8760");
    }
    if !(1..=500).contains(&c.max_payouts) {
        bail!("payout_plans.max_payouts: must be 1-500");
    }
    let share = kassa_core::Amount::parse(c.referral_share_percent.trim(), kassa_core::currency::PERCENT_SCALE, kassa_core::SignPolicy::NonNegative)
        .map_err(|e| anyhow!("payout_plans.referral_share_percent: {e}"))?;
    if share.units() > 100 * 10i128.pow(u32::from(kassa_core::currency::PERCENT_SCALE)) {
        bail!("payout_plans.referral_share_percent: at most 100");
    }
    if let Some(code) = &c.default_currency {
        if !currencies.iter().any(|cur| cur.code.as_str() == code && cur.chain.is_some()) {
            bail!("payout_plans.default_currency: {code:?} is not a configured crypto currency");
        }
    }
    Ok(kassa_engine::payout_plans::PayoutPlanSettings {
        validity: Duration::from_secs(c.validity_hours * 3600),
        max_delay_hours: c.max_delay_hours as i64,
        max_payouts: c.max_payouts,
        referral_share_e6: share.units(),
        default_currency: c.default_currency.clone(),
    })
}

fn invoice_tolerance(c: &InvoicesConfig) -> anyhow::Result<i64> {
    let t = kassa_core::Amount::parse(&c.tolerance_percent, kassa_core::currency::PERCENT_SCALE, kassa_core::SignPolicy::NonNegative)
        .map_err(|e| anyhow!("invoices.tolerance_percent: {e}"))?;
    if t.units() > 50_000_000 {
        bail!("invoices.tolerance_percent: at most 50");
    }
    Ok(t.units() as i64)
}
