//! The double-entry ledger's rules, free of storage: accounts and who may go
//! negative, balanced transactions made of legs, two-phase holds, and the pure
//! function that applies one transaction to a set of account states (or refuses it).
//!
//! Sign convention: every leg moves `units` from one account to another of the same
//! currency, writing two postings (-units, +units), so postings sum to zero per
//! transaction and per currency. Accounts owned by merchants and users, and the fee
//! and dust accounts, carry positive balances and may never go negative; the system
//! counter-accounts (hot wallets, owner equity, exchange house, network fees,
//! suspense) mirror them and are negative by design: a hot wallet's balance is minus
//! what the ledger says the chain holds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::currency::CurrencyCode;

/// Most legs one transaction may have (bounds work per transaction).
pub const MAX_LEGS: usize = 64;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MerchantId(pub i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(pub i64);

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The system accounts, one of each per currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemAccount {
    /// What the ledger holds on chain for this currency (negative by design).
    HotWallet,
    /// Fees charged to merchants.
    FeesEarned,
    /// Network fees paid to miners (an expense: negative by design).
    NetworkFees,
    /// Counterparty of every exchange in this currency.
    ExchangeHouse,
    /// Remainders of chain amounts below the ledger precision.
    Dust,
    /// Owner equity: the source of operator adjustments (funds fiat balances).
    OwnerEquity,
    /// Value whose owner is not yet known (e.g. a deposit to an unknown tag).
    Suspense,
}

impl SystemAccount {
    pub const ALL: [SystemAccount; 7] = [
        SystemAccount::HotWallet,
        SystemAccount::FeesEarned,
        SystemAccount::NetworkFees,
        SystemAccount::ExchangeHouse,
        SystemAccount::Dust,
        SystemAccount::OwnerEquity,
        SystemAccount::Suspense,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SystemAccount::HotWallet => "hot_wallet",
            SystemAccount::FeesEarned => "fees_earned",
            SystemAccount::NetworkFees => "network_fees",
            SystemAccount::ExchangeHouse => "exchange_house",
            SystemAccount::Dust => "dust",
            SystemAccount::OwnerEquity => "owner_equity",
            SystemAccount::Suspense => "suspense",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether this account may carry a negative balance.
    pub fn allows_negative(self) -> bool {
        !matches!(self, SystemAccount::FeesEarned | SystemAccount::Dust)
    }
}

/// What identifies an account: its owner and currency. Accounts are created on first use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKey {
    Merchant { merchant: MerchantId, currency: CurrencyCode },
    User { merchant: MerchantId, user: UserId, currency: CurrencyCode },
    System { account: SystemAccount, currency: CurrencyCode },
}

impl AccountKey {
    pub fn currency(&self) -> &CurrencyCode {
        match self {
            AccountKey::Merchant { currency, .. }
            | AccountKey::User { currency, .. }
            | AccountKey::System { currency, .. } => currency,
        }
    }

    pub fn merchant(&self) -> Option<MerchantId> {
        match self {
            AccountKey::Merchant { merchant, .. } | AccountKey::User { merchant, .. } => Some(*merchant),
            AccountKey::System { .. } => None,
        }
    }

    pub fn user(&self) -> Option<UserId> {
        match self {
            AccountKey::User { user, .. } => Some(*user),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            AccountKey::Merchant { .. } => "merchant",
            AccountKey::User { .. } => "user",
            AccountKey::System { account, .. } => account.as_str(),
        }
    }

    pub fn allows_negative(&self) -> bool {
        match self {
            AccountKey::System { account, .. } => account.allows_negative(),
            _ => false,
        }
    }

    /// The unique text form stored with the account.
    pub fn code(&self) -> String {
        match self {
            AccountKey::Merchant { merchant, currency } => format!("merchant:{}:{currency}", merchant.0),
            AccountKey::User { merchant, user, currency } => {
                format!("user:{}:{}:{currency}", merchant.0, user.0)
            }
            AccountKey::System { account, currency } => format!("system:{}:{currency}", account.as_str()),
        }
    }
}

/// One movement of `units` (> 0) from one account to another of the same currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub from: AccountId,
    pub to: AccountId,
    pub currency: CurrencyCode,
    pub units: i128,
}

/// What a ledger transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move value now.
    Transfer(Vec<Leg>),
    /// Reserve value (two-phase, first phase): available balance drops, total does not.
    Hold(Vec<Leg>),
    /// Second phase: move the held value.
    Post { hold: TxId },
    /// Second phase: release the held value.
    Void { hold: TxId },
}

impl Action {
    pub fn kind(&self) -> TxKind {
        match self {
            Action::Transfer(_) => TxKind::Transfer,
            Action::Hold(_) => TxKind::Hold,
            Action::Post { .. } => TxKind::Post,
            Action::Void { .. } => TxKind::Void,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    Transfer,
    Hold,
    Post,
    Void,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Transfer => "transfer",
            TxKind::Hold => "hold",
            TxKind::Post => "post",
            TxKind::Void => "void",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [TxKind::Transfer, TxKind::Hold, TxKind::Post, TxKind::Void]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// State of a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Pending,
    Posted,
    Voided,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Posted => "posted",
            HoldStatus::Voided => "voided",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [HoldStatus::Pending, HoldStatus::Posted, HoldStatus::Voided]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// A request to write one ledger transaction, idempotent on its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRequest {
    pub idempotency_key: String,
    pub action: Action,
    /// What the transaction is for and who asked (JSON object text): shown in history.
    pub memo: String,
}

impl TxRequest {
    /// SHA-256 over a canonical encoding of everything but the key: the same key with
    /// a different hash is a conflicting reuse.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.action.kind().as_str());
        h.update([0]);
        match &self.action {
            Action::Transfer(legs) | Action::Hold(legs) => {
                for leg in legs {
                    h.update(format!("{}>{}:{}:{};", leg.from.0, leg.to.0, leg.currency, leg.units));
                }
            }
            Action::Post { hold } | Action::Void { hold } => h.update(hold.0.to_string()),
        }
        h.update([0]);
        h.update(&self.memo);
        h.finalize().into()
    }

    /// Checks what can be checked without any account state.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(LedgerError::BadIdempotencyKey);
        }
        if let Action::Transfer(legs) | Action::Hold(legs) = &self.action {
            if legs.is_empty() {
                return Err(LedgerError::NoLegs);
            }
            if legs.len() > MAX_LEGS {
                return Err(LedgerError::TooManyLegs { count: legs.len() });
            }
            for leg in legs {
                if leg.units <= 0 {
                    return Err(LedgerError::NonPositiveLeg { units: leg.units });
                }
                if leg.from == leg.to {
                    return Err(LedgerError::SameAccount { account: leg.from });
                }
            }
        }
        Ok(())
    }
}

/// Serialisable so that a refusal can be recorded and answered again as itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LedgerError {
    #[error("idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters")]
    BadIdempotencyKey,
    #[error("a transaction needs at least one leg")]
    NoLegs,
    #[error("a transaction has at most {MAX_LEGS} legs, got {count}")]
    TooManyLegs { count: usize },
    #[error("leg amount must be positive, got {units} units")]
    NonPositiveLeg { units: i128 },
    #[error("a leg cannot move value from account {} to itself", account.0)]
    SameAccount { account: AccountId },
    #[error("account {} does not exist", account.0)]
    UnknownAccount { account: AccountId },
    #[error("account {} holds {account_currency}, but the leg moves {leg_currency}", account.0)]
    CurrencyMismatch { account: AccountId, account_currency: CurrencyCode, leg_currency: CurrencyCode },
    #[error("insufficient funds in account {}: available {available} units, needs {required}", account.0)]
    InsufficientFunds { account: AccountId, available: i128, required: i128 },
    #[error("balance of account {} would overflow", account.0)]
    Overflow { account: AccountId },
    #[error("idempotency key {key:?} was already used for a different transaction")]
    IdempotencyConflict { key: String },
    #[error("hold {} not found", hold.0)]
    HoldNotFound { hold: TxId },
    #[error("hold {} is already {}", hold.0, status.as_str())]
    HoldNotPending { hold: TxId, status: HoldStatus },
}

/// An account as the ledger rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    pub id: AccountId,
    pub currency: CurrencyCode,
    pub allow_negative: bool,
    /// Sum of posted postings.
    pub balance: i128,
    /// Sum of pending holds debiting this account.
    pub pending_debits: i128,
    /// Sum of pending holds crediting this account.
    pub pending_credits: i128,
}

impl AccountState {
    /// What can still be spent: the balance less what pending holds reserve.
    pub fn available(&self) -> i128 {
        self.balance - self.pending_debits
    }
}

/// The resolved form of an action, with a hold's legs loaded for post/void.
#[derive(Clone, Copy, Debug)]
pub enum Resolved<'a> {
    Transfer(&'a [Leg]),
    Hold(&'a [Leg]),
    Post(&'a [Leg]),
    Void(&'a [Leg]),
}

/// What a transaction writes: entries (account, signed units) and whether they are
/// posted (change balances) or pending (a hold's reservation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub entries: Vec<(AccountId, i128)>,
    pub pending: bool,
}

fn entries_of(legs: &[Leg]) -> Vec<(AccountId, i128)> {
    legs.iter().flat_map(|l| [(l.from, -l.units), (l.to, l.units)]).collect()
}

/// Applies one transaction to `accounts`, all or nothing. On error nothing changes.
pub fn apply(
    accounts: &mut BTreeMap<AccountId, AccountState>,
    action: Resolved<'_>,
) -> Result<Effect, LedgerError> {
    let (legs, balance_moves, pending_sign, check_available, pending) = match action {
        Resolved::Transfer(l) => (l, true, 0, true, false),
        Resolved::Hold(l) => (l, false, 1, true, true),
        Resolved::Post(l) => (l, true, -1, false, false),
        Resolved::Void(l) => (l, false, -1, false, false),
    };
    // Work on copies of the touched accounts; write back only if every check passes.
    let mut touched: BTreeMap<AccountId, AccountState> = BTreeMap::new();
    for leg in legs {
        for id in [leg.from, leg.to] {
            if !touched.contains_key(&id) {
                let state = accounts.get(&id).ok_or(LedgerError::UnknownAccount { account: id })?;
                if state.currency != leg.currency {
                    return Err(LedgerError::CurrencyMismatch {
                        account: id,
                        account_currency: state.currency.clone(),
                        leg_currency: leg.currency.clone(),
                    });
                }
                touched.insert(id, state.clone());
            } else if touched[&id].currency != leg.currency {
                return Err(LedgerError::CurrencyMismatch {
                    account: id,
                    account_currency: touched[&id].currency.clone(),
                    leg_currency: leg.currency.clone(),
                });
            }
        }
    }
    let mut debited: BTreeMap<AccountId, i128> = BTreeMap::new();
    for leg in legs {
        let overflow = |account| LedgerError::Overflow { account };
        let from = touched.get_mut(&leg.from).expect("loaded above");
        if balance_moves {
            from.balance = from.balance.checked_sub(leg.units).ok_or(overflow(leg.from))?;
        }
        from.pending_debits = from
            .pending_debits
            .checked_add(pending_sign * leg.units)
            .ok_or(overflow(leg.from))?;
        let to = touched.get_mut(&leg.to).expect("loaded above");
        if balance_moves {
            to.balance = to.balance.checked_add(leg.units).ok_or(overflow(leg.to))?;
        }
        to.pending_credits = to
            .pending_credits
            .checked_add(pending_sign * leg.units)
            .ok_or(overflow(leg.to))?;
        *debited.entry(leg.from).or_default() += leg.units;
    }
    if check_available {
        for (id, total) in &debited {
            let after = &touched[id];
            if !after.allow_negative && after.available() < 0 {
                let before = &accounts[id];
                return Err(LedgerError::InsufficientFunds {
                    account: *id,
                    available: before.available(),
                    required: *total,
                });
            }
        }
    }
    for (id, state) in touched {
        debug_assert!(state.allow_negative || state.balance >= 0, "non-negative account went negative");
        debug_assert!(state.pending_debits >= 0 && state.pending_credits >= 0);
        accounts.insert(id, state);
    }
    Ok(Effect { entries: entries_of(legs), pending })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(c: &str) -> CurrencyCode {
        CurrencyCode::parse(c).unwrap()
    }

    fn book(balances: &[(i64, i128, bool)]) -> BTreeMap<AccountId, AccountState> {
        balances
            .iter()
            .map(|&(id, balance, allow_negative)| {
                (
                    AccountId(id),
                    AccountState {
                        id: AccountId(id),
                        currency: cur("BTC"),
                        allow_negative,
                        balance,
                        pending_debits: 0,
                        pending_credits: 0,
                    },
                )
            })
            .collect()
    }

    fn leg(from: i64, to: i64, units: i128) -> Leg {
        Leg { from: AccountId(from), to: AccountId(to), currency: cur("BTC"), units }
    }

    #[test]
    fn transfer_moves_value_and_balances() {
        let mut b = book(&[(1, 100, false), (2, 0, false)]);
        let e = apply(&mut b, Resolved::Transfer(&[leg(1, 2, 60)])).unwrap();
        assert_eq!(e.entries, vec![(AccountId(1), -60), (AccountId(2), 60)]);
        assert_eq!((b[&AccountId(1)].balance, b[&AccountId(2)].balance), (40, 60));
    }

    #[test]
    fn refuses_overdraft_and_changes_nothing() {
        let mut b = book(&[(1, 100, false), (2, 0, false), (3, 0, false)]);
        let before = b.clone();
        let err = apply(&mut b, Resolved::Transfer(&[leg(1, 2, 60), leg(1, 3, 41)])).unwrap_err();
        assert_eq!(err, LedgerError::InsufficientFunds { account: AccountId(1), available: 100, required: 101 });
        assert_eq!(b, before);
    }

    #[test]
    fn system_accounts_may_go_negative() {
        let mut b = book(&[(1, 0, true), (2, 0, false)]);
        apply(&mut b, Resolved::Transfer(&[leg(1, 2, 5)])).unwrap();
        assert_eq!(b[&AccountId(1)].balance, -5);
    }

    #[test]
    fn holds_reserve_then_post_or_void() {
        let mut b = book(&[(1, 100, false), (2, 0, true)]);
        apply(&mut b, Resolved::Hold(&[leg(1, 2, 70)])).unwrap();
        assert_eq!((b[&AccountId(1)].balance, b[&AccountId(1)].available()), (100, 30));
        assert_eq!(b[&AccountId(2)].pending_credits, 70);
        // The reservation blocks a second spend.
        assert!(matches!(
            apply(&mut b, Resolved::Transfer(&[leg(1, 2, 31)])),
            Err(LedgerError::InsufficientFunds { available: 30, .. })
        ));
        let mut voided = b.clone();
        apply(&mut voided, Resolved::Void(&[leg(1, 2, 70)])).unwrap();
        assert_eq!((voided[&AccountId(1)].balance, voided[&AccountId(1)].available()), (100, 100));
        apply(&mut b, Resolved::Post(&[leg(1, 2, 70)])).unwrap();
        assert_eq!((b[&AccountId(1)].balance, b[&AccountId(1)].available()), (30, 30));
        assert_eq!((b[&AccountId(2)].balance, b[&AccountId(2)].pending_credits), (70, 0));
    }

    #[test]
    fn currency_mismatch_and_unknown_accounts_are_refused() {
        let mut b = book(&[(1, 100, false), (2, 0, false)]);
        let mut l = leg(1, 2, 1);
        l.currency = cur("LTC");
        assert!(matches!(apply(&mut b, Resolved::Transfer(&[l])), Err(LedgerError::CurrencyMismatch { .. })));
        assert_eq!(
            apply(&mut b, Resolved::Transfer(&[leg(1, 9, 1)])),
            Err(LedgerError::UnknownAccount { account: AccountId(9) })
        );
    }

    #[test]
    fn request_validation() {
        let req = |action| TxRequest { idempotency_key: "k".into(), action, memo: "{}".into() };
        assert_eq!(req(Action::Transfer(vec![])).validate(), Err(LedgerError::NoLegs));
        assert_eq!(req(Action::Transfer(vec![leg(1, 2, 0)])).validate(), Err(LedgerError::NonPositiveLeg { units: 0 }));
        assert_eq!(req(Action::Transfer(vec![leg(1, 1, 5)])).validate(), Err(LedgerError::SameAccount { account: AccountId(1) }));
        assert!(req(Action::Transfer(vec![leg(1, 2, 5); MAX_LEGS + 1])).validate().is_err());
        let mut r = req(Action::Transfer(vec![leg(1, 2, 5)]));
        r.idempotency_key = String::new();
        assert_eq!(r.validate(), Err(LedgerError::BadIdempotencyKey));
        let a = req(Action::Transfer(vec![leg(1, 2, 5)]));
        let mut b = a.clone();
        b.idempotency_key = "other".into();
        assert_eq!(a.content_hash(), b.content_hash(), "the key is not content");
        b.memo = "{\"reason\":\"x\"}".into();
        assert_ne!(a.content_hash(), b.content_hash());
    }

    proptest! {
        /// Random transfers among a few accounts: postings always sum to zero, each
        /// balance equals the sum of its postings, and non-negative accounts stay so.
        #[test]
        fn random_transfers_keep_the_books_balanced(
            ops in prop::collection::vec((0i64..5, 0i64..5, 1i128..500, any::<bool>()), 1..200)
        ) {
            let mut b = book(&[(0, 0, true), (1, 1000, false), (2, 0, false), (3, 50, false), (4, 0, true)]);
            let start: i128 = b.values().map(|a| a.balance).sum();
            let mut sums: BTreeMap<AccountId, i128> = b.iter().map(|(id, a)| (*id, a.balance)).collect();
            for (from, to, units, hold) in ops {
                if from == to { continue; }
                let legs = [leg(from, to, units)];
                let r = if hold { apply(&mut b, Resolved::Hold(&legs)) } else { apply(&mut b, Resolved::Transfer(&legs)) };
                if let Ok(effect) = r {
                    prop_assert_eq!(effect.entries.iter().map(|e| e.1).sum::<i128>(), 0);
                    if !effect.pending {
                        for (id, u) in effect.entries { *sums.get_mut(&id).unwrap() += u; }
                    }
                }
                for a in b.values() {
                    prop_assert!(a.allow_negative || a.available() >= 0);
                    prop_assert_eq!(a.balance, sums[&a.id]);
                }
            }
            prop_assert_eq!(b.values().map(|a| a.balance).sum::<i128>(), start);
        }
    }
}
