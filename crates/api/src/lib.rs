//! Kassa's HTTP surface. Each API dialect is one module that only translates between
//! its wire format and the engine (`native` is Kassa's own API). This module wires the
//! routers together with health, readiness, metrics, request ids, logging and limits.

mod health;
mod hooks;
mod middleware;
pub mod native;
mod pages;
mod westwallet;
pub mod westwallet_auth;

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
    pub westwallet: WestwalletOptions,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { max_body_bytes: 1024 * 1024, request_timeout: Duration::from_secs(30), hook_token: None, operator_token: None, westwallet: WestwalletOptions::default() }
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
pub fn app(engine: Engine, options: &HttpOptions) -> Router {
    let state = AppState(std::sync::Arc::new(Shared {
        engine,
        metrics: metrics_handle(),
        hook_token: options.hook_token.as_deref().map(Into::into),
        operator_token: options.operator_token.as_deref().map(Into::into),
        westwallet: options.westwallet.clone(),
    }));
    let routes = Router::new().merge(health::router()).merge(hooks::router()).merge(pages::router()).merge(westwallet::router()).nest("/westwallet", westwallet::router()).nest("/kassa/v1", native::router());
    middleware::wrap(routes.with_state(state), options)
}
