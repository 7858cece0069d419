//! `xdp_lb`: classifies every frame on the LAN interface and dispatches VIP traffic to
//! the reply, tunnel or local-delivery paths. Non-VIP traffic leaves untouched after one
//! array lookup in the VIP prefilter (and a hash lookup only when its slot holds a VIP).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    reasons,
    types::{
        DataplaneConfig, FlowKey, PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP, ServiceKey,
        ServiceValue, VIP_F_DROP_UNKNOWN_PORTS, VipValue,
    },
    vip_filter,
};

use crate::{
    encap, express,
    icmp::{self, Message},
    maps::{CONFIG, PEERS, SERVICES, VIP_FILTER, VIPS},
    nat,
    parse::{self, ETH_HLEN, EthHdr, IP_MF_OFFSET, IPV4_HLEN, Ipv4Hdr, Ports, TCP_HLEN, UDP_HLEN},
    select::{self, Entry, Target},
    stats,
    verdict::{Outcome, Verdict},
};

/// How a VIP packet reached this node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// From a client on the LAN: this node owns the VIP. With the epoch read before the
    /// packet's first lookup, which an express entry of its decision would carry.
    Lan(u32),
    /// Decapsulated from a peer that chose this node as the flow's backend.
    Tunnel,
}

impl Path {
    #[inline(always)]
    const fn delivered(self) -> u32 {
        match self {
            Path::Lan(_) => reasons::PASS_LOCAL_DNAT,
            Path::Tunnel => reasons::PASS_DECAP_DNAT,
        }
    }
}

/// What a forwarded VIP packet carries, which decides how it is DNATed.
#[derive(Clone, Copy)]
enum Payload {
    Transport,
    IcmpError,
}

/// Everything a forwarding decision needs about one VIP flow. Plain values (the flow
/// entry as a raw pointer) only: the verifier rejects the pointer packing LLVM does for
/// returned structs of references.
#[derive(Clone, Copy)]
struct Flow {
    key: FlowKey,
    service: ServiceValue,
    /// The flow's `FLOWS` entry, as far as it was looked up already.
    entry: Entry,
    /// The epoch read before the packet's first lookup, when a decision to tunnel it may
    /// be remembered in its `EXPRESS` entry; 0 when not.
    epoch: u32,
    path: Path,
    /// A TCP SYN without ACK: the client opens the connection, so no cached choice of
    /// an earlier one may stand for it.
    opening: bool,
}

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let verdict = match classify(ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    };
    stats::count(verdict.reason);
    verdict.action
}

#[inline(always)]
fn malformed() -> Verdict {
    Verdict::drop(reasons::DROP_MALFORMED)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Outcome {
    let l3 = parse::ipv4_offset(ctx).ok_or(Verdict::pass(reasons::PASS_NOT_IPV4))?;
    // Too short to tell the destination: not ours to judge.
    let ip: Ipv4Hdr = parse::read(ctx, l3).ok_or(Verdict::pass(reasons::PASS_NOT_VIP))?;
    if ip.proto == PROTO_IPIP {
        return tunnel(ctx, l3, &ip, &config());
    }
    if !maybe_vip(ip.daddr) {
        return Err(Verdict::pass(reasons::PASS_NOT_VIP));
    }
    let epoch = express::epoch();
    if let Some(hit) = express::forward(ctx, l3, &ip, epoch) {
        count_vip(hit.stats_index, hit.len as u64, &hit.verdict);
        return Ok(hit.verdict);
    }
    let dest = lookup_dest(ctx, l3, &ip).ok_or(Verdict::pass(reasons::PASS_NOT_VIP))?;
    let config = config();
    addressed_here(ctx, &config)?;
    vip_traffic(ctx, l3, &dest, &config, Path::Lan(epoch))
}

/// What the maps say about a VIP packet's destination.
#[derive(Clone, Copy)]
struct Dest {
    vip: VipValue,
    /// The service of the packet's port, when it was looked up already.
    service: Option<ServiceValue>,
    /// The flow's `FLOWS` entry, as far as it was looked up already.
    entry: Entry,
}

/// The destination of a packet to a VIP (its slot in the prefilter counts one), `None`
/// for any other. TCP and UDP to a service
/// port (the bulk of VIP traffic) are found through the flow's cache entry or one
/// `SERVICES` lookup, either carrying the VIP's statistics index; everything else, and
/// any header the lookups cannot read plainly, is looked up in `VIPS` and judged in full
/// later.
#[inline(always)]
fn lookup_dest(ctx: &XdpContext, l3: usize, ip: &Ipv4Hdr) -> Option<Dest> {
    if let Some((service, entry)) = service_port(ctx, l3, ip) {
        let vip = VipValue {
            stats_index: service.stats_index,
            // Only consulted for ports without a service.
            flags: 0,
        };
        return Some(Dest {
            vip,
            service: Some(service),
            entry,
        });
    }
    // SAFETY: the value is copied out at once.
    let vip = unsafe { VIPS.get(ip.daddr) }.copied()?;
    Some(Dest {
        vip,
        service: None,
        entry: Entry::Unread,
    })
}

/// The service of a TCP or UDP packet without IP options, with the flow's cache entry
/// as far as it was looked up; `None` for others. Flow first: an established flow's
/// entry names its service's slot, which spares the `SERVICES` lookup; a connection's
/// first packet (which has no entry worth reading), a flow without an entry, and one
/// whose slot no longer holds its service look the service up.
#[inline(always)]
fn service_port(ctx: &XdpContext, l3: usize, ip: &Ipv4Hdr) -> Option<(ServiceValue, Entry)> {
    if (ip.proto != PROTO_TCP && ip.proto != PROTO_UDP) || ip.version_ihl != 0x45 {
        return None;
    }
    let ports: Ports = parse::read(ctx, l3 + IPV4_HLEN)?;
    let key = parse::flow_key(ip, &ports);
    let service_key = service_key(&key);
    let entry = if parse::opens_connection(ctx, l3, ip) {
        Entry::Unread
    } else {
        Entry::read(&key)
    };
    if let Some(cached) = entry.service(&service_key) {
        return Some(cached);
    }
    // SAFETY: the value is copied out at once.
    let service = unsafe { SERVICES.get(service_key) }.copied()?;
    Some((service, entry))
}

/// The `SERVICES` key of a flow's service.
#[inline(always)]
fn service_key(flow: &FlowKey) -> ServiceKey {
    ServiceKey {
        vip: flow.vip,
        port: flow.vip_port,
        proto: flow.proto,
        _pad: 0,
    }
}

#[inline(always)]
fn config() -> DataplaneConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// Only the node a frame is addressed to may act on it. Others see VIP frames too when a
/// switch floods unknown unicast (the owner's port went down), a bridge is promiscuous,
/// or a client's stale ARP entry names a MAC several ports see; forwarding those would
/// duplicate the client's packets. They go to the kernel untouched, which forwards them
/// as a bridge would or drops them as another host's. Checked only once a VIP (or this
/// node's tunnel address) matched, so other traffic pays nothing for it. An all-zero MAC
/// is "not configured" and accepts every destination, so a loader that sets none keeps
/// working.
#[inline(always)]
fn addressed_here(ctx: &XdpContext, config: &DataplaneConfig) -> Result<(), Verdict> {
    if parse::is_zero_mac(&config.mac) {
        return Ok(());
    }
    let eth: EthHdr = parse::read(ctx, 0).ok_or_else(malformed)?;
    if parse::same_mac(&eth.dst, &config.mac) {
        Ok(())
    } else {
        Err(Verdict::pass(reasons::PASS_NOT_OUR_MAC))
    }
}

/// The VIP `addr`, if it is one.
#[inline(always)]
fn lookup_vip(addr: u32) -> Option<Dest> {
    if !maybe_vip(addr) {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let vip = unsafe { VIPS.get(addr) }.copied()?;
    Some(Dest {
        vip,
        service: None,
        entry: Entry::Unread,
    })
}

/// False only when no VIP folds to `addr`'s slot: then `addr` is surely no VIP.
#[inline(always)]
fn maybe_vip(addr: u32) -> bool {
    VIP_FILTER
        .get(vip_filter::slot(addr))
        .is_some_and(|count| *count != 0)
}

/// IPIP addressed to this node: accepted only from peers and only around VIP traffic.
#[inline(always)]
fn tunnel(ctx: &XdpContext, l3: usize, outer: &Ipv4Hdr, config: &DataplaneConfig) -> Outcome {
    if config.node_addr == 0 || outer.daddr != config.node_addr {
        return Err(Verdict::pass(reasons::PASS_NOT_VIP));
    }
    addressed_here(ctx, config)?;
    if PEERS.get_ptr(outer.saddr).is_none() {
        return Err(Verdict::drop(reasons::DROP_IPIP_STRANGER));
    }
    check_header(ctx, l3, parse::frame_len(ctx))?;
    let inner: Ipv4Hdr = parse::read(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    let dest = (inner.version() == 4)
        .then(|| lookup_vip(inner.daddr))
        .flatten()
        .ok_or(Verdict::drop(reasons::DROP_IPIP_NOT_VIP))?;
    encap::decapsulate(ctx, l3)?;
    vip_traffic(ctx, l3, &dest, config, Path::Tunnel)
}

/// Dispatches a VIP packet by protocol once its header passed the checks, counting the
/// packet and its drop, if it ends in one.
#[inline(always)]
fn vip_traffic(
    ctx: &XdpContext,
    l3: usize,
    dest: &Dest,
    config: &DataplaneConfig,
    path: Path,
) -> Outcome {
    // One helper call for the length, used by every check and counter below.
    let len = parse::frame_len(ctx);
    // A match, not a closure: LLVM keeps a closure called from both paths out of line,
    // a BPF-to-BPF call on every VIP packet.
    let dispatched = match check_header(ctx, l3, len) {
        Ok(ip) => match ip.proto {
            PROTO_TCP | PROTO_UDP => transport(ctx, l3, &ip, dest, config, path, len),
            PROTO_ICMP => icmp_to_vip(ctx, l3, &ip, &dest.vip, config, path, len),
            _ => Err(Verdict::drop(reasons::DROP_UNSUPPORTED_PROTO)),
        },
        Err(verdict) => Err(verdict),
    };
    let verdict = match dispatched {
        Ok(verdict) | Err(verdict) => verdict,
    };
    count_vip(dest.vip.stats_index, len as u64, &verdict);
    Ok(verdict)
}

/// Counts a VIP packet and what became of it in one write of the VIP's counters: each
/// lookup of them costs as much as the counting itself.
#[inline(always)]
fn count_vip(stats_index: u32, bytes: u64, verdict: &Verdict) {
    stats::vip(stats_index, |stats| {
        stats.packets += 1;
        stats.bytes += bytes;
        match verdict.reason {
            // Encapsulated by the express path, or by `forward`, then sent or handed to
            // the kernel to route.
            reasons::TX_EXPRESS | reasons::TX_ENCAP | reasons::PASS_FIB_FALLBACK => {
                stats.encapsulated += 1
            }
            reasons::PASS_LOCAL_DNAT | reasons::PASS_DECAP_DNAT => stats.delivered_local += 1,
            _ if verdict.is_drop() => stats.dropped += 1,
            _ => {}
        }
    });
}

/// The IPv4 sanity checks VIP traffic must pass: no options, no fragments, a total
/// length that fits the frame of `frame_len` bytes.
#[inline(always)]
fn check_header(ctx: &XdpContext, l3: usize, frame_len: usize) -> Result<Ipv4Hdr, Verdict> {
    let ip: Ipv4Hdr = parse::read(ctx, l3).ok_or_else(malformed)?;
    if ip.version() != 4 || ip.ihl() < 5 {
        return Err(malformed());
    }
    if ip.ihl() > 5 {
        return Err(Verdict::drop(reasons::DROP_IP_OPTIONS));
    }
    if ip.frag_bits() & IP_MF_OFFSET != 0 {
        return Err(Verdict::drop(reasons::DROP_FRAGMENT));
    }
    let len = usize::from(ip.total_len());
    if len < IPV4_HLEN || l3 + len > frame_len {
        return Err(malformed());
    }
    Ok(ip)
}

#[inline(always)]
fn transport(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv4Hdr,
    dest: &Dest,
    config: &DataplaneConfig,
    path: Path,
    len: usize,
) -> Outcome {
    let l4_len = if ip.proto == PROTO_TCP {
        TCP_HLEN
    } else {
        UDP_HLEN
    };
    // With `check_header`'s length check this puts the whole L4 header in the frame.
    if usize::from(ip.total_len()) < IPV4_HLEN + l4_len {
        return Err(malformed());
    }
    let ports: Ports = parse::read(ctx, l3 + IPV4_HLEN).ok_or_else(malformed)?;
    if let Path::Lan(_) = path {
        icmp::check_fits(ctx, l3, ip, config, dest.vip.stats_index)?;
    }
    let key = parse::flow_key(ip, &ports);
    let mut flow = match dest.service {
        // Looked up with this very key: `check_header` admitted no IP options.
        Some(service) => known_flow(key, service, path, dest.entry),
        None => resolve(key, &dest.vip, path)?,
    };
    flow.opening = parse::opens_connection(ctx, l3, ip);
    // The express path serves only frames without a VLAN tag.
    if let (Path::Lan(epoch), ETH_HLEN) = (path, l3) {
        flow.epoch = epoch;
    }
    forward(ctx, l3, &flow, config, Payload::Transport, len)
}

#[inline(always)]
fn icmp_to_vip(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv4Hdr,
    vip: &VipValue,
    config: &DataplaneConfig,
    path: Path,
    len: usize,
) -> Outcome {
    match icmp::classify(ctx, l3, ip)? {
        Message::EchoRequest if matches!(path, Path::Lan(_)) => {
            icmp::echo_reply(ctx, l3, config, vip.stats_index)
        }
        // The owner answers pings itself; a tunnelled one is not ours to answer.
        Message::EchoRequest => Err(Verdict::drop(reasons::DROP_UNSUPPORTED_PROTO)),
        Message::Error(key) => {
            let flow = resolve(key, vip, path)?;
            let verdict = forward(ctx, l3, &flow, config, Payload::IcmpError, len)?;
            stats::count(reasons::ICMP_ERROR_STEERED);
            Ok(verdict)
        }
    }
}

/// The service a flow addresses; unknown ports pass or drop per the VIP's flag, and
/// always drop when tunnelled.
#[inline(always)]
fn resolve(key: FlowKey, vip: &VipValue, path: Path) -> Result<Flow, Verdict> {
    // SAFETY: the value is copied out at once.
    match unsafe { SERVICES.get(service_key(&key)) }.copied() {
        Some(service) => Ok(known_flow(key, service, path, Entry::Unread)),
        // A peer tunnels only ports it knows; this node not knowing the port means the
        // two disagree for a moment, and handing the packet to the kernel would route
        // it back to the VIP owner, which could tunnel it here again.
        None if vip.flags & VIP_F_DROP_UNKNOWN_PORTS != 0 || path == Path::Tunnel => {
            Err(Verdict::drop(reasons::DROP_UNKNOWN_PORT))
        }
        None => Err(Verdict::pass(reasons::PASS_UNKNOWN_PORT)),
    }
}

/// A flow whose packet is not remembered in the express cache (yet).
#[inline(always)]
fn known_flow(key: FlowKey, service: ServiceValue, path: Path, entry: Entry) -> Flow {
    Flow {
        key,
        service,
        entry,
        epoch: 0,
        path,
        opening: false,
    }
}

/// Sends the flow's packet (a frame of `len` bytes) to its backend node, or delivers it
/// here.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    l3: usize,
    flow: &Flow,
    config: &DataplaneConfig,
    payload: Payload,
    len: usize,
) -> Outcome {
    let target = match flow.path {
        Path::Lan(_) => select::node(
            &flow.key,
            &flow.service,
            config.node_addr,
            flow.opening,
            flow.entry,
        )?,
        // The sender already chose this node: never tunnel twice.
        Path::Tunnel => Target::Local,
    };
    let bytes = len as u64;
    match target {
        Target::Remote(node) => {
            let decision = express::Decision {
                key: flow.key,
                epoch: flow.epoch,
                stats_index: flow.service.stats_index,
            };
            let verdict = encap::encapsulate(ctx, l3, config.node_addr, &node, |hop| {
                express::remember(&decision, config, &node, hop);
            })?;
            stats::backend(node.slot, bytes);
            Ok(verdict)
        }
        Target::Local => {
            let pod = select::pod(&flow.key, &flow.service, flow.entry.for_pod())?;
            let port = flow.service.target_port;
            match payload {
                Payload::Transport => {
                    nat::dnat(ctx, l3, &flow.key, pod.addr, port, flow.service.stats_index)?
                }
                Payload::IcmpError => icmp::dnat_error(ctx, l3, &flow.key, pod.addr, port)?,
            }
            stats::backend(pod.slot, bytes);
            Ok(Verdict::pass(flow.path.delivered()))
        }
    }
}
