//! The "Bitcoin and Altcoin Wallets" JSON API v3 (spec `wallets3.md`): per-user
//! wallets. Its keys are registered here; its API is not served yet, so it has no
//! mounts.

use kassa_engine::merchants::{KeyKind, KeyShape};

/// Keys are 64 lowercase hex characters, as its clients expect.
pub static KEYS: KeyKind = KeyKind { dialect: "wallets3", shape: KeyShape::Token { prefix: "w3_", hex: true, response_secret: false } };

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect::unmounted("wallets3", &KEYS, Vec::new);
