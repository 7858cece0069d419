//! The IPAM controller against an API double (tower-test): every request it makes is
//! checked (method, path, body) and answered as the API server would.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc, time::Duration};

use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Service;
use lb_agent::{
    apis::address_pool::AddressPool,
    ipam::{ClassPolicy, ServiceKey},
    ipam_controller::{
        ALLOCATED_CONDITION, Context, Outcome, PoolStatuses, RETRY_AFTER_ERROR, error_policy,
        forget, rebuild, reconcile, serve,
    },
    telemetry::Telemetry,
};
use serde_json::{Value, json};

use crate::support::{
    controller::{self, context, holding, merge, pools},
    kube_api::{
        ApiDouble, Received, Respond, client, documents, echo, echo_onto, fail, list, reply, stream,
    },
    openmetrics::metrics_text,
};

const QUIET: Duration = Duration::from_millis(200);

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("address")
}

const LAN: &str = r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: lan, generation: 1 }
spec:
  addresses: ["192.168.8.240-192.168.8.250"]
"#;

/// [`controller::service`], typed.
fn service(namespace: &str, name: &str, ports: &[&str], extra: Value) -> Service {
    serde_json::from_value(controller::service(namespace, name, ports, extra)).expect("Service")
}

/// `service` with the status an IPAM write applied.
fn applied(service: &Service, write: &Received) -> Service {
    let mut value = serde_json::to_value(service).expect("JSON");
    value["status"] = write.body["status"].clone();
    serde_json::from_value(value).expect("Service")
}

/// Rebuilds from `services`, which hold no conflicting addresses: no request.
async fn rebuild_quietly(ctx: &Context, api: &mut ApiDouble, services: &[&Service]) {
    let services: Vec<Arc<Service>> = services.iter().map(|&s| Arc::new(s.clone())).collect();
    tokio::join!(rebuild(&services, ctx), api.expect_silence(QUIET));
}

/// Expects the status write of `namespace/name`, answers it, returns it.
async fn status_write(api: &mut ApiDouble, namespace: &str, name: &str) -> Received {
    let (write, respond) = api.next().await;
    write.expect(
        Method::PATCH,
        &format!("/api/v1/namespaces/{namespace}/services/{name}/status"),
    );
    assert!(
        write.uri.contains("fieldManager=xdplb.io%2Fipam"),
        "{}",
        write.uri
    );
    assert!(write.uri.contains("force=true"), "{}", write.uri);
    assert_eq!(write.body["metadata"]["name"], name);
    echo(respond, &write, Some("100"));
    write
}

/// Expects an event on `namespace/name`, answers it, returns its body.
async fn event(api: &mut ApiDouble, namespace: &str, name: &str) -> Value {
    let (event, respond) = api.next().await;
    event.expect(
        Method::POST,
        &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
    );
    assert_eq!(event.body["regarding"]["name"], name);
    assert_eq!(event.body["regarding"]["kind"], "Service");
    assert_eq!(event.body["reportingController"], "xdplb.io/ipam");
    reply(respond, StatusCode::CREATED, &event.body);
    event.body
}

fn ingress(write: &Received) -> &Value {
    &write.body["status"]["loadBalancer"]["ingress"]
}

fn condition(write: &Received) -> &Value {
    let conditions = write.body["status"]["conditions"]
        .as_array()
        .expect("conditions");
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0]["type"], ALLOCATED_CONDITION);
    &conditions[0]
}

#[tokio::test]
async fn a_new_service_gets_the_lowest_free_address_a_condition_and_an_event() {
    let (client, mut api) = client();
    let ctx = context(client, &pools(LAN), &[]);
    let web = service("edge", "web", &["80/TCP"], json!({}));
    let (outcome, (write, allocated)) = tokio::join!(reconcile(&web, &ctx), async {
        let write = status_write(&mut api, "edge", "web").await;
        (write, event(&mut api, "edge", "web").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
    assert_eq!(
        *ingress(&write),
        json!([{ "ip": "192.168.8.240", "ipMode": "VIP" }])
    );
    let allocated_condition = condition(&write);
    assert_eq!(allocated_condition["status"], "True");
    assert_eq!(allocated_condition["reason"], "Allocated");
    assert_eq!(
        allocated_condition["message"],
        "192.168.8.240 from pool lan"
    );
    assert_eq!(allocated_condition["observedGeneration"], 1);
    assert_eq!(allocated["type"], "Normal");
    assert_eq!(allocated["reason"], "Allocated");
    assert_eq!(allocated["note"], "allocated 192.168.8.240 from pool lan");

    // The next pass over the written status has nothing to do.
    let settled = applied(&web, &write);
    let (outcome, ()) = tokio::join!(reconcile(&settled, &ctx), api.expect_silence(QUIET));
    assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
    // Counted once, for its pool, however many passes see it; on /metrics by pool.
    let counts = ctx.telemetry.ipam_counts();
    assert_eq!(counts.allocations, BTreeMap::from([("lan".to_owned(), 1)]));
    assert!(counts.failures.is_empty() && counts.releases.is_empty());
    assert_metric(&ctx, "xdplb_ipam_allocations_total{pool=\"lan\"} 1");
}

/// Asserts that the IPAM's telemetry renders `line` on `/metrics`.
fn assert_metric(ctx: &Context, line: &str) {
    let text = metrics_text(&ctx.telemetry);
    assert!(
        text.lines().any(|rendered| rendered == line),
        "no {line:?} in\n{text}"
    );
}

#[tokio::test]
async fn a_failed_status_write_is_retried_with_the_same_address() {
    let (client, mut api) = client();
    let ctx = context(client, &pools(LAN), &[]);
    let web = service("edge", "web", &["80/TCP"], json!({}));
    let (outcome, ()) = tokio::join!(reconcile(&web, &ctx), async {
        let (write, respond) = api.next().await;
        write.expect(Method::PATCH, "/api/v1/namespaces/edge/services/web/status");
        fail(respond, 500, "InternalError");
        api.expect_silence(QUIET).await;
    });
    let error = outcome.expect_err("the write failed");
    assert_eq!(error.metric_label(), "service_status");
    assert!(error.to_string().contains("Service edge/web"), "{error}");
    assert_eq!(error_policy(&error, &ctx), RETRY_AFTER_ERROR);
    let counted = r#"xdplb_errors_total{component="ipam_controller",kind="service_status"} 1"#;
    assert_metric(&ctx, counted);
    // The address stays reserved for the Service: the retry writes the same one.
    let (outcome, (write, _)) = tokio::join!(reconcile(&web, &ctx), async {
        let write = status_write(&mut api, "edge", "web").await;
        (write, event(&mut api, "edge", "web").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
    assert_eq!(ingress(&write)[0]["ip"], "192.168.8.240");
    // The retry succeeded: still the one error.
    assert_metric(&ctx, counted);
}

#[tokio::test]
async fn a_conflicting_request_is_refused_and_the_holder_is_left_alone() {
    let (client, mut api) = client();
    let ctx = context(client, &pools(LAN), &[]);
    let sharing = |name: &str, port: &str| {
        let mut extra = holding("192.168.8.241", "lan");
        merge(
            &mut extra,
            json!({ "metadata": { "annotations": {
                "metallb.universe.tf/allow-shared-ip": "dns",
                "metallb.universe.tf/loadBalancerIPs": "192.168.8.241",
            } } }),
        );
        service("kube-system", name, &[port], extra)
    };
    let dns_udp = sharing("dns-udp", "53/UDP");
    rebuild_quietly(&ctx, &mut api, &[&dns_udp]).await;

    // No sharing key: the address is taken.
    let web = service(
        "default",
        "web",
        &["53/TCP"],
        json!({ "metadata": { "annotations": { "xdplb.io/ips": "192.168.8.241" } } }),
    );
    let (outcome, (write, failed)) = tokio::join!(reconcile(&web, &ctx), async {
        let write = status_write(&mut api, "default", "web").await;
        let failed = event(&mut api, "default", "web").await;
        api.expect_silence(QUIET).await;
        (write, failed)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Waiting);
    assert!(
        write.body["status"].get("loadBalancer").is_none(),
        "{}",
        write.body
    );
    let refused = condition(&write);
    assert_eq!(refused["status"], "False");
    assert_eq!(refused["reason"], "AddressInUse");
    let message = refused["message"].as_str().expect("message");
    assert!(
        message.contains("192.168.8.241 is already used by kube-system/dns-udp"),
        "{message}"
    );
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["reason"], "AllocationFailed");
    assert!(
        failed["note"]
            .as_str()
            .expect("note")
            .starts_with("AddressInUse: 192.168.8.241"),
        "{failed}"
    );
    assert_eq!(
        ctx.telemetry.ipam_counts().failures,
        BTreeMap::from([((String::new(), "AddressInUse".to_owned()), 1)])
    );
    assert_metric(
        &ctx,
        "xdplb_ipam_allocation_failures_total{pool=\"\",reason=\"AddressInUse\"} 1",
    );
    let holder = ServiceKey::new("kube-system", "dns-udp");
    let kept = ctx.allocator.lock().expect("allocator").allocation(&holder);
    assert_eq!(
        kept.map(|allocation| allocation.ip),
        Some(ip("192.168.8.241"))
    );

    // The same sharing key on another protocol: CoreDNS on UDP and TCP 53, one VIP.
    let dns_tcp = sharing("dns-tcp", "53/TCP");
    let mut fresh = serde_json::to_value(&dns_tcp).expect("JSON");
    fresh.as_object_mut().expect("object").remove("status");
    let dns_tcp: Service = serde_json::from_value(fresh).expect("Service");
    let (outcome, (write, _)) = tokio::join!(reconcile(&dns_tcp, &ctx), async {
        let write = status_write(&mut api, "kube-system", "dns-tcp").await;
        (write, event(&mut api, "kube-system", "dns-tcp").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
    assert_eq!(
        *ingress(&write),
        json!([{ "ip": "192.168.8.241", "ipMode": "VIP" }])
    );
}

#[tokio::test]
async fn addresses_are_released_when_a_service_stops_being_a_load_balancer_or_goes_away() {
    let (client, mut api) = client();
    let ctx = context(client, &pools(LAN), &[]);
    let web = service(
        "default",
        "web",
        &["80/TCP"],
        holding("192.168.8.240", "lan"),
    );
    rebuild_quietly(&ctx, &mut api, &[&web]).await;

    let mut cluster_ip = web.clone();
    cluster_ip.spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
    let (outcome, (write, released)) = tokio::join!(reconcile(&cluster_ip, &ctx), async {
        let write = status_write(&mut api, "default", "web").await;
        (write, event(&mut api, "default", "web").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Released);
    // An empty applied status drops the address and the condition the IPAM owned.
    assert_eq!(write.body["status"], json!({}));
    assert_eq!(released["reason"], "Released");
    assert_eq!(
        released["note"],
        "released 192.168.8.240: the Service is no longer of type LoadBalancer"
    );

    let api_service = service("default", "api", &["443/TCP"], json!({}));
    let (outcome, (write, _)) = tokio::join!(reconcile(&api_service, &ctx), async {
        let write = status_write(&mut api, "default", "api").await;
        (write, event(&mut api, "default", "api").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
    assert_eq!(
        ingress(&write)[0]["ip"],
        "192.168.8.240",
        "the freed address"
    );

    // Deleted: nothing to write, the address is free again.
    assert!(forget(&applied(&api_service, &write), &ctx));
    assert!(!forget(&api_service, &ctx), "released once");
    let counts = ctx.telemetry.ipam_counts();
    assert_eq!(counts.releases, BTreeMap::from([("lan".to_owned(), 2)]));
    assert_metric(&ctx, "xdplb_ipam_releases_total{pool=\"lan\"} 2");
    let next = service("default", "next", &["8080/TCP"], json!({}));
    let (_, (write, _)) = tokio::join!(reconcile(&next, &ctx), async {
        let write = status_write(&mut api, "default", "next").await;
        (write, event(&mut api, "default", "next").await)
    });
    assert_eq!(ingress(&write)[0]["ip"], "192.168.8.240");
}

#[tokio::test]
async fn a_restart_rebuilds_from_statuses_and_never_hands_an_address_out_twice() {
    let (client, mut api) = client();
    let ctx = context(client, &pools(LAN), &[]);
    let created = |at: &str| json!({ "metadata": { "creationTimestamp": at } });
    let with = |mut base: Value, extra: Value| {
        merge(&mut base, extra);
        base
    };
    let traefik = service(
        "kube-system",
        "traefik",
        &["80/TCP", "443/TCP"],
        with(
            holding("192.168.8.240", "lan"),
            created("2024-01-01T00:00:00Z"),
        ),
    );
    let dns = service(
        "kube-system",
        "dns",
        &["53/UDP"],
        with(
            holding("192.168.8.241", "lan"),
            created("2024-01-02T00:00:00Z"),
        ),
    );
    // Restored from a backup with traefik's address in its status: the younger loses.
    let restored = service(
        "default",
        "restored",
        &["8443/TCP"],
        with(
            holding("192.168.8.240", "lan"),
            created("2025-06-01T00:00:00Z"),
        ),
    );
    let fresh = service(
        "default",
        "fresh",
        &["80/TCP"],
        created("2025-06-02T00:00:00Z"),
    );
    let services: Vec<Arc<Service>> = [&traefik, &dns, &restored, &fresh]
        .into_iter()
        .cloned()
        .map(Arc::new)
        .collect();
    let (_, conflict) = tokio::join!(
        rebuild(&services, &ctx),
        event(&mut api, "default", "restored")
    );
    assert_eq!(conflict["type"], "Warning");
    let note = conflict["note"].as_str().expect("note");
    assert!(note.starts_with("AddressInUse: 192.168.8.240"), "{note}");
    assert!(note.ends_with("assigning another address"), "{note}");

    for held in [&traefik, &dns] {
        let (outcome, ()) = tokio::join!(reconcile(held, &ctx), api.expect_silence(QUIET));
        assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
    }
    let mut given = Vec::new();
    for (name, new) in [("restored", &restored), ("fresh", &fresh)] {
        let (outcome, (write, _)) = tokio::join!(reconcile(new, &ctx), async {
            let write = status_write(&mut api, "default", name).await;
            (write, event(&mut api, "default", name).await)
        });
        assert_eq!(outcome.expect("reconciled"), Outcome::Settled);
        given.push(ingress(&write)[0]["ip"].clone());
    }
    assert_eq!(given, [json!("192.168.8.242"), json!("192.168.8.243")]);
}

#[tokio::test]
async fn a_bad_annotation_is_reported_and_the_address_stays() {
    let (client, mut api) = client();
    let ctx = context(client, &pools(LAN), &[]);
    let traefik = service(
        "kube-system",
        "traefik",
        &["443/TCP"],
        holding("192.168.8.240", "lan"),
    );
    rebuild_quietly(&ctx, &mut api, &[&traefik]).await;

    let mut broken = traefik.clone();
    broken.metadata.generation = Some(2);
    broken.metadata.annotations =
        Some([("xdplb.io/ips".to_owned(), "192.168.8.300".to_owned())].into());
    let (outcome, (write, failed)) = tokio::join!(reconcile(&broken, &ctx), async {
        let write = status_write(&mut api, "kube-system", "traefik").await;
        (write, event(&mut api, "kube-system", "traefik").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Rejected);
    assert_eq!(
        *ingress(&write),
        json!([{ "ip": "192.168.8.240", "ipMode": "VIP" }])
    );
    let refused = condition(&write);
    assert_eq!(refused["status"], "False");
    assert_eq!(refused["reason"], "InvalidAnnotation");
    assert_eq!(refused["observedGeneration"], 2);
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("xdplb.io/ips"), "{message}");
    assert!(message.ends_with("keeping 192.168.8.240"), "{message}");
    assert!(
        failed["note"]
            .as_str()
            .expect("note")
            .starts_with("InvalidAnnotation: xdplb.io/ips"),
        "{failed}"
    );
    let key = ServiceKey::new("kube-system", "traefik");
    let kept = ctx.allocator.lock().expect("allocator").allocation(&key);
    assert_eq!(
        kept.map(|allocation| allocation.ip),
        Some(ip("192.168.8.240"))
    );

    // The same refusal again: no new write, no new event.
    let again = applied(&broken, &write);
    let (outcome, ()) = tokio::join!(reconcile(&again, &ctx), api.expect_silence(QUIET));
    assert_eq!(outcome.expect("reconciled"), Outcome::Rejected);
    // A pool that does not exist is refused the same way, naming the pool.
    let lost = service(
        "default",
        "lost",
        &["80/TCP"],
        json!({ "metadata": { "annotations": { "xdplb.io/pool": "nowhere" } } }),
    );
    let (outcome, (write, _)) = tokio::join!(reconcile(&lost, &ctx), async {
        let write = status_write(&mut api, "default", "lost").await;
        (write, event(&mut api, "default", "lost").await)
    });
    assert_eq!(outcome.expect("reconciled"), Outcome::Waiting);
    assert_eq!(condition(&write)["reason"], "UnknownPool");
}

#[tokio::test]
async fn pool_statuses_count_addresses_and_report_overlaps_and_invalid_pools() {
    let resources = pools(&format!(
        r#"{LAN}
---
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: {{ name: lan-extra, generation: 3 }}
spec:
  addresses: ["192.168.8.250-192.168.8.252"]
---
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: {{ name: broken, generation: 1 }}
spec:
  addresses: ["192.168.8.241/29"]
"#
    ));
    let (client, mut api) = client();
    let ctx = context(client, &resources, &[]);
    let held = service(
        "default",
        "web",
        &["80/TCP"],
        holding("192.168.8.240", "lan"),
    );
    rebuild_quietly(&ctx, &mut api, &[&held]).await;

    let mut statuses = PoolStatuses::default();
    let (published, writes) = tokio::join!(statuses.publish(&resources, &ctx), async {
        let mut writes = Vec::new();
        for _ in 0..3 {
            let (write, respond) = api.next().await;
            assert_eq!(write.method, Method::PATCH);
            assert!(write.uri.contains("fieldManager=xdplb.io%2Fipam"));
            let name = &write.body["metadata"]["name"];
            let pool = resources
                .iter()
                .find(|pool| pool.metadata.name.as_deref() == name.as_str())
                .expect("a pool of the test");
            echo_onto(
                respond,
                &write,
                &serde_json::to_value(&**pool).expect("JSON"),
            );
            writes.push(write);
        }
        writes
    });
    published.expect("published");
    let by_path = |name: &str| {
        writes
            .iter()
            .find(|write| {
                write.path() == format!("/apis/xdplb.io/v1alpha1/addresspools/{name}/status")
            })
            .map(|write| &write.body["status"])
            .unwrap_or_else(|| panic!("no status write for {name}"))
    };
    let find = |status: &Value, type_: &str| {
        status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|condition| condition["type"] == type_)
            .cloned()
            .expect(type_)
    };
    let lan = by_path("lan");
    assert_eq!(
        (lan["assigned"].clone(), lan["available"].clone()),
        (json!(1), json!(10))
    );
    assert_eq!(find(lan, "Ready")["status"], "True");
    assert_eq!(find(lan, "Invalid")["status"], "False");
    let overlapping = find(lan, "Overlapping");
    assert_eq!(overlapping["status"], "True");
    assert!(
        overlapping["message"]
            .as_str()
            .expect("message")
            .contains("lan-extra"),
        "{overlapping}"
    );
    let extra = by_path("lan-extra");
    assert_eq!(find(extra, "Overlapping")["observedGeneration"], 3);
    let broken = by_path("broken");
    let invalid = find(broken, "Invalid");
    assert_eq!(invalid["status"], "True");
    assert_eq!(invalid["reason"], "InvalidAddresses");
    assert!(
        invalid["message"]
            .as_str()
            .expect("message")
            .contains("192.168.8.241/29"),
        "{invalid}"
    );
    assert_eq!(find(broken, "Ready")["status"], "False");

    // Unchanged: nothing written again.
    let (published, ()) = tokio::join!(
        statuses.publish(&resources, &ctx),
        api.expect_silence(QUIET)
    );
    published.expect("published");
}

const POOLS: &str = "/apis/xdplb.io/v1alpha1/addresspools";

/// The API server as the IPAM leader sees it: lists of its objects, watches held open
/// until an event is sent on them, and writes answered as the API server does (a status
/// write of a pool it does not have gets 404).
struct LeaderApi {
    api: ApiDouble,
    pools: Vec<Value>,
    services: Vec<Value>,
    /// Open watches, by path.
    watches: Vec<(String, Respond)>,
}

impl LeaderApi {
    /// Answers requests until `count` writes came; returns them.
    async fn writes(&mut self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut writes = Vec::new();
        while writes.len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes so far: {writes:?}"
            );
            let (request, respond) = self.api.next().await;
            writes.extend(self.answer(request, respond));
        }
        writes
    }

    /// Answers requests until none comes for a while; panics on a write.
    async fn settled(&mut self) {
        while let Some((request, respond)) = self.api.next_within(QUIET).await {
            if let Some(write) = self.answer(request, respond) {
                panic!("unexpected write {write:?}");
            }
        }
    }

    /// Deletes the pool `name`, sending the event on the open pool watch.
    fn delete_pool(&mut self, name: &str) {
        let position = self
            .pools
            .iter()
            .position(|pool| pool["metadata"]["name"] == name)
            .expect("the pool");
        let mut pool = self.pools.remove(position);
        pool["metadata"]["resourceVersion"] = json!("20");
        let watch = self
            .watches
            .iter()
            .position(|(path, _)| path == POOLS)
            .expect("an open pool watch");
        let (_, respond) = self.watches.remove(watch);
        stream(respond, &[json!({ "type": "DELETED", "object": pool })]);
    }

    /// Answers `request`; returns it if it is a write.
    fn answer(&mut self, request: Received, respond: Respond) -> Option<Received> {
        let path = request.path().to_owned();
        if request.is_watch() {
            self.watches.push((path, respond));
            return None;
        }
        let pool_status = path
            .strip_prefix(POOLS)
            .and_then(|rest| rest.strip_prefix('/')?.strip_suffix("/status"));
        match (&request.method, path.as_str(), pool_status) {
            (&Method::GET, POOLS, _) => reply(
                respond,
                StatusCode::OK,
                &list("xdplb.io/v1alpha1", "AddressPoolList", "10", &self.pools),
            ),
            (&Method::GET, "/api/v1/namespaces", _) => reply(
                respond,
                StatusCode::OK,
                &list("v1", "NamespaceList", "11", &[]),
            ),
            (&Method::GET, "/api/v1/services", _) => reply(
                respond,
                StatusCode::OK,
                &list("v1", "ServiceList", "12", &self.services),
            ),
            (&Method::POST, _, _) => reply(respond, StatusCode::CREATED, &request.body),
            (&Method::PATCH, _, Some(name)) => {
                match self
                    .pools
                    .iter()
                    .find(|pool| pool["metadata"]["name"] == name)
                {
                    Some(pool) => echo_onto(respond, &request, pool),
                    None => fail(respond, 404, "NotFound"),
                }
            }
            (&Method::PATCH, _, None) => echo(respond, &request, Some("13")),
            _ => panic!("unexpected request {request:?}"),
        }
        (request.method != Method::GET).then_some(request)
    }
}

/// Starts the IPAM leader loop on an API serving `pools` and `services`.
fn leader(pools: Vec<Value>, services: &[&Service]) -> (tokio::task::JoinHandle<()>, LeaderApi) {
    let (client, api) = client();
    let telemetry = Arc::new(Telemetry::new());
    let ipam = tokio::spawn(serve(
        client,
        ClassPolicy::default(),
        "agent-1".into(),
        telemetry,
    ));
    let services = services
        .iter()
        .map(|service| serde_json::to_value(service).expect("JSON"))
        .collect();
    let api = LeaderApi {
        api,
        pools,
        services,
        watches: Vec::new(),
    };
    (ipam, api)
}

/// The whole leader loop: lists pools, namespaces and Services, rebuilds, then gives
/// only the Service without an address one, and counts the pool.
#[tokio::test]
async fn the_leader_lists_rebuilds_and_allocates_only_what_is_missing() {
    let traefik = service(
        "kube-system",
        "traefik",
        &["443/TCP"],
        holding("192.168.8.240", "lan"),
    );
    let fresh = service("default", "fresh", &["80/TCP"], json!({}));
    let (ipam, mut api) = leader(documents(LAN), &[&traefik, &fresh]);
    let writes = api.writes(3).await;
    let paths: Vec<(Method, &str)> = writes
        .iter()
        .map(|write| (write.method.clone(), write.path()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                Method::PATCH,
                "/api/v1/namespaces/default/services/fresh/status"
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events"
            ),
            (
                Method::PATCH,
                "/apis/xdplb.io/v1alpha1/addresspools/lan/status"
            ),
        ]
    );
    assert_eq!(ingress(&writes[0])[0]["ip"], "192.168.8.241");
    assert_eq!(writes[2].body["status"]["assigned"], 2);
    assert_eq!(writes[2].body["status"]["available"], 9);
    // Nothing more: traefik already shows what it holds.
    api.settled().await;
    ipam.abort();
}

/// The real API server showed it: a Service whose pool was deleted kept a condition
/// naming the pool until the agent restarted. It keeps its address (no node announces
/// it), and the condition says so at once; the deleted pool's status is not written.
#[tokio::test]
async fn a_service_whose_pool_is_deleted_keeps_its_address_and_says_so_at_once() {
    let traefik = service(
        "kube-system",
        "traefik",
        &["443/TCP"],
        holding("192.168.8.240", "lan"),
    );
    let (ipam, mut api) = leader(documents(LAN), &[&traefik]);
    let written = api.writes(1).await;
    written[0].expect(Method::PATCH, &format!("{POOLS}/lan/status"));
    api.settled().await;

    api.delete_pool("lan");
    let written = api.writes(1).await;
    written[0].expect(
        Method::PATCH,
        "/api/v1/namespaces/kube-system/services/traefik/status",
    );
    assert_eq!(
        *ingress(&written[0]),
        json!([{ "ip": "192.168.8.240", "ipMode": "VIP" }])
    );
    let gone = condition(&written[0]);
    assert_eq!(gone["status"], "False");
    assert_eq!(gone["reason"], "NotInAnyPool");
    let message = gone["message"].as_str().expect("message");
    assert!(
        message.starts_with("192.168.8.240, which no valid pool lists any more")
            && message.contains("no node announces it"),
        "{message}"
    );
    api.settled().await;
    ipam.abort();
}

/// Expects the status write of pool `name`: answered with `code` as the API server's
/// failure, or, without one, with `pool` carrying the written status.
async fn pool_status_write(
    api: &mut ApiDouble,
    name: &str,
    pools: &[Arc<AddressPool>],
    code: Option<u16>,
) {
    let (write, respond) = api.next().await;
    write.expect(
        Method::PATCH,
        &format!("/apis/xdplb.io/v1alpha1/addresspools/{name}/status"),
    );
    match code {
        Some(404) => fail(respond, 404, "NotFound"),
        Some(code) => fail(respond, code, "InternalError"),
        None => {
            let pool = pools
                .iter()
                .find(|pool| pool.metadata.name.as_deref() == Some(name))
                .expect("a pool of the test");
            echo_onto(
                respond,
                &write,
                &serde_json::to_value(&**pool).expect("JSON"),
            );
        }
    }
}

/// The real API server showed it: after an AddressPool was deleted the agent kept
/// patching its status (404), and that one failure stopped the whole round.
#[tokio::test]
async fn deleted_pools_are_skipped_and_a_failed_write_does_not_stop_the_others() {
    let pool = |name: &str, uid: &str, addresses: &str, extra: &str| {
        format!(
            "apiVersion: xdplb.io/v1alpha1\nkind: AddressPool\nmetadata: {{ name: {name}, uid: {uid}, generation: 1{extra} }}\nspec: {{ addresses: [\"{addresses}\"] }}\n---\n"
        )
    };
    let attic = pool("attic", "uid-attic", "192.168.9.0/30", "");
    // Being deleted, held by a finalizer: its status is of no use any more.
    let leaving = pool(
        "leaving",
        "uid-leaving",
        "192.168.10.0/30",
        ", deletionTimestamp: \"2026-01-01T00:00:00Z\", finalizers: [example.com/hold]",
    );
    let listed = pools(&format!("{attic}{leaving}{LAN}"));
    let (client, mut api) = client();
    let ctx = context(client, &listed, &[]);
    let mut statuses = PoolStatuses::default();

    // attic is gone from the API server, the store has not caught up: lan still gets
    // its status.
    let (published, ()) = tokio::join!(statuses.publish(&listed, &ctx), async {
        pool_status_write(&mut api, "attic", &listed, Some(404)).await;
        pool_status_write(&mut api, "lan", &listed, None).await;
        api.expect_silence(QUIET).await;
    });
    published.expect("a deleted pool is no failure");
    // Not tried again while the store lists it.
    let (published, ()) = tokio::join!(statuses.publish(&listed, &ctx), api.expect_silence(QUIET));
    published.expect("nothing to write");

    // Created again (a new uid) next to a new pool: its write fails, the next pool is
    // written all the same, and the failure is reported and retried.
    let recreated = pools(&format!(
        "{}{leaving}{LAN}\n---\n{}",
        pool("attic", "uid-attic-2", "192.168.9.0/30", ""),
        pool("spare", "uid-spare", "192.168.11.0/30", "")
    ));
    let (published, ()) = tokio::join!(statuses.publish(&recreated, &ctx), async {
        pool_status_write(&mut api, "attic", &recreated, Some(500)).await;
        pool_status_write(&mut api, "spare", &recreated, None).await;
        api.expect_silence(QUIET).await;
    });
    let failures = published.expect_err("attic's write failed");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].metric_label(), "pool_status");
    assert!(
        failures[0].to_string().contains("AddressPool attic"),
        "{}",
        failures[0]
    );
    let (published, ()) = tokio::join!(statuses.publish(&recreated, &ctx), async {
        pool_status_write(&mut api, "attic", &recreated, None).await;
        api.expect_silence(QUIET).await;
    });
    published.expect("written on the retry");
}
