//! The real `kassa` binary: admin commands with `--json`, adjustments, the invariant
//! check's exit codes, fail-fast configuration, `serve` with graceful shutdown, and
//! `kassa dev`. Database-backed flows run on both backends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kassa_testkit::process::ServerProcess;
use kassa_testkit::{both_backends, Backend, TestDb, TEST_CURRENCIES, TEST_MASTER_KEY};
use serde_json::Value;

struct Cli {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new(database_url: &str, extra: &str) -> Cli {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("kassa.toml");
        let currencies = TEST_CURRENCIES.replace("\n[", "\n[currencies.");
        std::fs::write(&config, format!("database_url = {database_url:?}\n{extra}\n{currencies}")).unwrap();
        Cli { config, _dir: dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kassa"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env("KASSA_MASTER_KEY", TEST_MASTER_KEY).env_remove("RUST_LOG").env_remove("KASSA_CONFIG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kassa")
    }

    /// Runs a command that must succeed and print one JSON document.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "kassa {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("kassa {args:?} printed non-JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "kassa {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

fn transactions(cli: &Cli) -> u64 {
    cli.json(&["check", "--json"])["report"]["transactions"].as_u64().unwrap()
}

async fn admin_commands(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cli = Cli::new(&db.url, "");
    let out = cli.run(&["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("20 migration(s) applied"));
    assert_eq!(cli.json(&["migrate", "--json"])["applied"], 0);

    let m = cli.json(&["merchant", "create", "--name", "acme", "--json"]);
    assert_eq!((m["name"].as_str(), m["status"].as_str()), (Some("acme"), Some("active")));
    assert!(cli.fails(&["merchant", "create", "--name", "acme"]).contains("a merchant named \"acme\" already exists"));
    assert!(cli.fails(&["merchant", "create", "--name", "has space"]).contains("invalid name"));

    let ww = cli.json(&["key", "create", "--merchant", "acme", "--dialect", "westwallet", "--scopes", "read,withdraw", "--json"]);
    assert_eq!(ww["style"], "hmac");
    assert_eq!(ww["scopes"], serde_json::json!(["read", "withdraw"]));
    let secret = ww["secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 48);
    assert!(ww.get("token").is_none());
    let native = cli.json(&["key", "create", "--merchant", &m["id"].to_string(), "--dialect", "native", "--scopes", "all", "--ip-allowlist", "127.0.0.1,10.0.0.0/8", "--json"]);
    let token = native["token"].as_str().unwrap().to_string();
    assert!(token.starts_with(native["public_key"].as_str().unwrap()));
    assert_eq!(native["ip_allowlist"], serde_json::json!(["127.0.0.1/32", "10.0.0.0/8"]));
    assert!(cli.fails(&["key", "create", "--merchant", "acme", "--dialect", "stripe"]).contains("is not one of westwallet"));
    assert!(cli.fails(&["key", "create", "--merchant", "nobody", "--dialect", "native"]).contains("merchant \"nobody\" not found"));
    assert!(cli.fails(&["key", "create", "--merchant", "acme", "--dialect", "native", "--scopes", "root"]).contains("invalid scopes"));
    assert!(cli.fails(&["key", "create", "--merchant", "acme", "--dialect", "native", "--ip-allowlist", "localhost"]).contains("invalid ip_allowlist"));

    let keys = cli.run(&["key", "list", "--merchant", "acme", "--json"]);
    let listed = String::from_utf8_lossy(&keys.stdout).to_string();
    assert!(!listed.contains(&secret) && !listed.contains(&token), "secrets are shown only once");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    let list = cli.json(&["merchant", "list", "--json"]);
    // Piped into a reader that has gone (`| head`): the command exits quietly.
    let mut child = cli.command(&["merchant", "list", "--json"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{:?}: {stderr}", out.status);
    assert_eq!(list["merchants"][0]["active_keys"], 2);

    // Blocking keeps its reason; blocking twice, unblocking an active merchant, or a
    // block without a reason are refused and change nothing.
    let b = cli.json(&["merchant", "block", "acme", "--reason", "chargeback review", "--operator", "ops@example", "--json"]);
    assert_eq!((b["status"].as_str(), b["blocked_reason"].as_str()), (Some("blocked"), Some("chargeback review")));
    assert!(b["status_changed_at"].is_string());
    assert!(cli.fails(&["merchant", "block", "acme", "--reason", "again"]).contains("merchant acme is already blocked"));
    assert!(cli.fails(&["merchant", "block", "acme", "--reason", " "]).contains("a block needs a reason"));
    assert!(cli.fails(&["merchant", "block", "nobody", "--reason", "x"]).contains("merchant \"nobody\" not found"));
    let list = cli.json(&["merchant", "list", "--json"]);
    assert_eq!(list["merchants"][0]["status"], "blocked");
    let u = cli.json(&["merchant", "unblock", "acme", "--json"]);
    assert_eq!((u["status"].as_str(), &u["blocked_reason"]), (Some("active"), &Value::Null));
    assert!(cli.fails(&["merchant", "unblock", "acme"]).contains("merchant acme is already active"));

    // Adjustments: credit, debit, idempotent retry, and refusals that store nothing.
    let credit = cli.json(&["adjust", "--merchant", "acme", "--currency", "EUR", "--amount", "100", "--reason", "opening balance", "--operator", "ops@example", "--json"]);
    assert_eq!((credit["amount"].as_str(), credit["balance"].as_str()), (Some("100.00"), Some("100.00")));
    let debit = cli.json(&["adjust", "--merchant", "acme", "--currency", "EUR", "--amount", "-30.5", "--reason", "correction", "--idempotency-key", "fix-1", "--json"]);
    assert_eq!(debit["balance"], "69.50");
    let again = cli.json(&["adjust", "--merchant", "acme", "--currency", "EUR", "--amount", "-30.5", "--reason", "correction", "--idempotency-key", "fix-1", "--json"]);
    assert_eq!((again["replayed"].as_bool(), again["balance"].as_str()), (Some(true), Some("69.50")));
    assert_eq!(again["transaction_id"], debit["transaction_id"]);
    let before = transactions(&cli);
    for (amount, reason, currency, needle) in [
        ("1e5", "x", "EUR", "not a plain decimal number"),
        ("0.001", "x", "EUR", "more than 2 decimal places"),
        ("NaN", "x", "EUR", "not a plain decimal number"),
        ("0", "x", "EUR", "must not be zero"),
        ("99999999999999999999999999999999999999", "x", "EUR", "out of range"),
        ("1", "x", "XYZ", "unknown currency \"XYZ\""),
        ("1", "  ", "EUR", "give a reason"),
        ("-70", "too much", "EUR", "insufficient funds"),
        ("-30.5", "different", "EUR", "already used for a different transaction"),
    ] {
        let mut args = vec!["adjust", "--merchant", "acme", "--currency", currency, "--amount", amount, "--reason", reason];
        if reason == "different" {
            args.extend(["--idempotency-key", "fix-1"]);
        }
        let err = cli.fails(&args);
        assert!(err.contains(needle), "amount {amount:?}: {err}");
    }
    assert_eq!(transactions(&cli), before, "refused adjustments stored nothing");

    // Revocation.
    let public = ww["public_key"].as_str().unwrap();
    assert_eq!(cli.json(&["key", "revoke", public, "--json"])["revoked"], true);
    assert!(cli.fails(&["key", "revoke", public]).contains("already revoked"));

    // The check passes, and fails (exit 1) once the books are tampered with.
    let out = cli.run(&["check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: the books balance"));
    let set = if backend == Backend::Sqlite { "'1'" } else { "1" };
    db.execute_raw(&format!("UPDATE accounts SET balance = {set} WHERE code = 'merchant:1:EUR'")).await;
    let out = cli.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("account 1 (merchant:1:EUR) balance is 1 units but its postings sum to 6950"));

    // Secrets at rest: neither the HMAC secret nor the bearer token is in the database file.
    if backend == Backend::Sqlite {
        let mut bytes = std::fs::read(&db.url).unwrap();
        bytes.extend(std::fs::read(format!("{}-wal", db.url)).unwrap_or_default());
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(&secret) && !hay.contains(&token), "a secret is stored in clear");
    }
}
both_backends!(admin, admin_commands);

#[test]
fn bad_configuration_fails_fast_and_names_the_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("k.db").display().to_string();
    let cases = [
        ("[currencies.LTC]\nname = \"Litecoin\"\nkind = \"crypto\"\nchain = \"litecoin\"\nprecision = 40", "currencies.LTC.precision"),
        ("databse_url = \"x\"", "databse_url"),
        ("[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\nfees.withdrawal = { fixed = \"-1\" }", "currencies.EUR.fees.withdrawal.fixed"),
        ("listen = \"everywhere\"", "listen"),
        ("[http]\nmax_body_bytes = 10", "http.max_body_bytes"),
        ("", "currencies: at least one currency must be configured"),
        ("[notifications]\nresponse_timeout_ms = 1", "notifications.response_timeout_ms"),
        ("[notifications.retry_schedule_secs]\nsoap = [1]", "notifications.retry_schedule_secs.soap"),
        ("[rates]\nsources = [\"fixed\"]\n[rates.pairs.\"EUR/XYZ\"]", "rates.pairs.\"EUR/XYZ\": XYZ is not a configured currency"),
        ("[rates]\nsources = [\"oracle\"]\n[rates.pairs.\"EUR/USD\"]", "rates.sources: \"oracle\""),
        (
            "[rates]\nsources = [\"fixed\"]\n[rates.pairs.\"EUR/USD\"]\nmin_amount_deposit_with_exchange = \"-1\"",
            "rates.pairs.\"EUR/USD\".min_amount_deposit_with_exchange",
        ),
        ("[rates]\nsources = [\"fixed\"]\n[rates.fixed]\n\"EUR/USD\" = \"1,1\"\n[rates.pairs.\"EUR/USD\"]", "rates.fixed.\"EUR/USD\""),
        ("[rates]\nsources = [\"fixed\"]\nfutures_window_secs = 5\n[rates.pairs.\"EUR/USD\"]", "rates.futures_window_secs"),
        ("[rates]\nsources = [\"fixed\"]\nfutures_limit_currency = \"GBP\"\n[rates.pairs.\"EUR/USD\"]", "rates.futures_limit_currency"),
        ("[rates]\nsources = [\"fixed\"]\nfutures_limit = \"lots\"\n[rates.pairs.\"EUR/USD\"]", "rates.futures_limit"),
        ("[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n[westwallet]\ncurrencies = [\"XYZ\"]", "westwallet.currencies: XYZ is not a configured currency"),
        ("[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n[westwallet]\ncurrencies = [\"EUR\"]", "westwallet.currencies: EUR is not carried by a configured chain"),
        ("[westwallet]\ntimestamp_window_secs = 0", "westwallet.timestamp_window_secs"),
        ("[westwallet]\ncurrency = [\"LTC\"]", "currency"),
        ("[http.mounts]\nstripe = [\"/stripe\"]", "http.mounts.stripe: no such dialect"),
        ("[http.mounts]\nwestwallet = [\"/kassa/v1\"]", "http.mounts.native: \"/kassa/v1\" is already where westwallet is mounted"),
        ("[http.mounts]\nnative = [\"api/\"]", "http.mounts.native: \"api/\" is not a mount prefix"),
        ("operator_token = \"short\"", "operator_token: must be at least 32"),
        ("[http.rate_limits.quote]\nper_ip = \"lots\"", "http.rate_limits.quote.per_ip: \"lots\" is not a rate like \"60/min\""),
        ("[http.rate_limits]\nauth_failures = \"0/min\"", "http.rate_limits.auth_failures"),
        ("[http.rate_limits.quotes]\nper_ip = \"1/s\"", "unknown field: found `quotes`"),
        ("[http]\nclient_ip_header = \"X Forwarded\"", "http.client_ip_header"),
        ("[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n[payout_plans]\nvalidity_hours = 0", "payout_plans.validity_hours"),
        ("[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n[payout_plans]\nreferral_share_percent = \"120\"", "payout_plans.referral_share_percent"),
        ("[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n[payout_plans]\ndefault_currency = \"EUR\"", "payout_plans.default_currency"),
    ];
    // Chains: the kind, its own section, what it carries.
    let ltc = "[currencies.LTC]\nname = \"Litecoin\"\nkind = \"crypto\"\nchain = \"litecoin\"\n";
    let chain = "[chains.litecoin]\nkind = \"bitcoind\"\n";
    let node =
        "[chains.litecoin.bitcoind]\ncoin = \"litecoin\"\nnetwork = \"regtest\"\nrpc_url = \"http://127.0.0.1:1\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n";
    let eur = "[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n";
    let second = "[currencies.LTC2]\nname = \"Second\"\nkind = \"crypto\"\nchain = \"litecoin\"\n";
    let chain_cases = [
        (format!("{ltc}[chains.litecoin]\nkind = \"tron\""), "chains.litecoin.kind: \"tron\" is not a supported chain kind (bitcoind)"),
        (format!("{ltc}{chain}"), "chains.litecoin.bitcoind: missing; a bitcoind chain needs its section [chains.litecoin.bitcoind]"),
        (format!("{ltc}{chain}rpc_url = \"http://127.0.0.1:1\""), "unknown field: found `rpc_url`"),
        (format!("{ltc}{chain}{}", node.replace("regtest", "moonnet")), "chains.litecoin.bitcoind.network"),
        (format!("{ltc}{chain}{}", node.replace("http://", "ftp://")), "chains.litecoin.bitcoind.rpc_url"),
        (format!("{eur}{chain}{node}"), "chains.litecoin: no currency names chain \"litecoin\""),
        (format!("{ltc}{second}{chain}{node}"), "chains.litecoin: a bitcoind chain carries one currency, its coin (no tokens), but LTC, LTC2 name it"),
        (format!("{}{chain}{node}", ltc.replace("chain =", "precision = 10\nchain =")), "currencies.LTC.precision: 10 is finer than the chain's 8 decimals"),
    ];
    let cases: Vec<(String, String)> =
        cases.iter().map(|(t, k)| (t.to_string(), k.to_string())).chain(chain_cases.into_iter().map(|(t, k)| (t, k.to_string()))).collect();
    for (i, (text, key)) in cases.iter().enumerate() {
        let cli = Cli { config: dir.path().join(format!("c{i}.toml")), _dir: tempfile::TempDir::new().unwrap() };
        let eur = if text.contains("currencies") {
            ""
        } else {
            "[currencies.EUR]\nname = \"Euro\"\nkind = \"fiat\"\n[currencies.USD]\nname = \"Dollar\"\nkind = \"fiat\"\n"
        };
        let body = if text.is_empty() { format!("database_url = {db:?}\n") } else { format!("database_url = {db:?}\n{text}\n{eur}") };
        std::fs::write(&cli.config, body).unwrap();
        let err = cli.fails(&["check"]);
        assert!(err.contains(key), "case {i}: {err}");
    }
    // An environment override is validated like the file.
    let cli = Cli::new(&db, "");
    let out = cli.command(&["check"]).env("KASSA_LEDGER__MAX_BATCH", "lots").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.to_lowercase().contains("ledger.max_batch") && err.contains("KASSA_"), "{err}");
    // No master key outside dev mode.
    let out = Command::new(env!("CARGO_BIN_EXE_kassa")).arg("--config").arg(&cli.config).arg("check").env_remove("KASSA_MASTER_KEY").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("master_key_file"), "{}", String::from_utf8_lossy(&out.stderr));
    // A missing file says so.
    let out = Command::new(env!("CARGO_BIN_EXE_kassa")).args(["--config", "/nonexistent/kassa.toml", "check"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration file /nonexistent/kassa.toml not found"));
}

async fn serve_and_shut_down_gracefully(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cli = Cli::new(&db.url, "log_format = \"json\"");
    cli.json(&["merchant", "create", "--name", "shop", "--json"]);
    let key = cli.json(&["key", "create", "--merchant", "shop", "--dialect", "native", "--json"]);
    let token = key["token"].as_str().unwrap().to_string();
    let mut cmd = cli.command(&["serve"]);
    cmd.env("KASSA_LISTEN", "127.0.0.1:0");
    let server = ServerProcess::start(cmd);
    let base = server.base_url.clone();
    let client = reqwest::Client::new();
    let ready: Value = client.get(format!("{base}/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let resp = client.get(format!("{base}/kassa/v1/balances")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "graceful shutdown exits 0; stderr: {stderr}");
    // Structured logs, one JSON object per line, that never contain the secret.
    assert!(!stderr.contains(&token), "a token reached the log");
    let lines: Vec<Value> = stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"] == "kassa listening"));
    assert!(lines.iter().any(|l| l["message"] == "shutdown requested"));
}
both_backends!(serve, serve_and_shut_down_gracefully);

// Callback formats come from the registered dialects, not the schema: a format no
// dialect provides can be stored (by hand, or by a build without that dialect), and
// `serve` then refuses to start, naming it, instead of never delivering.
async fn unknown_stored_callback_format_stops_serve(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cli = Cli::new(&db.url, "");
    cli.json(&["merchant", "create", "--name", "shop", "--json"]);
    db.execute_raw("INSERT INTO webhook_endpoints (merchant_id, url, format, event_types, status, created_at_ms, updated_at_ms)
        VALUES (1, 'https://shop.example/cb', 'soap', '*', 'active', 0, 0)").await;
    let mut cmd = cli.command(&["serve"]);
    cmd.env("KASSA_LISTEN", "127.0.0.1:0").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("serve started despite an unknown callback format");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(stderr.contains("1 webhook endpoint(s) and 0 pending deliveries use callback format \"soap\", which no dialect provides"), "{stderr}");
    assert!(stderr.contains("known: standard, westwallet, coinspaid_v1, coinspaid_v2"), "{stderr}");
}
both_backends!(unknown_format, unknown_stored_callback_format_stops_serve);

#[tokio::test]
async fn dev_network_runs_and_pays_a_test_deposit() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("dev");
    let rpc_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let dev = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kassa"));
        cmd.arg("dev").arg("--data-dir").arg(&data).args(["--rpc-port", &rpc_port]).args(args);
        cmd.env("KASSA_LISTEN", "127.0.0.1:0").env_remove("KASSA_MASTER_KEY");
        cmd
    };
    let server = ServerProcess::start(dev(&[]));
    let base = server.base_url.clone();
    let field = |name: &str| {
        server
            .printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{name} not printed: {}", server.printed))
    };
    let token = field("API token:");
    let address = field("LTC address:");
    assert!(field("pay it:").contains(&format!("pay {address} 0.5")));
    let client = reqwest::Client::new();
    let balance = |currency: &'static str| {
        let (client, token, base) = (client.clone(), token.clone(), base.clone());
        async move {
            let body: Value = client.get(format!("{base}/kassa/v1/balances")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
            body["balances"].as_array().unwrap().iter().find(|b| b["currency"] == currency).unwrap()["balance"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(balance("EUR").await, "100.00");
    // The printed CoinsPaid-style key pair signs requests to the printed base URL.
    let coinspaid = field("CoinsPaid:");
    let words: Vec<&str> = coinspaid.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let after = |label: &str| words[words.iter().position(|w| *w == label).unwrap() + 1].to_string();
    let (cp_key, cp_secret) = (after("key"), after("secret"));
    // The printed URL names the configured listen address (port 0 here): keep its path.
    let printed = after("URL");
    let cp_base = format!("{base}/{}", printed.splitn(4, '/').nth(3).unwrap_or_default());
    let mut mac = <hmac::Hmac<sha2::Sha512> as hmac::Mac>::new_from_slice(cp_secret.as_bytes()).unwrap();
    hmac::Mac::update(&mut mac, b"{}");
    let signature = hex::encode(hmac::Mac::finalize(mac).into_bytes());
    let accounts: Value = client
        .post(format!("{cp_base}/v2/accounts/list"))
        .header("X-Processing-Key", &cp_key)
        .header("X-Processing-Signature", signature)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(accounts["data"].as_array().unwrap().iter().any(|a| a["currency"] == "EUR" && a["balance"] == "100.00"), "{accounts}");
    // The printed whir token reads its (empty) list of payout plans.
    let whir = field("whir:");
    let words: Vec<&str> = whir.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let whir_token = words[words.iter().position(|w| *w == "token").unwrap() + 1];
    let plans: Value = client.get(format!("{base}/whir/api/transactions")).bearer_auth(whir_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(plans["totalTransactions"], 0, "{plans}");

    // The printed command pays the deposit and mines its confirmations.
    let out = dev(&["pay", &address, "0.5"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mined 3 block(s)"));
    let start = std::time::Instant::now();
    while balance("LTC").await != "0.50000000" {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "the deposit was not credited");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("generated a new master key"), "dev mode says it made a key: {stderr}");
    assert!(data.join("master.key").exists());
}

/// The ledger benchmark runs end to end and its books balance afterwards (the figures
/// themselves are for people to read, not for a test to time).
#[test]
fn ledger_benchmark_runs_on_both_backends() {
    let server = std::env::var(kassa_testkit::POSTGRES_ENV).expect("TEST_POSTGRES_URL (run scripts/test.sh)");
    for db in ["sqlite", "postgres"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kassa"));
        cmd.args(["bench", "ledger", "--db", db, "--seconds", "1", "--workers", "16", "--merchants", "20", "--hot-accounts", "2"]);
        if db == "postgres" {
            cmd.args(["--database-url", &server]);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{db}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("transfers/s; latency p50"), "{db}: {stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("check: ") && l.ends_with(": OK")), "{db}: {stdout}");
        let durable = if db == "sqlite" { "synchronous=FULL" } else { "synchronous_commit=on fsync=on" };
        assert!(stdout.contains(durable), "{db}: {stdout}");
    }
}

/// The documented example configuration is valid as shipped.
#[test]
fn example_configuration_is_valid() {
    let dir = tempfile::TempDir::new().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kassa.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_kassa"))
        .arg("--config")
        .arg(&example)
        .arg("check")
        .env("KASSA_DATABASE_URL", dir.path().join("k.db"))
        .env("KASSA_MASTER_KEY", TEST_MASTER_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
