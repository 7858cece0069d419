//! What the XDP program decided for a packet, and why.

use aya_ebpf::bindings::xdp_action;

#[derive(Clone, Copy)]
pub struct Verdict {
    /// `xdp_action::*`.
    pub action: u32,
    /// Index into `REASON_STATS` (`lb_common::reasons`).
    pub reason: u32,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(reason: u32) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }

    #[inline(always)]
    pub const fn drop(reason: u32) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            reason,
        }
    }

    #[inline(always)]
    pub const fn tx(reason: u32) -> Self {
        Self {
            action: xdp_action::XDP_TX,
            reason,
        }
    }

    #[inline(always)]
    pub const fn is_drop(&self) -> bool {
        self.action == xdp_action::XDP_DROP
    }
}

/// Early exits carry their verdict in `Err`, so `?` ends packet processing.
pub type Outcome = Result<Verdict, Verdict>;
