//! Callback formats: how an API dialect's notifications look and are signed. Each
//! dialect implements [`CallbackFormat`] for its formats and registers them (the
//! binary collects them from the dialect registry); the notifier and the outbox find
//! formats here by name, so the engine names no dialect. Kassa's own webhooks
//! (`standard`) are built in.

use std::sync::Arc;

use kassa_core::events::{CallbackRoute, STANDARD_FORMAT, STANDARD_RETRY_SCHEDULE_SECS};
use kassa_core::transfers::{transfer_id, TransferKind};
use kassa_core::Currency;
use kassa_store::EventRow;
use serde_json::Value;

use crate::EngineError;

/// An event as a callback format renders it: the stored event and its currency.
pub struct CallbackEvent<'a> {
    pub event: &'a EventRow,
    pub currency: Option<&'a Currency>,
    /// The other currency of the object's conversion, if any: what a deposit converts
    /// to (`convert_to`), what a withdrawal with exchange was paid from (`source_currency`).
    pub other: Option<&'a Currency>,
}

impl CallbackEvent<'_> {
    /// The object's snapshot (amounts in ledger units, as strings).
    pub fn data(&self) -> &Value {
        &self.event.data
    }

    /// A text field of the snapshot (empty when absent).
    pub fn text(&self, key: &str) -> String {
        self.event.data[key].as_str().unwrap_or_default().to_string()
    }

    /// Whether the event reports a deposit (otherwise a withdrawal).
    pub fn is_deposit(&self) -> bool {
        self.event.object_kind == "deposit"
    }

    pub fn currency(&self) -> Result<&Currency, EngineError> {
        self.currency.ok_or_else(|| EngineError::invalid("event", "no currency"))
    }

    /// Ledger units of a snapshot field.
    pub fn units(&self, key: &str) -> Result<i128, EngineError> {
        self.event.data[key].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| EngineError::invalid("event", format!("no {key}")))
    }

    /// A snapshot amount as a decimal at the currency's precision.
    pub fn amount(&self, key: &str) -> Result<String, EngineError> {
        Ok(self.currency()?.amount(self.units(key)?)?.to_string())
    }

    /// The fee the object pays: a deposit's by the deposit fee rule, a withdrawal's as
    /// stored.
    pub fn fee(&self) -> Result<String, EngineError> {
        if self.is_deposit() {
            let c = self.currency()?;
            Ok(c.amount(deposit_fee_of(self.data(), c)?)?.to_string())
        } else {
            self.amount("fee_units")
        }
    }

    /// The object's transfer id (the id APIs that list deposits and withdrawals
    /// together give it).
    pub fn transfer_id(&self) -> Result<i64, EngineError> {
        let kind = if self.is_deposit() { TransferKind::Receive } else { TransferKind::Send };
        self.event.data["id"].as_i64().and_then(|row| transfer_id(kind, row)).ok_or_else(|| EngineError::invalid("event", "no id"))
    }
}

/// The fee of a deposit snapshot: the one its credit booked, or (not credited yet)
/// what the current rule would charge.
pub(crate) fn deposit_fee_of(d: &Value, c: &Currency) -> Result<i128, EngineError> {
    if let Some(fixed) = d["fee_units"].as_str().and_then(|s| s.parse().ok()) {
        return Ok(fixed);
    }
    let units: i128 = d["amount_units"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(c.deposit_fee_units(units)?)
}

/// One dialect's callback format.
pub trait CallbackFormat: Send + Sync {
    /// Its name (an endpoint's and a delivery's `format`).
    fn name(&self) -> &'static str;
    /// The dialect whose objects it reports (their `origin`).
    fn origin(&self) -> &'static str;
    /// The event types it reports.
    fn events(&self) -> &'static [&'static str];
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    /// Delays before each retry unless configured otherwise.
    fn default_retry_schedule_secs(&self) -> Vec<u64>;
    /// The body of one event. Deterministic: retries send the bytes the first attempt
    /// froze.
    fn render(&self, event: &CallbackEvent<'_>) -> Result<String, EngineError>;
    /// Which of the merchant's API keys (by key dialect) signs these callbacks; none:
    /// unsigned.
    fn signing_key(&self) -> Option<&'static str> {
        None
    }
    /// Headers that sign `body` with that key.
    fn signature_headers(&self, _public_key: &str, _secret: &[u8], _body: &[u8]) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// The registered callback formats.
#[derive(Clone, Default)]
pub struct CallbackFormats(Vec<Arc<dyn CallbackFormat>>);

impl std::fmt::Debug for CallbackFormats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|c| c.name())).finish()
    }
}

impl CallbackFormats {
    /// The formats of the registered dialects; refuses two with one name, two for one
    /// origin, and the built-in `standard` name.
    pub fn new(list: Vec<Arc<dyn CallbackFormat>>) -> Result<Self, String> {
        for (i, f) in list.iter().enumerate() {
            if f.name() == STANDARD_FORMAT {
                return Err(format!("callback format {STANDARD_FORMAT:?} is Kassa's own and cannot be registered"));
            }
            if let Some(other) = list[..i].iter().find(|o| o.name() == f.name() || o.origin() == f.origin()) {
                return Err(format!("callback formats {:?} and {:?} clash (same name or origin)", other.name(), f.name()));
            }
        }
        Ok(Self(list))
    }

    pub fn get(&self, name: &str) -> Option<&dyn CallbackFormat> {
        self.0.iter().find(|f| f.name() == name).map(|f| f.as_ref())
    }

    /// Every format name, `standard` first.
    pub fn names(&self) -> Vec<&'static str> {
        std::iter::once(STANDARD_FORMAT).chain(self.0.iter().map(|f| f.name())).collect()
    }

    /// Whether `name` is `standard` or a registered format.
    pub fn knows(&self, name: &str) -> bool {
        name == STANDARD_FORMAT || self.get(name).is_some()
    }

    /// A format's default retry schedule (`standard` included); None for an unknown one.
    pub fn default_retry_schedule_secs(&self, name: &str) -> Option<Vec<u64>> {
        if name == STANDARD_FORMAT {
            return Some(STANDARD_RETRY_SCHEDULE_SECS.to_vec());
        }
        self.get(name).map(|f| f.default_retry_schedule_secs())
    }

    /// How the outbox routes each dialect's objects.
    pub fn routes(&self) -> Vec<CallbackRoute> {
        self.0.iter().map(|f| CallbackRoute { origin: f.origin(), format: f.name(), events: f.events() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(&'static str, &'static str);
    impl CallbackFormat for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        fn origin(&self) -> &'static str {
            self.1
        }
        fn events(&self) -> &'static [&'static str] {
            &["deposit.seen"]
        }
        fn default_retry_schedule_secs(&self) -> Vec<u64> {
            vec![1]
        }
        fn render(&self, _: &CallbackEvent<'_>) -> Result<String, EngineError> {
            Ok(String::new())
        }
    }

    #[test]
    fn a_registry_refuses_clashes_and_routes_by_origin() {
        let ok = CallbackFormats::new(vec![Arc::new(Fake("a_v1", "a")), Arc::new(Fake("b", "b"))]).unwrap();
        assert_eq!(ok.names(), ["standard", "a_v1", "b"]);
        assert!(ok.knows("standard") && ok.knows("b") && !ok.knows("c"));
        assert_eq!(ok.routes()[0], CallbackRoute { origin: "a", format: "a_v1", events: &["deposit.seen"] });
        assert_eq!(ok.default_retry_schedule_secs("standard").unwrap().len(), 7);
        assert!(CallbackFormats::new(vec![Arc::new(Fake("standard", "x"))]).is_err());
        assert!(CallbackFormats::new(vec![Arc::new(Fake("a", "a")), Arc::new(Fake("a", "b"))]).is_err());
        assert!(CallbackFormats::new(vec![Arc::new(Fake("a", "a")), Arc::new(Fake("b", "a"))]).is_err());
    }
}
