//! Service annotations and specs, through the IPAM controller against the API double:
//! each bad request must end in a `False` condition and a Warning event naming the
//! problem, and no allocation may be lost: `edge/web` (192.168.8.240, sharing key
//! `edge`, 80/TCP) and `infra/dns` (172.16.200.53) hold their addresses before every
//! case, and still hold them after it (unless the case itself releases web, which it
//! must then say). Specs the data path cannot serve are checked through the
//! translation: a note naming the problem, and the good Service still served.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Node, Service};
use lb_agent::{
    apis::{address_pool::AddressPool, service},
    ipam::{ClassPolicy, ServiceKey},
    ipam_controller::{Context, reconcile},
    sources::kubernetes::{
        slice::Slice,
        translate::{Snapshot, Translator},
    },
};
use serde_json::{Value, json};

use super::table::{Checker, Expect, count};
use crate::support::{
    controller::{self, holding, merge, pools, service},
    kube_api::{ApiDouble, Received, client, documents, echo, of_kind, reply},
};

const POOLS: &str = r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: lan }
spec: { addresses: ["192.168.8.240-192.168.8.250"] }
---
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: dns }
spec: { addresses: ["172.16.200.53/32"], autoAssign: false }
"#;

/// Pools that reached the agent past admission (an API server without CEL): addresses
/// that are not unicast, which the IPAM must not hand out whatever the pools say.
const PAST_ADMISSION: &str = r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: everything }
spec: { addresses: ["0.0.0.0/0"], autoAssign: false }
"#;

const WEB_IP: &str = "192.168.8.240";
const DNS_IP: &str = "172.16.200.53";

/// Which Service a case changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A new Service `edge/new` on 443/TCP.
    New,
    /// `edge/web` itself, which holds 192.168.8.240.
    Web,
}

pub struct ServiceCase {
    pub name: &'static str,
    pub subject: Subject,
    /// Merged into the Service (annotations, spec fields).
    pub change: fn() -> Value,
    pub expect: Expect,
    /// The case legitimately takes web's address back (it stops being ours).
    pub releases_web: bool,
}

const fn bad(
    name: &'static str,
    subject: Subject,
    change: fn() -> Value,
    parts: &'static [&'static str],
) -> ServiceCase {
    ServiceCase {
        name,
        subject,
        change,
        expect: Expect::Rejected(parts),
        releases_web: false,
    }
}

fn annotated(pairs: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!(value)))
        .collect();
    json!({ "metadata": { "annotations": annotations } })
}

pub fn annotation_cases() -> Vec<ServiceCase> {
    use Subject::{New, Web};
    vec![
        ServiceCase {
            name: "pool by name (valid control)",
            subject: New,
            change: || annotated(&[("xdplb.io/pool", "lan")]),
            expect: Expect::Accepted,
            releases_web: false,
        },
        ServiceCase {
            name: "shared address, same key, other port (valid control)",
            subject: New,
            change: || annotated(&[("xdplb.io/ips", WEB_IP), ("xdplb.io/sharing-key", "edge")]),
            expect: Expect::Accepted,
            releases_web: false,
        },
        bad(
            "address out of range",
            New,
            || annotated(&[("xdplb.io/ips", "192.168.8.300")]),
            &[
                "InvalidAnnotation",
                "xdplb.io/ips",
                "`192.168.8.300`",
                "not an IP address",
            ],
        ),
        bad(
            "IPv6 address",
            New,
            || annotated(&[("xdplb.io/ips", "fd00::1")]),
            &[
                "IPv6Unsupported",
                "xdplb.io/ips: fd00::1",
                "IPv6 is not supported yet",
            ],
        ),
        bad(
            "dual-stack pair",
            New,
            || annotated(&[("xdplb.io/ips", "192.168.8.245,fd00::1")]),
            &["IPv6Unsupported", "fd00::1"],
        ),
        bad(
            "unspecified address",
            New,
            || annotated(&[("xdplb.io/ips", "0.0.0.0")]),
            &[
                "InvalidAnnotation",
                "xdplb.io/ips: `0.0.0.0` is in 0.0.0.0/8; expected a unicast IPv4 address",
            ],
        ),
        bad(
            "loopback address",
            New,
            || annotated(&[("metallb.io/loadBalancerIPs", "127.0.0.1")]),
            &[
                "InvalidAnnotation",
                "metallb.io/loadBalancerIPs: `127.0.0.1` is a loopback address; expected a unicast IPv4 address",
            ],
        ),
        bad(
            "multicast address",
            New,
            || annotated(&[("xdplb.io/ips", "224.0.0.1")]),
            &[
                "InvalidAnnotation",
                "`224.0.0.1` is a multicast address; expected a unicast IPv4 address",
            ],
        ),
        bad(
            "two IPv4 addresses",
            New,
            || annotated(&[("xdplb.io/ips", "192.168.8.245,192.168.8.246")]),
            &["InvalidAnnotation", "names more than one IPv4 address"],
        ),
        bad(
            "empty address list",
            New,
            || annotated(&[("xdplb.io/ips", " , ")]),
            &["InvalidAnnotation", "xdplb.io/ips", "names no address"],
        ),
        bad(
            "address outside every pool",
            New,
            || annotated(&[("xdplb.io/ips", "10.9.9.9")]),
            &["NotInAnyPool", "10.9.9.9 is not in any address pool"],
        ),
        bad(
            "unknown pool",
            New,
            || annotated(&[("xdplb.io/pool", "nope")]),
            &["UnknownPool", "address pool `nope` does not exist"],
        ),
        bad(
            "empty pool name",
            New,
            || annotated(&[("metallb.io/address-pool", "")]),
            &["InvalidAnnotation", "metallb.io/address-pool", "is empty"],
        ),
        bad(
            "xdplb and MetalLB pools disagree",
            New,
            || annotated(&[("xdplb.io/pool", "dns"), ("metallb.io/address-pool", "lan")]),
            &[
                "ConflictingRequest",
                "xdplb.io/pool asks for `dns`",
                "metallb.io/address-pool asks for `lan`",
            ],
        ),
        bad(
            "both MetalLB generations disagree on the address",
            New,
            || {
                annotated(&[
                    ("metallb.io/loadBalancerIPs", "192.168.8.245"),
                    ("metallb.universe.tf/loadBalancerIPs", "192.168.8.246"),
                ])
            },
            &[
                "ConflictingRequest",
                "metallb.io/loadBalancerIPs",
                "metallb.universe.tf/loadBalancerIPs",
            ],
        ),
        bad(
            "legacy MetalLB address not an address",
            New,
            || annotated(&[("metallb.universe.tf/loadBalancerIPs", "not-an-ip")]),
            &[
                "InvalidAnnotation",
                "metallb.universe.tf/loadBalancerIPs",
                "`not-an-ip`",
            ],
        ),
        bad(
            "taken address without a sharing key",
            New,
            || annotated(&[("xdplb.io/ips", WEB_IP)]),
            &["AddressInUse", "192.168.8.240 is already used by edge/web"],
        ),
        bad(
            "taken address under another sharing key",
            New,
            || {
                annotated(&[
                    ("xdplb.io/ips", WEB_IP),
                    ("metallb.io/allow-shared-ip", "other"),
                ])
            },
            &["SharingKeyMismatch", "sharing key `edge`", "not `other`"],
        ),
        bad(
            "sharing keys disagree",
            New,
            || {
                annotated(&[
                    ("xdplb.io/sharing-key", "a"),
                    ("metallb.universe.tf/allow-shared-ip", "b"),
                ])
            },
            &[
                "ConflictingRequest",
                "xdplb.io/sharing-key asks for `a`",
                "metallb.universe.tf/allow-shared-ip asks for `b`",
            ],
        ),
        bad(
            "address outside the requested pool",
            New,
            || annotated(&[("xdplb.io/ips", DNS_IP), ("xdplb.io/pool", "lan")]),
            &[
                "NotInRequestedPool",
                "172.16.200.53 is not in the requested pool `lan`",
            ],
        ),
        bad(
            "web: bad address annotation",
            Web,
            || annotated(&[("xdplb.io/ips", "bogus")]),
            &["InvalidAnnotation", "`bogus`", "keeping 192.168.8.240"],
        ),
        bad(
            "web: unknown pool",
            Web,
            || annotated(&[("metallb.io/address-pool", "gone")]),
            &["UnknownPool", "`gone`", "keeping 192.168.8.240"],
        ),
        bad(
            "web: moves to the DNS address",
            Web,
            || annotated(&[("xdplb.io/ips", DNS_IP)]),
            &[
                "AddressInUse",
                "172.16.200.53 is already used by infra/dns",
                "keeping 192.168.8.240",
            ],
        ),
    ]
}

fn spec(value: Value) -> Value {
    json!({ "spec": value })
}

pub fn spec_cases() -> Vec<ServiceCase> {
    use Subject::{New, Web};
    vec![
        ServiceCase {
            name: "loadBalancerIP in a pool (valid control)",
            subject: New,
            change: || spec(json!({ "loadBalancerIP": "192.168.8.250" })),
            expect: Expect::Accepted,
            releases_web: false,
        },
        bad(
            "loadBalancerIP outside the pools",
            New,
            || spec(json!({ "loadBalancerIP": "10.1.1.1" })),
            &["NotInAnyPool", "10.1.1.1 is not in any address pool"],
        ),
        bad(
            "web: loadBalancerIP the broadcast address",
            Web,
            || spec(json!({ "loadBalancerIP": "255.255.255.255" })),
            &[
                "InvalidLoadBalancerIP",
                "spec.loadBalancerIP: `255.255.255.255` is reserved or broadcast; expected a unicast IPv4 address",
                "keeping 192.168.8.240",
            ],
        ),
        bad(
            "loadBalancerIP not an address",
            New,
            || spec(json!({ "loadBalancerIP": "192.168.8" })),
            &[
                "InvalidLoadBalancerIP",
                "spec.loadBalancerIP",
                "`192.168.8`",
            ],
        ),
        bad(
            "loadBalancerIP against the annotation",
            New,
            || {
                let mut value = annotated(&[("xdplb.io/ips", "192.168.8.241")]);
                value["spec"] = json!({ "loadBalancerIP": "192.168.8.242" });
                value
            },
            &[
                "ConflictingRequest",
                "xdplb.io/ips asks for `192.168.8.241`",
                "spec.loadBalancerIP asks for `192.168.8.242`",
            ],
        ),
        bad(
            "dual stack required",
            New,
            || {
                spec(
                    json!({ "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"] }),
                )
            },
            &["IPv6Unsupported", "RequireDualStack"],
        ),
        bad(
            "IPv6 first",
            New,
            || spec(json!({ "ipFamilies": ["IPv6"] })),
            &["IPv6Unsupported", "IPv6 first"],
        ),
        bad(
            "SCTP port",
            New,
            || spec(json!({ "ports": [ { "port": 3868, "protocol": "SCTP" } ] })),
            &["UnsupportedProtocol", "port 3868/SCTP", "only TCP and UDP"],
        ),
        bad(
            "port beyond 65535",
            New,
            || spec(json!({ "ports": [ { "port": 70000, "protocol": "TCP" } ] })),
            &[
                "InvalidService",
                "spec.ports",
                "`70000` is not a port number",
            ],
        ),
        bad(
            "same port as the holder of a shared address",
            New,
            || {
                let mut value =
                    annotated(&[("xdplb.io/ips", WEB_IP), ("xdplb.io/sharing-key", "edge")]);
                value["spec"] = json!({ "ports": [ { "port": 80, "protocol": "TCP" } ] });
                value
            },
            &[
                "PortConflict",
                "192.168.8.240: port 80/TCP is already used by edge/web",
            ],
        ),
        bad(
            "shared address with another traffic policy",
            New,
            || {
                let mut value =
                    annotated(&[("xdplb.io/ips", WEB_IP), ("xdplb.io/sharing-key", "edge")]);
                value["spec"] =
                    json!({ "externalTrafficPolicy": "Local", "selector": { "app": "x" } });
                value
            },
            &[
                "TrafficPolicyMismatch",
                "same externalTrafficPolicy",
                "edge/web",
            ],
        ),
        ServiceCase {
            name: "web: another load balancer class",
            subject: Web,
            change: || spec(json!({ "loadBalancerClass": "metallb.io/metallb" })),
            expect: Expect::Rejected(&[
                "Released",
                "released 192.168.8.240",
                "another load balancer class",
            ]),
            releases_web: true,
        },
        ServiceCase {
            name: "web: type NodePort",
            subject: Web,
            change: || spec(json!({ "type": "NodePort" })),
            expect: Expect::Rejected(&[
                "Released",
                "released 192.168.8.240",
                "no longer of type LoadBalancer",
            ]),
            releases_web: true,
        },
        bad(
            "web: loadBalancerIP outside the pools",
            Web,
            || spec(json!({ "loadBalancerIP": "10.1.1.1" })),
            &["NotInAnyPool", "10.1.1.1", "keeping 192.168.8.240"],
        ),
    ]
}

fn web(change: Value) -> Value {
    let mut value = service(
        "edge",
        "web",
        &["80/TCP"],
        annotated(&[("xdplb.io/sharing-key", "edge")]),
    );
    merge(&mut value, holding(WEB_IP, "lan"));
    value["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    merge(&mut value, change);
    value
}

fn dns() -> Value {
    let mut value = service("infra", "dns", &["53/UDP"], json!({}));
    merge(&mut value, holding(DNS_IP, "dns"));
    value
}

fn typed(value: Value) -> Service {
    serde_json::from_value(value).expect("a Service")
}

fn context(client: kube::Client) -> Context {
    let ctx = controller::context(client, &pools(&format!("{POOLS}---{PAST_ADMISSION}")), &[]);
    let mut allocator = ctx.allocator.lock().expect("allocator");
    let conflicts = allocator.rebuild(service::holders(
        &[typed(web(json!({}))), typed(dns())],
        ctx.policy,
    ));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    drop(allocator);
    ctx
}

/// Answers the controller's writes as the API server does; returns what it saw.
async fn answer(mut api: ApiDouble) -> Vec<Received> {
    let mut seen = Vec::new();
    while let Some((request, respond)) = api.next_within(Duration::from_secs(5)).await {
        match request.method {
            Method::PATCH => echo(respond, &request, Some("2")),
            Method::POST => reply(respond, StatusCode::CREATED, &request.body),
            _ => panic!("unexpected request {request:?}"),
        }
        seen.push(request);
    }
    seen
}

fn allocation(ctx: &Context, namespace: &str, name: &str) -> Option<Ipv4Addr> {
    ctx.allocator
        .lock()
        .expect("allocator")
        .allocation(&ServiceKey::new(namespace, name))
        .map(|allocation| allocation.ip)
}

/// What the user sees of one pass: the condition and the events, as one text; `Ok`
/// when the Service got an address.
fn seen_by_user(requests: &[Received]) -> Result<(), String> {
    let mut parts = Vec::new();
    let mut allocated = false;
    for request in requests {
        if request.path().ends_with("/status") {
            let status = &request.body["status"];
            for condition in status["conditions"].as_array().into_iter().flatten() {
                allocated |= condition["status"] == "True";
                parts.push(format!(
                    "condition {} {}: {}",
                    condition["status"], condition["reason"], condition["message"]
                ));
            }
            parts.push(format!("ingress {}", status["loadBalancer"]["ingress"]));
        } else {
            parts.push(format!(
                "event {} {}: {}",
                request.body["type"], request.body["reason"], request.body["note"]
            ));
        }
    }
    if allocated {
        Ok(())
    } else {
        Err(parts.join("; "))
    }
}

async fn run_case(case: &ServiceCase, checker: &mut Checker) {
    let (client, api) = client();
    let responder = tokio::spawn(answer(api));
    let ctx = context(client);
    let subject = match case.subject {
        Subject::New => {
            let mut value = service("edge", "new", &["443/TCP"], json!({}));
            merge(&mut value, (case.change)());
            value
        }
        Subject::Web => web((case.change)()),
    };
    let outcome = reconcile(&typed(subject), &ctx).await;
    let web_now = allocation(&ctx, "edge", "web");
    let dns_now = allocation(&ctx, "infra", "dns");
    drop(ctx);
    let requests = responder.await.expect("the double");
    if let Err(error) = outcome {
        checker.fail(case.name, format!("the pass failed: {error}"));
        return;
    }
    let text = seen_by_user(&requests);
    if requests.is_empty() {
        checker.fail(case.name, "no condition and no event".to_owned());
    }
    checker.verdict(case.name, case.expect, text.clone());
    let web_ip: Ipv4Addr = WEB_IP.parse().expect("address");
    if dns_now != Some(DNS_IP.parse().expect("address")) {
        checker.fail(
            case.name,
            format!("infra/dns lost its address: {dns_now:?}"),
        );
    }
    match (case.releases_web, web_now) {
        (false, Some(ip)) if ip == web_ip => {}
        (true, None) => {}
        (_, other) => checker.fail(case.name, format!("edge/web holds {other:?}")),
    }
    // A refused request on web keeps its address in the status it writes.
    if case.subject == Subject::Web && !case.releases_web && text.is_err() {
        let kept = requests.iter().any(|request| {
            request.path().ends_with("/status")
                && request.body["status"]["loadBalancer"]["ingress"][0]["ip"] == WEB_IP
        });
        if !kept {
            checker.fail(
                case.name,
                "the status write dropped 192.168.8.240".to_owned(),
            );
        }
    }
}

pub async fn run(category: &'static str, cases: Vec<ServiceCase>) {
    let mut checker = Checker::new(category);
    for case in &cases {
        run_case(case, &mut checker).await;
    }
    checker.finish();
}

pub fn counts(cases: &[ServiceCase]) -> (usize, usize) {
    count(cases.iter().map(|case| &case.expect))
}

/// The cluster the translation reads: two nodes and `services` beside the good web.
fn snapshot(services: &[Value], pools: &str) -> Snapshot {
    let nodes: Vec<Arc<Node>> = ["10.0.0.11", "10.0.0.12"]
        .iter()
        .enumerate()
        .map(|(index, address)| {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": format!("node{}", index + 1) },
                    "status": {
                        "addresses": [ { "type": "InternalIP", "address": address } ],
                        "conditions": [ { "type": "Ready", "status": "True" } ],
                    },
                }))
                .expect("a Node"),
            )
        })
        .collect();
    let slice = |service: &str, endpoint: Value| -> Arc<Slice> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": { "name": format!("{service}-1"), "namespace": "edge",
                              "labels": { "kubernetes.io/service-name": service } },
                "addressType": "IPv4",
                "endpoints": [ endpoint ],
                "ports": [ { "port": 8080, "protocol": "TCP" } ],
            }))
            .expect("an EndpointSlice"),
        )
    };
    let mut all: Vec<Arc<Service>> = vec![Arc::new(typed(web(json!({}))))];
    all.extend(services.iter().cloned().map(typed).map(Arc::new));
    Snapshot {
        nodes,
        services: all,
        slices: vec![
            slice(
                "web",
                json!({ "addresses": ["10.42.0.7"], "nodeName": "node1" }),
            ),
            slice("orphan", json!({ "addresses": ["10.42.0.9"] })),
        ],
        pools: of_kind::<AddressPool>(&documents(pools), "AddressPool")
            .into_iter()
            .map(Arc::new)
            .collect(),
    }
}

/// A Service of ours holding `ip` with `ports`.
fn held(name: &str, ip: &str, ports: Value) -> Value {
    let mut value = service("edge", name, &["1/TCP"], holding(ip, "lan"));
    value["spec"]["ports"] = ports;
    // Younger than web, which keeps what both claim.
    value["metadata"]["creationTimestamp"] = json!("2025-06-01T00:00:00Z");
    value
}

type TranslateCase = (&'static str, fn() -> Vec<Value>, &'static str, Expect);

pub fn translate_cases() -> Vec<TranslateCase> {
    let rejected = |parts| Expect::Rejected(parts);
    vec![
        (
            "a second good Service (valid control)",
            || {
                vec![held(
                    "api",
                    "192.168.8.241",
                    json!([{ "port": 443, "protocol": "TCP" }]),
                )]
            },
            POOLS,
            Expect::Accepted,
        ),
        (
            "VIP is a node's address, which a pool lists",
            || {
                vec![held(
                    "api",
                    "10.0.0.12",
                    json!([{ "port": 443, "protocol": "TCP" }]),
                )]
            },
            r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: lan }
spec: { addresses: ["192.168.8.240-192.168.8.250", "10.0.0.12/32"] }
"#,
            rejected(&[
                "edge/api",
                "VIP 10.0.0.12 is the address of node node2; not served",
            ]),
        ),
        (
            "status address outside every pool (another writer's)",
            || {
                vec![held(
                    "api",
                    "10.9.9.9",
                    json!([{ "port": 443, "protocol": "TCP" }]),
                )]
            },
            POOLS,
            rejected(&[
                "edge/api: 10.9.9.9 in status.loadBalancer.ingress is ignored: no valid AddressPool lists it",
            ]),
        ),
        (
            "only an SCTP port",
            || {
                vec![held(
                    "api",
                    "192.168.8.241",
                    json!([{ "port": 3868, "protocol": "SCTP" }]),
                )]
            },
            POOLS,
            rejected(&[
                "port 3868 is SCTP; only TCP and UDP are served",
                "no TCP or UDP port to serve",
            ]),
        ),
        (
            "port 0",
            || {
                vec![held(
                    "api",
                    "192.168.8.241",
                    json!([{ "port": 0, "protocol": "TCP" }]),
                )]
            },
            POOLS,
            rejected(&["edge/api: port 0 is not a port number"]),
        ),
        (
            "no ports",
            || vec![held("api", "192.168.8.241", json!([]))],
            POOLS,
            rejected(&["edge/api: no TCP or UDP port to serve"]),
        ),
        (
            "web's port claimed again on its VIP",
            || {
                vec![held(
                    "api",
                    WEB_IP,
                    json!([{ "port": 80, "protocol": "TCP" }]),
                )]
            },
            POOLS,
            rejected(&["192.168.8.240:80/TCP is already served by another Service; port left out"]),
        ),
        (
            "endpoint without a node",
            || {
                vec![held(
                    "orphan",
                    "192.168.8.242",
                    json!([{ "port": 80, "protocol": "TCP" }]),
                )]
            },
            POOLS,
            rejected(&["endpoint 10.42.0.9 has no nodeName"]),
        ),
        (
            "pool with an invalid announcement node selector",
            Vec::new,
            r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: lan }
spec:
  addresses: ["192.168.8.240-192.168.8.250"]
  announcement:
    nodeSelector:
      matchExpressions: [ { key: zone, operator: Near, values: [a] } ]
"#,
            rejected(&[
                "pool lan: announcement.nodeSelector is invalid",
                "no node announces VIP 192.168.8.240",
            ]),
        ),
    ]
}

pub fn run_translate() {
    let mut checker = Checker::new("service-specs (translation)");
    let translator = Translator {
        node: "node1".to_owned(),
        class: ClassPolicy::default(),
        mtu: None,
        icmp_rate_per_sec: 100,
    };
    for (name, services, pools, expect) in translate_cases() {
        let translation = match translator.translate(&snapshot(&services(), pools)) {
            Ok(translation) => translation,
            Err(error) => {
                checker.fail(name, format!("no cluster at all: {error}"));
                continue;
            }
        };
        let outcome = match translation.notes.is_empty() {
            true => Ok(()),
            false => Err(translation.notes.join("\n")),
        };
        checker.verdict(name, expect, outcome);
        let web = translation
            .cluster
            .inputs
            .services
            .iter()
            .find(|service| service.name == "edge/web");
        if !web.is_some_and(|web| {
            web.vip == WEB_IP.parse::<Ipv4Addr>().expect("ip") && web.ports.len() == 1
        }) {
            checker.fail(
                name,
                format!("edge/web is no longer served as before: {web:?}"),
            );
        }
    }
    checker.finish();
}
