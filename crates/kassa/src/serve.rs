//! `kassa serve` and `kassa dev`: start the engine and the HTTP server, stop gracefully.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::future::IntoFuture;
use std::time::Duration;

use anyhow::Context;
use kassa_engine::{Engine, Store, StoreOptions};
use tracing_subscriber::EnvFilter;

use crate::config::Settings;

/// Logs to stderr, as text or JSON lines; `RUST_LOG` overrides the level.
pub fn init_logging(format: &str, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Connects, migrates and builds the engine.
pub async fn engine(settings: &Settings) -> anyhow::Result<Engine> {
    let url = settings.database_url();
    let store = Store::connect(&StoreOptions { url: url.clone(), max_connections: settings.config.database_max_connections })
        .await
        .with_context(|| format!("database_url: cannot open {}", kassa_store::redact(&url)))?;
    let applied = store.migrate().await.context("database migration")?;
    if applied > 0 {
        tracing::info!(applied, backend = store.backend().as_str(), "database migrated");
    }
    let master_key = settings.master_key()?;
    for c in settings.currencies.all() {
        if let Some(chain) = &c.chain {
            if settings.config.chains.get(chain).is_none() {
                tracing::warn!(currency = %c.code, chain, "no [chains.{chain}] configured: {} exists in the ledger only", c.code);
            }
        }
    }
    if settings.config.notifications.allow_loopback && !settings.config.dev_mode {
        tracing::warn!("notifications.allow_loopback is on: callbacks may reach services on this machine (development only)");
    }
    let engine = kassa_api::dialects::register(Engine::new(store, settings.currencies.clone(), master_key, settings.ledger_options()))
        .with_chains(settings.chains())
        .with_target_policy(settings.target_policy())
        .with_invoice_settings(settings.invoice_settings())
        .with_payout_plan_settings(settings.payout_plan_settings());
    let (key_cache, balance_cache) = settings.read_caches();
    let engine = engine.with_read_caches(key_cache, balance_cache);
    let clock = engine.clock().clone();
    let engine = match settings.rates_options() {
        Some(opts) => engine.with_rates(kassa_engine::rates::Rates::new(opts, clock)?),
        None => engine,
    };
    for name in engine.chains.names() {
        let chain = engine.chains.get(name).expect("listed");
        match tokio::time::timeout(Duration::from_secs(30), chain.adapter.prepare()).await {
            Ok(Ok(())) => tracing::info!(chain = %name, "node ready"),
            Ok(Err(e)) => tracing::warn!(chain = %name, error = %e, "node not ready; the watcher keeps trying"),
            Err(_) => tracing::warn!(chain = %name, "node did not answer within 30 s; the watcher keeps trying"),
        }
    }
    Ok(engine)
}

pub async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let engine = engine(&settings).await?;
    // Endpoints and pending deliveries in a format no registered dialect provides
    // would never be delivered: refuse to start instead.
    engine.check_stored_callback_formats().await?;
    run_http(&settings, engine).await
}

pub async fn run_http(settings: &Settings, engine: Engine) -> anyhow::Result<ExitCode> {
    let store = engine.store.clone();
    let (workers_stop, workers_stopping) = tokio::sync::watch::channel(false);
    let mut workers = kassa_engine::watcher::spawn_watchers(&engine, workers_stopping.clone())?;
    workers.extend(kassa_engine::broadcaster::spawn_broadcasters(
        &engine,
        Duration::from_millis(settings.config.withdrawals.poll_interval_ms),
        Duration::from_secs(settings.config.withdrawals.batch_window_secs),
        workers_stopping.clone(),
    )?);
    workers.extend(kassa_engine::exchange::spawn_exchange_workers(&engine, workers_stopping.clone()));
    workers.push(kassa_engine::invoices::spawn_invoice_expiry(&engine, workers_stopping.clone()));
    workers.push(kassa_engine::payout_plans::spawn_payout_plans(&engine, workers_stopping.clone()));
    workers.push(kassa_engine::relay::spawn_relay(&engine, workers_stopping.clone()));
    workers.push(kassa_engine::notifier::spawn_notifier(&engine, settings.notifier_options(), workers_stopping)?);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", settings.listen))?;
    let local = listener.local_addr()?;
    // Payment page links use public_url, or else the address actually bound.
    let engine = match &settings.config.public_url {
        Some(_) => engine,
        None => {
            let invoices = kassa_engine::invoices::InvoiceSettings { public_url: format!("http://{local}"), ..(*engine.invoices).clone() };
            engine.with_invoice_settings(invoices)
        }
    };
    let app = kassa_api::app(engine, &settings.http_options());
    tracing::info!(address = %local, backend = store.backend().as_str(), "kassa listening");
    // Machine-readable line for scripts and the test harness.
    println!("listening on http://{local}");
    let grace = Duration::from_secs(settings.config.http.shutdown_grace_secs);
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(true);
        });
    // After the signal, in-flight requests get `grace` to finish; then we stop anyway.
    tokio::select! {
        result = server.into_future() => result.context("HTTP server")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace expired with requests in flight"),
    }
    let _ = workers_stop.send(true);
    for w in workers {
        let _ = tokio::time::timeout(grace, w).await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}
