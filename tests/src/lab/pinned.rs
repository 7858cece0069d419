//! Reads an agent's pinned maps from the test process, as the kernel programs see them:
//! which nodes a service's node table points at, how full an LRU flow table is.

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData},
};
use lb_agent::dataplane::loader::PinDir;
use lb_common::{
    maps as names,
    types::{NodeRing, RING_EMPTY, ServiceKey, ServiceValue},
};

/// IANA protocol number of TCP, as `ServiceKey::proto` holds it.
const TCP: u8 = 6;

fn open(pins: &Path, name: &'static str) -> anyhow::Result<Map> {
    let path = PinDir::new(pins).map(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("{name} is no map aya knows"))
}

fn hash<K: Pod, V: Pod>(pins: &Path, name: &'static str) -> anyhow::Result<HashMap<MapData, K, V>> {
    HashMap::try_from(open(pins, name)?).with_context(|| format!("{name} as a hash map"))
}

/// Every node address the node table of the TCP service at `vip:port` points at, in the
/// agent's maps pinned under `pins`.
pub fn node_table_members(
    pins: &Path,
    vip: Ipv4Addr,
    port: u16,
) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
    let services: HashMap<MapData, ServiceKey, ServiceValue> = hash(pins, names::SERVICES)?;
    let key = ServiceKey {
        vip: u32::from_ne_bytes(vip.octets()),
        port: port.to_be(),
        proto: TCP,
        _pad: 0,
    };
    let service = services
        .get(&key, 0)
        .with_context(|| format!("no service {vip}:{port}/tcp in {}", names::SERVICES))?;
    let rings: Array<MapData, NodeRing> = Array::try_from(open(pins, names::NODE_RINGS)?)
        .with_context(|| format!("{} as an array", names::NODE_RINGS))?;
    let ring = rings
        .get(&service.ring_slot, 0)
        .with_context(|| format!("node table slot {}", service.ring_slot))?;
    Ok(ring
        .backends
        .iter()
        .filter(|&&raw| raw != RING_EMPTY)
        .map(|raw| Ipv4Addr::from(raw.to_ne_bytes()))
        .collect())
}

/// How many entries the hash map `name` (e.g. an LRU flow table) holds. Walked with
/// `get_next_key`, which starts over when the current key is evicted meanwhile, so the
/// walk stops at `limit`: read it when the map is quiet.
pub fn entries<K: Pod, V: Pod>(
    pins: &Path,
    name: &'static str,
    limit: usize,
) -> anyhow::Result<usize> {
    let map: HashMap<MapData, K, V> = hash(pins, name)?;
    let mut count = 0;
    for key in map.keys().take(limit) {
        key.with_context(|| format!("walking {name}"))?;
        count += 1;
    }
    Ok(count)
}
