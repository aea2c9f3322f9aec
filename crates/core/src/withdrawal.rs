//! The withdrawal and payout state machines. A withdrawal is one merchant's request to
//! send; a payout is the one on-chain transaction that pays a batch of them. Pure: the
//! store reads the current state in its transaction, asks for the next one here and
//! writes it; a refused transition changes nothing.
//!
//! ```text
//!   requested ──held──▶ queued ──signed──▶ signed ──broadcast──▶ broadcast ──confirmed──▶ confirmed
//!       │                ▲  │                                    (replaced, confirmations: stays)
//!  approval required     │  ├── batched into a payout / returned to the queue: stays queued
//!       ▼                │  ├── failed, while in no payout ──▶ failed
//!    pending ──approved──┘  └── cancelled, while in no payout ──▶ cancelled
//!       └── rejected or cancelled ──▶ cancelled
//!
//!   payout: preparing ──signed──▶ signed ──broadcast──▶ broadcast ──confirmed──▶ confirmed
//!               │                                       (replaced: stays)
//!               └── abandoned (nothing left Kassa) ──▶ failed
//! ```
//! A withdrawal over one of its merchant's limits is held, then waits as `pending`
//! for an operator: approved it joins the queue, declined it is `cancelled`.

use std::fmt;

/// Where a withdrawal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WithdrawalStatus {
    /// Stored, its funds not held yet.
    Requested,
    /// Held, awaiting an approval before it is queued.
    Pending,
    /// Held, waiting for the broadcaster (possibly batched into a payout being prepared).
    Queued,
    /// Its payout's transaction is signed and stored, not yet broadcast.
    Signed,
    /// Its payout's transaction is on the network.
    Broadcast,
    /// Its payout's transaction reached the currency's confirmations.
    Confirmed,
    /// Could not be paid; its hold is voided.
    Failed,
    /// Called off before anything left Kassa; its hold is voided.
    Cancelled,
}

impl WithdrawalStatus {
    pub const ALL: [WithdrawalStatus; 8] = [
        WithdrawalStatus::Requested,
        WithdrawalStatus::Pending,
        WithdrawalStatus::Queued,
        WithdrawalStatus::Signed,
        WithdrawalStatus::Broadcast,
        WithdrawalStatus::Confirmed,
        WithdrawalStatus::Failed,
        WithdrawalStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalStatus::Requested => "requested",
            WithdrawalStatus::Pending => "pending",
            WithdrawalStatus::Queued => "queued",
            WithdrawalStatus::Signed => "signed",
            WithdrawalStatus::Broadcast => "broadcast",
            WithdrawalStatus::Confirmed => "confirmed",
            WithdrawalStatus::Failed => "failed",
            WithdrawalStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(self, WithdrawalStatus::Confirmed | WithdrawalStatus::Failed | WithdrawalStatus::Cancelled)
    }

    /// Whether it counts against the daily withdrawal limit (failed and cancelled ones do not).
    pub fn counts_toward_limit(self) -> bool {
        !matches!(self, WithdrawalStatus::Failed | WithdrawalStatus::Cancelled)
    }
}

impl fmt::Display for WithdrawalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the store keeps of a withdrawal's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithdrawalState {
    pub status: WithdrawalStatus,
    /// The payout that claimed it, if any.
    pub payout: Option<i64>,
}

/// What happened to a withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithdrawalInput {
    /// Its amount and fee are held: it joins the queue.
    Held,
    /// Its amount and fee are held, and its merchant's rules want it approved first.
    ApprovalRequired,
    /// An approver let it through.
    Approved,
    /// An approver refused it.
    Rejected,
    /// A payout being prepared claimed it.
    Batched { payout: i64 },
    /// Its payout was abandoned before signing (nothing left Kassa).
    ReturnedToQueue { payout: i64 },
    /// Its payout's transaction was signed and stored.
    Signed { payout: i64 },
    /// Its payout's transaction is on the network (again: the same bytes).
    Broadcast,
    /// Its payout's transaction was replaced on the network by one that pays it too.
    Replaced,
    /// Its payout's transaction has some confirmations, below the currency's threshold.
    Confirmations,
    /// Its payout's transaction reached the currency's confirmations.
    Confirmed,
    /// It cannot be paid.
    Failed,
    /// Its merchant called it off.
    Cancelled,
}

/// Why a withdrawal transition does not apply (the store changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WithdrawalRefusal {
    #[error("a {from} withdrawal cannot be {input:?}")]
    NotFrom { from: WithdrawalStatus, input: WithdrawalInput },
    #[error("the withdrawal is already claimed by payout {claimed}")]
    AlreadyBatched { claimed: i64 },
    #[error("the withdrawal belongs to payout {claimed:?}, not to payout {payout}")]
    OtherPayout { payout: i64, claimed: Option<i64> },
}

impl WithdrawalState {
    /// A withdrawal as it is first stored.
    pub const NEW: WithdrawalState = WithdrawalState { status: WithdrawalStatus::Requested, payout: None };

    /// The state after `input`; the same state when a repeat changes nothing.
    pub fn after(self, input: WithdrawalInput) -> Result<WithdrawalState, WithdrawalRefusal> {
        use WithdrawalInput as I;
        use WithdrawalStatus::*;
        let refuse = || Err(WithdrawalRefusal::NotFrom { from: self.status, input });
        let mine = |payout: i64| match self.payout {
            Some(p) if p == payout => Ok(()),
            claimed => Err(WithdrawalRefusal::OtherPayout { payout, claimed }),
        };
        let status = |status| Ok(WithdrawalState { status, ..self });
        match (self.status, input) {
            (Requested, I::Held) | (Pending, I::Approved) => status(Queued),
            (Requested, I::ApprovalRequired) => status(Pending),
            (Pending, I::Rejected) => status(Cancelled),
            (Queued, I::Batched { payout }) => match self.payout {
                None => Ok(WithdrawalState { payout: Some(payout), ..self }),
                Some(claimed) => Err(WithdrawalRefusal::AlreadyBatched { claimed }),
            },
            (Queued, I::ReturnedToQueue { payout }) => mine(payout).map(|()| WithdrawalState { payout: None, ..self }),
            (Queued | Signed, I::Signed { payout }) => mine(payout).map(|()| WithdrawalState { status: Signed, ..self }),
            (Signed | Broadcast, I::Broadcast) => status(Broadcast),
            (Broadcast, I::Replaced | I::Confirmations) => status(Broadcast),
            (Confirmed, I::Confirmations) => status(Confirmed),
            (Broadcast | Confirmed, I::Confirmed) => status(Confirmed),
            // Only while no payout holds it: a claimed withdrawal may already be paid.
            (Queued, I::Failed) if self.payout.is_none() => status(Failed),
            (Queued, I::Cancelled) if self.payout.is_none() => status(Cancelled),
            (Pending, I::Cancelled) => status(Cancelled),
            _ => refuse(),
        }
    }
}

/// Where a payout (one on-chain transaction paying a batch of withdrawals) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayoutStatus {
    /// Its withdrawals are claimed; its transaction is being built and signed.
    Preparing,
    /// Its transaction is signed and stored (txid and bytes), not yet broadcast.
    Signed,
    /// Its transaction is on the network.
    Broadcast,
    /// Its transaction reached the currency's confirmations.
    Confirmed,
    /// Abandoned before signing: nothing left Kassa.
    Failed,
}

impl PayoutStatus {
    pub const ALL: [PayoutStatus; 5] =
        [PayoutStatus::Preparing, PayoutStatus::Signed, PayoutStatus::Broadcast, PayoutStatus::Confirmed, PayoutStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Preparing => "preparing",
            PayoutStatus::Signed => "signed",
            PayoutStatus::Broadcast => "broadcast",
            PayoutStatus::Confirmed => "confirmed",
            PayoutStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, PayoutStatus::Confirmed | PayoutStatus::Failed)
    }
}

impl fmt::Display for PayoutStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutInput {
    /// Its transaction was signed and stored.
    Signed,
    /// Its transaction is on the network (again: the same bytes).
    Broadcast,
    /// Its transaction was replaced on the network by one that pays the same outputs.
    Replaced,
    /// Its transaction reached the currency's confirmations.
    Confirmed,
    /// Given up before signing (refused by the node, lease lost, interrupted).
    Abandoned,
}

/// Why a payout transition does not apply (the store changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {from} payout cannot be {input:?}")]
pub struct PayoutRefusal {
    pub from: PayoutStatus,
    pub input: PayoutInput,
}

impl PayoutStatus {
    /// The status after `input`; the same status when a repeat changes nothing.
    pub fn after(self, input: PayoutInput) -> Result<PayoutStatus, PayoutRefusal> {
        use PayoutInput as I;
        use PayoutStatus::*;
        match (self, input) {
            (Preparing, I::Signed) => Ok(Signed),
            (Signed | Broadcast, I::Broadcast) | (Broadcast, I::Replaced) => Ok(Broadcast),
            (Broadcast | Confirmed, I::Confirmed) => Ok(Confirmed),
            (Preparing, I::Abandoned) => Ok(Failed),
            _ => Err(PayoutRefusal { from: self, input }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use WithdrawalInput as I;
    use WithdrawalStatus::*;

    fn at(status: WithdrawalStatus, payout: Option<i64>) -> WithdrawalState {
        WithdrawalState { status, payout }
    }

    fn run(inputs: &[WithdrawalInput]) -> Result<WithdrawalState, WithdrawalRefusal> {
        inputs.iter().try_fold(WithdrawalState::NEW, |s, i| s.after(*i))
    }

    #[test]
    fn a_withdrawal_lives_as_the_diagram_says() {
        let paid = [I::Held, I::Batched { payout: 7 }, I::Signed { payout: 7 }, I::Broadcast, I::Confirmations, I::Replaced, I::Confirmed];
        assert_eq!(run(&paid), Ok(at(Confirmed, Some(7))));
        assert_eq!(run(&paid[..1]), Ok(at(Queued, None)));
        assert_eq!(run(&paid[..2]), Ok(at(Queued, Some(7))));
        assert_eq!(run(&paid[..3]), Ok(at(Signed, Some(7))));
        assert_eq!(run(&paid[..4]), Ok(at(Broadcast, Some(7))));
        // An abandoned payout returns it to the queue; another payout may claim it.
        assert_eq!(run(&[I::Held, I::Batched { payout: 7 }, I::ReturnedToQueue { payout: 7 }, I::Batched { payout: 8 }]), Ok(at(Queued, Some(8))));
        // Failed or cancelled while no payout holds it.
        assert_eq!(run(&[I::Held, I::Failed]), Ok(at(Failed, None)));
        assert_eq!(run(&[I::Held, I::Cancelled]), Ok(at(Cancelled, None)));
        // Approval.
        assert_eq!(run(&[I::ApprovalRequired]), Ok(at(Pending, None)));
        assert_eq!(run(&[I::ApprovalRequired, I::Approved]), Ok(at(Queued, None)));
        assert_eq!(run(&[I::ApprovalRequired, I::Rejected]), Ok(at(Cancelled, None)));
        assert_eq!(run(&[I::ApprovalRequired, I::Cancelled]), Ok(at(Cancelled, None)));
    }

    #[test]
    fn repeats_change_nothing() {
        let signed = at(Signed, Some(7));
        assert_eq!(signed.after(I::Signed { payout: 7 }), Ok(signed));
        let broadcast = at(Broadcast, Some(7));
        assert_eq!(broadcast.after(I::Broadcast), Ok(broadcast));
        let confirmed = at(Confirmed, Some(7));
        assert_eq!(confirmed.after(I::Confirmed), Ok(confirmed));
        assert_eq!(confirmed.after(I::Confirmations), Ok(confirmed), "confirmations keep counting");
    }

    #[test]
    fn bad_transitions_are_refused_by_name() {
        let nf = |from, input| Err(WithdrawalRefusal::NotFrom { from, input });
        assert_eq!(WithdrawalState::NEW.after(I::Batched { payout: 1 }), nf(Requested, I::Batched { payout: 1 }));
        assert_eq!(run(&[I::Held, I::Held]), nf(Queued, I::Held), "held once");
        assert_eq!(run(&[I::Held, I::Batched { payout: 1 }, I::Batched { payout: 2 }]), Err(WithdrawalRefusal::AlreadyBatched { claimed: 1 }));
        assert_eq!(run(&[I::Held, I::Batched { payout: 1 }, I::Failed]), nf(Queued, I::Failed), "a claimed withdrawal may be paid already");
        assert_eq!(run(&[I::Held, I::Batched { payout: 1 }, I::Cancelled]), nf(Queued, I::Cancelled));
        assert_eq!(run(&[I::Held, I::Signed { payout: 1 }]), Err(WithdrawalRefusal::OtherPayout { payout: 1, claimed: None }));
        assert_eq!(
            run(&[I::Held, I::Batched { payout: 1 }, I::ReturnedToQueue { payout: 2 }]),
            Err(WithdrawalRefusal::OtherPayout { payout: 2, claimed: Some(1) })
        );
        assert_eq!(run(&[I::Held, I::Broadcast]), nf(Queued, I::Broadcast), "nothing to broadcast before signing");
        assert_eq!(run(&[I::Held, I::Confirmed]), nf(Queued, I::Confirmed));
        let broadcast = at(Broadcast, Some(1));
        assert_eq!(broadcast.after(I::Failed), nf(Broadcast, I::Failed), "sent money is never failed");
        assert_eq!(broadcast.after(I::Signed { payout: 1 }), nf(Broadcast, I::Signed { payout: 1 }), "never back to signed");
        assert_eq!(at(Signed, Some(1)).after(I::Replaced), nf(Signed, I::Replaced));
        assert_eq!(at(Confirmed, Some(1)).after(I::Broadcast), nf(Confirmed, I::Broadcast));
        assert_eq!(at(Failed, None).after(I::Held), nf(Failed, I::Held));
        assert_eq!(at(Cancelled, None).after(I::Approved), nf(Cancelled, I::Approved));
        assert_eq!(at(Queued, None).after(I::Approved), nf(Queued, I::Approved));
        assert_eq!(at(Pending, None).after(I::Held), nf(Pending, I::Held));
        assert_eq!(WithdrawalState::NEW.after(I::Rejected), nf(Requested, I::Rejected));
    }

    #[test]
    fn a_payout_lives_as_the_diagram_says() {
        use PayoutInput as P;
        use PayoutStatus as S;
        assert_eq!(S::Preparing.after(P::Signed), Ok(S::Signed));
        assert_eq!(S::Signed.after(P::Broadcast), Ok(S::Broadcast));
        assert_eq!(S::Broadcast.after(P::Broadcast), Ok(S::Broadcast));
        assert_eq!(S::Broadcast.after(P::Replaced), Ok(S::Broadcast));
        assert_eq!(S::Broadcast.after(P::Confirmed), Ok(S::Confirmed));
        assert_eq!(S::Confirmed.after(P::Confirmed), Ok(S::Confirmed));
        assert_eq!(S::Preparing.after(P::Abandoned), Ok(S::Failed));
        let refused = |from, input| Err(PayoutRefusal { from, input });
        assert_eq!(S::Signed.after(P::Abandoned), refused(S::Signed, P::Abandoned), "signed bytes may be on the network");
        assert_eq!(S::Preparing.after(P::Broadcast), refused(S::Preparing, P::Broadcast));
        assert_eq!(S::Signed.after(P::Signed), refused(S::Signed, P::Signed), "signed once");
        assert_eq!(S::Signed.after(P::Replaced), refused(S::Signed, P::Replaced));
        assert_eq!(S::Signed.after(P::Confirmed), refused(S::Signed, P::Confirmed));
        assert_eq!(S::Failed.after(P::Signed), refused(S::Failed, P::Signed));
        assert_eq!(S::Confirmed.after(P::Broadcast), refused(S::Confirmed, P::Broadcast));
    }

    #[test]
    fn names_round_trip() {
        for s in WithdrawalStatus::ALL {
            assert_eq!(WithdrawalStatus::parse(s.as_str()), Some(s));
        }
        for s in PayoutStatus::ALL {
            assert_eq!(PayoutStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(WithdrawalStatus::parse("preparing"), None);
        assert_eq!(PayoutStatus::parse("queued"), None);
    }

    fn withdrawal_input() -> impl Strategy<Value = WithdrawalInput> {
        prop_oneof![
            Just(I::Held),
            Just(I::ApprovalRequired),
            Just(I::Approved),
            Just(I::Rejected),
            (1i64..4).prop_map(|payout| I::Batched { payout }),
            (1i64..4).prop_map(|payout| I::ReturnedToQueue { payout }),
            (1i64..4).prop_map(|payout| I::Signed { payout }),
            Just(I::Broadcast),
            Just(I::Replaced),
            Just(I::Confirmations),
            Just(I::Confirmed),
            Just(I::Failed),
            Just(I::Cancelled),
        ]
    }

    fn payout_input() -> impl Strategy<Value = PayoutInput> {
        prop_oneof![
            Just(PayoutInput::Signed),
            Just(PayoutInput::Broadcast),
            Just(PayoutInput::Replaced),
            Just(PayoutInput::Confirmed),
            Just(PayoutInput::Abandoned),
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: a withdrawal reaches a terminal status at
        /// most once and never leaves it, and once signed it keeps its payout.
        #[test]
        fn a_withdrawal_ends_once(inputs in proptest::collection::vec(withdrawal_input(), 1..60)) {
            let mut s = WithdrawalState::NEW;
            let mut ended = 0;
            for i in inputs {
                let Ok(next) = s.after(i) else { continue };
                if s.status.is_terminal() {
                    prop_assert_eq!(next.status, s.status, "left a terminal status");
                } else if next.status.is_terminal() {
                    ended += 1;
                }
                if matches!(s.status, Signed | Broadcast | Confirmed) {
                    prop_assert_eq!(next.payout, s.payout);
                }
                s = next;
            }
            prop_assert!(ended <= 1);
        }

        #[test]
        fn a_payout_ends_once(inputs in proptest::collection::vec(payout_input(), 1..40)) {
            let mut s = PayoutStatus::Preparing;
            let mut ended = 0;
            for i in inputs {
                let Ok(next) = s.after(i) else { continue };
                if s.is_terminal() {
                    prop_assert_eq!(next, s, "left a terminal status");
                } else if next.is_terminal() {
                    ended += 1;
                }
                s = next;
            }
            prop_assert!(ended <= 1);
        }
    }
}
