//! Kassa's pure domain layer: exact amounts, currencies and their rules, and the
//! double-entry ledger's balance rules. Nothing here performs I/O or is async; every
//! function is deterministic and unit/property tested beside its code.

pub mod amount;
pub mod clock;
pub mod currency;
pub mod deposit;
pub mod events;
pub mod invoices;
pub mod ledger;
pub mod names;
pub mod merchant;
pub mod payout_plan;
pub mod rates;
pub mod transfers;
pub mod withdrawal;

pub use amount::{Amount, AmountError, SignPolicy};
pub use clock::Clock;
pub use currency::{Currency, CurrencyCode, CurrencyKind, Fee, FeeSchedule, Operation};
