//! Exchange rates: adapters for public price APIs (Kraken, Coinbase, Binance) read
//! in their documented response formats, a `fixed` source from configuration, priority
//! with fallback, a staleness limit (no quote on stale rates), and background refresh.
//! Rates are mid prices per configured pair (`BASE/QUOTE`); the reverse direction uses
//! the inverse. Spreads and fees are applied when quoting (`exchange`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kassa_core::rates::{Rate, RateError};
use serde_json::Value;

use kassa_core::Clock;
use crate::EngineError;

/// Where a rate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Kraken's public `GET /0/public/Ticker?pair=XBTEUR`: the mid of best ask and bid.
    Kraken { base_url: String },
    /// Coinbase's `GET /v2/prices/BTC-EUR/spot`: `data.amount`.
    Coinbase { base_url: String },
    /// Binance's `GET /api/v3/ticker/bookTicker?symbol=BTCEUR`: the mid of bid and ask.
    Binance { base_url: String },
    /// Rates from configuration (development, regtest, or pegged pairs).
    Fixed { rates: BTreeMap<String, Rate> },
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Kraken { .. } => "kraken",
            Source::Coinbase { .. } => "coinbase",
            Source::Binance { .. } => "binance",
            Source::Fixed { .. } => "fixed",
        }
    }
}

/// A pair that can be exchanged (both ways).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairConfig {
    pub base: String,
    pub quote: String,
    /// Spread taken from the mid price, percent × 10^6.
    pub spread_e6: i128,
    /// Least amount exchanged, in units of the base currency (for either direction,
    /// the base-currency side of the exchange).
    pub min_base_units: i128,
    /// Least deposit converted on arrival (to an address with conversion), in units
    /// of the base currency as `min_base_units`; a smaller one is credited as received.
    pub min_deposit_base_units: i128,
}

#[derive(Clone, Debug)]
pub struct RatesOptions {
    /// In priority order; the first that answers wins.
    pub sources: Vec<Source>,
    pub pairs: Vec<PairConfig>,
    /// Rates older than this are stale: no quotes.
    pub max_age: Duration,
    pub refresh_interval: Duration,
    /// How long a quote holds its price.
    pub quote_ttl: Duration,
    pub request_timeout: Duration,
    /// How long a futures price holds (from `ts_fixed` to `ts_release`).
    pub futures_window: Duration,
    /// The most a futures may receive, in `futures_limit_currency` (text, e.g. "10000").
    pub futures_limit: String,
    pub futures_limit_currency: String,
}

impl Default for RatesOptions {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            pairs: Vec::new(),
            max_age: Duration::from_secs(120),
            refresh_interval: Duration::from_secs(30),
            quote_ttl: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            futures_window: Duration::from_secs(6000),
            futures_limit: "10000".into(),
            futures_limit_currency: "EUR".into(),
        }
    }
}

/// The latest mid price of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    pub rate: Rate,
    pub source: &'static str,
    pub fetched_at_ms: i64,
}

pub struct Rates {
    pub options: RatesOptions,
    client: reqwest::Client,
    latest: RwLock<HashMap<(String, String), Latest>>,
    /// Ages rates (the engine's clock).
    clock: Clock,
}

/// Kraken's names for some currencies.
fn kraken_symbol(code: &str) -> &str {
    match code {
        "BTC" => "XBT",
        "DOGE" => "XDG",
        other => other,
    }
}

fn rate_of(v: &Value, what: &str) -> Result<Rate, String> {
    // JSON numbers keep their source text (arbitrary precision), so no float is involved.
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(format!("{what} is missing or not a number")),
    };
    Rate::parse(&text).map_err(|e: RateError| format!("{what}: {e}"))
}

fn mid(ask: Rate, bid: Rate) -> Result<Rate, String> {
    if ask < bid {
        return Err(format!("crossed book: ask {ask} below bid {bid}"));
    }
    let sum = ask.scaled().checked_add(bid.scaled()).ok_or("price out of range")?;
    Rate::from_scaled(sum / 2).map_err(|e| e.to_string())
}

impl Rates {
    pub fn new(options: RatesOptions, clock: Clock) -> Result<Arc<Self>, EngineError> {
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .user_agent(concat!("Kassa/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EngineError::invalid("rates", format!("HTTP client: {e}")))?;
        Ok(Arc::new(Self { options, client, latest: RwLock::new(HashMap::new()), clock }))
    }

    pub fn pair(&self, from: &str, to: &str) -> Option<&PairConfig> {
        self.options.pairs.iter().find(|p| (p.base == from && p.quote == to) || (p.base == to && p.quote == from))
    }

    /// Asks one source for a pair's mid price.
    pub async fn fetch(&self, source: &Source, base: &str, quote: &str) -> Result<Rate, String> {
        match source {
            Source::Fixed { rates } => rates.get(&format!("{base}/{quote}")).copied().ok_or_else(|| format!("no fixed rate for {base}/{quote}")),
            Source::Kraken { base_url } => {
                let url = format!("{}/0/public/Ticker?pair={}{}", base_url.trim_end_matches('/'), kraken_symbol(base), kraken_symbol(quote));
                let body = self.get_json(&url).await?;
                if let Some(errors) = body["error"].as_array().filter(|e| !e.is_empty()) {
                    return Err(format!("kraken: {}", errors.iter().map(|e| e.as_str().unwrap_or("?")).collect::<Vec<_>>().join("; ")));
                }
                let result = body["result"].as_object().and_then(|r| r.values().next()).ok_or("kraken: no result")?;
                mid(rate_of(&result["a"][0], "kraken ask")?, rate_of(&result["b"][0], "kraken bid")?)
            }
            Source::Coinbase { base_url } => {
                let url = format!("{}/v2/prices/{base}-{quote}/spot", base_url.trim_end_matches('/'));
                let body = self.get_json(&url).await?;
                if body["data"]["base"].as_str() != Some(base) || body["data"]["currency"].as_str() != Some(quote) {
                    return Err(format!("coinbase answered for another pair: {}", body["data"]));
                }
                rate_of(&body["data"]["amount"], "coinbase amount")
            }
            Source::Binance { base_url } => {
                let url = format!("{}/api/v3/ticker/bookTicker?symbol={base}{quote}", base_url.trim_end_matches('/'));
                let body = self.get_json(&url).await?;
                if let Some(msg) = body["msg"].as_str() {
                    return Err(format!("binance: {msg}"));
                }
                mid(rate_of(&body["askPrice"], "binance ask")?, rate_of(&body["bidPrice"], "binance bid")?)
            }
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self.client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        let body: Value = serde_json::from_str(&text).map_err(|_| format!("{url}: HTTP {status}, not JSON"))?;
        if !status.is_success() && body.get("msg").is_none() && body.get("error").is_none() {
            return Err(format!("{url}: HTTP {status}"));
        }
        Ok(body)
    }

    /// Refreshes every pair from the first source that answers; returns the pairs
    /// that no source could price.
    pub async fn refresh(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for p in &self.options.pairs {
            let mut errors = Vec::new();
            let mut got = None;
            for s in &self.options.sources {
                match self.fetch(s, &p.base, &p.quote).await {
                    Ok(rate) => {
                        got = Some(Latest { rate, source: s.name(), fetched_at_ms: self.clock.now_ms() });
                        break;
                    }
                    Err(e) => errors.push(format!("{}: {e}", s.name())),
                }
            }
            let pair = format!("{}/{}", p.base, p.quote);
            match got {
                Some(l) => {
                    if !errors.is_empty() {
                        tracing::warn!(%pair, source = l.source, errors = ?errors, "rate taken from a fallback source");
                    }
                    metrics::gauge!("kassa_rate_age_seconds", "pair" => pair.clone()).set(0.0);
                    self.latest.write().expect("rates").insert((p.base.clone(), p.quote.clone()), l);
                }
                None => {
                    tracing::warn!(%pair, errors = ?errors, "no rate source answered");
                    failed.push(pair);
                }
            }
        }
        failed
    }

    /// The current mid rate for converting `from` into `to`, refused when stale.
    pub fn current(&self, from: &str, to: &str) -> Result<Latest, EngineError> {
        let p = self.pair(from, to).ok_or_else(|| EngineError::invalid("pair", format!("{from} → {to} is not an exchangeable pair")))?;
        let latest = self.latest.read().expect("rates").get(&(p.base.clone(), p.quote.clone())).cloned();
        let pair = format!("{}/{}", p.base, p.quote);
        let Some(l) = latest else {
            return Err(EngineError::RatesUnavailable(format!("no rate for {pair} yet")));
        };
        let age_ms = self.clock.now_ms() - l.fetched_at_ms;
        if age_ms > self.options.max_age.as_millis() as i64 {
            return Err(EngineError::RatesUnavailable(format!(
                "the rate for {pair} is stale ({} s old, the limit is {} s)",
                age_ms / 1000,
                self.options.max_age.as_secs()
            )));
        }
        if p.base == from {
            Ok(l)
        } else {
            Ok(Latest { rate: l.rate.inverse().map_err(|e| EngineError::invalid("rate", e))?, ..l })
        }
    }

    /// One refresh of every pair, with its metrics and warnings.
    pub async fn refresh_cycle(&self) {
        let failed = self.refresh().await;
        for (pair, l) in self.latest.read().expect("rates").iter() {
            let age = (self.clock.now_ms() - l.fetched_at_ms).max(0) as f64 / 1000.0;
            metrics::gauge!("kassa_rate_age_seconds", "pair" => format!("{}/{}", pair.0, pair.1)).set(age);
        }
        if !failed.is_empty() {
            tracing::warn!(pairs = ?failed, "rates not refreshed; quotes stop once they are older than the staleness limit");
        }
    }
}
