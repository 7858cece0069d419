//! Destination NAT of VIP traffic to a local pod, and the reply-flow record the TC
//! program needs to undo it on the way back.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    checksum::{replace_u16, replace_u32, udp_replace_u16, udp_replace_u32},
    reasons,
    types::{FlowKey, PROTO_UDP, ReplyKey, ReplyValue},
};

use crate::{
    maps::REPLY_FLOWS,
    parse::{self, IPV4_HLEN, Ipv4Hdr, L4_DPORT_OFF, TCP_CSUM_OFF, UDP_CSUM_OFF},
    verdict::Verdict,
};

#[inline(always)]
fn malformed() -> Verdict {
    Verdict::drop(reasons::DROP_MALFORMED)
}

/// Rewrites the destination address of the IPv4 header at `l3`, header checksum included.
#[inline(always)]
pub fn set_daddr(ctx: &XdpContext, l3: usize, daddr: u32) -> Result<(), Verdict> {
    let ip = parse::ptr_at::<Ipv4Hdr>(ctx, l3).ok_or_else(malformed)?;
    // SAFETY: `ptr_at` checked the header lies inside the frame.
    unsafe {
        (*ip).check = replace_u32((*ip).check, (*ip).daddr, daddr);
        (*ip).daddr = daddr;
    }
    Ok(())
}

/// DNATs a TCP/UDP packet of `flow` to `pod`, port `target_port` (0 keeps the VIP port),
/// and records the reply flow. The L4 header directly follows a 20-byte IPv4 header.
#[inline(always)]
pub fn dnat(
    ctx: &XdpContext,
    l3: usize,
    flow: &FlowKey,
    pod: u32,
    target_port: u16,
    stats_index: u32,
) -> Result<(), Verdict> {
    let l4 = l3 + IPV4_HLEN;
    let pod_port = if target_port != 0 {
        target_port
    } else {
        flow.vip_port
    };
    set_daddr(ctx, l3, pod)?;
    let is_udp = flow.proto == PROTO_UDP;
    let csum_off = if is_udp { UDP_CSUM_OFF } else { TCP_CSUM_OFF };
    let check = parse::ptr_at::<u16>(ctx, l4 + csum_off).ok_or_else(malformed)?;
    // SAFETY: `ptr_at` checked the checksum field lies inside the frame.
    unsafe {
        *check = if is_udp {
            let sum = udp_replace_u32(*check, flow.vip, pod);
            udp_replace_u16(sum, flow.vip_port, pod_port)
        } else {
            let sum = replace_u32(*check, flow.vip, pod);
            replace_u16(sum, flow.vip_port, pod_port)
        };
    }
    if !parse::write(ctx, l4 + L4_DPORT_OFF, pod_port) {
        return Err(malformed());
    }
    remember_reply(flow, pod, pod_port, stats_index);
    Ok(())
}

/// Records how the pod's replies are turned back into the VIP's; skips the write when
/// the entry is already there (the common case), which also refreshes its LRU age.
#[inline(always)]
fn remember_reply(flow: &FlowKey, pod: u32, pod_port: u16, stats_index: u32) {
    let key = ReplyKey {
        pod,
        client: flow.client,
        pod_port,
        client_port: flow.client_port,
        proto: flow.proto,
        _pad: 0,
        _pad2: 0,
    };
    let value = ReplyValue {
        vip: flow.vip,
        vip_port: flow.vip_port,
        _pad: 0,
        stats_index,
    };
    // SAFETY: the value is only compared, never kept past this statement.
    if unsafe { REPLY_FLOWS.get(key) } != Some(&value) {
        // An LRU map makes room by itself; a failure only loses this reply mapping
        // until the next packet of the flow.
        let _ = REPLY_FLOWS.insert(key, value, 0);
    }
}
