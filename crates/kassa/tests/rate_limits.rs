//! Rate limits through real HTTP: the default budgets for quote creation and failed
//! authentication, per-key and per-IP budgets, the client's address from a trusted
//! proxy header only, refusals in each dialect's own shape with `Retry-After`, and
//! budgets that refill as the clock moves (never by sleeping). The limits live in
//! memory, so one backend is enough.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use kassa_api::limits::{GroupLimits, Rate, RateLimitOptions};
use kassa_api::HttpOptions;
use kassa_engine::merchants::Scope;
use kassa_testkit::{Backend, TestApp};
use serde_json::{json, Value};

async fn send(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (status, retry, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

/// The hostile client's 2,000 quotes: the default budget (120 a minute per key and
/// per IP) serves the first 120 (and what refilled meanwhile), then refuses in the
/// native shape until the clock has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotes_beyond_the_default_budget_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Exchange]).await;
    let body = json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"});
    let quote = || app.client.post(app.url("/kassa/v1/quotes")).bearer_auth(&token).json(&body);
    let started = Instant::now();
    let mut served = 0;
    let refusal = loop {
        let (status, retry, body) = send(quote()).await;
        if status != 429 {
            assert_eq!(status, 503, "no rates configured: each quote is answered rates_unavailable: {body}");
            served += 1;
            assert!(served <= 2000);
            continue;
        }
        break (retry, body);
    };
    // One quote comes back every 0.5 s: what the elapsed time refilled may also pass.
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize + 1;
    assert!((120..=120 + refilled).contains(&served), "{served} quotes served before the first refusal");
    assert_eq!(refusal.0.as_deref(), Some("1"), "Retry-After in whole seconds");
    assert_eq!(refusal.1, json!({"error": {"code": "too_many_requests", "message": "too many requests: retry in 1 s"}}));

    // Other requests still go through: quotes have a budget of their own.
    let (status, _) = app.get("/kassa/v1/balances", Some(&token)).await;
    assert_eq!(status, 200);
    // A minute later the budget is full again.
    app.t.advance(Duration::from_secs(60));
    for _ in 0..100 {
        assert_eq!(send(quote()).await.0, 503);
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("kassa_http_rate_limited_total{") && l.contains("group=\"quote\"")), "{metrics}");
}

/// The brute-force guard: 30 failed authentications a minute per client; then that
/// client (even with a good token) is refused until the guard refills, while other
/// clients are served. Behind a proxy the client is the trusted header's last entry;
/// without one configured, the header is not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_lock_out_the_client_not_the_merchant() {
    let rate_limits = RateLimitOptions { client_ip_header: Some("x-forwarded-for".parse().unwrap()), ..Default::default() };
    let app = TestApp::spawn_with(Backend::Sqlite, HttpOptions { rate_limits, ..Default::default() }).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read]).await;
    let from = |ip: &str, token: &str| app.client.get(app.url("/kassa/v1/balances")).bearer_auth(token).header("x-forwarded-for", format!("10.9.9.9, {ip}"));
    let attacker = "203.0.113.5";
    for i in 0..31 {
        let (status, _, body) = send(from(attacker, &format!("ksk_guess{i}"))).await;
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    let (status, retry, body) = send(from(attacker, "ksk_guess31")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_requests")));
    let wait: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&wait), "one failure comes back every 2 s: {wait}");
    assert_eq!(send(from(attacker, &token)).await.0, 429, "a good token from a locked-out client waits too");
    assert_eq!(send(from("198.51.100.9", &token)).await.0, 200, "another client is served");
    app.t.advance(Duration::from_secs(60));
    assert_eq!(send(from(attacker, &token)).await.0, 200, "served again once the guard refilled");

    // Without a configured header, X-Forwarded-For is the client's word and ignored:
    // changing it does not escape the guard.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read]).await;
    let from = |ip: &str, token: &str| app.client.get(app.url("/kassa/v1/balances")).bearer_auth(token).header("x-forwarded-for", ip.to_string());
    for i in 0..31 {
        assert_eq!(send(from(&format!("192.0.2.{i}"), "ksk_wrong")).await.0, 401);
    }
    assert_eq!(send(from("192.0.2.200", &token)).await.0, 429);
}

fn sign(secret: &str, ts: &str, payload: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// WestWallet: a key's budget is its own (another key of the same merchant, from
/// the same address, is served), and refusals are `{"error": "too_many_requests"}`
/// with `Retry-After`, for spent budgets and for the brute-force guard alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn westwallet_refusals_take_its_shape() {
    let mut rate_limits = RateLimitOptions { auth_failures: Some(Rate::new(3, 60)), ..Default::default() };
    rate_limits.groups[0] = GroupLimits { per_key: Some(Rate::new(5, 60)), per_ip: None };
    let app = TestApp::spawn_with(Backend::Sqlite, HttpOptions { rate_limits, ..Default::default() }).await;
    let m = app.t.merchant("shop").await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let k = app.t.engine.create_key(m, "westwallet", vec![Scope::Read], vec![], "ww").await.unwrap();
        keys.push((k.public_key, k.secret.unwrap()));
    }
    let balance = |(public, secret): &(String, String), good: bool| {
        let ts = app.t.engine.clock().now_secs().to_string();
        let sign = if good { sign(secret, &ts, r#"{"currency":"LTC"}"#) } else { sign("not the secret", &ts, "") };
        app.client.get(app.url("/wallet/balance?currency=LTC")).header("X-API-KEY", public).header("X-ACCESS-TIMESTAMP", ts).header("X-ACCESS-SIGN", sign)
    };
    for _ in 0..5 {
        let (status, _, body) = send(balance(&keys[0], true)).await;
        assert_eq!((status, body["error"].as_str()), (200, Some("ok")), "{body}");
    }
    let (status, retry, body) = send(balance(&keys[0], true)).await;
    assert_eq!((status, body), (429, json!({"error": "too_many_requests"})), "no `message` key: the Python client breaks on one");
    let wait: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((11..=12).contains(&wait), "one request back every 12 s: {wait}");
    assert_eq!(send(balance(&keys[1], true)).await.0, 200, "the other key has its own budget");
    app.t.advance(Duration::from_secs(12));
    assert_eq!(send(balance(&keys[0], true)).await.0, 200);

    // Forged signatures: 401 until the guard is spent, then 429 in this shape.
    for _ in 0..4 {
        assert_eq!(send(balance(&keys[1], false)).await.0, 401);
    }
    let (status, retry, body) = send(balance(&keys[1], true)).await;
    assert_eq!((status, body), (429, json!({"error": "too_many_requests"})));
    assert!(retry.is_some());
    // Paths no route serves are worded by the dialect too, before anything else.
    let (status, _, body) = send(app.client.get(app.url("/wallet/nowhere"))).await;
    assert_eq!((status, body), (429, json!({"error": "too_many_requests"})));
}
