//! A real Litecoin Core node in regtest for tests: its own data directory and ports,
//! a funded "miner" wallet, and helpers to mine, pay and reorganise the chain.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kassa_chain_bitcoind::{Bitcoind, BitcoindConfig, Coin, ConfTargets, Network};
use serde_json::{json, Value};

/// Where Debian installs the real daemon (`/usr/bin/litecoind` is a wrapper script).
pub const LITECOIND: &str = "/usr/lib/litecoin/litecoind";

pub struct LitecoinNode {
    pub rpc_url: String,
    pub rpc_port: u16,
    pub user: String,
    pub password: String,
    pub datadir: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
    miner: Bitcoind,
    miner_address: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl LitecoinNode {
    /// Starts a fresh regtest node with 101 mined blocks (spendable coins in "miner").
    pub async fn start() -> LitecoinNode {
        Self::start_with(&[]).await
    }

    /// Starts a node with extra `litecoind` arguments (e.g. `-walletnotify=…`).
    pub async fn start_with(extra_args: &[String]) -> LitecoinNode {
        assert!(
            std::path::Path::new(LITECOIND).exists(),
            "{LITECOIND} is missing: install Debian's litecoind (the CI script does)"
        );
        let dir = tempfile::TempDir::new().unwrap();
        let datadir = dir.path().to_path_buf();
        let (rpc_port, p2p_port) = (free_port(), free_port());
        let (user, password) = ("kassa".to_string(), format!("pw{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            datadir.join("litecoin.conf"),
            format!(
                "regtest=1\nserver=1\nlisten=0\ndnsseed=0\nupnp=0\nnatpmp=0\nfallbackfee=0.0002\ntxindex=1\nprinttoconsole=0\n\
                 [regtest]\nrpcbind=127.0.0.1\nrpcallowip=127.0.0.1\nrpcport={rpc_port}\nport={p2p_port}\n\
                 rpcuser={user}\nrpcpassword={password}\n"
            ),
        )
        .unwrap();
        let rpc_url = format!("http://127.0.0.1:{rpc_port}");
        let mut node = LitecoinNode {
            rpc_url: rpc_url.clone(),
            rpc_port,
            user: user.clone(),
            password: password.clone(),
            datadir,
            child: None,
            _dir: dir,
            miner: Bitcoind::new(Self::config(&rpc_url, &user, &password, "miner")),
            miner_address: String::new(),
        };
        node.launch(extra_args).await;
        node.miner.ensure_wallet().await.expect("miner wallet");
        node.miner_address = node.miner.wallet_call("getnewaddress", json!([])).await.unwrap().as_str().unwrap().to_string();
        node.mine(101).await;
        node
    }

    async fn launch(&mut self, extra_args: &[String]) {
        let child = Command::new(LITECOIND)
            .arg(format!("-datadir={}", self.datadir.display()))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start litecoind");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.miner.call("getblockchaininfo", json!([])).await.is_ok() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "litecoind did not answer RPC within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn config(rpc_url: &str, user: &str, password: &str, wallet: &str) -> BitcoindConfig {
        BitcoindConfig {
            chain: "litecoin".into(),
            currency: "LTC".into(),
            coin: Coin::Litecoin,
            network: Network::Regtest,
            rpc_url: rpc_url.into(),
            rpc_user: user.into(),
            rpc_password: password.into(),
            wallet: wallet.into(),
            conf_targets: ConfTargets::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// An adapter for Kassa's own wallet on this node.
    pub fn adapter(&self, wallet: &str) -> Bitcoind {
        Bitcoind::new(Self::config(&self.rpc_url, &self.user, &self.password, wallet))
    }

    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.miner.call(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    pub async fn miner_rpc(&self, method: &str, params: Value) -> Value {
        self.miner.wallet_call(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Mines `n` blocks (including mempool transactions) to the miner.
    pub async fn mine(&self, n: u64) -> Vec<String> {
        let hashes = self.rpc("generatetoaddress", json!([n, self.miner_address])).await;
        hashes.as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect()
    }

    /// Mines one block that leaves the mempool out.
    pub async fn mine_empty(&self) -> String {
        let v = self.rpc("generateblock", json!([self.miner_address, []])).await;
        v["hash"].as_str().unwrap().to_string()
    }

    /// Pays `amount` (decimal text) from the miner to `address`; returns the txid.
    pub async fn pay(&self, address: &str, amount: &str) -> String {
        let amount: Value = serde_json::from_str(amount).unwrap();
        self.miner_rpc("sendtoaddress", json!([address, amount])).await.as_str().unwrap().to_string()
    }

    pub async fn height(&self) -> u64 {
        self.rpc("getblockcount", json!([])).await.as_u64().unwrap()
    }

    /// Replaces the last `depth` blocks with `depth + 1` empty ones: transactions in the
    /// removed blocks go back to the mempool (and are not in the new chain).
    pub async fn reorg(&self, depth: u64) {
        let height = self.height().await;
        let first = self.rpc("getblockhash", json!([height + 1 - depth])).await;
        self.rpc("invalidateblock", json!([first])).await;
        for _ in 0..=depth {
            self.mine_empty().await;
        }
    }

    /// Stops the daemon (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for LitecoinNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl crate::node::TestNode for LitecoinNode {
    const CHAIN: &'static str = "litecoin";
    const CURRENCY: &'static str = "LTC";
    const DECIMALS: u8 = kassa_chain_bitcoind::DECIMALS;

    async fn start() -> Self {
        LitecoinNode::start().await
    }

    async fn adapter(&self, wallet: &str) -> std::sync::Arc<dyn kassa_chain::ChainAdapter> {
        let adapter = LitecoinNode::adapter(self, wallet);
        adapter.ensure_wallet().await.expect("wallet");
        std::sync::Arc::new(adapter)
    }

    fn config_toml(&self) -> String {
        format!(
            "[chains.litecoin]\nkind = \"bitcoind\"\npoll_interval_ms = 200\n\
             [chains.litecoin.bitcoind]\ncoin = \"litecoin\"\nnetwork = \"regtest\"\nrpc_url = {:?}\nrpc_user = {:?}\nrpc_password = {:?}\n",
            self.rpc_url, self.user, self.password
        )
    }

    async fn mine(&self, blocks: u64) {
        LitecoinNode::mine(self, blocks).await;
    }

    async fn pay(&self, address: &str, amount: &str) -> String {
        LitecoinNode::pay(self, address, amount).await
    }

    async fn reorg(&self, depth: u64) {
        LitecoinNode::reorg(self, depth).await
    }

    async fn height(&self) -> u64 {
        LitecoinNode::height(self).await
    }

    async fn external_address(&self) -> String {
        self.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string()
    }

    async fn received(&self, address: &str) -> i128 {
        kassa_chain_bitcoind::parse_amount(&self.miner_rpc("getreceivedbyaddress", json!([address, 0])).await).unwrap()
    }
}
