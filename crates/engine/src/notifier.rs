//! The notifier: delivers the outbox. It claims due deliveries with a lease (several
//! instances on one PostgreSQL never claim the same one), posts each in its format
//! with connect and response timeouts, and records every attempt. Any 2xx delivers;
//! `410 Gone` disables the endpoint; `429`/`503` with `Retry-After` are honoured;
//! anything else is retried on the format's schedule with jitter until it runs out.
//!
//! At-least-once: a notifier that dies mid-send leaves its lease to lapse, and the
//! delivery is sent again (same event id, same body). Concurrency is bounded overall
//! and per endpoint. Targets are checked against the SSRF policy right before each
//! attempt, and the HTTP client's resolver only connects to allowed addresses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kassa_core::events::{next_step, parse_retry_after, AttemptOutcome, STANDARD_FORMAT};
use kassa_core::ledger::MerchantId;
use kassa_store::{Attempt, AttemptResult, ClaimedDelivery, EndpointRow};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::notifications::{signing_keys};
use crate::webhooks::{self, TargetPolicy};
use crate::withdrawals::crash_point;
use crate::worker::{self, Pace, Worker};
use crate::{Engine, EngineError};

/// How the notifier works.
#[derive(Clone, Debug)]
pub struct NotifierOptions {
    pub connect_timeout: Duration,
    /// Time for the receiver to answer (status line and headers).
    pub response_timeout: Duration,
    pub poll_interval: Duration,
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: usize,
    /// Retries are spread by up to this share of their delay.
    pub jitter_percent: u32,
    /// Delays before each retry, per format (the format's default when absent).
    pub retry_schedule_secs: BTreeMap<String, Vec<u64>>,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(15),
            poll_interval: Duration::from_millis(500),
            max_in_flight: 64,
            max_in_flight_per_endpoint: 4,
            jitter_percent: 10,
            retry_schedule_secs: BTreeMap::new(),
        }
    }
}

impl NotifierOptions {
    /// The retry schedule of `format`: configured, or the format's default (an
    /// unknown format gets Kassa's own).
    pub fn schedule(&self, format: &str, formats: &crate::callbacks::CallbackFormats) -> Vec<u64> {
        self.retry_schedule_secs.get(format).cloned().unwrap_or_else(|| {
            formats.default_retry_schedule_secs(format).unwrap_or_else(|| kassa_core::events::STANDARD_RETRY_SCHEDULE_SECS.to_vec())
        })
    }
}

/// What a pass delivered (tests and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyReport {
    pub attempted: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// Most deliveries claimed per query.
const CLAIM_BATCH: usize = 100;
/// Most bytes of a receiver's answer kept for the attempt log.
const MAX_ANSWER_EXCERPT: usize = 512;

pub struct Notifier {
    engine: Engine,
    client: reqwest::Client,
    opts: NotifierOptions,
    global: Arc<Semaphore>,
    per_target: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Deliveries being attempted by this process (a lapsed lease re-claimed by the
    /// same process must not be sent twice at once).
    in_flight: Arc<Mutex<HashSet<i64>>>,
    claims: AtomicU64,
    /// Attempts to record, with where to say whether the claim still held.
    recorder: mpsc::Sender<RecordRequest>,
}

type RecordRequest = ((Attempt, String), oneshot::Sender<Result<bool, String>>);

/// Attempts waiting to be recorded (bounded; senders wait when it is full).
const RECORD_QUEUE: usize = 1024;
/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 256;

/// Records attempts as they finish, those waiting together in one transaction (one
/// commit instead of one per delivery); ends when the notifier is dropped.
async fn record_attempts(store: kassa_store::Store, mut queue: mpsc::Receiver<RecordRequest>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (attempts, replies): (Vec<(Attempt, String)>, Vec<_>) = batch.into_iter().unzip();
        match store.record_attempts(&attempts).await {
            Ok(held) => {
                for (reply, held) in replies.into_iter().zip(held) {
                    let _ = reply.send(Ok(held));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Removes a delivery from the in-flight set when its attempt ends, however it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<i64>>>,
    id: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().expect("in-flight set").remove(&self.id);
    }
}

/// The permits an attempt holds while it runs.
struct Slot {
    _global: OwnedSemaphorePermit,
    _target: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// Resolves callback hosts and keeps only addresses the SSRF policy allows, so a
/// connection can only go where the check before the attempt said it may.
struct GuardedResolver {
    policy: TargetPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| webhooks::forbidden_kind(a.ip(), policy).is_none()).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address callbacks may go to").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What the receiver did.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    excerpt: String,
}

impl Notifier {
    pub fn new(engine: Engine, opts: NotifierOptions) -> Result<Arc<Self>, EngineError> {
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: engine.target_policy }))
            .user_agent(concat!("Kassa-Notifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EngineError::invalid("notifications", format!("HTTP client: {e}")))?;
        let (recorder, queue) = mpsc::channel(RECORD_QUEUE);
        tokio::spawn(record_attempts(engine.store.clone(), queue));
        Ok(Arc::new(Self {
            recorder,
            global: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
            per_target: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            claims: AtomicU64::new(0),
            engine,
            client,
            opts,
        }))
    }

    /// Delivers until `shutdown` turns true (every instance runs one; claims keep
    /// them apart); in-flight attempts get the response timeout to finish, after which
    /// their leases lapse and they are sent again later.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        // The relay wakes it when it has created deliveries; retries and other
        // instances' deliveries are found by polling.
        let wake = Some(self.engine.store.wakes().deliveries.clone());
        let pace = Pace { name: format!("notifier@{}", self.engine.instance), interval: self.opts.poll_interval, lease: None, wake };
        let never = Instant::now() - Duration::from_secs(60);
        let worker = Dispatching { notifier: self.clone(), tasks: JoinSet::new(), last_sweep: never, last_metrics: never };
        worker::run(self.engine.clone(), pace, worker, shutdown).await
    }

    /// Relays what was committed, claims what is due now and delivers it, waiting for
    /// every attempt (tests and one-off runs); returns what happened.
    pub async fn run_once(&self) -> Result<NotifyReport, EngineError> {
        self.engine.relay_events().await?;
        let mut attempts = Vec::new();
        for d in self.claim(self.global.available_permits().min(CLAIM_BATCH)).await? {
            if let Some(slot) = self.slot(&d).await? {
                attempts.push(self.deliver(d, slot));
            }
        }
        let mut report = NotifyReport::default();
        for delivered in futures_util::future::join_all(attempts).await {
            report.attempted += 1;
            if delivered {
                report.delivered += 1;
            } else {
                report.failed += 1;
            }
        }
        Ok(report)
    }

    /// Claims what is due (as many as there are free slots) and starts the attempts;
    /// true when that filled every free slot (more may be due).
    async fn dispatch(self: &Arc<Self>, tasks: &mut JoinSet<bool>) -> Result<bool, EngineError> {
        let free = self.global.available_permits().min(CLAIM_BATCH);
        let claimed = self.claim(free).await?;
        let full = free > 0 && claimed.len() == free;
        for d in claimed {
            if let Some(slot) = self.slot(&d).await? {
                let this = self.clone();
                tasks.spawn(async move { this.deliver(d, slot).await });
            }
        }
        Ok(full)
    }

    /// Claims up to `free` due deliveries.
    async fn claim(&self, free: usize) -> Result<Vec<ClaimedDelivery>, EngineError> {
        if free == 0 {
            return Ok(Vec::new());
        }
        // Covers one attempt (resolution, answer, its excerpt) and recording it; a dead
        // instance's claims lapse after this and are sent again.
        let lease = self.opts.connect_timeout + self.opts.response_timeout + Duration::from_secs(10);
        let claim = format!("{}#{}", self.engine.instance, self.claims.fetch_add(1, Ordering::Relaxed));
        Ok(self.engine.store.claim_deliveries(&claim, self.engine.now_ms() + lease.as_millis() as i64, free as u32).await?)
    }

    /// Permits for an attempt: global, per endpoint, and not already running here.
    /// Without them the delivery goes back, due again a little later, so that one busy
    /// endpoint does not keep other merchants' deliveries waiting.
    async fn slot(&self, d: &ClaimedDelivery) -> Result<Option<Slot>, EngineError> {
        let key = match d.endpoint_id {
            Some(id) => format!("endpoint:{id}"),
            None => url::Url::parse(&d.url).map(|u| format!("origin:{}", u.origin().ascii_serialization())).unwrap_or_else(|_| d.url.clone()),
        };
        let target = {
            let mut map = self.per_target.lock().expect("per-target limits");
            if map.len() > 10_000 {
                map.retain(|_, s| s.available_permits() < self.opts.max_in_flight_per_endpoint.max(1));
            }
            map.entry(key).or_insert_with(|| Arc::new(Semaphore::new(self.opts.max_in_flight_per_endpoint.max(1)))).clone()
        };
        let fresh = self.in_flight.lock().expect("in-flight set").insert(d.id);
        let slot = match (fresh, target.try_acquire_owned(), self.global.clone().try_acquire_owned()) {
            (true, Ok(t), Ok(g)) => Some(Slot { _global: g, _target: t, _in_flight: InFlight { set: self.in_flight.clone(), id: d.id } }),
            (fresh, _, _) => {
                if fresh {
                    self.in_flight.lock().expect("in-flight set").remove(&d.id);
                }
                None
            }
        };
        if slot.is_none() {
            let later = self.engine.now_ms() + self.opts.poll_interval.max(Duration::from_secs(1)).as_millis() as i64;
            self.engine.store.release_delivery(d.id, &d.claim, later).await?;
        }
        Ok(slot)
    }

    /// One attempt of one delivery; true when delivered.
    async fn deliver(&self, d: ClaimedDelivery, slot: Slot) -> bool {
        let attempted_at_ms = self.engine.now_ms();
        let started = Instant::now();
        let attempt_no = u32::try_from(d.attempts).unwrap_or(0) + 1;
        let format = d.format.clone();
        let format = format.as_str();
        let endpoint = d.endpoint.as_ref();
        let body = match &d.body {
            Some(b) => Ok(b.clone()),
            None if format == STANDARD_FORMAT => self.engine.standard_body(&d.event).await,
            None => self.engine.render(format, &d.event).map(|r| r.body),
        };
        let (sent, result) = match (endpoint, body) {
            (Some(e), Ok(_)) if e.status != "active" => {
                (None, Err(format!("endpoint disabled: {}", e.disabled_reason.as_deref().unwrap_or("by the merchant"))))
            }
            (_, Err(e)) => (None, Err(format!("cannot render the event: {e}"))),
            (_, Ok(body)) => {
                crash_point("before_delivery");
                let r = self.send(format, &d, endpoint, &body).await;
                (Some(body), r)
            }
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        // The request is over: its slots go to the next deliveries while this attempt
        // waits to be recorded (it stays in flight here until then).
        let Slot { _global, _target, _in_flight } = slot;
        drop((_global, _target));
        let permanent = result.as_ref().err().is_some_and(|e| e.starts_with("endpoint disabled") || e.starts_with("cannot render"));
        let (status, retry_after, error) = match &result {
            Ok(a) if (200..300).contains(&a.status) => (Some(a.status), None, None),
            Ok(a) => (Some(a.status), a.retry_after, Some(format!("HTTP {}{}", a.status, if a.excerpt.is_empty() { String::new() } else { format!(": {}", a.excerpt) }))),
            Err(e) => (None, None, Some(e.clone())),
        };
        let outcome = if permanent {
            AttemptOutcome::GiveUp
        } else {
            let jitter: f64 = rand::thread_rng().gen();
            next_step(&self.opts.schedule(format, &self.engine.callbacks), attempt_no, status, retry_after, self.opts.jitter_percent, jitter)
        };
        let result = match outcome {
            AttemptOutcome::Delivered => AttemptResult::Delivered,
            AttemptOutcome::Gone => AttemptResult::Gone,
            AttemptOutcome::RetryAfter(after) => AttemptResult::Retry { next_attempt_at_ms: self.engine.now_ms() + after.as_millis() as i64 },
            AttemptOutcome::GiveUp => AttemptResult::Failed,
        };
        let label = match &result {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Retry { .. } => "retry",
            AttemptResult::Failed => "failed",
            AttemptResult::Gone => "gone",
        };
        metrics::histogram!("kassa_webhook_attempt_seconds", "format" => format.to_string(), "outcome" => label).record(latency_ms as f64 / 1000.0);
        metrics::counter!("kassa_webhook_attempts_total", "format" => format.to_string(), "outcome" => label).increment(1);
        if result == AttemptResult::Delivered {
            let age = (self.engine.now_ms() - d.event.created_at_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("kassa_webhook_delivery_latency_seconds", "format" => format.to_string()).record(age);
        }
        let attempt = Attempt {
            delivery_id: d.id,
            instance: self.engine.instance.to_string(),
            attempted_at_ms,
            status_code: status,
            latency_ms,
            error: error.clone(),
            body: sent,
            endpoint_id: d.endpoint_id,
            result: result.clone(),
        };
        match self.record(attempt, &d.claim).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(delivery = d.id, "the delivery's lease ran out during the attempt; another notifier has it"),
            Err(e) => tracing::error!(delivery = d.id, error = %e, "cannot record a delivery attempt; it will be sent again"),
        }
        let (event, url) = (&d.event.public_id, &d.url);
        match &result {
            AttemptResult::Delivered => tracing::info!(delivery = d.id, event = %event, event_type = %d.event.event_type,
                format, %url, attempt = attempt_no, status = ?status, latency_ms, "callback delivered"),
            AttemptResult::Retry { next_attempt_at_ms } => tracing::warn!(delivery = d.id, event = %event, format, %url,
                attempt = attempt_no, status = ?status, latency_ms, error = ?error,
                retry_at = %crate::timefmt::format_ms(*next_attempt_at_ms), "callback not delivered; will retry"),
            // The merchant's own decision, not a fault: said once per skipped delivery, at info.
            AttemptResult::Failed if error.as_deref().is_some_and(|e| e.starts_with("endpoint disabled")) => tracing::info!(
                delivery = d.id, event = %event, format, %url, error = ?error, "callback not sent: its endpoint is disabled"),
            AttemptResult::Failed => tracing::error!(delivery = d.id, event = %event, format, %url, attempt = attempt_no,
                status = ?status, error = ?error, "callback failed for good (redeliver it once the receiver is fixed)"),
            AttemptResult::Gone => tracing::warn!(delivery = d.id, event = %event, %url, "receiver answered 410 Gone; its endpoint is disabled"),
        }
        result == AttemptResult::Delivered
    }

    /// Records an attempt: with others finishing at the same time, in one transaction
    /// (a `Gone` on its own, as it disables the endpoint).
    async fn record(&self, attempt: Attempt, claim: &str) -> Result<bool, String> {
        if attempt.result == AttemptResult::Gone {
            return self.engine.store.record_attempt(&attempt, claim).await.map_err(|e| e.to_string());
        }
        let (done, recorded) = oneshot::channel();
        self.recorder.send(((attempt, claim.to_string()), done)).await.map_err(|_| "the attempt recorder has stopped".to_string())?;
        recorded.await.map_err(|_| "the attempt recorder has stopped".to_string())?
    }

    /// Posts one callback; Err is an attempt without an HTTP answer.
    async fn send(&self, format: &str, d: &ClaimedDelivery, endpoint: Option<&EndpointRow>, body: &str) -> Result<Answer, String> {
        let (url, _) = tokio::time::timeout(self.opts.connect_timeout, webhooks::resolve_target(&d.url, self.engine.target_policy))
            .await
            .map_err(|_| format!("resolving the callback host took longer than {} ms", self.opts.connect_timeout.as_millis()))?
            .map_err(|e| format!("refused: {e}"))?;
        let dialect_format = if format == STANDARD_FORMAT {
            None
        } else {
            Some(self.engine.callbacks.get(format).ok_or_else(|| format!("no callback format {format:?} is registered"))?)
        };
        let content_type = dialect_format.map_or("application/json", |f| f.content_type());
        let mut req = self.client.post(url).header("content-type", content_type).body(body.to_string());
        match dialect_format {
            None => {
                let e = endpoint.ok_or("a standard delivery needs its endpoint")?;
                let keys = signing_keys(&self.engine, e).map_err(|e| format!("cannot read the endpoint's secret: {e}"))?;
                if keys.is_empty() {
                    return Err("the endpoint has no signing secret".into());
                }
                let ts = self.engine.now_ms() / 1000;
                req = req
                    .header("webhook-id", &d.event.public_id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", webhooks::standard_signature(&keys, &d.event.public_id, ts, body.as_bytes()));
            }
            Some(f) => {
                if let Some(key_dialect) = f.signing_key() {
                    let (public, secret) = self.signing_key(MerchantId(d.event.merchant_id), key_dialect).await?;
                    for (name, value) in f.signature_headers(&public, &secret, body.as_bytes()) {
                        req = req.header(name, value);
                    }
                }
            }
        }
        let resp = match tokio::time::timeout(self.opts.response_timeout, req.send()).await {
            Err(_) => return Err(format!("no answer within {} ms", self.opts.response_timeout.as_millis())),
            Ok(Err(e)) => return Err(describe(&e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.engine.now_ms() / 1000));
        let mut excerpt = String::new();
        if !(200..300).contains(&status) {
            if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(2), resp.bytes()).await {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ANSWER_EXCERPT)]);
                excerpt = text.chars().filter(|c| !c.is_control()).collect();
            }
        }
        Ok(Answer { status, retry_after, excerpt })
    }

    /// The merchant's newest active API key of `dialect`: its public key and secret.
    async fn signing_key(&self, merchant: MerchantId, dialect: &str) -> Result<(String, Vec<u8>), String> {
        let keys = self.engine.store.list_api_keys(merchant).await.map_err(|e| e.to_string())?;
        let key = keys
            .into_iter()
            .filter(|k| k.dialect == dialect && k.revoked_at_ms.is_none())
            .max_by_key(|k| k.id)
            .ok_or_else(|| format!("the merchant has no active {dialect} API key to sign callbacks with"))?;
        match (&key.secret_nonce, &key.secret_ciphertext) {
            (Some(n), Some(c)) => Ok((key.public_key, self.engine.master_key.decrypt(n, c).map_err(|e| e.to_string())?)),
            _ => Err(format!("the {dialect} key has no secret")),
        }
    }

    async fn update_backlog_metrics(&self) {
        if let Ok((pending, oldest)) = self.engine.store.delivery_backlog().await {
            metrics::gauge!("kassa_webhook_backlog").set(pending as f64);
            let age = oldest.map(|t| (self.engine.now_ms() - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
            metrics::gauge!("kassa_webhook_oldest_undelivered_seconds").set(age);
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        format!("connection failed: {text}")
    } else if e.is_timeout() {
        format!("timed out: {text}")
    } else {
        text
    }
}

/// The notifier's cycle: claim what is due and start its attempts; now and then look
/// for unreported status changes and update the backlog gauges.
struct Dispatching {
    notifier: Arc<Notifier>,
    tasks: JoinSet<bool>,
    last_sweep: Instant,
    last_metrics: Instant,
}

impl Worker for Dispatching {
    async fn cycle(&mut self) {
        let n = &self.notifier;
        if self.last_sweep.elapsed() >= Duration::from_secs(10) {
            self.last_sweep = Instant::now();
            match n.engine.store.report_pending_changes().await {
                Ok(0) => {}
                Ok(count) => tracing::warn!(events = count, "wrote events for status changes no transaction had reported"),
                Err(e) => tracing::warn!(error = %e, "cannot look for unreported status changes"),
            }
        }
        if self.last_metrics.elapsed() >= Duration::from_secs(2) {
            self.last_metrics = Instant::now();
            n.update_backlog_metrics().await;
        }
        // While there is a backlog, claim again as slots free up (for at most a
        // second, then the loop looks at shutdown), instead of waiting a poll interval.
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let more = match n.dispatch(&mut self.tasks).await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim deliveries; retrying");
                    false
                }
            };
            while self.tasks.try_join_next().is_some() {}
            let left = until.saturating_duration_since(Instant::now());
            if !more || left.is_zero() {
                break;
            }
            // Claim again once a quarter of the slots are free (attempts are recorded in
            // batches, so they tend to finish together), or after a few milliseconds:
            // one claim per freed slot would cost more queries than the deliveries.
            let quarter = (n.opts.max_in_flight / 4).clamp(1, CLAIM_BATCH);
            let gather = Instant::now() + Duration::from_millis(5).min(left);
            while n.global.available_permits() < quarter {
                match tokio::time::timeout_at(gather.into(), self.tasks.join_next()).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    async fn stop(&mut self) {
        let grace = self.notifier.opts.response_timeout + self.notifier.opts.connect_timeout;
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Starts the notifier; it stops when `shutdown` turns true.
pub fn spawn_notifier(engine: &Engine, opts: NotifierOptions, shutdown: watch::Receiver<bool>) -> Result<tokio::task::JoinHandle<()>, EngineError> {
    let n = Notifier::new(engine.clone(), opts)?;
    Ok(tokio::spawn(n.run(shutdown)))
}
