//! The engine's one idempotency entry point (`Engine::once`), on both backends: a
//! repeat never runs the request again and gets what the first arrival got (I1), the
//! same key with another request is refused (I2), concurrent duplicates take effect
//! once (I3), a refused request is answered with the same refusal even when it would
//! pass now, a request that failed (or was interrupted) before taking effect is
//! processed as new, and a record is forgotten after its lifetime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kassa_core::ledger::{LedgerError, MerchantId};
use kassa_engine::adjustments::AdjustmentRequest;
use kassa_engine::idempotency::OnceRequest;
use kassa_engine::{Engine, EngineError};
use kassa_testkit::{both_backends, Backend, TestEngine};

fn req<'a>(m: MerchantId, key: &'a str, body: &'a [u8]) -> OnceRequest<'a> {
    OnceRequest { merchant: m, scope: "test:credit", key, request: body, keep_for: Duration::from_secs(600) }
}

/// Effects stored under their key, as a withdrawal is under its idempotency key: the
/// ledger transaction is keyed (one credit per key, however many run it), and the
/// answer it gave is kept here for `find`.
#[derive(Default)]
struct Effects(Mutex<HashMap<(i64, String), String>>);

impl Effects {
    /// The effect: credit 1.00 EUR under `key`; the answer: the balance after it.
    async fn credit(&self, engine: &Engine, m: MerchantId, key: &str) -> Result<String, EngineError> {
        let request = AdjustmentRequest {
            merchant: m,
            currency: "EUR".into(),
            amount: "1".into(),
            reason: "once".into(),
            operator: "test".into(),
            idempotency_key: Some(key.into()),
        };
        let done = engine.adjust(request).await?;
        let answer = self.0.lock().unwrap().entry((m.0, key.to_string())).or_insert(done.balance).clone();
        Ok(answer)
    }

    async fn find(&self, m: MerchantId, key: &str) -> Result<Option<String>, EngineError> {
        Ok(self.0.lock().unwrap().get(&(m.0, key.to_string())).cloned())
    }
}

fn not_run() -> Result<String, EngineError> {
    panic!("a repeat must not run")
}

async fn balance(engine: &Engine, m: MerchantId) -> String {
    engine.balances(m, None).await.unwrap().into_iter().find(|b| b.currency == "EUR").map(|b| b.balance).unwrap_or_default()
}

async fn once_takes_effect_once(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let m = t.merchant("shop").await;
    let e = &t.engine;
    let effects = Effects::default();
    let fx = &effects;
    let credit = |m: MerchantId, key: &'static str| fx.credit(e, m, key);
    let find = |m: MerchantId, key: &'static str| move || fx.find(m, key);

    // I1: the repeat is answered with the first arrival's answer, not run.
    assert_eq!(e.once(req(m, "k1", b"credit"), credit(m, "k1"), find(m, "k1")).await.unwrap(), "1.00");
    assert_eq!(e.once(req(m, "k1", b"credit"), async { not_run() }, find(m, "k1")).await.unwrap(), "1.00");
    assert_eq!(balance(e, m).await, "1.00");
    // I2: the same key asking for something else.
    let err = e.once(req(m, "k1", b"credit twice"), credit(m, "k1"), find(m, "k1")).await.unwrap_err();
    assert!(matches!(err, EngineError::Ledger(LedgerError::IdempotencyConflict { .. })), "{err}");
    // Keys are per merchant and scope.
    let other = t.merchant("other").await;
    assert_eq!(e.once(req(other, "k1", b"credit"), credit(other, "k1"), find(other, "k1")).await.unwrap(), "1.00");
    let scoped = OnceRequest { scope: "test:other", ..req(m, "k1b", b"credit") };
    assert_eq!(e.once(scoped, credit(m, "k1b"), find(m, "k1b")).await.unwrap(), "2.00");

    // I3: concurrent duplicates, one effect, and both get its answer.
    let (a, b) = tokio::join!(
        e.once(req(m, "k2", b"credit"), credit(m, "k2"), find(m, "k2")),
        e.once(req(m, "k2", b"credit"), credit(m, "k2"), find(m, "k2"))
    );
    assert_eq!((a.unwrap(), b.unwrap()), ("3.00".to_string(), "3.00".to_string()));
    assert_eq!(balance(e, m).await, "3.00", "one effect for both");

    // A refused request is answered with the same refusal, even when it would pass now.
    let refusal = || async { Err::<String, _>(EngineError::invalid("amount", "not now")) };
    let refused = e.once(req(m, "k3", b"credit"), refusal(), find(m, "k3")).await.unwrap_err();
    assert!(matches!(&refused, EngineError::Invalid { field: "amount", message } if message == "not now"), "{refused}");
    let again = e.once(req(m, "k3", b"credit"), credit(m, "k3"), find(m, "k3")).await.unwrap_err();
    assert_eq!(format!("{again:?}"), format!("{refused:?}"), "the very same refusal");
    assert_eq!(balance(e, m).await, "3.00");
    // The same for a refusal of the ledger (funds), kept with its amounts.
    let overdraw = AdjustmentRequest {
        merchant: m,
        currency: "EUR".into(),
        amount: "-100".into(),
        reason: "too much".into(),
        operator: "test".into(),
        idempotency_key: Some("k4".into()),
    };
    let first = e.once(req(m, "k4", b"debit"), async { e.adjust(overdraw.clone()).await.map(|r| r.balance) }, find(m, "k4")).await.unwrap_err();
    assert!(matches!(&first, EngineError::InsufficientFunds { currency, available, required }
        if currency == "EUR" && available == "3.00" && required == "100.00"), "{first}");
    assert_eq!(first.to_string(), "insufficient funds: 3.00 EUR available, 100.00 EUR needed", "no account ids or units");
    t.fund(m, "EUR", "200").await;
    let again = e.once(req(m, "k4", b"debit"), async { e.adjust(overdraw.clone()).await.map(|r| r.balance) }, find(m, "k4")).await.unwrap_err();
    assert_eq!(format!("{again:?}"), format!("{first:?}"), "still refused after a top-up");
    assert_eq!(balance(e, m).await, "203.00");

    // A failure (Kassa could not answer, e.g. storage down or the process killed) leaves
    // no record: the repeat is processed as new.
    let failed = e.once(req(m, "k5", b"credit"), async { Err::<String, _>(EngineError::LedgerStopped) }, find(m, "k5")).await.unwrap_err();
    assert!(matches!(failed, EngineError::LedgerStopped));
    assert_eq!(e.once(req(m, "k5", b"credit"), credit(m, "k5"), find(m, "k5")).await.unwrap(), "204.00");

    // After its lifetime a record is forgotten (a refused key is new again).
    t.advance(Duration::from_secs(601));
    assert_eq!(e.once(req(m, "k3", b"credit"), credit(m, "k3"), find(m, "k3")).await.unwrap(), "205.00");
    t.assert_books_balance().await;
}
both_backends!(once, once_takes_effect_once);
