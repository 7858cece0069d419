use std::{collections::BTreeMap, time::Duration};

use super::*;
use crate::{
    api::{http::DEFAULT_LISTEN, socket::DEFAULT_PATH},
    fixtures::{example, ip},
    model::{Protocol, ServicePort, TrafficPolicy, capacities::Capacities},
    sources::{Cluster, Settings},
};

const EXAMPLE: &str = include_str!("../../examples/standalone.yaml");

/// The example with the first occurrence of `from` replaced.
fn edit(from: &str, to: &str) -> String {
    assert!(
        EXAMPLE.contains(from),
        "fixture edit `{from}` does not apply"
    );
    EXAMPLE.replacen(from, to, 1)
}

fn append(extra: &str) -> String {
    format!("{EXAMPLE}{extra}")
}

struct Bad {
    text: String,
    line: usize,
    field: Option<&'static str>,
    message: &'static str,
}

fn bad(text: String, line: usize, field: &'static str, message: &'static str) -> Bad {
    Bad {
        text,
        line,
        field: Some(field),
        message,
    }
}

fn bad_document(text: String, line: usize, message: &'static str) -> Bad {
    Bad {
        text,
        line,
        field: None,
        message,
    }
}

fn bad_files() -> Vec<Bad> {
    vec![
        bad(
            edit("protocol: UDP", "protocol: SCTP"),
            21,
            "services[1].ports[0].protocol",
            "unknown variant `SCTP`, expected `TCP` or `UDP`",
        ),
        bad(
            edit("vip: 172.16.200.20", "vip: 172.16.200"),
            8,
            "services[0].vip",
            "`172.16.200` is not an IPv4 address",
        ),
        bad(
            edit("address: 10.42.1.5", "address: 224.0.0.5"),
            15,
            "services[0].endpoints[1].address",
            "is a multicast address",
        ),
        bad(
            edit("address: 10.0.0.12", "address: 10.0.0.300"),
            5,
            "peers[1].address",
            "not an IPv4 address",
        ),
        bad(
            edit("address: 10.0.0.11", "address: 127.0.0.1"),
            4,
            "peers[0].address",
            "loopback",
        ),
        bad(
            edit("port: 443", "port: 0"),
            12,
            "services[0].ports[1].port",
            "`0` is not a port number (1 to 65535)",
        ),
        bad(
            edit("targetPort: 8080", "targetPort: 70000"),
            11,
            "services[0].ports[0].targetPort",
            "`70000` is not a port number",
        ),
        bad(
            edit("    owner: node1\n", "    owner: node1\n    wieght: 3\n"),
            10,
            "services[0].wieght",
            "Unknown field `wieght`",
        ),
        bad(
            edit("targetPort: 8443", "target_port: 8443"),
            12,
            "services[0].ports[1].target_port",
            "Unknown field `target_port`",
        ),
        bad(append("mtus: 1500\n"), 25, "mtus", "Unknown field `mtus`"),
        bad(
            edit(
                "    ports:\n      - { port: 53, protocol: UDP, targetPort: 5353 }\n      - { port: 53, protocol: TCP, targetPort: 5353 }\n",
                "    ports: []\n",
            ),
            20,
            "services[1].ports",
            "a service needs at least one port",
        ),
        bad(
            edit("port: 53, protocol: TCP", "port: 53, protocol: UDP"),
            22,
            "services[1].ports[1]",
            "172.16.200.53:53/UDP is already used by services[1].ports[0]",
        ),
        bad(
            edit("vip: 172.16.200.53", "vip: 172.16.200.20").replacen(
                "port: 53, protocol: UDP",
                "port: 80, protocol: TCP",
                1,
            ),
            21,
            "services[1].ports[0]",
            "172.16.200.20:80/TCP is already used by services[0].ports[0]",
        ),
        bad(
            edit("name: dns", "name: web"),
            17,
            "services[1].name",
            "duplicate service name `web`",
        ),
        bad(
            edit(
                "address: 10.42.1.9, node: node2",
                "address: 10.42.1.9, node: node3",
            ),
            24,
            "services[1].endpoints[0].node",
            "`node3` is not one of `peers` (node1, node2)",
        ),
        bad(
            edit("node: node1\n", "node: node9\n"),
            1,
            "node",
            "`node9` is not one of `peers`",
        ),
        bad(
            edit("    owner: node1\n", "    owner: node7\n"),
            9,
            "services[0].owner",
            "`node7` is not one of `peers`",
        ),
        bad(
            edit(
                "vip: 172.16.200.53\n    owner: node1",
                "vip: 172.16.200.20\n    owner: node2",
            ),
            19,
            "services[1].owner",
            "VIP 172.16.200.20 is owned by `node1` in an earlier service",
        ),
        bad(
            edit("vip: 172.16.200.53", "vip: 10.0.0.12"),
            18,
            "services[1].vip",
            "is the address of node `node2`",
        ),
        bad(
            edit("name: node2, address", "name: node1, address"),
            5,
            "peers[1].name",
            "duplicate peer name `node1`",
        ),
        bad(
            edit("address: 10.0.0.12", "address: 10.0.0.11"),
            5,
            "peers[1].address",
            "10.0.0.11 is already the address of `node1`",
        ),
        bad(
            edit("address: 10.42.1.6", "address: 10.42.1.5"),
            16,
            "services[0].endpoints[2].address",
            "duplicate endpoint address 10.42.1.5",
        ),
        bad(
            append("mtu: 100\n"),
            25,
            "mtu",
            "100 is outside 576 to 65535",
        ),
        bad(append("mtu: big\n"), 25, "mtu", "expected a whole number"),
        bad(
            append("capacities:\n  vips: 16\n  flows: 0\n"),
            27,
            "capacities.flows",
            "0 is outside 1 to 4194304",
        ),
        bad(
            append("capacities:\n  rings: 16\n"),
            26,
            "capacities.rings",
            "Unknown field `rings`",
        ),
        bad(
            edit("interface: eth0", "interface: an-interface-name0"),
            2,
            "interface",
            "is not a Linux interface name",
        ),
        bad(
            edit(
                "{ address: 10.42.0.7, node: node1 }",
                "{ address: 10.42.0.7, node: node1, ready: maybe }",
            ),
            14,
            "services[0].endpoints[0].ready",
            "expected `true` or `false`",
        ),
        bad(
            edit(
                "    owner: node1\n",
                "    owner: node1\n    externalTrafficPolicy: Global\n",
            ),
            10,
            "services[0].externalTrafficPolicy",
            "unknown variant `Global`, expected `Cluster` or `Local`",
        ),
        bad(
            edit(
                "peers:\n  - { name: node1, address: 10.0.0.11 }\n  - { name: node2, address: 10.0.0.12 }\n",
                "peers: node1\n",
            ),
            3,
            "peers",
            "expected a sequence",
        ),
        bad(
            edit("    vip: 172.16.200.53\n", ""),
            17,
            "services[1]",
            "missing field `vip`",
        ),
        bad(
            edit("name: web", "name: web site"),
            7,
            "services[0].name",
            "`web site` is not a valid name",
        ),
        bad(
            append("gossip:\n  port: 7946\n"),
            26,
            "gossip",
            "missing field `keyFile`",
        ),
        bad(
            append("gossip:\n  keyFile: /etc/xdplb/key\n  port: 0\n"),
            27,
            "gossip.port",
            "`0` is not a port number",
        ),
        bad(
            append("gossip:\n  keyFile: /etc/xdplb/key\n  probeTimeoutMs: 150\n"),
            27,
            "gossip.probeTimeoutMs",
            "150 ms must be shorter than probeIntervalMs (100 ms)",
        ),
        bad(
            append("gossip:\n  keyFile: /etc/xdplb/key\n  suspicionMs: 0\n"),
            27,
            "gossip.suspicionMs",
            "0 is outside 1 to 600000",
        ),
        bad(
            append("gossip:\n  keyFile: gossip.key\n"),
            26,
            "gossip.keyFile",
            "`gossip.key` must be an absolute path",
        ),
        bad(
            append("gossip:\n  keyFile: /k\n  probeMs: 5\n"),
            27,
            "gossip.probeMs",
            "Unknown field `probeMs`",
        ),
        bad(
            append("arp:\n  garpRepeats: many\n"),
            26,
            "arp.garpRepeats",
            "expected a whole number",
        ),
        bad(
            append("arp:\n  interface: eth0/1\n"),
            26,
            "arp.interface",
            "is not a Linux interface name",
        ),
        bad(
            append("api:\n  listen: localhost\n"),
            26,
            "api.listen",
            "`localhost` is not an address and port",
        ),
        bad(
            append("api:\n  socket: agent.sock\n"),
            26,
            "api.socket",
            "must be an absolute path",
        ),
        bad(
            append("pinDir: xdplb\n"),
            25,
            "pinDir",
            "`xdplb` must be an absolute path",
        ),
        bad(
            edit(
                "{ name: node2, address: 10.0.0.12 }",
                "{ name: node2, address: 10.0.0.12, labels: [edge] }",
            ),
            5,
            "peers[1].labels",
            "invalid type: sequence, expected a map",
        ),
        bad_document(String::new(), 1, "the file is empty"),
        bad_document("# nothing yet\n\n".to_owned(), 1, "the file is empty"),
        bad_document(
            edit("interface: eth0\n", "interface: eth0\ninterface: eth1\n"),
            3,
            "duplicate key `interface`",
        ),
        bad_document(
            edit("    vip: 172.16.200.53\n", "     vip: 172.16.200.53\n"),
            18,
            "YAML syntax error",
        ),
        bad_document(
            "- node1\n- node2\n".to_owned(),
            1,
            "the file must be a mapping",
        ),
    ]
}

#[test]
fn bad_files_are_rejected_with_line_and_field() {
    let cases = bad_files();
    assert!(cases.len() >= 15);
    for case in cases {
        let error = parse(&case.text).expect_err(case.message);
        let shown = error.to_string();
        let first = &error.issues()[0];
        let context = format!("{shown}\n--- file ---\n{}", case.text);
        assert_eq!(
            first.location.map(|location| location.line),
            Some(case.line),
            "{context}"
        );
        assert_eq!(first.field.as_deref(), case.field, "{context}");
        assert!(shown.contains(case.message), "{context}");
        assert!(
            shown.starts_with(&format!("line {}, column ", case.line)),
            "{context}"
        );
        if let Some(field) = case.field {
            assert!(shown.contains(&format!(": {field}: ")), "{context}");
        }
    }
}

#[test]
fn every_semantic_problem_is_reported_in_file_order() {
    let text = edit(
        "address: 10.42.1.9, node: node2",
        "address: 10.42.1.9, node: node3",
    )
    .replacen("node: node1\n", "node: node9\n", 1);
    let error = parse(&text).expect_err("two problems");
    assert_eq!(error.metric_label(), "invalid");
    let lines: Vec<usize> = error
        .issues()
        .iter()
        .filter_map(|issue| issue.location.map(|location| location.line))
        .collect();
    assert_eq!(lines, [1, 24]);
    assert_eq!(error.to_string().lines().count(), 2);
}

#[test]
fn error_kinds_have_metric_labels() {
    let syntax = parse("").expect_err("empty");
    assert_eq!(syntax.metric_label(), "syntax");
    let schema = parse(&edit("protocol: UDP", "protocol: SCTP")).expect_err("schema");
    assert_eq!(schema.metric_label(), "schema");
    let read = load(Path::new("/nonexistent/xdplb.yaml")).expect_err("missing file");
    assert_eq!(read.metric_label(), "read");
    assert!(read.issues().is_empty());
}

#[test]
fn the_example_parses_into_the_expected_structure() {
    let standalone = parse(EXAMPLE).expect("example is valid");
    let config = standalone.config();
    assert_eq!(config.node, "node1");
    assert_eq!(config.node_settings.interface.as_deref(), Some("eth0"));
    assert_eq!(
        config.peers,
        [
            PeerConfig {
                name: "node1".into(),
                address: ip("10.0.0.11"),
                labels: BTreeMap::new(),
            },
            PeerConfig {
                name: "node2".into(),
                address: ip("10.0.0.12"),
                labels: BTreeMap::new(),
            },
        ]
    );
    assert_eq!(config.services.len(), 2);
    let dns = &config.services[1];
    assert_eq!(dns.owner.as_deref(), Some("node1"));
    assert_eq!(
        dns.ports[0],
        PortConfig {
            port: 53,
            protocol: Protocol::Udp,
            target_port: Some(5353)
        }
    );
    assert_eq!(
        dns.endpoints,
        [EndpointConfig {
            address: ip("10.42.1.9"),
            node: "node2".into(),
            ready: true,
            terminating: false
        }]
    );
    assert_eq!(config.node_settings.mtu, None);
    assert_eq!(config.node_settings.icmp_rate_per_second, 100);
    assert_eq!(config.node_settings.capacities, Capacities::default());
    assert_eq!(standalone.node().address, ip("10.0.0.11"));
    assert_eq!(
        standalone.owners(),
        BTreeMap::from([
            (ip("172.16.200.20"), "node1"),
            (ip("172.16.200.53"), "node1")
        ])
    );
    assert_eq!(standalone.inputs(1500), example());
}

#[test]
fn the_example_file_on_disk_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone.yaml");
    let standalone = load(&path).expect("examples/standalone.yaml is valid");
    assert_eq!(standalone.inputs(1500), example());
}

#[test]
fn loading_apart_gives_what_loading_gives() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, EXAMPLE).expect("written");
    let apart = load_apart(&good).expect("the example is valid");
    assert_eq!(apart, load(&good).expect("the example is valid"));
    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(&invalid, edit("protocol: UDP", "protocol: SCTP")).expect("written");
    let error = load_apart(&invalid).expect_err("SCTP is refused");
    let expected = load(&invalid).expect_err("SCTP is refused");
    assert_eq!(error.to_string(), expected.to_string());
    assert!(matches!(
        load_apart(&dir.path().join("missing.yaml")),
        Err(ConfigError::Read(_))
    ));
}
#[test]
fn optional_keys_have_kubernetes_like_defaults() {
    let text = "node: a\ninterface: eth0\npeers:\n  - { name: a, address: 192.168.8.2 }\nservices:\n  - name: ssh\n    vip: 192.168.8.240\n    ports:\n      - port: 22\n    endpoints:\n      - { address: 192.168.8.2, node: a }\n";
    let standalone = parse(text).expect("minimal file");
    let service = &standalone.config().services[0];
    assert_eq!(service.owner, None);
    assert_eq!(service.external_traffic_policy, TrafficPolicy::Cluster);
    assert!(!service.drop_unknown_ports);
    let inputs = standalone.inputs(1400);
    assert_eq!(
        inputs.services[0].ports,
        [ServicePort {
            port: 22,
            protocol: Protocol::Tcp,
            target_port: 22
        }]
    );
    assert!(inputs.services[0].endpoints[0].ready);
    assert!(!inputs.services[0].endpoints[0].terminating);
    assert_eq!(inputs.mtu, 1400);
    assert_eq!(inputs.icmp_rate_per_sec, 100);
    assert!(
        parse("node: a\ninterface: eth0\npeers: [{ name: a, address: 192.168.8.2 }]\n").is_ok()
    );
}

#[test]
fn optional_keys_are_honoured() {
    let text = edit(
        "    owner: node1\n",
        "    owner: node1\n    externalTrafficPolicy: Local\n    dropUnknownPorts: true\n",
    )
    .replacen(
        "{ address: 10.42.1.6, node: node2 }",
        "{ address: 10.42.1.6, node: node2, ready: false, terminating: true }",
        1,
    )
    .replace("protocol: TCP, targetPort: 8443", "targetPort: 8443")
        + "mtu: 9000\nicmpRatePerSecond: 0\ncapacities:\n  services: 16\n  replyFlows: 1024\n";
    let standalone = parse(&text).expect("valid");
    let config = standalone.config();
    assert_eq!(config.node_settings.mtu, Some(9000));
    assert_eq!(config.node_settings.icmp_rate_per_second, 0);
    assert_eq!(
        config.node_settings.capacities,
        Capacities {
            services: 16,
            reply_flows: 1024,
            ..Capacities::default()
        }
    );
    let web = &standalone.inputs(9000).services[0];
    assert_eq!(web.traffic_policy, TrafficPolicy::Local);
    assert!(web.drop_unknown_ports);
    assert_eq!(web.ports[1].protocol, Protocol::Tcp);
    assert!(!web.endpoints[2].ready);
    assert!(web.endpoints[2].terminating);
}

#[test]
fn runtime_sections_have_documented_defaults() {
    let standalone = parse(EXAMPLE).expect("example is valid");
    let config = &standalone.config().node_settings;
    assert_eq!(config.gossip, None);
    assert_eq!(config.pin_dir, Path::new(DEFAULT_PIN_DIR));
    assert_eq!(config.api.socket, Path::new(DEFAULT_PATH));
    assert_eq!(config.api.listen.to_string(), DEFAULT_LISTEN);
    let settings = Settings::from(config);
    assert_eq!(settings.announce_interface(), Some("eth0"));
    assert_eq!(settings.arp.garp_repeats, 3);
    assert_eq!(settings.arp.garp_interval, Duration::from_millis(500));
    assert_eq!(settings.arp.refresh, Some(Duration::from_secs(60)));
    assert!(Cluster::from_standalone(&standalone).labels["node1"].is_empty());
}

#[test]
fn runtime_sections_are_honoured() {
    let text = edit("interface: eth0\n", "")
        .replacen(
            "{ name: node2, address: 10.0.0.12 }",
            "{ name: node2, address: 10.0.0.12, labels: { node.kubernetes.io/exclude-from-external-load-balancers: \"\" } }",
            1,
        )
        + "gossip:\n  keyFile: /etc/xdplb/gossip.key\n  port: 7000\n  probeIntervalMs: 200\n  probeTimeoutMs: 80\n  suspicionMs: 500\n  joinTimeoutMs: 2000\n"
        + "arp:\n  interface: vmbr0\n  garpRepeats: 5\n  garpIntervalMs: 1100\n  refreshSeconds: 0\n"
        + "api:\n  socket: /run/xdplb/node1.sock\n  listen: 127.0.0.1:9100\n"
        + "pinDir: /sys/fs/bpf/lab/node1\n";
    let standalone = parse(&text).expect("valid");
    let config = &standalone.config().node_settings;
    let settings = Settings::from(config);
    assert_eq!(settings.interface, None);
    assert_eq!(settings.announce_interface(), Some("vmbr0"));
    let gossip = config.gossip.as_ref().expect("gossip");
    assert_eq!(gossip.port, 7000);
    assert_eq!(gossip.key_file, Path::new("/etc/xdplb/gossip.key"));
    let timing = gossip.timing();
    assert_eq!(timing.probe_interval, Duration::from_millis(200));
    assert_eq!(timing.probe_timeout, Duration::from_millis(80));
    assert_eq!(timing.suspicion, Duration::from_millis(500));
    assert_eq!(timing.join_timeout, Duration::from_secs(2));
    assert_eq!(settings.arp.garp_repeats, 5);
    assert_eq!(settings.arp.garp_interval, Duration::from_millis(1100));
    assert_eq!(settings.arp.refresh, None);
    assert_eq!(config.api.socket, Path::new("/run/xdplb/node1.sock"));
    assert_eq!(config.api.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(config.pin_dir, Path::new("/sys/fs/bpf/lab/node1"));
    let cluster = Cluster::from_standalone(&standalone);
    assert!(cluster.labels["node2"].contains_key(crate::election::EXCLUDE_LABEL));
    let peers = cluster.gossip_peers(gossip.port);
    assert_eq!(peers[1].name, "node2");
    assert_eq!(peers[1].addr.to_string(), "10.0.0.12:7000");
}
