//! Operator commands: migrate, merchants, keys, adjustments, the invariant check.
//! Every command prints a human summary, or with `--json` one JSON document.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kassa_core::ledger::MerchantId;
use kassa_engine::adjustments::AdjustmentRequest;
use kassa_engine::timefmt::format_ms;
use kassa_engine::merchants::{parse_ip_allowlist, Scope};
use kassa_engine::{Store, StoreOptions};
use serde_json::json;

use crate::config::Settings;
use crate::serve::engine;

#[derive(Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List merchants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Block a merchant: every API call with its keys is refused until unblocked.
    Block {
        /// Merchant id or name.
        merchant: String,
        /// Why (kept with the merchant and logged).
        #[arg(long)]
        reason: String,
        /// Who blocks it, for the log.
        #[arg(long, default_value = "cli")]
        operator: String,
        #[arg(long)]
        json: bool,
    },
    /// Unblock a blocked merchant.
    Unblock {
        /// Merchant id or name.
        merchant: String,
        #[arg(long, default_value = "cli")]
        operator: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key; its secret or token is shown once.
    Create {
        /// Merchant id or name.
        #[arg(long)]
        merchant: String,
        /// westwallet or coinspaid (key + HMAC secret); wallets3, whir or native (bearer token).
        #[arg(long)]
        dialect: String,
        /// Comma-separated: read, receive, withdraw, exchange, manage, or all.
        #[arg(long, default_value = "read,receive")]
        scopes: String,
        /// Comma-separated IP addresses or CIDR networks allowed to use the key (default: any).
        #[arg(long, default_value = "")]
        ip_allowlist: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        json: bool,
    },
    /// List a merchant's keys (never their secrets).
    List {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its public key; refused from the next request on.
    Revoke {
        public_key: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Resume a chain halted by a reorg deeper than max_reorg_depth, after checking it
    /// (raise chains.NAME.max_reorg_depth first, or the same reorg halts it again).
    Resume {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PlansCommand {
    /// Register a referral code for a merchant: plans created with it as `refCode`
    /// credit that merchant with `[payout_plans] referral_share_percent` of their fee.
    ReferralCode {
        code: String,
        /// Merchant id or name (the referrer).
        #[arg(long)]
        merchant: String,
    },
    /// Every referral code and its merchant.
    ReferralCodes {
        #[arg(long)]
        json: bool,
    },
}

pub async fn plans(settings: &Settings, cmd: PlansCommand) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    match cmd {
        PlansCommand::ReferralCode { code, merchant } => {
            let m = engine.find_merchant(&merchant).await?;
            engine.add_referral_code(&code, MerchantId(m.id)).await?;
            println!("referral code {} credits merchant {} ({})", code.trim(), m.id, m.name);
        }
        PlansCommand::ReferralCodes { json } => {
            let codes = engine.referral_codes().await?;
            if json {
                print_json(&serde_json::json!(codes.iter().map(|(c, m)| serde_json::json!({"code": c, "merchant_id": m})).collect::<Vec<_>>()));
            } else if codes.is_empty() {
                println!("no referral codes");
            } else {
                for (c, m) in &codes {
                    println!("{c}  merchant {m}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum WithdrawalsCommand {
    /// Withdrawals waiting for approval (over a merchant's limits), oldest first.
    Pending {
        /// Only this merchant's (id or name).
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending withdrawal: it joins the queue and is sent once.
    Approve {
        id: i64,
        /// Who approves it (default: $USER), recorded with the decision.
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Decline a pending withdrawal: it is cancelled and its funds return.
    Decline {
        id: i64,
        /// Why (recorded, and reported to the merchant).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set a merchant's withdrawal limits for a currency (neither limit: remove them).
    /// A withdrawal over one waits for approval.
    Limit {
        /// Merchant id or name.
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        currency: String,
        /// Most one withdrawal may send without approval.
        #[arg(long)]
        per_transaction: Option<String>,
        /// Most a UTC day's withdrawals may send together without approval.
        #[arg(long)]
        per_day: Option<String>,
        /// Give the limits in this currency (e.g. EUR), converted at the current rate.
        #[arg(long = "in")]
        in_currency: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Configured withdrawal limits.
    Limits {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct AdjustArgs {
    /// Merchant id or name.
    #[arg(long)]
    merchant: String,
    #[arg(long)]
    currency: String,
    /// Positive credits the merchant, negative (e.g. --amount=-5) debits it.
    #[arg(long, allow_hyphen_values = true)]
    amount: String,
    #[arg(long)]
    reason: String,
    /// Who makes the adjustment (default: $USER).
    #[arg(long)]
    operator: Option<String>,
    /// Makes a retried command safe: the same key books once.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[arg(long)]
    json: bool,
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON values serialize"));
}

pub async fn migrate(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let url = settings.database_url();
    let store = Store::connect(&StoreOptions { url: url.clone(), max_connections: 2 }).await?;
    let applied = store.migrate().await?;
    if json {
        print_json(&json!({"applied": applied, "database": kassa_store::redact(&url), "backend": store.backend().as_str()}));
    } else {
        println!("{applied} migration(s) applied to {} ({})", kassa_store::redact(&url), store.backend().as_str());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn merchant(settings: &Settings, cmd: MerchantCommand) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    match cmd {
        MerchantCommand::Create { name, json } => {
            let m = engine.create_merchant(&name).await?;
            if json {
                print_json(&json!({"id": m.id, "name": m.name, "status": m.status, "created_at": format_ms(m.created_at_ms)}));
            } else {
                println!("merchant {} created with id {}", m.name, m.id);
                println!("next: kassa key create --merchant {} --dialect native --scopes read", m.name);
            }
        }
        MerchantCommand::List { json } => {
            let list = engine.list_merchants().await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|m| json!({"id": m.id, "name": m.name, "status": m.status, "active_keys": m.active_keys, "created_at": format_ms(m.created_at_ms)}))
                    .collect();
                print_json(&json!({ "merchants": rows }));
            } else {
                println!("{:>6}  {:<32} {:<8} {:>5}  created", "id", "name", "status", "keys");
                for m in list {
                    println!("{:>6}  {:<32} {:<8} {:>5}  {}", m.id, m.name, m.status, m.active_keys, format_ms(m.created_at_ms));
                }
            }
        }
        MerchantCommand::Block { merchant, reason, operator, json } => {
            let m = engine.block_merchant(&merchant, &reason, &operator).await?;
            print_merchant_status(&m, json);
        }
        MerchantCommand::Unblock { merchant, operator, json } => {
            let m = engine.unblock_merchant(&merchant, &operator).await?;
            print_merchant_status(&m, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_merchant_status(m: &kassa_store::MerchantRow, json: bool) {
    if json {
        print_json(&json!({"id": m.id, "name": m.name, "status": m.status, "blocked_reason": m.blocked_reason,
            "status_changed_at": m.status_changed_at_ms.map(format_ms)}));
    } else {
        match &m.blocked_reason {
            Some(reason) => println!("merchant {} ({}) is now {}: {reason}", m.name, m.id, m.status),
            None => println!("merchant {} ({}) is now {}", m.name, m.id, m.status),
        }
    }
}

pub async fn key(settings: &Settings, cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    match cmd {
        KeyCommand::Create { merchant, dialect, scopes, ip_allowlist, label, json } => {
            let scopes = Scope::parse_list(&scopes)?;
            let nets = parse_ip_allowlist(&ip_allowlist)?;
            let m = engine.find_merchant(&merchant).await?;
            let key = engine.create_key(MerchantId(m.id), &dialect, scopes, nets, &label).await?;
            if json {
                print_json(&serde_json::to_value(&key)?);
            } else {
                println!("{} key created for merchant {} ({} style)", dialect.as_str(), m.name, key.style.as_str());
                println!("  public key: {}", key.public_key);
                if let Some(token) = &key.token {
                    println!("  token:      {token}");
                }
                if let Some(secret) = &key.secret {
                    println!("  secret:     {secret}");
                }
                println!("  scopes:     {}", key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
                if !key.ip_allowlist.is_empty() {
                    println!("  allowed IPs: {}", key.ip_allowlist.join(","));
                }
                println!("The secret/token is shown only now; store it safely.");
            }
        }
        KeyCommand::List { merchant, json } => {
            let m = engine.find_merchant(&merchant).await?;
            let keys = engine.list_keys(MerchantId(m.id)).await?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "public_key": k.public_key, "dialect": k.dialect, "style": k.style, "scopes": k.scopes,
                        "ip_allowlist": k.ip_allowlist, "label": k.label, "created_at": format_ms(k.created_at_ms),
                        "revoked_at": k.revoked_at_ms.map(format_ms),
                    })
                })
                .collect();
            if json {
                print_json(&json!({ "merchant_id": m.id, "keys": rows }));
            } else {
                for k in keys {
                    let state = k.revoked_at_ms.map(|t| format!("revoked {}", format_ms(t))).unwrap_or_else(|| "active".into());
                    println!("{:<24} {:<10} {:<6} {:<40} {state}", k.public_key, k.dialect, k.style, k.scopes);
                }
            }
        }
        KeyCommand::Revoke { public_key, json } => {
            engine.revoke_key(&public_key).await?;
            if json {
                print_json(&json!({"public_key": public_key, "revoked": true}));
            } else {
                println!("key {public_key} revoked");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn adjust(settings: &Settings, args: AdjustArgs) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    let m = engine.find_merchant(&args.merchant).await?;
    let operator = args.operator.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "operator".into());
    let result = engine
        .adjust(AdjustmentRequest {
            merchant: MerchantId(m.id),
            currency: args.currency,
            amount: args.amount,
            reason: args.reason,
            operator,
            idempotency_key: args.idempotency_key,
        })
        .await?;
    if args.json {
        print_json(&serde_json::to_value(&result)?);
    } else {
        println!(
            "{} {} {} for merchant {} (transaction {}{}); balance now {} {}",
            if result.amount.starts_with('-') { "debited" } else { "credited" },
            result.amount.trim_start_matches('-'),
            result.currency,
            m.name,
            result.transaction_id,
            if result.replayed { ", already booked earlier" } else { "" },
            result.balance,
            result.currency
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn chain(settings: &Settings, cmd: ChainCommand) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    match cmd {
        ChainCommand::Resume { name, json } => {
            let resumed = engine.resume_chain(&name).await?;
            if json {
                print_json(&json!({"chain": name, "resumed": resumed}));
            } else if resumed {
                println!("chain {name} resumed: crediting and sending continue");
            } else {
                println!("chain {name} was not halted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn operator_name(given: Option<String>) -> String {
    given.or_else(|| std::env::var("USER").ok()).filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "cli".into())
}

pub async fn withdrawals(settings: &Settings, cmd: WithdrawalsCommand) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    let merchant_id = |name: Option<String>| {
        let engine = &engine;
        async move {
            match name {
                Some(n) => Ok::<_, anyhow::Error>(Some(MerchantId(engine.find_merchant(&n).await?.id))),
                None => Ok(None),
            }
        }
    };
    match cmd {
        WithdrawalsCommand::Pending { merchant, json } => {
            let list = engine.pending_withdrawals(merchant_id(merchant).await?).await?;
            if json {
                print_json(&serde_json::to_value(&list)?);
            } else if list.is_empty() {
                println!("no withdrawal waits for approval");
            } else {
                for w in &list {
                    let paid_from = w.source_amount.as_ref().map(|a| format!(" (paid with {a} {})", w.source_currency.as_deref().unwrap_or(""))).unwrap_or_default();
                    println!("{:>8}  {} {}{paid_from} to {}  requested {}  {}", w.id, w.amount, w.currency, w.address, w.created_at,
                        w.approval_reason.as_deref().unwrap_or(""));
                }
            }
        }
        WithdrawalsCommand::Approve { id, operator, reason, json } => {
            let (w, d) = engine.decide_withdrawal(None, id, true, &operator_name(operator), reason.as_deref()).await?;
            if json {
                print_json(&json!({"withdrawal": w, "decision": d}));
            } else {
                println!("withdrawal {id} approved by {} at {}: {} {} to {} is queued", d.decided_by, d.decided_at, w.amount, w.currency, w.address);
            }
        }
        WithdrawalsCommand::Decline { id, reason, operator, json } => {
            let (w, d) = engine.decide_withdrawal(None, id, false, &operator_name(operator), Some(&reason)).await?;
            if json {
                print_json(&json!({"withdrawal": w, "decision": d}));
            } else {
                println!("withdrawal {id} declined by {} at {} ({reason}): cancelled, its funds are available again", d.decided_by, d.decided_at);
            }
        }
        WithdrawalsCommand::Limit { merchant, currency, per_transaction, per_day, in_currency, json } => {
            let m = engine.find_merchant(&merchant).await?;
            let l = engine
                .set_withdrawal_limits(MerchantId(m.id), &currency, in_currency.as_deref(), per_transaction.as_deref(), per_day.as_deref())
                .await?;
            if json {
                print_json(&serde_json::to_value(&l)?);
            } else if l.per_transaction.is_none() && l.per_day.is_none() {
                println!("merchant {}: no withdrawal limits for {} (none waits for approval)", m.name, l.currency);
            } else {
                let show = |v: &Option<String>| v.as_ref().map_or("none".to_string(), |a| format!("{a} {}", l.limit_currency));
                println!("merchant {}: {} withdrawals over {} each or {} a day wait for approval", m.name, l.currency, show(&l.per_transaction), show(&l.per_day));
            }
        }
        WithdrawalsCommand::Limits { merchant, json } => {
            let list = engine.withdrawal_limits(merchant_id(merchant).await?).await?;
            if json {
                print_json(&serde_json::to_value(&list)?);
            } else if list.is_empty() {
                println!("no withdrawal limits are set");
            } else {
                for l in &list {
                    let show = |v: &Option<String>| v.as_ref().map_or("-".to_string(), |a| format!("{a} {}", l.limit_currency));
                    println!("merchant {:>6}  {:<6} per transaction {:<20} per day {}", l.merchant_id, l.currency, show(&l.per_transaction), show(&l.per_day));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    let report = engine.check().await?;
    if json {
        print_json(&json!({"ok": report.ok(), "report": report}));
    } else {
        println!("ledger check: {} transactions, {} entries, {} accounts", report.transactions, report.entries, report.accounts);
        for c in &report.currencies {
            println!("  {:<10} postings sum to {} units", c.currency, c.total_units);
        }
        for h in &report.hot_wallets {
            match (&h.node, &h.difference) {
                (Some(node), Some(diff)) => println!(
                    "  hot wallet {} ({}): ledger {} {c}, node {} {c}, difference {} {c}",
                    h.chain, h.currency, h.ledger, node, diff, c = h.currency
                ),
                _ => println!(
                    "  hot wallet {} ({}): ledger {} {}, node unreachable: {}",
                    h.chain, h.currency, h.ledger, h.currency, h.error.as_deref().unwrap_or("unknown error")
                ),
            }
        }
        if report.ok() {
            println!("OK: the books balance; every balance equals the sum of its postings");
        } else {
            println!("{} VIOLATION(S):", report.violations.len());
            for v in &report.violations {
                println!("  - {v}");
            }
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[derive(Subcommand)]
pub enum NotificationsCommand {
    /// List a merchant's webhook endpoints.
    Endpoints {
        /// Merchant id or name.
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        json: bool,
    },
    /// List deliveries, newest first.
    Deliveries {
        /// Merchant id or name (default: every merchant).
        #[arg(long)]
        merchant: Option<String>,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        /// Only the deliveries of this event (evt_…).
        #[arg(long)]
        event: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one delivery: the exact body sent and every attempt.
    Delivery {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send deliveries again: every delivery of one event, or every failed delivery
    /// created in a time range.
    Redeliver {
        /// The event (evt_…) whose deliveries to send again.
        #[arg(long, conflicts_with_all = ["failed", "since", "until"])]
        event: Option<String>,
        /// Failed deliveries created from --since (RFC 3339) until --until (default: now).
        #[arg(long, requires = "since")]
        failed: bool,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Merchant id or name (default: every merchant).
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_rfc3339(key: &str, text: &str) -> anyhow::Result<i64> {
    kassa_engine::timefmt::parse_rfc3339_ms(text).ok_or_else(|| anyhow::anyhow!("--{key}: {text:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z"))
}

pub async fn notifications(settings: &Settings, cmd: NotificationsCommand) -> anyhow::Result<ExitCode> {
    let engine = engine(settings).await?;
    let merchant_id = |m: Option<String>| {
        let engine = engine.clone();
        async move {
            match m {
                Some(m) => Ok::<_, anyhow::Error>(Some(MerchantId(engine.find_merchant(&m).await?.id))),
                None => Ok(None),
            }
        }
    };
    match cmd {
        NotificationsCommand::Endpoints { merchant, json } => {
            let m = MerchantId(engine.find_merchant(&merchant).await?.id);
            let list = engine.endpoints(m).await?;
            if json {
                print_json(&json!({"webhook_endpoints": list}));
            } else {
                for e in &list {
                    println!("{:>5}  {:<8}  {:<13} {}  events {}{}", e.id, e.status, e.format, e.url, e.events.join(","),
                        e.disabled_reason.as_ref().map(|r| format!("  ({r})")).unwrap_or_default());
                }
                println!("{} endpoint(s)", list.len());
            }
        }
        NotificationsCommand::Deliveries { merchant, status, event, limit, json } => {
            let list = engine
                .deliveries(kassa_store::DeliveryQuery {
                    merchant: merchant_id(merchant).await?,
                    status,
                    event_public_id: event,
                    before_id: None,
                    limit: limit.clamp(1, 1000),
                })
                .await?;
            if json {
                print_json(&json!({"deliveries": list}));
            } else {
                for d in &list {
                    println!("{:>7}  {:<9} {:>2} attempt(s)  {:<20} {:<12} {}  {}{}", d.id, d.status, d.attempts, d.event_type, d.format, d.event_id, d.url,
                        d.last_error.as_ref().map(|e| format!("  last error: {e}")).unwrap_or_default());
                }
                println!("{} deliver(ies)", list.len());
            }
        }
        NotificationsCommand::Delivery { id, json } => {
            let d = engine.delivery(None, id).await?;
            if json {
                print_json(&json!(d));
            } else {
                let x = &d.delivery;
                println!("delivery {} of {} ({}) to {} [{}]: {}, {} attempt(s)", x.id, x.event_id, x.event_type, x.url, x.format, x.status, x.attempts);
                if let Some(next) = &x.next_attempt_at {
                    println!("next attempt at {next}");
                }
                for a in &d.attempt_log {
                    println!("  {}  {:>4}  {:>6} ms  {}  {}", a.at, a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()), a.latency_ms,
                        a.instance, a.error.as_deref().unwrap_or(""));
                }
                if let Some(body) = &d.body {
                    println!("body: {body}");
                }
            }
        }
        NotificationsCommand::Redeliver { event, failed, since, until, merchant, json } => {
            let n = match (event, failed) {
                (Some(e), _) => engine.redeliver_event(merchant_id(merchant).await?, &e).await?,
                (None, true) => {
                    let from = parse_rfc3339("since", since.as_deref().unwrap_or_default())?;
                    let to = match until {
                        Some(u) => parse_rfc3339("until", &u)?,
                        None => engine.now_ms() + 1,
                    };
                    engine.redeliver_failed(merchant_id(merchant).await?, from, to).await?
                }
                (None, false) => anyhow::bail!("give --event EVT, or --failed --since TIME [--until TIME]"),
            };
            if json {
                print_json(&json!({"redelivering": n}));
            } else {
                println!("{n} deliver(ies) queued to be sent again now (by the running server)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
