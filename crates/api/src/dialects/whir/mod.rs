//! The scheduled split-payout API (spec `whir.md`). Its keys are registered here
//! (a bearer token and a response-signing secret); its API is not served yet, so it
//! has no mounts.

use axum::Router;
use kassa_engine::merchants::{KeyKind, KeyShape};

use crate::AppState;

pub static KEYS: KeyKind = KeyKind { dialect: "whir", shape: KeyShape::Token { prefix: "whir_", hex: false, response_secret: true } };

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect {
    name: "whir",
    default_mounts: &[],
    router: Router::<AppState>::new,
    owns: |_| false,
    refusal: crate::dialects::native::refusal,
    callbacks: Vec::new,
    keys: Some(&KEYS),
};
