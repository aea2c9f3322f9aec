//! Bitcoin-family chain adapter over Bitcoin Core's JSON-RPC. Works with bitcoind,
//! litecoind and dogecoind; tolerant of Core 0.21's JSON shapes (`scriptPubKey.addresses`
//! arrays, extra MWEB fields). Deposit addresses come from the node wallet's HD keypool
//! (`getnewaddress`): back the wallet up once after creating it (its HD seed derives every
//! future address), and again only if its seed is replaced.

pub mod address;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kassa_chain::{Block, BlockRef, ChainAdapter, ChainError, ChainTx, Payment, Priority, Result, SignedTx, TxOutput, TxStatus};
use kassa_core::{Amount, SignPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

pub use address::{Coin, Network};

/// Decimals of every Bitcoin-family chain's base unit.
pub const DECIMALS: u8 = 8;

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

/// Connection settings of one node.
#[derive(Clone, Debug)]
pub struct BitcoindConfig {
    pub chain: String,
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
    http: reqwest::Client,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct RpcResponse {
    result: Option<Value>,
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
    message: String,
}

fn protocol(what: impl std::fmt::Display) -> ChainError {
    ChainError::Protocol(what.to_string())
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

/// Parses a transaction as `getrawtransaction … true` and `getblock … 2` print it.
fn parse_tx(tx: &Value) -> Result<ChainTx> {
    let txid = str_field(tx, "txid")?.to_string();
    let mut inputs = Vec::new();
    for vin in tx.get("vin").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(prev), Some(n)) = (vin.get("txid").and_then(Value::as_str), vin.get("vout").and_then(Value::as_u64)) {
            inputs.push((prev.to_string(), n as u32));
        }
    }
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
    Ok(ChainTx { txid, inputs, outputs })
}

impl Bitcoind {
    pub fn new(cfg: BitcoindConfig) -> Self {
        let http = reqwest::Client::builder().timeout(cfg.timeout).build().expect("HTTP client");
        Self { cfg, http, next_id: AtomicU64::new(1) }
    }

    pub fn config(&self) -> &BitcoindConfig {
        &self.cfg
    }

    async fn call_at(&self, url: &str, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.cfg.rpc_user, Some(&self.cfg.rpc_password))
            .json(&body)
            .send()
            .await
            .map_err(|e| ChainError::Unreachable(format!("{method}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ChainError::Unreachable(format!("{method}: {e}")))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ChainError::Unreachable("the node refused the RPC credentials".into()));
        }
        let parsed: RpcResponse =
            serde_json::from_str(&text).map_err(|_| protocol(format!("{method}: HTTP {status}: {}", text.chars().take(200).collect::<String>())))?;
        if let Some(err) = parsed.error {
            return Err(ChainError::Rpc { code: err.code, message: err.message });
        }
        Ok(parsed.result.unwrap_or(Value::Null))
    }

    /// A node-level call.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_at(&self.cfg.rpc_url, method, params).await
    }

    /// A call on Kassa's wallet.
    pub async fn wallet_call(&self, method: &str, params: Value) -> Result<Value> {
        let url = format!("{}/wallet/{}", self.cfg.rpc_url.trim_end_matches('/'), self.cfg.wallet);
        self.call_at(&url, method, params).await
    }

    /// Loads Kassa's wallet, creating it on first use.
    pub async fn ensure_wallet(&self) -> Result<()> {
        let loaded = self.call("listwallets", json!([])).await?;
        if loaded.as_array().is_some_and(|w| w.iter().any(|n| n.as_str() == Some(self.cfg.wallet.as_str()))) {
            return Ok(());
        }
        match self.call("loadwallet", json!([self.cfg.wallet])).await {
            Ok(_) => Ok(()),
            // -18: wallet not found. Create it.
            Err(ChainError::Rpc { code: -18, .. }) => {
                self.call("createwallet", json!([self.cfg.wallet])).await?;
                tracing::warn!(chain = %self.cfg.chain, wallet = %self.cfg.wallet, "created a new node wallet; back up its wallet file now");
                Ok(())
            }
            // -4 / -35: already loaded (a race with another caller).
            Err(ChainError::Rpc { code: -4 | -35, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn conf_target(&self, priority: Priority) -> u32 {
        match priority {
            Priority::Low => self.cfg.conf_targets.low,
            Priority::Medium => self.cfg.conf_targets.medium,
            Priority::High => self.cfg.conf_targets.high,
        }
    }
}

/// Outputs one payout transaction carries at most (the broadcaster's batch size).
pub const MAX_PAYMENTS_PER_TX: usize = 100;

#[async_trait]
impl ChainAdapter for Bitcoind {
    fn chain(&self) -> &str {
        &self.cfg.chain
    }

    fn decimals(&self) -> u8 {
        DECIMALS
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

    async fn new_deposit_address(&self, label: &str) -> Result<String> {
        let kind = if address::params(self.cfg.coin, self.cfg.network).hrp.is_some() { json!("bech32") } else { json!("legacy") };
        let v = self.wallet_call("getnewaddress", json!([label, kind])).await?;
        let text = v.as_str().ok_or_else(|| protocol("getnewaddress returned no string"))?;
        // The node's own answer must pass our codec too, or the configuration is wrong.
        self.validate_address(text).map_err(|e| protocol(format!("node address {text} is not a {:?} {:?} address: {e}", self.cfg.coin, self.cfg.network)))
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

    async fn block(&self, hash: &str) -> Result<Block> {
        let v = self.call("getblock", json!([hash, 2])).await?;
        let height = v.get("height").and_then(Value::as_u64).ok_or_else(|| protocol("block without height"))?;
        let prev_hash = v.get("previousblockhash").and_then(Value::as_str).map(str::to_string);
        let txs = v.get("tx").and_then(Value::as_array).ok_or_else(|| protocol("block without tx"))?.iter().map(parse_tx).collect::<Result<Vec<_>>>()?;
        Ok(Block { hash: str_field(&v, "hash")?.to_string(), height, prev_hash, txs })
    }

    async fn mempool_txids(&self) -> Result<Vec<String>> {
        let v = self.call("getrawmempool", json!([])).await?;
        Ok(v.as_array().ok_or_else(|| protocol("getrawmempool"))?.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
    }

    async fn transaction(&self, txid: &str) -> Result<ChainTx> {
        parse_tx(&self.call("getrawtransaction", json!([txid, true])).await?)
    }

    async fn sign_payments(&self, payments: &[Payment], priority: Priority) -> Result<SignedTx> {
        let mut outputs = serde_json::Map::new();
        for p in payments {
            if outputs.insert(p.address.clone(), amount_json(p.amount)).is_some() {
                return Err(ChainError::InvalidAddress(format!("{} appears twice in one transaction", p.address)));
            }
        }
        let raw = self.wallet_call("createrawtransaction", json!([[], outputs])).await?;
        // Replaceable (BIP-125) so a stuck payout can be fee-bumped; Kassa follows the
        // replacement by what it pays.
        let options = json!({"conf_target": self.conf_target(priority), "lockUnspents": true, "replaceable": true});
        let funded = match self.wallet_call("fundrawtransaction", json!([raw, options])).await {
            Err(ChainError::Rpc { code: -6, message }) => return Err(ChainError::InsufficientFunds(message)),
            Err(ChainError::Rpc { code: -4, message }) if message.to_lowercase().contains("insufficient funds") => {
                return Err(ChainError::InsufficientFunds(message))
            }
            other => other?,
        };
        let fee = parse_amount(funded.get("fee").ok_or_else(|| protocol("fundrawtransaction without fee"))?)?;
        let change = funded.get("changepos").and_then(Value::as_i64).unwrap_or(-1);
        let signed = self.wallet_call("signrawtransactionwithwallet", json!([funded["hex"]])).await?;
        if signed.get("complete").and_then(Value::as_bool) != Some(true) {
            return Err(protocol(format!("the wallet could not sign: {}", signed.get("errors").unwrap_or(&Value::Null))));
        }
        let raw_hex = str_field(&signed, "hex")?.to_string();
        let decoded = self.call("decoderawtransaction", json!([raw_hex])).await?;
        let tx = parse_tx(&decoded)?;
        // Find each payment's output by its (unique) address; anything else is change.
        let mut vouts = Vec::with_capacity(payments.len());
        for p in payments {
            let out = tx
                .outputs
                .iter()
                .find(|o| o.address.as_deref() == Some(p.address.as_str()) && i64::from(o.vout) != change)
                .ok_or_else(|| protocol(format!("the funded transaction does not pay {}", p.address)))?;
            if out.amount != p.amount {
                return Err(protocol(format!("output {} pays {} units, not {}", out.vout, out.amount, p.amount)));
            }
            vouts.push(out.vout);
        }
        if tx.outputs.len() != payments.len() + usize::from(change >= 0) {
            return Err(protocol("the funded transaction has outputs Kassa did not ask for"));
        }
        Ok(SignedTx { txid: tx.txid, raw_hex, fee, vouts })
    }

    async fn broadcast(&self, raw_hex: &str) -> Result<String> {
        match self.call("sendrawtransaction", json!([raw_hex])).await {
            Ok(v) => v.as_str().map(str::to_string).ok_or_else(|| protocol("sendrawtransaction")),
            // -27: already in the chain. The broadcast happened before; say which tx it is.
            Err(ChainError::Rpc { code: -27, .. }) => {
                let decoded = self.call("decoderawtransaction", json!([raw_hex])).await?;
                Ok(str_field(&decoded, "txid")?.to_string())
            }
            Err(e) => Err(e),
        }
    }

    async fn wallet_tx_status(&self, txid: &str) -> Result<TxStatus> {
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

    async fn hot_wallet_balance(&self) -> Result<i128> {
        let v = self.wallet_call("getbalances", json!([])).await?;
        let mine = v.get("mine").ok_or_else(|| protocol("getbalances without mine"))?;
        Ok(parse_amount(&mine["trusted"])? + parse_amount(&mine["untrusted_pending"])?)
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
        assert_eq!(parsed.inputs, vec![("cd".to_string(), 1)]);
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
