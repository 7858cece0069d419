//! The agent's gossip datagram authentication (lb-agent/src/membership/auth.rs, included
//! as is): sealed datagrams open once and only once, any change or truncation is
//! refused, and arbitrary bytes never open.
#![no_main]

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

#[allow(dead_code, unreachable_pub)]
#[path = "../../lb-agent/src/membership/auth.rs"]
mod auth;
// What auth.rs reads its key file with, at the crate root as in the agent.
#[allow(dead_code, unreachable_pub)]
#[path = "../../lb-agent/src/files.rs"]
mod files;

use auth::{GossipKey, Opener, Reject, Sealer};

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

fn run(data: &[u8]) -> Result<()> {
    let mut input = Unstructured::new(data);
    let key_len = input.int_in_range(auth::MIN_KEY_LEN..=64)?;
    let key = GossipKey::new(input.bytes(key_len)?.to_vec()).expect("a long enough key");
    let name_len = input.int_in_range(1..=40)?;
    let name: String = (0..name_len)
        .map(|_| Ok(char::from(input.int_in_range(b'a'..=b'z')?)))
        .collect::<Result<_>>()?;
    let epoch = input.arbitrary::<u64>()?;
    let mut sealer = Sealer::new(key.clone(), &name, epoch);
    let mut opener = Opener::new(key);

    let payload_len = input.int_in_range(0..=64)?;
    let payload = input.bytes(payload_len)?.to_vec();
    let datagram = sealer.seal(&payload);
    let opened = opener.open(&datagram).expect("a sealed datagram opens");
    assert_eq!(
        (opened.sender, opened.epoch, opened.payload),
        (name.as_str(), epoch, &payload[..])
    );
    assert_eq!(
        opener.open(&datagram),
        Err(Reject::Replayed),
        "opened twice"
    );

    let next = sealer.seal(&payload);
    let mut changed = next.clone();
    let at = input.choose_index(changed.len())?;
    changed[at] ^= 1 << input.int_in_range(0..=7)?;
    assert!(
        opener.open(&changed).is_err(),
        "a changed datagram opened (byte {at})"
    );
    let cut = input.choose_index(next.len())?;
    assert!(
        opener.open(&next[..cut]).is_err(),
        "a truncated datagram opened"
    );
    assert!(
        opener.open(&next).is_ok(),
        "refusals must not burn the sequence number"
    );

    let raw = input.take_rest();
    assert!(opener.open(raw).is_err(), "arbitrary bytes opened");
    Ok(())
}
