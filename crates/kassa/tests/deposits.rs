//! Deposits against a real node (every kind the harness has: `TestNode`), on both
//! database backends:
//! confirmations (W3), reorgs of depth 1, 2, 3 and 8 around deposits including the
//! mempool → mined → reorged → re-mined case (W1, W5), a reorg deeper than allowed
//! (W2), downtime while 50 blocks with deposits are mined (W6), and re-processing of
//! blocks after lost progress (C3). `kassa check` is clean after each.

use kassa_core::ledger::MerchantId;
use kassa_engine::chains::ChainSettings;
use kassa_engine::watcher::Watcher;
use kassa_store::DepositQuery;
use kassa_testkit::node::TestNode;
use kassa_testkit::{both_backends, on_every_node, Backend, ChainWorld};

fn settings(max_reorg_depth: u64) -> ChainSettings {
    ChainSettings { max_reorg_depth, start_height: None, ..ChainSettings::default() }
}

async fn deposit_status<N: TestNode>(w: &ChainWorld<N>, merchant: MerchantId) -> Vec<(String, String, i64)> {
    let list = w.t.engine.deposits(DepositQuery { merchant: Some(merchant), limit: 100, ..Default::default() }).await.unwrap();
    list.into_iter().map(|d| (d.amount, d.status, d.confirmations)).collect()
}

async fn balance<N: TestNode>(w: &ChainWorld<N>, merchant: MerchantId) -> String {
    let b = w.t.engine.balances(merchant, None).await.unwrap();
    b.into_iter().find(|b| b.currency == N::CURRENCY).unwrap().balance
}

// W3: seen at 0 confirmations, credited only at the currency's threshold (3).
async fn w3_credit_at_threshold<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, settings(10)).await;
    let m = w.t.merchant("shop").await;
    let mut watcher = w.watcher();
    watcher.cycle().await.unwrap();
    let a = w.t.engine.create_deposit_address(m, N::CURRENCY, Some("order 1".into()), Some("customer-7".into())).await.unwrap();
    let again = w.t.engine.create_deposit_address(m, N::CURRENCY, None, Some("customer-7".into())).await.unwrap();
    assert_eq!(a.address, again.address, "the same foreign_id gets the same address");
    assert!(w.t.engine.check_withdrawal_address(N::CURRENCY, &a.address).is_ok(), "a valid address of the chain");

    w.node.pay(&a.address, "1.25").await;
    watcher.cycle().await.unwrap();
    assert_eq!(deposit_status(&w, m).await, vec![("1.25000000".into(), "seen".into(), 0)]);
    assert_eq!(balance(&w, m).await, "0.00000000");
    for confirmations in 1..=2 {
        w.node.mine(1).await;
        watcher.cycle().await.unwrap();
        assert_eq!(deposit_status(&w, m).await, vec![("1.25000000".into(), "confirming".into(), confirmations)]);
        assert_eq!(balance(&w, m).await, "0.00000000", "not spendable below the threshold");
    }
    w.node.mine(1).await;
    let r = watcher.cycle().await.unwrap();
    assert_eq!(r.credited, 1);
    assert_eq!(deposit_status(&w, m).await, vec![("1.25000000".into(), "credited".into(), 3)]);
    assert_eq!(balance(&w, m).await, "1.25000000");
    w.node.mine(2).await;
    assert_eq!(watcher.cycle().await.unwrap().credited, 0);
    assert_eq!(balance(&w, m).await, "1.25000000", "credited once");
    // Another merchant does not see this deposit.
    let other = w.t.merchant("other").await;
    assert!(deposit_status(&w, other).await.is_empty());
    w.t.assert_books_balance().await;
}
on_every_node!(w3, w3_credit_at_threshold);

// W1 + W5: a deposit seen in the mempool, mined, reorged out at depth 1, 2, 3 and 8
// (credited first when the depth reaches the threshold), and re-mined: one credit.
async fn w1_w5_reorgs_around_deposits<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, settings(10)).await;
    let m = w.t.merchant("shop").await;
    let mut watcher = w.watcher();
    watcher.cycle().await.unwrap();
    let mut expected_units: i128 = 0;
    for (i, depth) in [1u64, 2, 3, 8].into_iter().enumerate() {
        let a = w.t.engine.create_deposit_address(m, N::CURRENCY, None, None).await.unwrap();
        let amount = format!("0.{}", i + 1); // 0.1, 0.2, 0.3, 0.4
        w.node.pay(&a.address, &amount).await;
        watcher.cycle().await.unwrap();
        w.node.mine(depth).await;
        let r = watcher.cycle().await.unwrap();
        let credited_before_reorg = depth >= 3;
        assert_eq!(r.credited, u64::from(credited_before_reorg), "depth {depth}");
        let before = balance(&w, m).await;

        w.node.reorg(depth).await;
        let r = watcher.cycle().await.unwrap();
        assert!(r.reorg_depth.is_some_and(|d| d >= depth), "depth {depth}: {r:?}");
        assert_eq!(r.reversed, u64::from(credited_before_reorg), "depth {depth}");
        let statuses = deposit_status(&w, m).await;
        let (_, status, confirmations) = &statuses[0]; // newest first
        assert_eq!(confirmations, &0, "depth {depth}");
        assert_eq!(status, if credited_before_reorg { "reversed" } else { "seen" }, "depth {depth}");
        let after_reorg = balance(&w, m).await;
        if credited_before_reorg {
            assert_ne!(before, after_reorg, "the reversal takes the credit back");
        }
        let units: i128 = (i as i128 + 1) * 10_000_000;
        assert_eq!(after_reorg, kassa_core::Amount::from_units(expected_units, 8).unwrap().to_string(), "depth {depth}");

        // The transaction is back in the mempool; mined again, it is credited once.
        w.node.mine(3).await;
        watcher.cycle().await.unwrap();
        expected_units += units;
        assert_eq!(balance(&w, m).await, kassa_core::Amount::from_units(expected_units, 8).unwrap().to_string(), "depth {depth}");
        w.t.assert_books_balance().await;
    }
    let all = deposit_status(&w, m).await;
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|(_, s, _)| s == "credited"), "{all:?}");
    // The history shows the reversals of the two deposits that were credited before their reorg.
    let history =
        w.t.engine
            .history(kassa_store::HistoryQuery { merchant: m, user: None, currency: Some(N::CURRENCY.into()), before_entry: None, limit: 100 })
            .await
            .unwrap();
    let reversals = history.iter().filter(|h| h.memo["type"] == "deposit_reversal").count();
    assert_eq!(reversals, 2);
}
on_every_node!(w1_w5, w1_w5_reorgs_around_deposits);

// W2: a reorg deeper than the configured maximum halts the chain.
async fn w2_deep_reorg_halts<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, settings(3)).await;
    let m = w.t.merchant("shop").await;
    let mut watcher = w.watcher();
    watcher.cycle().await.unwrap();
    let a = w.t.engine.create_deposit_address(m, N::CURRENCY, None, None).await.unwrap();
    w.node.pay(&a.address, "2").await;
    w.node.mine(5).await;
    assert_eq!(watcher.cycle().await.unwrap().credited, 1);
    w.node.reorg(5).await;
    let r = watcher.cycle().await.unwrap();
    assert!(r.halted, "{r:?}");
    let reason = w.t.engine.store.chain_halted(N::CHAIN).await.unwrap().expect("halted");
    assert!(reason.contains("reorg deeper than 3 blocks"), "{reason}");
    // Halted: nothing more is credited or reversed, even after more blocks, until an operator resumes.
    let b = w.t.engine.create_deposit_address(m, N::CURRENCY, None, None).await.unwrap();
    w.node.pay(&b.address, "1").await;
    w.node.mine(4).await;
    let r = watcher.cycle().await.unwrap();
    assert!(r.halted && r.credited == 0 && r.reversed == 0);
    assert_eq!(balance(&w, m).await, "2.00000000");
    // Resuming is an operator's act; with the limit unchanged, the same reorg halts again.
    assert!(w.t.engine.resume_chain(N::CHAIN).await.unwrap());
    assert!(!w.t.engine.resume_chain(N::CHAIN).await.unwrap(), "already running");
    assert!(w.t.engine.store.chain_halted(N::CHAIN).await.unwrap().is_none());
    assert!(watcher.cycle().await.unwrap().halted, "still deeper than max_reorg_depth");
    assert_eq!(balance(&w, m).await, "2.00000000");
    w.t.assert_books_balance().await;
}
on_every_node!(w2, w2_deep_reorg_halts);

// W6 + C3: Kassa is down while 50 blocks with deposits are mined; on restart every
// deposit is credited exactly once. Then progress is lost (the checkpoint goes back 20
// blocks) and the blocks are processed again: still exactly once.
async fn w6_c3_downtime_and_reprocessing<N: TestNode>(backend: Backend) {
    let w = ChainWorld::<N>::start(backend, settings(10)).await;
    let m = w.t.merchant("shop").await;
    let mut addresses = Vec::new();
    for _ in 0..50 {
        addresses.push(w.t.engine.create_deposit_address(m, N::CURRENCY, None, None).await.unwrap().address);
    }
    {
        let mut before_downtime = w.watcher();
        before_downtime.cycle().await.unwrap();
        assert_eq!(before_downtime.watched(), 50);
    } // "stopped"
    for (i, a) in addresses.iter().enumerate() {
        w.node.pay(a, &format!("0.0{:02}", i + 1)).await;
        w.node.mine(1).await;
    }
    w.node.mine(3).await;
    let tip = w.node.height().await;
    let mut restarted = w.watcher();
    let r = restarted.cycle().await.unwrap();
    assert_eq!((r.scanned_to, r.blocks, r.credited), (tip, 53, 50));
    let total: i128 = (1..=50).map(|i| i as i128 * 100_000).sum();
    let expected = kassa_core::Amount::from_units(total, 8).unwrap().to_string();
    assert_eq!(balance(&w, m).await, expected);
    w.t.assert_books_balance().await;
    let transactions = w.t.engine.check().await.unwrap().transactions;

    // C3: progress lost (as after a crash mid-way): the last 20 blocks are scanned again.
    w.t.db.execute_raw(&format!("DELETE FROM chain_blocks WHERE height > {}", tip - 20)).await;
    let mut again = Watcher::new(w.t.engine.clone(), N::CHAIN).unwrap();
    let r = again.cycle().await.unwrap();
    assert_eq!((r.blocks, r.credited), (20, 0), "{r:?}");
    assert_eq!(balance(&w, m).await, expected, "nothing credited twice");
    assert_eq!(w.t.engine.check().await.unwrap().transactions, transactions);
    w.t.assert_books_balance().await;
}
on_every_node!(w6_c3, w6_c3_downtime_and_reprocessing);

// A credit's fee is fixed when it is booked: after the fee rule changes, a reversal
// takes back exactly what the credit booked (nothing lands in suspense), and the
// deposit mined again is credited with the same fee.
async fn reversal_mirrors_the_credited_fee(backend: Backend) {
    use std::sync::Arc;
    let currencies = |deposit_fee: &str| {
        let text = kassa_testkit::TEST_CURRENCIES.replacen(
            "fees.withdrawal = { fixed = \"0.0001\", percent = \"0.5\" }",
            &format!("fees.withdrawal = {{ fixed = \"0.0001\", percent = \"0.5\" }}\nfees.deposit = {{ percent = \"{deposit_fee}\" }}"),
            1,
        );
        let raw: std::collections::BTreeMap<String, kassa_core::currency::CurrencyConfig> = toml::from_str(&text).unwrap();
        Arc::new(kassa_engine::currencies::Currencies::new(kassa_core::currency::validate_currencies(&raw).unwrap()))
    };
    // The fee rule is the chain's currency's; Litecoin's stands for every node kind.
    let mut w = ChainWorld::<kassa_testkit::litecoin::LitecoinNode>::start(backend, settings(10)).await;
    w.t.engine.currencies = currencies("1");
    let m = w.t.merchant("shop").await;
    let mut watcher = w.watcher();
    watcher.cycle().await.unwrap();
    let a = w.t.engine.create_deposit_address(m, "LTC", None, None).await.unwrap();
    w.node.pay(&a.address, "1").await;
    w.node.mine(3).await;
    assert_eq!(watcher.cycle().await.unwrap().credited, 1);
    assert_eq!(balance(&w, m).await, "0.99000000", "1 % deposit fee");
    let fees = w.t.system_account(kassa_core::ledger::SystemAccount::FeesEarned, "LTC").await;
    let suspense = w.t.system_account(kassa_core::ledger::SystemAccount::Suspense, "LTC").await;
    assert_eq!(w.t.balance(fees).await.0, 1_000_000);

    // The operator drops the deposit fee; then the block leaves the chain.
    w.t.engine.currencies = currencies("0");
    let mut watcher = w.watcher();
    w.node.reorg(3).await;
    assert_eq!(watcher.cycle().await.unwrap().reversed, 1);
    assert_eq!(balance(&w, m).await, "0.00000000");
    assert_eq!(w.t.balance(fees).await.0, 0, "the fee the credit booked is taken back");
    assert_eq!(w.t.balance(suspense).await.0, 0, "nothing was short");

    // Mined again: credited again with the fee of its first credit.
    w.node.mine(3).await;
    assert_eq!(watcher.cycle().await.unwrap().credited, 1);
    assert_eq!(balance(&w, m).await, "0.99000000");
    // History shows the fee it paid, not what the rule would charge today.
    let (list, _) = w.t.engine.transfers(m, kassa_store::TransferQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!((list.len(), list[0].fee.as_str()), (1, "0.01000000"));
    w.t.assert_books_balance().await;
}
both_backends!(fee_mirrored, reversal_mirrors_the_credited_fee);
