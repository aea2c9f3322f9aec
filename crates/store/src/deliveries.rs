//! Deliveries of events to their targets, and every attempt: claimed by one notifier
//! instance at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL), retried on a
//! schedule, redelivered on request.

use std::collections::HashMap;

use kassa_core::ledger::MerchantId;

use crate::events::{EventRecord, EventRow};
use crate::{on_pool, Db, Result, Store};

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
    /// Its endpoint as it was when claimed (None: the object's own callback URL).
    pub endpoint: Option<crate::EndpointRow>,
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

impl Attempt {
    /// The delivery's status, next attempt time and delivery time after this attempt.
    fn stored(&self) -> (&'static str, i64, Option<i64>) {
        match &self.result {
            AttemptResult::Delivered => ("delivered", self.attempted_at_ms, Some(self.attempted_at_ms)),
            AttemptResult::Retry { next_attempt_at_ms } => ("pending", *next_attempt_at_ms, None),
            AttemptResult::Failed | AttemptResult::Gone => ("failed", self.attempted_at_ms, None),
        }
    }
}

/// Attempts recorded per statement by `record_attempts`.
const ATTEMPTS_PER_STATEMENT: usize = 64;

/// Records an attempt's result on a delivery its claim still holds.
const RECORD_ATTEMPT: &str = "UPDATE deliveries SET attempts = attempts + 1, status = $1, next_attempt_at_ms = $2, delivered_at_ms = $3,
        body = COALESCE(body, $4), last_status_code = $5, last_error = $6, locked_by = NULL, locked_until_ms = NULL, updated_at_ms = $7
    WHERE id = $8 AND locked_by = $9 AND status = 'pending'";
/// Adds an attempt to a delivery's log.
const LOG_ATTEMPT: &str = "INSERT INTO delivery_attempts (delivery_id, attempted_at_ms, status_code, latency_ms, error, instance)
    VALUES ($1, $2, $3, $4, $5, $6)";

impl Store {
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
        let mut endpoint_ids: Vec<i64> = rows.iter().filter_map(|c| c.endpoint_id).collect();
        endpoint_ids.sort_unstable();
        endpoint_ids.dedup();
        let endpoints: HashMap<i64, crate::EndpointRow> =
            self.webhook_endpoints_by_id(&endpoint_ids).await?.into_iter().map(|e| (e.id, e)).collect();
        rows.into_iter()
            .map(|c| {
                Ok(ClaimedDelivery {
                    endpoint: c.endpoint_id.and_then(|id| endpoints.get(&id).cloned()),
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

    /// Records one attempt and its result in a transaction of its own (the notifier
    /// records a `Gone` this way, `record_attempts` takes the rest); false when `claim`
    /// no longer holds the delivery (its lease ran out and another claim took it), and
    /// nothing is recorded. On `Gone` the endpoint row is locked first, as everywhere
    /// else (no deadlocks).
    pub async fn record_attempt(&self, a: &Attempt, claim: &str) -> Result<bool> {
        let (status, next, delivered) = a.stored();
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
                RECORD_ATTEMPT)
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
                    LOG_ATTEMPT)
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

    /// Records attempts that disable no endpoint (anything but `Gone`) in one
    /// transaction; for each, false when its claim no longer held the delivery (nothing
    /// recorded for that one).
    pub async fn record_attempts(&self, batch: &[(Attempt, String)]) -> Result<Vec<bool>> {
        if let Some((a, _)) = batch.iter().find(|(a, _)| a.result == AttemptResult::Gone) {
            return Err(crate::StoreError::Corrupt(format!("delivery {}: a 410 Gone attempt is recorded on its own", a.delivery_id)));
        }
        let now = self.now_ms();
        let mut held_ids: std::collections::HashSet<i64> = std::collections::HashSet::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in batch.chunks(ATTEMPTS_PER_STATEMENT) {
                // Each row: (delivery, claim, status, next attempt, delivered at, body, status code, error).
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("({})", (0..8).map(|c| format!("${}", 2 + i * 8 + c)).collect::<Vec<_>>().join(", ")))
                    .collect();
                let sql = format!(
                    "UPDATE deliveries SET attempts = attempts + 1, status = v.column3, next_attempt_at_ms = v.column4,
                         delivered_at_ms = v.column5, body = COALESCE(body, v.column6), last_status_code = v.column7,
                         last_error = v.column8, locked_by = NULL, locked_until_ms = NULL, updated_at_ms = $1
                     FROM (VALUES {}) AS v
                     WHERE deliveries.id = v.column1 AND deliveries.locked_by = v.column2 AND deliveries.status = 'pending'
                     RETURNING deliveries.id",
                    values.join(", ")
                );
                let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(now);
                for (a, claim) in chunk {
                    let (status, next, delivered) = a.stored();
                    q = q.bind(a.delivery_id).bind(claim).bind(status).bind(next).bind(delivered).bind(&a.body)
                        .bind(a.status_code.map(i32::from)).bind(&a.error);
                }
                let updated = q.fetch_all(&mut *tx).await?;
                let logged: Vec<&Attempt> = chunk.iter().map(|(a, _)| a).filter(|a| updated.contains(&a.delivery_id)).collect();
                held_ids.extend(updated);
                if logged.is_empty() {
                    continue;
                }
                let values: Vec<String> = (0..logged.len())
                    .map(|i| format!("({})", (1..=6).map(|c| format!("${}", i * 6 + c)).collect::<Vec<_>>().join(", ")))
                    .collect();
                let sql = format!(
                    "INSERT INTO delivery_attempts (delivery_id, attempted_at_ms, status_code, latency_ms, error, instance) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for a in logged {
                    q = q.bind(a.delivery_id).bind(a.attempted_at_ms).bind(a.status_code.map(i32::from)).bind(a.latency_ms).bind(&a.error)
                        .bind(&a.instance);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(batch.iter().map(|(a, _)| held_ids.contains(&a.delivery_id)).collect())
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

    /// Creates the deliveries that endpoints, active again, missed while disabled, for
    /// events created in [from_ms, to_ms) (of one merchant, or all); returns how many.
    /// An endpoint whose missed events all lay in the range starts counting afresh.
    pub async fn deliver_missed(&self, merchant: Option<MerchantId>, from_ms: i64, to_ms: i64) -> Result<u64> {
        let now = self.now_ms();
        let routes = self.callback_routes.read().expect("callback routes").clone();
        let mut created = 0u64;
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let endpoints: Vec<(i64, i64, String, String, String, i64)> = sqlx::query_as(
                    "SELECT id, merchant_id, format, url, event_types, missed_from_event_id FROM webhook_endpoints
                     WHERE status = 'active' AND missed_from_event_id IS NOT NULL AND ($1 IS NULL OR merchant_id = $1) ORDER BY id")
                .bind(merchant.map(|m| m.0))
                .fetch_all(&mut *tx)
                .await?;
            for (id, merchant_id, format, url, types, from_event) in endpoints {
                let events: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
                        "SELECT id, type, origin, callback_url FROM events
                         WHERE merchant_id = $1 AND id >= $2 AND created_at_ms >= $3 AND created_at_ms < $4 ORDER BY id")
                    .bind(merchant_id)
                    .bind(from_event)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&mut *tx)
                    .await?;
                let route = [(id, format.clone(), url.clone(), types)];
                for (event_id, event_type, origin, callback_url) in events {
                    let probe = crate::events::NewEvent {
                        merchant_id,
                        event_type,
                        object_kind: String::new(),
                        object_id: 0,
                        origin,
                        callback_url,
                        data: serde_json::Value::Null,
                        only_endpoint: None,
                    };
                    if !crate::events::targets(&probe, &route, &routes).iter().any(|t| t.0 == Some(id)) {
                        continue;
                    }
                    // Once: an event that already has a delivery here keeps it.
                    let inserted = sqlx::query(
                            "INSERT INTO deliveries (event_id, merchant_id, endpoint_id, format, url, status, attempts, next_attempt_at_ms,
                                 last_error, created_at_ms, updated_at_ms)
                             SELECT $1, $2, $3, $4, $5, 'pending', 0, $6, NULL, $6, $6
                             WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = $1 AND endpoint_id = $3)")
                        .bind(event_id)
                        .bind(merchant_id)
                        .bind(id)
                        .bind(&format)
                        .bind(&url)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    created += inserted;
                }
                let first_missed: Option<i64> = sqlx::query_scalar("SELECT created_at_ms FROM events WHERE id = $1")
                    .bind(from_event)
                    .fetch_optional(&mut *tx)
                    .await?;
                if first_missed.is_none_or(|t| t >= from_ms) && to_ms > now {
                    sqlx::query("UPDATE webhook_endpoints SET missed_from_event_id = NULL, missed_events = 0 WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        });
        Ok(created)
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
