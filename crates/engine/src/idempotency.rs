//! The one idempotency entry point a dialect calls for a request that must take
//! effect once: claim its key, run it, record how it ended, and answer every repeat
//! from that record — never by running it again.
//!
//! What a repeat gets back is the effect the first arrival left (found by the
//! caller's `find`, e.g. the withdrawal stored under the key), so a repeat of a request
//! that was interrupted after its effect (a crash) still gets that effect; a repeat of
//! a refused request is refused (`Conflict`), even when the refusal no longer holds
//! (funds topped up since); the same key with a different request is an idempotency
//! conflict.

use std::future::Future;
use std::time::Duration;

use kassa_core::ledger::{LedgerError, MerchantId};
use kassa_store::{Claim, ClaimOutcome};
use sha2::{Digest, Sha256};

use crate::{Engine, EngineError};

/// A request that takes effect once.
#[derive(Clone, Debug)]
pub struct OnceRequest<'a> {
    pub merchant: MerchantId,
    /// What kind of request (keys of different kinds never meet), e.g.
    /// `<dialect>:create_withdrawal`.
    pub scope: &'a str,
    pub key: &'a str,
    /// What is asked (any bytes that identify it, e.g. the body).
    pub request: &'a [u8],
    /// How long a repeat is answered from the record.
    pub keep_for: Duration,
}

impl Engine {
    /// Runs `run` for the first arrival of `req.key`; a repeat gets `find()`'s answer
    /// (the effect the first arrival stored) or, when the first was refused or left
    /// nothing, a `Conflict` saying so.
    pub async fn once<T, Run, Find, FindFut>(&self, req: OnceRequest<'_>, run: Run, find: Find) -> Result<T, EngineError>
    where
        Run: Future<Output = Result<T, EngineError>>,
        Find: FnOnce() -> FindFut,
        FindFut: Future<Output = Result<Option<T>, EngineError>>,
    {
        if req.key.is_empty() || req.key.len() > 500 {
            return Err(EngineError::invalid("idempotency_key", "must be 1-500 characters"));
        }
        let fingerprint = Sha256::digest(req.request);
        let expires = self.now_ms() + i64::try_from(req.keep_for.as_millis()).unwrap_or(i64::MAX / 2);
        match self.store.claim_idempotency_key(req.merchant, req.scope, req.key, &fingerprint, expires).await? {
            Claim::First => {
                let result = run.await;
                let outcome = match &result {
                    Ok(_) => ClaimOutcome::Done,
                    Err(e) if e.is_refusal() => ClaimOutcome::Refused(e.to_string()),
                    // Internal failures record nothing: a repeat looks for the effect.
                    Err(_) => return result,
                };
                self.store.finish_idempotency_claim(req.merchant, req.scope, req.key, &outcome).await?;
                result
            }
            Claim::Seen { same_request: false, .. } => {
                Err(EngineError::Ledger(LedgerError::IdempotencyConflict { key: req.key.to_string() }))
            }
            Claim::Seen { outcome: Some(ClaimOutcome::Refused(reason)), .. } => {
                Err(EngineError::Conflict(format!("this request was refused when it first arrived ({reason}); it is not run again")))
            }
            Claim::Seen { outcome, .. } => match find().await? {
                Some(effect) => Ok(effect),
                None if outcome.is_none() => {
                    Err(EngineError::Conflict("this request's first arrival is still running or was interrupted before it took effect".into()))
                }
                None => Err(EngineError::Conflict("this request was answered before, but what it did is gone".into())),
            },
        }
    }
}
