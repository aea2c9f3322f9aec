//! The invariant checker behind `kassa check`: recomputes every balance from the
//! entries and verifies the books (ARCHITECTURE.md invariants 1 and 2).

use serde::Serialize;

use crate::{Engine, EngineError};

#[derive(Clone, Debug, Serialize)]
pub struct CurrencyTotal {
    pub currency: String,
    /// Sum of all posted entries in ledger units (must be 0).
    pub total_units: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub transactions: u64,
    pub entries: u64,
    pub accounts: usize,
    pub currencies: Vec<CurrencyTotal>,
    pub violations: Vec<String>,
    /// Each chain's hot-wallet account compared with its node's wallet.
    pub hot_wallets: Vec<HotWallet>,
}

/// The ledger's hot wallet next to what the node's wallet holds. A difference is
/// reported, not judged: deposits seen but not yet credited, or a node still
/// catching up, explain small ones; anything else needs an operator.
#[derive(Clone, Debug, Serialize)]
pub struct HotWallet {
    pub chain: String,
    pub currency: String,
    /// What the ledger says the wallet holds.
    pub ledger: String,
    /// What the node's wallet holds (confirmed + pending), or `None` if it did not answer.
    pub node: Option<String>,
    /// node − ledger.
    pub difference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Most violations listed one by one; past this they are counted.
const MAX_LISTED: usize = 200;

impl Engine {
    pub async fn check(&self) -> Result<CheckReport, EngineError> {
        let data = self.store.check_data().await?;
        let mut violations = Vec::new();
        let push = |v: String, violations: &mut Vec<String>| {
            if violations.len() < MAX_LISTED {
                violations.push(v);
            } else if violations.len() == MAX_LISTED {
                violations.push("… more violations not listed".to_string());
            }
        };
        let currencies = data
            .currency_totals
            .iter()
            .map(|(c, t)| CurrencyTotal { currency: c.clone(), total_units: t.to_string() })
            .collect();
        for (currency, total) in &data.currency_totals {
            if *total != 0 {
                push(format!("postings in {currency} sum to {total} units, not 0"), &mut violations);
            }
        }
        for (tx, currency, sum) in &data.unbalanced_transactions {
            push(format!("transaction {tx} is unbalanced in {currency} by {sum} units"), &mut violations);
        }
        for (entry, account) in &data.currency_mismatches {
            push(format!("entry {entry} has a currency other than its account {}", account.0), &mut violations);
        }
        for (entry, missing) in &data.dangling_entries {
            push(format!("entry {entry} refers to {missing} that does not exist"), &mut violations);
        }
        for a in &data.accounts {
            let sums = data.sums.get(&a.id).cloned().unwrap_or_default();
            if a.balance != sums.posted {
                push(format!("account {} ({}) balance is {} units but its postings sum to {}", a.id.0, a.code, a.balance, sums.posted), &mut violations);
            }
            if a.pending_debits != sums.pending_debits || a.pending_credits != sums.pending_credits {
                push(
                    format!(
                        "account {} ({}) pending {}/{} units but its pending holds sum to {}/{}",
                        a.id.0, a.code, a.pending_debits, a.pending_credits, sums.pending_debits, sums.pending_credits
                    ),
                    &mut violations,
                );
            }
            if !a.allow_negative && (a.balance < 0 || a.balance - a.pending_debits < 0) {
                push(
                    format!("account {} ({}) may not go negative but has balance {} and available {}", a.id.0, a.code, a.balance, a.balance - a.pending_debits),
                    &mut violations,
                );
            }
        }
        let mut hot_wallets = Vec::new();
        for name in self.chains.names() {
            let Ok(assets) = self.chain_assets(name) else {
                continue;
            };
            let mut assets: Vec<_> = assets.into_values().collect();
            assets.sort_by(|a, b| a.0.code.cmp(&b.0.code));
            for (asset, currency) in &assets {
                let code = currency.code.as_str();
                let ledger_units = data.accounts.iter().find(|a| a.code == format!("system:hot_wallet:{code}")).map(|a| -a.balance).unwrap_or(0);
                let adapter = &self.chains.get(name).expect("listed").adapter;
                let (node, error) = match adapter.hot_wallet_balance(&asset.code).await {
                    Ok(units) => match kassa_core::Amount::from_units(units, asset.decimals).and_then(|a| a.rescale_down(currency.precision)) {
                        Ok((a, _)) => (Some(a.units()), None),
                        Err(e) => (None, Some(e.to_string())),
                    },
                    Err(e) => (None, Some(e.to_string())),
                };
                let fmt = |u: i128| currency.amount(u).map(|a| a.to_string()).unwrap_or_else(|_| u.to_string());
                hot_wallets.push(HotWallet {
                    chain: name.clone(),
                    currency: code.to_string(),
                    ledger: fmt(ledger_units),
                    node: node.map(fmt),
                    difference: node.map(|n| fmt(n - ledger_units)),
                    error,
                });
            }
        }
        Ok(CheckReport {
            transactions: data.transactions,
            entries: data.entries,
            accounts: data.accounts.len(),
            currencies,
            violations,
            hot_wallets,
        })
    }
}
