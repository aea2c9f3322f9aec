//! Futures (CoinsPaid-style v2): for one of the merchant's conversion addresses, prices
//! held from `ts_fixed` to `ts_release` (`rates.futures_window_secs`). A confirmed
//! futures fixes the price for a receiver amount: the next deposit of exactly its
//! sender amount to that address, arriving before `ts_release`, converts at that price
//! (and carries the futures' id); any other amount, or a late one, converts at the
//! market like any deposit with exchange. A futures is taken by one deposit only. The
//! receiver amount is limited to `rates.futures_limit` in `rates.futures_limit_currency`
//! (10,000 EUR by default, as the seed says).

use kassa_core::ledger::MerchantId;
use kassa_core::rates::convert_down;
use kassa_core::{Currency, SignPolicy};
use kassa_store::{DepositAddressRow, DepositConversion, DepositRow, FuturesRow, NewFutures};

use crate::chains::DepositAddress;
use crate::exchange::Side;
use crate::{Engine, EngineError};

/// Receiver amounts `futures/rates` prices (in the receiver currency).
const TIERS: [&str; 7] = ["5", "10", "20", "50", "100", "200", "300"];

/// What `futures/rates` answers.
#[derive(Clone, Debug)]
pub struct FuturesRates {
    pub address: DepositAddress,
    pub sender_currency: String,
    pub receiver_currency: String,
    pub ts_fixed_ms: i64,
    pub ts_release_ms: i64,
    /// Receiver amount → price (receiver units per sender unit), within the limit.
    pub tiers: Vec<(String, String)>,
}

/// A confirmed futures.
#[derive(Clone, Debug)]
pub struct Futures {
    pub id: i64,
    pub address: DepositAddress,
    pub sender_currency: String,
    pub receiver_currency: String,
    pub price: String,
    /// What to deposit, exactly.
    pub sender_amount: String,
    pub receiver_amount: String,
    /// The exchange fee, in the sender currency.
    pub fee_amount: String,
    pub ts_fixed_ms: i64,
    pub ts_release_ms: i64,
}

impl Engine {
    /// One of the merchant's addresses with conversion.
    async fn conversion_address(&self, merchant: MerchantId, address: &str) -> Result<(DepositAddressRow, Currency, Currency), EngineError> {
        let a = self.store.merchant_deposit_address(merchant, address.trim()).await?.ok_or_else(|| EngineError::invalid("address", "not one of your addresses"))?;
        let Some(to) = a.convert_to.clone() else {
            return Err(EngineError::invalid("address", "this address converts nothing (take one with convert_to)"));
        };
        let from = self.currencies.get(&a.currency)?.clone();
        let to = self.currencies.get(&to)?.clone();
        Ok((a, from, to))
    }

    /// `units` of `c` in the futures limit's currency, at the current rate.
    fn in_limit_currency(&self, c: &Currency, units: i128) -> Result<(i128, Currency), EngineError> {
        let rates = self.rates()?;
        let limit_c = self.currencies.get(&rates.options.futures_limit_currency)?.clone();
        if c.code == limit_c.code {
            return Ok((units, limit_c));
        }
        let rate = rates.current(c.code.as_str(), limit_c.code.as_str())?.rate;
        Ok((convert_down(units, rate, c.precision, limit_c.precision).map_err(|e| EngineError::invalid("receiver_amount", e))?, limit_c))
    }

    /// Refuses a futures over the limit: the receiver amount's equivalent (or, without a
    /// rate for the receiver currency, the sender amount's).
    fn check_futures_limit(&self, to: &Currency, receiver_units: i128, from: &Currency, sender_units: i128) -> Result<(), EngineError> {
        let rates = self.rates()?;
        let (value, limit_c) = match self.in_limit_currency(to, receiver_units) {
            Ok(v) => v,
            Err(_) => self.in_limit_currency(from, sender_units).map_err(|e| {
                EngineError::invalid("receiver_amount", format!("the futures limit cannot be checked: {}", e.client_message()))
            })?,
        };
        let limit = limit_c.parse_amount(&rates.options.futures_limit, SignPolicy::NonNegative)?;
        if value > limit.units() {
            return Err(EngineError::invalid("receiver_amount", format!("over the futures limit of {} {}", limit, limit_c.code)));
        }
        Ok(())
    }

    fn futures_window(&self, now: i64) -> Result<(i64, i64), EngineError> {
        let window = i64::try_from(self.rates()?.options.futures_window.as_millis()).unwrap_or(i64::MAX / 2);
        Ok((now, now.saturating_add(window)))
    }

    /// Prices for an address's conversion, per receiver amount, held for the window.
    pub async fn futures_rates(&self, merchant: MerchantId, address: &str) -> Result<FuturesRates, EngineError> {
        let (a, from, to) = self.conversion_address(merchant, address).await?;
        let (ts_fixed_ms, ts_release_ms) = self.futures_window(self.now_ms())?;
        let mut tiers = Vec::new();
        for tier in TIERS {
            let Ok((c, rate, _)) = self.price(&from, &to, &Side::Receiver(tier.to_string())) else { continue };
            if self.check_futures_limit(&to, c.receiver_units, &from, c.sender_units).is_err() {
                continue;
            }
            tiers.push((to.amount(c.receiver_units)?.to_string(), rate.to_string()));
        }
        if tiers.is_empty() {
            // Say why: the rate, the pair's least amount, or the limit.
            let (c, _, _) = self.price(&from, &to, &Side::Receiver(TIERS[0].to_string()))?;
            self.check_futures_limit(&to, c.receiver_units, &from, c.sender_units)?;
        }
        Ok(FuturesRates {
            address: a.into(),
            sender_currency: from.code.to_string(),
            receiver_currency: to.code.to_string(),
            ts_fixed_ms,
            ts_release_ms,
            tiers,
        })
    }

    /// Fixes a price for `receiver_amount` of the address's conversion until the window
    /// ends.
    pub async fn confirm_futures(
        &self,
        merchant: MerchantId,
        address: &str,
        sender_currency: &str,
        receiver_currency: &str,
        receiver_amount: &str,
    ) -> Result<Futures, EngineError> {
        let (a, from, to) = self.conversion_address(merchant, address).await?;
        if !from.code.as_str().eq_ignore_ascii_case(sender_currency.trim()) {
            return Err(EngineError::invalid("sender_currency", format!("the address receives {}", from.code)));
        }
        if !to.code.as_str().eq_ignore_ascii_case(receiver_currency.trim()) {
            return Err(EngineError::invalid("receiver_currency", format!("the address converts to {}", to.code)));
        }
        let (c, rate, _) = self.price(&from, &to, &Side::Receiver(receiver_amount.to_string()))?;
        self.check_futures_limit(&to, c.receiver_units, &from, c.sender_units)?;
        // What the payer sends: the priced amount after the deposit fee.
        let deposit_units = from.deposit_for_credit(c.sender_units).map_err(|e| EngineError::invalid("receiver_amount", e))?;
        let (ts_fixed_ms, ts_release_ms) = self.futures_window(self.now_ms())?;
        let row = self
            .store
            .insert_futures(&NewFutures {
                merchant,
                address_id: a.id,
                sender_currency: from.code.to_string(),
                receiver_currency: to.code.to_string(),
                sender_units: deposit_units,
                receiver_units: c.receiver_units,
                fee_units: c.fee_units,
                rate: rate.to_string(),
                ts_fixed_ms,
                ts_release_ms,
            })
            .await?;
        tracing::info!(merchant = merchant.0, futures = row.id, address = %a.address, sender_units = c.sender_units, receiver_units = c.receiver_units,
            rate = %row.rate, "futures confirmed");
        self.futures_view(row, a, &from, &to)
    }

    fn futures_view(&self, f: FuturesRow, a: DepositAddressRow, from: &Currency, to: &Currency) -> Result<Futures, EngineError> {
        Ok(Futures {
            id: f.id,
            address: a.into(),
            sender_currency: f.sender_currency,
            receiver_currency: f.receiver_currency,
            price: f.rate,
            sender_amount: from.amount(f.sender_units)?.to_string(),
            receiver_amount: to.amount(f.receiver_units)?.to_string(),
            // The exchange fee and the deposit fee, both in the sender currency.
            fee_amount: from.amount(f.fee_units + from.deposit_fee_units(f.sender_units)?)?.to_string(),
            ts_fixed_ms: f.ts_fixed_ms,
            ts_release_ms: f.ts_release_ms,
        })
    }

    /// The conversion a deposit takes from a futures: exactly its sender amount, in its
    /// currency, arrived within its window, claimed by this deposit (once). `None`: convert at the
    /// market.
    pub(crate) async fn futures_conversion(&self, d: &DepositRow, to: &str, net_units: i128) -> Result<Option<DepositConversion>, EngineError> {
        let Some(f) = self.store.futures_for_deposit(d.address_id, d.amount_units, d.id, d.first_seen_at_ms).await? else { return Ok(None) };
        // A deposit fee raised since the confirmation can leave less than the exchange fee:
        // then the market converts it.
        if f.sender_currency != d.currency || f.receiver_currency != to || net_units < f.fee_units || !self.store.claim_futures(f.id, d.id).await? {
            return Ok(None);
        }
        tracing::info!(deposit = d.id, futures = f.id, rate = %f.rate, "deposit converted at its futures price");
        Ok(Some(DepositConversion { currency: f.receiver_currency, units: f.receiver_units, fee_units: f.fee_units, rate: f.rate, futures_id: Some(f.id) }))
    }
}
