//! One entry of MetalLB's `spec.addresses`, written the way an `AddressPool` takes it.
//!
//! The entry is parsed by the IPAM's own parser, with MetalLB's leniencies on top: a
//! CIDR with host bits set means its whole network to MetalLB (an `AddressPool` wants
//! the network address), and IPv6 entries are left out until xdplb serves IPv6.

use lb_agent::ipam::addresses::{AddressError, AddressProblem, AddressRange};

/// A converted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The entry for `AddressPool.spec.addresses`.
    V4(String),
    /// Left out: xdplb does not serve IPv6 yet.
    V6,
}

/// Converts `entry`; the error names what MetalLB's entry has wrong.
pub fn convert(entry: &str) -> Result<Entry, AddressError> {
    let entry = entry.trim();
    match entry.parse::<AddressRange>() {
        Ok(range) if entry.contains('-') => Ok(Entry::V4(range.to_string())),
        Ok(_) => Ok(Entry::V4(entry.to_owned())),
        // The network must pass the checks the entry did not get to (unicast only).
        Err(AddressError {
            problem: AddressProblem::HostBits { network, prefix },
            ..
        }) => convert(&format!("{network}/{prefix}")).map_err(|error| AddressError {
            entry: entry.to_owned(),
            ..error
        }),
        Err(AddressError {
            problem: AddressProblem::Ipv6Unsupported,
            ..
        }) => Ok(Entry::V6),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_spellings_become_address_pool_entries() {
        let v4 = |text: &str| Ok(Entry::V4(text.to_owned()));
        assert_eq!(
            convert("192.168.7.230-192.168.7.235"),
            v4("192.168.7.230-192.168.7.235")
        );
        assert_eq!(
            convert(" 192.168.8.240 - 192.168.8.250 "),
            v4("192.168.8.240-192.168.8.250")
        );
        assert_eq!(convert("172.16.200.53/32"), v4("172.16.200.53/32"));
        // MetalLB reads the whole network whatever the host bits say.
        assert_eq!(convert("192.168.8.245/29"), v4("192.168.8.240/29"));
        assert_eq!(convert("fd00::/120"), Ok(Entry::V6));
        assert_eq!(convert("fd00::10-fd00::20"), Ok(Entry::V6));
    }

    #[test]
    fn entries_metallb_refuses_too_are_errors() {
        for (entry, why) in [
            ("192.168.8.240", "not an IPv4 CIDR"),
            ("192.168.8.300/32", "not an IPv4 CIDR"),
            ("192.168.8.0/33", "not an IPv4 CIDR"),
            ("192.168.8.250-192.168.8.240", "reversed"),
            ("lan", "not an IPv4 CIDR"),
            ("10.1.2.3/0", "expected a unicast IPv4 address"),
            ("127.0.0.1/8", "expected a unicast IPv4 address"),
            ("224.0.0.5/4", "expected a unicast IPv4 address"),
        ] {
            let error = convert(entry).expect_err(entry).to_string();
            assert!(
                error.contains(why) && error.contains(entry),
                "{entry}: {error}"
            );
        }
    }
}
