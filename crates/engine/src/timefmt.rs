//! The time formats Kassa writes and reads, in one place: RFC 3339 (its own API,
//! views, the CLI) and the `YYYY-MM-DD HH:MM:SS` form some dialects use. All UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 UTC with milliseconds: `2026-01-31T12:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at(ms).format(&f).unwrap_or_default()
}

/// Date and time to the second, space-separated: `2026-01-31 12:00:00`.
pub fn format_seconds(ms: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    at(ms.div_euclid(1000) * 1000).format(&f).unwrap_or_default()
}

/// ISO 8601 to the second with a numeric UTC offset: `2026-01-31T12:00:00+00:00`.
pub fn format_offset_seconds(ms: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    at(ms.div_euclid(1000) * 1000).format(&f).unwrap_or_default()
}

/// An RFC 3339 time (any offset) as Unix milliseconds; `None` when it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        let ms = 1_769_860_800_123; // 2026-01-31T12:00:00.123Z
        assert_eq!(format_ms(ms), "2026-01-31T12:00:00.123Z");
        assert_eq!(format_seconds(ms), "2026-01-31 12:00:00");
        assert_eq!(format_offset_seconds(ms), "2026-01-31T12:00:00+00:00");
        assert_eq!(format_seconds(-1), "1969-12-31 23:59:59", "before the epoch rounds down, not toward zero");
        assert_eq!(parse_rfc3339_ms(&format_ms(ms)), Some(ms));
        assert_eq!(parse_rfc3339_ms("2026-01-31T14:00:00+02:00"), Some(1_769_860_800_000));
        assert_eq!(parse_rfc3339_ms("2026-01-31 12:00:00"), None);
    }
}
