//! The bodies and query parameters of Kassa's own API that are not engine views: list
//! pages, the currency view, and the request bodies. Each derives `ToSchema` (or
//! `IntoParams`) so the OpenAPI document is generated from these types. Request bodies
//! are read field by field by the handlers (to word every refusal precisely); their
//! types here say what those handlers accept.

#![allow(dead_code)] // request and query types are read by the OpenAPI document only

use kassa_engine::adjustments::{Balance, HistoryLine};
use kassa_engine::chains::Deposit;
use kassa_engine::exchange::{Exchange, PairView};
use kassa_engine::invoices::Invoice;
use kassa_engine::notifications::{Delivery, Endpoint};
use kassa_engine::schemas::{self, Amount};
use kassa_engine::withdrawals::Withdrawal;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// A fee: a fixed part plus a percent of the amount.
#[derive(Serialize, ToSchema)]
pub struct Fee {
    #[schema(value_type = Amount)]
    pub fixed: String,
    /// Percent of the amount, 6 decimals.
    #[schema(examples("0.500000"))]
    pub percent: String,
}

#[derive(Serialize, ToSchema)]
pub struct Fees {
    pub deposit: Fee,
    pub withdrawal: Fee,
    pub internal_move: Fee,
    pub exchange: Fee,
}

/// A configured currency with its limits and fees.
#[derive(Serialize, ToSchema)]
pub struct Currency {
    #[schema(examples("LTC"))]
    pub code: String,
    pub name: String,
    #[schema(schema_with = schemas::currency_kind)]
    pub kind: kassa_core::currency::CurrencyKind,
    #[schema(required = true)]
    pub chain: Option<String>,
    #[schema(maximum = 18)]
    pub precision: u8,
    pub confirmations: u32,
    #[schema(value_type = Amount)]
    pub min_receive: String,
    #[schema(value_type = Amount)]
    pub min_withdrawal: String,
    #[schema(value_type = Option<Amount>, required = true)]
    pub max_withdrawal: Option<String>,
    #[schema(required = true)]
    pub max_withdrawals_per_day: Option<u32>,
    #[schema(inline)]
    pub fees: Fees,
    pub active: bool,
    pub can_send: bool,
    pub can_receive: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CurrencyList {
    pub currencies: Vec<Currency>,
}

#[derive(Serialize, ToSchema)]
pub struct BalanceList {
    pub balances: Vec<Balance>,
}

/// One page of entries, newest first.
#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    pub entries: Vec<HistoryLine>,
    /// Pass as `before` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_before: Option<i64>,
}

/// One page, newest first.
#[derive(Serialize, ToSchema)]
pub struct DepositPage {
    pub deposits: Vec<Deposit>,
    /// Pass as `before` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_before: Option<i64>,
}

/// One page, newest first.
#[derive(Serialize, ToSchema)]
pub struct WithdrawalPage {
    pub withdrawals: Vec<Withdrawal>,
    /// Pass as `before` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub webhook_endpoints: Vec<Endpoint>,
}

/// Events and the sequence to continue after.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<Event>)]
    pub events: Vec<serde_json::Value>,
    pub next_after: i64,
}

/// One page, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct PairList {
    pub pairs: Vec<PairView>,
}

#[derive(Serialize, ToSchema)]
pub struct ExchangeList {
    pub exchanges: Vec<Exchange>,
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceList {
    pub invoices: Vec<Invoice>,
}

/// A test event was written.
#[derive(Serialize, ToSchema)]
pub struct TestEventSent {
    pub event_id: String,
}

/// How many deliveries go again.
#[derive(Serialize, ToSchema)]
pub struct Redelivering {
    pub redelivering: u64,
}

/// An event exactly as Kassa's own webhooks deliver it (headers webhook-id = id,
/// webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>).
#[derive(ToSchema)]
pub struct Event {
    /// evt_…, the same on every attempt and redelivery
    pub id: String,
    #[schema(schema_with = schemas::event_type)]
    pub r#type: String,
    /// Per merchant, gap-free, in commit order
    pub sequence: i64,
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The deposit or withdrawal as it was when the event happened
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A decimal amount given as a string or, for convenience, a JSON number.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum AmountInput {
    #[schema(value_type = Amount)]
    Text(String),
    #[schema(value_type = JsonAmount)]
    Number(serde_json::Number),
}

/// The schema of an amount sent as a JSON number (no floating point: its exact text is read).
pub struct JsonAmount;

impl utoipa::PartialSchema for JsonAmount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Schema::Object(schemas::amount_number()).into()
    }
}

impl ToSchema for JsonAmount {}

#[derive(ToSchema)]
pub struct NewAddress {
    pub currency: String,
    #[schema(max_length = 200)]
    pub label: Option<String>,
    /// Your id for the address: asking again with it returns the same address.
    #[schema(max_length = 200)]
    pub foreign_id: Option<String>,
    /// Convert its deposits to this currency on arrival (an exchangeable pair), at the
    /// rate of that moment less spread and fees; deposits below the pair's least
    /// deposit converted are credited as received.
    pub convert_to: Option<String>,
}

#[derive(ToSchema)]
pub struct NewWithdrawal {
    pub currency: String,
    pub address: String,
    #[schema(value_type = AmountInput)]
    pub amount: String,
    /// Low waits for a batch window to share a transaction; medium and high are sent at once.
    #[schema(schema_with = schemas::priority, default = "medium")]
    pub priority: Option<String>,
    /// Retrying with the same key returns the original withdrawal.
    #[schema(max_length = 200)]
    pub idempotency_key: String,
    /// Pay it from your balance in this currency (a withdrawal with exchange): `amount`
    /// is then in it, converted to `currency` at the current rate less spread and
    /// exchange fee, the withdrawal fee taken from the converted amount.
    pub pay_from: Option<String>,
}

/// An operator's decision on a pending withdrawal.
#[derive(ToSchema)]
pub struct Decision {
    /// Who decides (default: the API key's id), recorded with the decision.
    pub operator: Option<String>,
    /// Why; required to decline.
    pub reason: Option<String>,
}

/// A decided withdrawal and the decision.
#[derive(Serialize, ToSchema)]
pub struct Decided {
    pub withdrawal: Withdrawal,
    pub decision: kassa_engine::approvals::WithdrawalDecision,
}

/// A currency's withdrawal limits; neither limit removes them.
#[derive(ToSchema)]
pub struct NewLimits {
    /// Most one withdrawal sends without approval.
    #[schema(value_type = Option<AmountInput>)]
    pub per_transaction: Option<String>,
    /// Most a UTC day's withdrawals send together without approval.
    #[schema(value_type = Option<AmountInput>)]
    pub per_day: Option<String>,
    /// The currency the limits are in (default: the withdrawn currency; a fiat
    /// currency is converted at the current rate).
    pub limit_currency: Option<String>,
}

#[derive(ToSchema)]
pub struct NewEndpoint {
    pub url: String,
    /// How callbacks are rendered (default standard).
    #[schema(schema_with = schemas::callback_format, default = "standard")]
    pub format: Option<String>,
    /// Event types: * (all, the default), a type such as deposit.credited, or a prefix such as deposit.*
    pub events: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct SecretRotation {
    /// How long the old secret keeps signing (default 86400, at most 604800).
    #[schema(default = 86400, maximum = 604800)]
    pub overlap_secs: Option<u64>,
}

/// Failed deliveries created in [from, to).
#[derive(ToSchema)]
pub struct RedeliverFailed {
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
}

/// Give exactly one of sender_amount (fee included) or receiver_amount.
#[derive(ToSchema)]
pub struct NewQuote {
    pub from_currency: String,
    pub to_currency: String,
    #[schema(value_type = Option<AmountInput>)]
    pub sender_amount: Option<String>,
    #[schema(value_type = Option<AmountInput>)]
    pub receiver_amount: Option<String>,
}

/// Either a quote to execute (quote_id, and optionally the quoted sender_amount,
/// receiver_amount and rate, which must match) or an exchange at the market
/// (from_currency, to_currency and one of sender_amount or receiver_amount).
#[derive(ToSchema)]
pub struct NewExchange {
    /// Your id for the exchange: a retry with it returns the original.
    pub client_id: String,
    pub quote_id: Option<String>,
    pub from_currency: Option<String>,
    pub to_currency: Option<String>,
    #[schema(value_type = Option<AmountInput>)]
    pub sender_amount: Option<String>,
    #[schema(value_type = Option<AmountInput>)]
    pub receiver_amount: Option<String>,
    pub rate: Option<String>,
}

#[derive(ToSchema)]
pub struct NewInvoice {
    /// Your id for the invoice: a retry with it returns the original.
    pub order_id: String,
    #[schema(value_type = AmountInput)]
    pub amount: String,
    /// A crypto currency, or a fiat one (the amount converted at the current rate).
    pub currency: String,
    /// The currencies it can be paid in (an address each).
    pub currencies: Option<Vec<String>>,
    /// How long it can be paid, in seconds.
    pub ttl_secs: Option<u64>,
    pub description: Option<String>,
    pub success_url: Option<String>,
    /// Shown above the description on the page.
    pub title: Option<String>,
    /// Where the page sends the payer when the invoice expires unpaid.
    pub failure_url: Option<String>,
    /// The payer's e-mail, recorded with the invoice.
    pub payer_email: Option<String>,
    /// The rates are fixed when the payer picks a currency on the page, and hold for
    /// invoices.rate_window_secs from then (default false: fixed at creation).
    pub rate_on_pick: Option<bool>,
    /// Payments in another currency are converted to the invoice's on arrival, at its
    /// fixed rate (default false: the merchant holds what was paid).
    pub convert: Option<bool>,
}

#[derive(ToSchema)]
pub struct BlockMerchant {
    /// Kept with the merchant and logged.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// Who blocks it, for the log (default api).
    pub operator: Option<String>,
}

#[derive(ToSchema)]
pub struct UnblockMerchant {
    /// Who unblocks it, for the log (default api).
    pub operator: Option<String>,
}

/// A page of a newest-first list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Only items with a smaller id (the last one of the page before).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    #[param(minimum = 1, maximum = 500, default = 100)]
    pub limit: Option<u32>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurrencyFilter {
    /// Only this currency's items.
    pub currency: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusFilter {
    /// Only items in this status.
    pub status: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilters {
    #[param(schema_with = schemas::delivery_status)]
    pub status: Option<String>,
    /// Only the deliveries of this event (evt_…).
    pub event: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events with a larger sequence number.
    #[param(minimum = 0, default = 0)]
    pub after: Option<i64>,
    #[param(minimum = 1, maximum = 500, default = 100)]
    pub limit: Option<u32>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RateParams {
    pub from: String,
    pub to: String,
}
