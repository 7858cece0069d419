//! The agent's Prometheus metrics, rendered as OpenMetrics text by
//! [`crate::api::http`] at `/metrics`.
//!
//! Everything the runtime's modules already count (data-path counters in the BPF maps,
//! members by state, ARP and gossip counters) reaches the metrics through the
//! [`AgentStatus`] the provider builds for each scrape, so values are read at scrape
//! time. Two kinds of event are only seen as they happen; the runtime records them in a
//! shared [`Telemetry`]:
//!
//! ```ignore
//! let telemetry = Arc::new(Telemetry::new());
//! // election, when this node takes or gives up a VIP:
//! telemetry.ownership_changed(vip, OwnershipChange::Acquired);
//! // reconciler, around each `Dataplane::apply`:
//! let started = Instant::now();
//! dataplane.apply(&changes)?;
//! telemetry.observe_map_sync(started.elapsed());
//! ```
//!
//! The IPAM (Kubernetes mode, on the agent holding its Lease) counts its allocations,
//! refusals and releases here too ([`Telemetry::ipam_allocated`] and siblings), by pool
//! and reason, and how many addresses each pool has left ([`Telemetry::ipam_pools`]):
//! [`ipam`]. In Kubernetes mode every agent also counts the Service status addresses
//! it ignores ([`Telemetry::status_address_ignored`]), and the requests that could not
//! reach the API server ([`Telemetry::count_kubernetes_unreachable`], from
//! [`crate::sources::kubernetes::outage`]).
//!
//! Errors the agent handles and lives with (a failed map update retried, a rejected
//! configuration file, a failed status write) are counted as they are handled, in
//! `xdplb_errors_total{component,kind}` ([`Telemetry::count_error`]): `component` is the
//! part of the agent ([`Component`]), `kind` the error's `metric_label()`.
//!
//! Every name starts with `xdplb_`; counters end in `_total`.

use std::{
    collections::BTreeMap,
    fmt,
    net::Ipv4Addr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, text},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

pub use self::ipam::{IpamCounts, PoolAddresses};
use crate::status::{AgentStatus, MemberState, VipCounters};

mod ipam;

/// The `Content-Type` of [`Telemetry::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PREFIX: &str = "xdplb";

/// Gossip drop reasons that mean a message failed authentication.
const AUTH_FAILURES: [&str; 2] = ["forged", "replayed"];

/// Whether this node took or gave up a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OwnershipChange {
    Acquired,
    Released,
}

impl OwnershipChange {
    fn name(self) -> &'static str {
        match self {
            Self::Acquired => "acquired",
            Self::Released => "released",
        }
    }
}

/// The part of the agent an error is counted for: the `component` of
/// `xdplb_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// Updating the BPF maps.
    Dataplane,
    /// Reading the standalone file again.
    FileSource,
    /// Turning the Kubernetes API's objects into a cluster to run.
    KubernetesSource,
    /// The IPAM's Service reconciliation, status writes and events.
    IpamController,
    /// The IPAM's Lease election.
    IpamLease,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::Dataplane => "dataplane",
            Self::FileSource => "file_source",
            Self::KubernetesSource => "kubernetes_source",
            Self::IpamController => "ipam_controller",
            Self::IpamLease => "ipam_lease",
        }
    }
}

/// Events counted by the runtime; shared as `Arc<Telemetry>`.
#[derive(Debug)]
pub struct Telemetry {
    ownership_changes: Mutex<BTreeMap<(Ipv4Addr, OwnershipChange), u64>>,
    map_sync: Histogram,
    ipam: Mutex<IpamCounts>,
    ignored_status_addresses: AtomicU64,
    /// `None` outside Kubernetes mode, where the counter is not shown.
    kubernetes_unreachable: Mutex<Option<u64>>,
    errors: Mutex<BTreeMap<(Component, &'static str), u64>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        Self {
            ownership_changes: Mutex::new(BTreeMap::new()),
            // 0.25 ms to about 4 s: one VIP's ports up to a full reload of large rings.
            map_sync: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            ipam: Mutex::new(IpamCounts::default()),
            ignored_status_addresses: AtomicU64::new(0),
            kubernetes_unreachable: Mutex::new(None),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts an error of `component` whose `metric_label()` is `kind`; returns how many
    /// of that component and kind there were so far.
    pub fn count_error(&self, component: Component, kind: &'static str) -> u64 {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let count = errors.entry((component, kind)).or_default();
        *count += 1;
        *count
    }

    /// Adds `requests` that could not reach the Kubernetes API server (0 shows the
    /// counter).
    pub fn count_kubernetes_unreachable(&self, requests: u64) {
        *self
            .kubernetes_unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(0) += requests;
    }

    /// `None` outside Kubernetes mode.
    pub fn kubernetes_unreachable(&self) -> Option<u64> {
        *self
            .kubernetes_unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A Service's status newly shows an address this node may not own (see
    /// [`crate::sources::kubernetes::translate::IgnoredAddress`]).
    pub fn status_address_ignored(&self) {
        self.ignored_status_addresses
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn ignored_status_addresses(&self) -> u64 {
        self.ignored_status_addresses.load(Ordering::Relaxed)
    }

    pub fn ownership_changed(&self, vip: Ipv4Addr, change: OwnershipChange) {
        let mut changes = self
            .ownership_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *changes.entry((vip, change)).or_default() += 1;
    }

    /// Records how long one update of the BPF maps took.
    pub fn observe_map_sync(&self, elapsed: Duration) {
        self.map_sync.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics exposition: `status`'s live values and the recorded events.
    pub fn render(&self, status: AgentStatus) -> Result<String, fmt::Error> {
        let scrape = Scrape {
            status,
            ownership_changes: self
                .ownership_changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            map_sync: self.map_sync.clone(),
            ipam: self.ipam_counts(),
            ignored_status_addresses: self.ignored_status_addresses(),
            kubernetes_unreachable: self.kubernetes_unreachable(),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(scrape));
        let mut out = String::new();
        text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The values of one scrape.
#[derive(Debug)]
struct Scrape {
    status: AgentStatus,
    ownership_changes: BTreeMap<(Ipv4Addr, OwnershipChange), u64>,
    map_sync: Histogram,
    ipam: IpamCounts,
    ignored_status_addresses: u64,
    kubernetes_unreachable: Option<u64>,
    errors: BTreeMap<(Component, &'static str), u64>,
}

type Labels = Vec<(&'static str, String)>;

/// A per-VIP counter: name (without `_total`), help, value.
type VipCounter = (&'static str, &'static str, fn(&VipCounters) -> u64);

const VIP_COUNTERS: [VipCounter; 8] = [
    (
        "vip_packets",
        "Packets to the VIP seen by this node's XDP program",
        |c| c.packets,
    ),
    ("vip_bytes", "Bytes of those packets", |c| c.bytes),
    (
        "vip_dropped_packets",
        "Packets to the VIP dropped by this node",
        |c| c.dropped,
    ),
    (
        "vip_encapsulated_packets",
        "Packets to the VIP tunnelled to another node",
        |c| c.encapsulated,
    ),
    (
        "vip_delivered_packets",
        "Packets to the VIP delivered to a pod on this node",
        |c| c.delivered_local,
    ),
    (
        "vip_icmp_replies",
        "ICMP echo replies and fragmentation-needed messages sent for the VIP",
        |c| c.icmp_replies,
    ),
    (
        "vip_reply_packets",
        "Replies of this node's pods rewritten to come from the VIP",
        |c| c.reply_packets,
    ),
    ("vip_reply_bytes", "Bytes of those replies", |c| {
        c.reply_bytes
    }),
];

/// The metric types of this module's families besides the histogram.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Self::Counter => MetricType::Counter,
            Self::Gauge => MetricType::Gauge,
        }
    }

    fn encode(self, value: u64, encoder: MetricEncoder<'_>) -> fmt::Result {
        match self {
            Self::Counter => ConstCounter::new(value).encode(encoder),
            Self::Gauge => ConstGauge::new(value).encode(encoder),
        }
    }
}

/// A metric with one sample per label set.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind.metric_type())?;
    for (labels, value) in samples {
        kind.encode(value, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: Kind,
    value: u64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, kind.metric_type())?;
    kind.encode(value, metric)
}

fn vip_label(vip: Ipv4Addr) -> Labels {
    vec![("vip", vip.to_string())]
}

impl Scrape {
    fn encode_vips(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let vips = &self.status.vips;
        for (name, help, value) in VIP_COUNTERS {
            let samples = vips.iter().filter_map(|vip| {
                let counters = vip.counters.as_ref()?;
                Some((vip_label(vip.vip), value(counters)))
            });
            family(encoder, name, help, Kind::Counter, samples)?;
        }
        family(
            encoder,
            "vip_owned",
            "1 if this node owns the VIP (answers ARP for it)",
            Kind::Gauge,
            vips.iter()
                .map(|vip| (vip_label(vip.vip), u64::from(vip.owned_here))),
        )?;
        family(
            encoder,
            "vip_ready_backends",
            "Endpoints of the VIP's services that take new flows",
            Kind::Gauge,
            vips.iter()
                .map(|vip| (vip_label(vip.vip), u64::from(vip.backends_ready))),
        )?;
        family(
            encoder,
            "ownership_changes",
            "Times this node acquired or released a VIP",
            Kind::Counter,
            self.ownership_changes.iter().map(|((vip, change), count)| {
                let mut labels = vip_label(*vip);
                labels.push(("change", change.name().to_owned()));
                (labels, *count)
            }),
        )
    }

    fn encode_node(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        single(
            encoder,
            "ready",
            "1 once the data path is attached and the first state is applied",
            Kind::Gauge,
            u64::from(self.status.ready),
        )?;
        family(
            encoder,
            "packets",
            "Packets seen by the XDP and TC programs, by verdict reason",
            Kind::Counter,
            self.status
                .reasons
                .iter()
                .map(|(reason, count)| (vec![("reason", reason.clone())], *count)),
        )?;
        single(
            encoder,
            "ignored_status_addresses",
            "Service status addresses no valid AddressPool lists (or beyond the Service's one VIP) that this node ignored: never announced nor forwarded",
            Kind::Counter,
            self.ignored_status_addresses,
        )?;
        if let Some(arp) = &self.status.arp {
            let counters = [
                (
                    "arp_requests",
                    "ARP requests received for VIPs this node owns",
                    arp.requests,
                ),
                (
                    "arp_replies",
                    "ARP replies sent for VIPs this node owns",
                    arp.replies,
                ),
                (
                    "arp_gratuitous",
                    "Gratuitous ARP frames sent",
                    arp.gratuitous,
                ),
                (
                    "arp_send_errors",
                    "ARP frames the socket would not send",
                    arp.send_errors,
                ),
                (
                    "arp_link_outages",
                    "Times the ARP interface's link went away; answers wait until it is back",
                    arp.link_outages,
                ),
            ];
            for (name, help, count) in counters {
                single(encoder, name, help, Kind::Counter, count)?;
            }
        }
        let map_sync = encoder.encode_descriptor(
            "map_sync_duration_seconds",
            "Time to bring the BPF maps to a new desired state",
            None,
            MetricType::Histogram,
        )?;
        self.map_sync.encode(map_sync)
    }

    fn encode_gossip(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let members = &self.status.members;
        family(
            encoder,
            "gossip_members",
            "Gossip members this node knows, by state",
            Kind::Gauge,
            MemberState::ALL.map(|state| {
                let count = members
                    .iter()
                    .filter(|member| member.state == state)
                    .count();
                (
                    vec![("state", state.name().to_owned())],
                    u64::try_from(count).unwrap_or(u64::MAX),
                )
            }),
        )?;
        let Some(gossip) = &self.status.gossip else {
            return Ok(());
        };
        // While gossip runs, authentication failures are always exposed (alerts see no gap).
        let mut dropped = gossip.dropped.clone();
        for reason in AUTH_FAILURES {
            dropped.entry(reason.to_owned()).or_default();
        }
        family(
            encoder,
            "gossip_dropped",
            "Gossip datagrams dropped, by reason (forged and replayed: authentication failures)",
            Kind::Counter,
            dropped
                .into_iter()
                .map(|(reason, count)| (vec![("reason", reason)], count)),
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_node(&mut encoder)?;
        self.encode_vips(&mut encoder)?;
        self.encode_gossip(&mut encoder)?;
        self.encode_ipam(&mut encoder)?;
        family(
            &mut encoder,
            "errors",
            "Errors the agent handled and went on from, by the part of the agent and the error's kind",
            Kind::Counter,
            self.errors.iter().map(|((component, kind), count)| {
                let labels = vec![
                    ("component", component.name().to_owned()),
                    ("kind", (*kind).to_owned()),
                ];
                (labels, *count)
            }),
        )?;
        match self.kubernetes_unreachable {
            Some(requests) => single(
                &mut encoder,
                "kubernetes_unreachable",
                "Requests to the Kubernetes API server that could not reach it (the log says when an outage starts and ends)",
                Kind::Counter,
                requests,
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
