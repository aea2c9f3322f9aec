//! `kassa bench api`: signed WestWallet requests per second through the real HTTP app,
//! served in this process exactly as `kassa serve` serves it, against a scratch
//! database. A Rust load generator (keep-alive HTTP/1.1 connections, one request in
//! flight on each, every request signed afresh) drives three scenarios in turn: a bare
//! axum handler (the baseline), `GET /wallet/balance` and `POST /wallet/transaction`.
//! Prints requests/s, latency percentiles and errors for each, and the balance read's
//! distance from the baseline. Exits non-zero if any request got a wrong answer.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kassa_core::currency::CurrencyConfig;
use kassa_core::ledger::MerchantId;
use kassa_engine::adjustments::AdjustmentRequest;
use kassa_engine::currencies::Currencies;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::merchants::Scope;
use kassa_engine::secrets::{random_alphanumeric, MasterKey};
use kassa_engine::{Engine, Store, StoreOptions};
use kassa_store::{DepositQuery, FoundDeposit, NewDepositAddress};
use sha2::Sha256;

use crate::bench::{DbKind, ScratchDb};

#[derive(Args)]
pub struct ApiBench {
    #[arg(long, value_enum, default_value = "sqlite")]
    db: DbKind,
    /// PostgreSQL server URL (a scratch database is created on it and dropped after).
    /// SQLite runs in a temporary file unless given a path here.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Keep-alive connections, each sending its next request when the previous one is answered.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The scenarios take turns this many times (a slice of `seconds` each).
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Unmeasured seconds before each scenario (connections opened, caches warm).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Threads of the load generator's own runtime (the servers run on the main one).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The served app's database pool size (`database_max_connections`).
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// API key cache lifetime (`http.key_cache_ms`; 0: every request reads its key).
    #[arg(long, default_value_t = 1000)]
    key_cache_ms: u64,
    /// Balance cache lifetime (`http.balance_cache_ms`; 0: every read goes to the database).
    #[arg(long, default_value_t = 1000)]
    balance_cache_ms: u64,
}

const LTC: &str = r#"{"name":"Litecoin","kind":"crypto","chain":"litecoin","confirmations":1}"#;
const BALANCE_PATH: &str = "/wallet/balance?currency=LTC";
/// What the JavaScript client signs for that query: its parameters as compact JSON.
const BALANCE_PAYLOAD: &[u8] = br#"{"currency":"LTC"}"#;
/// Target of the issue: signed balance reads per second on 2 cores.
const TARGET_RPS: f64 = 10_000.0;
/// ... and at most this many times slower than the bare handler.
const TARGET_RATIO: f64 = 2.0;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const DONE: u8 = 2;

/// The credentials requests are signed with.
struct Key {
    public: String,
    secret: Vec<u8>,
}

/// The request a scenario sends.
#[derive(Clone, Copy)]
enum Kind {
    /// `GET /wallet/balance?currency=LTC` (sent to the bare handler too).
    Balance,
    /// `POST /wallet/transaction` for this WestWallet transaction id.
    Transaction { id: i64 },
}

struct Scenario {
    name: &'static str,
    addr: SocketAddr,
    kind: Kind,
    key: Arc<Key>,
    /// Texts a correct HTTP 200 answer contains.
    expect: Vec<String>,
}

impl Scenario {
    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs().to_string();
        let (method, uri, body) = match self.kind {
            Kind::Balance => (Method::GET, BALANCE_PATH, Bytes::new()),
            Kind::Transaction { id } => (Method::POST, "/wallet/transaction", Bytes::from(format!(r#"{{"id":{id}}}"#))),
        };
        let payload: &[u8] = if method == Method::GET { BALANCE_PAYLOAD } else { &body };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key.secret).expect("HMAC takes any key length");
        mac.update(ts.as_bytes());
        mac.update(payload);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.addr.to_string())
            .header("x-api-key", &self.key.public)
            .header("x-access-timestamp", ts)
            .header("x-access-sign", hex::encode(mac.finalize().into_bytes()));
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        Ok(req.body(Full::new(body))?)
    }

    /// Whether an answer is the one a correct server gives.
    fn accepts(&self, status: StatusCode, body: &[u8]) -> bool {
        let has = |needle: &String| body.windows(needle.len()).any(|w| w == needle.as_bytes());
        status == StatusCode::OK && self.expect.iter().all(has)
    }
}

/// What one connection saw.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// A scenario's figures.
struct Figures {
    rps: f64,
    elapsed: f64,
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Figures {
    /// Adds another measured slice of the same scenario.
    fn merge(&mut self, other: Figures) -> anyhow::Result<()> {
        self.hist.add(&other.hist)?;
        self.elapsed += other.elapsed;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.rps = self.hist.len() as f64 / self.elapsed;
        Ok(())
    }
}

pub async fn run(args: ApiBench) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.seconds == 0 || args.rounds == 0 || args.client_threads == 0 || args.max_connections == 0 {
        bail!("--connections, --seconds, --rounds, --client-threads and --max-connections must be positive");
    }
    let run_id = random_alphanumeric(8).to_lowercase();
    let scratch = ScratchDb::create(args.db, args.database_url.as_deref(), &run_id).await?;
    let result = bench(&args, &scratch.url, &run_id).await;
    scratch.drop().await;
    result
}

async fn bench(args: &ApiBench, url: &str, run_id: &str) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&StoreOptions { url: url.to_string(), max_connections: args.max_connections }).await?;
    store.migrate().await?;
    let cfg: CurrencyConfig = serde_json::from_str(LTC)?;
    let currency = cfg.validate("LTC").map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = kassa_api::dialects::register(Engine::new(store.clone(), Currencies::new(vec![currency]), MasterKey::from_hex(&"00".repeat(32))?, LedgerOptions::default()))
        .with_read_caches(Duration::from_millis(args.key_cache_ms), Duration::from_millis(args.balance_cache_ms));
    let durability: Vec<String> = store.durability().await?.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "kassa bench api: {} ({}), pool {}; key cache {} ms, balance cache {} ms; {} cores; {} keep-alive connections from a Rust HTTP/1.1 client on {} thread(s); {} s warm-up, then {} s per scenario in {} turns; request logs at warn level",
        store.backend().as_str(),
        durability.join(" "),
        args.max_connections,
        args.key_cache_ms,
        args.balance_cache_ms,
        cores,
        args.connections,
        args.client_threads,
        args.warmup,
        args.seconds,
        args.rounds
    );

    // A merchant with a WestWallet key, a balance, and one deposit to look up.
    let merchant = MerchantId(engine.create_merchant(&format!("bench-api-{run_id}")).await?.id);
    let created = engine.create_key(merchant, "westwallet", vec![Scope::Read], vec![], "bench").await?;
    let key = Arc::new(Key { public: created.public_key, secret: created.secret.context("a WestWallet key has a secret")?.into_bytes() });
    let adjusted = engine
        .adjust(AdjustmentRequest {
            merchant,
            currency: "LTC".into(),
            amount: "1.5".into(),
            reason: "bench".into(),
            operator: "bench".into(),
            idempotency_key: None,
        })
        .await?;
    // WestWallet transaction ids are the shared deposit/withdrawal ids.
    let (tx_id, found) = match deposit(&store, merchant).await {
        Ok(row) => (kassa_core::transfers::transfer_id(kassa_core::transfers::TransferKind::Receive, row).context("deposit id")?, true),
        Err(e) => {
            println!("set-up: could not record a deposit ({e:#}); POST /wallet/transaction looks up a missing id and expects not_found");
            (2_000_000_000, false)
        }
    };
    println!(
        "set-up: merchant {}, WestWallet key (read), balance {} LTC, transaction id {tx_id} ({})",
        merchant.0,
        adjusted.available,
        if found { "a deposit" } else { "missing: expects not_found" }
    );

    // The real app, served as `kassa serve` serves it; and the bare baseline, alike.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Rate limits checked on every request as in production, with budgets the load
    // never spends (the bench measures the server, not the limit).
    let mut rate_limits = kassa_api::limits::RateLimitOptions::default();
    let huge = kassa_api::limits::Rate::new(u32::MAX, 1);
    for g in rate_limits.groups.iter_mut() {
        *g = kassa_api::limits::GroupLimits { per_key: Some(huge), per_ip: Some(huge) };
    }
    let app = kassa_api::app(engine.clone(), &kassa_api::HttpOptions { rate_limits, ..Default::default() });
    let (app_addr, app_server) = serve(app, stopping.clone()).await?;
    let bare = Router::new().route("/wallet/balance", get(|| async { Json(serde_json::json!({"balance": "0", "currency": "LTC", "error": "ok"})) }));
    let (bare_addr, bare_server) = serve(bare, stopping).await?;

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let ok = r#""error":"ok""#.to_string();
    let scenarios = [
        Scenario {
            name: "bare axum handler",
            addr: bare_addr,
            kind: Kind::Balance,
            key: key.clone(),
            expect: vec![ok.clone(), r#""currency":"LTC""#.into()],
        },
        Scenario {
            name: "GET /wallet/balance",
            addr: app_addr,
            kind: Kind::Balance,
            key: key.clone(),
            expect: vec![ok.clone(), format!(r#""balance":"{}""#, adjusted.available)],
        },
        Scenario {
            name: "POST /wallet/transaction",
            addr: app_addr,
            kind: Kind::Transaction { id: tx_id },
            key,
            expect: if found { vec![ok, format!(r#""id":{tx_id}"#)] } else { vec![r#""error":"not_found""#.into()] },
        },
    ];
    // The scenarios take turns, a slice each per round, so a machine whose speed
    // drifts (shared cores) weighs on all of them alike.
    let scenarios: Vec<Arc<Scenario>> = scenarios.into_iter().map(Arc::new).collect();
    let slice = (args.seconds / args.rounds).max(1);
    let mut results: Vec<(&str, Option<Figures>)> = scenarios.iter().map(|s| (s.name, None)).collect();
    for round in 0..args.rounds {
        for (i, s) in scenarios.iter().enumerate() {
            let warmup = if round == 0 { args.warmup } else { 0 };
            let figures = drive(&client, s.clone(), args.connections, warmup, slice).await?;
            match &mut results[i].1 {
                Some(total) => total.merge(figures)?,
                none => *none = Some(figures),
            }
        }
    }
    let results: Vec<(&str, Figures)> = results.into_iter().filter_map(|(n, f)| f.map(|f| (n, f))).collect();
    client.shutdown_background();
    let _ = stop.send(true);
    for server in [app_server, bare_server] {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    store.close().await;

    println!();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, f) in &results {
        println!(
            "{name:<26} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   {} requests, {} errors",
            f.rps,
            ms(&f.hist, 0.5),
            ms(&f.hist, 0.99),
            f.hist.max() as f64 / 1000.0,
            f.hist.len(),
            f.errors
        );
    }
    for (name, f) in &results {
        if let Some(e) = &f.first_error {
            println!("{name}: first error: {e}");
        }
    }
    let (bare_rps, balance_rps) = (results[0].1.rps, results[1].1.rps);
    let ratio = if balance_rps > 0.0 { bare_rps / balance_rps } else { f64::INFINITY };
    println!(
        "balance vs bare: {ratio:.2}× slower (target ≤ {TARGET_RATIO}×: {}); signed balance reads {balance_rps:.0}/s (target ≥ {TARGET_RPS:.0}/s on 2 cores: {})",
        if ratio <= TARGET_RATIO { "met" } else { "not met" },
        if balance_rps >= TARGET_RPS { "met" } else { "not met" }
    );
    let errors: u64 = results.iter().map(|(_, f)| f.errors).sum();
    if errors > 0 {
        println!("FAILED: {errors} request(s) got a wrong answer or none");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Records one confirming deposit of 0.001 LTC to a new address of `merchant`, the way
/// the chain scanner does, and returns its row id.
async fn deposit(store: &Store, merchant: MerchantId) -> anyhow::Result<i64> {
    let address = store
        .insert_deposit_address(&NewDepositAddress {
            merchant,
            user_id: None,
            currency: "LTC".into(),
            chain: "litecoin".into(),
            address: "rltc1qbenchapi0000000000000000000000000000".into(),
            label: Some("bench".into()),
            foreign_id: None,
            origin: "westwallet".into(),
            callback_url: None,
            convert_to: None,
        })
        .await?;
    let found = FoundDeposit {
        currency: "LTC".into(),
        txid: "ab".repeat(32),
        vout: 0,
        address_id: address.id,
        merchant_id: merchant.0,
        amount_units: 100_000,
        dust_units: 0,
    };
    store.record_block("litecoin", 1, &"cd".repeat(32), &[found], 100).await?;
    let rows = store.deposits(&DepositQuery { merchant: Some(merchant), limit: 1, ..Default::default() }).await?;
    Ok(rows.first().context("the recorded deposit is listed")?.id)
}

/// Serves `app` on a free loopback port with the production server set-up.
async fn serve(app: Router, mut stopping: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            eprintln!("bench server on {addr}: {e}");
        }
    });
    Ok((addr, task))
}

/// Warms up, then measures one scenario for the configured time on the client runtime.
async fn drive(client: &tokio::runtime::Runtime, s: Arc<Scenario>, connections: usize, warmup: u64, seconds: u64) -> anyhow::Result<Figures> {
    let phase = Arc::new(AtomicU8::new(WARMING));
    let answered = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..connections).map(|_| client.spawn(connection(s.clone(), phase.clone(), answered.clone()))).collect();
    eprintln!("{}: {warmup} s warm-up, {seconds} s measured", s.name);
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let started = Instant::now();
    phase.store(MEASURING, Ordering::SeqCst);
    let deadline = started + Duration::from_secs(seconds);
    let mut last = answered.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()))).await;
        let now = answered.load(Ordering::Relaxed);
        eprintln!("  {:>5.1} s  {:>9} req/s", started.elapsed().as_secs_f64(), now - last);
        last = now;
    }
    phase.store(DONE, Ordering::SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut errors, mut first_error) = (0, None);
    for w in workers {
        let t = w.await.context("load generator task")?;
        hist.add(&t.hist)?;
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    Ok(Figures { rps: hist.len() as f64 / elapsed, elapsed, hist, errors, first_error })
}

/// One keep-alive connection sending requests back to back until the run is done;
/// reconnects after a failure. Answers are timed while measuring; wrong answers count
/// as errors in every phase.
async fn connection(s: Arc<Scenario>, phase: Arc<AtomicU8>, answered: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally { hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"), errors: 0, first_error: None };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    while phase.load(Ordering::Relaxed) != DONE {
        let conn = match sender.as_mut() {
            Some(c) => c,
            None => match connect(s.addr).await {
                Ok(c) => sender.insert(c),
                Err(e) => {
                    note(&mut tally, format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = match s.request() {
            Ok(r) => r,
            Err(e) => {
                note(&mut tally, format!("building the request: {e:#}"));
                break;
            }
        };
        let t = Instant::now();
        let answer = async {
            conn.ready().await?;
            let response = conn.send_request(req).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let micros = t.elapsed().as_micros() as u64;
        answered.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok((status, body)) if s.accepts(status, &body) => {
                if phase.load(Ordering::Relaxed) == MEASURING {
                    tally.hist.saturating_record(micros.max(1));
                }
            }
            Ok((status, body)) => note(&mut tally, format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]))),
            Err(e) => {
                note(&mut tally, format!("request: {e}"));
                sender = None;
            }
        }
    }
    tally
}

fn note(tally: &mut Tally, error: String) {
    tally.errors += 1;
    tally.first_error.get_or_insert(error);
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
