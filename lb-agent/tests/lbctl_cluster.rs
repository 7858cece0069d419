//! lbctl's cluster side (`src/bin/lbctl/cluster.rs`, compiled in here) against the API
//! double: `lbctl pools`, `lbctl services` and `lbctl explain --cluster` on the homelab
//! cluster of k8s_support/cluster.yaml, and the errors a user meets.

#[path = "../src/bin/lbctl/cluster.rs"]
mod cluster;
mod k8s_support;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cluster::{ClusterError, Owner, SETTINGS_CONFIG_MAP};
use http::StatusCode;
use k8s_support::{ApiDouble, documents, list, reply};
use kube::{Client, Config, client::ConfigExt as _};
use lb_agent::{
    explain::{Outcome, Query},
    ipam::request::ClassPolicy,
    model::Protocol,
};
use serde_json::{Value, json};

const CLUSTER: &str = include_str!("k8s_support/cluster.yaml");
const NAMESPACE: &str = "xdplb-system";

/// What the double answers besides the cluster's objects.
#[derive(Clone, Default)]
struct Answers {
    /// The agent's settings file; `None`: the ConfigMap does not exist.
    settings: Option<&'static str>,
    /// Answer every AddressPool request with this status code.
    pools_fail: Option<u16>,
}

fn kind_list(objects: &[Value], kind: &str, api_version: &str) -> Value {
    let items: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .cloned()
        .collect();
    list(api_version, &format!("{kind}List"), "7", &items)
}

/// A Kubernetes `Status` failure body.
fn failure(code: u16, reason: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": format!("test double: {reason}"),
        "reason": reason,
        "code": code,
    })
}

/// The API server's answer to a GET of `path`.
fn answer(path: &str, objects: &[Value], answers: &Answers) -> (StatusCode, Value) {
    let settings_path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps/{SETTINGS_CONFIG_MAP}");
    let found = |body| (StatusCode::OK, body);
    match path {
        "/apis/xdplb.io/v1alpha1/addresspools" => match answers.pools_fail {
            Some(code) => (
                StatusCode::from_u16(code).expect("status code"),
                failure(code, "NotFound"),
            ),
            None => found(kind_list(objects, "AddressPool", "xdplb.io/v1alpha1")),
        },
        "/api/v1/nodes" => found(kind_list(objects, "Node", "v1")),
        "/api/v1/services" => found(kind_list(objects, "Service", "v1")),
        "/apis/discovery.k8s.io/v1/endpointslices" => {
            found(kind_list(objects, "EndpointSlice", "discovery.k8s.io/v1"))
        }
        path if path == settings_path => match answers.settings {
            Some(settings) => found(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": SETTINGS_CONFIG_MAP, "namespace": NAMESPACE },
                "data": { "settings.yaml": settings },
            })),
            None => (StatusCode::NOT_FOUND, failure(404, "NotFound")),
        },
        other => panic!("unexpected request for {other}"),
    }
}

/// Serves `objects` to the client until it is dropped; returns the paths asked for.
async fn serve(mut api: ApiDouble, objects: Vec<Value>, answers: Answers) -> Vec<String> {
    let mut paths = Vec::new();
    while let Some((received, respond)) = api.next_within(k8s_support::WAIT).await {
        assert_eq!(
            received.method,
            http::Method::GET,
            "lbctl only reads: {received:?}"
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            received.user_agent,
            Some(format!("lbctl/{version}")),
            "every request names lbctl"
        );
        let (status, body) = answer(received.path(), &objects, &answers);
        reply(respond, status, &body);
        paths.push(received.path().to_owned());
    }
    paths
}

/// The homelab cluster, with the `lan` pool's status as the IPAM holder writes it.
fn homelab() -> Vec<Value> {
    let mut objects = documents(CLUSTER);
    for object in objects.iter_mut().filter(|o| o["kind"] == "AddressPool") {
        if object["metadata"]["name"] == "lan" {
            object["status"] = json!({
                "assigned": 2,
                "available": 9,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Valid", "message": "",
                    "lastTransitionTime": "2024-01-10T10:00:00Z",
                }],
            });
        }
    }
    objects
}

/// A client of the double with lbctl's configuration: its headers, as kube's stack
/// adds them.
fn lbctl_client() -> (Client, ApiDouble) {
    let url = "https://10.0.0.1:6443".parse().expect("a URL");
    let config = cluster::configured(Config::new(url));
    let (builder, api) = k8s_support::builder();
    let client = builder
        .with_layer(&config.extra_headers_layer().expect("headers"))
        .build();
    (client, api)
}

/// Runs `work` with a client of a double serving the homelab cluster, and returns its
/// result with the paths it asked for.
async fn with_cluster<T, F>(answers: Answers, work: impl FnOnce(Client) -> F) -> (T, Vec<String>)
where
    F: std::future::Future<Output = T>,
{
    let (client, api) = lbctl_client();
    let server = tokio::spawn(serve(api, homelab(), answers));
    let result = tokio::time::timeout(Duration::from_secs(10), work(client))
        .await
        .expect("lbctl's requests finish in time");
    let paths = server.await.expect("the double ran");
    (result, paths)
}

#[tokio::test]
async fn pools_show_addresses_counts_and_conditions() {
    let (pools, paths) = with_cluster(Answers::default(), |client| async move {
        cluster::pools(&client).await.expect("pools")
    })
    .await;
    assert_eq!(paths, ["/apis/xdplb.io/v1alpha1/addresspools"]);
    let names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
    assert_eq!(names, ["edge", "lan"]);
    let (edge, lan) = (&pools[0], &pools[1]);
    assert_eq!(edge.addresses, ["172.16.200.0/28", "172.16.200.53/32"]);
    assert!(!edge.auto_assign);
    assert_eq!((edge.assigned, edge.available), (None, None));
    assert!(edge.conditions.is_empty());
    assert!(lan.auto_assign);
    assert_eq!((lan.assigned, lan.available), (Some(2), Some(9)));
    assert_eq!(lan.conditions.len(), 1);
    assert_eq!(
        (
            lan.conditions[0].type_.as_str(),
            lan.conditions[0].status.as_str()
        ),
        ("Ready", "True")
    );
}

#[tokio::test]
async fn a_missing_crd_is_an_api_error_naming_what_was_listed() {
    let answers = Answers {
        pools_fail: Some(404),
        ..Answers::default()
    };
    let (error, _) = with_cluster(answers, |client| async move {
        cluster::pools(&client).await.expect_err("no CRD")
    })
    .await;
    let ClusterError::Api { what, source } = &error else {
        panic!("an API error: {error}");
    };
    assert_eq!(*what, "AddressPools");
    assert!(
        matches!(source, kube::Error::Api(status) if status.code == 404),
        "{source}"
    );
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("IPv4")
}

#[tokio::test]
async fn services_show_address_pool_owner_and_endpoints() {
    let answers = Answers {
        settings: Some("gossip:\n  keyFile: /etc/xdplb/gossip.key\n"),
        ..Answers::default()
    };
    let ((snapshot, (class, note)), paths) = with_cluster(answers, |client| async move {
        let snapshot = cluster::snapshot(&client).await.expect("snapshot");
        (snapshot, cluster::class_policy(&client, NAMESPACE).await)
    })
    .await;
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert_eq!(
        class,
        ClassPolicy {
            default_class: false
        }
    );
    assert_eq!(note, None);
    // This node's agent knows one VIP's owner; it has not applied the other yet.
    let owners = BTreeMap::from([(ip("192.168.8.240"), Some("node1".to_owned()))]);
    let services = cluster::services(&snapshot, class, Some(&owners));
    let rows: Vec<String> = services
        .iter()
        .map(|s| {
            format!(
                "{}/{} {:?} {:?} {} {:?} {}/{}",
                s.namespace,
                s.name,
                s.address,
                s.pool,
                s.ports.join(","),
                s.owner,
                s.endpoints.ready,
                s.endpoints.total
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "default/pending None None 8080/TCP Unknown 0/0",
            // The IPv6 slice is not counted; the UDP service's unready pod is.
            "kube-system/coredns-tcp Some(192.168.8.241) Some(\"lan\") 53/TCP Unknown 1/1",
            "kube-system/coredns-udp Some(192.168.8.241) Some(\"lan\") 53/UDP Unknown 1/2",
            // The terminating pod on node2 is counted, not ready.
            "kube-system/traefik Some(192.168.8.240) Some(\"lan\") 80/TCP,443/TCP Node(\"node1\") 2/3",
        ]
    );
    // Without an agent, no owner is known; the agent saying "nobody" is kept apart.
    let nobody = BTreeMap::from([(ip("192.168.8.240"), None)]);
    let traefik = |services: Vec<cluster::ServiceSummary>| {
        services
            .into_iter()
            .find(|s| s.name == "traefik")
            .expect("traefik")
            .owner
    };
    assert_eq!(
        traefik(cluster::services(&snapshot, class, None)),
        Owner::Unknown
    );
    assert_eq!(
        traefik(cluster::services(&snapshot, class, Some(&nobody))),
        Owner::Nobody
    );
    // As the default class, the agents also serve MetalLB's old Service.
    let default_class = ClassPolicy {
        default_class: true,
    };
    let legacy = cluster::services(&snapshot, default_class, None)
        .into_iter()
        .find(|s| s.name == "legacy")
        .expect("legacy is ours as the default class");
    assert_eq!(
        (legacy.address, legacy.pool),
        (Some(ip("192.168.7.230")), None)
    );
}

#[tokio::test]
async fn unreadable_settings_fall_back_to_the_class_with_a_note() {
    let ((class, note), _) = with_cluster(Answers::default(), |client| async move {
        cluster::class_policy(&client, NAMESPACE).await
    })
    .await;
    assert_eq!(class, ClassPolicy::default());
    let note = note.expect("a note");
    assert!(
        note.contains("no settings.yaml in ConfigMap xdplb-system/xdplb-agent")
            && note.contains("showing only Services with loadBalancerClass xdplb.io/lb"),
        "{note}"
    );
    let answers = Answers {
        settings: Some("defaultClass: true\n"),
        ..Answers::default()
    };
    let ((class, note), _) = with_cluster(answers, |client| async move {
        cluster::class_policy(&client, NAMESPACE).await
    })
    .await;
    assert_eq!(
        (class, note),
        (
            ClassPolicy {
                default_class: true
            },
            None
        )
    );
}

fn query(vip: &str, port: u16, protocol: Protocol) -> Query {
    Query {
        client: SocketAddrV4::new(ip("192.168.8.10"), 40000),
        vip: SocketAddrV4::new(ip(vip), port),
        protocol,
    }
}

#[tokio::test]
async fn explain_follows_a_flow_through_the_clusters_state() {
    let (snapshot, _) = with_cluster(Answers::default(), |client| async move {
        cluster::snapshot(&client).await.expect("snapshot")
    })
    .await;
    let class = ClassPolicy::default();

    // No agent asked: the election with every node alive. node2 is excluded, node3 is
    // not Ready and node4 is outside the pool's node selector, so node1 owns Traefik.
    let traefik = query("192.168.8.240", 443, Protocol::Tcp);
    let explanation = cluster::explain(&snapshot, class, traefik, None).expect("explains");
    assert_eq!(explanation.outcome, Outcome::Forwarded);
    assert_eq!(explanation.service.as_deref(), Some("kube-system/traefik"));
    assert_eq!(
        explanation.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node1")
    );
    assert!(explanation.steps[0].contains("the election picks it with every node alive"));
    // The node table holds only nodes with serving pods; the pod is on the chosen node,
    // at the port the EndpointSlice names for `websecure`.
    let node = explanation.node.clone().expect("a backend node");
    let pods = BTreeMap::from([("node1", ip("10.42.0.7")), ("node4", ip("10.42.3.4"))]);
    let pod = pods.get(node.name.as_str()).expect("node1 or node4");
    assert_eq!(explanation.destination, Some(SocketAddrV4::new(*pod, 8443)));
    assert_eq!(
        explanation.node_choice.and_then(|choice| choice.backend),
        Some(node.address)
    );

    // The agent's owner wins: the flow is received there.
    let owned = cluster::explain(&snapshot, class, traefik, Some(Some("node4".to_owned())))
        .expect("explains");
    assert_eq!(
        owned.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node4")
    );
    assert!(owned.steps[0].contains("the VIP's owner is node4, as the agent on this node sees it"));

    // A Local service is served by its owner's own pod: only node3 has a ready one.
    let dns = cluster::explain(
        &snapshot,
        class,
        query("192.168.8.241", 53, Protocol::Udp),
        None,
    )
    .expect("explains");
    assert_eq!(
        dns.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node3")
    );
    assert_eq!(
        dns.destination,
        Some(SocketAddrV4::new(ip("10.42.2.9"), 53))
    );
    assert_eq!(dns.node_choice, None);

    // Not a VIP: passed.
    let other = cluster::explain(
        &snapshot,
        class,
        query("192.168.8.99", 80, Protocol::Tcp),
        None,
    )
    .expect("explains");
    assert_eq!(other.outcome, Outcome::Passed);
}

#[tokio::test]
async fn explain_needs_nodes() {
    let (client, api) = lbctl_client();
    let server = tokio::spawn(serve(api, Vec::new(), Answers::default()));
    let snapshot = cluster::snapshot(&client)
        .await
        .expect("an empty cluster lists fine");
    drop(client);
    server.await.expect("served");
    let error = cluster::explain(
        &snapshot,
        ClassPolicy::default(),
        query("192.168.8.240", 80, Protocol::Tcp),
        None,
    )
    .expect_err("no nodes");
    assert!(matches!(error, ClusterError::NoNodes), "{error}");
}

/// The same answers over real HTTP on loopback, for the lbctl binary; returns the
/// address. The server runs until the test's runtime ends.
async fn http_api(objects: Vec<Value>, answers: Answers) -> std::net::SocketAddr {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    let shared = std::sync::Arc::new((objects, answers));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = std::sync::Arc::clone(&shared);
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (status, body) = answer(request.uri().path(), &shared.0, &shared.1);
                let mut response = http::Response::new(Full::new(Bytes::from(
                    serde_json::to_vec(&body).expect("JSON"),
                )));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    address
}

/// A kubeconfig for `server`, in `dir`.
fn kubeconfig(dir: &tempfile::TempDir, server: &str) -> std::path::PathBuf {
    let path = dir.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n\
         users:\n- name: admin\n  user: {{}}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: admin\n\
         current-context: lab\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// Runs lbctl (no agent socket, no KUBECONFIG from the environment) off the runtime.
async fn lbctl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"));
    command
        .env_remove("KUBECONFIG")
        .env_remove("XDPLB_SOCKET")
        .arg("--socket")
        .arg(kubeconfig.with_file_name("no-agent.sock"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run lbctl"))
        .await
        .expect("lbctl ran")
}

fn text(output: &std::process::Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stream = if code == 0 {
        &output.stdout
    } else {
        &output.stderr
    };
    String::from_utf8(stream.clone()).expect("UTF-8")
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lbctl_binary_shows_the_cluster() {
    let server = http_api(homelab(), Answers::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(&dir, &format!("http://{server}"));

    let pools = text(&lbctl(&config, &["pools"]).await, 0);
    assert_contains(
        &pools,
        &[
            "NAME  ADDRESSES                         AUTO ASSIGN  ASSIGNED  AVAILABLE  INTERFACES  CONDITIONS",
            "edge  172.16.200.0/28,172.16.200.53/32  false               -          -  any         no status yet",
            "lan   192.168.8.240-192.168.8.250       true                2          9  any         Ready",
            "Pools without status",
        ],
    );
    let json: Vec<cluster::PoolSummary> =
        serde_json::from_str(&text(&lbctl(&config, &["pools", "-o", "json"]).await, 0))
            .expect("JSON");
    assert_eq!(json.len(), 2);

    let services = text(&lbctl(&config, &["services"]).await, 0);
    assert_contains(
        &services,
        &[
            "SERVICE                  ADDRESS        POOL  PORTS           OWNER    ENDPOINTS",
            "default/pending          <pending>      -     8080/TCP        unknown        0/0",
            "kube-system/traefik      192.168.8.240  lan   80/TCP,443/TCP  unknown        2/3",
            "run `sudo lbctl services` on a node",
            "note: no settings.yaml in ConfigMap xdplb-system/xdplb-agent",
        ],
    );

    // --kubeconfig alone makes explain read the cluster.
    let explained = text(
        &lbctl(
            &config,
            &["explain", "192.168.8.10:40000", "192.168.8.240:443/tcp"],
        )
        .await,
        0,
    );
    assert_contains(
        &explained,
        &[
            "kube-system/traefik",
            "the VIP's owner is node1, as the election picks it",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lbctl_binary_says_what_to_do_when_the_cluster_fails() {
    let answers = Answers {
        pools_fail: Some(404),
        ..Answers::default()
    };
    let server = http_api(homelab(), answers).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(&dir, &format!("http://{server}"));
    let missing_crd = text(&lbctl(&config, &["pools"]).await, 1);
    assert_contains(
        &missing_crd,
        &[
            "listing AddressPools",
            "The AddressPool CRD is not installed: kubectl apply -f deploy/crds",
        ],
    );

    // Nothing listens on the port any more once its listener is gone.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let unreachable = kubeconfig(&dir, &format!("http://{closed}"));
    let message = text(&lbctl(&unreachable, &["services"]).await, 3);
    assert_contains(
        &message,
        &[
            "The Kubernetes API server cannot be reached",
            "kubectl get nodes",
        ],
    );

    let absent = dir.path().join("absent");
    let message = text(&lbctl(&absent, &["pools"]).await, 3);
    assert_contains(
        &message,
        &["no usable Kubernetes configuration", "--kubeconfig FILE"],
    );
}
