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
