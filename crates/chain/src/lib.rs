//! The interface between Kassa's engine and a blockchain. Every chain (Bitcoin family
//! over Core RPC, EVM, Monero, …) provides one `ChainAdapter`; the engine's watcher and
//! broadcaster are written against this trait only.
//!
//! Amounts here are integers in the chain's own smallest unit (satoshi-like, at
//! `ChainAdapter::decimals`); the engine converts them to ledger units.

use async_trait::async_trait;
use serde::Serialize;

/// A block by height and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockRef {
    pub height: u64,
    pub hash: String,
}

/// An output of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOutput {
    pub vout: u32,
    /// The address paid, when the script has one.
    pub address: Option<String>,
    pub amount: i128,
}

/// A transaction as the watcher needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainTx {
    pub txid: String,
    /// Outpoints spent (txid, vout): what a replacement conflicts on.
    pub inputs: Vec<(String, u32)>,
    pub outputs: Vec<TxOutput>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub hash: String,
    pub height: u64,
    pub prev_hash: Option<String>,
    pub txs: Vec<ChainTx>,
}

/// How urgently a payment should confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Priority::Low, Priority::Medium, Priority::High].into_iter().find(|p| p.as_str() == s)
    }
}

/// One payment of a (possibly batched) transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub address: String,
    pub amount: i128,
}

/// A signed transaction that has not necessarily been broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub txid: String,
    pub raw_hex: String,
    /// Network fee it pays, in chain units.
    pub fee: i128,
    /// Which output pays each requested payment, in request order.
    pub vouts: Vec<u32>,
}

/// What the node knows of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxStatus {
    /// 0 in the mempool; -1 or less when conflicted (a replacement confirmed).
    pub confirmations: i64,
    pub block_hash: Option<String>,
    /// Transactions spending the same inputs (replacements).
    pub conflicts: Vec<String>,
    /// Network fee the transaction pays, in chain units, when the wallet knows it.
    pub fee: Option<i128>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("node unreachable: {0}")]
    Unreachable(String),
    #[error("node error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    #[error("not enough funds in the hot wallet: {0}")]
    InsufficientFunds(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),
}

impl ChainError {
    /// The node refuses this payment for good (invalid address or parameters, a
    /// transaction its rules reject, an amount below the dust limit). Anything else —
    /// node down or starting, wallet not loaded or locked, short of funds, fee
    /// estimation — is worth retrying later.
    pub fn is_permanent_refusal(&self) -> bool {
        match self {
            ChainError::InvalidAddress(_) => true,
            ChainError::Rpc { code: -3 | -5 | -8 | -25 | -26, .. } => true,
            ChainError::Rpc { code: -4, message } => {
                let m = message.to_lowercase();
                m.contains("too small") || m.contains("dust")
            }
            _ => false,
        }
    }
}

impl ChainError {
    /// A transaction or block the node does not know.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ChainError::Rpc { code: -5, .. })
    }
}

pub type Result<T, E = ChainError> = std::result::Result<T, E>;

#[async_trait]
pub trait ChainAdapter: Send + Sync {
    /// The chain's name as configured (`litecoin`).
    fn chain(&self) -> &str;

    /// Decimals of the chain's smallest unit (8 for the Bitcoin family).
    fn decimals(&self) -> u8;

    /// Gets the node ready for Kassa (e.g. loads or creates its wallet). Idempotent.
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }

    /// Checks an address locally (checksums, network, coin). Returns its canonical form.
    fn validate_address(&self, address: &str) -> Result<String, String>;

    /// A regular expression every valid address matches (published to API clients as a
    /// first check; `validate_address` decides).
    fn address_regex(&self) -> String {
        "^.+$".into()
    }

    /// Most payments one transaction can carry (1: no batching).
    fn max_payments_per_tx(&self) -> usize {
        1
    }

    /// A fresh address that pays this node's wallet.
    async fn new_deposit_address(&self, label: &str) -> Result<String>;

    /// The best block.
    async fn tip(&self) -> Result<BlockRef>;

    async fn block_hash(&self, height: u64) -> Result<String>;

    async fn block(&self, hash: &str) -> Result<Block>;

    /// Transaction ids in the mempool.
    async fn mempool_txids(&self) -> Result<Vec<String>>;

    /// A transaction by id (mempool or chain).
    async fn transaction(&self, txid: &str) -> Result<ChainTx>;

    /// Builds and signs (does not broadcast) one transaction paying every payment.
    async fn sign_payments(&self, payments: &[Payment], priority: Priority) -> Result<SignedTx>;

    /// Broadcasts a signed transaction; idempotent for a transaction the node already has.
    async fn broadcast(&self, raw_hex: &str) -> Result<String>;

    /// The node wallet's view of one of its transactions.
    async fn wallet_tx_status(&self, txid: &str) -> Result<TxStatus>;

    /// Spendable balance of the hot wallet, in chain units.
    async fn hot_wallet_balance(&self) -> Result<i128>;
}
