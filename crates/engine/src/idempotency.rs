//! The one idempotency entry point a dialect calls for a request that must take
//! effect once: answer a repeat with what the first arrival got, and never run a
//! request twice.
//!
//! A request takes effect by storing its effect under its key, unique per merchant
//! (a withdrawal's `idempotency_key`): that write is the claim, made in the effect's
//! own transaction, so concurrent duplicates take effect once and a request
//! interrupted before its effect is stored left nothing and is processed as new.
//! A repeat gets that effect back (found by the caller's `find`). A refusal is
//! recorded, and a repeat of a refused request gets the very same refusal, even when
//! it no longer holds (funds topped up since); a failure (storage, a node) is not
//! recorded, so a repeat runs the request again. The same key with a different
//! request is an idempotency conflict.

use std::future::Future;
use std::time::Duration;

use kassa_core::ledger::{LedgerError, MerchantId};
use kassa_store::ClaimOutcome;
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
    /// (the effect stored under the key) or the recorded refusal. `run` must store its
    /// effect under the key, unique per merchant, in the effect's own transaction.
    pub async fn once<T, Run, Find, FindFut>(&self, req: OnceRequest<'_>, run: Run, find: Find) -> Result<T, EngineError>
    where
        Run: Future<Output = Result<T, EngineError>>,
        Find: Fn() -> FindFut,
        FindFut: Future<Output = Result<Option<T>, EngineError>>,
    {
        if req.key.is_empty() || req.key.len() > 500 {
            return Err(EngineError::invalid("idempotency_key", "must be 1-500 characters"));
        }
        let fingerprint = Sha256::digest(req.request);
        let conflict = || EngineError::Ledger(LedgerError::IdempotencyConflict { key: req.key.to_string() });
        match self.store.idempotency_record(req.merchant, req.scope, req.key).await? {
            Some(record) if record.fingerprint != fingerprint.as_slice() => return Err(conflict()),
            Some(record) => {
                if let Some(effect) = find().await? {
                    return Ok(effect);
                }
                if let ClaimOutcome::Refused(refusal) = record.outcome {
                    return Err(EngineError::from_record(&refusal).unwrap_or_else(|| {
                        EngineError::Conflict("this request was refused when it first arrived; it is not run again".into())
                    }));
                }
                return Err(EngineError::Conflict("this request was answered before, but what it did is gone".into()));
            }
            None => {}
        }
        if let Some(effect) = find().await? {
            return Ok(effect);
        }
        let expires = self.now_ms().saturating_add(i64::try_from(req.keep_for.as_millis()).unwrap_or(i64::MAX / 2));
        let result = run.await;
        let outcome = match &result {
            Ok(_) => ClaimOutcome::Done,
            Err(e) => match e.record() {
                Some(refusal) => {
                    // A concurrent duplicate may have taken effect meanwhile: that is the answer.
                    if let Some(effect) = find().await? {
                        return Ok(effect);
                    }
                    ClaimOutcome::Refused(refusal)
                }
                // A failure records nothing: a repeat runs the request again.
                None => return result,
            },
        };
        // The answer stands even if it cannot be recorded: a request that took effect
        // must not be answered as failed (a client would send it again, signed anew).
        // Without the record a repeat is answered from the effect, or runs again.
        if let Err(e) = self.store.record_idempotency(req.merchant, req.scope, req.key, &fingerprint, &outcome, expires).await {
            tracing::warn!(scope = req.scope, error = %e, "the outcome of an idempotent request was not recorded");
        }
        result
    }
}
