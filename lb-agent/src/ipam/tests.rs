//! Whole-cluster translation tests: the seeds' pools and Services (YAML under
//! lb-agent/tests/fixtures/k8s/) through request extraction and allocation, as the
//! controller drives them.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::ResourceExt as _;
use serde::Deserialize as _;

use super::{
    allocator::{AllocationError, RebuildConflict},
    request::Locality,
    *,
};
use crate::apis::{address_pool::AddressPool, service};

const EDGE_VIPS: &str = include_str!("../../tests/fixtures/k8s/edge-vips.yaml");
const K3S_LAN: &str = include_str!("../../tests/fixtures/k8s/k3s-lan.yaml");
const MULTI_CLUSTER: &str = include_str!("../../tests/fixtures/k8s/multi-cluster.yaml");
const PROXMOX: &str = include_str!("../../tests/fixtures/k8s/proxmox-small-pool.yaml");
const RESTART: &str = include_str!("../../tests/fixtures/k8s/restart.yaml");

const OURS: ClassPolicy = ClassPolicy {
    default_class: false,
};
const DEFAULT_CLASS: ClassPolicy = ClassPolicy {
    default_class: true,
};

#[derive(Default)]
struct Cluster {
    pools: Vec<AddressPool>,
    namespaces: BTreeMap<String, Labels>,
    services: Vec<Service>,
}

impl Cluster {
    fn load(yaml: &str) -> Self {
        let mut cluster = Self::default();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(document).expect("YAML");
            match value["kind"].as_str() {
                Some("AddressPool") => cluster.pools.push(from_value(value)),
                Some("Service") => cluster.services.push(from_value(value)),
                Some("Namespace") => {
                    let namespace: Namespace = from_value(value);
                    let labels = namespace.labels().clone();
                    cluster.namespaces.insert(namespace.name_any(), labels);
                }
                None if value.is_null() => {}
                other => panic!("unexpected kind {other:?}"),
            }
        }
        cluster
    }

    fn allocator(&self) -> Allocator {
        let pools = self
            .pools
            .iter()
            .map(|pool| Pool::from_resource(pool).expect("valid pool"));
        Allocator::new(pools)
    }

    fn namespace_labels(&self, namespace: &str) -> Labels {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }

    fn service(&self, key: &str) -> &Service {
        self.services
            .iter()
            .find(|service| service::key(service).is_some_and(|k| k.to_string() == key))
            .unwrap_or_else(|| panic!("no Service {key}"))
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> T {
    serde_yaml::from_value(value).expect("a valid object")
}

/// What the controller would do with one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Assigned(Ipv4Addr, Option<String>),
    /// `reason`, message.
    Refused(&'static str, String),
    NotOurs(Responsibility),
}

fn assigned(ip: &str, pool: &str) -> Outcome {
    Outcome::Assigned(ip.parse().expect("an address"), Some(pool.to_owned()))
}

fn drive(
    allocator: &mut Allocator,
    cluster: &Cluster,
    service: &Service,
    policy: ClassPolicy,
) -> Outcome {
    let responsibility = service::responsibility(policy, service);
    if responsibility != Responsibility::Ours {
        return Outcome::NotOurs(responsibility);
    }
    let request = match service::request(service) {
        Ok(request) => request,
        Err(error) => return Outcome::Refused(error.reason(), error.to_string()),
    };
    let labels = cluster.namespace_labels(&request.service.namespace);
    match allocator.allocate(&request, &labels) {
        Ok(allocation) => Outcome::Assigned(allocation.ip, allocation.pool),
        Err(error) => Outcome::Refused(error.reason(), error.to_string()),
    }
}

/// Every Service of the cluster in file order, as the controller's first pass would.
fn drive_all(cluster: &Cluster, policy: ClassPolicy) -> (Allocator, BTreeMap<String, Outcome>) {
    let mut allocator = cluster.allocator();
    let outcomes = cluster
        .services
        .iter()
        .map(|service| {
            let key = service::key(service).expect("named").to_string();
            (key, drive(&mut allocator, cluster, service, policy))
        })
        .collect();
    (allocator, outcomes)
}

fn usage(allocator: &Allocator, pool: &str) -> (u64, u64) {
    let usage = allocator.usage()[pool];
    (usage.assigned, usage.available)
}

#[test]
fn edge_vips_reserved_addresses_shared_dns_and_etp_local() {
    let cluster = Cluster::load(EDGE_VIPS);
    let (allocator, outcomes) = drive_all(&cluster, OURS);
    let expected = BTreeMap::from([
        (
            "edge/traefik".to_owned(),
            assigned("172.16.200.20", "edge-vips"),
        ),
        (
            "internal-dns/coredns-udp".to_owned(),
            assigned("172.16.200.53", "edge-vips"),
        ),
        (
            "internal-dns/coredns-tcp".to_owned(),
            assigned("172.16.200.53", "edge-vips"),
        ),
        (
            "apps/n8n".to_owned(),
            assigned("172.16.201.10", "lan-general"),
        ),
        // .0 is skipped (avoidBuggyIPs); the dedicated pool wins on priority.
        (
            "edge/grafana".to_owned(),
            assigned("172.16.200.1", "edge-vips"),
        ),
    ]);
    assert_eq!(outcomes, expected);
    let dns: Ipv4Addr = "172.16.200.53".parse().expect("address");
    assert_eq!(
        allocator.holders(dns),
        [
            ServiceKey::new("internal-dns", "coredns-tcp"),
            ServiceKey::new("internal-dns", "coredns-udp")
        ]
    );
    // 172.16.200.0/24 less .0 and .255: 254 addresses.
    assert_eq!(usage(&allocator, "edge-vips"), (3, 251));
    assert_eq!(usage(&allocator, "lan-general"), (1, 9));
    let traefik = service::request(cluster.service("edge/traefik")).expect("request");
    assert_eq!(
        traefik.locality,
        Locality::Local {
            selector: "app.kubernetes.io/name=traefik".to_owned()
        }
    );
}

#[test]
fn k3s_lan_as_the_default_class_takes_classless_services() {
    let cluster = Cluster::load(K3S_LAN);
    let (allocator, outcomes) = drive_all(&cluster, DEFAULT_CLASS);
    let expected = BTreeMap::from([
        (
            "kube-system/traefik".to_owned(),
            assigned("192.168.8.240", "lan"),
        ),
        (
            "kube-system/coredns-lb".to_owned(),
            assigned("192.168.8.241", "lan"),
        ),
        (
            "kube-system/kube-dns".to_owned(),
            Outcome::NotOurs(Responsibility::NotLoadBalancer),
        ),
        (
            "example-admin/example-admin".to_owned(),
            assigned("192.168.8.242", "lan"),
        ),
    ]);
    assert_eq!(outcomes, expected);
    assert_eq!(usage(&allocator, "lan"), (3, 8));
    let coredns = service::request(cluster.service("kube-system/coredns-lb")).expect("request");
    assert_eq!(
        coredns
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["53/TCP", "53/UDP"],
        "one Service, both protocols"
    );

    // Not the default class: MetalLB keeps these Services, the agent touches none.
    let (allocator, outcomes) = drive_all(&cluster, OURS);
    assert!(
        outcomes
            .values()
            .all(|outcome| matches!(outcome, Outcome::NotOurs(_))),
        "{outcomes:?}"
    );
    assert_eq!(usage(&allocator, "lan"), (0, 11));
}

#[test]
fn multi_cluster_dedicated_pool_and_reserved_addresses() {
    let cluster = Cluster::load(MULTI_CLUSTER);
    let (mut allocator, outcomes) = drive_all(&cluster, OURS);
    let control = "control-cluster-pool";
    let app = "app-cluster-pool";
    let expected = BTreeMap::from([
        (
            "argocd/argocd-server".to_owned(),
            assigned("192.168.64.100", control),
        ),
        (
            "monitoring/prometheus".to_owned(),
            assigned("192.168.64.101", control),
        ),
        (
            "monitoring/grafana".to_owned(),
            assigned("192.168.64.102", control),
        ),
        (
            "vault/vault".to_owned(),
            assigned("192.168.64.103", control),
        ),
        (
            "istio-system/istio-ingressgateway".to_owned(),
            assigned("192.168.64.106", control),
        ),
        (
            "monitoring/loki".to_owned(),
            assigned("192.168.64.104", control),
        ),
        (
            "apps/sample-app-1".to_owned(),
            assigned("192.168.64.120", app),
        ),
        (
            "apps/sample-app-2".to_owned(),
            assigned("192.168.64.121", app),
        ),
    ]);
    assert_eq!(outcomes, expected);
    assert_eq!(usage(&allocator, control), (6, 5));
    assert_eq!(usage(&allocator, app), (2, 19));

    // An app namespace asking for a control address is refused, naming the rule.
    let mut intruder = cluster.service("apps/sample-app-1").clone();
    intruder.metadata.name = Some("sample-app-3".to_owned());
    intruder.metadata.annotations = Some(BTreeMap::from([(
        "metallb.io/loadBalancerIPs".to_owned(),
        "192.168.64.105".to_owned(),
    )]));
    let Outcome::Refused(reason, message) = drive(&mut allocator, &cluster, &intruder, OURS) else {
        panic!("a control address went to an app namespace");
    };
    assert_eq!(reason, "PoolNotAllowed");
    assert!(
        message.contains("pool `control-cluster-pool` serves only namespaces argocd, istio-system, monitoring, vault"),
        "{message}"
    );
}

#[test]
fn proxmox_small_pool_exhausts_then_reuses_a_released_address() {
    let cluster = Cluster::load(PROXMOX);
    let (mut allocator, outcomes) = drive_all(&cluster, OURS);
    let ips: Vec<String> = outcomes
        .iter()
        .filter_map(|(key, outcome)| match outcome {
            Outcome::Assigned(ip, _) => Some(format!("{key}={ip}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        ips,
        [
            "argocd/argocd-server=192.168.7.231",
            "kube-system/hubble-ui=192.168.7.235",
            "kube-system/traefik=192.168.7.230",
            "monitoring/grafana=192.168.7.232",
            "monitoring/prometheus=192.168.7.234",
            "vaultwarden/vaultwarden=192.168.7.233",
        ]
    );
    assert_eq!(
        outcomes["n8n/n8n"],
        Outcome::Refused(
            "PoolExhausted",
            "no address left in pool `default-pool`".to_owned()
        )
    );
    assert_eq!(usage(&allocator, "default-pool"), (6, 0));

    let grafana = ServiceKey::new("monitoring", "grafana");
    assert_eq!(
        allocator.release(&grafana),
        Some("192.168.7.232".parse().expect("address"))
    );
    assert_eq!(allocator.release(&grafana), None, "released once");
    assert_eq!(usage(&allocator, "default-pool"), (5, 1));
    assert_eq!(
        drive(&mut allocator, &cluster, cluster.service("n8n/n8n"), OURS),
        assigned("192.168.7.232", "default-pool")
    );
    assert_eq!(allocator.allocation(&grafana), None);
}

#[test]
fn restart_rebuilds_from_statuses_without_giving_an_address_twice() {
    let cluster = Cluster::load(RESTART);
    let mut allocator = cluster.allocator();
    let conflicts = allocator.rebuild(service::holders(&cluster.services, OURS));
    let new_blog = ServiceKey::new("blog", "new-blog");
    let old_blog = ServiceKey::new("blog", "old-blog");
    assert_eq!(
        conflicts,
        [RebuildConflict {
            service: new_blog.clone(),
            ip: "192.168.8.242".parse().expect("address"),
            error: AllocationError::AddressInUse {
                ip: "192.168.8.242".parse().expect("address"),
                holders: vec![old_blog.clone()],
                other_class: false,
            },
        }]
    );
    let held =
        |namespace: &str, name: &str| allocator.allocation(&ServiceKey::new(namespace, name));
    let lan = |ip: &str| {
        Some(Allocation {
            ip: ip.parse().expect("address"),
            pool: Some("lan".to_owned()),
        })
    };
    assert_eq!(held("kube-system", "traefik"), lan("192.168.8.240"));
    assert_eq!(held("kube-system", "coredns-udp"), lan("192.168.8.241"));
    assert_eq!(held("kube-system", "coredns-tcp"), lan("192.168.8.241"));
    assert_eq!(held("blog", "old-blog"), lan("192.168.8.242"));
    assert_eq!(held("blog", "new-blog"), None);
    assert_eq!(held("home", "home-assistant"), None, "MetalLB's, not ours");
    assert_eq!(held("apps", "was-lb"), None);
    assert_eq!(
        held("apps", "legacy"),
        Some(Allocation {
            ip: "10.10.10.10".parse().expect("address"),
            pool: None
        }),
        "an address outside every pool is kept"
    );
    // .240-.242 ours, .243 MetalLB's.
    assert_eq!(usage(&allocator, "lan"), (4, 7));

    // The controller's first pass: every rebuilt Service keeps its address, the loser
    // and the new Service get the lowest addresses nobody holds.
    let outcomes: BTreeMap<String, Outcome> = cluster
        .services
        .iter()
        .map(|service| {
            let key = service::key(service).expect("named").to_string();
            (key, drive(&mut allocator, &cluster, service, OURS))
        })
        .collect();
    assert_eq!(
        outcomes["kube-system/traefik"],
        assigned("192.168.8.240", "lan")
    );
    assert_eq!(
        outcomes["kube-system/coredns-tcp"],
        assigned("192.168.8.241", "lan")
    );
    assert_eq!(outcomes["blog/old-blog"], assigned("192.168.8.242", "lan"));
    assert_eq!(outcomes["blog/new-blog"], assigned("192.168.8.244", "lan"));
    assert_eq!(outcomes["media/jellyfin"], assigned("192.168.8.245", "lan"));
    assert_eq!(
        outcomes["apps/legacy"],
        Outcome::Assigned("10.10.10.10".parse().expect("address"), None)
    );
    assert_eq!(usage(&allocator, "lan"), (6, 5));
}

/// The Services of one conflict case, after a shared `lan` pool; all but the last must
/// get an address.
fn last_outcome(services: &str) -> Outcome {
    let pool = "apiVersion: xdplb.io/v1alpha1\nkind: AddressPool\nmetadata: { name: lan }\nspec: { addresses: [192.168.8.240-192.168.8.250] }\n";
    let pinned = "apiVersion: xdplb.io/v1alpha1\nkind: AddressPool\nmetadata: { name: pinned }\nspec: { addresses: [172.16.200.53/32], autoAssign: false }\n";
    let cluster = Cluster::load(&format!("{pool}---\n{pinned}---\n{services}"));
    let (_, outcomes) = drive_all(&cluster, OURS);
    let (last, earlier) = cluster.services.split_last().expect("a Service");
    for service in earlier {
        let key = service::key(service).expect("named").to_string();
        assert!(
            matches!(outcomes[&key], Outcome::Assigned(..)),
            "{key}: {:?}",
            outcomes[&key]
        );
    }
    outcomes[&service::key(last).expect("named").to_string()].clone()
}

/// A `LoadBalancer` Service of ours in `default` named `name`; `metadata` adds metadata
/// (`annotations: ...`) and `spec` spec fields, both in flow style.
fn service(name: &str, metadata: &str, spec: &str) -> String {
    let metadata = [
        format!("name: {name}, namespace: default"),
        metadata.to_owned(),
    ];
    let spec = [
        "type: LoadBalancer, loadBalancerClass: xdplb.io/lb".to_owned(),
        spec.to_owned(),
    ];
    let flow = |parts: &[String]| {
        let parts: Vec<&str> = parts
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        parts.join(", ")
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ {} }}\nspec: {{ {} }}\n---\n",
        flow(&metadata),
        flow(&spec)
    )
}

#[test]
fn conflicting_and_unservable_requests_name_their_problem() {
    let tcp53 = "ports: [{ port: 53, protocol: TCP }]";
    let udp53 = "ports: [{ port: 53, protocol: UDP }]";
    let cases: [(&str, String, &str, &str); 12] = [
        (
            "two Services want one address without a sharing key",
            service(
                "a",
                "",
                "loadBalancerIP: 192.168.8.240, ports: [{ port: 80 }]",
            ) + &service(
                "b",
                "",
                "loadBalancerIP: 192.168.8.240, ports: [{ port: 443 }]",
            ),
            "AddressInUse",
            "192.168.8.240 is already used by default/a; Services share an address only with the same sharing key",
        ),
        (
            "one sharing key, one port twice",
            service(
                "a",
                "annotations: { xdplb.io/sharing-key: dns }",
                &format!("loadBalancerIP: 192.168.8.241, {tcp53}"),
            ) + &service(
                "b",
                "annotations: { metallb.io/allow-shared-ip: dns }",
                &format!("loadBalancerIP: 192.168.8.241, {tcp53}"),
            ),
            "PortConflict",
            "192.168.8.241: port 53/TCP is already used by default/a",
        ),
        (
            "different sharing keys",
            service(
                "a",
                "annotations: { xdplb.io/sharing-key: dns }",
                &format!("loadBalancerIP: 192.168.8.241, {tcp53}"),
            ) + &service(
                "b",
                "annotations: { xdplb.io/sharing-key: other }",
                &format!("loadBalancerIP: 192.168.8.241, {udp53}"),
            ),
            "SharingKeyMismatch",
            "192.168.8.241 is shared under sharing key `dns` by default/a, not `other`",
        ),
        (
            "sharing between Local and Cluster",
            service(
                "a",
                "annotations: { xdplb.io/sharing-key: dns }",
                &format!(
                    "loadBalancerIP: 192.168.8.241, externalTrafficPolicy: Local, selector: {{ app: dns }}, {tcp53}"
                ),
            ) + &service(
                "b",
                "annotations: { xdplb.io/sharing-key: dns }",
                &format!("loadBalancerIP: 192.168.8.241, {udp53}"),
            ),
            "TrafficPolicyMismatch",
            "need the same externalTrafficPolicy",
        ),
        (
            "an unknown pool",
            service(
                "a",
                "annotations: { metallb.universe.tf/address-pool: production }",
                tcp53,
            ),
            "UnknownPool",
            "address pool `production` does not exist or is invalid",
        ),
        (
            "an address outside every pool",
            service("a", "annotations: { xdplb.io/ips: 192.168.9.10 }", tcp53),
            "NotInAnyPool",
            "192.168.9.10 is not in any address pool",
        ),
        (
            "an address outside the requested pool",
            service(
                "a",
                "annotations: { xdplb.io/ips: 192.168.8.245, xdplb.io/pool: pinned }",
                tcp53,
            ),
            "NotInRequestedPool",
            "192.168.8.245 is not in the requested pool `pinned`",
        ),
        (
            "a pinned pool's only address, then a second Service naming the pool",
            service("a", "annotations: { xdplb.io/pool: pinned }", tcp53)
                + &service("b", "annotations: { xdplb.io/pool: pinned }", udp53),
            "PoolExhausted",
            "no address left in pool `pinned`",
        ),
        (
            "an IPv6 address",
            service(
                "a",
                "annotations: { xdplb.io/ips: \"192.168.8.240,fd00::53\" }",
                tcp53,
            ),
            "IPv6Unsupported",
            "xdplb.io/ips: fd00::53: IPv6 is not supported yet",
        ),
        (
            "dual-stack required",
            service(
                "a",
                "",
                &format!("ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], {tcp53}"),
            ),
            "IPv6Unsupported",
            "spec.ipFamilyPolicy: RequireDualStack: IPv6 is not supported yet",
        ),
        (
            "two sources asking for different addresses",
            service(
                "a",
                "annotations: { metallb.io/loadBalancerIPs: 192.168.8.240 }",
                &format!("loadBalancerIP: 192.168.8.241, {tcp53}"),
            ),
            "ConflictingRequest",
            "metallb.io/loadBalancerIPs asks for `192.168.8.240` but spec.loadBalancerIP asks for `192.168.8.241`; keep one",
        ),
        (
            "SCTP",
            service("a", "", "ports: [{ port: 3868, protocol: SCTP }]"),
            "UnsupportedProtocol",
            "port 3868/SCTP: only TCP and UDP are supported",
        ),
    ];
    for (case, services, reason, message) in cases {
        match last_outcome(&services) {
            Outcome::Refused(got_reason, got_message) => {
                assert_eq!(got_reason, reason, "{case}: {got_message}");
                assert!(got_message.contains(message), "{case}: {got_message}");
            }
            other => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn services_of_another_class_are_left_alone() {
    let outcome = last_outcome(
        &service("a", "", "ports: [{ port: 80 }]").replace("xdplb.io/lb", "example.com/other"),
    );
    assert_eq!(outcome, Outcome::NotOurs(Responsibility::OtherClass));
}

#[test]
fn the_same_address_from_two_sources_is_one_request() {
    let outcome = last_outcome(&service(
        "traefik",
        "annotations: { metallb.universe.tf/loadBalancerIPs: 192.168.8.240, xdplb.io/ips: 192.168.8.240 }",
        "loadBalancerIP: 192.168.8.240, ports: [{ port: 80 }]",
    ));
    assert_eq!(outcome, assigned("192.168.8.240", "lan"));
}
