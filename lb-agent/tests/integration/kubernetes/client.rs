//! The agent's Kubernetes client against the API double: every request names the agent
//! (`User-Agent`), and an API outage is reported once when it starts
//! and once when it ends, with every request that could not reach the API server
//! counted, however many watches, Lease rounds and IPAM passes hit it.

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Config, client::ConfigExt as _};
use lb_agent::{
    ipam::ClassPolicy,
    ipam_controller::{self, lease::LeaseSettings},
    sources::kubernetes::{
        client::{AGENT_USER_AGENT, identified, observed},
        outage::{ApiHealth, log_filter},
    },
    telemetry::Telemetry,
};
use serde_json::{Value, json};
use tokio::{sync::watch, time::timeout};

use crate::support::{
    kube_api::{
        self, ApiDouble, COLLECTIONS, Received, Respond, fail, list, list_at, refuse_connection,
        reply,
    },
    openmetrics::metrics_text,
};

fn api_server() -> Config {
    Config::new("https://10.0.0.1:6443".parse().expect("a URL"))
}

/// The `User-Agent` the double sees on a request of the agent's client built from
/// `config` (kube's stack adds `config`'s headers as below).
async fn user_agent(config: Config, health: &Arc<ApiHealth>) -> Option<String> {
    let (builder, mut api) = kube_api::builder();
    let builder = builder.with_layer(&config.extra_headers_layer().expect("headers"));
    let client = observed(builder, health);
    let request =
        tokio::spawn(async move { Api::<Node>::all(client).list(&Default::default()).await });
    let (received, respond) = api.next().await;
    reply(respond, StatusCode::OK, &list("v1", "NodeList", "1", &[]));
    request.await.expect("the request").expect("the list");
    received.user_agent
}

/// lbctl's are checked on every request in lbctl/cluster.rs.
#[tokio::test]
async fn requests_name_the_agent_with_its_version() {
    let version = env!("CARGO_PKG_VERSION");
    let health = ApiHealth::new(Arc::new(Telemetry::new()));
    let agent = identified(api_server(), AGENT_USER_AGENT);
    assert_eq!(
        user_agent(agent, &health).await,
        Some(format!("xdplb-agent/{version}"))
    );
}

/// The log lines written while the guard lives (this thread's tasks).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log").clone();
        String::from_utf8(bytes)
            .expect("UTF-8 logs")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// An API server with one node, no Services or pools, and the IPAM Lease; it can go
/// away (every request refused, open watches cut) and come back.
#[derive(Default)]
struct Server {
    down: AtomicBool,
    lease: Mutex<Option<Value>>,
    /// Open watches: their answer never comes while the server is up.
    open: Mutex<Vec<Respond>>,
    /// Requests refused while down, and open watches cut.
    refused: AtomicU64,
    /// Lease writes and watches opened since the server last came back.
    lease_writes: AtomicU64,
    watches: Mutex<Vec<String>>,
}

impl Server {
    fn answer(&self, request: &Received, respond: Respond) {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            refuse_connection(respond);
            return;
        }
        let path = request.path();
        if request.is_watch() {
            self.watches.lock().expect("watches").push(path.to_owned());
            self.open.lock().expect("open").push(respond);
            return;
        }
        if let Some(list) = list_at(path, &[node()], "1") {
            reply(respond, StatusCode::OK, &list);
            return;
        }
        let mut lease = self.lease.lock().expect("lease");
        match (
            request.method.as_str(),
            path.contains("/leases/") || path.ends_with("/leases"),
        ) {
            ("GET", true) => match lease.as_ref() {
                Some(lease) => reply(respond, StatusCode::OK, lease),
                None => fail(respond, 404, "NotFound"),
            },
            ("POST" | "PUT", true) => {
                let written = self.lease_writes.fetch_add(1, Ordering::SeqCst);
                let mut body = request.body.clone();
                body["metadata"]["resourceVersion"] = json!(written.to_string());
                *lease = Some(body.clone());
                reply(respond, StatusCode::OK, &body);
            }
            _ => fail(respond, 404, "NotFound"),
        }
    }

    /// Goes away (`true`: the open watches' connections break) or comes back.
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let mut open = self.open.lock().expect("open");
            self.refused.fetch_add(open.len() as u64, Ordering::SeqCst);
            open.clear();
        } else {
            self.lease_writes.store(0, Ordering::SeqCst);
            self.watches.lock().expect("watches").clear();
        }
    }

    /// Whether every kind is watched and the Lease was written twice (created or taken,
    /// then renewed) since the server came back.
    fn serving(&self) -> bool {
        let watches = self.watches.lock().expect("watches");
        let watched = COLLECTIONS
            .iter()
            .all(|(at, ..)| watches.iter().any(|path| path == at));
        watched && self.lease_writes.load(Ordering::SeqCst) >= 2
    }
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "node1" },
        "status": {
            "addresses": [ { "type": "InternalIP", "address": "10.0.0.11" } ],
            "conditions": [ { "type": "Ready", "status": "True" } ],
        },
    })
}

async fn serve(mut api: ApiDouble, server: Arc<Server>) {
    while let Some((request, respond)) = api.next_within(Duration::from_secs(30)).await {
        server.answer(&request, respond);
    }
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let waited = timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the agent never got to {what}");
}

#[tokio::test]
async fn an_api_outage_is_logged_once_when_it_starts_and_once_when_it_ends_and_counted() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter(log_filter(Some("info")))
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let telemetry = Arc::new(Telemetry::new());
    let health = ApiHealth::new(Arc::clone(&telemetry));
    let (builder, api) = kube_api::builder();
    let client = observed(builder, &health);
    let server = Arc::new(Server::default());
    let serving = tokio::spawn(serve(api, Arc::clone(&server)));

    // The watches of the source, the Lease and the IPAM's watches, all on one client.
    let source = kube_api::first_source(client.clone()).await;
    let (stop, stopping) = watch::channel(false);
    let lease = LeaseSettings {
        renew_every: Duration::from_millis(100),
        duration: Duration::from_secs(1),
        ..LeaseSettings::new("xdplb-system", "agent-1")
    };
    let ipam = tokio::spawn(ipam_controller::run(
        client,
        ClassPolicy::default(),
        lease,
        stopping,
        Arc::clone(&telemetry),
    ));
    until("watching everything and leading", || server.serving()).await;
    assert_eq!(telemetry.kubernetes_unreachable(), Some(0));

    // Long enough for many watch retries and Lease rounds, and for the leader to step
    // down (its renew deadline is 2/3 s).
    server.set_down(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // What kube's own request tracing logs for each failed request.
    tracing::error!(target: "kube_client::client::builder", "failed with error client error (Connect)");
    server.set_down(false);
    until("watching and leading again", || server.serving()).await;

    stop.send_replace(true);
    timeout(Duration::from_secs(10), ipam)
        .await
        .expect("the IPAM stops")
        .expect("the IPAM task");
    drop(source);
    serving.abort();

    let lines = log.lines();
    let level = |level: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|line| line.contains(&format!(" {level} ")))
            .collect()
    };
    let warnings = level("WARN");
    assert_eq!(warnings.len(), 1, "one warning: {lines:#?}");
    assert!(
        warnings[0].contains("the Kubernetes API server cannot be reached"),
        "{warnings:?}"
    );
    assert_eq!(level("ERROR"), Vec::<&String>::new(), "{lines:#?}");
    let back: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("the Kubernetes API server answers again"))
        .collect();
    assert!(
        back.len() == 1 && back[0].contains(" INFO "),
        "one info line at the end: {lines:#?}"
    );

    let refused = server.refused.load(Ordering::SeqCst);
    let counted = telemetry.kubernetes_unreachable().expect("counted");
    assert!(refused >= 10, "a real outage: {refused} requests refused");
    assert!(
        (refused / 2..=refused).contains(&counted),
        "{counted} counted of {refused} refused (those of the stopped IPAM are not seen)"
    );
    assert!(
        back[0].contains(&format!("failed_requests={counted}")),
        "{back:?}"
    );
    let metrics = metrics_text(&telemetry);
    assert!(
        metrics.contains(&format!("xdplb_kubernetes_unreachable_total {counted}")),
        "{metrics}"
    );
}
