//! Ledger scenarios from RELIABILITY.md (L1, L2, L3, L6, I1-I3), each run against
//! SQLite and PostgreSQL through the real ledger service and store, and each ending
//! with the invariant check.

use std::sync::Arc;

use kassa_core::ledger::{AccountId, Action, HoldStatus, Leg, LedgerError, SystemAccount, TxId, TxRequest};
use kassa_core::CurrencyCode;
use kassa_engine::ledger::LedgerOptions;
use kassa_engine::{Engine, EngineError};
use kassa_testkit::{both_backends, Backend, TestEngine};

fn ltc() -> CurrencyCode {
    CurrencyCode::parse("LTC").unwrap()
}

fn transfer(key: &str, from: AccountId, to: AccountId, units: i128) -> TxRequest {
    TxRequest {
        idempotency_key: key.into(),
        action: Action::Transfer(vec![Leg { from, to, currency: ltc(), units }]),
        memo: "{}".into(),
    }
}

fn hold(key: &str, from: AccountId, to: AccountId, units: i128) -> TxRequest {
    TxRequest { idempotency_key: key.into(), action: Action::Hold(vec![Leg { from, to, currency: ltc(), units }]), memo: "{}".into() }
}

fn is_insufficient(r: &Result<kassa_store::TxOutcome, EngineError>) -> bool {
    matches!(r, Err(EngineError::Ledger(LedgerError::InsufficientFunds { .. })))
}

/// Several writers on one database: two engines ("instances"), each with two writers,
/// so requests race in separate database transactions, not only inside one batch.
fn racing() -> LedgerOptions {
    LedgerOptions { max_batch: 8, queue_capacity: 1024, writers: 2 }
}

// L1: 100 concurrent withdrawal holds against a balance that covers exactly one.
async fn l1_concurrent_holds_overdraw_nothing(backend: Backend) {
    let t = TestEngine::with_options(backend, racing()).await;
    let other = t.another_instance(racing()).await;
    let m = t.merchant("shop").await;
    t.fund(m, "LTC", "1.5").await;
    let account = t.merchant_account(m, "LTC").await;
    let hot = t.system_account(SystemAccount::HotWallet, "LTC").await;
    let engines: [Engine; 2] = [t.engine.clone(), other];
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let engine = engines[i % 2].clone();
            tokio::spawn(async move { engine.ledger.submit(hold(&format!("withdraw-{i}"), account, hot, 100_000_000)).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let r = task.await.unwrap();
        if r.is_ok() {
            accepted += 1;
        } else {
            assert!(is_insufficient(&r), "unexpected refusal: {r:?}");
        }
    }
    assert_eq!(accepted, 1, "exactly one withdrawal fits the balance");
    assert_eq!(t.balance(account).await, (150_000_000, 50_000_000), "total unchanged, one hold reserved");
    t.assert_books_balance().await;
}
both_backends!(l1, l1_concurrent_holds_overdraw_nothing);

// L1 also for immediate transfers: the balance never goes below zero.
async fn l1_concurrent_transfers_never_go_negative(backend: Backend) {
    let t = TestEngine::with_options(backend, racing()).await;
    let other = t.another_instance(racing()).await;
    let a = t.merchant("a").await;
    let b = t.merchant("b").await;
    t.fund(a, "LTC", "0.00000100").await;
    let (from, to) = (t.merchant_account(a, "LTC").await, t.merchant_account(b, "LTC").await);
    let engines = [t.engine.clone(), other];
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let engine = engines[i % 2].clone();
            tokio::spawn(async move { engine.ledger.submit(transfer(&format!("t-{i}"), from, to, 3)).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let r = task.await.unwrap();
        if r.is_ok() {
            accepted += 1;
        } else {
            assert!(is_insufficient(&r), "unexpected refusal: {r:?}");
        }
    }
    assert_eq!(accepted, 33, "100 units cover 33 transfers of 3");
    assert_eq!(t.balance(from).await, (1, 1));
    assert_eq!(t.balance(to).await, (99, 99));
    t.assert_books_balance().await;
}
both_backends!(l1_transfers, l1_concurrent_transfers_never_go_negative);

// L2: A→B and B→A in parallel over 10 hot accounts, 20 workers: no lost update,
// no deadlock reaches a caller, totals unchanged.
async fn l2_hot_accounts_both_directions(backend: Backend) {
    let t = TestEngine::with_options(backend, racing()).await;
    let other = t.another_instance(racing()).await;
    let mut accounts = Vec::new();
    for i in 0..10 {
        let m = t.merchant(&format!("hot-{i}")).await;
        t.fund(m, "LTC", "100").await;
        accounts.push(t.merchant_account(m, "LTC").await);
    }
    let accounts = Arc::new(accounts);
    let engines = [t.engine.clone(), other];
    let tasks: Vec<_> = (0..20)
        .map(|w| {
            let engine = engines[w % 2].clone();
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let mut moved = vec![0i128; 10];
                for n in 0..50 {
                    let (i, j) = ((w + n) % 10, (w + n + 1 + w % 3) % 10);
                    let (from, to) = if (w + n) % 2 == 0 { (i, j) } else { (j, i) };
                    let units = (1 + (w * 7 + n) % 13) as i128;
                    engine
                        .ledger
                        .submit(transfer(&format!("l2-{w}-{n}"), accounts[from], accounts[to], units))
                        .await
                        .expect("no error reaches the client");
                    moved[from] -= units;
                    moved[to] += units;
                }
                moved
            })
        })
        .collect();
    let mut expected = vec![100 * 100_000_000i128; 10];
    for task in tasks {
        for (i, d) in task.await.unwrap().into_iter().enumerate() {
            expected[i] += d;
        }
    }
    let mut total = 0;
    for (i, account) in accounts.iter().enumerate() {
        let (balance, _) = t.balance(*account).await;
        assert_eq!(balance, expected[i], "account {i} lost an update");
        total += balance;
    }
    assert_eq!(total, 10 * 100 * 100_000_000, "totals unchanged");
    t.assert_books_balance().await;
}
both_backends!(l2, l2_hot_accounts_both_directions);

// L6: a hold is posted or voided exactly once; a voided hold returns the funds.
async fn l6_two_phase_holds(backend: Backend) {
    let t = TestEngine::with_options(backend, racing()).await;
    let other = t.another_instance(racing()).await;
    let m = t.merchant("shop").await;
    t.fund(m, "LTC", "10").await;
    let account = t.merchant_account(m, "LTC").await;
    let hot = t.system_account(SystemAccount::HotWallet, "LTC").await;

    // Void returns the funds.
    let h1 = t.engine.ledger.submit(hold("h1", account, hot, 400_000_000)).await.unwrap().tx_id;
    assert_eq!(t.balance(account).await, (1_000_000_000, 600_000_000));
    let void = |key: &str, hold: TxId| TxRequest { idempotency_key: key.into(), action: Action::Void { hold }, memo: "{}".into() };
    let post = |key: &str, hold: TxId| TxRequest { idempotency_key: key.into(), action: Action::Post { hold }, memo: "{}".into() };
    t.engine.ledger.submit(void("v1", h1)).await.unwrap();
    assert_eq!(t.balance(account).await, (1_000_000_000, 1_000_000_000), "voided hold returns funds");
    let again = t.engine.ledger.submit(post("p1-after-void", h1)).await;
    assert!(
        matches!(again, Err(EngineError::Ledger(LedgerError::HoldNotPending { status: HoldStatus::Voided, .. }))),
        "{again:?}"
    );

    // Concurrent post and void of one hold: exactly one wins.
    let h2 = t.engine.ledger.submit(hold("h2", account, hot, 300_000_000)).await.unwrap().tx_id;
    let engines = [t.engine.clone(), other];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let engine = engines[i % 2].clone();
            let req = if i % 2 == 0 { post(&format!("p2-{i}"), h2) } else { void(&format!("v2-{i}"), h2) };
            tokio::spawn(async move { (i % 2 == 0, engine.ledger.submit(req).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (is_post, r) = task.await.unwrap();
        match r {
            Ok(_) => winners.push(is_post),
            Err(EngineError::Ledger(LedgerError::HoldNotPending { .. })) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "a hold resolves exactly once");
    let expected = if winners[0] { (700_000_000, 700_000_000) } else { (1_000_000_000, 1_000_000_000) };
    assert_eq!(t.balance(account).await, expected);
    let missing = t.engine.ledger.submit(post("p-missing", TxId(999_999))).await;
    assert!(matches!(missing, Err(EngineError::Ledger(LedgerError::HoldNotFound { .. }))), "{missing:?}");
    // A transfer is not a hold.
    let plain = t.engine.ledger.submit(transfer("plain", account, hot, 1)).await.unwrap().tx_id;
    let r = t.engine.ledger.submit(post("p-plain", plain)).await;
    assert!(matches!(r, Err(EngineError::Ledger(LedgerError::HoldNotFound { .. }))), "{r:?}");
    t.assert_books_balance().await;
}
both_backends!(l6, l6_two_phase_holds);

// I1, I2: same key sequentially — same body replays, different body is refused.
async fn i1_i2_idempotency_sequential(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let a = t.merchant("a").await;
    let b = t.merchant("b").await;
    t.fund(a, "LTC", "1").await;
    let (from, to) = (t.merchant_account(a, "LTC").await, t.merchant_account(b, "LTC").await);
    let first = t.engine.ledger.submit(transfer("order-1", from, to, 10)).await.unwrap();
    let second = t.engine.ledger.submit(transfer("order-1", from, to, 10)).await.unwrap();
    assert_eq!(first.tx_id, second.tx_id);
    assert!(!first.replayed && second.replayed);
    assert_eq!(t.balance(to).await, (10, 10), "one effect");
    let conflict = t.engine.ledger.submit(transfer("order-1", from, to, 11)).await;
    assert!(matches!(conflict, Err(EngineError::Ledger(LedgerError::IdempotencyConflict { .. }))), "{conflict:?}");
    let mut other_memo = transfer("order-1", from, to, 10);
    other_memo.memo = r#"{"note":"different"}"#.into();
    assert!(t.engine.ledger.submit(other_memo).await.is_err(), "the memo is part of the content");
    assert_eq!(t.balance(to).await, (10, 10), "no effect from the conflicting request");
    // A refused request does not burn its key: after funding, the same key succeeds.
    let big = t.engine.ledger.submit(transfer("order-2", from, to, 200_000_000)).await;
    assert!(is_insufficient(&big));
    t.fund(a, "LTC", "2").await;
    assert!(!t.engine.ledger.submit(transfer("order-2", from, to, 200_000_000)).await.unwrap().replayed);
    t.assert_books_balance().await;
}
both_backends!(i1_i2, i1_i2_idempotency_sequential);

// I3: same key concurrently, in one batch and across instances: one effect.
async fn i3_idempotency_concurrent(backend: Backend) {
    let t = TestEngine::with_options(backend, racing()).await;
    let other = t.another_instance(racing()).await;
    let a = t.merchant("a").await;
    let b = t.merchant("b").await;
    t.fund(a, "LTC", "1").await;
    let (from, to) = (t.merchant_account(a, "LTC").await, t.merchant_account(b, "LTC").await);
    let (r1, r2) = tokio::join!(
        t.engine.ledger.submit(transfer("dup", from, to, 5)),
        other.ledger.submit(transfer("dup", from, to, 5))
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.tx_id, r2.tx_id);
    assert!(r1.replayed != r2.replayed, "one wrote, the other replayed");
    // Many duplicates racing at once, mixed with a conflicting body.
    let engines = [t.engine.clone(), other];
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let engine = engines[i % 2].clone();
            let units = if i == 7 { 6 } else { 5 };
            tokio::spawn(async move { engine.ledger.submit(transfer("dup-many", from, to, units)).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut written = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(o) => {
                ids.insert(o.tx_id);
                written += usize::from(!o.replayed);
            }
            Err(EngineError::Ledger(LedgerError::IdempotencyConflict { .. })) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(ids.len(), 1, "every success names the same transaction");
    assert_eq!(written, 1, "written once");
    let (balance, _) = t.balance(to).await;
    assert!(balance == 10 || balance == 11, "one effect per key, got {balance}");
    t.assert_books_balance().await;
}
both_backends!(i3, i3_idempotency_concurrent);

// Requests the rules refuse change nothing and do not stop the rest of their batch.
async fn refused_requests_store_nothing(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let a = t.merchant("a").await;
    t.fund(a, "LTC", "1").await;
    let from = t.merchant_account(a, "LTC").await;
    let eur = t.merchant_account(a, "EUR").await;
    let before = t.engine.check().await.unwrap().transactions;
    let bad = [
        transfer("x1", from, from, 1),
        transfer("x2", from, eur, 1),
        transfer("x3", from, AccountId(987_654), 1),
        transfer("x4", from, eur, 0),
        transfer("", from, eur, 1),
        TxRequest { idempotency_key: "x5".into(), action: Action::Transfer(vec![]), memo: "{}".into() },
    ];
    for req in bad {
        let r = t.engine.ledger.submit(req.clone()).await;
        assert!(matches!(r, Err(EngineError::Ledger(_))), "{req:?} gave {r:?}");
    }
    assert_eq!(t.engine.check().await.unwrap().transactions, before, "nothing stored");
    t.assert_books_balance().await;
}
both_backends!(refused, refused_requests_store_nothing);

// L3: the checker finds corruption (a balance that is not the sum of its postings,
// an unbalanced transaction).
async fn l3_check_detects_tampering(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let a = t.merchant("a").await;
    t.fund(a, "LTC", "1").await;
    t.assert_books_balance().await;
    let account = t.merchant_account(a, "LTC").await;
    let set = match backend {
        Backend::Sqlite => "'100000001'",
        Backend::Postgres => "100000001",
    };
    t.db.execute_raw(&format!("UPDATE accounts SET balance = {set} WHERE id = {}", account.0)).await;
    let report = t.engine.check().await.unwrap();
    assert!(!report.ok());
    assert!(report.violations.iter().any(|v| v.contains("postings sum to 100000000")), "{:?}", report.violations);
    t.db.execute_raw(&format!("UPDATE ledger_entries SET units = {set} WHERE account_id = {}", account.0)).await;
    let report = t.engine.check().await.unwrap();
    assert!(report.violations.iter().any(|v| v.contains("is unbalanced in LTC by 1 units")), "{:?}", report.violations);
    assert!(report.violations.iter().any(|v| v.contains("postings in LTC sum to 1 units")), "{:?}", report.violations);
}
both_backends!(l3_tamper, l3_check_detects_tampering);

// The ledger is append-only and its entries refer to rows that exist: the database
// refuses deleting or renumbering ledger rows and entries for a missing account or
// transaction, and the checker reports an entry written around those guards.
async fn ledger_rows_cannot_dangle(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let a = t.merchant("a").await;
    t.fund(a, "LTC", "1").await;
    let account = t.merchant_account(a, "LTC").await.0;
    let before = t.engine.check().await.unwrap();
    let copy = |tx: &str, acc: &str, peer: &str| {
        format!(
            "INSERT INTO ledger_entries (tx_id, account_id, peer_account_id, currency, units, pending)
             SELECT {tx}, {acc}, {peer}, currency, units, pending FROM ledger_entries WHERE account_id = {account}"
        )
    };
    let mut refused = vec![
        ("an entry of a missing account", copy("tx_id", "987654", "peer_account_id")),
        ("an entry with a missing peer", copy("tx_id", "account_id", "987654")),
        ("an entry of a missing transaction", copy("987654", "account_id", "peer_account_id")),
        ("moving an entry to a missing account", format!("UPDATE ledger_entries SET account_id = 987654 WHERE account_id = {account}")),
        ("deleting an entry", format!("DELETE FROM ledger_entries WHERE account_id = {account}")),
        ("deleting a transaction", format!("DELETE FROM ledger_transactions WHERE id IN (SELECT tx_id FROM ledger_entries WHERE account_id = {account})")),
        ("deleting an account", format!("DELETE FROM accounts WHERE id = {account}")),
        ("renumbering an account", format!("UPDATE accounts SET id = 987654 WHERE id = {account}")),
        ("renumbering a transaction", "UPDATE ledger_transactions SET id = id + 1000000".to_string()),
        ("renumbering an entry", "UPDATE ledger_entries SET id = id + 1000000".to_string()),
    ];
    if matches!(backend, Backend::Sqlite) {
        refused.push(("renumbering an account by its rowid", format!("UPDATE accounts SET rowid = 987654 WHERE id = {account}")));
    }
    for (what, sql) in &refused {
        let result = t.db.try_execute_raw(sql).await;
        let message = result.expect_err(&format!("{what} was allowed"));
        assert!(
            message.contains("append-only") || message.contains("missing") || message.contains("FOREIGN KEY"),
            "{what}: {message}"
        );
    }
    let after = t.engine.check().await.unwrap();
    assert!(after.ok(), "{:?}", after.violations);
    assert_eq!((after.transactions, after.entries, after.accounts), (before.transactions, before.entries, before.accounts));

    // Around the guards (a replica's session on PostgreSQL, foreign keys off on SQLite).
    let bypass = match backend {
        Backend::Sqlite => "PRAGMA foreign_keys = OFF;",
        Backend::Postgres => "SET session_replication_role = replica;",
    };
    t.db.execute_raw(&format!("{bypass} {}", copy("tx_id", "987654", "peer_account_id"))).await;
    t.db.execute_raw(&format!("{bypass} {}", copy("987654", "account_id", "987655"))).await;
    let report = t.engine.check().await.unwrap();
    for missing in ["an account", "a transaction", "a peer account"] {
        assert!(report.violations.iter().any(|v| v.ends_with(&format!("refers to {missing} that does not exist"))), "{missing}: {:?}", report.violations);
    }
}
both_backends!(no_dangling, ledger_rows_cannot_dangle);

// Balances of 10^30-scale amounts stay exact through storage (i128 end to end).
async fn huge_amounts_are_exact(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let a = t.merchant("whale").await;
    t.fund(a, "LTC", "9999999999999999999999999999.99999999").await;
    t.fund(a, "LTC", "-0.00000001").await;
    let account = t.merchant_account(a, "LTC").await;
    assert_eq!(t.balance(account).await.0, 999_999_999_999_999_999_999_999_999_999_999_998);
    let balances = t.engine.balances(a, None).await.unwrap();
    let ltc = balances.iter().find(|b| b.currency == "LTC").unwrap();
    assert_eq!(ltc.balance, "9999999999999999999999999999.99999998");
    t.assert_books_balance().await;
}
both_backends!(huge, huge_amounts_are_exact);

// Workers that must run once per deployment (a chain's watcher, its broadcaster) are
// coordinated through a lease in the database: one instance holds it, renews it, and
// another takes over only after it lapses.
async fn worker_leases_coordinate_instances(backend: Backend) {
    let t = TestEngine::new(backend).await;
    let other = t.another_instance(LedgerOptions::default()).await;
    let ttl = std::time::Duration::from_millis(300);
    assert!(t.engine.lease("litecoin", ttl).await.unwrap());
    assert!(!other.lease("litecoin", ttl).await.unwrap(), "held by the first instance");
    assert!(other.lease("litecoin#broadcaster", ttl).await.unwrap(), "leases are per worker");
    assert!(t.engine.lease("litecoin", ttl).await.unwrap(), "the holder renews");
    t.advance(std::time::Duration::from_millis(200));
    assert!(!other.lease("litecoin", ttl).await.unwrap(), "renewed: still held");
    t.advance(std::time::Duration::from_millis(400));
    assert!(other.lease("litecoin", ttl).await.unwrap(), "a lapsed lease is taken over");
    assert!(!t.engine.lease("litecoin", ttl).await.unwrap());
}
both_backends!(leases, worker_leases_coordinate_instances);

// I3 at the edge: the same key twice at once when the balance covers exactly one
// effect. The second must replay the first, never report the first's own spending as
// insufficient funds.
async fn i3_same_key_replays_even_when_the_balance_is_spent(backend: Backend) {
    let t = TestEngine::with_options(backend, racing()).await;
    let other = t.another_instance(racing()).await;
    let a = t.merchant("a").await;
    let b = t.merchant("b").await;
    let (from, to) = (t.merchant_account(a, "LTC").await, t.merchant_account(b, "LTC").await);
    for round in 0..20 {
        t.fund(a, "LTC", "0.00000005").await;
        let key = format!("exact-{round}");
        let (r1, r2) = tokio::join!(t.engine.ledger.submit(transfer(&key, from, to, 5)), other.ledger.submit(transfer(&key, from, to, 5)));
        let (r1, r2) = (r1.expect("first"), r2.expect("second replays, not insufficient funds"));
        assert_eq!(r1.tx_id, r2.tx_id);
        assert_eq!(t.balance(from).await, (0, 0));
    }
    assert_eq!(t.balance(to).await.0, 100);
    t.assert_books_balance().await;
}
both_backends!(i3_exact, i3_same_key_replays_even_when_the_balance_is_spent);

// SQLite: commits reach the database file through the background checkpoint, without
// a commit that waits for one (with a commit checkpointing only past 64 Ki pages of log,
// these few would stay in the log).
#[tokio::test]
async fn sqlite_checkpoints_in_the_background() {
    use sqlx::ConnectOptions;
    let t = TestEngine::new(Backend::Sqlite).await;
    let a = t.merchant("a").await;
    for _ in 0..3 {
        t.fund(a, "LTC", "1").await;
    }
    let expected = t.engine.check().await.unwrap().transactions as i64;
    // Immutable: reads the database file alone, never the log.
    let file_only = sqlx::sqlite::SqliteConnectOptions::new().filename(&t.db.url).immutable(true).read_only(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut conn = file_only.connect().await.unwrap();
        let in_file: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_transactions").fetch_one(&mut conn).await.unwrap_or(0);
        if in_file == expected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "after 10 s the database file holds {in_file} of {expected} ledger transactions");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
