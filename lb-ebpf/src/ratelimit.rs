//! Per-CPU token bucket for the ICMP messages the XDP program generates itself.
//!
//! Credit is kept in token-nanoseconds (one token = 1e9), so refills between closely
//! spaced packets are never rounded away. The bucket holds at most one second's worth.

use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::maps::ICMP_RATE;

const NS_PER_SEC: u64 = 1_000_000_000;

/// Takes one token; false when the bucket is empty (a rate of 0 never allows one).
#[inline(always)]
pub fn take(rate_per_sec: u32) -> bool {
    let Some(state) = ICMP_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU array slot belongs to this CPU for the program's whole run.
    let state = unsafe { &mut *state };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let rate = u64::from(rate_per_sec);
    // Capping the interval at one second (a full refill) also keeps the product in u64.
    let elapsed = now.saturating_sub(state.last_ns).min(NS_PER_SEC);
    let credit = (state.tokens + elapsed * rate).min(rate * NS_PER_SEC);
    state.last_ns = now;
    if credit < NS_PER_SEC {
        state.tokens = credit;
        return false;
    }
    state.tokens = credit - NS_PER_SEC;
    true
}
