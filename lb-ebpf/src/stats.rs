//! Per-CPU counters: why each packet got its verdict, per VIP, per backend.
//! Per-CPU values need no atomics: the program never migrates while it runs.

use lb_common::types::VipStats;

use crate::maps::{BACKEND_STATS, REASON_STATS, VIP_STATS};

/// Counts one packet under `reason` (an index from `lb_common::reasons`).
#[inline(always)]
pub fn count(reason: u32) {
    if let Some(counter) = REASON_STATS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU array slot belongs to this CPU for the program's whole run.
        unsafe { *counter += 1 };
    }
}

/// Applies `update` to this CPU's counters of the VIP at `index`.
#[inline(always)]
pub fn vip(index: u32, update: impl FnOnce(&mut VipStats)) {
    if let Some(stats) = VIP_STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot belongs to this CPU for the program's whole run.
        update(unsafe { &mut *stats });
    }
}

/// Counts one packet of `bytes` sent to the backend (node or pod) in `slot`.
#[inline(always)]
pub fn backend(slot: u32, bytes: u64) {
    if let Some(stats) = BACKEND_STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU array slot belongs to this CPU for the program's whole run.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes;
        }
    }
}
