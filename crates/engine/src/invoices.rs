//! Invoices: an amount in a crypto currency or in fiat, payable in accepted crypto
//! currencies, each with its own deposit address and an amount fixed at creation (fiat
//! converted at the rate of that moment, for the invoice's whole lifetime). Statuses
//! follow the payments (`kassa_core::invoices`), recomputed by the store inside each
//! deposit change, and by the expiry sweep here. Idempotent by the merchant's order id.

use std::time::Duration;

use kassa_core::invoices::{remaining_units, totals, Payment};
use kassa_core::ledger::MerchantId;
use kassa_core::rates::units_for;
use kassa_core::{Currency, CurrencyKind, SignPolicy};
use kassa_store::{InvoiceRow, NewInvoice, NewInvoiceOption, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::timefmt::format_ms;
use crate::secrets::random_alphanumeric;
use crate::{Engine, EngineError};

/// Invoice defaults (configuration).
#[derive(Clone, Debug)]
pub struct InvoiceSettings {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Short or over payment within this percentage (× 10^6) counts as exact.
    pub tolerance_e6: i64,
    /// Where the hosted payment pages are reached (`https://pay.example.com`).
    pub public_url: String,
    /// How long a rate fixed by the payer's pick holds: the time left to pay then.
    pub rate_window: Duration,
}

impl Default for InvoiceSettings {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(900),
            max_ttl: Duration::from_secs(7 * 86_400),
            tolerance_e6: 0,
            public_url: String::new(),
            rate_window: Duration::from_secs(900),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct InvoiceRequest {
    pub order_id: String,
    pub amount: String,
    pub currency: String,
    /// Crypto currencies the customer may pay in (default: the invoice currency when
    /// it is crypto, else every receivable currency with a rate to it).
    pub accepted: Vec<String>,
    pub ttl: Option<Duration>,
    pub description: String,
    pub success_url: Option<String>,
    /// The API it came through; its payments are reported in that API's format (to
    /// `origin.callback_url` when given).
    pub origin: crate::notifications::Origin,
    /// The label of its addresses (default `invoice <id>`).
    pub label: Option<String>,
    /// Shown on the page above the description.
    pub title: String,
    /// Where the page sends the payer when the invoice fails (expires unpaid).
    pub failure_url: Option<String>,
    /// The payer's e-mail, recorded for the merchant (and refunds).
    pub payer_email: Option<String>,
    /// The rates are fixed when the payer picks a currency on the page, and hold for
    /// `rate_window` from then; until then the invoice lasts `ttl`.
    pub rate_on_pick: bool,
    /// Its payments are reported only as the invoice's (in its origin's format), not
    /// also as deposits to its addresses.
    pub invoice_callbacks_only: bool,
    /// Payments in another currency are converted to the invoice's on arrival, at the
    /// invoice's fixed rate (a late payment at the market), so the merchant holds the
    /// invoice currency.
    pub convert: bool,
}

/// One currency an invoice can be paid in.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct InvoiceOption {
    pub currency: String,
    pub address: String,
    /// The deposit address's id.
    #[serde(skip)]
    pub address_id: i64,
    /// The amount due in this currency.
    #[schema(value_type = crate::schemas::Amount)]
    pub amount: String,
    /// Credited so far in this currency.
    #[schema(value_type = crate::schemas::Amount)]
    pub paid: String,
    /// Seen or confirming, not yet credited.
    #[schema(value_type = crate::schemas::Amount)]
    pub pending: String,
    /// Still to pay in this currency.
    #[schema(value_type = crate::schemas::Amount)]
    pub remaining: String,
    #[schema(required = true)]
    pub rate: Option<String>,
    /// BIP21 payment URI for the remaining amount.
    pub payment_uri: String,
}

/// A deposit to one of an invoice's addresses.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct InvoicePayment {
    pub currency: String,
    pub address: String,
    pub txid: String,
    pub vout: i64,
    #[schema(value_type = crate::schemas::Amount)]
    pub amount: String,
    #[schema(schema_with = crate::schemas::deposit_status)]
    pub status: String,
    pub confirmations: i64,
    /// First seen after the invoice expired.
    pub late: bool,
    #[schema(format = DateTime)]
    pub seen_at: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Invoice {
    pub id: String,
    pub order_id: String,
    /// Only credited payments (at the currency's confirmations) count; a payment reorged
    /// out stops counting.
    #[schema(schema_with = crate::schemas::invoice_status)]
    pub status: String,
    /// In `currency`, a crypto currency or a fiat one.
    #[schema(value_type = crate::schemas::Amount)]
    pub amount: String,
    pub currency: String,
    pub title: String,
    pub description: String,
    #[schema(required = true)]
    pub success_url: Option<String>,
    #[schema(required = true)]
    pub failure_url: Option<String>,
    #[schema(required = true)]
    pub payer_email: Option<String>,
    /// The payer's pick of a currency fixes the rates (until then they are estimates).
    pub rate_on_pick: bool,
    /// When the rates were fixed (null until the payer picks, for `rate_on_pick`).
    #[schema(required = true)]
    pub rate_fixed_at_ms: Option<i64>,
    /// The invoice's row number (what the CoinsPaid-style API calls its id).
    #[serde(skip)]
    pub row_id: i64,
    /// The hosted payment page.
    pub url: String,
    /// The page's token (the last part of `url`).
    #[serde(skip)]
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub expires_at_ms: i64,
    #[schema(format = DateTime, required = true)]
    pub paid_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub options: Vec<InvoiceOption>,
    pub payments: Vec<InvoicePayment>,
}

/// An amount as BIP21 writes it: no trailing zeros after the decimal point.
fn uri_amount(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// A BIP21 payment URI for `address`, with an amount when one is asked for.
pub fn payment_uri(c: &Currency, address: &str, amount: Option<&str>) -> String {
    match amount {
        Some(a) => format!("{}:{address}?amount={}", uri_scheme(c), uri_amount(a)),
        None => format!("{}:{address}", uri_scheme(c)),
    }
}

/// URI scheme of a currency's payment links (BIP21 and its forks).
fn uri_scheme(c: &Currency) -> String {
    match c.code.as_str() {
        "BTC" => "bitcoin".into(),
        "LTC" => "litecoin".into(),
        "DOGE" => "dogecoin".into(),
        _ => c.name.to_lowercase().replace(' ', ""),
    }
}

impl Engine {
    pub async fn create_invoice(&self, merchant: MerchantId, r: InvoiceRequest) -> Result<Invoice, EngineError> {
        if r.order_id.is_empty() || r.order_id.len() > 200 {
            return Err(EngineError::invalid("order_id", "must be 1-200 characters"));
        }
        if r.description.len() > 1000 {
            return Err(EngineError::invalid("description", "at most 1000 characters"));
        }
        if !r.description.is_empty() {
            crate::error::check_text("description", &r.description, 1000)?;
        }
        crate::error::check_text("order_id", &r.order_id, 200)?;
        if !r.title.is_empty() {
            crate::error::check_text("title", &r.title, 200)?;
        }
        let payer_email = match r.payer_email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(e) => Some(check_email(e)?),
            None => None,
        };
        let currency = self.currencies.active(&r.currency)?.clone();
        let amount = currency.parse_amount(r.amount.trim(), SignPolicy::Positive)?;
        let ttl = r.ttl.unwrap_or(self.invoices.default_ttl);
        if ttl < Duration::from_secs(1) || ttl > self.invoices.max_ttl {
            return Err(EngineError::invalid("ttl_secs", format!("must be 1-{}", self.invoices.max_ttl.as_secs())));
        }
        let page_url = |field: &'static str, url: &Option<String>| -> Result<Option<String>, EngineError> {
            match url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
                Some(u) => Ok(Some(crate::webhooks::check_url(u).map_err(|e| EngineError::invalid(field, e))?.to_string())),
                None => Ok(None),
            }
        };
        let success_url = page_url("success_url", &r.success_url)?;
        let failure_url = page_url("failure_url", &r.failure_url)?;
        let mut accepted = r.accepted.clone();
        if accepted.is_empty() {
            accepted = match currency.kind {
                CurrencyKind::Crypto => vec![currency.code.to_string()],
                _ => self
                    .currencies
                    .all()
                    .filter(|c| c.active && c.can_receive && c.chain.is_some())
                    .filter(|c| self.rates.as_ref().is_some_and(|rt| rt.pair(c.code.as_str(), currency.code.as_str()).is_some()))
                    .map(|c| c.code.to_string())
                    .collect(),
            };
        }
        accepted.sort();
        accepted.dedup();
        if accepted.is_empty() || accepted.len() > 20 {
            return Err(EngineError::invalid("currencies", "name 1-20 accepted currencies"));
        }
        let request_hash = Sha256::digest(
            {
                let mut text = format!("{}|{}|{}|{}|{}|{:?}", currency.code, amount.units(), accepted.join(","), ttl.as_secs(), r.description, success_url);
                // Later fields only when set: a retry of an invoice made before them still matches.
                let extra = (r.title.clone(), failure_url.clone(), payer_email.clone(), r.rate_on_pick, r.convert);
                if extra != Default::default() {
                    text.push_str(&format!("|{extra:?}"));
                }
                text
            }
            .as_bytes(),
        )
        .to_vec();
        if let Some(existing) = self.store.invoice_by_order(merchant, &r.order_id).await? {
            return self.replay_invoice(existing, &request_hash).await;
        }
        if let Some(label) = &r.label {
            crate::error::check_text("label", label, 200)?;
        }
        let callback_url = match &r.origin.callback_url {
            Some(url) => Some(self.check_callback_url(url).await?),
            None => None,
        };
        // Amounts first, addresses after: nothing is taken from a node for a refused invoice.
        let mut priced = Vec::new();
        for code in &accepted {
            let (c, _) = self.chain_of(code)?;
            if !c.can_receive {
                return Err(EngineError::invalid("currencies", format!("{code} cannot receive payments")));
            }
            let (due, rate) = self.invoice_due(c, &currency, amount.units())?;
            priced.push((c.clone(), due, rate));
        }
        let mut options = Vec::new();
        for (c, due, rate) in priced {
            let (_, chain) = self.chain_of(c.code.as_str())?;
            let address = Self::new_address(chain, c.code.as_str(), &format!("m{}", merchant.0)).await?;
            options.push(NewInvoiceOption {
                convert_to: (r.convert && c.code != currency.code).then(|| currency.code.to_string()),
                currency: c.code.to_string(),
                chain: chain.adapter.chain().to_string(),
                address,
                due_units: due,
                min_units: c.min_receive.units(),
                rate,
            });
        }
        let inserted = self
            .store
            .insert_invoice(&NewInvoice {
                public_id: format!("inv_{}", random_alphanumeric(20)),
                token: random_alphanumeric(32),
                merchant,
                order_id: r.order_id.clone(),
                request_hash: request_hash.clone(),
                currency: currency.code.to_string(),
                amount_units: amount.units(),
                description: r.description.clone(),
                success_url,
                tolerance_e6: self.invoices.tolerance_e6,
                expires_at_ms: self.now_ms() + ttl.as_millis() as i64,
                options,
                address_origin: if r.invoice_callbacks_only { format!("{}:invoice", r.origin.dialect) } else { r.origin.dialect.clone() },
                origin: r.origin.dialect.clone(),
                callback_url,
                label: r.label.clone(),
                title: r.title.clone(),
                failure_url,
                payer_email,
                rate_on_pick: r.rate_on_pick,
            })
            .await;
        let row = match inserted {
            Ok(row) => row,
            Err(StoreError::Duplicate { .. }) => {
                let existing = self.store.invoice_by_order(merchant, &r.order_id).await?.ok_or(EngineError::NotFound("invoice"))?;
                return self.replay_invoice(existing, &request_hash).await;
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(merchant = merchant.0, invoice = %row.public_id, order_id = %row.order_id, amount = %amount, currency = %currency.code, "invoice created");
        self.invoice_view(&row).await
    }

    /// What a payer owes in `c` for `units` of the invoice currency: at least the
    /// invoice's value at the rate less spread (with that rate), or the amount itself.
    fn invoice_due(&self, c: &Currency, currency: &Currency, units: i128) -> Result<(i128, Option<String>), EngineError> {
        let code = c.code.as_str();
        let (due, rate) = if c.code == currency.code {
            (units, None)
        } else {
            let rates = self.rates.as_deref().ok_or_else(|| EngineError::RatesUnavailable("no rate sources are configured".into()))?;
            let pair = rates
                .pair(code, currency.code.as_str())
                .ok_or_else(|| EngineError::invalid("currencies", format!("{code} → {} is not an exchangeable pair", currency.code)))?;
            let latest = rates.current(code, currency.code.as_str())?;
            let rate = latest.rate.less_spread(pair.spread_e6).map_err(|e| EngineError::invalid("rate", e))?;
            let due = units_for(units, rate, c.precision, currency.precision).map_err(|e| EngineError::invalid("amount", e))?;
            (due, Some(rate.to_string()))
        };
        if due < c.min_receive.units() {
            return Err(EngineError::invalid("amount", format!("{} {code} is below the least deposit of {} {code}", c.amount(due)?, c.min_receive)));
        }
        Ok((due, rate))
    }

    /// A payment to an invoice that converts it: at the invoice's fixed rate when first
    /// seen before the invoice expired, its exchange fee as for any conversion. `None`:
    /// not such a payment (or a late one), the market converts it.
    pub(crate) async fn invoice_conversion(&self, d: &kassa_store::DepositRow, to: &str, net_units: i128) -> Result<Option<kassa_store::DepositConversion>, EngineError> {
        let Some((rate, expires_at_ms)) = self.store.invoice_rate_of_address(d.address_id, to).await? else { return Ok(None) };
        if d.first_seen_at_ms > expires_at_ms {
            return Ok(None);
        }
        // Anything unexpected leaves it to the market (which credits it unconverted at worst).
        let (Ok(from), Ok(t), Ok(rate)) = (self.currencies.get(&d.currency), self.currencies.get(to), kassa_core::rates::Rate::parse(&rate)) else {
            return Ok(None);
        };
        let Ok(c) = kassa_core::rates::from_sender(net_units, from.fees.exchange, rate, from.precision, t.precision) else { return Ok(None) };
        tracing::info!(deposit = d.id, rate = %rate, to, "invoice payment converted at the invoice's rate");
        Ok(Some(kassa_store::DepositConversion { currency: t.code.to_string(), units: c.receiver_units, fee_units: c.fee_units, rate: rate.to_string(), futures_id: None }))
    }

    /// The payer picked a currency on the page of an invoice that fixes its rates then:
    /// every option is priced now, and the invoice has `rate_window` left to be paid.
    /// Once; afterwards (or for other invoices) the invoice as it is.
    pub async fn pick_invoice_currency(&self, token: &str, currency: &str) -> Result<Invoice, EngineError> {
        let row = self.store.invoice_by_token(token).await?.ok_or(EngineError::NotFound("invoice"))?;
        let options = self.store.invoice_options(row.id).await?;
        if !options.iter().any(|o| o.currency == currency) {
            return Err(EngineError::invalid("currency", format!("this invoice cannot be paid in {currency}")));
        }
        if row.rate_on_pick && row.rate_fixed_at_ms.is_none() && row.status == kassa_core::invoices::InvoiceStatus::New {
            let inv_currency = self.currencies.get(&row.currency)?.clone();
            let mut dues = Vec::new();
            for o in &options {
                let c = self.currencies.get(&o.currency)?.clone();
                let (due, rate) = self.invoice_due(&c, &inv_currency, row.amount_units)?;
                dues.push((o.currency.clone(), due, rate));
            }
            let now = self.now_ms();
            let expires = now + i64::try_from(self.invoices.rate_window.as_millis()).unwrap_or(i64::MAX / 4);
            if self.store.fix_invoice_rates(row.id, &dues, now, expires).await? {
                tracing::info!(invoice = %row.public_id, currency, "invoice rates fixed by the payer's pick");
            }
        }
        let row = self.store.invoice_by_token(token).await?.ok_or(EngineError::NotFound("invoice"))?;
        self.invoice_view(&row).await
    }

    async fn replay_invoice(&self, existing: InvoiceRow, request_hash: &[u8]) -> Result<Invoice, EngineError> {
        if existing.request_hash != request_hash {
            return Err(EngineError::Ledger(kassa_core::ledger::LedgerError::IdempotencyConflict { key: existing.order_id }));
        }
        self.invoice_view(&existing).await
    }

    pub async fn invoice(&self, merchant: MerchantId, id: &str) -> Result<Invoice, EngineError> {
        let row = self.store.invoice(merchant, id).await?.ok_or(EngineError::NotFound("invoice"))?;
        self.invoice_view(&row).await
    }

    /// A merchant's invoice by its page token, with its row id.
    pub async fn merchant_invoice_by_token(&self, merchant: MerchantId, token: &str) -> Result<(i64, Invoice), EngineError> {
        match self.store.invoice_by_token(token).await? {
            Some(row) if row.merchant_id == merchant.0 => Ok((row.id, self.invoice_view(&row).await?)),
            _ => Err(EngineError::NotFound("invoice")),
        }
    }

    /// The invoice behind a payment page token.
    pub async fn invoice_by_token(&self, token: &str) -> Result<Invoice, EngineError> {
        let row = self.store.invoice_by_token(token).await?.ok_or(EngineError::NotFound("invoice"))?;
        self.invoice_view(&row).await
    }

    pub async fn invoices(&self, merchant: MerchantId, before_id: Option<i64>, limit: u32) -> Result<Vec<Invoice>, EngineError> {
        let mut out = Vec::new();
        for row in self.store.invoices(merchant, before_id, limit).await? {
            out.push(self.invoice_view(&row).await?);
        }
        Ok(out)
    }

    async fn invoice_view(&self, inv: &InvoiceRow) -> Result<Invoice, EngineError> {
        let currency = self.currencies.get(&inv.currency)?;
        let options = self.store.invoice_options(inv.id).await?;
        let payments = self.store.invoice_payments(inv.id).await?;
        let share_of = |pays: &[&kassa_store::InvoicePaymentRow]| {
            let list: Vec<Payment> = pays.iter().filter_map(|p| p.counted()).collect();
            totals(&list, i64::MAX)
        };
        let all: Vec<&kassa_store::InvoicePaymentRow> = payments.iter().collect();
        let total = share_of(&all);
        let mut option_views = Vec::new();
        for o in &options {
            let c = self.currencies.get(&o.currency)?;
            let mine: Vec<&kassa_store::InvoicePaymentRow> = payments.iter().filter(|p| p.currency == o.currency).collect();
            let counted = || mine.iter().filter_map(|p| p.counted());
            let paid: i128 = counted().filter(Payment::credited).map(|p| p.units).sum();
            let pending: i128 = counted().filter(Payment::pending).map(|p| p.units).sum();
            // Paid or on its way in other currencies (a pending payment elsewhere is not
            // asked for twice).
            let mine_share = share_of(&mine);
            let other_share = (total.on_time + total.late + total.pending) - (mine_share.on_time + mine_share.late + mine_share.pending);
            let remaining = remaining_units(o.due_units, paid + pending, other_share);
            let remaining_text = c.amount(remaining)?.to_string();
            option_views.push(InvoiceOption {
                currency: o.currency.clone(),
                address: o.address.clone(),
                address_id: o.address_id,
                amount: c.amount(o.due_units)?.to_string(),
                paid: c.amount(paid)?.to_string(),
                pending: c.amount(pending)?.to_string(),
                payment_uri: payment_uri(c, &o.address, Some(&remaining_text)),
                remaining: remaining_text,
                rate: o.rate.clone(),
            });
        }
        let payment_views = payments
            .iter()
            .map(|p| {
                let c = self.currencies.get(&p.currency)?;
                Ok(InvoicePayment {
                    currency: p.currency.clone(),
                    address: p.address.clone(),
                    txid: p.txid.clone(),
                    vout: p.vout,
                    amount: c.amount(p.units)?.to_string(),
                    status: p.status.as_str().into(),
                    confirmations: p.confirmations,
                    late: p.first_seen_ms > inv.expires_at_ms,
                    seen_at: format_ms(p.first_seen_ms),
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Invoice {
            id: inv.public_id.clone(),
            order_id: inv.order_id.clone(),
            status: inv.status.as_str().into(),
            amount: currency.amount(inv.amount_units)?.to_string(),
            currency: inv.currency.clone(),
            title: inv.title.clone(),
            description: inv.description.clone(),
            success_url: inv.success_url.clone(),
            failure_url: inv.failure_url.clone(),
            payer_email: inv.payer_email.clone(),
            rate_on_pick: inv.rate_on_pick,
            rate_fixed_at_ms: inv.rate_fixed_at_ms,
            row_id: inv.id,
            url: format!("{}/pay/{}", self.invoices.public_url.trim_end_matches('/'), inv.token),
            token: inv.token.clone(),
            expires_at: format_ms(inv.expires_at_ms),
            expires_at_ms: inv.expires_at_ms,
            paid_at: inv.paid_at_ms.map(format_ms),
            created_at: format_ms(inv.created_at_ms),
            options: option_views,
            payments: payment_views,
        })
    }
}

/// A payer's e-mail address, trimmed: one `@` between a local part and a dotted domain.
fn check_email(e: &str) -> Result<String, EngineError> {
    crate::error::check_text("email", e, 254)?;
    let ok = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !e.contains(char::is_whitespace) && !domain.contains('@')
        }
        None => false,
    };
    if !ok {
        return Err(EngineError::invalid("email", "not an e-mail address"));
    }
    Ok(e.to_string())
}

/// Expires unpaid invoices as their time runs out; stops when `shutdown` turns true.
pub fn spawn_invoice_expiry(engine: &Engine, shutdown: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let pace = crate::worker::Pace { name: "invoice expiry".into(), interval: Duration::from_secs(1), lease: None, wake: None };
    let e = engine.clone();
    let sweep = crate::worker::Sweep(move || {
        let e = e.clone();
        async move {
            match e.store.expire_invoices().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(invoices = n, "invoices expired"),
                Err(err) => tracing::warn!(error = %err, "cannot expire invoices; retrying"),
            }
        }
    });
    tokio::spawn(crate::worker::run(engine.clone(), pace, sweep, shutdown))
}
