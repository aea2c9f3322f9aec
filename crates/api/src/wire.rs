//! Wire helpers the dialects share, so each translates fields the same way: amounts
//! sent as a string or a JSON number (read as their exact text, never through
//! floating point), whole numbers and flags the way form-style clients send them,
//! the ASCII-only JSON signed callbacks need, and the time formats.

use serde_json::Value;

pub use kassa_engine::timefmt::{format_ms as rfc3339_ms, format_seconds as datetime_seconds, parse_rfc3339_ms};

/// A field of a JSON type the dialect does not accept there; the dialect says so in
/// its own error format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrongType;

/// A decimal amount sent as a string or a JSON number, as its exact text (a number's
/// digits as sent). Absent or null is `None`.
pub fn amount_text(value: Option<&Value>) -> Result<Option<String>, WrongType> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(WrongType),
    }
}

/// The value, with a blank string counted as absent (form-style clients send every
/// key, empty when unused).
pub fn non_blank(value: Option<&Value>) -> Option<&Value> {
    match value {
        Some(Value::String(s)) if s.trim().is_empty() => None,
        v => v,
    }
}

/// A whole number sent as a JSON number or a string of digits.
pub fn whole_number(value: Option<&Value>) -> Result<Option<i64>, WrongType> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(WrongType),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| WrongType),
        Some(_) => Err(WrongType),
    }
}

/// A flag sent as a JSON boolean, 0 or 1, or the strings `true`/`false`/`1`/`0`
/// (any case; blank is false). Absent is `None`.
pub fn flag(value: Option<&Value>) -> Result<Option<bool>, WrongType> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(WrongType),
        },
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "" | "false" | "0" => Ok(Some(false)),
            "true" | "1" => Ok(Some(true)),
            _ => Err(WrongType),
        },
        Some(_) => Err(WrongType),
    }
}

/// JSON text with every non-ASCII character escaped as `\uXXXX` (for callbacks whose
/// receivers sign or compare ASCII bodies). Non-ASCII can only occur inside JSON
/// strings, so the escapes are valid wherever they land.
pub fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_keep_their_exact_text() {
        let body: Value = serde_json::from_str(r#"{"a": 0.1, "b": "0.10", "c": 12345678901234567890.123456789, "d": true}"#).unwrap();
        assert_eq!(amount_text(body.get("a")), Ok(Some("0.1".into())));
        assert_eq!(amount_text(body.get("b")), Ok(Some("0.10".into())));
        assert_eq!(amount_text(body.get("d")), Err(WrongType));
        assert_eq!(amount_text(body.get("missing")), Ok(None));
        assert_eq!(amount_text(Some(&Value::Null)), Ok(None));
        // Without arbitrary precision serde_json would round this; the digits sent are kept.
        assert_eq!(amount_text(body.get("c")), Ok(Some("12345678901234567890.123456789".into())));
    }

    #[test]
    fn form_style_numbers_and_flags() {
        assert_eq!(whole_number(Some(&json!(60))), Ok(Some(60)));
        assert_eq!(whole_number(Some(&json!(" 60 "))), Ok(Some(60)));
        assert_eq!(whole_number(Some(&json!("6O"))), Err(WrongType));
        assert_eq!(whole_number(Some(&json!(1.5))), Err(WrongType));
        assert_eq!(non_blank(Some(&json!("  "))), None);
        assert_eq!(non_blank(Some(&json!("x"))), Some(&json!("x")));
        for (v, want) in [(json!(true), Some(true)), (json!(0), Some(false)), (json!("TRUE"), Some(true)), (json!(""), Some(false)), (json!("0"), Some(false))] {
            assert_eq!(flag(Some(&v)), Ok(want), "{v}");
        }
        assert_eq!(flag(Some(&json!(2))), Err(WrongType));
        assert_eq!(flag(Some(&json!("yes"))), Err(WrongType));
        assert_eq!(flag(None), Ok(None));
    }

    #[test]
    fn ascii_json_escapes_outside_ascii_only() {
        assert_eq!(ascii_json(r#"{"label":"Zürich 🏔"}"#), r#"{"label":"Z\u00fcrich \ud83c\udfd4"}"#);
        let back: Value = serde_json::from_str(&ascii_json(&json!({"label": "Zürich 🏔"}).to_string())).unwrap();
        assert_eq!(back["label"], "Zürich 🏔");
    }
}
