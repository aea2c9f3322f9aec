//! The scheduled split-payout API (spec `whir.md`) over payout plans, on both backends
//! with a real litecoind: both payout shapes end to end (deposit → confirming →
//! processing → the test clock passes the delay → complete, the destinations paid
//! exactly, in one transaction), fee and affiliate share in the ledger, expiry and a
//! late deposit, under- and overpayment by the documented rule, every answer's
//! signature checked by an independent implementation of the seed's PHP formula over
//! the bytes served, bad input refused with nothing stored, the README's verification
//! example, and the real server killed right after signing the payout: paid once.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use kassa_core::ledger::MerchantId;
use kassa_engine::chains::ChainSettings;
use kassa_engine::merchants::Scope;
use kassa_engine::payout_plans::PayoutPlanSettings;
use kassa_testkit::litecoin::LitecoinNode;
use kassa_testkit::node::{wait_for, TestNode};
use kassa_testkit::process::ServerSetup;
use kassa_testkit::{both_backends, Backend, ChainWorld, TestApp, TestDb};
use serde_json::{json, Value};
use sha2::Sha256;

/// A JSON value with objects kept in the order their keys were written.
#[derive(Clone, Debug, PartialEq)]
enum Ordered {
    /// A scalar as PHP's string conversion of the decoded value gives it.
    Scalar(String),
    Object(Vec<(String, Ordered)>),
    List(Vec<Ordered>),
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(s.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(n.to_string()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(n.to_string()))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(if b { "1" } else { "" }.into()))
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(String::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Ordered>()? {
                    out.push((k, v));
                }
                Ok(Ordered::Object(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Ordered>()? {
                    out.push(v);
                }
                Ok(Ordered::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Ordered {
    fn keys(&self) -> Vec<&str> {
        match self {
            Ordered::Object(o) => o.iter().map(|(k, _)| k.as_str()).collect(),
            _ => vec![],
        }
    }
}

/// The seed's formula, as its PHP reads:
/// `implode('|', array_map(fn($a) => is_array($a) ? implode(',', array_keys($a)).','.implode(',', $a) : $a, array_values($details)))`
/// with `signature` removed first, then `base64_encode(hash_hmac('sha256', …, $secret, TRUE))`.
fn php_signature(object: &Ordered, secret: &str) -> String {
    let Ordered::Object(fields) = object else { panic!("not an object: {object:?}") };
    let scalar = |v: &Ordered| match v {
        Ordered::Scalar(s) => s.clone(),
        other => panic!("nested value {other:?}"),
    };
    let parts: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k != "signature")
        .map(|(_, v)| match v {
            Ordered::Object(inner) => {
                let keys: Vec<&str> = inner.iter().map(|(k, _)| k.as_str()).collect();
                let values: Vec<String> = inner.iter().map(|(_, v)| scalar(v)).collect();
                format!("{},{}", keys.join(","), values.join(","))
            }
            Ordered::List(items) => {
                let keys: Vec<String> = (0..items.len()).map(|i| i.to_string()).collect();
                let values: Vec<String> = items.iter().map(scalar).collect();
                format!("{},{}", keys.join(","), values.join(","))
            }
            v => scalar(v),
        })
        .collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(parts.join("|").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a served transaction object: its keys in the spec's order, its signature.
fn check_transaction(object: &Ordered, secret: &str) {
    let order = ["id", "status", "depositAddress", "depositAmount", "depositTxid", "payouts", "txid", "fee", "delay", "refCode", "updated", "created", "signature"];
    let keys = object.keys();
    let positions: Vec<usize> = keys.iter().map(|k| order.iter().position(|o| o == k).unwrap_or_else(|| panic!("unexpected key {k}"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "keys out of order: {keys:?}");
    for required in ["id", "status", "depositAddress", "depositAmount", "payouts", "fee", "delay", "updated", "created", "signature"] {
        assert!(keys.contains(&required), "{required} missing: {keys:?}");
    }
    let Ordered::Object(fields) = object else { unreachable!() };
    let served = fields.iter().find(|(k, _)| k == "signature").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(served, Ordered::Scalar(php_signature(object, secret)), "signature of {object:?}");
}

struct Whir<'a> {
    app: &'a TestApp,
    token: String,
    secret: String,
}

impl Whir<'_> {
    /// (status, body as JSON, body in order); every transaction object's signature checked.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value, Ordered) {
        let url = self.app.url(&format!("/whir/api{path}"));
        let req = match method {
            "GET" => self.app.client.get(url),
            _ => self.app.client.post(url).header("content-type", "application/json").body(body.unwrap_or("").to_string()),
        };
        let resp = req.bearer_auth(&self.token).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        let ordered: Ordered = serde_json::from_str(&text).unwrap();
        if status == 200 {
            if value.get("signature").is_some() {
                check_transaction(&ordered, &self.secret);
            }
            if let Ordered::Object(fields) = &ordered {
                if let Some((_, Ordered::List(list))) = fields.iter().find(|(k, _)| k == "transactions") {
                    list.iter().for_each(|t| check_transaction(t, &self.secret));
                }
            }
        } else {
            assert_eq!(value["code"], json!(status), "{text}");
            assert_eq!(ordered.keys(), ["code", "description"], "{text}");
        }
        (status, value, ordered)
    }

    async fn create(&self, body: Value) -> Value {
        let (status, v, _) = self.call("POST", "/createTransaction", Some(&body.to_string())).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn get(&self, id: &str) -> Value {
        let (status, v, _) = self.call("GET", &format!("/transaction/{id}"), None).await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

async fn whir_key(app: &TestApp, m: MerchantId) -> (String, String) {
    let key = app.t.engine.create_key(m, "whir", Scope::ALL.to_vec(), vec![], "whir").await.unwrap();
    (key.token.unwrap(), key.secret.unwrap())
}

fn plan_settings() -> PayoutPlanSettings {
    PayoutPlanSettings { referral_share_e6: 25_000_000, ..PayoutPlanSettings::default() }
}

async fn world(backend: Backend) -> (TestApp, LitecoinNode) {
    let ChainWorld { mut t, node } = ChainWorld::new(backend, ChainSettings::default()).await;
    t.engine = t.engine.clone().with_payout_plan_settings(plan_settings());
    (TestApp::serve(t, Default::default()).await, node)
}

fn balance_of(list: &[kassa_engine::adjustments::Balance], currency: &str) -> String {
    list.iter().find(|b| b.currency == currency).map(|b| b.balance.clone()).unwrap_or_else(|| "0.00000000".into())
}

async fn received(node: &LitecoinNode, address: &str) -> String {
    node.miner_rpc("getreceivedbyaddress", json!([address, 1])).await.to_string()
}

// Fixed amounts with a referral code and a 2-hour delay: pending → confirming (seen in
// the mempool) → processing (credited) → nothing sent before the delay, both payouts in
// one transaction after it → complete; the destinations received exactly the payouts;
// the fee booked, a quarter of it to the referrer.
async fn fixed_plan_end_to_end(backend: Backend) {
    let (app, node) = world(backend).await;
    let engine = &app.t.engine;
    let m = app.t.merchant("mixer").await;
    let referrer = app.t.merchant("affiliate").await;
    engine.add_referral_code("qljncygz", referrer).await.unwrap();
    let (token, secret) = whir_key(&app, m).await;
    let w = Whir { app: &app, token, secret };
    let mut watcher = kassa_engine::watcher::Watcher::new(engine.clone(), "litecoin").unwrap();
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO).unwrap();
    watcher.cycle().await.unwrap();
    let (a1, a2) = (node.external_address().await, node.external_address().await);

    // The payouts in the request's order; delay as a string.
    let body = format!(r#"{{"delay":"2","payouts":{{"{a2}":"0.2","{a1}":0.1}},"refCode":"qljncygz"}}"#);
    let (status, plan, ordered) = w.call("POST", "/createTransaction", Some(&body)).await;
    assert_eq!(status, 200, "{plan}");
    let id = plan["id"].as_str().unwrap().to_string();
    assert!(id.len() == 16 && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()), "{id}");
    assert_eq!(ordered.keys(), ["id", "status", "depositAddress", "depositAmount", "payouts", "fee", "delay", "refCode", "updated", "created", "signature"]);
    // 0.3 paid out, fee 0.0001 + 3 % of 0.3.
    assert_eq!((plan["status"].as_str(), plan["depositAmount"].as_str(), plan["fee"].as_str()), (Some("pending"), Some("0.3091"), Some("0.0091")));
    let Ordered::Object(fields) = &ordered else { unreachable!() };
    let payouts = &fields.iter().find(|(k, _)| k == "payouts").unwrap().1;
    assert_eq!(payouts, &Ordered::Object(vec![(a2.clone(), Ordered::Scalar("0.2".into())), (a1.clone(), Ordered::Scalar("0.1".into()))]));
    assert_eq!((plan["delay"].as_str(), plan["refCode"].as_str()), (Some("2"), Some("qljncygz")));
    assert!(plan["created"].as_str().unwrap().ends_with("+00:00"));
    let deposit_address = plan["depositAddress"].as_str().unwrap().to_string();
    assert_eq!(engine.check_withdrawal_address("LTC", &deposit_address).unwrap(), deposit_address);

    // Seen in the mempool: confirming, with the deposit's txid.
    let deposit_txid = node.pay(&deposit_address, "0.3091").await;
    watcher.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();
    let seen = w.get(&id).await;
    assert_eq!((seen["status"].as_str(), seen["depositTxid"].as_str()), (Some("confirming"), Some(deposit_txid.as_str())));

    // Credited: processing, held, nothing sent before the delay.
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    let r = engine.advance_payout_plans().await.unwrap();
    assert_eq!(r.scheduled, 1, "{r:?}");
    assert_eq!(w.get(&id).await["status"], "processing");
    assert_eq!(broadcaster.cycle().await.unwrap().withdrawals_sent, 0);
    app.t.advance(Duration::from_secs(2 * 3600 - 60));
    assert_eq!(broadcaster.cycle().await.unwrap().withdrawals_sent, 0, "a minute early");
    let balances = engine.balances(m, None).await.unwrap();
    let ltc = balances.iter().find(|b| b.currency == "LTC").unwrap();
    assert_eq!((ltc.balance.as_str(), ltc.available.as_str()), ("0.30000000", "0.00000000"), "the payouts held, the fee booked");
    assert_eq!(balance_of(&engine.balances(referrer, None).await.unwrap(), "LTC"), "0.00227500", "a quarter of 0.0091");

    // The delay passed: one transaction pays both.
    app.t.advance(Duration::from_secs(60));
    let r = broadcaster.cycle().await.unwrap();
    assert_eq!((r.payouts_sent, r.withdrawals_sent), (1, 2), "{r:?}");
    engine.advance_payout_plans().await.unwrap();
    let sent = w.get(&id).await;
    assert_eq!(sent["status"], "processing", "sent, not yet confirmed");
    let txid = sent["txid"].as_str().unwrap().to_string();
    node.mine(3).await;
    broadcaster.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();
    let done = w.get(&id).await;
    assert_eq!((done["status"].as_str(), done["txid"].as_str(), done["depositAmount"].as_str()), (Some("complete"), Some(txid.as_str()), Some("0.3091")));
    assert_eq!((received(&node, &a1).await, received(&node, &a2).await), ("0.10000000".into(), "0.20000000".into()));
    let tx = node.miner_rpc("gettransaction", json!([txid])).await;
    let paid: Vec<String> = tx["details"].as_array().unwrap().iter().filter_map(|d| d["address"].as_str().map(String::from)).collect();
    assert!(paid.contains(&a1) && paid.contains(&a2), "one transaction pays both: {paid:?}");
    assert_eq!(balance_of(&engine.balances(m, None).await.unwrap(), "LTC"), "0.00000000");
    app.t.assert_books_balance().await;

    // Listed newest first; limit as given, offset a number.
    let other = w.create(json!({"delay": 0, "payouts": [a1]})).await;
    let (status, list, _) = w.call("GET", "/transactions?limit=1&offset=0", None).await;
    assert_eq!(status, 200);
    assert_eq!((list["totalTransactions"].as_i64(), list["limit"].as_str(), list["offset"].as_i64()), (Some(2), Some("1"), Some(0)));
    assert_eq!(list["transactions"][0]["id"], other["id"]);
    let (_, page, _) = w.call("GET", "/transactions?limit=1&offset=1", None).await;
    assert_eq!(page["transactions"][0]["id"], json!(id));
    let (_, all, _) = w.call("GET", "/transactions", None).await;
    assert_eq!((all["limit"].as_i64(), all["transactions"].as_array().unwrap().len()), (Some(30), 2));
}
both_backends!(fixed, fixed_plan_end_to_end);

// Addresses that split the deposit; expiry and a deposit after it; an underpayment
// (proportional) and an overpayment (the excess stays with the merchant).
async fn split_expiry_and_mismatches(backend: Backend) {
    let (app, node) = world(backend).await;
    let engine = &app.t.engine;
    let m = app.t.merchant("mixer").await;
    let (token, secret) = whir_key(&app, m).await;
    let w = Whir { app: &app, token, secret };
    let mut watcher = kassa_engine::watcher::Watcher::new(engine.clone(), "litecoin").unwrap();
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO).unwrap();
    watcher.cycle().await.unwrap();
    let to: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(node.external_address().await);
        }
        v
    };

    // Split: before the deposit, the least deposit that pays each address the least
    // payout (2 × 0.001 + 0.0001 + 3 %), payouts "0".
    let split = w.create(json!({"delay": 0, "payouts": [to[0], to[1]]})).await;
    assert_eq!((split["depositAmount"].as_str(), split["fee"].as_str()), (Some("0.00216"), Some("0.00016")));
    assert_eq!(split["payouts"], json!({to[0].clone(): "0", to[1].clone(): "0"}));
    // Fixed 0.1 underpaid with 0.0516: 0.05 paid out (0.0516 = 0.05 + 0.0001 + 3 % of 0.05).
    let under = w.create(json!({"delay": 0, "payouts": {to[2].clone(): "0.1"}})).await;
    assert_eq!(under["depositAmount"], "0.1031");
    // Fixed 0.1 overpaid with 0.2.
    let over = w.create(json!({"delay": 0, "payouts": {to[3].clone(): "0.1"}})).await;
    // One that expires, then is paid late.
    let late = w.create(json!({"delay": 0, "payouts": {to[4].clone(): "0.01"}})).await;
    let address = |p: &Value| p["depositAddress"].as_str().unwrap().to_string();

    node.pay(&address(&split), "0.5").await;
    node.pay(&address(&under), "0.0516").await;
    node.pay(&address(&over), "0.2").await;
    watcher.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();
    assert_eq!(w.get(split["id"].as_str().unwrap()).await["status"], "confirming", "seen in time");
    // The expiry: a day later, without a deposit.
    app.t.advance(Duration::from_secs(24 * 3600 + 1));
    engine.advance_payout_plans().await.unwrap();
    let late_id = late["id"].as_str().unwrap();
    assert_eq!(w.get(late_id).await["status"], "expired");
    assert_eq!(w.get(under["id"].as_str().unwrap()).await["status"], "confirming", "a deposit on its way keeps a plan from expiring");
    // The late deposit is paid out like any other, never kept.
    node.pay(&address(&late), "0.0104").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();
    let r = broadcaster.cycle().await.unwrap();
    assert_eq!((r.payouts_sent, r.withdrawals_sent), (1, 5), "every due plan in one payout: {r:?}");
    node.mine(3).await;
    broadcaster.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();

    // 0.5 = 2 × 0.2426699 + 0.0146602 (0.0001 + 3 % of 0.4853398, rounded to the fee).
    let s = w.get(split["id"].as_str().unwrap()).await;
    assert_eq!((s["status"].as_str(), s["depositAmount"].as_str(), s["fee"].as_str()), (Some("complete"), Some("0.5"), Some("0.0146602")));
    assert_eq!(s["payouts"], json!({to[0].clone(): "0.2426699", to[1].clone(): "0.2426699"}));
    let u = w.get(under["id"].as_str().unwrap()).await;
    assert_eq!((u["status"].as_str(), u["depositAmount"].as_str(), u["fee"].as_str()), (Some("complete"), Some("0.0516"), Some("0.0016")));
    assert_eq!(u["payouts"], json!({to[2].clone(): "0.05"}));
    let o = w.get(over["id"].as_str().unwrap()).await;
    assert_eq!((o["status"].as_str(), o["depositAmount"].as_str(), o["fee"].as_str()), (Some("complete"), Some("0.2"), Some("0.0031")));
    let l = w.get(late_id).await;
    assert_eq!((l["status"].as_str(), l["fee"].as_str()), (Some("complete"), Some("0.0004")));
    let got: Vec<String> = futures_util::future::join_all(to.iter().map(|a| received(&node, a))).await;
    assert_eq!(got, ["0.24266990", "0.24266990", "0.05000000", "0.10000000", "0.01000000"]);
    // The overpayment's excess is the merchant's.
    assert_eq!(balance_of(&engine.balances(m, None).await.unwrap(), "LTC"), "0.09690000");
    app.t.assert_books_balance().await;
}
both_backends!(split, split_expiry_and_mismatches);

// The deposit reorged out after the payouts were scheduled, before their delay ended:
// they are failed and their holds voided, the fee returned, and nothing is ever sent;
// the plan stops for an operator (reported `processing`).
async fn a_reorg_before_the_payouts_stops_them(backend: Backend) {
    let (app, node) = world(backend).await;
    let engine = &app.t.engine;
    let m = app.t.merchant("mixer").await;
    let (token, secret) = whir_key(&app, m).await;
    let w = Whir { app: &app, token, secret };
    let mut watcher = kassa_engine::watcher::Watcher::new(engine.clone(), "litecoin").unwrap();
    let broadcaster = kassa_engine::broadcaster::Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO).unwrap();
    watcher.cycle().await.unwrap();
    let to = node.external_address().await;
    let plan = w.create(json!({"delay": 2, "payouts": {to.clone(): "0.3"}})).await;
    let id = plan["id"].as_str().unwrap().to_string();
    node.pay(plan["depositAddress"].as_str().unwrap(), "0.3091").await;
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    assert_eq!(engine.advance_payout_plans().await.unwrap().scheduled, 1);
    let fees = app.t.system_account(kassa_core::ledger::SystemAccount::FeesEarned, "LTC").await;
    assert_eq!(app.t.balance(fees).await.0, 910_000, "the fee booked");

    node.reorg(3).await;
    watcher.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();
    let ws = engine.withdrawals(kassa_store::WithdrawalQuery { merchant: Some(m), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(ws.iter().map(|x| x.status.as_str()).collect::<Vec<_>>(), ["failed"], "{ws:?}");
    assert_eq!(app.t.balance(fees).await.0, 0, "the fee returned");
    assert_eq!(w.get(&id).await["status"], "processing", "stopped for an operator");
    app.t.advance(Duration::from_secs(3 * 3600));
    assert_eq!(broadcaster.cycle().await.unwrap().withdrawals_sent, 0);
    engine.advance_payout_plans().await.unwrap();
    node.mine(3).await;
    watcher.cycle().await.unwrap();
    engine.advance_payout_plans().await.unwrap();
    assert_eq!(broadcaster.cycle().await.unwrap().withdrawals_sent, 0, "never sent, also after the deposit is mined again");
    assert_eq!(received(&node, &to).await, "0.00000000");
    app.t.assert_books_balance().await;
}
both_backends!(reorg, a_reorg_before_the_payouts_stops_them);

// Bad input gets the spec's error, HTTP status = code, and stores nothing; the public
// endpoints; tenancy.
async fn bad_input_and_public_endpoints(backend: Backend) {
    let (app, node) = world(backend).await;
    let engine = &app.t.engine;
    let m = app.t.merchant("mixer").await;
    let (token, secret) = whir_key(&app, m).await;
    engine.add_referral_code("selfref", m).await.unwrap();
    let w = Whir { app: &app, token, secret };
    let good = node.external_address().await;
    let good2 = node.external_address().await;
    let mut many = Vec::new();
    for _ in 0..21 {
        many.push(node.external_address().await);
    }
    let mut broken = good.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == 'q' { 'p' } else { 'q' });
    // A well-formed mainnet address (version 0x30, checksum right): the wrong network.
    let mainnet = bs58::encode([[0x30u8].as_slice(), &[7u8; 20]].concat()).with_check().into_string();
    let mainnet = mainnet.as_str();
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "Invalid JSON data."),
        ("[]".into(), "Invalid JSON data."),
        (json!({"delay": 1}).to_string(), "Invalid payouts: an object of address → amount, or an array of addresses, is required."),
        (json!({"delay": 1, "payouts": []}).to_string(), "Invalid payouts: name 1-20 payouts."),
        (json!({"delay": 1, "payouts": {}}).to_string(), "Invalid payouts: name 1-20 payouts."),
        (json!({"delay": 1, "payouts": many}).to_string(), "Invalid payouts: name 1-20 payouts."),
        (json!({"delay": 1, "payouts": [broken]}).to_string(), ""),
        (json!({"delay": 1, "payouts": [mainnet]}).to_string(), ""),
        (json!({"delay": 1, "payouts": [good, good]}).to_string(), ""),
        (json!({"delay": 1, "payouts": {good.clone(): "-0.1"}}).to_string(), ""),
        (json!({"delay": 1, "payouts": {good.clone(): "0"}}).to_string(), ""),
        (json!({"delay": 1, "payouts": {good.clone(): "0.0001"}}).to_string(), "Invalid amount: the least payout is 0.00100000 LTC."),
        (json!({"delay": 1, "payouts": {good.clone(): "abc"}}).to_string(), ""),
        (json!({"delay": 1, "payouts": {good.clone(): true}}).to_string(), "Invalid payouts: each amount must be a string."),
        (json!({"delay": -1, "payouts": [good]}).to_string(), "Invalid delay: must be 0-168 hours."),
        (json!({"delay": "169", "payouts": [good]}).to_string(), "Invalid delay: must be 0-168 hours."),
        (json!({"delay": "soon", "payouts": [good]}).to_string(), "Invalid delay: must be a whole number of hours."),
        (json!({"delay": 1.5, "payouts": [good]}).to_string(), "Invalid delay: must be a whole number of hours."),
        (json!({"payouts": [good]}).to_string(), "Invalid delay: it is required (whole hours)."),
        (json!({"delay": 1, "payouts": [good], "refCode": "nobody"}).to_string(), "Invalid refCode: \"nobody\" is not a referral code."),
        (json!({"delay": 1, "payouts": [good], "refCode": 5}).to_string(), "Invalid refCode: must be a string."),
        (json!({"delay": 1, "payouts": [good], "refCode": "selfref"}).to_string(), "Invalid refCode: a plan cannot refer its own merchant."),
        (json!({"delay": 1, "payouts": [good], "currency": "XYZ"}).to_string(), "Unknown currency \"XYZ\"."),
    ];
    for (body, description) in &cases {
        let (status, v, _) = w.call("POST", "/createTransaction", Some(body)).await;
        assert_eq!(status, 400, "{body}: {v}");
        if !description.is_empty() {
            assert_eq!(v["description"], json!(description), "{body}");
        } else {
            assert!(v["description"].as_str().unwrap().starts_with("Invalid payouts: "), "{body}: {v}");
        }
    }
    let (_, list, _) = w.call("GET", "/transactions", None).await;
    assert_eq!(list["totalTransactions"], 0, "nothing stored");
    let addresses = engine.store.deposit_addresses_after("litecoin", 0, 100).await.unwrap();
    assert!(addresses.is_empty(), "no address taken for a refused plan: {addresses:?}");

    // Keys: none, unknown, another dialect's → 401; a read-only key cannot create → 403.
    let url = app.url("/whir/api/transactions");
    let native = app.t.engine.create_key(m, "native", Scope::ALL.to_vec(), vec![], "n").await.unwrap().token.unwrap();
    for auth in [None, Some("whir_nope"), Some(native.as_str())] {
        let mut req = app.client.get(&url);
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(resp.text().await.unwrap(), r#"{"code":401,"description":"Missing or invalid API key."}"#);
    }
    let reader = app.t.engine.create_key(m, "whir", vec![Scope::Read], vec![], "r").await.unwrap();
    let r = Whir { app: &app, token: reader.token.unwrap(), secret: reader.secret.unwrap() };
    let (status, v, _) = r.call("POST", "/createTransaction", Some(&json!({"delay": 0, "payouts": [good2]}).to_string())).await;
    assert_eq!(status, 403, "{v}");
    engine.block_merchant("mixer", "test", "ops").await.unwrap();
    let (status, v, _) = w.call("GET", "/transactions", None).await;
    assert_eq!((status, v["description"].as_str()), (403, Some("The account is blocked.")));
    engine.unblock_merchant("mixer", "ops").await.unwrap();

    // Unknown ids and another merchant's: 404; unknown endpoints in this dialect's shape.
    let plan = w.create(json!({"delay": 0, "payouts": [good2]})).await;
    let other = app.t.merchant("other").await;
    let (other_token, other_secret) = whir_key(&app, other).await;
    let o = Whir { app: &app, token: other_token, secret: other_secret };
    let (status, v, _) = o.call("GET", &format!("/transaction/{}", plan["id"].as_str().unwrap()), None).await;
    assert_eq!((status, v["description"].as_str()), (404, Some("Transaction not found.")));
    assert_eq!(o.call("GET", "/transaction/NOSUCHPLAN000000", None).await.0, 404);
    let (_, olist, _) = o.call("GET", "/transactions", None).await;
    assert_eq!(olist["totalTransactions"], 0);
    let (status, v, _) = w.call("GET", "/nowhere", None).await;
    assert_eq!((status, v["description"].as_str()), (404, Some("Endpoint does not exist.")));
    for q in ["limit=0", "limit=101", "limit=x", "offset=-1"] {
        assert_eq!(w.call("GET", &format!("/transactions?{q}"), None).await.0, 400, "{q}");
    }

    // Public: status (the test clock's time) and real address validation.
    let resp = app.client.get(app.url("/whir/api/status")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    let now = engine.now_ms() / 1000;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::from_str::<Ordered>(&text).unwrap().keys(), ["status", "timestamp", "datetime"]);
    assert_eq!(v["status"], "ok");
    assert!((v["timestamp"].as_i64().unwrap() - now).abs() <= 1);
    assert!(v["datetime"].as_str().unwrap().ends_with("+00:00"));
    for (address, valid) in [(good.as_str(), "true"), (broken.as_str(), "false"), (mainnet, "false"), (&good[..good.len() - 4], "false")] {
        let resp = app.client.get(app.url(&format!("/whir/api/validateAddress/{address}"))).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.unwrap(), format!(r#"{{"result":"{valid}"}}"#), "{address}");
    }
}
both_backends!(bad_input, bad_input_and_public_endpoints);

/// The README's verification example: the signature it prints is what the seed's
/// formula gives over the object it prints, and what Kassa's signer gives.
#[test]
fn the_readme_verification_example_holds() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("<!-- whir-signature-example -->").nth(1).expect("the README has the whir signature example");
    let secret = section.split("secret `").nth(1).unwrap().split('`').next().unwrap();
    let object_text = section.split("```json").nth(1).unwrap().split("```").next().unwrap();
    let object: Ordered = serde_json::from_str(object_text).unwrap();
    let Ordered::Object(fields) = &object else { panic!() };
    let printed = match &fields.iter().find(|(k, _)| k == "signature").unwrap().1 {
        Ordered::Scalar(s) => s.clone(),
        _ => panic!(),
    };
    assert_eq!(php_signature(&object, secret), printed);
    let as_fields: Vec<(&str, kassa_api::dialects::whir::signature::Field)> = fields
        .iter()
        .filter(|(k, _)| k != "signature")
        .map(|(k, v)| {
            let f = match v {
                Ordered::Scalar(s) => kassa_api::dialects::whir::signature::Field::Text(s.clone()),
                Ordered::Object(o) => kassa_api::dialects::whir::signature::Field::Object(
                    o.iter().map(|(a, b)| (a.clone(), if let Ordered::Scalar(s) = b { s.clone() } else { panic!() })).collect(),
                ),
                Ordered::List(_) => panic!(),
            };
            (k.as_str(), f)
        })
        .collect();
    let served = kassa_api::dialects::whir::signature::signed_object(&as_fields, secret.as_bytes());
    let reparsed: Ordered = serde_json::from_str(&served).unwrap();
    assert_eq!(reparsed, object, "Kassa renders and signs the example exactly as printed");
}

// The real server killed right after signing a plan's payout transaction (before it
// is recorded): after a restart the destinations are paid once, the plan completes
// and `kassa check` is clean.
async fn paid_once_across_a_crash(backend: Backend) {
    let node = LitecoinNode::start().await;
    let db = TestDb::new(backend).await;
    let setup = ServerSetup::new(
        env!("CARGO_BIN_EXE_kassa"),
        &db,
        &node,
        "[withdrawals]\npoll_interval_ms = 200\nbatch_window_secs = 0",
        "confirmations = 1\nmin_withdrawal = \"0.001\"\nfees.payout_plan = { fixed = \"0.001\", percent = \"1\" }",
    );
    setup.json(&["merchant", "create", "--name", "mixer", "--json"]);
    let key = setup.json(&["key", "create", "--merchant", "mixer", "--dialect", "whir", "--scopes", "all", "--json"]);
    let token = key["token"].as_str().unwrap().to_string();
    let secret = key["secret"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let mut server = setup.serve(Some("after_sign"));
    let base = server.base_url.clone();
    let (a1, a2) = (node.external_address().await, node.external_address().await);
    let body = json!({"delay": "0", "payouts": {a1.clone(): "0.3", a2.clone(): "0.2"}});
    let text = client.post(format!("{base}/whir/api/createTransaction")).bearer_auth(&token).json(&body).send().await.unwrap().text().await.unwrap();
    let ordered: Ordered = serde_json::from_str(&text).unwrap();
    check_transaction(&ordered, &secret);
    let plan: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["depositAmount"], "0.506", "{plan}");
    let id = plan["id"].as_str().unwrap().to_string();
    node.pay(plan["depositAddress"].as_str().unwrap(), "0.506").await;
    node.mine(1).await;
    let (code, stderr) = server.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("KASSATEST_CRASH_AT=after_sign"), "{stderr}");

    let server = setup.serve(None);
    let base = server.base_url.clone();
    let get = || {
        let (client, token, base, id) = (client.clone(), token.clone(), base.clone(), id.clone());
        async move { client.get(format!("{base}/whir/api/transaction/{id}")).bearer_auth(token).send().await.ok()?.json::<Value>().await.ok() }
    };
    wait_for("the payout to be broadcast", || async { get().await.is_some_and(|p| p["txid"].is_string()) }).await;
    node.mine(1).await;
    wait_for("the plan to complete", || async { get().await.is_some_and(|p| p["status"] == "complete") }).await;
    assert_eq!((received(&node, &a1).await, received(&node, &a2).await), ("0.30000000".into(), "0.20000000".into()), "paid once");
    let check = setup.command(&["check"]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    drop(server);
}
both_backends!(crash, paid_once_across_a_crash);
