//! The notification outbox: events written in the transaction that changes the state
//! they report, one delivery per callback target, claimed by notifiers with a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL), and every attempt logged.
//!
//! Deposits and withdrawals carry the status last reported (`reported_status`); every
//! transaction that changes a status ends with `report_changes!`, which writes the
//! events for rows whose status differs and marks them reported, in that transaction.

use std::collections::HashMap;

use std::sync::Arc;

use kassa_core::deposit::DepositStatus;
use kassa_core::events::{self, CallbackRoute, STANDARD_FORMAT};
use kassa_core::ledger::MerchantId;
use serde_json::json;

use crate::{on_pool, parse_units, Db, Result, Store, StoreError};

/// An event to write.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub merchant_id: i64,
    pub event_type: String,
    pub object_kind: String,
    pub object_id: i64,
    /// The API dialect the object was created through (`native`, `westwallet`, …).
    pub origin: String,
    /// The object's own callback URL (WestWallet's `ipn_url`), if any.
    pub callback_url: Option<String>,
    /// A snapshot of the object as it is now (amounts in units).
    pub data: serde_json::Value,
    /// Deliver to this endpoint only (test events).
    pub only_endpoint: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub public_id: String,
    pub merchant_id: i64,
    pub seq: i64,
    pub event_type: String,
    pub object_kind: String,
    pub object_id: i64,
    pub origin: String,
    pub data: serde_json::Value,
    /// Kassa's own webhook body once rendered (frozen).
    pub standard_body: Option<String>,
    pub created_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct EventRecord {
    id: i64,
    public_id: String,
    merchant_id: i64,
    seq: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    object_kind: String,
    object_id: i64,
    origin: String,
    data: String,
    standard_body: Option<String>,
    created_at_ms: i64,
}

impl EventRecord {
    fn row(self) -> Result<EventRow> {
        let data = serde_json::from_str(&self.data).map_err(|e| crate::StoreError::Corrupt(format!("event {} data: {e}", self.id)))?;
        Ok(EventRow {
            id: self.id,
            public_id: self.public_id,
            merchant_id: self.merchant_id,
            seq: self.seq,
            event_type: self.event_type,
            object_kind: self.object_kind,
            object_id: self.object_id,
            origin: self.origin,
            data,
            standard_body: self.standard_body,
            created_at_ms: self.created_at_ms,
        })
    }
}

const EVENT_COLUMNS: &str = "SELECT id, public_id, merchant_id, seq, type, object_kind, object_id, origin, data, standard_body, created_at_ms FROM events";

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: i64,
    pub merchant_id: i64,
    pub url: String,
    pub format: String,
    pub event_types: String,
    pub secret_nonce: Option<Vec<u8>>,
    pub secret_ciphertext: Option<Vec<u8>>,
    pub previous_secret_nonce: Option<Vec<u8>>,
    pub previous_secret_ciphertext: Option<Vec<u8>>,
    pub previous_secret_until_ms: Option<i64>,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const ENDPOINT_COLUMNS: &str = "SELECT id, merchant_id, url, format, event_types, secret_nonce, secret_ciphertext,
        previous_secret_nonce, previous_secret_ciphertext, previous_secret_until_ms, status, disabled_reason,
        created_at_ms, updated_at_ms FROM webhook_endpoints";

/// An endpoint to register; its secret arrives encrypted.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    pub merchant: MerchantId,
    pub url: String,
    pub format: String,
    pub event_types: String,
    pub secret: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: i64,
    pub event_public_id: String,
    pub event_type: String,
    pub merchant_id: i64,
    pub endpoint_id: Option<i64>,
    pub format: String,
    pub url: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const DELIVERY_COLUMNS: &str = "SELECT d.id, d.event_id, e.public_id AS event_public_id, e.type AS event_type, d.merchant_id,
        d.endpoint_id, d.format, d.url, d.status, d.attempts, d.next_attempt_at_ms, d.last_status_code, d.last_error,
        d.delivered_at_ms, d.created_at_ms, d.updated_at_ms
     FROM deliveries d JOIN events e ON e.id = d.event_id";

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: i64,
    pub attempted_at_ms: i64,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub instance: String,
}

#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub merchant: Option<MerchantId>,
    pub status: Option<String>,
    pub event_public_id: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// A delivery a notifier has claimed, with its event.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub id: i64,
    /// The claim token: records and releases must present it.
    pub claim: String,
    pub endpoint_id: Option<i64>,
    pub format: String,
    pub url: String,
    pub attempts: i32,
    /// The body sent by the first attempt (every retry sends the same bytes).
    pub body: Option<String>,
    pub event: EventRow,
}

/// What an attempt ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    Retry { next_attempt_at_ms: i64 },
    /// The schedule is exhausted, or the target refused for good.
    Failed,
    /// `410 Gone`: the delivery fails and its endpoint is disabled.
    Gone,
}

/// One attempt to record.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub delivery_id: i64,
    pub instance: String,
    pub attempted_at_ms: i64,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// The body sent (frozen for every later attempt); None when nothing was sent.
    pub body: Option<String>,
    /// The delivery's endpoint (disabled on `Gone`).
    pub endpoint_id: Option<i64>,
    pub result: AttemptResult,
}

/// A deposit whose status differs from the one last reported.
#[derive(sqlx::FromRow)]
pub(crate) struct DepositChange {
    pub(crate) id: i64,
    merchant_id: i64,
    pub(crate) status: String,
    pub(crate) reported_status: String,
    chain: String,
    currency: String,
    txid: String,
    vout: i64,
    amount_units: String,
    fee_units: Option<String>,
    confirmations: i64,
    block_height: Option<i64>,
    first_seen_at_ms: i64,
    updated_at_ms: i64,
    address_id: i64,
    address: String,
    label: Option<String>,
    foreign_id: Option<String>,
    user_id: Option<i64>,
    origin: String,
    callback_url: Option<String>,
    /// The invoice the address belongs to, if any.
    pub(crate) invoice_id: Option<i64>,
}

pub(crate) const DEPOSIT_CHANGES: &str = "SELECT d.id, d.merchant_id, d.status, d.reported_status, d.chain, d.currency, d.txid, d.vout,
        CAST(d.amount_units AS TEXT) AS amount_units, CAST(d.fee_units AS TEXT) AS fee_units, d.confirmations, d.block_height, d.first_seen_at_ms, d.updated_at_ms,
        a.id AS address_id, a.address, a.label, a.foreign_id, a.user_id, a.origin, a.callback_url, o.invoice_id
     FROM deposits d JOIN deposit_addresses a ON a.id = d.address_id LEFT JOIN invoice_options o ON o.address_id = d.address_id
     WHERE d.status <> d.reported_status ORDER BY d.id LIMIT 1000";

impl DepositChange {
    pub(crate) fn events(&self) -> Result<Vec<NewEvent>> {
        let units = parse_units(&self.amount_units, "deposit amount")?;
        let data = json!({
            "id": self.id, "currency": self.currency, "chain": self.chain, "address": self.address,
            "address_id": self.address_id, "label": self.label, "foreign_id": self.foreign_id, "user_id": self.user_id,
            "txid": self.txid, "vout": self.vout, "amount_units": units.to_string(), "fee_units": self.fee_units, "confirmations": self.confirmations,
            "block_height": self.block_height, "status": self.status,
            "created_at_ms": self.first_seen_at_ms, "updated_at_ms": self.updated_at_ms,
        });
        let status = |s: &str| DepositStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("deposit {} status {s:?}", self.id)));
        let reported = if self.reported_status.is_empty() { None } else { Some(status(&self.reported_status)?) };
        Ok(events::deposit_events(reported, status(&self.status)?)
            .into_iter()
            .map(|t| NewEvent {
                merchant_id: self.merchant_id,
                event_type: t.to_string(),
                object_kind: "deposit".into(),
                object_id: self.id,
                origin: self.origin.clone(),
                callback_url: self.callback_url.clone(),
                data: data.clone(),
                only_endpoint: None,
            })
            .collect())
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct WithdrawalChange {
    pub(crate) id: i64,
    merchant_id: i64,
    pub(crate) status: String,
    pub(crate) reported_status: String,
    currency: String,
    address: String,
    amount_units: String,
    fee_units: String,
    priority: String,
    idempotency_key: String,
    txid: Option<String>,
    confirmations: i64,
    failure: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    origin: String,
    callback_url: Option<String>,
}

pub(crate) const WITHDRAWAL_CHANGES: &str = "SELECT id, merchant_id, status, reported_status, currency, address,
        CAST(amount_units AS TEXT) AS amount_units, CAST(fee_units AS TEXT) AS fee_units, priority, idempotency_key,
        txid, confirmations, failure, created_at_ms, updated_at_ms, origin, callback_url
     FROM withdrawals WHERE status <> reported_status ORDER BY id LIMIT 1000";

impl WithdrawalChange {
    pub(crate) fn event(&self) -> Result<Option<NewEvent>> {
        let Some(t) = events::withdrawal_event(&self.reported_status, &self.status) else { return Ok(None) };
        let data = json!({
            "id": self.id, "currency": self.currency, "address": self.address,
            "amount_units": parse_units(&self.amount_units, "withdrawal amount")?.to_string(),
            "fee_units": parse_units(&self.fee_units, "withdrawal fee")?.to_string(),
            "priority": self.priority, "idempotency_key": self.idempotency_key, "status": self.status,
            "txid": self.txid, "confirmations": self.confirmations, "failure": self.failure,
            "created_at_ms": self.created_at_ms, "updated_at_ms": self.updated_at_ms,
        });
        Ok(Some(NewEvent {
            merchant_id: self.merchant_id,
            event_type: t.to_string(),
            object_kind: "withdrawal".into(),
            object_id: self.id,
            origin: self.origin.clone(),
            callback_url: self.callback_url.clone(),
            data,
            only_endpoint: None,
        }))
    }
}

/// An endpoint as routing sees it: (id, format, url, subscription).
pub(crate) type RouteEndpoint = (i64, String, String, String);

/// What writing events needs besides the rows: the time, and how objects of each
/// dialect are reported (from the dialects registered with the engine).
#[derive(Clone, Debug)]
pub(crate) struct WriteCtx {
    pub now_ms: i64,
    pub routes: Arc<Vec<CallbackRoute>>,
}

/// Where an event goes: (endpoint, format, url).
pub(crate) fn targets(e: &NewEvent, endpoints: &[RouteEndpoint], routes: &[CallbackRoute]) -> Vec<(Option<i64>, String, String)> {
    let mut out = Vec::new();
    for (id, format, url, types) in endpoints {
        if let Some(only) = e.only_endpoint {
            if *id == only {
                out.push((Some(*id), format.clone(), url.clone()));
            }
            continue;
        }
        // Kassa's own webhooks report every event of the merchant they subscribe to.
        if format == STANDARD_FORMAT && events::subscribed(types, &e.event_type) {
            out.push((Some(*id), format.clone(), url.clone()));
        }
    }
    if e.only_endpoint.is_some() {
        return out;
    }
    // Objects created through a dialect are also reported in its format: to their own
    // callback URL, or else to the merchant's endpoints of that format.
    if let Some(route) = events::route_for(routes, &e.origin).filter(|r| r.events.contains(&e.event_type.as_str())) {
        match &e.callback_url {
            Some(url) => out.push((None, route.format.to_string(), url.clone())),
            None => {
                for (id, f, url, _) in endpoints {
                    if f == route.format {
                        out.push((Some(*id), f.clone(), url.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Writes events, their sequence numbers and deliveries inside the open transaction
/// `$tx`. Merchants' counters are locked in id order (no deadlocks between writers).
macro_rules! write_events {
    ($tx:expr, $ctx:expr, $events:expr) => {{
        let ctx: &$crate::events::WriteCtx = &$ctx;
        let mut list: Vec<$crate::events::NewEvent> = $events;
        list.sort_by_key(|e| e.merchant_id);
        let now = ctx.now_ms;
        // Disabled endpoints get their deliveries too, as failed: enabling the endpoint
        // and redelivering the time range then sends everything it missed.
        let mut endpoints: std::collections::HashMap<i64, (Vec<$crate::events::RouteEndpoint>, std::collections::HashMap<i64, String>)> =
            std::collections::HashMap::new();
        let mut ids: Vec<String> = Vec::with_capacity(list.len());
        for e in &list {
            let seq: i64 = sqlx::query_scalar("UPDATE merchants SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq")
                .bind(e.merchant_id)
                .fetch_one(&mut *$tx)
                .await?;
            let public_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
            let event_id: i64 = sqlx::query_scalar(
                "INSERT INTO events (public_id, merchant_id, seq, type, object_kind, object_id, origin, data, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id")
                .bind(&public_id)
                .bind(e.merchant_id)
                .bind(seq)
                .bind(&e.event_type)
                .bind(&e.object_kind)
                .bind(e.object_id)
                .bind(&e.origin)
                .bind(e.data.to_string())
                .bind(now)
                .fetch_one(&mut *$tx)
                .await?;
            if !endpoints.contains_key(&e.merchant_id) {
                let rows: Vec<(i64, String, String, String, String, Option<String>)> = sqlx::query_as(
                    "SELECT id, format, url, event_types, status, disabled_reason FROM webhook_endpoints WHERE merchant_id = $1 ORDER BY id")
                    .bind(e.merchant_id)
                    .fetch_all(&mut *$tx)
                    .await?;
                let disabled = rows
                    .iter()
                    .filter(|r| r.4 != "active")
                    .map(|r| (r.0, format!("endpoint disabled: {}", r.5.as_deref().unwrap_or("by the merchant"))))
                    .collect();
                let routes = rows.into_iter().map(|r| (r.0, r.1, r.2, r.3)).collect();
                endpoints.insert(e.merchant_id, (routes, disabled));
            }
            let (routes, disabled) = &endpoints[&e.merchant_id];
            for (endpoint, format, url) in $crate::events::targets(e, routes, &ctx.routes) {
                let reason = endpoint.and_then(|id| disabled.get(&id));
                sqlx::query(
                    "INSERT INTO deliveries (event_id, merchant_id, endpoint_id, format, url, status, attempts, next_attempt_at_ms,
                         last_error, created_at_ms, updated_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $7, $7)")
                    .bind(event_id)
                    .bind(e.merchant_id)
                    .bind(endpoint)
                    .bind(format)
                    .bind(url)
                    .bind(if reason.is_some() { "failed" } else { "pending" })
                    .bind(now)
                    .bind(reason)
                    .execute(&mut *$tx)
                    .await?;
            }
            ids.push(public_id);
        }
        ids
    }};
}
pub(crate) use write_events;

/// Writes the events of every deposit and withdrawal whose status changed since it
/// was last reported, inside the open transaction `$tx`; returns how many.
macro_rules! report_changes {
    ($tx:expr, $ctx:expr) => {{
        let ctx: $crate::events::WriteCtx = $ctx;
        let now_ms: i64 = ctx.now_ms;
        let mut written = 0usize;
        loop {
            let deposits: Vec<$crate::events::DepositChange> = sqlx::query_as($crate::events::DEPOSIT_CHANGES).fetch_all(&mut *$tx).await?;
            let withdrawals: Vec<$crate::events::WithdrawalChange> =
                sqlx::query_as($crate::events::WITHDRAWAL_CHANGES).fetch_all(&mut *$tx).await?;
            let more = deposits.len() == 1000 || withdrawals.len() == 1000;
            let mut list = Vec::new();
            let mut invoices: Vec<i64> = Vec::new();
            for d in &deposits {
                let n = sqlx::query("UPDATE deposits SET reported_status = $1 WHERE id = $2 AND reported_status = $3")
                    .bind(&d.status)
                    .bind(d.id)
                    .bind(&d.reported_status)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    list.extend(d.events()?);
                    invoices.extend(d.invoice_id);
                }
            }
            invoices.sort_unstable();
            invoices.dedup();
            list.extend($crate::invoices::restate_invoices!($tx, now_ms, invoices));
            for w in &withdrawals {
                let n = sqlx::query("UPDATE withdrawals SET reported_status = $1 WHERE id = $2 AND reported_status = $3")
                    .bind(&w.status)
                    .bind(w.id)
                    .bind(&w.reported_status)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    list.extend(w.event()?);
                }
            }
            written += $crate::events::write_events!($tx, ctx, list).len();
            if !more {
                break;
            }
        }
        written
    }};
}
pub(crate) use report_changes;


impl Store {
    /// Writes events (test events, and events of objects other services report);
    /// returns their public ids.
    pub async fn insert_events(&self, list: Vec<NewEvent>) -> Result<Vec<String>> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let ids = write_events!(tx, self.write_ctx(), list);
            tx.commit().await?;
            ids
        }))
    }

    /// Reports status changes no transaction has reported yet (a safety net; every
    /// state change reports its own).
    pub async fn report_pending_changes(&self) -> Result<usize> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let n = report_changes!(tx, self.write_ctx());
                tx.commit().await?;
                n
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let n = report_changes!(tx, self.write_ctx());
                tx.commit().await?;
                n
            }
        })
    }

    pub async fn events_after(&self, merchant: MerchantId, after_seq: i64, limit: u32) -> Result<Vec<EventRow>> {
        let sql = format!("{EVENT_COLUMNS} WHERE merchant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        let rows: Vec<EventRecord> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).bind(after_seq).bind(i64::from(limit)).fetch_all(pool).await?);
        rows.into_iter().map(EventRecord::row).collect()
    }

    pub async fn event_by_public_id(&self, public_id: &str) -> Result<Option<EventRow>> {
        let sql = format!("{EVENT_COLUMNS} WHERE public_id = $1");
        let row: Option<EventRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(public_id).fetch_optional(pool).await?);
        row.map(EventRecord::row).transpose()
    }

    pub async fn insert_webhook_endpoint(&self, e: &NewEndpoint) -> Result<EndpointRow> {
        let now = self.now_ms();
        let (nonce, ct) = e.secret.clone().unzip();
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(
                "INSERT INTO webhook_endpoints (merchant_id, url, format, event_types, secret_nonce, secret_ciphertext, status,
                     created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7) RETURNING id")
            .bind(e.merchant.0)
            .bind(&e.url)
            .bind(&e.format)
            .bind(&e.event_types)
            .bind(nonce)
            .bind(ct)
            .bind(now)
            .fetch_one(pool)
            .await?);
        self.webhook_endpoint(id).await?.ok_or(crate::StoreError::NotFound { what: "webhook endpoint" })
    }

    pub async fn webhook_endpoint(&self, id: i64) -> Result<Option<EndpointRow>> {
        let sql = format!("{ENDPOINT_COLUMNS} WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    /// Every callback format stored: (format, endpoints using it, pending deliveries in it).
    pub async fn callback_formats_in_use(&self) -> Result<Vec<(String, i64, i64)>> {
        let sql = "SELECT format, SUM(e) AS endpoints, SUM(d) AS deliveries FROM (
                SELECT format, 1 AS e, 0 AS d FROM webhook_endpoints
                UNION ALL SELECT format, 0 AS e, 1 AS d FROM deliveries WHERE status = 'pending'
            ) AS used GROUP BY format ORDER BY format";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (String, i64, i64)>(sql).fetch_all(pool).await?))
    }

    pub async fn webhook_endpoints(&self, merchant: MerchantId) -> Result<Vec<EndpointRow>> {
        let sql = format!("{ENDPOINT_COLUMNS} WHERE merchant_id = $1 ORDER BY id");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).fetch_all(pool).await?))
    }

    /// Replaces an endpoint's secret; the old one stays valid until `previous_until_ms`.
    pub async fn rotate_endpoint_secret(&self, id: i64, secret: (Vec<u8>, Vec<u8>), previous_until_ms: i64) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
                "UPDATE webhook_endpoints SET previous_secret_nonce = secret_nonce, previous_secret_ciphertext = secret_ciphertext,
                     previous_secret_until_ms = $1, secret_nonce = $2, secret_ciphertext = $3, updated_at_ms = $4
                 WHERE id = $5")
            .bind(previous_until_ms)
            .bind(secret.0)
            .bind(secret.1)
            .bind(self.now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Enables or disables an endpoint; disabling fails its pending deliveries.
    pub async fn set_endpoint_status(&self, id: i64, active: bool, reason: Option<&str>) -> Result<bool> {
        let now = self.now_ms();
        let n = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE webhook_endpoints SET status = $1, disabled_reason = $2, updated_at_ms = $3 WHERE id = $4")
                .bind(if active { "active" } else { "disabled" })
                .bind(reason)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if !active {
                // Deliveries in flight record their own attempts; their next one sees
                // the endpoint disabled.
                sqlx::query("UPDATE deliveries SET status = 'failed', last_error = $1, updated_at_ms = $2
                             WHERE endpoint_id = $3 AND status = 'pending' AND (locked_until_ms IS NULL OR locked_until_ms < $2)")
                    .bind(format!("endpoint disabled: {}", reason.unwrap_or("by the merchant")))
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            n
        });
        Ok(n == 1)
    }

    /// Claims up to `limit` due deliveries under `claim` (a token unique to this claim)
    /// until `lease_until_ms`. Concurrent notifiers (several instances on PostgreSQL)
    /// never claim the same one; only the holder of the claim can record its attempt.
    pub async fn claim_deliveries(&self, claim: &str, lease_until_ms: i64, limit: u32) -> Result<Vec<ClaimedDelivery>> {
        let now = self.now_ms();
        let lock = match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let claim_sql = format!(
            "UPDATE deliveries SET locked_by = $1, locked_until_ms = $2
             WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at_ms <= $3
                              AND (locked_until_ms IS NULL OR locked_until_ms < $3)
                          ORDER BY next_attempt_at_ms, id LIMIT $4 {lock})
             RETURNING id"
        );
        let ids: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar(&claim_sql)
            .bind(claim)
            .bind(lease_until_ms)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT d.id AS d_id, d.endpoint_id, d.format, d.url, d.attempts, d.body,
                    e.id, e.public_id, e.merchant_id, e.seq, e.type, e.object_kind, e.object_id, e.origin, e.data, e.standard_body, e.created_at_ms
             FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id IN ({list}) AND d.locked_by = $1 ORDER BY d.id"
        );
        #[derive(sqlx::FromRow)]
        struct Claimed {
            d_id: i64,
            endpoint_id: Option<i64>,
            format: String,
            url: String,
            attempts: i32,
            body: Option<String>,
            #[sqlx(flatten)]
            event: EventRecord,
        }
        let rows: Vec<Claimed> = on_pool!(self, pool => sqlx::query_as(&sql).bind(claim).fetch_all(pool).await?);
        rows.into_iter()
            .map(|c| {
                Ok(ClaimedDelivery {
                    id: c.d_id,
                    claim: claim.to_string(),
                    endpoint_id: c.endpoint_id,
                    format: c.format,
                    url: c.url,
                    attempts: c.attempts,
                    body: c.body,
                    event: c.event.row()?,
                })
            })
            .collect()
    }

    /// Gives a claimed delivery back untried, due again no earlier than `not_before_ms`
    /// (its endpoint is busy: other endpoints' deliveries go first meanwhile).
    pub async fn release_delivery(&self, id: i64, claim: &str, not_before_ms: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE deliveries SET locked_by = NULL, locked_until_ms = NULL,
                     next_attempt_at_ms = CASE WHEN next_attempt_at_ms < $3 THEN $3 ELSE next_attempt_at_ms END
                 WHERE id = $1 AND locked_by = $2")
                .bind(id)
                .bind(claim)
                .bind(not_before_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Freezes an event's rendering as Kassa's own webhooks carry it; returns the
    /// frozen body (the first one stored wins).
    pub async fn freeze_standard_body(&self, event_id: i64, body: &str) -> Result<String> {
        Ok(on_pool!(self, pool => {
            sqlx::query("UPDATE events SET standard_body = $1 WHERE id = $2 AND standard_body IS NULL")
                .bind(body)
                .bind(event_id)
                .execute(pool)
                .await?;
            let frozen: Option<String> = sqlx::query_scalar("SELECT standard_body FROM events WHERE id = $1").bind(event_id).fetch_one(pool).await?;
            frozen.unwrap_or_else(|| body.to_string())
        }))
    }

    /// Records an attempt and its result; false when `claim` no longer holds the
    /// delivery (its lease ran out and another claim took it), and nothing is recorded.
    /// On `Gone` the endpoint row is locked first, as everywhere else (no deadlocks).
    pub async fn record_attempt(&self, a: &Attempt, claim: &str) -> Result<bool> {
        let (status, next, delivered) = match &a.result {
            AttemptResult::Delivered => ("delivered", a.attempted_at_ms, Some(a.attempted_at_ms)),
            AttemptResult::Retry { next_attempt_at_ms } => ("pending", *next_attempt_at_ms, None),
            AttemptResult::Failed | AttemptResult::Gone => ("failed", a.attempted_at_ms, None),
        };
        let now = self.now_ms();
        let code = a.status_code.map(i32::from);
        let gone_endpoint = if a.result == AttemptResult::Gone { a.endpoint_id } else { None };
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(endpoint) = gone_endpoint {
                sqlx::query("UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $1, updated_at_ms = $2 WHERE id = $3")
                    .bind("the receiver answered 410 Gone")
                    .bind(now)
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
            }
            let n = sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, status = $1, next_attempt_at_ms = $2, delivered_at_ms = $3,
                     body = COALESCE(body, $4), last_status_code = $5, last_error = $6, locked_by = NULL, locked_until_ms = NULL,
                     updated_at_ms = $7
                 WHERE id = $8 AND locked_by = $9 AND status = 'pending'")
                .bind(status)
                .bind(next)
                .bind(delivered)
                .bind(&a.body)
                .bind(code)
                .bind(&a.error)
                .bind(now)
                .bind(a.delivery_id)
                .bind(claim)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                sqlx::query(
                    "INSERT INTO delivery_attempts (delivery_id, attempted_at_ms, status_code, latency_ms, error, instance)
                     VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(a.delivery_id)
                    .bind(a.attempted_at_ms)
                    .bind(code)
                    .bind(a.latency_ms)
                    .bind(&a.error)
                    .bind(&a.instance)
                    .execute(&mut *tx)
                    .await?;
                if let Some(endpoint) = gone_endpoint {
                    // Deliveries in flight elsewhere record their own attempts.
                    sqlx::query("UPDATE deliveries SET status = 'failed', last_error = 'endpoint disabled: the receiver answered 410 Gone',
                                     updated_at_ms = $1
                                 WHERE endpoint_id = $2 AND status = 'pending' AND (locked_until_ms IS NULL OR locked_until_ms < $1)")
                        .bind(now)
                        .bind(endpoint)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            } else {
                // Not ours any more: change nothing, not even the endpoint.
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    pub async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>> {
        let sql = format!(
            "{DELIVERY_COLUMNS} WHERE ($1 IS NULL OR d.merchant_id = $1) AND ($2 IS NULL OR d.status = $2)
                 AND ($3 IS NULL OR e.public_id = $3) AND ($4 IS NULL OR d.id < $4)
             ORDER BY d.id DESC LIMIT $5"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(q.merchant.map(|m| m.0))
            .bind(&q.status)
            .bind(&q.event_public_id)
            .bind(q.before_id)
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?))
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>> {
        let sql = format!("{DELIVERY_COLUMNS} WHERE d.id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    /// The body a delivery sent (None before its first attempt).
    pub async fn delivery_body(&self, id: i64) -> Result<Option<String>> {
        let r: Option<Option<String>> =
            on_pool!(self, pool => sqlx::query_scalar("SELECT body FROM deliveries WHERE id = $1").bind(id).fetch_optional(pool).await?);
        Ok(r.flatten())
    }

    pub async fn delivery_attempts(&self, delivery: i64) -> Result<Vec<AttemptRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
                "SELECT id, delivery_id, attempted_at_ms, status_code, latency_ms, error, instance
                 FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id LIMIT 1000")
            .bind(delivery)
            .fetch_all(pool)
            .await?))
    }

    /// Sends an event's deliveries again (same id, same body), now; returns how many.
    pub async fn redeliver_event(&self, event_id: i64) -> Result<u64> {
        let now = self.now_ms();
        Ok(on_pool!(self, pool => sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1, locked_by = NULL,
                     locked_until_ms = NULL, updated_at_ms = $1
                 WHERE event_id = $2 AND status <> 'pending'")
            .bind(now)
            .bind(event_id)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Sends every failed delivery created in [from_ms, to_ms) again (of one merchant,
    /// or all); returns how many.
    pub async fn redeliver_failed(&self, merchant: Option<MerchantId>, from_ms: i64, to_ms: i64) -> Result<u64> {
        let now = self.now_ms();
        Ok(on_pool!(self, pool => sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1, locked_by = NULL,
                     locked_until_ms = NULL, updated_at_ms = $1
                 WHERE status = 'failed' AND ($2 IS NULL OR merchant_id = $2) AND created_at_ms >= $3 AND created_at_ms < $4")
            .bind(now)
            .bind(merchant.map(|m| m.0))
            .bind(from_ms)
            .bind(to_ms)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// (pending deliveries, creation time of the oldest) for the backlog metrics.
    pub async fn delivery_backlog(&self) -> Result<(i64, Option<i64>)> {
        Ok(on_pool!(self, pool => sqlx::query_as("SELECT COUNT(*), MIN(created_at_ms) FROM deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?))
    }

    /// Deliveries per status (operator overview).
    pub async fn delivery_counts(&self, merchant: Option<MerchantId>) -> Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
                "SELECT status, COUNT(*) FROM deliveries WHERE ($1 IS NULL OR merchant_id = $1) GROUP BY status")
            .bind(merchant.map(|m| m.0))
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(origin: &str, t: &str, callback: Option<&str>) -> NewEvent {
        NewEvent {
            merchant_id: 1,
            event_type: t.into(),
            object_kind: "deposit".into(),
            object_id: 1,
            origin: origin.into(),
            callback_url: callback.map(Into::into),
            data: json!({}),
            only_endpoint: None,
        }
    }

    #[test]
    fn routing() {
        let eps = vec![
            (1, "standard".to_string(), "https://a/".to_string(), "*".to_string()),
            (2, "standard".to_string(), "https://b/".to_string(), "withdrawal.*".to_string()),
            (3, "b_v2".to_string(), "https://c/".to_string(), "*".to_string()),
        ];
        let routes = [
            CallbackRoute { origin: "b", format: "b_v2", events: &["deposit.seen", "deposit.credited"] },
            CallbackRoute { origin: "ipn", format: "ipn", events: &["deposit.seen"] },
        ];
        let s = |x: &str| x.to_string();
        // Native objects: Kassa's own webhooks only, by subscription.
        let t = targets(&event("native", "deposit.seen", None), &eps, &routes);
        assert_eq!(t, vec![(Some(1), s("standard"), s("https://a/"))]);
        // A dialect's object also goes to the merchant's endpoints of its format.
        let t = targets(&event("b", "deposit.credited", None), &eps, &routes);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1], (Some(3), s("b_v2"), s("https://c/")));
        // An object with its own callback URL: there; not for events its format does not report.
        let t = targets(&event("ipn", "deposit.seen", Some("https://ipn/")), &eps, &routes);
        assert_eq!(t[1], (None, s("ipn"), s("https://ipn/")));
        assert_eq!(targets(&event("ipn", "deposit.confirmed", Some("https://ipn/")), &eps, &routes).len(), 1);
        // No registered route: Kassa's own webhooks only.
        assert_eq!(targets(&event("b", "deposit.credited", None), &eps, &[]).len(), 1);
        // Test events reach the one endpoint asked for.
        let mut test = event("native", "webhook.test", None);
        test.only_endpoint = Some(3);
        assert_eq!(targets(&test, &eps, &routes), vec![(Some(3), s("b_v2"), s("https://c/"))]);
    }
}
