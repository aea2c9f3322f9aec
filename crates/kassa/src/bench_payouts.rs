//! `kassa bench payouts`: a burst of queued withdrawals paid by the broadcaster
//! against a real Litecoin regtest node of its own: withdrawals queued per second,
//! withdrawals paid (broadcast) per second, the transactions and outputs used, the
//! network fee, and any cycle the hot wallet could not fund.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use kassa_chain::{ChainAdapter, Priority};
use kassa_core::ledger::MerchantId;
use kassa_core::withdrawal::WithdrawalStatus;
use kassa_engine::broadcaster::Broadcaster;
use kassa_engine::chains::ChainSettings;
use kassa_engine::watcher::Watcher;
use kassa_engine::withdrawals::WithdrawalRequest;
use serde_json::json;

#[derive(Args)]
pub struct PayoutsBench {
    /// Withdrawals queued at once.
    #[arg(long, default_value_t = 1000)]
    withdrawals: usize,
    /// Destination addresses they pay.
    #[arg(long, default_value_t = 21)]
    destinations: usize,
    /// Share of the withdrawals (percent) that go to the first destination, the rest
    /// spread evenly over the others (a marketplace paying one exchange deposit
    /// address many times).
    #[arg(long, default_value_t = 50)]
    same_address_percent: usize,
    /// RPC port for the benchmark's own regtest node (default: a free one).
    #[arg(long)]
    rpc_port: Option<u16>,
}

/// Each withdrawal pays this much (0.001 LTC): 1,000 of them fit the funding.
const AMOUNT: &str = "0.001";

pub async fn run(args: PayoutsBench) -> anyhow::Result<ExitCode> {
    if args.withdrawals == 0 || args.destinations == 0 || args.same_address_percent > 100 {
        bail!("--withdrawals and --destinations must be positive and --same-address-percent at most 100");
    }
    println!(
        "kassa bench payouts: {} withdrawals to {} addresses ({} % to one of them)",
        args.withdrawals, args.destinations, args.same_address_percent
    );
    let crate::bench::RegtestBench { node, miner_address, store, engine, adapter, _dir } =
        crate::bench::RegtestBench::start(args.rpc_port, ChainSettings { poll_interval: Duration::from_secs(3600), ..Default::default() }).await?;
    let merchant = MerchantId(store.create_merchant("bench-payouts").await?.id);

    // Funds: one real deposit, credited by the watcher.
    // Whole LTC: 0.001 per withdrawal, and one more for fees.
    let funding = args.withdrawals.div_ceil(1000) + 1;
    let mut watcher = Watcher::new(engine.clone(), "litecoin")?;
    watcher.cycle().await?;
    let deposit = engine.create_deposit_address(merchant, "LTC", None, None).await?;
    node.miner.wallet_call("sendtoaddress", json!([deposit.address, funding])).await?;
    node.miner.call("generatetoaddress", json!([1, miner_address])).await?;
    if watcher.cycle().await?.credited != 1 {
        bail!("the funding deposit was not credited");
    }

    let mut destinations = Vec::with_capacity(args.destinations);
    for _ in 0..args.destinations {
        destinations.push(node.miner.wallet_call("getnewaddress", json!([])).await?.as_str().unwrap_or_default().to_string());
    }
    let to_first = args.withdrawals * args.same_address_percent / 100;
    let t = Instant::now();
    for i in 0..args.withdrawals {
        let to = if i < to_first || destinations.len() == 1 { &destinations[0] } else { &destinations[1 + (i - to_first) % (destinations.len() - 1)] };
        engine
            .request_withdrawal(WithdrawalRequest {
                merchant,
                currency: "LTC".into(),
                address: to.clone(),
                amount: AMOUNT.into(),
                priority: Priority::High,
                idempotency_key: format!("bench-{i}"),
                origin: kassa_engine::notifications::Origin::native(),
                description: None,
                pay_from: None,
            })
            .await?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("queued {} withdrawals in {secs:.2} s = {:.0}/s", args.withdrawals, args.withdrawals as f64 / secs);

    let broadcaster = Broadcaster::new(engine.clone(), "litecoin", Duration::ZERO)?;
    let t = Instant::now();
    let (mut payouts, mut paid, mut cycles, mut unfunded) = (0, 0, 0, 0);
    while paid < args.withdrawals as u64 {
        let r = broadcaster.cycle().await?;
        cycles += 1;
        payouts += r.payouts_sent;
        paid += r.withdrawals_sent;
        unfunded += r.unfunded.len();
        if cycles > 100 {
            bail!("only {paid} of {} withdrawals paid after {cycles} broadcaster cycles", args.withdrawals);
        }
        if r.withdrawals_sent == 0 {
            // Waiting on the node (unconfirmed change): a block lets it go on.
            node.miner.call("generatetoaddress", json!([1, miner_address])).await?;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let queued = store.withdrawals_in("litecoin", &[WithdrawalStatus::Queued], 10).await?.len();
    let txids: std::collections::BTreeSet<String> =
        store.withdrawals_in("litecoin", &[WithdrawalStatus::Broadcast], 100_000).await?.into_iter().filter_map(|w| w.txid).collect();
    let mut outputs = 0;
    for txid in &txids {
        outputs += adapter.transfers(txid).await?.len();
    }
    println!(
        "paid {paid} withdrawals in {secs:.2} s = {:.0} withdrawals/s: {payouts} transactions ({} on chain, {outputs} outputs incl. any change to Kassa), {cycles} broadcaster cycles, {queued} still queued, {unfunded} unfunded cycles",
        paid as f64 / secs,
        txids.len()
    );
    node.miner.call("generatetoaddress", json!([1, miner_address])).await?;
    broadcaster.cycle().await?;
    let mut fee = 0;
    for txid in &txids {
        fee += adapter.payment_status(txid).await?.fee.unwrap_or(0);
    }
    println!(
        "network fee: {} LTC in all, {} LTC per withdrawal",
        kassa_core::Amount::from_units(fee, 8).map(|a| a.to_string()).unwrap_or_default(),
        kassa_core::Amount::from_units(fee / paid.max(1) as i128, 8).map(|a| a.to_string()).unwrap_or_default()
    );
    let report = engine.check().await?;
    println!("check: {}", if report.ok() { "OK".to_string() } else { format!("{:?}", report.violations) });
    drop(node);
    Ok(if report.ok() && paid == args.withdrawals as u64 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
