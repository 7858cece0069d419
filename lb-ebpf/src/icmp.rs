//! ICMP to a VIP: echo requests answered in XDP, "fragmentation needed" for packets that
//! would not fit once encapsulated, and errors about our replies steered to the pod that
//! owns the flow.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lb_common::{
    checksum::{fold, replace_u16, replace_u32},
    reasons,
    types::{DataplaneConfig, FlowKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

use crate::{
    encap::adjust_head,
    nat,
    parse::{self, EthHdr, ICMP_HLEN, IP_DF, IPV4_HLEN, IcmpHdr, Ipv4Hdr, Ports},
    ratelimit, stats,
    verdict::Verdict,
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const REPLY_TTL: u8 = 64;
/// Bytes of the offending packet an ICMP error quotes: its header and 8 bytes of L4.
const QUOTE_LEN: usize = IPV4_HLEN + 8;
/// ICMP header plus the quote: what the frag-needed checksum covers, in 16-bit words.
const FRAG_NEEDED_WORDS: usize = (ICMP_HLEN + QUOTE_LEN) / 2;
/// Encapsulation overhead, taken off the LAN MTU.
const TUNNEL_OVERHEAD: u32 = IPV4_HLEN as u32;

/// What an ICMP message to a VIP asks of us.
pub enum Message {
    EchoRequest,
    /// An error about a reply this VIP sent, as the forward flow it belongs to.
    Error(FlowKey),
}

#[inline(always)]
fn malformed() -> Verdict {
    Verdict::drop(reasons::DROP_MALFORMED)
}

#[inline(always)]
fn unsupported() -> Verdict {
    Verdict::drop(reasons::DROP_UNSUPPORTED_PROTO)
}

/// Classifies the ICMP message behind the IPv4 header `ip` at `l3`.
#[inline(always)]
pub fn classify(ctx: &XdpContext, l3: usize, ip: &Ipv4Hdr) -> Result<Message, Verdict> {
    let icmp: IcmpHdr = parse::read(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    if usize::from(ip.total_len()) < IPV4_HLEN + ICMP_HLEN {
        return Err(malformed());
    }
    match icmp.kind {
        ICMP_ECHO => Ok(Message::EchoRequest),
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED => quoted_flow(ctx, l3, ip).map(Message::Error),
        _ => Err(unsupported()),
    }
}

/// The forward flow of the reply quoted in an ICMP error: only replies the VIP itself
/// sent (quoted source == VIP) over TCP/UDP without options are steered.
#[inline(always)]
fn quoted_flow(ctx: &XdpContext, l3: usize, ip: &Ipv4Hdr) -> Result<FlowKey, Verdict> {
    let quote = l3 + IPV4_HLEN + ICMP_HLEN;
    if usize::from(ip.total_len()) < IPV4_HLEN + ICMP_HLEN + QUOTE_LEN {
        return Err(malformed());
    }
    let inner: Ipv4Hdr = parse::read(ctx, quote).ok_or_else(malformed)?;
    let ports: Ports = parse::read(ctx, quote + IPV4_HLEN).ok_or_else(malformed)?;
    let transport = inner.proto == PROTO_TCP || inner.proto == PROTO_UDP;
    if inner.saddr != ip.daddr || inner.ihl() != 5 || !transport {
        return Err(unsupported());
    }
    Ok(FlowKey {
        client: inner.daddr,
        vip: inner.saddr,
        client_port: ports.dst,
        vip_port: ports.src,
        proto: inner.proto,
        _pad: 0,
        _pad2: 0,
    })
}

#[inline(always)]
fn rate_limited(config: &DataplaneConfig) -> Result<(), Verdict> {
    if ratelimit::take(config.icmp_rate_per_sec) {
        Ok(())
    } else {
        Err(Verdict::drop(reasons::DROP_ICMP_RATE_LIMITED))
    }
}

/// Turns the echo request at `l3` into its reply, sent back the way it came.
#[inline(always)]
pub fn echo_reply(
    ctx: &XdpContext,
    l3: usize,
    config: &DataplaneConfig,
    stats_index: u32,
) -> Result<Verdict, Verdict> {
    rate_limited(config)?;
    let eth = parse::ptr_at::<EthHdr>(ctx, 0).ok_or_else(malformed)?;
    let ip = parse::ptr_at::<Ipv4Hdr>(ctx, l3).ok_or_else(malformed)?;
    let icmp = parse::ptr_at::<IcmpHdr>(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    // SAFETY: `ptr_at` checked each header lies inside the frame; they do not overlap.
    unsafe {
        core::mem::swap(&mut (*eth).src, &mut (*eth).dst);
        core::mem::swap(&mut (*ip).saddr, &mut (*ip).daddr);
        // Swapping addresses leaves the sum unchanged; the TTL shares a word with proto.
        let old = u16::from_ne_bytes([(*ip).ttl, (*ip).proto]);
        let new = u16::from_ne_bytes([REPLY_TTL, (*ip).proto]);
        (*ip).ttl = REPLY_TTL;
        (*ip).check = replace_u16((*ip).check, old, new);
        let old = u16::from_ne_bytes([(*icmp).kind, (*icmp).code]);
        let new = u16::from_ne_bytes([ICMP_ECHO_REPLY, (*icmp).code]);
        (*icmp).kind = ICMP_ECHO_REPLY;
        (*icmp).check = replace_u16((*icmp).check, old, new);
    }
    count_reply(stats_index);
    Ok(Verdict::tx(reasons::TX_ICMP_ECHO_REPLY))
}

/// Stops packets that would exceed the LAN MTU once encapsulated: DF set gets
/// "fragmentation needed" (Katran's approach), DF clear is dropped. An MTU of 0 means
/// not configured.
#[inline(always)]
pub fn check_fits(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv4Hdr,
    config: &DataplaneConfig,
    stats_index: u32,
) -> Result<(), Verdict> {
    if config.mtu == 0 || u32::from(ip.total_len()) + TUNNEL_OVERHEAD <= config.mtu {
        return Ok(());
    }
    if ip.frag_bits() & IP_DF == 0 {
        return Err(Verdict::drop(reasons::DROP_TOO_BIG));
    }
    Err(frag_needed(ctx, l3, ip, config, stats_index).unwrap_or_else(|verdict| verdict))
}

/// Rebuilds the frame in place into ICMP "fragmentation needed" quoting `ip` and the
/// first 8 bytes after it: cut the tail, grow the head by IPv4 + ICMP headers, which
/// leaves the quote exactly where the reply carries it.
#[inline(always)]
fn frag_needed(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv4Hdr,
    config: &DataplaneConfig,
    stats_index: u32,
) -> Result<Verdict, Verdict> {
    rate_limited(config)?;
    let growth = IPV4_HLEN + ICMP_HLEN;
    let cut = parse::frame_len(ctx) as i32 - (l3 + QUOTE_LEN) as i32;
    // SAFETY: the helper only moves `data_end`; pointers are re-derived afterwards.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -cut) } != 0 {
        return Err(Verdict::drop(reasons::DROP_MAP_ERROR));
    }
    adjust_head(ctx, -(growth as i32))?;
    if !parse::copy_l2(ctx, l3, growth, 0, true) {
        return Err(malformed());
    }
    let mut reply = Ipv4Hdr {
        version_ihl: 0x45,
        tos: 0,
        tot_len: ((growth + QUOTE_LEN) as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: REPLY_TTL,
        proto: PROTO_ICMP,
        check: 0,
        saddr: ip.daddr,
        daddr: ip.saddr,
    };
    reply.check = reply.computed_check();
    let next_hop_mtu = config.mtu.saturating_sub(TUNNEL_OVERHEAD) as u16;
    let icmp = IcmpHdr {
        kind: ICMP_DEST_UNREACH,
        code: ICMP_FRAG_NEEDED,
        check: 0,
        rest: [0, next_hop_mtu.to_be()],
    };
    if !parse::write(ctx, l3, reply) || !parse::write(ctx, l3 + IPV4_HLEN, icmp) {
        return Err(malformed());
    }
    let words: [u16; FRAG_NEEDED_WORDS] = parse::read(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    let sum = words.iter().fold(0u32, |sum, word| sum + u32::from(*word));
    let check = parse::ptr_at::<IcmpHdr>(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    // SAFETY: `ptr_at` checked the ICMP header lies inside the frame.
    unsafe { (*check).check = !fold(sum) };
    count_reply(stats_index);
    Ok(Verdict::tx(reasons::TX_ICMP_FRAG_NEEDED))
}

/// DNATs a steered ICMP error to `pod`: the outer destination, and the quoted reply's
/// source address and port, with the outer IPv4, ICMP and quoted IPv4 checksums.
#[inline(always)]
pub fn dnat_error(
    ctx: &XdpContext,
    l3: usize,
    flow: &FlowKey,
    pod: u32,
    target_port: u16,
) -> Result<(), Verdict> {
    let pod_port = if target_port != 0 {
        target_port
    } else {
        flow.vip_port
    };
    nat::set_daddr(ctx, l3, pod)?;
    let quote = l3 + IPV4_HLEN + ICMP_HLEN;
    let icmp = parse::ptr_at::<IcmpHdr>(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    let inner = parse::ptr_at::<Ipv4Hdr>(ctx, quote).ok_or_else(malformed)?;
    let ports = parse::ptr_at::<Ports>(ctx, quote + IPV4_HLEN).ok_or_else(malformed)?;
    // SAFETY: `ptr_at` checked each header lies inside the frame; they do not overlap.
    unsafe {
        let inner_check = replace_u32((*inner).check, (*inner).saddr, pod);
        let mut check = replace_u32((*icmp).check, (*inner).saddr, pod);
        check = replace_u16(check, (*inner).check, inner_check);
        check = replace_u16(check, (*ports).src, pod_port);
        (*inner).saddr = pod;
        (*inner).check = inner_check;
        (*ports).src = pod_port;
        (*icmp).check = check;
    }
    Ok(())
}

/// Counts an ICMP message generated in XDP.
#[inline(always)]
fn count_reply(stats_index: u32) {
    stats::vip(stats_index, |vip| vip.icmp_replies += 1);
}
