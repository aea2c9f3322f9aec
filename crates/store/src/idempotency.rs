//! Idempotency claims: the records behind the engine's one idempotency entry point.

use kassa_core::ledger::MerchantId;

use crate::{on_pool, Result, Store};

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: this caller runs the request.
    First,
    /// The key was claimed before.
    Seen {
        /// Whether the earlier request asked for the same thing.
        same_request: bool,
        /// How it ended: None while it runs (or when it was interrupted).
        outcome: Option<ClaimOutcome>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    Done,
    Refused(String),
}

impl Store {
    /// Claims `key` in `scope` for `merchant`, or reports the earlier claim. Claims
    /// past their expiry are forgotten first (a repeat that late is refused by its
    /// caller's own rules, e.g. a signed request's timestamp window).
    pub async fn claim_idempotency_key(
        &self,
        merchant: MerchantId,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        expires_at_ms: i64,
    ) -> Result<Claim> {
        let now = self.now_ms();
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency_claims WHERE expires_at_ms < $1").bind(now).execute(pool).await?;
            let inserted = sqlx::query(
                    "INSERT INTO idempotency_claims (merchant_id, scope, request_key, fingerprint, created_at_ms, expires_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
                .bind(merchant.0)
                .bind(scope)
                .bind(key)
                .bind(fingerprint)
                .bind(now)
                .bind(expires_at_ms)
                .execute(pool)
                .await?
                .rows_affected();
            if inserted == 1 {
                return Ok(Claim::First);
            }
            let row: Option<(Vec<u8>, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT fingerprint, outcome, refusal FROM idempotency_claims WHERE merchant_id = $1 AND scope = $2 AND request_key = $3")
                .bind(merchant.0)
                .bind(scope)
                .bind(key)
                .fetch_optional(pool)
                .await?;
            // Gone between the insert and the read (expired meanwhile): claim again.
            let Some((stored, outcome, refusal)) = row else { return Box::pin(self.claim_idempotency_key(merchant, scope, key, fingerprint, expires_at_ms)).await };
            let outcome = match outcome.as_deref() {
                Some("done") => Some(ClaimOutcome::Done),
                Some(_) => Some(ClaimOutcome::Refused(refusal.unwrap_or_default())),
                None => None,
            };
            Ok(Claim::Seen { same_request: stored == fingerprint, outcome })
        })
    }

    /// Records how the request behind a claim ended.
    pub async fn finish_idempotency_claim(&self, merchant: MerchantId, scope: &str, key: &str, outcome: &ClaimOutcome) -> Result<()> {
        let (name, refusal) = match outcome {
            ClaimOutcome::Done => ("done", None),
            ClaimOutcome::Refused(r) => ("refused", Some(r.as_str())),
        };
        on_pool!(self, pool => {
            sqlx::query("UPDATE idempotency_claims SET outcome = $1, refusal = $2 WHERE merchant_id = $3 AND scope = $4 AND request_key = $5")
                .bind(name)
                .bind(refusal)
                .bind(merchant.0)
                .bind(scope)
                .bind(key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
