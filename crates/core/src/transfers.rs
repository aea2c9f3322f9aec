//! One numbering for a merchant's deposits and withdrawals, for APIs that list both
//! as "transactions" under a single integer id: a deposit's row id `n` is `2n`, a
//! withdrawal's `2n + 1`. Deterministic both ways, so an id given out in a callback is
//! the id the API finds again.

/// Which way money moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// A deposit to one of the merchant's addresses.
    Receive,
    /// A withdrawal the merchant requested.
    Send,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Receive => "receive",
            TransferKind::Send => "send",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "receive" => Some(TransferKind::Receive),
            "send" => Some(TransferKind::Send),
            _ => None,
        }
    }
}

/// The shared id of a deposit or withdrawal row (`None` if it does not fit an i64).
pub fn transfer_id(kind: TransferKind, row_id: i64) -> Option<i64> {
    let even = row_id.checked_mul(2)?;
    match kind {
        TransferKind::Receive => Some(even),
        TransferKind::Send => even.checked_add(1),
    }
}

/// The row a shared id names; `None` for ids no row can have (zero or negative).
pub fn parse_transfer_id(id: i64) -> Option<(TransferKind, i64)> {
    if id <= 1 {
        return None;
    }
    let kind = if id % 2 == 0 { TransferKind::Receive } else { TransferKind::Send };
    Some((kind, id / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deposits_are_even_withdrawals_odd() {
        assert_eq!(transfer_id(TransferKind::Receive, 7), Some(14));
        assert_eq!(transfer_id(TransferKind::Send, 7), Some(15));
        assert_eq!(parse_transfer_id(14), Some((TransferKind::Receive, 7)));
        assert_eq!(parse_transfer_id(15), Some((TransferKind::Send, 7)));
        for bad in [i64::MIN, -3, -2, 0, 1] {
            assert_eq!(parse_transfer_id(bad), None, "{bad}");
        }
        assert_eq!(transfer_id(TransferKind::Send, i64::MAX / 2 + 1), None);
    }

    proptest! {
        #[test]
        fn ids_never_collide_and_round_trip(row in 1i64..(i64::MAX / 2), send in any::<bool>()) {
            let kind = if send { TransferKind::Send } else { TransferKind::Receive };
            let id = transfer_id(kind, row).unwrap();
            prop_assert_eq!(parse_transfer_id(id), Some((kind, row)));
            let other = if send { TransferKind::Receive } else { TransferKind::Send };
            prop_assert_ne!(transfer_id(other, row), Some(id));
        }
    }
}
