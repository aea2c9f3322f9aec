//! Invoices paid with real Litecoin regtest payments, on both backends: paid exactly
//! (never on 0-conf), under then completed, over, late, expired unpaid, and after a
//! reorg of the paying transaction; fiat invoices converted at a rate fixed for the
//! invoice's lifetime; idempotency by order id; every status change an event.
//! `kassa check` after all.

use std::time::Duration;

use kassa_core::rates::Rate;
use kassa_engine::chains::ChainSettings;
use kassa_engine::invoices::InvoiceSettings;
use kassa_engine::merchants::Scope;
use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
use kassa_engine::watcher::Watcher;
use kassa_testkit::{both_backends, Backend, ChainWorld, TestApp};
use serde_json::{json, Value};

/// The real app over `t`, with a fixed LTC/EUR rate and a public URL for pages.
async fn invoice_app(mut t: kassa_testkit::TestEngine) -> TestApp {
    let rates = Rates::new(RatesOptions {
        sources: vec![Source::Fixed { rates: [("LTC/EUR".to_string(), Rate::parse("80").unwrap())].into() }],
        pairs: vec![PairConfig { base: "LTC".into(), quote: "EUR".into(), spread_e6: 500_000, min_base_units: 0, min_deposit_base_units: 0 }],
        // Fetched once: fresh for the whole (clock-advancing) test.
        max_age: Duration::from_secs(86_400),
        ..RatesOptions::default()
    }, t.engine.clock().clone())
    .unwrap();
    rates.refresh().await;
    t.engine = t
        .engine
        .clone()
        .with_rates(rates)
        .with_invoice_settings(InvoiceSettings { public_url: "https://pay.example.com".into(), ..InvoiceSettings::default() });
    TestApp::serve(t, Default::default()).await
}

async fn invoice_lifecycles(backend: Backend) {
    let ChainWorld { t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let app = invoice_app(t).await;
    let (m, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Receive]).await;
    let mut watcher = Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();
    let create = |body: Value| {
        let (app, token) = (&app, &token);
        async move { app.post("/kassa/v1/invoices", token, body).await }
    };
    let get = |id: String| {
        let (app, token) = (&app, &token);
        async move { app.get(&format!("/kassa/v1/invoices/{id}"), Some(token)).await.1 }
    };

    // Paid exactly: seen (0-conf) is not paid; at 3 confirmations it is.
    let (status, exact) = create(json!({"order_id": "o-exact", "amount": "0.5", "currency": "LTC", "description": "Order #1"})).await;
    assert_eq!(status, 201, "{exact}");
    assert_eq!(exact["status"], "new");
    assert!(exact["url"].as_str().unwrap().starts_with("https://pay.example.com/pay/"));
    let opt = &exact["options"][0];
    assert_eq!((opt["currency"].as_str(), opt["amount"].as_str(), opt["remaining"].as_str()), (Some("LTC"), Some("0.50000000"), Some("0.50000000")));
    let address = opt["address"].as_str().unwrap().to_string();
    assert_eq!(opt["payment_uri"], json!(format!("litecoin:{address}?amount=0.5")));
    let id = exact["id"].as_str().unwrap().to_string();
    let txid = node.pay(&address, "0.5").await;
    watcher.cycle().await.unwrap();
    let inv = get(id.clone()).await;
    assert_eq!(inv["status"], "new", "0-conf never settles");
    assert_eq!((inv["options"][0]["pending"].as_str(), inv["options"][0]["remaining"].as_str()), (Some("0.50000000"), Some("0.00000000")));
    assert_eq!(inv["payments"][0]["txid"], json!(txid));
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    let inv = get(id.clone()).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    assert!(inv["paid_at"].is_string());
    assert_eq!(inv["payments"][0]["status"], "credited");

    // Under, then completed by a second payment.
    let (_, under) = create(json!({"order_id": "o-under", "amount": "1", "currency": "LTC"})).await;
    let (uid, uaddr) = (under["id"].as_str().unwrap().to_string(), under["options"][0]["address"].as_str().unwrap().to_string());
    node.pay(&uaddr, "0.4").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    let inv = get(uid.clone()).await;
    assert_eq!(inv["status"], "partially_paid");
    assert_eq!(inv["options"][0]["remaining"], "0.60000000");
    assert_eq!(inv["options"][0]["payment_uri"], json!(format!("litecoin:{uaddr}?amount=0.6")));
    node.pay(&uaddr, "0.6").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(get(uid.clone()).await["status"], "paid");

    // Over.
    let (_, over) = create(json!({"order_id": "o-over", "amount": "0.3", "currency": "LTC"})).await;
    node.pay(over["options"][0]["address"].as_str().unwrap(), "0.5").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(get(over["id"].as_str().unwrap().into()).await["status"], "overpaid");

    // Expired unpaid, and paid late.
    let (_, late) = create(json!({"order_id": "o-late", "amount": "0.2", "currency": "LTC", "ttl_secs": 600})).await;
    let (_, unpaid) = create(json!({"order_id": "o-unpaid", "amount": "0.2", "currency": "LTC", "ttl_secs": 600})).await;
    assert_eq!(app.t.engine.store.expire_invoices().await.unwrap(), 0, "not due yet");
    app.t.advance(Duration::from_secs(601));
    assert_eq!(app.t.engine.store.expire_invoices().await.unwrap(), 2);
    assert_eq!(get(unpaid["id"].as_str().unwrap().into()).await["status"], "expired");
    node.pay(late["options"][0]["address"].as_str().unwrap(), "0.2").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    let inv = get(late["id"].as_str().unwrap().into()).await;
    assert_eq!(inv["status"], "paid_late");
    assert_eq!(inv["payments"][0]["late"], true);
    assert_eq!(get(unpaid["id"].as_str().unwrap().into()).await["status"], "expired");

    // Paid in time but confirmed after expiry: never expired meanwhile, and paid on time.
    let (_, slow) = create(json!({"order_id": "o-slow", "amount": "0.15", "currency": "LTC", "ttl_secs": 600})).await;
    let sid = slow["id"].as_str().unwrap().to_string();
    node.pay(slow["options"][0]["address"].as_str().unwrap(), "0.15").await;
    watcher.cycle().await.unwrap();
    app.t.advance(Duration::from_secs(601));
    app.t.engine.store.expire_invoices().await.unwrap();
    assert_eq!(get(sid.clone()).await["status"], "new", "a payment on its way keeps it open");
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(get(sid.clone()).await["status"], "paid");

    // A reorg takes the paying transaction out: the invoice is unpaid again, then paid
    // again when it is mined anew.
    let (_, reorged) = create(json!({"order_id": "o-reorg", "amount": "0.25", "currency": "LTC"})).await;
    let rid = reorged["id"].as_str().unwrap().to_string();
    node.pay(reorged["options"][0]["address"].as_str().unwrap(), "0.25").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(get(rid.clone()).await["status"], "paid");
    node.reorg(3).await;
    watcher.cycle().await.unwrap();
    let inv = get(rid.clone()).await;
    assert_eq!(inv["status"], "new", "{inv}");
    assert!(inv["paid_at"].is_null());
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(get(rid.clone()).await["status"], "paid");

    // Fiat: 40.00 EUR at 80 less 0.5 % (79.6) is 0.50251257 LTC (rounded up), fixed.
    let (status, fiat) = create(json!({"order_id": "o-fiat", "amount": "40", "currency": "EUR", "success_url": "https://shop.example/thanks"})).await;
    assert_eq!(status, 201, "{fiat}");
    assert_eq!(fiat["amount"], "40.00");
    assert_eq!((fiat["options"][0]["currency"].as_str(), fiat["options"][0]["amount"].as_str()), (Some("LTC"), Some("0.50251257")));
    assert_eq!(fiat["options"][0]["rate"], "79.6");

    // Idempotent by order id: the same request returns the same invoice, another conflicts.
    let (status, again) = create(json!({"order_id": "o-fiat", "amount": "40", "currency": "EUR", "success_url": "https://shop.example/thanks"})).await;
    assert_eq!((status, again["id"].as_str()), (201, fiat["id"].as_str()));
    let (status, e) = create(json!({"order_id": "o-fiat", "amount": "41", "currency": "EUR"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("idempotency_conflict")));
    // Bad input stores nothing.
    for bad in [
        json!({"order_id": "b1", "amount": "-1", "currency": "LTC"}),
        json!({"order_id": "b2", "amount": "1", "currency": "XYZ"}),
        json!({"order_id": "b3", "amount": "1", "currency": "LTC", "currencies": ["EUR"]}),
        json!({"order_id": "b4", "amount": "1", "currency": "LTC", "ttl_secs": 0}),
        json!({"order_id": "b5", "amount": "1", "currency": "LTC", "success_url": "javascript:alert(1)"}),
        json!({"amount": "1", "currency": "LTC"}),
    ] {
        let (status, _) = create(bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (_, list) = app.get("/kassa/v1/invoices", Some(&token)).await;
    assert_eq!(list["invoices"].as_array().unwrap().len(), 8);
    // Another merchant sees none of them.
    let (_, other) = app.merchant_with_token("other", &[Scope::Read]).await;
    assert_eq!(app.get(&format!("/kassa/v1/invoices/{id}"), Some(&other)).await.0, 404);

    // Every status change raised its event, in order, for each invoice.
    app.t.engine.relay_events().await.unwrap();
    let events = app.t.engine.events_after(m, 0, 500).await.unwrap();
    let of = |id: &str| -> Vec<String> {
        events.iter().filter(|e| e["data"]["id"] == json!(id)).map(|e| e["type"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(of(&id), ["invoice.paid"]);
    assert_eq!(of(&uid), ["invoice.partially_paid", "invoice.paid"]);
    assert_eq!(of(&rid), ["invoice.paid", "invoice.new", "invoice.paid"]);
    assert_eq!(of(&sid), ["invoice.paid"]);
    assert_eq!(of(unpaid["id"].as_str().unwrap()), ["invoice.expired"]);
    assert_eq!(of(late["id"].as_str().unwrap()), ["invoice.expired", "invoice.paid_late"]);
    let paid = events.iter().find(|e| e["type"] == "invoice.paid" && e["data"]["id"] == json!(id)).unwrap();
    assert_eq!((paid["data"]["amount"].as_str(), paid["data"]["order_id"].as_str()), (Some("0.50000000"), Some("o-exact")));
    app.t.assert_books_balance().await;
}
both_backends!(lifecycles, invoice_lifecycles);

/// W7: a node whose tip stops moving (while answering as synced) marks its chain
/// lagging after the stall time, and invoices on it do not expire meanwhile; once
/// blocks come again and the scan has caught up, an unpaid one expires.
async fn a_stuck_node_holds_invoice_expiry(backend: Backend) {
    let settings = ChainSettings { stall_after: Some(Duration::from_secs(1200)), ..Default::default() };
    let ChainWorld { t, node } = ChainWorld::new(backend, settings).await;
    let app = invoice_app(t).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Receive]).await;
    let mut watcher = Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    assert!(!watcher.cycle().await.unwrap().lagging);
    let (_, unpaid) = app.post("/kassa/v1/invoices", &token, json!({"order_id": "o-stuck", "amount": "0.2", "currency": "LTC", "ttl_secs": 900})).await;
    let id = unpaid["id"].as_str().unwrap().to_string();
    let status = |id: String| {
        let (app, token) = (&app, &token);
        async move { app.get(&format!("/kassa/v1/invoices/{id}"), Some(token)).await.1["status"].clone() }
    };

    // 15 minutes without a block: within the stall time, the invoice expires as usual…
    app.t.advance(Duration::from_secs(1000));
    assert!(!watcher.cycle().await.unwrap().lagging, "1000 s is within the stall time");
    let (_, second) = app.post("/kassa/v1/invoices", &token, json!({"order_id": "o-stuck-2", "amount": "0.2", "currency": "LTC", "ttl_secs": 900})).await;
    let second = second["id"].as_str().unwrap().to_string();
    assert_eq!(app.t.engine.store.expire_invoices().await.unwrap(), 1);
    assert_eq!(status(id).await, "expired");
    // …past it, the chain lags: an alert, and no expiry.
    app.t.advance(Duration::from_secs(1000));
    assert!(watcher.cycle().await.unwrap().lagging, "2000 s without a new tip");
    assert!(app.t.engine.store.chain_lagging("litecoin").await.unwrap().is_some());
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("kassa_chain_lagging{") && l.contains("litecoin") && l.ends_with(" 1")), "{metrics}");
    assert_eq!(app.t.engine.store.expire_invoices().await.unwrap(), 0, "not while the chain lags");
    assert_eq!(status(second.clone()).await, "new");
    // A watcher of another process (a restart) still sees the chain lagging at that tip.
    let mut restarted = Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    assert!(restarted.cycle().await.unwrap().lagging);

    // Blocks again: once scanned, the mark clears and the unpaid invoice expires.
    node.mine(1).await;
    assert!(!restarted.cycle().await.unwrap().lagging);
    assert_eq!(app.t.engine.store.chain_lagging("litecoin").await.unwrap(), None);
    assert_eq!(app.t.engine.store.expire_invoices().await.unwrap(), 1);
    assert_eq!(status(second).await, "expired");
}
both_backends!(stuck_node, a_stuck_node_holds_invoice_expiry);
