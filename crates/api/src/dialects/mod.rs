//! The API dialects Kassa speaks, one folder each (router, authentication, wire
//! structs, the one engine-error → dialect-code map), registered once in
//! [`DIALECTS`]. The HTTP layer knows a dialect only through its [`Dialect`]
//! entry: where it is mounted, which paths are its own, and how it words the
//! refusals the server itself makes (unknown path, body too large, timeout), and
//! its callback formats, which the notifier finds by name.

pub mod coinspaid;
pub mod native;
pub mod wallets3;
pub mod westwallet;
pub mod whir;

use std::collections::BTreeMap;
use std::sync::Arc;

use kassa_engine::callbacks::{CallbackFormat, CallbackFormats};
use kassa_engine::merchants::KeyKind;
use kassa_engine::Engine;

use axum::http::Method;
use axum::response::Response;
use axum::Router;

use crate::limits::Group;
use crate::AppState;

/// A refusal the HTTP layer makes before (or instead of) a handler answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    BodyTooLarge,
    Timeout,
    /// A rate limit (`crate::limits`); the HTTP layer adds `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
}

/// One dialect's registration.
pub struct Dialect {
    /// Its name in configuration (`http.mounts.NAME`) and in logs.
    pub name: &'static str,
    /// Where it is mounted unless configured otherwise (`""` is the server root).
    pub default_mounts: &'static [&'static str],
    /// Its routes, relative to a mount.
    pub router: fn() -> Router<AppState>,
    /// Whether a path (relative to a mount) is one of its own: the server's refusals
    /// there take this dialect's shape.
    pub owns: fn(&str) -> bool,
    /// This dialect's answer for a refusal.
    pub refusal: fn(Refusal) -> Response,
    /// The rate limit group of a request (method, path relative to a mount) besides
    /// `default`: where it creates addresses, quotes or invoices.
    pub limit_group: fn(&Method, &str) -> Group,
    /// A limit its own documentation sets on a route, per client IP, on top of the
    /// configured groups (e.g. CoinsPaid's 30 `exchange/calculate` a minute).
    pub documented_limit: fn(&Method, &str) -> Option<DocumentedLimit>,
    /// Its callback formats (how its objects' notifications look and are signed).
    pub callbacks: fn() -> Vec<Arc<dyn CallbackFormat>>,
    /// How its API keys look, if it has keys of its own.
    pub keys: Option<&'static KeyKind>,
}

impl Dialect {
    /// A dialect registered for its keys (and callback formats) only: its API is not
    /// served yet, so it has no mounts and owns no path.
    pub const fn unmounted(name: &'static str, keys: &'static KeyKind, callbacks: fn() -> Vec<Arc<dyn CallbackFormat>>) -> Dialect {
        Dialect {
            name,
            default_mounts: &[],
            router: Router::<AppState>::new,
            owns: owns_nothing,
            refusal: native::refusal,
            limit_group: default_group,
            documented_limit: no_documented_limit,
            callbacks,
            keys: Some(keys),
        }
    }
}

fn owns_nothing(_: &str) -> bool {
    false
}

/// A limit a dialect's documentation sets on one of its routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocumentedLimit {
    /// Its name in logs and metrics, e.g. `coinspaid_exchange_calculate`.
    pub name: &'static str,
    /// Per client IP.
    pub per_ip: crate::limits::Rate,
}

/// A dialect whose documentation sets no limit of its own.
pub fn no_documented_limit(_: &Method, _: &str) -> Option<DocumentedLimit> {
    None
}

/// Every request of a dialect without groups counts against `default` only.
pub fn default_group(_: &Method, _: &str) -> Group {
    Group::Default
}

/// Every dialect, in the order their errors are matched (the first that owns a path
/// words its refusals; Kassa's own API words the rest).
pub const DIALECTS: &[Dialect] = &[westwallet::DIALECT, coinspaid::DIALECT, wallets3::DIALECT, whir::DIALECT, native::DIALECT];

/// Every registered dialect's callback formats, for the engine.
pub fn callback_formats() -> CallbackFormats {
    CallbackFormats::new(DIALECTS.iter().flat_map(|d| (d.callbacks)()).collect()).expect("the registered dialects' callback formats do not clash")
}

/// Every registered dialect's key kind.
pub fn key_kinds() -> Vec<&'static KeyKind> {
    DIALECTS.iter().filter_map(|d| d.keys).collect()
}

/// `engine` with every registered dialect's callback formats and key kinds.
pub fn register(engine: Engine) -> Engine {
    engine.with_callback_formats(callback_formats()).with_key_kinds(key_kinds())
}

/// Looks a dialect up by name.
pub fn find(name: &str) -> Option<&'static Dialect> {
    DIALECTS.iter().find(|d| d.name == name)
}

/// Where each dialect is mounted: the defaults, with the configured ones instead
/// where given. Refuses unknown dialect names, malformed prefixes and two dialects
/// on one prefix, naming the configuration key.
pub fn mounts(configured: &BTreeMap<String, Vec<String>>) -> Result<Vec<(String, &'static Dialect)>, String> {
    for name in configured.keys() {
        if find(name).is_none() {
            let known: Vec<&str> = DIALECTS.iter().map(|d| d.name).collect();
            return Err(format!("http.mounts.{name}: no such dialect (known: {})", known.join(", ")));
        }
    }
    let mut out: Vec<(String, &'static Dialect)> = Vec::new();
    for d in DIALECTS {
        let prefixes: Vec<String> = match configured.get(d.name) {
            Some(list) => list.clone(),
            None => d.default_mounts.iter().map(|p| p.to_string()).collect(),
        };
        for prefix in prefixes {
            let valid = prefix.is_empty()
                || (prefix.starts_with('/') && !prefix.ends_with('/') && prefix.len() <= 64
                    && prefix[1..].split('/').all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))));
            if !valid {
                return Err(format!(
                    "http.mounts.{}: {prefix:?} is not a mount prefix (\"\" for the root, or like \"/api/v2\": no trailing slash)",
                    d.name
                ));
            }
            if let Some((_, other)) = out.iter().find(|(p, _)| *p == prefix) {
                return Err(format!("http.mounts.{}: {prefix:?} is already where {} is mounted", d.name, other.name));
            }
            out.push((prefix, d));
        }
    }
    // Longest prefix first: a path belongs to the most specific mount.
    out.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
    Ok(out)
}

/// The dialect whose shape a refusal on `path` takes.
pub fn owner(mounts: &[(String, &'static Dialect)], path: &str) -> &'static Dialect {
    route_of(mounts, path).0
}

/// The dialect that owns `path`, and the path relative to its mount.
pub fn route_of<'p>(mounts: &[(String, &'static Dialect)], path: &'p str) -> (&'static Dialect, &'p str) {
    for (prefix, d) in mounts {
        let rest = if prefix.is_empty() { Some(path) } else { path.strip_prefix(prefix.as_str()).filter(|r| r.is_empty() || r.starts_with('/')) };
        if let Some(rest) = rest {
            if (d.owns)(rest) {
                return (d, rest);
            }
        }
    }
    (&native::DIALECT, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted(pairs: &[(&str, &[&str])]) -> Result<Vec<(String, &'static str)>, String> {
        let configured = pairs.iter().map(|(n, l)| (n.to_string(), l.iter().map(|s| s.to_string()).collect())).collect();
        Ok(mounts(&configured)?.into_iter().map(|(p, d)| (p, d.name)).collect())
    }

    #[test]
    fn defaults_and_overrides() {
        let default = mounted(&[]).unwrap();
        assert!(default.contains(&("".into(), "westwallet")) && default.contains(&("/westwallet".into(), "westwallet")));
        assert!(default.contains(&("/kassa/v1".into(), "native")));
        let moved = mounted(&[("westwallet", &["/ww"])]).unwrap();
        assert!(moved.contains(&("/ww".into(), "westwallet")) && !moved.iter().any(|(p, _)| p.is_empty()));
    }

    #[test]
    fn bad_mounts_name_their_key() {
        assert_eq!(mounted(&[("stripe", &["/s"])]).unwrap_err(), "http.mounts.stripe: no such dialect (known: westwallet, coinspaid, wallets3, whir, native)");
        assert!(mounted(&[("westwallet", &["/ww/"])]).unwrap_err().starts_with("http.mounts.westwallet: \"/ww/\" is not a mount prefix"));
        assert!(mounted(&[("westwallet", &["ww"])]).is_err());
        assert!(mounted(&[("westwallet", &["/a//b"])]).is_err());
        assert_eq!(
            mounted(&[("westwallet", &["/kassa/v1"])]).unwrap_err(),
            "http.mounts.native: \"/kassa/v1\" is already where westwallet is mounted"
        );
    }

    #[test]
    fn callback_formats_of_every_dialect() {
        assert_eq!(callback_formats().names(), ["standard", "westwallet", "coinspaid_v1", "coinspaid_v2"]);
    }

    #[test]
    fn every_key_kind_is_registered_once() {
        let names: Vec<&str> = key_kinds().iter().map(|k| k.dialect).collect();
        assert_eq!(names, ["westwallet", "coinspaid", "wallets3", "whir", "native"]);
    }

    #[test]
    fn refusals_take_the_shape_of_the_most_specific_owner() {
        let m = mounts(&BTreeMap::new()).unwrap();
        assert_eq!(owner(&m, "/wallet/balance").name, "westwallet");
        assert_eq!(owner(&m, "/westwallet/address/generate").name, "westwallet");
        assert_eq!(owner(&m, "/kassa/v1/nowhere").name, "native");
        assert_eq!(owner(&m, "/nowhere").name, "native");
        assert_eq!(owner(&m, "/westwalletx/wallet/balance").name, "native", "a prefix matches whole segments");
    }
}
