//! A merchant's standing: active, or blocked by an operator (no API call with its
//! keys is served; deposits are still credited so nothing is lost).

use std::fmt;

/// Whether a merchant may use Kassa.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MerchantStatus {
    Active,
    Blocked,
}

impl MerchantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantStatus::Active => "active",
            MerchantStatus::Blocked => "blocked",
        }
    }

    /// The stored name back as a status; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(MerchantStatus::Active),
            "blocked" => Some(MerchantStatus::Blocked),
            _ => None,
        }
    }
}

impl fmt::Display for MerchantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for s in [MerchantStatus::Active, MerchantStatus::Blocked] {
            assert_eq!(MerchantStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MerchantStatus::parse("Blocked"), None);
        assert_eq!(MerchantStatus::parse(""), None);
    }
}
