//! The invoice state machine: from the payments to an invoice's addresses, its due
//! amounts, tolerance and expiry, the status it is in. Only credited payments (at
//! their currency's confirmations) count toward payment, so a 0-conf payment that is
//! double-spent never settles an invoice, and a credit reversed by a reorg stops
//! counting. Pure and exact (fractions in parts per billion, rounded against the payer).
//!
//! [`InvoiceState::restate`] is the transition: from an invoice's state and payments
//! at a moment, the status it moves to, when it was paid and the event that raises.
//! The store applies that change in the transaction that read the payments.

use crate::deposit::DepositStatus;

/// Parts per billion of the invoice.
const WHOLE: i128 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceStatus {
    New,
    PartiallyPaid,
    Paid,
    Overpaid,
    PaidLate,
    Expired,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::New => "new",
            InvoiceStatus::PartiallyPaid => "partially_paid",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Overpaid => "overpaid",
            InvoiceStatus::PaidLate => "paid_late",
            InvoiceStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::New, Self::PartiallyPaid, Self::Paid, Self::Overpaid, Self::PaidLate, Self::Expired].into_iter().find(|s| s.as_str() == text)
    }

    /// Paid in full (on time, over, or late): the merchant may deliver.
    pub fn is_settled(self) -> bool {
        matches!(self, InvoiceStatus::Paid | InvoiceStatus::Overpaid | InvoiceStatus::PaidLate)
    }

    /// The event an invoice raises entering this status.
    pub fn event(self) -> &'static str {
        match self {
            InvoiceStatus::New => "invoice.new",
            InvoiceStatus::PartiallyPaid => "invoice.partially_paid",
            InvoiceStatus::Paid => "invoice.paid",
            InvoiceStatus::Overpaid => "invoice.overpaid",
            InvoiceStatus::PaidLate => "invoice.paid_late",
            InvoiceStatus::Expired => "invoice.expired",
        }
    }
}

/// What the invoice machine reads of an invoice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvoiceState {
    pub status: InvoiceStatus,
    /// When it was first settled, if it was.
    pub paid_at_ms: Option<i64>,
    /// Percent × 10^6 a payment may be short or over and still count as exact.
    pub tolerance_e6: i128,
    pub expires_at_ms: i64,
}

/// A change of an invoice's status: what to write and the event it raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvoiceChange {
    pub status: InvoiceStatus,
    /// Kept from the first settlement; cleared when the invoice is no longer settled
    /// (a reorg took a payment back).
    pub paid_at_ms: Option<i64>,
    pub event: &'static str,
}

impl InvoiceState {
    /// The change `payments` (those that count: at or above the minimum) make to this
    /// invoice at `now_ms`; `None` when its status stays.
    pub fn restate(&self, payments: &[Payment], now_ms: i64) -> Option<InvoiceChange> {
        let new = status(payments, self.tolerance_e6, self.expires_at_ms, now_ms);
        if new == self.status {
            return None;
        }
        let paid_at_ms = if new.is_settled() { self.paid_at_ms.or(Some(now_ms)) } else { None };
        Some(InvoiceChange { status: new, paid_at_ms, event: new.event() })
    }
}

/// One payment (a deposit output) to one of the invoice's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The currency option paid.
    pub currency: String,
    /// What this payment's currency option asks for, in that currency's units.
    pub due_units: i128,
    pub units: i128,
    pub status: DepositStatus,
    pub first_seen_ms: i64,
}

impl Payment {
    /// Credited: counts toward payment.
    pub fn credited(&self) -> bool {
        self.status == DepositStatus::Credited
    }

    /// Seen, not yet credited: on its way.
    pub fn pending(&self) -> bool {
        matches!(self.status, DepositStatus::Seen | DepositStatus::Confirming)
    }
}

/// What an invoice's payments add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Credited before expiry, parts per billion.
    pub on_time: i128,
    /// Credited, first seen after expiry.
    pub late: i128,
    /// Seen before expiry, not yet credited.
    pub pending: i128,
}

pub fn totals(payments: &[Payment], expires_at_ms: i64) -> Totals {
    // Units are summed per currency and class first, then turned into a share once:
    // rounding each payment's share down would make exact payments in parts fall short.
    let mut sums: std::collections::BTreeMap<(&str, u8), (i128, i128)> = std::collections::BTreeMap::new();
    for p in payments {
        let class = if p.credited() {
            if p.first_seen_ms <= expires_at_ms { 0 } else { 1 }
        } else if p.pending() && p.first_seen_ms <= expires_at_ms {
            2
        } else {
            continue;
        };
        let e = sums.entry((p.currency.as_str(), class)).or_insert((0, p.due_units));
        e.0 = e.0.saturating_add(p.units);
    }
    let mut t = Totals::default();
    for ((_, class), (units, due)) in sums {
        let share = if due > 0 { units.saturating_mul(WHOLE) / due } else { 0 };
        match class {
            0 => t.on_time += share,
            1 => t.late += share,
            _ => t.pending += share,
        }
    }
    t
}

/// The status of an invoice now. `tolerance_e6` (percent × 10^6) lets a payment
/// short or over by that much count as exact.
pub fn status(payments: &[Payment], tolerance_e6: i128, expires_at_ms: i64, now_ms: i64) -> InvoiceStatus {
    let t = totals(payments, expires_at_ms);
    let tolerance = tolerance_e6 * WHOLE / 100_000_000; // percent × 10^6 → parts per billion
    let (low, high) = (WHOLE - tolerance, WHOLE + tolerance);
    if t.on_time >= low {
        if t.on_time > high {
            InvoiceStatus::Overpaid
        } else {
            InvoiceStatus::Paid
        }
    } else if t.on_time + t.late >= low {
        InvoiceStatus::PaidLate
    } else if t.on_time + t.late > 0 {
        InvoiceStatus::PartiallyPaid
    } else if now_ms > expires_at_ms && t.pending < low {
        // A payment seen in time that covers it keeps the invoice open until it is
        // confirmed (or dropped).
        InvoiceStatus::Expired
    } else {
        InvoiceStatus::New
    }
}

/// What is still to pay in one currency option, in its units: its due amount less
/// what was paid in it, less (rounded against the payer) the share paid in others.
pub fn remaining_units(due_units: i128, paid_units: i128, other_share: i128) -> i128 {
    let left = WHOLE - other_share.clamp(0, WHOLE);
    let due_here = (due_units * left + WHOLE - 1) / WHOLE;
    (due_here - paid_units).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(units: i128, status: &str, at: i64) -> Payment {
        Payment { currency: "LTC".into(), due_units: 1000, units, status: DepositStatus::parse(status).unwrap(), first_seen_ms: at }
    }

    #[test]
    fn restate_keeps_first_payment_time_and_clears_it_when_taken_back() {
        let open = InvoiceState { status: InvoiceStatus::New, paid_at_ms: None, tolerance_e6: 0, expires_at_ms: 100 };
        assert_eq!(open.restate(&[], 50), None, "no change, no event");
        let paid = open.restate(&[pay(1000, "credited", 10)], 60).unwrap();
        assert_eq!(paid, InvoiceChange { status: InvoiceStatus::Paid, paid_at_ms: Some(60), event: "invoice.paid" });
        let settled = InvoiceState { status: paid.status, paid_at_ms: paid.paid_at_ms, ..open };
        let over = settled.restate(&[pay(1000, "credited", 10), pay(5, "credited", 20)], 90).unwrap();
        assert_eq!(over, InvoiceChange { status: InvoiceStatus::Overpaid, paid_at_ms: Some(60), event: "invoice.overpaid" }, "first settlement time kept");
        let reorged = settled.restate(&[pay(1000, "reversed", 10)], 95).unwrap();
        assert_eq!(reorged, InvoiceChange { status: InvoiceStatus::New, paid_at_ms: None, event: "invoice.new" });
        let expired = open.restate(&[], 101).unwrap();
        assert_eq!(expired.event, "invoice.expired");
        assert_eq!(InvoiceState { status: InvoiceStatus::Expired, ..open }.restate(&[], 500), None);
    }

    #[test]
    fn statuses() {
        let exp = 100;
        assert_eq!(status(&[], 0, exp, 50), InvoiceStatus::New);
        assert_eq!(status(&[], 0, exp, 101), InvoiceStatus::Expired);
        assert_eq!(status(&[pay(1000, "seen", 10)], 0, exp, 50), InvoiceStatus::New, "0-conf never settles");
        assert_eq!(status(&[pay(1000, "credited", 10)], 0, exp, 50), InvoiceStatus::Paid);
        assert_eq!(status(&[pay(1000, "credited", 10)], 0, exp, 500), InvoiceStatus::Paid, "stays paid after expiry");
        assert_eq!(status(&[pay(400, "credited", 10)], 0, exp, 50), InvoiceStatus::PartiallyPaid);
        assert_eq!(status(&[pay(400, "credited", 10), pay(600, "credited", 20)], 0, exp, 50), InvoiceStatus::Paid);
        assert_eq!(status(&[pay(1001, "credited", 10)], 0, exp, 50), InvoiceStatus::Overpaid);
        assert_eq!(status(&[pay(1000, "credited", 150)], 0, exp, 200), InvoiceStatus::PaidLate);
        assert_eq!(status(&[pay(500, "credited", 50), pay(500, "credited", 150)], 0, exp, 200), InvoiceStatus::PaidLate);
        assert_eq!(status(&[pay(1000, "reversed", 10)], 0, exp, 50), InvoiceStatus::New, "a reorged-out payment stops counting");
        assert_eq!(status(&[pay(1000, "dropped", 10)], 0, exp, 500), InvoiceStatus::Expired);
        assert_eq!(status(&[pay(1000, "seen", 10)], 0, exp, 500), InvoiceStatus::New, "seen in time: not expired while it confirms");
        assert_eq!(status(&[pay(1000, "seen", 150)], 0, exp, 500), InvoiceStatus::Expired, "seen late: expired until credited");
        assert_eq!(status(&[pay(500, "seen", 10)], 0, exp, 500), InvoiceStatus::Expired, "too little seen");
        // 1 % tolerance: 99 % counts as paid, 101 % as paid (not over).
        assert_eq!(status(&[pay(990, "credited", 10)], 1_000_000, exp, 50), InvoiceStatus::Paid);
        assert_eq!(status(&[pay(989, "credited", 10)], 1_000_000, exp, 50), InvoiceStatus::PartiallyPaid);
        assert_eq!(status(&[pay(1010, "credited", 10)], 1_000_000, exp, 50), InvoiceStatus::Paid);
        assert_eq!(status(&[pay(1011, "credited", 10)], 1_000_000, exp, 50), InvoiceStatus::Overpaid);
        // Parts that add up to the whole pay it, whatever the rounding of each part.
        let due = 25_125_629;
        let parts = [Payment { due_units: due, units: 10_000_000, ..pay(0, "credited", 10) }, Payment { due_units: due, units: 15_125_629, ..pay(0, "credited", 10) }];
        assert_eq!(status(&parts, 0, exp, 50), InvoiceStatus::Paid);
        assert_eq!(remaining_units(1000, 400, 0), 600);
        assert_eq!(remaining_units(3, 1, 0), 2);
        assert_eq!(remaining_units(1000, 0, WHOLE / 3), 667, "rounded up against the payer");
        assert_eq!(remaining_units(1000, 1200, 0), 0);
        for s in ["new", "partially_paid", "paid", "overpaid", "paid_late", "expired"] {
            assert_eq!(InvoiceStatus::parse(s).unwrap().as_str(), s);
        }
    }
}
