//! Kassa's HTTP surface. Each API dialect is one folder under `dialects/` that only
//! translates between its wire format and the engine (`native` is Kassa's own API),
//! registered once in `dialects::DIALECTS`. This module mounts the dialects where the
//! configuration says and wires them together with health, readiness, metrics,
//! request ids, logging and limits.

pub mod dialects;
mod health;
mod hooks;
pub mod limits;
mod middleware;
mod pages;
pub mod wire;

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use kassa_engine::Engine;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time allowed to answer one request.
    pub request_timeout: Duration,
    /// Token node hooks must present; hooks are refused without one.
    pub hook_token: Option<String>,
    /// Bearer token of the operator API (`/kassa/v1/operator/...`); off without one.
    pub operator_token: Option<String>,
    /// Mount prefixes by dialect name, instead of the dialect's defaults.
    pub mounts: std::collections::BTreeMap<String, Vec<String>>,
    pub westwallet: WestwalletOptions,
    /// Request rate limits and how the client's address is found.
    pub rate_limits: limits::RateLimitOptions,
    /// Per merchant name: the origins allowed to embed its CoinsPaid-style payment
    /// terminal (`is_iframe`); none may otherwise.
    pub terminal_frame_ancestors: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            hook_token: None,
            operator_token: None,
            mounts: Default::default(),
            westwallet: WestwalletOptions::default(),
            rate_limits: limits::RateLimitOptions::default(),
            terminal_frame_ancestors: Default::default(),
        }
    }
}

/// The WestWallet-compatible API's settings.
#[derive(Clone, Debug)]
pub struct WestwalletOptions {
    /// Currencies it offers (`None`: every active currency carried by a chain).
    pub currencies: Option<Vec<String>>,
    /// Accepted distance between a request's timestamp and the server's clock.
    pub timestamp_window_secs: i64,
}

impl Default for WestwalletOptions {
    fn default() -> Self {
        Self { currencies: None, timestamp_window_secs: 300 }
    }
}

/// State shared by every handler: one allocation, so the per-request clone axum
/// makes is a single reference count.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

pub struct Shared {
    pub engine: Engine,
    pub metrics: PrometheusHandle,
    pub hook_token: Option<std::sync::Arc<str>>,
    pub operator_token: Option<std::sync::Arc<str>>,
    pub westwallet: WestwalletOptions,
    pub terminal_frame_ancestors: std::collections::BTreeMap<String, Vec<String>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then this handle stays empty.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// The complete application router.
///
/// # Panics
/// On mount prefixes [`dialects::mounts`] refuses (the configuration checks them first).
pub fn app(engine: Engine, options: &HttpOptions) -> Router {
    let mounts = std::sync::Arc::new(dialects::mounts(&options.mounts).unwrap_or_else(|e| panic!("{e}")));
    let limiter = std::sync::Arc::new(limits::Limiter::new(&options.rate_limits, engine.clock().clone()));
    let state = AppState(std::sync::Arc::new(Shared {
        engine,
        metrics: metrics_handle(),
        hook_token: options.hook_token.as_deref().map(Into::into),
        operator_token: options.operator_token.as_deref().map(Into::into),
        westwallet: options.westwallet.clone(),
        terminal_frame_ancestors: options.terminal_frame_ancestors.clone(),
    }));
    let mut routes =
        Router::new().merge(health::router()).merge(hooks::router()).merge(pages::router()).merge(dialects::coinspaid::terminal::router());
    for (prefix, dialect) in mounts.iter() {
        routes = if prefix.is_empty() { routes.merge((dialect.router)()) } else { routes.nest(prefix, (dialect.router)()) };
    }
    middleware::wrap(routes.with_state(state), options, mounts, limiter)
}
