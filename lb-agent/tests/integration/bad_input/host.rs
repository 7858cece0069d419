//! What the configuration needs of the host, as `--check` and a start both check it
//! (`config::host`): the LAN and announce interfaces, the pin directory, the API socket's
//! path and the map capacities. Every case runs against a stand-in host whose links the
//! case chooses; each problem must be placed at its key's line.

use std::{net::Ipv4Addr, process::Command};

use lb_agent::config::{self, host};

use super::table::{Checker, Expect};
use crate::support::host::{ETHERNET_UP, FakeHost};

const EXAMPLE: &str = include_str!("../../../examples/standalone.yaml");
const END: &str = "      - { address: 10.42.1.9, node: node2 }\n";

struct HostCase {
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    /// The links besides `eth0`.
    links: fn(FakeHost) -> FakeHost,
    /// Addresses of the host's links besides node1's on `eth0`.
    addresses: &'static [(&'static str, [u8; 4])],
    expect: Expect,
}

fn no_links(host: FakeHost) -> FakeHost {
    host
}

const fn bad(
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    links: fn(FakeHost) -> FakeHost,
    parts: &'static [&'static str],
) -> HostCase {
    HostCase {
        name,
        edits,
        links,
        addresses: &[],
        expect: Expect::Rejected(parts),
    }
}

fn cases() -> Vec<HostCase> {
    let interface = |to: &'static str| -> &'static [(&'static str, &'static str)] {
        match to {
            "lo" => &[("interface: eth0", "interface: lo")],
            "eth1" => &[("interface: eth0", "interface: eth1")],
            "tun0" => &[("interface: eth0", "interface: tun0")],
            "cali1" => &[("interface: eth0", "interface: cali1")],
            _ => &[("interface: eth0", "interface: eth9")],
        }
    };
    vec![
        HostCase {
            name: "the example on a host with eth0 (valid control)",
            edits: &[],
            links: no_links,
            addresses: &[],
            expect: Expect::Accepted,
        },
        HostCase {
            name: "a VIP on a dummy link of this host, as kube-proxy's IPVS mode puts it (accepted, warned)",
            edits: &[],
            links: no_links,
            addresses: &[("kube-ipvs0", [172, 16, 200, 20])],
            expect: Expect::Accepted,
        },
        HostCase {
            name: "a VIP that is an address of the LAN link",
            edits: &[],
            links: no_links,
            addresses: &[("eth0", [172, 16, 200, 20])],
            expect: Expect::Rejected(&[
                "line 8, column 10: services[0].vip: 172.16.200.20 is an address of this host's eth0",
                "the kernel would answer ARP for it as well",
            ]),
        },
        HostCase {
            name: "an announce interface that is down (accepted: the agent waits for it)",
            edits: &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\narp: { interface: eth1 }\n",
            )],
            links: |host| host.link("eth1", libc::IFF_BROADCAST as u32, libc::ARPHRD_ETHER),
            addresses: &[],
            expect: Expect::Accepted,
        },
        bad(
            "an interface that does not exist",
            interface("eth9"),
            no_links,
            &["line 2, column 12: interface: eth9 does not exist"],
        ),
        bad(
            "an interface that does not exist, with the MTU set",
            &[("interface: eth0", "interface: eth9\nmtu: 1500")],
            no_links,
            &["line 2, column 12: interface: eth9 does not exist"],
        ),
        bad(
            "the loopback",
            interface("lo"),
            |host| host.link("lo", (libc::IFF_LOOPBACK | libc::IFF_UP) as u32, 772),
            &["line 2, column 12: interface: lo is the loopback"],
        ),
        bad(
            "a NOARP link",
            interface("eth1"),
            |host| {
                host.link(
                    "eth1",
                    ETHERNET_UP | libc::IFF_NOARP as u32,
                    libc::ARPHRD_ETHER,
                )
            },
            &["interface: eth1 has NOARP set"],
        ),
        bad(
            "a bridge member",
            interface("eth1"),
            |host| host.port("eth1", "br0", "brport"),
            &["interface: eth1 member of bridge br0"],
        ),
        bad(
            "a bond member",
            interface("eth1"),
            |host| host.port("eth1", "bond0", "bonding_slave"),
            &["interface: eth1 member of bond bond0"],
        ),
        bad(
            "a link that is not Ethernet",
            interface("tun0"),
            |host| host.link("tun0", ETHERNET_UP, 65534),
            &["interface: tun0 is not an Ethernet link"],
        ),
        bad(
            "a CNI link",
            interface("cali1"),
            |host| host.link("cali1", ETHERNET_UP, libc::ARPHRD_ETHER),
            &["interface: cali1 looks like a CNI or overlay link"],
        ),
        bad(
            "an announce interface that does not exist",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\narp: { interface: eth9 }\n",
            )],
            no_links,
            &["line 25, column 19: arp.interface: eth9 does not exist"],
        ),
        bad(
            "no interface and no default route",
            &[("interface: eth0\n", "")],
            no_links,
            &["interface: no IPv4 default route"],
        ),
        bad(
            "a pin directory off any BPF filesystem",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\npinDir: /tmp/xdplb-pins\n",
            )],
            no_links,
            &["line 25, column 9: pinDir: /tmp/xdplb-pins is not on a BPF filesystem"],
        ),
        bad(
            "a pin directory below a file",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\npinDir: /proc/self/status/pins\n",
            )],
            no_links,
            &["pinDir: ", "/proc/self/status is not a directory"],
        ),
        bad(
            "an API socket path that is a regular file",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\napi: { socket: /proc/self/status }\n",
            )],
            no_links,
            &["line 25, column 16: api.socket: /proc/self/status exists and is not a socket"],
        ),
        bad(
            "an API socket below a file",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\napi: { socket: /proc/self/status/agent.sock }\n",
            )],
            no_links,
            &["api.socket: ", "/proc/self/status is not a directory"],
        ),
        bad(
            "more services than capacities.services",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ncapacities: { services: 1 }\n",
            )],
            no_links,
            &["capacities.services: too many services: 2 needed, capacity is 1"],
        ),
        bad(
            "more VIPs than capacities.vips",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ncapacities: { vips: 1 }\n",
            )],
            no_links,
            &["capacities.vips: too many VIPs: 2 needed, capacity is 1"],
        ),
        bad(
            "more ports than capacities.servicePorts",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ncapacities: { servicePorts: 3 }\n",
            )],
            no_links,
            &["capacities.servicePorts: too many service ports: 4 needed, capacity is 3"],
        ),
        bad(
            "more backends than capacities.backends",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ncapacities: { backends: 1 }\n",
            )],
            no_links,
            &["capacities.backends: too many backends"],
        ),
    ]
}

fn edited(edits: &[(&str, &str)]) -> String {
    edits.iter().fold(EXAMPLE.to_owned(), |text, (from, to)| {
        text.replacen(from, to, 1)
    })
}

pub fn run() {
    let mut checker = Checker::new("host-checks");
    for case in cases() {
        let fake = (case.links)(FakeHost::new());
        let path = fake.dir().join("xdplb.yaml");
        std::fs::write(&path, edited(case.edits)).expect("write");
        let mut addresses = vec![("eth0".to_owned(), Ipv4Addr::new(10, 0, 0, 11))];
        addresses.extend(
            case.addresses
                .iter()
                .map(|(link, octets)| ((*link).to_owned(), Ipv4Addr::from(*octets))),
        );
        let host = fake.host_with(addresses);
        let outcome = config::load(&path)
            .map_err(|error| error.to_string())
            .and_then(|standalone| {
                host::check_standalone(&path, &standalone, &host)
                    .map(|warnings| {
                        if !case.addresses.is_empty() && warnings.is_empty() {
                            checker.fail(case.name, "no warning".to_owned());
                        }
                    })
                    .map_err(|error| error.to_string())
            });
        checker.verdict(case.name, case.expect, outcome);
    }
    checker.finish();
}

/// `--check` and a start refuse a file for the same reasons, in the same words (on
/// this machine's links, whatever they are).
pub fn run_binary() {
    for case in cases()
        .iter()
        .filter(|case| case.name.contains("capacities"))
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("xdplb.yaml");
        std::fs::write(&path, edited(case.edits)).expect("write");
        let run = |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
                .args(args)
                .arg("--config")
                .arg(&path)
                .output()
                .expect("run lb-agent");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        let check = run(&["--check"]);
        let start = run(&[]);
        assert_eq!(check.0, Some(2), "{}: {}", case.name, check.1);
        assert_eq!(check, start, "{}", case.name);
        let Expect::Rejected(parts) = case.expect else {
            continue;
        };
        assert!(
            parts.iter().all(|part| check.1.contains(part)),
            "{}: {}",
            case.name,
            check.1
        );
    }
}

/// Kubernetes settings the host cannot run (each key's problem as above): `kubernetes
/// --check` and a start refuse them alike, exit status 2, before any API server is
/// asked (a start that got further would stop at the missing kubeconfig).
pub fn run_kubernetes_binary() {
    let settings = [
        (
            "interface: nosuchlink9\n",
            "line 1, column 12: interface: nosuchlink9 does not exist",
        ),
        ("pinDir: /proc/xdplb\n", "line 1, column 9: pinDir: "),
        (
            "api: { socket: /etc/hostname/agent.sock }\n",
            "api.socket: ",
        ),
        (
            "capacities: { services: 1 }\ninterface: nosuchlink9\n",
            "interface: nosuchlink9 does not exist",
        ),
    ];
    for (text, part) in settings {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.yaml");
        std::fs::write(&path, text).expect("write");
        let run = |check: bool| {
            let mut command = super::kubernetes_agent(&path);
            command
                .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
                .env_remove("KUBERNETES_SERVICE_HOST");
            if check {
                command.arg("--check");
            }
            let output = command.output().expect("run lb-agent");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        let check = run(true);
        assert_eq!(check.0, Some(2), "{text}: {}", check.1);
        assert_eq!(check, run(false), "{text}");
        assert!(check.1.contains(part), "{text}: {}", check.1);
    }
}

pub fn counts() -> (usize, usize) {
    super::table::count(cases().iter().map(|case| &case.expect))
}
