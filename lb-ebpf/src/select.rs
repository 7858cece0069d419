//! Backend selection: the per-flow cache in front of two consistent-hash levels
//! (backend node, then local pod), both weighted Maglev tables built by user space. The
//! cache entry also names the flow's service (its `SERVICE_SLOTS` slot), so an
//! established flow finds its service there instead of in `SERVICES`.

use core::ptr;

use lb_common::{
    hash::{NODE_SEED, POD_SEED, flow_hash},
    reasons,
    types::{
        FlowKey, FlowValue, NO_SLOT, NodeRing, PodRing, RING_EMPTY, SERVICE_F_LOCAL_ONLY,
        ServiceKey, ServiceValue,
    },
};

use crate::{
    maps::{BACKEND_SLOTS, BACKENDS, FLOWS, NODE_RINGS, POD_RINGS, SERVICE_SLOTS},
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

/// What is known of a flow's `FLOWS` entry before a level selects: looked up once per
/// packet and handed from level to level.
#[derive(Clone, Copy)]
pub enum Entry {
    /// Not looked up yet: the level that needs it looks it up.
    Unread,
    /// Looked up, and there is none: the level that selects inserts one.
    Missing,
    /// Looked up. `fast`: the flow's service came from it too ([`Entry::service`]), so
    /// the packet cost no `SERVICES` lookup.
    Found { value: *mut FlowValue, fast: bool },
}

impl Entry {
    /// The flow's entry, looked up.
    #[inline(always)]
    pub fn read(flow: &FlowKey) -> Self {
        match FLOWS.get_ptr_mut(flow) {
            Some(value) => Self::Found { value, fast: false },
            None => Self::Missing,
        }
    }

    /// The service the entry names while its `SERVICE_SLOTS` slot still holds it, and
    /// the entry marked as having provided it; `None` when there is no entry, it names no
    /// slot ([`NO_SLOT`]), or the slot now holds another service or none (removed, or
    /// reused): the packet then finds its service in `SERVICES`.
    #[inline(always)]
    pub fn service(self, key: &ServiceKey) -> Option<(ServiceValue, Self)> {
        let Self::Found { value, .. } = self else {
            return None;
        };
        // SAFETY: see `remember`.
        let slot = unsafe { (*value).service_slot };
        let service = slot_service(slot, key)?;
        Some((service, Self::Found { value, fast: true }))
    }

    /// Looks the entry up unless that was done already.
    #[inline(always)]
    fn resolve(self, flow: &FlowKey) -> Self {
        match self {
            Self::Unread => Self::read(flow),
            known => known,
        }
    }

    /// What the pod level may reuse after the node level: an entry that existed still
    /// does (the node level updated it in place); one the node level inserted must be
    /// looked up.
    #[inline(always)]
    pub fn for_pod(self) -> Self {
        match self {
            found @ Self::Found { .. } => found,
            _ => Self::Unread,
        }
    }
}

/// The service in `SERVICE_SLOTS[slot]` if the slot holds `key`'s. User space never
/// changes a slot's key and value in one write: it zeroes the key, writes the value,
/// then sets the key. The key is read again after the value, so a value copied while
/// user space rewrote it is not used (on a weakly ordered CPU this narrows the window
/// to the CPU's reordering rather than closing it).
#[inline(always)]
fn slot_service(slot: u32, key: &ServiceKey) -> Option<ServiceValue> {
    let held = SERVICE_SLOTS.get_ptr(slot)?;
    let wanted = key_bits(key);
    // SAFETY: array values stay mapped for the program's lifetime and start 8-byte
    // aligned, and the key is their first 8 bytes; the reads are volatile so each
    // happens, in this order, even though user space may write between them.
    unsafe {
        let held_key = (&raw const (*held).key).cast::<u64>();
        if ptr::read_volatile(held_key) != wanted {
            return None;
        }
        let value = ptr::read_volatile(&raw const (*held).value);
        (ptr::read_volatile(held_key) == wanted).then_some(value)
    }
}

/// A service key as one 64-bit word: compared in one instruction instead of four.
#[inline(always)]
fn key_bits(key: &ServiceKey) -> u64 {
    // SAFETY: `ServiceKey` is 8 bytes of integers with its padding an explicit field,
    // so its bytes are a valid `u64`; `transmute` copies them, alignment aside.
    unsafe { core::mem::transmute::<ServiceKey, u64>(*key) }
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

/// The entry's pointer, if there is an entry.
#[inline(always)]
fn pointer(entry: Entry) -> Option<(*mut FlowValue, bool)> {
    match entry {
        Entry::Found { value, fast } => Some((value, fast)),
        _ => None,
    }
}

/// One level's choice in the entry, with the entry, while that backend is alive.
#[inline(always)]
fn cached(
    entry: Option<(*mut FlowValue, bool)>,
    choice: impl FnOnce(&FlowValue) -> Backend,
) -> Option<(Backend, *mut FlowValue, bool)> {
    let (value, fast) = entry?;
    // SAFETY: see `remember`.
    let backend = choice(unsafe { &*value });
    alive(&backend).then_some((backend, value, fast))
}

/// Records one level's choice and the flow's service slot, keeping what the other level
/// stored.
#[inline(always)]
fn remember(
    flow: &FlowKey,
    entry: Option<*mut FlowValue>,
    service: &ServiceValue,
    update: impl FnOnce(&mut FlowValue),
) {
    match entry {
        // SAFETY: the pointer came from a lookup in this run; LRU values stay mapped for
        // the program's lifetime, and a racing writer can at worst overwrite our choice.
        Some(value) => unsafe {
            update(&mut *value);
            (*value).service_slot = service.slot;
        },
        None => {
            let mut value = FlowValue {
                service_slot: service.slot,
                ..FlowValue::default()
            };
            update(&mut value);
            // A failed insert only means the next packet selects again.
            let _ = FLOWS.insert(flow, value, 0);
        }
    }
}

/// A cache hit of a packet whose service came from `SERVICES`: the entry learns the
/// service's slot, so the flow's next packet finds its service in the entry. Written
/// only when it differs, sparing the cache line.
#[inline(always)]
fn learn_slot(value: *mut FlowValue, service: &ServiceValue) {
    // SAFETY: see `remember`.
    unsafe {
        if (*value).service_slot != service.slot {
            (*value).service_slot = service.slot;
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
    entry: Entry,
) -> Result<Target, Verdict> {
    if service.flags & SERVICE_F_LOCAL_ONLY != 0 {
        return Ok(Target::Local);
    }
    let entry = if opening {
        None
    } else {
        pointer(entry.resolve(flow))
    };
    let hit = cached(entry, |value| Backend {
        addr: value.node,
        slot: value.node_slot,
    });
    let node = match hit {
        Some((node, _, true)) => {
            stats::count(reasons::FLOW_FAST_HIT);
            node
        }
        Some((node, value, false)) => {
            stats::count(reasons::FLOW_CACHE_HIT);
            learn_slot(value, service);
            node
        }
        None => {
            stats::count(reasons::FLOW_CACHE_MISS);
            let node = pick(NODE_RINGS.get(service.ring_slot), flow, NODE_SEED)?;
            remember(flow, entry.map(|(value, _)| value), service, |value| {
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
pub fn pod(flow: &FlowKey, service: &ServiceValue, entry: Entry) -> Result<Backend, Verdict> {
    let entry = pointer(entry.resolve(flow));
    let hit = cached(entry, |value| Backend {
        addr: value.pod,
        slot: value.pod_slot,
    });
    if let Some((pod, value, fast)) = hit {
        if !fast {
            learn_slot(value, service);
        }
        return Ok(pod);
    }
    let pod = pick(POD_RINGS.get(service.ring_slot), flow, POD_SEED)?;
    remember(flow, entry.map(|(value, _)| value), service, |value| {
        value.pod = pod.addr;
        value.pod_slot = pod.slot;
    });
    Ok(pod)
}
