//! Release 0.1.0's gossip wire format, frozen: a datagram that release sealed, bytes
//! captured once from its commit (see CHANGELOG.md). This build must read it, and must
//! write the very same bytes from the same inputs, so that a cluster half on 0.1.0 and
//! half on this release keeps one membership during a rolling upgrade either way.

use foca::{Codec as _, Header, Member, Message, PostcardCodec, State};

use super::{
    auth::{GossipKey, Opener, Sealer},
    identity::Identity,
};

/// Sealed by 0.1.0 with [`key`], sender `node1`, epoch 1000, sequence 1, around
/// [`payload`]'s header and member update.
const RELEASE_0_1_0_DATAGRAM: &str = "584c01020a0ddcc07264fa00000000000003e80000000000000001056e6f646531056e6f6465310a00000b8b3e80a09db0a1a891030003056e6f6465320a00000b8c3e81a09db0a1a8910300002a056e6f6465330a00000b8d3e82a09db0a1a891030101015ad2c935c67ffeb80032276e12e3516268602d3a6f2b429146b5a565105e6488";

fn key() -> GossipKey {
    GossipKey::new(vec![7; 32]).expect("long enough")
}

fn identity(name: &str, port: u16, generation: u64, handing_over: bool) -> Identity {
    Identity {
        name: name.into(),
        addr: format!("10.0.0.11:{port}").parse().expect("addr"),
        generation,
        handing_over,
    }
}

/// A ping from node1 to node2 carrying one update about node3.
fn header_and_member() -> (Header<Identity>, Member<Identity>) {
    let header = Header {
        src: identity("node1", 7947, 1_765_000_000_000_000, false),
        src_incarnation: 3,
        dst: identity("node2", 7948, 1_765_000_000_000_001, false),
        message: Message::Ping(42),
    };
    let member = Member::new(
        identity("node3", 7949, 1_765_000_000_000_002, true),
        1,
        State::Suspect,
    );
    (header, member)
}

fn payload() -> Vec<u8> {
    let (header, member) = header_and_member();
    let mut payload = Vec::new();
    PostcardCodec
        .encode_header(&header, &mut payload)
        .expect("encodes");
    PostcardCodec
        .encode_member(&member, &mut payload)
        .expect("encodes");
    payload
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn this_release_writes_what_0_1_0_wrote() {
    let sealed = Sealer::new(key(), "node1", 1_000).seal(&payload());
    let hex: String = sealed.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, RELEASE_0_1_0_DATAGRAM);
}

#[test]
fn this_release_reads_what_0_1_0_wrote() {
    let datagram = unhex(RELEASE_0_1_0_DATAGRAM);
    let opened = Opener::new(key()).open(&datagram).expect("opens");
    assert_eq!((opened.sender, opened.epoch), ("node1", 1_000));
    let mut rest = opened.payload;
    let header = PostcardCodec.decode_header(&mut rest).expect("a header");
    let member: Member<Identity> = PostcardCodec.decode_member(&mut rest).expect("a member");
    let (expected_header, expected_member) = header_and_member();
    assert_eq!(header, expected_header);
    assert_eq!(member, expected_member);
    assert!(rest.is_empty(), "{} bytes left over", rest.len());
}
