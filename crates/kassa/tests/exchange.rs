//! Rates, quotes and exchanges. Rate sources are tested against local HTTP fakes that
//! answer exactly as Kraken, Coinbase and Binance document their public endpoints
//! (those APIs cannot be reached from here); fallback between sources and the staleness
//! limit through the real API; quotes and exchanges through real HTTP and the real
//! ledger on both backends: expiry, mismatch, concurrent executions, idempotency,
//! minimums, and that conversions never create value (L5). `kassa check` after each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use kassa_core::ledger::{MerchantId, SystemAccount};
use kassa_core::rates::Rate;
use kassa_engine::exchange::Side;
use kassa_engine::merchants::Scope;
use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
use kassa_testkit::{both_backends, Backend, TestApp, TestEngine};
use serde_json::{json, Value};

/// How the fake price APIs answer.
#[derive(Default)]
struct Fake {
    /// Per source: "ok", "down" (HTTP 500), or "error" (the API's own error body).
    modes: Mutex<BTreeMap<&'static str, &'static str>>,
    /// Query strings received, per source.
    seen: Mutex<Vec<String>>,
}

impl Fake {
    fn mode(&self, source: &'static str) -> &'static str {
        self.modes.lock().unwrap().get(source).copied().unwrap_or("ok")
    }
    fn set(&self, source: &'static str, mode: &'static str) {
        self.modes.lock().unwrap().insert(source, mode);
    }
}

// Kraken: GET /0/public/Ticker?pair=LTCEUR (https://docs.kraken.com/api/docs/rest-api/get-ticker-information)
async fn kraken(State(f): State<Arc<Fake>>, Query(q): Query<BTreeMap<String, String>>) -> impl IntoResponse {
    let pair = q.get("pair").cloned().unwrap_or_default();
    f.seen.lock().unwrap().push(format!("kraken:{pair}"));
    match f.mode("kraken") {
        "down" => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": ["EService:Unavailable"]}))),
        "error" => (StatusCode::OK, Json(json!({"error": ["EQuery:Unknown asset pair"], "result": {}}))),
        _ => (
            StatusCode::OK,
            Json(json!({"error": [], "result": {"XLTCZEUR": {
                "a": ["80.10000", "12", "12.000"], "b": ["79.90000", "3", "3.000"], "c": ["80.00000", "0.50000000"],
                "v": ["1000.1", "2000.2"], "p": ["80.01", "79.99"], "t": [100, 200], "l": ["79.00000", "78.50000"],
                "h": ["81.00000", "81.50000"], "o": "79.50000"}}})),
        ),
    }
}

// Coinbase: GET /v2/prices/LTC-EUR/spot (https://docs.cdp.coinbase.com/coinbase-app/docs/api-prices)
async fn coinbase(State(f): State<Arc<Fake>>, axum::extract::Path(pair): axum::extract::Path<String>) -> impl IntoResponse {
    f.seen.lock().unwrap().push(format!("coinbase:{pair}"));
    let (base, quote) = pair.split_once('-').unwrap_or(("?", "?"));
    match f.mode("coinbase") {
        "down" => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"errors": [{"id": "internal_server_error", "message": "down"}]}))),
        _ => (StatusCode::OK, Json(json!({"data": {"amount": "80.02", "base": base, "currency": quote}}))),
    }
}

// Binance: GET /api/v3/ticker/bookTicker?symbol=LTCEUR (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints)
async fn binance(State(f): State<Arc<Fake>>, Query(q): Query<BTreeMap<String, String>>) -> impl IntoResponse {
    f.seen.lock().unwrap().push(format!("binance:{}", q.get("symbol").cloned().unwrap_or_default()));
    match f.mode("binance") {
        "error" => (StatusCode::BAD_REQUEST, Json(json!({"code": -1121, "msg": "Invalid symbol."}))),
        "down" => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
        _ => (
            StatusCode::OK,
            Json(json!({"symbol": q.get("symbol"), "bidPrice": "79.95000000", "bidQty": "31.21000000", "askPrice": "80.05000000", "askQty": "40.66000000"})),
        ),
    }
}

async fn start_fake() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/0/public/Ticker", get(kraken))
        .route("/v2/prices/{pair}/spot", get(coinbase))
        .route("/api/v3/ticker/bookTicker", get(binance))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

fn pair(base: &str, quote: &str, spread_e6: i128, min: i128) -> PairConfig {
    PairConfig { base: base.into(), quote: quote.into(), spread_e6, min_base_units: min, min_deposit_base_units: min }
}

fn fixed(rates: &[(&str, &str)]) -> Source {
    Source::Fixed { rates: rates.iter().map(|(p, r)| (p.to_string(), Rate::parse(r).unwrap())).collect() }
}

#[tokio::test]
async fn adapters_read_each_documented_format() {
    let (url, fake) = start_fake().await;
    let rates = Rates::new(RatesOptions::default(), kassa_core::Clock::system()).unwrap();
    let kraken = Source::Kraken { base_url: url.clone() };
    let coinbase = Source::Coinbase { base_url: url.clone() };
    let binance = Source::Binance { base_url: url.clone() };
    assert_eq!(rates.fetch(&kraken, "LTC", "EUR").await.unwrap().to_string(), "80.0", "mid of ask 80.1 and bid 79.9");
    assert_eq!(rates.fetch(&coinbase, "LTC", "EUR").await.unwrap().to_string(), "80.02");
    assert_eq!(rates.fetch(&binance, "LTC", "EUR").await.unwrap().to_string(), "80.0");
    rates.fetch(&kraken, "BTC", "EUR").await.unwrap();
    assert!(fake.seen.lock().unwrap().contains(&"kraken:XBTEUR".to_string()), "Kraken calls bitcoin XBT");
    fake.set("kraken", "error");
    assert_eq!(rates.fetch(&kraken, "LTC", "EUR").await.unwrap_err(), "kraken: EQuery:Unknown asset pair");
    fake.set("binance", "error");
    assert_eq!(rates.fetch(&binance, "LTC", "EUR").await.unwrap_err(), "binance: Invalid symbol.");
    fake.set("coinbase", "down");
    assert!(rates.fetch(&coinbase, "LTC", "EUR").await.unwrap_err().contains("HTTP 503"));
    let f = fixed(&[("LTC/EUR", "81.5")]);
    assert_eq!(rates.fetch(&f, "LTC", "EUR").await.unwrap().to_string(), "81.5");
    assert!(rates.fetch(&f, "BTC", "EUR").await.is_err());
}

/// The app with rates from the fake (kraken first, coinbase as fallback).
async fn app_with_rates(backend: Backend, sources: Vec<Source>, max_age: Duration, quote_ttl: Duration) -> (TestApp, Arc<Rates>) {
    // 0.5 % spread, at least 0.001 LTC.
    app_with_pairs(backend, sources, vec![pair("LTC", "EUR", 500_000, 100_000)], max_age, quote_ttl).await
}

async fn app_with_pairs(backend: Backend, sources: Vec<Source>, pairs: Vec<PairConfig>, max_age: Duration, quote_ttl: Duration) -> (TestApp, Arc<Rates>) {
    let mut t = TestEngine::new(backend).await;
    let rates = Rates::new(RatesOptions {
        sources,
        pairs,
        max_age,
        quote_ttl,
        ..RatesOptions::default()
    }, t.engine.clock().clone())
    .unwrap();
    t.engine = t.engine.clone().with_rates(rates.clone());
    (TestApp::serve(t, Default::default()).await, rates)
}

async fn fallback_and_staleness(backend: Backend) {
    let (url, fake) = start_fake().await;
    let sources = vec![Source::Kraken { base_url: url.clone() }, Source::Coinbase { base_url: url.clone() }];
    let (app, rates) = app_with_rates(backend, sources, Duration::from_secs(120), Duration::from_secs(60)).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Exchange]).await;
    let body = json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"});

    // Before any refresh: no rate, no quote.
    let (status, e) = app.post("/kassa/v1/quotes", &token, body.clone()).await;
    assert_eq!((status, e["error"]["code"].as_str()), (503, Some("rates_unavailable")));

    assert!(rates.refresh().await.is_empty());
    let (_, rate) = app.get("/kassa/v1/rates?from=EUR&to=LTC", Some(&token)).await;
    assert_eq!((rate["mid"].as_str(), rate["rate"].as_str(), rate["source"].as_str()), (Some("0.0125"), Some("0.0124375"), Some("kraken")), "{rate}");
    let (_, pairs) = app.get("/kassa/v1/pairs", Some(&token)).await;
    assert_eq!(pairs["pairs"][0]["rate"], "80.0");
    assert_eq!(pairs["pairs"][0]["source"], "kraken");
    assert_eq!(pairs["pairs"][0]["spread_percent"], "0.500000");
    let (status, q) = app.post("/kassa/v1/quotes", &token, body.clone()).await;
    assert_eq!(status, 201, "{q}");
    assert_eq!((q["rate"].as_str(), q["receiver_amount"].as_str(), q["source"].as_str()), (Some("79.6"), Some("79.60"), Some("kraken")));

    // Kraken down: Coinbase answers.
    fake.set("kraken", "down");
    assert!(rates.refresh().await.is_empty());
    let (_, q) = app.post("/kassa/v1/quotes", &token, body.clone()).await;
    assert_eq!((q["source"].as_str(), q["rate"].as_str()), (Some("coinbase"), Some("79.6199")), "80.02 less 0.5 %");

    // Everything down: quotes stop once the last rate is older than the limit.
    fake.set("coinbase", "down");
    assert_eq!(rates.refresh().await, vec!["LTC/EUR".to_string()]);
    app.t.advance(Duration::from_secs(121));
    let (status, e) = app.post("/kassa/v1/quotes", &token, body.clone()).await;
    assert_eq!((status, e["error"]["code"].as_str()), (503, Some("rates_unavailable")));
    assert!(e["error"]["message"].as_str().unwrap().contains("stale"), "{e}");
    let (status, _) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "x1", "from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"})).await;
    assert_eq!(status, 503, "no market exchange on stale rates either");
    let (_, pairs) = app.get("/kassa/v1/pairs", Some(&token)).await;
    assert!(pairs["pairs"][0]["rate"].is_null(), "a stale rate is not shown as current");
}
both_backends!(fallback_staleness, fallback_and_staleness);

async fn ltc_eur(app: &TestApp, m: MerchantId) -> (String, String) {
    let b = app.t.engine.balances(m, None).await.unwrap();
    let get = |c: &str| b.iter().find(|x| x.currency == c).map(|x| x.balance.clone()).unwrap_or_else(|| "0".into());
    (get("LTC"), get("EUR"))
}

async fn quotes_and_exchanges(backend: Backend) {
    let (app, rates) = app_with_rates(backend, vec![fixed(&[("LTC/EUR", "80")])], Duration::from_secs(600), Duration::from_secs(60)).await;
    rates.refresh().await;
    let (m, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Exchange]).await;
    app.t.fund(m, "LTC", "10").await;

    // A quote, executed as quoted: 1 LTC at 80 less 0.5 % → 79.60 EUR.
    let (status, q) = app.post("/kassa/v1/quotes", &token, json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"})).await;
    assert_eq!(status, 201, "{q}");
    assert_eq!((q["sender_amount"].as_str(), q["receiver_amount"].as_str(), q["fee_amount"].as_str()), (Some("1.00000000"), Some("79.60"), Some("0.00000000")));
    let quote_id = q["id"].as_str().unwrap().to_string();
    // Mismatch: another rate or amount than the quote's.
    let (status, e) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "a", "quote_id": quote_id, "rate": "80"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("quote_mismatch")));
    let (status, _) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "a", "quote_id": quote_id, "receiver_amount": "79.61"})).await;
    assert_eq!(status, 409);
    assert_eq!(ltc_eur(&app, m).await, ("10.00000000".into(), "0.00".into()), "nothing moved");

    // Concurrent executions of one quote (several clients, and one client twice): one exchange.
    let mut calls = Vec::new();
    let (app_ref, token_ref) = (&app, &token);
    for i in 0..8 {
        let client = if i < 2 { "same".to_string() } else { format!("client-{i}") };
        let body = json!({"client_id": client, "quote_id": quote_id, "receiver_amount": "79.60", "rate": "79.6"});
        calls.push(async move { app_ref.post("/kassa/v1/exchanges", token_ref, body).await });
    }
    let results = futures_util::future::join_all(calls).await;
    let ok: Vec<&Value> = results.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    let ids: std::collections::BTreeSet<&str> = ok.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one exchange: {results:?}");
    assert!(results.iter().all(|(s, b)| *s == 201 || (*s == 409 && b["error"]["code"] == "conflict")), "{results:?}");
    assert_eq!(ltc_eur(&app, m).await, ("9.00000000".into(), "79.60".into()));
    let house = app.t.balance(app.t.system_account(SystemAccount::ExchangeHouse, "EUR").await).await;
    assert_eq!(house.0, -7960, "the house paid 79.60 EUR");
    // The same client id replays; with another quote it conflicts.
    let winner_client = ok[0]["client_id"].as_str().unwrap().to_string();
    let (status, again) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": winner_client, "quote_id": quote_id})).await;
    assert_eq!((status, again["id"].as_str()), (201, ok[0]["id"].as_str()));

    // Expiry.
    let (_, q2) = app.post("/kassa/v1/quotes", &token, json!({"from_currency": "LTC", "to_currency": "EUR", "receiver_amount": "10"})).await;
    assert_eq!(q2["receiver_amount"], "10.00");
    assert_eq!(q2["sender_amount"], "0.12562815", "the least LTC that buys exactly 10.00 EUR at 79.6");
    let (status, e) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": winner_client, "quote_id": q2["id"]})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("idempotency_conflict")));
    app.t.advance(Duration::from_secs(61));
    let (status, e) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "late", "quote_id": q2["id"]})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("quote_expired")), "{e}");
    assert_eq!(ltc_eur(&app, m).await, ("9.00000000".into(), "79.60".into()));

    // Market exchange back, receiver side: exactly the amount asked for.
    let (status, x) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "back", "from_currency": "EUR", "to_currency": "LTC", "receiver_amount": "0.5"})).await;
    assert_eq!(status, 201, "{x}");
    assert_eq!(x["receiver_amount"], "0.50000000");
    assert_eq!(x["kind"], "market");
    let (ltc, eur) = ltc_eur(&app, m).await;
    assert_eq!(ltc, "9.50000000");
    let spent: i128 = 7960 - (eur.replace('.', "").parse::<i128>().unwrap());
    assert_eq!(format!("{}.{:02}", spent / 100, spent % 100), x["sender_amount"].as_str().unwrap());
    // 0.5 LTC at 1/80 less 0.5 %: 0.5 × 80 / 0.995 = 40.2010… → 40.21 EUR (rounded up, for the house).
    assert_eq!(x["sender_amount"], "40.21");

    // Refusals store nothing: too small, unknown pair, insufficient funds, bad input.
    for (body, code) in [
        (json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "0.0009"}), "invalid_request"),
        (json!({"from_currency": "LTC", "to_currency": "BTC", "sender_amount": "1"}), "invalid_request"),
        (json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1", "receiver_amount": "80"}), "invalid_request"),
        (json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1e3"}), "invalid_request"),
        (json!({"from_currency": "XYZ", "to_currency": "EUR", "sender_amount": "1"}), "unknown_currency"),
    ] {
        let (status, e) = app.post("/kassa/v1/quotes", &token, body.clone()).await;
        assert_eq!((status, e["error"]["code"].as_str()), (400, Some(code)), "{body}: {e}");
    }
    let (status, e) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "big", "from_currency": "LTC", "to_currency": "EUR", "sender_amount": "100"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (422, Some("insufficient_funds")));
    // Said in the currency's amounts, without internal account ids or units.
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("insufficient funds: ") && message.contains(" LTC available, 100.00000000 LTC needed"), "{message}");
    assert!(!message.contains("account") && !message.contains("units"), "{message}");
    let (_, list) = app.get("/kassa/v1/exchanges", Some(&token)).await;
    assert_eq!(list["exchanges"].as_array().unwrap().len(), 2, "{list}");
    // Scope: a read-only key cannot exchange.
    let (_, reader) = app.merchant_with_token("reader", &[Scope::Read]).await;
    let (status, _) = app.post("/kassa/v1/quotes", &reader, json!({"from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"})).await;
    assert_eq!(status, 403);

    // Each exchange raised its event.
    let key = app.t.engine.create_key(m, "native", vec![Scope::Read], vec![], "pull").await.unwrap();
    app.t.engine.relay_events().await.unwrap();
    let (_, events) = app.get("/kassa/v1/events", key.token.as_deref()).await;
    let done: Vec<&Value> = events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "exchange.done").collect();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0]["data"]["receiver_amount"], "79.60");
    app.t.assert_books_balance().await;
}
both_backends!(quotes, quotes_and_exchanges);

// L5: 10,000 random small conversions through the real ledger never create value: the
// merchant's holdings, valued at the mid rate, never grow, and each exchange rounds by
// less than one unit in the house's favour.
async fn l5_conversions_never_create_value(backend: Backend) {
    use rand::{Rng, SeedableRng};
    // A small spread: value can only flow to the house.
    let spread = 300_000; // 0.3 %
    let sources = vec![fixed(&[("LTC/EUR", "80.123456")])];
    let (app, rates) = app_with_pairs(backend, sources, vec![pair("LTC", "EUR", spread, 0)], Duration::from_secs(600), Duration::from_secs(600)).await;
    rates.refresh().await;
    let engine = app.t.engine.clone();
    let m = app.t.merchant("shop").await;
    app.t.fund(m, "LTC", "1000").await;
    app.t.fund(m, "EUR", "100000").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let plan: Vec<(bool, i128)> = (0..10_000).map(|_| (rng.gen_bool(0.5), rng.gen_range(1..200_000))).collect();
    let mut expected_ltc: i128 = 1000 * 100_000_000;
    let mut expected_eur: i128 = 100_000 * 100;
    let mid = Rate::parse("80.123456").unwrap();
    for chunk in plan.chunks(200).enumerate() {
        let (c, items) = chunk;
        let calls = items.iter().enumerate().map(|(i, (to_eur, units))| {
            let engine = engine.clone();
            let (from, to, amount) = if *to_eur {
                ("LTC", "EUR", kassa_core::Amount::from_units(*units * 125, 8).unwrap().to_string()) // up to 0.25 LTC
            } else {
                ("EUR", "LTC", kassa_core::Amount::from_units(*units / 100 + 1, 2).unwrap().to_string()) // up to 20 EUR
            };
            async move { engine.exchange_now(m, from, to, Side::Sender(amount), &format!("l5-{c}-{i}"), "native").await }
        });
        for x in futures_util::future::join_all(calls).await {
            let x = match x {
                Ok(x) => x,
                Err(e) => {
                    // Amounts that convert to nothing are refused; that is not value created.
                    assert!(e.to_string().contains("too small"), "{e}");
                    continue;
                }
            };
            let s: i128 = x.sender_amount.replace('.', "").parse().unwrap();
            let r: i128 = x.receiver_amount.replace('.', "").parse().unwrap();
            if x.from_currency == "LTC" {
                // r ≤ s × mid exactly (EUR cents vs LTC units at 10^8): compare r × 10^8 × 10^18 ≤ s × mid × 100.
                let exact = s * mid.scaled() / 1_000_000_000_000_000_000 / 1_000_000; // cents, rounded down
                assert!(r <= exact, "LTC→EUR {s} → {r} (exact {exact})");
                assert!(spread > 0 || r == exact, "without spread only the rounding down is kept");
                expected_ltc -= s;
                expected_eur += r;
            } else {
                let inv = mid.inverse().unwrap();
                let exact = s * inv.scaled() * 1_000_000 / 1_000_000_000_000_000_000;
                assert!(r <= exact, "EUR→LTC {s} → {r} (exact {exact})");
                expected_ltc += r;
                expected_eur -= s;
            }
        }
    }
    let (ltc, eur) = ltc_eur(&app, m).await;
    assert_eq!(ltc.replace('.', "").parse::<i128>().unwrap(), expected_ltc);
    assert_eq!(eur.replace('.', "").parse::<i128>().unwrap(), expected_eur);
    // Valued at the mid rate, the merchant never gained: LTC × mid + EUR ≤ what it started with.
    let value = |ltc_units: i128, eur_cents: i128| ltc_units * mid.scaled() / 1_000_000 + eur_cents * 1_000_000_000_000_000_000;
    assert!(value(expected_ltc, expected_eur) <= value(1000 * 100_000_000, 100_000 * 100), "value was created");
    // …and the house, on the other side of every exchange, never lost.
    let house_ltc = app.t.balance(app.t.system_account(SystemAccount::ExchangeHouse, "LTC").await).await.0;
    let house_eur = app.t.balance(app.t.system_account(SystemAccount::ExchangeHouse, "EUR").await).await.0;
    assert!(value(house_ltc, house_eur) >= 0, "the house lost value: {house_ltc} LTC units, {house_eur} EUR cents");
    app.t.assert_books_balance().await;
}
both_backends!(l5, l5_conversions_never_create_value);

// A refused exchange keeps its client id: a retry after funding is refused as failed,
// never booked a second time; an exchange a crash left pending before its ledger
// transaction is failed by the recovery, one booked before the crash is completed.
async fn failed_and_interrupted_exchanges(backend: Backend) {
    let (app, rates) = app_with_rates(backend, vec![fixed(&[("LTC/EUR", "80")])], Duration::from_secs(60), Duration::from_secs(60)).await;
    rates.refresh().await;
    let (m, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Exchange]).await;
    let body = json!({"client_id": "c1", "from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"});
    let (status, e) = app.post("/kassa/v1/exchanges", &token, body.clone()).await;
    assert_eq!((status, e["error"]["code"].as_str()), (422, Some("insufficient_funds")));
    app.t.fund(m, "LTC", "5").await;
    let (status, e) = app.post("/kassa/v1/exchanges", &token, body.clone()).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("conflict")), "the same client id stays failed: {e}");
    assert_eq!(ltc_eur(&app, m).await.0, "5.00000000");
    let (status, _) = app.post("/kassa/v1/exchanges", &token, json!({"client_id": "c2", "from_currency": "LTC", "to_currency": "EUR", "sender_amount": "1"})).await;
    assert_eq!(status, 201);
    assert_eq!(ltc_eur(&app, m).await, ("4.00000000".into(), "79.60".into()));

    // Interrupted before booking: a pending row an hour old.
    let store = &app.t.engine.store;
    let pending = |client: &str| kassa_store::NewExchange {
        public_id: format!("ex_{client}"),
        merchant: m,
        client_id: client.into(),
        request_hash: vec![1],
        kind: "market".into(),
        quote_id: None,
        from_currency: "LTC".into(),
        to_currency: "EUR".into(),
        sender_units: 100_000_000,
        fee_units: 0,
        receiver_units: 7960,
        rate: "79.6".into(),
        origin: "native".into(),
    };
    let lost = store.insert_exchange(&pending("lost")).await.unwrap();
    // Interrupted after booking: its ledger transaction exists.
    let booked = store.insert_exchange(&pending("booked")).await.unwrap();
    let engine = app.t.engine.clone();
    let acct = |k: kassa_core::ledger::AccountKey| {
        let engine = engine.clone();
        async move { engine.ledger.account(&k).await }
    };
    let ltc = kassa_core::CurrencyCode::parse("LTC").unwrap();
    let eur = kassa_core::CurrencyCode::parse("EUR").unwrap();
    let legs = vec![
        kassa_core::ledger::Leg {
            from: acct(kassa_core::ledger::AccountKey::Merchant { merchant: m, currency: ltc.clone() }).await.unwrap(),
            to: acct(kassa_core::ledger::AccountKey::System { account: SystemAccount::ExchangeHouse, currency: ltc.clone() }).await.unwrap(),
            currency: ltc.clone(),
            units: 100_000_000,
        },
        kassa_core::ledger::Leg {
            from: acct(kassa_core::ledger::AccountKey::System { account: SystemAccount::ExchangeHouse, currency: eur.clone() }).await.unwrap(),
            to: acct(kassa_core::ledger::AccountKey::Merchant { merchant: m, currency: eur.clone() }).await.unwrap(),
            currency: eur.clone(),
            units: 7960,
        },
    ];
    app.t.engine.ledger.submit(kassa_core::ledger::TxRequest {
        idempotency_key: format!("exchange:{}", booked.id),
        action: kassa_core::ledger::Action::Transfer(legs),
        memo: "{}".into(),
    }).await.unwrap();
    assert_eq!(app.t.engine.recover_exchanges().await.unwrap(), 0, "young exchanges may still be working");
    app.t.advance(Duration::from_secs(601));
    assert_eq!(app.t.engine.recover_exchanges().await.unwrap(), 2);
    assert_eq!(store.exchange(lost.id).await.unwrap().unwrap().status, "failed");
    assert_eq!(store.exchange(booked.id).await.unwrap().unwrap().status, "done");
    assert_eq!(app.t.engine.recover_exchanges().await.unwrap(), 0, "nothing left to do");
    assert_eq!(ltc_eur(&app, m).await, ("3.00000000".into(), "159.20".into()), "booked once, the lost one never");
    let (_, list) = app.get("/kassa/v1/exchanges", Some(&token)).await;
    assert_eq!(list["exchanges"].as_array().unwrap().len(), 2);
    app.t.assert_books_balance().await;
}
both_backends!(failed_interrupted, failed_and_interrupted_exchanges);
