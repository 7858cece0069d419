//! The flow hash both levels of selection use. The kernel programs and `lbctl explain`
//! call the same function on the same inputs, so user space can say exactly which node
//! and pod a client flow lands on.

/// Seed of the node-level (owner -> backend node) selection.
pub const NODE_SEED: u32 = 0x6c62_6e64;
/// Seed of the pod-level (backend node -> pod) selection; a different seed keeps the
/// two choices independent.
pub const POD_SEED: u32 = 0x6c62_7064;

const JHASH_INITVAL: u32 = 0xdead_beef;

/// Bob Jenkins' lookup3 `hashword()` over exactly three words, which is what the Linux
/// kernel's `jhash_3words` computes (`include/linux/jhash.h`): every word starts from
/// `JHASH_INITVAL + (3 << 2) + initval` before the final mix.
#[inline(always)]
pub const fn jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    let init = JHASH_INITVAL.wrapping_add(3 << 2).wrapping_add(initval);
    let mut a = a.wrapping_add(init);
    let mut b = b.wrapping_add(init);
    let mut c = c.wrapping_add(init);
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// Hash of one client flow to a VIP. Addresses and ports are taken exactly as stored in
/// the packet (network byte order loaded as native integers), on either side; the value
/// therefore depends on the host's byte order, which the kernel and `lbctl` on one node
/// share. Selection uses `flow_hash(..) % ring size`.
#[inline(always)]
pub const fn flow_hash(
    client: u32,
    client_port: u16,
    vip: u32,
    vip_port: u16,
    proto: u8,
    seed: u32,
) -> u32 {
    let ports = ((client_port as u32) << 16) | vip_port as u32;
    jhash_3words(client, vip ^ proto as u32, ports, seed)
}
