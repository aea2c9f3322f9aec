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
    }
}

async fn ledger(args: LedgerBench) -> anyhow::Result<ExitCode> {
    if args.workers == 0 || args.seconds == 0 || args.merchants < 2 || args.hot_accounts > args.merchants || args.hot_percent > 100 {
        bail!("--workers and --seconds must be positive, --merchants at least 2, --hot-accounts at most --merchants, --hot-percent at most 100");
    }
    let run_id = random_alphanumeric(8).to_lowercase();
    let mut scratch_pg: Option<(String, String)> = None;
    let mut _tmp: Option<tempfile::TempDir> = None;
    let url = match args.db {
        DbKind::Sqlite => match &args.database_url {
            Some(path) => path.clone(),
            None => {
                let dir = tempfile::TempDir::new()?;
                let path = dir.path().join("bench.db").display().to_string();
                _tmp = Some(dir);
                path
            }
        },
        DbKind::Postgres => {
            let Some(server) = args.database_url.clone() else {
                bail!("--database-url (or BENCH_DATABASE_URL) must name a PostgreSQL server for --db postgres");
            };
            let name = format!("kassa_bench_{run_id}");
            let url = kassa_store::create_postgres_database(&server, &name).await.context("creating the scratch database")?;
            scratch_pg = Some((server, name));
            url
        }
    };
    let result = run_ledger(&args, &url, &run_id).await;
    if let Some((server, name)) = scratch_pg {
        kassa_store::drop_postgres_database(&server, &name).await.ok();
    }
    result
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
