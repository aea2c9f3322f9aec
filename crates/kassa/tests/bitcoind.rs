//! The Bitcoin-family adapter against a real Litecoin Core node in regtest.

use kassa_chain::{BlockRef, ChainAdapter, ChainError, Payment, Priority};
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
    assert_eq!(kassa.assets().len(), 1, "one asset, the coin");
    assert_eq!((kassa.fee_asset().code.as_str(), kassa.fee_asset().decimals, kassa.fee_asset().contract.as_deref()), ("LTC", 8, None));
    let target = kassa.new_deposit_address("LTC", "customer-1").await.unwrap();
    assert_eq!(target.tag, None);
    let deposit = target.address;
    assert!(deposit.starts_with("rltc1"), "{deposit}");
    assert!(kassa.validate_address("ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9").is_err(), "mainnet is refused on regtest");

    // A payment is visible in the mempool, then in a block.
    let before = kassa.tip().await.unwrap();
    let txid = node.pay(&deposit, "1.5").await;
    let update = kassa.scan(&before, 10).await.unwrap();
    assert!(!update.reorged && update.blocks.is_empty(), "{update:?}");
    let seen = update.mempool.iter().find(|t| t.txid == txid && t.address == deposit).expect("pays the deposit address");
    assert_eq!((seen.asset.as_str(), seen.amount, seen.tag.as_deref()), ("LTC", 150_000_000, None));
    let transfers = kassa.transfers(&txid).await.unwrap();
    assert!(transfers.iter().any(|t| t.address == deposit && t.amount == 150_000_000 && t.index == seen.index));
    let hash = node.mine(1).await.remove(0);
    let tip = kassa.tip().await.unwrap();
    assert_eq!((tip.height, tip.hash.as_str()), (before.height + 1, hash.as_str()));
    let update = kassa.scan(&before, 10).await.unwrap();
    assert_eq!(update.tip, tip);
    assert_eq!(update.blocks.len(), 1);
    let block = &update.blocks[0];
    assert_eq!((&block.block, block.parent_hash.as_deref()), (&tip, Some(before.hash.as_str())));
    assert!(block.transfers.iter().any(|t| t.txid == txid && t.address == deposit));
    assert!(!update.mempool.iter().any(|t| t.txid == txid), "mined, no longer pending");
    assert_eq!(kassa.block_hash(tip.height).await.unwrap(), hash);
    assert_eq!(kassa.hot_wallet_balance("LTC").await.unwrap(), 150_000_000);
    // A checkpoint that left the best chain is reported as a reorg, with nothing scanned.
    let gone = BlockRef { height: tip.height, hash: "00".repeat(32) };
    let update = kassa.scan(&gone, 10).await.unwrap();
    assert!(update.reorged && update.blocks.is_empty());
    assert!(matches!(kassa.transfers(&"ab".repeat(32)).await, Err(ChainError::NotFound)));

    // Sign without broadcasting: the node does not know the transaction yet.
    let to1 = node.miner_rpc("getnewaddress", json!([])).await.as_str().unwrap().to_string();
    let to2 = node.miner_rpc("getnewaddress", json!(["", "legacy"])).await.as_str().unwrap().to_string();
    let pay = |address: &str, amount: i128| Payment { address: address.to_string(), tag: None, asset: "LTC".into(), amount };
    let payments = [pay(&to1, 10_000_000), pay(&to2, 25_000_000)];
    let signed = kassa.sign_payments(&payments, Priority::Medium).await.unwrap();
    assert!(signed.fee > 0);
    assert!(kassa.payment_status(&signed.txid).await.unwrap_err().is_not_found());
    assert_eq!(kassa.broadcast(&signed.raw_hex).await.unwrap(), signed.txid);
    assert_eq!(kassa.broadcast(&signed.raw_hex).await.unwrap(), signed.txid, "broadcasting twice is harmless");
    let sent = kassa.transfers(&signed.txid).await.unwrap();
    for (p, index) in payments.iter().zip(&signed.indexes) {
        let t = sent.iter().find(|t| t.index == *index).expect("the payment's output");
        assert_eq!((t.address.as_str(), t.amount), (p.address.as_str(), p.amount));
    }
    node.mine(1).await;
    assert_eq!(kassa.broadcast(&signed.raw_hex).await.unwrap(), signed.txid, "even once mined");
    let status = kassa.payment_status(&signed.txid).await.unwrap();
    assert_eq!((status.confirmations, status.fee), (1, Some(signed.fee)));
    assert_eq!(kassa.hot_wallet_balance("LTC").await.unwrap(), 150_000_000 - 35_000_000 - signed.fee);

    // More than the wallet holds is a clear error; the same address twice is refused.
    let too_much = [pay(&to1, 100_000_000_000)];
    assert!(matches!(kassa.sign_payments(&too_much, Priority::High).await, Err(ChainError::InsufficientFunds(_))));
    let twice = [pay(&to1, 1_000), pay(&to1, 2_000)];
    assert!(kassa.sign_payments(&twice, Priority::Low).await.unwrap_err().is_permanent_refusal());
    // Dust is refused for good (not retried), as semantic errors say.
    assert!(kassa.sign_payments(&[pay(&to1, 1)], Priority::Low).await.unwrap_err().is_permanent_refusal());
}
