//! The interface between Kassa's engine and a blockchain. Every chain family (Bitcoin
//! over Core RPC, EVM, Monero, …) provides one `ChainAdapter` in its own crate; the
//! engine's watcher and broadcaster are written against this trait only.
//!
//! A chain carries **assets**: its native coin and, where the family has them, tokens
//! (each with its decimals and contract). Amounts here are integers in an asset's own
//! smallest unit (at `Asset::decimals`); the engine converts them to ledger units at
//! this edge. Fees are paid in the chain's **fee asset**. A deposit target may carry a
//! **tag** (payment id, memo) next to its address. The watcher learns what happened on
//! the chain as **scan updates** from its checkpoint, and errors say what they mean
//! (not found, refused, transient), never a node's own error codes.

use async_trait::async_trait;
use serde::Serialize;

/// Something a chain carries: its native coin or a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Asset {
    /// The Kassa currency code it is booked as (`LTC`, `USDT`).
    pub code: String,
    /// Decimals of its smallest on-chain unit (8 for the Bitcoin family, 18 for ETH).
    pub decimals: u8,
    /// The token contract; `None` for the chain's native coin.
    pub contract: Option<String>,
}

/// A block by height and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockRef {
    pub height: u64,
    pub hash: String,
}

/// Where a scan starts: the last block the engine has recorded.
pub type Checkpoint = BlockRef;

/// A payment to some address, as a scan or a transaction lookup reports it. Adapters
/// report transfers to any address; the engine keeps those to its deposit addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingTransfer {
    pub txid: String,
    /// Which output (Bitcoin family) or log (EVM) of the transaction: with `txid`,
    /// what makes a deposit unique.
    pub index: u32,
    pub address: String,
    /// The payment id or memo it carries, on chains that have them.
    pub tag: Option<String>,
    /// `Asset::code` of what was paid.
    pub asset: String,
    /// In the asset's smallest unit.
    pub amount: i128,
}

/// One block of a scan, with the transfers it contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedBlock {
    pub block: BlockRef,
    /// The block it builds on (`None` only for a genesis block): the engine checks it
    /// against what it recorded, so a chain that changes mid-scan is never mixed in.
    pub parent_hash: Option<String>,
    pub transfers: Vec<IncomingTransfer>,
}

/// What the chain did since a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanUpdate {
    /// The best block.
    pub tip: BlockRef,
    /// The checkpoint is no longer on the best chain (a reorg): nothing was scanned.
    /// The engine walks back to the last block it shares with the chain
    /// (`ChainAdapter::block_hash`) and scans again from there.
    pub reorged: bool,
    /// Blocks after the checkpoint, in order, at most as many as asked for.
    pub blocks: Vec<ScannedBlock>,
    /// Transfers of unconfirmed transactions (every one the adapter has looked at so
    /// far; a large mempool is covered over several scans).
    pub mempool: Vec<IncomingTransfer>,
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

/// A fresh place to receive a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositTarget {
    pub address: String,
    /// A payment id the payer must include, on chains that use one per deposit.
    pub tag: Option<String>,
}

/// One payment of a (possibly batched) transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub address: String,
    pub tag: Option<String>,
    /// `Asset::code` of what is paid.
    pub asset: String,
    /// In the asset's smallest unit.
    pub amount: i128,
}

/// A signed transaction that has not necessarily been broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub txid: String,
    pub raw_hex: String,
    /// Network fee it pays, in the fee asset's smallest unit.
    pub fee: i128,
    /// Which output (or log) pays each requested payment, in request order.
    pub indexes: Vec<u32>,
}

/// What the chain knows of one of Kassa's own transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxStatus {
    /// 0 unconfirmed; -1 or less when conflicted (a replacement confirmed).
    pub confirmations: i64,
    pub block_hash: Option<String>,
    /// Transactions spending what it spends (replacements), where the chain has them.
    pub conflicts: Vec<String>,
    /// Network fee it pays, in the fee asset's smallest unit, when known.
    pub fee: Option<i128>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The chain does not know the transaction or block asked for.
    #[error("not found")]
    NotFound,
    /// The chain refuses this for good (invalid parameters, a transaction its rules
    /// reject, an amount below its dust limit): retrying the same will not help.
    #[error("refused by the node: {0}")]
    Refused(String),
    /// Worth retrying later: node down, starting or syncing, wallet not loaded,
    /// an unexpected answer, a timeout.
    #[error("node unavailable: {0}")]
    Transient(String),
    #[error("not enough funds in the hot wallet: {0}")]
    InsufficientFunds(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),
}

impl ChainError {
    /// The chain refuses this payment for good. Anything else — node down or starting,
    /// wallet not loaded or locked, short of funds — is worth retrying later.
    pub fn is_permanent_refusal(&self) -> bool {
        matches!(self, ChainError::InvalidAddress(_) | ChainError::Refused(_))
    }

    /// A transaction or block the chain does not know.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ChainError::NotFound)
    }
}

pub type Result<T, E = ChainError> = std::result::Result<T, E>;

#[async_trait]
pub trait ChainAdapter: Send + Sync {
    /// The chain's name as configured (`litecoin`).
    fn chain(&self) -> &str;

    /// What this chain carries for Kassa: its native coin first, then tokens.
    fn assets(&self) -> &[Asset];

    /// The asset network fees are paid in (the native coin).
    fn fee_asset(&self) -> &Asset {
        &self.assets()[0]
    }

    /// An asset by its code.
    fn asset(&self, code: &str) -> Option<&Asset> {
        self.assets().iter().find(|a| a.code == code)
    }

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

    /// The network's average time between blocks; `None` where blocks come only on
    /// demand (regtest). The default stall time of a chain's tip derives from it.
    fn expected_block_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Most payments one transaction can carry (1: no batching).
    fn max_payments_per_tx(&self) -> usize {
        1
    }

    /// A fresh deposit target for `asset` that pays Kassa's wallet.
    async fn new_deposit_address(&self, asset: &str, label: &str) -> Result<DepositTarget>;

    /// The best block.
    async fn tip(&self) -> Result<BlockRef>;

    /// The hash of the best chain's block at `height`.
    async fn block_hash(&self, height: u64) -> Result<String>;

    /// What happened after `from`: the tip, whether `from` was reorged out, up to
    /// `max_blocks` following blocks with their transfers, and unconfirmed transfers.
    async fn scan(&self, from: &Checkpoint, max_blocks: u64) -> Result<ScanUpdate>;

    /// What a transaction (unconfirmed or mined) pays; `NotFound` once it is neither.
    async fn transfers(&self, txid: &str) -> Result<Vec<IncomingTransfer>>;

    /// Builds and signs (does not broadcast) one transaction paying every payment.
    async fn sign_payments(&self, payments: &[Payment], priority: Priority) -> Result<SignedTx>;

    /// Broadcasts a signed transaction; idempotent for a transaction the chain already has.
    async fn broadcast(&self, raw_hex: &str) -> Result<String>;

    /// The chain's view of one of Kassa's own transactions (`NotFound` if never seen).
    async fn payment_status(&self, txid: &str) -> Result<TxStatus>;

    /// Spendable balance of the hot wallet in `asset`, in its smallest unit.
    async fn hot_wallet_balance(&self, asset: &str) -> Result<i128>;

    /// What the hot wallet holds of `asset` and what keeps it from spending it, for
    /// an alert that says why a payout cannot be funded.
    async fn wallet_funds(&self, asset: &str) -> Result<WalletFunds> {
        Ok(WalletFunds { confirmed: self.hot_wallet_balance(asset).await?, ..WalletFunds::default() })
    }

    /// Releases coins the wallet reserved for transactions that were signed but
    /// never stored or sent (a crash or a refusal after funding), keeping those spent
    /// by `keep` (raw transactions Kassa has stored and may still broadcast). Returns
    /// how many were released.
    async fn release_reserved(&self, keep: &[String]) -> Result<usize> {
        let _ = keep;
        Ok(0)
    }
}

/// A hot wallet's holdings of one asset, in its smallest unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalletFunds {
    /// Confirmed and free to spend.
    pub confirmed: i128,
    /// Unconfirmed (mostly change of recent payouts): spendable once confirmed, or
    /// now within the node's limit on chains of unconfirmed transactions.
    pub unconfirmed: i128,
    /// Reserved for transactions signed but not (yet) sent.
    pub reserved: i128,
}
