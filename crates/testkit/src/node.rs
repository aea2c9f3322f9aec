//! Real nodes for tests behind one interface, so that a scenario (deposits, reorgs,
//! withdrawals, crashes) is written once and runs on every chain family's node:
//! `on_every_node!(name, scenario)` runs `scenario::<N>(backend)` for each node kind on
//! both database backends. Today that is Litecoin Core (`litecoind`); anvil and
//! monerod join by implementing `TestNode` and adding their line to the macro.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kassa_chain::ChainAdapter;

/// A running node of one chain in regtest/dev mode, with a funded wallet of its own
/// (the "miner": the payer of test deposits and the receiver of test withdrawals).
#[allow(async_fn_in_trait)] // used generically by tests, never as `dyn`
pub trait TestNode: Sized {
    /// The chain name tests configure it as, and the currency it carries
    /// (declared in `TEST_CURRENCIES`).
    const CHAIN: &'static str;
    const CURRENCY: &'static str;
    /// Decimals of the currency's smallest unit on the chain.
    const DECIMALS: u8;

    /// Starts a fresh node with spendable funds in the miner wallet.
    async fn start() -> Self;

    /// Kassa's adapter over this node, using wallet (or account) `wallet`, prepared.
    async fn adapter(&self, wallet: &str) -> Arc<dyn ChainAdapter>;

    /// The `[chains.NAME]` tables of a configuration file for the real binary.
    fn config_toml(&self) -> String;

    /// Mines `blocks` blocks (including pending transactions).
    async fn mine(&self, blocks: u64);

    /// Pays `amount` (decimal text in the currency) from the miner; returns the txid.
    async fn pay(&self, address: &str, amount: &str) -> String;

    /// Replaces the last `depth` blocks with `depth + 1` empty ones: their transactions
    /// go back to the pending pool and are not in the new chain.
    async fn reorg(&self, depth: u64);

    /// Height of the best block.
    async fn height(&self) -> u64;

    /// A fresh address of the miner's (outside Kassa): where test withdrawals go.
    async fn external_address(&self) -> String;

    /// What an address has received so far (pending included), in the chain's units.
    async fn received(&self, address: &str) -> i128;
}

/// `amount` (decimal text) in `N`'s chain units.
pub fn chain_units<N: TestNode>(amount: &str) -> i128 {
    kassa_core::Amount::parse(amount, N::DECIMALS, kassa_core::SignPolicy::Any).expect("a test amount").units()
}

/// Polls `check` until it holds (30 s at most): waiting on a real process (a server
/// crediting a deposit, a node), never on business time, which tests move instead.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs an async scenario generic over `TestNode` on every node kind and both
/// backends: `on_every_node!(name, scenario);` makes `name::litecoind::sqlite` and
/// `name::litecoind::postgres`.
#[macro_export]
macro_rules! on_every_node {
    ($name:ident, $body:ident) => {
        mod $name {
            mod litecoind {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::super::$body::<$crate::litecoin::LitecoinNode>($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::super::$body::<$crate::litecoin::LitecoinNode>($crate::Backend::Postgres).await
                }
            }
        }
    };
}
