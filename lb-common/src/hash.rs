//! The flow hash both levels of selection use. The kernel programs and `lbctl explain`
//! call the same function on the same inputs, so user space can say exactly which node
//! and pod a client flow lands on.

/// Seed of the node-level (owner -> backend node) selection.
pub const NODE_SEED: u32 = 0x6c62_6e64;
/// Seed of the pod-level (backend node -> pod) selection; a different seed keeps the
/// two choices independent.
pub const POD_SEED: u32 = 0x6c62_7064;

const JHASH_INITVAL: u32 = 0xdead_beef;

/// Bob Jenkins' lookup3 final mix over three words (as the Linux `jhash_3words`).
#[inline(always)]
pub const fn jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    let mut a = a.wrapping_add(JHASH_INITVAL);
    let mut b = b.wrapping_add(JHASH_INITVAL);
    let mut c = c.wrapping_add(initval);
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
/// the packet (network byte order loaded as native integers), on either side.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_hash() {
        let base = flow_hash(1, 2, 3, 4, 6, NODE_SEED);
        assert_ne!(base, flow_hash(9, 2, 3, 4, 6, NODE_SEED));
        assert_ne!(base, flow_hash(1, 9, 3, 4, 6, NODE_SEED));
        assert_ne!(base, flow_hash(1, 2, 9, 4, 6, NODE_SEED));
        assert_ne!(base, flow_hash(1, 2, 3, 9, 6, NODE_SEED));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 17, NODE_SEED));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 6, POD_SEED));
    }

    #[test]
    fn client_ports_spread_over_buckets() {
        let mut buckets = [0u32; 16];
        for port in 0..16_000u16 {
            let h = flow_hash(0x0a00_0001, port, 0xac10_c814, 443, 6, NODE_SEED);
            buckets[(h % 16) as usize] += 1;
        }
        for count in buckets {
            assert!((900..1100).contains(&count), "uneven bucket: {buckets:?}");
        }
    }
}
