//! The Bitcoin-family adapter against a real Litecoin Core node in regtest.

use kassa_chain::{ChainAdapter, Payment, Priority};
use kassa_testkit::litecoin::LitecoinNode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_receives_scans_signs_and_broadcasts() {
    let node = LitecoinNode::start().await;
    let kassa = node.adapter("kassa");
    kassa.ensure_wallet().await.unwrap();
    kassa.ensure_wallet().await.unwrap(); // idempotent

    // Every address type the node makes passes Kassa's own codec.
    for kind in ["legacy", "p2sh-segwit", "bech32"] {
        let a = node.miner_rpc("getnewaddress", json!(["", kind])).await;
        let a = a.as_str().unwrap();
        assert_eq!(kassa.validate_address(a).as_deref(), Ok(a), "{kind} {a}");
    }
    let deposit = kassa.new_deposit_address("customer-1").await.unwrap();
    assert!(deposit.starts_with("rltc1"), "{deposit}");
    assert!(kassa.validate_address("ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9").is_err(), "mainnet is refused on regtest");

    // A payment is visible in the mempool, then in a block.
    let txid = node.pay(&deposit, "1.5").await;
    assert!(kassa.mempool_txids().await.unwrap().contains(&txid));
    let tx = kassa.transaction(&txid).await.unwrap();
    let out = tx.outputs.iter().find(|o| o.address.as_deref() == Some(deposit.as_str())).expect("pays the deposit address");
    assert_eq!(out.amount, 150_000_000);
    let before = kassa.tip().await.unwrap();
    let hash = node.mine(1).await.remove(0);
    let tip = kassa.tip().await.unwrap();
    assert_eq!((tip.height, tip.hash.as_str()), (before.height + 1, hash.as_str()));
    let block = kassa.block(&hash).await.unwrap();
    assert_eq!(block.prev_hash.as_deref(), Some(before.hash.as_str()));
    assert!(block.txs.iter().any(|t| t.txid == txid));
    assert_eq!(kassa.block_hash(tip.height).await.unwrap(), hash);
    assert_eq!(kassa.hot_wallet_balance().await.unwrap(), 150_000_000);

    // Sign without broadcasting: the node does not know the transaction yet.
    let to1 = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let to2 = node.miner_rpc("getnewaddress", json!(["", "legacy"])).await.as_str().unwrap().to_string();
    let payments = [Payment { address: to1.clone(), amount: 10_000_000 }, Payment { address: to2.clone(), amount: 25_000_000 }];
    let signed = kassa.sign_payments(&payments, Priority::Medium).await.unwrap();
    assert!(signed.fee > 0);
    assert!(kassa.wallet_tx_status(&signed.txid).await.unwrap_err().is_not_found());
    assert_eq!(kassa.broadcast(&signed.raw_hex).await.unwrap(), signed.txid);
    assert_eq!(kassa.broadcast(&signed.raw_hex).await.unwrap(), signed.txid, "broadcasting twice is harmless");
    let sent = kassa.transaction(&signed.txid).await.unwrap();
    for (p, vout) in payments.iter().zip(&signed.vouts) {
        let o = &sent.outputs[*vout as usize];
        assert_eq!((o.address.as_deref(), o.amount), (Some(p.address.as_str()), p.amount));
    }
    node.mine(1).await;
    assert_eq!(kassa.broadcast(&signed.raw_hex).await.unwrap(), signed.txid, "even once mined");
    let status = kassa.wallet_tx_status(&signed.txid).await.unwrap();
    assert_eq!(status.confirmations, 1);
    assert_eq!(kassa.hot_wallet_balance().await.unwrap(), 150_000_000 - 35_000_000 - signed.fee);

    // More than the wallet holds is a clear error; the same address twice is refused.
    let too_much = [Payment { address: to1.clone(), amount: 100_000_000_000 }];
    assert!(matches!(kassa.sign_payments(&too_much, Priority::High).await, Err(kassa_chain::ChainError::InsufficientFunds(_))));
    let twice = [Payment { address: to1.clone(), amount: 1_000 }, Payment { address: to1, amount: 2_000 }];
    assert!(kassa.sign_payments(&twice, Priority::Low).await.is_err());
}
