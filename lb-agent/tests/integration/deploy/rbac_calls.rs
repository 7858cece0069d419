//! The RBAC in deploy/ against the API calls the agent really makes. The agent's
//! Kubernetes code runs against a recording API double: the source's reflectors and its
//! `Announced` events (`KubeSource`), and the IPAM (`ipam_controller::run`: the Lease
//! created, renewed and released, pools and namespaces and Services listed and watched,
//! a Service's address and a pool's counts written, events created and, when repeated,
//! patched; the announce interface written on the agent's own Node). Every request becomes an RBAC check (verb, API group, resource or
//! resource/subresource, namespace, name), and the test asserts both directions: the
//! ClusterRole and Role (plain manifests and the Helm chart's render) allow every call,
//! and every grant they make is used by some call.
//!
//! lbctl's cluster commands (`pools`, `services`, `explain --cluster`) are part of it,
//! the binary run against the same objects over HTTP: run in the agent's pod (`kubectl exec ... lbctl services`) they use the agent's
//! ServiceAccount, and besides their lists they read the agent's settings (the ConfigMap
//! `xdplb-agent`), which the agent itself reads from its mount.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, StatusCode};
use k8s_openapi::api::rbac::v1::PolicyRule;
use lb_agent::{
    ipam::ClassPolicy,
    ipam_controller::{self, lease::LeaseSettings},
    sources::Source as _,
    telemetry::Telemetry,
};
use serde_json::{Value, json};
use tokio::{sync::watch, time::timeout};

use super::{
    helm,
    objects::{Object, all_typed, deploy_dir, read_dir},
};
use crate::support::{
    kube_api::{
        ApiDouble, Received, Respond, client, documents, echo, echo_onto, fail, find, first_source,
        list_at, reply,
    },
    kube_http::HttpApi,
    lbctl::printed,
    rbac::{Call, Grant, Permissions, allows, call},
};

/// The cluster the double serves.
const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: { name: node1 }
status:
  addresses: [ { type: InternalIP, address: 10.0.0.11 } ]
  conditions: [ { type: Ready, status: "True" } ]
---
apiVersion: v1
kind: Namespace
metadata: { name: edge, labels: { team: edge } }
---
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: lan, generation: 1 }
spec: { addresses: ["192.168.8.240-192.168.8.250"] }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: edge, uid: uid-web, generation: 1 }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  selector: { app: web }
  ports: [ { port: 80, protocol: TCP, targetPort: 8080 } ]
status:
  loadBalancer: { ingress: [ { ip: 192.168.8.240, ipMode: VIP } ] }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: edge, uid: uid-api, generation: 1 }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports: [ { port: 443, protocol: TCP } ]
---
apiVersion: v1
kind: Service
metadata: { name: legacy, namespace: edge, uid: uid-legacy, generation: 1 }
spec:
  type: LoadBalancer
  ports: [ { port: 8080, protocol: TCP } ]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: edge, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
endpoints: [ { addresses: [10.42.0.7], nodeName: node1, conditions: { ready: true } } ]
ports: [ { port: 8080, protocol: TCP } ]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: xdplb-agent, namespace: xdplb-system }
data: { settings.yaml: "defaultClass: true\n" }
"#;

impl Permissions {
    fn from_objects(objects: &[Object]) -> Self {
        let mut cluster = None;
        let mut role = None;
        for object in objects {
            match object {
                Object::ClusterRole(r) => cluster = Some(r.rules.clone().unwrap_or_default()),
                Object::Role(r) => {
                    let namespace = r.metadata.namespace.clone().expect("the Role's namespace");
                    role = Some((r.rules.clone().unwrap_or_default(), namespace));
                }
                _ => {}
            }
        }
        let (rules, namespace) = role.expect("a Role");
        Self::new(&cluster.expect("a ClusterRole"), &rules, namespace)
    }

    /// Calls not allowed, and grants no call used; `None` when both are empty.
    fn compare(&self, calls: &BTreeSet<Call>) -> Option<String> {
        let denied: Vec<&Call> = calls.iter().filter(|call| !self.allow(call)).collect();
        let used = |grant: &Grant, namespaced: bool| {
            calls.iter().any(|call| {
                allows(grant, call)
                    && (!namespaced || call.namespace.as_deref() == Some(&self.namespace))
            })
        };
        let unused: Vec<&Grant> = self
            .cluster
            .iter()
            .filter(|grant| !used(grant, false))
            .chain(self.namespaced.iter().filter(|grant| !used(grant, true)))
            .collect();
        (!denied.is_empty() || !unused.is_empty())
            .then(|| format!("calls not allowed: {denied:#?}\ngrants never used: {unused:#?}"))
    }
}

/// What the double holds and saw.
#[derive(Default)]
struct Fake {
    objects: Vec<Value>,
    lease: Option<Value>,
    version: u64,
    seen: Vec<(Method, String)>,
}

impl Fake {
    /// Answers as the API server would; open watches are kept (no events) in `open`.
    fn answer(&mut self, request: &Received, respond: Respond, open: &mut Vec<Respond>) {
        let rbac = call(&request.method, &request.uri);
        self.seen
            .push((request.method.clone(), request.uri.clone()));
        self.version += 1;
        let version = self.version.to_string();
        match (rbac.verb.as_str(), rbac.resource.as_str()) {
            ("watch", _) => open.push(respond),
            ("list", _) => match list_at(request.path(), &self.objects, &version) {
                Some(body) => reply(respond, StatusCode::OK, &body),
                None => fail(respond, 404, "NotFound"),
            },
            ("get", "leases") => match &self.lease {
                Some(lease) => reply(respond, StatusCode::OK, lease),
                None => fail(respond, 404, "NotFound"),
            },
            ("create" | "update", "leases") => {
                let mut lease = request.body.clone();
                lease["metadata"]["resourceVersion"] = json!(version);
                self.lease = Some(lease.clone());
                let status = match rbac.verb.as_str() {
                    "create" => StatusCode::CREATED,
                    _ => StatusCode::OK,
                };
                reply(respond, status, &lease);
            }
            ("patch", "services/status" | "addresspools/status" | "nodes") => {
                let name = rbac.name.as_deref().unwrap_or_default();
                let object = self
                    .objects
                    .iter()
                    .find(|object| object["metadata"]["name"] == name)
                    .cloned()
                    .unwrap_or(Value::Null);
                echo_onto(respond, request, &object);
            }
            ("get", "configmaps") => {
                let namespace = rbac.namespace.as_deref().unwrap_or_default();
                let name = rbac.name.as_deref().unwrap_or_default();
                match find(&self.objects, "ConfigMap", namespace, name) {
                    Some(map) => reply(respond, StatusCode::OK, map),
                    None => fail(respond, 404, "NotFound"),
                }
            }
            ("create", "events") => reply(respond, StatusCode::CREATED, &request.body),
            ("patch", "events") => echo(respond, request, Some(&version)),
            _ => fail(respond, 404, "NotFound"),
        }
    }
}

async fn serve(mut api: ApiDouble, fake: Arc<Mutex<Fake>>) {
    let mut open = Vec::new();
    while let Some((request, respond)) = api.next_within(Duration::from_secs(30)).await {
        fake.lock()
            .expect("fake")
            .answer(&request, respond, &mut open);
    }
}

/// Whether the double saw `method` on a path ending in `suffix`.
fn saw(fake: &Mutex<Fake>, method: &Method, suffix: &str) -> usize {
    let fake = fake.lock().expect("fake");
    fake.seen
        .iter()
        .filter(|(m, uri)| {
            m == method && uri.split('?').next().unwrap_or_default().ends_with(suffix)
        })
        .count()
}

async fn until(fake: &Mutex<Fake>, what: &str, done: impl Fn(&Mutex<Fake>) -> bool) {
    let waited = timeout(Duration::from_secs(20), async {
        while !done(fake) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if waited.is_err() {
        let seen = &fake.lock().expect("fake").seen;
        panic!("the agent never got to {what}; it sent {seen:#?}");
    }
}

/// Runs the agent's Kubernetes code through everything it does; returns its calls.
async fn agent_calls(namespace: &str) -> BTreeSet<Call> {
    let fake = Arc::new(Mutex::new(Fake {
        objects: documents(CLUSTER),
        ..Fake::default()
    }));
    let (client, api) = client();
    let server = tokio::spawn(serve(api, Arc::clone(&fake)));

    let mut source = first_source(client.clone()).await;
    let (stop, stopping) = watch::channel(false);
    let lease = LeaseSettings {
        renew_every: Duration::from_millis(100),
        ..LeaseSettings::new(namespace, "agent-1")
    };
    let ipam = tokio::spawn(ipam_controller::run(
        client,
        ClassPolicy::default(),
        lease,
        stopping,
        Arc::new(Telemetry::new()),
    ));

    // The announce interface on this node's Node, as the runtime publishes it at start.
    source.publish_interface("eth0");
    until(&fake, "publishing the interface", |f| {
        saw(f, &Method::PATCH, "/nodes/node1") > 0
    })
    .await;

    // The VIP taken over twice: `Announced` on web, then the same event again (patched).
    let vip: Ipv4Addr = "192.168.8.240".parse().expect("address");
    source.announced(&BTreeSet::from([vip]));
    until(&fake, "announcing", |f| {
        saw(f, &Method::POST, "/events") > 0
    })
    .await;
    source.announced(&BTreeSet::new());
    source.announced(&BTreeSet::from([vip]));
    until(&fake, "the repeated event", |f| {
        let fake = f.lock().expect("fake");
        fake.seen
            .iter()
            .any(|(method, uri)| *method == Method::PATCH && uri.contains("/events/"))
    })
    .await;
    until(&fake, "allocating for edge/api", |f| {
        saw(f, &Method::PATCH, "/services/api/status") > 0
    })
    .await;
    until(&fake, "the pool's status", |f| {
        saw(f, &Method::PATCH, "/addresspools/lan/status") > 0
    })
    .await;
    until(&fake, "renewing the lease", |f| {
        saw(f, &Method::PUT, "/leases/xdplb-ipam") > 0
    })
    .await;

    // A stopping agent hands the Lease over.
    let renewals = saw(&fake, &Method::PUT, "/leases/xdplb-ipam");
    stop.send_replace(true);
    timeout(Duration::from_secs(10), ipam)
        .await
        .expect("the IPAM stops")
        .expect("the IPAM task");
    assert!(
        saw(&fake, &Method::PUT, "/leases/xdplb-ipam") > renewals,
        "released"
    );
    let holder = fake.lock().expect("fake").lease.clone().expect("a lease");
    assert_eq!(holder["spec"]["holderIdentity"], Value::Null, "{holder}");
    drop(source);
    server.abort();

    let seen = fake.lock().expect("fake").seen.clone();
    seen.iter().map(|(method, uri)| call(method, uri)).collect()
}

/// lbctl's cluster commands, as in the agent's pod (`explain --cluster` reads what
/// `services` reads); returns their calls.
async fn lbctl_calls(namespace: &str) -> BTreeSet<Call> {
    let api = HttpApi::start(documents(CLUSTER), &[]).await;
    printed(&api.lbctl(&["pools"]).await, 0);
    let services = printed(
        &api.lbctl(&["services", "--xdplb-namespace", namespace, "-o", "json"])
            .await,
        0,
    );
    // lbctl read the agent's settings: as the ConfigMap says (`defaultClass: true`), the
    // Service without a class is served too.
    let services: Vec<Value> = serde_json::from_str(&services).expect("JSON");
    assert!(
        services.iter().any(|service| service["name"] == "legacy"),
        "{services:?}"
    );
    api.take_requests()
        .iter()
        .map(|received| call(&received.method, &received.uri))
        .collect()
}

fn chart_objects() -> Vec<Object> {
    all_typed(&helm::template(
        "xdplb-system",
        &["--show-only", "templates/rbac.yaml"],
    ))
}

#[tokio::test]
async fn the_rbac_grants_exactly_the_calls_the_agent_makes() {
    let manifests =
        Permissions::from_objects(&all_typed(&read_dir(&deploy_dir().join("manifests"))));
    let chart = Permissions::from_objects(&chart_objects());
    assert_eq!(chart.namespace, manifests.namespace);
    let mut calls = agent_calls(&manifests.namespace).await;
    calls.extend(lbctl_calls(&manifests.namespace).await);
    let summary: BTreeSet<String> = calls
        .iter()
        .map(|call| {
            let name = call
                .name
                .as_deref()
                .map(|name| format!(" {name}"))
                .unwrap_or_default();
            let group = if call.group.is_empty() {
                "core"
            } else {
                &call.group
            };
            format!("{} {group}/{}{name}", call.verb, call.resource)
        })
        .collect();
    println!(
        "RBAC: the agent and lbctl made {} distinct calls:",
        calls.len()
    );
    for line in &summary {
        println!("  {line}");
    }
    assert_eq!(
        manifests.compare(&calls),
        None,
        "deploy/manifests/10-rbac.yaml"
    );
    assert_eq!(
        chart.compare(&calls),
        None,
        "the Helm chart's templates/rbac.yaml"
    );

    // The comparison sees one rule too few and one too many.
    let objects = all_typed(&read_dir(&deploy_dir().join("manifests")));
    let Some(Object::ClusterRole(role)) =
        objects.iter().find(|o| matches!(o, Object::ClusterRole(_)))
    else {
        panic!("a ClusterRole");
    };
    let rules = role.rules.clone().unwrap_or_default();
    let namespaced = PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        verbs: vec!["get".into(), "update".into(), "create".into()],
        ..PolicyRule::default()
    };
    let without_patch: Vec<PolicyRule> = rules
        .iter()
        .filter(|rule| rule.resources.as_deref() != Some(&["services/status".to_owned()][..]))
        .cloned()
        .collect();
    let narrower = Permissions::new(
        &without_patch,
        std::slice::from_ref(&namespaced),
        manifests.namespace.clone(),
    );
    let message = narrower.compare(&calls).expect("a denied call");
    assert!(message.contains("services/status"), "{message}");
    let mut wider = rules.clone();
    wider[0].verbs.push("get".into());
    let wider = Permissions::new(&wider, &[namespaced], manifests.namespace.clone());
    let message = wider.compare(&calls).expect("an unused grant");
    assert!(
        message.contains("\"services\",\n        \"get\""),
        "{message}"
    );
}
