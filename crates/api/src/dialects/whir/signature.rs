//! The response signature of the spec: base64 (standard, padded) of the raw
//! HMAC-SHA256, under the key's response secret, of the object's values in their
//! order, `signature` excluded, joined by `|`; an object value is its keys, then its
//! values, all joined by `,`. The seed's PHP:
//! `implode('|', array_map(fn($a) => is_array($a) ? implode(',', array_keys($a)).','.implode(',', $a) : $a, array_values($details)))`.
//! Every value is rendered as a JSON string, so the signed text and the JSON agree.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One value of a signed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Text(String),
    /// Keys and values in order.
    Object(Vec<(String, String)>),
}

impl From<String> for Field {
    fn from(s: String) -> Self {
        Field::Text(s)
    }
}

/// The text the signature is computed over.
pub fn message(fields: &[(&str, Field)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(_, v)| match v {
            Field::Text(t) => t.clone(),
            Field::Object(pairs) => {
                let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                let values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
                format!("{},{}", keys.join(","), values.join(","))
            }
        })
        .collect();
    parts.join("|")
}

pub fn sign(message: &str, secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// The object as JSON text, its keys in order, with `signature` last.
pub fn signed_object(fields: &[(&str, Field)], secret: &[u8]) -> String {
    let mut out = String::from("{");
    for (k, v) in fields {
        out.push_str(&quoted(k));
        out.push(':');
        match v {
            Field::Text(t) => out.push_str(&quoted(t)),
            Field::Object(pairs) => {
                let inner: Vec<String> = pairs.iter().map(|(a, b)| format!("{}:{}", quoted(a), quoted(b))).collect();
                out.push('{');
                out.push_str(&inner.join(","));
                out.push('}');
            }
        }
        out.push(',');
    }
    out.push_str("\"signature\":");
    out.push_str(&quoted(&sign(&message(fields), secret)));
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_follows_the_php_formula() {
        let fields: Vec<(&str, Field)> = vec![
            ("id", "Q96G3MSNW8MPQRTX".to_string().into()),
            ("payouts", Field::Object(vec![("a".into(), "1".into()), ("b".into(), "2".into())])),
            ("delay", "0".to_string().into()),
        ];
        assert_eq!(message(&fields), "Q96G3MSNW8MPQRTX|a,b,1,2|0");
        let json = signed_object(&fields, b"k");
        assert!(json.starts_with(r#"{"id":"Q96G3MSNW8MPQRTX","payouts":{"a":"1","b":"2"},"delay":"0","signature":""#), "{json}");
    }
}
