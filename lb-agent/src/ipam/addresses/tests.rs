use super::*;

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("an address")
}

fn set(entries: &[&str], avoid_buggy_ips: bool) -> AddressSet {
    AddressSet::parse(entries, avoid_buggy_ips).expect("valid entries")
}

#[test]
fn entries_parse_to_inclusive_ranges() {
    for (entry, first, last) in [
        (
            "192.168.8.240-192.168.8.250",
            "192.168.8.240",
            "192.168.8.250",
        ),
        (
            "192.168.8.240 - 192.168.8.250",
            "192.168.8.240",
            "192.168.8.250",
        ),
        (
            "192.168.7.230-192.168.7.230",
            "192.168.7.230",
            "192.168.7.230",
        ),
        ("192.168.8.240/29", "192.168.8.240", "192.168.8.247"),
        ("172.16.200.53/32", "172.16.200.53", "172.16.200.53"),
        ("172.16.200.0/24", "172.16.200.0", "172.16.200.255"),
        ("128.0.0.0/2", "128.0.0.0", "191.255.255.255"),
    ] {
        let range: AddressRange = entry.parse().expect(entry);
        assert_eq!(
            (range.first(), range.last()),
            (ip(first), ip(last)),
            "{entry}"
        );
    }
    let widest: AddressRange = "128.0.0.0/2".parse().expect("valid");
    assert_eq!(widest.size(), 1 << 30);
}

#[test]
fn bad_entries_are_named_with_their_problem() {
    for (entry, problem) in [
        (
            "192.168.8.250-192.168.8.240",
            AddressProblem::Reversed {
                first: ip("192.168.8.250"),
                last: ip("192.168.8.240"),
            },
        ),
        (
            "192.168.8.241/29",
            AddressProblem::HostBits {
                network: ip("192.168.8.240"),
                prefix: 29,
            },
        ),
        (
            "0.0.0.0/0",
            AddressProblem::NotUnicast(NotUnicast {
                address: ip("0.0.0.0"),
                what: "in 0.0.0.0/8",
            }),
        ),
        (
            "127.0.0.0/30",
            AddressProblem::NotUnicast(NotUnicast {
                address: ip("127.0.0.0"),
                what: "a loopback address",
            }),
        ),
        (
            "192.168.8.0 - 224.0.0.1",
            AddressProblem::NotUnicast(NotUnicast {
                address: ip("224.0.0.0"),
                what: "a multicast address",
            }),
        ),
        ("fd00::/64", AddressProblem::Ipv6Unsupported),
        ("fd00::1-fd00::9", AddressProblem::Ipv6Unsupported),
        ("192.168.8.240", AddressProblem::Malformed),
        ("192.168.8.0/33", AddressProblem::Malformed),
        ("192.168.8.0/", AddressProblem::Malformed),
        ("192.168.8.256-192.168.9.1", AddressProblem::Malformed),
        ("lan", AddressProblem::Malformed),
        ("", AddressProblem::Malformed),
    ] {
        assert_eq!(
            entry.parse::<AddressRange>(),
            Err(AddressError {
                entry: entry.to_owned(),
                problem
            }),
            "{entry}"
        );
    }
}

#[test]
fn a_set_reports_every_bad_entry_or_none_at_all() {
    let error = AddressSet::parse(&["192.168.8.240/29", "fd00::/64", "10.0.0.1/8"], false)
        .expect_err("two bad entries");
    assert_eq!(error.0.len(), 2);
    assert_eq!(
        error.to_string(),
        "`fd00::/64`: IPv6 is not supported yet; `10.0.0.1/8`: host bits are set: the network is 10.0.0.0/8"
    );
    let empty: [&str; 0] = [];
    assert_eq!(
        AddressSet::parse(&empty, false)
            .expect_err("empty")
            .to_string(),
        "no addresses"
    );
}

#[test]
fn entries_merge_into_one_ascending_set() {
    let addresses = set(
        &[
            "172.16.200.53/32",
            "172.16.200.0/28",
            "172.16.200.8-172.16.200.20",
            "172.16.200.21/32",
        ],
        false,
    );
    let ranges: Vec<String> = addresses.ranges().iter().map(ToString::to_string).collect();
    assert_eq!(
        ranges,
        ["172.16.200.0-172.16.200.21", "172.16.200.53-172.16.200.53"]
    );
    assert_eq!(addresses.len(), 23);
    assert!(addresses.contains(ip("172.16.200.21")));
    assert!(!addresses.contains(ip("172.16.200.22")));
    let listed: Vec<Ipv4Addr> = addresses.iter().collect();
    assert_eq!(listed.len(), 23);
    assert_eq!(listed.first(), Some(&ip("172.16.200.0")));
    assert_eq!(listed.last(), Some(&ip("172.16.200.53")));
    assert!(listed.windows(2).all(|pair| pair[0] < pair[1]));
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let lan = set(&["172.16.200.0/24"], true);
    assert_eq!(lan.len(), 254);
    assert!(!lan.contains(ip("172.16.200.0")));
    assert!(!lan.contains(ip("172.16.200.255")));
    assert!(lan.contains(ip("172.16.200.1")));
    assert_eq!(lan.iter().next(), Some(ip("172.16.200.1")));
    assert_eq!(lan.iter().count(), 254);

    // Across a /24 boundary: .255 and .0 of the next block.
    let straddling = set(&["192.168.8.250-192.168.9.5"], true);
    assert_eq!(straddling.len(), 10);
    assert_eq!(straddling.iter().count(), 10);
    assert_eq!(set(&["10.0.0.0/16"], true).len(), 65536 - 2 * 256);
    assert_eq!(set(&["128.0.0.0/2"], true).len(), (1 << 30) - 2 * (1 << 22));
    // Without the flag nothing is skipped.
    assert_eq!(set(&["172.16.200.0/24"], false).len(), 256);
}

#[test]
fn overlap_finds_the_lowest_shared_address() {
    let control = set(&["192.168.64.100-192.168.64.110"], false);
    let app = set(&["192.168.64.120-192.168.64.140"], false);
    let sloppy = set(&["192.168.64.96/27"], false);
    assert_eq!(control.first_overlap(&app), None);
    assert_eq!(control.first_overlap(&sloppy), Some(ip("192.168.64.100")));
    assert_eq!(sloppy.first_overlap(&app), Some(ip("192.168.64.120")));
    let buggy = set(&["172.16.200.0/24"], true);
    let network_only = set(&["172.16.200.0/32"], false);
    assert_eq!(
        buggy.first_overlap(&network_only),
        Some(ip("172.16.200.0")),
        "listed twice even if avoidBuggyIPs keeps it unused"
    );
}
