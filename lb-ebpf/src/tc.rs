//! `tc_reply`: on LAN egress, turns replies of DNATed flows (pod -> client) back into
//! VIP replies (VIP -> client), and clamps the MSS a pod offers in its SYN-ACK so client
//! segments still fit once tunnelled.
//!
//! Access goes through the skb helpers (load/store, l3/l4 checksum replace), which also
//! keep CHECKSUM_PARTIAL skbs from the local stack correct.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    cty::c_long,
    programs::TcContext,
};
use lb_common::{
    reasons,
    types::{PROTO_TCP, PROTO_UDP, ReplyKey, ReplyValue},
};

use crate::{
    maps::{CONFIG, REPLY_FLOWS},
    parse::{
        ETH_HLEN, ETH_P_8021Q, ETH_P_IP, Ipv4Hdr, Ports, TCP_CSUM_OFF, TCP_HLEN, UDP_CSUM_OFF,
        VLAN_HLEN,
    },
    stats,
};

/// Fragment offset bits (host order): only the first fragment carries the ports.
const IP_OFFSET: u16 = 0x1fff;
const IP_CSUM_OFF: usize = 10;
const IP_SADDR_OFF: usize = 12;
const TCP_DOFF_OFF: usize = 12;
const TCP_FLAGS_OFF: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: u8 = 4;
const MAX_OPTION_BYTES: usize = 40;
/// Outer IPv4 (tunnel) + IPv4 + TCP headers, taken off the LAN MTU.
const MSS_OVERHEAD: u32 = 60;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    match reply(ctx) {
        Ok(Some(reason)) => {
            stats::count(reason);
            TC_ACT_OK
        }
        Ok(None) => TC_ACT_OK,
        // A half-rewritten packet would carry a wrong checksum: better not sent at all.
        Err(_) => {
            stats::count(reasons::DROP_MAP_ERROR);
            TC_ACT_SHOT
        }
    }
}

/// The IPv4 header offset behind Ethernet and at most one in-band 802.1Q tag.
#[inline(always)]
fn ipv4_offset(ctx: &TcContext) -> Option<usize> {
    let proto: u16 = ctx.load(ETH_HLEN - 2).ok()?;
    if proto == ETH_P_IP {
        return Some(ETH_HLEN);
    }
    let inner: u16 = ctx.load(ETH_HLEN + VLAN_HLEN - 2).ok()?;
    (proto == ETH_P_8021Q && inner == ETH_P_IP).then_some(ETH_HLEN + VLAN_HLEN)
}

/// The reason to count, `None` for anything that is not IPv4 TCP/UDP.
#[inline(always)]
fn reply(ctx: &TcContext) -> Result<Option<u32>, c_long> {
    let Some(l3) = ipv4_offset(ctx) else {
        return Ok(None);
    };
    let Ok(ip) = ctx.load::<Ipv4Hdr>(l3) else {
        return Ok(None);
    };
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return Ok(None);
    }
    let untracked = Ok(Some(reasons::TC_PASS_UNTRACKED));
    if ip.ihl() < 5 || ip.frag_bits() & IP_OFFSET != 0 {
        return untracked;
    }
    let l4 = l3 + usize::from(ip.ihl()) * 4;
    let Ok(ports) = ctx.load::<Ports>(l4) else {
        return untracked;
    };
    // A segment cut short before its checksum cannot be rewritten consistently: left
    // alone, the client drops it as it would without us.
    let csum_off = if ip.proto == PROTO_TCP {
        TCP_CSUM_OFF
    } else {
        UDP_CSUM_OFF
    };
    if ctx.load::<u16>(l4 + csum_off).is_err() {
        return untracked;
    }
    let key = ReplyKey {
        pod: ip.saddr,
        client: ip.daddr,
        pod_port: ports.src,
        client_port: ports.dst,
        proto: ip.proto,
        _pad: 0,
        _pad2: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(vip) = (unsafe { REPLY_FLOWS.get(key) }).copied() else {
        return untracked;
    };
    rewrite_source(ctx, l3, l4, &ip, ports.src, &vip)?;
    let bytes = u64::from(ctx.len());
    stats::vip(vip.stats_index, |stats| {
        stats.reply_packets += 1;
        stats.reply_bytes += bytes;
    });
    if ip.proto == PROTO_TCP && clamp_mss(ctx, l4)? {
        stats::count(reasons::TC_MSS_CLAMPED);
    }
    Ok(Some(reasons::TC_REPLY_REWRITTEN))
}

/// Source pod:port -> VIP:port, IPv4 and L4 checksums updated through the helpers.
#[inline(always)]
fn rewrite_source(
    ctx: &TcContext,
    l3: usize,
    l4: usize,
    ip: &Ipv4Hdr,
    pod_port: u16,
    vip: &ReplyValue,
) -> Result<(), c_long> {
    let (csum_off, mangled) = if ip.proto == PROTO_UDP {
        // A zero UDP checksum stays zero, a computed zero becomes all ones.
        (UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
    } else {
        (TCP_CSUM_OFF, 0)
    };
    let l4_csum = l4 + csum_off;
    let pseudo = u64::from(BPF_F_PSEUDO_HDR);
    ctx.l3_csum_replace(l3 + IP_CSUM_OFF, ip.saddr.into(), vip.vip.into(), 4)?;
    ctx.l4_csum_replace(
        l4_csum,
        ip.saddr.into(),
        vip.vip.into(),
        pseudo | mangled | 4,
    )?;
    ctx.store(l3 + IP_SADDR_OFF, &vip.vip, 0)?;
    ctx.l4_csum_replace(l4_csum, pod_port.into(), vip.vip_port.into(), mangled | 2)?;
    ctx.store(l4, &vip.vip_port, 0)
}

/// Lowers the MSS option of a SYN-ACK to the LAN MTU minus tunnel, IPv4 and TCP headers.
/// Returns whether it changed. An MTU of 0 means not configured.
#[inline(always)]
fn clamp_mss(ctx: &TcContext, l4: usize) -> Result<bool, c_long> {
    let mtu = CONFIG.get(0).map_or(0, |config| config.mtu);
    let flags: u8 = ctx.load(l4 + TCP_FLAGS_OFF)?;
    if mtu <= MSS_OVERHEAD || flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK {
        return Ok(false);
    }
    let limit = (mtu - MSS_OVERHEAD).min(u32::from(u16::MAX)) as u16;
    let doff: u8 = ctx.load(l4 + TCP_DOFF_OFF)?;
    let end = l4 + usize::from(doff >> 4) * 4;
    let mut off = l4 + TCP_HLEN;
    for _ in 0..MAX_OPTION_BYTES {
        if off >= end {
            break;
        }
        // Options the data offset claims beyond the segment end the walk: the rewrite
        // before is complete and valid, so the packet still leaves.
        let Ok(kind) = ctx.load::<u8>(off) else {
            break;
        };
        if kind == TCPOPT_EOL {
            break;
        }
        if kind == TCPOPT_NOP {
            off += 1;
            continue;
        }
        let Ok(len) = ctx.load::<u8>(off + 1) else {
            break;
        };
        if len < 2 || off + usize::from(len) > end {
            break;
        }
        if kind == TCPOPT_MSS && len == TCPOLEN_MSS {
            let Ok(mss) = ctx.load::<u16>(off + 2) else {
                break;
            };
            if u16::from_be(mss) <= limit {
                return Ok(false);
            }
            let clamped = limit.to_be();
            ctx.l4_csum_replace(l4 + TCP_CSUM_OFF, mss.into(), clamped.into(), 2)?;
            ctx.store(off + 2, &clamped, 0)?;
            return Ok(true);
        }
        off += usize::from(len);
    }
    Ok(false)
}
