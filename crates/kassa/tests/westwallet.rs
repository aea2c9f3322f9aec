//! The WestWallet dialect through real HTTP, signed here independently the way each
//! official client signs (Python's json.dumps of GET parameters, Go's GET with a JSON
//! body, PHP's trailing `?` with no parameters, JavaScript's compact body): balances,
//! currencies data, address generation with its IPN delivered form-encoded, and the
//! refusals each client maps to an exception. Both backends.

use std::time::Duration;

use hmac::{Hmac, Mac};
use kassa_engine::chains::ChainSettings;
use kassa_engine::merchants::Scope;
use kassa_engine::notifier::{Notifier, NotifierOptions};
use kassa_engine::watcher::Watcher;
use kassa_engine::webhooks::TargetPolicy;
use kassa_testkit::receiver::Receiver;
use kassa_testkit::{both_backends, Backend, ChainWorld, TestApp};
use serde_json::{json, Value};

struct Key {
    public: String,
    secret: String,
}

fn sign(secret: &str, ts: &str, payload: impl AsRef<[u8]>) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(payload.as_ref());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> String {
    time::OffsetDateTime::now_utc().unix_timestamp().to_string()
}

/// Sends a request signed over `payload` at `ts`; returns (status, JSON body).
async fn call(app: &TestApp, key: &Key, method: &str, path: &str, body: Option<&str>, payload: &str, ts: &str) -> (u16, Value) {
    let mut req = app.client.request(method.parse().unwrap(), app.url(path));
    req = req.header("X-API-KEY", &key.public).header("X-ACCESS-TIMESTAMP", ts).header("X-ACCESS-SIGN", sign(&key.secret, ts, payload));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}"));
    assert!(v.get("message").is_none(), "{path}: a `message` key breaks the Python client: {v}");
    (status, v)
}

async fn key(app: &TestApp, name: &str, scopes: &[Scope]) -> (kassa_core::ledger::MerchantId, Key) {
    let m = app.t.merchant(name).await;
    let k = app.t.engine.create_key(m, "westwallet", scopes.to_vec(), vec![], "ww").await.unwrap();
    (m, Key { public: k.public_key, secret: k.secret.unwrap() })
}

async fn balances_and_refusals(backend: Backend) {
    // Each of the ~45 refused credentials below must be answered as itself, so the
    // brute-force guard (tested in rate_limits.rs) is off here.
    let rate_limits = kassa_api::limits::RateLimitOptions { auth_failures: None, ..Default::default() };
    let app = TestApp::spawn_with(backend, kassa_api::HttpOptions { rate_limits, ..Default::default() }).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Receive]).await;
    app.t.fund(m, "LTC", "1.5").await;

    // Python: GET with a query, signed as json.dumps of the parameters.
    let (status, b) = call(&app, &k, "GET", "/wallet/balance?currency=LTC", None, r#"{"currency": "LTC"}"#, &now()).await;
    assert_eq!((status, b), (200, json!({"balance": "1.50000000", "currency": "LTC", "error": "ok"})));
    // JavaScript: compact; under the /westwallet prefix.
    let (status, b) = call(&app, &k, "GET", "/westwallet/wallet/balance?currency=BTC", None, r#"{"currency":"BTC"}"#, &now()).await;
    assert_eq!((status, b), (200, json!({"balance": "0.00000000", "currency": "BTC", "error": "ok"})));
    // Go: GET with a JSON body and no query.
    let (status, b) = call(&app, &k, "GET", "/wallet/balance", Some(r#"{"currency":"LTC"}"#), r#"{"currency":"LTC"}"#, &now()).await;
    assert_eq!((status, b["balance"].as_str()), (200, Some("1.50000000")));
    // PHP: a trailing `?`, no parameters: the timestamp alone is signed.
    let (status, b) = call(&app, &k, "GET", "/wallet/balances?", None, "", &now()).await;
    assert_eq!((status, b), (200, json!({"LTC": "1.50000000", "BTC": "0.00000000", "error": "ok"})), "every active currency, zero included");

    // Business errors are HTTP 200 with the code each client maps to an exception.
    let (status, b) = call(&app, &k, "GET", "/wallet/balance?currency=XYZ", None, r#"{"currency": "XYZ"}"#, &now()).await;
    assert_eq!((status, b), (200, json!({"error": "currency_not_found"})));
    // Authentication failures: 401 wrong_credentials (tampered, stale, unknown key, missing).
    let (status, b) = call(&app, &k, "GET", "/wallet/balance?currency=LTC", None, r#"{"currency": "BTC"}"#, &now()).await;
    assert_eq!((status, b), (401, json!({"error": "wrong_credentials"})), "signed for other parameters");
    let stale = (time::OffsetDateTime::now_utc().unix_timestamp() - 301).to_string();
    let (status, _) = call(&app, &k, "GET", "/wallet/balance?currency=LTC", None, r#"{"currency": "LTC"}"#, &stale).await;
    assert_eq!(status, 401, "outside the timestamp window");
    let (status, _) = call(&app, &k, "GET", "/wallet/balances", None, "", "nonsense").await;
    assert_eq!(status, 401);
    let stranger = Key { public: "no-such-key".into(), secret: k.secret.clone() };
    let (status, _) = call(&app, &stranger, "GET", "/wallet/balances", None, "", &now()).await;
    assert_eq!(status, 401);
    let resp = app.client.get(app.url("/wallet/balances")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A parameterless signature replayed onto a request with parameters is refused.
    let ts = now();
    let (status, _) = call(&app, &k, "GET", "/wallet/balance?currency=LTC", None, "", &ts).await;
    assert_eq!(status, 401);
    // Every authenticated endpoint: no headers, a stale timestamp, a tampered body, an
    // unknown key: 401 wrong_credentials, and nothing stored.
    let endpoints = [
        ("GET", "/wallet/balance?currency=LTC", None, r#"{"currency":"LTC"}"#),
        ("GET", "/wallet/balances", None, ""),
        ("POST", "/wallet/create_withdrawal", Some(r#"{"currency":"LTC","amount":"0.1","address":"x"}"#), ""),
        ("POST", "/wallet/create_withdrawal/many", Some(r#"{"currency":"LTC","transactions":[]}"#), ""),
        ("POST", "/wallet/transaction", Some(r#"{"id":2}"#), ""),
        ("POST", "/wallet/transactions", Some(r#"{"limit":5}"#), ""),
        ("POST", "/address/generate", Some(r#"{"currency":"LTC"}"#), ""),
        ("POST", "/address/create_invoice", Some(r#"{"currencies":["LTC"],"amount":"1","ipn_url":"https://x.example/"}"#), ""),
        ("GET", "/address/invoice_transactions?token=abc", None, r#"{"token":"abc"}"#),
    ];
    for (method, path, body, query_payload) in endpoints {
        let stale = (time::OffsetDateTime::now_utc().unix_timestamp() - 310).to_string();
        let future = (time::OffsetDateTime::now_utc().unix_timestamp() + 310).to_string();
        let payload = body.unwrap_or(query_payload);
        let resp = app.client.request(method.parse().unwrap(), app.url(path)).body(payload.to_string()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path} without headers");
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"error": "wrong_credentials"}));
        for ts in [&stale, &future] {
            assert_eq!(call(&app, &k, method, path, body, payload, ts).await.0, 401, "{path} at {ts}");
        }
        // Signed right and in time, the same request is not refused for its credentials.
        assert_ne!(call(&app, &k, method, path, body, payload, &now()).await.0, 401, "{path} in time");
        if let Some(b) = body {
            let tampered = format!("{b} ");
            assert_eq!(call(&app, &k, method, path, Some(&tampered), b, &now()).await.0, 401, "{path} tampered");
        }
        assert_eq!(call(&app, &stranger, method, path, body, payload, &now()).await.0, 401, "{path} unknown key");
    }
    assert_eq!(app.t.engine.transfers(m, Default::default()).await.unwrap().1, 0);
    assert_eq!(app.t.engine.invoices(m, None, 10).await.unwrap().len(), 0);

    // Permission refusals: 403.
    let (_, reader_only) = key(&app, "reader", &[Scope::Receive]).await;
    let (status, b) = call(&app, &reader_only, "GET", "/wallet/balances", None, "", &now()).await;
    assert_eq!((status, b), (403, json!({"error": "not_allowed"})));
    // A native key is not a WestWallet key.
    let (_, token) = app.merchant_with_token("native", &[Scope::Read]).await;
    let native = Key { public: token.clone(), secret: token };
    assert_eq!(call(&app, &native, "GET", "/wallet/balances", None, "", &now()).await.0, 401);

    // Public currencies data: a bare array.
    let data: Value = app.client.get(app.url("/wallet/currencies_data")).send().await.unwrap().json().await.unwrap();
    let ltc = data.as_array().unwrap().iter().find(|c| c["name"] == "LTC").unwrap();
    assert_eq!(ltc["min_withdraw"].to_string(), "0.00100000", "a JSON number, as the seed shows");
    assert_eq!((ltc["receive_active"].clone(), ltc["tickers"].clone()), (json!(true), json!(["LTC"])));
}
both_backends!(balances, balances_and_refusals);

// Address generation with an ipn_url: the deposit's IPN arrives form-encoded, pending
// when seen, completed when final.
async fn generate_and_ipn(backend: Backend) {
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    t.engine = t.engine.clone().with_target_policy(TargetPolicy::development());
    let app = TestApp::serve(t, Default::default()).await;
    let (_, k) = key(&app, "shop", &[Scope::Read, Scope::Receive]).await;
    let receiver = Receiver::start().await;
    let mut watcher = Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();
    // JavaScript-style POST: compact JSON, raw UTF-8.
    let body = json!({"currency": "LTC", "ipn_url": receiver.url("/ipn?secret=abc"), "label": "Kund 7 – Bestellung"}).to_string();
    let (status, a) = call(&app, &k, "POST", "/address/generate", Some(&body), &body, &now()).await;
    assert_eq!(status, 200, "{a}");
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["address", "currency", "dest_tag", "error", "label"], "exactly these keys");
    assert_eq!((a["currency"].as_str(), a["dest_tag"].as_str(), a["label"].as_str(), a["error"].as_str()), (Some("LTC"), Some(""), Some("Kund 7 – Bestellung"), Some("ok")));
    // Refusals: an internal ipn_url, an unknown currency, a long label.
    let bad = json!({"currency": "LTC", "ipn_url": "http://169.254.169.254/latest"}).to_string();
    assert_eq!(call(&app, &k, "POST", "/address/generate", Some(&bad), &bad, &now()).await, (200, json!({"error": "bad_ipn_url"})));
    let bad = json!({"currency": "XYZ"}).to_string();
    assert_eq!(call(&app, &k, "POST", "/address/generate", Some(&bad), &bad, &now()).await, (200, json!({"error": "currency_not_found"})));
    let bad = json!({"currency": "LTC", "label": "x".repeat(31)}).to_string();
    assert_eq!(call(&app, &k, "POST", "/address/generate", Some(&bad), &bad, &now()).await, (200, json!({"error": "bad_label"})));

    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { retry_schedule_secs: Default::default(), ..NotifierOptions::default() }).unwrap();
    let txid = node.pay(a["address"].as_str().unwrap(), "0.7").await;
    watcher.cycle().await.unwrap();
    notifier.run_once().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    notifier.run_once().await.unwrap();
    let ipn = receiver.wait_for("/ipn", 2, Duration::from_secs(10)).await;
    let forms: Vec<Vec<(String, String)>> = ipn.iter().map(|r| r.form()).collect();
    for (form, status, confirmations) in [(&forms[0], "pending", "0"), (&forms[1], "completed", "3")] {
        let f: std::collections::BTreeMap<&str, &str> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(f["status"], status);
        assert_eq!(f["amount"], "0.70000000");
        assert_eq!(f["label"], "Kund 7 – Bestellung");
        assert_eq!(f["blockchain_hash"], txid);
        assert_eq!(f["blockchain_confirmations"], confirmations);
    }
    app.t.assert_books_balance().await;
}
both_backends!(generate, generate_and_ipn);

/// A JavaScript-style signed POST (compact JSON, signed as sent).
async fn post(app: &TestApp, key: &Key, path: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    call(app, key, "POST", path, Some(&text), &text, &now()).await
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

const TX_KEYS: [&str; 12] =
    ["address", "amount", "blockchain_confirmations", "blockchain_hash", "currency", "dest_tag", "error", "fee", "id", "label", "status", "type"];
const ITEM_KEYS: [&str; 14] = [
    "address", "amount", "blockchain_confirmations", "blockchain_hash", "created_at", "currency", "description", "dest_tag", "fee", "id", "label",
    "status", "type", "updated_at",
];

fn is_ww_time(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':' && b[16] == b':'
}

async fn world_with_rates(backend: Backend) -> (TestApp, kassa_testkit::litecoin::LitecoinNode) {
    use kassa_core::rates::Rate;
    use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let rates = Rates::new(RatesOptions {
        sources: vec![Source::Fixed { rates: [("LTC/USD".to_string(), Rate::parse("100").unwrap())].into() }],
        pairs: vec![PairConfig { base: "LTC".into(), quote: "USD".into(), spread_e6: 0, min_base_units: 0, min_deposit_base_units: 0 }],
        ..RatesOptions::default()
    }, t.engine.clock().clone())
    .unwrap();
    rates.refresh().await;
    t.engine = t
        .engine
        .clone()
        .with_target_policy(TargetPolicy::development())
        .with_rates(rates)
        .with_invoice_settings(kassa_engine::invoices::InvoiceSettings { public_url: "https://pay.example.com".into(), ..Default::default() });
    (TestApp::serve(t, Default::default()).await, node)
}

/// What the merchant's books show: (WestWallet balance, transactions count).
async fn books(app: &TestApp, k: &Key) -> (String, i64) {
    let (_, b) = call(app, k, "GET", "/wallet/balance?currency=LTC", None, r#"{"currency":"LTC"}"#, &now()).await;
    let (_, list) = post(app, k, "/wallet/transactions", &json!({})).await;
    (b["balance"].as_str().unwrap().to_string(), list["count"].as_i64().unwrap())
}

// Withdrawals (single, replayed, bulk with the fee discount, every refusal storing
// nothing), the transaction lookups and history, invoices with their page and IPN,
// and withdrawal IPNs, on a real regtest network.
async fn withdrawals_history_and_invoices(backend: Backend) {
    let (app, node) = world_with_rates(backend).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Receive, Scope::Withdraw]).await;
    let receiver = Receiver::start().await;
    let mut watcher = Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();
    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { retry_schedule_secs: Default::default(), ..NotifierOptions::default() }).unwrap();
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(app.t.engine.clone(), "litecoin", Duration::ZERO).unwrap();

    // A real deposit to a labelled address; found again by its label.
    let (_, a) = post(&app, &k, "/address/generate", &json!({"currency": "LTC", "label": "cust-1"})).await;
    let dtx = node.pay(a["address"].as_str().unwrap(), "3").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    let (status, r) = post(&app, &k, "/wallet/transaction", &json!({"label": "cust-1"})).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&r), TX_KEYS, "{r}");
    assert_eq!(r["id"].as_i64().unwrap() % 2, 0, "deposits have even ids");
    assert_eq!((r["type"].as_str(), r["status"].as_str(), r["amount"].as_str()), (Some("receive"), Some("completed"), Some("3.00000000")));
    assert_eq!((r["blockchain_hash"].as_str(), r["blockchain_confirmations"].as_i64(), r["label"].as_str()), (Some(dtx.as_str()), Some(3), Some("cust-1")));
    let receive_id = r["id"].as_i64().unwrap();
    // By id, the PHP way (a string), the same object.
    let (_, by_id) = post(&app, &k, "/wallet/transaction", &json!({"id": receive_id.to_string()})).await;
    assert_eq!(by_id, r);
    assert_eq!(books(&app, &k).await, ("3.00000000".into(), 1));

    // A single withdrawal, with its IPN: pending status, empty hash, fee 0.0001 + 0.5 %.
    let dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let body = json!({"currency": "LTC", "amount": "0.5", "address": dest, "dest_tag": "", "description": "Auszahlung für Jürgen", "priority": "high",
        "ipn_url": receiver.url("/ipn-out?t=1")})
    .to_string();
    let ts = now();
    let (status, w) = call(&app, &k, "POST", "/wallet/create_withdrawal", Some(&body), &body, &ts).await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(keys(&w), TX_KEYS);
    assert_eq!(w["id"].as_i64().unwrap() % 2, 1, "withdrawals have odd ids");
    assert_eq!((w["type"].as_str(), w["status"].as_str(), w["blockchain_hash"].as_str()), (Some("send"), Some("pending"), Some("")));
    assert_eq!((w["amount"].as_str(), w["fee"].as_str(), w["address"].as_str()), (Some("0.50000000"), Some("0.00260000"), Some(dest.as_str())));
    // The same signed request again (a replay) returns the same withdrawal, paid once.
    let (_, again) = call(&app, &k, "POST", "/wallet/create_withdrawal", Some(&body), &body, &ts).await;
    assert_eq!(again, w);
    assert_eq!(books(&app, &k).await, ("2.49740000".into(), 2));

    // Refusals, each with its code, and nothing stored.
    let good = |extra: Value| {
        let mut b = json!({"currency": "LTC", "amount": "0.1", "address": dest});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (body, code) in [
        (good(json!({"currency": "XYZ"})), "currency_not_found"),
        (good(json!({"currency": "BTC"})), "currency_not_found"),
        (good(json!({"currency": "EUR"})), "currency_not_found"),
        (good(json!({"address": "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"})), "bad_address"),
        (good(json!({"address": "rltc1qnotanaddress"})), "bad_address"),
        (good(json!({"address": ""})), "bad_address"),
        (good(json!({"address": ["x"]})), "bad_address"),
        (good(json!({"dest_tag": "123"})), "bad_dest_tag"),
        (good(json!({"amount": "0.123456789"})), "bad_amount"),
        (good(json!({"amount": "abc"})), "bad_amount"),
        (good(json!({"amount": "-1"})), "bad_amount"),
        (good(json!({"amount": "0"})), "bad_amount"),
        (good(json!({"amount": {"v": 1}})), "bad_amount"),
        (good(json!({"amount": null})), "bad_amount"),
        (good(json!({"amount": "0.0009"})), "min_withdraw_error"),
        (good(json!({"amount": "100.00000001"})), "max_withdraw_error"),
        (good(json!({"amount": "50"})), "insufficient_funds"),
        (good(json!({"priority": "urgent"})), "bad_priority"),
        (good(json!({"ipn_url": "http://169.254.169.254/x"})), "bad_ipn_url"),
        (good(json!({"description": "x".repeat(1001)})), "bad_description"),
    ] {
        assert_eq!(post(&app, &k, "/wallet/create_withdrawal", &body).await, (200, json!({"error": code})), "{body}");
    }
    // A correctly signed body that is not UTF-8: a bad request, not a bad signature.
    let bytes: &[u8] = b"{\"currency\":\"LTC\",\"description\":\"\xff\xfe\"}";
    let ts = now();
    let resp = reqwest::Client::new()
        .post(app.url("/wallet/create_withdrawal"))
        .header("X-API-KEY", &k.public)
        .header("X-ACCESS-TIMESTAMP", &ts)
        .header("X-ACCESS-SIGN", sign(&k.secret, &ts, bytes))
        .header("content-type", "application/json")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), resp.json::<Value>().await.unwrap()), (200, json!({"error": "bad_request"})));
    let text = "{not json";
    assert_eq!(call(&app, &k, "POST", "/wallet/create_withdrawal", Some(text), text, &now()).await, (200, json!({"error": "bad_request"})));
    // A huge body: 413 in this dialect's shape.
    // (Just over the 1 MiB limit, on a connection of its own: the server answers
    // before reading the rest and closes that connection.)
    let huge = format!("{{\"currency\":\"LTC\",\"description\":\"{}\"}}", "x".repeat(1024 * 1024));
    let ts = now();
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let resp = once
        .post(app.url("/wallet/create_withdrawal"))
        .header("X-API-KEY", &k.public)
        .header("X-ACCESS-TIMESTAMP", &ts)
        .header("X-ACCESS-SIGN", sign(&k.secret, &ts, &huge))
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), resp.json::<Value>().await.unwrap()), (413, json!({"error": "body_too_large"})));
    // Control characters (a NUL cannot be stored) are refused before anything is taken.
    assert_eq!(post(&app, &k, "/wallet/create_withdrawal", &good(json!({"description": "a\u{0}b"}))).await, (200, json!({"error": "bad_description"})));
    assert_eq!(post(&app, &k, "/address/generate", &json!({"currency": "LTC", "label": "a\u{0}b"})).await, (200, json!({"error": "bad_label"})));
    // A signed request refused, replayed: the same refusal. Refused for funds and
    // replayed after a top-up: still refused as it was, never paid.
    let big = json!({"currency": "LTC", "amount": "5", "address": dest}).to_string();
    let ts = now();
    assert_eq!(call(&app, &k, "POST", "/wallet/create_withdrawal", Some(&big), &big, &ts).await, (200, json!({"error": "insufficient_funds"})));
    app.t.fund(m, "LTC", "10").await;
    assert_eq!(call(&app, &k, "POST", "/wallet/create_withdrawal", Some(&big), &big, &ts).await, (200, json!({"error": "insufficient_funds"})));
    let over = json!({"currency": "LTC", "amount": "100.00000001", "address": dest}).to_string();
    let ts = now();
    for _ in 0..2 {
        assert_eq!(call(&app, &k, "POST", "/wallet/create_withdrawal", Some(&over), &over, &ts).await, (200, json!({"error": "max_withdraw_error"})));
    }
    app.t.fund(m, "LTC", "-10").await;
    assert_eq!(books(&app, &k).await, ("2.49740000".into(), 2), "refusals store nothing");
    // A key without the withdraw scope: 403; a blocked account: account_blocked.
    let (_, reader) = key(&app, "reader", &[Scope::Read]).await;
    assert_eq!(post(&app, &reader, "/wallet/create_withdrawal", &good(json!({}))).await, (403, json!({"error": "not_allowed"})));

    // Broadcast: the hash appears; confirmed: completed. The IPN says pending, then completed.
    broadcaster.cycle().await.unwrap();
    notifier.run_once().await.unwrap();
    receiver.wait_for("/ipn-out", 1, Duration::from_secs(10)).await;
    let (_, sent) = post(&app, &k, "/wallet/transaction", &json!({"id": w["id"]})).await;
    let txid = sent["blockchain_hash"].as_str().unwrap().to_string();
    assert_eq!((sent["status"].as_str(), txid.len()), (Some("pending"), 64));
    node.mine(3).await;
    broadcaster.cycle().await.unwrap();
    let (_, done) = post(&app, &k, "/wallet/transaction", &json!({"id": w["id"]})).await;
    assert_eq!((done["status"].as_str(), done["blockchain_confirmations"].as_i64()), (Some("completed"), Some(3)));
    notifier.run_once().await.unwrap();
    let ipn = receiver.wait_for("/ipn-out", 2, Duration::from_secs(10)).await;
    for (r, status) in ipn.iter().zip(["pending", "completed"]) {
        let f: std::collections::BTreeMap<String, String> = r.form().into_iter().collect();
        assert_eq!((f["id"].as_str(), f["status"].as_str(), f["blockchain_hash"].as_str()), (w["id"].to_string().as_str(), status, txid.as_str()));
        assert_eq!((f["amount"].as_str(), f["fee"].as_str()), ("0.50000000", "0.00260000"));
    }

    // Bulk: the largest payment that goes through pays the full fee, the others half the
    // fixed part; failures answer in place; the rest go in one transaction.
    let to: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string());
        }
        v
    };
    let bulk = json!({"currency": "LTC", "priority": "high", "transactions": [
        {"address": to[0], "amount": "0.2", "description": "40124"},
        {"address": to[1], "amount": "1000", "description": "too much"},
        {"address": to[1], "amount": "0.3", "description": "40125"},
        {"address": "nonsense", "amount": "0.1", "description": "40126"},
        {"address": to[2], "amount": "0.1"},
        {"address": to[2], "amount": "0.0001"},
        "not an object",
    ]});
    let (status, many) = post(&app, &k, "/wallet/create_withdrawal/many", &bulk).await;
    assert_eq!((status, many["error"].as_str()), (200, Some("ok")), "{many}");
    let results = many["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    let codes: Vec<&str> = results.iter().map(|r| r["error"].as_str().unwrap()).collect();
    assert_eq!(codes, ["ok", "max_withdraw_error", "ok", "bad_address", "ok", "min_withdraw_error", "bad_request"]);
    let fees: Vec<&str> = [0, 2, 4].iter().map(|&i| results[i]["fee"].as_str().unwrap()).collect();
    // 0.3 pays 0.0001 + 0.0015; 0.2 pays 0.00005 + 0.001; 0.1 pays 0.00005 + 0.0005.
    assert_eq!(fees, ["0.00105000", "0.00160000", "0.00055000"]);
    let mut ok_keys = TX_KEYS.to_vec();
    ok_keys.push("description");
    ok_keys.sort();
    assert_eq!(keys(&results[0]), ok_keys);
    assert_eq!((results[0]["description"].as_str(), results[4]["description"].as_str()), (Some("40124"), Some("")));
    assert_eq!(results[3], json!({"address": "nonsense", "amount": "0.1", "description": "40126", "error": "bad_address"}));
    let r = broadcaster.cycle().await.unwrap();
    assert_eq!((r.payouts_sent, r.withdrawals_sent), (1, 3), "one transaction pays the bulk request");
    let hashes: std::collections::BTreeSet<String> = {
        let mut h = std::collections::BTreeSet::new();
        for i in [0, 2, 4] {
            let (_, t) = post(&app, &k, "/wallet/transaction", &json!({"id": results[i]["id"]})).await;
            h.insert(t["blockchain_hash"].as_str().unwrap().to_string());
        }
        h
    };
    assert_eq!(hashes.len(), 1);
    // 2.4974 − (0.2 + 0.3 + 0.1) − (0.00105 + 0.0016 + 0.00055)
    assert_eq!(books(&app, &k).await, ("1.89420000".into(), 5));
    // Insufficient funds for one payment of a bulk request: that one alone fails.
    let poor = json!({"currency": "LTC", "transactions": [{"address": to[0], "amount": "99"}]}).to_string();
    let ts = now();
    let (_, refused) = call(&app, &k, "POST", "/wallet/create_withdrawal/many", Some(&poor), &poor, &ts).await;
    assert_eq!(refused["results"][0]["error"], "insufficient_funds");
    // Replayed after a top-up: refused as it was, never paid.
    app.t.fund(m, "LTC", "100").await;
    let (_, replayed) = call(&app, &k, "POST", "/wallet/create_withdrawal/many", Some(&poor), &poor, &ts).await;
    assert_eq!(replayed, refused);
    app.t.fund(m, "LTC", "-100").await;
    // One transaction pays an address once; a replayed bulk request answers as the first did.
    let twice = json!({"currency": "LTC", "transactions": [{"address": to[0], "amount": "0.01"}, {"address": to[0], "amount": 0.02}]}).to_string();
    let ts = now();
    let (_, first) = call(&app, &k, "POST", "/wallet/create_withdrawal/many", Some(&twice), &twice, &ts).await;
    assert_eq!(first["results"][1], json!({"address": to[0], "amount": "0.02", "description": "", "error": "duplicate_address"}));
    assert_eq!(first["results"][0]["error"], "ok");
    let (_, replayed) = call(&app, &k, "POST", "/wallet/create_withdrawal/many", Some(&twice), &twice, &ts).await;
    assert_eq!(replayed["results"][0], first["results"][0], "the same withdrawal, not a second");
    assert_eq!(replayed["results"][1], first["results"][1], "the same refusal");
    broadcaster.cycle().await.unwrap();
    // 1.8942 − 0.01 − (0.0001 + 0.00005)
    assert_eq!(books(&app, &k).await, ("1.88405000".into(), 6));
    for (body, code) in [
        (json!({"currency": "LTC", "transactions": []}), "bad_transactions"),
        (json!({"currency": "LTC", "transactions": "x"}), "bad_transactions"),
        (json!({"currency": "XYZ", "transactions": [{"address": to[0], "amount": "0.1"}]}), "currency_not_found"),
    ] {
        assert_eq!(post(&app, &k, "/wallet/create_withdrawal/many", &body).await, (200, json!({"error": code})));
    }
    assert_eq!(books(&app, &k).await, ("1.88405000".into(), 6));

    // History: filters, paging, order, and its own refusals.
    let (_, all) = post(&app, &k, "/wallet/transactions", &json!({"currency": "LTC", "limit": 10})).await;
    assert_eq!(all["count"], 6);
    let items = all["result"].as_array().unwrap();
    assert_eq!(keys(&items[0]), ITEM_KEYS);
    assert!(items.iter().all(|i| is_ww_time(i["created_at"].as_str().unwrap()) && is_ww_time(i["updated_at"].as_str().unwrap())));
    assert_eq!(items.last().unwrap()["id"].as_i64(), Some(receive_id), "newest first");
    assert_eq!(items[4]["description"], "Auszahlung für Jürgen");
    let (_, asc) = post(&app, &k, "/wallet/transactions", &json!({"order": "asc", "limit": 2, "offset": 1})).await;
    assert_eq!(asc["result"].as_array().unwrap().iter().map(|i| i["id"].clone()).collect::<Vec<_>>(), vec![w["id"].clone(), items[3]["id"].clone()]);
    let (_, received) = post(&app, &k, "/wallet/transactions", &json!({"type": "receive"})).await;
    assert_eq!((received["count"].as_i64(), received["result"][0]["id"].as_i64()), (Some(1), Some(receive_id)));
    let (_, completed) = post(&app, &k, "/wallet/transactions", &json!({"status": "completed"})).await;
    assert_eq!(completed["count"], 2, "the deposit and the confirmed withdrawal");
    let (_, pending) = post(&app, &k, "/wallet/transactions", &json!({"status": "pending", "type": "send"})).await;
    assert_eq!(pending["count"], 4, "the bulk payments, broadcast");
    // A deposit in a block but not yet final is pending too.
    let (_, a2) = post(&app, &k, "/address/generate", &json!({"currency": "LTC", "label": "cust-2"})).await;
    node.pay(a2["address"].as_str().unwrap(), "0.05").await;
    node.mine(1).await;
    watcher.cycle().await.unwrap();
    let (_, confirming) = post(&app, &k, "/wallet/transactions", &json!({"status": "pending", "type": "receive"})).await;
    assert_eq!((confirming["count"].as_i64(), confirming["result"][0]["blockchain_confirmations"].as_i64()), (Some(1), Some(1)), "{confirming}");
    for (body, code) in [
        (json!({"limit": 101}), "bad_limit"),
        (json!({"limit": 0}), "bad_limit"),
        (json!({"limit": "ten"}), "bad_limit"),
        (json!({"offset": -1}), "bad_offset"),
        (json!({"type": "both"}), "bad_type"),
        (json!({"order": "up"}), "bad_order"),
        (json!({"status": "done"}), "bad_status"),
        (json!({"currency": "XYZ"}), "currency_not_found"),
    ] {
        assert_eq!(post(&app, &k, "/wallet/transactions", &body).await, (200, json!({"error": code})), "{body}");
    }
    for body in [json!({"id": 999_999}), json!({"id": 0}), json!({"id": -5}), json!({"label": "nobody"}), json!({"id": "x"})] {
        assert_eq!(post(&app, &k, "/wallet/transaction", &body).await, (200, json!({"error": "not_found"})), "{body}");
    }
    assert_eq!(post(&app, &k, "/wallet/transaction", &json!({})).await, (200, json!({"error": "bad_request"})));
    // Another merchant sees none of it.
    let (_, other) = key(&app, "other", &[Scope::Read]).await;
    assert_eq!(post(&app, &other, "/wallet/transaction", &json!({"id": receive_id})).await, (200, json!({"error": "not_found"})));
    assert_eq!(post(&app, &other, "/wallet/transactions", &json!({})).await.1["count"], 0);

    // Invoices: in LTC, and in USD at the rate; the page; payments with IPN.
    let (status, inv) = post(&app, &k, "/address/create_invoice", &json!({"currencies": ["LTC"], "amount": "0.25", "amount_in_usd": false,
        "ipn_url": receiver.url("/ipn-inv"), "success_url": "https://shop.example/ok", "description": "Order 77", "label": "order-77", "ttl": 10})).await;
    assert_eq!(status, 200, "{inv}");
    assert_eq!(keys(&inv), ["allowed_currencies_data", "error", "expire_at", "token", "url"]);
    let opt = &inv["allowed_currencies_data"][0];
    assert_eq!(keys(opt), ["address", "amount", "currency_code", "dest_tag"]);
    assert_eq!((opt["amount"].as_str(), opt["currency_code"].as_str(), opt["dest_tag"].as_str()), (Some("0.25000000"), Some("LTC"), Some("")));
    let token = inv["token"].as_str().unwrap();
    assert_eq!(inv["url"], json!(format!("https://pay.example.com/pay/{token}")));
    assert!(is_ww_time(inv["expire_at"].as_str().unwrap()));
    let page = app.client.get(app.url(&format!("/pay/{token}"))).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200, "the hosted page serves the invoice");
    let (_, usd) = post(&app, &k, "/address/create_invoice", &json!({"currencies": ["LTC"], "amount": "10", "amount_in_usd": true, "ipn_url": receiver.url("/ipn-usd")})).await;
    assert_eq!(usd["allowed_currencies_data"][0]["amount"], "0.10000000", "10 USD at 100 USD/LTC");
    for (body, code) in [
        (json!({"currencies": ["LTC"], "amount": "1", "ipn_url": receiver.url("/x"), "ttl": 16}), "bad_ttl"),
        (json!({"currencies": [], "amount": "1", "ipn_url": receiver.url("/x")}), "currency_not_found"),
        (json!({"currencies": ["XYZ"], "amount": "1", "ipn_url": receiver.url("/x")}), "currency_not_found"),
        (json!({"currencies": ["LTC"], "amount": "1"}), "bad_ipn_url"),
        (json!({"currencies": ["LTC"], "amount": "x", "ipn_url": receiver.url("/x")}), "bad_amount"),
        (json!({"currencies": ["LTC"], "amount": "1", "ipn_url": receiver.url("/x"), "amount_in_usd": "maybe"}), "bad_amount_in_usd"),
    ] {
        assert_eq!(post(&app, &k, "/address/create_invoice", &body).await, (200, json!({"error": code})), "{body}");
    }
    let itx = node.pay(opt["address"].as_str().unwrap(), "0.25").await;
    watcher.cycle().await.unwrap();
    notifier.run_once().await.unwrap();
    receiver.wait_for("/ipn-inv", 1, Duration::from_secs(10)).await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    notifier.run_once().await.unwrap();
    let query = format!("token={token}");
    let (status, list) = call(&app, &k, "GET", &format!("/address/invoice_transactions?{query}"), None, &json!({"token": token}).to_string(), &now()).await;
    assert_eq!((status, list["count"].as_i64()), (200, Some(1)), "{list}");
    assert_eq!(keys(&list), ["count", "error", "result"]);
    let item = &list["result"][0];
    assert_eq!(keys(item), ITEM_KEYS);
    assert_eq!((item["blockchain_hash"].as_str(), item["status"].as_str(), item["label"].as_str(), item["description"].as_str()),
        (Some(itx.as_str()), Some("completed"), Some("order-77"), Some("Order 77")));
    let ipn = receiver.wait_for("/ipn-inv", 2, Duration::from_secs(10)).await;
    let statuses: Vec<String> = ipn.iter().map(|r| r.form().into_iter().find(|(k, _)| k == "status").unwrap().1).collect();
    assert_eq!(statuses, ["pending", "completed"]);
    let (_, missing) = call(&app, &k, "GET", "/address/invoice_transactions?token=nope", None, r#"{"token":"nope"}"#, &now()).await;
    assert_eq!(missing, json!({"error": "not_found"}));

    // A blocked account: withdrawals answer account_blocked, other calls 403.
    app.t.engine.block_merchant(&m.0.to_string(), "test: a blocked account", "test").await.unwrap();
    assert_eq!(post(&app, &k, "/wallet/create_withdrawal", &good(json!({}))).await, (200, json!({"error": "account_blocked"})));
    assert_eq!(call(&app, &k, "GET", "/wallet/balances", None, "", &now()).await.0, 403);
    // Unknown paths answer in this dialect's shape.
    assert_eq!(post(&app, &k, "/wallet/nothing_here", &json!({})).await, (404, json!({"error": "not_found"})));
    app.t.assert_books_balance().await;
    let report = app.t.engine.check().await.unwrap();
    assert!(report.ok(), "{:?}", report.violations);
}
both_backends!(withdrawals_history_invoices, withdrawals_history_and_invoices);

/// Runs the official client library of `lang` (`python` or `js`, installed by
/// `scripts/clients.sh`) over a list of `[key, secret, method, args…]` calls; returns
/// one result per call: `{"ok": …}` or `{"exception": "ClassName", …}`.
async fn official_client(lang: &str, base: &str, ops: Value) -> Vec<Value> {
    let dir = std::env::var("KASSATEST_CLIENTS_DIR")
        .expect("KASSATEST_CLIENTS_DIR is not set: run scripts/clients.sh (scripts/test.sh does) to install the official client libraries");
    let dir = std::path::Path::new(&dir);
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let mut cmd = match lang {
        "python" => {
            let mut c = tokio::process::Command::new(dir.join("py/bin/python"));
            c.arg(scripts.join("westwallet_client.py"));
            c
        }
        _ => {
            let mut c = tokio::process::Command::new("node");
            c.arg(scripts.join("westwallet_client.js")).env("NODE_PATH", dir.join("js/node_modules"));
            c
        }
    };
    let out = cmd.arg(base).arg(ops.to_string()).output().await.unwrap_or_else(|e| panic!("{lang} client: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{lang} client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{lang} client printed: {stdout}"));
    v["results"].as_array().unwrap().clone()
}

fn exception(r: &Value) -> &str {
    r["exception"].as_str().unwrap_or_else(|| panic!("expected an exception, got {r}"))
}

// The official Python and JavaScript clients, unchanged but for their base URL, against
// Kassa on a Litecoin regtest network: every method they have, real deposits and
// withdrawals, each error code raised as its exception class, non-ASCII text.
async fn official_clients_work(backend: Backend) {
    let (app, node) = world_with_rates(backend).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Receive, Scope::Withdraw]).await;
    let (_, reader) = key(&app, "reader", &[Scope::Read]).await;
    let receiver = Receiver::start().await;
    let mut watcher = Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();
    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { retry_schedule_secs: Default::default(), ..NotifierOptions::default() }).unwrap();
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(app.t.engine.clone(), "litecoin", Duration::ZERO).unwrap();
    let base = app.url("");
    let prefixed = app.url("/westwallet");
    let dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let (pk, sk) = (k.public.as_str(), k.secret.as_str());

    // Python: an address with a non-ASCII label (sent Latin-1, signed UTF-8) and an IPN.
    let r = official_client("python", &base, json!([
        [pk, sk, "generate_address", "LTC", receiver.url("/py-ipn"), "Jürgen Müller"],
        [pk, sk, "wallet_balances"],
        [pk, sk, "wallet_balance", "LTC"],
    ]))
    .await;
    let address = r[0]["ok"]["address"].as_str().unwrap_or_else(|| panic!("{r:?}")).to_string();
    assert_eq!(r[0]["ok"], json!({"address": address, "dest_tag": "", "currency": "LTC", "label": "Jürgen Müller"}));
    assert_eq!(r[1]["ok"], json!({"LTC": "0.00000000", "BTC": "0.00000000"}));
    assert_eq!(r[2]["ok"], json!({"balance": "0.00000000", "currency": "LTC"}));
    let dtx = node.pay(&address, "2").await;
    watcher.cycle().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    notifier.run_once().await.unwrap();
    let ipn = receiver.wait_for("/py-ipn", 2, Duration::from_secs(10)).await;
    let forms: Vec<std::collections::BTreeMap<String, String>> = ipn.iter().map(|r| r.form().into_iter().collect()).collect();
    let form = forms.iter().find(|f| f["status"] == "completed").unwrap_or_else(|| panic!("{forms:?}"));
    assert_eq!((form["label"].as_str(), form["status"].as_str(), form["blockchain_hash"].as_str()), ("Jürgen Müller", "completed", dtx.as_str()));
    let deposit_id: i64 = form["id"].parse().unwrap();

    // Python: a withdrawal with a non-ASCII description, and every error as its exception.
    let wrong = "0".repeat(48);
    let r = official_client("python", &prefixed, json!([
        [pk, sk, "wallet_balance", "LTC"],
        [pk, sk, "create_withdrawal", "LTC", "0.5", dest, "", "Auszahlung für Jürgen", "high"],
        [pk, sk, "transaction_info", deposit_id],
        [pk, sk, "wallet_balance", "XYZ"],
        [pk, sk, "create_withdrawal", "LTC", "0.1", "nonsense"],
        [pk, sk, "create_withdrawal", "LTC", "0.1", dest, "7"],
        [pk, sk, "create_withdrawal", "LTC", "0.0001", dest],
        [pk, sk, "create_withdrawal", "LTC", "150", dest],
        [pk, sk, "create_withdrawal", "LTC", "50", dest],
        [pk, sk, "create_withdrawal", "LTC", "abc", dest],
        [pk, sk, "transaction_info", 999_999],
        [pk, wrong, "wallet_balances"],
        [reader.public, reader.secret, "create_withdrawal", "LTC", "0.1", dest],
    ]))
    .await;
    assert_eq!(r[0]["ok"], json!({"balance": "2.00000000", "currency": "LTC"}));
    let w = &r[1]["ok"];
    let wid = w["id"].as_i64().unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(w, &json!({"id": wid, "amount": "0.50000000", "address": dest, "dest_tag": "", "currency": "LTC", "status": "pending",
        "blockchain_hash": "", "fee": "0.00260000", "label": null, "type": "send", "blockchain_confirmations": 0}));
    assert_eq!(r[2]["ok"], json!({"id": deposit_id, "amount": "2.00000000", "address": address, "dest_tag": "", "currency": "LTC", "status": "completed",
        "blockchain_hash": dtx, "fee": "0.00000000", "label": "Jürgen Müller", "type": "receive", "blockchain_confirmations": 3}));
    let raised: Vec<&str> = r[3..].iter().map(exception).collect();
    assert_eq!(raised, [
        "CurrencyNotFoundException", "BadAddressException", "BadDestTagException", "MinWithdrawException", "MaxWithdrawException",
        "InsufficientFundsException", "WestWalletAPIException", "TransactionNotFoundException", "WrongCredentialsException", "NotAllowedException",
    ]);
    assert_eq!(r[9]["args"], json!(["bad_amount"]), "other codes reach the generic exception");
    let history = app.t.engine.transfers(m, kassa_store::TransferQuery { limit: 10, ..Default::default() }).await.unwrap().0;
    assert_eq!(history.len(), 2, "refused withdrawals store nothing");
    assert_eq!(history[0].description.as_deref(), Some("Auszahlung für Jürgen"));

    broadcaster.cycle().await.unwrap();
    node.mine(3).await;
    broadcaster.cycle().await.unwrap();
    let r = official_client("python", &base, json!([[pk, sk, "transaction_info", wid]])).await;
    assert_eq!((r[0]["ok"]["status"].as_str(), r[0]["ok"]["blockchain_hash"].as_str().map(str::len)), (Some("completed"), Some(64)));

    // JavaScript: every method, and its error classes (axios rejects 4xx before the
    // client looks at the body).
    let r = official_client("js", &base, json!([
        [pk, sk, "walletBalance", "LTC"],
        [pk, sk, "walletBalances"],
        [pk, sk, "generateAddress", "LTC", "", "js-1"],
        [pk, sk, "createWithdrawal", "LTC", "0.1", dest],
        [pk, sk, "transactionInfo", wid],
        [pk, sk, "createInvoice", ["LTC"], "0.3", false, receiver.url("/js-ipn")],
        [pk, sk, "createInvoice", ["LTC"], "5", true, receiver.url("/js-ipn"), "https://shop.example/ok", "Bestellung", "inv-js", 5],
        [pk, sk, "walletBalance", "XYZ"],
        [pk, sk, "createWithdrawal", "LTC", "0.1", "nonsense"],
        [pk, sk, "createWithdrawal", "LTC", "0.1", dest, "7"],
        [pk, sk, "createWithdrawal", "LTC", "0.0001", dest],
        [pk, sk, "createWithdrawal", "LTC", "150", dest],
        [pk, sk, "createWithdrawal", "LTC", "50", dest],
        [pk, sk, "transactionInfo", 999_999],
        [pk, wrong, "walletBalances"],
        [reader.public, reader.secret, "createWithdrawal", "LTC", "0.1", dest],
    ]))
    .await;
    // 2 − 0.5 − 0.0026 = 1.4974
    assert_eq!(r[0]["ok"], json!({"balance": "1.49740000", "currency": "LTC", "error": "ok"}));
    assert_eq!(r[1]["ok"], json!({"LTC": "1.49740000", "BTC": "0.00000000", "error": "ok"}));
    assert_eq!((r[2]["ok"]["label"].as_str(), r[2]["ok"]["dest_tag"].as_str()), (Some("js-1"), Some("")));
    assert_eq!((r[3]["ok"]["amount"].as_str(), r[3]["ok"]["fee"].as_str(), r[3]["ok"]["status"].as_str()), (Some("0.10000000"), Some("0.00060000"), Some("pending")));
    assert_eq!((r[4]["ok"]["id"].as_i64(), r[4]["ok"]["status"].as_str()), (Some(wid), Some("completed")));
    let inv = &r[5]["ok"];
    assert_eq!(inv["allowed_currencies_data"][0]["amount"], "0.30000000", "{inv}");
    assert!(inv["url"].as_str().unwrap().ends_with(inv["token"].as_str().unwrap()));
    assert_eq!(r[6]["ok"]["allowed_currencies_data"][0]["amount"], "0.05000000", "5 USD at 100 USD/LTC");
    let raised: Vec<&str> = r[7..].iter().map(exception).collect();
    assert_eq!(raised, [
        "CurrencyNotFoundError", "BadAddressError", "BadDestTagError", "MinWithdrawError", "MaxWithdrawError", "InsufficientFundsError",
        "TransactionNotFoundError", "AxiosError", "AxiosError",
    ]);
    assert_eq!((r[14]["status"].as_i64(), r[15]["status"].as_i64()), (Some(401), Some(403)));

    // A blocked account: both clients raise their account-blocked exception.
    app.t.engine.block_merchant(&m.0.to_string(), "test: a blocked account", "test").await.unwrap();
    let py = official_client("python", &base, json!([[pk, sk, "create_withdrawal", "LTC", "0.1", dest]])).await;
    let js = official_client("js", &base, json!([[pk, sk, "createWithdrawal", "LTC", "0.1", dest]])).await;
    assert_eq!((exception(&py[0]), exception(&js[0])), ("AccountBlockedException", "AccountBlockedError"));
    app.t.assert_books_balance().await;
}
both_backends!(official_clients, official_clients_work);

// The daily count of withdrawals holds under concurrent single and bulk requests.
async fn daily_limit_under_concurrency(backend: Backend) {
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let list: Vec<kassa_core::Currency> = t
        .engine
        .currencies
        .all()
        .cloned()
        .map(|mut c| {
            if c.code.as_str() == "LTC" {
                c.max_withdrawals_per_day = Some(3);
            }
            c
        })
        .collect();
    t.engine.currencies = std::sync::Arc::new(kassa_engine::currencies::Currencies::new(list));
    let app = TestApp::serve(t, Default::default()).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Withdraw]).await;
    app.t.fund(m, "LTC", "5").await;
    let mut to = Vec::new();
    for _ in 0..10 {
        to.push(node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string());
    }
    let singles = (0..6).map(|i| {
        let body = json!({"currency": "LTC", "amount": "0.01", "address": to[i]});
        let (app, k) = (&app, &k);
        async move { post(app, k, "/wallet/create_withdrawal", &body).await.1["error"].as_str().unwrap().to_string() }
    });
    let bulk = {
        let body = json!({"currency": "LTC", "transactions": (6..10).map(|i| json!({"address": to[i], "amount": "0.01"})).collect::<Vec<_>>()});
        let (app, k) = (&app, &k);
        async move {
            let (_, r) = post(app, k, "/wallet/create_withdrawal/many", &body).await;
            r["results"].as_array().unwrap().iter().map(|x| x["error"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    let (mut codes, bulk_codes) = tokio::join!(futures_util::future::join_all(singles), bulk);
    codes.extend(bulk_codes);
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 3, "{codes:?}");
    assert!(codes.iter().all(|c| c == "ok" || c == "max_withdraw_error"), "{codes:?}");
    assert_eq!(app.t.engine.transfers(m, kassa_store::TransferQuery { limit: 20, ..Default::default() }).await.unwrap().1, 3);
    app.t.assert_books_balance().await;
}
both_backends!(daily_limit, daily_limit_under_concurrency);

// The read caches `kassa serve` turns on (`http.key_cache_ms`, `http.balance_cache_ms`):
// this process's own writes and revocations are seen at once; another process's
// within one lifetime, never later. The lifetime is measured on the engine's clock,
// which the test moves.
async fn read_caches_stay_within_their_lifetime(backend: Backend) {
    let mut t = kassa_testkit::TestEngine::new(backend).await;
    let lifetime = Duration::from_secs(60);
    // The test's clock still flows with the wall clock; the steps below take far less than this.
    let margin = Duration::from_secs(10);
    t.engine = t.engine.clone().with_read_caches(lifetime, lifetime);
    let other = t.another_instance(Default::default()).await;
    let app = TestApp::serve(t, Default::default()).await;
    // Requests are signed at the engine's time, which runs ahead of the wall clock here.
    let at = || (app.t.engine.now_ms() / 1000).to_string();
    let (m, k) = key(&app, "shop", &[Scope::Read]).await;
    let balance = || async { call(&app, &k, "GET", "/wallet/balance?currency=LTC", None, r#"{"currency":"LTC"}"#, &at()).await.1["balance"].clone() };
    assert_eq!(balance().await, "0.00000000");
    // A ledger write of this process: seen by the very next read.
    app.t.fund(m, "LTC", "1").await;
    assert_eq!(balance().await, "1.00000000");
    // Another instance's write: served from the cache until the lifetime has passed, then seen.
    other
        .adjust(kassa_engine::adjustments::AdjustmentRequest {
            merchant: m,
            currency: "LTC".into(),
            amount: "2".into(),
            reason: "elsewhere".into(),
            operator: "test".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    app.t.advance(lifetime - margin);
    assert_eq!(balance().await, "1.00000000", "the cached balance is served within its lifetime");
    app.t.advance(margin);
    assert_eq!(balance().await, "3.00000000", "another instance's write seen once the lifetime has passed");
    // A merchant blocked elsewhere: served from the cached key within the lifetime, refused after it.
    assert_eq!(call(&app, &k, "GET", "/wallet/balances", None, "", &at()).await.0, 200);
    other.block_merchant(&m.0.to_string(), "blocked by another instance", "test").await.unwrap();
    app.t.advance(lifetime - margin);
    assert_eq!(call(&app, &k, "GET", "/wallet/balances", None, "", &at()).await.0, 200, "the cached key is served within its lifetime");
    app.t.advance(margin);
    assert_eq!(call(&app, &k, "GET", "/wallet/balances", None, "", &at()).await.0, 403, "a blocked merchant refused once the lifetime has passed");
    app.t.engine.unblock_merchant(&m.0.to_string(), "test").await.unwrap();
    app.t.advance(lifetime);
    // A key revoked through this process: refused at once.
    let (_, k2) = key(&app, "second", &[Scope::Read]).await;
    assert_eq!(call(&app, &k2, "GET", "/wallet/balances", None, "", &at()).await.0, 200);
    app.t.engine.revoke_key(&k2.public).await.unwrap();
    assert_eq!(call(&app, &k2, "GET", "/wallet/balances", None, "", &at()).await.0, 401);
}
both_backends!(read_caches, read_caches_stay_within_their_lifetime);
