//! Which IPv4 addresses may be a VIP (or a node's or an endpoint's address): unicast
//! ones. One rule, with one wording, for the standalone file, the Kubernetes IPAM (pool
//! entries and requested addresses) and the AddressPool CRD's admission rule.

use std::net::Ipv4Addr;

/// A block of addresses that are not unicast, and what they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// Completes "`address` is ...".
    pub what: &'static str,
}

/// Every non-unicast block, in address order: "this network", loopback, multicast and
/// the reserved class E with the broadcast address.
pub const NOT_UNICAST: [Reserved; 4] = [
    Reserved {
        first: Ipv4Addr::new(0, 0, 0, 0),
        last: Ipv4Addr::new(0, 255, 255, 255),
        what: "in 0.0.0.0/8",
    },
    Reserved {
        first: Ipv4Addr::new(127, 0, 0, 0),
        last: Ipv4Addr::new(127, 255, 255, 255),
        what: "a loopback address",
    },
    Reserved {
        first: Ipv4Addr::new(224, 0, 0, 0),
        last: Ipv4Addr::new(239, 255, 255, 255),
        what: "a multicast address",
    },
    Reserved {
        first: Ipv4Addr::new(240, 0, 0, 0),
        last: Ipv4Addr::BROADCAST,
        what: "reserved or broadcast",
    },
];

/// The part of [`NotUnicast`]'s message after the block's `what`.
pub const EXPECTED_UNICAST: &str = "expected a unicast IPv4 address";

/// An address that may not be a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{address}` is {what}; {expected}", expected = EXPECTED_UNICAST)]
pub struct NotUnicast {
    pub address: Ipv4Addr,
    pub what: &'static str,
}

/// `address`, if it is unicast.
pub fn unicast(address: Ipv4Addr) -> Result<Ipv4Addr, NotUnicast> {
    match first_not_unicast(address, address) {
        Some(problem) => Err(problem),
        None => Ok(address),
    }
}

/// The lowest address of `first..=last` that is not unicast.
pub fn first_not_unicast(first: Ipv4Addr, last: Ipv4Addr) -> Option<NotUnicast> {
    NOT_UNICAST
        .iter()
        .find(|block| block.first <= last && first <= block.last)
        .map(|block| NotUnicast {
            address: first.max(block.first),
            what: block.what,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("an address")
    }

    #[test]
    fn only_unicast_addresses_pass() {
        for good in [
            "1.0.0.0",
            "10.0.0.1",
            "126.255.255.255",
            "128.0.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(unicast(ip(good)), Ok(ip(good)));
        }
        for (bad, what) in [
            ("0.0.0.0", "in 0.0.0.0/8"),
            ("0.1.2.3", "in 0.0.0.0/8"),
            ("127.0.0.1", "a loopback address"),
            ("224.0.0.1", "a multicast address"),
            ("239.255.255.250", "a multicast address"),
            ("240.0.0.1", "reserved or broadcast"),
            ("255.255.255.255", "reserved or broadcast"),
        ] {
            let problem = unicast(ip(bad)).expect_err(bad);
            assert_eq!(
                problem.to_string(),
                format!("`{bad}` is {what}; {EXPECTED_UNICAST}")
            );
        }
    }

    #[test]
    fn a_range_reports_its_lowest_address_that_is_not_unicast() {
        let first = |a, b| first_not_unicast(ip(a), ip(b)).map(|problem| problem.address);
        assert_eq!(first("0.0.0.0", "255.255.255.255"), Some(ip("0.0.0.0")));
        assert_eq!(first("96.0.0.0", "127.255.255.255"), Some(ip("127.0.0.0")));
        assert_eq!(first("127.0.0.4", "127.0.0.7"), Some(ip("127.0.0.4")));
        assert_eq!(first("192.168.0.0", "239.0.0.0"), Some(ip("224.0.0.0")));
        assert_eq!(first("1.0.0.0", "126.255.255.255"), None);
    }
}
