//! C1: the real server binary is killed (aborted, like `kill -9`) at each step of a
//! withdrawal — before it is stored (the retry is then processed as new), after the hold, after signing, after recording the signed transaction,
//! after broadcasting — and restarted: the destination is paid exactly once, and the
//! books balance. Runs on both backends against every kind of node the harness has.

use std::time::Duration;

use kassa_testkit::node::{chain_units, wait_for, TestNode};
use kassa_testkit::process::ServerSetup;
use kassa_testkit::{on_every_node, Backend, TestDb};
use serde_json::{json, Value};

async fn crash_at_each_withdrawal_step<N: TestNode>(backend: Backend) {
    let node = N::start().await;
    for point in ["before_store", "after_hold", "after_sign", "after_record_signed", "after_broadcast"] {
        let db = TestDb::new(backend).await;
        let setup = ServerSetup::new(
            env!("CARGO_BIN_EXE_kassa"),
            &db,
            &node,
            "[withdrawals]\npoll_interval_ms = 200\nbatch_window_secs = 0",
            "confirmations = 1\nfees.withdrawal = { fixed = \"0.001\" }",
        );
        setup.json(&["merchant", "create", "--name", "shop", "--json"]);
        let token = setup.json(&["key", "create", "--merchant", "shop", "--dialect", "native", "--scopes", "all", "--json"])["token"]
            .as_str()
            .unwrap()
            .to_string();
        let client = reqwest::Client::new();
        let mut server = setup.serve(Some(point));
        let base = server.base_url.clone();
        let get = |path: String| {
            let (client, token) = (client.clone(), token.clone());
            async move { client.get(path).bearer_auth(token).send().await.ok()?.json::<Value>().await.ok() }
        };

        // Fund the merchant with a real deposit.
        let addr: Value = client
            .post(format!("{base}/kassa/v1/addresses"))
            .bearer_auth(&token)
            .json(&json!({"currency": N::CURRENCY}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        node.pay(addr["address"].as_str().unwrap(), "2").await;
        node.mine(1).await;
        wait_for("the deposit credit", || async {
            get(format!("{base}/kassa/v1/balances")).await.is_some_and(|b| b["balances"][0]["balance"] == "2.00000000")
        })
        .await;

        // The withdrawal: the server dies at `point`.
        let dest = node.external_address().await;
        let body = json!({"currency": N::CURRENCY, "address": dest, "amount": "0.5", "priority": "high", "idempotency_key": "pay-1"});
        let first = client.post(format!("{base}/kassa/v1/withdrawals")).bearer_auth(&token).json(&body).send().await;
        if point == "before_store" || point == "after_hold" {
            assert!(first.is_err(), "the server died while answering");
        }
        let (code, stderr) = server.wait_exit(Duration::from_secs(20));
        assert_ne!(code, Some(0), "{point}: the server should have been killed");
        assert!(stderr.contains(&format!("KASSATEST_CRASH_AT={point}")), "{point}: {stderr}");

        // Restart: the client retries with the same key and gets the same withdrawal.
        let server = setup.serve(None);
        let base = server.base_url.clone();
        let retry: Value = client.post(format!("{base}/kassa/v1/withdrawals")).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(retry["idempotency_key"], "pay-1", "{point}: {retry}");
        let id = retry["id"].as_i64().unwrap();
        wait_for("the withdrawal to be broadcast", || async {
            get(format!("{base}/kassa/v1/withdrawals/{id}")).await.is_some_and(|w| w["status"] == "broadcast" || w["status"] == "confirmed")
        })
        .await;
        node.mine(1).await;
        wait_for("the withdrawal to confirm", || async {
            get(format!("{base}/kassa/v1/withdrawals/{id}")).await.is_some_and(|w| w["status"] == "confirmed")
        })
        .await;
        // Let the broadcaster run a few more cycles: it must not pay again.
        tokio::time::sleep(Duration::from_millis(800)).await;
        node.mine(1).await;
        assert_eq!(node.received(&dest).await, chain_units::<N>("0.5"), "{point}: paid exactly once");
        let list = get(format!("{base}/kassa/v1/withdrawals")).await.unwrap();
        assert_eq!(list["withdrawals"].as_array().unwrap().len(), 1, "{point}");
        let balances = get(format!("{base}/kassa/v1/balances")).await.unwrap();
        assert_eq!(balances["balances"][0]["balance"], "1.49900000", "{point}: 2 - 0.5 - 0.001 fee");
        let (code, _) = server.terminate();
        assert_eq!(code, Some(0));
        let check = setup.command(&["check"]).output().unwrap();
        assert!(check.status.success(), "{point}: {}", String::from_utf8_lossy(&check.stdout));
    }
}
on_every_node!(c1, crash_at_each_withdrawal_step);
