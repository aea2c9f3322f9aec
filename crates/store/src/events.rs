//! The notification outbox: events written in the transaction that changes the state
//! they report, with one delivery per callback target (`deliveries.rs` hands them to
//! the notifier; `endpoints.rs` keeps where they go).
//!
//! Deposits and withdrawals carry the status last reported (`reported_status`); every
//! transaction that changes a status ends with `report_changes!`, which writes the
//! events for rows whose status differs and marks them reported, in that transaction.


use std::sync::Arc;

use kassa_core::deposit::DepositStatus;
use kassa_core::events::{self, CallbackRoute, STANDARD_FORMAT};
use kassa_core::ledger::MerchantId;
use kassa_core::withdrawal::WithdrawalStatus;
use serde_json::json;

use crate::{on_pool, parse_units, Db, Result, Store, StoreError};

/// An event to write.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub merchant_id: i64,
    pub event_type: String,
    pub object_kind: String,
    pub object_id: i64,
    /// The API dialect the object was created through (`native` or a registered dialect's name).
    pub origin: String,
    /// The object's own callback URL (a dialect's per-request callback URL), if any.
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
pub(crate) struct EventRecord {
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
    pub(crate) fn row(self) -> Result<EventRow> {
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

pub(crate) const EVENT_COLUMNS: &str = "SELECT id, public_id, merchant_id, seq, type, object_kind, object_id, origin, data, standard_body, created_at_ms FROM events";

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
    #[sqlx(flatten)]
    conversion: crate::deposits::ConversionColumns,
}

pub(crate) const DEPOSIT_CHANGES: &str = "SELECT d.id, d.merchant_id, d.status, d.reported_status, d.chain, d.currency, d.txid, d.vout,
        CAST(d.amount_units AS TEXT) AS amount_units, CAST(d.fee_units AS TEXT) AS fee_units, d.confirmations, d.block_height, d.first_seen_at_ms, d.updated_at_ms,
        a.id AS address_id, a.address, a.label, a.foreign_id, a.user_id, a.origin, a.callback_url, o.invoice_id,
        a.convert_to, d.converted_currency, CAST(d.converted_units AS TEXT) AS converted_units,
        CAST(d.exchange_fee_units AS TEXT) AS exchange_fee_units, d.exchange_rate, d.conversion_note, d.futures_id
     FROM deposits d JOIN deposit_addresses a ON a.id = d.address_id LEFT JOIN invoice_options o ON o.address_id = d.address_id
     WHERE d.status <> d.reported_status ORDER BY d.id LIMIT 1000";

impl DepositChange {
    pub(crate) fn events(&self) -> Result<Vec<NewEvent>> {
        let units = parse_units(&self.amount_units, "deposit amount")?;
        let mut data = json!({
            "id": self.id, "currency": self.currency, "chain": self.chain, "address": self.address,
            "address_id": self.address_id, "label": self.label, "foreign_id": self.foreign_id, "user_id": self.user_id,
            "txid": self.txid, "vout": self.vout, "amount_units": units.to_string(), "fee_units": self.fee_units, "confirmations": self.confirmations,
            "block_height": self.block_height, "status": self.status,
            "created_at_ms": self.first_seen_at_ms, "updated_at_ms": self.updated_at_ms,
        });
        // Only for addresses with conversion: other snapshots stay as they were.
        let c = &self.conversion;
        if let Some(to) = &c.convert_to {
            data["convert_to"] = json!(to);
            data["converted_currency"] = json!(c.converted_currency);
            data["converted_units"] = json!(c.converted_units);
            data["exchange_fee_units"] = json!(c.exchange_fee_units);
            data["exchange_rate"] = json!(c.exchange_rate);
            data["conversion_note"] = json!(c.conversion_note);
            if let Some(f) = c.futures_id {
                data["futures_id"] = json!(f);
            }
        }
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
    source_currency: Option<String>,
    source_units: Option<String>,
    source_fee_units: Option<String>,
    exchange_rate: Option<String>,
}

pub(crate) const WITHDRAWAL_CHANGES: &str = "SELECT id, merchant_id, status, reported_status, currency, address,
        CAST(amount_units AS TEXT) AS amount_units, CAST(fee_units AS TEXT) AS fee_units, priority, idempotency_key,
        txid, confirmations, failure, created_at_ms, updated_at_ms, origin, callback_url, source_currency,
        CAST(source_units AS TEXT) AS source_units, CAST(source_fee_units AS TEXT) AS source_fee_units, exchange_rate
     FROM withdrawals WHERE status <> reported_status ORDER BY id LIMIT 1000";

impl WithdrawalChange {
    pub(crate) fn event(&self) -> Result<Option<NewEvent>> {
        let status = |s: &str| WithdrawalStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("withdrawal {} status {s:?}", self.id)));
        let reported = if self.reported_status.is_empty() { None } else { Some(status(&self.reported_status)?) };
        let Some(t) = events::withdrawal_event(reported, status(&self.status)?) else { return Ok(None) };
        let mut data = json!({
            "id": self.id, "currency": self.currency, "address": self.address,
            "amount_units": parse_units(&self.amount_units, "withdrawal amount")?.to_string(),
            "fee_units": parse_units(&self.fee_units, "withdrawal fee")?.to_string(),
            "priority": self.priority, "idempotency_key": self.idempotency_key, "status": self.status,
            "txid": self.txid, "confirmations": self.confirmations, "failure": self.failure,
            "created_at_ms": self.created_at_ms, "updated_at_ms": self.updated_at_ms,
        });
        // Only for a withdrawal with exchange: other snapshots stay as they were.
        if let Some(source) = &self.source_currency {
            data["source_currency"] = json!(source);
            data["source_units"] = json!(self.source_units);
            data["source_fee_units"] = json!(self.source_fee_units);
            data["exchange_rate"] = json!(self.exchange_rate);
        }
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

/// What writing events needs besides the rows: the time they are stamped with.
#[derive(Clone, Debug)]
pub(crate) struct WriteCtx {
    pub now_ms: i64,
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

/// Writes events to the outbox inside the open transaction `$tx` (the relay numbers
/// and routes them once the transaction has committed); returns their public ids.
/// The caller wakes the relay after committing (`Store::events_committed`).
macro_rules! write_events {
    ($tx:expr, $ctx:expr, $events:expr) => {{
        let ctx: &$crate::events::WriteCtx = &$ctx;
        let list: Vec<$crate::events::NewEvent> = $events;
        let mut ids: Vec<String> = Vec::with_capacity(list.len());
        for e in &list {
            let public_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
            sqlx::query(
                "INSERT INTO outbox (public_id, merchant_id, type, object_kind, object_id, origin, data, callback_url, only_endpoint_id, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(&public_id)
                .bind(e.merchant_id)
                .bind(&e.event_type)
                .bind(&e.object_kind)
                .bind(e.object_id)
                .bind(&e.origin)
                .bind(e.data.to_string())
                .bind(&e.callback_url)
                .bind(e.only_endpoint)
                .bind(ctx.now_ms)
                .execute(&mut *$tx)
                .await?;
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


/// Most events the relay moves in one transaction.
pub const RELAY_BATCH: u32 = 500;

/// What one relay transaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    pub events: usize,
    pub deliveries: usize,
}

/// An event waiting in the outbox.
#[derive(sqlx::FromRow)]
struct OutboxRecord {
    id: i64,
    public_id: String,
    merchant_id: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    object_kind: String,
    object_id: i64,
    origin: String,
    data: String,
    callback_url: Option<String>,
    only_endpoint_id: Option<i64>,
    created_at_ms: i64,
}

impl OutboxRecord {
    /// The event it becomes with sequence number `seq` (its id is not known yet).
    fn event(&self, seq: i64) -> Result<EventRow> {
        Ok(EventRow {
            id: 0,
            public_id: self.public_id.clone(),
            merchant_id: self.merchant_id,
            seq,
            event_type: self.event_type.clone(),
            object_kind: self.object_kind.clone(),
            object_id: self.object_id,
            origin: self.origin.clone(),
            data: serde_json::from_str(&self.data).map_err(|e| StoreError::Corrupt(format!("outbox event {} data: {e}", self.public_id)))?,
            standard_body: None,
            created_at_ms: self.created_at_ms,
        })
    }

    /// The event as routing sees it.
    fn routed(&self) -> NewEvent {
        NewEvent {
            merchant_id: self.merchant_id,
            event_type: self.event_type.clone(),
            object_kind: self.object_kind.clone(),
            object_id: self.object_id,
            origin: self.origin.clone(),
            callback_url: self.callback_url.clone(),
            data: serde_json::Value::Null,
            only_endpoint: self.only_endpoint_id,
        }
    }
}

/// The PostgreSQL advisory lock (transaction-scoped) that keeps relays of several
/// instances one at a time, so that numbers follow the order events became visible.
const RELAY_LOCK: i64 = 0x6b61_7373_615f_7231;

/// Rows per multi-row statement of the relay (well under both backends' bind limits).
const RELAY_ROWS_PER_STATEMENT: usize = 100;

impl Store {
    /// Writes events (test events, and events of objects other services report);
    /// returns their public ids.
    pub async fn insert_events(&self, list: Vec<NewEvent>) -> Result<Vec<String>> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let ids = write_events!(tx, self.write_ctx(), list);
            tx.commit().await?;
            self.events_committed();
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
                self.events_committed();
                n
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let n = report_changes!(tx, self.write_ctx());
                tx.commit().await?;
                self.events_committed();
                n
            }
        })
    }

    /// Wakes this process's relay: call after committing a transaction that wrote events.
    pub(crate) fn events_committed(&self) {
        self.wakes.outbox.notify_one();
    }

    /// What wakes this process's relay and notifier.
    pub fn wakes(&self) -> &Arc<crate::Wakes> {
        &self.wakes
    }

    /// Moves up to `limit` committed events from the outbox to `events`, in one
    /// transaction: each merchant's next sequence numbers in outbox order (gap-free; one
    /// relay at a time, by the advisory lock on PostgreSQL and the write lock on
    /// SQLite, so a number once seen is never followed by a smaller one), and their
    /// deliveries to the merchant's endpoints as they are now. A disabled endpoint gets
    /// no delivery: it counts what it missed (see `deliver_missed`).
    /// `render` gives an event's body as Kassa's own webhooks carry it (frozen with the
    /// event, so that deliveries and pulls need not render it).
    pub async fn relay_events(&self, limit: u32, render: &(dyn Fn(&EventRow) -> Option<String> + Sync)) -> Result<Relayed> {
        let waiting: bool = on_pool!(self, pool => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox)").fetch_one(pool).await?);
        if !waiting {
            return Ok(Relayed::default());
        }
        let routes = self.callback_routes.read().expect("callback routes").clone();
        let now = self.now_ms();
        let relayed = on_pool!(self, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            if matches!(self.db, Db::Postgres(_)) {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(RELAY_LOCK).execute(&mut *tx).await?;
            }
            let rows: Vec<OutboxRecord> = sqlx::query_as(
                    "SELECT id, public_id, merchant_id, type, object_kind, object_id, origin, data, callback_url, only_endpoint_id, created_at_ms
                     FROM outbox ORDER BY id LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            // Each merchant's numbers, its counter updated once (in merchant id order).
            let mut counts: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
            for r in &rows {
                *counts.entry(r.merchant_id).or_default() += 1;
            }
            let mut next_seq: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
            for (merchant, n) in &counts {
                let last: Option<i64> = sqlx::query_scalar("UPDATE merchants SET event_seq = event_seq + $1 WHERE id = $2 RETURNING event_seq")
                    .bind(n)
                    .bind(merchant)
                    .fetch_optional(&mut *tx)
                    .await?;
                let last = last.ok_or_else(|| StoreError::Corrupt(format!("outbox events of merchant {merchant}, which does not exist")))?;
                next_seq.insert(*merchant, last - n + 1);
            }
            let mut event_ids: std::collections::HashMap<String, i64> = std::collections::HashMap::with_capacity(rows.len());
            for chunk in rows.chunks(RELAY_ROWS_PER_STATEMENT) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("({})", (1..=11).map(|c| format!("${}", i * 11 + c)).collect::<Vec<_>>().join(", ")))
                    .collect();
                let sql = format!(
                    "INSERT INTO events (public_id, merchant_id, seq, type, object_kind, object_id, origin, data, created_at_ms, callback_url, standard_body)
                     VALUES {} RETURNING id, public_id",
                    values.join(", ")
                );
                let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
                for r in chunk {
                    let seq = next_seq.get_mut(&r.merchant_id).expect("counted");
                    let body = render(&r.event(*seq)?);
                    q = q
                        .bind(&r.public_id)
                        .bind(r.merchant_id)
                        .bind(*seq)
                        .bind(&r.event_type)
                        .bind(&r.object_kind)
                        .bind(r.object_id)
                        .bind(&r.origin)
                        .bind(&r.data)
                        .bind(r.created_at_ms)
                        .bind(&r.callback_url)
                        .bind(body);
                    *seq += 1;
                }
                event_ids.extend(q.fetch_all(&mut *tx).await?.into_iter().map(|(id, public)| (public, id)));
            }
            // Routing, with each merchant's endpoints read once.
            let mut endpoints: std::collections::HashMap<i64, (Vec<RouteEndpoint>, std::collections::HashSet<i64>)> = std::collections::HashMap::new();
            for merchant in counts.keys() {
                let found: Vec<(i64, String, String, String, String)> = sqlx::query_as(
                        "SELECT id, format, url, event_types, status FROM webhook_endpoints WHERE merchant_id = $1 ORDER BY id")
                    .bind(merchant)
                    .fetch_all(&mut *tx)
                    .await?;
                let disabled = found.iter().filter(|r| r.4 != "active").map(|r| r.0).collect();
                endpoints.insert(*merchant, (found.into_iter().map(|r| (r.0, r.1, r.2, r.3)).collect(), disabled));
            }
            let mut deliveries: Vec<(i64, i64, Option<i64>, String, String)> = Vec::new();
            let mut missed: std::collections::BTreeMap<i64, (i64, i64)> = std::collections::BTreeMap::new();
            for r in &rows {
                let event_id = *event_ids.get(&r.public_id).ok_or_else(|| StoreError::Corrupt(format!("event {} was not stored", r.public_id)))?;
                let (routed, disabled) = &endpoints[&r.merchant_id];
                for (endpoint, format, url) in targets(&r.routed(), routed, &routes) {
                    match endpoint.filter(|id| disabled.contains(id)) {
                        Some(id) => {
                            let m = missed.entry(id).or_insert((event_id, 0));
                            m.0 = m.0.min(event_id);
                            m.1 += 1;
                        }
                        None => deliveries.push((event_id, r.merchant_id, endpoint, format, url)),
                    }
                }
            }
            for chunk in deliveries.chunks(RELAY_ROWS_PER_STATEMENT) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(${}, ${}, ${}, ${}, ${}, 'pending', 0, $1, NULL, $1, $1)", i * 5 + 2, i * 5 + 3, i * 5 + 4, i * 5 + 5, i * 5 + 6))
                    .collect();
                let sql = format!(
                    "INSERT INTO deliveries (event_id, merchant_id, endpoint_id, format, url, status, attempts, next_attempt_at_ms,
                         last_error, created_at_ms, updated_at_ms) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(now);
                for (event_id, merchant, endpoint, format, url) in chunk {
                    q = q.bind(event_id).bind(merchant).bind(endpoint).bind(format).bind(url);
                }
                q.execute(&mut *tx).await?;
            }
            for (endpoint, (first, n)) in &missed {
                sqlx::query(
                    "UPDATE webhook_endpoints SET missed_from_event_id = COALESCE(missed_from_event_id, $1), missed_events = missed_events + $2
                     WHERE id = $3")
                    .bind(first)
                    .bind(n)
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
            }
            for chunk in rows.chunks(RELAY_ROWS_PER_STATEMENT * 10) {
                let ids = chunk.iter().map(|r| r.id.to_string()).collect::<Vec<_>>().join(", ");
                sqlx::query(&format!("DELETE FROM outbox WHERE id IN ({ids})")).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Relayed { events: rows.len(), deliveries: deliveries.len() }
        });
        if relayed.deliveries > 0 {
            self.wakes.deliveries.notify_one();
        }
        Ok(relayed)
    }

    /// (events waiting in the outbox, creation time of the oldest) for the relay's gauges.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<i64>)> {
        Ok(on_pool!(self, pool => sqlx::query_as("SELECT COUNT(*), MIN(created_at_ms) FROM outbox").fetch_one(pool).await?))
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
