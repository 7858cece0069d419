//! The flow hash against lookup3's `hashword()` written as in the C source (the general
//! loop over a key array), and the documented packing of the flow tuple.
#![no_main]

use lb_common::hash::{flow_hash, jhash_3words};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

macro_rules! mix {
    ($a:ident, $b:ident, $c:ident) => {
        $a = $a.wrapping_sub($c);
        $a ^= $c.rotate_left(4);
        $c = $c.wrapping_add($b);
        $b = $b.wrapping_sub($a);
        $b ^= $a.rotate_left(6);
        $a = $a.wrapping_add($c);
        $c = $c.wrapping_sub($b);
        $c ^= $b.rotate_left(8);
        $b = $b.wrapping_add($a);
        $a = $a.wrapping_sub($c);
        $a ^= $c.rotate_left(16);
        $c = $c.wrapping_add($b);
        $b = $b.wrapping_sub($a);
        $b ^= $a.rotate_left(19);
        $a = $a.wrapping_add($c);
        $c = $c.wrapping_sub($b);
        $c ^= $b.rotate_left(4);
        $b = $b.wrapping_add($a);
    };
}

macro_rules! last {
    ($a:ident, $b:ident, $c:ident) => {
        $c ^= $b;
        $c = $c.wrapping_sub($b.rotate_left(14));
        $a ^= $c;
        $a = $a.wrapping_sub($c.rotate_left(11));
        $b ^= $a;
        $b = $b.wrapping_sub($a.rotate_left(25));
        $c ^= $b;
        $c = $c.wrapping_sub($b.rotate_left(16));
        $a ^= $c;
        $a = $a.wrapping_sub($c.rotate_left(4));
        $b ^= $a;
        $b = $b.wrapping_sub($a.rotate_left(14));
        $c ^= $b;
        $c = $c.wrapping_sub($b.rotate_left(24));
    };
}

/// `hashword(k, length, initval)` from lookup3.c.
fn hashword(key: &[u32], initval: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add((key.len() as u32) << 2)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = key;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        mix!(a, b, c);
        rest = &rest[3..];
    }
    match rest.len() {
        0 => return c,
        3 => {
            c = c.wrapping_add(rest[2]);
            b = b.wrapping_add(rest[1]);
            a = a.wrapping_add(rest[0]);
        }
        2 => {
            b = b.wrapping_add(rest[1]);
            a = a.wrapping_add(rest[0]);
        }
        _ => a = a.wrapping_add(rest[0]),
    }
    last!(a, b, c);
    c
}

fn run(data: &[u8]) -> Result<()> {
    let mut input = Unstructured::new(data);
    let (a, b, c, seed) = input.arbitrary::<(u32, u32, u32, u32)>()?;
    assert_eq!(jhash_3words(a, b, c, seed), hashword(&[a, b, c], seed));
    let (client, client_port, vip, vip_port, proto) =
        input.arbitrary::<(u32, u16, u32, u16, u8)>()?;
    let ports = (u32::from(client_port) << 16) | u32::from(vip_port);
    assert_eq!(
        flow_hash(client, client_port, vip, vip_port, proto, seed),
        hashword(&[client, vip ^ u32::from(proto), ports], seed)
    );
    Ok(())
}
