//! Address codecs for the Bitcoin family, per coin and network: base58check with the
//! coin's version bytes, and bech32/bech32m (BIP-173/350) segwit addresses with the
//! coin's human-readable part. Checksums are verified here; the node is never asked.
//! Litecoin MWEB addresses are refused: a send to one can return a txid that never
//! reaches the mempool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coin {
    Bitcoin,
    Litecoin,
    Dogecoin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Mainnet,
    Testnet,
    Regtest,
}

impl FromStr for Coin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bitcoin" => Ok(Coin::Bitcoin),
            "litecoin" => Ok(Coin::Litecoin),
            "dogecoin" => Ok(Coin::Dogecoin),
            _ => Err(format!("{s:?} is not one of bitcoin, litecoin, dogecoin")),
        }
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mainnet" | "main" => Ok(Network::Mainnet),
            "testnet" | "test" => Ok(Network::Testnet),
            "regtest" => Ok(Network::Regtest),
            _ => Err(format!("{s:?} is not one of mainnet, testnet, regtest")),
        }
    }
}

/// What identifies addresses of one coin on one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressParams {
    pub pubkey_versions: &'static [u8],
    pub script_versions: &'static [u8],
    /// Segwit human-readable part (`None`: the coin has no segwit addresses).
    pub hrp: Option<&'static str>,
    /// Prefixes of addresses the coin has but Kassa refuses (MWEB).
    pub refused_hrps: &'static [&'static str],
}

pub fn params(coin: Coin, network: Network) -> AddressParams {
    use Coin::*;
    use Network::*;
    match (coin, network) {
        (Bitcoin, Mainnet) => AddressParams { pubkey_versions: &[0], script_versions: &[5], hrp: Some("bc"), refused_hrps: &[] },
        (Bitcoin, Testnet) => AddressParams { pubkey_versions: &[111], script_versions: &[196], hrp: Some("tb"), refused_hrps: &[] },
        (Bitcoin, Regtest) => AddressParams { pubkey_versions: &[111], script_versions: &[196], hrp: Some("bcrt"), refused_hrps: &[] },
        // Litecoin also still accepts P2SH addresses with Bitcoin's version bytes (5 / 196).
        (Litecoin, Mainnet) => {
            AddressParams { pubkey_versions: &[48], script_versions: &[50, 5], hrp: Some("ltc"), refused_hrps: &["ltcmweb"] }
        }
        (Litecoin, Testnet) => {
            AddressParams { pubkey_versions: &[111], script_versions: &[58, 196], hrp: Some("tltc"), refused_hrps: &["tmweb"] }
        }
        (Litecoin, Regtest) => {
            AddressParams { pubkey_versions: &[111], script_versions: &[58, 196], hrp: Some("rltc"), refused_hrps: &["tmweb"] }
        }
        (Dogecoin, Mainnet) => AddressParams { pubkey_versions: &[30], script_versions: &[22], hrp: None, refused_hrps: &[] },
        (Dogecoin, Testnet) => AddressParams { pubkey_versions: &[113], script_versions: &[196], hrp: None, refused_hrps: &[] },
        (Dogecoin, Regtest) => AddressParams { pubkey_versions: &[111], script_versions: &[196], hrp: None, refused_hrps: &[] },
    }
}

/// The kind of a valid address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    P2pkh,
    P2sh,
    /// Segwit version 0..=16.
    Segwit(u8),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is too long")]
    TooLong,
    #[error("MWEB addresses are not supported")]
    Mweb,
    #[error("bad bech32 address: {0}")]
    Bech32(String),
    #[error("address is for another network or coin (prefix {found:?})")]
    WrongNetwork { found: String },
    #[error("bad base58check address: {0}")]
    Base58(String),
    #[error("address has version byte {0}, which is not this coin and network's")]
    WrongVersion(u8),
    #[error("address payload is {0} bytes, expected 20")]
    BadLength(usize),
}

/// A validated address of one coin and network, kept in its canonical text form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    text: String,
    pub kind: AddressKind,
}

impl Address {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Longest address accepted (bech32 strings are at most 90 characters).
const MAX_LEN: usize = 100;

pub fn parse(text: &str, coin: Coin, network: Network) -> Result<Address, AddressError> {
    let p = params(coin, network);
    if text.is_empty() {
        return Err(AddressError::Empty);
    }
    let lower = text.to_ascii_lowercase();
    for refused in ["ltcmweb1", "tmweb1"].iter().chain(p.refused_hrps.iter()) {
        if lower.starts_with(refused) {
            return Err(AddressError::Mweb);
        }
    }
    if text.len() > MAX_LEN {
        return Err(AddressError::TooLong);
    }
    // Segwit: anything with a '1' separator whose prefix is a known hrp shape.
    if let Some((hrp_part, _)) = lower.rsplit_once('1') {
        let looks_segwit = matches!(hrp_part, "bc" | "tb" | "bcrt" | "ltc" | "tltc" | "rltc") || Some(hrp_part) == p.hrp;
        if looks_segwit {
            if Some(hrp_part) != p.hrp {
                return Err(AddressError::WrongNetwork { found: hrp_part.to_string() });
            }
            let (_hrp, version, _program) =
                bech32::segwit::decode(text).map_err(|e| AddressError::Bech32(e.to_string()))?;
            return Ok(Address { text: lower, kind: AddressKind::Segwit(version.to_u8()) });
        }
    }
    let payload = bs58::decode(text).with_check(None).into_vec().map_err(|e| AddressError::Base58(e.to_string()))?;
    if payload.len() != 21 {
        return Err(AddressError::BadLength(payload.len().saturating_sub(1)));
    }
    let kind = if p.pubkey_versions.contains(&payload[0]) {
        AddressKind::P2pkh
    } else if p.script_versions.contains(&payload[0]) {
        AddressKind::P2sh
    } else {
        return Err(AddressError::WrongVersion(payload[0]));
    };
    Ok(Address { text: text.to_string(), kind })
}

/// A regular expression that every valid address of the coin on the network matches
/// (a quick check for clients; `parse` is the real one): the segwit form under its
/// human-readable part, either case, and base58check under the leading characters
/// its version bytes give.
pub fn address_regex(coin: Coin, network: Network) -> String {
    const ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let p = params(coin, network);
    let mut leads = std::collections::BTreeSet::new();
    for &version in p.pubkey_versions.iter().chain(p.script_versions) {
        let lowest = bs58::encode([&[version][..], &[0u8; 20]].concat()).with_check().into_string();
        let highest = bs58::encode([&[version][..], &[0xffu8; 20]].concat()).with_check().into_string();
        let (lo, hi) = (ALPHABET.find(&lowest[..1]).unwrap_or(0), ALPHABET.find(&highest[..1]).unwrap_or(ALPHABET.len() - 1));
        leads.extend(ALPHABET[lo.min(hi)..=hi.max(lo)].chars());
    }
    let base58 = format!("[{}][1-9A-HJ-NP-Za-km-z]{{24,34}}", leads.into_iter().collect::<String>());
    match p.hrp {
        Some(hrp) => format!("^({hrp}1[02-9ac-hj-np-z]{{8,87}}|{}1[02-9AC-HJ-NP-Z]{{8,87}}|{base58})$", hrp.to_uppercase()),
        None => format!("^{base58}$"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coin::*;
    use Network::*;

    fn ok(text: &str, coin: Coin, network: Network, kind: AddressKind) {
        match parse(text, coin, network) {
            Ok(a) => assert_eq!(a.kind, kind, "{text}"),
            Err(e) => panic!("{text} on {coin:?}/{network:?}: {e}"),
        }
    }

    fn bad(text: &str, coin: Coin, network: Network) -> AddressError {
        parse(text, coin, network).expect_err(text)
    }

    /// Well-known valid addresses (BIP-173/350 vectors, genesis and documented examples).
    #[test]
    fn accepts_valid_addresses_of_each_coin_and_network() {
        ok("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", Bitcoin, Mainnet, AddressKind::P2pkh);
        ok("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", Bitcoin, Mainnet, AddressKind::P2sh);
        ok("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Bitcoin, Mainnet, AddressKind::Segwit(0));
        ok("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", Bitcoin, Mainnet, AddressKind::Segwit(0));
        ok("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", Bitcoin, Mainnet, AddressKind::Segwit(1));
        ok("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", Bitcoin, Testnet, AddressKind::Segwit(0));
        ok("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", Bitcoin, Testnet, AddressKind::P2pkh);
        ok("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", Bitcoin, Testnet, AddressKind::P2sh);
        ok("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", Bitcoin, Regtest, AddressKind::P2pkh);
        ok("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", Litecoin, Regtest, AddressKind::P2pkh);
        // Other coins: the same key hash under each coin's version bytes and hrp.
        for (coin, network, version, kind) in [
            (Litecoin, Mainnet, 48, AddressKind::P2pkh),
            (Litecoin, Mainnet, 50, AddressKind::P2sh),
            (Litecoin, Mainnet, 5, AddressKind::P2sh),
            (Litecoin, Testnet, 58, AddressKind::P2sh),
            (Litecoin, Regtest, 58, AddressKind::P2sh),
            (Dogecoin, Mainnet, 30, AddressKind::P2pkh),
            (Dogecoin, Mainnet, 22, AddressKind::P2sh),
            (Dogecoin, Testnet, 113, AddressKind::P2pkh),
        ] {
            ok(&base58(version), coin, network, kind);
        }
        for (coin, network, hrp) in [(Litecoin, Mainnet, "ltc"), (Litecoin, Testnet, "tltc"), (Litecoin, Regtest, "rltc")] {
            ok(&segwit(hrp), coin, network, AddressKind::Segwit(0));
        }
        assert!(base58(48).starts_with('L') && base58(50).starts_with('M') && base58(30).starts_with('D'));
    }

    const KEY_HASH: [u8; 20] = [0x75, 0x1e, 0x76, 0xe8, 0x19, 0x91, 0x96, 0xd4, 0x54, 0x94, 0x1c, 0x45, 0xd1, 0xb3, 0xa3, 0x23, 0xf1, 0x43, 0x3b, 0xd6];

    #[test]
    fn address_regex_matches_what_parse_accepts() {
        let re = regex_lite::Regex::new(&address_regex(Coin::Litecoin, Network::Mainnet)).unwrap();
        for v in [48u8, 50, 5] {
            let a = base58(v);
            assert!(parse(&a, Coin::Litecoin, Network::Mainnet).is_ok() && re.is_match(&a), "{a}");
        }
        assert!(!re.is_match(&base58(0)), "a Bitcoin address");
        assert!(re.is_match("ltc1qg42tkwuuxefutzxezdkdel39gfstuap288mfea") && re.is_match("LTC1QG42TKWUUXEFUTZXEZDKDEL39GFSTUAP288MFEA"));
        assert!(!re.is_match("bc1qg42tkwuuxefutzxezdkdel39gfstuap2a7nvqn"));
        let doge = regex_lite::Regex::new(&address_regex(Coin::Dogecoin, Network::Mainnet)).unwrap();
        assert!(doge.is_match(&base58(30)) && !doge.is_match("ltc1qg42tkwuuxefutzxezdkdel39gfstuap288mfea"));
    }

    fn base58(version: u8) -> String {
        let mut payload = vec![version];
        payload.extend_from_slice(&KEY_HASH);
        bs58::encode(payload).with_check().into_string()
    }

    fn segwit(hrp: &str) -> String {
        bech32::segwit::encode(bech32::Hrp::parse(hrp).unwrap(), bech32::segwit::VERSION_0, &KEY_HASH).unwrap()
    }

    #[test]
    fn refuses_other_networks_coins_and_broken_checksums() {
        // A Bitcoin address is not a Litecoin address, and mainnet is not regtest.
        assert!(matches!(bad("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", Litecoin, Mainnet), AddressError::WrongVersion(0)));
        assert!(matches!(bad("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Litecoin, Mainnet), AddressError::WrongNetwork { .. }));
        assert!(matches!(bad(&segwit("ltc"), Litecoin, Regtest), AddressError::WrongNetwork { .. }));
        assert!(matches!(bad(&segwit("rltc"), Litecoin, Mainnet), AddressError::WrongNetwork { .. }));
        assert!(matches!(bad(&segwit("rltc"), Bitcoin, Regtest), AddressError::WrongNetwork { .. }));
        assert!(matches!(bad(&base58(48), Litecoin, Regtest), AddressError::WrongVersion(48)));
        assert!(matches!(bad(&base58(30), Bitcoin, Mainnet), AddressError::WrongVersion(30)));
        assert!(matches!(bad(&base58(0), Dogecoin, Mainnet), AddressError::WrongVersion(0)));
        assert!(matches!(bad("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Dogecoin, Mainnet), AddressError::WrongNetwork { .. }));
        // Base58 with a valid checksum but a 19-byte payload.
        let short = bs58::encode([&[48u8][..], &KEY_HASH[..19]].concat()).with_check().into_string();
        assert_eq!(bad(&short, Litecoin, Mainnet), AddressError::BadLength(19));
        // One character changed: the checksum catches it.
        assert!(matches!(bad("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb", Bitcoin, Mainnet), AddressError::Base58(_)));
        assert!(matches!(bad("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", Bitcoin, Mainnet), AddressError::Bech32(_)));
        // Mixed case, bech32 used where bech32m is required (BIP-350 invalid vector).
        assert!(matches!(bad("bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Bitcoin, Mainnet), AddressError::Bech32(_)));
        assert!(matches!(bad("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", Bitcoin, Mainnet), AddressError::Bech32(_)));
        assert_eq!(bad("", Bitcoin, Mainnet), AddressError::Empty);
        assert_eq!(bad(&"1".repeat(101), Bitcoin, Mainnet), AddressError::TooLong);
        assert!(matches!(bad("not an address", Bitcoin, Mainnet), AddressError::Base58(_)));
    }

    #[test]
    fn refuses_mweb() {
        let mweb = "ltcmweb1qq0ydlxy9vd6s9ccnlj3dtk6mp3ctjmxxl0jyvshx6s3tgjspwt2myqerc7ap8dckw6ccfhsjvu6hqr2w08w9t8k2fcxdq9jcvvs2w8f8sndp0jtz";
        assert_eq!(bad(mweb, Litecoin, Mainnet), AddressError::Mweb);
        assert_eq!(bad("tmweb1qq0ydlxy9vd6s9ccnlj3dtk6mp3ctjmxxl", Litecoin, Regtest), AddressError::Mweb);
    }
}
