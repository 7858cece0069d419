//! The IPAM Lease against a stateful API double that keeps one Lease and enforces
//! resourceVersion preconditions as the API server does: acquisition, renewal, no
//! takeover before expiry, handover after it, release, write conflicts, and stepping
//! down during an API outage.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, StatusCode};
use lb_agent::{
    ipam_controller::lease::{self, Elector, LEASE_NAME, LeaseSettings},
    telemetry::{Component, Telemetry},
};
use serde_json::{Value, json};
use tokio::{
    sync::watch,
    time::{Instant, sleep, timeout},
};

use crate::support::kube_api::{ApiDouble, client, fail, reply};

const NAMESPACE: &str = "xdplb-system";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/xdplb-system/leases";

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        duration: Duration::from_secs(1),
        renew_every: Duration::from_millis(100),
        ..LeaseSettings::new(NAMESPACE, identity)
    }
}

/// The API server's side: one Lease, its version, and whether the server answers.
#[derive(Default)]
struct Server {
    lease: Option<Value>,
    version: u64,
    down: bool,
    writes: Vec<Value>,
}

type Shared = Arc<Mutex<Server>>;

fn lock(server: &Shared) -> std::sync::MutexGuard<'_, Server> {
    server.lock().expect("server state")
}

/// Serves `api` from `server` until the client goes away.
async fn serve(mut api: ApiDouble, server: Shared) {
    let lease_path = format!("{LEASES}/{LEASE_NAME}");
    while let Some((request, respond)) = api.next_within(Duration::from_secs(30)).await {
        let mut state = lock(&server);
        if state.down {
            fail(respond, 503, "ServiceUnavailable");
            continue;
        }
        match (request.method.clone(), request.path()) {
            (Method::GET, path) if path == lease_path => match &state.lease {
                Some(lease) => reply(respond, StatusCode::OK, lease),
                None => fail(respond, 404, "NotFound"),
            },
            (Method::POST, LEASES) if state.lease.is_some() => fail(respond, 409, "AlreadyExists"),
            (Method::POST, LEASES) => {
                let stored = state.store(request.body);
                reply(respond, StatusCode::CREATED, &stored);
            }
            (Method::PUT, path) if path == lease_path => {
                let current = state
                    .lease
                    .as_ref()
                    .map(|lease| lease["metadata"]["resourceVersion"].clone());
                if current != Some(request.body["metadata"]["resourceVersion"].clone()) {
                    fail(respond, 409, "Conflict");
                    continue;
                }
                let stored = state.store(request.body);
                reply(respond, StatusCode::OK, &stored);
            }
            _ => panic!("unexpected request {request:?}"),
        }
    }
}

impl Server {
    fn store(&mut self, mut lease: Value) -> Value {
        self.version += 1;
        lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.writes.push(lease.clone());
        self.lease = Some(lease.clone());
        lease
    }

    fn holder(&self) -> Value {
        self.lease
            .as_ref()
            .map_or(Value::Null, |lease| lease["spec"]["holderIdentity"].clone())
    }
}

/// An elector for `identity` on its own client, served from `server`.
fn elector(identity: &str, server: &Shared) -> Elector {
    let (client, api) = client();
    tokio::spawn(serve(api, Arc::clone(server)));
    Elector::new(client, settings(identity))
}

async fn attempt(elector: &mut Elector) -> bool {
    timeout(Duration::from_secs(5), elector.try_acquire_or_renew())
        .await
        .expect("bounded")
        .expect("lease round")
}

#[tokio::test]
async fn the_first_agent_creates_the_lease_and_renews_it() {
    let server = Shared::default();
    let mut a = elector("agent-a", &server);
    assert!(attempt(&mut a).await);
    let created = lock(&server).writes[0].clone();
    assert_eq!(created["metadata"]["name"], LEASE_NAME);
    assert_eq!(created["spec"]["holderIdentity"], "agent-a");
    assert_eq!(created["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(created["spec"]["leaseTransitions"], 0);
    sleep(Duration::from_millis(20)).await;
    assert!(attempt(&mut a).await);
    let renewed = lock(&server).writes[1].clone();
    assert_eq!(renewed["spec"]["holderIdentity"], "agent-a");
    assert_eq!(
        renewed["spec"]["acquireTime"],
        created["spec"]["acquireTime"]
    );
    assert_ne!(renewed["spec"]["renewTime"], created["spec"]["renewTime"]);
    assert_eq!(renewed["metadata"]["resourceVersion"], "2");
}

#[tokio::test]
async fn a_held_lease_is_taken_over_only_once_it_has_expired() {
    let server = Shared::default();
    let mut a = elector("agent-a", &server);
    let mut b = elector("agent-b", &server);
    assert!(attempt(&mut a).await);
    // b first sees a's lease now; a renews twice more, then stops (crashed).
    let seen = Instant::now();
    assert!(!attempt(&mut b).await);
    for _ in 0..2 {
        sleep(Duration::from_millis(100)).await;
        assert!(attempt(&mut a).await);
        assert!(!attempt(&mut b).await);
    }
    let last_renewal = Instant::now();
    let writes_by_a = lock(&server).writes.len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !attempt(&mut b).await {
        assert!(Instant::now() < deadline, "never handed over");
        assert_eq!(lock(&server).writes.len(), writes_by_a, "b wrote early");
        sleep(Duration::from_millis(50)).await;
    }
    // One lease duration after b last saw a change, and no sooner.
    assert!(last_renewal.elapsed() >= Duration::from_secs(1));
    assert!(seen.elapsed() >= Duration::from_secs(1));
    assert_eq!(lock(&server).holder(), "agent-b");
    let lease = lock(&server).lease.clone().expect("lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // a comes back: the lease is b's and fresh.
    assert!(!attempt(&mut a).await);
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let server = Shared::default();
    let mut a = elector("agent-a", &server);
    let mut b = elector("agent-b", &server);
    assert!(attempt(&mut a).await);
    assert!(!attempt(&mut b).await);
    timeout(Duration::from_secs(5), a.release())
        .await
        .expect("bounded")
        .expect("released");
    assert_eq!(lock(&server).holder(), Value::Null);
    assert!(attempt(&mut b).await, "no need to wait for expiry");
    assert_eq!(lock(&server).holder(), "agent-b");
    // Releasing a lease held by another changes nothing.
    let writes = lock(&server).writes.len();
    a.release().await.expect("nothing to release");
    assert_eq!(lock(&server).writes.len(), writes);
}

#[tokio::test]
async fn a_lost_write_race_is_not_leadership() {
    let (client, mut api) = client();
    let mut a = Elector::new(client, settings("agent-a"));
    let released = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": LEASE_NAME, "namespace": NAMESPACE, "resourceVersion": "7" },
        "spec": { "leaseDurationSeconds": 1, "leaseTransitions": 4 },
    });
    let (won, ()) = tokio::join!(attempt(&mut a), async {
        let (get, respond) = api.next().await;
        get.expect(Method::GET, &format!("{LEASES}/{LEASE_NAME}"));
        reply(respond, StatusCode::OK, &released);
        let (put, respond) = api.next().await;
        put.expect(Method::PUT, &format!("{LEASES}/{LEASE_NAME}"));
        // Guarded by the version read; another agent got there first.
        assert_eq!(put.body["metadata"]["resourceVersion"], "7");
        assert_eq!(put.body["spec"]["holderIdentity"], "agent-a");
        assert_eq!(
            put.body["spec"]["leaseTransitions"], 4,
            "no holder: no transition"
        );
        fail(respond, 409, "Conflict");
    });
    assert!(!won);
}

#[tokio::test]
async fn the_loop_leads_steps_down_in_an_outage_and_releases_on_stop() {
    let server = Shared::default();
    let a = elector("agent-a", &server);
    let deadline = a.settings().renew_deadline();
    let (leader, mut leading) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let telemetry = Arc::new(Telemetry::new());
    let running = tokio::spawn(lease::run(a, leader, stopped, Arc::clone(&telemetry)));
    timeout(Duration::from_secs(5), leading.wait_for(|leading| *leading))
        .await
        .expect("leads within the time limit")
        .expect("running");

    lock(&server).down = true;
    let outage = Instant::now();
    timeout(
        Duration::from_secs(5),
        leading.wait_for(|leading| !*leading),
    )
    .await
    .expect("steps down within the time limit")
    .expect("running");
    // Not at the first failed renewal, but before the lease can expire for others.
    let stepped_down = outage.elapsed();
    assert!(
        stepped_down >= deadline - Duration::from_millis(150),
        "{stepped_down:?}"
    );
    assert!(stepped_down < Duration::from_secs(1), "{stepped_down:?}");
    // Each failed round was counted: the next one is not the first.
    assert!(telemetry.count_error(Component::IpamLease, "lease_read") > 1);

    lock(&server).down = false;
    timeout(Duration::from_secs(5), leading.wait_for(|leading| *leading))
        .await
        .expect("leads again")
        .expect("running");
    stop.send_replace(true);
    timeout(Duration::from_secs(5), running)
        .await
        .expect("stops within the time limit")
        .expect("no panic");
    assert!(!*leading.borrow());
    assert_eq!(lock(&server).holder(), Value::Null, "released on stop");
}
