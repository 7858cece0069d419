//! The API socket: round trips through the real server and client, bad requests, and
//! the socket file's permissions and lifecycle. Host-only: no root, no BPF.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddrV4,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    sync::atomic::Ordering,
    time::Duration,
};

use lb_agent::{
    api::{
        ApiError,
        protocol::Response,
        socket::{Client, ClientError, SocketServer},
    },
    explain::{self, Outcome, Query},
    model::Protocol,
};

use crate::support::agent::{Agent, DNS, PANIC_PORT, WEB, ip};

const TIMEOUT: Duration = Duration::from_secs(10);

fn client(agent: &Agent) -> Client {
    Client::connect(&agent.socket, TIMEOUT).expect("connect")
}

/// Sends raw lines on one connection and reads one response line per request.
fn raw_exchange(agent: &Agent, lines: &[&[u8]]) -> Vec<Response> {
    let stream = UnixStream::connect(&agent.socket).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    lines
        .iter()
        .map(|line| {
            writer.write_all(line).expect("write");
            let mut answer = String::new();
            reader.read_line(&mut answer).expect("read");
            serde_json::from_str(&answer).unwrap_or_else(|error| panic!("{answer:?}: {error}"))
        })
        .collect()
}

fn error_message(response: &Response) -> &str {
    match response {
        Response::Error(error) => &error.message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn every_command_round_trips_on_one_connection() {
    let agent = Agent::start();
    let mut client = client(&agent);

    let status = client.status().expect("status");
    assert_eq!(status, agent.runtime.view().status());
    assert_eq!(status.node, "node1");
    let vips: Vec<_> = status.vips.iter().map(|vip| vip.vip).collect();
    assert_eq!(vips, [ip(WEB), ip(DNS)]);
    assert_eq!(status.vips[0].counters.map(|c| c.packets), Some(10_000));
    assert_eq!(status.vips[0].owner.as_deref(), Some("node1"));

    // Live values: the next status sees the new counter.
    agent
        .runtime
        .maps
        .web_packets
        .store(10_500, Ordering::Relaxed);
    let status = client.status().expect("status");
    assert_eq!(status.vips[0].counters.map(|c| c.packets), Some(10_500));

    let members = client.members().expect("members");
    assert_eq!(members, agent.runtime.members);

    let flows = client.flows(1).expect("flows");
    assert_eq!((flows.total, flows.flows.len()), (2, 1));
    assert_eq!(flows.flows[0].client.to_string(), "10.0.0.100:40000");

    let source: SocketAddrV4 = "10.0.0.100:40000".parse().expect("client");
    let vip = SocketAddrV4::new(ip(WEB), 80);
    let explanation = client.explain(source, vip, Protocol::Tcp).expect("explain");
    let runtime = &agent.runtime;
    let direct = explain::explain(
        &runtime.inputs,
        &runtime.state,
        Some("node1"),
        Query {
            client: source,
            vip,
            protocol: Protocol::Tcp,
        },
    );
    assert_eq!(explanation.outcome, Outcome::Forwarded);
    assert_eq!(explanation.destination, direct.destination);
    assert_eq!(explanation.steps[..direct.steps.len()], direct.steps[..]);
}

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() {
    let agent = Agent::start();
    let responses = raw_exchange(
        &agent,
        &[
            b"not json\n",
            b"{\"cmd\":\"reboot\"}\n",
            b"{\"cmd\":\"flows\",\"limit\":\"many\"}\n",
            b"{\"cmd\":\"status\",\"verbose\":true}\n",
            b"{\"cmd\":\"explain\",\"client\":\"10.0.0.100\",\"vip\":\"172.16.200.20:80\",\"protocol\":\"TCP\"}\n",
            b"{\"cmd\":\"explain\",\"client\":\"10.0.0.1:1\",\"vip\":\"172.16.200.20:80\",\"protocol\":\"SCTP\"}\n",
            b"\xff\xfe\n",
            b"\n",
            b"{\"cmd\":\"members\"}\n",
        ],
    );
    let (last, errors) = responses.split_last().expect("responses");
    for response in errors {
        assert!(
            error_message(response).starts_with("invalid request: "),
            "{response:?}"
        );
    }
    assert!(error_message(&errors[1]).contains("unknown variant `reboot`"));
    assert!(error_message(&errors[3]).contains("unknown field `verbose`"));
    assert!(matches!(last, Response::Members(members) if members.len() == 2));
}

#[test]
fn a_request_without_newline_is_answered_at_eof() {
    let agent = Agent::start();
    let mut stream = UnixStream::connect(&agent.socket).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(b"{\"cmd\":\"members\"}").expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("{\"members\":["), "{answer}");
}

#[test]
fn an_oversized_request_is_refused_and_the_connection_closed() {
    let agent = Agent::start();
    let mut stream = UnixStream::connect(&agent.socket).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let huge = vec![b'x'; 64 * 1024];
    // The server may close before reading everything; the answer is what matters.
    let _ = stream.write_all(&huge);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let response: Response = serde_json::from_str(answer.trim()).expect("one error line");
    assert!(error_message(&response).contains("longer than 16384 bytes"));
    // The server itself is fine.
    assert!(client(&agent).members().is_ok());
}

#[test]
fn provider_errors_and_panics_become_error_responses() {
    let agent = Agent::start();
    let mut client = client(&agent);
    agent.runtime.maps.loaded.store(false, Ordering::Relaxed);
    match client.flows(10) {
        Err(ClientError::Agent(message)) => assert_eq!(message, "the data path is not loaded yet"),
        other => panic!("expected an agent error, got {other:?}"),
    }
    let panicking = SocketAddrV4::new(ip("10.0.0.100"), PANIC_PORT);
    match client.explain(panicking, SocketAddrV4::new(ip(WEB), 80), Protocol::Tcp) {
        Err(ClientError::Agent(message)) => assert!(message.contains("failed to answer")),
        other => panic!("expected an agent error, got {other:?}"),
    }
    // Same connection, then a new one: both still served.
    assert!(client.members().is_ok());
    assert!(self::client(&agent).status().is_ok());
}

#[test]
fn socket_is_private_to_its_owner() {
    let agent = Agent::start();
    let socket = fs::symlink_metadata(&agent.socket).expect("socket");
    assert_eq!(socket.permissions().mode() & 0o7777, 0o600);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(socket.uid(), euid);
    let directory = fs::metadata(agent.socket.parent().expect("parent")).expect("directory");
    assert_eq!(directory.permissions().mode() & 0o7777, 0o700);
    // No temporary name is left behind.
    let names: Vec<_> = fs::read_dir(agent.socket.parent().expect("parent"))
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["agent.sock"]);
}

#[test]
fn a_live_socket_is_kept_a_stale_one_replaced_and_others_refused() {
    let agent = Agent::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();

    assert!(matches!(
        SocketServer::bind(&agent.socket),
        Err(ApiError::InUse { .. })
    ));

    let dir = tempfile::tempdir().expect("directory");
    let file = dir.path().join("not-a-socket");
    fs::write(&file, "keep me").expect("file");
    assert!(matches!(
        SocketServer::bind(&file),
        Err(ApiError::NotASocket { .. })
    ));
    assert_eq!(fs::read_to_string(&file).expect("file"), "keep me");

    // A socket nobody listens on, as a killed agent leaves it.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("stale socket"));
    let server = SocketServer::bind(&stale).expect("replaces a stale socket");
    assert!(UnixStream::connect(&stale).is_ok());
    drop(server);
    assert!(
        !stale.exists(),
        "the socket file is removed with the server"
    );
}
