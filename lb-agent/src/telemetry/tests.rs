use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::{
    arp, membership,
    status::{ArpStatus, GossipStatus, MemberStatus, VipStatus},
};

fn vip(address: &str, owned_here: bool, counters: Option<VipCounters>) -> VipStatus {
    VipStatus {
        vip: address.parse().expect("vip"),
        services: Vec::new(),
        ports: Vec::new(),
        drop_unknown_ports: false,
        owner: None,
        owner_reason: None,
        owned_here,
        candidates: Vec::new(),
        backends_ready: 2,
        backends_total: 3,
        counters,
    }
}

fn member(name: &str, state: MemberState) -> MemberStatus {
    MemberStatus {
        name: name.into(),
        address: "10.0.0.11:7946".parse().expect("address"),
        state,
        incarnation: 0,
        last_change_unix_ms: None,
    }
}

fn status() -> AgentStatus {
    AgentStatus {
        node: "node1".into(),
        address: "10.0.0.11".parse().expect("address"),
        interface: "eth0".into(),
        xdp_mode: Some("native".into()),
        ready: true,
        version: "test".into(),
        vips: vec![
            vip(
                "172.16.200.20",
                true,
                Some(VipCounters {
                    packets: 1000,
                    bytes: 64_000,
                    dropped: 7,
                    ..VipCounters::default()
                }),
            ),
            vip("172.16.200.53", false, None),
        ],
        members: vec![
            member("node1", MemberState::Alive),
            member("node2", MemberState::Alive),
            member("node3", MemberState::Suspect),
        ],
        reasons: BTreeMap::from([("tx_encap".into(), 5), ("pass_not_vip".into(), 9)]),
        arp: Some(ArpStatus::from(arp::Counters {
            requests_owned: 4,
            replies_sent: 3,
            gratuitous_sent: 2,
            send_errors: 1,
            link_outages: 5,
            ..arp::Counters::default()
        })),
        gossip: Some(GossipStatus {
            dropped: BTreeMap::from([("wrong_key".into(), 6)]),
        }),
        warnings: Vec::new(),
        refused: None,
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn renders_live_values_with_descriptors() {
    let telemetry = Telemetry::new();
    let text = telemetry.render(status()).expect("render");
    let lines = lines(&text);
    for expected in [
        "# TYPE xdplb_ready gauge",
        "xdplb_ready 1",
        "# HELP xdplb_vip_packets Packets to the VIP seen by this node's XDP program",
        "# TYPE xdplb_vip_packets counter",
        "xdplb_vip_packets_total{vip=\"172.16.200.20\"} 1000",
        "xdplb_vip_bytes_total{vip=\"172.16.200.20\"} 64000",
        "xdplb_vip_dropped_packets_total{vip=\"172.16.200.20\"} 7",
        "xdplb_vip_owned{vip=\"172.16.200.20\"} 1",
        "xdplb_vip_owned{vip=\"172.16.200.53\"} 0",
        "xdplb_vip_ready_backends{vip=\"172.16.200.53\"} 2",
        "xdplb_packets_total{reason=\"tx_encap\"} 5",
        "xdplb_arp_requests_total 4",
        "xdplb_arp_replies_total 3",
        "xdplb_arp_gratuitous_total 2",
        "xdplb_arp_send_errors_total 1",
        "xdplb_arp_link_outages_total 5",
        "xdplb_gossip_members{state=\"alive\"} 2",
        "xdplb_gossip_members{state=\"suspect\"} 1",
        "xdplb_gossip_members{state=\"down\"} 0",
        "xdplb_gossip_dropped_total{reason=\"forged\"} 0",
        "xdplb_gossip_dropped_total{reason=\"replayed\"} 0",
        "xdplb_gossip_dropped_total{reason=\"wrong_key\"} 6",
        "# TYPE xdplb_map_sync_duration_seconds histogram",
        "xdplb_map_sync_duration_seconds_count 0",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    // A VIP whose counters cannot be read has no samples rather than zeros.
    assert!(!text.contains("xdplb_vip_packets_total{vip=\"172.16.200.53\"}"));
    assert_eq!(lines.last(), Some(&"# EOF"));
}

#[test]
fn absent_modules_have_no_metrics() {
    let mut status = status();
    status.arp = None;
    status.gossip = None;
    let text = Telemetry::new().render(status).expect("render");
    assert!(!text.contains("xdplb_arp_"));
    assert!(!text.contains("xdplb_gossip_dropped"));
    assert!(text.contains("xdplb_gossip_members{state=\"alive\"} 2"));
}

#[test]
fn events_accumulate_between_scrapes() {
    let telemetry = Telemetry::new();
    let vip = "172.16.200.20".parse().expect("vip");
    telemetry.ownership_changed(vip, OwnershipChange::Acquired);
    telemetry.ownership_changed(vip, OwnershipChange::Acquired);
    telemetry.ownership_changed(vip, OwnershipChange::Released);
    telemetry.observe_map_sync(Duration::from_micros(700));
    telemetry.observe_map_sync(Duration::from_secs(3));
    let text = telemetry.render(status()).expect("render");
    let lines = lines(&text);
    for expected in [
        "xdplb_ownership_changes_total{vip=\"172.16.200.20\",change=\"acquired\"} 2",
        "xdplb_ownership_changes_total{vip=\"172.16.200.20\",change=\"released\"} 1",
        "xdplb_map_sync_duration_seconds_count 2",
        "xdplb_map_sync_duration_seconds_bucket{le=\"0.001\"} 1",
        "xdplb_map_sync_duration_seconds_bucket{le=\"+Inf\"} 2",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    telemetry.ownership_changed(vip, OwnershipChange::Released);
    let again = telemetry.render(status()).expect("render");
    assert!(again.contains("change=\"released\"} 2"));
}

#[test]
fn gossip_counters_convert_by_reason() {
    let counters = membership::Counters::default();
    counters
        .forged
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    let status = GossipStatus::from(&counters);
    assert_eq!(status.dropped["forged"], 2);
    assert_eq!(status.dropped["replayed"], 0);
}

#[test]
fn ipam_counters_carry_pool_and_reason_labels() {
    let telemetry = Telemetry::new();
    telemetry.ipam_allocated(Some("lan"));
    telemetry.ipam_allocated(Some("lan"));
    telemetry.ipam_allocated(None);
    telemetry.ipam_failed(Some("dmz"), "PoolExhausted");
    telemetry.ipam_failed(None, "InvalidAnnotation");
    telemetry.ipam_released(Some("lan"));
    let text = telemetry.render(status()).expect("render");
    let lines = lines(&text);
    for expected in [
        "# TYPE xdplb_ipam_allocations counter",
        "xdplb_ipam_allocations_total{pool=\"lan\"} 2",
        "xdplb_ipam_allocations_total{pool=\"\"} 1",
        "xdplb_ipam_allocation_failures_total{pool=\"dmz\",reason=\"PoolExhausted\"} 1",
        "xdplb_ipam_allocation_failures_total{pool=\"\",reason=\"InvalidAnnotation\"} 1",
        "xdplb_ipam_releases_total{pool=\"lan\"} 1",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(telemetry.ipam_counts().allocations["lan"], 2);
}

#[test]
fn pool_addresses_are_gauges_of_the_ipam_holder_only() {
    let telemetry = Telemetry::new();
    telemetry.ipam_pools(BTreeMap::from([
        (
            "lan".to_owned(),
            PoolAddresses {
                assigned: 10,
                available: 1,
            },
        ),
        ("dmz".to_owned(), PoolAddresses::default()),
    ]));
    let text = telemetry.render(status()).expect("render");
    for expected in [
        "# TYPE xdplb_ipam_pool_addresses gauge",
        r#"xdplb_ipam_pool_addresses{pool="lan",state="assigned"} 10"#,
        r#"xdplb_ipam_pool_addresses{pool="lan",state="available"} 1"#,
        r#"xdplb_ipam_pool_addresses{pool="dmz",state="available"} 0"#,
    ] {
        assert!(
            lines(&text).contains(&expected),
            "missing {expected:?} in\n{text}"
        );
    }
    // Handing the Lease over clears them: no stale view of another agent's pools.
    telemetry.ipam_pools(BTreeMap::new());
    let text = telemetry.render(status()).expect("render");
    assert!(!text.contains("xdplb_ipam_pool_addresses{"), "{text}");
}

#[test]
fn ignored_status_addresses_are_counted() {
    let telemetry = Telemetry::new();
    let text = telemetry.render(status()).expect("render");
    assert!(
        lines(&text).contains(&"xdplb_ignored_status_addresses_total 0"),
        "{text}"
    );
    telemetry.status_address_ignored();
    telemetry.status_address_ignored();
    let text = telemetry.render(status()).expect("render");
    assert!(
        lines(&text).contains(&"xdplb_ignored_status_addresses_total 2"),
        "{text}"
    );
    assert_eq!(telemetry.ignored_status_addresses(), 2);
}

#[test]
fn errors_are_counted_by_component_and_kind() {
    let telemetry = Telemetry::new();
    let before = telemetry.render(status()).expect("render");
    assert!(before.contains("# TYPE xdplb_errors counter\n"), "{before}");
    assert!(!before.contains("xdplb_errors_total{"), "{before}");
    assert_eq!(telemetry.count_error(Component::Dataplane, "capacity"), 1);
    assert_eq!(telemetry.count_error(Component::Dataplane, "capacity"), 2);
    assert_eq!(
        telemetry.count_error(Component::IpamLease, "lease_write"),
        1
    );
    let text = telemetry.render(status()).expect("render");
    for line in [
        r#"xdplb_errors_total{component="dataplane",kind="capacity"} 2"#,
        r#"xdplb_errors_total{component="ipam_lease",kind="lease_write"} 1"#,
    ] {
        assert!(lines(&text).contains(&line), "no {line} in\n{text}");
    }
}

/// The metrics of docs/metrics.md's table, by name, with their label names: every
/// `xdplb_…` name in backticks in the first column, and the backticked names of the
/// labels column outside parentheses (which list a label's values).
fn documented_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    documented_in(&std::fs::read_to_string(path).expect("docs/metrics.md"))
}

fn documented_in(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let backticked = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut metrics = BTreeMap::new();
    for row in page.lines().filter(|row| row.starts_with("| `xdplb_")) {
        let columns: Vec<&str> = row.split(" | ").collect();
        let mut labels = String::new();
        let mut depth = 0_u32;
        for c in columns.get(2).copied().unwrap_or_default().chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                c if depth == 0 => labels.push(c),
                _ => {}
            }
        }
        let labels: BTreeSet<String> = backticked(&labels).into_iter().collect();
        for name in backticked(columns[0]) {
            metrics.insert(name, labels.clone());
        }
    }
    metrics
}

/// The families `text` serves, as scraped (counters with `_total`), with the label
/// names their samples carry (a histogram's `le` is the format's, not ours).
fn served_metrics(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut families = BTreeMap::new();
    let mut histograms = Vec::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declaration.split_once(' ').expect("TYPE name kind");
            let name = match kind {
                "counter" => format!("{name}_total"),
                "histogram" => {
                    histograms.push(name.to_owned());
                    name.to_owned()
                }
                _ => name.to_owned(),
            };
            families.insert(name, BTreeSet::new());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = line.split([' ', '{']).next().unwrap_or_default();
        let family = histograms
            .iter()
            .find(|name| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| sample.strip_suffix(suffix) == Some(name.as_str()))
            })
            .map_or(sample, String::as_str)
            .to_owned();
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(labels, _)| labels)
            .unwrap_or_default();
        let names = labels
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, _)| name.to_owned())
            .filter(|name| name != "le");
        families
            .get_mut(&family)
            .unwrap_or_else(|| panic!("sample {line:?} of no declared family"))
            .extend(names);
    }
    families
}

#[test]
fn the_metrics_reference_lists_exactly_the_served_metrics_and_labels() {
    let telemetry = Telemetry::new();
    // Kubernetes mode, with one sample of every family, so every label shows.
    telemetry.count_kubernetes_unreachable(0);
    telemetry.count_error(Component::Dataplane, "capacity");
    telemetry.ipam_allocated(Some("lan"));
    telemetry.ipam_failed(Some("lan"), "PoolExhausted");
    telemetry.ipam_released(Some("lan"));
    telemetry.ipam_pools(BTreeMap::from([(
        "lan".to_owned(),
        PoolAddresses::default(),
    )]));
    telemetry.ownership_changed(
        "172.16.200.20".parse().expect("vip"),
        OwnershipChange::Acquired,
    );
    let mut status = status();
    status.vips[1].counters = Some(VipCounters::default());
    let served = served_metrics(&telemetry.render(status).expect("render"));
    assert!(served.contains_key("xdplb_errors_total"), "{served:?}");
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        documented_metrics().keys().collect::<Vec<_>>(),
        "metric names"
    );
    assert_eq!(served, documented_metrics(), "label names");
}

#[test]
fn the_reference_reader_sees_labels_and_not_their_values() {
    let labels = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    };
    let documented = documented_in(
        "| `xdplb_a_total`, `xdplb_b` | counter | `vip`, `change` (`acquired`, `released`) | x |\n\
         | `xdplb_h` | histogram | | y |\n",
    );
    assert_eq!(
        documented,
        BTreeMap::from([
            ("xdplb_a_total".to_owned(), labels(&["vip", "change"])),
            ("xdplb_b".to_owned(), labels(&["vip", "change"])),
            ("xdplb_h".to_owned(), labels(&[])),
        ])
    );
    let served = served_metrics(
        "# TYPE xdplb_a counter\nxdplb_a_total{vip=\"1\",change=\"acquired\"} 1\n# TYPE xdplb_h histogram\nxdplb_h_bucket{le=\"1\"} 0\nxdplb_h_count 0\n# EOF\n",
    );
    assert_eq!(
        served,
        BTreeMap::from([
            ("xdplb_a_total".to_owned(), labels(&["vip", "change"])),
            ("xdplb_h".to_owned(), labels(&[])),
        ])
    );
}
