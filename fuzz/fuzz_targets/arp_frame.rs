//! The agent's ARP frame code (lb-agent/src/arp/frame.rs, included as is): any frame
//! parses without panicking and only as what its bytes say, and what the agent sends
//! parses back as meant.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use pnet_datalink::MacAddr;

#[allow(dead_code, unreachable_pub)]
#[path = "../../lb-agent/src/arp/frame.rs"]
mod frame;

const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet/IPv4 hardware and protocol types, address lengths, operation "request".
const IPV4_REQUEST: [u8; 8] = [0, 1, 0x08, 0x00, 6, 4, 0, 1];

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

fn mac(bytes: &[u8]) -> MacAddr {
    MacAddr::new(bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5])
}

fn ip(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

fn run(data: &[u8]) -> Result<()> {
    let mut input = Unstructured::new(data);
    let own = MacAddr::from(input.arbitrary::<[u8; 6]>()?);
    let vip = Ipv4Addr::from(input.arbitrary::<[u8; 4]>()?);
    let raw = input.take_rest();

    if let Some(request) = frame::parse_request(raw, own) {
        let own_octets: [u8; 6] = own.octets();
        assert!(
            raw[..6] == BROADCAST || raw[..6] == own_octets,
            "not sent to us"
        );
        assert_eq!(raw[12..14], [0x08, 0x06], "not ARP");
        assert_eq!(
            raw[14..22],
            IPV4_REQUEST,
            "not an IPv4-over-Ethernet request"
        );
        assert_eq!(request.sender_mac, mac(&raw[22..28]));
        assert_eq!(request.sender_ip, ip(&raw[28..32]));
        assert_eq!(request.target_ip, ip(&raw[38..42]));
        let answer = frame::reply(own, vip, &request);
        assert_eq!(answer[..6], raw[22..28], "the reply goes to the asker");
        assert_eq!(answer[20..22], [0, 2], "operation reply");
        assert_eq!(mac(&answer[22..28]), own);
        assert_eq!(ip(&answer[28..32]), vip);
        assert_eq!(answer[32..42], raw[22..32], "target is the asker");
        assert_eq!(
            frame::parse_request(&answer, own),
            None,
            "a reply is no request"
        );
    }

    let [announce, reply] = frame::gratuitous(own, vip);
    let heard = frame::parse_request(&announce, MacAddr::zero()).expect("a broadcast request");
    assert!(heard.is_gratuitous());
    assert_eq!((heard.sender_mac, heard.sender_ip), (own, vip));
    assert_eq!(frame::parse_request(&reply, MacAddr::zero()), None);
    Ok(())
}
