//! CoinsPaid-style callbacks (spec §6): v1 flat with string values, v2 nested; JSON
//! with non-ASCII escaped, signed with the merchant's `coinspaid` key
//! (`X-Processing-Key`, `X-Processing-Signature`: hex HMAC-SHA512 of the body).

use hmac::{Hmac, Mac};
use crate::wire::ascii_json;
use kassa_engine::callbacks::{CallbackEvent, CallbackFormat};
use kassa_engine::EngineError;
use serde_json::{json, Value};
use sha2::Sha512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    V1,
    V2,
}

impl CallbackFormat for Callback {
    fn name(&self) -> &'static str {
        match self {
            Callback::V1 => "coinspaid_v1",
            Callback::V2 => "coinspaid_v2",
        }
    }

    fn origin(&self) -> &'static str {
        self.name()
    }

    fn events(&self) -> &'static [&'static str] {
        // v1 knows deposits and withdrawals; v2 also exchanges and invoices (after them).
        const V2: &[&str] = &[
            "deposit.seen",
            "deposit.credited",
            "deposit.reversed",
            "deposit.dropped",
            "withdrawal.pending",
            "withdrawal.broadcast",
            "withdrawal.confirmed",
            "withdrawal.failed",
            "withdrawal.cancelled",
            "exchange.done",
            "invoice.partially_paid",
            "invoice.paid",
            "invoice.overpaid",
            "invoice.paid_late",
            "invoice.expired",
        ];
        match self {
            Callback::V1 => &V2[..9],
            Callback::V2 => V2,
        }
    }

    /// The documented schedule: 1, 5, 10, 15, 20, 30, 60, 90, 120, 150, 180, 210, 240 minutes.
    fn default_retry_schedule_secs(&self) -> Vec<u64> {
        [1, 5, 10, 15, 20, 30, 60, 90, 120, 150, 180, 210, 240].iter().map(|m| m * 60).collect()
    }

    fn render(&self, ev: &CallbackEvent<'_>) -> Result<String, EngineError> {
        let status = match ev.event.event_type.as_str() {
            "withdrawal.pending" => "pending",
            "exchange.done" => return Ok(ascii_json(&exchange_body(ev)?.to_string())),
            t if t.starts_with("invoice.") => return Ok(ascii_json(&invoice_body(ev)?.to_string())),
            "deposit.seen" | "withdrawal.broadcast" => "not_confirmed",
            "deposit.credited" | "withdrawal.confirmed" => "confirmed",
            "withdrawal.failed" if *self == Callback::V1 => "error",
            "deposit.reversed" | "deposit.dropped" | "withdrawal.failed" | "withdrawal.cancelled" => "cancelled",
            other => return Err(EngineError::invalid("event", format!("{other} has no CoinsPaid callback"))),
        };
        Ok(ascii_json(&self.body(ev, status)?.to_string()))
    }

    fn signing_key(&self) -> Option<&'static str> {
        Some("coinspaid")
    }

    fn signature_headers(&self, public_key: &str, secret: &[u8], body: &[u8]) -> Vec<(&'static str, String)> {
        vec![("X-Processing-Key", public_key.to_string()), ("X-Processing-Signature", signature(secret, body))]
    }
}

/// Lowercase hex HMAC-SHA512 of the exact body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A v2 `exchange` callback: one exchange transaction, its fee, done (`confirmed`).
fn exchange_body(ev: &CallbackEvent<'_>) -> Result<Value, EngineError> {
    let (from, to) = (ev.currency()?, ev.other.ok_or_else(|| EngineError::invalid("event", "no to_currency"))?);
    let d = ev.data();
    let units = |key: &str| d[key].as_str().and_then(|u| u.parse::<i128>().ok()).ok_or_else(|| EngineError::invalid("event", format!("no {key}")));
    let (sent, fee, received) = (units("sender_units")?, units("fee_units")?, units("receiver_units")?);
    let got = to.amount(received)?.to_string();
    Ok(json!({
        "id": d["number"],
        "foreign_id": d["client_id"],
        "type": "exchange",
        "crypto_address": null,
        "currency_sent": {"currency": from.code.as_str(), "amount": from.amount(sent)?.to_string()},
        "currency_received": {"currency": to.code.as_str(), "amount": got, "amount_minus_fee": got},
        "transactions": [{"id": d["number"], "currency": from.code.as_str(), "currency_to": to.code.as_str(), "transaction_type": "exchange",
            "type": "exchange", "address": "", "tag": null, "amount": from.amount(sent - fee)?.to_string(), "amount_to": got, "txid": "",
            "confirmations": "0"}],
        "fees": [{"type": "exchange", "currency": from.code.as_str(), "amount": from.amount(fee)?.to_string()}],
        "error": "",
        "status": "confirmed",
    }))
}

/// A v2 `invoice` callback (CoinsPaid's invoice documentation): the option paid in
/// (or the first), what was sent and is left to send in it, every payment to it,
/// `pending` while part is paid, `confirmed` once paid, `failed` when it expired.
fn invoice_body(ev: &CallbackEvent<'_>) -> Result<Value, EngineError> {
    let inv_currency = ev.currency()?;
    let c = ev.other.ok_or_else(|| EngineError::invalid("event", "no source_currency"))?;
    let d = ev.data();
    let units = |v: &Value| v.as_str().and_then(|u| u.parse::<i128>().ok()).unwrap_or(0);
    let option = d["options"].as_array().and_then(|list| list.iter().find(|o| o["currency"] == c.code.as_str())).cloned().unwrap_or(Value::Null);
    let mine: Vec<&Value> = d["payments"].as_array().map(|l| l.iter().filter(|p| p["currency"] == c.code.as_str()).collect()).unwrap_or_default();
    let credited: Vec<&&Value> = mine.iter().filter(|p| p["counted"] == true && p["status"] == "credited").collect();
    let paid: i128 = credited.iter().map(|p| units(&p["amount_units"])).sum();
    // What the credits booked: the deposit fee and, converted, the exchange fee.
    let mut fees = Vec::new();
    for (kind, key) in [("deposit", "fee_units"), ("exchange", "exchange_fee_units")] {
        let sum: i128 = credited.iter().map(|p| units(&p[key])).sum();
        if sum > 0 {
            fees.push(json!({"type": kind, "currency": c.code.as_str(), "amount": c.amount(sum)?.to_string()}));
        }
    }
    let due = units(&option["due_units"]);
    let (status, error) = match ev.event.event_type.as_str() {
        "invoice.partially_paid" => ("pending", Value::Null),
        "invoice.expired" => ("failed", json!("Timer expired. User not paid.")),
        _ => ("confirmed", Value::Null),
    };
    let transactions: Vec<Value> = mine
        .iter()
        .filter(|p| p["status"] != "dropped" && p["status"] != "reversed")
        .map(|p| {
            Ok(json!({"id": p["deposit_id"], "currency": c.code.as_str(), "transaction_type": "blockchain", "type": "deposit",
                "address": p["address"], "tag": null, "amount": c.amount(units(&p["amount_units"]))?.to_string(), "txid": p["txid"],
                "confirmations": p["confirmations"].as_i64().unwrap_or(0).to_string()}))
        })
        .collect::<Result<_, EngineError>>()?;
    let convert_to = (c.code != inv_currency.code).then(|| inv_currency.code.as_str());
    let secs = |key: &str| d[key].as_i64().map(|ms| ms.div_euclid(1000));
    Ok(json!({
        "id": d["row_id"],
        "foreign_id": d["order_id"],
        "type": "invoice",
        "crypto_address": {"id": option["address_id"], "currency": c.code.as_str(), "convert_to": convert_to, "address": option["address"], "tag": null},
        "currency_sent": {"currency": c.code.as_str(), "amount": c.amount(due)?.to_string(), "remaining_amount": c.amount((due - paid).max(0))?.to_string()},
        "currency_received": {"currency": inv_currency.code.as_str(), "amount": inv_currency.amount(units(&d["amount_units"]))?.to_string()},
        "transactions": transactions,
        "fees": fees,
        "error": error,
        "status": status,
        "fixed_at": secs("rate_fixed_at_ms"),
        "expires_at": secs("expires_at_ms"),
    }))
}

impl Callback {
    fn body(self, ev: &CallbackEvent<'_>, status: &str) -> Result<Value, EngineError> {
        let c = ev.currency()?;
        let d = ev.data();
        let deposit = ev.is_deposit();
        let (kind, foreign_id) = if deposit {
            ("deposit", d["foreign_id"].as_str().map(str::to_string))
        } else {
            ("withdrawal", d["idempotency_key"].as_str().map(str::to_string))
        };
        let fee = ev.fee()?;
        let amt = ev.amount("amount_units")?;
        let txid = ev.text("txid");
        let confirmations = d["confirmations"].as_i64().unwrap_or(0).to_string();
        let address = ev.text("address");
        let error = if status == "error" || status == "cancelled" { ev.text("failure") } else { String::new() };
        if self == Callback::V1 {
            let mut body = json!({
                "id": d["id"].to_string(), "txid": txid, "currency": c.code.as_str(), "currency_fee": c.code.as_str(),
                "confirmations": confirmations, "amount": amt, "fee": fee, "address": address, "type": kind,
                "status": status, "error": error,
            });
            if let Some(f) = foreign_id {
                body["foreign_id"] = json!(f);
            }
            return Ok(body);
        }
        let units: i128 = ev.units("amount_units").unwrap_or(0);
        let fee_units = c.parse_amount(&fee, kassa_core::SignPolicy::NonNegative)?.units();
        let (mut sent, mut received) = if deposit {
            (amt.clone(), json!({"currency": c.code.as_str(), "amount": amt, "amount_minus_fee": c.amount(units - fee_units)?.to_string()}))
        } else {
            (c.amount(units + fee_units)?.to_string(), json!({"currency": c.code.as_str(), "amount": amt}))
        };
        let address_id = if deposit { d["address_id"].clone() } else { Value::Null };
        // The address object describes a deposit address; a withdrawal's id is top-level only.
        let address_foreign_id = if deposit { foreign_id.clone() } else { None };
        let mut transactions = vec![json!({"id": d["id"], "currency": c.code.as_str(), "transaction_type": "blockchain", "type": kind,
            "address": address, "tag": null, "amount": amt, "txid": txid, "confirmations": confirmations})];
        let mut fees = vec![json!({"type": kind, "currency": c.code.as_str(), "amount": fee})];
        let mut kind = kind;
        // A deposit to an address with conversion: `deposit_exchange`, received in the
        // converted currency (nothing yet before it is credited); one credited as
        // received (below the least converted, or no fresh rate) is a plain `deposit`.
        if let (true, Some(to)) = (deposit, ev.other) {
            let converted = d["converted_units"].as_str().and_then(|u| u.parse::<i128>().ok());
            let exchange_fee = d["exchange_fee_units"].as_str().and_then(|u| u.parse::<i128>().ok());
            match (converted, exchange_fee) {
                (Some(to_units), Some(ex_fee)) => {
                    kind = "deposit_exchange";
                    let got = to.amount(to_units)?.to_string();
                    received = json!({"currency": to.code.as_str(), "amount": got, "amount_minus_fee": got});
                    transactions.push(json!({"id": d["id"], "currency": c.code.as_str(), "currency_to": to.code.as_str(),
                        "transaction_type": "exchange", "type": "exchange", "address": address, "tag": null,
                        "amount": c.amount(units - fee_units - ex_fee)?.to_string(), "amount_to": got, "txid": "", "confirmations": confirmations}));
                    fees.push(json!({"type": "exchange", "currency": c.code.as_str(), "amount": c.amount(ex_fee)?.to_string()}));
                }
                _ if d["conversion_note"].is_string() => {}
                _ => {
                    kind = "deposit_exchange";
                    let none = kassa_core::Amount::zero(to.precision).to_string();
                    received = json!({"currency": to.code.as_str(), "amount": none, "amount_minus_fee": none});
                }
            }
        }
        // A withdrawal paid from another currency: `withdrawal_exchange`, sent in that
        // currency, with its exchange before the payment.
        if let (false, Some(from)) = (deposit, ev.other) {
            let gave = d["source_units"].as_str().and_then(|u| u.parse::<i128>().ok()).unwrap_or(0);
            let ex_fee = d["source_fee_units"].as_str().and_then(|u| u.parse::<i128>().ok()).unwrap_or(0);
            kind = "withdrawal_exchange";
            let gave_text = from.amount(gave)?.to_string();
            sent = gave_text;
            transactions.push(json!({"id": d["id"], "currency": from.code.as_str(), "currency_to": c.code.as_str(),
                "transaction_type": "exchange", "type": "exchange", "address": address, "tag": null,
                "amount": from.amount(gave - ex_fee)?.to_string(), "amount_to": c.amount(units + fee_units)?.to_string(), "txid": "", "confirmations": confirmations}));
            fees.push(json!({"type": "exchange", "currency": from.code.as_str(), "amount": from.amount(ex_fee)?.to_string()}));
        }
        let convert_to = if deposit { ev.other.map(|t| t.code.as_str()) } else { None };
        let sent_currency = match (deposit, ev.other) {
            (false, Some(from)) => from.code.as_str(),
            _ => c.code.as_str(),
        };
        let mut body = json!({
            "id": d["id"],
            "type": kind,
            "crypto_address": {"id": address_id, "currency": c.code.as_str(), "convert_to": convert_to, "address": address, "tag": null,
                "foreign_id": address_foreign_id},
            "currency_sent": {"currency": sent_currency, "amount": sent},
            "currency_received": received,
            "transactions": transactions,
            "fees": fees,
            "error": error,
            "status": status,
        });
        if let Some(f) = foreign_id {
            body["foreign_id"] = json!(f);
        }
        // Converted at a futures' fixed price.
        if let (true, Some(futures)) = (deposit, d["futures_id"].as_i64()) {
            body["futures_id"] = json!(futures);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CoinsPaid documentation's test vector.
    #[test]
    fn signature_matches_the_documented_vector() {
        assert_eq!(
            signature(b"AbCdEfG123456", br#"{"currency":"BTC","foreign_id":"123456"}"#),
            "03c25fcf7cd35e7d995e402cd5d51edd72d48e1471e865907967809a0c189ba55b90815f20e2bb10f82c7a9e9d865546fda58989c2ae9e8e2ff7bc29195fa1ec"
        );
    }

    #[test]
    fn formats_report_what_their_apis_know() {
        assert!(Callback::V2.events().contains(&"deposit.dropped"));
        assert!(!Callback::V1.events().contains(&"webhook.test"));
        assert_eq!(Callback::V1.default_retry_schedule_secs().len(), 13);
        assert_eq!(Callback::V1.default_retry_schedule_secs()[12], 240 * 60);
    }
}
