//! The maps of the data path as this release creates them ([`MapSpec`]), and what
//! becomes of the pinned ones a previous agent left: adopted as they are, carried into
//! a new map (another capacity, or the previous release's layout), or refused (a
//! layout this release does not know) before anything changes.

use std::path::Path;

use aya::{Pod, maps::MapInfo};
use lb_common::{
    layout, maps as names, reasons,
    types::{
        BackendStats, BackendValue, DataplaneConfig, ExpressEntry, FlowKey, FlowValue, NextHop,
        NodeRing, PeerValue, PodRing, RateState, ReplyKey, ReplyValue, ServiceKey, ServiceSlot,
        ServiceValue, VipStats, VipValue,
    },
};

use super::{
    carry::{self, Copier, Kind, Migrated, Move, migrated},
    layout::LayoutRecord,
    loader::{LoadError, PinDir},
    migrations::{FlowsFromInitial, ServicesFromInitial},
};
use crate::model::capacities::Capacities;

/// The layout of one map, as this version and configuration create it.
pub(super) struct MapSpec {
    pub(super) name: &'static str,
    key_size: usize,
    value_size: usize,
    pub(super) max_entries: u32,
    /// The configuration key that sets `max_entries`, if one does.
    setting: Option<&'static str>,
    /// This release's layout version of the map ([`lb_common::layout`]).
    pub(super) layout: u32,
    /// Copies a pinned map of another capacity into this one.
    copy: Copier,
    /// How the pinned maps of the previous layout are converted (none when the layout
    /// has not changed).
    migration: Option<Migrated>,
}

impl MapSpec {
    /// This map in `layout`, which `migration` converts the previous one into.
    fn layout(self, layout: u32, migration: Migrated) -> Self {
        Self {
            layout,
            migration: Some(migration),
            ..self
        }
    }
}

fn spec<K: Pod, V: Pod>(
    name: &'static str,
    kind: Kind,
    max_entries: u32,
    setting: Option<&'static str>,
) -> MapSpec {
    MapSpec {
        name,
        key_size: size_of::<K>(),
        value_size: size_of::<V>(),
        max_entries,
        setting,
        layout: lb_common::layout::INITIAL,
        copy: carry::copier::<K, V>(kind),
        migration: None,
    }
}

/// Every map of the data path: pinned, and checked before a pinned one is reused.
pub(super) fn map_specs(capacities: &Capacities) -> [MapSpec; 19] {
    let ring_slots = capacities.ring_slots();
    [
        spec::<ServiceKey, ServiceValue>(
            names::SERVICES,
            Kind::Hash,
            capacities.service_ports,
            Some("capacities.servicePorts"),
        )
        .layout(layout::SERVICES, migrated::<ServicesFromInitial>()),
        spec::<u32, ServiceSlot>(
            names::SERVICE_SLOTS,
            Kind::Array,
            capacities.service_ports,
            Some("capacities.servicePorts"),
        ),
        spec::<u32, VipValue>(
            names::VIPS,
            Kind::Hash,
            capacities.vips,
            Some("capacities.vips"),
        ),
        spec::<u32, u32>(
            names::VIP_FILTER,
            Kind::Array,
            names::VIP_FILTER_SLOTS,
            None,
        ),
        spec::<u32, NodeRing>(
            names::NODE_RINGS,
            Kind::Array,
            ring_slots,
            Some("capacities.services"),
        ),
        spec::<u32, PodRing>(
            names::POD_RINGS,
            Kind::Array,
            ring_slots,
            Some("capacities.services"),
        ),
        spec::<u32, BackendValue>(
            names::BACKENDS,
            Kind::Hash,
            capacities.backends,
            Some("capacities.backends"),
        ),
        spec::<u32, u32>(
            names::BACKEND_SLOTS,
            Kind::Array,
            capacities.backends,
            Some("capacities.backends"),
        ),
        spec::<u32, NextHop>(
            names::NEXT_HOPS,
            Kind::PerCpuArray,
            capacities.backends,
            Some("capacities.backends"),
        ),
        spec::<u32, PeerValue>(names::PEERS, Kind::Hash, names::MAX_PEERS, None),
        spec::<FlowKey, FlowValue>(
            names::FLOWS,
            Kind::Hash,
            capacities.flows,
            Some("capacities.flows"),
        )
        .layout(layout::FLOWS, migrated::<FlowsFromInitial>()),
        spec::<ReplyKey, ReplyValue>(
            names::REPLY_FLOWS,
            Kind::Hash,
            capacities.reply_flows,
            Some("capacities.replyFlows"),
        ),
        spec::<u32, DataplaneConfig>(names::CONFIG, Kind::Array, 1, None),
        spec::<u32, u64>(names::REASON_STATS, Kind::PerCpuArray, reasons::COUNT, None),
        spec::<u32, VipStats>(
            names::VIP_STATS,
            Kind::PerCpuArray,
            capacities.vips,
            Some("capacities.vips"),
        ),
        spec::<u32, BackendStats>(
            names::BACKEND_STATS,
            Kind::PerCpuArray,
            capacities.backends,
            Some("capacities.backends"),
        ),
        spec::<u32, RateState>(names::ICMP_RATE, Kind::PerCpuArray, 1, None),
        spec::<u32, ExpressEntry>(
            names::EXPRESS,
            Kind::PerCpuArray,
            names::EXPRESS_SLOTS,
            None,
        ),
        spec::<u32, u32>(names::EPOCH, Kind::Array, 1, None),
    ]
}

/// What becomes of the pinned maps: how many this agent adopts as they are, which move
/// into new maps (another capacity or layout), which are not pinned yet.
pub(super) struct Plan<'a> {
    pub(super) fitting: usize,
    pub(super) moves: Vec<Move<'a>>,
    pub(super) unpinned: Vec<&'a MapSpec>,
}

/// Plans the adoption of the pinned maps, refusing those this release cannot use: a
/// layout it does not know (a newer release's), or sizes that contradict the layout.
pub(super) fn check_pinned<'a>(
    pins: &PinDir,
    specs: &'a [MapSpec],
    record: Option<&LayoutRecord>,
) -> Result<Plan<'a>, LoadError> {
    let mut plan = Plan {
        fitting: 0,
        moves: Vec::new(),
        unpinned: Vec::new(),
    };
    for spec in specs {
        // A retired pin is what an interrupted start was carrying: it is the map to take.
        let retired = pins.retired_map(spec.name);
        let resumed = retired.exists();
        let path = if resumed {
            retired
        } else {
            pins.map(spec.name)
        };
        if !path.exists() {
            plan.unpinned.push(spec);
            continue;
        }
        let from = LayoutRecord::version(record, spec.name);
        let info = MapInfo::from_pin(&path)
            .map_err(|error| incompatible(spec, &path, format!("cannot be opened: {error}")))?;
        let copy = check_layout(spec, &path, from, &info)?;
        if resumed || from != spec.layout || info.max_entries() != spec.max_entries {
            plan.moves.push(Move {
                pinned_entries: info.max_entries(),
                spec,
                from,
                copy,
                resumed,
            });
        } else {
            plan.fitting += 1;
        }
    }
    Ok(plan)
}

fn incompatible(spec: &MapSpec, path: &Path, detail: String) -> LoadError {
    LoadError::Incompatible {
        map: spec.name,
        path: path.to_owned(),
        detail,
    }
}

/// How the entries of a pinned map of layout `from` get into this release's map; refuses
/// a layout this release does not know and sizes that contradict the layout.
fn check_layout(
    spec: &MapSpec,
    path: &Path,
    from: u32,
    info: &MapInfo,
) -> Result<Copier, LoadError> {
    if from > spec.layout {
        return Err(incompatible(
            spec,
            path,
            format!(
                "holds layout {from}, written by a newer release of xdplb; this release reads layouts up to {}",
                spec.layout
            ),
        ));
    }
    let (key_size, value_size, copy) = match spec.migration {
        _ if from == spec.layout => (spec.key_size, spec.value_size, spec.copy),
        Some(migration) if migration.from == from => {
            (migration.key_size, migration.value_size, migration.copy)
        }
        _ => {
            return Err(incompatible(
                spec,
                path,
                format!(
                    "holds layout {from}, which this release cannot migrate to its layout {}",
                    spec.layout
                ),
            ));
        }
    };
    let pinned = (info.key_size() as usize, info.value_size() as usize);
    if pinned != (key_size, value_size) {
        return Err(incompatible(
            spec,
            path,
            format!(
                "has {}-byte keys and {}-byte values; layout {from} has {key_size} and {value_size}",
                pinned.0, pinned.1
            ),
        ));
    }
    Ok(copy)
}

pub(super) fn log_move(planned: &Move<'_>) {
    let (spec, from) = (planned.spec, planned.from);
    if from != spec.layout {
        tracing::info!(
            map = spec.name,
            from_layout = from,
            layout = spec.layout,
            "the pinned map has the previous release's layout; its entries move into a new map of this release's"
        );
    } else if planned.pinned_entries != spec.max_entries {
        let setting = spec
            .setting
            .map_or(String::new(), |setting| format!(" ({setting})"));
        tracing::info!(
            map = spec.name,
            pinned = planned.pinned_entries,
            configured = spec.max_entries,
            "the pinned map holds another capacity than configured{setting}; its entries move into a new map"
        );
    }
}

/// Refuses, without changing anything, pinned maps this release could not adopt: call
/// before joining the cluster, so a refused agent never takes part.
pub fn check_pins(capacities: &Capacities, pins: &PinDir) -> Result<(), LoadError> {
    if !pins.maps().exists() {
        return Ok(());
    }
    let specs = map_specs(capacities);
    let record = LayoutRecord::open(pins)?;
    check_pinned(pins, &specs, record.as_ref()).map(drop)
}
