//! Idempotency records: how a request behind the engine's one idempotency entry point
//! ended. Written once the request has ended, never before it runs.

use kassa_core::ledger::MerchantId;

use crate::{on_pool, Result, Store};

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// It took effect (the effect is stored under the request's key).
    Done,
    /// It was refused; the refusal as the engine recorded it.
    Refused(String),
}

/// A request's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// A hash of what was asked.
    pub fingerprint: Vec<u8>,
    pub outcome: ClaimOutcome,
}

impl Store {
    /// The record of `key` in `scope` for `merchant`, unless it has expired.
    pub async fn idempotency_record(&self, merchant: MerchantId, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        let now = self.now_ms();
        let row: Option<(Vec<u8>, String, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(
                    "SELECT fingerprint, outcome, refusal FROM idempotency_claims
                     WHERE merchant_id = $1 AND scope = $2 AND request_key = $3 AND expires_at_ms >= $4")
                .bind(merchant.0)
                .bind(scope)
                .bind(key)
                .bind(now)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(fingerprint, outcome, refusal)| IdempotencyRecord {
            fingerprint,
            outcome: if outcome == "done" { ClaimOutcome::Done } else { ClaimOutcome::Refused(refusal.unwrap_or_default()) },
        }))
    }

    /// Records how the request behind `key` ended, kept until `expires_at_ms`. The
    /// first record of a key stands (a concurrent duplicate's is dropped); expired
    /// records are removed on the way.
    pub async fn record_idempotency(
        &self,
        merchant: MerchantId,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        outcome: &ClaimOutcome,
        expires_at_ms: i64,
    ) -> Result<()> {
        let now = self.now_ms();
        let (name, refusal) = match outcome {
            ClaimOutcome::Done => ("done", None),
            ClaimOutcome::Refused(r) => ("refused", Some(r.as_str())),
        };
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency_claims WHERE expires_at_ms < $1").bind(now).execute(pool).await?;
            sqlx::query(
                    "INSERT INTO idempotency_claims (merchant_id, scope, request_key, fingerprint, outcome, refusal, created_at_ms, expires_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING")
                .bind(merchant.0)
                .bind(scope)
                .bind(key)
                .bind(fingerprint)
                .bind(name)
                .bind(refusal)
                .bind(now)
                .bind(expires_at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
