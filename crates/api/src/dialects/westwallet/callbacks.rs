//! WestWallet IPNs: `application/x-www-form-urlencoded`, unsigned, sent when a
//! transaction is first seen (`pending`) and when it is final (`completed`, or
//! `network_error` for a failed withdrawal), to the object's `ipn_url`.

use kassa_engine::callbacks::{CallbackEvent, CallbackFormat};
use kassa_engine::EngineError;

pub struct Ipn;

impl CallbackFormat for Ipn {
    fn name(&self) -> &'static str {
        "westwallet"
    }

    fn origin(&self) -> &'static str {
        "westwallet"
    }

    fn events(&self) -> &'static [&'static str] {
        &["deposit.seen", "deposit.credited", "withdrawal.broadcast", "withdrawal.confirmed", "withdrawal.failed"]
    }

    fn content_type(&self) -> &'static str {
        "application/x-www-form-urlencoded"
    }

    /// Standard Webhooks' recommended schedule (WestWallet documents none).
    fn default_retry_schedule_secs(&self) -> Vec<u64> {
        kassa_core::events::STANDARD_RETRY_SCHEDULE_SECS.to_vec()
    }

    fn render(&self, ev: &CallbackEvent<'_>) -> Result<String, EngineError> {
        let c = ev.currency()?;
        let status = match ev.event.event_type.as_str() {
            "deposit.seen" | "withdrawal.broadcast" => "pending",
            "deposit.credited" | "withdrawal.confirmed" => "completed",
            "withdrawal.failed" => "network_error",
            other => return Err(EngineError::invalid("event", format!("{other} has no WestWallet IPN"))),
        };
        Ok(form(&[
            ("id", ev.transfer_id()?.to_string()),
            ("amount", ev.amount("amount_units")?),
            ("address", ev.text("address")),
            ("dest_tag", String::new()),
            ("label", ev.text("label")),
            ("currency", c.code.to_string()),
            ("status", status.into()),
            ("blockchain_confirmations", ev.data()["confirmations"].as_i64().unwrap_or(0).to_string()),
            ("fee", ev.fee()?),
            ("blockchain_hash", ev.text("txid")),
        ]))
    }
}

/// A form body, fields in the given order.
fn form(fields: &[(&str, String)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        form.append_pair(k, v);
    }
    form.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipn_is_form_encoded_in_order() {
        let body = form(&[("id", "7".into()), ("label", "order 7 & ü".into()), ("status", "completed".into())]);
        assert_eq!(body, "id=7&label=order+7+%26+%C3%BC&status=completed");
    }
}
