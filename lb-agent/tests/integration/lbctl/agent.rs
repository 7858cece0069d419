//! The `lbctl` binary against the agent's API socket: every command in every output
//! format, and the errors a user can run into, with their exit codes.

use std::{
    net::SocketAddrV4, os::unix::net::UnixListener, path::Path, process::Output,
    sync::atomic::Ordering,
};

use lb_agent::{
    model::Protocol,
    status::{AgentStatus, Explanation, FlowList, MemberStatus, StatusProvider as _, VipStatus},
};
use serde::de::DeserializeOwned;

use crate::support::{
    agent::{Agent, DNS, WEB, ip},
    lbctl::{assert_contains, command, printed},
};

fn lbctl(socket: &Path, args: &[&str]) -> Output {
    command()
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run lbctl")
}

/// `args` with `-o json` and `-o yaml` both decode to `expected`.
fn check_formats<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
    agent: &Agent,
    args: &[&str],
    expected: &T,
) {
    let json: T = serde_json::from_str(&printed(
        &lbctl(&agent.socket, &[args, &["-o", "json"]].concat()),
        0,
    ))
    .expect("json output");
    assert_eq!(&json, expected);
    let yaml: T = serde_yaml::from_str(&printed(
        &lbctl(&agent.socket, &[args, &["-o", "yaml"]].concat()),
        0,
    ))
    .expect("yaml output");
    assert_eq!(&yaml, expected);
}

#[test]
fn status_in_every_format() {
    let agent = Agent::start();
    let table = printed(&lbctl(&agent.socket, &["status"]), 0);
    assert_contains(
        &table,
        &[
            "Node node1 (10.0.0.11) on eth0, XDP native, NOT READY",
            "VIP            SERVICES  PORTS",
            "172.16.200.20  web       80/TCP->8080 443/TCP->8443  node1 (this node)  node1 (not node2)",
            "3/3",
            "10000",
            "172.16.200.53  dns",
            "Members: 1 alive, 1 suspect, 0 down",
            "Drops on this node: drop_no_backend=10",
        ],
    );
    check_formats::<AgentStatus>(&agent, &["status"], &agent.runtime.status());
}

#[test]
fn vip_in_every_format() {
    let agent = Agent::start();
    let table = printed(&lbctl(&agent.socket, &["vip", WEB]), 0);
    assert_contains(
        &table,
        &[
            "VIP 172.16.200.20\nOwner: node1 (this node)\nWhy: set by `owner:` in the configuration file",
            "Traffic here: 10000 packets (625.0 KiB); 6000 tunnelled",
            "node1 (owner)  yes",
            "node2          no        -                   interface eth0 is down",
            "Service web (externalTrafficPolicy Cluster)",
            "33.3%",
            "66.7%",
            "10.42.0.7  node1  ready   4093  100.0%      700  43.8 KiB",
            "100.0%",
        ],
    );
    let status = agent.runtime.status();
    let web: &VipStatus = &status.vips[0];
    check_formats(&agent, &["vip", WEB], web);
}

#[test]
fn flows_in_every_format() {
    let agent = Agent::start();
    let table = printed(&lbctl(&agent.socket, &["flows", "--limit", "1"]), 0);
    assert_contains(
        &table,
        &[
            "CLIENT            VIP               PROTOCOL  SERVICE  NODE               POD",
            "10.0.0.100:40000  172.16.200.20:80  TCP       web      node2 (10.0.0.12)  -",
            "Showing 1 of 2 flows",
        ],
    );
    let expected: FlowList = agent.runtime.view().flows(50).expect("flows");
    check_formats(&agent, &["flows"], &expected);
}

#[test]
fn explain_in_every_format() {
    let agent = Agent::start();
    let table = printed(
        &lbctl(
            &agent.socket,
            &["explain", "10.0.0.100:40000", "172.16.200.20:80/tcp"],
        ),
        0,
    );
    let expected = agent
        .runtime
        .view()
        .explain(
            "10.0.0.100:40000".parse().expect("client"),
            SocketAddrV4::new(ip(WEB), 80),
            Protocol::Tcp,
        )
        .expect("explain");
    let destination = expected.destination.expect("forwarded").to_string();
    let node = expected.node.clone().expect("node").name;
    assert_contains(
        &table,
        &[
            &format!(
                "10.0.0.100:40000 -> 172.16.200.20:80/TCP: forwarded to {destination} on {node}"
            ),
            " 1. 172.16.200.20:80/TCP is a port of service web",
            "Node level: flow_hash(client, VIP, ports, protocol, NODE_SEED)",
            "The flow cache of node1 pins this flow to node 10.0.0.12",
            "Counted on node1 as reason",
        ],
    );
    check_formats::<Explanation>(
        &agent,
        &["explain", "10.0.0.100:40000", "172.16.200.20:80/tcp"],
        &expected,
    );
    // The protocol defaults to TCP and is case-insensitive.
    let udp = printed(
        &lbctl(
            &agent.socket,
            &["explain", "10.0.0.100:5000", "172.16.200.53:53/UDP"],
        ),
        0,
    );
    assert_contains(&udp, &["172.16.200.53:53/UDP is a port of service dns"]);
    let default = printed(
        &lbctl(
            &agent.socket,
            &["explain", "10.0.0.100:5000", &format!("{DNS}:53")],
        ),
        0,
    );
    assert_contains(&default, &["172.16.200.53:53/TCP is a port of service dns"]);
}

#[test]
fn members_in_every_format() {
    let agent = Agent::start();
    let table = printed(&lbctl(&agent.socket, &["members"]), 0);
    assert_contains(
        &table,
        &[
            "NAME   ADDRESS         STATE    INCARNATION  SINCE",
            "node1  10.0.0.11:7946  alive              2",
            "node2  10.0.0.12:7946  suspect            2",
            "1 alive, 1 suspect, 0 down",
        ],
    );
    check_formats::<Vec<MemberStatus>>(&agent, &["members"], &agent.runtime.members);
}

#[test]
fn the_socket_can_come_from_the_environment() {
    let agent = Agent::start();
    let output = command()
        .env("XDPLB_SOCKET", &agent.socket)
        .args(["members", "-o", "json"])
        .output()
        .expect("run lbctl");
    let members: Vec<MemberStatus> = serde_json::from_str(&printed(&output, 0)).expect("json");
    assert_eq!(members.len(), 2);
}

#[test]
fn bad_arguments_exit_2_and_say_what_to_type() {
    let agent = Agent::start();
    let cases: [(&[&str], &str); 6] = [
        (
            &["explain", "10.0.0.100", "172.16.200.20:80/tcp"],
            "expected the client's IPv4 address and port, e.g. 10.0.0.100:40000",
        ),
        (
            &["explain", "10.0.0.100:1", "172.16.200.20:80/sctp"],
            "unknown protocol `sctp`: use tcp or udp",
        ),
        (
            &["explain", "10.0.0.100:1", "172.16.200.20/tcp"],
            "expected VIP:PORT/PROTOCOL, e.g. 172.16.200.20:80/tcp",
        ),
        (
            &["vip", "traefik"],
            "expected an IPv4 address, e.g. 172.16.200.20",
        ),
        (
            &["status", "-o", "xml"],
            "possible values: table, json, yaml",
        ),
        (&["reboot"], "unrecognized subcommand 'reboot'"),
    ];
    for (args, message) in cases {
        let stderr = printed(&lbctl(&agent.socket, args), 2);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unreachable_agent_exits_3_with_what_to_check() {
    let dir = tempfile::tempdir().expect("directory");
    let missing = dir.path().join("agent.sock");
    let stderr = printed(&lbctl(&missing, &["status"]), 3);
    assert!(stderr.starts_with(&format!(
        "error: cannot reach the agent at {}: No such file or directory",
        missing.display()
    )));
    assert!(stderr.contains("Is lb-agent running on this node?"));
    assert!(stderr.contains("run lbctl with sudo"));

    // A socket a stopped agent left behind.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("stale socket"));
    let stderr = printed(&lbctl(&stale, &["members"]), 3);
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn agent_side_errors_exit_1() {
    let agent = Agent::start();
    let stderr = printed(&lbctl(&agent.socket, &["vip", "172.16.200.99"]), 1);
    assert_eq!(
        stderr,
        "error: 172.16.200.99 is not a VIP of this cluster; the agent knows 172.16.200.20, 172.16.200.53 (see lbctl status)\n"
    );
    agent.runtime.maps.loaded.store(false, Ordering::Relaxed);
    let stderr = printed(&lbctl(&agent.socket, &["flows"]), 1);
    assert_eq!(
        stderr,
        "error: the agent could not answer: the data path is not loaded yet\n"
    );
}
