//! `kassa dev`: a complete local network on a fresh machine. Starts Litecoin Core in
//! regtest (installing Debian's package when missing and allowed), mines spendable
//! coins, runs Kassa on SQLite with a demo merchant, and prints its credentials and the
//! command that pays a test deposit (`kassa dev pay ADDRESS AMOUNT`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_chain_bitcoind::{Bitcoind, BitcoindConfig, Coin, ConfTargets, Network};
use kassa_core::ledger::MerchantId;
use kassa_engine::adjustments::AdjustmentRequest;
use kassa_engine::merchants::Scope;
use serde_json::json;

use crate::config::Config;
use crate::serve;

pub const LITECOIND: &str = "/usr/lib/litecoin/litecoind";

#[derive(Args)]
pub struct DevArgs {
    /// Directory for the development database, key and node.
    #[arg(long, default_value = ".kassa", global = true)]
    data_dir: PathBuf,
    /// RPC port of the regtest node.
    #[arg(long, default_value_t = 19443, global = true)]
    rpc_port: u16,
    #[command(subcommand)]
    action: Option<DevAction>,
}

#[derive(Subcommand)]
enum DevAction {
    /// Pays a test deposit from the node's miner wallet and mines the blocks that confirm it.
    Pay {
        address: String,
        /// Decimal amount, e.g. 0.5
        amount: String,
        /// Blocks to mine after paying (the dev currency needs 3 confirmations).
        #[arg(long, default_value_t = 3)]
        blocks: u64,
    },
    /// Mines blocks on the regtest node.
    Mine {
        #[arg(default_value_t = 1)]
        blocks: u64,
    },
}

pub(crate) struct DevNode {
    pub(crate) miner: Bitcoind,
    pub(crate) rpc_url: String,
    pub(crate) password: String,
    child: Option<Child>,
}

pub(crate) fn node_config(rpc_url: &str, password: &str, wallet: &str) -> BitcoindConfig {
    BitcoindConfig {
        chain: "litecoin".into(),
        currency: "LTC".into(),
        coin: Coin::Litecoin,
        network: Network::Regtest,
        rpc_url: rpc_url.into(),
        rpc_user: "kassa".into(),
        rpc_password: password.into(),
        wallet: wallet.into(),
        conf_targets: ConfTargets::default(),
        timeout: Duration::from_secs(30),
    }
}

fn ensure_litecoind() -> anyhow::Result<()> {
    if Path::new(LITECOIND).exists() {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !root {
        bail!("Litecoin Core is not installed: run `sudo apt-get install litecoind` and try again");
    }
    eprintln!("installing Litecoin Core from Debian's packages (apt-get install litecoind)…");
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends litecoind"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || !Path::new(LITECOIND).exists() {
        bail!("installing litecoind failed; install it with `apt-get install litecoind`");
    }
    Ok(())
}

/// Starts (or reuses) the regtest node under `dir/litecoin`.
pub(crate) async fn start_node(dir: &Path, rpc_port: u16, hook_url: Option<&str>) -> anyhow::Result<DevNode> {
    let node_dir = dir.join("litecoin");
    std::fs::create_dir_all(&node_dir).with_context(|| format!("cannot create {}", node_dir.display()))?;
    let password_file = node_dir.join("rpc-password");
    let password = match std::fs::read_to_string(&password_file) {
        Ok(p) => p.trim().to_string(),
        Err(_) => {
            let p = kassa_engine::secrets::random_alphanumeric(32);
            std::fs::write(&password_file, &p)?;
            p
        }
    };
    let rpc_url = format!("http://127.0.0.1:{rpc_port}");
    let miner = Bitcoind::new(node_config(&rpc_url, &password, "miner"));
    if miner.call("getblockchaininfo", json!([])).await.is_ok() {
        eprintln!("reusing the regtest node already running on port {rpc_port}");
        return Ok(DevNode { miner, rpc_url, password, child: None });
    }
    ensure_litecoind()?;
    let mut conf = format!(
        "regtest=1\nserver=1\nlisten=0\ndnsseed=0\nupnp=0\nnatpmp=0\nfallbackfee=0.0002\ntxindex=1\nprinttoconsole=0\n\
         [regtest]\nrpcbind=127.0.0.1\nrpcallowip=127.0.0.1\nrpcport={rpc_port}\nport={}\nrpcuser=kassa\nrpcpassword={password}\n",
        rpc_port + 1
    );
    if let Some(hook) = hook_url {
        // Hooks only wake the watcher; Kassa is correct without them.
        conf.push_str(&format!("walletnotify=curl -s -m 5 -X POST '{hook}' >/dev/null\nblocknotify=curl -s -m 5 -X POST '{hook}' >/dev/null\n"));
    }
    std::fs::write(node_dir.join("litecoin.conf"), conf)?;
    let child = Command::new(LITECOIND)
        .arg(format!("-datadir={}", node_dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting litecoind")?;
    match miner.wait_ready(Duration::from_secs(60)).await {
        Ok(()) => {}
        Err(kassa_chain::ChainError::Transient(_)) => {
            bail!("litecoind did not answer within 60 s (see {}/regtest/debug.log)", node_dir.display())
        }
        Err(e) => bail!("litecoind: {e}"),
    }
    Ok(DevNode { miner, rpc_url, password, child: Some(child) })
}

impl DevNode {
    pub(crate) async fn fund(&self) -> anyhow::Result<String> {
        self.miner.ensure_wallet().await?;
        let address = self.miner.wallet_call("getnewaddress", json!([])).await?.as_str().unwrap_or_default().to_string();
        let height = self.miner.call("getblockcount", json!([])).await?.as_u64().unwrap_or(0);
        if height < 101 {
            eprintln!("mining {} blocks so the miner wallet can spend…", 101 - height);
            self.miner.call("generatetoaddress", json!([101 - height, address])).await?;
        }
        Ok(address)
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.miner.call("stop", json!([])).await;
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
        }
    }
}

impl Drop for DevNode {
    /// A node Kassa started never outlives it, even when start-up fails.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let dir = args.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match args.action {
        Some(DevAction::Pay { address, amount, blocks }) => {
            serve::init_logging("text", "warn");
            let node = start_node(&dir, args.rpc_port, None).await?;
            let miner_address = node.fund().await?;
            let amount_json: serde_json::Value =
                serde_json::from_str(amount.trim()).map_err(|_| anyhow::anyhow!("amount: {amount:?} is not a decimal number"))?;
            let txid = node.miner.wallet_call("sendtoaddress", json!([address, amount_json])).await.context("sendtoaddress")?;
            node.miner.call("generatetoaddress", json!([blocks, miner_address])).await?;
            println!("paid {amount} to {address} in {}; mined {blocks} block(s)", txid.as_str().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Some(DevAction::Mine { blocks }) => {
            serve::init_logging("text", "warn");
            let node = start_node(&dir, args.rpc_port, None).await?;
            let miner_address = node.fund().await?;
            node.miner.call("generatetoaddress", json!([blocks, miner_address])).await?;
            println!("mined {blocks} block(s)");
            Ok(ExitCode::SUCCESS)
        }
        None => run_dev_server(&dir, args.rpc_port).await,
    }
}

async fn run_dev_server(dir: &Path, rpc_port: u16) -> anyhow::Result<ExitCode> {
    let hook_token_file = dir.join("hook-token");
    let hook_token = match std::fs::read_to_string(&hook_token_file) {
        Ok(t) => t.trim().to_string(),
        Err(_) => {
            let t = kassa_engine::secrets::random_alphanumeric(32);
            std::fs::write(&hook_token_file, &t)?;
            t
        }
    };
    // The listen address may be overridden (KASSA_LISTEN); hooks need the final one,
    // which is known only for a fixed port, so hooks are wired for the default.
    let base = Config::from_toml(include_str!("../../../config/dev.toml"), &dir.join("kassa.toml"))?;
    let hook_url = (base.listen.port() != 0).then(|| format!("http://{}/hooks/chain/litecoin?token={hook_token}", base.listen));
    serve::init_logging(&base.config.log_format, "info");
    let mut node = start_node(dir, rpc_port, hook_url.as_deref()).await?;
    node.fund().await?;
    let chain = format!(
        "[chains.litecoin]\nkind = \"bitcoind\"\npoll_interval_ms = 1000\n\
         [chains.litecoin.bitcoind]\ncoin = \"litecoin\"\nnetwork = \"regtest\"\n\
         rpc_url = {:?}\nrpc_user = \"kassa\"\nrpc_password = {:?}\n",
        node.rpc_url, node.password
    );
    // Top-level keys first: in TOML, keys after a table header belong to that table.
    let text = format!("hook_token = {hook_token:?}\n{}\n{chain}", include_str!("../../../config/dev.toml"));
    let settings = Config::from_toml(&text, &dir.join("kassa.toml"))?;
    let engine = serve::engine(&settings).await?;
    let merchant = match engine.store.merchant_by_name("demo").await? {
        Some(m) => m,
        None => {
            let m = engine.create_merchant("demo").await?;
            engine
                .adjust(AdjustmentRequest {
                    merchant: MerchantId(m.id),
                    currency: "EUR".into(),
                    amount: "100.00".into(),
                    reason: "demo funds".into(),
                    operator: "kassa dev".into(),
                    idempotency_key: Some("dev-demo-funds".into()),
                })
                .await?;
            m
        }
    };
    let key = engine.create_key(MerchantId(merchant.id), "native", Scope::ALL.to_vec(), vec![], "kassa dev").await?;
    let ww = engine.create_key(MerchantId(merchant.id), "westwallet", Scope::ALL.to_vec(), vec![], "kassa dev").await?;
    let cp = engine.create_key(MerchantId(merchant.id), "coinspaid", Scope::ALL.to_vec(), vec![], "kassa dev").await?;
    let whir = engine.create_key(MerchantId(merchant.id), "whir", Scope::ALL.to_vec(), vec![], "kassa dev").await?;
    let deposit = engine.create_deposit_address(MerchantId(merchant.id), "LTC", Some("demo".into()), Some("demo-deposit".into())).await?;
    let token = key.token.as_deref().unwrap_or_default();
    let api = format!("http://{}", settings.listen);
    let data_flag = if dir == Path::new(".kassa") { String::new() } else { format!(" --data-dir {}", dir.display()) };
    println!("Kassa development network");
    println!("  database:     {}", settings.database_url());
    println!("  node:         Litecoin Core regtest, RPC {}", node.rpc_url);
    println!("  merchant:     demo (id {})", merchant.id);
    println!("  API token:    {token}");
    println!("  LTC address:  {}", deposit.address);
    println!("  pay it:       kassa dev{data_flag} pay {} 0.5", deposit.address);
    println!("  balances:     curl -H 'Authorization: Bearer {token}' {api}/kassa/v1/balances");
    println!("  webhooks:     curl -H 'Authorization: Bearer {token}' -d '{{\"url\": \"http://127.0.0.1:9000/hook\"}}' {api}/kassa/v1/webhook-endpoints");
    println!("  events:       curl -H 'Authorization: Bearer {token}' '{api}/kassa/v1/events?after=0'");
    println!("  API doc:      {api}/kassa/v1/openapi.json");
    println!("  WestWallet:   base URL {api}/westwallet, key {}, secret {}", ww.public_key, ww.secret.as_deref().unwrap_or_default());
    println!("  CoinsPaid:    base URL {api}/api, key {}, secret {}", cp.public_key, cp.secret.as_deref().unwrap_or_default());
    println!(
        "  whir:         base URL {api}/whir/api, token {}, response secret {}",
        whir.token.as_deref().unwrap_or_default(),
        whir.secret.as_deref().unwrap_or_default()
    );
    let result = serve::run_http(&settings, engine).await;
    node.stop().await;
    result
}
