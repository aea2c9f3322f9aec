//! Withdrawals against real nodes, on both backends. On every kind of node the harness
//! has: 20 queued withdrawals paid in one transaction with exact fee accounting and a
//! reconciled hot wallet, and 50 concurrent withdrawals against a balance covering one
//! (L1). On Litecoin Core: refusals (bad addresses for every coin and network, limits,
//! idempotency), a dust payment the node refuses, and a replaced (RBF) payout (C2). Without
//! a node: the store applies the withdrawal and payout state machines.

use std::time::Duration;

use kassa_chain::Priority;
use kassa_core::ledger::{MerchantId, SystemAccount};
use kassa_core::withdrawal::{PayoutStatus, WithdrawalState, WithdrawalStatus};
use kassa_engine::chains::ChainSettings;
use kassa_engine::broadcaster::Broadcaster;
use kassa_engine::withdrawals::WithdrawalRequest;
use kassa_engine::EngineError;
use kassa_testkit::node::{chain_units, TestNode};
use kassa_testkit::{both_backends, on_every_node, Backend, ChainWorld};
use serde_json::json;

/// Credits `amount` to a merchant through a real deposit.
async fn fund_by_deposit<N: TestNode>(w: &ChainWorld<N>, m: MerchantId, amount: &str) {
    let mut watcher = w.watcher();
    watcher.cycle().await.unwrap();
    let a = w.t.engine.create_deposit_address(m, N::CURRENCY, None, None).await.unwrap();
    w.node.pay(&a.address, amount).await;
    w.node.mine(3).await;
    assert_eq!(watcher.cycle().await.unwrap().credited, 1);
}

fn request(m: MerchantId, address: &str, amount: &str, key: &str, priority: Priority) -> WithdrawalRequest {
    request_in("LTC", m, address, amount, key, priority)
}

fn request_in(currency: &str, m: MerchantId, address: &str, amount: &str, key: &str, priority: Priority) -> WithdrawalRequest {
    WithdrawalRequest {
        merchant: m,
        currency: currency.into(),
        address: address.into(),
        amount: amount.into(),
        priority,
        idempotency_key: key.into(),
        origin: kassa_engine::notifications::Origin::native(),
        description: None,
        pay_from: None,
    }
}

/// Ledger units (precision 8) in `N`'s chain units.
fn on_chain<N: TestNode>(units: i128) -> i128 {
    chain_units::<N>(&kassa_core::Amount::from_units(units, 8).unwrap().to_string())
}

async fn twenty_withdrawals_in_one_transaction<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    fund_by_deposit(&w, m, "10").await;
    let mut destinations = Vec::new();
    let mut total_amount: i128 = 0;
    let mut total_fee: i128 = 0;
    for i in 0..20 {
        let to = w.node.external_address().await;
        let amount_units = 10_000_000 + i * 1_000_000; // 0.10, 0.11, …
        let amount = kassa_core::Amount::from_units(amount_units, 8).unwrap().to_string();
        let wd = w.t.engine.request_withdrawal(request_in(N::CURRENCY, m, &to, &amount, &format!("payout-{i}"), Priority::Low)).await.unwrap();
        assert_eq!(wd.status, "queued");
        // Fee: 0.0001 fixed + 0.5 %, rounded up.
        let fee = 10_000 + (amount_units * 5 + 999) / 1000;
        assert_eq!(wd.fee, kassa_core::Amount::from_units(fee, 8).unwrap().to_string());
        total_amount += amount_units;
        total_fee += fee;
        destinations.push((to, amount_units));
    }
    let balances = w.t.engine.balances(m, None).await.unwrap();
    let ltc = balances.iter().find(|b| b.currency == N::CURRENCY).unwrap();
    assert_eq!(ltc.balance, "10.00000000", "held, not yet spent");
    assert_eq!(ltc.available, kassa_core::Amount::from_units(1_000_000_000 - total_amount - total_fee, 8).unwrap().to_string());

    // Low priority waits for its batch window…
    let waiting = Broadcaster::new(w.t.engine.clone(), N::CHAIN, Duration::from_secs(3600)).unwrap();
    assert_eq!(waiting.cycle().await.unwrap().payouts_sent, 0);
    // …and once it has passed, all twenty go in one transaction.
    let due = Broadcaster::new(w.t.engine.clone(), N::CHAIN, Duration::ZERO).unwrap();
    let r = due.cycle().await.unwrap();
    assert_eq!((r.payouts_sent, r.withdrawals_sent), (1, 20));
    let list = w.t.engine.withdrawals(kassa_store::WithdrawalQuery { merchant: Some(m), limit: 100, ..Default::default() }).await.unwrap();
    let txids: std::collections::BTreeSet<_> = list.iter().map(|x| x.txid.clone().unwrap()).collect();
    assert_eq!(txids.len(), 1, "one transaction pays all twenty");
    assert!(list.iter().all(|x| x.status == "broadcast"));
    let txid = txids.into_iter().next().unwrap();
    let adapter = w.adapter();
    let transfers = adapter.transfers(&txid).await.unwrap();
    for (to, units) in &destinations {
        let paid: Vec<_> = transfers.iter().filter(|t| &t.address == to).collect();
        assert_eq!(paid.len(), 1, "{to}");
        assert_eq!((paid[0].asset.as_str(), paid[0].amount), (N::CURRENCY, on_chain::<N>(*units)));
    }

    // Exact accounting: the merchant paid amounts + fees, Kassa earned the fees, the
    // network fee is an expense, and the hot wallet matches the node to the unit.
    w.node.mine(3).await;
    assert_eq!(due.cycle().await.unwrap().confirmed, 1);
    let (merchant_balance, _) = w.t.balance(w.t.merchant_account(m, N::CURRENCY).await).await;
    assert_eq!(merchant_balance, 1_000_000_000 - total_amount - total_fee);
    let (fees, _) = w.t.balance(w.t.system_account(SystemAccount::FeesEarned, N::CURRENCY).await).await;
    assert_eq!(fees, total_fee);
    let (network, _) = w.t.balance(w.t.system_account(SystemAccount::NetworkFees, N::CURRENCY).await).await;
    let node_fee = adapter.payment_status(&txid).await.unwrap().fee.expect("the node knows the fee");
    assert_eq!(on_chain::<N>(-network), node_fee, "the network fee the node reports is booked as an expense");
    let (hot, _) = w.t.balance(w.t.system_account(SystemAccount::HotWallet, N::CURRENCY).await).await;
    let node_balance = adapter.hot_wallet_balance(N::CURRENCY).await.unwrap();
    assert_eq!(on_chain::<N>(-hot), node_balance, "ledger hot wallet equals the node's wallet");
    assert_eq!(-hot, 1_000_000_000 - total_amount + network);
    let list = w.t.engine.withdrawals(kassa_store::WithdrawalQuery { merchant: Some(m), limit: 100, ..Default::default() }).await.unwrap();
    assert!(list.iter().all(|x| x.status == "confirmed" && x.confirmations >= 3), "{list:?}");
    let report = w.t.engine.check().await.unwrap();
    assert_eq!(report.hot_wallets.len(), 1);
    let h = &report.hot_wallets[0];
    assert_eq!((h.node.as_deref(), h.difference.as_deref()), (Some(h.ledger.as_str()), Some("0.00000000")), "{h:?}");
    // A deposit seen but not yet credited shows up as a difference.
    let a = w.t.engine.create_deposit_address(m, N::CURRENCY, None, None).await.unwrap();
    w.node.pay(&a.address, "0.5").await;
    // Kassa's wallet learns of the payment from the node's mempool a moment later.
    let mut difference = None;
    for _ in 0..50 {
        difference = w.t.engine.check().await.unwrap().hot_wallets[0].difference.clone();
        if difference.as_deref() != Some("0.00000000") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(difference.as_deref(), Some("0.50000000"));
    w.t.assert_books_balance().await;
}
on_every_node!(batch, twenty_withdrawals_in_one_transaction);

/// A burst: 500 withdrawals to one address and 500 to 20 others, queued while the
/// wallet's only coin is reserved by a transaction that was signed and never stored
/// (what a crash right after signing leaves). The first cycle releases the coin and
/// pays all 1,000 in one transaction of 21 outputs (withdrawals to one address share
/// an output), with no alert about funds and exact books.
async fn a_burst_is_paid_in_few_transactions<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    fund_by_deposit(&w, m, "5").await;
    let adapter = w.adapter();
    let stranger = w.node.external_address().await;
    let payment = kassa_chain::Payment { address: stranger.clone(), tag: None, asset: N::CURRENCY.into(), amount: chain_units::<N>("1") };
    adapter.sign_payments(&[payment.clone()], Priority::High).await.expect("signed, never stored nor sent");
    assert!(
        matches!(adapter.sign_payments(&[payment], Priority::High).await, Err(kassa_chain::ChainError::InsufficientFunds(_))),
        "the wallet's only coin is reserved"
    );
    let funds = adapter.wallet_funds(N::CURRENCY).await.unwrap();
    assert_eq!((funds.confirmed, funds.reserved), (0, chain_units::<N>("5")), "{funds:?}");

    let hot = w.node.external_address().await;
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(w.node.external_address().await);
    }
    let (mut total_amount, mut total_fee) = (0i128, 0i128);
    for i in 0..1000 {
        let (to, units) = if i % 2 == 0 { (&hot, 200_000) } else { (&others[(i / 2) % 20], 400_000) };
        let amount = kassa_core::Amount::from_units(units, 8).unwrap().to_string();
        w.t.engine.request_withdrawal(request_in(N::CURRENCY, m, to, &amount, &format!("burst-{i}"), Priority::High)).await.unwrap();
        total_amount += units;
        total_fee += 10_000 + (units * 5 + 999) / 1000;
    }

    let b = Broadcaster::new(w.t.engine.clone(), N::CHAIN, Duration::ZERO).unwrap();
    let r = b.cycle().await.unwrap();
    assert_eq!(r.unfunded, vec![], "no alert about funds");
    assert_eq!((r.payouts_sent, r.withdrawals_sent), (1, 1000), "{r:?}");
    assert_eq!(adapter.wallet_funds(N::CURRENCY).await.unwrap().reserved, 0, "the reserved coin was released and spent");
    let list = w.t.engine.withdrawals(kassa_store::WithdrawalQuery { merchant: Some(m), limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(list.len(), 1000);
    assert!(list.iter().all(|x| x.status == "broadcast"), "every withdrawal is on its way");
    let txids: std::collections::BTreeSet<_> = list.iter().map(|x| x.txid.clone().unwrap()).collect();
    assert_eq!(txids.len(), 1);
    let txid = txids.into_iter().next().unwrap();
    let transfers = adapter.transfers(&txid).await.unwrap();
    let to_hot: Vec<_> = transfers.iter().filter(|t| t.address == hot).collect();
    assert_eq!(to_hot.len(), 1, "500 withdrawals to one address: one output");
    assert_eq!(to_hot[0].amount, chain_units::<N>("1"), "500 × 0.002");
    for o in &others {
        assert_eq!(w.node.received(o).await, chain_units::<N>("0.1"), "{o}: 25 × 0.004");
    }
    assert_eq!(w.node.received(&stranger).await, 0, "the transaction that reserved the coin was never sent");

    w.node.mine(3).await;
    assert_eq!(b.cycle().await.unwrap().confirmed, 1);
    let (merchant_balance, _) = w.t.balance(w.t.merchant_account(m, N::CURRENCY).await).await;
    assert_eq!(merchant_balance, 500_000_000 - total_amount - total_fee);
    let (fees, _) = w.t.balance(w.t.system_account(SystemAccount::FeesEarned, N::CURRENCY).await).await;
    assert_eq!(fees, total_fee);
    let (network, _) = w.t.balance(w.t.system_account(SystemAccount::NetworkFees, N::CURRENCY).await).await;
    assert_eq!(on_chain::<N>(-network), adapter.payment_status(&txid).await.unwrap().fee.unwrap());
    let (hot_wallet, _) = w.t.balance(w.t.system_account(SystemAccount::HotWallet, N::CURRENCY).await).await;
    assert_eq!(on_chain::<N>(-hot_wallet), adapter.hot_wallet_balance(N::CURRENCY).await.unwrap());
    w.t.assert_books_balance().await;
}
on_every_node!(burst, a_burst_is_paid_in_few_transactions);

/// A hot wallet that really is short: the alert says so (not "unconfirmed" or
/// "reserved"), the withdrawal stays queued with its funds held, and it is paid once
/// the wallet can.
async fn a_short_hot_wallet_is_named_and_waited_for<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    w.t.fund(m, N::CURRENCY, "5").await; // in the ledger only: the wallet is empty
    let to = w.node.external_address().await;
    let wd = w.t.engine.request_withdrawal(request_in(N::CURRENCY, m, &to, "1", "short-1", Priority::High)).await.unwrap();
    let b = Broadcaster::new(w.t.engine.clone(), N::CHAIN, Duration::ZERO).unwrap();
    let r = b.cycle().await.unwrap();
    assert_eq!(r.unfunded, vec![(N::CURRENCY.to_string(), kassa_engine::broadcaster::Shortfall::TooLittle)]);
    assert_eq!(r.payouts_sent, 0);
    assert_eq!(w.t.engine.withdrawal(m, wd.id).await.unwrap().status, "queued");
    let other = w.t.merchant("other").await;
    fund_by_deposit(&w, other, "3").await;
    let r = b.cycle().await.unwrap();
    assert_eq!((r.payouts_sent, r.unfunded.len()), (1, 0));
    assert_eq!(w.node.received(&to).await, chain_units::<N>("1"));
}
on_every_node!(short_wallet, a_short_hot_wallet_is_named_and_waited_for);

/// Repeats of one withdrawal request arriving together: while the first holds its
/// funds, no repeat answers from the not-yet-held row. Short of funds, every one is
/// refused for funds and nothing is stored; with funds, all answer the same one
/// withdrawal, held once.
async fn concurrent_repeats_answer_what_the_first_did<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    w.t.fund(m, N::CURRENCY, "1").await;
    let to = w.node.external_address().await;
    for round in 0..5 {
        let key = format!("short-{round}");
        let attempts = (0..12).map(|_| w.t.engine.request_withdrawal(request_in(N::CURRENCY, m, &to, "2", &key, Priority::High)));
        for r in futures_util::future::join_all(attempts).await {
            assert!(matches!(r, Err(EngineError::InsufficientFunds { .. })), "round {round}: {r:?}");
        }
        assert!(w.t.engine.withdrawal_by_key(m, &key).await.unwrap().is_none(), "nothing stored");
    }
    let attempts = (0..12).map(|_| w.t.engine.request_withdrawal(request_in(N::CURRENCY, m, &to, "0.5", "enough", Priority::High)));
    let ids: std::collections::BTreeSet<i64> = futures_util::future::join_all(attempts).await.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids.len(), 1, "one withdrawal for every repeat");
    let ltc = w.t.engine.balances(m, None).await.unwrap().into_iter().find(|b| b.currency == N::CURRENCY).unwrap();
    assert_eq!(ltc.available, "0.49740000", "1 - 0.5 - (0.0001 + 0.5 %), held once");
    w.t.assert_books_balance().await;
}
on_every_node!(concurrent_repeats, concurrent_repeats_answer_what_the_first_did);

// L1 with real withdrawals: 50 at once against a balance that covers one.
async fn l1_concurrent_withdrawals<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    fund_by_deposit(&w, m, "1").await;
    let to = w.node.external_address().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let engine = w.t.engine.clone();
            let req = request_in(N::CURRENCY, m, &to, "0.9", &format!("w-{i}"), Priority::High);
            tokio::spawn(async move { engine.request_withdrawal(req).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(EngineError::InsufficientFunds { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(accepted, 1);
    let list = w.t.engine.withdrawals(kassa_store::WithdrawalQuery { merchant: Some(m), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(list.len(), 1, "refused withdrawals are not stored");
    let (balance, available) = w.t.balance(w.t.merchant_account(m, N::CURRENCY).await).await;
    assert_eq!(balance, 100_000_000);
    assert!(available >= 0 && available < 10_000_000, "{available}");
    w.t.assert_books_balance().await;
}
on_every_node!(l1_withdrawals, l1_concurrent_withdrawals);

async fn refusals(backend: Backend) {
    let w = ChainWorld::new(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    fund_by_deposit(&w, m, "1").await;
    let before = w.t.engine.check().await.unwrap().transactions;
    let key = |b: &str| bs58_address(b);
    let bad_addresses = [
        "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9".to_string(), // Litecoin mainnet
        "tltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kd4avx7".to_string(), // Litecoin testnet
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".to_string(), // Bitcoin regtest
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".to_string(),   // Bitcoin mainnet
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa".to_string(),           // Bitcoin mainnet legacy
        key("30"),                                                  // Dogecoin mainnet
        key("48"),                                                  // Litecoin mainnet legacy
        "tmweb1qq0ydlxy9vd6s9ccnlj3dtk6mp3ctjmxxl".to_string(),     // MWEB
        "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfo".to_string(),           // checksum broken
        "".to_string(),
        "not an address".to_string(),
    ];
    for (i, a) in bad_addresses.iter().enumerate() {
        let r = w.t.engine.request_withdrawal(request(m, a, "0.01", &format!("bad-{i}"), Priority::High)).await;
        assert!(matches!(r, Err(EngineError::Invalid { field: "address", .. })), "{a:?}: {r:?}");
    }
    let good = w.node.miner_rpc("getnewaddress", json!(["", "legacy"])).await.as_str().unwrap().to_string();
    for (amount, field) in [("0.0001", "amount"), ("0.000000001", "amount"), ("-1", "amount"), ("1e-2", "amount")] {
        let r = w.t.engine.request_withdrawal(request(m, &good, amount, "x", Priority::High)).await;
        match r {
            Err(EngineError::Invalid { field: f, .. }) => assert_eq!(f, field),
            Err(EngineError::Amount(_)) => {}
            Err(EngineError::BelowMinimum(_)) => assert_eq!(amount, "0.0001", "below the 0.001 minimum"),
            other => panic!("{amount}: {other:?}"),
        }
    }
    let mut other = request(m, &good, "0.01", "x", Priority::High);
    other.currency = "DOGE".into();
    assert!(matches!(w.t.engine.request_withdrawal(other).await, Err(EngineError::UnknownCurrency(_))));
    let mut fiat = request(m, &good, "1", "x", Priority::High);
    fiat.currency = "EUR".into();
    assert!(w.t.engine.request_withdrawal(fiat).await.is_err(), "fiat cannot be sent");
    assert_eq!(w.t.engine.check().await.unwrap().transactions, before, "nothing stored");

    // Idempotency: the same key and request replays; a different request conflicts.
    let first = w.t.engine.request_withdrawal(request(m, &good, "0.01", "order-9", Priority::High)).await.unwrap();
    let again = w.t.engine.request_withdrawal(request(m, &good, "0.01", "order-9", Priority::High)).await.unwrap();
    assert!(!first.replayed && again.replayed, "the repeat says it is one");
    assert_eq!(kassa_engine::withdrawals::Withdrawal { replayed: false, ..again }, first);
    let conflict = w.t.engine.request_withdrawal(request(m, &good, "0.02", "order-9", Priority::High)).await;
    assert!(matches!(conflict, Err(EngineError::Ledger(kassa_core::ledger::LedgerError::IdempotencyConflict { .. }))));
    // Another merchant cannot see it.
    let stranger = w.t.merchant("stranger").await;
    assert!(matches!(w.t.engine.withdrawal(stranger, first.id).await, Err(EngineError::NotFound(_))));
    w.t.assert_books_balance().await;
}
both_backends!(refused, refusals);

/// A base58check address with version byte `version` (decimal text) over a fixed hash.
fn bs58_address(version: &str) -> String {
    let mut payload = vec![version.parse::<u8>().unwrap()];
    payload.extend_from_slice(&[7u8; 20]);
    bs58::encode(payload).with_check().into_string()
}

// A withdrawal the node refuses for good fails alone, its hold is voided, and the other
// withdrawals of its batch are still paid. The case: a dust amount, with the currency's
// minimum withdrawal configured (wrongly) below the chain's dust limit.
async fn refused_payment_fails_alone_and_returns_funds(backend: Backend) {
    let w = ChainWorld::new(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    fund_by_deposit(&w, m, "1").await;
    let mut engine = w.t.engine.clone();
    let raw: std::collections::BTreeMap<String, kassa_core::currency::CurrencyConfig> =
        toml::from_str(&kassa_testkit::TEST_CURRENCIES.replace("min_withdrawal = \"0.001\"", "min_withdrawal = \"0\"")).unwrap();
    engine.currencies = std::sync::Arc::new(kassa_engine::currencies::Currencies::new(kassa_core::currency::validate_currencies(&raw).unwrap()));
    let to1 = w.node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let to2 = w.node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let dust = engine.request_withdrawal(request(m, &to1, "0.00000001", "dust", Priority::High)).await.unwrap();
    let good = engine.request_withdrawal(request(m, &to2, "0.1", "good", Priority::High)).await.unwrap();
    let b = Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO).unwrap();
    let r = b.cycle().await.unwrap();
    assert_eq!(r.withdrawals_sent, 1, "{r:?}");
    let dust = w.t.engine.withdrawal(m, dust.id).await.unwrap();
    assert_eq!(dust.status, "failed", "{dust:?}");
    assert!(dust.failure.is_some());
    assert_eq!(w.t.engine.withdrawal(m, good.id).await.unwrap().status, "broadcast");
    // Only the good withdrawal's amount and fee left the balance.
    let (balance, available) = w.t.balance(w.t.merchant_account(m, "LTC").await).await;
    let fee = 10_000 + (10_000_000 * 5 + 999) / 1000;
    assert_eq!((balance, available), (100_000_000 - 10_000_000 - fee, 100_000_000 - 10_000_000 - fee));
    let history = w.t.engine.history(kassa_store::HistoryQuery { merchant: m, user: None, currency: None, before_entry: None, limit: 50 }).await.unwrap();
    assert!(history.iter().any(|h| h.hold_status.as_deref() == Some("voided")), "the dust hold shows as voided");
    w.t.assert_books_balance().await;
}
both_backends!(dust, refused_payment_fails_alone_and_returns_funds);

// C2: a payout replaced on the network (a fee bump mined instead of the original) is
// followed by what it pays; the destination is paid once and the larger fee is booked.
async fn c2_replaced_payout_is_matched_by_outputs(backend: Backend) {
    let w = ChainWorld::new(backend, ChainSettings::default()).await;
    let m = w.t.merchant("shop").await;
    fund_by_deposit(&w, m, "1").await;
    let to = w.node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let wd = w.t.engine.request_withdrawal(request(m, &to, "0.25", "bump-me", Priority::High)).await.unwrap();
    let b = Broadcaster::new(w.t.engine.clone(), "litecoin", Duration::ZERO).unwrap();
    b.cycle().await.unwrap();
    let original = w.t.engine.withdrawal(m, wd.id).await.unwrap().txid.unwrap();
    let kassa = w.node.adapter("kassa");
    let bumped = kassa.wallet_call("bumpfee", json!([original, {"fee_rate": 100}])).await.unwrap();
    let replacement = bumped["txid"].as_str().unwrap().to_string();
    assert_ne!(replacement, original);
    // Litecoin Core's mempool does not take replacements; a miner includes the
    // replacement directly instead, which is the case that matters: it confirms.
    let hex = kassa.wallet_call("gettransaction", json!([replacement])).await.unwrap()["hex"].clone();
    let miner = w.node.miner_rpc("getnewaddress", json!([])).await;
    w.node.rpc("generateblock", json!([miner, [hex]])).await;
    b.cycle().await.unwrap();
    let after = w.t.engine.withdrawal(m, wd.id).await.unwrap();
    assert_eq!(after.txid.as_deref(), Some(replacement.as_str()), "follows the replacement");
    w.node.mine(2).await;
    b.cycle().await.unwrap();
    assert_eq!(w.t.engine.withdrawal(m, wd.id).await.unwrap().status, "confirmed");
    let received = w.node.miner_rpc("getreceivedbyaddress", json!([to, 0])).await;
    assert_eq!(kassa_chain_bitcoind::parse_amount(&received).unwrap(), 25_000_000, "paid once");
    let fee = kassa_chain_bitcoind::parse_amount(&kassa.wallet_call("gettransaction", json!([replacement])).await.unwrap()["fee"]).unwrap();
    let (network, _) = w.t.balance(w.t.system_account(SystemAccount::NetworkFees, "LTC").await).await;
    assert_eq!(network, fee, "the replacement's fee is what was spent");
    let report = w.t.engine.check().await.unwrap();
    assert_eq!(report.hot_wallets[0].difference.as_deref(), Some("0.00000000"), "{:?}", report.hot_wallets);
    w.t.assert_books_balance().await;
}
both_backends!(c2, c2_replaced_payout_is_matched_by_outputs);

async fn withdrawal_row(store: &kassa_store::Store, id: i64) -> kassa_store::WithdrawalRow {
    store.withdrawal(id).await.unwrap().unwrap()
}

async fn payout_row(store: &kassa_store::Store, id: i64) -> kassa_store::PayoutRow {
    store.payouts_in("litecoin", &PayoutStatus::ALL).await.unwrap().into_iter().find(|p| p.id == id).unwrap()
}

// The store writes the statuses core's machines return: repeats and refused
// transitions change nothing, and each status a withdrawal enters raises its event once.
async fn the_store_applies_the_state_machines(backend: Backend) {
    let t = kassa_testkit::TestEngine::new(backend).await;
    let m = t.merchant("shop").await;
    let store = &t.engine.store;
    let new = |key: &str| kassa_store::NewWithdrawal {
        merchant: m,
        currency: "LTC".into(),
        chain: "litecoin".into(),
        address: format!("address-{key}"),
        amount_units: 1000,
        fee_units: 10,
        priority: "high".into(),
        idempotency_key: key.into(),
        request_hash: vec![1],
        origin: "native".into(),
        callback_url: None,
        description: None,
        daily_limit: None,
        source: None,
        approval_reason: None,
        approval_day_limit: None,
        not_before_ms: None,
        batch_key: None,
    };
    let a = store.insert_withdrawal(&new("a")).await.unwrap();
    let b = store.insert_withdrawal(&new("b")).await.unwrap();
    assert_eq!(withdrawal_row(store, a).await.status, WithdrawalStatus::Requested);
    store.set_withdrawal_queued(a, 101).await.unwrap();
    store.set_withdrawals_queued(&[(b, 102)]).await.unwrap();
    store.set_withdrawal_queued(a, 999).await.unwrap();
    let row = withdrawal_row(store, a).await;
    assert_eq!((row.status, row.hold_tx_id), (WithdrawalStatus::Queued, Some(101)), "held once");

    // Claimed by a payout: not failed; a second claim is refused and stores nothing.
    let p1 = store.create_payout("litecoin", "LTC", &[a, b]).await.unwrap();
    assert!(store.create_payout("litecoin", "LTC", &[a]).await.is_err());
    assert_eq!(store.payouts_in("litecoin", &[PayoutStatus::Preparing]).await.unwrap().len(), 1);
    assert!(!store.fail_queued_withdrawal(a, "no").await.unwrap());
    // Abandoned: back to the queue (once); then failing works, once.
    store.abandon_payout(p1, "interrupted").await.unwrap();
    store.abandon_payout(p1, "again").await.unwrap();
    assert_eq!(payout_row(store, p1).await.status, PayoutStatus::Failed);
    assert_eq!(withdrawal_row(store, a).await.state(), WithdrawalState { status: WithdrawalStatus::Queued, payout: None });
    assert!(store.fail_queued_withdrawal(b, "bad address").await.unwrap());
    assert!(!store.fail_queued_withdrawal(b, "bad address").await.unwrap());
    assert_eq!(withdrawal_row(store, b).await.status, WithdrawalStatus::Failed);

    let p2 = store.create_payout("litecoin", "LTC", &[a]).await.unwrap();
    store.payout_signed(p2, "tx1", "00", 5, &[(a, 0)]).await.unwrap();
    store.payout_signed(p2, "tx9", "99", 9, &[(a, 1)]).await.unwrap();
    let (row, p) = (withdrawal_row(store, a).await, payout_row(store, p2).await);
    assert_eq!((row.status, row.txid.as_deref(), row.vout), (WithdrawalStatus::Signed, Some("tx1"), Some(0)), "signed once");
    assert_eq!((p.status, p.txid.as_deref(), p.network_fee_units), (PayoutStatus::Signed, Some("tx1"), Some(5)));
    // Signed bytes may be on the network: never abandoned; not confirmed before broadcast.
    store.abandon_payout(p2, "too late").await.unwrap();
    store.payout_confirmations(p2, 1, true).await.unwrap();
    assert_eq!(withdrawal_row(store, a).await.state(), WithdrawalState { status: WithdrawalStatus::Signed, payout: Some(p2) });
    assert_eq!(payout_row(store, p2).await.status, PayoutStatus::Signed);

    store.payout_broadcast(p2, "tx1").await.unwrap();
    store.payout_broadcast(p2, "tx1").await.unwrap();
    store.payout_replaced(p2, "tx2").await.unwrap();
    let (row, p) = (withdrawal_row(store, a).await, payout_row(store, p2).await);
    assert_eq!((row.status, row.txid.as_deref()), (WithdrawalStatus::Broadcast, Some("tx2")), "follows the replacement");
    assert_eq!((p.status, p.txid.as_deref()), (PayoutStatus::Broadcast, Some("tx2")));
    store.payout_confirmations(p2, 1, false).await.unwrap();
    assert_eq!(withdrawal_row(store, a).await.confirmations, 1);
    store.payout_confirmations(p2, 3, true).await.unwrap();
    store.payout_confirmations(p2, 4, true).await.unwrap();
    let row = withdrawal_row(store, a).await;
    assert_eq!((row.status, row.confirmations), (WithdrawalStatus::Confirmed, 4));
    assert_eq!(payout_row(store, p2).await.status, PayoutStatus::Confirmed);
    assert!(!store.fail_queued_withdrawal(a, "no").await.unwrap());

    t.engine.relay_events().await.unwrap();
    let events: Vec<(i64, String)> = store
        .events_after(m, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.object_kind == "withdrawal")
        .map(|e| (e.object_id, e.event_type))
        .collect();
    let expected = [(a, "withdrawal.queued"), (b, "withdrawal.queued"), (b, "withdrawal.failed"), (a, "withdrawal.broadcast"), (a, "withdrawal.confirmed")];
    assert_eq!(events, expected.map(|(id, t)| (id, t.to_string())));
}
both_backends!(store_machines, the_store_applies_the_state_machines);
