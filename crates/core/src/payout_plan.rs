//! The payout plan state machine: a deposit address with a list of payouts and a
//! delay. Once the deposit confirms and the delay has passed the payouts are sent;
//! without a deposit in time the plan expires. Pure: the transition takes the time
//! from the caller (the engine's clock), and the store applies the state it returns.
//!
//! ```text
//! pending ──deposit seen──▶ confirming ──confirmed──▶ processing ──(delay over) sending──▶ sent ──confirmed──▶ complete
//!    │                        │  ▲                                                    │
//!    │                        └──┘ deposit reorged out (back to pending)             └──failed──▶ failed
//!    └──(validity over, nothing seen)──▶ expired
//! ```

use std::fmt;

use crate::amount::AmountError;
use crate::currency::{Fee, PERCENT_SCALE};

/// Where a plan stands. `pending`, `confirming`, `processing`, `complete` and
/// `expired` are what its API reports; `sent` and `failed` are reported as
/// `processing` and (for an operator to settle) `processing` too, never `complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayoutPlanStatus {
    /// Waiting for the deposit.
    Pending,
    /// The deposit is seen, not yet confirmed.
    Confirming,
    /// The deposit is confirmed; the delay runs.
    Processing,
    /// The payouts are on their way.
    Sent,
    /// The payouts confirmed.
    Complete,
    /// No deposit arrived within the plan's validity.
    Expired,
    /// The payouts could not be sent; funds stay booked to the merchant.
    Failed,
}

impl PayoutPlanStatus {
    pub const ALL: [PayoutPlanStatus; 7] = [
        PayoutPlanStatus::Pending,
        PayoutPlanStatus::Confirming,
        PayoutPlanStatus::Processing,
        PayoutPlanStatus::Sent,
        PayoutPlanStatus::Complete,
        PayoutPlanStatus::Expired,
        PayoutPlanStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayoutPlanStatus::Pending => "pending",
            PayoutPlanStatus::Confirming => "confirming",
            PayoutPlanStatus::Processing => "processing",
            PayoutPlanStatus::Sent => "sent",
            PayoutPlanStatus::Complete => "complete",
            PayoutPlanStatus::Expired => "expired",
            PayoutPlanStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether it is over: nothing changes it any more, except that an expired plan
    /// still takes a deposit that arrives late (paid out like any other).
    pub fn is_final(self) -> bool {
        matches!(self, PayoutPlanStatus::Complete | PayoutPlanStatus::Expired | PayoutPlanStatus::Failed)
    }
}

impl fmt::Display for PayoutPlanStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan's state: its status and the times its rules read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayoutPlan {
    pub status: PayoutPlanStatus,
    /// Until when a deposit is awaited (Unix ms).
    pub valid_until_ms: i64,
    /// How long after the deposit confirms the payouts wait.
    pub delay_ms: i64,
    /// When the deposit confirmed.
    pub confirmed_at_ms: Option<i64>,
}

/// What happened to a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutPlanInput {
    DepositSeen,
    DepositConfirmed,
    /// The deposit's transaction left the chain (or the mempool).
    DepositGone,
    /// The payout transaction was broadcast.
    PayoutsSent,
    PayoutsConfirmed,
    PayoutsFailed,
    /// The clock moved: the plan may expire.
    Tick,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayoutPlanRefusal {
    #[error("a {status} payout plan cannot take {input:?}")]
    NotNow { status: PayoutPlanStatus, input: PayoutPlanInput },
    #[error("the payouts are due at {due_ms}, not before")]
    NotDue { due_ms: i64 },
}

impl PayoutPlan {
    /// When the payouts may be sent (None before the deposit confirmed).
    pub fn due_at_ms(&self) -> Option<i64> {
        self.confirmed_at_ms.map(|c| c.saturating_add(self.delay_ms))
    }

    /// Whether the payouts should be sent now.
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.status == PayoutPlanStatus::Processing && self.due_at_ms().is_some_and(|d| now_ms >= d)
    }

    /// The plan after `input` at `now_ms`; the same plan when nothing changes.
    pub fn after(self, input: PayoutPlanInput, now_ms: i64) -> Result<PayoutPlan, PayoutPlanRefusal> {
        use PayoutPlanInput::*;
        use PayoutPlanStatus::*;
        let refuse = || PayoutPlanRefusal::NotNow { status: self.status, input };
        Ok(match (self.status, input) {
            (Pending, Tick) if now_ms > self.valid_until_ms => PayoutPlan { status: Expired, ..self },
            (_, Tick) => self,
            // A deposit seen in time, or one that was on its way when the plan expired
            // (never lose a customer's money: it is paid out like any other).
            (Pending | Expired, DepositSeen) => PayoutPlan { status: Confirming, ..self },
            (Confirming, DepositSeen) => self,
            (Pending | Confirming | Expired, DepositConfirmed) => {
                PayoutPlan { status: Processing, confirmed_at_ms: Some(now_ms), ..self }
            }
            (Confirming | Processing, DepositGone) => PayoutPlan { status: Pending, confirmed_at_ms: None, ..self },
            (Processing, PayoutsSent) => match self.due_at_ms() {
                Some(due) if now_ms >= due => PayoutPlan { status: Sent, ..self },
                Some(due_ms) => return Err(PayoutPlanRefusal::NotDue { due_ms }),
                None => return Err(refuse()),
            },
            (Sent, PayoutsConfirmed) => PayoutPlan { status: Complete, ..self },
            (Processing | Sent, PayoutsFailed) => PayoutPlan { status: Failed, ..self },
            _ => return Err(refuse()),
        })
    }
}

/// What a plan pays: fixed amounts per address, or addresses that split the deposit
/// evenly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanShape {
    /// Each payout's amount, in ledger units.
    Fixed(Vec<i128>),
    /// This many addresses share what the deposit pays out.
    Split(usize),
}

/// What a deposit pays out under a plan (ledger units).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Each payout, in the plan's order.
    pub payouts: Vec<i128>,
    /// Kept as the plan's fee.
    pub fee: i128,
    /// Beyond what the plan asked for: stays in the merchant's balance.
    pub excess: i128,
}

/// Why a deposit cannot be paid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("the deposit does not cover the fee")]
    BelowFee,
    #[error("amounts out of range")]
    OutOfRange,
}

impl From<AmountError> for SettlementError {
    fn from(_: AmountError) -> Self {
        SettlementError::OutOfRange
    }
}

/// A fixed plan's deposit: the payouts plus the fee on their sum.
pub fn expected_deposit(payouts: &[i128], fee: Fee) -> Result<(i128, i128), SettlementError> {
    let sum = payouts.iter().try_fold(0i128, |a, p| a.checked_add(*p)).ok_or(SettlementError::OutOfRange)?;
    let fee = fee.on(sum)?;
    Ok((sum.checked_add(fee).ok_or(SettlementError::OutOfRange)?, fee))
}

/// The most a deposit of `deposit` pays out in all when the fee is `fee` on what is
/// paid out: the largest `p` with `p + fee.on(p) <= deposit`.
fn payable(deposit: i128, fee: Fee) -> Result<i128, SettlementError> {
    let scale = 100 * 10i128.pow(u32::from(PERCENT_SCALE));
    let net = deposit - fee.fixed_units;
    if net <= 0 {
        return Err(SettlementError::BelowFee);
    }
    let mut p = net.checked_mul(scale).ok_or(SettlementError::OutOfRange)? / (scale + fee.percent_e6);
    // The estimate is within a unit or two of the answer (the percent part rounds up).
    for _ in 0..4 {
        if p > 0 && p + fee.on(p)? > deposit {
            p -= 1;
        } else if p + 1 + fee.on(p + 1)? <= deposit {
            p += 1;
        } else {
            break;
        }
    }
    if p <= 0 || p + fee.on(p)? > deposit {
        return Err(SettlementError::BelowFee);
    }
    Ok(p)
}

/// What `deposit` pays out under `shape`, the plan fee being `fee` on the sum paid
/// out. The documented rule:
/// - fixed amounts, the deposit at least what was asked: the payouts as asked, the
///   excess stays in the merchant's balance;
/// - fixed amounts, less deposited: the most the deposit pays out after its fee,
///   shared in the planned proportions (rounded down), the fee takes the rounding;
/// - split: the most that the deposit pays out after its fee, in equal parts (rounded
///   down), the fee takes the rounding.
pub fn settle(shape: &PlanShape, deposit: i128, fee: Fee) -> Result<Settlement, SettlementError> {
    match shape {
        PlanShape::Fixed(planned) => {
            let (expected, planned_fee) = expected_deposit(planned, fee)?;
            if deposit >= expected {
                return Ok(Settlement { payouts: planned.clone(), fee: planned_fee, excess: deposit - expected });
            }
            // What the deposit pays out after its fee, shared in the planned proportions.
            let total = payable(deposit, fee)?;
            let sum = expected - planned_fee;
            let mut payouts = Vec::with_capacity(planned.len());
            for p in planned {
                payouts.push(p.checked_mul(total).ok_or(SettlementError::OutOfRange)? / sum);
            }
            let paid: i128 = payouts.iter().sum();
            Ok(Settlement { payouts, fee: deposit - paid, excess: 0 })
        }
        PlanShape::Split(n) => {
            let n = i128::try_from(*n).map_err(|_| SettlementError::OutOfRange)?;
            if n <= 0 {
                return Err(SettlementError::OutOfRange);
            }
            let each = payable(deposit, fee)? / n;
            if each <= 0 {
                return Err(SettlementError::BelowFee);
            }
            Ok(Settlement { payouts: vec![each; n as usize], fee: deposit - each * n, excess: 0 })
        }
    }
}

/// The referrer's share of a fee: `share_e6` percent × 10^6 of it, rounded down (the
/// house keeps the rounding).
pub fn referral_share(fee: i128, share_e6: i128) -> i128 {
    let scale = 100 * 10i128.pow(u32::from(PERCENT_SCALE));
    fee.saturating_mul(share_e6.clamp(0, scale)) / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use PayoutPlanInput::*;
    use PayoutPlanStatus::*;

    const HOUR: i64 = 3_600_000;

    fn plan() -> PayoutPlan {
        PayoutPlan { status: Pending, valid_until_ms: 24 * HOUR, delay_ms: 2 * HOUR, confirmed_at_ms: None }
    }

    #[test]
    fn a_plan_pays_out_after_its_delay() {
        let p = plan().after(DepositSeen, HOUR).unwrap().after(DepositConfirmed, 2 * HOUR).unwrap();
        assert_eq!((p.status, p.due_at_ms()), (Processing, Some(4 * HOUR)));
        assert!(!p.is_due(4 * HOUR - 1) && p.is_due(4 * HOUR));
        assert_eq!(p.after(PayoutsSent, 3 * HOUR), Err(PayoutPlanRefusal::NotDue { due_ms: 4 * HOUR }));
        let p = p.after(PayoutsSent, 4 * HOUR).unwrap().after(PayoutsConfirmed, 5 * HOUR).unwrap();
        assert_eq!(p.status, Complete);
        assert!(p.status.is_final());
        assert!(p.after(PayoutsSent, 6 * HOUR).is_err(), "never sent twice");
    }

    #[test]
    fn expiry_reorgs_and_failures() {
        assert_eq!(plan().after(Tick, 24 * HOUR).unwrap().status, Pending, "valid until the end of its window");
        let expired = plan().after(Tick, 24 * HOUR + 1).unwrap();
        assert_eq!(expired.status, Expired);
        // A late deposit is still paid out, never kept.
        assert_eq!(expired.after(DepositSeen, 25 * HOUR).unwrap().status, Confirming);
        // The deposit reorged out: waiting again, the delay restarts with the next confirmation.
        let p = plan().after(DepositConfirmed, HOUR).unwrap().after(DepositGone, 2 * HOUR).unwrap();
        assert_eq!((p.status, p.confirmed_at_ms), (Pending, None));
        let p = p.after(DepositConfirmed, 3 * HOUR).unwrap();
        assert_eq!(p.due_at_ms(), Some(5 * HOUR));
        assert_eq!(p.after(PayoutsFailed, 6 * HOUR).unwrap().status, Failed);
        assert!(plan().after(PayoutsConfirmed, 0).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in PayoutPlanStatus::ALL {
            assert_eq!(PayoutPlanStatus::parse(s.as_str()), Some(s));
        }
    }

    fn fee(fixed: i128, percent_e6: i128) -> Fee {
        Fee { fixed_units: fixed, percent_e6 }
    }

    #[test]
    fn fixed_plans_pay_what_was_asked() {
        // 3 % and 1000 units: 100_000 + 200_000 pays 9_000 + 1000.
        let f = fee(1000, 3_000_000);
        assert_eq!(expected_deposit(&[100_000, 200_000], f), Ok((310_000, 10_000)));
        let shape = PlanShape::Fixed(vec![100_000, 200_000]);
        assert_eq!(settle(&shape, 310_000, f), Ok(Settlement { payouts: vec![100_000, 200_000], fee: 10_000, excess: 0 }));
        assert_eq!(settle(&shape, 310_007, f), Ok(Settlement { payouts: vec![100_000, 200_000], fee: 10_000, excess: 7 }));
        // About half deposited: 150_000 paid out (its fee 5_500), a third and two thirds.
        assert_eq!(settle(&shape, 155_500, f), Ok(Settlement { payouts: vec![50_000, 100_000], fee: 5_500, excess: 0 }));
        // Rounding goes to the fee, never beyond the deposit.
        let s = settle(&shape, 155_501, f).unwrap();
        assert_eq!((s.payouts.clone(), s.fee), (vec![50_000, 100_000], 5_501));
        assert_eq!(settle(&shape, 1000, f), Err(SettlementError::BelowFee));
    }

    #[test]
    fn split_plans_share_what_is_left_after_the_fee() {
        let f = fee(1000, 3_000_000);
        // p + 1000 + ceil(3 % p) <= 310_000 → p = 300_000.
        assert_eq!(settle(&PlanShape::Split(2), 310_000, f), Ok(Settlement { payouts: vec![150_000, 150_000], fee: 10_000, excess: 0 }));
        let s = settle(&PlanShape::Split(3), 310_000, f).unwrap();
        assert_eq!(s.payouts, vec![100_000; 3]);
        assert_eq!(s.fee, 10_000);
        assert_eq!(settle(&PlanShape::Split(2), 1000, f), Err(SettlementError::BelowFee));
        assert_eq!(settle(&PlanShape::Split(2), 1001, f), Err(SettlementError::BelowFee));
        assert_eq!(settle(&PlanShape::Split(1), 5, Fee::ZERO).unwrap().payouts, vec![5]);
        assert_eq!(referral_share(10_001, 25_000_000), 2_500);
    }

    proptest! {
        /// Nothing is created or lost: payouts + fee + excess is the deposit, the fee is
        /// never below the plan's, and no payout is negative.
        #[test]
        fn settlements_add_up(amounts in proptest::collection::vec(1i128..10_000_000, 1..20), deposit in 0i128..400_000_000,
                              fixed in 0i128..100_000, percent in 0i128..10_000_000, split in proptest::bool::ANY) {
            let f = fee(fixed, percent);
            let shape = if split { PlanShape::Split(amounts.len()) } else { PlanShape::Fixed(amounts.clone()) };
            if let Ok(s) = settle(&shape, deposit, f) {
                let paid: i128 = s.payouts.iter().sum();
                prop_assert_eq!(paid + s.fee + s.excess, deposit);
                prop_assert!(s.payouts.iter().all(|p| *p >= 0));
                prop_assert!(s.fee >= f.on(paid).unwrap(), "the fee covers the rule on what is paid out");
                if split {
                    prop_assert!(s.payouts.iter().all(|p| *p == s.payouts[0] && *p > 0));
                } else {
                    // Never more than asked to any address; all of it once the deposit covers the plan.
                    prop_assert!(s.payouts.iter().zip(&amounts).all(|(p, a)| p <= a));
                    if deposit >= expected_deposit(&amounts, f).unwrap().0 {
                        prop_assert_eq!(&s.payouts, &amounts);
                    }
                }
            }
        }
    }

    proptest! {
        /// Whatever happens in whatever order, payouts are sent at most once, never
        /// before the delay after a confirmation, and a final plan stays final.
        #[test]
        fn sent_once_and_never_early(steps in proptest::collection::vec((0u8..7, 0i64..HOUR), 1..60)) {
            let mut p = plan();
            let mut now = 0;
            let mut sent = 0;
            for (step, dt) in steps {
                now += dt;
                let input = [DepositSeen, DepositConfirmed, DepositGone, PayoutsSent, PayoutsConfirmed, PayoutsFailed, Tick][step as usize];
                let before = p;
                if let Ok(next) = p.after(input, now) {
                    if before.status.is_final() && before.status != Expired {
                        prop_assert_eq!(next, before, "final plans do not change");
                    }
                    if next.status == Sent && before.status != Sent {
                        sent += 1;
                        prop_assert!(now >= before.due_at_ms().unwrap());
                    }
                    p = next;
                }
            }
            prop_assert!(sent <= 1);
        }
    }
}
