//! The oracle: what every frame's run through `xdp_lb` and `tc_reply` must satisfy.
//!
//! Frames not addressed to the data plane must leave bit for bit unchanged. A rewritten
//! frame is compared with its input field by field: only the fields its rewrite owns may
//! differ, and every checksum the rewrite touches must keep the input's one's-complement
//! residual (a valid checksum stays valid, a corrupted one stays exactly as wrong, as the
//! incremental update of RFC 1624 guarantees), while headers the program builds itself
//! must be valid outright.

use std::ops::Range;

use lb_common::{
    checksum::{fold, sum_words},
    types::{PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP},
};

use super::{
    families::Case,
    frames::Intent,
    scenario::{
        self, FAR, Service, VIPS, is_backend_node, is_tracked_reply, service, service_of_pod,
    },
};
use crate::{
    fixture::{
        MTU, NEXT_HOP_MAC, NODE, PEER, PEER2, Run, TC_ACT_OK, XDP_DROP, XDP_PASS, XDP_REDIRECT,
        XDP_TX,
    },
    packets::NODE_MAC,
};

const IPV4_HLEN: usize = 20;
/// The checksum residual of correctly checksummed data.
const VALID: u16 = 0xffff;
const TCP_SYN_ACK: u8 = 0x12;
/// The MSS `tc_reply` clamps to: the LAN MTU less tunnel, IPv4 and TCP headers.
const MSS_LIMIT: u16 = (MTU - 60) as u16;

/// What became of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Drop,
    PassUntouched,
    PassRewritten,
    Tx,
    Redirect,
    TcUntouched,
    TcRewritten,
    /// Not run: see [`skb_refused`].
    TcRefused,
}

impl Outcome {
    pub const XDP: [Outcome; 5] = [
        Outcome::Drop,
        Outcome::PassUntouched,
        Outcome::PassRewritten,
        Outcome::Tx,
        Outcome::Redirect,
    ];
    pub const TC: [Outcome; 3] = [
        Outcome::TcUntouched,
        Outcome::TcRewritten,
        Outcome::TcRefused,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Drop => "DROP",
            Outcome::PassUntouched => "PASS",
            Outcome::PassRewritten => "PASS+rewrite",
            Outcome::Tx => "TX",
            Outcome::Redirect => "REDIRECT",
            Outcome::TcUntouched => "OK",
            Outcome::TcRewritten => "OK+rewrite",
            Outcome::TcRefused => "not run",
        }
    }
}

/// Interface addresses the tunnel's next hops are sent from.
#[derive(Clone, Copy, Debug)]
pub struct Links {
    pub lan_mac: [u8; 6],
    pub far_mac: [u8; 6],
}

type Checked<T = ()> = Result<T, String>;

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Checked {
    if condition { Ok(()) } else { Err(what()) }
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn addr(bytes: &[u8], at: usize) -> [u8; 4] {
    [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]
}

/// Offset of the IPv4 header behind Ethernet and at most one 802.1Q tag.
fn l3_of(frame: &[u8]) -> Option<usize> {
    match (frame.get(12..14)?, frame.get(16..18)) {
        ([0x08, 0x00], _) => Some(14),
        ([0x81, 0x00], Some([0x08, 0x00])) => Some(18),
        _ => None,
    }
}

/// One's-complement residual; [`VALID`] for correct checksums (`0` is the same value).
fn residual(sum: u32) -> u16 {
    match fold(sum) {
        0 => VALID,
        folded => folded,
    }
}

fn header_residual(header: &[u8]) -> u16 {
    residual(sum_words(header, 0))
}

/// Residual of a TCP/UDP segment with the pseudo header of IPv4 header `ip`.
fn l4_residual(ip: &[u8], segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).expect("segments below 64 KiB");
    let pseudo = sum_words(&ip[12..20], 0)
        + u32::from(u16::from_ne_bytes([0, ip[9]]))
        + u32::from(u16::from_ne_bytes(len.to_be_bytes()));
    residual(sum_words(segment, pseudo))
}

/// Asserts `after` equals `before` outside `allowed` (byte ranges).
fn only_changed(before: &[u8], after: &[u8], allowed: &[Range<usize>], what: &str) -> Checked {
    ensure(before.len() == after.len(), || {
        format!("{what}: length {} became {}", before.len(), after.len())
    })?;
    match (0..before.len())
        .find(|i| before[*i] != after[*i] && !allowed.iter().any(|range| range.contains(i)))
    {
        Some(i) => Err(format!(
            "{what}: byte {i} changed {:#04x} -> {:#04x} outside the rewritten fields",
            before[i], after[i]
        )),
        None => Ok(()),
    }
}

fn same_residual(before: u16, after: u16, what: &str) -> Checked {
    ensure(before == after, || {
        let state = if before == VALID {
            "was valid and is now wrong".to_owned()
        } else {
            format!("residual {before:#06x} became {after:#06x}")
        };
        format!("{what} checksum {state}")
    })
}

/// [`same_residual`] of the one's-complement sum over `range` of both frames.
fn same_sum(before: &[u8], after: &[u8], range: Range<usize>, what: &str) -> Checked {
    same_residual(
        header_residual(&before[range.clone()]),
        header_residual(&after[range]),
        what,
    )
}

/// Whether `xdp_lb` may act on the frame at all: IPv4 to a VIP, or IPIP to this node,
/// sent to this node's MAC. Everything else must pass bit for bit unchanged.
fn addressed_to_xdp(frame: &[u8]) -> bool {
    let Some(l3) = l3_of(frame) else {
        return false;
    };
    if frame.len() < l3 + IPV4_HLEN || frame[..6] != NODE_MAC {
        return false;
    }
    let dst = addr(frame, l3 + 16);
    if frame[l3 + 9] == PROTO_IPIP {
        dst == NODE.octets()
    } else {
        VIPS.iter().any(|vip| vip.octets() == dst)
    }
}

/// Checks one `xdp_lb` run of `case`.
pub fn xdp(case: &Case, run: &Run, links: &Links) -> Checked<Outcome> {
    let (input, output) = (&case.frame, &run.frame);
    let outcome = match run.action {
        0 => return Err("XDP_ABORTED".into()),
        XDP_DROP => Outcome::Drop,
        XDP_PASS if output == input => Outcome::PassUntouched,
        XDP_PASS => Outcome::PassRewritten,
        XDP_TX => Outcome::Tx,
        XDP_REDIRECT => Outcome::Redirect,
        other => return Err(format!("unknown XDP action {other}")),
    };
    if !addressed_to_xdp(input) {
        ensure(outcome == Outcome::PassUntouched, || {
            format!(
                "a frame not addressed to the data plane left as {}, not untouched",
                outcome.name()
            )
        })?;
        return Ok(outcome);
    }
    match case.intent {
        Intent::Forward => ensure(
            matches!(
                outcome,
                Outcome::PassRewritten | Outcome::Tx | Outcome::Redirect
            ),
            || {
                format!(
                    "a well-formed flow to a served port left as {}",
                    outcome.name()
                )
            },
        )?,
        Intent::Stranger => ensure(outcome == Outcome::Drop, || {
            format!("IPIP from a stranger left as {}", outcome.name())
        })?,
        Intent::TrackedReply | Intent::Other => {}
    }
    if matches!(outcome, Outcome::Drop | Outcome::PassUntouched) {
        return Ok(outcome);
    }
    ensure(output != input, || "sent out an unchanged frame".into())?;
    rewritten(input, output, run.action, links)?;
    Ok(outcome)
}

fn rewritten(input: &[u8], output: &[u8], action: u32, links: &Links) -> Checked {
    let l3 = l3_of(input).ok_or("rewrote a frame that is not IPv4")?;
    ensure(
        output.len() >= l3 + IPV4_HLEN && output[12..l3] == input[12..l3],
        || "the EtherType or VLAN tag changed".into(),
    )?;
    let in_ip = &input[l3..];
    if output.len() == input.len() + IPV4_HLEN {
        return encapsulated(input, output, l3, action, links);
    }
    if action == XDP_TX && in_ip[9] == PROTO_ICMP {
        return echo_reply(input, output, l3);
    }
    if action == XDP_TX {
        return frag_needed(input, output, l3);
    }
    ensure(action == XDP_PASS, || {
        format!("a DNATed packet left with action {action}")
    })?;
    ensure(output[..12] == input[..12], || {
        "DNAT changed the MAC addresses".into()
    })?;
    if in_ip[9] == PROTO_IPIP {
        ensure(output.len() + IPV4_HLEN == input.len(), || {
            "decapsulation did not remove exactly the outer header".into()
        })?;
        let outer = &in_ip[..IPV4_HLEN];
        let inner = &in_ip[IPV4_HLEN..];
        ensure(
            outer[0] == 0x45
                && scenario::PEERS
                    .iter()
                    .any(|peer| peer.octets() == addr(outer, 12)),
            || "decapsulated a packet that is not IPIP from a peer".into(),
        )?;
        // Tunnelled packets to unknown ports are dropped, never handed to the kernel.
        ensure(addressed_service(inner).is_some(), || {
            "passed a tunnelled packet to an unserved port".into()
        })?;
        return dnat(inner, &output[l3..]);
    }
    dnat(in_ip, &output[l3..])
}

/// The program only forwards packets it checked: IPv4 without options or fragments, a
/// total length inside the frame, to a VIP, with the whole L4 header.
fn sane_vip_packet(ip: &[u8]) -> Checked<usize> {
    let total = usize::from(be16(ip, 2));
    let l4_min = match ip[9] {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        PROTO_ICMP => 8,
        other => return Err(format!("forwarded IP protocol {other}")),
    };
    ensure(ip[0] == 0x45, || {
        format!("forwarded version/IHL {:#04x}", ip[0])
    })?;
    ensure(be16(ip, 6) & 0x3fff == 0, || "forwarded a fragment".into())?;
    ensure((IPV4_HLEN + l4_min..=ip.len()).contains(&total), || {
        format!(
            "forwarded total length {total} with {} bytes of packet",
            ip.len()
        )
    })?;
    ensure(VIPS.iter().any(|vip| vip.octets() == addr(ip, 16)), || {
        "forwarded a packet not to a VIP".into()
    })?;
    Ok(total)
}

/// The service a VIP packet addresses: by its destination, or for an ICMP error by the
/// source of the quoted reply.
fn addressed_service(ip: &[u8]) -> Option<&'static Service> {
    let field = |at: usize, len: usize| ip.get(at..at + len);
    let (socket, port, proto) = if *ip.get(9)? == PROTO_ICMP {
        (field(40, 4)?, field(48, 2)?, *ip.get(37)?)
    } else {
        (field(16, 4)?, field(22, 2)?, ip[9])
    };
    service(
        socket.try_into().ok()?,
        u16::from_be_bytes(port.try_into().ok()?),
        proto,
    )
}

/// A VIP packet DNATed to a pod: `before` and `after` start at the IPv4 header.
fn dnat(before: &[u8], after: &[u8]) -> Checked {
    let total = sane_vip_packet(before)?;
    let pod = addr(after, 16);
    let mut allowed = vec![10..12, 16..20];
    let service = match before[9] {
        PROTO_ICMP => {
            allowed.extend([22..24, 38..40, 40..44, 48..50]);
            ensure(total >= 56, || {
                "steered an ICMP error without a whole quote".into()
            })?;
            let service =
                addressed_service(before).ok_or("steered an ICMP error about no service")?;
            ensure(
                addr(after, 40) == pod && be16(after, 48) == service.pod_port(),
                || "the quoted reply was not rewritten to the pod".into(),
            )?;
            same_sum(before, after, 28..48, "quoted IPv4 header")?;
            same_sum(before, after, 20..total, "ICMP")?;
            service
        }
        proto => {
            let (check, name) = if proto == PROTO_TCP {
                (36, "TCP")
            } else {
                (26, "UDP")
            };
            allowed.extend([22..24, check..check + 2]);
            let service = addressed_service(before).ok_or("DNATed a packet to no service")?;
            ensure(be16(after, 22) == service.pod_port(), || {
                format!(
                    "DNAT to port {}, not {}",
                    be16(after, 22),
                    service.pod_port()
                )
            })?;
            if proto == PROTO_UDP && be16(before, 26) == 0 {
                ensure(be16(after, 26) == 0, || {
                    "a UDP datagram without checksum got one".into()
                })?;
            } else {
                same_residual(
                    l4_residual(&before[..20], &before[20..total]),
                    l4_residual(&after[..20], &after[20..total]),
                    name,
                )?;
            }
            service
        }
    };
    ensure(service.pods.iter().any(|addr| addr.octets() == pod), || {
        format!("DNAT to {pod:?}, not a pod of the service")
    })?;
    same_sum(before, after, 0..20, "IPv4 header")?;
    only_changed(before, after, &allowed, "DNATed packet")
}

fn encapsulated(input: &[u8], output: &[u8], l3: usize, action: u32, links: &Links) -> Checked {
    let inner = &input[l3..];
    let outer = &output[l3..l3 + IPV4_HLEN];
    ensure(output[l3 + IPV4_HLEN..] == *inner, || {
        "the tunnelled packet differs from the input".into()
    })?;
    let total = sane_vip_packet(inner)?;
    ensure(
        outer[0] == 0x45 && outer[9] == PROTO_IPIP && outer[8] == 64,
        || format!("outer header {outer:02x?}"),
    )?;
    ensure(header_residual(outer) == VALID, || {
        "outer IPv4 header checksum is wrong".into()
    })?;
    ensure(usize::from(be16(outer, 2)) == total + IPV4_HLEN, || {
        format!("outer total length {} for an inner {total}", be16(outer, 2))
    })?;
    ensure(
        outer[1] == inner[1] && be16(outer, 6) == be16(inner, 6) & 0x4000 && be16(outer, 4) == 0,
        || "outer TOS/DF/id not derived from the inner header".into(),
    )?;
    ensure(
        addr(outer, 12) == NODE.octets() && is_backend_node(addr(outer, 16)),
        || format!("tunnel {:?} -> {:?}", addr(outer, 12), addr(outer, 16)),
    )?;
    let node = addr(outer, 16);
    let (macs, hop) = if node == PEER.octets() {
        (XDP_TX, Some(links.lan_mac))
    } else if node == FAR.octets() {
        (XDP_REDIRECT, Some(links.far_mac))
    } else {
        ensure(node == PEER2.octets(), || format!("tunnel to {node:?}"))?;
        (XDP_PASS, None)
    };
    ensure(action == macs, || {
        format!("tunnel to {node:?} left with action {action}")
    })?;
    match hop {
        Some(src) => ensure(output[..6] == NEXT_HOP_MAC && output[6..12] == src, || {
            "the tunnelled frame is not addressed to the next hop".into()
        }),
        None => ensure(output[..12] == input[..12], || {
            "the kernel fallback changed the MACs".into()
        }),
    }
}

fn macs_swapped(input: &[u8], output: &[u8]) -> Checked {
    ensure(
        output[..6] == input[6..12] && output[6..12] == input[..6],
        || "the answer does not go back to the sender's MAC".into(),
    )
}

fn echo_reply(input: &[u8], output: &[u8], l3: usize) -> Checked {
    macs_swapped(input, output)?;
    let (before, after) = (&input[l3..], &output[l3..]);
    let total = sane_vip_packet(before)?;
    ensure(before[20] == 8 && after[20] == 0 && after[8] == 64, || {
        "not an echo reply to an echo request".into()
    })?;
    ensure(
        addr(after, 12) == addr(before, 16) && addr(after, 16) == addr(before, 12),
        || "echo reply addresses not swapped".into(),
    )?;
    same_sum(before, after, 0..20, "IPv4 header")?;
    same_sum(before, after, 20..total, "ICMP")?;
    only_changed(before, after, &[8..9, 10..20, 20..21, 22..24], "echo reply")
}

fn frag_needed(input: &[u8], output: &[u8], l3: usize) -> Checked {
    macs_swapped(input, output)?;
    let (before, after) = (&input[l3..], &output[l3..]);
    let total = sane_vip_packet(before)?;
    ensure(
        total + IPV4_HLEN > MTU as usize && be16(before, 6) & 0x4000 != 0,
        || "fragmentation needed for a packet that fits or may be fragmented".into(),
    )?;
    ensure(
        after.len() == 56 && after[0] == 0x45 && be16(after, 2) == 56 && after[9] == PROTO_ICMP,
        || {
            format!(
                "fragmentation needed is {} bytes: {after:02x?}",
                after.len()
            )
        },
    )?;
    ensure(
        addr(after, 12) == addr(before, 16) && addr(after, 16) == addr(before, 12),
        || "fragmentation needed not sent back to the sender".into(),
    )?;
    ensure(header_residual(&after[..20]) == VALID, || {
        "IPv4 header checksum is wrong".into()
    })?;
    ensure(
        after[20] == 3 && after[21] == 4 && be16(after, 26) == MTU as u16 - 20,
        || "not fragmentation needed with the tunnel's MTU".into(),
    )?;
    ensure(header_residual(&after[20..]) == VALID, || {
        "ICMP checksum is wrong".into()
    })?;
    ensure(after[28..] == before[..28], || {
        "the quote is not the packet's first 28 bytes".into()
    })
}

/// BPF_PROG_TEST_RUN builds an skb only for frames whose network header it can pull:
/// an IPv4 frame shorter than Ethernet + IPv4 headers (an IPv6 one shorter than its
/// fixed header) gets EINVAL. The stack never hands such an skb to TC egress either.
pub fn skb_refused(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.len() < 14 + IPV4_HLEN,
        Some([0x86, 0xdd]) => frame.len() < 14 + 40,
        _ => false,
    }
}

/// Offset of the L4 header of a reply `tc_reply` must rewrite: IPv4 TCP/UDP, first
/// fragment, ports and checksum in the frame, its flow recorded before the run.
fn tracked_by_tc(frame: &[u8]) -> Option<(usize, usize)> {
    let l3 = l3_of(frame)?;
    let ip = frame.get(l3..l3 + IPV4_HLEN)?;
    let check = match ip[9] {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return None,
    };
    let ihl = usize::from(ip[0] & 0x0f);
    if ihl < 5 || be16(ip, 6) & 0x1fff != 0 {
        return None;
    }
    let l4 = l3 + ihl * 4;
    let ports = frame.get(l4..l4 + check + 2)?;
    is_tracked_reply(
        addr(ip, 12),
        be16(ports, 0),
        addr(ip, 16),
        be16(ports, 2),
        ip[9],
    )
    .then_some((l3, l4))
}

/// Checks one `tc_reply` run of `case`.
pub fn tc(case: &Case, run: &Run) -> Checked<Outcome> {
    let (input, output) = (&case.frame, &run.frame);
    ensure(run.action == TC_ACT_OK, || {
        format!("tc_reply returned {} instead of TC_ACT_OK", run.action)
    })?;
    let tracked = tracked_by_tc(input);
    if case.intent == Intent::TrackedReply {
        ensure(tracked.is_some(), || {
            "the oracle does not see a tracked reply".into()
        })?;
    }
    match tracked {
        None => {
            ensure(output == input, || "an untracked frame was changed".into())?;
            Ok(Outcome::TcUntouched)
        }
        Some((l3, l4)) => {
            ensure(output != input, || {
                "a tracked reply left unrewritten".into()
            })?;
            reply_rewritten(input, output, l3, l4)?;
            Ok(Outcome::TcRewritten)
        }
    }
}

fn reply_rewritten(input: &[u8], output: &[u8], l3: usize, l4: usize) -> Checked {
    let proto = input[l3 + 9];
    let service =
        service_of_pod(addr(input, l3 + 12), be16(input, l4), proto).ok_or("no service")?;
    ensure(
        addr(output, l3 + 12) == service.vip.octets() && be16(output, l4) == service.port,
        || {
            format!(
                "reply source {:?}:{}, not the service",
                addr(output, l3 + 12),
                be16(output, l4)
            )
        },
    )?;
    let check = l4 + if proto == PROTO_TCP { 16 } else { 6 };
    let mut allowed = vec![l3 + 10..l3 + 16, l4..l4 + 2, check..check + 2];
    let mss = (proto == PROTO_TCP)
        .then(|| mss_value_offset(input, l4))
        .flatten();
    if let Some(mss) = mss {
        let (before, after) = (be16(input, mss), be16(output, mss));
        ensure(after == before.min(MSS_LIMIT), || {
            format!("MSS {before} became {after}")
        })?;
        allowed.push(mss..mss + 2);
    }
    same_sum(input, output, l3..l4, "IPv4 header")?;
    if proto == PROTO_UDP && be16(input, check) == 0 {
        ensure(be16(output, check) == 0, || {
            "a UDP datagram without checksum got one".into()
        })?;
    } else {
        let residuals =
            [input, output].map(|frame| l4_residual(&frame[l3..l3 + IPV4_HLEN], &frame[l4..]));
        same_residual(
            residuals[0],
            residuals[1],
            if proto == PROTO_TCP { "TCP" } else { "UDP" },
        )?;
    }
    only_changed(input, output, &allowed, "reply")
}

/// Where the MSS value of a SYN-ACK's options starts, walking them as the program does.
fn mss_value_offset(frame: &[u8], l4: usize) -> Option<usize> {
    if *frame.get(l4 + 13)? & TCP_SYN_ACK != TCP_SYN_ACK {
        return None;
    }
    let end = l4 + usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let mut off = l4 + 20;
    for _ in 0..40 {
        if off >= end {
            return None;
        }
        match *frame.get(off)? {
            0 => return None,
            1 => off += 1,
            kind => {
                let len = usize::from(*frame.get(off + 1)?);
                if len < 2 || off + len > end {
                    return None;
                }
                if kind == 2 && len == 4 {
                    frame.get(off + 2..off + 4)?;
                    return Some(off + 2);
                }
                off += len;
            }
        }
    }
    None
}
