//! The hosted payment page in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver). A fiat invoice payable in two currencies (two
//! wallets of one real Litecoin regtest node, as two chains): the page renders (a
//! screenshot is saved under artifacts/), choosing a currency shows its amount, address
//! and a QR code that decodes (from the browser's pixels) to the right payment URI; an
//! underpayment shows the remainder; paying the rest flips the page to paid and
//! redirects to the success URL; an expired invoice says so. Without JavaScript, the
//! page still shows amount, address and QR code.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use kassa_core::currency::CurrencyConfig;
use kassa_core::rates::Rate;
use kassa_engine::chains::{ChainSettings, Chains};
use kassa_engine::currencies::Currencies;
use kassa_engine::invoices::InvoiceSettings;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::merchants::Scope;
use kassa_engine::rates::{PairConfig, Rates, RatesOptions, Source};
use kassa_engine::secrets::MasterKey;
use kassa_engine::watcher::Watcher;
use kassa_engine::Engine;
use kassa_testkit::litecoin::LitecoinNode;
use kassa_testkit::receiver::Receiver;
use kassa_testkit::{both_backends, Backend, TestApp, TestDb, TestEngine, TEST_MASTER_KEY};
use serde_json::{json, Value};

const CURRENCIES: &str = r#"
[LTC]
name = "Litecoin"
kind = "crypto"
chain = "litecoin"
confirmations = 1
[TLTC]
name = "Test Litecoin"
kind = "crypto"
chain = "litecoin2"
confirmations = 1
[EUR]
name = "Euro"
kind = "fiat"
precision = 2
"#;

struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = kassa_testkit::receiver::free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start /usr/bin/chromedriver (Debian's chromium-driver; .ci/run installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url, _profile: tempfile::TempDir::new().unwrap() }
}

async fn browser(driver: &Driver, javascript: bool) -> Client {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=480,1100".into(),
        format!("--user-data-dir={}", driver._profile.path().join(if javascript { "js" } else { "nojs" }).display()),
    ];
    if !javascript {
        args.push("--blink-settings=scriptEnabled=false".into());
    }
    let caps: serde_json::Map<String, Value> =
        serde_json::from_value(json!({"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}})).unwrap();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a browser session")
}

/// Decodes the QR code the browser shows, from its pixels.
async fn qr_text(client: &Client) -> String {
    let png = client.find(Locator::Css("#qr")).await.unwrap().screenshot().await.unwrap();
    let img = image::load_from_memory(&png).expect("a PNG screenshot").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the page");
    grids[0].decode().expect("a readable QR code").1
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

/// Waits until the element's text contains `needle` (the page updates itself).
async fn wait_text(client: &Client, css: &str, needle: &str, chains: &mut [Watcher]) {
    let start = Instant::now();
    loop {
        for w in chains.iter_mut() {
            w.cycle().await.unwrap();
        }
        if let Ok(e) = client.find(Locator::Css(css)).await {
            if e.text().await.unwrap_or_default().contains(needle) {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{css} never showed {needle:?}; page: {}", client.source().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A real Litecoin regtest node carrying two chains (LTC and TLTC, two wallets) with
/// rates to EUR, and an engine over a fresh database.
async fn two_chain_engine(backend: Backend) -> (LitecoinNode, TestEngine) {
    let node = LitecoinNode::start().await;
    let db = TestDb::new(backend).await;
    let raw: std::collections::BTreeMap<String, CurrencyConfig> = toml::from_str(CURRENCIES).unwrap();
    let currencies = Currencies::new(kassa_core::currency::validate_currencies(&raw).unwrap());
    let mut chains = Chains::default();
    for (chain, wallet) in [("litecoin", "kassa"), ("litecoin2", "kassa2")] {
        let mut cfg = LitecoinNode::config(&node.rpc_url, &node.user, &node.password, wallet);
        cfg.chain = chain.into();
        cfg.currency = if chain == "litecoin" { "LTC" } else { "TLTC" }.into();
        let adapter = kassa_chain_bitcoind::Bitcoind::new(cfg);
        adapter.ensure_wallet().await.unwrap();
        chains.add(Arc::new(adapter), ChainSettings::default());
    }
    let rate = |r: &str| Rate::parse(r).unwrap();
    let rates = Rates::new(RatesOptions {
        sources: vec![Source::Fixed { rates: [("LTC/EUR".to_string(), rate("80")), ("TLTC/EUR".to_string(), rate("40"))].into() }],
        pairs: vec![
            PairConfig { base: "LTC".into(), quote: "EUR".into(), spread_e6: 500_000, min_base_units: 0, min_deposit_base_units: 0 },
            PairConfig { base: "TLTC".into(), quote: "EUR".into(), spread_e6: 500_000, min_base_units: 0, min_deposit_base_units: 0 },
        ],
        // Fetched once: fresh for the whole (clock-advancing) test.
        max_age: Duration::from_secs(86_400),
        ..RatesOptions::default()
    }, db.clock.clone())
    .unwrap();
    rates.refresh().await;
    let engine = kassa_api::dialects::register(Engine::new(db.store().await, currencies, MasterKey::from_hex(TEST_MASTER_KEY).unwrap(), LedgerOptions::default()))
        .with_chains(chains)
        .with_rates(rates)
        .with_invoice_settings(InvoiceSettings { public_url: "http://kassa.invalid".into(), ..InvoiceSettings::default() });
    (node, TestEngine { db, engine })
}

async fn payment_page_in_a_browser(backend: Backend) {
    let (node, t) = two_chain_engine(backend).await;
    let engine = t.engine.clone();
    let app = TestApp::serve(t, Default::default()).await;
    let (_, token) = app.merchant_with_token("shop", &[Scope::Read, Scope::Receive]).await;
    let mut watchers = vec![Watcher::new(engine.clone(), "litecoin").unwrap(), Watcher::new(engine.clone(), "litecoin2").unwrap()];
    for w in watchers.iter_mut() {
        w.cycle().await.unwrap();
    }
    let shop = Receiver::start().await;
    let page_url = |inv: &Value| app.url(inv["url"].as_str().unwrap().strip_prefix("http://kassa.invalid").unwrap());

    let (status, inv) = app
        .post("/kassa/v1/invoices", &token, json!({"order_id": "web-1", "amount": "20", "currency": "EUR",
            "description": "Order #1 <Tea & Cake>", "success_url": shop.url("/thanks")}))
        .await;
    assert_eq!(status, 201, "{inv}");
    let opt = |c: &str| inv["options"].as_array().unwrap().iter().find(|o| o["currency"] == c).unwrap().clone();
    let (ltc, tltc) = (opt("LTC"), opt("TLTC"));
    assert_eq!((ltc["amount"].as_str(), tltc["amount"].as_str()), (Some("0.25125629"), Some("0.50251257")), "20 EUR at 79.6 and 39.8");

    let driver = chromedriver().await;
    let client = browser(&driver, true).await;
    client.goto(&page_url(&inv)).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "Order #1 <Tea & Cake> – 20.00 EUR", "the description is shown as text");
    let shot = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("payment-page-{}.png", backend.as_str())), &shot).unwrap();
    assert!(shot.len() > 10_000, "a real screenshot");
    assert_eq!(text(&client, ".total").await, "20.00 EUR");
    assert_eq!(text(&client, "#amount").await, "0.25125629");
    assert_eq!(text(&client, "#address").await, ltc["address"].as_str().unwrap());
    assert_eq!(qr_text(&client).await, format!("litecoin:{}?amount=0.25125629", ltc["address"].as_str().unwrap()));
    assert!(text(&client, "#countdown").await.starts_with("Time left: 14:"), "a countdown runs");

    // Choosing the other currency shows its amount, address and QR code.
    client.find(Locator::Css("#cur-TLTC")).await.unwrap().click().await.unwrap();
    wait_text(&client, "#amount", "0.50251257", &mut []).await;
    assert_eq!(text(&client, "#address").await, tltc["address"].as_str().unwrap());
    assert_eq!(qr_text(&client).await, format!("testlitecoin:{}?amount=0.50251257", tltc["address"].as_str().unwrap()));

    // Underpaid in LTC: the page shows what is left, and a QR code for it.
    client.find(Locator::Css("#cur-LTC")).await.unwrap().click().await.unwrap();
    wait_text(&client, "#amount", "0.25125629", &mut []).await;
    node.pay(ltc["address"].as_str().unwrap(), "0.1").await;
    node.mine(1).await;
    wait_text(&client, "#status", "Partially paid: 0.15125629 LTC still to pay.", &mut watchers).await;
    assert_eq!(text(&client, "#amount").await, "0.15125629");
    assert_eq!(qr_text(&client).await, format!("litecoin:{}?amount=0.15125629", ltc["address"].as_str().unwrap()));

    // The rest: the page flips to paid and takes the customer back to the shop.
    node.pay(ltc["address"].as_str().unwrap(), "0.15125629").await;
    node.mine(1).await;
    let start = Instant::now();
    while client.current_url().await.unwrap().path() != "/thanks" {
        for w in watchers.iter_mut() {
            w.cycle().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no redirect to the success URL");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, paid) = app.get(&format!("/kassa/v1/invoices/{}", inv["id"].as_str().unwrap()), Some(&token)).await;
    assert_eq!(paid["status"], "paid");
    // Opened again, the page says paid and links back to the shop.
    let html = reqwest::get(page_url(&inv)).await.unwrap().text().await.unwrap();
    assert!(html.contains("Paid. Thank you!") && html.contains("id=\"continue\""), "{html}");

    // An invoice that expires: the page says so and offers no address any more.
    let (_, short) = app.post("/kassa/v1/invoices", &token, json!({"order_id": "web-2", "amount": "0.1", "currency": "LTC", "ttl_secs": 600})).await;
    client.goto(&page_url(&short)).await.unwrap();
    assert_eq!(text(&client, "#amount").await, "0.10000000");
    let countdown = text(&client, "#countdown").await;
    assert!(countdown.starts_with("Time left: 9:") || countdown == "Time left: 10:00", "{countdown}");
    app.t.advance(Duration::from_secs(601));
    engine.store.expire_invoices().await.unwrap();
    wait_text(&client, "#status", "This invoice has expired", &mut []).await;
    assert!(client.find(Locator::Css("#pay")).await.is_err(), "no address on an expired invoice");
    client.close().await.unwrap();

    // Without JavaScript the basics are there.
    let plain = browser(&driver, false).await;
    let (_, third) = app.post("/kassa/v1/invoices", &token, json!({"order_id": "web-3", "amount": "10", "currency": "EUR"})).await;
    plain.goto(&page_url(&third)).await.unwrap();
    let t = third["options"].as_array().unwrap().iter().find(|o| o["currency"] == "TLTC").unwrap().clone();
    plain.goto(&format!("{}?currency=TLTC", page_url(&third))).await.unwrap();
    assert_eq!(text(&plain, "#amount").await, t["amount"].as_str().unwrap());
    assert_eq!(qr_text(&plain).await, t["payment_uri"].as_str().unwrap());
    assert!(text(&plain, "#countdown").await.starts_with("Pay before"), "static expiry without JavaScript");
    plain.close().await.unwrap();

    // An unknown token is a plain 404 page; the page is never cached and locks down scripts.
    let resp = reqwest::get(app.url("/pay/nosuchtoken")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::get(page_url(&third)).await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
    let html = resp.text().await.unwrap();
    for external in ["src=", "href=\"http", "href=\"//", "url(", "@import", "<link", "<iframe"] {
        assert!(!html.contains(external), "no external resources ({external})");
    }
    app.t.assert_books_balance().await;
}
both_backends!(browser_page, payment_page_in_a_browser);

/// A payment terminal link as a merchant makes one: base64 of the JSON, and the hex
/// HMAC-SHA512 of the JSON with the key's secret (CoinsPaid's documented recipe).
fn terminal_link(json: &str, secret: &str) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(json.as_bytes());
    let data = base64::engine::general_purpose::STANDARD.encode(json.as_bytes());
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    format!("/terminal/?data={}&signature={}", enc(&data), hex::encode(mac.finalize().into_bytes()))
}

// The CoinsPaid-style payment terminal in a real browser: a signed link opens the page;
// the payer picks the other currency (its address and a QR code without an amount),
// then the link's (the amount in the QR code, decoded from the browser's pixels); the
// address is the one addresses/take gives for that foreign_id; paid on regtest, the
// page shows it paid, the merchant holds EUR (convert_to), and it links back to the
// shop. A tampered, expired, malformed or foreign link gets an error page and creates
// nothing; is_iframe allows only the merchant's configured origins to embed it.
async fn payment_terminal_in_a_browser(backend: Backend) {
    let (node, t) = two_chain_engine(backend).await;
    let engine = t.engine.clone();
    let options = kassa_api::HttpOptions {
        terminal_frame_ancestors: [("shop".to_string(), vec!["https://shop.example".to_string()])].into(),
        ..Default::default()
    };
    let app = TestApp::serve(t, options).await;
    let m = app.t.merchant("shop").await;
    let key = engine.create_key(m, "coinspaid", vec![Scope::Read, Scope::Receive], vec![], "cp").await.unwrap();
    let secret = key.secret.clone().unwrap();
    let mut watchers = vec![Watcher::new(engine.clone(), "litecoin").unwrap(), Watcher::new(engine.clone(), "litecoin2").unwrap()];
    for w in watchers.iter_mut() {
        w.cycle().await.unwrap();
    }
    let json = format!(r#"{{"client_id":{},"currency":"LTC","amount":"0.5","convert_to":"EUR","foreign_id":"user-7","url_back":"https://shop.example/back"}}"#, m.0);
    let link = terminal_link(&json, &secret);

    let driver = chromedriver().await;
    let client = browser(&driver, false).await;
    client.goto(&app.url(&link)).await.unwrap();
    assert_eq!(text(&client, "#amount").await, "0.50000000");
    // The payer picks TLTC: its own address, any amount.
    client.find(Locator::Css("#cur-TLTC")).await.unwrap().click().await.unwrap();
    let tltc = text(&client, "#address").await;
    assert_eq!(qr_text(&client).await, format!("testlitecoin:{tltc}"));
    // And back to LTC: the amount of the link.
    client.find(Locator::Css("#cur-LTC")).await.unwrap().click().await.unwrap();
    let address = text(&client, "#address").await;
    assert_eq!(qr_text(&client).await, format!("litecoin:{address}?amount=0.5"));
    let stored = engine.store.deposit_address_by_foreign_id(m, "LTC", "user-7").await.unwrap().expect("the foreign_id's address");
    assert_eq!((stored.address.as_str(), stored.convert_to.as_deref()), (address.as_str(), Some("EUR")));
    assert_eq!(text(&client, "#status").await, "Waiting for your payment.");

    // Paid: the page (reloading itself, no JavaScript) shows it, and leads back.
    node.pay(&address, "0.5").await;
    node.mine(1).await;
    wait_text(&client, "#status", "Payment of 0.50000000 LTC received. Thank you!", &mut watchers).await;
    let back = client.find(Locator::Css("#back")).await.unwrap().attr("href").await.unwrap();
    assert_eq!(back.as_deref(), Some("https://shop.example/back"));
    let balances = engine.balances(m, None).await.unwrap();
    assert_eq!(balances.iter().find(|b| b.currency == "EUR").map(|b| b.available.as_str()), Some("39.80"), "0.5 LTC at 79.6");

    // Refused links: an error page, and no address for their foreign_id.
    let tampered = link.replacen("data=", "data=x", 1);
    let changed = terminal_link(&json.replace("user-7", "user-8"), &secret).split("&signature=").next().unwrap().to_string()
        + "&signature=" + link.split("&signature=").nth(1).unwrap();
    let expired = terminal_link(&json.replace("user-7", "user-9").replace("}", r#","expires_at":1600000000}"#), &secret);
    let foreign = terminal_link(&json.replace("user-7", "user-10"), "not-the-secret");
    // Signed with a key that may only read: it cannot take addresses, so neither can its links.
    let reader = engine.create_key(m, "coinspaid", vec![Scope::Read], vec![], "read only").await.unwrap();
    let read_only = terminal_link(&json.replace("user-7", "user-11"), &reader.secret.clone().unwrap());
    let no_merchant = terminal_link(&json.replace(&format!(r#""client_id":{}"#, m.0), r#""client_id":999999"#), &secret);
    for (name, bad, status) in [
        ("tampered", tampered.as_str(), 400),
        ("changed", changed.as_str(), 403),
        ("expired", expired.as_str(), 410),
        ("foreign", foreign.as_str(), 403),
        ("read-only key", read_only.as_str(), 403),
        ("duplicate data", &format!("{link}&data=eyJ9"), 400),
        ("no merchant", no_merchant.as_str(), 403),
        ("no signature", "/terminal/?data=eyJ9", 400),
        ("not base64", "/terminal/?data=!!!&signature=00", 400),
    ] {
        let resp = reqwest::get(app.url(bad)).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("This payment link cannot be used"), "{name}: {html}");
    }
    client.goto(&app.url(&changed)).await.unwrap();
    assert!(text(&client, "#reason").await.contains("signature does not match"), "the error page says why");
    for id in ["user-8", "user-9", "user-10", "user-11"] {
        assert!(engine.store.deposit_address_by_foreign_id(m, "LTC", id).await.unwrap().is_none(), "{id}: nothing created");
    }

    // The other ways links arrive: URL-safe base64 without padding, and standard base64
    // written into the query as is (its `+` read back as a space). Both open the page.
    let (variant, data) = (0..200)
        .map(|n| {
            use base64::Engine as _;
            let j = json.replace("user-7", &format!("user-12-{n}~?>~??"));
            let d = base64::engine::general_purpose::STANDARD.encode(j.as_bytes());
            (j, d)
        })
        .find(|(_, d)| d.contains('+') && d.contains('/'))
        .expect("a JSON whose base64 has + and /");
    let signature = terminal_link(&variant, &secret).split("&signature=").nth(1).unwrap().to_string();
    let url_safe = data.replace('+', "-").replace('/', "_").trim_end_matches('=').to_string();
    for (name, raw) in [("url-safe", url_safe), ("raw standard", data.clone())] {
        let resp = reqwest::get(app.url(&format!("/terminal/?data={raw}&signature={signature}"))).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{name}");
        assert!(resp.text().await.unwrap().contains("id=\"address\""), "{name}");
    }

    // Embedding: only the merchant's configured origins, and only with is_iframe.
    let csp = |path: String| {
        let url = app.url(&path);
        async move { reqwest::get(url).await.unwrap().headers()["content-security-policy"].to_str().unwrap().to_string() }
    };
    assert!(csp(link.clone()).await.ends_with("frame-ancestors 'none'"));
    let framed = terminal_link(&json.replace("}", r#","is_iframe":true}"#), &secret);
    assert!(csp(framed).await.ends_with("frame-ancestors https://shop.example"));
    // Another merchant with nothing configured: no one may embed its terminal.
    let other = app.t.merchant("kiosk").await;
    let other_key = engine.create_key(other, "coinspaid", vec![Scope::Receive], vec![], "cp").await.unwrap();
    let other_json = format!(r#"{{"client_id":{},"currency":"LTC","foreign_id":"k-1","is_iframe":true}}"#, other.0);
    assert!(csp(terminal_link(&other_json, &other_key.secret.clone().unwrap())).await.ends_with("frame-ancestors 'none'"));
    client.close().await.unwrap();
    app.t.assert_books_balance().await;
}
both_backends!(terminal, payment_terminal_in_a_browser);
