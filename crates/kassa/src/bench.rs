//! `kassa bench ledger`: concurrent transfers through the real ledger service and
//! store, with durable commits, over a realistic account mix (many merchants, a few
//! hot accounts that a share of all transfers touch). Prints transfers/s and latency
//! percentiles, then runs the invariant check on the result.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use kassa_core::currency::CurrencyConfig;
use kassa_core::ledger::{AccountId, AccountKey, Action, Leg, LedgerError, MerchantId, SystemAccount, TxRequest};
use kassa_core::CurrencyCode;
use kassa_engine::currencies::Currencies;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::secrets::{random_alphanumeric, MasterKey};
use kassa_engine::{Engine, EngineError, Store, StoreOptions};
use rand::Rng;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Concurrent ledger transfers with durable commits.
    Ledger(LedgerBench),
    /// Chain scanning against a real Litecoin regtest node: catch-up speed, detection
    /// latency from the block hook to the committed credit, and memory, with many
    /// watched addresses.
    Scan(ScanBench),
    /// Notifications: outbox writes and deliveries to a local receiver (events/s,
    /// deliveries/s, commit-to-receipt latency), with one or more notifier instances.
    Notify(crate::bench_notify::NotifyBench),
    /// HTTP API: signed WestWallet `GET /wallet/balance` and `POST /wallet/transaction`
    /// requests/s and latency through the real app, against a bare axum handler.
    Api(crate::bench_api::ApiBench),
    /// Payouts against a real Litecoin regtest node: a burst of queued withdrawals
    /// (many to one address), paid per second and in how many transactions.
    Payouts(crate::bench_payouts::PayoutsBench),
}

#[derive(Args)]
pub struct ScanBench {
    /// Watched addresses (synthetic ones plus the few that receive payments).
    #[arg(long, default_value_t = 100_000)]
    addresses: usize,
    /// Blocks mined while Kassa is not scanning, then caught up.
    #[arg(long, default_value_t = 200)]
    blocks: u64,
    /// Deposits whose detection latency is measured, one block each.
    #[arg(long, default_value_t = 50)]
    deposits: usize,
    /// RPC port for the benchmark's own regtest node (default: a free one).
    #[arg(long)]
    rpc_port: Option<u16>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Args)]
pub struct LedgerBench {
    #[arg(long, value_enum)]
    db: DbKind,
    /// PostgreSQL server URL (a scratch database is created on it and dropped after).
    /// SQLite runs in a temporary file unless given a path here.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Concurrent clients, each waiting for its transfer before sending the next.
    #[arg(long, default_value_t = 512)]
    workers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Merchant accounts transfers move between.
    #[arg(long, default_value_t = 1000)]
    merchants: usize,
    /// Hot accounts (e.g. big marketplaces) ...
    #[arg(long, default_value_t = 4)]
    hot_accounts: usize,
    /// ... touched by this percentage of all transfers.
    #[arg(long, default_value_t = 20)]
    hot_percent: u32,
    /// Most transfers committed in one database transaction.
    #[arg(long, default_value_t = 1024)]
    max_batch: usize,
    /// Concurrent ledger writers.
    #[arg(long, default_value_t = 1)]
    writers: usize,
}

const BENCH_CURRENCY: &str = r#"{"name":"Bench Euro","kind":"fiat","precision":2}"#;
/// Each account starts with 1,000,000.00.
const START_UNITS: i128 = 100_000_000;

pub async fn run(cmd: BenchCommand, _config: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Ledger(args) => ledger(args).await,
        BenchCommand::Scan(args) => scan(args).await,
        BenchCommand::Notify(args) => crate::bench_notify::run(args).await,
        BenchCommand::Api(args) => crate::bench_api::run(args).await,
        BenchCommand::Payouts(args) => crate::bench_payouts::run(args).await,
    }
}

async fn ledger(args: LedgerBench) -> anyhow::Result<ExitCode> {
    if args.workers == 0 || args.seconds == 0 || args.merchants < 2 || args.hot_accounts > args.merchants || args.hot_percent > 100 {
        bail!("--workers and --seconds must be positive, --merchants at least 2, --hot-accounts at most --merchants, --hot-percent at most 100");
    }
    let run_id = random_alphanumeric(8).to_lowercase();
    let scratch = ScratchDb::create(args.db, args.database_url.as_deref(), &run_id).await?;
    let result = run_ledger(&args, &scratch.url, &run_id).await;
    scratch.drop().await;
    result
}

/// A database for one benchmark run: a temporary SQLite file (or the given path), or
/// a new database on the given PostgreSQL server, dropped afterwards.
pub(crate) struct ScratchDb {
    pub url: String,
    pg: Option<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl ScratchDb {
    pub async fn create(db: DbKind, database_url: Option<&str>, run_id: &str) -> anyhow::Result<ScratchDb> {
        Ok(match db {
            DbKind::Sqlite => match database_url {
                Some(path) => ScratchDb { url: path.to_string(), pg: None, _tmp: None },
                None => {
                    let dir = tempfile::TempDir::new()?;
                    let url = dir.path().join("bench.db").display().to_string();
                    ScratchDb { url, pg: None, _tmp: Some(dir) }
                }
            },
            DbKind::Postgres => {
                let Some(server) = database_url else {
                    bail!("--database-url (or BENCH_DATABASE_URL) must name a PostgreSQL server for --db postgres");
                };
                let name = format!("kassa_bench_{run_id}");
                let url = kassa_store::create_postgres_database(server, &name).await.context("creating the scratch database")?;
                ScratchDb { url, pg: Some((server.to_string(), name)), _tmp: None }
            }
        })
    }

    pub async fn drop(self) {
        if let Some((server, name)) = self.pg {
            kassa_store::drop_postgres_database(&server, &name).await.ok();
        }
    }
}

async fn run_ledger(args: &LedgerBench, url: &str, run_id: &str) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&StoreOptions { url: url.to_string(), max_connections: 8 + args.writers as u32 }).await?;
    store.migrate().await?;
    let cfg: CurrencyConfig = serde_json::from_str(BENCH_CURRENCY)?;
    let currency = cfg.validate("BEUR").map_err(|e| anyhow::anyhow!("{e}"))?;
    let code: CurrencyCode = currency.code.clone();
    let engine = Engine::new(
        store.clone(),
        Currencies::new(vec![currency]),
        MasterKey::from_hex(&"00".repeat(32))?,
        LedgerOptions { max_batch: args.max_batch, queue_capacity: args.workers * 2 + 16, writers: args.writers },
    );
    let durability: Vec<String> = store.durability().await?.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "kassa bench ledger: {} ({}), {} workers, {} s, {} merchants ({} hot, {}% of transfers touch one), batches up to {}",
        store.backend().as_str(),
        durability.join(" "),
        args.workers,
        args.seconds,
        args.merchants,
        args.hot_accounts,
        args.hot_percent,
        args.max_batch
    );

    // Set-up: merchants, their accounts, and starting funds from owner equity.
    let setup = Instant::now();
    let equity = engine.ledger.account(&AccountKey::System { account: SystemAccount::OwnerEquity, currency: code.clone() }).await?;
    let mut accounts: Vec<AccountId> = Vec::with_capacity(args.merchants);
    for i in 0..args.merchants {
        let m = store.create_merchant(&format!("bench-{run_id}-{i}")).await?;
        accounts.push(engine.ledger.account(&AccountKey::Merchant { merchant: MerchantId(m.id), currency: code.clone() }).await?);
    }
    let funding: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let engine = engine.clone();
            let req = TxRequest {
                idempotency_key: format!("bench:{run_id}:fund:{i}"),
                action: Action::Transfer(vec![Leg { from: equity, to: *to, currency: code.clone(), units: START_UNITS }]),
                memo: r#"{"type":"bench_funding"}"#.into(),
            };
            tokio::spawn(async move { engine.ledger.submit(req).await })
        })
        .collect();
    for f in funding {
        f.await??;
    }
    println!("set-up: {} accounts funded in {:.1} s", accounts.len(), setup.elapsed().as_secs_f64());

    // The measured run.
    let accounts = Arc::new(accounts);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    let started = Instant::now();
    for w in 0..args.workers {
        let (engine, accounts, stop, done, refused, code) =
            (engine.clone(), accounts.clone(), stop.clone(), done.clone(), refused.clone(), code.clone());
        let (hot, hot_percent, run_id) = (args.hot_accounts, args.hot_percent, run_id.to_string());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = {
                    let mut rng = rand::thread_rng();
                    let pick = |rng: &mut rand::rngs::ThreadRng, hot_side: bool| {
                        if hot_side && hot > 0 {
                            rng.gen_range(0..hot)
                        } else {
                            rng.gen_range(hot..accounts.len().max(hot + 1))
                        }
                    };
                    let hot_transfer = rng.gen_range(0..100) < hot_percent;
                    let from = pick(&mut rng, false);
                    let mut to = pick(&mut rng, hot_transfer);
                    if to == from {
                        to = (from + 1) % accounts.len();
                    }
                    if hot_transfer && rng.gen_bool(0.5) { (to, from) } else { (from, to) }
                };
                let units = rand::thread_rng().gen_range(1..=10_000);
                let req = TxRequest {
                    idempotency_key: format!("bench:{run_id}:{w}:{n}"),
                    action: Action::Transfer(vec![Leg { from: accounts[from], to: accounts[to], currency: code.clone(), units }]),
                    memo: String::new(),
                };
                n += 1;
                let t = Instant::now();
                match engine.ledger.submit(req).await {
                    Ok(_) => {
                        hist.saturating_record(t.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(EngineError::Ledger(LedgerError::InsufficientFunds { .. })) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(hist)
        }));
    }
    let deadline = started + Duration::from_secs(args.seconds);
    let mut last = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()))).await;
        let now = done.load(Ordering::Relaxed);
        eprintln!("  {:>5.1} s  {:>10} transfers  {:>8} /s", started.elapsed().as_secs_f64(), now, now - last);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for w in workers {
        hist.add(w.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = done.load(Ordering::Relaxed);
    println!(
        "result: {} transfers in {:.2} s = {:.0} transfers/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} refused for insufficient funds",
        total,
        elapsed,
        total as f64 / elapsed,
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        refused.load(Ordering::Relaxed)
    );
    let report = engine.check().await?;
    println!(
        "check: {} transactions, {} entries: {}",
        report.transactions,
        report.entries,
        if report.ok() { "OK".to_string() } else { format!("{} violation(s): {:?}", report.violations.len(), report.violations) }
    );
    store.close().await;
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Resident memory of this process, from /proc (Linux).
/// A Litecoin regtest node of the benchmark's own (funded miner wallet), a scratch
/// SQLite store and an engine with the chain and its LTC.
pub(crate) struct RegtestBench {
    pub node: crate::dev::DevNode,
    pub miner_address: String,
    pub store: Store,
    pub engine: Engine,
    pub adapter: Arc<kassa_chain_bitcoind::Bitcoind>,
    pub _dir: tempfile::TempDir,
}

impl RegtestBench {
    pub async fn start(rpc_port: Option<u16>, settings: kassa_engine::chains::ChainSettings) -> anyhow::Result<RegtestBench> {
        use kassa_chain::ChainAdapter;
        let dir = tempfile::TempDir::new()?;
        let port = match rpc_port {
            Some(p) => p,
            None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let node = crate::dev::start_node(dir.path(), port, None).await?;
        let miner_address = node.fund().await?;
        let store = Store::connect(&StoreOptions { url: dir.path().join("bench.db").display().to_string(), max_connections: 8 }).await?;
        store.migrate().await?;
        let cfg: CurrencyConfig = serde_json::from_str(r#"{"name":"Litecoin","kind":"crypto","chain":"litecoin","confirmations":1}"#)?;
        let currency = cfg.validate("LTC").map_err(|e| anyhow::anyhow!("{e}"))?;
        let adapter = Arc::new(kassa_chain_bitcoind::Bitcoind::new(crate::dev::node_config(&node.rpc_url, &node.password, "kassa")));
        adapter.prepare().await?;
        let mut chains = kassa_engine::chains::Chains::default();
        chains.add(adapter.clone(), settings);
        let engine = Engine::new(store.clone(), Currencies::new(vec![currency]), MasterKey::from_hex(&"00".repeat(32))?, LedgerOptions::default())
            .with_chains(chains);
        Ok(RegtestBench { node, miner_address, store, engine, adapter, _dir: dir })
    }
}

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn scan(args: ScanBench) -> anyhow::Result<ExitCode> {
    use kassa_engine::chains::ChainSettings;
    use kassa_engine::watcher::Watcher;
    use serde_json::json;

    if args.addresses == 0 || args.deposits == 0 {
        bail!("--addresses and --deposits must be positive");
    }
    println!("kassa bench scan: {} watched addresses, catch-up over {} blocks, {} detections", args.addresses, args.blocks, args.deposits);
    let RegtestBench { node, miner_address, store, engine, _dir, .. } =
        RegtestBench::start(args.rpc_port, ChainSettings { poll_interval: Duration::from_secs(3600), max_blocks_per_cycle: 1000, ..Default::default() }).await?;
    let merchant = MerchantId(store.create_merchant("bench-scan").await?.id);

    // The watched set: synthetic addresses (never paid) plus real ones that receive.
    let real_count = args.deposits + args.blocks as usize;
    let synthetic = args.addresses.saturating_sub(real_count);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(50_000);
    let mut inserted = 0;
    for i in 0..synthetic {
        batch.push(format!("rltc1qbench{i:032x}"));
        if batch.len() == 50_000 || i + 1 == synthetic {
            inserted += store.insert_deposit_addresses_bulk(merchant, "LTC", "litecoin", &batch).await?;
            batch.clear();
            eprint!("\r  {inserted} synthetic addresses stored");
        }
    }
    let mut real = Vec::with_capacity(real_count);
    for _ in 0..real_count {
        real.push(engine.create_deposit_address(merchant, "LTC", None, None).await?.address);
    }
    eprintln!();
    println!("set-up: {} addresses stored in {:.1} s", inserted as usize + real.len(), started.elapsed().as_secs_f64());
    let rss_before = rss_mb().unwrap_or(0.0);
    let mut watcher = Watcher::new(engine.clone(), "litecoin")?;
    let t = Instant::now();
    watcher.cycle().await?;
    println!(
        "loaded {} watched addresses in {:.2} s; RSS {:.0} MB before, {:.0} MB after loading",
        watcher.watched(),
        t.elapsed().as_secs_f64(),
        rss_before,
        rss_mb().unwrap_or(0.0)
    );

    // Catch-up: blocks mined while Kassa was not scanning, each paying one watched address.
    for (i, address) in real[args.deposits..].iter().enumerate() {
        node.miner.wallet_call("sendtoaddress", json!([address, 0.001])).await?;
        node.miner.call("generatetoaddress", json!([1, miner_address])).await?;
        if (i + 1) % 50 == 0 {
            eprint!("\r  mined {}/{} blocks", i + 1, args.blocks);
        }
    }
    eprintln!();
    let t = Instant::now();
    let mut scanned = 0;
    let mut credited = 0;
    loop {
        let r = watcher.cycle().await?;
        scanned += r.blocks;
        credited += r.credited;
        if r.blocks == 0 {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("catch-up: {scanned} blocks in {secs:.2} s = {:.0} blocks/s; {credited} deposits credited", scanned as f64 / secs);

    // Detection latency: block mined, hook fires (wakes the watcher), credit committed.
    let wake = engine.chains.get("litecoin").expect("configured").wake.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(watcher.run(wake.clone(), stop_rx));
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for (i, address) in real[..args.deposits].iter().enumerate() {
        let txid = node.miner.wallet_call("sendtoaddress", json!([address, 0.001])).await?;
        let txid = txid.as_str().unwrap_or_default().to_string();
        node.miner.call("generatetoaddress", json!([1, miner_address])).await?;
        let t0 = Instant::now();
        engine.chains.wake("litecoin"); // what POST /hooks/chain/litecoin does
        loop {
            let list = store
                .deposits(&kassa_store::DepositQuery { merchant: Some(merchant), status: Some("credited".into()), limit: 1, ..Default::default() })
                .await?;
            if list.first().is_some_and(|d| d.txid == txid) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("deposit {i} was not credited within 30 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        hist.saturating_record(t0.elapsed().as_micros() as u64);
    }
    let _ = stop_tx.send(true);
    let _ = running.await;
    println!(
        "detection (hook → credit committed): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} deposits",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        hist.len()
    );
    println!("memory: RSS {:.0} MB with {} watched addresses", rss_mb().unwrap_or(0.0), args.addresses);
    let report = engine.check().await?;
    println!("check: {}", if report.ok() { "OK".to_string() } else { format!("{:?}", report.violations) });
    drop(node);
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
