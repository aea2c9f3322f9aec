//! Request rate limits: one mechanism for every dialect. Each request counts against
//! its client IP's budget for all requests (`default`) and, on routes a dialect puts
//! in a group (address, quote and invoice creation), against that group's budget
//! too; once authenticated, against its API key's budgets the same way. Failed
//! authentications count against a per-IP brute-force guard: once it is spent, that
//! IP is refused until the guard refills. Refusals are 429 in the dialect's own
//! error shape with `Retry-After` (whole seconds).
//!
//! Budgets are GCRA buckets (the `governor` crate) held in this process's memory, on
//! the engine's clock (tests move it instead of waiting). They hold per instance:
//! several instances behind one balancer each grant the full budget.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as GovernorClock;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// The budgets a route can count against besides `default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// Every request.
    Default,
    /// Creating deposit addresses.
    Address,
    /// Creating exchange quotes.
    Quote,
    /// Creating invoices.
    Invoice,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Default, Group::Address, Group::Quote, Group::Invoice];

    /// Its name in configuration (`http.rate_limits.NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Group::Default => "default",
            Group::Address => "address",
            Group::Quote => "quote",
            Group::Invoice => "invoice",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A budget: `count` requests at once, refilled evenly over `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    pub const fn new(count: u32, per_secs: u64) -> Rate {
        Rate {
            count: match NonZeroU32::new(count) {
                Some(n) => n,
                None => panic!("a rate allows at least one request"),
            },
            per: Duration::from_secs(per_secs),
        }
    }

    fn quota(self) -> Quota {
        let each = (self.per / self.count.get()).max(Duration::from_nanos(1));
        Quota::with_period(each).expect("the period is not zero").allow_burst(self.count)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s".to_string(),
            60 => "min".to_string(),
            3600 => "h".to_string(),
            n => format!("{n}s"),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `N/s`, `N/min` or `N/h`: N requests at once, refilled over that period.
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate like \"60/min\" (N/s, N/min or N/h, N from 1), or \"off\"");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(bad()),
        };
        let count = NonZeroU32::new(count).ok_or_else(bad)?;
        Ok(Rate { count, per: Duration::from_secs(per) })
    }
}

/// One group's budgets; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    pub per_key: Option<Rate>,
    pub per_ip: Option<Rate>,
}

/// Rate limit settings.
#[derive(Clone, Debug)]
pub struct RateLimitOptions {
    /// A header a trusted reverse proxy sets to the client's address (e.g.
    /// `X-Forwarded-For`; its last entry is taken, the one the proxy added). Without
    /// one the TCP peer is the client; headers are never read.
    pub client_ip_header: Option<HeaderName>,
    /// Budgets by group, in [`Group::ALL`] order.
    pub groups: [GroupLimits; 4],
    /// Failed authentications allowed per client IP.
    pub auth_failures: Option<Rate>,
    /// Whether the limits dialects' own documentation sets on some routes apply.
    pub documented_limits: bool,
}

impl RateLimitOptions {
    /// The defaults: generous for integrations, tight where creating things is cheap
    /// for a client and costly for the server (addresses, quotes, invoices), and a
    /// brute-force guard.
    pub const DEFAULT_GROUPS: [GroupLimits; 4] = [
        GroupLimits { per_key: Some(Rate::new(6000, 60)), per_ip: Some(Rate::new(6000, 60)) },
        GroupLimits { per_key: Some(Rate::new(300, 60)), per_ip: Some(Rate::new(300, 60)) },
        GroupLimits { per_key: Some(Rate::new(120, 60)), per_ip: Some(Rate::new(120, 60)) },
        GroupLimits { per_key: Some(Rate::new(300, 60)), per_ip: Some(Rate::new(300, 60)) },
    ];
    pub const DEFAULT_AUTH_FAILURES: Rate = Rate::new(30, 60);

    /// No limit at all (benchmarks).
    pub fn unlimited() -> Self {
        Self { client_ip_header: None, groups: [GroupLimits { per_key: None, per_ip: None }; 4], auth_failures: None, documented_limits: false }
    }

    pub fn group(&self, g: Group) -> GroupLimits {
        self.groups[g.index()]
    }
}

impl Default for RateLimitOptions {
    fn default() -> Self {
        Self { client_ip_header: None, groups: Self::DEFAULT_GROUPS, auth_failures: Some(Self::DEFAULT_AUTH_FAILURES), documented_limits: true }
    }
}

/// The engine's clock as the limiter's time source.
#[derive(Clone)]
struct EngineTime(kassa_core::Clock);

impl GovernorClock for EngineTime {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, EngineTime, governor::middleware::NoOpMiddleware<Duration>>;

/// The client a request comes from, as the limits and IP allowlists see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A request refused by a budget: answered 429 in the dialect's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds until a retry can succeed (at least 1).
    pub retry_after_secs: u64,
}

/// Set on a response that refused a request's credentials: it counts against the
/// client's brute-force guard.
#[derive(Clone, Copy, Debug)]
pub struct AuthFailed;

/// The limits of one server.
pub struct Limiter {
    clock: EngineTime,
    client_ip_header: Option<HeaderName>,
    per_ip: [Option<Keyed<IpAddr>>; 4],
    per_key: [Option<Keyed<i64>>; 4],
    failures: Option<Keyed<IpAddr>>,
    /// The dialects' documented limits, by name, made on first use (none when every
    /// limit is off).
    documented: Option<Mutex<HashMap<&'static str, Arc<Keyed<IpAddr>>>>>,
    /// Clients whose guard is spent, until when (engine-clock time since the epoch).
    blocked: Mutex<HashMap<IpAddr, Duration>>,
    checks: AtomicU64,
}

/// Keyed states idle long enough to be full again are dropped every this many checks.
const SWEEP_EVERY: u64 = 8192;

impl Limiter {
    pub fn new(options: &RateLimitOptions, clock: kassa_core::Clock) -> Limiter {
        let clock = EngineTime(clock);
        fn make<K: std::hash::Hash + Eq + Clone>(r: Option<Rate>, clock: &EngineTime) -> Option<Keyed<K>> {
            r.map(|r| Keyed::dashmap_with_clock(r.quota(), clock.clone()))
        }
        Limiter {
            client_ip_header: options.client_ip_header.clone(),
            per_ip: Group::ALL.map(|g| make(options.group(g).per_ip, &clock)),
            per_key: Group::ALL.map(|g| make(options.group(g).per_key, &clock)),
            failures: make(options.auth_failures, &clock),
            documented: options.documented_limits.then(|| Mutex::new(HashMap::new())),
            blocked: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            clock,
        }
    }

    /// The request's client: the trusted proxy header's last address when one is
    /// configured and present, else the TCP peer.
    pub fn client_ip(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
        if let Some(name) = &self.client_ip_header {
            let last = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).next_back();
            if let Some(ip) = last.and_then(parse_forwarded) {
                return Some(ip);
            }
        }
        extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
    }

    fn verdict<K: std::hash::Hash + Eq + Clone>(&self, limiter: &Option<Keyed<K>>, key: &K) -> Result<(), Limited> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| Limited::after(not_until.wait_time_from(self.clock.now())))
    }

    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        for l in self.per_ip.iter().chain(std::iter::once(&self.failures)).flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in self.per_key.iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(documented) = &self.documented {
            for l in documented.lock().expect("the documented limits are never poisoned").values() {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        let now = self.clock.now();
        self.blocked.lock().expect("the blocked list is never poisoned").retain(|_, until| *until > now);
    }

    /// Admits a request from `ip` to a route of `group`: the brute-force guard, then
    /// the IP's `default` budget and the group's.
    pub fn admit_ip(&self, ip: IpAddr, group: Group) -> Result<(), Limited> {
        self.sweep();
        let ip = bucket_of(ip);
        if let Some(until) = self.blocked.lock().expect("the blocked list is never poisoned").get(&ip).copied() {
            let now = self.clock.now();
            if until > now {
                return Err(Limited::after(until - now));
            }
        }
        self.verdict(&self.per_ip[Group::Default.index()], &ip)?;
        if group != Group::Default {
            self.verdict(&self.per_ip[group.index()], &ip)?;
        }
        Ok(())
    }

    /// Admits a request from `ip` against a dialect's documented limit of its route.
    pub fn admit_documented(&self, ip: IpAddr, limit: crate::dialects::DocumentedLimit) -> Result<(), Limited> {
        let Some(documented) = &self.documented else {
            return Ok(());
        };
        let keyed = documented
            .lock()
            .expect("the documented limits are never poisoned")
            .entry(limit.name)
            .or_insert_with(|| Arc::new(Keyed::dashmap_with_clock(limit.per_ip.quota(), self.clock.clone())))
            .clone();
        keyed.check_key(&bucket_of(ip)).map_err(|not_until| Limited::after(not_until.wait_time_from(self.clock.now())))
    }

    /// Admits an authenticated request of API key `key_id`.
    pub fn admit_key(&self, key_id: i64, group: Group) -> Result<(), Limited> {
        self.verdict(&self.per_key[Group::Default.index()], &key_id)?;
        if group != Group::Default {
            self.verdict(&self.per_key[group.index()], &key_id)?;
        }
        Ok(())
    }

    /// Counts a failed authentication from `ip`; once the guard is spent the IP is
    /// refused until it refills.
    pub fn failed_auth(&self, ip: IpAddr) {
        let ip = bucket_of(ip);
        let Some(failures) = &self.failures else {
            return;
        };
        if let Err(not_until) = failures.check_key(&ip) {
            let until = not_until.earliest_possible();
            tracing::warn!(client_ip = %ip, retry_after_secs = Limited::after(until.saturating_sub(self.clock.now())).retry_after_secs, "too many failed authentications: client refused for a while");
            self.blocked.lock().expect("the blocked list is never poisoned").insert(ip, until);
        }
    }
}

impl Limited {
    fn after(wait: Duration) -> Limited {
        Limited { retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64 }
    }

    /// The `Retry-After` header's value.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from(self.retry_after_secs)
    }
}

/// A bare 429 carrying the refusal: the HTTP layer gives it the dialect's shape.
impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let mut r = axum::http::StatusCode::TOO_MANY_REQUESTS.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

/// IPv6 clients are limited per /64 (what one subscriber is usually given);
/// IPv4-mapped addresses as the IPv4 address.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// One forwarded address: `203.0.113.7`, `[2001:db8::1]:443`, `203.0.113.7:80`.
fn parse_forwarded(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The limiter of the server a request reached, and what the HTTP layer learned.
#[derive(Clone)]
pub struct RequestLimits {
    pub limiter: Arc<Limiter>,
    pub group: Group,
}

/// Admits an authenticated request of API key `key_id` against the budgets of the
/// route it reached (requests the HTTP layer did not see are not limited).
pub fn admit_key(extensions: &Extensions, key_id: i64) -> Result<(), Limited> {
    match extensions.get::<RequestLimits>() {
        Some(l) => l.limiter.admit_key(key_id, l.group),
        None => Ok(()),
    }
}

/// The request's client IP as the HTTP layer determined it.
pub fn client_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ClientIp>().map(|c| c.0).or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        assert_eq!("60/min".parse::<Rate>().unwrap(), Rate::new(60, 60));
        assert_eq!(" 10 / s ".parse::<Rate>().unwrap(), Rate::new(10, 1));
        assert_eq!("1000/h".parse::<Rate>().unwrap().to_string(), "1000/h");
        for bad in ["0/min", "60", "60/day", "-1/s", "x/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_budget_refills_on_the_engine_clock() {
        let clock = kassa_core::Clock::frozen_at(1_700_000_000_000);
        let mut options = RateLimitOptions::unlimited();
        options.groups[Group::Quote.index()].per_ip = Some(Rate::new(3, 60));
        let l = Limiter::new(&options, clock.clone());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            l.admit_ip(ip, Group::Quote).unwrap();
        }
        assert_eq!(l.admit_ip(ip, Group::Quote), Err(Limited { retry_after_secs: 20 }), "one request back every 20 s");
        l.admit_ip(ip, Group::Default).expect("other groups are not limited");
        l.admit_ip("198.51.100.8".parse().unwrap(), Group::Quote).expect("another client has its own budget");
        clock.advance(Duration::from_secs(19));
        assert_eq!(l.admit_ip(ip, Group::Quote), Err(Limited { retry_after_secs: 1 }));
        clock.advance(Duration::from_secs(1));
        l.admit_ip(ip, Group::Quote).unwrap();
    }

    #[test]
    fn ipv6_clients_share_a_slash_64() {
        assert_eq!(bucket_of("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(bucket_of("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_trusted_header_names_the_client() {
        let mut options = RateLimitOptions::unlimited();
        let peer = ConnectInfo::<SocketAddr>("10.0.0.2:5000".parse().unwrap());
        let mut ext = Extensions::new();
        ext.insert(peer);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        let untrusting = Limiter::new(&options, kassa_core::Clock::system());
        assert_eq!(untrusting.client_ip(&headers, &ext), Some("10.0.0.2".parse().unwrap()), "without a configured header, the peer");
        options.client_ip_header = Some(HeaderName::from_static("x-forwarded-for"));
        let trusting = Limiter::new(&options, kassa_core::Clock::system());
        assert_eq!(trusting.client_ip(&headers, &ext), Some("203.0.113.9".parse().unwrap()), "the entry the proxy added");
        headers.insert("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(trusting.client_ip(&headers, &ext), Some("2001:db8::1".parse().unwrap()));
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(trusting.client_ip(&headers, &ext), Some("10.0.0.2".parse().unwrap()), "unreadable: the peer");
    }
}
