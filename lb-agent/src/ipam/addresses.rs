//! The addresses of a pool: IPv4 CIDRs and `a-b` ranges, merged into one ordered set.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use crate::model::unicast::{NotUnicast, first_not_unicast};

/// An inclusive range of IPv4 addresses, `first <= last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    first: u32,
    last: u32,
}

impl AddressRange {
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first)
    }

    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.last)
    }

    /// How many addresses the range spans, `.0` and `.255` included (a range is never
    /// empty).
    pub fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

impl FromStr for AddressRange {
    type Err = AddressError;

    /// `192.168.8.240/29` or `192.168.8.240-192.168.8.250` (spaces around the dash
    /// allowed, as MetalLB does), of unicast addresses only.
    fn from_str(entry: &str) -> Result<Self, AddressError> {
        let problem = |problem| AddressError {
            entry: entry.to_owned(),
            problem,
        };
        let range = parse_range(entry).map_err(problem)?;
        match first_not_unicast(range.first(), range.last()) {
            Some(not_unicast) => Err(problem(AddressProblem::NotUnicast(not_unicast))),
            None => Ok(range),
        }
    }
}

/// `entry` as a range of any addresses.
fn parse_range(entry: &str) -> Result<AddressRange, AddressProblem> {
    if entry.contains(':') {
        return Err(AddressProblem::Ipv6Unsupported);
    }
    if let Some((first, last)) = entry.split_once('-') {
        let first = parse_ip(first.trim())?;
        let last = parse_ip(last.trim())?;
        if first > last {
            return Err(AddressProblem::Reversed { first, last });
        }
        return Ok(AddressRange {
            first: first.into(),
            last: last.into(),
        });
    }
    let Some((network, prefix)) = entry.split_once('/') else {
        return Err(AddressProblem::Malformed);
    };
    let network = parse_ip(network)?;
    let prefix: u8 = match prefix.parse() {
        Ok(prefix) if prefix <= 32 => prefix,
        _ => return Err(AddressProblem::Malformed),
    };
    let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    let first = u32::from(network);
    if first & host_mask != 0 {
        return Err(AddressProblem::HostBits {
            network: Ipv4Addr::from(first & !host_mask),
            prefix,
        });
    }
    Ok(AddressRange {
        first,
        last: first | host_mask,
    })
}

fn parse_ip(text: &str) -> Result<Ipv4Addr, AddressProblem> {
    text.parse().map_err(|_| AddressProblem::Malformed)
}

/// One entry of `spec.addresses` that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}`: {problem}")]
pub struct AddressError {
    pub entry: String,
    pub problem: AddressProblem,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    #[error("IPv6 is not supported yet")]
    Ipv6Unsupported,
    #[error("the range is reversed: {first} is above {last}")]
    Reversed { first: Ipv4Addr, last: Ipv4Addr },
    #[error("host bits are set: the network is {network}/{prefix}")]
    HostBits { network: Ipv4Addr, prefix: u8 },
    #[error(transparent)]
    NotUnicast(NotUnicast),
    #[error(
        "not an IPv4 CIDR (192.168.8.240/29, or 192.168.8.53/32 for one address) or range (192.168.8.240-192.168.8.250)"
    )]
    Malformed,
}

/// Every unusable entry of a pool's `spec.addresses`, in their order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidAddresses(pub Vec<AddressError>);

impl fmt::Display for InvalidAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no addresses");
        }
        let entries: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&entries.join("; "))
    }
}

/// A pool's usable addresses: its entries merged into disjoint ascending ranges, less
/// `.0` and `.255` when `avoidBuggyIPs` is set. Entries may overlap each other (the
/// union counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSet {
    ranges: Vec<AddressRange>,
    avoid_buggy_ips: bool,
}

impl AddressSet {
    /// Parses every entry and reports all the unusable ones, or that there are none.
    pub fn parse<S: AsRef<str>>(
        entries: &[S],
        avoid_buggy_ips: bool,
    ) -> Result<Self, InvalidAddresses> {
        let (ranges, errors): (Vec<_>, Vec<_>) = entries
            .iter()
            .map(|entry| entry.as_ref().parse::<AddressRange>())
            .partition(Result::is_ok);
        if !errors.is_empty() || ranges.is_empty() {
            return Err(InvalidAddresses(
                errors.into_iter().filter_map(Result::err).collect(),
            ));
        }
        Ok(Self::from_ranges(
            ranges.into_iter().filter_map(Result::ok),
            avoid_buggy_ips,
        ))
    }

    fn from_ranges(ranges: impl IntoIterator<Item = AddressRange>, avoid_buggy_ips: bool) -> Self {
        let mut sorted: Vec<AddressRange> = ranges.into_iter().collect();
        sorted.sort();
        let mut merged: Vec<AddressRange> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                Some(last) if u64::from(range.first) <= u64::from(last.last) + 1 => {
                    last.last = last.last.max(range.last);
                }
                _ => merged.push(range),
            }
        }
        Self {
            ranges: merged,
            avoid_buggy_ips,
        }
    }

    #[cfg(test)]
    /// The merged ranges, `.0` and `.255` included.
    pub fn ranges(&self) -> &[AddressRange] {
        &self.ranges
    }

    /// Whether `ip` may be assigned from this set.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.usable(ip) && self.ranges.iter().any(|range| range.contains(ip))
    }

    /// How many addresses may be assigned.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|range| range.size() - self.buggy_in(range))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The assignable addresses in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|range| (range.first..=range.last).map(Ipv4Addr::from))
            .filter(|&ip| self.usable(ip))
    }

    /// The lowest address both sets list, `avoidBuggyIPs` aside: overlapping pools are a
    /// configuration mistake even where only a `.0` is shared.
    pub fn first_overlap(&self, other: &AddressSet) -> Option<Ipv4Addr> {
        self.ranges
            .iter()
            .flat_map(|a| {
                other.ranges.iter().filter_map(move |b| {
                    let first = a.first.max(b.first);
                    (first <= a.last.min(b.last)).then_some(first)
                })
            })
            .min()
            .map(Ipv4Addr::from)
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        !(self.avoid_buggy_ips && confuses_buggy_firmware(ip))
    }

    fn buggy_in(&self, range: &AddressRange) -> u64 {
        if !self.avoid_buggy_ips {
            return 0;
        }
        [0, 255]
            .into_iter()
            .map(|octet| count_ending_in(range, octet))
            .sum()
    }
}

/// Addresses ending in `.0` or `.255` look like broadcasts to the "smurf" protection of
/// some consumer routers, which then drop their traffic.
fn confuses_buggy_firmware(ip: Ipv4Addr) -> bool {
    matches!(ip.octets()[3], 0 | 255)
}

/// How many addresses of `range` have `octet` as their last byte.
fn count_ending_in(range: &AddressRange, octet: u8) -> u64 {
    // Addresses x <= n with x % 256 == octet, for n >= -1.
    let up_to = |n: i64| (n - i64::from(octet)).div_euclid(256) + 1;
    let count = up_to(i64::from(range.last)) - up_to(i64::from(range.first) - 1);
    u64::try_from(count).unwrap_or(0)
}

#[cfg(test)]
mod tests;
