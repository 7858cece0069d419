//! The Kubernetes source against an API double: the first cluster after the lists, an
//! API-server outage that keeps the last state (failing watches and lists clear
//! nothing and publish nothing), recovery, and the owner's `Announced` events.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, StatusCode};
use lb_agent::{
    sources::kubernetes::{settings::KubernetesSettings, source::KubeSource},
    sources::{Cluster, Source},
    telemetry::Telemetry,
};
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::support::kube_api::{
    self, ApiDouble, HOMELAB, Respond, client, documents, fail, kind_at, list_at, reply, stream,
};

/// What the double serves, and what it saw.
#[derive(Default)]
struct Fake {
    documents: Vec<Value>,
    watches_fail: bool,
    lists_fail: bool,
    /// Sent as an ADDED event on the next Service watch.
    added: Option<Value>,
    /// The open Service watch, for [`add_service`].
    service_watch: Option<Respond>,
    failed_watches: usize,
    failed_lists: usize,
    events: Vec<Value>,
}

type Shared = Arc<Mutex<Fake>>;

/// Sends `object` to the agent as an ADDED Service: on the open Service watch (which
/// then ends, as a watch may, and is opened again), else on the next one.
fn add_service(fake: &Shared, object: Value) {
    let mut state = fake.lock().expect("fake");
    match state.service_watch.take() {
        Some(respond) => stream(respond, &[json!({ "type": "ADDED", "object": object })]),
        None => state.added = Some(object),
    }
}

async fn serve(mut api: ApiDouble, fake: Shared) {
    // Open watches stay unanswered while the API is up.
    let mut open: Vec<Respond> = Vec::new();
    while let Some((request, respond)) = api.next_within(Duration::from_secs(30)).await {
        let mut state = fake.lock().expect("fake");
        if request.method == Method::POST {
            state.events.push(request.body.clone());
            reply(respond, StatusCode::CREATED, &request.body);
            continue;
        }
        let Some(kind) = kind_at(request.path()) else {
            panic!("unexpected request {request:?}");
        };
        if request.is_watch() {
            if state.watches_fail {
                // 410 Gone: the watch cannot resume, so the watcher relists (and that
                // fails too while `lists_fail`).
                state.failed_watches += 1;
                let gone = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410,
                });
                stream(respond, &[json!({ "type": "ERROR", "object": gone })]);
            } else if let Some(object) = state.added.take_if(|_| kind == "Service") {
                stream(respond, &[json!({ "type": "ADDED", "object": object })]);
            } else if kind == "Service" {
                state.service_watch = Some(respond);
            } else {
                open.push(respond);
            }
            continue;
        }
        if state.lists_fail {
            state.failed_lists += 1;
            fail(respond, 503, "ServiceUnavailable");
            continue;
        }
        let list = list_at(request.path(), &state.documents, "100").expect("a collection");
        reply(respond, StatusCode::OK, &list);
    }
}

fn service_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .inputs
        .services
        .iter()
        .map(|service| service.name.clone())
        .collect()
}

#[tokio::test]
async fn an_api_outage_keeps_the_last_state_and_recovery_applies_what_changed() {
    let fake = Shared::new(Mutex::new(Fake {
        documents: documents(HOMELAB),
        // The API server goes away right after the initial lists.
        watches_fail: true,
        ..Fake::default()
    }));
    let (client, api) = client();
    tokio::spawn(serve(api, Arc::clone(&fake)));
    let settings = KubernetesSettings::parse("").expect("defaults");
    let telemetry = Arc::new(Telemetry::new());
    let mut source = KubeSource::start(client, &settings, "node1".into(), telemetry);
    assert!(source.live_peers());

    let first = timeout(Duration::from_secs(5), source.first())
        .await
        .expect("the first cluster after the lists");
    assert_eq!(
        service_names(&first),
        [
            "kube-system/coredns-tcp",
            "kube-system/coredns-udp",
            "kube-system/traefik",
        ]
    );
    assert_eq!(first.inputs.peers.len(), 4);

    // Full outage: watches and relists fail. Nothing new is published.
    fake.lock().expect("fake").lists_fail = true;
    let quiet = timeout(Duration::from_secs(2), source.next()).await;
    assert!(quiet.is_err(), "published during the outage: {quiet:?}");
    let (watches, lists) = {
        let state = fake.lock().expect("fake");
        (state.failed_watches, state.failed_lists)
    };
    assert!(watches >= 4, "only {watches} failed watches");
    assert!(lists >= 1, "no relist failed");

    // Back, with a new Service: published, everything else as before.
    let added = whoami();
    {
        let mut state = fake.lock().expect("fake");
        state.lists_fail = false;
        state.watches_fail = false;
        state.added = Some(added);
    }
    let recovered = timeout(Duration::from_secs(10), source.next())
        .await
        .expect("the change after the outage");
    let mut names = service_names(&recovered);
    names.sort();
    assert_eq!(
        names,
        [
            "default/whoami",
            "kube-system/coredns-tcp",
            "kube-system/coredns-udp",
            "kube-system/traefik",
        ]
    );
    assert_eq!(recovered.inputs.peers, first.inputs.peers);
}

/// A source on a double serving `documents`, once it has published its first cluster.
async fn first_source_of(documents: Vec<Value>) -> (Shared, KubeSource) {
    let fake = Shared::new(Mutex::new(Fake {
        documents,
        ..Fake::default()
    }));
    let (client, api) = client();
    tokio::spawn(serve(api, Arc::clone(&fake)));
    (fake, kube_api::first_source(client).await)
}

#[tokio::test]
async fn the_owner_reports_the_vips_it_takes_over() {
    let (fake, mut source) = first_source_of(documents(HOMELAB)).await;

    let dns_vip = "192.168.8.241".parse().expect("vip");
    source.announced(&BTreeSet::from([dns_vip]));
    // Still owned: no new event.
    source.announced(&BTreeSet::from([dns_vip]));
    let events = events_settled(&fake, 2).await;
    // Both CoreDNS Services share the VIP; each gets one event.
    let regarding: BTreeSet<String> = events
        .iter()
        .map(|event| {
            event["regarding"]["name"]
                .as_str()
                .expect("name")
                .to_owned()
        })
        .collect();
    assert_eq!(
        regarding,
        BTreeSet::from(["coredns-tcp".to_owned(), "coredns-udp".to_owned()])
    );
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event["reason"], "Announced");
        assert_eq!(event["note"], "192.168.8.241 announced from node node1");
        assert_eq!(event["reportingController"], "xdplb.io/agent");
        assert_eq!(event["reportingInstance"], "node1");
        assert_eq!(event["metadata"]["namespace"], "kube-system");
    }
}

/// The events the agent published, once there are `count` and no more follow.
async fn events_settled(fake: &Shared, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.lock().expect("fake").events.len() < count {
        let events = fake.lock().expect("fake").events.clone();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} events: {events:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = fake.lock().expect("fake").events.clone();
    assert_eq!(events.len(), count, "{events:?}");
    events
}

/// The real API server showed it: CoreDNS's TCP Service got the address its UDP Service
/// held after this node already announced it, and never got its event.
#[tokio::test]
async fn a_service_that_later_shares_an_announced_vip_gets_its_event_once() {
    let mut documents = documents(HOMELAB);
    let position = documents
        .iter()
        .position(|document| document["metadata"]["name"] == "coredns-tcp")
        .expect("coredns-tcp");
    let mut coredns_tcp = documents.remove(position);
    coredns_tcp["metadata"]["resourceVersion"] = json!("101");
    let (fake, mut source) = first_source_of(documents).await;
    let dns_vip = "192.168.8.241".parse().expect("vip");
    source.announced(&BTreeSet::from([dns_vip]));
    let events = events_settled(&fake, 1).await;
    assert_eq!(events[0]["regarding"]["name"], "coredns-udp");

    // The owned VIPs stay the same, so the runtime reports nothing new: the new
    // cluster alone brings the event.
    add_service(&fake, coredns_tcp);
    let next = timeout(Duration::from_secs(5), source.next())
        .await
        .expect("the cluster with coredns-tcp");
    assert!(service_names(&next).contains(&"kube-system/coredns-tcp".to_owned()));
    let events = events_settled(&fake, 2).await;
    assert_eq!(events[1]["regarding"]["name"], "coredns-tcp");
    assert_eq!(events[1]["reason"], "Announced");
    assert_eq!(events[1]["note"], "192.168.8.241 announced from node node1");

    // Reported again (a healed partition): nobody gets a second event.
    source.announced(&BTreeSet::from([dns_vip]));
    events_settled(&fake, 2).await;
}

/// The real API server showed a node announcing an address that another writer had
/// put into a Service's status, outside every pool: it is left out, counted and
/// reported on the Service once.
#[tokio::test]
async fn a_status_address_outside_every_pool_is_ignored_counted_and_reported_once() {
    let mut documents = documents(HOMELAB);
    documents.extend(kube_api::documents(
        r#"
apiVersion: v1
kind: Service
metadata: { name: squatter, namespace: default, resourceVersion: "90" }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports: [ { port: 80, protocol: TCP, targetPort: 80 } ]
status: { loadBalancer: { ingress: [ { ip: 10.9.9.9, ipMode: VIP } ] } }
"#,
    ));
    let fake = Shared::new(Mutex::new(Fake {
        documents,
        ..Fake::default()
    }));
    let (client, api) = client();
    tokio::spawn(serve(api, Arc::clone(&fake)));
    let settings = KubernetesSettings::parse("").expect("defaults");
    let telemetry = Arc::new(Telemetry::new());
    let mut source = KubeSource::start(client, &settings, "node1".into(), Arc::clone(&telemetry));
    let first = timeout(Duration::from_secs(5), source.first())
        .await
        .expect("the first cluster");
    assert!(
        !service_names(&first).contains(&"default/squatter".to_owned()),
        "{:?}",
        service_names(&first)
    );
    let events = events_settled(&fake, 1).await;
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["reason"], "AddressIgnored");
    assert_eq!(events[0]["regarding"]["name"], "squatter");
    assert_eq!(events[0]["reportingInstance"], "node1");
    assert_eq!(
        events[0]["note"],
        "10.9.9.9 in status.loadBalancer.ingress is ignored: no valid AddressPool lists it, so no node announces or forwards it"
    );
    assert_eq!(telemetry.ignored_status_addresses(), 1);

    // Another change: still ignored, neither reported nor counted again.
    add_service(&fake, whoami());
    let next = timeout(Duration::from_secs(5), source.next())
        .await
        .expect("the cluster with whoami");
    assert!(service_names(&next).contains(&"default/whoami".to_owned()));
    events_settled(&fake, 1).await;
    assert_eq!(telemetry.ignored_status_addresses(), 1);
}

/// The Service `whoami` of our class, showing 192.168.8.242 in its status.
fn whoami() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "whoami", "namespace": "default", "resourceVersion": "101" },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "xdplb.io/lb",
            "ports": [ { "port": 80, "protocol": "TCP", "targetPort": 80 } ],
        },
        "status": { "loadBalancer": { "ingress": [ { "ip": "192.168.8.242", "ipMode": "VIP" } ] } },
    })
}
