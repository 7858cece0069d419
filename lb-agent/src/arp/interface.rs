//! Which link ARP is announced on, and why a link is refused.
//!
//! The configured name wins; otherwise the link of the IPv4 default route. Either way the
//! link must be one the node really talks to the LAN through: a bridge or bond member
//! never sees the VIP's traffic itself (its master does), a NOARP link has no ARP, and
//! CNI/overlay links face pods, not the LAN. Refusals carry a reason the caller logs.
//!
//! Everything but the IPv4 address comes from sysfs and `/proc/.../net/route` under
//! injectable paths ([`SysPaths`]); note that sysfs shows the network namespace it was
//! mounted in, not the calling thread's.

use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use pnet_datalink::MacAddr;

#[cfg(test)]
mod tests;

/// Name prefixes of links created by CNI plugins, overlays and container runtimes.
const CNI_PREFIXES: [&str; 11] = [
    "cni",
    "flannel",
    "cali",
    "cilium_",
    "lxc",
    "vxlan",
    "tunl",
    "weave",
    "kube-ipvs",
    "docker",
    "genev",
];

/// Operational states in which a link cannot carry frames (`IF_OPER_*` names in sysfs).
const DEAD_OPERSTATES: [&str; 3] = ["down", "lowerlayerdown", "notpresent"];

/// `IFNAMSIZ` less the terminating NUL.
const MAX_NAME_LEN: usize = 15;
const RTF_UP: u32 = 0x1;

/// Where the kernel's view of links and routes is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysPaths {
    /// One directory per link (`/sys/class/net`).
    pub class_net: PathBuf,
    /// The IPv4 routing table in `/proc/net/route` format.
    pub route: PathBuf,
}

impl SysPaths {
    /// The running kernel's files. The route table is the calling thread's, so a thread
    /// that entered another network namespace reads that namespace's routes.
    pub fn live() -> Self {
        Self {
            class_net: PathBuf::from("/sys/class/net"),
            route: PathBuf::from("/proc/thread-self/net/route"),
        }
    }
}

/// A link that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
}

/// The announce interface: a valid link and the node's IPv4 address on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub link: Link,
    pub ipv4: Ipv4Addr,
}

/// Why a link cannot carry the announcements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("does not exist")]
    Missing,
    #[error("is not a valid interface name")]
    InvalidName,
    #[error("is the loopback")]
    Loopback,
    #[error("looks like a CNI or overlay link ({prefix}*)")]
    Cni { prefix: &'static str },
    #[error("member of bridge {bridge}")]
    BridgeMember { bridge: String },
    #[error("member of bond {bond}")]
    BondMember { bond: String },
    #[error("enslaved to {master} (team, Open vSwitch or VRF port)")]
    Enslaved { master: String },
    #[error("has NOARP set")]
    NoArp,
    #[error("is not an Ethernet link (ARPHRD type {kind})")]
    NotEthernet { kind: u16 },
    #[error("is down ({state})")]
    Down { state: String },
    #[error("has no IPv4 address")]
    NoIpv4,
}

/// Failure to choose an announce interface.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("skipping {name}: {reason}")]
    Refused { name: String, reason: Refusal },
    #[error("no IPv4 default route in {}: configure the announce interface", path.display())]
    NoDefaultRoute { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot parse {text:?}", path.display())]
    Parse { path: PathBuf, text: String },
}

/// Chooses and validates the announce interface in the live kernel: [`choose`] plus the
/// link's first IPv4 address (looked up in the calling thread's network namespace).
pub fn select(paths: &SysPaths, configured: Option<&str>) -> Result<Interface, InterfaceError> {
    let link = choose(paths, configured)?;
    let ipv4 = first_ipv4(&link.name).ok_or_else(|| refused(&link.name, Refusal::NoIpv4))?;
    Ok(Interface { link, ipv4 })
}

/// The MAC address of link `name`, whatever its state: the address the node's ARP
/// answers carry, so the one the LAN sends VIP frames to.
pub fn mac(paths: &SysPaths, name: &str) -> Result<MacAddr, InterfaceError> {
    if !valid_name(name) {
        return Err(refused(name, Refusal::InvalidName));
    }
    let dir = paths.class_net.join(name);
    if !dir.exists() {
        return Err(refused(name, Refusal::Missing));
    }
    read_parsed(&dir.join("address"))
}

/// The configured link, or the default route's, if it passes every check.
pub fn choose(paths: &SysPaths, configured: Option<&str>) -> Result<Link, InterfaceError> {
    let name = match configured {
        Some(name) => name.to_owned(),
        None => default_route_link(&paths.route)?,
    };
    validate(&paths.class_net, &name)
}

fn validate(class_net: &Path, name: &str) -> Result<Link, InterfaceError> {
    let refuse = |reason| Err(refused(name, reason));
    // Names are path components below: "..", "/" or an empty name must not escape.
    if !valid_name(name) {
        return refuse(Refusal::InvalidName);
    }
    let dir = class_net.join(name);
    if !dir.exists() {
        return refuse(Refusal::Missing);
    }
    if let Some(prefix) = CNI_PREFIXES.into_iter().find(|p| name.starts_with(p)) {
        return refuse(Refusal::Cni { prefix });
    }
    let flags = read_hex(&dir.join("flags"))?;
    if flags & libc::IFF_LOOPBACK as u32 != 0 {
        return refuse(Refusal::Loopback);
    }
    if let Some(reason) = membership(&dir) {
        return refuse(reason);
    }
    if flags & libc::IFF_NOARP as u32 != 0 {
        return refuse(Refusal::NoArp);
    }
    let kind: u16 = read_parsed(&dir.join("type"))?;
    if kind != libc::ARPHRD_ETHER {
        return refuse(Refusal::NotEthernet { kind });
    }
    if flags & libc::IFF_UP as u32 == 0 {
        return refuse(Refusal::Down {
            state: "administratively down".to_owned(),
        });
    }
    let operstate = read_trimmed(&dir.join("operstate"))?;
    if DEAD_OPERSTATES.contains(&operstate.as_str()) {
        return refuse(Refusal::Down {
            state: format!("operstate {operstate}"),
        });
    }
    Ok(Link {
        name: name.to_owned(),
        index: read_parsed(&dir.join("ifindex"))?,
        mac: read_parsed(&dir.join("address"))?,
    })
}

/// The kernel's `dev_valid_name` rules.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
}

/// Bridge and bond ports are recognisable by their sysfs directories; any other master
/// (team, Open vSwitch, VRF) is refused too, since the address lives on the master.
fn membership(dir: &Path) -> Option<Refusal> {
    let master = fs::read_link(dir.join("master")).ok().map(|target| {
        target.file_name().map_or_else(
            || target.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    });
    if dir.join("brport").exists() {
        return Some(Refusal::BridgeMember {
            bridge: master.unwrap_or_else(unknown_master),
        });
    }
    if dir.join("bonding_slave").exists() {
        return Some(Refusal::BondMember {
            bond: master.unwrap_or_else(unknown_master),
        });
    }
    master.map(|master| Refusal::Enslaved { master })
}

fn unknown_master() -> String {
    "(unknown)".to_owned()
}

/// The link of the lowest-metric IPv4 default route that is up.
fn default_route_link(path: &Path) -> Result<String, InterfaceError> {
    let table = read(path)?;
    let mut best: Option<(u32, &str)> = None;
    for line in table.lines().skip(1).filter(|line| !line.trim().is_empty()) {
        let route = Route::parse(line).ok_or_else(|| InterfaceError::Parse {
            path: path.to_owned(),
            text: line.to_owned(),
        })?;
        let is_default = route.destination == 0 && route.mask == 0 && route.flags & RTF_UP != 0;
        if is_default && best.is_none_or(|(metric, _)| route.metric < metric) {
            best = Some((route.metric, route.link));
        }
    }
    best.map(|(_, link)| link.to_owned())
        .ok_or_else(|| InterfaceError::NoDefaultRoute {
            path: path.to_owned(),
        })
}

/// One line of `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask …`
/// with addresses and flags in hex.
struct Route<'a> {
    link: &'a str,
    destination: u32,
    flags: u32,
    metric: u32,
    mask: u32,
}

impl<'a> Route<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let hex = |index: usize| u32::from_str_radix(fields.get(index)?, 16).ok();
        Some(Self {
            link: fields.first()?,
            destination: hex(1)?,
            flags: hex(3)?,
            metric: fields.get(6)?.parse().ok()?,
            mask: hex(7)?,
        })
    }
}

/// Every IPv4 address of this host (the calling thread's network namespace), with the
/// link it is on.
pub fn host_ipv4() -> Vec<(String, Ipv4Addr)> {
    pnet_datalink::interfaces()
        .into_iter()
        .flat_map(|interface| {
            let name = interface.name;
            interface
                .ips
                .into_iter()
                .filter_map(move |network| match network.ip() {
                    IpAddr::V4(addr) => Some((name.clone(), addr)),
                    IpAddr::V6(_) => None,
                })
        })
        .collect()
}

fn first_ipv4(name: &str) -> Option<Ipv4Addr> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|interface| interface.name == name)?
        .ips
        .iter()
        .find_map(|network| match network.ip() {
            IpAddr::V4(addr) => Some(addr),
            IpAddr::V6(_) => None,
        })
}

fn refused(name: &str, reason: Refusal) -> InterfaceError {
    InterfaceError::Refused {
        name: name.to_owned(),
        reason,
    }
}

fn read(path: &Path) -> Result<String, InterfaceError> {
    fs::read_to_string(path).map_err(|source| InterfaceError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_trimmed(path: &Path) -> Result<String, InterfaceError> {
    Ok(read(path)?.trim().to_owned())
}

fn read_parsed<T: std::str::FromStr>(path: &Path) -> Result<T, InterfaceError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| InterfaceError::Parse {
        path: path.to_owned(),
        text,
    })
}

/// sysfs `flags` is `0x`-prefixed hex.
fn read_hex(path: &Path) -> Result<u32, InterfaceError> {
    let text = read_trimmed(path)?;
    text.strip_prefix("0x")
        .and_then(|digits| u32::from_str_radix(digits, 16).ok())
        .ok_or_else(|| InterfaceError::Parse {
            path: path.to_owned(),
            text,
        })
}
