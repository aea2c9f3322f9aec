//! Building blocks of outgoing notifications: the signature of Kassa's own webhooks,
//! and the guard that keeps callback targets away from internal addresses (SSRF).
//!
//! Kassa's own webhooks follow the Standard Webhooks scheme: headers `webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256(id.timestamp.body)>`,
//! with several space-separated signatures while a secret is being rotated. A dialect's
//! callbacks are signed (or not) by its own `CallbackFormat`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::special_addresses::special;

/// Prefix of Standard Webhooks secrets (`whsec_` + base64 of the key bytes).
pub const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook secret must be whsec_ followed by base64")]
    BadSecret,
    #[error("no valid signature")]
    NoMatch,
    #[error("timestamp outside the tolerance")]
    Stale,
}

/// Decodes a `whsec_…` secret into key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).ok_or(SignatureError::BadSecret)?;
    let key = B64.decode(b64).map_err(|_| SignatureError::BadSecret)?;
    if key.len() < 16 {
        return Err(SignatureError::BadSecret);
    }
    Ok(key)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated
/// (two while a secret is being rotated, so receivers with either one accept).
pub fn standard_signature(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    keys.iter()
        .map(|k| format!("v1,{}", B64.encode(hmac_sha256(k, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a `webhook-signature` header as a receiver would: constant-time, any one
/// matching `v1` signature suffices; empty or truncated signatures never match.
pub fn verify_standard(
    key: &[u8],
    header: &str,
    msg_id: &str,
    timestamp: i64,
    now: i64,
    tolerance_secs: i64,
    body: &[u8],
) -> Result<(), SignatureError> {
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let ts = timestamp.to_string();
    let expected = hmac_sha256(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    for candidate in header.split(' ') {
        let Some(sig) = candidate.strip_prefix("v1,") else { continue };
        let Ok(bytes) = B64.decode(sig) else { continue };
        if bytes.len() == expected.len() && bool::from(bytes.ct_eq(&expected)) {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

/// Where callbacks may go.
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetPolicy {
    /// Development only: allow loopback targets (a local test receiver).
    pub allow_loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("callback URL is not a valid http(s) URL")]
    BadUrl,
    #[error("callback URL must not carry credentials")]
    Credentials,
    #[error("callback target {0} is a {1} address")]
    Forbidden(IpAddr, &'static str),
    #[error("callback host {0} does not resolve")]
    Unresolved(String),
}

/// Why an address must not receive callbacks, if it must not: every address that is
/// not globally reachable per IANA's special-purpose registries
/// (`special_addresses`), IPv6 outside global unicast (2000::/3), and, for forms that
/// embed an IPv4 address (NAT64 64:ff9b::/96, 6to4, IPv4-compatible ::a.b.c.d), what
/// the embedded address is.
pub fn forbidden_kind(ip: IpAddr, policy: TargetPolicy) -> Option<&'static str> {
    if let IpAddr::V6(v6) = ip {
        let seg = v6.segments();
        let embedded = if seg[0] == 0x0064 && seg[1] == 0xff9b && seg[2..6] == [0; 4] {
            Some((seg[6], seg[7]))
        } else if seg[0] == 0x2002 {
            Some((seg[1], seg[2]))
        } else if seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
            Some((seg[6], seg[7]))
        } else {
            None
        };
        if let Some((hi, lo)) = embedded {
            let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            return forbidden_kind(IpAddr::V4(v4), policy);
        }
    }
    if ip.is_loopback() {
        return (!policy.allow_loopback).then_some("loopback");
    }
    if ip == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)) {
        return Some("cloud metadata");
    }
    match special(ip) {
        Some(s) => (!s.global).then_some(s.kind),
        None => match ip {
            IpAddr::V6(v6) if (v6.segments()[0] & 0xe000) != 0x2000 => Some("reserved"),
            _ => None,
        },
    }
}

/// Checks a callback URL's form (at registration).
pub fn check_url(text: &str) -> Result<url::Url, TargetError> {
    let url = url::Url::parse(text).map_err(|_| TargetError::BadUrl)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TargetError::BadUrl);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    Ok(url)
}

/// Resolves a callback URL and checks every address it resolves to; done at
/// registration and again right before each delivery (DNS answers change).
pub async fn resolve_target(text: &str, policy: TargetPolicy) -> Result<(url::Url, Vec<SocketAddr>), TargetError> {
    let url = check_url(text)?;
    let host = url.host_str().ok_or(TargetError::BadUrl)?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().ok_or(TargetError::BadUrl)?;
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port)).await.map_err(|_| TargetError::Unresolved(host.clone()))?.collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved(host));
    }
    for a in &addrs {
        if let Some(kind) = forbidden_kind(a.ip(), policy) {
            return Err(TargetError::Forbidden(a.ip(), kind));
        }
    }
    Ok((url, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_sign_verify_and_rotate() {
        let old = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = vec![7u8; 32];
        let body = br#"{"type":"deposit.credited"}"#;
        let header = standard_signature(&[old.clone(), new.clone()], "msg_1", 1_700_000_000, body);
        assert_eq!(header.split(' ').count(), 2);
        // Receivers holding either secret accept during the overlap.
        assert_eq!(verify_standard(&old, &header, "msg_1", 1_700_000_000, 1_700_000_010, 300, body), Ok(()));
        assert_eq!(verify_standard(&new, &header, "msg_1", 1_700_000_000, 1_700_000_010, 300, body), Ok(()));
        // Tampered body, other id, stale timestamp, empty and truncated signatures.
        assert_eq!(verify_standard(&old, &header, "msg_1", 1_700_000_000, 1_700_000_010, 300, b"{}"), Err(SignatureError::NoMatch));
        assert_eq!(verify_standard(&old, &header, "msg_2", 1_700_000_000, 1_700_000_010, 300, body), Err(SignatureError::NoMatch));
        assert_eq!(verify_standard(&old, &header, "msg_1", 1_700_000_000, 1_700_001_000, 300, body), Err(SignatureError::Stale));
        assert_eq!(verify_standard(&old, "v1,", "msg_1", 1_700_000_000, 1_700_000_000, 300, body), Err(SignatureError::NoMatch));
        let truncated = &header[..20];
        assert_eq!(verify_standard(&old, truncated, "msg_1", 1_700_000_000, 1_700_000_000, 300, body), Err(SignatureError::NoMatch));
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
    }

    /// An independent check of the scheme: the signed content is `id.timestamp.body`.
    #[test]
    fn standard_webhooks_signs_id_dot_timestamp_dot_body() {
        let key = b"0123456789abcdef0123456789abcdef";
        let header = standard_signature(&[key.to_vec()], "msg_x", 42, b"hello");
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(b"msg_x.42.hello");
        assert_eq!(header, format!("v1,{}", B64.encode(mac.finalize().into_bytes())));
    }

    #[test]
    fn internal_addresses_are_refused() {
        let p = TargetPolicy::default();
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::ffff:0:0", "IPv4-mapped"),
            ("::ffff:8.8.8.8", "IPv4-mapped"),
            ("192.0.0.1", "reserved"),
            ("192.0.2.7", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.200", "documentation"),
            ("192.88.99.1", "reserved"),
            ("2001:db8::1", "documentation"),
            ("100::1", "reserved"),
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("4000::1", "reserved"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "private"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("255.255.255.255", "reserved"),
            ("fec0::1", "private"),
            ("::a9fe:a9fe", "cloud metadata"),
            ("::7f00:1", "loopback"),
            ("2002:a00:1::", "private"),
            ("2002:a9fe:a9fe::1", "cloud metadata"),
        ] {
            assert_eq!(forbidden_kind(ip.parse().unwrap(), p), Some(kind), "{ip}");
        }
        for ok in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8", "2002:5db8:d822::1"] {
            assert_eq!(forbidden_kind(ok.parse().unwrap(), p), None, "{ok}");
        }
        let dev = TargetPolicy { allow_loopback: true };
        assert_eq!(forbidden_kind("127.0.0.1".parse().unwrap(), dev), None);
        assert_eq!(forbidden_kind("::1".parse().unwrap(), dev), None);
        assert_eq!(forbidden_kind("10.0.0.1".parse().unwrap(), dev), Some("private"), "only loopback is allowed in dev");
    }

    /// Each registry entry, at both ends of its block: refused when it is not
    /// globally reachable, served when it is.
    #[test]
    fn every_special_purpose_block_is_judged_by_the_registry() {
        let p = TargetPolicy::default();
        for s in crate::special_addresses::IPV4.iter().chain(crate::special_addresses::IPV6) {
            let net: ipnet::IpNet = s.block.parse().unwrap();
            for ip in [net.network(), net.broadcast()] {
                let found = crate::special_addresses::special(ip).unwrap();
                let verdict = forbidden_kind(ip, p);
                if !s.global {
                    assert!(verdict.is_some(), "{ip} ({}) must be refused", s.name);
                    if found.block == s.block && !ip.is_loopback() {
                        assert_eq!(verdict, Some(s.kind), "{ip} ({})", s.name);
                    }
                } else if found.block == s.block && !matches!(s.kind, "translated" | "6to4") {
                    // Embedding forms are judged by the IPv4 address they carry (tested above).
                    assert_eq!(verdict, None, "{ip} ({}) is globally reachable", s.name);
                }
            }
        }
    }

    #[tokio::test]
    async fn targets_are_checked_after_resolution() {
        let p = TargetPolicy::default();
        // A name that resolves to loopback is refused like the address itself.
        assert!(matches!(resolve_target("http://localhost:9/hook", p).await, Err(TargetError::Forbidden(_, "loopback"))));
        assert!(matches!(resolve_target("http://169.254.169.254/latest/meta-data", p).await, Err(TargetError::Forbidden(_, "cloud metadata"))));
        assert!(matches!(resolve_target("http://10.0.0.5/", p).await, Err(TargetError::Forbidden(_, "private"))));
        assert!(matches!(resolve_target("http://[::1]:8080/", p).await, Err(TargetError::Forbidden(_, "loopback"))));
        assert_eq!(resolve_target("ftp://example.com/", p).await.unwrap_err(), TargetError::BadUrl);
        assert_eq!(resolve_target("http://user:pw@example.com/", p).await.unwrap_err(), TargetError::Credentials);
        assert_eq!(resolve_target("not a url", p).await.unwrap_err(), TargetError::BadUrl);
        let dev = TargetPolicy { allow_loopback: true };
        let (_, addrs) = resolve_target("http://localhost:9/hook", dev).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
