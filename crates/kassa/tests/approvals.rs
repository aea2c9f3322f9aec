//! Withdrawal limits with approval, on both backends with a real litecoind: a
//! withdrawal over the per-transaction or the per-day limit is accepted as `pending`,
//! its funds held, and sent only once approved (once, also when two approvals race);
//! declined, it is cancelled and its funds return. The daily limit holds under
//! concurrent requests, limits in a fiat equivalent convert at the current rate, the
//! CoinsPaid-style dialect answers and calls back `pending`, and the real server killed
//! right after an approval pays it exactly once after a restart.

use std::time::Duration;

use kassa_chain::Priority;
use kassa_core::ledger::MerchantId;
use kassa_engine::chains::ChainSettings;
use kassa_engine::merchants::Scope;
use kassa_engine::withdrawals::{Withdrawal, WithdrawalRequest};
use kassa_testkit::node::{wait_for, TestNode};
use kassa_testkit::process::ServerSetup;
use kassa_testkit::{both_backends, Backend, ChainWorld, TestApp, TestDb};
use serde_json::{json, Value};

fn request(m: MerchantId, to: &str, amount: &str, key: &str) -> WithdrawalRequest {
    WithdrawalRequest {
        merchant: m,
        currency: "LTC".into(),
        address: to.into(),
        amount: amount.into(),
        priority: Priority::High,
        idempotency_key: key.into(),
        origin: kassa_engine::notifications::Origin::native(),
        description: None,
        pay_from: None,
    }
}

async fn available(app: &TestApp, m: MerchantId) -> String {
    app.t.engine.balances(m, None).await.unwrap().into_iter().find(|b| b.currency == "LTC").unwrap().available
}

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = app.client.put(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

// Over the per-transaction limit, or over the day's: pending and held, not sent; the
// rest is sent. Approved (two approvals at once: one wins, the other is told who
// decided): paid once, on-chain. Declined: cancelled, the funds back. Each decision
// records who, when and why.
async fn limits_and_decisions(backend: Backend) {
    let ChainWorld { t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let app = TestApp::serve(t, Default::default()).await;
    let m = app.t.merchant("shop").await;
    let token = app.t.engine.create_key(m, "native", Scope::ALL.to_vec(), vec![], "ops").await.unwrap().token.unwrap();
    let mut watcher = kassa_engine::watcher::Watcher::new(app.t.engine.clone(), "litecoin").unwrap();
    watcher.cycle().await.unwrap();
    let a = app.t.engine.create_deposit_address(m, "LTC", None, None).await.unwrap();
    node.pay(&a.address, "5").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();

    // Limits through the API (scope manage): 1 LTC a withdrawal, 1.5 LTC a day.
    let (status, limits) = put(&app, "/kassa/v1/withdrawal-limits/LTC", &token, json!({"per_transaction": "1", "per_day": "1.5"})).await;
    assert_eq!(status, 200, "{limits}");
    assert_eq!((limits["per_transaction"].as_str(), limits["per_day"].as_str(), limits["limit_currency"].as_str()), (Some("1.00000000"), Some("1.50000000"), Some("LTC")));
    let (status, b) = put(&app, "/kassa/v1/withdrawal-limits/LTC", &token, json!({"per_day": "-1"})).await;
    assert_eq!(status, 400, "{b}");
    let reader = app.t.engine.create_key(m, "native", vec![Scope::Read, Scope::Withdraw], vec![], "reader").await.unwrap().token.unwrap();
    assert_eq!(put(&app, "/kassa/v1/withdrawal-limits/LTC", &reader, json!({"per_day": "100"})).await.0, 403);

    let to: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string());
        }
        v
    };
    let engine = &app.t.engine;
    let small = engine.request_withdrawal(request(m, &to[0], "0.5", "small")).await.unwrap();
    let big = engine.request_withdrawal(request(m, &to[1], "2", "big")).await.unwrap();
    let second = engine.request_withdrawal(request(m, &to[2], "0.8", "second")).await.unwrap();
    let third = engine.request_withdrawal(request(m, &to[3], "0.5", "third")).await.unwrap();
    assert_eq!((small.status.as_str(), small.approval_reason.as_deref()), ("queued", None));
    assert_eq!((big.status.as_str(), big.approval_reason.as_deref()), ("pending", Some("over the per-transaction limit of 1.00000000 LTC")));
    // 0.5 + 2 (pending counts) + 0.8 > 1.5: every later one waits for the day.
    assert_eq!((second.status.as_str(), second.approval_reason.as_deref()), ("pending", Some("over the per-day limit of 1.50000000 LTC")));
    assert_eq!(third.status, "pending");
    // Held: 5 - (0.5 + 2 + 0.8 + 0.5) - fees (0.0001 + 0.5 % each).
    assert_eq!(available(&app, m).await, "1.18060000");

    // Only the queued one is sent.
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO).unwrap();
    assert_eq!(broadcaster.cycle().await.unwrap().withdrawals_sent, 1);
    let (_, pending) = app.get("/kassa/v1/withdrawals/pending", Some(&token)).await;
    let ids: Vec<i64> = pending.as_array().unwrap().iter().map(|w| w["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [big.id, second.id, third.id], "oldest first");

    // Two approvals at once: one decision.
    let approve_path = format!("/kassa/v1/withdrawals/{}/approve", big.id);
    let approve = |who: &'static str| app.post(&approve_path, &token, json!({"operator": who}));
    let (a1, a2) = tokio::join!(approve("alice"), approve("bob"));
    let mut answers = [a1, a2];
    answers.sort_by_key(|(s, _)| *s);
    assert_eq!(answers.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [200, 409], "{answers:?}");
    let (_, done) = &answers[0];
    assert_eq!((done["withdrawal"]["status"].as_str(), done["decision"]["decision"].as_str()), (Some("queued"), Some("approved")));
    let winner = done["decision"]["decided_by"].as_str().unwrap().to_string();
    assert!(["alice", "bob"].contains(&winner.as_str()));
    assert!(done["decision"]["decided_at"].as_str().unwrap().ends_with('Z'));
    let message = answers[1].1["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("withdrawal {} was approved by {winner} at ", big.id)), "{message}");

    // Declined: a reason is required; then cancelled and its funds return.
    let (status, b) = app.post(&format!("/kassa/v1/withdrawals/{}/decline", second.id), &token, json!({})).await;
    assert_eq!((status, b["error"]["message"].as_str()), (400, Some("invalid reason: a declined withdrawal needs a reason")));
    let (status, b) = app.post(&format!("/kassa/v1/withdrawals/{}/decline", second.id), &token, json!({"reason": "customer asked to stop"})).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!((b["withdrawal"]["status"].as_str(), b["decision"]["reason"].as_str()), (Some("cancelled"), Some("customer asked to stop")));
    assert_eq!(b["decision"]["decided_by"], json!(format!("api key {}", app.t.engine.list_keys(m).await.unwrap().iter().find(|k| k.label == "ops").unwrap().id)));
    assert_eq!(available(&app, m).await, "1.98470000", "0.8 + 0.0041 back");
    // Decided ones cannot be decided again; a queued one never waited.
    assert_eq!(app.post(&format!("/kassa/v1/withdrawals/{}/approve", second.id), &token, json!({})).await.0, 409);
    let (status, b) = app.post(&format!("/kassa/v1/withdrawals/{}/approve", small.id), &token, json!({})).await;
    assert_eq!(status, 409, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("does not wait for approval"), "{b}");
    // Another merchant's key does not find it; the read scope cannot decide.
    let other = app.t.merchant("other").await;
    let other_token = app.t.engine.create_key(other, "native", Scope::ALL.to_vec(), vec![], "x").await.unwrap().token.unwrap();
    assert_eq!(app.post(&format!("/kassa/v1/withdrawals/{}/approve", third.id), &other_token, json!({})).await.0, 404);
    assert_eq!(app.post(&format!("/kassa/v1/withdrawals/{}/approve", third.id), &reader, json!({})).await.0, 403);

    // The approved one is paid once, on-chain, exactly.
    let r = broadcaster.cycle().await.unwrap();
    assert_eq!(r.withdrawals_sent, 1, "{r:?}");
    assert_eq!(broadcaster.cycle().await.unwrap().withdrawals_sent, 0);
    node.mine(3).await;
    broadcaster.cycle().await.unwrap();
    assert_eq!(node.miner_rpc("getreceivedbyaddress", json!([to[1], 1])).await.to_string(), "2.00000000");
    assert_eq!(node.miner_rpc("getreceivedbyaddress", json!([to[2], 0])).await.to_string(), "0.00000000", "declined: never sent");
    assert_eq!(engine.withdrawal(m, big.id).await.unwrap().status, "confirmed");
    assert_eq!(engine.withdrawal(m, third.id).await.unwrap().status, "pending", "still waiting");
    app.t.assert_books_balance().await;
}
both_backends!(decisions, limits_and_decisions);

// The per-day limit under 20 concurrent requests: exactly those within it are queued.
// Limits in a fiat equivalent convert at the current rate; without a pair to convert
// with they are refused.
async fn daily_limit_and_fiat_equivalent(backend: Backend) {
    use kassa_core::rates::Rate;
    use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    let rates = Rates::new(
        RatesOptions {
            sources: vec![Source::Fixed { rates: [("LTC/EUR".to_string(), Rate::parse("100").unwrap())].into() }],
            pairs: vec![PairConfig { base: "LTC".into(), quote: "EUR".into(), spread_e6: 0, min_base_units: 0, min_deposit_base_units: 0 }],
            ..RatesOptions::default()
        },
        t.engine.clock().clone(),
    )
    .unwrap();
    rates.refresh().await;
    t.engine = t.engine.clone().with_rates(rates);
    let m = t.merchant("shop").await;
    t.fund(m, "LTC", "10").await;
    let to = node.external_address().await;
    let engine = t.engine.clone();

    engine.set_withdrawal_limits(m, "LTC", None, None, Some("1")).await.unwrap();
    let requests = (0..20).map(|i| engine.request_withdrawal(request(m, &to, "0.1", &format!("day-{i}"))));
    let done: Vec<Withdrawal> = futures_util::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    let queued = done.iter().filter(|w| w.status == "queued").count();
    let pending = done.iter().filter(|w| w.status == "pending").count();
    assert_eq!((queued, pending), (10, 10), "{:?}", done.iter().map(|w| &w.status).collect::<Vec<_>>());

    // 50 EUR a withdrawal at 100 EUR/LTC: 0.5 LTC passes, 0.51 waits.
    let other = t.merchant("other").await;
    t.fund(other, "LTC", "5").await;
    let l = engine.set_withdrawal_limits(other, "LTC", Some("EUR"), Some("50"), None).await.unwrap();
    assert_eq!((l.per_transaction.as_deref(), l.limit_currency.as_str()), (Some("50.00"), "EUR"));
    assert_eq!(engine.request_withdrawal(request(other, &to, "0.5", "eur-1")).await.unwrap().status, "queued");
    let over = engine.request_withdrawal(request(other, &to, "0.51", "eur-2")).await.unwrap();
    assert_eq!((over.status.as_str(), over.approval_reason.as_deref()), ("pending", Some("over the per-transaction limit of 50.00 EUR")));
    let refused = engine.set_withdrawal_limits(other, "LTC", Some("USD"), Some("50"), None).await.unwrap_err();
    assert!(refused.to_string().contains("not a configured pair"), "{refused}");
    // Removing the limits: nothing waits any more.
    engine.set_withdrawal_limits(other, "LTC", None, None, None).await.unwrap();
    assert!(engine.withdrawal_limits(Some(other)).await.unwrap().is_empty());
    assert_eq!(engine.request_withdrawal(request(other, &to, "2", "eur-3")).await.unwrap().status, "queued");
    t.assert_books_balance().await;
}
both_backends!(daily_limit, daily_limit_and_fiat_equivalent);

// The CoinsPaid-style dialect: a withdrawal over the limit is 201 with status
// pending, reported `pending` in the v2 callback; declined, `cancelled`.
async fn coinspaid_pending(backend: Backend) {
    use hmac::{Hmac, Mac};
    use kassa_engine::notifier::{Notifier, NotifierOptions};
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    t.engine = t.engine.clone().with_target_policy(kassa_engine::webhooks::TargetPolicy::development());
    let app = TestApp::serve(t, Default::default()).await;
    let m = app.t.merchant("shop").await;
    app.t.fund(m, "LTC", "3").await;
    let key = app.t.engine.create_key(m, "coinspaid", Scope::ALL.to_vec(), vec![], "cp").await.unwrap();
    let secret = key.secret.clone().unwrap();
    let receiver = kassa_testkit::receiver::Receiver::start().await;
    app.t.engine.create_endpoint(m, &receiver.url("/cp2"), "coinspaid_v2", &[]).await.unwrap();
    app.t.engine.set_withdrawal_limits(m, "LTC", None, Some("1"), None).await.unwrap();
    let dest = node.external_address().await;
    let body = format!(r#"{{"foreign_id":"big-1","amount":"2","currency":"LTC","address":"{dest}"}}"#);
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let resp = app
        .client
        .post(app.url("/api/v2/withdrawal/crypto"))
        .header("X-Processing-Key", &key.public_key)
        .header("X-Processing-Signature", hex::encode(mac.finalize().into_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let w: Value = resp.json().await.unwrap();
    assert_eq!(w["data"]["status"], "pending", "{w}");
    let id = w["data"]["id"].as_i64().unwrap();
    app.t.engine.decide_withdrawal(None, id, false, "ops", Some("over budget")).await.unwrap();
    let schedule = kassa_api::dialects::callback_formats().names().into_iter().map(|f| (f.to_string(), vec![1])).collect();
    let notifier = Notifier::new(app.t.engine.clone(), NotifierOptions { retry_schedule_secs: schedule, jitter_percent: 0, ..Default::default() }).unwrap();
    for _ in 0..3 {
        notifier.run_once().await.unwrap();
    }
    let mut statuses: Vec<(String, String)> =
        receiver.requests_to("/cp2").iter().map(|r| (r.json()["status"].as_str().unwrap().to_string(), r.json()["error"].as_str().unwrap().to_string())).collect();
    statuses.sort();
    assert_eq!(statuses, [("cancelled".to_string(), "declined by ops: over budget".to_string()), ("pending".to_string(), String::new())]);
    app.t.assert_books_balance().await;
}
both_backends!(coinspaid, coinspaid_pending);

// The real server, killed right after an approval is recorded, restarted: the
// withdrawal is paid exactly once. The CLI lists what waits and decides.
async fn approval_survives_a_crash(backend: Backend) {
    let node = kassa_testkit::litecoin::LitecoinNode::start().await;
    let db = TestDb::new(backend).await;
    let setup = ServerSetup::new(
        env!("CARGO_BIN_EXE_kassa"),
        &db,
        &node,
        "[withdrawals]\npoll_interval_ms = 200\nbatch_window_secs = 0",
        "confirmations = 1\nfees.withdrawal = { fixed = \"0.001\" }",
    );
    setup.json(&["merchant", "create", "--name", "shop", "--json"]);
    let token = setup.json(&["key", "create", "--merchant", "shop", "--dialect", "native", "--scopes", "all", "--json"])["token"].as_str().unwrap().to_string();
    let limits = setup.json(&["withdrawals", "limit", "--merchant", "shop", "--currency", "LTC", "--per-transaction", "0.1", "--json"]);
    assert_eq!(limits["per_transaction"], "0.10000000");
    let client = reqwest::Client::new();
    let mut server = setup.serve(Some("after_decision"));
    let base = server.base_url.clone();
    let addr: Value = client.post(format!("{base}/kassa/v1/addresses")).bearer_auth(&token).json(&json!({"currency": "LTC"})).send().await.unwrap().json().await.unwrap();
    node.pay(addr["address"].as_str().unwrap(), "2").await;
    node.mine(1).await;
    let get = |path: String| {
        let (client, token) = (client.clone(), token.clone());
        async move { client.get(path).bearer_auth(token).send().await.ok()?.json::<Value>().await.ok() }
    };
    wait_for("the deposit credit", || async { get(format!("{base}/kassa/v1/balances")).await.is_some_and(|b| b["balances"][0]["balance"] == "2.00000000") }).await;
    let dest = node.external_address().await;
    let body = json!({"currency": "LTC", "address": dest, "amount": "0.5", "priority": "high", "idempotency_key": "big"});
    let w: Value = client.post(format!("{base}/kassa/v1/withdrawals")).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(w["status"], "pending", "{w}");
    let id = w["id"].as_i64().unwrap();
    let listed = setup.json(&["withdrawals", "pending", "--json"]);
    assert_eq!(listed.as_array().unwrap().iter().map(|w| w["id"].as_i64().unwrap()).collect::<Vec<_>>(), [id]);

    // Approved through the API; the server dies right after recording it.
    let answer = client.post(format!("{base}/kassa/v1/withdrawals/{id}/approve")).bearer_auth(&token).json(&json!({"operator": "alice"})).send().await;
    assert!(answer.is_err(), "the server died while answering");
    let (code, stderr) = server.wait_exit(Duration::from_secs(20));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("KASSATEST_CRASH_AT=after_decision"), "{stderr}");
    // The decision stood: another one is refused, naming it.
    let again = setup.command(&["withdrawals", "approve", &id.to_string(), "--operator", "bob"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("was approved by alice"), "{}", String::from_utf8_lossy(&again.stderr));

    let server = setup.serve(None);
    let base = server.base_url.clone();
    wait_for("the approved withdrawal to be broadcast", || async {
        get(format!("{base}/kassa/v1/withdrawals/{id}")).await.is_some_and(|w| w["status"] == "broadcast")
    })
    .await;
    node.mine(1).await;
    wait_for("it to confirm", || async { get(format!("{base}/kassa/v1/withdrawals/{id}")).await.is_some_and(|w| w["status"] == "confirmed") }).await;
    assert_eq!(node.miner_rpc("getreceivedbyaddress", json!([dest, 1])).await.to_string(), "0.50000000", "paid once");
    let check = setup.command(&["check"]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    drop(server);
}
both_backends!(crash, approval_survives_a_crash);
