//! The CoinsPaid-style dialect (spec `coinspaid.md`): v1 (WllxPay) and v2
//! (WallexPay). Its callback formats are here; its API is not served yet, so it has
//! no mounts.

pub mod callbacks;

use std::sync::Arc;

use kassa_engine::callbacks::CallbackFormat;

pub const DIALECT: crate::dialects::Dialect = crate::dialects::Dialect::unmounted("coinspaid", &KEYS, callbacks);

/// A public key (`X-Processing-Key`) and an HMAC secret.
pub static KEYS: kassa_engine::merchants::KeyKind =
    kassa_engine::merchants::KeyKind { dialect: "coinspaid", shape: kassa_engine::merchants::KeyShape::Hmac };

fn callbacks() -> Vec<Arc<dyn CallbackFormat>> {
    vec![Arc::new(callbacks::Callback::V1), Arc::new(callbacks::Callback::V2)]
}
