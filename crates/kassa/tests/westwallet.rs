//! The WestWallet dialect through real HTTP, signed here independently the way each
//! official client signs (Python's json.dumps of GET parameters, Go's GET with a JSON
//! body, PHP's trailing `?` with no parameters, JavaScript's compact body): balances,
//! currencies data, address generation with its IPN delivered form-encoded, and the
//! refusals each client maps to an exception. Both backends.

use std::time::Duration;

use hmac::{Hmac, Mac};
use kassa_engine::chains::ChainSettings;
use kassa_engine::merchants::{Dialect, Scope};
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

fn sign(secret: &str, ts: &str, payload: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(payload.as_bytes());
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
    let k = app.t.engine.create_key(m, Dialect::Westwallet, scopes.to_vec(), vec![], "ww").await.unwrap();
    (m, Key { public: k.public_key, secret: k.secret.unwrap() })
}

async fn balances_and_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
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
