//! Notification rules: which event a state change raises, which callback formats
//! report which events, and when a failed delivery is tried again. Pure functions; the
//! store applies them inside the transaction that changes state (the outbox), and the
//! notifier applies the retry rules.

use std::time::Duration;

use crate::deposit::DepositStatus;
use crate::withdrawal::WithdrawalStatus;

/// Every event type Kassa raises, as merchants see them.
pub const EVENT_TYPES: &[&str] = &[
    "deposit.seen",
    "deposit.confirmed",
    "deposit.credited",
    "deposit.reversed",
    "deposit.dropped",
    "withdrawal.pending",
    "withdrawal.queued",
    "withdrawal.broadcast",
    "withdrawal.confirmed",
    "withdrawal.failed",
    "withdrawal.cancelled",
    "exchange.done",
    "invoice.new",
    "invoice.partially_paid",
    "invoice.paid",
    "invoice.overpaid",
    "invoice.paid_late",
    "invoice.expired",
    "webhook.test",
];

/// Kassa's own webhook format (Standard Webhooks): the format of merchants' own
/// endpoints, which may subscribe to any event. Every other callback format belongs
/// to an API dialect and is registered with it.
pub const STANDARD_FORMAT: &str = "standard";

/// Default retries after the first attempt of a standard delivery: Standard
/// Webhooks' recommended schedule.
pub const STANDARD_RETRY_SCHEDULE_SECS: &[u64] = &[5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// How the outbox reports the objects created through one API dialect: in its
/// callback format, for the event types that format knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackRoute {
    /// The dialect objects are created through (their `origin`).
    pub origin: &'static str,
    /// The callback format they are reported in.
    pub format: &'static str,
    /// The event types that format reports (others raise no callback of it).
    pub events: &'static [&'static str],
}

/// The route of objects created through `origin`, if its dialect reports them.
pub fn route_for<'a>(routes: &'a [CallbackRoute], origin: &str) -> Option<&'a CallbackRoute> {
    routes.iter().find(|r| r.origin == origin)
}

/// Whether an endpoint's subscription (`*` or a comma-separated list of types or
/// `prefix.*` patterns) includes `event_type`. Test events always reach the endpoint
/// they were sent to.
pub fn subscribed(filter: &str, event_type: &str) -> bool {
    event_type == "webhook.test"
        || filter.split(',').map(str::trim).any(|f| {
            f == "*" || f == event_type || f.strip_suffix(".*").is_some_and(|p| event_type.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
        })
}

/// Checks a subscription list given by a merchant; returns it normalised.
pub fn parse_subscription(types: &[String]) -> Result<String, String> {
    if types.is_empty() {
        return Ok("*".into());
    }
    let mut out: Vec<String> = Vec::new();
    for t in types {
        let t = t.trim();
        let known = t == "*"
            || EVENT_TYPES.contains(&t)
            || t.strip_suffix(".*").is_some_and(|p| EVENT_TYPES.iter().any(|e| e.split('.').next() == Some(p)));
        if !known {
            return Err(format!("{t:?} is not an event type (one of {}, a prefix like deposit.*, or *)", EVENT_TYPES.join(", ")));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out.join(","))
}

/// The events a deposit raises moving from the status last reported (`None` for a
/// new deposit) to `new`: one per status it enters, so a deposit first found in a
/// block is both seen and confirmed, and a credit taken back after its transaction was
/// mined again is reversed and confirmed.
pub fn deposit_events(reported: Option<DepositStatus>, new: DepositStatus) -> Vec<&'static str> {
    if reported == Some(new) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if reported.is_none() && new != DepositStatus::Seen {
        out.push("deposit.seen");
    }
    if reported == Some(DepositStatus::Credited) && new != DepositStatus::Reversed {
        out.push("deposit.reversed");
    }
    out.push(match new {
        DepositStatus::Seen => "deposit.seen",
        DepositStatus::Confirming => "deposit.confirmed",
        DepositStatus::Credited => "deposit.credited",
        DepositStatus::Reversed => "deposit.reversed",
        DepositStatus::Dropped => "deposit.dropped",
    });
    out
}

/// The event a withdrawal raises moving from the status last reported (`None`: never
/// reported) to `new`. Internal steps raise none; so does `pending`, until the
/// approval feature names its event.
pub fn withdrawal_event(reported: Option<WithdrawalStatus>, new: WithdrawalStatus) -> Option<&'static str> {
    if reported == Some(new) {
        return None;
    }
    match new {
        WithdrawalStatus::Pending => Some("withdrawal.pending"),
        WithdrawalStatus::Queued => Some("withdrawal.queued"),
        WithdrawalStatus::Broadcast => Some("withdrawal.broadcast"),
        WithdrawalStatus::Confirmed => Some("withdrawal.confirmed"),
        WithdrawalStatus::Failed => Some("withdrawal.failed"),
        WithdrawalStatus::Cancelled => Some("withdrawal.cancelled"),
        WithdrawalStatus::Requested | WithdrawalStatus::Signed => None,
    }
}

/// What the notifier does after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Any 2xx.
    Delivered,
    /// `410 Gone`: the receiver asks never to be called again.
    Gone,
    /// Try again after this long.
    RetryAfter(Duration),
    /// The schedule is exhausted.
    GiveUp,
}

/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Decides the next step after attempt number `attempts` (1-based) answered with
/// `status` (None: no HTTP answer). `retry_after` is the receiver's `Retry-After`
/// (honoured on 429 and 503); `jitter` in [0, 1) spreads retries by up to
/// `jitter_percent` of the delay so that many deliveries do not retry in lockstep.
pub fn next_step(
    schedule_secs: &[u64],
    attempts: u32,
    status: Option<u16>,
    retry_after: Option<Duration>,
    jitter_percent: u32,
    jitter: f64,
) -> AttemptOutcome {
    match status {
        Some(s) if (200..300).contains(&s) => return AttemptOutcome::Delivered,
        Some(410) => return AttemptOutcome::Gone,
        _ => {}
    }
    let Some(&delay) = schedule_secs.get(attempts.saturating_sub(1) as usize) else {
        return AttemptOutcome::GiveUp;
    };
    if let (Some(429 | 503), Some(after)) = (status, retry_after) {
        return AttemptOutcome::RetryAfter(after.clamp(Duration::from_secs(1), MAX_RETRY_AFTER));
    }
    let base_ms = delay.saturating_mul(1000);
    let spread = base_ms.saturating_mul(u64::from(jitter_percent.min(100))) / 100;
    let extra = (spread as f64 * jitter.clamp(0.0, 0.999_999)) as u64;
    AttemptOutcome::RetryAfter(Duration::from_millis(base_ms.saturating_add(extra)))
}

/// Parses a `Retry-After` header: delay seconds, or an HTTP date relative to `now_unix`.
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(Duration::from_secs(u64::try_from(at - now_unix).unwrap_or(0)))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
fn parse_http_date(v: &str) -> Option<i64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, clock, "GMT"] = parts.as_slice() else { return None };
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = months.iter().position(|x| x == month)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = clock.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, mi, s] = hms.as_slice() else { return None };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposit_transitions_raise_one_event_per_status_entered() {
        assert_eq!(deposit_events(None, DepositStatus::Seen), ["deposit.seen"]);
        assert_eq!(deposit_events(None, DepositStatus::Confirming), ["deposit.seen", "deposit.confirmed"]);
        assert_eq!(deposit_events(Some(DepositStatus::Seen), DepositStatus::Confirming), ["deposit.confirmed"]);
        assert_eq!(deposit_events(Some(DepositStatus::Confirming), DepositStatus::Credited), ["deposit.credited"]);
        assert_eq!(deposit_events(Some(DepositStatus::Credited), DepositStatus::Reversed), ["deposit.reversed"]);
        assert_eq!(deposit_events(Some(DepositStatus::Credited), DepositStatus::Confirming), ["deposit.reversed", "deposit.confirmed"]);
        assert_eq!(deposit_events(Some(DepositStatus::Reversed), DepositStatus::Confirming), ["deposit.confirmed"]);
        assert_eq!(deposit_events(Some(DepositStatus::Seen), DepositStatus::Dropped), ["deposit.dropped"]);
        assert_eq!(deposit_events(Some(DepositStatus::Confirming), DepositStatus::Seen), ["deposit.seen"]);
        assert!(deposit_events(Some(DepositStatus::Credited), DepositStatus::Credited).is_empty());
    }

    #[test]
    fn withdrawal_transitions() {
        use WithdrawalStatus::*;
        assert_eq!(withdrawal_event(Some(Requested), Requested), None);
        assert_eq!(withdrawal_event(None, Requested), None);
        assert_eq!(withdrawal_event(None, Queued), Some("withdrawal.queued"));
        assert_eq!(withdrawal_event(Some(Requested), Queued), Some("withdrawal.queued"));
        assert_eq!(withdrawal_event(Some(Requested), Pending), Some("withdrawal.pending"));
        assert_eq!(withdrawal_event(Some(Pending), Queued), Some("withdrawal.queued"));
        assert_eq!(withdrawal_event(Some(Pending), Cancelled), Some("withdrawal.cancelled"));
        assert_eq!(withdrawal_event(Some(Queued), Signed), None);
        assert_eq!(withdrawal_event(Some(Signed), Broadcast), Some("withdrawal.broadcast"));
        assert_eq!(withdrawal_event(Some(Queued), Broadcast), Some("withdrawal.broadcast"));
        assert_eq!(withdrawal_event(Some(Broadcast), Confirmed), Some("withdrawal.confirmed"));
        assert_eq!(withdrawal_event(Some(Queued), Failed), Some("withdrawal.failed"));
        assert_eq!(withdrawal_event(Some(Failed), Failed), None);
        for s in WithdrawalStatus::ALL {
            if let Some(t) = withdrawal_event(Some(Requested), s) {
                assert!(EVENT_TYPES.contains(&t), "{t}");
            }
        }
    }

    #[test]
    fn subscriptions() {
        assert!(subscribed("*", "deposit.seen"));
        assert!(subscribed("deposit.*", "deposit.credited"));
        assert!(!subscribed("deposit.*", "withdrawal.failed"));
        assert!(!subscribed("deposit.*", "depositx.seen"));
        assert!(subscribed("withdrawal.failed,deposit.credited", "deposit.credited"));
        assert!(subscribed("deposit.credited", "webhook.test"));
        assert_eq!(parse_subscription(&[]).unwrap(), "*");
        assert_eq!(parse_subscription(&["deposit.*".into(), "withdrawal.failed".into(), "deposit.*".into()]).unwrap(), "deposit.*,withdrawal.failed");
        assert!(parse_subscription(&["deposit.paid".into()]).is_err());
        assert!(parse_subscription(&["nothing.*".into()]).is_err());
    }

    #[test]
    fn routes_by_origin() {
        let routes = [CallbackRoute { origin: "a", format: "a_v1", events: &["deposit.seen"] }];
        assert_eq!(route_for(&routes, "a").map(|r| r.format), Some("a_v1"));
        assert!(route_for(&routes, "native").is_none());
    }

    #[test]
    fn retry_steps() {
        let s = [1, 5, 10];
        assert_eq!(next_step(&s, 1, Some(204), None, 10, 0.5), AttemptOutcome::Delivered);
        assert_eq!(next_step(&s, 3, Some(299), None, 10, 0.5), AttemptOutcome::Delivered);
        assert_eq!(next_step(&s, 1, Some(410), None, 10, 0.5), AttemptOutcome::Gone);
        assert_eq!(next_step(&s, 1, Some(500), None, 0, 0.5), AttemptOutcome::RetryAfter(Duration::from_secs(1)));
        assert_eq!(next_step(&s, 2, None, None, 0, 0.5), AttemptOutcome::RetryAfter(Duration::from_secs(5)));
        // Jitter adds up to the given share of the delay.
        assert_eq!(next_step(&s, 3, Some(500), None, 10, 0.5), AttemptOutcome::RetryAfter(Duration::from_millis(10_500)));
        assert_eq!(next_step(&s, 4, Some(500), None, 10, 0.5), AttemptOutcome::GiveUp);
        // Retry-After on 429 and 503 only, clamped.
        assert_eq!(next_step(&s, 1, Some(429), Some(Duration::from_secs(120)), 10, 0.5), AttemptOutcome::RetryAfter(Duration::from_secs(120)));
        assert_eq!(next_step(&s, 1, Some(503), Some(Duration::ZERO), 10, 0.0), AttemptOutcome::RetryAfter(Duration::from_secs(1)));
        assert_eq!(next_step(&s, 1, Some(503), Some(Duration::from_secs(10 << 20)), 10, 0.0), AttemptOutcome::RetryAfter(MAX_RETRY_AFTER));
        assert_eq!(next_step(&s, 1, Some(500), Some(Duration::from_secs(120)), 0, 0.0), AttemptOutcome::RetryAfter(Duration::from_secs(1)));
        assert_eq!(next_step(&s, 3, Some(429), Some(Duration::from_secs(120)), 0, 0.0), AttemptOutcome::RetryAfter(Duration::from_secs(120)));
        assert_eq!(next_step(&s, 4, Some(429), Some(Duration::from_secs(120)), 0, 0.0), AttemptOutcome::GiveUp);
        assert_eq!(next_step(&[], 1, Some(500), None, 0, 0.0), AttemptOutcome::GiveUp);
    }

    #[test]
    fn retry_after_header() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 - 30), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 + 30), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
