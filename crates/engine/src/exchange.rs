//! Quotes and exchanges between a merchant's currencies. A quote prices a conversion
//! (sender or receiver side) at the current rate less the pair's spread, minus the
//! sending currency's exchange fee, and holds it for the quote lifetime. Executing a
//! live, unmodified quote — or exchanging at the market — moves value in one balanced
//! ledger transaction: merchant → exchange house in the sending currency (fee to fees
//! earned), exchange house → merchant in the receiving one. Every rounding favours the
//! house by less than one unit. Idempotent by the client's id; a quote executes once.

use kassa_core::ledger::{AccountKey, Action, Leg, LedgerError, MerchantId, SystemAccount, TxRequest};
use kassa_core::rates::{from_receiver, from_sender, Conversion, Rate, RateError};
use kassa_core::{Currency, SignPolicy};
use kassa_store::{ExchangeRow, NewExchange, NewQuote, QuoteRow, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::timefmt::format_ms;
use crate::rates::Rates;
use crate::secrets::random_alphanumeric;
use crate::{Engine, EngineError};

/// Which side of a conversion the amount names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// The sender pays this much (fee included).
    Sender(String),
    /// The receiver gets exactly this much.
    Receiver(String),
}

/// A price held until `expires_at`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Quote {
    pub id: String,
    pub from_currency: String,
    pub to_currency: String,
    /// What leaves the sender's balance, fee included.
    #[schema(value_type = crate::schemas::Amount)]
    pub sender_amount: String,
    #[schema(value_type = crate::schemas::Amount)]
    pub fee_amount: String,
    pub fee_currency: String,
    #[schema(value_type = crate::schemas::Amount)]
    pub receiver_amount: String,
    /// Units of `to_currency` per unit of `from_currency`, spread included.
    pub rate: String,
    pub source: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// `created_at` and `expires_at` in Unix milliseconds (for dialects that show numbers).
    #[serde(skip)]
    pub created_at_ms: i64,
    #[serde(skip)]
    pub expires_at_ms: i64,
}

/// An exchange done: value moved between two of the merchant's currencies.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Exchange {
    pub id: String,
    pub client_id: String,
    pub kind: String,
    pub from_currency: String,
    pub to_currency: String,
    #[schema(value_type = crate::schemas::Amount)]
    pub sender_amount: String,
    #[schema(value_type = crate::schemas::Amount)]
    pub fee_amount: String,
    pub fee_currency: String,
    #[schema(value_type = crate::schemas::Amount)]
    pub receiver_amount: String,
    pub rate: String,
    pub status: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The exchange's own number (for dialects whose ids are integers).
    #[serde(skip)]
    pub number: i64,
    /// True when this answers a repeated `client_id` (the exchange existed already).
    #[serde(skip)]
    pub replayed: bool,
}

/// What a client believes a quote says (a dialect may send the quoted price and
/// amounts back when it executes); anything given must match.
#[derive(Clone, Debug, Default)]
pub struct QuoteCheck {
    pub sender_amount: Option<String>,
    pub receiver_amount: Option<String>,
    pub rate: Option<String>,
}

/// A rate as merchants see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Rate)]
pub struct RateView {
    pub from_currency: String,
    pub to_currency: String,
    /// The mid price.
    pub mid: String,
    /// What a quote gives now, spread taken (before the exchange fee).
    pub rate: String,
    pub source: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A pair as merchants see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Pair)]
pub struct PairView {
    pub base: String,
    pub quote: String,
    pub spread_percent: String,
    /// Least amount exchanged, in the base currency (either direction).
    pub min_amount: String,
    /// The mid rate (base → quote); null when no fresh rate is known.
    #[schema(required = true)]
    pub rate: Option<String>,
    #[schema(required = true)]
    pub source: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub updated_at: Option<String>,
}

fn hash(parts: &[&str]) -> Vec<u8> {
    Sha256::digest(parts.join("|").as_bytes()).to_vec()
}

impl Engine {
    pub(crate) fn rates(&self) -> Result<&Rates, EngineError> {
        self.rates.as_deref().ok_or_else(|| EngineError::RatesUnavailable("no rate sources are configured".into()))
    }

    /// The configured pair `from` and `to` belong to (either direction).
    fn pair_of<'r>(rates: &'r Rates, from: &Currency, to: &Currency) -> Result<&'r crate::rates::PairConfig, EngineError> {
        rates
            .pair(from.code.as_str(), to.code.as_str())
            .ok_or_else(|| EngineError::invalid("pair", format!("{} → {} is not an exchangeable pair", from.code, to.code)))
    }

    fn exchange_currencies(&self, from: &str, to: &str) -> Result<(Currency, Currency), EngineError> {
        let f = self.currencies.active(from)?.clone();
        let t = self.currencies.active(to)?.clone();
        if f.code == t.code {
            return Err(EngineError::invalid("to_currency", "must differ from the sending currency"));
        }
        Ok((f, t))
    }

    /// Prices a conversion now: (conversion, customer rate, source).
    pub(crate) fn price(&self, from: &Currency, to: &Currency, side: &Side) -> Result<(Conversion, Rate, &'static str), EngineError> {
        let rates = self.rates()?;
        let pair = Self::pair_of(rates, from, to)?.clone();
        let latest = rates.current(from.code.as_str(), to.code.as_str())?;
        let rate = latest.rate.less_spread(pair.spread_e6).map_err(|e| EngineError::invalid("rate", e))?;
        let fee = from.fees.exchange;
        let too_small = |e: RateError| match e {
            RateError::Amount(a) => EngineError::Amount(a),
            RateError::TooSmall => EngineError::invalid("amount", "too small to exchange: it converts to nothing"),
            e => EngineError::invalid("amount", e),
        };
        let c = match side {
            Side::Sender(text) => {
                let a = from.parse_amount(text.trim(), SignPolicy::Positive)?;
                from_sender(a.units(), fee, rate, from.precision, to.precision).map_err(too_small)?
            }
            Side::Receiver(text) => {
                let a = to.parse_amount(text.trim(), SignPolicy::Positive)?;
                from_receiver(a.units(), fee, rate, from.precision, to.precision).map_err(too_small)?
            }
        };
        let base_units = if pair.base == from.code.as_str() { c.sender_units } else { c.receiver_units };
        if base_units < pair.min_base_units {
            let base = if pair.base == from.code.as_str() { from } else { to };
            return Err(EngineError::invalid(
                "amount",
                format!("the least exchanged on {}/{} is {} {}", pair.base, pair.quote, base.amount(pair.min_base_units)?, pair.base),
            ));
        }
        Ok((c, rate, latest.source))
    }

    /// A quote held for the configured lifetime.
    pub async fn quote(&self, merchant: MerchantId, from: &str, to: &str, side: Side) -> Result<Quote, EngineError> {
        let (f, t) = self.exchange_currencies(from, to)?;
        let (c, rate, source) = self.price(&f, &t, &side)?;
        let ttl = self.rates()?.options.quote_ttl;
        let row = self
            .store
            .insert_quote(&NewQuote {
                public_id: format!("qt_{}", random_alphanumeric(20)),
                merchant,
                from_currency: f.code.to_string(),
                to_currency: t.code.to_string(),
                sender_units: c.sender_units,
                fee_units: c.fee_units,
                receiver_units: c.receiver_units,
                rate: rate.to_string(),
                source: source.to_string(),
                expires_at_ms: self.now_ms() + ttl.as_millis() as i64,
            })
            .await?;
        self.quote_view(&row)
    }

    fn quote_view(&self, q: &QuoteRow) -> Result<Quote, EngineError> {
        let f = self.currencies.get(&q.from_currency)?;
        let t = self.currencies.get(&q.to_currency)?;
        Ok(Quote {
            id: q.public_id.clone(),
            from_currency: q.from_currency.clone(),
            to_currency: q.to_currency.clone(),
            sender_amount: f.amount(q.sender_units)?.to_string(),
            fee_amount: f.amount(q.fee_units)?.to_string(),
            fee_currency: q.from_currency.clone(),
            receiver_amount: t.amount(q.receiver_units)?.to_string(),
            rate: q.rate.clone(),
            source: q.source.clone(),
            created_at: format_ms(q.created_at_ms),
            expires_at: format_ms(q.expires_at_ms),
            created_at_ms: q.created_at_ms,
            expires_at_ms: q.expires_at_ms,
        })
    }

    fn exchange_view(&self, x: &ExchangeRow) -> Result<Exchange, EngineError> {
        let f = self.currencies.get(&x.from_currency)?;
        let t = self.currencies.get(&x.to_currency)?;
        Ok(Exchange {
            id: x.public_id.clone(),
            client_id: x.client_id.clone(),
            kind: x.kind.clone(),
            from_currency: x.from_currency.clone(),
            to_currency: x.to_currency.clone(),
            sender_amount: f.amount(x.sender_units)?.to_string(),
            fee_amount: f.amount(x.fee_units)?.to_string(),
            fee_currency: x.from_currency.clone(),
            receiver_amount: t.amount(x.receiver_units)?.to_string(),
            rate: x.rate.clone(),
            status: x.status.clone(),
            created_at: format_ms(x.created_at_ms),
            number: x.id,
            replayed: false,
        })
    }

    /// Executes a live quote exactly as quoted; refused when it expired, when what the
    /// client sends back differs from it, or when it was executed already.
    pub async fn execute_quote(&self, merchant: MerchantId, quote_id: &str, client_id: &str, check: QuoteCheck, origin: &str) -> Result<Exchange, EngineError> {
        validate_client_id(client_id)?;
        let q = self.store.quote(merchant, quote_id).await?.ok_or(EngineError::NotFound("quote"))?;
        self.execute_quote_row(merchant, q, client_id, check, origin).await
    }

    /// `execute_quote` for a quote already read.
    async fn execute_quote_row(&self, merchant: MerchantId, q: QuoteRow, client_id: &str, check: QuoteCheck, origin: &str) -> Result<Exchange, EngineError> {
        let quote_id = q.public_id.as_str();
        let request_hash = hash(&["fixed", quote_id]);
        if let Some(existing) = self.store.exchange_by_client_id(merchant, client_id).await? {
            return self.replay_exchange(existing, &request_hash).await;
        }
        let view = self.quote_view(&q)?;
        let (f, t) = self.exchange_currencies(&q.from_currency, &q.to_currency)?;
        let same = |given: &Option<String>, c: &Currency, units: i128| match given {
            None => Ok(true),
            Some(text) => Ok::<bool, EngineError>(c.parse_amount(text.trim(), SignPolicy::Positive).map(|a| a.units() == units).unwrap_or(false)),
        };
        let rate_same = match &check.rate {
            None => true,
            Some(r) => Rate::parse(r).ok() == Rate::parse(&q.rate).ok(),
        };
        if !same(&check.sender_amount, &f, q.sender_units)? || !same(&check.receiver_amount, &t, q.receiver_units)? || !rate_same {
            return Err(EngineError::QuoteMismatch(format!(
                "quote {quote_id} is for {} {} → {} {} at {}",
                view.sender_amount, view.from_currency, view.receiver_amount, view.to_currency, view.rate
            )));
        }
        if self.now_ms() > q.expires_at_ms {
            return Err(EngineError::QuoteExpired(format!("quote {quote_id} expired at {}", view.expires_at)));
        }
        if self.store.exchange_by_quote(q.id).await?.is_some() {
            return Err(EngineError::Conflict(format!("quote {quote_id} was executed already")));
        }
        self.book_exchange(NewExchange {
            public_id: format!("ex_{}", random_alphanumeric(20)),
            merchant,
            client_id: client_id.to_string(),
            request_hash,
            kind: "fixed".into(),
            quote_id: Some(q.id),
            from_currency: q.from_currency.clone(),
            to_currency: q.to_currency.clone(),
            sender_units: q.sender_units,
            fee_units: q.fee_units,
            receiver_units: q.receiver_units,
            rate: q.rate.clone(),
            origin: origin.to_string(),
        })
        .await
    }

    /// Executes the merchant's live quote of this direction that has this price and
    /// amount (a dialect that names a quote by what it says rather than by its id).
    /// A repeated `client_id` answers with its exchange, marked replayed. Only the
    /// latest [`LIVE_QUOTE_WINDOW`] quotes of the merchant are looked at.
    pub async fn execute_quote_by_price(
        &self,
        merchant: MerchantId,
        from: &str,
        to: &str,
        side: Side,
        price: &str,
        client_id: &str,
        origin: &str,
    ) -> Result<Exchange, EngineError> {
        validate_client_id(client_id)?;
        if let Some(existing) = self.store.exchange_by_client_id(merchant, client_id).await? {
            let hash = existing.request_hash.clone();
            return self.replay_exchange(existing, &hash).await;
        }
        let (f, t) = self.exchange_currencies(from, to)?;
        let wanted = Rate::parse(price.trim()).map_err(|_| EngineError::invalid("price", format!("{price:?} is not a price")))?;
        let (units, by_sender) = match &side {
            Side::Sender(a) => (f.parse_amount(a.trim(), SignPolicy::Positive)?.units(), true),
            Side::Receiver(a) => (t.parse_amount(a.trim(), SignPolicy::Positive)?.units(), false),
        };
        let live = self.store.live_quotes(merchant, f.code.as_str(), t.code.as_str(), self.now_ms(), LIVE_QUOTE_WINDOW).await?;
        let quote = live
            .into_iter()
            .find(|q| Rate::parse(&q.rate).ok() == Some(wanted) && units == if by_sender { q.sender_units } else { q.receiver_units })
            .ok_or_else(|| {
                EngineError::QuoteExpired(format!("no live quote of {} → {} at {price} for this amount: ask for a new quote", f.code, t.code))
            })?;
        self.execute_quote_row(merchant, quote, client_id, QuoteCheck::default(), origin).await
    }

    /// Exchanges at the current rate, now.
    pub async fn exchange_now(&self, merchant: MerchantId, from: &str, to: &str, side: Side, client_id: &str, origin: &str) -> Result<Exchange, EngineError> {
        validate_client_id(client_id)?;
        let (side_name, amount) = match &side {
            Side::Sender(a) => ("sender", a.trim()),
            Side::Receiver(a) => ("receiver", a.trim()),
        };
        let request_hash = hash(&["market", from, to, side_name, amount]);
        if let Some(existing) = self.store.exchange_by_client_id(merchant, client_id).await? {
            return self.replay_exchange(existing, &request_hash).await;
        }
        let (f, t) = self.exchange_currencies(from, to)?;
        let (c, rate, _) = self.price(&f, &t, &side)?;
        self.book_exchange(NewExchange {
            public_id: format!("ex_{}", random_alphanumeric(20)),
            merchant,
            client_id: client_id.to_string(),
            request_hash,
            kind: "market".into(),
            quote_id: None,
            from_currency: f.code.to_string(),
            to_currency: t.code.to_string(),
            sender_units: c.sender_units,
            fee_units: c.fee_units,
            receiver_units: c.receiver_units,
            rate: rate.to_string(),
            origin: origin.to_string(),
        })
        .await
    }

    async fn replay_exchange(&self, existing: ExchangeRow, request_hash: &[u8]) -> Result<Exchange, EngineError> {
        let mut x = self.replay_exchange_row(existing, request_hash).await?;
        x.replayed = true;
        Ok(x)
    }

    async fn replay_exchange_row(&self, existing: ExchangeRow, request_hash: &[u8]) -> Result<Exchange, EngineError> {
        if existing.request_hash != request_hash {
            return Err(EngineError::Ledger(LedgerError::IdempotencyConflict { key: existing.client_id }));
        }
        match existing.status.as_str() {
            // Interrupted (or running concurrently): finish it; the ledger key makes
            // this book at most once.
            "pending" => self.settle_exchange(&existing).await,
            "failed" => {
                // The ledger may have booked it after all (a concurrent twin): it is the truth.
                if let Some(tx) = self.store.ledger_tx_by_key(&format!("exchange:{}", existing.id)).await? {
                    self.store.complete_exchange(existing.id, tx).await?;
                    return self.exchange_view(&self.store.exchange(existing.id).await?.ok_or(EngineError::NotFound("exchange"))?);
                }
                let why = self.store.exchange_failure(existing.id).await?.unwrap_or_default();
                Err(EngineError::Conflict(format!("exchange {} failed ({why}); a new attempt needs a new client_id", existing.public_id)))
            }
            _ => self.exchange_view(&existing),
        }
    }

    async fn book_exchange(&self, new: NewExchange) -> Result<Exchange, EngineError> {
        let row = match self.store.insert_exchange(&new).await {
            Ok(r) => r,
            Err(StoreError::Duplicate { .. }) => {
                // A concurrent twin: the same client id replays, another client id on
                // the same quote is refused.
                if let Some(x) = self.store.exchange_by_client_id(new.merchant, &new.client_id).await? {
                    return self.replay_exchange(x, &new.request_hash).await;
                }
                return Err(EngineError::Conflict("the quote was executed already".into()));
            }
            Err(e) => return Err(e.into()),
        };
        self.settle_exchange(&row).await
    }

    /// Books a pending exchange's ledger transaction (idempotent) and marks it done.
    async fn settle_exchange(&self, x: &ExchangeRow) -> Result<Exchange, EngineError> {
        let (from, to) = (self.currencies.get(&x.from_currency)?.code.clone(), self.currencies.get(&x.to_currency)?.code.clone());
        let merchant = MerchantId(x.merchant_id);
        let account = |key: AccountKey| async move { self.ledger.account(&key).await };
        let m_from = account(AccountKey::Merchant { merchant, currency: from.clone() }).await?;
        let m_to = account(AccountKey::Merchant { merchant, currency: to.clone() }).await?;
        let house_from = account(AccountKey::System { account: SystemAccount::ExchangeHouse, currency: from.clone() }).await?;
        let house_to = account(AccountKey::System { account: SystemAccount::ExchangeHouse, currency: to.clone() }).await?;
        let mut legs = vec![
            Leg { from: m_from, to: house_from, currency: from.clone(), units: x.sender_units - x.fee_units },
            Leg { from: house_to, to: m_to, currency: to.clone(), units: x.receiver_units },
        ];
        if x.fee_units > 0 {
            let fees = account(AccountKey::System { account: SystemAccount::FeesEarned, currency: from.clone() }).await?;
            legs.push(Leg { from: m_from, to: fees, currency: from.clone(), units: x.fee_units });
        }
        legs.retain(|l| l.units > 0);
        let memo = serde_json::json!({"type": "exchange", "exchange_id": x.public_id, "kind": x.kind, "rate": x.rate}).to_string();
        let outcome = self.ledger.submit(TxRequest { idempotency_key: format!("exchange:{}", x.id), action: Action::Transfer(legs), memo }).await;
        let tx = match outcome.map_err(|e| match self.currencies.get(&x.from_currency) {
            Ok(c) => e.in_currency(c),
            Err(_) => e,
        }) {
            Ok(o) => o.tx_id.0,
            Err(e @ EngineError::InsufficientFunds { .. }) => {
                self.store.fail_exchange(x.id, "insufficient funds").await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.store.complete_exchange(x.id, tx).await?;
        tracing::info!(merchant = x.merchant_id, exchange = %x.public_id, from = %x.from_currency, to = %x.to_currency,
            sender_units = x.sender_units, receiver_units = x.receiver_units, rate = %x.rate, "exchange done");
        self.exchange_view(&self.store.exchange(x.id).await?.ok_or(EngineError::NotFound("exchange"))?)
    }

    /// Finishes exchanges a crash left unfinished: those whose ledger transaction exists
    /// are marked done (with their event); pending ones without one are marked failed
    /// (kept, so their client id and quote stay bound; should their ledger transaction
    /// still commit, the next pass marks them done).
    pub async fn recover_exchanges(&self) -> Result<usize, EngineError> {
        let mut finished = 0;
        for x in self.store.unfinished_exchanges(self.now_ms() - 60_000, self.now_ms() - 600_000).await? {
            match self.store.ledger_tx_by_key(&format!("exchange:{}", x.id)).await? {
                Some(tx) => {
                    self.store.complete_exchange(x.id, tx).await?;
                    finished += 1;
                }
                None if x.status == "pending" => {
                    self.store.fail_exchange(x.id, "interrupted before it was booked").await?;
                    finished += 1;
                }
                None => {}
            }
        }
        Ok(finished)
    }

    pub async fn exchanges(&self, merchant: MerchantId, before_id: Option<i64>, limit: u32) -> Result<Vec<Exchange>, EngineError> {
        self.store.exchanges(merchant, before_id, limit).await?.iter().map(|x| self.exchange_view(x)).collect()
    }

    /// The current rate for converting `from` into `to`: the mid, and what a quote
    /// gives (spread taken), with its source and age.
    pub fn rate(&self, from: &str, to: &str) -> Result<RateView, EngineError> {
        let (f, t) = self.exchange_currencies(from, to)?;
        let rates = self.rates()?;
        let pair = Self::pair_of(rates, &f, &t)?;
        let latest = rates.current(f.code.as_str(), t.code.as_str())?;
        let customer = latest.rate.less_spread(pair.spread_e6).map_err(|e| EngineError::invalid("rate", e))?;
        Ok(RateView {
            from_currency: f.code.to_string(),
            to_currency: t.code.to_string(),
            mid: latest.rate.to_string(),
            rate: customer.to_string(),
            source: latest.source.to_string(),
            updated_at: format_ms(latest.fetched_at_ms),
        })
    }

    /// The least that can be sent from `from` into `to`, in `from`: the pair's minimum
    /// when `from` is its base, else what it takes (fee included) to receive that
    /// minimum of the base at the current rate.
    pub fn min_exchange_amount(&self, from: &str, to: &str) -> Result<String, EngineError> {
        self.min_in_sending_currency(from, to, |p| p.min_base_units)
    }

    /// The least deposit of `from` converted to `to` on arrival, in `from` (smaller
    /// ones are credited as received).
    pub fn min_deposit_exchange_amount(&self, from: &str, to: &str) -> Result<String, EngineError> {
        self.min_in_sending_currency(from, to, |p| p.min_base_units.max(p.min_deposit_base_units))
    }

    /// A pair's least amount (in its base currency, as `least` reads it) in the sending
    /// currency `from`, at the current rate when that is the quote currency.
    fn min_in_sending_currency(&self, from: &str, to: &str, least: impl Fn(&crate::rates::PairConfig) -> i128) -> Result<String, EngineError> {
        let (f, t) = self.exchange_currencies(from, to)?;
        let rates = self.rates()?;
        let pair = Self::pair_of(rates, &f, &t)?;
        let min = least(pair);
        if pair.base == f.code.as_str() {
            return Ok(f.amount(min)?.to_string());
        }
        if min == 0 {
            return Ok(kassa_core::Amount::zero(f.precision).to_string());
        }
        let rate = rates.current(f.code.as_str(), t.code.as_str())?.rate.less_spread(pair.spread_e6).map_err(|e| EngineError::invalid("rate", e))?;
        let c = from_receiver(min, f.fees.exchange, rate, f.precision, t.precision).map_err(|e| EngineError::invalid("amount", e))?;
        Ok(f.amount(c.sender_units)?.to_string())
    }

    /// Checks that deposits of `from` can be converted to `to` on arrival (an address
    /// with conversion): both active, different, and an exchangeable pair.
    pub fn check_deposit_conversion(&self, from: &str, to: &str) -> Result<(), EngineError> {
        let (f, t) = self.exchange_currencies(from, to).map_err(|e| match e {
            EngineError::Invalid { message, .. } => EngineError::invalid("convert_to", message),
            e => e,
        })?;
        Self::pair_of(self.rates()?, &f, &t).map_err(|_| EngineError::invalid("convert_to", format!("{} → {} is not an exchangeable pair", f.code, t.code)))?;
        Ok(())
    }

    /// How a deposit of `net_units` of `from` (its deposit fee taken) is converted to
    /// `to` on arrival, now: at the current rate less spread, the exchange fee taken.
    /// Credited as received (and why) when it is below the pair's least deposit
    /// converted, or no fresh rate is known: a deposit is never held back for a rate.
    pub(crate) fn deposit_conversion(&self, from: &Currency, to: &str, net_units: i128) -> kassa_store::CreditConversion {
        use kassa_store::{CreditConversion, DepositConversion};
        let priced = (|| {
            let t = self.currencies.get(to)?.clone();
            let rates = self.rates()?;
            let pair = Self::pair_of(rates, from, &t)?.clone();
            let (c, rate, _) = self.price(from, &t, &Side::Sender(from.amount(net_units)?.to_string()))?;
            let base_units = if pair.base == from.code.as_str() { c.sender_units } else { c.receiver_units };
            if base_units < pair.min_deposit_base_units {
                let least = self.min_deposit_exchange_amount(from.code.as_str(), to)?;
                return Err(EngineError::invalid("amount", format!("below the least deposit converted to {to}, {least} {}", from.code)));
            }
            Ok::<_, EngineError>(DepositConversion {
                currency: t.code.to_string(),
                units: c.receiver_units,
                fee_units: c.fee_units,
                rate: rate.to_string(),
                futures_id: None,
            })
        })();
        match priced {
            Ok(c) => CreditConversion::Converted(c),
            Err(e) => {
                let why = match e {
                    EngineError::Invalid { message, .. } => message,
                    e => e.client_message(),
                };
                tracing::warn!(from = %from.code, to, net_units, reason = %why, "deposit credited without conversion");
                CreditConversion::Unconverted(why)
            }
        }
    }

    /// How long a quote holds its price.
    pub fn quote_lifetime(&self) -> Result<std::time::Duration, EngineError> {
        Ok(self.rates()?.options.quote_ttl)
    }

    /// Exchangeable pairs with their spreads, minimums and current mid rates.
    pub fn pairs(&self) -> Result<Vec<PairView>, EngineError> {
        let rates = self.rates()?;
        rates
            .options
            .pairs
            .iter()
            .map(|p| {
                let base = self.currencies.get(&p.base)?;
                let latest = rates.current(&p.base, &p.quote).ok();
                Ok(PairView {
                    base: p.base.clone(),
                    quote: p.quote.clone(),
                    spread_percent: kassa_core::Amount::from_units(p.spread_e6, kassa_core::currency::PERCENT_SCALE)?.to_string(),
                    min_amount: base.amount(p.min_base_units)?.to_string(),
                    rate: latest.as_ref().map(|l| l.rate.to_string()),
                    source: latest.as_ref().map(|l| l.source.to_string()),
                    updated_at: latest.map(|l| format_ms(l.fetched_at_ms)),
                })
            })
            .collect()
    }
}

/// How many of a merchant's latest quotes `execute_quote_by_price` looks through.
pub const LIVE_QUOTE_WINDOW: u32 = 200;

fn validate_client_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty() || id.len() > 200 {
        return Err(EngineError::invalid("client_id", "must be 1-200 characters"));
    }
    Ok(())
}

/// Starts the rate refresher and the recovery of interrupted exchanges (when rates
/// are configured); they stop when `shutdown` turns true.
pub fn spawn_exchange_workers(engine: &Engine, shutdown: tokio::sync::watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(rates) = engine.rates.clone() else { return Vec::new() };
    let pace = crate::worker::Pace { name: "rates".into(), interval: rates.options.refresh_interval, lease: None, wake: None };
    let refresh = crate::worker::Sweep(move || {
        let rates = rates.clone();
        async move { rates.refresh_cycle().await }
    });
    let mut handles = vec![tokio::spawn(crate::worker::run(engine.clone(), pace, refresh, shutdown.clone()))];
    let pace = crate::worker::Pace { name: "exchange recovery".into(), interval: std::time::Duration::from_secs(30), lease: None, wake: None };
    let e = engine.clone();
    let sweep = crate::worker::Sweep(move || {
        let e = e.clone();
        async move {
            match e.recover_exchanges().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(exchanges = n, "finished exchanges a crash had interrupted"),
                Err(err) => tracing::warn!(error = %err, "cannot look for interrupted exchanges"),
            }
        }
    });
    handles.push(tokio::spawn(crate::worker::run(engine.clone(), pace, sweep, shutdown)));
    handles
}
