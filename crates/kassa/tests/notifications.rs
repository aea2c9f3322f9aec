//! Notifications through real HTTP to real local receivers, on both backends:
//! N1 (receiver down, then 500, then too slow, then 200: delivered, same event id every
//! attempt, every attempt logged), Retry-After and 410 Gone, N2 (SSRF targets refused
//! at registration and at send time), N3 (events pulled by sequence are exactly what
//! was delivered) with real deposits and withdrawals in every callback format, and two
//! notifiers on one PostgreSQL delivering each event once. Signatures are verified by
//! independent implementations: the `standardwebhooks` crate (Standard Webhooks) and
//! HMAC-SHA512 computed here (CoinsPaid style).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use kassa_chain::Priority;
use kassa_engine::chains::ChainSettings;
use kassa_engine::merchants::Scope;
use kassa_engine::notifications::Origin;
use kassa_engine::notifier::{Notifier, NotifierOptions};
use kassa_engine::webhooks::TargetPolicy;
use kassa_engine::broadcaster::Broadcaster;
use kassa_engine::withdrawals::WithdrawalRequest;
use kassa_testkit::receiver::{free_port, Receiver, Reply};
use kassa_testkit::{both_backends, Backend, ChainWorld, TestApp, TestEngine};
use serde_json::{json, Value};

fn fast_options(schedule: Vec<u64>) -> NotifierOptions {
    NotifierOptions {
        response_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(500),
        jitter_percent: 0,
        poll_interval: Duration::from_millis(50),
        retry_schedule_secs: kassa_api::dialects::callback_formats().names().into_iter().map(|f| (f.to_string(), schedule.clone())).collect(),
        ..NotifierOptions::default()
    }
}

/// The app over an engine whose callbacks may go to loopback receivers (development).
async fn dev_app(backend: Backend) -> TestApp {
    let mut t = TestEngine::new(backend).await;
    t.engine = t.engine.clone().with_target_policy(TargetPolicy::development());
    TestApp::serve(t, kassa_api::HttpOptions::default()).await
}

fn verify_standard(secret: &str, r: &kassa_testkit::receiver::Received) {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    wh.verify(&r.body, &r.headers).unwrap_or_else(|e| panic!("signature of {:?} does not verify: {e:?}", r.header("webhook-id")));
}

/// Runs the notifier until nothing is due, at most `passes` times.
async fn drain(n: &Notifier, passes: usize) {
    for _ in 0..passes {
        if n.run_once().await.unwrap().attempted == 0 {
            return;
        }
    }
}

// N1: down → 500 → slower than the timeout → 200.
async fn n1_retries_until_delivered(backend: Backend) {
    let app = dev_app(backend).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Manage]).await;
    let port = free_port(); // nothing listens yet: the receiver is down
    let (status, created) = app.post("/kassa/v1/webhook-endpoints", &token, json!({"url": format!("http://127.0.0.1:{port}/hook")})).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["format"], "standard");
    assert_eq!(created["events"], json!(["*"]));
    let endpoint = created["id"].as_i64().unwrap();
    let (status, sent) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/test"), &token, json!({})).await;
    assert_eq!(status, 202);
    let event_id = sent["event_id"].as_str().unwrap().to_string();

    let notifier = Notifier::new(app.t.engine.clone(), fast_options(vec![1, 1, 1, 1])).unwrap();
    assert_eq!(notifier.run_once().await.unwrap().failed, 1, "connection refused");
    let receiver = Receiver::start_on(port).await;
    receiver.script(vec![Reply::status(500), Reply::slow(200, Duration::from_millis(1500)), Reply::status(200)]);
    // Each retry is due one second (of the engine's clock) after the previous
    // attempt, and not before.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        assert_eq!(notifier.run_once().await.unwrap().attempted, 0, "nothing is sent before the retry is due");
        app.t.advance(Duration::from_millis(1100));
        let r = notifier.run_once().await.unwrap();
        assert_eq!(r.attempted, 1, "the retry is sent once it is due");
        outcomes.push(r.delivered);
    }
    assert_eq!(outcomes, vec![0, 0, 1], "500, timeout, then delivered");
    app.t.advance(Duration::from_secs(60));
    assert_eq!(notifier.run_once().await.unwrap().attempted, 0, "delivered: never sent again");

    let got = receiver.requests_to("/hook");
    assert_eq!(got.len(), 3, "the 500, the slow one, the 200");
    for r in &got {
        assert_eq!(r.header("webhook-id").as_deref(), Some(event_id.as_str()), "same event id every attempt");
        assert_eq!(r.body, got[0].body, "same body every attempt");
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
        verify_standard(&secret, r);
    }
    let body = got[0].json();
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["id"], json!(event_id));
    assert_eq!(body["sequence"], 1);
    assert_eq!(body["data"]["endpoint_id"], endpoint);

    // Every attempt is logged, through the API.
    let (_, list) = app.get(&format!("/kassa/v1/deliveries?event={event_id}"), Some(&token)).await;
    let d = &list["deliveries"][0];
    assert_eq!((d["status"].as_str(), d["attempts"].as_i64()), (Some("delivered"), Some(4)), "{list}");
    let (_, detail) = app.get(&format!("/kassa/v1/deliveries/{}", d["id"]), Some(&token)).await;
    let log = detail["attempt_log"].as_array().unwrap();
    let codes: Vec<Value> = log.iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, vec![Value::Null, json!(500), Value::Null, json!(200)]);
    assert!(log[0]["error"].as_str().unwrap().starts_with("connection failed"), "{}", log[0]);
    assert!(log[1]["error"].as_str().unwrap().starts_with("HTTP 500"), "{}", log[1]);
    assert!(log[2]["error"].as_str().unwrap().starts_with("no answer within 700 ms"), "{}", log[2]);
    assert!(log[3]["error"].is_null());
    assert!(log.iter().all(|a| a["latency_ms"].as_i64().unwrap() >= 0 && a["at"].as_str().is_some()));
    assert!(log[2]["latency_ms"].as_i64().unwrap() >= 700);
    assert_eq!(detail["body"].as_str().unwrap().as_bytes(), &got[0].body[..], "the log keeps the exact body");
}
both_backends!(n1, n1_retries_until_delivered);

// Retry-After on 429/503 is honoured; 410 Gone disables the endpoint until the merchant
// enables it again; a rotated secret signs alongside the new one during the overlap.
async fn retry_after_gone_and_rotation(backend: Backend) {
    let app = dev_app(backend).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Manage]).await;
    let receiver = Receiver::start().await;
    let (_, created) = app.post("/kassa/v1/webhook-endpoints", &token, json!({"url": receiver.url("/hook"), "events": ["deposit.*"]})).await;
    assert_eq!(created["events"], json!(["deposit.*"]));
    let old_secret = created["secret"].as_str().unwrap().to_string();
    let endpoint = created["id"].as_i64().unwrap();
    let notifier = Notifier::new(app.t.engine.clone(), fast_options(vec![1, 1, 1])).unwrap();

    // 503 with an HTTP date, then 429 with seconds.
    let clock_now = || time::OffsetDateTime::from_unix_timestamp_nanos(app.t.engine.now_ms() as i128 * 1_000_000).unwrap();
    let in_two = (clock_now() + time::Duration::seconds(2))
        .format(&time::macros::format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"))
        .unwrap();
    receiver.script(vec![Reply::status(503).with_header("retry-after", &in_two)]);
    let (_, first) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/test"), &token, json!({})).await;
    assert_eq!(notifier.run_once().await.unwrap().failed, 1);
    let (_, list) = app.get(&format!("/kassa/v1/deliveries?event={}", first["event_id"].as_str().unwrap()), Some(&token)).await;
    let next = time::OffsetDateTime::parse(list["deliveries"][0]["next_attempt_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let wait = next - clock_now();
    assert!(wait >= time::Duration::milliseconds(500) && wait <= time::Duration::seconds(3), "Retry-After date honoured: {wait}");
    assert_eq!(notifier.run_once().await.unwrap().attempted, 0, "not before the date");
    app.t.advance(Duration::from_millis(2100));
    assert_eq!(notifier.run_once().await.unwrap().delivered, 1);
    receiver.script(vec![Reply::status(429).with_header("retry-after", "3")]);
    let (_, sent) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/test"), &token, json!({})).await;
    let before = clock_now();
    assert_eq!(notifier.run_once().await.unwrap().failed, 1);
    let (_, list) = app.get(&format!("/kassa/v1/deliveries?event={}", sent["event_id"].as_str().unwrap()), Some(&token)).await;
    let next = time::OffsetDateTime::parse(list["deliveries"][0]["next_attempt_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let wait = next - before;
    assert!(wait >= time::Duration::milliseconds(2900) && wait <= time::Duration::seconds(5), "Retry-After 3 s honoured, not the 1 s schedule: {wait}");
    assert_eq!(list["deliveries"][0]["last_status_code"], 429);

    // Rotation: both secrets sign while the old one overlaps.
    let (status, rotated) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/rotate-secret"), &token, json!({"overlap_secs": 600})).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, old_secret);
    assert!(rotated["previous_secret_valid_until"].is_string());
    app.t.advance(Duration::from_millis(2000));
    assert_eq!(notifier.run_once().await.unwrap().attempted, 0, "Retry-After 3 s, not the 1 s schedule");
    app.t.advance(Duration::from_millis(1100));
    assert_eq!(notifier.run_once().await.unwrap().delivered, 1);
    let got = receiver.requests_to("/hook");
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].header("webhook-signature").unwrap().split(' ').count(), 2);
    verify_standard(&old_secret, &got[3]);
    verify_standard(&new_secret, &got[3]);

    // 410 Gone: the delivery fails, the endpoint is disabled, nothing more goes there.
    receiver.script(vec![Reply::status(410)]);
    app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/test"), &token, json!({})).await;
    assert_eq!(notifier.run_once().await.unwrap().failed, 1);
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&token)).await;
    assert_eq!(eps["webhook_endpoints"][0]["status"], "disabled");
    assert_eq!(eps["webhook_endpoints"][0]["disabled_reason"], "the receiver answered 410 Gone");
    let (status, refused) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/test"), &token, json!({})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("conflict")));
    // Events raised while the endpoint is disabled are kept, without a delivery row
    // each: the endpoint counts what it missed.
    let (_, before) = app.get("/kassa/v1/deliveries", Some(&token)).await;
    let rows_before = before["deliveries"].as_array().unwrap().len();
    let shop = app.t.engine.find_merchant("shop").await.unwrap().id;
    for i in 0..3 {
        app.t.engine.store.insert_events(vec![kassa_store::NewEvent {
            merchant_id: shop,
            event_type: "deposit.dropped".into(),
            object_kind: "note".into(),
            object_id: i,
            origin: "native".into(),
            callback_url: None,
            data: json!({"note": "raised while disabled"}),
            only_endpoint: None,
        }]).await.unwrap();
    }
    assert_eq!(app.t.engine.relay_events().await.unwrap(), 3);
    let (_, after) = app.get("/kassa/v1/deliveries", Some(&token)).await;
    assert_eq!(after["deliveries"].as_array().unwrap().len(), rows_before, "no delivery row per missed event");
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&token)).await;
    assert_eq!(eps["webhook_endpoints"][0]["missed_events"], 3);
    assert!(eps["webhook_endpoints"][0]["missed_since"].as_str().is_some_and(|t| t.ends_with('Z')), "{eps}");
    let (_, failed) = app.get("/kassa/v1/deliveries?status=failed", Some(&token)).await;
    let failed = failed["deliveries"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1, "only the attempt the receiver refused");
    assert_eq!(failed[0]["last_status_code"], 410);
    assert_eq!(notifier.run_once().await.unwrap().attempted, 0, "nothing goes to a disabled endpoint");

    // Enabled again, the failed deliveries are sent again by a redelivery of their range.
    let (status, _) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/enable"), &token, json!({})).await;
    assert_eq!(status, 200);
    let (status, r) = app.post("/kassa/v1/deliveries/redeliver", &token, json!({"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})).await;
    assert_eq!((status, r["redelivering"].as_i64()), (202, Some(4)), "the refused one and the three missed");
    assert_eq!(notifier.run_once().await.unwrap().delivered, 4);
    assert_eq!(receiver.requests_to("/hook").len(), 9);
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&token)).await;
    assert_eq!((eps["webhook_endpoints"][0]["missed_events"].as_i64(), eps["webhook_endpoints"][0]["missed_since"].is_null()), (Some(0), true));
    let (_, again) = app.post("/kassa/v1/deliveries/redeliver", &token, json!({"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})).await;
    assert_eq!(again["redelivering"], 0, "missed events are delivered once");
    // Redelivering one event sends the same id and the same bytes again.
    let event = receiver.requests_to("/hook")[8].header("webhook-id").unwrap();
    let (status, r) = app.post(&format!("/kassa/v1/events/{event}/redeliver"), &token, json!({})).await;
    assert_eq!((status, r["redelivering"].as_i64()), (202, Some(1)));
    assert_eq!(notifier.run_once().await.unwrap().delivered, 1);
    let got = receiver.requests_to("/hook");
    assert_eq!(got[9].header("webhook-id").unwrap(), event);
    assert_eq!(got[9].body, got[8].body);
    let (_, failed) = app.get("/kassa/v1/deliveries?status=failed", Some(&token)).await;
    assert!(failed["deliveries"].as_array().unwrap().is_empty());

    // Another merchant sees none of it (A3).
    let (_, other) = app.merchant_with_token("other", &[Scope::Read, Scope::Manage]).await;
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&other)).await;
    assert!(eps["webhook_endpoints"].as_array().unwrap().is_empty());
    let (status, _) = app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/test"), &other, json!({})).await;
    assert_eq!(status, 404);
    let (_, d) = app.get("/kassa/v1/deliveries", Some(&other)).await;
    assert!(d["deliveries"].as_array().unwrap().is_empty());
    let (_, mine) = app.get("/kassa/v1/deliveries", Some(&token)).await;
    let delivery = mine["deliveries"][0]["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/kassa/v1/deliveries/{delivery}"), Some(&other)).await.0, 404);
    assert_eq!(app.post(&format!("/kassa/v1/events/{event}/redeliver"), &other, json!({})).await.0, 404);
    for action in ["rotate-secret", "enable", "disable"] {
        assert_eq!(app.post(&format!("/kassa/v1/webhook-endpoints/{endpoint}/{action}"), &other, json!({})).await.0, 404, "{action}");
    }
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&token)).await;
    assert_eq!(eps["webhook_endpoints"][0]["status"], "active", "untouched by the other merchant");
    let (_, events) = app.get("/kassa/v1/events", Some(&other)).await;
    assert!(events["events"].as_array().unwrap().is_empty());
}
both_backends!(retry_after_gone_rotation, retry_after_gone_and_rotation);

// N2: internal targets are refused when registered (nothing stored) and again at send
// time (a registered target whose policy no longer allows it gets nothing).
async fn n2_ssrf_targets_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await; // production policy: no loopback
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Manage]).await;
    for (url, kind) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://0.0.0.0:9/hook", "unspecified"),
        ("http://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
        ("http://192.0.2.1/hook", "documentation"),
        ("http://[2001:db8::1]/hook", "documentation"),
    ] {
        let (status, body) = app.post("/kassa/v1/webhook-endpoints", &token, json!({"url": url})).await;
        assert_eq!(status, 400, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("is a {kind} address")), "{url}: {message}");
    }
    for bad in ["ftp://example.com/x", "not a url", "http://user:pw@example.com/"] {
        let (status, _) = app.post("/kassa/v1/webhook-endpoints", &token, json!({"url": bad})).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = app.post("/kassa/v1/webhook-endpoints", &token, json!({"url": "https://example.com/", "format": "soap"})).await;
    assert_eq!(status, 400);
    let (status, _) = app.post("/kassa/v1/webhook-endpoints", &token, json!({"url": "https://example.com/", "events": ["deposit.paid"]})).await;
    assert_eq!(status, 400);
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&token)).await;
    assert!(eps["webhook_endpoints"].as_array().unwrap().is_empty(), "nothing stored");

    // Registered while loopback was allowed; sent by an instance that refuses it.
    let receiver = Receiver::start().await;
    let m = app.t.merchant("dev-shop").await;
    let dev = app.t.engine.clone().with_target_policy(TargetPolicy::development());
    let e = dev.create_endpoint(m, &receiver.url("/hook"), "standard", &[]).await.unwrap();
    let event = dev.send_test_event(m, e.endpoint.id).await.unwrap();
    let strict = Notifier::new(app.t.engine.clone(), fast_options(vec![60])).unwrap();
    assert_eq!(strict.run_once().await.unwrap().failed, 1);
    assert!(receiver.requests().is_empty(), "refused at send time");
    let d = app.t.engine.deliveries(kassa_store::DeliveryQuery { event_public_id: Some(event), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(d[0].status, "pending", "retried later: DNS answers change");
    let detail = app.t.engine.delivery(None, d[0].id).await.unwrap();
    let error = detail.attempt_log[0].error.clone().unwrap();
    assert!(error.starts_with("refused: callback target 127.0.0.1 is a loopback address"), "{error}");
}
both_backends!(n2, n2_ssrf_targets_refused);

fn hmac_sha512_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

// N3 with real money: deposits to a WestWallet address (ipn_url) and a CoinsPaid v1
// address, a CoinsPaid v2 withdrawal; Kassa's own webhooks get every event, each
// dialect its own format; events pulled by sequence are exactly what was delivered.
async fn n3_real_events_in_every_format(backend: Backend) {
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    t.engine = t.engine.clone().with_target_policy(TargetPolicy::development());
    let app = TestApp::serve(t, Default::default()).await;
    let engine = app.t.engine.clone();
    let m = app.t.merchant("shop").await;
    let receiver = Receiver::start().await;
    let std_ep = engine.create_endpoint(m, &receiver.url("/kassa"), "standard", &[]).await.unwrap();
    let secret = std_ep.secret.clone().unwrap();
    engine.create_endpoint(m, &receiver.url("/cp1"), "coinspaid_v1", &[]).await.unwrap();
    engine.create_endpoint(m, &receiver.url("/cp2"), "coinspaid_v2", &[]).await.unwrap();
    let cp_key = engine.create_key(m, "coinspaid", Scope::ALL.to_vec(), vec![], "callbacks").await.unwrap();
    let cp_secret = cp_key.secret.clone().unwrap();
    let notifier = Notifier::new(engine.clone(), fast_options(vec![1])).unwrap();
    let mut watcher = kassa_engine::watcher::Watcher::new(engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();

    let ww = Origin { dialect: "westwallet".into(), callback_url: Some(receiver.url("/ipn?token=s3cret")) };
    let a1 = engine.create_deposit_address_from(m, "LTC", Some("order 7 & ü".into()), None, ww, None).await.unwrap();
    let cp1 = Origin { dialect: "coinspaid_v1".into(), callback_url: None };
    let a2 = engine.create_deposit_address_from(m, "LTC", None, Some("customer-9".into()), cp1, None).await.unwrap();
    let tx1 = node.pay(&a1.address, "1.25").await;
    let tx2 = node.pay(&a2.address, "0.5").await;
    // Each step's events are in the outbox as soon as the step is done (written in its
    // transaction): the notifier delivers them before anything else happens.
    let delivered_to_kassa = || receiver.requests_to("/kassa").len();
    watcher.cycle().await.unwrap(); // seen in the mempool
    drain(&notifier, 3).await;
    assert_eq!(delivered_to_kassa(), 2);
    node.mine(1).await;
    watcher.cycle().await.unwrap(); // confirmed (1 of 3)
    drain(&notifier, 3).await;
    assert_eq!(delivered_to_kassa(), 4);
    node.mine(2).await;
    assert_eq!(watcher.cycle().await.unwrap().credited, 2);
    drain(&notifier, 3).await;
    assert_eq!(delivered_to_kassa(), 6);

    let dest = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let cp2 = Origin { dialect: "coinspaid_v2".into(), callback_url: None };
    let wd = engine
        .request_withdrawal(WithdrawalRequest {
            merchant: m,
            currency: "LTC".into(),
            address: dest.clone(),
            amount: "0.3".into(),
            priority: Priority::High,
            idempotency_key: "payout-1".into(),
            origin: cp2,
            description: None,
            pay_from: None,
        })
        .await
        .unwrap();
    drain(&notifier, 3).await;
    assert_eq!(delivered_to_kassa(), 7, "queued");
    let broadcaster = Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO).unwrap();
    broadcaster.cycle().await.unwrap();
    drain(&notifier, 3).await;
    assert_eq!(delivered_to_kassa(), 8, "broadcast");
    node.mine(3).await;
    assert_eq!(broadcaster.cycle().await.unwrap().confirmed, 1);
    drain(&notifier, 3).await;
    assert_eq!(delivered_to_kassa(), 9, "confirmed");
    watcher.cycle().await.unwrap();
    let wd = engine.withdrawal(m, wd.id).await.unwrap();
    assert_eq!(wd.status, "confirmed");

    // Kassa's own webhooks: every event, signed, in sequence.
    let kassa = receiver.requests_to("/kassa");
    for r in &kassa {
        verify_standard(&secret, r);
    }
    let delivered: BTreeMap<i64, Value> = kassa.iter().map(|r| (r.json()["sequence"].as_i64().unwrap(), r.json())).collect();
    assert_eq!(delivered.len(), kassa.len(), "each event once");
    let types: Vec<String> = delivered.values().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        types,
        [
            "deposit.seen", "deposit.seen", "deposit.confirmed", "deposit.confirmed", "deposit.credited", "deposit.credited",
            "withdrawal.queued", "withdrawal.broadcast", "withdrawal.confirmed"
        ]
    );
    assert_eq!(delivered.keys().copied().collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>(), "gap-free sequence");
    let credited = &delivered[&5];
    assert_eq!(credited["data"]["status"], "credited");
    assert_eq!(credited["data"]["confirmations"], 3);
    assert!(credited["data"]["amount"] == "1.25000000" || credited["data"]["amount"] == "0.50000000");
    assert_eq!(delivered[&9]["data"]["txid"], json!(wd.txid));
    assert_eq!(delivered[&9]["data"]["amount"], "0.30000000");

    // N3: the pull API returns exactly what was delivered, from any point.
    let token = engine.create_key(m, "native", vec![Scope::Read], vec![], "pull").await.unwrap().token.unwrap();
    let (_, pulled) = app.get("/kassa/v1/events?after=0", Some(&token)).await;
    let pulled_list = pulled["events"].as_array().unwrap();
    assert_eq!(pulled_list.len(), 9);
    for e in pulled_list {
        assert_eq!(e, &delivered[&e["sequence"].as_i64().unwrap()], "pulled = delivered");
    }
    assert_eq!(pulled["next_after"], 9);
    let (_, tail) = app.get("/kassa/v1/events?after=6&limit=2", Some(&token)).await;
    let seqs: Vec<i64> = tail["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!((seqs, tail["next_after"].as_i64()), (vec![7, 8], Some(8)));

    // WestWallet IPN: form-encoded, first seen (pending) and final (completed).
    let ipn = receiver.requests_to("/ipn");
    assert_eq!(ipn.len(), 2, "pending, then completed");
    for (r, status, confirmations) in [(&ipn[0], "pending", "0"), (&ipn[1], "completed", "3")] {
        assert_eq!(r.header("content-type").as_deref(), Some("application/x-www-form-urlencoded"));
        let form = r.form();
        let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["id", "amount", "address", "dest_tag", "label", "currency", "status", "blockchain_confirmations", "fee", "blockchain_hash"]);
        let f: BTreeMap<String, String> = form.into_iter().collect();
        assert_eq!(f["amount"], "1.25000000");
        assert_eq!(f["address"], a1.address);
        assert_eq!(f["dest_tag"], "");
        assert_eq!(f["label"], "order 7 & ü");
        assert_eq!(f["currency"], "LTC");
        assert_eq!(f["status"], status);
        assert_eq!(f["blockchain_confirmations"], confirmations);
        assert_eq!(f["fee"], "0.00000000");
        assert_eq!(f["blockchain_hash"], tx1);
    }
    assert_eq!(ipn[0].form()[0], ipn[1].form()[0], "one transaction id");

    // CoinsPaid v1 (the v1 address): flat, all strings, signed with the merchant's key.
    let cp1 = receiver.requests_to("/cp1");
    let statuses: Vec<Value> = cp1.iter().map(|r| r.json()["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("not_confirmed"), json!("confirmed")]);
    for r in &cp1 {
        assert_eq!(r.header("x-processing-key").as_deref(), Some(cp_key.public_key.as_str()));
        assert_eq!(r.header("x-processing-signature").unwrap(), hmac_sha512_hex(&cp_secret, &r.body));
        let b = r.json();
        assert!(b.as_object().unwrap().values().all(Value::is_string), "v1 values are strings: {b}");
        assert_eq!((b["type"].as_str(), b["currency"].as_str(), b["amount"].as_str()), (Some("deposit"), Some("LTC"), Some("0.50000000")));
        assert_eq!((b["txid"].as_str(), b["foreign_id"].as_str(), b["address"].as_str()), (Some(tx2.as_str()), Some("customer-9"), Some(a2.address.as_str())));
    }
    assert_eq!(cp1[1].json()["confirmations"], "3");

    // CoinsPaid v2 (the v2 withdrawal): nested, confirmations as a string, ASCII only.
    let cp2 = receiver.requests_to("/cp2");
    let statuses: Vec<Value> = cp2.iter().map(|r| r.json()["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("not_confirmed"), json!("confirmed")]);
    let b = cp2[1].json();
    assert_eq!(cp2[1].header("x-processing-signature").unwrap(), hmac_sha512_hex(&cp_secret, &cp2[1].body));
    assert!(cp2[1].body.is_ascii());
    assert_eq!(b["type"], "withdrawal");
    assert_eq!(b["foreign_id"], "payout-1");
    assert_eq!(b["currency_received"], json!({"currency": "LTC", "amount": "0.30000000"}));
    assert_eq!(b["fees"][0]["amount"], json!(wd.fee));
    assert_eq!(b["transactions"][0]["txid"], json!(wd.txid));
    assert_eq!(b["transactions"][0]["confirmations"], "3");
    assert_eq!(b["crypto_address"]["address"], json!(dest));
    app.t.assert_books_balance().await;
}
both_backends!(n3, n3_real_events_in_every_format);

// Two instances on one PostgreSQL: every event delivered, none twice, never two
// attempts of one event at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_deliver_each_event_once() {
    let t = TestEngine::new(Backend::Postgres).await;
    let a = t.engine.clone().with_target_policy(TargetPolicy::development());
    let b = t.another_instance(Default::default()).await.with_target_policy(TargetPolicy::development());
    let m = t.merchant("shop").await;
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::slow(200, Duration::from_millis(20)));
    let endpoint = a.create_endpoint(m, &receiver.url("/hook"), "standard", &[]).await.unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..150 {
        ids.insert(a.send_test_event(m, endpoint.endpoint.id).await.unwrap());
    }
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let opts = NotifierOptions { max_in_flight_per_endpoint: 8, ..fast_options(vec![1]) };
    // Each instance runs a relay, as the server does; they take turns.
    let relays = [kassa_engine::relay::spawn_relay(&a, stopping.clone()), kassa_engine::relay::spawn_relay(&b, stopping.clone())];
    let ta = tokio::spawn(Notifier::new(a.clone(), opts.clone()).unwrap().run(stopping.clone()));
    let tb = tokio::spawn(Notifier::new(b.clone(), opts).unwrap().run(stopping));
    receiver.wait_for("/hook", ids.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    let _ = tokio::join!(ta, tb);
    for r in relays {
        r.await.unwrap();
    }
    let got = receiver.requests_to("/hook");
    let got_ids: Vec<String> = got.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert_eq!(got_ids.iter().cloned().collect::<BTreeSet<_>>(), ids, "every event delivered");
    assert_eq!(got_ids.len(), ids.len(), "no event delivered twice");
    assert_eq!(receiver.overlaps(), 0);
    let deliveries = a.deliveries(kassa_store::DeliveryQuery { merchant: Some(m), limit: 500, ..Default::default() }).await.unwrap();
    assert!(deliveries.iter().all(|d| d.status == "delivered" && d.attempts == 1));
    let mut by_instance = BTreeMap::new();
    for d in deliveries.iter().take(150) {
        let detail = a.delivery(None, d.id).await.unwrap();
        *by_instance.entry(detail.attempt_log[0].instance.clone()).or_insert(0) += 1;
    }
    assert_eq!(by_instance.len(), 2, "both instances delivered: {by_instance:?}");
}

// C4: the real server is killed (abort, as `kill -9`) after a deposit's event is
// committed and before its callback is sent; after a restart the callback arrives.
async fn c4_crash_before_delivery(backend: Backend) {
    use kassa_testkit::process::ServerSetup;
    let node = kassa_testkit::litecoin::LitecoinNode::start().await;
    let db = kassa_testkit::TestDb::new(backend).await;
    let setup = ServerSetup::new(
        env!("CARGO_BIN_EXE_kassa"),
        &db,
        &node,
        "[notifications]\nallow_loopback = true\npoll_interval_ms = 100\nconnect_timeout_ms = 1000\nresponse_timeout_ms = 2000",
        "confirmations = 1",
    );
    let command = |args: &[&str]| setup.command(args);
    let cli = |args: &[&str]| setup.json(args);
    cli(&["merchant", "create", "--name", "shop", "--json"]);
    let token = cli(&["key", "create", "--merchant", "shop", "--dialect", "native", "--scopes", "all", "--json"])["token"].as_str().unwrap().to_string();
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();

    let mut server = setup.serve(Some("before_delivery"));
    let base = server.base_url.clone();
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send();
    let endpoint: Value = post("/kassa/v1/webhook-endpoints", json!({"url": receiver.url("/hook")})).await.unwrap().json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    let address: Value = post("/kassa/v1/addresses", json!({"currency": "LTC"})).await.unwrap().json().await.unwrap();
    let address = address["address"].as_str().unwrap().to_string();
    let txid = node.pay(&address, "1").await;

    // The watcher commits the deposit and its event; the notifier dies before sending.
    let (code, stderr) = server.wait_exit(Duration::from_secs(30));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("KASSATEST_CRASH_AT=before_delivery"), "{stderr}");
    assert!(receiver.requests().is_empty(), "nothing was sent before the crash");
    let pending = cli(&["notifications", "deliveries", "--merchant", "shop", "--json"]);
    let pending = pending["deliveries"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((pending[0]["status"].as_str(), pending[0]["attempts"].as_i64()), (Some("pending"), Some(0)));
    let event_id = pending[0]["event_id"].as_str().unwrap().to_string();

    // Restarted, the server delivers it (once the dead instance's claim lapses).
    let server = setup.serve(None);
    let got = receiver.wait_for("/hook", 1, Duration::from_secs(40)).await;
    assert_eq!(got[0].header("webhook-id").as_deref(), Some(event_id.as_str()));
    verify_standard(&secret, &got[0]);
    let body = got[0].json();
    assert_eq!(body["type"], "deposit.seen");
    assert_eq!(body["data"]["address"], json!(address));
    assert_eq!(body["data"]["txid"], json!(txid));
    assert_eq!(body["data"]["amount"], "1.00000000");

    // The rest of the deposit's life follows; the metrics show an empty backlog.
    node.mine(1).await;
    let got = receiver.wait_for("/hook", 3, Duration::from_secs(30)).await;
    // Deliveries run concurrently and may arrive out of order; the sequence orders them.
    let by_seq: BTreeMap<i64, Value> = got.iter().map(|r| (r.json()["sequence"].as_i64().unwrap(), r.json()["type"].clone())).collect();
    assert_eq!(by_seq.into_values().collect::<Vec<_>>(), vec![json!("deposit.seen"), json!("deposit.confirmed"), json!("deposit.credited")]);
    // The relay and the notifier publish their backlog gauges every 2 s: wait for empty ones.
    let started = Instant::now();
    let metrics = loop {
        let metrics = client.get(format!("{}/metrics", server.base_url)).send().await.unwrap().text().await.unwrap();
        let empty = |gauge: &str| metrics.lines().any(|l| l == format!("{gauge} 0"));
        if (empty("kassa_webhook_backlog") && empty("kassa_event_outbox_backlog")) || started.elapsed() > Duration::from_secs(15) {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.lines().any(|l| l == "kassa_webhook_backlog 0"), "{metrics}");
    assert!(metrics.contains("kassa_webhook_oldest_undelivered_seconds 0"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "kassa_event_outbox_backlog 0"), "{metrics}");
    assert!(metrics.contains("kassa_webhook_delivery_latency_seconds"), "{metrics}");
    assert!(metrics.contains("kassa_webhook_attempts_total{format=\"standard\",outcome=\"delivered\"} 3"), "{metrics}");
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
    let check = command(&["check"]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
both_backends!(c4, c4_crash_before_delivery);

// Redirects are not followed (a 302 to the metadata address is just a failed attempt),
// and several attempts answered 410 at once disable the endpoint without a deadlock,
// each attempt logged.
async fn redirects_and_concurrent_gone(backend: Backend) {
    let app = dev_app(backend).await;
    let (m, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Manage]).await;
    let receiver = Receiver::start().await;
    let e = app.t.engine.create_endpoint(m, &receiver.url("/hook"), "standard", &[]).await.unwrap();
    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { max_in_flight_per_endpoint: 8, ..fast_options(vec![60]) }).unwrap();
    receiver.script(vec![Reply::status(302).with_header("location", "http://169.254.169.254/latest/meta-data/")]);
    app.t.engine.send_test_event(m, e.endpoint.id).await.unwrap();
    assert_eq!(notifier.run_once().await.unwrap().failed, 1);
    assert_eq!(receiver.requests().len(), 1);
    let (_, list) = app.get("/kassa/v1/deliveries", Some(&token)).await;
    assert_eq!((list["deliveries"][0]["status"].as_str(), list["deliveries"][0]["last_status_code"].as_i64()), (Some("pending"), Some(302)));

    receiver.default_reply(Reply::slow(410, Duration::from_millis(300)));
    for _ in 0..6 {
        app.t.engine.send_test_event(m, e.endpoint.id).await.unwrap();
    }
    let r = notifier.run_once().await.unwrap();
    assert_eq!((r.attempted, r.failed), (6, 6), "all six at once");
    assert_eq!(receiver.requests().len(), 7);
    let (_, eps) = app.get("/kassa/v1/webhook-endpoints", Some(&token)).await;
    assert_eq!(eps["webhook_endpoints"][0]["status"], "disabled");
    let (_, list) = app.get("/kassa/v1/deliveries?status=failed", Some(&token)).await;
    let failed = list["deliveries"].as_array().unwrap();
    assert_eq!(failed.len(), 7, "the six, and the pending 302 one");
    for d in failed.iter().filter(|d| d["last_status_code"] == 410) {
        assert_eq!(d["attempts"], 1, "{d}");
        let detail = app.t.engine.delivery(Some(m), d["id"].as_i64().unwrap()).await.unwrap();
        assert_eq!(detail.attempt_log.len(), 1);
        assert_eq!(detail.attempt_log[0].status_code, Some(410));
    }
    assert_eq!(failed.iter().filter(|d| d["last_status_code"] == 410).count(), 6, "every attempt logged");
}
both_backends!(redirects_gone, redirects_and_concurrent_gone);

// Item 8: events written by concurrent state changes (16 writers, two instances'
// relays on PostgreSQL) while a client pulls: every pull is gap-free (it never sees a
// number before the ones below it), each event is pulled once, and an event written
// after another had committed is numbered after it.
async fn pulls_stay_gap_free_under_concurrent_writes(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let a = t.engine.clone().with_target_policy(TargetPolicy::development());
    let m = t.merchant("shop").await;
    let receiver = Receiver::start().await;
    let endpoint = a.create_endpoint(m, &receiver.url("/hook"), "standard", &[]).await.unwrap().endpoint.id;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut relays = vec![kassa_engine::relay::spawn_relay(&a, stopping.clone())];
    if backend == Backend::Postgres {
        relays.push(kassa_engine::relay::spawn_relay(&t.another_instance(Default::default()).await, stopping.clone()));
    }
    // Each writer sends its events one after another: its own order is causal.
    let mut writers = Vec::new();
    for _ in 0..16 {
        let e = a.clone();
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..15 {
                mine.push(e.send_test_event(m, endpoint).await.unwrap());
            }
            mine
        }));
    }
    let mut pulled: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pulled.len() < 240 {
        assert!(Instant::now() < deadline, "only {} of 240 events pulled", pulled.len());
        let after = pulled.last().map_or(0, |e| e["sequence"].as_i64().unwrap());
        let page = a.events_after(m, after, 50).await.unwrap();
        for (i, e) in page.iter().enumerate() {
            assert_eq!(e["sequence"].as_i64(), Some(after + 1 + i as i64), "a gap after {after}: {page:?}");
        }
        pulled.extend(page);
        tokio::task::yield_now().await;
    }
    let position: BTreeMap<String, i64> = pulled.iter().map(|e| (e["id"].as_str().unwrap().to_string(), e["sequence"].as_i64().unwrap())).collect();
    assert_eq!(position.len(), 240, "each event once");
    for w in writers {
        let mine = w.await.unwrap();
        let seqs: Vec<i64> = mine.iter().map(|id| position[id]).collect();
        assert!(seqs.windows(2).all(|p| p[0] < p[1]), "a writer's events out of order: {seqs:?}");
    }
    stop.send(true).unwrap();
    for r in relays {
        r.await.unwrap();
    }
    assert!(a.events_after(m, 240, 10).await.unwrap().is_empty());
    // Every event has its delivery, created by the relay.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let notifier = tokio::spawn(Notifier::new(a.clone(), fast_options(vec![1])).unwrap().run(stopping));
    receiver.wait_for("/hook", 240, Duration::from_secs(60)).await;
    stop.send(true).unwrap();
    notifier.await.unwrap();
    let ids: BTreeSet<String> = receiver.requests_to("/hook").iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert_eq!(ids, position.keys().cloned().collect::<BTreeSet<_>>());
}
both_backends!(pulls_stay_gap_free, pulls_stay_gap_free_under_concurrent_writes);

// Item 8: a state change no longer waits for the merchant's event counter. Another
// transaction holds the lock every event write took on it until its state change
// committed (row lock on the merchant's `event_seq`); a test event is still written at
// once, and numbered when the lock is released. (SQLite has one writer at a time.)
#[tokio::test]
async fn event_writes_do_not_wait_for_the_sequence() {
    let t = TestEngine::new(Backend::Postgres).await;
    let e = t.engine.clone().with_target_policy(TargetPolicy::development());
    let m = t.merchant("shop").await;
    let receiver = Receiver::start().await;
    let endpoint = e.create_endpoint(m, &receiver.url("/hook"), "standard", &[]).await.unwrap().endpoint.id;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT event_seq FROM merchants WHERE id = $1 FOR NO KEY UPDATE").bind(m.0).execute(&mut *other).await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(10), e.send_test_event(m, endpoint)).await;
    let id = written.expect("the event write waited for another transaction of the merchant").unwrap();
    other.rollback().await.unwrap();
    assert_eq!(e.relay_events().await.unwrap(), 1);
    let pulled = e.events_after(m, 0, 10).await.unwrap();
    assert_eq!((pulled.len(), pulled[0]["id"].as_str(), pulled[0]["sequence"].as_i64()), (1, Some(id.as_str()), Some(1)));
}
