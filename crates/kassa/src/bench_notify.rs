//! `kassa bench notify`: the notification outbox under load. Concurrent writers commit
//! events (one per transaction, as state changes do) to a scratch database while
//! notifier instances deliver them, signed, to a local HTTP receiver. Prints progress
//! each second, then events written/s, deliveries/s, the latency from an event's
//! commit to its receipt, and a check of the sequence the pull API serves (gap-free,
//! and no event numbered before one that had committed before it was written).
//! `--rate` paces the writers to a steady number of events per second.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use kassa_core::currency::CurrencyConfig;
use kassa_core::ledger::MerchantId;
use kassa_engine::currencies::Currencies;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::notifier::{Notifier, NotifierOptions};
use kassa_engine::secrets::{random_alphanumeric, MasterKey};
use kassa_engine::webhooks::TargetPolicy;
use kassa_engine::{Engine, Store, StoreOptions};
use kassa_store::NewEvent;

use crate::bench::{DbKind, ScratchDb};

#[derive(Args)]
pub struct NotifyBench {
    #[arg(long, value_enum)]
    db: DbKind,
    /// PostgreSQL server URL (a scratch database is created on it and dropped after).
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Events written.
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Concurrent writers, each committing one event per transaction.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Webhook endpoints (each event is delivered to every one).
    #[arg(long, default_value_t = 2)]
    endpoints: usize,
    /// Notifier instances sharing the database.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Concurrent deliveries per instance.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Database pool size (`database_max_connections`; the default is the server's).
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// Events per second the writers commit together (0: as fast as they can).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

/// Receipt times by event id, and the count of requests.
#[derive(Default)]
struct Received {
    at: Mutex<HashMap<String, Instant>>,
    requests: AtomicU64,
}

async fn receive(axum::extract::State(r): axum::extract::State<Arc<Received>>, headers: axum::http::HeaderMap) -> &'static str {
    r.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        r.at.lock().expect("receipts").entry(id.to_string()).or_insert_with(Instant::now);
    }
    "ok"
}

pub async fn run(args: NotifyBench) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.writers == 0 || args.max_connections == 0 || args.endpoints == 0 || args.instances == 0 || args.max_in_flight == 0 {
        bail!("--events, --writers, --max-connections, --endpoints, --instances and --max-in-flight must be positive");
    }
    let run_id = random_alphanumeric(8).to_lowercase();
    let scratch = ScratchDb::create(args.db, args.database_url.as_deref(), &run_id).await?;
    let result = bench(&args, &scratch.url).await;
    scratch.drop().await;
    result
}

async fn bench(args: &NotifyBench, url: &str) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&StoreOptions { url: url.to_string(), max_connections: args.max_connections }).await?;
    store.migrate().await?;
    let cfg: CurrencyConfig = serde_json::from_str(r#"{"name":"Bench Euro","kind":"fiat","precision":2}"#)?;
    let currencies = Currencies::new(vec![cfg.validate("BEUR").map_err(|e| anyhow::anyhow!("{e}"))?]);
    let master = MasterKey::from_hex(&"00".repeat(32))?;
    let engine = Engine::new(store.clone(), currencies, master, LedgerOptions::default()).with_target_policy(TargetPolicy::development());
    let durability: Vec<String> = store.durability().await?.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "kassa bench notify: {} ({}), {} events by {} writers{}, {} endpoint(s), {} notifier instance(s), {} in flight each",
        store.backend().as_str(),
        durability.join(" "),
        args.events,
        args.writers,
        if args.rate > 0 { format!(" at {} events/s", args.rate) } else { String::new() },
        args.endpoints,
        args.instances,
        args.max_in_flight
    );

    let received = Arc::new(Received::default());
    let app = axum::Router::new().fallback(receive).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let merchant = MerchantId(store.create_merchant("bench-notify").await?.id);
    for i in 0..args.endpoints {
        engine.create_endpoint(merchant, &format!("http://{receiver}/hook/{i}"), "standard", &[]).await?;
    }

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut notifiers = Vec::new();
    for i in 0..args.instances {
        let e = if i == 0 { engine.clone() } else { Engine { instance: format!("{}-{i}", engine.instance).into(), ..engine.clone() } };
        let opts = NotifierOptions {
            poll_interval: Duration::from_millis(20),
            max_in_flight: args.max_in_flight,
            max_in_flight_per_endpoint: args.max_in_flight,
            ..NotifierOptions::default()
        };
        notifiers.push(kassa_engine::relay::spawn_relay(&e, stopping.clone()));
        notifiers.push(tokio::spawn(Notifier::new(e, opts)?.run(stopping.clone())));
    }

    // Writers: one event per transaction, as every state change commits its own; each
    // event's (write started, commit returned).
    let committed: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..args.writers {
        let (store, committed, next, total, rate) = (store.clone(), committed.clone(), next.clone(), args.events as u64, args.rate);
        writers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), kassa_store::StoreError>(());
                }
                if rate > 0 {
                    tokio::time::sleep_until((started + Duration::from_micros(n * 1_000_000 / rate)).into()).await;
                }
                let begun = Instant::now();
                let ids = store
                    .insert_events(vec![NewEvent {
                        merchant_id: merchant.0,
                        event_type: "deposit.credited".into(),
                        object_kind: "bench".into(),
                        object_id: n as i64,
                        origin: "native".into(),
                        callback_url: None,
                        data: serde_json::json!({"n": n}),
                        only_endpoint: None,
                    }])
                    .await?;
                let now = Instant::now();
                committed.lock().expect("commits").extend(ids.into_iter().map(|id| (id, (begun, now))));
            }
        }));
    }
    let expected = (args.events * args.endpoints) as u64;
    let mut written_at = None;
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written = committed.lock().expect("commits").len();
        if written_at.is_none() && written == args.events {
            written_at = Some(started.elapsed());
        }
        let delivered = received.requests.load(Ordering::Relaxed);
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            println!("  {:>5.1} s: {written} events committed, {delivered} of {expected} deliveries received", started.elapsed().as_secs_f64());
        }
        if delivered >= expected && written == args.events {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("gave up after 600 s: {delivered} of {expected} deliveries received");
        }
    }
    let total = started.elapsed();
    for w in writers {
        w.await??;
    }
    let _ = stop.send(true);
    for n in notifiers {
        let _ = n.await;
    }
    let write_secs = written_at.unwrap_or(total).as_secs_f64();
    let commits = committed.lock().expect("commits").clone();
    let receipts = received.at.lock().expect("receipts").clone();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for (id, at) in &receipts {
        if let Some((_, c)) = commits.get(id) {
            hist.record(at.saturating_duration_since(*c).as_micros().max(1) as u64)?;
        }
    }
    let (pending, _) = store.delivery_backlog().await?;
    let requests = received.requests.load(Ordering::Relaxed);
    println!("outbox writes: {} events in {write_secs:.2} s = {:.0} events/s (one per transaction, {} writers)", args.events, args.events as f64 / write_secs, args.writers);
    println!("deliveries:    {requests} in {:.2} s = {:.0} deliveries/s ({} duplicate(s), {pending} pending)", total.as_secs_f64(),
        requests as f64 / total.as_secs_f64(), requests.saturating_sub(expected));
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!("commit → first receipt: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms(0.5), ms(0.9), ms(0.99), hist.max() as f64 / 1000.0);
    let (gaps, misordered) = check_sequence(&engine, merchant, &commits).await?;
    println!("sequence:      {} events pulled, {gaps} gap(s), {misordered} numbered before an event that committed before they were written", commits.len());
    Ok(if gaps == 0 && misordered == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Pulls the merchant's events as a client would and counts gaps (sequence numbers
/// missing or repeated) and events numbered before one that had committed before their
/// own write began.
async fn check_sequence(engine: &Engine, merchant: MerchantId, commits: &HashMap<String, (Instant, Instant)>) -> anyhow::Result<(usize, usize)> {
    let mut pulled = Vec::with_capacity(commits.len());
    let mut after = 0;
    loop {
        let page = engine.store.events_after(merchant, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        pulled.extend(page);
    }
    let mut gaps = usize::from(pulled.len() != commits.len());
    for (i, e) in pulled.iter().enumerate() {
        if e.seq != i as i64 + 1 {
            gaps += 1;
        }
    }
    // From the highest number down: the earliest commit among later-numbered events
    // must not precede this event's write.
    let mut misordered = 0;
    let mut earliest_later: Option<Instant> = None;
    for e in pulled.iter().rev() {
        let Some((begun, done)) = commits.get(&e.public_id) else { continue };
        if earliest_later.is_some_and(|c| c < *begun) {
            misordered += 1;
        }
        earliest_later = Some(earliest_later.map_or(*done, |c| c.min(*done)));
    }
    Ok((gaps, misordered))
}
