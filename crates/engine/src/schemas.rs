//! OpenAPI shapes of the views' fields that their Rust types do not say: a decimal
//! amount (a string, never a JSON number) and the closed sets of words a status field
//! takes. The views derive `utoipa::ToSchema` and point their fields here; the API
//! dialect that documents itself (Kassa's own) collects them.

use std::borrow::Cow;

use kassa_core::deposit::DepositStatus;
use kassa_core::events::{EVENT_TYPES, STANDARD_FORMAT};
use kassa_core::invoices::InvoiceStatus;
use kassa_core::ledger::{HoldStatus, TxKind};
use kassa_core::merchant::MerchantStatus;
use kassa_core::withdrawal::WithdrawalStatus;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A decimal amount with every decimal of its currency's precision ("0.10000000").
pub struct Amount;

impl utoipa::PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^-?[0-9]+(\.[0-9]+)?$")).examples(["0.10000000"]).into()
    }
}

impl utoipa::ToSchema for Amount {
    fn name() -> Cow<'static, str> {
        "Amount".into()
    }
}

fn words(list: impl IntoIterator<Item = &'static str>) -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(list)).build()
}

pub fn deposit_status() -> Object {
    words(DepositStatus::ALL.map(DepositStatus::as_str))
}

pub fn withdrawal_status() -> Object {
    words(WithdrawalStatus::ALL.map(WithdrawalStatus::as_str))
}

pub fn priority() -> Object {
    words(["low", "medium", "high"])
}

pub fn history_kind() -> Object {
    words([TxKind::Transfer, TxKind::Hold, TxKind::Post, TxKind::Void].map(TxKind::as_str))
}

pub fn hold_status() -> Object {
    words([HoldStatus::Pending, HoldStatus::Posted, HoldStatus::Voided].map(HoldStatus::as_str))
}

pub fn endpoint_status() -> Object {
    words(["active", "disabled"])
}

pub fn delivery_status() -> Object {
    words(["pending", "delivered", "failed"])
}

pub fn invoice_status() -> Object {
    use InvoiceStatus::*;
    words([New, PartiallyPaid, Paid, Overpaid, PaidLate, Expired].map(InvoiceStatus::as_str))
}

pub fn merchant_status() -> Object {
    words([MerchantStatus::Active, MerchantStatus::Blocked].map(MerchantStatus::as_str))
}

/// How a webhook endpoint's callbacks are rendered: `standard` (Kassa's own) or a
/// format a registered dialect provides (the dialects register theirs at start-up,
/// so the list is not fixed here).
pub fn callback_format() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("`{STANDARD_FORMAT}` (Kassa's own webhooks), or the callback format of a registered API dialect (see the README)")))
        .examples([STANDARD_FORMAT])
        .build()
}

/// An amount given as a JSON number: read from its exact text like a decimal string
/// (never through floating point), with the same precision rules.
pub fn amount_number() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some("a decimal amount as a JSON number, read from its exact text (never rounded through floating point)"))
        .build()
}

/// Every event type.
pub fn event_type() -> Object {
    words(EVENT_TYPES.iter().copied())
}

pub fn currency_kind() -> Object {
    words(["crypto", "fiat"])
}
