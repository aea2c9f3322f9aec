//! Notifications as merchants and operators handle them: webhook endpoints (with
//! secret rotation), the events pull API, deliveries and their attempts, redelivery.
//! Event bodies are rendered in `event_bodies`. The outbox itself is written
//! by the store in the transaction of each state change; `notifier` delivers it.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kassa_core::events::{parse_subscription, STANDARD_FORMAT};
use kassa_core::ledger::MerchantId;
use kassa_store::{AttemptRow, DeliveryQuery, DeliveryRow, EndpointRow, EventRow, NewEndpoint, NewEvent};
use serde::Serialize;
use serde_json::{json, Value};

use crate::timefmt::format_ms;
use crate::webhooks::{self, TargetPolicy, SECRET_PREFIX};
use crate::{Engine, EngineError};

/// Which API created an object, and where that object's own callbacks go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The dialect's name (`native` for Kassa's own API).
    pub dialect: String,
    /// A callback URL given with the object (e.g. an `ipn_url`); checked against the
    /// SSRF policy before it is stored.
    pub callback_url: Option<String>,
}

impl Origin {
    pub fn native() -> Self {
        Origin { dialect: "native".into(), callback_url: None }
    }
}

impl Default for Origin {
    fn default() -> Self {
        Origin::native()
    }
}

/// A webhook endpoint as merchants see it (never its secret).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: i64,
    pub url: String,
    /// standard: Kassa's own webhooks (JSON, Standard Webhooks signatures; every event of
    /// the merchant it subscribes to). The dialect formats receive the events of objects
    /// created through that API which carry no callback URL of their own.
    #[schema(schema_with = crate::schemas::callback_format)]
    pub format: String,
    /// Subscribed event types: * (all), a type such as deposit.credited, or a prefix
    /// such as deposit.*
    pub events: Vec<String>,
    #[schema(schema_with = crate::schemas::endpoint_status)]
    pub status: String,
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    /// While a rotated-out secret still signs (every delivery carries both signatures).
    #[schema(format = DateTime, required = true)]
    pub previous_secret_valid_until: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Events raised while it was disabled that it was not sent: once it is enabled,
    /// a redelivery of their time range sends them. No delivery is recorded for each.
    pub missed_events: i64,
    /// When the first of them was raised.
    #[schema(format = DateTime, required = true)]
    pub missed_since: Option<String>,
}

/// An endpoint with its signing secret, shown once (at creation and rotation).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_…` (Standard Webhooks). A dialect's callbacks are signed as its
    /// callback format says (with the merchant's key for that dialect, or not at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A delivery as merchants and operators see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    #[schema(schema_with = crate::schemas::event_type)]
    pub event_type: String,
    #[schema(required = true)]
    pub endpoint_id: Option<i64>,
    #[schema(schema_with = crate::schemas::callback_format)]
    pub format: String,
    pub url: String,
    #[schema(schema_with = crate::schemas::delivery_status)]
    pub status: String,
    pub attempts: i32,
    #[schema(format = DateTime, required = true)]
    pub next_attempt_at: Option<String>,
    #[schema(required = true)]
    pub last_status_code: Option<i32>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub delivered_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One attempt to deliver.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptView {
    #[schema(format = DateTime)]
    pub at: String,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub instance: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The exact body sent (every attempt sends the same bytes).
    #[schema(required = true)]
    pub body: Option<String>,
    pub attempt_log: Vec<AttemptView>,
}

/// A callback body ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: String,
    pub content_type: &'static str,
}

/// Longest callback URL accepted.
const MAX_URL_LEN: usize = 2000;
/// Most endpoints per merchant.
const MAX_ENDPOINTS: usize = 20;

fn endpoint_view(r: &EndpointRow, now_ms: i64) -> Endpoint {
    Endpoint {
        id: r.id,
        url: r.url.clone(),
        format: r.format.clone(),
        events: r.event_types.split(',').map(str::to_string).collect(),
        status: r.status.clone(),
        disabled_reason: r.disabled_reason.clone(),
        previous_secret_valid_until: r.previous_secret_until_ms.filter(|t| *t > now_ms).map(format_ms),
        created_at: format_ms(r.created_at_ms),
        missed_events: r.missed_events,
        missed_since: r.missed_since_ms.map(format_ms),
    }
}

fn delivery_view(d: DeliveryRow) -> Delivery {
    Delivery {
        id: d.id,
        event_id: d.event_public_id,
        event_type: d.event_type,
        endpoint_id: d.endpoint_id,
        format: d.format,
        url: d.url,
        next_attempt_at: (d.status == "pending").then(|| format_ms(d.next_attempt_at_ms)),
        status: d.status,
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        delivered_at: d.delivered_at_ms.map(format_ms),
        created_at: format_ms(d.created_at_ms),
    }
}

fn new_secret() -> (String, Vec<u8>) {
    let mut key = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    (format!("{SECRET_PREFIX}{}", B64.encode(key)), key.to_vec())
}

impl Engine {
    /// Checks a callback URL before it is stored: its form, and every address it
    /// resolves to (no loopback, private, link-local or metadata targets).
    pub async fn check_callback_url(&self, url: &str) -> Result<String, EngineError> {
        let url = url.trim();
        if url.len() > MAX_URL_LEN {
            return Err(EngineError::invalid("url", format!("at most {MAX_URL_LEN} characters")));
        }
        let (parsed, _) = webhooks::resolve_target(url, self.target_policy).await.map_err(|e| EngineError::invalid("url", e))?;
        Ok(parsed.to_string())
    }

    pub async fn create_endpoint(&self, merchant: MerchantId, url: &str, format: &str, events: &[String]) -> Result<EndpointWithSecret, EngineError> {
        if !self.callbacks.knows(format) {
            return Err(EngineError::invalid("format", format!("must be one of {}", self.callbacks.names().join(", "))));
        }
        let event_types = parse_subscription(events).map_err(|m| EngineError::invalid("events", m))?;
        if format != STANDARD_FORMAT && event_types != "*" {
            return Err(EngineError::invalid("events", "only standard endpoints choose their events; dialect formats report what their API defines"));
        }
        if self.store.webhook_endpoints(merchant).await?.iter().filter(|e| e.status == "active").count() >= MAX_ENDPOINTS {
            return Err(EngineError::LimitReached(format!("at most {MAX_ENDPOINTS} active webhook endpoints per merchant")));
        }
        let url = self.check_callback_url(url).await?;
        let (secret, stored) = if format == STANDARD_FORMAT {
            let (text, key) = new_secret();
            (Some(text), Some(self.master_key.encrypt(&key)))
        } else {
            (None, None)
        };
        let row = self
            .store
            .insert_webhook_endpoint(&NewEndpoint { merchant, url, format: format.into(), event_types, secret: stored })
            .await?;
        tracing::info!(merchant = merchant.0, endpoint = row.id, format, url = %row.url, "webhook endpoint registered");
        Ok(EndpointWithSecret { endpoint: endpoint_view(&row, self.now_ms()), secret })
    }

    pub async fn endpoints(&self, merchant: MerchantId) -> Result<Vec<Endpoint>, EngineError> {
        Ok(self.store.webhook_endpoints(merchant).await?.iter().map(|r| endpoint_view(r, self.now_ms())).collect())
    }

    async fn own_endpoint(&self, merchant: MerchantId, id: i64) -> Result<EndpointRow, EngineError> {
        match self.store.webhook_endpoint(id).await? {
            Some(e) if e.merchant_id == merchant.0 => Ok(e),
            _ => Err(EngineError::NotFound("webhook endpoint")),
        }
    }

    /// A new secret for a standard endpoint; the old one keeps signing (a second
    /// signature on every delivery) for `overlap`, so receivers can switch without loss.
    pub async fn rotate_endpoint_secret(&self, merchant: MerchantId, id: i64, overlap: Duration) -> Result<EndpointWithSecret, EngineError> {
        let e = self.own_endpoint(merchant, id).await?;
        if e.format != STANDARD_FORMAT {
            return Err(EngineError::invalid("format", "only standard endpoints have their own secret"));
        }
        if overlap > Duration::from_secs(7 * 86_400) {
            return Err(EngineError::invalid("overlap_secs", "at most 604800 (7 days)"));
        }
        let (text, key) = new_secret();
        self.store.rotate_endpoint_secret(id, self.master_key.encrypt(&key), self.now_ms() + overlap.as_millis() as i64).await?;
        tracing::info!(merchant = merchant.0, endpoint = id, overlap_secs = overlap.as_secs(), "webhook secret rotated");
        let row = self.own_endpoint(merchant, id).await?;
        Ok(EndpointWithSecret { endpoint: endpoint_view(&row, self.now_ms()), secret: Some(text) })
    }

    /// Enables (e.g. after a `410 Gone`) or disables an endpoint; disabling fails its
    /// pending deliveries (redeliver them after enabling it again).
    pub async fn set_endpoint_enabled(&self, merchant: MerchantId, id: i64, enabled: bool) -> Result<Endpoint, EngineError> {
        let e = self.own_endpoint(merchant, id).await?;
        if enabled {
            // The target is checked again: DNS may have changed since registration.
            self.check_callback_url(&e.url).await?;
        }
        self.store.set_endpoint_status(id, enabled, (!enabled).then_some("disabled by the merchant")).await?;
        Ok(endpoint_view(&self.own_endpoint(merchant, id).await?, self.now_ms()))
    }

    /// Fails when an endpoint or a pending delivery uses a callback format no
    /// registered dialect provides (a dialect removed from the build, a typo in a
    /// manual edit): it would never be delivered.
    pub async fn check_stored_callback_formats(&self) -> Result<(), EngineError> {
        for (format, endpoints, deliveries) in self.store.callback_formats_in_use().await? {
            if !self.callbacks.knows(&format) {
                return Err(EngineError::invalid(
                    "format",
                    format!("{endpoints} webhook endpoint(s) and {deliveries} pending deliveries use callback format {format:?}, which no dialect provides (known: {})",
                        self.callbacks.names().join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Sends a `webhook.test` event to one endpoint; returns the event's id.
    pub async fn send_test_event(&self, merchant: MerchantId, id: i64) -> Result<String, EngineError> {
        let e = self.own_endpoint(merchant, id).await?;
        if e.status != "active" {
            return Err(EngineError::Conflict("the endpoint is disabled; enable it first".into()));
        }
        if e.format != STANDARD_FORMAT {
            return Err(EngineError::invalid("format", format!("{} callbacks have no test event; test events go to standard endpoints", e.format)));
        }
        let ids = self
            .store
            .insert_events(vec![NewEvent {
                merchant_id: merchant.0,
                event_type: "webhook.test".into(),
                object_kind: "webhook_endpoint".into(),
                object_id: id,
                origin: "native".into(),
                callback_url: None,
                data: json!({"endpoint_id": id, "message": "a test event from Kassa"}),
                only_endpoint: Some(id),
            }])
            .await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    /// Events of a merchant after sequence number `after`, oldest first, each as
    /// Kassa's own webhooks deliver it: a merchant back from downtime reconciles here.
    pub async fn events_after(&self, merchant: MerchantId, after: i64, limit: u32) -> Result<Vec<Value>, EngineError> {
        let rows = self.store.events_after(merchant, after, limit).await?;
        let mut out = Vec::with_capacity(rows.len());
        for e in &rows {
            out.push(serde_json::from_str(&self.standard_body(e).await?).map_err(|err| EngineError::invalid("event", err))?);
        }
        Ok(out)
    }

    /// An event as Kassa's own webhooks carry it: rendered once, then frozen, so that
    /// what is pulled is byte for byte what was delivered, whatever changes later.
    pub async fn standard_body(&self, e: &EventRow) -> Result<String, EngineError> {
        if let Some(body) = &e.standard_body {
            return Ok(body.clone());
        }
        let body = self.render(STANDARD_FORMAT, e)?.body;
        Ok(self.store.freeze_standard_body(e.id, &body).await?)
    }

    pub async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<Delivery>, EngineError> {
        Ok(self.store.deliveries(&query).await?.into_iter().map(delivery_view).collect())
    }

    /// One delivery with its body and every attempt (of `merchant`'s, when given).
    pub async fn delivery(&self, merchant: Option<MerchantId>, id: i64) -> Result<DeliveryDetail, EngineError> {
        let d = match self.store.delivery(id).await? {
            Some(d) if merchant.is_none_or(|m| m.0 == d.merchant_id) => d,
            _ => return Err(EngineError::NotFound("delivery")),
        };
        let attempts: Vec<AttemptRow> = self.store.delivery_attempts(id).await?;
        Ok(DeliveryDetail {
            body: self.store.delivery_body(id).await?,
            delivery: delivery_view(d),
            attempt_log: attempts
                .into_iter()
                .map(|a| AttemptView { at: format_ms(a.attempted_at_ms), status_code: a.status_code, latency_ms: a.latency_ms, error: a.error, instance: a.instance })
                .collect(),
        })
    }

    /// Sends every delivery of one event again, now (same event id, same body).
    pub async fn redeliver_event(&self, merchant: Option<MerchantId>, event_public_id: &str) -> Result<u64, EngineError> {
        let e = match self.store.event_by_public_id(event_public_id).await? {
            Some(e) if merchant.is_none_or(|m| m.0 == e.merchant_id) => e,
            _ => return Err(EngineError::NotFound("event")),
        };
        let n = self.store.redeliver_event(e.id).await?;
        tracing::info!(event = event_public_id, deliveries = n, "redelivery requested");
        Ok(n)
    }

    /// Sends every failed delivery created in [from_ms, to_ms) again, and the events
    /// of that range endpoints missed while they were disabled.
    pub async fn redeliver_failed(&self, merchant: Option<MerchantId>, from_ms: i64, to_ms: i64) -> Result<u64, EngineError> {
        if from_ms >= to_ms {
            return Err(EngineError::invalid("from", "must be before to"));
        }
        let n = self.store.redeliver_failed(merchant, from_ms, to_ms).await? + self.store.deliver_missed(merchant, from_ms, to_ms).await?;
        tracing::info!(merchant = ?merchant.map(|m| m.0), from = %format_ms(from_ms), to = %format_ms(to_ms), deliveries = n, "redelivery of failed deliveries requested");
        Ok(n)
    }
}

/// The keys that sign a standard endpoint's deliveries now: its secret, and the
/// rotated-out one while its overlap lasts.
pub(crate) fn signing_keys(engine: &Engine, e: &EndpointRow) -> Result<Vec<Vec<u8>>, EngineError> {
    let mut keys = Vec::new();
    if let (Some(n), Some(c)) = (&e.secret_nonce, &e.secret_ciphertext) {
        keys.push(engine.master_key.decrypt(n, c)?);
    }
    if let (Some(n), Some(c), Some(until)) = (&e.previous_secret_nonce, &e.previous_secret_ciphertext, e.previous_secret_until_ms) {
        if until > engine.now_ms() {
            keys.push(engine.master_key.decrypt(n, c)?);
        }
    }
    Ok(keys)
}

impl TargetPolicy {
    /// The development policy (loopback receivers allowed).
    pub fn development() -> Self {
        TargetPolicy { allow_loopback: true }
    }
}
