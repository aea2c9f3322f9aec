//! Exact money amounts: an integer count of ledger units (i128) at a fixed decimal
//! precision. Text is parsed digit by digit and never passes through floating point.

use std::fmt;

/// Longest amount text accepted, sign and dot included. Anything longer is refused
/// before it is looked at, so absurd inputs cost nothing.
pub const MAX_TEXT_LEN: usize = 64;

/// Largest absolute number of units an amount may hold (10^36). Far above any real
/// sum (10^30 units covers every supply at 18 decimals) yet far enough below
/// `i128::MAX` (≈1.7·10^38) that adding up to a hundred such amounts cannot overflow.
pub const MAX_ABS_UNITS: i128 = 1_000_000_000_000_000_000_000_000_000_000_000_000;

/// Highest precision (decimals) a currency may declare.
pub const MAX_PRECISION: u8 = 18;

/// Whether a parsed amount may be negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignPolicy {
    /// Strictly greater than zero (payments, withdrawals, transfers).
    Positive,
    /// Zero or more (limits, fixed fees).
    NonNegative,
    /// Any sign (operator adjustments: negative debits).
    Any,
}

/// Serialisable so that a refusal can be recorded and answered again as itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount is too long ({len} characters; at most {MAX_TEXT_LEN})")]
    TooLong { len: usize },
    #[error("amount {text:?} is not a plain decimal number (digits with an optional '.'; no exponent, spaces, or signs other than a leading '-')")]
    NotDecimal { text: String },
    #[error("amount {text:?} has more than {precision} decimal places")]
    TooManyDecimals { text: String, precision: u8 },
    #[error("amount {text:?} must not be negative")]
    Negative { text: String },
    #[error("amount {text:?} must be greater than zero")]
    NotPositive { text: String },
    #[error("amount is out of range")]
    OutOfRange,
    #[error("amount must be a string or a number, got {found}")]
    WrongType {
        #[serde(deserialize_with = "crate::names::deserialize")]
        found: crate::names::Name,
    },
    #[error("amounts of different precision ({left} and {right}) cannot be combined")]
    PrecisionMismatch { left: u8, right: u8 },
    #[error("precision {0} is not supported (at most {MAX_PRECISION})")]
    BadPrecision(u8),
}

/// An exact amount: `units` ledger units at `precision` decimals
/// (units = value × 10^precision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Amount {
    units: i128,
    precision: u8,
}

fn pow10(precision: u8) -> i128 {
    10i128.pow(u32::from(precision))
}

impl Amount {
    /// An amount from raw units. Fails when out of range or precision is unsupported.
    pub fn from_units(units: i128, precision: u8) -> Result<Self, AmountError> {
        if precision > MAX_PRECISION {
            return Err(AmountError::BadPrecision(precision));
        }
        if units.unsigned_abs() > MAX_ABS_UNITS as u128 {
            return Err(AmountError::OutOfRange);
        }
        Ok(Self { units, precision })
    }

    pub fn zero(precision: u8) -> Self {
        Self { units: 0, precision: precision.min(MAX_PRECISION) }
    }

    pub fn units(self) -> i128 {
        self.units
    }

    pub fn precision(self) -> u8 {
        self.precision
    }

    pub fn is_zero(self) -> bool {
        self.units == 0
    }

    pub fn is_negative(self) -> bool {
        self.units < 0
    }

    /// Parses decimal text (`"12"`, `"0.1"`, `"-3.25"`). Trailing zeros past the
    /// precision are accepted (`"1.500000000"` at 8 decimals is exact); any other
    /// digit past it is refused rather than rounded.
    pub fn parse(text: &str, precision: u8, sign: SignPolicy) -> Result<Self, AmountError> {
        if precision > MAX_PRECISION {
            return Err(AmountError::BadPrecision(precision));
        }
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(AmountError::TooLong { len: text.len() });
        }
        let not_decimal = || AmountError::NotDecimal { text: text.to_string() };
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) {
            return Err(not_decimal());
        }
        let frac = match frac_part {
            Some(f) if !all_digits(f) => return Err(not_decimal()),
            Some(f) => f,
            None => "",
        };
        let significant = frac.trim_end_matches('0');
        if significant.len() > usize::from(precision) {
            return Err(AmountError::TooManyDecimals { text: text.to_string(), precision });
        }
        let mut units: i128 = 0;
        let digits = int_part
            .bytes()
            .chain(significant.bytes())
            .chain(std::iter::repeat(b'0').take(usize::from(precision) - significant.len()));
        for digit in digits {
            units = units
                .checked_mul(10)
                .and_then(|u| u.checked_add(i128::from(digit - b'0')))
                .filter(|u| *u <= MAX_ABS_UNITS)
                .ok_or(AmountError::OutOfRange)?;
        }
        if negative {
            units = -units;
        }
        match sign {
            SignPolicy::Positive if units <= 0 => {
                if units < 0 {
                    Err(AmountError::Negative { text: text.to_string() })
                } else {
                    Err(AmountError::NotPositive { text: text.to_string() })
                }
            }
            SignPolicy::NonNegative if units < 0 => {
                Err(AmountError::Negative { text: text.to_string() })
            }
            _ => Ok(Self { units, precision }),
        }
    }

    /// Parses a JSON value that is a string or a number. Numbers are read from their
    /// exact source text (serde_json's `arbitrary_precision`), never as a float, so
    /// `0.1` means exactly one tenth and `1e5` is refused like any exponent.
    pub fn from_json(
        value: &serde_json::Value,
        precision: u8,
        sign: SignPolicy,
    ) -> Result<Self, AmountError> {
        match value {
            serde_json::Value::String(s) => Self::parse(s, precision, sign),
            serde_json::Value::Number(n) => Self::parse(&n.to_string(), precision, sign),
            serde_json::Value::Null => Err(AmountError::WrongType { found: "null" }),
            serde_json::Value::Bool(_) => Err(AmountError::WrongType { found: "a boolean" }),
            serde_json::Value::Array(_) => Err(AmountError::WrongType { found: "an array" }),
            serde_json::Value::Object(_) => Err(AmountError::WrongType { found: "an object" }),
        }
    }

    fn same_precision(self, other: Self) -> Result<(), AmountError> {
        if self.precision == other.precision {
            Ok(())
        } else {
            Err(AmountError::PrecisionMismatch { left: self.precision, right: other.precision })
        }
    }

    pub fn checked_add(self, other: Self) -> Result<Self, AmountError> {
        self.same_precision(other)?;
        let units = self.units.checked_add(other.units).ok_or(AmountError::OutOfRange)?;
        Self::from_units(units, self.precision)
    }

    pub fn checked_sub(self, other: Self) -> Result<Self, AmountError> {
        self.same_precision(other)?;
        let units = self.units.checked_sub(other.units).ok_or(AmountError::OutOfRange)?;
        Self::from_units(units, self.precision)
    }

    pub fn checked_neg(self) -> Self {
        // Range is symmetric, so negation always stays in range.
        Self { units: -self.units, precision: self.precision }
    }

    /// Re-expresses the amount at another precision. Going down rounds toward zero and
    /// returns the dropped remainder in the *target*'s terms so the caller can book it
    /// (deposits round down; the remainder goes to a dust account).
    pub fn rescale_down(self, precision: u8) -> Result<(Self, i128), AmountError> {
        if precision > MAX_PRECISION {
            return Err(AmountError::BadPrecision(precision));
        }
        if precision >= self.precision {
            let factor = pow10(precision - self.precision);
            let units = self.units.checked_mul(factor).ok_or(AmountError::OutOfRange)?;
            return Ok((Self::from_units(units, precision)?, 0));
        }
        let factor = pow10(self.precision - precision);
        Ok((Self { units: self.units / factor, precision }, self.units % factor))
    }
}

impl fmt::Display for Amount {
    /// Always prints every decimal of the precision: `0.10000000` at 8 decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        if self.precision == 0 {
            return write!(f, "{sign}{abs}");
        }
        let factor = pow10(self.precision) as u128;
        let width = usize::from(self.precision);
        write!(f, "{sign}{}.{:0width$}", abs / factor, abs % factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p8(text: &str) -> Result<Amount, AmountError> {
        Amount::parse(text, 8, SignPolicy::Any)
    }

    #[test]
    fn formats_with_all_decimals() {
        assert_eq!(p8("0.1").unwrap().to_string(), "0.10000000");
        assert_eq!(p8("12").unwrap().to_string(), "12.00000000");
        assert_eq!(p8("-0.00000001").unwrap().to_string(), "-0.00000001");
        assert_eq!(Amount::parse("5", 0, SignPolicy::Any).unwrap().to_string(), "5");
        assert_eq!(Amount::parse("1.5", 2, SignPolicy::Any).unwrap().units(), 150);
    }

    #[test]
    fn trailing_zeros_past_precision_are_exact() {
        assert_eq!(p8("1.5000000000").unwrap().units(), 150_000_000);
        assert_eq!(
            p8("1.000000001"),
            Err(AmountError::TooManyDecimals { text: "1.000000001".into(), precision: 8 })
        );
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "1e5", "1E-2", "NaN", "nan", "Infinity", "-Infinity", "inf", " 1", "1 ", "+1", "1.",
            ".5", "--1", "1.2.3", "0x10", "1,5", "١", "1_000", "-", ".",
        ] {
            assert!(
                matches!(p8(bad), Err(AmountError::NotDecimal { .. })),
                "{bad:?} gave {:?}",
                p8(bad)
            );
        }
        assert_eq!(p8(""), Err(AmountError::Empty));
        assert_eq!(p8(&"9".repeat(65)), Err(AmountError::TooLong { len: 65 }));
        assert_eq!(p8(&"9".repeat(40)), Err(AmountError::OutOfRange));
        assert_eq!(p8("99999999999999999999999999999"), Err(AmountError::OutOfRange));
        assert!(p8("9999999999999999999999999999").is_ok()); // 10^28 - 1 at 8 decimals = 10^36 - 10^8 units
    }

    #[test]
    fn sign_policies() {
        assert_eq!(
            Amount::parse("-1", 8, SignPolicy::Positive),
            Err(AmountError::Negative { text: "-1".into() })
        );
        assert_eq!(
            Amount::parse("0.000", 8, SignPolicy::Positive),
            Err(AmountError::NotPositive { text: "0.000".into() })
        );
        assert!(Amount::parse("0", 8, SignPolicy::NonNegative).is_ok());
        assert_eq!(
            Amount::parse("-0.5", 8, SignPolicy::NonNegative),
            Err(AmountError::Negative { text: "-0.5".into() })
        );
        assert_eq!(Amount::parse("-0", 8, SignPolicy::NonNegative).unwrap().units(), 0);
    }

    #[test]
    fn json_numbers_keep_their_exact_text() {
        let v: serde_json::Value = serde_json::from_str(r#"[0.1, "0.2", 1e5, null, true, 0.30000000000000004]"#).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(Amount::from_json(&a[0], 8, SignPolicy::Positive).unwrap().units(), 10_000_000);
        assert_eq!(Amount::from_json(&a[1], 8, SignPolicy::Positive).unwrap().units(), 20_000_000);
        assert!(matches!(Amount::from_json(&a[2], 8, SignPolicy::Positive), Err(AmountError::NotDecimal { .. })));
        assert_eq!(Amount::from_json(&a[3], 8, SignPolicy::Positive), Err(AmountError::WrongType { found: "null" }));
        assert_eq!(Amount::from_json(&a[4], 8, SignPolicy::Positive), Err(AmountError::WrongType { found: "a boolean" }));
        assert!(matches!(Amount::from_json(&a[5], 8, SignPolicy::Positive), Err(AmountError::TooManyDecimals { .. })));
        // 18-decimal tokens: a float would lose this.
        let wei: serde_json::Value = serde_json::from_str("123456789.123456789123456789").unwrap();
        assert_eq!(
            Amount::from_json(&wei, 18, SignPolicy::Positive).unwrap().units(),
            123_456_789_123_456_789_123_456_789
        );
    }

    #[test]
    fn arithmetic_checks_precision_and_range() {
        let a = p8("1").unwrap();
        let b = Amount::parse("1", 2, SignPolicy::Any).unwrap();
        assert_eq!(a.checked_add(b), Err(AmountError::PrecisionMismatch { left: 8, right: 2 }));
        let max = Amount::from_units(MAX_ABS_UNITS, 8).unwrap();
        assert_eq!(max.checked_add(Amount::from_units(1, 8).unwrap()), Err(AmountError::OutOfRange));
        assert_eq!(max.checked_neg().checked_sub(Amount::from_units(1, 8).unwrap()), Err(AmountError::OutOfRange));
        assert_eq!(Amount::from_units(MAX_ABS_UNITS + 1, 8), Err(AmountError::OutOfRange));
    }

    #[test]
    fn rescale_down_rounds_toward_zero_and_returns_remainder() {
        let wei = Amount::parse("1.123456789123456789", 18, SignPolicy::Any).unwrap();
        let (ledger, rest) = wei.rescale_down(8).unwrap();
        assert_eq!(ledger.to_string(), "1.12345678");
        assert_eq!(rest, 9_123_456_789);
        let (up, rest) = p8("1.5").unwrap().rescale_down(18).unwrap();
        assert_eq!((up.units(), rest), (1_500_000_000_000_000_000, 0));
    }

    proptest! {
        #[test]
        fn parse_format_round_trip(units in -MAX_ABS_UNITS..=MAX_ABS_UNITS, precision in 0u8..=MAX_PRECISION) {
            let amount = Amount::from_units(units, precision).unwrap();
            let text = amount.to_string();
            let back = Amount::parse(&text, precision, SignPolicy::Any).unwrap();
            prop_assert_eq!(back, amount);
        }

        #[test]
        fn arithmetic_never_overflows_silently(a in any::<i128>(), b in any::<i128>()) {
            let (Ok(x), Ok(y)) = (Amount::from_units(a, 8), Amount::from_units(b, 8)) else {
                prop_assert!(a.unsigned_abs() > MAX_ABS_UNITS as u128 || b.unsigned_abs() > MAX_ABS_UNITS as u128);
                return Ok(());
            };
            match x.checked_add(y) {
                Ok(sum) => prop_assert_eq!(sum.units(), a + b),
                Err(e) => {
                    prop_assert_eq!(e, AmountError::OutOfRange);
                    prop_assert!((a + b).unsigned_abs() > MAX_ABS_UNITS as u128);
                }
            }
            match x.checked_sub(y) {
                Ok(diff) => prop_assert_eq!(diff.units(), a - b),
                Err(_) => prop_assert!((a - b).unsigned_abs() > MAX_ABS_UNITS as u128),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = Amount::parse(&text, 8, SignPolicy::Any);
        }

        #[test]
        fn decimal_text_parses_to_exact_units(int in 0u64..1_000_000_000_000, frac in 0u32..100_000_000) {
            let text = format!("{int}.{frac:08}");
            let amount = Amount::parse(&text, 8, SignPolicy::NonNegative).unwrap();
            prop_assert_eq!(amount.units(), i128::from(int) * 100_000_000 + i128::from(frac));
        }
    }
}
