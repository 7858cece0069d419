//! Backend selection: the per-flow cache in front of two consistent-hash levels
//! (backend node, then local pod), both weighted Maglev tables built by user space.

use lb_common::{
    hash::{NODE_SEED, POD_SEED, flow_hash},
    reasons,
    types::{
        FlowKey, FlowValue, NodeRing, PodRing, RING_EMPTY, SERVICE_F_LOCAL_ONLY, ServiceValue,
    },
};

use crate::{
    maps::{BACKENDS, FLOWS, NODE_RINGS, POD_RINGS},
    stats,
    verdict::Verdict,
};

/// Where the node level sends a flow.
#[derive(Clone, Copy)]
pub enum Target {
    Local,
    Remote(u32),
}

/// A Maglev table: maps a flow hash to a backend address.
trait Ring {
    fn at(&self, hash: u32) -> u32;
}

impl Ring for NodeRing {
    #[inline(always)]
    fn at(&self, hash: u32) -> u32 {
        slot(&self.backends, hash)
    }
}

impl Ring for PodRing {
    #[inline(always)]
    fn at(&self, hash: u32) -> u32 {
        slot(&self.backends, hash)
    }
}

/// The backend in the table slot for `hash`. LLVM turns `%` by a constant into a
/// multiply and shift the verifier cannot bound, so the index is hidden from LLVM and
/// bounds-checked again where the verifier sees it.
#[inline(always)]
fn slot<const N: usize>(backends: &[u32; N], hash: u32) -> u32 {
    let index = core::hint::black_box((hash % N as u32) as usize);
    backends.get(index).copied().unwrap_or(RING_EMPTY)
}

#[inline(always)]
fn pick<R: Ring>(ring: Option<&R>, flow: &FlowKey, seed: u32) -> Result<u32, Verdict> {
    let hash = flow_hash(
        flow.client,
        flow.client_port,
        flow.vip,
        flow.vip_port,
        flow.proto,
        seed,
    );
    match ring.map(|ring| ring.at(hash)) {
        Some(backend) if backend != RING_EMPTY => Ok(backend),
        _ => Err(Verdict::drop(reasons::DROP_NO_BACKEND)),
    }
}

/// A cached backend is kept while it exists at all: draining backends keep their flows.
#[inline(always)]
fn alive(backend: u32) -> bool {
    backend != RING_EMPTY && BACKENDS.get_ptr(backend).is_some()
}

/// The flow's cache entry, if any.
#[inline(always)]
fn cached(flow: &FlowKey) -> Option<*mut FlowValue> {
    FLOWS.get_ptr_mut(flow)
}

/// Records one level's choice, keeping what the other level stored.
#[inline(always)]
fn remember(flow: &FlowKey, entry: Option<*mut FlowValue>, update: impl FnOnce(&mut FlowValue)) {
    match entry {
        // SAFETY: the pointer came from a lookup in this run; LRU values stay mapped for
        // the program's lifetime, and a racing writer can at worst overwrite our choice.
        Some(value) => update(unsafe { &mut *value }),
        None => {
            let mut value = FlowValue::default();
            update(&mut value);
            // A failed insert only means the next packet selects again.
            let _ = FLOWS.insert(flow, value, 0);
        }
    }
}

/// Node-level choice for a flow arriving from the LAN.
#[inline(always)]
pub fn node(flow: &FlowKey, service: &ServiceValue, own_addr: u32) -> Result<Target, Verdict> {
    if service.flags & SERVICE_F_LOCAL_ONLY != 0 {
        return Ok(Target::Local);
    }
    let entry = cached(flow);
    // SAFETY: see `remember`.
    let hit = entry
        .map(|value| unsafe { (*value).node })
        .filter(|node| alive(*node));
    let node = match hit {
        Some(node) => {
            stats::count(reasons::FLOW_CACHE_HIT);
            node
        }
        None => {
            stats::count(reasons::FLOW_CACHE_MISS);
            let node = pick(NODE_RINGS.get(service.ring_slot), flow, NODE_SEED)?;
            remember(flow, entry, |value| value.node = node);
            node
        }
    };
    Ok(if node == own_addr {
        Target::Local
    } else {
        Target::Remote(node)
    })
}

/// Pod-level choice on the node that delivers the flow.
#[inline(always)]
pub fn pod(flow: &FlowKey, service: &ServiceValue) -> Result<u32, Verdict> {
    let entry = cached(flow);
    // SAFETY: see `remember`.
    let hit = entry
        .map(|value| unsafe { (*value).pod })
        .filter(|pod| alive(*pod));
    if let Some(pod) = hit {
        return Ok(pod);
    }
    let pod = pick(POD_RINGS.get(service.ring_slot), flow, POD_SEED)?;
    remember(flow, entry, |value| value.pod = pod);
    Ok(pod)
}
