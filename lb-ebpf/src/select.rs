//! Backend selection: the per-flow cache in front of two consistent-hash levels
//! (backend node, then local pod), both weighted Maglev tables built by user space.

use lb_common::{
    hash::{NODE_SEED, POD_SEED, flow_hash},
    reasons,
    types::{
        FlowKey, FlowValue, NO_SLOT, NodeRing, PodRing, RING_EMPTY, SERVICE_F_LOCAL_ONLY,
        ServiceValue,
    },
};

use crate::{
    maps::{BACKEND_SLOTS, BACKENDS, FLOWS, NODE_RINGS, POD_RINGS},
    stats,
    verdict::Verdict,
};

/// A backend (node or pod) as a flow uses it.
#[derive(Clone, Copy)]
pub struct Backend {
    pub addr: u32,
    /// Its index in the per-backend arrays; [`NO_SLOT`] if it has none.
    pub slot: u32,
}

/// Where the node level sends a flow.
#[derive(Clone, Copy)]
pub enum Target {
    Local,
    Remote(Backend),
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
fn pick<R: Ring>(ring: Option<&R>, flow: &FlowKey, seed: u32) -> Result<Backend, Verdict> {
    let hash = flow_hash(
        flow.client,
        flow.client_port,
        flow.vip,
        flow.vip_port,
        flow.proto,
        seed,
    );
    match ring.map(|ring| ring.at(hash)) {
        Some(addr) if addr != RING_EMPTY => Ok(Backend {
            addr,
            slot: slot_of(addr),
        }),
        _ => Err(Verdict::drop(reasons::DROP_NO_BACKEND)),
    }
}

/// The slot of a backend a table names. User space writes a backend before any table
/// names it, so [`NO_SLOT`] only shows in a race; the flow then selects again.
#[inline(always)]
fn slot_of(addr: u32) -> u32 {
    match BACKENDS.get_ptr(addr) {
        // SAFETY: the value is read at once.
        Some(value) => unsafe { (*value).slot },
        None => NO_SLOT,
    }
}

/// A cached backend is kept while its slot still holds it, draining ones included: user
/// space clears the slot of a removed backend, and a reused slot holds another address.
#[inline(always)]
fn alive(backend: &Backend) -> bool {
    backend.addr != RING_EMPTY
        && BACKEND_SLOTS
            .get(backend.slot)
            .is_some_and(|held| *held == backend.addr)
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

/// Node-level choice for a flow arriving from the LAN. A connection's first packet
/// (`opening`) skips the flow table: a new flow's entry cannot exist, and a retransmitted
/// SYN selects the same node again while the tables are unchanged (after a change, the
/// not yet established connection may go to the node the tables name now). Its choice
/// replaces any entry left by an earlier connection of the same addresses and ports.
#[inline(always)]
pub fn node(
    flow: &FlowKey,
    service: &ServiceValue,
    own_addr: u32,
    opening: bool,
) -> Result<Target, Verdict> {
    if service.flags & SERVICE_F_LOCAL_ONLY != 0 {
        return Ok(Target::Local);
    }
    let entry = if opening { None } else { cached(flow) };
    // SAFETY: see `remember`.
    let hit = entry
        .map(|value| unsafe {
            Backend {
                addr: (*value).node,
                slot: (*value).node_slot,
            }
        })
        .filter(alive);
    let node = match hit {
        Some(node) => {
            stats::count(reasons::FLOW_CACHE_HIT);
            node
        }
        None => {
            stats::count(reasons::FLOW_CACHE_MISS);
            let node = pick(NODE_RINGS.get(service.ring_slot), flow, NODE_SEED)?;
            remember(flow, entry, |value| {
                value.node = node.addr;
                value.node_slot = node.slot;
            });
            node
        }
    };
    Ok(if node.addr == own_addr {
        Target::Local
    } else {
        Target::Remote(node)
    })
}

/// Pod-level choice on the node that delivers the flow.
#[inline(always)]
pub fn pod(flow: &FlowKey, service: &ServiceValue) -> Result<Backend, Verdict> {
    let entry = cached(flow);
    // SAFETY: see `remember`.
    let hit = entry
        .map(|value| unsafe {
            Backend {
                addr: (*value).pod,
                slot: (*value).pod_slot,
            }
        })
        .filter(alive);
    if let Some(pod) = hit {
        return Ok(pod);
    }
    let pod = pick(POD_RINGS.get(service.ring_slot), flow, POD_SEED)?;
    remember(flow, entry, |value| {
        value.pod = pod.addr;
        value.pod_slot = pod.slot;
    });
    Ok(pod)
}
