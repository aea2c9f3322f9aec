//! The scheduled split-payout API (spec `whir.md`). Its keys are registered here
//! (a bearer token and a response-signing secret); its API is not served yet, so it
//! has no mounts.

use kassa_engine::merchants::{KeyKind, KeyShape};

pub static KEYS: KeyKind = KeyKind { dialect: "whir", shape: KeyShape::Token { prefix: "whir_", hex: false, response_secret: true } };

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect::unmounted("whir", &KEYS, Vec::new);
