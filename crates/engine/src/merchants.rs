//! Merchants and their API credentials: creation, revocation, and authentication of
//! requests (bearer tokens by hash; HMAC keys by public key with the decrypted secret).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use kassa_core::ledger::MerchantId;
use kassa_core::merchant::MerchantStatus;
pub use kassa_store::{ApiKeyRow, MerchantRow};
use kassa_store::{NewApiKey, StoreError};
use serde::Serialize;

use crate::secrets::{random_alphanumeric, random_hex, token_hash};
use crate::{Engine, EngineError};

/// How one dialect's API keys look. Each dialect registers its own (`kassa-api`'s
/// dialect registry); the engine issues and checks keys by it.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyKind {
    /// The dialect's name (`key create --dialect NAME`, and the key row's dialect).
    pub dialect: &'static str,
    pub shape: KeyShape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyShape {
    /// A public key (32 letters and digits) and an HMAC secret (48).
    Hmac,
    /// A bearer token that begins with its public id: `{prefix}{12}_{40}`.
    NamedToken { prefix: &'static str },
    /// A public id `{prefix}{12}` and a bearer token (64 lowercase hex characters,
    /// or 48 letters and digits), with a response-signing secret when asked.
    Token { prefix: &'static str, hex: bool, response_secret: bool },
}

impl KeyKind {
    /// HMAC-signed dialects get key + secret; the others get bearer tokens.
    pub fn style(&self) -> KeyStyle {
        match self.shape {
            KeyShape::Hmac => KeyStyle::Hmac,
            _ => KeyStyle::Bearer,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStyle {
    Hmac,
    Bearer,
}

impl KeyStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStyle::Hmac => "hmac",
            KeyStyle::Bearer => "bearer",
        }
    }
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Receive,
    Withdraw,
    Exchange,
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Receive, Scope::Withdraw, Scope::Exchange, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Receive => "receive",
            Scope::Withdraw => "withdraw",
            Scope::Exchange => "exchange",
            Scope::Manage => "manage",
        }
    }

    /// Parses a comma-separated list (`"read,receive"`); `"all"` means every scope.
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, EngineError> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                return Ok(Self::ALL.to_vec());
            }
            let scope = Self::ALL.into_iter().find(|s| s.as_str() == part).ok_or_else(|| {
                EngineError::invalid("scopes", format!("{part:?} is not one of read, receive, withdraw, exchange, manage, all"))
            })?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        if out.is_empty() {
            return Err(EngineError::invalid("scopes", "at least one scope is needed"));
        }
        out.sort();
        Ok(out)
    }

    fn join(scopes: &[Scope]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Parses a comma-separated allowlist of IP addresses and CIDR networks.
pub fn parse_ip_allowlist(text: &str) -> Result<Vec<IpNet>, EngineError> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            IpNet::from_str(p)
                .or_else(|_| IpAddr::from_str(p).map(IpNet::from))
                .map_err(|_| EngineError::invalid("ip_allowlist", format!("{p:?} is not an IP address or CIDR network")))
        })
        .collect()
}

/// A freshly created key. The secret or token is shown once and never stored in clear.
#[derive(Clone, Serialize)]
pub struct CreatedKey {
    pub merchant_id: i64,
    pub dialect: &'static str,
    pub style: KeyStyle,
    /// The key's public identifier (sent as the API key by HMAC dialects; used to revoke).
    pub public_key: String,
    /// HMAC secret (HMAC dialects) or response-signing secret (dialects that sign responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Bearer token (bearer dialects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub scopes: Vec<Scope>,
    pub ip_allowlist: Vec<String>,
    pub label: String,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey").field("public_key", &self.public_key).field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

/// Who a request acts for, once authenticated.
#[derive(Clone, Debug)]
pub struct Principal {
    pub merchant: MerchantId,
    pub key_id: i64,
    pub public_key: String,
    pub dialect: &'static str,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key was given")]
    Missing,
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key belongs to another API dialect")]
    WrongDialect,
    #[error("the merchant is blocked")]
    MerchantBlocked,
    #[error("requests from this IP address are not allowed for this key")]
    IpNotAllowed,
    #[error("the API key lacks the {} scope", .0.as_str())]
    MissingScope(Scope),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl AuthError {
    /// True for failures of identity (401-like); false for refusals of permission (403-like).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, AuthError::Missing | AuthError::Unknown | AuthError::Revoked | AuthError::WrongDialect)
    }
}

fn validate_merchant_name(name: &str) -> Result<(), EngineError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid(
            "name",
            "a merchant name is 1-64 characters of letters, digits, '-', '_' or '.', and not only digits",
        ))
    }
}

impl Engine {
    /// The registered key kind of `dialect`.
    pub fn key_kind(&self, dialect: &str) -> Result<&'static KeyKind, EngineError> {
        self.key_kinds.iter().copied().find(|k| k.dialect == dialect).ok_or_else(|| {
            let names: Vec<&str> = self.key_kinds.iter().map(|k| k.dialect).collect();
            EngineError::invalid("dialect", format!("{dialect:?} is not one of {}", names.join(", ")))
        })
    }

    pub async fn create_merchant(&self, name: &str) -> Result<MerchantRow, EngineError> {
        validate_merchant_name(name)?;
        self.store.create_merchant(name).await.map_err(|e| match e {
            StoreError::Duplicate { .. } => EngineError::Conflict(format!("a merchant named {name:?} already exists")),
            e => e.into(),
        })
    }

    /// Blocks a merchant: from the next request on (at once in this process, within
    /// the key cache's lifetime in others) every API call with its keys is refused, so
    /// it starts no withdrawal or exchange. Deposits to its addresses are still seen
    /// and credited, and what was already queued completes (nothing is left half-done).
    pub async fn block_merchant(&self, reference: &str, reason: &str, operator: &str) -> Result<MerchantRow, EngineError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
            return Err(EngineError::invalid("reason", "a block needs a reason: 1-500 characters, no control characters"));
        }
        self.set_merchant_status(reference, MerchantStatus::Blocked, Some(reason), operator).await
    }

    /// Unblocks a blocked merchant.
    pub async fn unblock_merchant(&self, reference: &str, operator: &str) -> Result<MerchantRow, EngineError> {
        self.set_merchant_status(reference, MerchantStatus::Active, None, operator).await
    }

    async fn set_merchant_status(&self, reference: &str, status: MerchantStatus, reason: Option<&str>, operator: &str)
        -> Result<MerchantRow, EngineError> {
        let m = self.find_merchant(reference).await?;
        if !self.store.set_merchant_status(MerchantId(m.id), status.as_str(), reason).await? {
            return Err(EngineError::Conflict(format!("merchant {} is already {status}", m.name)));
        }
        // Cached keys carry their merchant's status: drop them so this process acts at once.
        self.key_cache.clear();
        tracing::warn!(merchant = m.id, name = %m.name, %status, reason = reason.unwrap_or(""), operator, "merchant status changed");
        self.find_merchant(&m.id.to_string()).await
    }

    pub async fn list_merchants(&self) -> Result<Vec<MerchantRow>, EngineError> {
        Ok(self.store.list_merchants().await?)
    }

    /// A merchant by numeric id or by name.
    pub async fn find_merchant(&self, reference: &str) -> Result<MerchantRow, EngineError> {
        let found = match reference.parse::<i64>() {
            Ok(id) => self.store.merchant(MerchantId(id)).await?,
            Err(_) => self.store.merchant_by_name(reference).await?,
        };
        found.ok_or_else(|| EngineError::MerchantNotFound(reference.to_string()))
    }

    pub async fn create_key(
        &self,
        merchant: MerchantId,
        dialect: &str,
        scopes: Vec<Scope>,
        ip_allowlist: Vec<IpNet>,
        label: &str,
    ) -> Result<CreatedKey, EngineError> {
        if label.len() > 200 {
            return Err(EngineError::invalid("label", "at most 200 characters"));
        }
        let kind = self.key_kind(dialect)?;
        let dialect = kind.dialect;
        let style = kind.style();
        let (public_key, token, secret) = match kind.shape {
            KeyShape::Hmac => (random_alphanumeric(32), None, Some(random_alphanumeric(48))),
            KeyShape::NamedToken { prefix } => {
                let id = random_alphanumeric(12);
                (format!("{prefix}{id}"), Some(format!("{prefix}{id}_{}", random_alphanumeric(40))), None)
            }
            KeyShape::Token { prefix, hex, response_secret } => (
                format!("{prefix}{}", random_alphanumeric(12)),
                Some(if hex { random_hex(32) } else { random_alphanumeric(48) }),
                response_secret.then(|| random_alphanumeric(48)),
            ),
        };
        let (nonce, ciphertext) = match &secret {
            Some(s) => {
                let (n, c) = self.master_key.encrypt(s.as_bytes());
                (Some(n), Some(c))
            }
            None => (None, None),
        };
        let nets: Vec<String> = ip_allowlist.iter().map(|n| n.to_string()).collect();
        let row = self
            .store
            .insert_api_key(&NewApiKey {
                merchant,
                dialect: dialect.to_string(),
                style: style.as_str().to_string(),
                public_key: public_key.clone(),
                token_hash: token.as_deref().map(token_hash),
                secret_nonce: nonce,
                secret_ciphertext: ciphertext,
                scopes: Scope::join(&scopes),
                ip_allowlist: nets.join(","),
                label: label.to_string(),
            })
            .await?;
        tracing::info!(merchant = merchant.0, dialect, public_key = %row.public_key, "API key created");
        Ok(CreatedKey { merchant_id: merchant.0, dialect, style, public_key, secret, token, scopes, ip_allowlist: nets, label: label.to_string() })
    }

    /// Revokes a key by its public identifier. Takes effect on the next request to
    /// this process; other processes stop accepting it within their key cache's lifetime.
    pub async fn revoke_key(&self, public_key: &str) -> Result<(), EngineError> {
        self.key_cache.forget(&public_key.to_string());
        if self.store.revoke_api_key(public_key).await? {
            tracing::info!(public_key, "API key revoked");
            Ok(())
        } else {
            match self.store.api_key_by_public(public_key).await? {
                Some(_) => Err(EngineError::Conflict(format!("API key {public_key} is already revoked"))),
                None => Err(EngineError::invalid("public_key", format!("no API key {public_key:?}"))),
            }
        }
    }

    pub async fn list_keys(&self, merchant: MerchantId) -> Result<Vec<ApiKeyRow>, EngineError> {
        Ok(self.store.list_api_keys(merchant).await?)
    }

    /// The signing secrets of an active merchant's HMAC keys of `dialect` with the
    /// `receive` scope that are not revoked (what a link signed by the merchant to take
    /// an address is checked against), and its name.
    /// `NotFound` for an unknown or blocked merchant.
    pub async fn merchant_signing_secrets(&self, merchant: MerchantId, dialect: &str) -> Result<(String, Vec<Vec<u8>>), EngineError> {
        let m = self.store.merchant(merchant).await?.ok_or(EngineError::NotFound("merchant"))?;
        if MerchantStatus::parse(&m.status) != Some(MerchantStatus::Active) {
            return Err(EngineError::NotFound("merchant"));
        }
        let mut secrets = Vec::new();
        for k in self.store.list_api_keys(merchant).await? {
            // Only a key that may take addresses signs links that take them.
            let receives = Scope::parse_list(&k.scopes).is_ok_and(|s| s.contains(&Scope::Receive));
            if k.revoked_at_ms.is_some() || k.dialect != dialect || k.style != KeyStyle::Hmac.as_str() || !receives {
                continue;
            }
            if let (Some(n), Some(c)) = (&k.secret_nonce, &k.secret_ciphertext) {
                secrets.push(self.master_key.decrypt(n, c)?);
            }
        }
        Ok((m.name, secrets))
    }

    /// Authenticates a bearer token for `dialect`, from `client_ip`.
    pub async fn authenticate_bearer(&self, token: &str, dialect: &str, client_ip: Option<IpAddr>) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let row = self.store.api_key_by_token_hash(&token_hash(token)).await.map_err(EngineError::from)?;
        self.admit(row.ok_or(AuthError::Unknown)?, dialect, client_ip)
    }

    /// The response-signing secret of the key a principal authenticated with (keys of
    /// dialects that sign their answers).
    pub async fn response_secret(&self, principal: &Principal) -> Result<Vec<u8>, EngineError> {
        let row = self.store.api_key_by_public(&principal.public_key).await?.ok_or(EngineError::NotFound("API key"))?;
        match (&row.secret_nonce, &row.secret_ciphertext) {
            (Some(n), Some(c)) => Ok(self.master_key.decrypt(n, c)?),
            _ => Err(EngineError::Conflict(format!("API key {} has no response secret", row.public_key))),
        }
    }

    /// Looks up an HMAC key for `dialect` and returns its decrypted secret, for the
    /// dialect to verify the request's signature, with whether the key may be used
    /// (revoked, other dialect, blocked merchant, IP allowlist). Dialects check the
    /// signature first and only then tell the caller why a valid request is refused.
    pub async fn hmac_key(
        &self,
        public_key: &str,
        dialect: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<(Result<Principal, AuthError>, Vec<u8>), AuthError> {
        if public_key.is_empty() {
            return Err(AuthError::Missing);
        }
        let (row, secret) = match self.key_cache.get(&public_key.to_string(), 0) {
            Some(found) => found,
            None => {
                let row = self.store.api_key_by_public(public_key).await.map_err(EngineError::from)?.ok_or(AuthError::Unknown)?;
                if row.style != KeyStyle::Hmac.as_str() {
                    return Err(AuthError::Unknown);
                }
                let secret = match (&row.secret_nonce, &row.secret_ciphertext) {
                    (Some(n), Some(c)) => self.master_key.decrypt(n, c)?,
                    _ => return Err(AuthError::Unknown),
                };
                self.key_cache.put(public_key.to_string(), (row.clone(), secret.clone()), 0);
                (row, secret)
            }
        };
        Ok((self.admit(row, dialect, client_ip), secret))
    }

    fn admit(&self, row: ApiKeyRow, dialect: &str, client_ip: Option<IpAddr>) -> Result<Principal, AuthError> {
        let dialect = self.key_kind(dialect)?.dialect;
        if row.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked);
        }
        if row.dialect != dialect {
            return Err(AuthError::WrongDialect);
        }
        if MerchantStatus::parse(&row.merchant_status) != Some(MerchantStatus::Active) {
            return Err(AuthError::MerchantBlocked);
        }
        let allow = parse_ip_allowlist(&row.ip_allowlist)?;
        if !allow.is_empty() {
            let ip = client_ip.map(|ip| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            });
            if !ip.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip))) {
                return Err(AuthError::IpNotAllowed);
            }
        }
        let scopes = Scope::parse_list(&row.scopes)?;
        Ok(Principal { merchant: MerchantId(row.merchant_id), key_id: row.id, public_key: row.public_key, dialect, scopes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists() {
        assert_eq!(Scope::parse_list("receive, read,read").unwrap(), vec![Scope::Read, Scope::Receive]);
        assert_eq!(Scope::parse_list("all").unwrap().len(), 5);
        assert!(Scope::parse_list("").is_err());
        assert!(Scope::parse_list("read,admin").is_err());
    }

    #[test]
    fn ip_allowlists() {
        let nets = parse_ip_allowlist("10.0.0.0/8, 192.168.1.7,::1").unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(parse_ip_allowlist("10.0.0.0/33").is_err());
        assert!(parse_ip_allowlist("example.com").is_err());
    }

    #[test]
    fn merchant_names() {
        assert!(validate_merchant_name("acme-shop_1.eu").is_ok());
        assert!(validate_merchant_name("").is_err());
        assert!(validate_merchant_name("12").is_err(), "numeric names would shadow ids");
        assert!(validate_merchant_name("a b").is_err());
    }
}
