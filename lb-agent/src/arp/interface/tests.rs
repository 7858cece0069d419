use std::os::unix::fs::symlink;

use tempfile::TempDir;

use super::*;

const UP: u32 = libc::IFF_UP as u32 | libc::IFF_BROADCAST as u32 | libc::IFF_MULTICAST as u32;
const ROUTE_HEADER: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

/// A fake `/sys/class/net` and route table, laid out as the kernel lays them out.
struct FakeSys {
    dir: TempDir,
}

impl FakeSys {
    fn new() -> Self {
        let fake = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(fake.class_net()).unwrap();
        fake.routes(&[]);
        fake
    }

    fn class_net(&self) -> PathBuf {
        self.dir.path().join("sys/class/net")
    }

    fn paths(&self) -> SysPaths {
        SysPaths {
            class_net: self.class_net(),
            route: self.dir.path().join("route"),
        }
    }

    /// A link with ifindex `index` and MAC 02:00:00:00:00:<index>.
    fn link(&self, name: &str, index: u8, flags: u32, kind: u16, operstate: &str) -> &Self {
        let dir = self.class_net().join(name);
        fs::create_dir_all(&dir).unwrap();
        for (file, content) in [
            ("flags", format!("{flags:#06x}\n")),
            ("type", format!("{kind}\n")),
            ("operstate", format!("{operstate}\n")),
            ("ifindex", format!("{index}\n")),
            ("address", format!("02:00:00:00:00:{index:02x}\n")),
        ] {
            fs::write(dir.join(file), content).unwrap();
        }
        self
    }

    fn ethernet(&self, name: &str, index: u8) -> &Self {
        self.link(name, index, UP, libc::ARPHRD_ETHER, "up")
    }

    /// Makes `name` a port of `master`; `marker` is the port's kind directory
    /// (`brport`, `bonding_slave`) or `None` for other masters.
    fn enslave(&self, name: &str, master: &str, marker: Option<&str>) -> &Self {
        let dir = self.class_net().join(name);
        symlink(format!("../{master}"), dir.join("master")).unwrap();
        if let Some(marker) = marker {
            fs::create_dir(dir.join(marker)).unwrap();
        }
        self
    }

    /// Routes as (link, destination, flags, metric, mask), hex as in the kernel's table.
    fn routes(&self, routes: &[(&str, &str, &str, u32, &str)]) -> &Self {
        let mut table = ROUTE_HEADER.to_owned();
        for (link, destination, flags, metric, mask) in routes {
            table.push_str(&format!(
                "{link}\t{destination}\t0100000A\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"
            ));
        }
        fs::write(self.paths().route, table).unwrap();
        self
    }

    fn refusal(&self, name: &str) -> Refusal {
        match choose(&self.paths(), Some(name)) {
            Err(InterfaceError::Refused {
                name: refused,
                reason,
            }) => {
                assert_eq!(refused, name);
                reason
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn configured_ethernet_link_is_chosen_with_index_and_mac() {
    let fake = FakeSys::new();
    fake.ethernet("eth0", 2).ethernet("enp3s0", 7);
    let link = choose(&fake.paths(), Some("enp3s0")).unwrap();
    assert_eq!(
        link,
        Link {
            name: "enp3s0".to_owned(),
            index: 7,
            mac: MacAddr::new(2, 0, 0, 0, 0, 7),
        }
    );
}

#[test]
fn default_route_with_lowest_metric_picks_the_link() {
    let fake = FakeSys::new();
    fake.ethernet("eth0", 2)
        .ethernet("eth1", 3)
        .ethernet("eth2", 4)
        .routes(&[
            ("eth0", "0000000A", "0001", 0, "00FFFFFF"),
            ("eth1", "00000000", "0003", 200, "00000000"),
            ("eth2", "00000000", "0003", 100, "00000000"),
            // Not up: ignored however low its metric.
            ("eth0", "00000000", "0002", 1, "00000000"),
        ]);
    assert_eq!(choose(&fake.paths(), None).unwrap().name, "eth2");
}

#[test]
fn configured_name_overrides_the_default_route() {
    let fake = FakeSys::new();
    fake.ethernet("eth0", 2)
        .ethernet("eth1", 3)
        .routes(&[("eth0", "00000000", "0003", 0, "00000000")]);
    assert_eq!(choose(&fake.paths(), Some("eth1")).unwrap().name, "eth1");
}

#[test]
fn no_default_route_is_an_error_naming_the_table() {
    let fake = FakeSys::new();
    fake.ethernet("eth0", 2)
        .routes(&[("eth0", "0000000A", "0001", 0, "00FFFFFF")]);
    let error = choose(&fake.paths(), None).unwrap_err();
    assert!(
        matches!(&error, InterfaceError::NoDefaultRoute { path } if *path == fake.paths().route),
        "{error:?}"
    );
}

#[test]
fn malformed_route_line_is_a_parse_error() {
    let fake = FakeSys::new();
    fs::write(fake.paths().route, format!("{ROUTE_HEADER}eth0\tzz\n")).unwrap();
    assert!(matches!(
        choose(&fake.paths(), None),
        Err(InterfaceError::Parse { text, .. }) if text == "eth0\tzz"
    ));
}

#[test]
fn default_route_through_a_refused_link_is_refused_with_its_reason() {
    let fake = FakeSys::new();
    fake.ethernet("br0", 2)
        .ethernet("eth0", 3)
        .enslave("eth0", "br0", Some("brport"))
        .routes(&[("eth0", "00000000", "0003", 0, "00000000")]);
    let error = choose(&fake.paths(), None).unwrap_err();
    assert_eq!(error.to_string(), "skipping eth0: member of bridge br0");
}

#[test]
fn bridge_bond_and_other_ports_are_refused_naming_the_master() {
    let fake = FakeSys::new();
    fake.ethernet("br0", 2)
        .ethernet("eth1", 3)
        .enslave("eth1", "br0", Some("brport"))
        .ethernet("eth2", 4)
        .enslave("eth2", "bond0", Some("bonding_slave"))
        .ethernet("eth3", 5)
        .enslave("eth3", "team0", None);
    assert_eq!(
        fake.refusal("eth1"),
        Refusal::BridgeMember {
            bridge: "br0".to_owned()
        }
    );
    assert_eq!(
        fake.refusal("eth2"),
        Refusal::BondMember {
            bond: "bond0".to_owned()
        }
    );
    assert_eq!(
        fake.refusal("eth3"),
        Refusal::Enslaved {
            master: "team0".to_owned()
        }
    );
    // The bridge itself carries the node's address and is a fine announce interface.
    assert_eq!(choose(&fake.paths(), Some("br0")).unwrap().index, 2);
}

#[test]
fn cni_and_overlay_names_are_refused_but_lookalikes_are_not() {
    let fake = FakeSys::new();
    let cni = [
        ("cni0", "cni"),
        ("flannel.1", "flannel"),
        ("cali12ab", "cali"),
        ("cilium_host", "cilium_"),
        ("lxc_health", "lxc"),
        ("vxlan.calico", "vxlan"),
        ("tunl0", "tunl"),
        ("weave", "weave"),
        ("kube-ipvs0", "kube-ipvs"),
        ("docker0", "docker"),
        ("genev_sys_6081", "genev"),
    ];
    for (index, (name, _)) in (10..).zip(cni) {
        fake.ethernet(name, index);
    }
    for (name, prefix) in cni {
        assert_eq!(fake.refusal(name), Refusal::Cni { prefix }, "{name}");
    }
    fake.ethernet("eth-cni", 30).ethernet("ciliumx", 31);
    assert!(choose(&fake.paths(), Some("eth-cni")).is_ok());
    assert!(choose(&fake.paths(), Some("ciliumx")).is_ok());
    assert_eq!(
        choose(&fake.paths(), Some("cilium_host"))
            .unwrap_err()
            .to_string(),
        "skipping cilium_host: looks like a CNI or overlay link (cilium_*)"
    );
}

#[test]
fn loopback_noarp_and_non_ethernet_links_are_refused() {
    let fake = FakeSys::new();
    let loopback = libc::IFF_UP as u32 | libc::IFF_LOOPBACK as u32;
    let noarp = UP | libc::IFF_NOARP as u32;
    fake.link("lo", 1, loopback, libc::ARPHRD_LOOPBACK, "unknown")
        .link("dummy0", 2, noarp, libc::ARPHRD_ETHER, "unknown")
        .link("ib0", 3, UP, libc::ARPHRD_INFINIBAND, "up");
    assert_eq!(fake.refusal("lo"), Refusal::Loopback);
    assert_eq!(fake.refusal("dummy0"), Refusal::NoArp);
    assert_eq!(
        fake.refusal("ib0"),
        Refusal::NotEthernet {
            kind: libc::ARPHRD_INFINIBAND
        }
    );
}

#[test]
fn down_links_are_refused_and_unknown_operstate_is_accepted() {
    let fake = FakeSys::new();
    let down = libc::IFF_BROADCAST as u32;
    fake.link("eth0", 2, down, libc::ARPHRD_ETHER, "down")
        .link("eth1", 3, UP, libc::ARPHRD_ETHER, "lowerlayerdown")
        .link("eth2", 4, UP, libc::ARPHRD_ETHER, "down")
        .link("eth3", 5, UP, libc::ARPHRD_ETHER, "unknown");
    assert_eq!(
        fake.refusal("eth0"),
        Refusal::Down {
            state: "administratively down".to_owned()
        }
    );
    assert_eq!(
        fake.refusal("eth1"),
        Refusal::Down {
            state: "operstate lowerlayerdown".to_owned()
        }
    );
    assert_eq!(
        choose(&fake.paths(), Some("eth2")).unwrap_err().to_string(),
        "skipping eth2: is down (operstate down)"
    );
    assert!(choose(&fake.paths(), Some("eth3")).is_ok());
}

#[test]
fn missing_and_path_escaping_names_are_refused() {
    let fake = FakeSys::new();
    fake.ethernet("eth0", 2);
    assert_eq!(fake.refusal("eth9"), Refusal::Missing);
    assert_eq!(
        choose(&fake.paths(), Some("eth9")).unwrap_err().to_string(),
        "skipping eth9: does not exist"
    );
    // `..` would otherwise resolve to the fake `class` directory, which exists.
    for name in ["..", "../net/eth0", "", "a-name-longer-than-15", "eth0:1"] {
        assert_eq!(fake.refusal(name), Refusal::InvalidName, "{name:?}");
    }
}

#[test]
fn unreadable_sysfs_attribute_is_a_read_error() {
    let fake = FakeSys::new();
    fake.ethernet("eth0", 2);
    fs::remove_file(fake.class_net().join("eth0/operstate")).unwrap();
    assert!(matches!(
        choose(&fake.paths(), Some("eth0")),
        Err(InterfaceError::Read { path, .. }) if path.ends_with("eth0/operstate")
    ));
}

#[test]
fn mac_is_read_whatever_the_link_state() {
    let fake = FakeSys::new();
    fake.link("eth0", 2, 0, libc::ARPHRD_ETHER, "down");
    assert!(choose(&fake.paths(), Some("eth0")).is_err());
    assert_eq!(
        mac(&fake.paths(), "eth0").unwrap(),
        MacAddr::new(2, 0, 0, 0, 0, 2)
    );
    assert!(matches!(
        mac(&fake.paths(), "eth9"),
        Err(InterfaceError::Refused {
            reason: Refusal::Missing,
            ..
        })
    ));
    assert!(matches!(
        mac(&fake.paths(), ".."),
        Err(InterfaceError::Refused {
            reason: Refusal::InvalidName,
            ..
        })
    ));
}
