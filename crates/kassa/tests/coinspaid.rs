//! The CoinsPaid-style dialect (v1 and v2) through real HTTP, each request signed here
//! independently (HMAC-SHA512 over the body bytes as sent, the way the Go, PHP and C#
//! clients serialise them): ping, currencies, accounts and deposit addresses on a real
//! litecoind, and the refusals in the spec's shapes. Both backends.

use hmac::{Hmac, Mac};
use kassa_engine::chains::ChainSettings;
use kassa_engine::merchants::Scope;
use kassa_testkit::{both_backends, Backend, ChainWorld, TestApp};
use serde_json::{json, Value};

struct Key {
    public: String,
    secret: String,
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// POSTs `body` exactly as given, signed with `key`; returns (status, JSON body).
async fn call(app: &TestApp, key: &Key, path: &str, body: &str) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url(path))
        .header("X-Processing-Key", &key.public)
        .header("X-Processing-Signature", sign(&key.secret, body.as_bytes()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}")))
}

async fn key(app: &TestApp, name: &str, scopes: &[Scope]) -> (kassa_core::ledger::MerchantId, Key) {
    let m = app.t.merchant(name).await;
    let k = app.t.engine.create_key(m, "coinspaid", scopes.to_vec(), vec![], "cp").await.unwrap();
    (m, Key { public: k.public_key, secret: k.secret.unwrap() })
}

/// Every value of `errors` is a string (clients index it as a map of strings).
fn assert_errors_shape(b: &Value) {
    let errors = b["errors"].as_object().unwrap_or_else(|| panic!("no errors object: {b}"));
    assert!(!errors.is_empty() && errors.values().all(Value::is_string), "{b}");
}

async fn reads_and_refusals(backend: Backend) {
    let rate_limits = kassa_api::limits::RateLimitOptions { auth_failures: None, ..Default::default() };
    let app = TestApp::spawn_with(backend, kassa_api::HttpOptions { rate_limits, ..Default::default() }).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Receive]).await;
    app.t.fund(m, "LTC", "1.5").await;
    app.t.fund(m, "EUR", "20").await;

    // ping: plain text, no signature needed.
    let resp = app.client.get(app.url("/api/v2/ping")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "OK");

    // accounts/list: every currency, zero included, at each one's precision; every
    // spelling of "no parameters" is accepted.
    let accounts = json!({"data": [
        {"currency": "BTC", "type": "crypto", "balance": "0.00000000"},
        {"currency": "EUR", "type": "fiat", "balance": "20.00"},
        {"currency": "LTC", "type": "crypto", "balance": "1.50000000"},
        {"currency": "USD", "type": "fiat", "balance": "0.00"},
    ]});
    for body in ["", "null", "[]", "{}"] {
        assert_eq!(call(&app, &k, "/api/v2/accounts/list", body).await, (200, accounts.clone()), "body {body:?}");
    }

    // currencies/list, with and without `visible`.
    let (status, b) = call(&app, &k, "/api/v2/currencies/list", "{}").await;
    assert_eq!(status, 200);
    let ltc = b["data"].as_array().unwrap().iter().find(|c| c["currency"] == "LTC").unwrap().clone();
    // The id: the first 31 bits of SHA-256("LTC"), the same whatever else is configured.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"LTC");
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 1;
    assert_eq!(
        ltc,
        json!({"id": id, "type": "crypto", "currency": "LTC", "minimum_amount": "0.00100000", "deposit_fee_percent": "0", "withdrawal_fee_percent": "0.5", "precision": 8})
    );
    let codes: Vec<&str> = b["data"].as_array().unwrap().iter().map(|c| c["currency"].as_str().unwrap()).collect();
    assert_eq!(codes, ["BTC", "EUR", "LTC", "USD"]);
    assert_eq!(call(&app, &k, "/api/v2/currencies/list", r#"{"visible":true}"#).await.1["data"].as_array().unwrap().len(), 4);
    assert_eq!(call(&app, &k, "/api/v2/currencies/list", r#"{"visible":false}"#).await.1, json!({"data": []}));
    let (status, b) = call(&app, &k, "/api/v2/currencies/list", r#"{"visible":"maybe"}"#).await;
    assert_eq!((status, b), (400, json!({"errors": {"visible": "visible must be true or false"}})));

    // Authentication: 403 {"error", "code"}, before the body is read.
    let unsigned = app.client.post(app.url("/api/v2/accounts/list")).body("{}").send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);
    assert_eq!(unsigned.json::<Value>().await.unwrap(), json!({"error": "the X-Processing-Key header is missing", "code": "missing_key"}));
    let resp = app.client.post(app.url("/api/v2/accounts/list")).header("X-Processing-Key", &k.public).body("{}").send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.json::<Value>().await.unwrap()["code"].clone()), (403, json!("bad_signature")));
    let tampered = app
        .client
        .post(app.url("/api/v2/accounts/list"))
        .header("X-Processing-Key", &k.public)
        .header("X-Processing-Signature", sign(&k.secret, b"{}"))
        .body(r#"{"x":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status().as_u16(), 403);
    assert_eq!(tampered.json::<Value>().await.unwrap(), json!({"error": "X-Processing-Signature does not match the request body", "code": "bad_signature"}));
    let stranger = Key { public: "no-such-key".into(), secret: k.secret.clone() };
    assert_eq!(call(&app, &stranger, "/api/v2/accounts/list", "{}").await, (403, json!({"error": "the processing key is not valid", "code": "bad_key"})));
    let ww = app.t.engine.create_key(m, "westwallet", vec![Scope::Read], vec![], "ww").await.unwrap();
    let ww = Key { public: ww.public_key, secret: ww.secret.unwrap() };
    assert_eq!(call(&app, &ww, "/api/v2/accounts/list", "{}").await.1["code"], "bad_key", "another dialect's key");
    let (_, reader) = key(&app, "reader", &[Scope::Read]).await;
    let (status, b) = call(&app, &reader, "/api/v2/addresses/take", r#"{"currency":"LTC","foreign_id":"1"}"#).await;
    assert_eq!((status, b["code"].as_str()), (403, Some("forbidden")), "{b}");

    // Malformed bodies, correctly signed: 400 in the errors envelope.
    for (body, message) in [("{", "the body is not valid JSON"), ("[1,2]", "the body must be a JSON object"), ("\"x\"", "the body must be a JSON object")] {
        assert_eq!(call(&app, &k, "/api/v2/accounts/list", body).await, (400, json!({"errors": {"request": message}})), "{body}");
    }
    // An unknown endpoint under the mount answers in the errors envelope too.
    let resp = app.client.post(app.url("/api/v2/nowhere")).body("{}").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_errors_shape(&resp.json::<Value>().await.unwrap());
}
both_backends!(reads, reads_and_refusals);

async fn deposit_addresses(backend: Backend) {
    let ChainWorld { t, node: _node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let app = TestApp::serve(t, Default::default()).await;
    let (_, k) = key(&app, "shop", &[Scope::Read, Scope::Receive]).await;

    // v2: 201 and the address object; the same foreign_id and currency give the same
    // address again. Go's struct order and a numeric foreign_id (PHP) both work.
    let (status, first) = call(&app, &k, "/api/v2/addresses/take", r#"{"currency":"LTC","foreign_id":"user-1"}"#).await;
    assert_eq!(status, 201, "{first}");
    let a = &first["data"];
    assert!(a["id"].is_i64() && a["address"].as_str().unwrap().starts_with("rltc1"), "{first}");
    assert_eq!(first, json!({"data": {"id": a["id"], "currency": "LTC", "convert_to": null, "address": a["address"], "tag": null, "foreign_id": "user-1"}}));
    let (status, again) = call(&app, &k, "/api/v2/addresses/take", r#"{"foreign_id":"user-1","currency":"LTC"}"#).await;
    assert_eq!((status, &again), (201, &first));
    let (_, other) = call(&app, &k, "/api/v2/addresses/take", r#"{"foreign_id":42,"currency":"LTC"}"#).await;
    assert_ne!(other["data"]["address"], a["address"]);
    assert_eq!(other["data"]["foreign_id"], "42", "foreign_id is emitted as a string");

    // v1: the status envelope, its own fields; the same foreign_id is the same address.
    let (status, v1) = call(&app, &k, "/api/v1/addresses/take", r#"{"foreign_id":"user-1","currency":"LTC"}"#).await;
    assert_eq!(status, 201);
    assert_eq!(v1, json!({"status": "ok", "data": {"id": a["id"], "address": a["address"], "foreign_id": "user-1", "tag": null}}));

    // Refusals: the field, a message, and in v1 a stable code; nothing stored.
    let store = app.t.db.store().await;
    let stored = || async { store.deposit_addresses_after("litecoin", 0, 1000).await.unwrap().len() };
    let before = stored().await;
    let cases: [(&str, &str, Value); 6] = [
        ("/api/v2/addresses/take", r#"{"currency":"LTC"}"#, json!({"errors": {"foreign_id": "foreign_id is required"}})),
        ("/api/v2/addresses/take", r#"{"foreign_id":"x"}"#, json!({"errors": {"currency": "currency is required"}})),
        ("/api/v2/addresses/take", r#"{"foreign_id":"x","currency":"XYZ"}"#, json!({"errors": {"currency": "XYZ is not a currency this account can use"}})),
        ("/api/v2/addresses/take", r#"{"foreign_id":"x","currency":"EUR"}"#, json!({"errors": {"currency": "EUR has no deposit addresses"}})),
        ("/api/v2/addresses/take", r#"{"foreign_id":{"a":1},"currency":"LTC"}"#, json!({"errors": {"foreign_id": "foreign_id must be a string"}})),
        (
            "/api/v1/addresses/take",
            r#"{"foreign_id":"x","currency":"XYZ"}"#,
            json!({"errors": {"currency": "XYZ is not a currency this account can use"}, "error_code": "forbidden_currency"}),
        ),
    ];
    for (path, body, expected) in cases {
        let (status, b) = call(&app, &k, path, body).await;
        assert_eq!((status, b), (400, expected), "{path} {body}");
    }
    let long = format!(r#"{{"foreign_id":"{}","currency":"LTC"}}"#, "x".repeat(129));
    let (status, b) = call(&app, &k, "/api/v1/addresses/take", &long).await;
    assert_eq!((status, b["error_code"].as_str()), (400, Some("invalid_foreign_id")));
    assert_eq!(stored().await, before, "nothing stored");
}
both_backends!(addresses, deposit_addresses);

/// An app whose engine has one pair, LTC/USD at a fixed 100 with a 1 % spread and a
/// least exchange of 0.01 LTC.
async fn app_with_rates(backend: Backend) -> TestApp {
    app_with_rates_and(backend, Default::default()).await
}

async fn app_with_rates_and(backend: Backend, options: kassa_api::HttpOptions) -> TestApp {
    let mut t = kassa_testkit::TestEngine::new(backend).await;
    add_rates(&mut t, "USD", 1_000_000).await;
    TestApp::serve(t, options).await
}

/// One pair, LTC/`quote` at a fixed 100 with a 1 % spread, a least exchange of 0.01
/// LTC and a least deposit converted of `min_deposit_base_units`.
async fn add_rates(t: &mut kassa_testkit::TestEngine, quote: &str, min_deposit_base_units: i128) {
    use kassa_core::rates::Rate;
    use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
    let rates = Rates::new(
        RatesOptions {
            sources: vec![Source::Fixed { rates: [(format!("LTC/{quote}"), Rate::parse("100").unwrap())].into() }],
            pairs: vec![PairConfig {
                base: "LTC".into(),
                quote: quote.into(),
                spread_e6: 1_000_000,
                min_base_units: 1_000_000,
                min_deposit_base_units,
            }],
            ..RatesOptions::default()
        },
        t.engine.clock().clone(),
    )
    .unwrap();
    rates.refresh().await;
    t.engine = t.engine.clone().with_rates(rates);
}

async fn pairs_rates_and_quotes(backend: Backend) {
    let app = app_with_rates(backend).await;
    let (_, k) = key(&app, "shop", &[Scope::Read, Scope::Exchange]).await;
    let ltc_usd = json!({
        "currency_from": {"currency": "LTC", "type": "crypto", "min_amount": "0.01000000", "min_amount_deposit_with_exchange": "0.01000000"},
        "currency_to": {"currency": "USD", "type": "fiat"},
        "rate_from": "1",
        "rate_to": "99.0",
    });
    let usd_ltc = json!({
        "currency_from": {"currency": "USD", "type": "fiat", "min_amount": "1.02"},
        "currency_to": {"currency": "LTC", "type": "crypto"},
        "rate_from": "1",
        "rate_to": "0.0099",
    });
    assert_eq!(call(&app, &k, "/api/v2/currencies/pairs", "{}").await, (200, json!({"data": [ltc_usd, usd_ltc]})));
    assert_eq!(call(&app, &k, "/api/v2/currencies/pairs", r#"{"currency_from":"USD"}"#).await, (200, json!({"data": [usd_ltc]})));
    assert_eq!(call(&app, &k, "/api/v2/currencies/pairs", r#"{"currency_to":"EUR"}"#).await, (200, json!({"data": []})));
    assert_eq!(call(&app, &k, "/api/v2/currencies/rates", r#"{"currency_from":"LTC","currency_to":"USD"}"#).await, (200, json!({"data": [ltc_usd]})));
    let (status, b) = call(&app, &k, "/api/v2/currencies/rates", r#"{"currency_from":"LTC","currency_to":"EUR"}"#).await;
    assert_eq!((status, b), (400, json!({"errors": {"currency_to": "LTC → EUR is not an exchangeable pair"}})));
    let (status, b) = call(&app, &k, "/api/v2/currencies/rates", r#"{"currency_from":"LTC"}"#).await;
    assert_eq!((status, b), (400, json!({"errors": {"currency_to": "currency_to is required"}})));

    // exchange/calculate: a quote held fix_period seconds, timestamps as integers.
    let (status, q) = call(&app, &k, "/api/v2/exchange/calculate", r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"1.5"}"#).await;
    assert_eq!(status, 200, "{q}");
    let d = &q["data"];
    let fixed = d["ts_fixed"].as_i64().unwrap();
    let period = d["fix_period"].as_i64().unwrap();
    assert!(period > 0);
    assert_eq!(
        q,
        json!({"data": {
            "sender_amount": "1.50000000", "sender_currency": "LTC", "receiver_amount": "148.50", "receiver_currency": "USD",
            "fee_amount": "0.00000000", "fee_currency": "LTC", "price": "99.0", "ts_fixed": fixed, "ts_release": fixed + period, "fix_period": period,
        }})
    );
    // By what the receiver gets, as a number (PHP).
    let (_, q) = call(&app, &k, "/api/v2/exchange/calculate", r#"{"sender_currency":"USD","receiver_currency":"LTC","receiver_amount":0.5}"#).await;
    assert_eq!((q["data"]["sender_amount"].as_str(), q["data"]["receiver_amount"].as_str()), (Some("50.51"), Some("0.50000000")), "{q}");
    let refusals = [
        (r#"{"sender_currency":"LTC","receiver_currency":"USD"}"#, json!({"errors": {"sender_amount": "give one of sender_amount and receiver_amount"}})),
        (r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"1","receiver_amount":"1"}"#, json!({"errors": {"sender_amount": "give one of sender_amount and receiver_amount"}})),
        (r#"{"sender_currency":"LTC","receiver_currency":"EUR","sender_amount":"1"}"#, json!({"errors": {"receiver_currency": "LTC → EUR is not an exchangeable pair"}})),
        (r#"{"sender_currency":"XYZ","receiver_currency":"USD","sender_amount":"1"}"#, json!({"errors": {"sender_currency": "XYZ is not a currency this account can use"}})),
    ];
    for (body, expected) in refusals {
        assert_eq!(call(&app, &k, "/api/v2/exchange/calculate", body).await, (400, expected), "{body}");
    }
    let bad_amounts = [
        ("0.001", "the least exchanged on LTC/USD is 0.01000000 LTC"),
        ("1.123456789", "amount \"1.123456789\" has more than 8 decimal places"),
        ("-1", "amount \"-1\" must not be negative"),
        ("1e400", "amount \"1e400\" is not a plain decimal number (digits with an optional '.'; no exponent, spaces, or signs other than a leading '-')"),
    ];
    for (amount, message) in bad_amounts {
        let body = json!({"sender_currency": "LTC", "receiver_currency": "USD", "sender_amount": amount}).to_string();
        assert_eq!(call(&app, &k, "/api/v2/exchange/calculate", &body).await, (400, json!({"errors": {"amount": message}})), "{amount}");
    }
}
both_backends!(exchange_reads, pairs_rates_and_quotes);

/// The merchant's balances as accounts/list shows them.
async fn balances(app: &TestApp, k: &Key) -> Vec<(String, String)> {
    let (_, b) = call(app, k, "/api/v2/accounts/list", "").await;
    b["data"].as_array().unwrap().iter().map(|a| (a["currency"].as_str().unwrap().to_string(), a["balance"].as_str().unwrap().to_string())).collect()
}

async fn exchange_now_once_per_foreign_id(backend: Backend) {
    let app = app_with_rates(backend).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Exchange]).await;
    app.t.fund(m, "LTC", "2").await;
    let body = r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"1.5","foreign_id":"ex-1"}"#;
    let (status, x) = call(&app, &k, "/api/v2/exchange/now", body).await;
    assert_eq!(status, 201, "{x}");
    assert!(x["data"]["id"].is_i64(), "{x}");
    assert_eq!(
        x,
        json!({"data": {
            "id": x["data"]["id"], "foreign_id": "ex-1", "type": "exchange", "sender_amount": "1.50000000", "sender_currency": "LTC",
            "receiver_amount": "148.50", "receiver_currency": "USD", "fee_amount": "0.00000000", "fee_currency": "LTC", "price": "99.0",
            "status": "processing",
        }})
    );
    let after = vec![("BTC".into(), "0.00000000".into()), ("EUR".into(), "0.00".into()), ("LTC".into(), "0.50000000".into()), ("USD".into(), "148.50".into())];
    assert_eq!(balances(&app, &k).await, after);

    // The same foreign_id again, the same request or another: 400, no second effect.
    let duplicate = json!({"errors": {"foreign_id": "an exchange with foreign_id ex-1 exists already"}});
    assert_eq!(call(&app, &k, "/api/v2/exchange/now", body).await, (400, duplicate.clone()));
    let other = r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"0.1","foreign_id":"ex-1"}"#;
    assert_eq!(call(&app, &k, "/api/v2/exchange/now", other).await, (400, duplicate));
    assert_eq!(balances(&app, &k).await, after);

    // 20 at once with one foreign_id: one exchange.
    let body = r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"0.1","foreign_id":"ex-2"}"#;
    let results = futures_util::future::join_all((0..20).map(|_| call(&app, &k, "/api/v2/exchange/now", body))).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 201).count(), 1, "{results:?}");
    let duplicate = json!({"errors": {"foreign_id": "an exchange with foreign_id ex-2 exists already"}});
    assert!(results.iter().all(|(s, b)| *s == 201 || (*s == 400 && *b == duplicate)), "{results:?}");
    let after = vec![("BTC".into(), "0.00000000".into()), ("EUR".into(), "0.00".into()), ("LTC".into(), "0.40000000".into()), ("USD".into(), "158.40".into())];
    assert_eq!(balances(&app, &k).await, after);

    // More than the balance: refused, nothing moves.
    let (status, b) = call(&app, &k, "/api/v2/exchange/now", r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"1","foreign_id":"ex-3"}"#).await;
    assert_eq!((status, b), (400, json!({"errors": {"amount": "insufficient funds: 0.40000000 LTC available, 1.00000000 LTC needed"}})));
    let (status, b) = call(&app, &k, "/api/v2/exchange/now", r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"0.1"}"#).await;
    assert_eq!((status, b), (400, json!({"errors": {"foreign_id": "foreign_id is required"}})));
    assert_eq!(balances(&app, &k).await, after);
    app.t.assert_books_balance().await;
}
both_backends!(exchange_now, exchange_now_once_per_foreign_id);

async fn exchange_fixed_at_a_quoted_price(backend: Backend) {
    let app = app_with_rates(backend).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Exchange]).await;
    app.t.fund(m, "LTC", "2").await;
    let (_, q) = call(&app, &k, "/api/v2/exchange/calculate", r#"{"sender_currency":"LTC","receiver_currency":"USD","receiver_amount":"99"}"#).await;
    let q = &q["data"];
    assert_eq!((q["sender_amount"].as_str(), q["price"].as_str()), (Some("1.00000000"), Some("99.0")), "{q}");

    let fixed = |price: &str, amount: &str, foreign_id: &str| {
        json!({"sender_currency": "LTC", "receiver_currency": "USD", "receiver_amount": amount, "price": price, "foreign_id": foreign_id}).to_string()
    };
    let no_quote = json!({"errors": {"price": "no live quote of LTC → USD at 98 for this amount: ask for a new quote"}});
    assert_eq!(call(&app, &k, "/api/v2/exchange/fixed", &fixed("98", "99", "fx-0")).await, (400, no_quote), "not the quoted price");
    let (status, b) = call(&app, &k, "/api/v2/exchange/fixed", &fixed("99.0", "98", "fx-0")).await;
    assert_eq!((status, b), (400, json!({"errors": {"price": "no live quote of LTC → USD at 99.0 for this amount: ask for a new quote"}})), "not the quoted amount");
    let (status, b) = call(&app, &k, "/api/v2/exchange/fixed", r#"{"sender_currency":"LTC","receiver_currency":"USD","receiver_amount":"99","foreign_id":"fx-0"}"#).await;
    assert_eq!((status, b), (400, json!({"errors": {"price": "price is required"}})));

    let (status, x) = call(&app, &k, "/api/v2/exchange/fixed", &fixed("99", "99", "fx-1")).await;
    assert_eq!(status, 201, "{x}");
    assert_eq!(
        (x["data"]["type"].as_str(), x["data"]["sender_amount"].as_str(), x["data"]["receiver_amount"].as_str(), x["data"]["price"].as_str()),
        (Some("exchange"), Some("1.00000000"), Some("99.00"), Some("99.0"))
    );
    let after = vec![("BTC".into(), "0.00000000".into()), ("EUR".into(), "0.00".into()), ("LTC".into(), "1.00000000".into()), ("USD".into(), "99.00".into())];
    assert_eq!(balances(&app, &k).await, after);
    // Once: the same foreign_id is refused, and the executed quote is no longer live.
    let (status, b) = call(&app, &k, "/api/v2/exchange/fixed", &fixed("99", "99", "fx-1")).await;
    assert_eq!((status, b), (400, json!({"errors": {"foreign_id": "an exchange with foreign_id fx-1 exists already"}})));
    let (status, b) = call(&app, &k, "/api/v2/exchange/fixed", &fixed("99", "99", "fx-2")).await;
    assert_eq!((status, b), (400, json!({"errors": {"price": "no live quote of LTC → USD at 99 for this amount: ask for a new quote"}})), "the executed quote is not live");
    assert_eq!(balances(&app, &k).await, after);

    // A quote past its fix_period is not live.
    let (_, q) = call(&app, &k, "/api/v2/exchange/calculate", r#"{"sender_currency":"LTC","receiver_currency":"USD","receiver_amount":"49.5"}"#).await;
    app.t.advance(std::time::Duration::from_secs(q["data"]["fix_period"].as_u64().unwrap() + 1));
    let (status, b) = call(&app, &k, "/api/v2/exchange/fixed", &fixed("99", "49.5", "fx-3")).await;
    assert_eq!((status, b), (400, json!({"errors": {"price": "no live quote of LTC → USD at 99 for this amount: ask for a new quote"}})), "an expired quote is not live");
    assert_eq!(balances(&app, &k).await, after);
    app.t.assert_books_balance().await;
}
both_backends!(exchange_fixed, exchange_fixed_at_a_quoted_price);

// exchange/calculate: 30 a minute per client IP, as the seed documents; the 31st is 429
// in the errors envelope with Retry-After, another IP is not affected, and the budget
// refills with the (moved) clock.
async fn calculate_is_limited_per_ip(backend: Backend) {
    let rate_limits = kassa_api::limits::RateLimitOptions { client_ip_header: Some("x-forwarded-for".parse().unwrap()), ..Default::default() };
    let app = app_with_rates_and(backend, kassa_api::HttpOptions { rate_limits, ..Default::default() }).await;
    let (_, k) = key(&app, "shop", &[Scope::Read, Scope::Exchange]).await;
    let body = r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"1"}"#;
    let calculate = |ip: &'static str| {
        app.client
            .post(app.url("/api/v2/exchange/calculate"))
            .header("X-Processing-Key", &k.public)
            .header("X-Processing-Signature", sign(&k.secret, body.as_bytes()))
            .header("x-forwarded-for", ip)
            .body(body)
            .send()
    };
    for i in 0..30 {
        assert_eq!(calculate("203.0.113.7").await.unwrap().status().as_u16(), 200, "request {}", i + 1);
    }
    let refused = calculate("203.0.113.7").await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "one request back every 2 s: {retry_after}");
    let b: Value = refused.json().await.unwrap();
    assert!(b["errors"]["rate_limit"].as_str().unwrap().starts_with("too many requests"), "{b}");
    assert_eq!(calculate("198.51.100.9").await.unwrap().status().as_u16(), 200, "another client has its own budget");
    // Other routes of the same client are not held back by it.
    assert_eq!(call(&app, &k, "/api/v2/currencies/pairs", "{}").await.0, 200);
    app.t.advance(std::time::Duration::from_secs(retry_after));
    assert_eq!(calculate("203.0.113.7").await.unwrap().status().as_u16(), 200, "refilled");
}
both_backends!(calculate_limit, calculate_is_limited_per_ip);

/// A merchant on a real litecoind whose CoinsPaid-style callbacks (v1 to `/cp1`, v2 to
/// `/cp2`) reach a local receiver, retried after a second; with `rates`, one LTC pair
/// (see `add_rates`). The watcher has taken its first look.
struct CallbackWorld {
    app: TestApp,
    node: kassa_testkit::litecoin::LitecoinNode,
    m: kassa_core::ledger::MerchantId,
    k: Key,
    receiver: kassa_testkit::receiver::Receiver,
    notifier: std::sync::Arc<kassa_engine::notifier::Notifier>,
    watcher: kassa_engine::watcher::Watcher,
}

async fn callback_world(backend: Backend, settings: ChainSettings, rates: Option<(&str, i128)>, scopes: &[Scope]) -> CallbackWorld {
    callback_world_from(ChainWorld::new(backend, settings).await, rates, scopes).await
}

/// The callback world over a chain world already set up (its currencies, say).
async fn callback_world_from(w: ChainWorld, rates: Option<(&str, i128)>, scopes: &[Scope]) -> CallbackWorld {
    use kassa_engine::notifier::{Notifier, NotifierOptions};
    let ChainWorld { mut t, node } = w;
    t.engine = t.engine.clone().with_target_policy(kassa_engine::webhooks::TargetPolicy::development());
    if let Some((quote, min_deposit)) = rates {
        add_rates(&mut t, quote, min_deposit).await;
    }
    let app = TestApp::serve(t, Default::default()).await;
    let (m, k) = key(&app, "shop", scopes).await;
    let receiver = kassa_testkit::receiver::Receiver::start().await;
    app.t.engine.create_endpoint(m, &receiver.url("/cp1"), "coinspaid_v1", &[]).await.unwrap();
    app.t.engine.create_endpoint(m, &receiver.url("/cp2"), "coinspaid_v2", &[]).await.unwrap();
    let schedule = kassa_api::dialects::callback_formats().names().into_iter().map(|f| (f.to_string(), vec![1])).collect();
    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { retry_schedule_secs: schedule, jitter_percent: 0, ..Default::default() }).unwrap();
    let mut watcher = kassa_engine::watcher::Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();
    CallbackWorld { app, node, m, k, receiver, notifier, watcher }
}

/// The merchant's withdrawals, as the engine lists them.
async fn withdrawals_of(app: &TestApp, m: kassa_core::ledger::MerchantId) -> Vec<kassa_engine::withdrawals::Withdrawal> {
    app.t.engine.withdrawals(kassa_store::WithdrawalQuery { merchant: Some(m), limit: 100, ..Default::default() }).await.unwrap()
}

/// The merchant's available LTC, as `accounts/list` shows it.
async fn ltc_balance(app: &TestApp, k: &Key) -> String {
    balance(app, k, "LTC").await
}

/// The merchant's available balance of `currency`, as `accounts/list` shows it.
async fn balance(app: &TestApp, k: &Key, currency: &str) -> String {
    let (_, list) = call(app, k, "/api/v2/accounts/list", "").await;
    let row = list["data"].as_array().unwrap().iter().find(|a| a["currency"] == currency).cloned().unwrap();
    row["balance"].as_str().unwrap().to_string()
}

// withdrawal/crypto (v2) and withdrawal/make (v1) on a real litecoind: a real deposit
// funds the merchant; 201 with the exact answer; a repeated foreign_id is refused and
// changes nothing; each bad request is refused with its field, nothing stored; the coins
// arrive on-chain exactly; the callbacks (v2 for the v2 address and withdrawal, v1 for
// the v1 withdrawal) are the spec's bodies, signed (HMAC-SHA512 checked here).
async fn withdrawals_on_regtest(backend: Backend) {
    let scopes = [Scope::Read, Scope::Receive, Scope::Withdraw];
    let CallbackWorld { app, node, m, k, receiver, notifier, mut watcher } = callback_world(backend, ChainSettings::default(), None, &scopes).await;
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(app.t.engine.clone(), "litecoin", std::time::Duration::ZERO).unwrap();

    // A real deposit of 2 LTC to a v2 address.
    let (_, taken) = call(&app, &k, "/api/v2/addresses/take", r#"{"currency":"LTC","foreign_id":"user-1"}"#).await;
    let deposit_address = taken["data"]["address"].as_str().unwrap().to_string();
    let dtx = node.pay(&deposit_address, "2").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(ltc_balance(&app, &k).await, "2.00000000");

    // v2: Go's struct order, amounts as strings. Fee 0.0001 + 0.5 %: sender_amount is
    // what the balance gives, receiver_amount what the address receives.
    let dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let body = format!(r#"{{"foreign_id":"w-1","amount":"0.5","currency":"LTC","address":"{dest}"}}"#);
    let (status, w) = call(&app, &k, "/api/v2/withdrawal/crypto", &body).await;
    assert_eq!(status, 201, "{w}");
    let id = w["data"]["id"].as_i64().expect("an integer id");
    assert_eq!(
        w,
        json!({"data": {"id": id, "foreign_id": "w-1", "type": "withdrawal", "status": "processing", "amount": "0.50000000",
            "sender_amount": "0.50260000", "sender_currency": "LTC", "receiver_amount": "0.50000000", "receiver_currency": "LTC"}})
    );
    assert_eq!(ltc_balance(&app, &k).await, "1.49740000");
    // The same foreign_id again, as sent or with another amount, in v2 or v1: refused,
    // nothing more held.
    let duplicate = json!({"errors": {"foreign_id": "a withdrawal with foreign_id w-1 exists already"}});
    assert_eq!(call(&app, &k, "/api/v2/withdrawal/crypto", &body).await, (400, duplicate.clone()));
    let other = format!(r#"{{"foreign_id":"w-1","amount":"0.4","currency":"LTC","address":"{dest}"}}"#);
    assert_eq!(call(&app, &k, "/api/v2/withdrawal/crypto", &other).await, (400, duplicate.clone()));
    let (status, v1dup) = call(&app, &k, "/api/v1/withdrawal/make", &other).await;
    assert_eq!((status, v1dup["error_code"].as_str(), &v1dup["errors"]), (400, Some("duplicate_foreign_id"), &duplicate["errors"]));
    assert_eq!(ltc_balance(&app, &k).await, "1.49740000");

    // v1: PHP sends the amount as a number and escapes slashes; the flat answer.
    let dest1 = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let body1 = format!(r#"{{"currency":"LTC","foreign_id":"w\/2","amount":0.25,"address":"{dest1}","tag":null}}"#);
    let (status, w1) = call(&app, &k, "/api/v1/withdrawal/make", &body1).await;
    assert_eq!(status, 201, "{w1}");
    let id1 = w1["data"]["id"].as_i64().unwrap();
    assert_eq!(
        w1,
        json!({"status": "ok", "data": {"id": id1, "currency": "LTC", "currency_fee": "LTC", "address": dest1, "tag": null, "amount": "0.25000000",
            "status": "processing"}})
    );
    assert_eq!(withdrawals_of(&app, m).await.iter().find(|w| w.id == id1).unwrap().idempotency_key, "w/2");
    assert_eq!(ltc_balance(&app, &k).await, "1.24605000");

    // Refusals: the field and a message (v1 also a stable code); nothing stored or held.
    let good = |extra: Value| {
        let mut b = json!({"foreign_id": "w-bad", "amount": "0.1", "currency": "LTC", "address": dest});
        for (key, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(key);
            } else {
                b[key] = v.clone();
            }
        }
        b.to_string()
    };
    let cases: Vec<(String, Value, &str)> = vec![
        (good(json!({"foreign_id": null})), json!({"foreign_id": "foreign_id is required"}), "bad_request"),
        (good(json!({"amount": null})), json!({"amount": "amount is required"}), "bad_request"),
        (good(json!({"address": null})), json!({"address": "address is required"}), "bad_request"),
        (good(json!({"currency": null})), json!({"currency": "currency is required"}), "bad_request"),
        (good(json!({"currency": "XYZ"})), json!({"currency": "XYZ is not a currency this account can use"}), "forbidden_currency"),
        (good(json!({"currency": "EUR"})), json!({"currency": "EUR cannot be withdrawn to an address"}), "forbidden_currency"),
        (good(json!({"amount": {"v": 1}})), json!({"amount": "amount must be a string"}), "bad_request"),
        (good(json!({"foreign_id": "x".repeat(129)})), json!({"foreign_id": "foreign_id must be at most 128 characters"}), "invalid_foreign_id"),
        (good(json!({"tag": "memo-1"})), json!({"tag": "LTC withdrawals take no tag"}), "bad_request"),
    ];
    let n_before = withdrawals_of(&app, m).await.len();
    for (body, errors, code) in &cases {
        assert_eq!(call(&app, &k, "/api/v2/withdrawal/crypto", body).await, (400, json!({ "errors": errors })), "{body}");
        let (status, b) = call(&app, &k, "/api/v1/withdrawal/make", body).await;
        assert_eq!((status, &b["errors"], b["error_code"].as_str()), (400, errors, Some(*code)), "{body}");
    }
    // The engine's refusals: each with its field and code.
    for (body, field, code) in [
        (good(json!({"address": "rltc1qnotanaddress"})), "address", "invalid_address"),
        (good(json!({"address": "LTC-address"})), "address", "invalid_address"),
        (good(json!({"amount": "0.0001"})), "amount", "amount_too_small"),
        (good(json!({"amount": "101"})), "amount", "amount_too_large"),
        (good(json!({"amount": "50"})), "amount", "not_enough_balance"),
        (good(json!({"amount": "0.123456789"})), "amount", "invalid_amount"),
        (good(json!({"amount": "-1"})), "amount", "invalid_amount"),
        (good(json!({"amount": "1e-1"})), "amount", "invalid_amount"),
        (good(json!({"amount": "99999999999999999999999999999999999999999"})), "amount", "invalid_amount"),
    ] {
        let (status, b) = call(&app, &k, "/api/v1/withdrawal/make", &body).await;
        assert_eq!(status, 400, "{body}: {b}");
        assert_errors_shape(&b);
        let message = b["errors"][field].as_str().unwrap_or_else(|| panic!("{body}: no {field} in {b}"));
        assert!(!message.is_empty());
        assert_eq!(b["error_code"].as_str(), Some(code), "{body}: {b}");
        let (status, b2) = call(&app, &k, "/api/v2/withdrawal/crypto", &body).await;
        assert_eq!((status, &b2["errors"]), (400, &b["errors"]), "{body}");
    }
    // convert_to a currency this server cannot send: refused, about convert_to.
    let (status, b) = call(&app, &k, "/api/v2/withdrawal/crypto", &good(json!({"currency": "LTC", "convert_to": "BTC"}))).await;
    assert_eq!((status, b["errors"]["convert_to"].is_string()), (400, true), "{b}");
    let (status, b) = call(&app, &k, "/api/v2/withdrawal/crypto", r#"{"foreign_id":"w-bad","amount":"0.1","#).await;
    assert_eq!(status, 400, "malformed JSON: {b}");
    assert_errors_shape(&b);
    // A 2 MB body is refused before it is read; the server serves on.
    let huge = format!(r#"{{"foreign_id":"w-big","amount":"0.1","currency":"LTC","address":"{dest}","pad":"{}"}}"#, "x".repeat(2 << 20));
    let (status, b) = call(&app, &k, "/api/v2/withdrawal/crypto", &huge).await;
    assert_eq!((status, b), (413, json!({"errors": {"body": "the request body is too large"}})));
    // Without the withdraw scope: 403 forbidden.
    let (_, reader) = key(&app, "reader", &[Scope::Read]).await;
    let (status, b) = call(&app, &reader, "/api/v2/withdrawal/crypto", &good(json!({}))).await;
    assert_eq!((status, b["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(withdrawals_of(&app, m).await.len(), n_before, "refusals store nothing");
    assert_eq!(ltc_balance(&app, &k).await, "1.24605000", "and hold nothing");

    // Paid on-chain in one transaction, exactly; confirmed after 3 blocks.
    let sent = broadcaster.cycle().await.unwrap();
    assert_eq!((sent.payouts_sent, sent.withdrawals_sent), (1, 2), "one transaction pays both");
    node.mine(3).await;
    assert_eq!(broadcaster.cycle().await.unwrap().confirmed, 1);
    let received = |a: String| {
        let node = &node;
        async move { node.miner_rpc("getreceivedbyaddress", json!([a, 3])).await.to_string() }
    };
    assert_eq!(received(dest.clone()).await, "0.50000000");
    assert_eq!(received(dest1.clone()).await, "0.25000000");
    let txid = app.t.engine.withdrawal(m, id).await.unwrap().txid.unwrap();
    watcher.cycle().await.unwrap();

    // Callbacks. v2: the deposit (seen, then confirmed) and withdrawal w-1 (broadcast,
    // then confirmed); v1: withdrawal w/2. Each signed with the merchant's key.
    for _ in 0..5 {
        notifier.run_once().await.unwrap();
    }
    let v2 = receiver.requests_to("/cp2");
    let v1 = receiver.requests_to("/cp1");
    for r in v2.iter().chain(&v1) {
        assert_eq!(r.header("x-processing-key").as_deref(), Some(k.public.as_str()));
        assert_eq!(r.header("x-processing-signature").unwrap(), sign(&k.secret, &r.body), "signed over the exact body");
        assert!(r.body.is_ascii());
    }
    // Delivered concurrently: found by what they report.
    let mut kinds: Vec<(String, String)> = v2.iter().map(|r| (r.json()["type"].as_str().unwrap().into(), r.json()["status"].as_str().unwrap().into())).collect();
    kinds.sort();
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(kinds, pairs(&[("deposit", "confirmed"), ("deposit", "not_confirmed"), ("withdrawal", "confirmed"), ("withdrawal", "not_confirmed")]));
    let find = |list: &[kassa_testkit::receiver::Received], kind: &str, status: &str| {
        list.iter().map(|r| r.json()).find(|b| b["type"] == kind && b["status"] == status).unwrap()
    };
    let deposit = find(&v2, "deposit", "confirmed");
    let (deposit_id, address_id) = (deposit["id"].as_i64().unwrap(), taken["data"]["id"].clone());
    assert_eq!(
        deposit,
        json!({"id": deposit_id, "foreign_id": "user-1", "type": "deposit",
            "crypto_address": {"id": address_id, "currency": "LTC", "convert_to": null, "address": deposit_address, "tag": null, "foreign_id": "user-1"},
            "currency_sent": {"currency": "LTC", "amount": "2.00000000"},
            "currency_received": {"currency": "LTC", "amount": "2.00000000", "amount_minus_fee": "2.00000000"},
            "transactions": [{"id": deposit_id, "currency": "LTC", "transaction_type": "blockchain", "type": "deposit", "address": deposit_address,
                "tag": null, "amount": "2.00000000", "txid": dtx, "confirmations": "3"}],
            "fees": [{"type": "deposit", "currency": "LTC", "amount": "0.00000000"}],
            "error": "", "status": "confirmed"})
    );
    assert_eq!(
        find(&v2, "withdrawal", "confirmed"),
        json!({"id": id, "foreign_id": "w-1", "type": "withdrawal",
            "crypto_address": {"id": null, "currency": "LTC", "convert_to": null, "address": dest, "tag": null, "foreign_id": null},
            "currency_sent": {"currency": "LTC", "amount": "0.50260000"},
            "currency_received": {"currency": "LTC", "amount": "0.50000000"},
            "transactions": [{"id": id, "currency": "LTC", "transaction_type": "blockchain", "type": "withdrawal", "address": dest,
                "tag": null, "amount": "0.50000000", "txid": txid, "confirmations": "3"}],
            "fees": [{"type": "withdrawal", "currency": "LTC", "amount": "0.00260000"}],
            "error": "", "status": "confirmed"})
    );
    assert_eq!(v1.len(), 2);
    assert_eq!(find(&v1, "withdrawal", "not_confirmed")["confirmations"], "0");
    assert_eq!(
        find(&v1, "withdrawal", "confirmed"),
        json!({"id": id1.to_string(), "txid": txid, "foreign_id": "w/2", "currency": "LTC", "currency_fee": "LTC", "confirmations": "3",
            "amount": "0.25000000", "fee": "0.00135000", "address": dest1, "type": "withdrawal", "status": "confirmed", "error": ""})
    );
    app.t.assert_books_balance().await;
}
both_backends!(withdrawals, withdrawals_on_regtest);

// 50 concurrent withdrawal/crypto with one foreign_id make one withdrawal (the others
// are told it is a duplicate); 50 with different foreign_ids against a balance that
// covers one make one (the others: not enough balance). Nothing else is held.
async fn concurrent_withdrawals(backend: Backend) {
    let ChainWorld { t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let app = TestApp::serve(t, Default::default()).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Withdraw]).await;
    app.t.fund(m, "LTC", "1").await;
    let dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let body = |id: &str| format!(r#"{{"foreign_id":"{id}","amount":"0.6","currency":"LTC","address":"{dest}"}}"#);

    let same = body("same");
    let answers = futures_util::future::join_all((0..50).map(|_| call(&app, &k, "/api/v2/withdrawal/crypto", &same))).await;
    let created: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (status, b) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!((*status, b["errors"]["foreign_id"].as_str()), (400, Some("a withdrawal with foreign_id same exists already")), "{b}");
    }
    assert_eq!(withdrawals_of(&app, m).await.len(), 1);
    assert_eq!(ltc_balance(&app, &k).await, "0.39690000", "0.6 + 0.0001 + 0.5 % held once");

    app.t.fund(m, "LTC", "0.3031").await; // 0.7: one more 0.6031, not two
    let bodies: Vec<String> = (0..50).map(|i| body(&format!("many-{i}"))).collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| call(&app, &k, "/api/v2/withdrawal/crypto", b))).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1, "{answers:?}");
    for (status, b) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 400, "{b}");
        assert!(b["errors"]["amount"].as_str().unwrap().contains("insufficient"), "{b}");
    }
    assert_eq!(withdrawals_of(&app, m).await.len(), 2);
    assert_eq!(ltc_balance(&app, &k).await, "0.09690000");
    app.t.assert_books_balance().await;
}
both_backends!(withdrawal_races, concurrent_withdrawals);

// Deposits with exchange on a real litecoind (LTC/EUR at 100, 1 % spread: 99 EUR per
// LTC; at least 0.5 LTC converted): 2 LTC to a convert_to address arrive as 198.00 EUR
// in one ledger transaction; 0.3 LTC is credited as LTC and reported as a plain deposit;
// reorged out after the merchant spent some EUR, the credit is taken back in both
// currencies (the EUR it no longer holds from suspense); re-mined, it converts as it
// first did. The v2 callbacks are the spec's deposit_exchange bodies.
async fn deposits_with_exchange(backend: Backend) {
    use kassa_core::ledger::SystemAccount;
    let settings = ChainSettings { max_reorg_depth: 6, ..ChainSettings::default() };
    let scopes = [Scope::Read, Scope::Receive, Scope::Exchange];
    let CallbackWorld { app, node, m, k, receiver, notifier, mut watcher } = callback_world(backend, settings, Some(("EUR", 50_000_000)), &scopes).await;

    // The pair shows its least deposit converted; the address shows its conversion.
    let (_, pairs) = call(&app, &k, "/api/v2/currencies/pairs", r#"{"currency_from":"LTC"}"#).await;
    assert_eq!(pairs["data"][0]["currency_from"]["min_amount_deposit_with_exchange"], "0.50000000", "{pairs}");
    let (status, taken) = call(&app, &k, "/api/v2/addresses/take", r#"{"currency":"LTC","convert_to":"EUR","foreign_id":"eur-user"}"#).await;
    assert_eq!(status, 201, "{taken}");
    let a = taken["data"].clone();
    assert_eq!(a["convert_to"], "EUR");
    let address = a["address"].as_str().unwrap().to_string();
    // Again: the same address; the same foreign_id with another conversion is refused,
    // and so are conversions that cannot be made.
    assert_eq!(call(&app, &k, "/api/v2/addresses/take", r#"{"foreign_id":"eur-user","currency":"LTC","convert_to":"EUR"}"#).await, (201, taken.clone()));
    for (body, field) in [
        (r#"{"foreign_id":"eur-user","currency":"LTC"}"#, "foreign_id"),
        (r#"{"foreign_id":"u2","currency":"LTC","convert_to":"USD"}"#, "convert_to"),
        (r#"{"foreign_id":"u2","currency":"LTC","convert_to":"LTC"}"#, "convert_to"),
        (r#"{"foreign_id":"u2","currency":"LTC","convert_to":"XYZ"}"#, "convert_to"),
    ] {
        let (status, b) = call(&app, &k, "/api/v2/addresses/take", body).await;
        assert_eq!(status, 400, "{body}: {b}");
        assert!(b["errors"][field].is_string(), "{body}: {b}");
    }

    // Kassa's own API offers the same conversion.
    let token = app.t.engine.create_key(m, "native", vec![Scope::Receive], vec![], "native").await.unwrap().token.unwrap();
    let (status, native) = app.post("/kassa/v1/addresses", &token, json!({"currency": "LTC", "convert_to": "EUR"})).await;
    assert_eq!((status, native["convert_to"].as_str()), (201, Some("EUR")), "{native}");
    let (status, plain) = app.post("/kassa/v1/addresses", &token, json!({"currency": "LTC"})).await;
    assert_eq!((status, plain.get("convert_to")), (201, None), "{plain}");
    let (status, refused) = app.post("/kassa/v1/addresses", &token, json!({"currency": "LTC", "convert_to": "USD"})).await;
    assert_eq!((status, refused["error"]["message"].as_str()), (400, Some("invalid convert_to: LTC → USD is not an exchangeable pair")), "{refused}");

    // 2 LTC: credited and converted in one ledger transaction; 0.3 LTC: below the least
    // converted, credited as LTC. (Both paid from coins that stay mature through the
    // reorg below, so the node takes both back into its mempool.)
    let tx = node.pay(&address, "2").await;
    let small = node.pay(&address, "0.3").await;
    watcher.cycle().await.unwrap();
    assert_eq!(balance(&app, &k, "EUR").await, "0.00", "seen, not credited");
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!((balance(&app, &k, "LTC").await, balance(&app, &k, "EUR").await), ("0.30000000".into(), "198.00".into()));
    app.t.assert_books_balance().await;

    for _ in 0..4 {
        notifier.run_once().await.unwrap();
    }
    for r in receiver.requests_to("/cp2") {
        assert_eq!(r.header("x-processing-signature").unwrap(), sign(&k.secret, &r.body), "signed over the exact body");
    }
    let bodies: Vec<Value> = receiver.requests_to("/cp2").iter().map(|r| r.json()).collect();
    let find = |txid: &str, status: &str| bodies.iter().find(|b| b["transactions"][0]["txid"] == txid && b["status"] == status).cloned();
    let confirmed = find(&tx, "confirmed").expect("the converted deposit confirmed");
    let id = confirmed["id"].clone();
    let crypto_address = json!({"id": a["id"], "currency": "LTC", "convert_to": "EUR", "address": address, "tag": null, "foreign_id": "eur-user"});
    assert_eq!(
        confirmed,
        json!({"id": id, "foreign_id": "eur-user", "type": "deposit_exchange", "crypto_address": crypto_address,
            "currency_sent": {"currency": "LTC", "amount": "2.00000000"},
            "currency_received": {"currency": "EUR", "amount": "198.00", "amount_minus_fee": "198.00"},
            "transactions": [
                {"id": id, "currency": "LTC", "transaction_type": "blockchain", "type": "deposit", "address": address, "tag": null,
                    "amount": "2.00000000", "txid": tx, "confirmations": "3"},
                {"id": id, "currency": "LTC", "currency_to": "EUR", "transaction_type": "exchange", "type": "exchange", "address": address,
                    "tag": null, "amount": "2.00000000", "amount_to": "198.00", "txid": "", "confirmations": "3"}],
            "fees": [{"type": "deposit", "currency": "LTC", "amount": "0.00000000"}, {"type": "exchange", "currency": "LTC", "amount": "0.00000000"}],
            "error": "", "status": "confirmed"})
    );
    // Seen before it was credited: a deposit_exchange that has received nothing yet.
    let seen = find(&tx, "not_confirmed").expect("seen");
    assert_eq!((seen["type"].as_str(), &seen["currency_received"]), (Some("deposit_exchange"), &json!({"currency": "EUR", "amount": "0.00", "amount_minus_fee": "0.00"})));
    // The small one: a plain deposit, received in LTC, its address still converting.
    let plain = find(&small, "confirmed").expect("the small deposit confirmed");
    assert_eq!((plain["type"].as_str(), &plain["crypto_address"]["convert_to"]), (Some("deposit"), &json!("EUR")));
    assert_eq!(plain["currency_received"], json!({"currency": "LTC", "amount": "0.30000000", "amount_minus_fee": "0.30000000"}));
    assert_eq!(plain["fees"].as_array().unwrap().len(), 1);

    // The merchant spends 100 EUR; then both deposits' blocks are reorged out.
    let (status, x) = call(&app, &k, "/api/v2/exchange/now", r#"{"sender_currency":"EUR","receiver_currency":"LTC","sender_amount":"100","foreign_id":"spend"}"#).await;
    assert_eq!(status, 201, "{x}");
    let bought = x["data"]["receiver_amount"].as_str().unwrap().to_string();
    assert_eq!(balance(&app, &k, "EUR").await, "98.00");
    let suspense_eur = app.t.system_account(SystemAccount::Suspense, "EUR").await;
    node.reorg(3).await;
    watcher.cycle().await.unwrap();
    // Taken back: 98 EUR from the merchant, the 100 it spent from suspense; the LTC it
    // bought stays, the 0.3 LTC goes.
    assert_eq!((balance(&app, &k, "LTC").await, balance(&app, &k, "EUR").await), (bought.clone(), "0.00".into()));
    assert_eq!(app.t.balance(suspense_eur).await.0, -10_000);
    app.t.assert_books_balance().await;
    for _ in 0..4 {
        notifier.run_once().await.unwrap();
    }
    let cancelled: Vec<Value> = receiver.requests_to("/cp2").iter().map(|r| r.json()).filter(|b| b["status"] == "cancelled").collect();
    let reversed = cancelled.iter().find(|b| b["transactions"][0]["txid"] == tx).expect("the converted deposit reported cancelled");
    assert_eq!((reversed["type"].as_str(), &reversed["currency_received"]["amount"]), (Some("deposit_exchange"), &json!("198.00")));

    // Re-mined: converted exactly as the first credit was.
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    let ltc_after = kassa_core::Amount::parse(&bought, 8, kassa_core::SignPolicy::NonNegative).unwrap().checked_add(kassa_core::Amount::parse("0.3", 8, kassa_core::SignPolicy::NonNegative).unwrap()).unwrap();
    assert_eq!((balance(&app, &k, "LTC").await, balance(&app, &k, "EUR").await), (ltc_after.to_string(), "198.00".into()));
    app.t.assert_books_balance().await;
}
both_backends!(deposit_exchange, deposits_with_exchange);

// Withdrawal with exchange on a real litecoind (EUR → LTC at 1/100 less 1 %: 0.0099
// LTC per EUR): 100 EUR are debited, the exchange and the hold are one ledger
// transaction, the address receives 0.99 LTC less the withdrawal fee, on-chain and
// exact; the answer and the callback show sender_ (EUR) and receiver_ (LTC) amounts. A
// payout the node refuses for good returns the EUR, not LTC.
async fn withdrawals_with_exchange(backend: Backend) {
    let scopes = [Scope::Read, Scope::Receive, Scope::Withdraw];
    let CallbackWorld { app, node, m, k, receiver, notifier, mut watcher } = callback_world(backend, ChainSettings::default(), Some(("EUR", 0)), &scopes).await;
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(app.t.engine.clone(), "litecoin", std::time::Duration::ZERO).unwrap();
    // The hot wallet gets real coins from another merchant's deposit; this one holds EUR.
    let other = app.t.merchant("other").await;
    let funding = app.t.engine.create_deposit_address(other, "LTC", None, None).await.unwrap();
    node.pay(&funding.address, "3").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    app.t.fund(m, "EUR", "500").await;

    let dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let body = format!(r#"{{"foreign_id":"wx-1","amount":"100","currency":"EUR","convert_to":"LTC","address":"{dest}"}}"#);
    let (status, w) = call(&app, &k, "/api/v2/withdrawal/crypto", &body).await;
    assert_eq!(status, 201, "{w}");
    let id = w["data"]["id"].as_i64().unwrap();
    // 0.99 LTC, less the withdrawal fee 0.0001 + 0.5 % = 0.00505 LTC.
    assert_eq!(
        w,
        json!({"data": {"id": id, "foreign_id": "wx-1", "type": "withdrawal_exchange", "status": "processing", "amount": "100.00",
            "sender_amount": "100.00", "sender_currency": "EUR", "receiver_amount": "0.98495000", "receiver_currency": "LTC"}})
    );
    assert_eq!((balance(&app, &k, "EUR").await, balance(&app, &k, "LTC").await), ("400.00".into(), "0.00000000".into()));
    // A repeat is a duplicate; refusals name their field; nothing more is held.
    assert_eq!(call(&app, &k, "/api/v2/withdrawal/crypto", &body).await.0, 400);
    for (extra, field) in [
        (r#""amount":"1000""#, "amount"),
        (r#""amount":"1.001""#, "amount"),
        (r#""amount":"0.01""#, "amount"),
        (r#""convert_to":"USD""#, "convert_to"),
        (r#""convert_to":"EUR""#, "convert_to"),
        (r#""address":"not-an-address""#, "address"),
    ] {
        let mut b: Value = serde_json::from_str(&body).unwrap();
        let patch: Value = serde_json::from_str(&format!("{{{extra}}}")).unwrap();
        for (key, v) in patch.as_object().unwrap() {
            b[key] = v.clone();
        }
        b["foreign_id"] = json!("wx-bad");
        let (status, r) = call(&app, &k, "/api/v2/withdrawal/crypto", &b.to_string()).await;
        assert_eq!(status, 400, "{extra}: {r}");
        assert!(r["errors"][field].is_string(), "{extra}: {r}");
    }
    assert_eq!(balance(&app, &k, "EUR").await, "400.00");
    app.t.assert_books_balance().await;

    // Paid on-chain, exactly; the callback is a withdrawal_exchange.
    broadcaster.cycle().await.unwrap();
    node.mine(3).await;
    assert_eq!(broadcaster.cycle().await.unwrap().confirmed, 1);
    assert_eq!(node.miner_rpc("getreceivedbyaddress", json!([dest, 3])).await.to_string(), "0.98495000");
    let txid = app.t.engine.withdrawal(m, id).await.unwrap().txid.unwrap();
    for _ in 0..4 {
        notifier.run_once().await.unwrap();
    }
    let confirmed = receiver.requests_to("/cp2").iter().map(|r| r.json()).find(|b| b["status"] == "confirmed" && b["id"] == id).expect("confirmed");
    assert_eq!(
        confirmed,
        json!({"id": id, "foreign_id": "wx-1", "type": "withdrawal_exchange",
            "crypto_address": {"id": null, "currency": "LTC", "convert_to": null, "address": dest, "tag": null, "foreign_id": null},
            "currency_sent": {"currency": "EUR", "amount": "100.00"},
            "currency_received": {"currency": "LTC", "amount": "0.98495000"},
            "transactions": [
                {"id": id, "currency": "LTC", "transaction_type": "blockchain", "type": "withdrawal", "address": dest, "tag": null,
                    "amount": "0.98495000", "txid": txid, "confirmations": "3"},
                {"id": id, "currency": "EUR", "currency_to": "LTC", "transaction_type": "exchange", "type": "exchange", "address": dest,
                    "tag": null, "amount": "100.00", "amount_to": "0.99000000", "txid": "", "confirmations": "3"}],
            "fees": [{"type": "withdrawal", "currency": "LTC", "amount": "0.00505000"}, {"type": "exchange", "currency": "EUR", "amount": "0.00"}],
            "error": "", "status": "confirmed"})
    );
    app.t.assert_books_balance().await;

    // A payout the node refuses for good (a dust amount: this engine's LTC has no least
    // withdrawal and no fee, and 1 EUR buys 0.00000099 LTC) fails, and the EUR returns.
    let mut engine = app.t.engine.clone();
    let raw: std::collections::BTreeMap<String, kassa_core::currency::CurrencyConfig> = toml::from_str(
        &kassa_testkit::TEST_CURRENCIES.replace("min_withdrawal = \"0.001\"", "min_withdrawal = \"0\"").replace("fees.withdrawal = { fixed = \"0.0001\", percent = \"0.5\" }", ""),
    )
    .unwrap();
    engine.currencies = std::sync::Arc::new(kassa_engine::currencies::Currencies::new(kassa_core::currency::validate_currencies(&raw).unwrap()));
    let rates = {
        use kassa_core::rates::Rate;
        use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
        let rates = Rates::new(
            RatesOptions {
                sources: vec![Source::Fixed { rates: [("LTC/EUR".to_string(), Rate::parse("1000000").unwrap())].into() }],
                pairs: vec![PairConfig { base: "LTC".into(), quote: "EUR".into(), spread_e6: 1_000_000, min_base_units: 0, min_deposit_base_units: 0 }],
                ..RatesOptions::default()
            },
            engine.clock().clone(),
        )
        .unwrap();
        rates.refresh().await;
        rates
    };
    let engine = engine.with_rates(rates);
    let dust_dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let dust = engine
        .request_withdrawal(kassa_engine::withdrawals::WithdrawalRequest {
            merchant: m,
            currency: "LTC".into(),
            address: dust_dest,
            amount: "1".into(),
            priority: kassa_chain::Priority::High,
            idempotency_key: "wx-dust".into(),
            origin: kassa_engine::notifications::Origin { dialect: "coinspaid_v2".into(), callback_url: None },
            description: None,
            pay_from: Some("EUR".into()),
        })
        .await
        .unwrap();
    assert_eq!((dust.amount.as_str(), dust.source_amount.as_deref()), ("0.00000099", Some("1.00")));
    assert_eq!(balance(&app, &k, "EUR").await, "399.00");
    kassa_engine::broadcaster::Broadcaster::new(engine.clone(), "litecoin", std::time::Duration::ZERO).unwrap().cycle().await.unwrap();
    let failed = app.t.engine.withdrawal(m, dust.id).await.unwrap();
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert_eq!((balance(&app, &k, "EUR").await, balance(&app, &k, "LTC").await), ("400.00".into(), "0.00000000".into()), "the EUR came back");
    for _ in 0..4 {
        notifier.run_once().await.unwrap();
    }
    let cancelled = receiver.requests_to("/cp2").iter().map(|r| r.json()).find(|b| b["id"] == dust.id).expect("reported");
    assert_eq!((cancelled["type"].as_str(), cancelled["status"].as_str()), (Some("withdrawal_exchange"), Some("cancelled")));
    assert_eq!(cancelled["currency_sent"], json!({"currency": "EUR", "amount": "1.00"}));
    app.t.assert_books_balance().await;
}
both_backends!(withdrawal_exchange, withdrawals_with_exchange);

/// POSTs `body` to `path` with the given headers only (no signing); (status, JSON body).
async fn raw_call(app: &TestApp, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = app.client.post(app.url(path)).body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}")))
}

// Bad input on every v1 and v2 endpoint: missing, unknown or wrong keys and signatures
// (403 with its code), malformed JSON and bodies that are not objects, every field of a
// wrong type, huge amounts, a 2 MB body: each the spec's error, nothing stored, and the
// server serves on.
async fn bad_input_on_every_endpoint(backend: Backend) {
    let ChainWorld { mut t, node: _node } = ChainWorld::new(backend, ChainSettings::default()).await;
    add_rates(&mut t, "EUR", 0).await;
    let rate_limits = kassa_api::limits::RateLimitOptions { auth_failures: None, documented_limits: false, ..Default::default() };
    let app = TestApp::serve(t, kassa_api::HttpOptions { rate_limits, ..Default::default() }).await;
    let (m, k) = key(&app, "shop", &Scope::ALL).await;
    app.t.fund(m, "LTC", "1").await;
    app.t.fund(m, "EUR", "100").await;
    let store = app.t.db.store().await;
    let stored = || async {
        (
            withdrawals_of(&app, m).await.len(),
            app.t.engine.exchanges(m, None, 100).await.unwrap().len(),
            store.deposit_addresses_after("litecoin", 0, 1000).await.unwrap().len(),
            app.t.engine.check().await.unwrap().transactions,
        )
    };
    let before = stored().await;
    let endpoints = [
        "/api/v2/currencies/list",
        "/api/v2/currencies/pairs",
        "/api/v2/currencies/rates",
        "/api/v2/accounts/list",
        "/api/v2/addresses/take",
        "/api/v2/withdrawal/crypto",
        "/api/v2/exchange/calculate",
        "/api/v2/exchange/fixed",
        "/api/v2/exchange/now",
        "/api/v1/addresses/take",
        "/api/v1/withdrawal/make",
    ];
    let wrong = r#"{"currency":{"a":1},"foreign_id":["x"],"amount":true,"address":{"a":1},"currency_from":[1],"currency_to":{"a":1},
        "sender_currency":{"a":1},"receiver_currency":[1],"sender_amount":{"a":1},"receiver_amount":[1],"price":{"a":1},"visible":"maybe","convert_to":[1]}"#;
    let huge = r#"{"currency":"LTC","foreign_id":"h-1","amount":"1e400","address":"x","sender_currency":"LTC","receiver_currency":"EUR",
        "sender_amount":"99999999999999999999999999999999999999999999","price":"1"}"#;
    let big = format!(r#"{{"currency":"LTC","foreign_id":"big","pad":"{}"}}"#, "x".repeat(2 << 20));
    for path in endpoints {
        let body = br#"{"currency":"LTC","foreign_id":"f-1"}"#.to_vec();
        let v1 = path.starts_with("/api/v1/");
        // Authentication: nothing parsed before the signature is checked.
        let no_key = raw_call(&app, path, &[("X-Processing-Signature", sign(&k.secret, &body))], body.clone()).await;
        assert_eq!((no_key.0, no_key.1["code"].as_str()), (403, Some("missing_key")), "{path}: {}", no_key.1);
        let no_sig = raw_call(&app, path, &[("X-Processing-Key", k.public.clone())], body.clone()).await;
        assert_eq!((no_sig.0, no_sig.1["code"].as_str()), (403, Some("bad_signature")), "{path}: {}", no_sig.1);
        let bad_sig = raw_call(&app, path, &[("X-Processing-Key", k.public.clone()), ("X-Processing-Signature", sign("another secret", &body))], body.clone()).await;
        assert_eq!((bad_sig.0, bad_sig.1["code"].as_str()), (403, Some("bad_signature")), "{path}: {}", bad_sig.1);
        let unknown = raw_call(&app, path, &[("X-Processing-Key", "pk_nobody".into()), ("X-Processing-Signature", sign(&k.secret, &body))], body.clone()).await;
        assert_eq!((unknown.0, unknown.1["code"].as_str()), (403, Some("bad_key")), "{path}: {}", unknown.1);
        for r in [&no_key.1, &no_sig.1, &bad_sig.1, &unknown.1] {
            assert!(r["error"].is_string() && r.as_object().unwrap().len() == 2, "{path}: {r}");
        }
        // Signed, but not JSON or not an object: 400 in the errors envelope.
        for text in [r#"{"currency":"LTC","#, r#""LTC""#, "[1,2]", "42", "\u{0}"] {
            let (status, b) = call(&app, &k, path, text).await;
            assert_eq!(status, 400, "{path} {text:?}: {b}");
            assert_errors_shape(&b);
            assert_eq!(b["error_code"].is_string(), v1, "{path}: v1 alone has error_code: {b}");
        }
        // Every field of a wrong type (accounts/list reads none).
        let (status, b) = call(&app, &k, path, wrong).await;
        if path == "/api/v2/accounts/list" {
            assert_eq!(status, 200, "{b}");
        } else {
            assert_eq!(status, 400, "{path}: {b}");
            assert_errors_shape(&b);
        }
        // Huge and malformed amounts: refused where amounts are read.
        if ["/withdrawal/", "/exchange/"].iter().any(|p| path.contains(p)) {
            let (status, b) = call(&app, &k, path, huge).await;
            assert_eq!(status, 400, "{path}: {b}");
            assert_errors_shape(&b);
        }
        // 2 MB: refused before it is read, in the errors envelope.
        let (status, b) = call(&app, &k, path, &big).await;
        assert_eq!((status, b), (413, json!({"errors": {"body": "the request body is too large"}})), "{path}");
    }
    assert_eq!(stored().await, before, "nothing stored");
    let resp = app.client.get(app.url("/api/v2/ping")).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (200, "OK".to_string()), "the server serves on");
    assert_eq!(call(&app, &k, "/api/v2/accounts/list", "").await.0, 200);
    app.t.assert_books_balance().await;
}
both_backends!(bad_input, bad_input_on_every_endpoint);

// Bodies as the known clients serialise them verify on their raw bytes: Go's struct
// order, every value a string (PHP), PHP's `\/` and `\u003c` escapes, C#'s indented
// output, non-ASCII escaped or not. The same body re-serialised differently does not.
async fn client_serialisations(backend: Backend) {
    let ChainWorld { t, node: _node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let app = TestApp::serve(t, Default::default()).await;
    let (_, k) = key(&app, "shop", &[Scope::Read, Scope::Receive]).await;
    for (body, foreign_id) in [
        (r#"{"currency":"LTC","foreign_id":"go-1"}"#, "go-1"),
        (r#"{"foreign_id":"php\/2","currency":"LTC"}"#, "php/2"),
        (r#"{"foreign_id":"\u003ctag\u003e \u0026 co","currency":"LTC"}"#, "<tag> & co"),
        ("{\r\n  \"currency\": \"LTC\",\r\n  \"foreign_id\": \"cs-3\"\r\n}", "cs-3"),
        (r#"{"currency":"LTC","foreign_id":"caf\u00e9"}"#, "café"),
        (r#"{"currency":"LTC","foreign_id":"café-2"}"#, "café-2"),
        (r#"{"currency":"LTC","foreign_id":1234567890123}"#, "1234567890123"),
    ] {
        let (status, b) = call(&app, &k, "/api/v2/addresses/take", body).await;
        assert_eq!((status, b["data"]["foreign_id"].as_str()), (201, Some(foreign_id)), "{body}: {b}");
    }
    // Signed over `/`, sent with PHP's `\/`: not the bytes signed.
    let sent = r#"{"foreign_id":"php\/9","currency":"LTC"}"#;
    let (status, b) = raw_call(
        &app,
        "/api/v2/addresses/take",
        &[("X-Processing-Key", k.public.clone()), ("X-Processing-Signature", sign(&k.secret, br#"{"foreign_id":"php/9","currency":"LTC"}"#))],
        sent.as_bytes().to_vec(),
    )
    .await;
    assert_eq!((status, b["code"].as_str()), (403, Some("bad_signature")));
    // The signature is accepted in either case of hex.
    let upper = sign(&k.secret, sent.as_bytes()).to_uppercase();
    let (status, _) = raw_call(&app, "/api/v2/addresses/take", &[("X-Processing-Key", k.public.clone()), ("X-Processing-Signature", upper)], sent.as_bytes().to_vec()).await;
    assert_eq!(status, 201);
}
both_backends!(serialisations, client_serialisations);

// An exchange made through the v2 API is called back as `type: "exchange"`, signed,
// with its amounts, fee and foreign_id (LTC/USD at 100 less 1 %: 1 LTC gives 99.00 USD).
async fn exchange_callbacks(backend: Backend) {
    use kassa_engine::notifier::{Notifier, NotifierOptions};
    let mut t = kassa_testkit::TestEngine::new(backend).await;
    add_rates(&mut t, "USD", 0).await;
    t.engine = t.engine.clone().with_target_policy(kassa_engine::webhooks::TargetPolicy::development());
    let app = TestApp::serve(t, Default::default()).await;
    let (m, k) = key(&app, "shop", &[Scope::Read, Scope::Exchange]).await;
    app.t.fund(m, "LTC", "2").await;
    let receiver = kassa_testkit::receiver::Receiver::start().await;
    app.t.engine.create_endpoint(m, &receiver.url("/cp2"), "coinspaid_v2", &[]).await.unwrap();
    app.t.engine.create_endpoint(m, &receiver.url("/cp1"), "coinspaid_v1", &[]).await.unwrap();
    let (status, x) = call(&app, &k, "/api/v2/exchange/now", r#"{"sender_currency":"LTC","receiver_currency":"USD","sender_amount":"1","foreign_id":"x-1"}"#).await;
    assert_eq!(status, 201, "{x}");
    let schedule = kassa_api::dialects::callback_formats().names().into_iter().map(|f| (f.to_string(), vec![1])).collect();
    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { retry_schedule_secs: schedule, jitter_percent: 0, ..Default::default() }).unwrap();
    for _ in 0..3 {
        notifier.run_once().await.unwrap();
    }
    let got = receiver.requests_to("/cp2");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-processing-signature").unwrap(), sign(&k.secret, &got[0].body));
    let id = x["data"]["id"].clone();
    assert_eq!(
        got[0].json(),
        json!({"id": id, "foreign_id": "x-1", "type": "exchange", "crypto_address": null,
            "currency_sent": {"currency": "LTC", "amount": "1.00000000"},
            "currency_received": {"currency": "USD", "amount": "99.00", "amount_minus_fee": "99.00"},
            "transactions": [{"id": id, "currency": "LTC", "currency_to": "USD", "transaction_type": "exchange", "type": "exchange",
                "address": "", "tag": null, "amount": "1.00000000", "amount_to": "99.00", "txid": "", "confirmations": "0"}],
            "fees": [{"type": "exchange", "currency": "LTC", "amount": "0.00000000"}],
            "error": "", "status": "confirmed"})
    );
    assert!(receiver.requests_to("/cp1").is_empty(), "v1 has no exchange callbacks");
}
both_backends!(exchange_callback, exchange_callbacks);

/// Rates of LTC/EUR at a fixed `mid` with a 1 % spread, on the engine's clock.
async fn ltc_eur_rates(clock: kassa_core::Clock, mid: &str) -> std::sync::Arc<kassa_engine::rates::Rates> {
    use kassa_core::rates::Rate;
    use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
    let rates = Rates::new(
        RatesOptions {
            sources: vec![Source::Fixed { rates: [("LTC/EUR".to_string(), Rate::parse(mid).unwrap())].into() }],
            pairs: vec![PairConfig { base: "LTC".into(), quote: "EUR".into(), spread_e6: 1_000_000, min_base_units: 1_000_000, min_deposit_base_units: 0 }],
            ..RatesOptions::default()
        },
        clock,
    )
    .unwrap();
    rates.refresh().await;
    rates
}

// futures/rates and futures/confirm (v2): a price fixed for the next deposit of exactly
// the sender amount before ts_release. The market then moves (100 → 120): the exact
// deposit converts at the fixed price and its callback names the futures; a second
// deposit of the same amount (the futures is taken), another amount, and an exact one
// after ts_release (the test clock moved past it) convert at the market. Over the
// 10,000 EUR limit, a foreign or plain address, other currencies: refused.
async fn futures_fix_the_price(backend: Backend) {
    let scopes = [Scope::Read, Scope::Receive, Scope::Exchange];
    let CallbackWorld { app, node, m: _, k, receiver, notifier, watcher: _ } = callback_world(backend, ChainSettings::default(), Some(("EUR", 0)), &scopes).await;
    let (_, taken) = call(&app, &k, "/api/v2/addresses/take", r#"{"currency":"LTC","convert_to":"EUR","foreign_id":"fut"}"#).await;
    let a = taken["data"].clone();
    let address = a["address"].as_str().unwrap().to_string();
    let now = app.t.engine.now_ms() / 1000;

    let (status, r) = call(&app, &k, "/api/v2/futures/rates", &json!({"address": address}).to_string()).await;
    assert_eq!(status, 200, "{r}");
    let (_, pairs) = call(&app, &k, "/api/v2/currencies/rates", r#"{"currency_from":"LTC","currency_to":"EUR"}"#).await;
    let price = pairs["data"][0]["rate_to"].clone();
    let tiers: serde_json::Map<String, Value> = ["5.00", "10.00", "20.00", "50.00", "100.00", "200.00", "300.00"].iter().map(|t| (t.to_string(), price.clone())).collect();
    assert_eq!(r["data"]["rates"], json!({"LTCEUR": tiers}));
    assert_eq!(r["data"]["addresses"], json!([a]));
    let (fixed, release) = (r["data"]["ts_fixed"].as_i64().unwrap(), r["data"]["ts_release"].as_i64().unwrap());
    assert!((fixed - now).abs() <= 1 && release - fixed == 6000, "{r}");

    // Refusals, each by its field; nothing is fixed.
    let plain = call(&app, &k, "/api/v2/addresses/take", r#"{"currency":"LTC","foreign_id":"plain"}"#).await.1["data"]["address"].as_str().unwrap().to_string();
    let confirm = |address: &str, from: &str, to: &str, amount: &str| json!({"address": address, "sender_currency": from, "receiver_currency": to, "receiver_amount": amount}).to_string();
    for (body, field) in [
        (confirm(&address, "LTC", "EUR", "10000.01"), "receiver_amount"),
        (confirm(&plain, "LTC", "EUR", "30"), "address"),
        (confirm("rltc1qnotmine", "LTC", "EUR", "30"), "address"),
        (confirm(&address, "BTC", "EUR", "30"), "sender_currency"),
        (confirm(&address, "LTC", "USD", "30"), "receiver_currency"),
        (confirm(&address, "LTC", "EUR", "-3"), "receiver_amount"),
    ] {
        let (status, b) = call(&app, &k, "/api/v2/futures/confirm", &body).await;
        assert_eq!(status, 400, "{body}: {b}");
        assert!(b["errors"][field].is_string(), "{body}: {b}");
        assert_errors_shape(&b);
    }
    let (_, b) = call(&app, &k, "/api/v2/futures/confirm", &confirm(&address, "LTC", "EUR", "10000.01")).await;
    assert_eq!(b, json!({"errors": {"receiver_amount": "over the futures limit of 10000.00 EUR"}}));
    let (status, b) = call(&app, &k, "/api/v2/futures/rates", &json!({"address": plain}).to_string()).await;
    assert_eq!((status, b["errors"]["address"].is_string()), (400, true), "{b}");
    let other = app.t.merchant("other").await;
    let other_key = app.t.engine.create_key(other, "coinspaid", scopes.to_vec(), vec![], "cp").await.unwrap();
    let ok = Key { public: other_key.public_key, secret: other_key.secret.unwrap() };
    assert_eq!(call(&app, &ok, "/api/v2/futures/confirm", &confirm(&address, "LTC", "EUR", "30")).await.0, 400, "another merchant's address");

    // 30 EUR at 99: deposit exactly 0.30303031 LTC (rounded up for the house).
    let (status, f) = call(&app, &k, "/api/v2/futures/confirm", &confirm(&address, "LTC", "EUR", "30")).await;
    assert_eq!(status, 200, "{f}");
    let futures_id = f["data"]["futures_id"].clone();
    assert_eq!(
        f["data"],
        json!({"futures_id": futures_id, "sender_currency": "LTC", "receiver_currency": "EUR", "fee_currency": "LTC", "price": price,
            "address": a, "sender_amount": "0.30303031", "receiver_amount": "30.00", "fee_amount": "0.00000000",
            "ts_fixed": f["data"]["ts_fixed"], "ts_release": f["data"]["ts_release"]})
    );
    let (_, late) = call(&app, &k, "/api/v2/futures/confirm", &confirm(&address, "LTC", "EUR", "50")).await;
    assert_eq!(late["data"]["sender_amount"], "0.50505051");

    // The market moves to 120 (118.8 after the spread).
    let engine = app.t.engine.clone().with_rates(ltc_eur_rates(app.t.engine.clock().clone(), "120").await);
    let mut watcher = kassa_engine::watcher::Watcher::new(engine.clone(), "litecoin").unwrap();
    let exact = node.pay(&address, "0.30303031").await;
    watcher.cycle().await.unwrap();
    let again = node.pay(&address, "0.30303031").await;
    let other_amount = node.pay(&address, "0.2").await;
    watcher.cycle().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    // 30 (fixed) + 36.00 (0.30303031 × 118.8) + 23.76 (0.2 × 118.8).
    assert_eq!(balance(&app, &k, "EUR").await, "89.76");

    // After ts_release an exact deposit converts at the market.
    app.t.advance(std::time::Duration::from_secs(6001));
    let moved = ltc_eur_rates(app.t.engine.clock().clone(), "120").await;
    let engine = app.t.engine.clone().with_rates(moved);
    let mut watcher = kassa_engine::watcher::Watcher::new(engine.clone(), "litecoin").unwrap();
    let too_late = node.pay(&address, "0.50505051").await;
    watcher.cycle().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(balance(&app, &k, "EUR").await, "149.76", "+ 60.00 at the market, not 50 at the futures price");
    app.t.assert_books_balance().await;

    // At most four in flight per endpoint: a run claims the rest for a while (the
    // test clock lets that claim lapse).
    for _ in 0..6 {
        notifier.run_once().await.unwrap();
        app.t.advance(std::time::Duration::from_secs(120));
    }
    let bodies: Vec<Value> = receiver.requests_to("/cp2").iter().map(|r| r.json()).collect();
    let confirmed = |txid: &str| {
        bodies.iter().find(|b| b["transactions"][0]["txid"] == txid && b["status"] == "confirmed").cloned().unwrap_or_else(|| panic!("no confirmed callback for {txid}: {bodies:#?}"))
    };
    let fixed_cb = confirmed(&exact);
    assert_eq!((fixed_cb["futures_id"].clone(), fixed_cb["currency_received"]["amount"].clone()), (futures_id, json!("30.00")));
    assert_eq!(fixed_cb["type"], "deposit_exchange");
    for (txid, got) in [(&again, "36.00"), (&other_amount, "23.76"), (&too_late, "60.00")] {
        let cb = confirmed(txid);
        assert_eq!((cb.get("futures_id"), cb["currency_received"]["amount"].as_str()), (None, Some(got)), "{cb}");
    }
}
both_backends!(futures, futures_fix_the_price);

// With a deposit fee (1 %) and an exchange fee (2 %): a deposit converted at the market
// converts what is left after the deposit fee, and the merchant's LTC stays at zero; a
// futures asks for the amount that still converts to its receiver amount after both
// fees, its fee_amount is both, and the exact deposit converts at the fixed price.
async fn futures_and_conversions_after_fees(backend: Backend) {
    use std::sync::Arc;
    let text = kassa_testkit::TEST_CURRENCIES.replacen(
        "fees.withdrawal = { fixed = \"0.0001\", percent = \"0.5\" }",
        "fees.withdrawal = { fixed = \"0.0001\", percent = \"0.5\" }\nfees.deposit = { percent = \"1\" }\nfees.exchange = { percent = \"2\" }",
        1,
    );
    let raw: std::collections::BTreeMap<String, kassa_core::currency::CurrencyConfig> = toml::from_str(&text).unwrap();
    let mut w = ChainWorld::new(backend, ChainSettings::default()).await;
    w.t.engine.currencies = Arc::new(kassa_engine::currencies::Currencies::new(kassa_core::currency::validate_currencies(&raw).unwrap()));
    let scopes = [Scope::Read, Scope::Receive, Scope::Exchange];
    let CallbackWorld { app, node, m: _, k, receiver, notifier, mut watcher } = callback_world_from(w, Some(("EUR", 0)), &scopes).await;
    let (_, taken) = call(&app, &k, "/api/v2/addresses/take", r#"{"currency":"LTC","convert_to":"EUR","foreign_id":"fees"}"#).await;
    let address = taken["data"]["address"].as_str().unwrap().to_string();

    // 30 EUR at 99: 0.30303031 LTC converted, 0.30921461 LTC with the 2 % exchange fee
    // (0.00618430), 0.31233799 LTC with the 1 % deposit fee (0.00312338).
    let confirm = json!({"address": address, "sender_currency": "LTC", "receiver_currency": "EUR", "receiver_amount": "30"}).to_string();
    let (status, f) = call(&app, &k, "/api/v2/futures/confirm", &confirm).await;
    assert_eq!(status, 200, "{f}");
    assert_eq!((f["data"]["sender_amount"].as_str(), f["data"]["fee_amount"].as_str()), (Some("0.31233799"), Some("0.00930768")), "{f}");

    // An invoice of 10 EUR paid exactly (0.10101011 LTC at 99): the merchant is charged
    // both fees, 0.00101011 and 0.00200000 LTC, and the callback lists them.
    let invoice = json!({"timer": true, "title": "Fees", "currency": "EUR", "sender_currency": "LTC", "amount": "10", "foreign_id": "fees-1"});
    let (_, inv) = call(&app, &k, "/api/v2/invoices/create", &invoice.to_string()).await;
    assert_eq!(inv["data"]["sender_amount"], "0.10101011", "{inv}");

    // 1 LTC at the market: 0.99 after the deposit fee, 0.9702 after the exchange fee,
    // 96.04 EUR; then the futures' exact amount: 30.00 EUR; the invoice: 9.70 EUR.
    node.pay(&address, "1").await;
    node.pay(&address, "0.31233799").await;
    node.pay(inv["data"]["address"].as_str().unwrap(), "0.10101011").await;
    watcher.cycle().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(balance(&app, &k, "EUR").await, "135.74");
    assert_eq!(ltc_balance(&app, &k).await, "0.00000000", "all of it converted, nothing overdrawn");
    let fees = app.t.system_account(kassa_core::ledger::SystemAccount::FeesEarned, "LTC").await;
    // 0.01 + 0.0198 at the market; 0.00312338 + 0.00618430 for the futures; 0.00101011 + 0.002 for the invoice.
    assert_eq!(app.t.balance(fees).await.0, 1_000_000 + 1_980_000 + 312_338 + 618_430 + 101_011 + 200_000);
    // At most four in flight per endpoint: the test clock lets a run's claim lapse.
    for _ in 0..6 {
        notifier.run_once().await.unwrap();
        app.t.advance(std::time::Duration::from_secs(120));
    }
    let confirmed = invoice_callbacks(&receiver).into_iter().find(|b| b["status"] == "confirmed").expect("the invoice's confirmed callback");
    assert_eq!(
        confirmed["fees"],
        json!([{"type": "deposit", "currency": "LTC", "amount": "0.00101011"}, {"type": "exchange", "currency": "LTC", "amount": "0.00200000"}])
    );
    app.t.assert_books_balance().await;
}
both_backends!(futures_fees, futures_and_conversions_after_fees);

/// The `invoice` callbacks the merchant's v2 endpoint received, in order.
fn invoice_callbacks(receiver: &kassa_testkit::receiver::Receiver) -> Vec<Value> {
    receiver.requests_to("/cp2").iter().map(|r| r.json()).filter(|b| b["type"] == "invoice").collect()
}

// invoices/create (v2) on regtest, the three kinds of CoinsPaid invoices: paid in one
// currency with a timer (the address and amount in the answer), the same foreign_id
// again (the same invoice; other values refused), paid in two parts (a `pending`
// callback with what is left, then `confirmed`), the merchant credited in EUR at the
// invoice's rate; a timer that runs out (`failed`); without a timer, the rate fixed
// by the payer's pick on the page (after the market moved) and held for the window.
// Bad requests are refused by field and store nothing.
async fn invoices_create_pay_and_expire(backend: Backend) {
    let scopes = [Scope::Read, Scope::Receive];
    let CallbackWorld { app, node, m, k, receiver, notifier, mut watcher } =
        callback_world(backend, ChainSettings::default(), Some(("EUR", 0)), &scopes).await;
    let now = app.t.engine.now_ms() / 1000;
    let request = json!({"timer": true, "title": "Order 164", "description": "Two tickets", "currency": "EUR", "sender_currency": "LTC",
        "amount": "30", "foreign_id": "164", "url_success": "https://shop.example/ok", "url_failed": "https://shop.example/failed",
        "email_user": "payer@example.com"});
    let (status, created) = call(&app, &k, "/api/v2/invoices/create", &request.to_string()).await;
    assert_eq!(status, 200, "{created}");
    let d = created["data"].clone();
    let (address, url) = (d["address"].as_str().unwrap().to_string(), d["url"].as_str().unwrap().to_string());
    assert!(url.contains("/pay/"), "{url}");
    assert!((d["fixed_at"].as_i64().unwrap() - now).abs() <= 1, "{d}");
    // 30 EUR at 99 (100 less the 1 % spread), rounded up for the merchant.
    assert_eq!(
        d,
        json!({"id": d["id"], "url": url, "foreign_id": "164", "address": address, "name": "Order 164", "status": "created", "currency": "EUR",
            "amount": "30.00", "sender_currency": "LTC", "sender_amount": "0.30303031", "fixed_at": d["fixed_at"],
            "release_at": d["fixed_at"].as_i64().unwrap() + 900})
    );
    assert!(d["id"].is_i64());
    assert_eq!(call(&app, &k, "/api/v2/invoices/create", &request.to_string()).await, (200, created.clone()), "the same request: the same invoice");
    let mut other = request.clone();
    other["amount"] = json!("31");
    assert_eq!(
        call(&app, &k, "/api/v2/invoices/create", &other.to_string()).await,
        (400, json!({"errors": {"foreign_id": "The foreign id has already been taken."}}))
    );

    // Refusals by field; nothing is stored.
    let before = app.t.engine.invoices(m, None, 100).await.unwrap().len();
    for (change, field) in [
        (json!({"title": null}), "title"),
        (json!({"amount": "-3"}), "amount"),
        (json!({"amount": "abc"}), "amount"),
        (json!({"currency": "XYZ"}), "currency"),
        (json!({"sender_currency": "XYZ"}), "sender_currency"),
        (json!({"sender_currency": "EUR"}), "sender_currency"),
        (json!({"email_user": "not an address"}), "email_user"),
        (json!({"url_success": "ftp://shop.example"}), "url_success"),
        (json!({"url_failed": "nowhere"}), "url_failed"),
        (json!({"timer": "sometimes"}), "timer"),
        (json!({"foreign_id": null}), "foreign_id"),
    ] {
        let mut body = request.clone();
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        body["foreign_id"] = if change.get("foreign_id").is_some() { Value::Null } else { json!(format!("bad-{field}")) };
        let (status, b) = call(&app, &k, "/api/v2/invoices/create", &body.to_string()).await;
        assert_eq!(status, 400, "{change}: {b}");
        assert!(b["errors"][field].is_string(), "{change}: {b}");
        assert_errors_shape(&b);
    }
    assert_eq!(app.t.engine.invoices(m, None, 100).await.unwrap().len(), before, "nothing stored");

    // Paid in two parts: 0.1 LTC (9.90 EUR), then the rest (20.10 EUR).
    node.pay(&address, "0.1").await;
    watcher.cycle().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    node.pay(&address, "0.20303031").await;
    watcher.cycle().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(balance(&app, &k, "EUR").await, "30.00");
    assert_eq!(ltc_balance(&app, &k).await, "0.00000000", "converted on arrival");

    // A timer that runs out unpaid: failed.
    let mut timed = request.clone();
    timed["foreign_id"] = json!("165");
    timed.as_object_mut().unwrap().remove("sender_currency");
    let (_, t) = call(&app, &k, "/api/v2/invoices/create", &timed.to_string()).await;
    assert_eq!((t["data"]["address"].clone(), t["data"]["sender_currency"].clone(), t["data"]["sender_amount"].clone()), (Value::Null, Value::Null, Value::Null));
    assert_eq!(t["data"]["release_at"].as_i64().unwrap() - t["data"]["fixed_at"].as_i64().unwrap(), 900, "{t}");

    // Without a timer: no rate until the payer picks.
    let mut open = request.clone();
    open["foreign_id"] = json!("166");
    open["timer"] = json!(false);
    let (_, o) = call(&app, &k, "/api/v2/invoices/create", &open.to_string()).await;
    assert_eq!((o["data"]["fixed_at"].clone(), o["data"]["release_at"].clone(), o["data"]["sender_amount"].clone()), (Value::Null, Value::Null, Value::Null), "{o}");
    let open_url = o["data"]["url"].as_str().unwrap().to_string();
    let path = &open_url[open_url.find("/pay/").unwrap()..];
    let page = app.client.get(app.url(path)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"pick\"") && !page.contains("id=\"address\""), "a choice first: {page}");
    assert!(page.contains("<h1>Order 164</h1>") && page.contains("Two tickets"), "{page}");

    app.t.advance(std::time::Duration::from_secs(901));
    app.t.engine.store.expire_invoices().await.unwrap();
    // The market moves to 120 (118.8 after the spread); the payer picks LTC on the page.
    let token = path.trim_start_matches("/pay/").to_string();
    let moved = app.t.engine.clone().with_rates(ltc_eur_rates(app.t.engine.clock().clone(), "120").await);
    let picked = moved.pick_invoice_currency(&token, "LTC").await.unwrap();
    assert_eq!(picked.options[0].amount, "0.25252526", "30 EUR at 118.8");
    let fixed_at = picked.rate_fixed_at_ms.unwrap();
    assert!((fixed_at - app.t.engine.now_ms()).abs() < 2_000 && picked.expires_at_ms == fixed_at + 900_000, "{picked:?}");
    // A form post (no JavaScript) picks again: nothing changes, and the page shows where to pay.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = no_redirect.post(app.url(&format!("{path}/pick"))).form(&[("currency", "LTC")]).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["location"].to_str().unwrap()), (303, format!("{path}?currency=LTC").as_str()));
    let page = app.client.get(app.url(path)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<span id=\"amount\">0.25252526</span>") && !page.contains("id=\"pick\""), "{page}");
    let resp = no_redirect.post(app.url(&format!("{path}/pick"))).form(&[("currency", "BTC")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400, "not one of its currencies");

    // Callbacks: pending with what is left, confirmed, failed for the timer.
    for _ in 0..6 {
        notifier.run_once().await.unwrap();
        app.t.advance(std::time::Duration::from_secs(120));
    }
    let bodies = invoice_callbacks(&receiver);
    let id = d["id"].clone();
    let of = |status: &str, invoice: &Value| {
        bodies.iter().find(|b| b["status"] == status && b["id"] == *invoice).cloned().unwrap_or_else(|| panic!("no {status} callback: {bodies:#?}"))
    };
    let pending = of("pending", &id);
    assert_eq!(pending["currency_sent"], json!({"currency": "LTC", "amount": "0.30303031", "remaining_amount": "0.20303031"}));
    assert_eq!(pending["transactions"].as_array().unwrap().len(), 1);
    let confirmed = of("confirmed", &id);
    let address_id = confirmed["crypto_address"]["id"].clone();
    let txs = confirmed["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 2);
    assert_eq!(
        confirmed,
        json!({"id": id, "foreign_id": "164", "type": "invoice",
            "crypto_address": {"id": address_id, "currency": "LTC", "convert_to": "EUR", "address": address, "tag": null},
            "currency_sent": {"currency": "LTC", "amount": "0.30303031", "remaining_amount": "0.00000000"},
            "currency_received": {"currency": "EUR", "amount": "30.00"},
            "transactions": txs, "fees": [], "error": null, "status": "confirmed",
            "fixed_at": d["fixed_at"], "expires_at": d["release_at"]})
    );
    assert_eq!((txs[1]["amount"].as_str(), txs[1]["type"].as_str(), txs[1]["confirmations"].as_str()), (Some("0.20303031"), Some("deposit"), Some("3")));
    let failed = of("failed", &t["data"]["id"]);
    assert_eq!((failed["error"].as_str(), failed["transactions"].clone(), failed["foreign_id"].as_str()), (Some("Timer expired. User not paid."), json!([]), Some("165")));
    // No deposit callbacks for invoice payments: the invoice's are the merchant's.
    assert!(receiver.requests_to("/cp2").iter().all(|r| r.json()["type"] == "invoice"));
    app.t.assert_books_balance().await;
}
both_backends!(invoices, invoices_create_pay_and_expire);
