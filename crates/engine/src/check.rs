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
    /// Comparison of each hot-wallet account with its node; empty until a chain is configured.
    pub hot_wallets: Vec<String>,
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
        Ok(CheckReport {
            transactions: data.transactions,
            entries: data.entries,
            accounts: data.accounts.len(),
            currencies,
            violations,
            hot_wallets: Vec::new(),
        })
    }
}
