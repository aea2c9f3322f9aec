//! The deposit state machine: one on-chain output paying a known address, from first
//! sight to credit (and back, if its block leaves the chain). Pure: the store applies
//! the state a transition returns, in the transaction that records what happened.
//!
//! ```text
//!   (mempool) seen ──mined──▶ confirming ──credit──▶ credited
//!      │  ▲                      │  ▲                  │   ▲
//!      │  └──────left chain──────┘  └──reverse (in a block)┘
//!   left mempool              credited ──left chain──▶ credited, no block
//!      ▼                                  ──reverse──▶ reversed ──mined──▶ confirming
//!   dropped ──in mempool again──▶ seen
//! ```
//! A credit and its reversal are counted (`credits`, `reversals`): the ledger books
//! credit number k and reversal number k once each, so a deposit mined, reorged out
//! and mined again is credited again exactly once more.

use std::fmt;

/// Where a deposit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DepositStatus {
    /// In the mempool.
    Seen,
    /// In a block, below its currency's confirmations (or reversed and mined again).
    Confirming,
    /// Credited to its owner.
    Credited,
    /// Its credit was taken back: its block left the chain.
    Reversed,
    /// Left the mempool unconfirmed (double-spent or evicted).
    Dropped,
}

impl DepositStatus {
    pub const ALL: [DepositStatus; 5] =
        [DepositStatus::Seen, DepositStatus::Confirming, DepositStatus::Credited, DepositStatus::Reversed, DepositStatus::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            DepositStatus::Seen => "seen",
            DepositStatus::Confirming => "confirming",
            DepositStatus::Credited => "credited",
            DepositStatus::Reversed => "reversed",
            DepositStatus::Dropped => "dropped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for DepositStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the store keeps of a deposit's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositState {
    pub status: DepositStatus,
    /// Whether its transaction is in a block of the best chain.
    pub in_block: bool,
    pub credits: i64,
    pub reversals: i64,
}

/// What happened to a deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositInput {
    /// Its transaction is in the mempool.
    InMempool,
    /// Its transaction is in a block of the best chain.
    Mined,
    /// Its block left the best chain.
    LeftChain,
    /// Its transaction left the mempool without being mined.
    LeftMempool,
    /// Credit number `k` was booked (at its confirmations).
    Credit { k: i64 },
    /// Reversal number `k` was booked.
    Reverse { k: i64 },
}

/// Why a transition does not apply (the store changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DepositRefusal {
    #[error("credit {k} is not the next credit (credits {credits}, reversals {reversals})")]
    NotTheNextCredit { k: i64, credits: i64, reversals: i64 },
    #[error("reversal {k} is not the next reversal (credits {credits}, reversals {reversals})")]
    NotTheNextReversal { k: i64, credits: i64, reversals: i64 },
    #[error("a {0} deposit is not in the mempool")]
    NotInMempool(DepositStatus),
    #[error("a deposit is credited only while its transaction is in a block")]
    NotInABlock,
}

impl DepositState {
    /// A deposit first found through `input` (in the mempool or in a block).
    pub fn found(input: DepositInput) -> Option<DepositState> {
        let base = DepositState { status: DepositStatus::Seen, in_block: false, credits: 0, reversals: 0 };
        match input {
            DepositInput::InMempool => Some(base),
            DepositInput::Mined => Some(DepositState { status: DepositStatus::Confirming, in_block: true, ..base }),
            _ => None,
        }
    }

    /// Whether it is credited now (every reversal matched by a later credit, and one more).
    pub fn net_credited(&self) -> bool {
        self.credits > self.reversals
    }

    /// The state after `input`; the same state when nothing changes.
    pub fn after(self, input: DepositInput) -> Result<DepositState, DepositRefusal> {
        use DepositStatus::*;
        let (credits, reversals) = (self.credits, self.reversals);
        Ok(match input {
            DepositInput::InMempool => match self.status {
                Dropped => DepositState { status: Seen, ..self },
                _ => self,
            },
            DepositInput::Mined => {
                DepositState { status: if self.net_credited() { Credited } else { Confirming }, in_block: true, ..self }
            }
            DepositInput::LeftChain => DepositState { status: if self.net_credited() { Credited } else { Seen }, in_block: false, ..self },
            DepositInput::LeftMempool => match self.status {
                Seen => DepositState { status: Dropped, ..self },
                other => return Err(DepositRefusal::NotInMempool(other)),
            },
            DepositInput::Credit { k } => {
                if k != credits + 1 || self.net_credited() {
                    return Err(DepositRefusal::NotTheNextCredit { k, credits, reversals });
                }
                if !self.in_block {
                    return Err(DepositRefusal::NotInABlock);
                }
                DepositState { status: Credited, credits: k, ..self }
            }
            DepositInput::Reverse { k } => {
                if k != reversals + 1 || !self.net_credited() {
                    return Err(DepositRefusal::NotTheNextReversal { k, credits, reversals });
                }
                DepositState { status: if self.in_block { Confirming } else { Reversed }, reversals: k, ..self }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DepositInput::*;
    use DepositStatus::*;

    fn run(inputs: &[DepositInput]) -> Result<DepositState, DepositRefusal> {
        let mut s = DepositState::found(inputs[0]).expect("first sight");
        for i in &inputs[1..] {
            s = s.after(*i)?;
        }
        Ok(s)
    }

    #[test]
    fn a_deposit_lives_as_the_diagram_says() {
        let s = run(&[InMempool, Mined, Credit { k: 1 }]).unwrap();
        assert_eq!((s.status, s.credits), (Credited, 1));
        // Reorged out: still credited until the reversal is booked, then reversed.
        let s = s.after(LeftChain).unwrap();
        assert_eq!((s.status, s.in_block), (Credited, false));
        let s = s.after(Reverse { k: 1 }).unwrap();
        assert_eq!(s.status, Reversed);
        // Mined again: confirming, then credited a second time.
        let s = s.after(Mined).unwrap().after(Credit { k: 2 }).unwrap();
        assert_eq!((s.status, s.credits, s.reversals), (Credited, 2, 1));
        // Found in a block first; double-spent in the mempool.
        assert_eq!(run(&[Mined]).unwrap().status, Confirming);
        assert_eq!(run(&[InMempool, LeftMempool]).unwrap().status, Dropped);
        assert_eq!(run(&[InMempool, LeftMempool, InMempool]).unwrap().status, Seen);
        // A reversal booked while a new block already carries it: confirming.
        let s = run(&[Mined, Credit { k: 1 }, LeftChain, Mined]).unwrap();
        assert_eq!(s.status, Credited);
        assert_eq!(s.after(Reverse { k: 1 }), Ok(DepositState { status: Confirming, in_block: true, credits: 1, reversals: 1 }));
    }

    #[test]
    fn credits_and_reversals_happen_once_each_in_turn() {
        let credited = run(&[Mined, Credit { k: 1 }]).unwrap();
        assert_eq!(credited.after(Credit { k: 1 }), Err(DepositRefusal::NotTheNextCredit { k: 1, credits: 1, reversals: 0 }));
        assert!(credited.after(Credit { k: 2 }).is_err(), "no second credit without a reversal");
        assert!(credited.after(Reverse { k: 2 }).is_err());
        assert!(run(&[Mined]).unwrap().after(Reverse { k: 1 }).is_err(), "nothing to reverse");
        assert!(credited.after(LeftMempool).is_err());
        assert_eq!(DepositState::found(Credit { k: 1 }), None);
        assert_eq!(run(&[InMempool, Credit { k: 1 }]), Err(DepositRefusal::NotInABlock), "0-conf is never credited");
    }

    #[test]
    fn names_round_trip() {
        for s in DepositStatus::ALL {
            assert_eq!(DepositStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DepositStatus::parse("paid"), None);
    }

    fn input() -> impl Strategy<Value = u8> {
        0u8..6
    }

    proptest! {
        /// Whatever the node reports, in whatever order, a deposit is credited at most
        /// once more than it is reversed, and its status says credited exactly when it is.
        #[test]
        fn never_credited_twice(steps in proptest::collection::vec(input(), 1..60)) {
            let mut s = DepositState::found(Mined).unwrap();
            for step in steps {
                let i = match step {
                    0 => InMempool,
                    1 => Mined,
                    2 => LeftChain,
                    3 => LeftMempool,
                    4 => Credit { k: s.credits + 1 },
                    _ => Reverse { k: s.reversals + 1 },
                };
                if let Ok(next) = s.after(i) {
                    s = next;
                }
                prop_assert!(s.credits == s.reversals || s.credits == s.reversals + 1);
                prop_assert_eq!(s.net_credited(), s.status == Credited);
            }
        }
    }
}
