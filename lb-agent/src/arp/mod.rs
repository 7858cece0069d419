//! ARP for the VIPs this node owns, from user space: the VIP is never added to an
//! interface, so the kernel neither answers for it nor knows it.
//!
//! [`interface`] picks (and refuses) the announce link; [`Announcer`] answers requests
//! for owned VIPs and sends gratuitous ARP at takeover. 802.1Q: announce on the VLAN
//! device itself (e.g. `eth0.10`), where the kernel tags and untags; tagged frames on a
//! parent link are not handled.

pub mod announcer;
mod frame;
pub mod interface;
mod schedule;

pub use self::{
    announcer::{Announcer, ArpError, Counters},
    interface::{Interface, InterfaceError, Link, Refusal, SysPaths},
    schedule::{Owned, OwnedVips, Settings},
};
