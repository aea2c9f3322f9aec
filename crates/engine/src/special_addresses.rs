//! IANA's special-purpose address registries (IPv4: RFC 6890 and updates, IPv6:
//! likewise), the one table callback targets are judged by: an address whose most
//! specific entry is not globally reachable never receives a callback. "Globally
//! reachable: N/A" entries (deprecated 6to4 relay anycast, Teredo) count as not
//! reachable.

use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;

/// One registry entry.
#[derive(Clone, Copy, Debug)]
pub struct Special {
    pub block: &'static str,
    /// The registry's name for it.
    pub name: &'static str,
    /// What a refusal calls it ("a {kind} address").
    pub kind: &'static str,
    /// The registry's "Globally Reachable" (N/A taken as false).
    pub global: bool,
}

const fn entry(block: &'static str, name: &'static str, kind: &'static str, global: bool) -> Special {
    Special { block, name, kind, global }
}

/// IANA IPv4 Special-Purpose Address Registry.
pub const IPV4: &[Special] = &[
    entry("0.0.0.0/8", "\"This network\"", "unspecified", false),
    entry("0.0.0.0/32", "\"This host on this network\"", "unspecified", false),
    entry("10.0.0.0/8", "Private-Use", "private", false),
    entry("100.64.0.0/10", "Shared Address Space", "shared (carrier-grade NAT)", false),
    entry("127.0.0.0/8", "Loopback", "loopback", false),
    entry("169.254.0.0/16", "Link Local", "link-local", false),
    entry("172.16.0.0/12", "Private-Use", "private", false),
    entry("192.0.0.0/24", "IETF Protocol Assignments", "reserved", false),
    entry("192.0.0.0/29", "IPv4 Service Continuity Prefix", "reserved", false),
    entry("192.0.0.8/32", "IPv4 dummy address", "reserved", false),
    entry("192.0.0.9/32", "Port Control Protocol Anycast", "anycast", true),
    entry("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "anycast", true),
    entry("192.0.0.170/32", "NAT64/DNS64 Discovery", "reserved", false),
    entry("192.0.0.171/32", "NAT64/DNS64 Discovery", "reserved", false),
    entry("192.0.2.0/24", "Documentation (TEST-NET-1)", "documentation", false),
    entry("192.31.196.0/24", "AS112-v4", "anycast", true),
    entry("192.52.193.0/24", "AMT", "anycast", true),
    entry("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "reserved", false),
    entry("192.168.0.0/16", "Private-Use", "private", false),
    entry("192.175.48.0/24", "Direct Delegation AS112 Service", "anycast", true),
    entry("198.18.0.0/15", "Benchmarking", "benchmarking", false),
    entry("198.51.100.0/24", "Documentation (TEST-NET-2)", "documentation", false),
    entry("203.0.113.0/24", "Documentation (TEST-NET-3)", "documentation", false),
    entry("240.0.0.0/4", "Reserved", "reserved", false),
    entry("255.255.255.255/32", "Limited Broadcast", "reserved", false),
    // Not in the special-purpose registry but never a unicast host: multicast.
    entry("224.0.0.0/4", "Multicast", "multicast", false),
];

/// IANA IPv6 Special-Purpose Address Registry.
pub const IPV6: &[Special] = &[
    entry("::1/128", "Loopback Address", "loopback", false),
    entry("::/128", "Unspecified Address", "unspecified", false),
    entry("::ffff:0:0/96", "IPv4-mapped Address", "IPv4-mapped", false),
    entry("64:ff9b::/96", "IPv4-IPv6 Translat.", "translated", true),
    entry("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local use)", "private", false),
    entry("100::/64", "Discard-Only Address Block", "reserved", false),
    entry("100:0:0:1::/64", "Dummy IPv6 Prefix", "reserved", false),
    entry("2001::/23", "IETF Protocol Assignments", "reserved", false),
    entry("2001::/32", "TEREDO", "Teredo", false),
    entry("2001:1::1/128", "Port Control Protocol Anycast", "anycast", true),
    entry("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "anycast", true),
    entry("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "anycast", true),
    entry("2001:2::/48", "Benchmarking", "benchmarking", false),
    entry("2001:3::/32", "AMT", "anycast", true),
    entry("2001:4:112::/48", "AS112-v6", "anycast", true),
    entry("2001:10::/28", "Deprecated (previously ORCHID)", "reserved", false),
    entry("2001:20::/28", "ORCHIDv2", "overlay", true),
    entry("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "overlay", true),
    entry("2001:db8::/32", "Documentation", "documentation", false),
    entry("2002::/16", "6to4", "6to4", true),
    entry("2620:4f:8000::/48", "Direct Delegation AS112 Service", "anycast", true),
    entry("3fff::/20", "Documentation", "documentation", false),
    entry("5f00::/16", "Segment Routing (SRv6) SIDs", "reserved", false),
    entry("fc00::/7", "Unique-Local", "private", false),
    entry("fe80::/10", "Link-Local Unicast", "link-local", false),
    // Outside the registry but never a global unicast host.
    entry("fec0::/10", "Site-Local (deprecated)", "private", false),
    entry("ff00::/8", "Multicast", "multicast", false),
];

fn table() -> &'static [(IpNet, Special)] {
    static TABLE: OnceLock<Vec<(IpNet, Special)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        IPV4.iter().chain(IPV6).map(|s| (s.block.parse().expect("a registry block is a CIDR block"), *s)).collect()
    })
}

/// The most specific registry entry holding `ip`, if any.
pub fn special(ip: IpAddr) -> Option<Special> {
    table().iter().filter(|(net, _)| net.contains(&ip)).max_by_key(|(net, _)| net.prefix_len()).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_parses_and_is_found_by_its_addresses() {
        for s in IPV4.iter().chain(IPV6) {
            let net: IpNet = s.block.parse().unwrap_or_else(|_| panic!("{}", s.block));
            for ip in [net.network(), net.broadcast()] {
                let found = special(ip).unwrap();
                // Its own entry, or a more specific one inside it.
                let inner: IpNet = found.block.parse().unwrap();
                assert!(net.contains(&inner) && inner.prefix_len() >= net.prefix_len(), "{ip} in {} found {}", s.block, found.block);
            }
        }
        assert!(special("8.8.8.8".parse().unwrap()).is_none());
        assert!(special("2606:4700::1111".parse().unwrap()).is_none());
        assert_eq!(special("192.0.0.9".parse().unwrap()).unwrap().name, "Port Control Protocol Anycast");
        assert_eq!(special("192.0.0.11".parse().unwrap()).unwrap().name, "IETF Protocol Assignments");
    }
}
