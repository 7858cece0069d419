//! A stand-in host for the configuration's host checks (`config::host`): a scratch
//! `/sys/class/net` with the links a case needs, laid out as the kernel lays them out,
//! and an empty route table.

use std::{fs, net::Ipv4Addr, os::unix::fs::symlink, path::Path};

use lb_agent::{arp::SysPaths, config::host::Host};
use tempfile::TempDir;

const UP: u32 = (libc::IFF_UP | libc::IFF_BROADCAST | libc::IFF_MULTICAST) as u32;

pub struct FakeHost {
    dir: TempDir,
}

impl FakeHost {
    /// A host with one Ethernet link, `eth0`, up.
    pub fn new() -> Self {
        let host = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        fs::create_dir_all(host.class_net()).expect("class_net");
        fs::write(host.dir.path().join("route"), "Iface\tDestination\n").expect("route");
        host.link("eth0", UP, libc::ARPHRD_ETHER)
    }

    fn class_net(&self) -> std::path::PathBuf {
        self.dir.path().join("class_net")
    }

    /// The host, its links with the addresses `addresses`.
    pub fn host_with(&self, addresses: Vec<(String, Ipv4Addr)>) -> Host {
        Host {
            sys: SysPaths {
                class_net: self.class_net(),
                route: self.dir.path().join("route"),
            },
            addresses,
        }
    }

    /// The host, `eth0` holding the example's node1 address.
    pub fn host(&self) -> Host {
        self.host_with(vec![("eth0".to_owned(), Ipv4Addr::new(10, 0, 0, 11))])
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds link `name` with interface `flags` and ARPHRD `kind`.
    pub fn link(self, name: &str, flags: u32, kind: u16) -> Self {
        let dir = self.class_net().join(name);
        fs::create_dir_all(&dir).expect("link");
        for (file, content) in [
            ("flags", format!("{flags:#06x}\n")),
            ("type", format!("{kind}\n")),
            (
                "operstate",
                if flags & UP == UP { "up\n" } else { "down\n" }.to_owned(),
            ),
            ("ifindex", "7\n".to_owned()),
            ("address", "02:00:00:00:00:07\n".to_owned()),
        ] {
            fs::write(dir.join(file), content).expect("link file");
        }
        self
    }

    /// Adds Ethernet link `name`, up, as a port of `master` (`marker`: `brport`,
    /// `bonding_slave`).
    pub fn port(self, name: &str, master: &str, marker: &str) -> Self {
        let host = self.link(name, UP, libc::ARPHRD_ETHER);
        let dir = host.class_net().join(name);
        symlink(format!("../{master}"), dir.join("master")).expect("master");
        fs::create_dir(dir.join(marker)).expect("marker");
        host
    }
}

/// Flags of an Ethernet link that is up.
pub const ETHERNET_UP: u32 = UP;
