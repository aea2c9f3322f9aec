//! Merchants (tenants) and their API credentials.

use kassa_core::ledger::MerchantId;

use crate::{duplicate_as, on_pool, Result, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MerchantRow {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub created_at_ms: i64,
    /// Keys not revoked.
    pub active_keys: i64,
    /// Why an operator blocked it (while blocked).
    pub blocked_reason: Option<String>,
    /// When it was last blocked or unblocked.
    pub status_changed_at_ms: Option<i64>,
}

/// A key to store. Secrets arrive already hashed or encrypted: nothing in clear.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub merchant: MerchantId,
    pub dialect: String,
    pub style: String,
    pub public_key: String,
    pub token_hash: Option<String>,
    pub secret_nonce: Option<Vec<u8>>,
    pub secret_ciphertext: Option<Vec<u8>>,
    pub scopes: String,
    pub ip_allowlist: String,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub merchant_id: i64,
    pub merchant_status: String,
    pub dialect: String,
    pub style: String,
    pub public_key: String,
    pub secret_nonce: Option<Vec<u8>>,
    pub secret_ciphertext: Option<Vec<u8>>,
    pub scopes: String,
    pub ip_allowlist: String,
    pub label: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

const MERCHANT_COLUMNS: &str = "SELECT m.id, m.name, m.status, m.created_at_ms, m.blocked_reason, m.status_changed_at_ms,
        (SELECT COUNT(*) FROM api_keys k WHERE k.merchant_id = m.id AND k.revoked_at_ms IS NULL) AS active_keys
     FROM merchants m";

const KEY_COLUMNS: &str = "SELECT k.id, k.merchant_id, m.status AS merchant_status, k.dialect, k.style,
        k.public_key, k.secret_nonce, k.secret_ciphertext, k.scopes, k.ip_allowlist, k.label,
        k.created_at_ms, k.revoked_at_ms
     FROM api_keys k JOIN merchants m ON m.id = k.merchant_id";

impl Store {
    pub async fn create_merchant(&self, name: &str) -> Result<MerchantRow> {
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(
                "INSERT INTO merchants (name, created_at_ms) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(self.now_ms())
            .fetch_one(pool)
            .await
            .map_err(|e| duplicate_as(e, "a merchant with this name"))?);
        self.merchant(MerchantId(id)).await?.ok_or(StoreError::NotFound { what: "merchant" })
    }

    pub async fn merchant(&self, id: MerchantId) -> Result<Option<MerchantRow>> {
        let sql = format!("{MERCHANT_COLUMNS} WHERE m.id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id.0).fetch_optional(pool).await?))
    }

    pub async fn merchant_by_name(&self, name: &str) -> Result<Option<MerchantRow>> {
        let sql = format!("{MERCHANT_COLUMNS} WHERE m.name = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?))
    }

    pub async fn list_merchants(&self) -> Result<Vec<MerchantRow>> {
        let sql = format!("{MERCHANT_COLUMNS} ORDER BY m.id");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
    }

    pub async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRow> {
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(
                "INSERT INTO api_keys (merchant_id, dialect, style, public_key, token_hash, secret_nonce,
                     secret_ciphertext, scopes, ip_allowlist, label, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id")
            .bind(key.merchant.0)
            .bind(&key.dialect)
            .bind(&key.style)
            .bind(&key.public_key)
            .bind(&key.token_hash)
            .bind(&key.secret_nonce)
            .bind(&key.secret_ciphertext)
            .bind(&key.scopes)
            .bind(&key.ip_allowlist)
            .bind(&key.label)
            .bind(self.now_ms())
            .fetch_one(pool)
            .await
            .map_err(|e| duplicate_as(e, "an API key with this public key"))?);
        let sql = format!("{KEY_COLUMNS} WHERE k.id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_one(pool).await?))
    }

    /// A key by its public identifier, revoked or not.
    pub async fn api_key_by_public(&self, public_key: &str) -> Result<Option<ApiKeyRow>> {
        let sql = format!("{KEY_COLUMNS} WHERE k.public_key = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(public_key).fetch_optional(pool).await?))
    }

    /// A bearer key by the hash of its token, revoked or not.
    pub async fn api_key_by_token_hash(&self, token_hash: &str) -> Result<Option<ApiKeyRow>> {
        let sql = format!("{KEY_COLUMNS} WHERE k.token_hash = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(token_hash).fetch_optional(pool).await?))
    }

    pub async fn list_api_keys(&self, merchant: MerchantId) -> Result<Vec<ApiKeyRow>> {
        let sql = format!("{KEY_COLUMNS} WHERE k.merchant_id = $1 ORDER BY k.id");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.0).fetch_all(pool).await?))
    }

    /// Sets a merchant's status (`blocked` with its reason, or `active`); returns
    /// false when it already had that status (nothing changed) or does not exist.
    pub async fn set_merchant_status(&self, merchant: MerchantId, status: &str, reason: Option<&str>) -> Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
                "UPDATE merchants SET status = $1, blocked_reason = $2, status_changed_at_ms = $3 WHERE id = $4 AND status <> $1")
            .bind(status)
            .bind(reason)
            .bind(self.now_ms())
            .bind(merchant.0)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Revokes a key; returns false if it did not exist or was already revoked.
    pub async fn revoke_api_key(&self, public_key: &str) -> Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
                "UPDATE api_keys SET revoked_at_ms = $1 WHERE public_key = $2 AND revoked_at_ms IS NULL")
            .bind(self.now_ms())
            .bind(public_key)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }
}
