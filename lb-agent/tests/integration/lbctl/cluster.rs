//! lbctl's cluster commands (`pools`, `services`, `explain --cluster`) as a user runs
//! them: the binary, with a kubeconfig, against the API server double over HTTP serving
//! the homelab cluster; the requests it makes, and the errors a user meets. What it
//! makes of the cluster is unit-tested in the binary (`src/bin/lbctl/cluster/tests.rs`).

use serde_json::Value;

use crate::support::{
    kube_api::{HOMELAB, Received, documents},
    kube_http::HttpApi,
    lbctl::{assert_contains, kubeconfig, printed, with_kubeconfig},
};

const POOLS: &str = "/apis/xdplb.io/v1alpha1/addresspools";

/// The paths of `requests`, each checked to be a GET naming lbctl: it only reads.
fn read_paths(requests: Vec<Received>) -> Vec<String> {
    let user_agent = format!("lbctl/{}", env!("CARGO_PKG_VERSION"));
    requests
        .into_iter()
        .map(|received| {
            assert_eq!(received.method, http::Method::GET, "lbctl only reads");
            assert_eq!(
                received.user_agent.as_deref(),
                Some(user_agent.as_str()),
                "every request names lbctl: {received:?}"
            );
            received.path().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lbctl_binary_shows_the_cluster() {
    let api = HttpApi::start(documents(HOMELAB), &[]).await;

    let pools = printed(&api.lbctl(&["pools"]).await, 0);
    assert_contains(
        &pools,
        &[
            "NAME  ADDRESSES                         AUTO ASSIGN  ASSIGNED  AVAILABLE  INTERFACES  CONDITIONS",
            "edge  172.16.200.0/28,172.16.200.53/32  false               -          -  any         no status yet",
            "lan   192.168.8.240-192.168.8.250       true                2          9  any         Ready",
            "Pools without status",
        ],
    );
    assert_eq!(read_paths(api.take_requests()), [POOLS]);
    let json: Vec<Value> =
        serde_json::from_str(&printed(&api.lbctl(&["pools", "-o", "json"]).await, 0))
            .expect("JSON");
    let names: Vec<&Value> = json.iter().map(|pool| &pool["name"]).collect();
    assert_eq!(names, ["edge", "lan"]);
    api.take_requests();

    let services = printed(&api.lbctl(&["services"]).await, 0);
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
    let mut paths = read_paths(api.take_requests());
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/xdplb-system/configmaps/xdplb-agent",
            "/api/v1/nodes",
            "/api/v1/services",
            "/apis/discovery.k8s.io/v1/endpointslices",
            POOLS,
        ]
    );

    // --kubeconfig alone makes explain read the cluster.
    let explained = printed(
        &api.lbctl(&["explain", "192.168.8.10:40000", "192.168.8.240:443/tcp"])
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
    read_paths(api.take_requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_an_api_error_naming_what_was_listed() {
    let api = HttpApi::start(documents(HOMELAB), &[POOLS]).await;
    let missing_crd = printed(&api.lbctl(&["pools"]).await, 1);
    // The hint follows the API's 404 on the AddressPools.
    assert_contains(
        &missing_crd,
        &[
            "listing AddressPools",
            "The AddressPool CRD is not installed: kubectl apply -f deploy/crds",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lbctl_binary_says_what_to_do_when_the_cluster_fails() {
    // An empty cluster lists fine, but nothing can receive a flow.
    let empty = HttpApi::start(Vec::new(), &[]).await;
    let no_nodes = printed(
        &empty
            .lbctl(&["explain", "192.168.8.10:40000", "192.168.8.240:80/tcp"])
            .await,
        1,
    );
    assert_contains(
        &no_nodes,
        &["the cluster has no Node with an IPv4 InternalIP"],
    );

    // Nothing listens on the port any more once its listener is gone.
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let unreachable = kubeconfig(dir.path(), &format!("http://{closed}"));
    let message = printed(&with_kubeconfig(&unreachable, &["services"]).await, 3);
    assert_contains(
        &message,
        &[
            "The Kubernetes API server cannot be reached",
            "kubectl get nodes",
        ],
    );

    let absent = dir.path().join("absent");
    let message = printed(&with_kubeconfig(&absent, &["pools"]).await, 3);
    assert_contains(
        &message,
        &["no usable Kubernetes configuration", "--kubeconfig FILE"],
    );
}
