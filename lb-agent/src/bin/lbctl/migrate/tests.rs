use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt as _;
use lb_agent::{
    apis::address_pool::{AddressPool, AddressPoolSpec},
    ipam::pool::Pool,
};
use serde::Deserialize as _;

use super::*;

/// Seed 002's MetalLB configuration, as its network write-up shows it.
const SEED_002: &str = include_str!("../../../../tests/fixtures/metallb/seed-002.yaml");
/// Seed 003's two clusters' pools (their L2Advertisements are not in the write-up).
const SEED_003: &str = include_str!("../../../../tests/fixtures/metallb/seed-003.yaml");

fn migrate(files: &[(&str, &str)]) -> Result<Migration, MigrateError> {
    let mut objects = Vec::new();
    for (name, text) in files {
        objects.extend(parse(name, text)?);
    }
    convert(&objects)
}

fn pool<'a>(migration: &'a Migration, name: &str) -> &'a ConvertedPool {
    migration
        .pools
        .iter()
        .find(|converted| converted.pool.name_any() == name)
        .unwrap_or_else(|| panic!("no pool {name} in {migration:#?}"))
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(key.to_owned(), value.to_owned())].into()),
        match_expressions: None,
    }
}

/// The rendered YAML, read back: every document an `AddressPool` the IPAM accepts.
fn read_back(yaml: &str) -> Vec<AddressPool> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| {
            let pool = AddressPool::deserialize(document).expect("an AddressPool");
            Pool::from_resource(&pool).expect("a pool the IPAM accepts");
            pool
        })
        .collect()
}

#[test]
fn seed_002_converts_exactly() {
    let migration = migrate(&[("metallb.yaml", SEED_002)]).expect("converts");
    assert_eq!(migration.warnings, Vec::<String>::new());
    assert_eq!(migration.pools.len(), 1);
    let converted = pool(&migration, "default-pool");
    assert_eq!(converted.source, "metallb-system/default-pool");
    assert_eq!(converted.advertisements, ["metallb-system/default"]);
    assert_eq!(converted.warnings, Vec::<String>::new());
    assert_eq!(
        converted.pool.spec,
        AddressPoolSpec {
            addresses: vec!["192.168.7.230-192.168.7.235".to_owned()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
            // Every node, the agent's LAN interface: what the advertisement said.
            announcement: None,
        }
    );
    assert!(
        converted.pool.metadata.namespace.is_none(),
        "cluster-scoped"
    );
    let yaml = migration.to_yaml().expect("renders");
    assert_eq!(read_back(&yaml), std::slice::from_ref(&converted.pool));
    assert!(
        yaml.contains("# From IPAddressPool metallb-system/default-pool"),
        "{yaml}"
    );
    assert!(yaml.contains("metallb.io/loadBalancerIPs"), "{yaml}");
}

#[test]
fn pools_without_advertisements_convert_with_one_warning() {
    let migration = migrate(&[("control.yaml", SEED_003)]).expect("converts");
    let names: Vec<String> = migration.pools.iter().map(|c| c.pool.name_any()).collect();
    assert_eq!(names, ["app-cluster-pool", "control-cluster-pool"]);
    assert_eq!(
        pool(&migration, "app-cluster-pool").pool.spec.addresses,
        ["192.168.64.120-192.168.64.140"]
    );
    assert_eq!(migration.warnings.len(), 1, "{:?}", migration.warnings);
    assert!(migration.warnings[0].contains("no L2Advertisement"));
    assert_eq!(read_back(&migration.to_yaml().expect("renders")).len(), 2);
}

#[test]
fn every_field_carries_over() {
    let text = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: edge, namespace: metallb-system, labels: { zone: lan } }
spec:
  addresses: [192.168.8.245/29, '172.16.200.53/32', 'fd00::/120', ' 192.168.8.250 - 192.168.8.251']
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 5
    namespaces: [edge]
    namespaceSelectors: [{ matchLabels: { team: a } }, { matchLabels: { team: b } }]
    serviceSelectors: [{ matchLabels: { expose: lan } }]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: b-workers, namespace: metallb-system }
spec:
  ipAddressPoolSelectors: [{ matchExpressions: [{ key: zone, operator: In, values: [lan] }] }]
  nodeSelectors: [{ matchLabels: { role: worker } }]
  interfaces: [eth1]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: a-edge, namespace: metallb-system }
spec:
  ipAddressPools: [edge]
  nodeSelectors: [{ matchLabels: { role: edge } }]
  interfaces: [eth0]
";
    let migration = migrate(&[("edge.yaml", text)]).expect("converts");
    let converted = pool(&migration, "edge");
    let spec = &converted.pool.spec;
    assert_eq!(
        spec.addresses,
        [
            "192.168.8.240/29",
            "172.16.200.53/32",
            "192.168.8.250-192.168.8.251"
        ]
    );
    assert!(!spec.auto_assign);
    assert!(spec.avoid_buggy_ips);
    let allocation = spec.service_allocation.as_ref().expect("serviceAllocation");
    assert_eq!(allocation.priority, Some(5));
    assert_eq!(allocation.namespaces, ["edge"]);
    assert_eq!(allocation.namespace_selector, Some(selector("team", "a")));
    assert_eq!(allocation.service_selector, Some(selector("expose", "lan")));
    // Both advertisements select the pool (by name, by label); in name order, a-edge's
    // node selector is kept and the interfaces are united.
    assert_eq!(
        converted.advertisements,
        ["metallb-system/a-edge", "metallb-system/b-workers"]
    );
    let announcement = spec.announcement.as_ref().expect("announcement");
    assert_eq!(announcement.node_selector, Some(selector("role", "edge")));
    assert_eq!(announcement.interfaces, ["eth0", "eth1"]);
    let warnings = converted.warnings.join("\n");
    for part in ["fd00::/120", "namespaceSelectors", "2 node selectors"] {
        assert!(warnings.contains(part), "{part} missing from {warnings}");
    }
    assert_eq!(converted.warnings.len(), 3, "{warnings}");
    let yaml = migration.to_yaml().expect("renders");
    assert_eq!(read_back(&yaml), std::slice::from_ref(&converted.pool));
    assert!(
        yaml.contains("# WARNING: pool edge: MetalLB announced it"),
        "{yaml}"
    );
}

#[test]
fn an_advertisement_for_every_node_makes_the_union_exact() {
    let text = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: lan, namespace: metallb-system }
spec: { addresses: [192.168.8.240-192.168.8.250] }
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: workers, namespace: metallb-system }
spec: { nodeSelectors: [{ matchLabels: { role: worker } }], interfaces: [eth0] }
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: everyone, namespace: metallb-system }
spec: { ipAddressPools: [lan] }
";
    let migration = migrate(&[("lan.yaml", text)]).expect("converts");
    let converted = pool(&migration, "lan");
    assert_eq!(converted.pool.spec.announcement, None);
    assert_eq!(converted.warnings, Vec::<String>::new());
}

#[test]
fn kubectl_lists_services_and_bgp_objects_are_read() {
    let text = "\
apiVersion: v1
kind: List
items:
  - apiVersion: metallb.io/v1beta1
    kind: IPAddressPool
    metadata: { name: lan, namespace: metallb-system }
    spec: { addresses: [192.168.8.240-192.168.8.250] }
  - apiVersion: metallb.io/v1beta1
    kind: BGPAdvertisement
    metadata: { name: uplink, namespace: metallb-system }
    spec: { ipAddressPools: [lan] }
---
apiVersion: v1
kind: Service
metadata:
  name: traefik
  namespace: kube-system
  annotations:
    metallb.universe.tf/loadBalancerIPs: 192.168.8.240
    metallb.universe.tf/ip-allocated-from-pool: lan
spec: { type: LoadBalancer, loadBalancerClass: metallb }
---
apiVersion: v1
kind: Service
metadata: { name: coredns-lb, namespace: kube-system }
spec: { type: LoadBalancer, loadBalancerIP: 192.168.8.241 }
---
apiVersion: v1
kind: Service
metadata: { name: internal, namespace: default }
spec: { type: ClusterIP }
";
    let migration = migrate(&[("export.yaml", text)]).expect("converts");
    assert_eq!(migration.pools.len(), 1);
    let warnings = migration.warnings.join("\n");
    assert!(
        warnings.contains("BGPAdvertisement metallb-system/uplink (export.yaml (document 1))"),
        "{warnings}"
    );
    let names: Vec<&str> = migration.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["kube-system/traefik", "kube-system/coredns-lb"]);
    let traefik = &migration.services[0];
    assert_eq!(
        traefik.kept,
        ["metallb.universe.tf/loadBalancerIPs: 192.168.8.240 (read like xdplb.io/ips)"]
    );
    let changes = traefik.change.join("\n");
    assert!(
        changes.contains("ip-allocated-from-pool was written by MetalLB"),
        "{changes}"
    );
    assert!(
        changes.contains("spec.loadBalancerClass is metallb"),
        "{changes}"
    );
    assert_eq!(
        migration.services[1].kept,
        ["spec.loadBalancerIP: 192.168.8.241 (read like xdplb.io/ips)"]
    );
    assert!(migration.services[1].change.is_empty());
}

fn error(files: &[(&str, &str)]) -> String {
    migrate(files).expect_err("must fail").to_string()
}

#[test]
fn bad_inputs_fail_with_the_file_document_and_reason() {
    let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: lan }\n";
    for (text, expected) in [
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\n".to_owned(),
            "in.yaml (document 1): unknown kind `Deployment` (apiVersion `apps/v1`): expected MetalLB's IPAddressPool",
        ),
        (
            format!("{pool}spec: {{ addresses: [192.168.8.240-192.168.8.250] }}\n---\napiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {{ name: c }}\n---\napiVersion: metallb.io/v1beta1\nkind: Frobnicator\nmetadata: {{ name: f }}\n"),
            "in.yaml (document 3): unknown kind `Frobnicator`",
        ),
        (
            format!("{pool}spec: {{ addresses: [192.168.8.250-192.168.8.240] }}\n"),
            "in.yaml (document 1): IPAddressPool lan: spec.addresses: `192.168.8.250-192.168.8.240`: the range is reversed",
        ),
        (
            format!("{pool}spec: {{ addresses: [192.168.8.240] }}\n"),
            "`192.168.8.240`: not an IPv4 CIDR",
        ),
        (
            format!("{pool}spec: {{ addresses: [192.168.8.0/24] }}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{ name: l2, namespace: metallb-system }}\nspec: {{ ipAddressPools: [lan, dmz] }}\n"),
            "in.yaml (document 2): L2Advertisement metallb-system/l2 names pool `dmz`, which no IPAddressPool in the input defines",
        ),
        (
            format!("{pool}spec: {{ addresses: [192.168.8.0/24] }}\n---\n{pool}spec: {{ addresses: [192.168.9.0/24] }}\n"),
            "in.yaml (document 2): IPAddressPool `lan` is defined twice, first in in.yaml (document 1)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: config, namespace: metallb-system }\ndata:\n  config: |\n    address-pools:\n    - name: default\n".to_owned(),
            "MetalLB's ConfigMap configuration (before v0.13)",
        ),
        (
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: { name: l2 }\n".to_owned(),
            "no IPAddressPool to convert",
        ),
        (
            format!("{pool}spec: {{ addresses: 192.168.8.0/24 }}\n"),
            "in.yaml (document 1): spec: invalid type: string",
        ),
        (
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nspec: { addresses: [192.168.8.0/24] }\n".to_owned(),
            "IPAddressPool without metadata.name",
        ),
        ("kind: [".to_owned(), "in.yaml (document 1): not valid YAML"),
        (
            format!("{pool}spec: {{ addresses: [192.168.8.0/24] }}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{ name: l2 }}\nspec: {{ ipAddressPoolSelectors: [{{ matchExpressions: [{{ key: a, operator: Gt, values: ['1'] }}] }}] }}\n"),
            "in.yaml (document 2): ipAddressPoolSelectors: Invalid expression operator",
        ),
    ] {
        let message = error(&[("in.yaml", &text)]);
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    }
}

#[test]
fn ipv6_only_pools_are_left_out_with_a_warning() {
    let text = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: v6, namespace: metallb-system }
spec: { addresses: ['fd00::/120'] }
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: v4, namespace: metallb-system }
spec: { addresses: [192.168.8.0/24], serviceAllocation: { priority: 0, namespaces: [] } }
";
    let migration = migrate(&[("a.yaml", text)]).expect("converts");
    assert_eq!(migration.pools.len(), 1);
    // An unset priority and no restriction: no serviceAllocation at all.
    assert_eq!(pool(&migration, "v4").pool.spec.service_allocation, None);
    assert!(
        migration
            .warnings
            .iter()
            .any(|warning| warning.contains("metallb-system/v6 has only IPv6")),
        "{:?}",
        migration.warnings
    );
}

#[test]
fn pools_and_advertisements_may_come_from_different_files() {
    let (pools, advertisement) = SEED_002.split_once("---\n").expect("two documents");
    let migration =
        migrate(&[("pools.yaml", pools), ("l2.yaml", advertisement)]).expect("converts");
    assert_eq!(
        pool(&migration, "default-pool").advertisements,
        ["metallb-system/default"]
    );
    let message = error(&[("l2.yaml", advertisement), ("other.yaml", SEED_003)]);
    assert!(
        message.starts_with("l2.yaml (document 1): L2Advertisement"),
        "{message}"
    );
}
