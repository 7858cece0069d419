//! The LAN interface: which one, its MTU and MAC address, and whether it can be used.

use super::RuntimeError;
use crate::{
    arp::{self, SysPaths},
    sources::Settings,
};

/// The interface the programs attach to: the configured one, else the default route's.
pub fn lan_interface(settings: &Settings) -> Result<String, RuntimeError> {
    match &settings.interface {
        Some(name) => Ok(name.clone()),
        None => Ok(arp::interface::choose(&SysPaths::live(), None)?.name),
    }
}

/// The configured MTU, else the interface's.
pub fn mtu(configured: Option<u32>, interface: &str) -> Result<u32, RuntimeError> {
    match configured {
        Some(mtu) => Ok(mtu),
        None => link_mtu(interface),
    }
}

pub(super) fn link_mtu(interface: &str) -> Result<u32, RuntimeError> {
    let path = format!("/sys/class/net/{interface}/mtu");
    let failed = |detail: String| RuntimeError::Mtu {
        interface: interface.to_owned(),
        path: path.clone(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|error| failed(error.to_string()))?;
    text.trim()
        .parse()
        .map_err(|_| failed(format!("{text:?} is not an MTU")))
}

/// The MAC address VIP frames are handled for: the one ARP gives clients for the VIPs
/// (with a bridge or a VLAN device in between, not the attach interface's own). Read at
/// start; unreadable (no such interface yet), the data path handles every destination.
pub(super) fn announce_mac(interface: &str) -> [u8; 6] {
    match arp::interface::mac(&SysPaths::live(), interface) {
        Ok(mac) => {
            tracing::info!(%interface, %mac, "handling VIP frames sent to this MAC address");
            mac.octets()
        }
        Err(error) => {
            tracing::warn!(%interface, %error, "no MAC address: handling VIP frames whatever their destination, so frames flooded to other nodes are forwarded here too");
            [0; 6]
        }
    }
}

/// Why the announce interface cannot be used, if it cannot.
pub(super) fn interface_problem(interface: &str) -> Option<String> {
    arp::interface::choose(&SysPaths::live(), Some(interface))
        .err()
        .map(|error| error.to_string())
}
