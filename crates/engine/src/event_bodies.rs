//! The standard (Kassa) event body, and the one entry point that renders an event in
//! any callback format: the standard one here, a dialect's through the registry.

use kassa_core::events::STANDARD_FORMAT;
use kassa_core::Currency;
use kassa_store::EventRow;
use serde_json::{json, Value};

use crate::callbacks::CallbackEvent;
use crate::notifications::Rendered;
use crate::timefmt::format_ms;
use crate::{Engine, EngineError};

impl Engine {
    /// An event in a callback format. Deterministic: the same event renders to the
    /// same bytes, which the first attempt freezes for every retry.
    pub fn render(&self, format: &str, e: &EventRow) -> Result<Rendered, EngineError> {
        let d = &e.data;
        // An exchange's are its two currencies.
        let currency = match d.get("currency").or(d.get("from_currency")).and_then(Value::as_str) {
            Some(code) => Some(self.currencies.get(code)?.clone()),
            None => None,
        };
        if format != STANDARD_FORMAT {
            let f = self.callbacks.get(format).ok_or_else(|| EngineError::invalid("format", format!("no callback format {format:?} is registered")))?;
            if !f.events().contains(&e.event_type.as_str()) {
                return Err(EngineError::invalid("event", format!("{} has no {format} callback", e.event_type)));
            }
            let other = match d.get("convert_to").or(d.get("source_currency")).or(d.get("to_currency")).and_then(Value::as_str) {
                Some(code) => Some(self.currencies.get(code)?.clone()),
                None => None,
            };
            let body = f.render(&CallbackEvent { event: e, currency: currency.as_ref(), other: other.as_ref() })?;
            return Ok(Rendered { body, content_type: f.content_type() });
        }
        let amount = |key: &str| -> Result<String, EngineError> {
            let c = currency.as_ref().ok_or_else(|| EngineError::invalid("event", "no currency"))?;
            let units: i128 = d[key].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| EngineError::invalid("event", format!("no {key}")))?;
            Ok(c.amount(units)?.to_string())
        };
        let data = match e.object_kind.as_str() {
            "deposit" => deposit_view(d, currency.as_ref(), &amount)?,
            "withdrawal" => withdrawal_view(d, &amount)?,
            "exchange" => self.exchange_event_view(d)?,
            "invoice" => {
                let c = self.currencies.get(d["currency"].as_str().unwrap_or_default())?;
                let units: i128 = d["amount_units"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
                let at = |k: &str| d[k].as_i64().map(format_ms);
                json!({"id": d["id"], "order_id": d["order_id"], "status": d["status"], "previous_status": d["previous_status"],
                    "amount": c.amount(units)?.to_string(), "currency": d["currency"], "expires_at": at("expires_at_ms"),
                    "paid_at": at("paid_at_ms"), "created_at": at("created_at_ms")})
            }
            _ => d.clone(),
        };
        let body = json!({"id": e.public_id, "type": e.event_type, "sequence": e.seq, "timestamp": format_ms(e.created_at_ms), "data": data});
        Ok(Rendered { body: body.to_string(), content_type: "application/json" })
    }
}

impl Engine {
    fn exchange_event_view(&self, d: &Value) -> Result<Value, EngineError> {
        let amount = |currency: &str, key: &str| -> Result<String, EngineError> {
            let c = self.currencies.get(d[currency].as_str().unwrap_or_default())?;
            let units: i128 = d[key].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| EngineError::invalid("event", format!("no {key}")))?;
            Ok(c.amount(units)?.to_string())
        };
        Ok(json!({
            "id": d["id"], "client_id": d["client_id"], "kind": d["kind"], "from_currency": d["from_currency"],
            "to_currency": d["to_currency"], "sender_amount": amount("from_currency", "sender_units")?,
            "fee_amount": amount("from_currency", "fee_units")?, "fee_currency": d["from_currency"],
            "receiver_amount": amount("to_currency", "receiver_units")?, "rate": d["rate"], "status": d["status"],
            "created_at": format_ms(d["created_at_ms"].as_i64().unwrap_or(0)),
        }))
    }
}

fn deposit_fee(d: &Value, c: &Currency) -> Result<String, EngineError> {
    Ok(c.amount(crate::callbacks::deposit_fee_of(d, c)?)?.to_string())
}

fn deposit_view(d: &Value, c: Option<&Currency>, amount: &dyn Fn(&str) -> Result<String, EngineError>) -> Result<Value, EngineError> {
    let c = c.ok_or_else(|| EngineError::invalid("event", "no currency"))?;
    Ok(json!({
        "id": d["id"], "currency": d["currency"], "address": d["address"], "label": d["label"], "foreign_id": d["foreign_id"],
        "txid": d["txid"], "vout": d["vout"], "amount": amount("amount_units")?, "fee": deposit_fee(d, c)?,
        "status": d["status"], "confirmations": d["confirmations"], "block_height": d["block_height"],
        "created_at": format_ms(d["created_at_ms"].as_i64().unwrap_or(0)), "updated_at": format_ms(d["updated_at_ms"].as_i64().unwrap_or(0)),
    }))
}

fn withdrawal_view(d: &Value, amount: &dyn Fn(&str) -> Result<String, EngineError>) -> Result<Value, EngineError> {
    Ok(json!({
        "id": d["id"], "currency": d["currency"], "address": d["address"], "amount": amount("amount_units")?, "fee": amount("fee_units")?,
        "priority": d["priority"], "idempotency_key": d["idempotency_key"], "status": d["status"], "txid": d["txid"],
        "confirmations": d["confirmations"], "failure": d["failure"],
        "created_at": format_ms(d["created_at_ms"].as_i64().unwrap_or(0)), "updated_at": format_ms(d["updated_at_ms"].as_i64().unwrap_or(0)),
    }))
}
