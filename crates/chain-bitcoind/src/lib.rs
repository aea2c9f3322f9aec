//! Bitcoin-family chain adapter over Bitcoin Core's JSON-RPC. Works with bitcoind,
//! litecoind and dogecoind; tolerant of Core 0.21's JSON shapes (`scriptPubKey.addresses`
//! arrays, extra MWEB fields). Deposit addresses come from the node wallet's HD keypool
//! (`getnewaddress`): back the wallet up once after creating it (its HD seed derives every
//! future address), and again only if its seed is replaced.

pub mod address;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use kassa_chain::{
    Asset, BlockRef, ChainAdapter, ChainError, Checkpoint, DepositTarget, IncomingTransfer, Payment, Priority, Result, ScanUpdate, ScannedBlock, SignedTx,
    TxStatus, WalletFunds,
};
use kassa_core::{Amount, SignPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

pub use address::{Coin, Network};

/// The `kind` of a chain served by this adapter (`[chains.NAME] kind = "bitcoind"`).
pub const KIND: &str = "bitcoind";

/// Decimals of every Bitcoin-family chain's base unit.
pub const DECIMALS: u8 = 8;

/// Most mempool transactions looked up per scan (the rest in later scans).
const MAX_MEMPOOL_FETCH: usize = 5_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfTargets {
    #[serde(default = "low")]
    pub low: u32,
    #[serde(default = "medium")]
    pub medium: u32,
    #[serde(default = "high")]
    pub high: u32,
}

fn low() -> u32 {
    12
}
fn medium() -> u32 {
    6
}
fn high() -> u32 {
    2
}

impl Default for ConfTargets {
    fn default() -> Self {
        Self { low: low(), medium: medium(), high: high() }
    }
}

/// The `[chains.NAME.bitcoind]` configuration section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoindSection {
    /// `bitcoin`, `litecoin` or `dogecoin` (address formats).
    pub coin: String,
    /// `mainnet`, `testnet` or `regtest`.
    pub network: String,
    pub rpc_url: String,
    pub rpc_user: String,
    pub rpc_password: String,
    /// The node wallet Kassa uses (created if missing).
    #[serde(default = "default_wallet")]
    pub wallet: String,
    /// Fee targets in blocks per priority.
    #[serde(default)]
    pub conf_targets: ConfTargets,
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_secs: u64,
}

fn default_wallet() -> String {
    "kassa".into()
}
fn default_rpc_timeout() -> u64 {
    30
}

impl BitcoindSection {
    /// The adapter for chain `chain`, which carries `currencies` (the codes of the
    /// currencies naming it). Errors name the key below `[chains.NAME]` (empty for the
    /// chain itself) and say what is wrong.
    pub fn build(&self, chain: &str, currencies: &[String]) -> std::result::Result<Bitcoind, (String, String)> {
        let key = |k: &str| format!("{KIND}.{k}");
        let coin: Coin = self.coin.parse().map_err(|e| (key("coin"), format!("{e}")))?;
        let network: Network = self.network.parse().map_err(|e| (key("network"), format!("{e}")))?;
        if !(self.rpc_url.starts_with("http://") || self.rpc_url.starts_with("https://")) {
            return Err((key("rpc_url"), "must be an http:// or https:// URL".into()));
        }
        if !(1..=3600).contains(&self.rpc_timeout_secs) {
            return Err((key("rpc_timeout_secs"), "must be 1-3600".into()));
        }
        let currency = match currencies {
            [one] => one.clone(),
            [] => return Err((String::new(), format!("no currency names chain {chain:?} (set currencies.CODE.chain = {chain:?})"))),
            [first, others @ ..] => {
                return Err((
                    String::new(),
                    format!(
                        "a {KIND} chain carries one currency, its coin (no tokens), but {} name it; set currencies.{}.chain to another chain",
                        currencies.join(", "),
                        others.first().unwrap_or(first)
                    ),
                ))
            }
        };
        Ok(Bitcoind::new(BitcoindConfig {
            chain: chain.to_string(),
            currency,
            coin,
            network,
            rpc_url: self.rpc_url.clone(),
            rpc_user: self.rpc_user.clone(),
            rpc_password: self.rpc_password.clone(),
            wallet: self.wallet.clone(),
            conf_targets: self.conf_targets.clone(),
            timeout: Duration::from_secs(self.rpc_timeout_secs),
        }))
    }
}

/// Connection settings of one node.
#[derive(Clone, Debug)]
pub struct BitcoindConfig {
    pub chain: String,
    /// The currency code the chain's coin is booked as (`LTC`).
    pub currency: String,
    pub coin: Coin,
    pub network: Network,
    pub rpc_url: String,
    pub rpc_user: String,
    pub rpc_password: String,
    /// The node wallet Kassa uses (created if missing).
    pub wallet: String,
    pub conf_targets: ConfTargets,
    pub timeout: Duration,
}

pub struct Bitcoind {
    cfg: BitcoindConfig,
    assets: [Asset; 1],
    http: reqwest::Client,
    next_id: AtomicU64,
    /// Transfers of the mempool transactions looked up so far, by txid (pruned to the
    /// current mempool at every scan).
    mempool: Mutex<HashMap<String, Vec<IncomingTransfer>>>,
}

#[derive(Deserialize)]
struct RpcResponse {
    result: Option<Value>,
    error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
struct RpcErrorBody {
    code: i64,
    message: String,
}

/// A failed call before it is given a meaning: what an error code means depends on
/// the call (-5 is "no such transaction" for a lookup, "invalid address" for a send).
#[derive(Debug)]
pub enum RpcFailure {
    /// The node did not answer, or not with JSON-RPC.
    Transport(String),
    /// The node answered with an error.
    Rpc { code: i64, message: String },
}

// Bitcoin Core's RPC error codes (src/rpc/protocol.h) that Kassa tells apart.
const RPC_TYPE_ERROR: i64 = -3;
const RPC_MISC_ERROR: i64 = -4;
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
const RPC_WALLET_INSUFFICIENT_FUNDS: i64 = -6;
const RPC_INVALID_PARAMETER: i64 = -8;
const RPC_WALLET_NOT_FOUND: i64 = -18;
const RPC_VERIFY_ERROR: i64 = -25;
const RPC_VERIFY_REJECTED: i64 = -26;
const RPC_VERIFY_ALREADY_IN_CHAIN: i64 = -27;
const RPC_WALLET_ALREADY_LOADED: i64 = -35;

impl RpcFailure {
    /// The meaning for a lookup (blocks, transactions, balances): -5 is "not found".
    fn lookup(self) -> ChainError {
        match self {
            RpcFailure::Transport(m) => ChainError::Transient(m),
            RpcFailure::Rpc { code: RPC_INVALID_ADDRESS_OR_KEY, .. } => ChainError::NotFound,
            RpcFailure::Rpc { code: RPC_TYPE_ERROR | RPC_INVALID_PARAMETER | RPC_VERIFY_ERROR | RPC_VERIFY_REJECTED, message } => ChainError::Refused(message),
            RpcFailure::Rpc { code, message } => ChainError::Transient(format!("node error {code}: {message}")),
        }
    }

    /// The meaning for building, signing or sending a payment: invalid parameters and
    /// rejected transactions are refusals for good; short funds are their own error.
    fn send(self) -> ChainError {
        match self {
            RpcFailure::Rpc { code: RPC_WALLET_INSUFFICIENT_FUNDS, message } => ChainError::InsufficientFunds(message),
            RpcFailure::Rpc { code: RPC_MISC_ERROR, message } if message.to_lowercase().contains("insufficient funds") => {
                ChainError::InsufficientFunds(message)
            }
            RpcFailure::Rpc { code: RPC_MISC_ERROR, message }
                if {
                    let m = message.to_lowercase();
                    m.contains("too small") || m.contains("dust")
                } =>
            {
                ChainError::Refused(message)
            }
            RpcFailure::Rpc { code: RPC_TYPE_ERROR | RPC_INVALID_ADDRESS_OR_KEY | RPC_INVALID_PARAMETER | RPC_VERIFY_ERROR | RPC_VERIFY_REJECTED, message } => {
                ChainError::Refused(message)
            }
            other => other.lookup(),
        }
    }
}

impl std::fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcFailure::Transport(m) => write!(f, "{m}"),
            RpcFailure::Rpc { code, message } => write!(f, "node error {code}: {message}"),
        }
    }
}

fn protocol(what: impl std::fmt::Display) -> ChainError {
    ChainError::Transient(format!("unexpected answer from the node: {what}"))
}

/// A chain amount (JSON number or string with up to 8 decimals) in base units.
pub fn parse_amount(v: &Value) -> Result<i128> {
    Amount::from_json(v, DECIMALS, SignPolicy::Any).map(|a| a.units()).map_err(|e| protocol(format!("amount {v}: {e}")))
}

/// Base units as the exact JSON number Core expects (`0.00100000`).
pub fn amount_json(units: i128) -> Value {
    let text = Amount::from_units(units, DECIMALS).expect("chain amounts are in range").to_string();
    serde_json::from_str(&text).expect("a decimal is a JSON number")
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key).and_then(Value::as_str).ok_or_else(|| protocol(format!("missing {key}")))
}

/// An output of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TxOutput {
    vout: u32,
    /// The address paid, when the script has one.
    address: Option<String>,
    amount: i128,
}

/// A transaction as `getrawtransaction … true` and `getblock … 2` print it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tx {
    txid: String,
    outputs: Vec<TxOutput>,
}

fn parse_tx(tx: &Value) -> Result<Tx> {
    let txid = str_field(tx, "txid")?.to_string();
    let mut outputs = Vec::new();
    for vout in tx.get("vout").and_then(Value::as_array).into_iter().flatten() {
        let n = vout.get("n").and_then(Value::as_u64).ok_or_else(|| protocol("vout without n"))? as u32;
        let amount = parse_amount(vout.get("value").ok_or_else(|| protocol("vout without value"))?)?;
        let spk = vout.get("scriptPubKey");
        // Core ≥ 22 prints `address`; 0.21 prints an `addresses` array.
        let address = spk
            .and_then(|s| s.get("address"))
            .and_then(Value::as_str)
            .or_else(|| {
                spk.and_then(|s| s.get("addresses"))
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 1)
                    .and_then(|a| a[0].as_str())
            })
            .map(str::to_string);
        outputs.push(TxOutput { vout: n, address, amount });
    }
    Ok(Tx { txid, outputs })
}

impl Bitcoind {
    pub fn new(cfg: BitcoindConfig) -> Self {
        let http = reqwest::Client::builder().timeout(cfg.timeout).build().expect("HTTP client");
        let assets = [Asset { code: cfg.currency.clone(), decimals: DECIMALS, contract: None }];
        Self { cfg, assets, http, next_id: AtomicU64::new(1), mempool: Mutex::new(HashMap::new()) }
    }

    pub fn config(&self) -> &BitcoindConfig {
        &self.cfg
    }

    async fn call_at(&self, url: &str, method: &str, params: Value) -> std::result::Result<Value, RpcFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.cfg.rpc_user, Some(&self.cfg.rpc_password))
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcFailure::Transport(format!("{method}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| RpcFailure::Transport(format!("{method}: {e}")))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(RpcFailure::Transport("the node refused the RPC credentials".into()));
        }
        let parsed: RpcResponse = serde_json::from_str(&text)
            .map_err(|_| RpcFailure::Transport(format!("{method}: HTTP {status}: {}", text.chars().take(200).collect::<String>())))?;
        if let Some(err) = parsed.error {
            return Err(RpcFailure::Rpc { code: err.code, message: err.message });
        }
        Ok(parsed.result.unwrap_or(Value::Null))
    }

    async fn node(&self, method: &str, params: Value) -> std::result::Result<Value, RpcFailure> {
        self.call_at(&self.cfg.rpc_url, method, params).await
    }

    async fn wallet(&self, method: &str, params: Value) -> std::result::Result<Value, RpcFailure> {
        let url = format!("{}/wallet/{}", self.cfg.rpc_url.trim_end_matches('/'), self.cfg.wallet);
        self.call_at(&url, method, params).await
    }

    /// A node-level call (tools and tests; errors read as lookups).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.node(method, params).await.map_err(RpcFailure::lookup)
    }

    /// A call on Kassa's wallet (tools and tests; errors read as lookups).
    pub async fn wallet_call(&self, method: &str, params: Value) -> Result<Value> {
        self.wallet(method, params).await.map_err(RpcFailure::lookup)
    }

    /// Loads Kassa's wallet, creating it on first use.
    pub async fn ensure_wallet(&self) -> Result<()> {
        let loaded = self.call("listwallets", json!([])).await?;
        if loaded.as_array().is_some_and(|w| w.iter().any(|n| n.as_str() == Some(self.cfg.wallet.as_str()))) {
            return Ok(());
        }
        match self.node("loadwallet", json!([self.cfg.wallet])).await {
            Ok(_) => Ok(()),
            Err(RpcFailure::Rpc { code: RPC_WALLET_NOT_FOUND, .. }) => {
                self.call("createwallet", json!([self.cfg.wallet])).await?;
                tracing::warn!(chain = %self.cfg.chain, wallet = %self.cfg.wallet, "created a new node wallet; back up its wallet file now");
                Ok(())
            }
            // Already loaded (a race with another caller).
            Err(RpcFailure::Rpc { code: RPC_MISC_ERROR | RPC_WALLET_ALREADY_LOADED, .. }) => Ok(()),
            Err(e) => Err(e.lookup()),
        }
    }

    /// Waits until the node answers RPC (it refuses calls while starting up).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            match self.call("getblockchaininfo", json!([])).await {
                Ok(_) => return Ok(()),
                Err(ChainError::Transient(m)) if started.elapsed() > timeout => return Err(ChainError::Transient(m)),
                Err(ChainError::Transient(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(e),
            }
        }
    }

    fn conf_target(&self, priority: Priority) -> u32 {
        match priority {
            Priority::Low => self.cfg.conf_targets.low,
            Priority::Medium => self.cfg.conf_targets.medium,
            Priority::High => self.cfg.conf_targets.high,
        }
    }

    /// The transfers of a transaction: its outputs that pay an address, in our coin.
    fn transfers_of(&self, tx: &Tx) -> Vec<IncomingTransfer> {
        tx.outputs
            .iter()
            .filter_map(|o| {
                Some(IncomingTransfer {
                    txid: tx.txid.clone(),
                    index: o.vout,
                    address: o.address.clone()?,
                    tag: None,
                    asset: self.cfg.currency.clone(),
                    amount: o.amount,
                })
            })
            .collect()
    }

    async fn raw_transaction(&self, txid: &str) -> Result<Tx> {
        parse_tx(&self.node("getrawtransaction", json!([txid, true])).await.map_err(RpcFailure::lookup)?)
    }

    /// Every mempool transaction's transfers, looking up at most `MAX_MEMPOOL_FETCH`
    /// transactions not seen before.
    async fn mempool_transfers(&self) -> Result<Vec<IncomingTransfer>> {
        let v = self.call("getrawmempool", json!([])).await?;
        let txids: Vec<String> = v.as_array().ok_or_else(|| protocol("getrawmempool"))?.iter().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let unknown: Vec<&String> = {
            let cache = self.mempool.lock().expect("mempool cache");
            txids.iter().filter(|t| !cache.contains_key(*t)).take(MAX_MEMPOOL_FETCH).collect()
        };
        let mut fetched = Vec::with_capacity(unknown.len());
        for txid in unknown {
            match self.raw_transaction(txid).await {
                Ok(tx) => fetched.push((txid.clone(), self.transfers_of(&tx))),
                Err(ChainError::NotFound) => fetched.push((txid.clone(), Vec::new())), // left the mempool meanwhile
                Err(e) => return Err(e),
            }
        }
        let mut cache = self.mempool.lock().expect("mempool cache");
        cache.extend(fetched);
        let current: std::collections::HashSet<&String> = txids.iter().collect();
        cache.retain(|t, _| current.contains(t));
        Ok(txids.iter().filter_map(|t| cache.get(t)).flatten().cloned().collect())
    }
}

/// Outputs one payout transaction carries at most (the broadcaster's batch size).
pub const MAX_PAYMENTS_PER_TX: usize = 100;

#[async_trait]
impl ChainAdapter for Bitcoind {
    fn chain(&self) -> &str {
        &self.cfg.chain
    }

    fn assets(&self) -> &[Asset] {
        &self.assets
    }

    async fn prepare(&self) -> Result<()> {
        self.ensure_wallet().await
    }

    fn validate_address(&self, text: &str) -> Result<String, String> {
        address::parse(text, self.cfg.coin, self.cfg.network).map(|a| a.to_string()).map_err(|e| e.to_string())
    }

    fn address_regex(&self) -> String {
        address::address_regex(self.cfg.coin, self.cfg.network)
    }

    fn max_payments_per_tx(&self) -> usize {
        MAX_PAYMENTS_PER_TX
    }

    fn expected_block_interval(&self) -> Option<std::time::Duration> {
        use address::{Coin, Network};
        let secs = match (self.cfg.coin, self.cfg.network) {
            (_, Network::Regtest) => return None,
            (Coin::Bitcoin, _) => 600,
            (Coin::Litecoin, _) => 150,
            (Coin::Dogecoin, _) => 60,
        };
        Some(std::time::Duration::from_secs(secs))
    }

    async fn new_deposit_address(&self, _asset: &str, label: &str) -> Result<DepositTarget> {
        let kind = if address::params(self.cfg.coin, self.cfg.network).hrp.is_some() { json!("bech32") } else { json!("legacy") };
        let v = self.wallet_call("getnewaddress", json!([label, kind])).await?;
        let text = v.as_str().ok_or_else(|| protocol("getnewaddress returned no string"))?;
        // The node's own answer must pass our codec too, or the configuration is wrong.
        let address = self
            .validate_address(text)
            .map_err(|e| protocol(format!("node address {text} is not a {:?} {:?} address: {e}", self.cfg.coin, self.cfg.network)))?;
        Ok(DepositTarget { address, tag: None })
    }

    async fn tip(&self) -> Result<BlockRef> {
        let height = self.call("getblockcount", json!([])).await?.as_u64().ok_or_else(|| protocol("getblockcount"))?;
        let hash = self.block_hash(height).await?;
        Ok(BlockRef { height, hash })
    }

    async fn block_hash(&self, height: u64) -> Result<String> {
        let v = self.call("getblockhash", json!([height])).await?;
        v.as_str().map(str::to_string).ok_or_else(|| protocol("getblockhash"))
    }

    async fn scan(&self, from: &Checkpoint, max_blocks: u64) -> Result<ScanUpdate> {
        let tip = self.tip().await?;
        let on_chain = from.height <= tip.height && self.block_hash(from.height).await? == from.hash;
        let mut blocks = Vec::new();
        if on_chain {
            let until = tip.height.min(from.height + max_blocks);
            for height in from.height + 1..=until {
                let hash = self.block_hash(height).await?;
                let v = self.call("getblock", json!([hash, 2])).await?;
                let got = v.get("height").and_then(Value::as_u64).ok_or_else(|| protocol("block without height"))?;
                let parent_hash = v.get("previousblockhash").and_then(Value::as_str).map(str::to_string);
                let mut transfers = Vec::new();
                for tx in v.get("tx").and_then(Value::as_array).ok_or_else(|| protocol("block without tx"))? {
                    transfers.extend(self.transfers_of(&parse_tx(tx)?));
                }
                blocks.push(ScannedBlock { block: BlockRef { height: got, hash: str_field(&v, "hash")?.to_string() }, parent_hash, transfers });
            }
        }
        let mempool = self.mempool_transfers().await?;
        Ok(ScanUpdate { tip, reorged: !on_chain, blocks, mempool })
    }

    async fn transfers(&self, txid: &str) -> Result<Vec<IncomingTransfer>> {
        Ok(self.transfers_of(&self.raw_transaction(txid).await?))
    }

    async fn sign_payments(&self, payments: &[Payment], priority: Priority) -> Result<SignedTx> {
        let mut outputs = serde_json::Map::new();
        for p in payments {
            if p.asset != self.cfg.currency {
                return Err(ChainError::Refused(format!("chain {} carries {}, not {}", self.cfg.chain, self.cfg.currency, p.asset)));
            }
            if outputs.insert(p.address.clone(), amount_json(p.amount)).is_some() {
                return Err(ChainError::InvalidAddress(format!("{} appears twice in one transaction", p.address)));
            }
        }
        let raw = self.wallet("createrawtransaction", json!([[], outputs])).await.map_err(RpcFailure::send)?;
        // Replaceable (BIP-125) so a stuck payout can be fee-bumped; Kassa follows the
        // replacement by what it pays.
        let options = json!({"conf_target": self.conf_target(priority), "lockUnspents": true, "replaceable": true});
        let funded = self.wallet("fundrawtransaction", json!([raw, options])).await.map_err(RpcFailure::send)?;
        let fee = parse_amount(funded.get("fee").ok_or_else(|| protocol("fundrawtransaction without fee"))?)?;
        let change = funded.get("changepos").and_then(Value::as_i64).unwrap_or(-1);
        let signed = self.wallet("signrawtransactionwithwallet", json!([funded["hex"]])).await.map_err(RpcFailure::send)?;
        if signed.get("complete").and_then(Value::as_bool) != Some(true) {
            return Err(protocol(format!("the wallet could not sign: {}", signed.get("errors").unwrap_or(&Value::Null))));
        }
        let raw_hex = str_field(&signed, "hex")?.to_string();
        let decoded = self.node("decoderawtransaction", json!([raw_hex])).await.map_err(RpcFailure::send)?;
        let tx = parse_tx(&decoded)?;
        // Find each payment's output by its (unique) address; anything else is change.
        let mut indexes = Vec::with_capacity(payments.len());
        for p in payments {
            let out = tx
                .outputs
                .iter()
                .find(|o| o.address.as_deref() == Some(p.address.as_str()) && i64::from(o.vout) != change)
                .ok_or_else(|| protocol(format!("the funded transaction does not pay {}", p.address)))?;
            if out.amount != p.amount {
                return Err(protocol(format!("output {} pays {} units, not {}", out.vout, out.amount, p.amount)));
            }
            indexes.push(out.vout);
        }
        if tx.outputs.len() != payments.len() + usize::from(change >= 0) {
            return Err(protocol("the funded transaction has outputs Kassa did not ask for"));
        }
        Ok(SignedTx { txid: tx.txid, raw_hex, fee, indexes })
    }

    async fn broadcast(&self, raw_hex: &str) -> Result<String> {
        match self.node("sendrawtransaction", json!([raw_hex])).await {
            Ok(v) => v.as_str().map(str::to_string).ok_or_else(|| protocol("sendrawtransaction")),
            // Already in the chain: the broadcast happened before; say which tx it is.
            Err(RpcFailure::Rpc { code: RPC_VERIFY_ALREADY_IN_CHAIN, .. }) => {
                let decoded = self.call("decoderawtransaction", json!([raw_hex])).await?;
                Ok(str_field(&decoded, "txid")?.to_string())
            }
            Err(e) => Err(e.send()),
        }
    }

    async fn payment_status(&self, txid: &str) -> Result<TxStatus> {
        let v = self.wallet_call("gettransaction", json!([txid])).await?;
        let confirmations = v.get("confirmations").and_then(Value::as_i64).ok_or_else(|| protocol("gettransaction"))?;
        let mut conflicts: Vec<String> =
            v.get("walletconflicts").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.as_str().map(str::to_string)).collect();
        if let Some(r) = v.get("replaced_by_txid").and_then(Value::as_str) {
            if !conflicts.iter().any(|c| c == r) {
                conflicts.push(r.to_string());
            }
        }
        // The wallet reports a send's fee as a negative amount.
        let fee = v.get("fee").map(parse_amount).transpose()?.map(|f| f.abs());
        Ok(TxStatus { confirmations, block_hash: v.get("blockhash").and_then(Value::as_str).map(str::to_string), conflicts, fee })
    }

    async fn hot_wallet_balance(&self, asset: &str) -> Result<i128> {
        if asset != self.cfg.currency {
            return Err(ChainError::Refused(format!("chain {} carries {}, not {asset}", self.cfg.chain, self.cfg.currency)));
        }
        let v = self.wallet_call("getbalances", json!([])).await?;
        let mine = v.get("mine").ok_or_else(|| protocol("getbalances without mine"))?;
        Ok(parse_amount(&mine["trusted"])? + parse_amount(&mine["untrusted_pending"])?)
    }

    async fn wallet_funds(&self, asset: &str) -> Result<WalletFunds> {
        if asset != self.cfg.currency {
            return Err(ChainError::Refused(format!("chain {} carries {}, not {asset}", self.cfg.chain, self.cfg.currency)));
        }
        // listunspent leaves locked coins out: those are counted as reserved.
        let sum = |v: Value| -> Result<i128> { v.as_array().into_iter().flatten().map(|u| parse_amount(&u["amount"])).sum() };
        let confirmed = sum(self.wallet_call("listunspent", json!([1, 9_999_999])).await?)?;
        let unconfirmed = sum(self.wallet_call("listunspent", json!([0, 0])).await?)?;
        let mut reserved = 0;
        for (txid, vout) in self.locked().await? {
            // A locked coin already spent has no unspent output any more.
            if let Some(value) = self.call("gettxout", json!([txid, vout, true])).await?.get("value") {
                reserved += parse_amount(value)?;
            }
        }
        Ok(WalletFunds { confirmed, unconfirmed, reserved })
    }

    async fn release_reserved(&self, keep: &[String]) -> Result<usize> {
        let locked = self.locked().await?;
        if locked.is_empty() {
            return Ok(0);
        }
        let mut kept = std::collections::HashSet::new();
        for raw in keep {
            let decoded = self.call("decoderawtransaction", json!([raw])).await?;
            for input in decoded.get("vin").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(txid), Some(vout)) = (input.get("txid").and_then(Value::as_str), input.get("vout").and_then(Value::as_u64)) {
                    kept.insert((txid.to_string(), vout));
                }
            }
        }
        let release: Vec<Value> =
            locked.into_iter().filter(|o| !kept.contains(o)).map(|(txid, vout)| json!({"txid": txid, "vout": vout})).collect();
        if !release.is_empty() {
            self.wallet("lockunspent", json!([true, release])).await.map_err(RpcFailure::send)?;
        }
        Ok(release.len())
    }
}

impl Bitcoind {
    /// The wallet's locked outpoints (coins reserved by `fundrawtransaction`).
    async fn locked(&self) -> Result<Vec<(String, u64)>> {
        let v = self.wallet_call("listlockunspent", json!([])).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| Some((o.get("txid")?.as_str()?.to_string(), o.get("vout")?.as_u64()?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_core_0_21_and_newer_transaction_shapes() {
        let tx: Value = serde_json::from_str(
            r#"{"txid":"ab","vin":[{"coinbase":"03"},{"txid":"cd","vout":1}],
                "vout":[{"value":0.00100000,"n":0,"scriptPubKey":{"addresses":["rltc1qxyz"],"type":"witness_v0_keyhash"}},
                        {"value":12.5,"n":1,"scriptPubKey":{"address":"mabc","type":"pubkeyhash"}},
                        {"value":0,"n":2,"scriptPubKey":{"type":"nulldata"}}],"ismweb":false}"#,
        )
        .unwrap();
        let parsed = parse_tx(&tx).unwrap();
        assert_eq!(parsed.outputs[0], TxOutput { vout: 0, address: Some("rltc1qxyz".into()), amount: 100_000 });
        assert_eq!(parsed.outputs[1].amount, 1_250_000_000);
        assert_eq!(parsed.outputs[2].address, None);
    }

    #[test]
    fn amounts_are_exact_json_numbers() {
        assert_eq!(amount_json(100_000).to_string(), "0.00100000");
        assert_eq!(amount_json(2_100_000_000_000_000).to_string(), "21000000.00000000");
        assert!(parse_amount(&serde_json::from_str("0.000000001").unwrap()).is_err());
    }
}

#[cfg(test)]
mod errors {
    use super::*;

    #[test]
    fn core_codes_mean_what_the_call_was() {
        let rpc = |code: i64, message: &str| RpcFailure::Rpc { code, message: message.into() };
        assert!(rpc(-5, "No such mempool or blockchain transaction").lookup().is_not_found());
        assert!(rpc(-5, "Invalid address").send().is_permanent_refusal());
        assert!(rpc(-26, "min relay fee not met").send().is_permanent_refusal());
        assert!(rpc(-4, "Transaction amount too small").send().is_permanent_refusal());
        assert!(matches!(rpc(-4, "Insufficient funds").send(), ChainError::InsufficientFunds(_)));
        assert!(matches!(rpc(-6, "Insufficient funds").send(), ChainError::InsufficientFunds(_)));
        assert!(matches!(rpc(-28, "Loading block index").lookup(), ChainError::Transient(_)));
        assert!(matches!(rpc(-4, "Wallet is locked").send(), ChainError::Transient(_)));
        assert!(matches!(RpcFailure::Transport("connection refused".into()).send(), ChainError::Transient(_)));
    }
}
