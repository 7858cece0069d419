//! The standalone file and the Kubernetes settings file. Every bad standalone file is
//! also offered to the running agent's file source as a reload: it must be refused, and
//! the data path (the in-memory dataplane) must keep exactly what it ran before. A valid
//! edit afterwards must still apply on top of the original configuration.

use std::{path::Path, sync::Arc};

use lb_agent::{
    config::{self, Standalone},
    dataplane::memory::MemoryDataplane,
    model::capacities::Capacities,
    runtime::reconcile::Reconciler,
    sources::kubernetes::settings::KubernetesSettings,
    sources::{
        Source as _,
        file::{ConfigSource, FileSource, Reload},
    },
    telemetry::Telemetry,
};

use super::table::{Checker, Expect, count};

const EXAMPLE: &str = include_str!("../../../examples/standalone.yaml");
/// The example as an editor that writes a UTF-8 byte-order mark saves it.
const EXAMPLE_WITH_BOM: &str = concat!(
    "\u{feff}",
    include_str!("../../../examples/standalone.yaml")
);
const MTU: u32 = 1500;

/// A standalone file: the example with `edits` (from, to) applied in turn, each to its
/// first occurrence.
pub struct FileCase {
    pub name: &'static str,
    pub edits: &'static [(&'static str, &'static str)],
    pub expect: Expect,
}

const fn case(
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    parts: &'static [&'static str],
) -> FileCase {
    FileCase {
        name,
        edits,
        expect: Expect::Rejected(parts),
    }
}

/// The example's last line: an edit of it appends keys at the end of the file.
const END: &str = "      - { address: 10.42.1.9, node: node2 }\n";

pub fn file_cases() -> Vec<FileCase> {
    vec![
        FileCase {
            name: "the example (valid control)",
            edits: &[],
            expect: Expect::Accepted,
        },
        FileCase {
            name: "another valid edit (control)",
            edits: &[("targetPort: 8443", "targetPort: 9443")],
            expect: Expect::Accepted,
        },
        case(
            "unclosed flow sequence",
            &[("ports:\n", "ports: [\n")],
            &["line ", "YAML syntax error"],
        ),
        case("empty file", &[(EXAMPLE, "")], &["the file is empty"]),
        case(
            "an endpoint that is a VIP",
            &[(
                "{ address: 10.42.1.9, node: node2 }",
                "{ address: 172.16.200.20, node: node2 }",
            )],
            &[
                "services[1].endpoints[0].address",
                "172.16.200.20 is the VIP of service `web`",
                "in a loop",
            ],
        ),
        case(
            "an endpoint at another node's address",
            &[(
                "{ address: 10.42.1.9, node: node2 }",
                "{ address: 10.0.0.11, node: node2 }",
            )],
            &[
                "services[1].endpoints[0].address",
                "10.0.0.11 is the address of node `node1`, but the endpoint runs on `node2`",
            ],
        ),
        FileCase {
            name: "an endpoint at its own node's address, on the host network (control)",
            edits: &[(
                "{ address: 10.42.1.9, node: node2 }",
                "{ address: 10.0.0.12, node: node2 }",
            )],
            expect: Expect::Accepted,
        },
        FileCase {
            name: "a UTF-8 byte-order mark (accepted: skipped)",
            edits: &[(EXAMPLE, EXAMPLE_WITH_BOM)],
            expect: Expect::Accepted,
        },
        FileCase {
            name: "a document start and end marker around the one document (control)",
            edits: &[
                ("node: node1\n", "---\nnode: node1\n"),
                (END, "      - { address: 10.42.1.9, node: node2 }\n...\n"),
            ],
            expect: Expect::Accepted,
        },
        case(
            "a second YAML document",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\n---\nnode: node2\n",
            )],
            &["line 25, column 1", "a second YAML document starts here"],
        ),
        case(
            "a broken second YAML document after an end marker",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\n...\n: [\n",
            )],
            &["line 25, column 1", "a second YAML document starts here"],
        ),
        case(
            "a list instead of a mapping",
            &[(EXAMPLE, "- node1\n")],
            &["must be a mapping"],
        ),
        case(
            "duplicate key",
            &[("interface: eth0\n", "interface: eth0\ninterface: eth1\n")],
            &["duplicate key `interface`"],
        ),
        case(
            "unknown top-level field",
            &[("interface: eth0", "interfce: eth0")],
            &["interfce", "field `interfce`"],
        ),
        case(
            "unknown service field",
            &[("owner: node1", "ownr: node1")],
            &["services[0]", "field `ownr`"],
        ),
        case(
            "missing node",
            &[("node: node1\n", "")],
            &["missing field `node`"],
        ),
        case(
            "VIP with a prefix",
            &[("vip: 172.16.200.20", "vip: 172.16.200.20/32")],
            &[
                "services[0].vip",
                "`172.16.200.20/32` is not an IPv4 address",
            ],
        ),
        case(
            "IPv6 VIP",
            &[("vip: 172.16.200.20", "vip: \"fd00::20\"")],
            &["services[0].vip", "`fd00::20` is not an IPv4 address"],
        ),
        case(
            "multicast VIP",
            &[("vip: 172.16.200.53", "vip: 239.1.1.1")],
            &["services[1].vip", "multicast"],
        ),
        case(
            "broadcast VIP",
            &[("vip: 172.16.200.53", "vip: 255.255.255.255")],
            &["services[1].vip", "reserved or broadcast"],
        ),
        case(
            "VIP is a node's address",
            &[("vip: 172.16.200.20", "vip: 10.0.0.12")],
            &[
                "services[0].vip",
                "10.0.0.12 is the address of node `node2`",
            ],
        ),
        case(
            "peer address in 0.0.0.0/8",
            &[("address: 10.0.0.12", "address: 0.0.0.9")],
            &["peers[1].address", "0.0.0.0/8"],
        ),
        case(
            "port above 65535",
            &[("port: 443", "port: 65536")],
            &["services[0].ports[1].port", "`65536` is not a port number"],
        ),
        case(
            "port by name",
            &[("port: 443", "port: https")],
            &["services[0].ports[1].port", "`https` is not a port number"],
        ),
        case(
            "target port 0",
            &[("targetPort: 8443", "targetPort: 0")],
            &[
                "services[0].ports[1].targetPort",
                "`0` is not a port number",
            ],
        ),
        case(
            "SCTP",
            &[("protocol: UDP", "protocol: SCTP")],
            &["services[1].ports[0].protocol", "unknown variant `SCTP`"],
        ),
        case(
            "lower-case protocol",
            &[(
                "protocol: TCP, targetPort: 8080",
                "protocol: tcp, targetPort: 8080",
            )],
            &["services[0].ports[0].protocol", "unknown variant `tcp`"],
        ),
        case(
            "duplicate VIP:port within a service",
            &[("port: 53, protocol: TCP", "port: 53, protocol: UDP")],
            &[
                "services[1].ports[1]",
                "172.16.200.53:53/UDP is already used by services[1].ports[0]",
            ],
        ),
        case(
            "duplicate VIP:port across services",
            &[
                ("vip: 172.16.200.53", "vip: 172.16.200.20"),
                ("port: 53, protocol: TCP", "port: 443, protocol: TCP"),
            ],
            &["172.16.200.20:443/TCP is already used by services[0].ports[1]"],
        ),
        case(
            "shared VIP, two owners",
            &[(
                "vip: 172.16.200.53\n    owner: node1",
                "vip: 172.16.200.20\n    owner: node2",
            )],
            &[
                "services[1].owner",
                "services sharing a VIP share its owner",
            ],
        ),
        case(
            "no ports",
            &[(
                "ports:\n      - { port: 53, protocol: UDP, targetPort: 5353 }\n      - { port: 53, protocol: TCP, targetPort: 5353 }",
                "ports: []",
            )],
            &["services[1].ports", "at least one port"],
        ),
        case(
            "endpoint on an unknown node",
            &[("node: node2 }", "node: node3 }")],
            &[
                "services[0].endpoints[1].node",
                "`node3` is not one of `peers`",
            ],
        ),
        case(
            "duplicate endpoint",
            &[("address: 10.42.1.6", "address: 10.42.1.5")],
            &[
                "services[0].endpoints[2].address",
                "duplicate endpoint address 10.42.1.5",
            ],
        ),
        case(
            "unknown owner",
            &[("owner: node1", "owner: nodeX")],
            &["services[0].owner", "`nodeX` is not one of `peers`"],
        ),
        case(
            "duplicate service name",
            &[("name: dns", "name: web")],
            &["services[1].name", "duplicate service name `web`"],
        ),
        case(
            "service name with a space",
            &[("name: web", "name: web server")],
            &["services[0].name", "`web server` is not a valid name"],
        ),
        case(
            "duplicate peer address",
            &[("address: 10.0.0.12", "address: 10.0.0.11")],
            &[
                "peers[1].address",
                "10.0.0.11 is already the address of `node1`",
            ],
        ),
        case(
            "this node is not a peer",
            &[("node: node1\n", "node: node9\n")],
            &["node", "`node9` is not one of `peers`"],
        ),
        case(
            "interface name too long",
            &[("interface: eth0", "interface: enp0s31f6-uplink0")],
            &["interface", "is not a Linux interface name"],
        ),
        case(
            "interface name with a slash",
            &[("interface: eth0", "interface: eth0/1")],
            &["interface", "`eth0/1` is not a Linux interface name"],
        ),
        case(
            "ARP interface alias",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\narp: { interface: \"eth0:1\" }\n",
            )],
            &["arp.interface", "`eth0:1` is not a Linux interface name"],
        ),
        case(
            "MTU too small",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\nmtu: 100\n",
            )],
            &["mtu", "100 is outside 576 to 65535"],
        ),
        case(
            "negative MTU",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\nmtu: -1\n",
            )],
            &["mtu", "expected a whole number"],
        ),
        case(
            "probe timeout not below the probe interval",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ngossip: { keyFile: /etc/xdplb/gossip.key, probeIntervalMs: 100, probeTimeoutMs: 100 }\n",
            )],
            &[
                "gossip.probeTimeoutMs",
                "must be shorter than probeIntervalMs",
            ],
        ),
        case(
            "zero suspicion timer",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ngossip: { keyFile: /etc/xdplb/gossip.key, suspicionMs: 0 }\n",
            )],
            &["gossip.suspicionMs", "0 is outside 1 to 600000"],
        ),
        case(
            "timer beyond u32",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ngossip: { keyFile: /etc/xdplb/gossip.key, joinTimeoutMs: 5000000000 }\n",
            )],
            &["gossip.joinTimeoutMs", "expected a whole number"],
        ),
        case(
            "relative gossip key file",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ngossip: { keyFile: gossip.key }\n",
            )],
            &["gossip.keyFile", "must be an absolute path"],
        ),
        case(
            "gossip without a key file",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ngossip: { port: 7947 }\n",
            )],
            &["gossip", "missing field `keyFile`"],
        ),
        case(
            "gossip port 0",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ngossip: { keyFile: /k, port: 0 }\n",
            )],
            &["gossip.port", "`0` is not a port number"],
        ),
        case(
            "zero flow capacity",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\ncapacities: { flows: 0 }\n",
            )],
            &["capacities.flows", "0 is outside 1 to 4194304"],
        ),
        case(
            "unknown traffic policy",
            &[(
                "owner: node1",
                "owner: node1\n    externalTrafficPolicy: Global",
            )],
            &[
                "services[0].externalTrafficPolicy",
                "unknown variant `Global`",
            ],
        ),
        case(
            "metrics address without a port",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\napi: { listen: localhost }\n",
            )],
            &["api.listen", "`localhost` is not an address and port"],
        ),
        case(
            "null as a default",
            &[(
                END,
                "      - { address: 10.42.1.9, node: node2 }\nicmpRatePerSecond: ~\n",
            )],
            &["icmpRatePerSecond", "`~` is no value"],
        ),
        case(
            "null as a default name",
            &[("interface: eth0", "interface: ~")],
            &["interface", "`~` is no value: leave the key out"],
        ),
        case(
            "null deep in a list",
            &[(END, "      - { address: 10.42.1.9, node: null }\n")],
            &["node", "`null` is no value"],
        ),
    ]
}

fn text(case: &FileCase) -> String {
    let mut text = EXAMPLE.to_owned();
    for (from, to) in case.edits {
        assert!(
            text.contains(from),
            "{}: the edit `{from}` does not apply",
            case.name
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// A reload of a valid file the running agent still refuses.
const RENAMED: (&str, &str) = ("node: node1\n", "node: node2\n");

pub fn counts() -> (usize, usize) {
    let files = file_cases();
    let (rejected, accepted) = count(files.iter().map(|case| &case.expect));
    // The renamed node; the valid edit.
    (rejected + 1, accepted + 1)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the file");
}

/// The message of a reload of `path`, `Ok` when it applies.
fn reload_message(source: &ConfigSource, running: &Standalone) -> Result<(), String> {
    match source.reload(running) {
        Reload::Unchanged | Reload::Applied { .. } => Ok(()),
        Reload::Invalid(error) => Err(error.to_string()),
        Reload::Refused(refusal) => Err(refusal.to_string()),
    }
}

/// Gossip key files the agent refuses at start, with what the error must say.
pub async fn run() {
    let mut checker = Checker::new("standalone-config");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("xdplb.yaml");
    write(&path, EXAMPLE);
    let running = config::parse(EXAMPLE).expect("the example parses");
    let telemetry = Arc::new(Telemetry::new());
    let mut source = FileSource::new(&path, running.clone(), telemetry);
    let cluster = source.first().await;
    let mut reconciler =
        Reconciler::new(MemoryDataplane::new(Capacities::default())).expect("a dataplane");
    reconciler
        .reconcile(&cluster.inputs(MTU))
        .expect("the example applies");
    let applied = reconciler.applied().clone();
    assert_eq!(applied.vips.len(), 2, "the example has two VIPs");

    let file = ConfigSource::new(&path);
    for case in file_cases() {
        let text = text(&case);
        write(&path, &text);
        let parsed = config::parse(&text).map(drop).map_err(|e| e.to_string());
        checker.verdict(case.name, case.expect, parsed.clone());
        if matches!(case.expect, Expect::Rejected(_)) {
            // The running agent: SIGHUP with the bad file.
            if let Some(cluster) = source.reload() {
                checker.fail(case.name, "the file source published a cluster".to_owned());
                let _ = reconciler.reconcile(&cluster.inputs(MTU));
            }
            if reconciler.applied() != &applied {
                checker.fail(case.name, "the data path changed".to_owned());
            }
            if reload_message(&file, &running) != parsed {
                checker.fail(case.name, "the reload says something else".to_owned());
            }
        }
    }
    write(&path, &EXAMPLE.replacen(RENAMED.0, RENAMED.1, 1));
    checker.verdict(
        "a renamed node on reload",
        Expect::Rejected(&["`node` changed from node1 to node2", "restart the agent"]),
        reload_message(&file, &running),
    );
    if source.reload().is_some() {
        checker.fail("a renamed node on reload", "applied".to_owned());
    }

    // The running configuration survived every refusal: a valid edit applies on top of
    // it, changing one target port and nothing else.
    write(
        &path,
        &EXAMPLE.replacen("targetPort: 8443", "targetPort: 9443", 1),
    );
    match source.reload() {
        Some(cluster) => {
            let changed = reconciler
                .reconcile(&cluster.inputs(MTU))
                .expect("the valid edit applies");
            checker.verdict("a valid edit after the refusals", Expect::Accepted, Ok(()));
            if changed.is_none() || reconciler.applied().vips != applied.vips {
                checker.fail(
                    "a valid edit after the refusals",
                    "expected the same VIPs with one port changed".to_owned(),
                );
            }
        }
        None => checker.fail(
            "a valid edit after the refusals",
            "not applied: the source lost the running configuration".to_owned(),
        ),
    }

    checker.finish();
}

/// The Kubernetes mode's settings file (a ConfigMap).
pub fn settings_cases() -> Vec<(&'static str, &'static str, Expect)> {
    let rejected = |parts| Expect::Rejected(parts);
    vec![
        ("defaults (valid control)", "", Expect::Accepted),
        (
            "the shipped keys (valid control)",
            "interface: eth0\ndefaultClass: true\ngossip: { keyFile: /etc/xdplb/gossip.key }\n",
            Expect::Accepted,
        ),
        (
            "standalone-only key",
            "peers: []\n",
            rejected(&["peers", "field `peers`"]),
        ),
        (
            "class as a word",
            "defaultClass: yes\n",
            rejected(&["defaultClass", "expected `true` or `false`"]),
        ),
        (
            "two interfaces",
            "interface: eth0 eth1\n",
            rejected(&["interface", "`eth0 eth1` is not a Linux interface name"]),
        ),
        (
            "relative key file",
            "gossip: { keyFile: key }\n",
            rejected(&["gossip.keyFile", "must be an absolute path"]),
        ),
        (
            "MTU too large",
            "mtu: 70000\n",
            rejected(&["mtu", "70000 is outside 576 to 65535"]),
        ),
        (
            "relative pin directory",
            "pinDir: bpf/xdplb\n",
            rejected(&["pinDir", "must be an absolute path"]),
        ),
        (
            "relative socket",
            "api: { socket: agent.sock }\n",
            rejected(&["api.socket", "must be an absolute path"]),
        ),
        (
            "zero VIP capacity",
            "capacities: { vips: 0 }\n",
            rejected(&["capacities.vips", "0 is outside 1 to 65536"]),
        ),
        (
            "duplicate key",
            "defaultClass: true\ndefaultClass: false\n",
            rejected(&["duplicate key `defaultClass`"]),
        ),
        (
            "a list",
            "- interface: eth0\n",
            rejected(&["must be a mapping"]),
        ),
        (
            "negative GARP repeats",
            "arp: { garpRepeats: -1 }\n",
            rejected(&["arp.garpRepeats", "expected a whole number"]),
        ),
        (
            "probe timeout above the interval",
            "gossip: { keyFile: /k, probeTimeoutMs: 500 }\n",
            rejected(&[
                "gossip.probeTimeoutMs",
                "500 ms must be shorter than probeIntervalMs (100 ms)",
            ]),
        ),
        (
            "tab indentation",
            "gossip:\n\tkeyFile: /k\n",
            rejected(&["YAML syntax error"]),
        ),
    ]
}

pub fn run_settings() {
    let mut checker = Checker::new("kubernetes-settings");
    for (name, text, expect) in settings_cases() {
        let outcome = KubernetesSettings::parse(text)
            .map(drop)
            .map_err(|error| error.to_string());
        checker.verdict(name, expect, outcome);
    }
    checker.finish();
}
