//! Exchange rates and conversion math, exact: a rate is an integer scaled by 10^18
//! (how many units of value of the quote currency one unit of value of the base
//! currency is worth), conversions work on ledger units of each currency's precision,
//! and every rounding goes in the house's favour by less than one unit.

use std::fmt;

use crate::amount::AmountError;
use ethnum::U256;

use crate::currency::Fee;

/// Decimals of a rate.
pub const RATE_SCALE: u32 = 18;
const ONE: i128 = 1_000_000_000_000_000_000;

/// A positive exchange rate, exact to 18 decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate(i128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("rate {0:?} is not a positive decimal number")]
    NotDecimal(String),
    #[error("rate is out of range")]
    OutOfRange,
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error("the amount is too small to exchange (it converts to nothing)")]
    TooSmall,
}

impl Rate {
    /// From decimal text as price APIs send it ("60000.1", "0.00123", "6.0E4" is not
    /// accepted); digits past the 18th decimal are dropped.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let bad = || RateError::NotDecimal(text.chars().take(40).collect());
        let t = text.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || int.len() > 20 {
            return Err(bad());
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
        let mut f = frac.chars().take(RATE_SCALE as usize).collect::<String>();
        while f.len() < RATE_SCALE as usize {
            f.push('0');
        }
        let frac: i128 = f.parse().map_err(|_| bad())?;
        let v = int.checked_mul(ONE).and_then(|v| v.checked_add(frac)).ok_or(RateError::OutOfRange)?;
        if v <= 0 {
            return Err(bad());
        }
        Ok(Rate(v))
    }

    pub fn from_scaled(v: i128) -> Result<Rate, RateError> {
        if v > 0 {
            Ok(Rate(v))
        } else {
            Err(RateError::OutOfRange)
        }
    }

    /// The rate × 10^18.
    pub fn scaled(self) -> i128 {
        self.0
    }

    /// 1 / rate, rounded down.
    pub fn inverse(self) -> Result<Rate, RateError> {
        // 10^36 fits in an i128.
        Rate::from_scaled(ONE * ONE / self.0)
    }

    /// The rate less `spread_e6` (percent × 10^6), rounded down: what a customer gets.
    pub fn less_spread(self, spread_e6: i128) -> Result<Rate, RateError> {
        let keep = 100_000_000 - spread_e6; // 100 % in percent × 10^6
        if !(1..=100_000_000).contains(&keep) {
            return Err(RateError::OutOfRange);
        }
        let v = self.0.checked_mul(keep).ok_or(RateError::OutOfRange)? / 100_000_000;
        Rate::from_scaled(v)
    }
}

impl fmt::Display for Rate {
    /// Plain decimal with trailing zeros removed (at least one decimal).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / ONE;
        let frac = format!("{:018}", self.0 % ONE);
        let frac = frac.trim_end_matches('0');
        write!(f, "{int}.{}", if frac.is_empty() { "0" } else { frac })
    }
}

/// Converts `units` (at precision `from_p`) at `rate` to units at precision `to_p`,
/// rounded down (the house keeps the remainder, less than one unit).
pub fn convert_down(units: i128, rate: Rate, from_p: u8, to_p: u8) -> Result<i128, RateError> {
    if units < 0 {
        return Err(RateError::OutOfRange);
    }
    let (num, den) = scale(rate, from_p, to_p)?;
    let product = U256::from(units as u128).checked_mul(num).ok_or(RateError::OutOfRange)?;
    narrow(product / den)
}

/// The fewest units (at `from_p`) that convert to at least `target` (at `to_p`).
pub fn units_for(target: i128, rate: Rate, from_p: u8, to_p: u8) -> Result<i128, RateError> {
    if target < 0 {
        return Err(RateError::OutOfRange);
    }
    let (num, den) = scale(rate, from_p, to_p)?;
    let needed = U256::from(target as u128).checked_mul(den).ok_or(RateError::OutOfRange)?;
    let units = narrow(needed / num)? + i128::from(needed % num != U256::ZERO);
    debug_assert!(convert_down(units, rate, from_p, to_p)? >= target);
    Ok(units)
}

fn narrow(v: U256) -> Result<i128, RateError> {
    i128::try_from(v).map_err(|_| RateError::OutOfRange)
}

/// (numerator, denominator) turning from-units into to-units: rate × 10^to / (10^18 ×
/// 10^from), in 256 bits so that 18-decimal currencies convert without overflow.
fn scale(rate: Rate, from_p: u8, to_p: u8) -> Result<(U256, U256), RateError> {
    let ten = |p: u8| U256::from(10u8).pow(u32::from(p));
    let num = U256::from(rate.0 as u128) * ten(to_p);
    let den = U256::from(ONE as u128) * ten(from_p);
    Ok((num, den))
}

/// A priced conversion: the sender pays `sender_units` (fee included), the fee is
/// `fee_units` of the sender's currency, the receiver gets `receiver_units`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversion {
    pub sender_units: i128,
    pub fee_units: i128,
    pub receiver_units: i128,
}

/// The sender pays `sender_units`; the fee comes off first, the rest converts (down).
pub fn from_sender(sender_units: i128, fee: Fee, rate: Rate, from_p: u8, to_p: u8) -> Result<Conversion, RateError> {
    let fee_units = fee.on(sender_units)?.min(sender_units);
    let receiver_units = convert_down(sender_units - fee_units, rate, from_p, to_p)?;
    if receiver_units <= 0 {
        return Err(RateError::TooSmall);
    }
    Ok(Conversion { sender_units, fee_units, receiver_units })
}

/// The receiver must get `receiver_units`: the least the sender pays for that, fee
/// included (the receiver gets exactly the amount asked for).
pub fn from_receiver(receiver_units: i128, fee: Fee, rate: Rate, from_p: u8, to_p: u8) -> Result<Conversion, RateError> {
    if receiver_units <= 0 {
        return Err(RateError::TooSmall);
    }
    let net = units_for(receiver_units, rate, from_p, to_p)?;
    let gross = fee.gross_for(net)?;
    Ok(Conversion { sender_units: gross, fee_units: fee.on(gross)?, receiver_units })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Rate::parse("60000.1").unwrap().to_string(), "60000.1");
        assert_eq!(Rate::parse("0.00123").unwrap().scaled(), 1_230_000_000_000_000);
        assert_eq!(Rate::parse("2").unwrap().to_string(), "2.0");
        assert_eq!(Rate::parse("0.1234567890123456789").unwrap().to_string(), "0.123456789012345678");
        for bad in ["", "0", "-1", "1e5", "abc", "1.2.3", " ", "0.0000000000000000001"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::parse("4").unwrap().inverse().unwrap().to_string(), "0.25");
        assert_eq!(Rate::parse("3").unwrap().inverse().unwrap().to_string(), "0.333333333333333333");
        assert_eq!(Rate::parse("100").unwrap().less_spread(500_000).unwrap().to_string(), "99.5");
    }

    #[test]
    fn converts_between_precisions() {
        let r = Rate::parse("80.5").unwrap(); // 1 LTC = 80.50 EUR
        // 1.23456789 LTC (8 decimals) → EUR (2 decimals): 99.3827151… → 99.38.
        assert_eq!(convert_down(123_456_789, r, 8, 2).unwrap(), 9938);
        // 10.00 EUR → LTC at 1/80.5: 0.12422360… → 0.12422360.
        let inv = r.inverse().unwrap();
        assert_eq!(convert_down(1000, inv, 2, 8).unwrap(), 12_422_360);
        assert_eq!(units_for(9938, r, 8, 2).unwrap(), 123_453_417);
        assert_eq!(convert_down(123_453_417, r, 8, 2).unwrap(), 9938);
        assert_eq!(convert_down(123_453_416, r, 8, 2).unwrap(), 9937);
    }

    #[test]
    fn fees_and_both_sides() {
        let fee = Fee { fixed_units: 0, percent_e6: 500_000 }; // 0.5 %
        let r = Rate::parse("80").unwrap();
        let c = from_sender(100_000_000, fee, r, 8, 2).unwrap(); // 1 LTC
        assert_eq!(c, Conversion { sender_units: 100_000_000, fee_units: 500_000, receiver_units: 7960 });
        let back = from_receiver(7960, fee, r, 8, 2).unwrap();
        assert_eq!(back.receiver_units, 7960);
        assert!(back.sender_units <= 100_000_000);
        assert_eq!(from_sender(back.sender_units, fee, r, 8, 2).unwrap().receiver_units, 7960, "the quoted sender amount buys it");
        assert!(from_sender(back.sender_units - 1, fee, r, 8, 2).unwrap().receiver_units < 7960, "and is the least that does");
        assert_eq!(from_sender(1, fee, r, 8, 2), Err(RateError::TooSmall));
        // 18-decimal currencies: 12.345 ETH at 3000 EUR is 37,035.00 EUR, no overflow.
        let eth = Rate::parse("3000").unwrap();
        assert_eq!(convert_down(12_345_000_000_000_000_000, eth, 18, 2).unwrap(), 3_703_500);
        assert_eq!(units_for(3_703_500, eth, 18, 2).unwrap(), 12_345_000_000_000_000_000);
    }

    proptest! {
        // L5: a conversion never creates value: what the receiver gets is worth at most
        // what was converted, and less by under one receiver unit (plus the fee).
        #[test]
        fn conversions_never_create_value(units in 1i128..1_000_000_000_000_000_000_000, rate in 1i128..100_000_000_000_000_000_000_000, from_p in 0u8..=18, to_p in 0u8..=18) {
            let r = Rate::from_scaled(rate).unwrap();
            // exact value: units × rate × 10^to / (10^18 × 10^from), compared without rounding
            let (num, den) = scale(r, from_p, to_p).unwrap();
            let exact_num = U256::from(units as u128) * num;
            match convert_down(units, r, from_p, to_p) {
                Ok(out) => {
                    let out_den = U256::from(out as u128) * den;
                    prop_assert!(out_den <= exact_num, "created value");
                    prop_assert!(exact_num - out_den < den, "rounded by a unit or more");
                }
                // Refused only when the result itself does not fit a ledger amount.
                Err(e) => prop_assert!(exact_num / den > U256::from(i128::MAX as u128), "{e}"),
            }
        }

        #[test]
        fn receiver_side_quotes_are_exact_and_minimal(target in 1i128..10_000_000_000, rate in 1_000_000_000_000i128..1_000_000_000_000_000_000_000, pct in 0i128..5_000_000, fixed in 0i128..1000, from_p in 0u8..=18, to_p in 0u8..=18) {
            let r = Rate::from_scaled(rate).unwrap();
            let fee = Fee { fixed_units: fixed, percent_e6: pct };
            let c = from_receiver(target, fee, r, from_p, to_p).unwrap();
            let again = from_sender(c.sender_units, fee, r, from_p, to_p).unwrap();
            prop_assert!(again.receiver_units >= target);
            if c.sender_units > 1 {
                let less = from_sender(c.sender_units - 1, fee, r, from_p, to_p).map(|x| x.receiver_units).unwrap_or(0);
                prop_assert!(less < target);
            }
        }
    }
}
