//! Merchants' webhook endpoints: where their callbacks go, in which format, signed
//! with which secret (and, while a rotation overlaps, the previous one).

use crate::{on_pool, Result, Store};

use kassa_core::ledger::MerchantId;

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
    /// Events raised while it was disabled that it has not been sent (a redelivery of
    /// their range, once enabled, sends them), and when the first was raised.
    pub missed_events: i64,
    pub missed_since_ms: Option<i64>,
}

const ENDPOINT_COLUMNS: &str = "SELECT id, merchant_id, url, format, event_types, secret_nonce, secret_ciphertext,
        previous_secret_nonce, previous_secret_ciphertext, previous_secret_until_ms, status, disabled_reason,
        created_at_ms, updated_at_ms, missed_events,
        (SELECT created_at_ms FROM events WHERE events.id = webhook_endpoints.missed_from_event_id) AS missed_since_ms
        FROM webhook_endpoints";

/// An endpoint to register; its secret arrives encrypted.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    pub merchant: MerchantId,
    pub url: String,
    pub format: String,
    pub event_types: String,
    pub secret: Option<(Vec<u8>, Vec<u8>)>,
}

impl Store {
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

    /// The endpoints with these ids (those that exist).
    pub(crate) async fn webhook_endpoints_by_id(&self, ids: &[i64]) -> Result<Vec<EndpointRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let sql = format!("{ENDPOINT_COLUMNS} WHERE id IN ({list})");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
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
}
