//! Currencies as declared in the configuration file, validated into exact rules:
//! precision, confirmations, limits and fees (fixed + percent per operation).
//! Every validation error names the configuration key it is about.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::amount::{Amount, AmountError, SignPolicy, MAX_PRECISION};

/// A currency code such as `BTC`, `USDT_ERC20` or `EUR`: 1–16 characters of
/// uppercase ASCII letters, digits and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CurrencyCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a currency code (1-16 characters: A-Z, 0-9, _)")]
pub struct BadCurrencyCode(pub String);

impl CurrencyCode {
    pub fn parse(text: &str) -> Result<Self, BadCurrencyCode> {
        let ok = (1..=16).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(BadCurrencyCode(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CurrencyCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CurrencyKind {
    Crypto,
    Fiat,
}

/// The operations a fee can be charged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Deposit,
    Withdrawal,
    InternalMove,
    Exchange,
}

/// Scale of fee percentages: percent × 10^6, so `"0.125"` percent is 125_000.
pub const PERCENT_SCALE: u8 = 6;

/// A fee: a fixed part in the currency's units plus a percentage of the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fee {
    pub fixed_units: i128,
    /// percent × 10^6 (`PERCENT_SCALE`).
    pub percent_e6: i128,
}

impl Fee {
    pub const ZERO: Fee = Fee { fixed_units: 0, percent_e6: 0 };

    /// The fee on `amount_units`: fixed + percent, the percent part rounded up so any
    /// rounding favours the house, by less than one unit.
    pub fn on(&self, amount_units: i128) -> Result<i128, AmountError> {
        let denominator: i128 = 100 * 10i128.pow(u32::from(PERCENT_SCALE));
        let product = amount_units
            .checked_mul(self.percent_e6)
            .ok_or(AmountError::OutOfRange)?;
        let percent_part = product.div_euclid(denominator)
            + i128::from(product.rem_euclid(denominator) != 0);
        self.fixed_units.checked_add(percent_part).ok_or(AmountError::OutOfRange)
    }

    /// The least amount that leaves at least `net` after this fee. Out of range when
    /// none does (a percent of 100 or more).
    pub fn gross_for(&self, net: i128) -> Result<i128, AmountError> {
        let denominator: i128 = 100 * 10i128.pow(u32::from(PERCENT_SCALE));
        if self.percent_e6 >= denominator {
            return Err(AmountError::OutOfRange);
        }
        // Below the answer: (net + fixed) / (1 - percent), less a unit of rounding.
        let scaled = net.checked_add(self.fixed_units).and_then(|n| n.checked_mul(denominator)).ok_or(AmountError::OutOfRange)?;
        let mut gross = (scaled / (denominator - self.percent_e6) - 1).max(net);
        // Each step adds the shortfall, which never passes the least answer: what is left
        // grows by at most one unit per unit added.
        for _ in 0..128 {
            let short = net - (gross - self.on(gross)?);
            if short <= 0 {
                return Ok(gross);
            }
            gross = gross.checked_add(short).ok_or(AmountError::OutOfRange)?;
        }
        Err(AmountError::OutOfRange)
    }

    /// The same fee with its fixed part halved (rounded up, for the house): what each
    /// further withdrawal of a bulk request pays after the largest one.
    pub fn with_half_fixed(&self) -> Fee {
        Fee { fixed_units: self.fixed_units / 2 + self.fixed_units % 2, percent_e6: self.percent_e6 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeSchedule {
    pub deposit: Fee,
    pub withdrawal: Fee,
    pub internal_move: Fee,
    pub exchange: Fee,
    /// Of a payout plan: on the sum of its payouts.
    pub payout_plan: Fee,
}

impl FeeSchedule {
    pub fn for_operation(&self, op: Operation) -> Fee {
        match op {
            Operation::Deposit => self.deposit,
            Operation::Withdrawal => self.withdrawal,
            Operation::InternalMove => self.internal_move,
            Operation::Exchange => self.exchange,
        }
    }
}

/// A validated currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currency {
    pub code: CurrencyCode,
    pub name: String,
    pub kind: CurrencyKind,
    /// The chain that carries it (`None` for fiat, which lives only in the ledger).
    pub chain: Option<String>,
    pub precision: u8,
    pub confirmations: u32,
    pub min_receive: Amount,
    pub min_withdrawal: Amount,
    /// `None` means no per-transaction maximum.
    pub max_withdrawal: Option<Amount>,
    /// `None` means no daily count limit.
    pub max_withdrawals_per_day: Option<u32>,
    pub fees: FeeSchedule,
    pub active: bool,
    pub can_send: bool,
    pub can_receive: bool,
}

impl Currency {
    /// The fee a deposit of `units` pays: none below the minimum deposit (that is
    /// dust, never credited), otherwise the deposit fee rule, at most the deposit.
    pub fn deposit_fee_units(&self, units: i128) -> Result<i128, AmountError> {
        Ok(if units < self.min_receive.units() { 0 } else { self.fees.deposit.on(units)?.min(units) })
    }

    /// The least deposit that credits at least `net` units after its deposit fee (what a
    /// payer must send for the merchant to receive `net`): never below the minimum deposit.
    pub fn deposit_for_credit(&self, net: i128) -> Result<i128, AmountError> {
        Ok(self.fees.deposit.gross_for(net)?.max(self.min_receive.units()))
    }

    /// Parses an amount in this currency's precision.
    pub fn parse_amount(&self, text: &str, sign: SignPolicy) -> Result<Amount, AmountError> {
        Amount::parse(text, self.precision, sign)
    }

    pub fn amount(&self, units: i128) -> Result<Amount, AmountError> {
        Amount::from_units(units, self.precision)
    }
}

// ---- configuration shapes (as written in the TOML file) ----

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeeConfig {
    #[serde(default)]
    pub fixed: Option<String>,
    #[serde(default)]
    pub percent: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeesConfig {
    #[serde(default)]
    pub deposit: FeeConfig,
    #[serde(default)]
    pub withdrawal: FeeConfig,
    #[serde(default)]
    pub internal_move: FeeConfig,
    #[serde(default)]
    pub exchange: FeeConfig,
    #[serde(default)]
    pub payout_plan: FeeConfig,
}

fn yes() -> bool {
    true
}

/// One `[currencies.CODE]` table of the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyConfig {
    pub name: String,
    pub kind: CurrencyKind,
    #[serde(default)]
    pub chain: Option<String>,
    #[serde(default)]
    pub precision: Option<u8>,
    #[serde(default)]
    pub confirmations: Option<u32>,
    #[serde(default)]
    pub min_receive: Option<String>,
    #[serde(default)]
    pub min_withdrawal: Option<String>,
    #[serde(default)]
    pub max_withdrawal: Option<String>,
    #[serde(default)]
    pub max_withdrawals_per_day: Option<u32>,
    #[serde(default)]
    pub fees: FeesConfig,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub can_send: Option<bool>,
    #[serde(default)]
    pub can_receive: Option<bool>,
}

/// Default ledger precision, as the seed APIs expose amounts.
pub const DEFAULT_PRECISION: u8 = 8;

/// A configuration error that names the offending key (`currencies.LTC.fees.withdrawal.percent`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self { key: key.into(), message: message.to_string() }
    }
}

fn parse_fee(key: &str, raw: &FeeConfig, precision: u8) -> Result<Fee, ConfigError> {
    let fixed_units = match &raw.fixed {
        Some(t) => Amount::parse(t, precision, SignPolicy::NonNegative)
            .map_err(|e| ConfigError::new(format!("{key}.fixed"), e))?
            .units(),
        None => 0,
    };
    let percent_e6 = match &raw.percent {
        Some(t) => {
            let p = Amount::parse(t, PERCENT_SCALE, SignPolicy::NonNegative)
                .map_err(|e| ConfigError::new(format!("{key}.percent"), e))?;
            if p.units() > 100 * 10i128.pow(u32::from(PERCENT_SCALE)) {
                return Err(ConfigError::new(format!("{key}.percent"), "must be at most 100"));
            }
            p.units()
        }
        None => 0,
    };
    Ok(Fee { fixed_units, percent_e6 })
}

impl CurrencyConfig {
    /// Validates one currency table; `code` is its key under `[currencies]`.
    pub fn validate(&self, code: &str) -> Result<Currency, ConfigError> {
        let base = format!("currencies.{code}");
        let key = |k: &str| format!("{base}.{k}");
        let code = CurrencyCode::parse(code).map_err(|e| ConfigError::new(&base, e))?;
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(key("name"), "must not be empty"));
        }
        let precision = self.precision.unwrap_or(DEFAULT_PRECISION);
        if precision > MAX_PRECISION {
            return Err(ConfigError::new(key("precision"), format!("must be at most {MAX_PRECISION}")));
        }
        let chain = match (self.kind, &self.chain) {
            (CurrencyKind::Fiat, Some(_)) => {
                return Err(ConfigError::new(key("chain"), "a fiat currency has no chain"))
            }
            (CurrencyKind::Crypto, None) => {
                return Err(ConfigError::new(key("chain"), "a crypto currency needs a chain"))
            }
            (CurrencyKind::Crypto, Some(c)) if c.trim().is_empty() => {
                return Err(ConfigError::new(key("chain"), "must not be empty"))
            }
            (_, chain) => chain.clone(),
        };
        let fiat = self.kind == CurrencyKind::Fiat;
        for (flag, value) in [("can_send", self.can_send), ("can_receive", self.can_receive)] {
            if fiat && value == Some(true) {
                return Err(ConfigError::new(key(flag), "a fiat currency exists in the ledger only"));
            }
        }
        let amount = |name: &str, raw: &Option<String>| -> Result<Option<Amount>, ConfigError> {
            raw.as_deref()
                .map(|t| Amount::parse(t, precision, SignPolicy::NonNegative))
                .transpose()
                .map_err(|e| ConfigError::new(key(name), e))
        };
        let min_receive = amount("min_receive", &self.min_receive)?.unwrap_or(Amount::zero(precision));
        let min_withdrawal =
            amount("min_withdrawal", &self.min_withdrawal)?.unwrap_or(Amount::zero(precision));
        let max_withdrawal = amount("max_withdrawal", &self.max_withdrawal)?;
        if let Some(max) = max_withdrawal {
            if max < min_withdrawal {
                return Err(ConfigError::new(key("max_withdrawal"), "is below min_withdrawal"));
            }
        }
        let fee = |op: &str, raw: &FeeConfig| parse_fee(&format!("{base}.fees.{op}"), raw, precision);
        let fees = FeeSchedule {
            deposit: fee("deposit", &self.fees.deposit)?,
            withdrawal: fee("withdrawal", &self.fees.withdrawal)?,
            internal_move: fee("internal_move", &self.fees.internal_move)?,
            exchange: fee("exchange", &self.fees.exchange)?,
            payout_plan: fee("payout_plan", &self.fees.payout_plan)?,
        };
        Ok(Currency {
            code,
            name: self.name.clone(),
            kind: self.kind,
            chain,
            precision,
            confirmations: if fiat { 0 } else { self.confirmations.unwrap_or(1) },
            min_receive,
            min_withdrawal,
            max_withdrawal,
            max_withdrawals_per_day: self.max_withdrawals_per_day,
            fees,
            active: self.active,
            can_send: !fiat && self.can_send.unwrap_or(true),
            can_receive: !fiat && self.can_receive.unwrap_or(true),
        })
    }
}

/// Validates every configured currency, in code order.
pub fn validate_currencies(
    raw: &BTreeMap<String, CurrencyConfig>,
) -> Result<Vec<Currency>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("currencies", "at least one currency must be configured"));
    }
    raw.iter().map(|(code, cfg)| cfg.validate(code)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_fixed_fee_rounds_up_and_keeps_the_percent() {
        let fee = Fee { fixed_units: 27_501, percent_e6: 500_000 };
        assert_eq!(fee.with_half_fixed(), Fee { fixed_units: 13_751, percent_e6: 500_000 });
        assert_eq!(Fee { fixed_units: 10_000, percent_e6: 0 }.with_half_fixed().on(1_000_000).unwrap(), 5_000);
        assert_eq!(Fee::ZERO.with_half_fixed(), Fee::ZERO);
    }

    fn ltc() -> CurrencyConfig {
        toml_like(
            r#"{"name":"Litecoin","kind":"crypto","chain":"litecoin","confirmations":3,
                "min_withdrawal":"0.001","max_withdrawal":"100",
                "fees":{"withdrawal":{"fixed":"0.0001","percent":"0.5"}}}"#,
        )
    }

    fn toml_like(json: &str) -> CurrencyConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn validates_a_crypto_currency() {
        let c = ltc().validate("LTC").unwrap();
        assert_eq!(c.precision, 8);
        assert_eq!(c.confirmations, 3);
        assert_eq!(c.min_withdrawal.to_string(), "0.00100000");
        assert_eq!(c.fees.withdrawal, Fee { fixed_units: 10_000, percent_e6: 500_000 });
        assert!(c.can_send && c.can_receive && c.active);
    }

    #[test]
    fn errors_name_the_key() {
        let mut bad = ltc();
        bad.fees.withdrawal.percent = Some("0.1234567".into());
        let e = bad.validate("LTC").unwrap_err();
        assert_eq!(e.key, "currencies.LTC.fees.withdrawal.percent");
        let mut bad = ltc();
        bad.min_withdrawal = Some("1e-3".into());
        assert_eq!(bad.validate("LTC").unwrap_err().key, "currencies.LTC.min_withdrawal");
        let mut bad = ltc();
        bad.chain = None;
        assert_eq!(bad.validate("LTC").unwrap_err().key, "currencies.LTC.chain");
        assert_eq!(ltc().validate("ltc").unwrap_err().key, "currencies.ltc");
        let mut bad = ltc();
        bad.max_withdrawal = Some("0.0001".into());
        assert_eq!(bad.validate("LTC").unwrap_err().key, "currencies.LTC.max_withdrawal");
        let fiat = toml_like(r#"{"name":"Euro","kind":"fiat","precision":2,"can_send":true}"#);
        assert_eq!(fiat.validate("EUR").unwrap_err().key, "currencies.EUR.can_send");
    }

    proptest::proptest! {
        // The amount to send for a credit: enough after the fee, and the least that is.
        #[test]
        fn deposit_for_credit_is_the_least_that_credits(fixed in 0i128..100_000, percent_e6 in 0i128..99_900_000, min in 0i128..1_000_000, net in 1i128..10_000_000_000) {
            let mut c = ltc().validate("LTC").unwrap();
            c.fees.deposit = Fee { fixed_units: fixed, percent_e6 };
            c.min_receive = Amount::from_units(min, 8).unwrap();
            let gross = c.deposit_for_credit(net).unwrap();
            proptest::prop_assert!(gross - c.deposit_fee_units(gross).unwrap() >= net);
            let least = net.max(min);
            proptest::prop_assert!(gross == least || (gross - 1) - c.deposit_fee_units(gross - 1).unwrap() < net, "{gross} is not the least");
        }
    }

    #[test]
    fn deposit_for_credit_refuses_a_fee_that_takes_everything() {
        let mut c = ltc().validate("LTC").unwrap();
        c.fees.deposit = Fee { fixed_units: 0, percent_e6: 100_000_000 };
        assert_eq!(c.deposit_for_credit(1_000), Err(AmountError::OutOfRange));
        c.fees.deposit = Fee { fixed_units: 0, percent_e6: 1_000_000 };
        assert_eq!(c.deposit_for_credit(99_000_000).unwrap(), 100_000_000, "1 % of 1 LTC");
    }

    #[test]
    fn fiat_lives_in_the_ledger_only() {
        let eur = toml_like(r#"{"name":"Euro","kind":"fiat","precision":2}"#).validate("EUR").unwrap();
        assert_eq!(eur.chain, None);
        assert!(!eur.can_send && !eur.can_receive);
        assert_eq!(eur.confirmations, 0);
    }

    proptest::proptest! {
        /// L5: a fee never undercharges and overcharges by less than one unit.
        #[test]
        fn fees_favour_the_house_by_less_than_one_unit(
            amount in 0i128..1_000_000_000_000_000_000,
            fixed in 0i128..1_000_000,
            percent_e6 in 0i128..=100_000_000,
        ) {
            let fee = Fee { fixed_units: fixed, percent_e6 };
            let charged = fee.on(amount).unwrap();
            let exact_scaled = amount * percent_e6; // exact percent part × 10^8
            let percent_part = charged - fixed;
            proptest::prop_assert!(percent_part * 100_000_000 >= exact_scaled);
            proptest::prop_assert!((percent_part - 1) * 100_000_000 < exact_scaled);
        }
    }

    #[test]
    fn percent_fees_round_up_by_less_than_one_unit() {
        let fee = Fee { fixed_units: 10, percent_e6: 500_000 }; // 10 units + 0.5 %
        assert_eq!(fee.on(1_000).unwrap(), 15);
        assert_eq!(fee.on(1_001).unwrap(), 16); // 5.005 rounds up to 6
        assert_eq!(fee.on(0).unwrap(), 10);
        assert_eq!(Fee::ZERO.on(12345).unwrap(), 0);
        let third = Fee { fixed_units: 0, percent_e6: 33_333_333 };
        for amount in [1i128, 7, 99, 12_345_678_901] {
            let charged = third.on(amount).unwrap();
            let exact_times_denominator = amount * 33_333_333;
            assert!(charged * 100_000_000 >= exact_times_denominator);
            assert!((charged - 1) * 100_000_000 < exact_times_denominator);
        }
    }
}
