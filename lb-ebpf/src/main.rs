#![no_std]
#![no_main]

mod encap;
mod express;
mod icmp;
mod maps;
mod nat;
mod parse;
mod ratelimit;
#[cfg(feature = "bench-reference")]
mod reference;
mod select;
mod stats;
mod tc;
mod verdict;
mod xdp;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Load balancing on the LAN interface's receive path. Inlined into the entry point the
/// macro generates: otherwise every packet pays a BPF-to-BPF call into it.
#[xdp]
#[inline(always)]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

/// Reply rewrite on the LAN interface's egress path.
#[classifier]
pub fn tc_reply(ctx: TcContext) -> i32 {
    tc::run(&ctx)
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
