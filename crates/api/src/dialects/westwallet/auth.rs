//! WestWallet request signatures, as the four official clients make them (spec
//! `westwallet.md` §2): `X-ACCESS-SIGN` = hex HMAC-SHA256(secret, timestamp + payload),
//! where the payload is the body as sent (Python's `json.dumps`, JavaScript's
//! `JSON.stringify`, Go's sorted and `\u003c`-escaped JSON, PHP's `json_encode` with
//! `\u00fc` escapes), or for a GET its query parameters re-serialised each client's way,
//! or nothing at all. The Python client signs UTF-8 but sends Latin-1: when that
//! candidate is the one that matches, the body is read as Latin-1.
//!
//! Verification only; the WestWallet dialect module builds on it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A verified request: the JSON body to read (re-encoded to UTF-8 when the Python
/// client's Latin-1 quirk applied), or the query parameters of a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The body, as UTF-8 JSON text (empty when there was none).
    Body(String),
    /// A GET's query parameters, in order.
    Query(Vec<(String, String)>),
    /// A correctly signed body that is not UTF-8 text: a bad request, not a bad signature.
    NotText,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-ACCESS-SIGN does not match the request")]
    Mismatch,
    #[error("X-ACCESS-SIGN is not 64 hexadecimal characters")]
    Malformed,
}

fn hmac_hex(secret: &[u8], timestamp: &str, payload: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// How a client escapes a JSON string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Python `json.dumps(ensure_ascii=False)` and JavaScript: raw non-ASCII.
    Raw,
    /// PHP `json_encode` (unescaped slashes): non-ASCII as lowercase `\uXXXX`.
    AsciiLower,
}

fn json_string(out: &mut String, s: &str, style: Style) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if !c.is_ascii() && style == Style::AsciiLower => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A flat object of string values: `pretty` uses Python's `", "` and `": "` separators.
fn dump(pairs: &[(String, String)], pretty: bool, style: Style) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(if pretty { ", " } else { "," });
        }
        json_string(&mut out, k, style);
        out.push_str(if pretty { ": " } else { ":" });
        json_string(&mut out, v, style);
    }
    out.push('}');
    out
}

/// Checks a request's signature against every payload an official client may have
/// signed; returns what to read from the request.
pub fn verify(secret: &[u8], timestamp: &str, sign: &str, is_get: bool, query: &str, body: &[u8]) -> Result<Verified, SignatureError> {
    let given = hex::decode(sign.trim()).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let matches = |payload: &[u8]| bool::from(hmac_hex(secret, timestamp, payload).ct_eq(&given));
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    if !body.is_empty() {
        if matches(body) {
            return Ok(text(body).map_or(Verified::NotText, Verified::Body));
        }
        if body.iter().any(|b| *b >= 0x80) {
            // Python: signed the UTF-8 text, sent it Latin-1 encoded.
            let latin1: String = body.iter().map(|b| char::from(*b)).collect();
            if matches(latin1.as_bytes()) {
                return Ok(Verified::Body(latin1));
            }
        }
    } else if is_get && !query.is_empty() {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        for candidate in [dump(&pairs, true, Style::Raw), dump(&pairs, false, Style::Raw), dump(&pairs, false, Style::AsciiLower)] {
            if matches(candidate.as_bytes()) {
                return Ok(Verified::Query(pairs));
            }
        }
    }
    // Without parameters every client signs the timestamp alone; with parameters that
    // candidate is never tried (a captured signature could be replayed onto them).
    if body.is_empty() && query.is_empty() && matches(b"") {
        return Ok(Verified::Body(String::new()));
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"wsecret-0123456789";
    const TS: &str = "1700000000";

    fn sign(payload: &str) -> String {
        hex::encode(hmac_hex(SECRET, TS, payload.as_bytes()))
    }

    /// Fixed vectors: signatures computed independently (Python's `hmac` over the
    /// payloads the Go and PHP clients produce, and the Python client's own dump).
    #[test]
    fn fixed_vectors() {
        let go = r#"{"address":"tb1q","amount":"0.1","currency":"BTC","description":"\u003cb\u003e \u0026"}"#;
        let go_sign = "72c6885a1d1e792d95bbe2726ab12ee0173274c2e4bcbba4db10010677c1710b";
        assert_eq!(verify(SECRET, TS, go_sign, true, "", go.as_bytes()), Ok(Verified::Body(go.into())), "Go: sorted, \\u003c, GET with a body");
        let php_query = "label=caf%C3%A9+%2F+x";
        let php_sign = "fdf69c58c9c3e6f548631ab2984c03c07ebea76cb2188795dd6ddf4edca3d382";
        assert_eq!(verify(SECRET, TS, php_sign, true, php_query, b""), Ok(Verified::Query(vec![("label".into(), "café / x".into())])), "PHP: \\u00e9, unescaped slash");
        let py_sign = "6305670ed143629b718c29e4c0ec8c9f34ed09a785af3fbe0c307e92bb944713";
        let sent: Vec<u8> = r#"{"currency": "BTC", "description": "ü"}"#.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(
            verify(SECRET, TS, py_sign, false, "", &sent),
            Ok(Verified::Body(r#"{"currency": "BTC", "description": "ü"}"#.into())),
            "Python: Latin-1 on the wire"
        );
    }

    #[test]
    fn each_client_style_verifies() {
        // JavaScript: compact body, raw UTF-8.
        let js = r#"{"currency":"BTC","amount":"0.1","address":"tb1q","description":"Café"}"#;
        assert_eq!(verify(SECRET, TS, &sign(js), false, "", js.as_bytes()), Ok(Verified::Body(js.into())));
        // Go: sorted keys, < > & escaped as \u003c…, sent as the body of a GET too.
        let go = r#"{"address":"tb1q","amount":"0.1","currency":"BTC","description":"\u003cb\u003e \u0026"}"#;
        assert_eq!(verify(SECRET, TS, &sign(go), true, "", go.as_bytes()), Ok(Verified::Body(go.into())));
        // PHP: GET with a query string, signed as compact JSON with \u escapes.
        let php_signed = r#"{"label":"caf\u00e9 \/ x"}"#.replace("\\/", "/");
        let q = "label=caf%C3%A9+%2F+x";
        assert_eq!(verify(SECRET, TS, &sign(&php_signed), true, q, b""), Ok(Verified::Query(vec![("label".into(), "café / x".into())])));
        // Python: GET query signed as json.dumps with ", " and ": ".
        let q = "currency=BTC&limit=10";
        let py = r#"{"currency": "BTC", "limit": "10"}"#;
        assert!(matches!(verify(SECRET, TS, &sign(py), true, q, b""), Ok(Verified::Query(_))));
        // JavaScript GET: compact.
        assert!(matches!(verify(SECRET, TS, &sign(r#"{"currency":"BTC","limit":"10"}"#), true, q, b""), Ok(Verified::Query(_))));
        // No parameters at all: the timestamp alone.
        assert_eq!(verify(SECRET, TS, &sign(""), true, "", b""), Ok(Verified::Body(String::new())));
    }

    #[test]
    fn python_latin1_quirk() {
        // Signed over UTF-8 "ü" (C3 BC), sent as the single Latin-1 byte FC.
        let signed = r#"{"currency": "BTC", "description": "ü"}"#;
        let sent: Vec<u8> = signed.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(sent.iter().filter(|b| **b == 0xFC).count(), 1);
        assert_eq!(verify(SECRET, TS, &sign(signed), false, "", &sent), Ok(Verified::Body(signed.into())));
    }

    #[test]
    fn refusals() {
        let body = r#"{"currency":"BTC"}"#;
        let good = sign(body);
        assert_eq!(verify(SECRET, TS, &good, false, "", br#"{"currency":"ETH"}"#), Err(SignatureError::Mismatch), "tampered body");
        assert_eq!(verify(SECRET, "1700000001", &good, false, "", body.as_bytes()), Err(SignatureError::Mismatch), "other timestamp");
        assert_eq!(verify(b"other", TS, &good, false, "", body.as_bytes()), Err(SignatureError::Mismatch), "wrong secret");
        assert_eq!(verify(SECRET, TS, "", false, "", body.as_bytes()), Err(SignatureError::Malformed), "empty");
        assert_eq!(verify(SECRET, TS, &good[..40], false, "", body.as_bytes()), Err(SignatureError::Malformed), "truncated");
        assert_eq!(verify(SECRET, TS, "zz", false, "", body.as_bytes()), Err(SignatureError::Malformed));
        // A signature over the timestamp alone (a request without parameters) never
        // authenticates a request with a body or a query: it could be replayed onto one.
        assert_eq!(verify(SECRET, TS, &sign(""), true, "currency=BTC", b""), Err(SignatureError::Mismatch));
        assert_eq!(verify(SECRET, TS, &sign(""), false, "", body.as_bytes()), Err(SignatureError::Mismatch));
    }
}
