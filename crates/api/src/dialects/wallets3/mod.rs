//! The "Bitcoin and Altcoin Wallets" JSON API v3 (spec `wallets3.md`): per-user
//! wallets. Its keys are registered here; its API is not served yet, so it has no
//! mounts.

use axum::Router;
use kassa_engine::merchants::{KeyKind, KeyShape};

use crate::AppState;

/// Keys are 64 lowercase hex characters, as its clients expect.
pub static KEYS: KeyKind = KeyKind { dialect: "wallets3", shape: KeyShape::Token { prefix: "w3_", hex: true, response_secret: false } };

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "wallets3",
    default_mounts: &[],
    router: Router::<AppState>::new,
    owns: |_| false,
    refusal: crate::dialects::native::refusal,
    callbacks: Vec::new,
    keys: Some(&KEYS),
};
