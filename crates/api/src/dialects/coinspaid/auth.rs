//! CoinsPaid-style request signatures (spec `coinspaid.md` §1): `X-Processing-Signature`
//! is the lowercase hex HMAC-SHA512 of the raw request body, keyed with the merchant's
//! secret. Nothing else is signed, so the body is checked exactly as it arrived, before
//! it is parsed (clients serialise differently: Go's struct order, PHP's `\/`, `\u003c`).

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha512;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Processing-Signature does not match the request body")]
    Mismatch,
    #[error("X-Processing-Signature is not 128 hexadecimal characters")]
    Malformed,
}

/// The signature of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> [u8; 64] {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Checks `signature` (hex, either case) over the raw `body`, in constant time.
pub fn verify(secret: &[u8], signature: &str, body: &[u8]) -> Result<(), SignatureError> {
    let given = hex::decode(signature.trim()).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    if bool::from(sign(secret, body).ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The request's parameters: an object, or none at all for an empty body, `null`, `[]`
/// or `{}` (what real clients send when there is nothing to say). Anything else is not
/// a request this API understands.
pub fn params(body: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8 text")?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(Value::Array(list)) if list.is_empty() => Ok(Map::new()),
        Ok(_) => Err("the body must be a JSON object"),
        Err(_) => Err("the body is not valid JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented test vector (spec §1, both seeds).
    #[test]
    fn documented_vector() {
        let body = br#"{"currency":"BTC","foreign_id":"123456"}"#;
        let expected = "03c25fcf7cd35e7d995e402cd5d51edd72d48e1471e865907967809a0c189ba55b90815f20e2bb10f82c7a9e9d865546fda58989c2ae9e8e2ff7bc29195fa1ec";
        assert_eq!(hex::encode(sign(b"AbCdEfG123456", body)), expected);
        assert_eq!(verify(b"AbCdEfG123456", expected, body), Ok(()));
        assert_eq!(verify(b"AbCdEfG123456", &expected.to_ascii_uppercase(), body), Ok(()));
    }

    #[test]
    fn the_raw_bytes_are_what_is_signed() {
        let secret = b"s3cret";
        // PHP escapes slashes, Go escapes < > &: each verifies as sent, and the same
        // value serialised another way does not.
        for body in [r#"{"address":"http:\/\/x","foreign_id":"1"}"#, r#"{"foreign_id":"\u003cb\u003e","currency":"LTC"}"#] {
            let sig = hex::encode(sign(secret, body.as_bytes()));
            assert_eq!(verify(secret, &sig, body.as_bytes()), Ok(()));
            let reserialised = serde_json::to_string(&serde_json::from_str::<Value>(body).unwrap()).unwrap();
            assert_ne!(reserialised, body);
            assert_eq!(verify(secret, &sig, reserialised.as_bytes()), Err(SignatureError::Mismatch));
        }
        let sig = hex::encode(sign(secret, b"{}"));
        assert_eq!(verify(b"other", &sig, b"{}"), Err(SignatureError::Mismatch));
        assert_eq!(verify(secret, &sig[..100], b"{}"), Err(SignatureError::Malformed));
        assert_eq!(verify(secret, "", b"{}"), Err(SignatureError::Malformed));
        assert_eq!(verify(secret, &"zz".repeat(64), b"{}"), Err(SignatureError::Malformed));
    }

    #[test]
    fn no_parameters_in_every_spelling() {
        for body in ["", "  ", "null", "[]", "{}", " {} "] {
            assert_eq!(params(body.as_bytes()), Ok(Map::new()), "{body:?}");
        }
        assert_eq!(params(br#"{"currency":"LTC"}"#).unwrap()["currency"], "LTC");
        assert_eq!(params(b"[1]"), Err("the body must be a JSON object"));
        assert_eq!(params(b"\"x\""), Err("the body must be a JSON object"));
        assert_eq!(params(b"{"), Err("the body is not valid JSON"));
        assert_eq!(params(&[0xff, 0xfe]), Err("the body is not UTF-8 text"));
    }
}
