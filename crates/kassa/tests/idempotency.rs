//! The engine's one idempotency entry point (`Engine::once`), on both backends: a
//! repeat never runs the request again (I1), the same key with another request is
//! refused (I2), concurrent duplicates take effect once (I3), a refused request stays
//! refused, and a claim is forgotten after its lifetime.

use std::time::Duration;

use kassa_core::ledger::MerchantId;
use kassa_engine::adjustments::AdjustmentRequest;
use kassa_engine::idempotency::OnceRequest;
use kassa_engine::{Engine, EngineError};
use kassa_testkit::{both_backends, Backend, TestEngine};

fn req<'a>(m: MerchantId, key: &'a str, body: &'a [u8]) -> OnceRequest<'a> {
    OnceRequest { merchant: m, scope: "test:credit", key, request: body, keep_for: Duration::from_secs(600) }
}

/// The effect: credit 1.00 EUR (no idempotency of its own); the answer: the balance.
async fn credit(engine: &Engine, m: MerchantId) -> Result<String, EngineError> {
    engine
        .adjust(AdjustmentRequest { merchant: m, currency: "EUR".into(), amount: "1".into(), reason: "once".into(), operator: "test".into(), idempotency_key: None })
        .await?;
    balance(engine, m).await
}

async fn balance(engine: &Engine, m: MerchantId) -> Result<String, EngineError> {
    Ok(engine.balances(m, None).await?.into_iter().find(|b| b.currency == "EUR").map(|b| b.balance).unwrap_or_default())
}

async fn once_takes_effect_once(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let m = t.merchant("shop").await;
    let e = &t.engine;
    let find = || async { balance(e, m).await.map(Some) };

    // I1: the repeat is answered, not run.
    assert_eq!(e.once(req(m, "k1", b"credit"), credit(e, m), find).await.unwrap(), "1.00");
    assert_eq!(e.once(req(m, "k1", b"credit"), credit(e, m), find).await.unwrap(), "1.00");
    assert_eq!(balance(e, m).await.unwrap(), "1.00");
    // I2: the same key asking for something else.
    let err = e.once(req(m, "k1", b"credit twice"), credit(e, m), find).await.unwrap_err();
    assert!(matches!(err, EngineError::Ledger(kassa_core::ledger::LedgerError::IdempotencyConflict { .. })), "{err}");
    // Keys are per merchant and scope.
    let other = t.merchant("other").await;
    assert_eq!(e.once(req(other, "k1", b"credit"), credit(e, other), || async { balance(e, other).await.map(Some) }).await.unwrap(), "1.00");
    let scoped = OnceRequest { scope: "test:other", ..req(m, "k1", b"credit") };
    assert_eq!(e.once(scoped, credit(e, m), find).await.unwrap(), "2.00");

    // I3: concurrent duplicates, one effect; the other answers from it or says it is running.
    let (a, b) = tokio::join!(e.once(req(m, "k2", b"credit"), credit(e, m), find), e.once(req(m, "k2", b"credit"), credit(e, m), find));
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    for r in [&a, &b] {
        if let Err(err) = r {
            assert!(matches!(err, EngineError::Conflict(m) if m.contains("still running")), "{err}");
        }
    }
    assert_eq!(balance(e, m).await.unwrap(), "3.00", "one effect for both");

    // A refused request stays refused, even when it would pass now.
    let refused = e.once(req(m, "k3", b"credit"), async { Err::<String, _>(EngineError::invalid("amount", "not now")) }, find).await.unwrap_err();
    assert!(matches!(refused, EngineError::Invalid { .. }));
    let again = e.once(req(m, "k3", b"credit"), credit(e, m), find).await.unwrap_err();
    assert!(matches!(&again, EngineError::Conflict(msg) if msg.contains("refused when it first arrived (invalid amount: not now)")), "{again}");
    assert_eq!(balance(e, m).await.unwrap(), "3.00");

    // After its lifetime a claim is forgotten: the key is new again.
    t.advance(Duration::from_secs(601));
    assert_eq!(e.once(req(m, "k1", b"credit"), credit(e, m), find).await.unwrap(), "4.00");
    t.assert_books_balance().await;
}
both_backends!(once, once_takes_effect_once);
