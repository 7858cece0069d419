//! The Kubernetes API as the running agent's [`Source`]: reflectors keep local copies
//! of the Nodes, Services, EndpointSlices and AddressPools, and every change is
//! translated ([`super::translate`]) into the [`Cluster`] the control loop runs.
//!
//! An API-server outage changes nothing: a failing watch is retried with backoff
//! ([`WatchBackoff`]: within a few seconds of the API server's return) while its store
//! keeps the last content it had, no new cluster is published, and the loop keeps
//! running (and announcing) the last one. A relist after the outage replaces each store
//! at once, so a half-listed store is never translated.
//!
//! The owner of a VIP reports `Announced` events ("announced from node X") on the
//! Services of that VIP when it takes it over, and on a Service that shows an owned VIP
//! later (see [`report_announcements`]). Every agent counts the status addresses the
//! translation ignores and reports each once with a Warning event `AddressIgnored`
//! ([`report_ignored`]).
//!
//! At start the agent writes its announce interface on its own Node (annotation
//! [`ANNOUNCE_INTERFACE_ANNOTATION`]), so every agent can tell which nodes may own the
//! VIPs of pools that list `announcement.interfaces` (see [`crate::election`]). The
//! write is retried until it succeeds; it is no part of failover.

use std::{collections::BTreeSet, fmt::Debug, net::Ipv4Addr, sync::Arc, time::Duration};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt as _,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        utils::Backoff,
        watcher,
    },
};
use rand::{RngExt as _, rngs::StdRng};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::sleep,
};

use super::{
    outage::{unreachable, watch_unreachable},
    settings::KubernetesSettings,
    settle::{BASE_WINDOW, Changes, next_window},
    slice::Slice,
    translate::{IgnoredAddress, Snapshot, TranslateError, Translation, Translator},
};
use crate::{
    apis::address_pool::AddressPool,
    election::ANNOUNCE_INTERFACE_ANNOTATION,
    sources::{Cluster, Settings, Source},
    telemetry::{Component, Telemetry},
};

/// The events' reporting controller for announcements.
pub const REPORTER: &str = "xdplb.io/agent";
/// The field manager of the agent's writes to its Node.
pub const FIELD_MANAGER: &str = "xdplb.io/agent";
/// How long a failed write of the Node annotation waits before the next try.
const PUBLISH_RETRY: Duration = Duration::from_secs(5);
/// The first wait of a failing watch, and the longest: see [`WatchBackoff`].
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(200);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(3);

/// When a failing watch tries again: waits doubling from [`WATCH_RETRY_FIRST`] up to
/// [`WATCH_RETRY_MAX`], each cut by a random part of up to half, so the agents of a
/// cluster spread their relists. kube's default (800 ms doubling to 30 s, jittered up to
/// twice that) spares a struggling cloud control plane but, after a 20 s outage of a
/// LAN API server, left watches idle for ~15 s more; this one watches again within
/// three seconds of its return. Reset by the first event after the errors.
pub struct WatchBackoff {
    next: Duration,
    rng: StdRng,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_RETRY_FIRST,
            rng: rand::make_rng(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (wait * 2).min(WATCH_RETRY_MAX);
        Some(wait.mul_f64(self.rng.random_range(0.5..=1.0)))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_FIRST;
    }
}

/// The reflectors' stores.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub services: Store<Service>,
    pub slices: Store<Slice>,
    pub pools: Store<AddressPool>,
}

impl Stores {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            pools: self.pools.state(),
        }
    }

    async fn ready(&self) {
        // A store's writer lives as long as its task; a dropped one never gets ready.
        let _ = tokio::join!(
            self.nodes.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.pools.wait_until_ready(),
        );
    }
}

/// The watch of `api` the agent's reflectors follow: retried with [`WatchBackoff`], and
/// without `metadata.managedFields`, which the agent never reads and which is often
/// larger than the rest of the object.
pub fn watch<K>(api: Api<K>) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .modify(|object| object.meta_mut().managed_fields = None)
}

/// Keeps `writer`'s store in step with `api`, recording every event in `changed`.
/// Errors are logged once per outage; the store keeps its content meanwhile.
fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Changes>,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(reflector::reflector(writer, watch(api)));
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                // A (re)list in progress: the store changes at its InitDone.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    if failing {
                        tracing::info!(%kind, "watch restored");
                        failing = false;
                    }
                    changed.record();
                }
                // The outage is the API health's to report, once for every caller.
                Err(error) if watch_unreachable(&error) => {}
                Err(error) => {
                    if !failing {
                        tracing::warn!(%kind, %error, "watch failed; keeping the last known state and retrying");
                        failing = true;
                    }
                }
            }
        }
    })
}

/// Starts a reflector per kind; returns their stores and tasks.
pub fn reflect_all(client: &Client, changed: &Arc<Changes>) -> (Stores, Vec<JoinHandle<()>>) {
    let (nodes, node_writer) = reflector::store();
    let (services, service_writer) = reflector::store();
    let (slices, slice_writer) = reflector::store();
    let (pools, pool_writer) = reflector::store();
    let tasks = vec![
        reflect(
            Api::<Node>::all(client.clone()),
            node_writer,
            Arc::clone(changed),
        ),
        reflect(
            Api::<Service>::all(client.clone()),
            service_writer,
            Arc::clone(changed),
        ),
        reflect(
            Api::<Slice>::all(client.clone()),
            slice_writer,
            Arc::clone(changed),
        ),
        reflect(
            Api::<AddressPool>::all(client.clone()),
            pool_writer,
            Arc::clone(changed),
        ),
    ];
    let stores = Stores {
        nodes,
        services,
        slices,
        pools,
    };
    (stores, tasks)
}

/// Translates the stores whenever they change and publishes each new cluster, and the
/// status addresses it ignores: the first change at once, the changes arriving within
/// the settle window after a translation (see [`super::settle`]) together at its end.
/// Notes and errors are logged when they change, not on every pass; so are the errors
/// counted into `telemetry`.
/// Logs a translation's notes, or logs and counts why there is none.
fn log_translation(report: &Result<Vec<String>, TranslateError>, telemetry: &Telemetry) {
    match report {
        Ok(notes) => {
            for note in notes {
                tracing::warn!("{note}");
            }
        }
        Err(error) => {
            telemetry.count_error(Component::KubernetesSource, error.metric_label());
            tracing::error!(%error, "cannot run on the cluster's state; keeping the last one")
        }
    }
}

pub async fn translate_changes(
    stores: Stores,
    translator: Translator,
    changed: Arc<Changes>,
    cluster: watch::Sender<Option<Arc<Cluster>>>,
    ignored: watch::Sender<Vec<IgnoredAddress>>,
    telemetry: Arc<Telemetry>,
) {
    stores.ready().await;
    tracing::info!("Kubernetes state listed");
    let mut last: Option<Result<Vec<String>, TranslateError>> = None;
    let mut window = BASE_WINDOW;
    loop {
        let outcome = translator.translate(&stores.snapshot());
        let report = match &outcome {
            Ok(Translation { notes, .. }) => Ok(notes.clone()),
            Err(error) => Err(error.clone()),
        };
        if last.as_ref() != Some(&report) {
            log_translation(&report, &telemetry);
            last = Some(report);
        }
        if let Ok(translation) = outcome {
            ignored.send_if_modified(|current| {
                let modified = *current != translation.ignored;
                if modified {
                    current.clone_from(&translation.ignored);
                }
                modified
            });
            cluster.send_if_modified(|current| {
                if current.as_deref() == Some(&translation.cluster) {
                    return false;
                }
                *current = Some(Arc::new(translation.cluster));
                true
            });
        }
        sleep(window).await;
        window = next_window(window, changed.take());
        // A change during the translation or the window left a permit: no wait then.
        changed.recorded().await;
    }
}

/// The running agent's Kubernetes source.
pub struct KubeSource {
    client: Client,
    node: String,
    settings: Settings,
    cluster: watch::Receiver<Option<Arc<Cluster>>>,
    announced: mpsc::UnboundedSender<BTreeSet<Ipv4Addr>>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts watching the API for node `node`, counting into `telemetry` (the agent's,
    /// for `/metrics`).
    pub fn start(
        client: Client,
        settings: &KubernetesSettings,
        node: String,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let translator = Translator {
            node: node.clone(),
            class: settings.class_policy(),
            mtu: settings.node_settings.mtu,
            icmp_rate_per_sec: settings.node_settings.icmp_rate_per_second,
        };
        let changed = Arc::new(Changes::default());
        let (stores, mut tasks) = reflect_all(&client, &changed);
        let (cluster_tx, cluster) = watch::channel(None);
        let (ignored_tx, ignored) = watch::channel(Vec::new());
        tasks.push(tokio::spawn(translate_changes(
            stores.clone(),
            translator,
            changed,
            cluster_tx,
            ignored_tx,
            Arc::clone(&telemetry),
        )));
        let (announced, owned) = mpsc::unbounded_channel();
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance: Some(node.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        tasks.push(tokio::spawn(report_ignored(
            ignored,
            stores.services.clone(),
            recorder.clone(),
            telemetry,
        )));
        tasks.push(tokio::spawn(report_announcements(
            owned,
            cluster.clone(),
            stores.services,
            recorder,
            node.clone(),
        )));
        Self {
            client,
            node,
            settings: Settings::from(&settings.node_settings),
            cluster,
            announced,
            tasks,
        }
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Source for KubeSource {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn first(&mut self) -> Arc<Cluster> {
        tracing::info!("waiting for the Kubernetes state");
        let first = match self.cluster.wait_for(Option::is_some).await {
            Ok(cluster) => cluster.clone(),
            Err(_) => None,
        };
        match first {
            Some(cluster) => cluster,
            // The translating task is gone: nothing will ever come.
            None => std::future::pending().await,
        }
    }

    async fn next(&mut self) -> Arc<Cluster> {
        loop {
            if self.cluster.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(cluster) = self.cluster.borrow_and_update().clone() {
                return cluster;
            }
        }
    }

    fn reload(&mut self) -> Option<Arc<Cluster>> {
        tracing::info!(
            "SIGHUP: the settings are read at start only, and the cluster is watched; nothing to reload"
        );
        None
    }

    fn live_peers(&self) -> bool {
        true
    }

    fn announced(&mut self, owned: &BTreeSet<Ipv4Addr>) {
        let _ = self.announced.send(owned.clone());
    }

    fn publish_interface(&mut self, interface: &str) {
        let api = Api::<Node>::all(self.client.clone());
        self.tasks.push(tokio::spawn(publish_interface(
            api,
            self.node.clone(),
            interface.to_owned(),
        )));
    }
}

/// Writes `interface` as `node`'s announce interface (a merge patch of the one
/// annotation), trying again every [`PUBLISH_RETRY`] until the API server takes it.
pub async fn publish_interface(api: Api<Node>, node: String, interface: String) {
    let patch = serde_json::json!({
        "metadata": { "annotations": { ANNOUNCE_INTERFACE_ANNOTATION: interface } }
    });
    let params = PatchParams::apply(FIELD_MANAGER);
    let mut failing = false;
    loop {
        match api.patch(&node, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(%node, %interface, annotation = ANNOUNCE_INTERFACE_ANNOTATION, "published the announce interface on the Node");
                return;
            }
            Err(error) => {
                if !failing && !unreachable(&error) {
                    tracing::warn!(%node, %error, "publishing the announce interface on the Node failed; pools that list interfaces skip this node until it succeeds; retrying");
                }
                failing = true;
                sleep(PUBLISH_RETRY).await;
            }
        }
    }
}

/// Reports `Announced` once on every Service this node announces: on all the Services
/// of a VIP when it takes the VIP over, and on a Service that shows an owned VIP later
/// (CoreDNS's TCP Service given the address its UDP Service already has). The runtime
/// reports its VIPs only when they change, so new clusters are followed too. A Service
/// whose VIP this node gives up gets the event again at the next takeover.
pub async fn report_announcements(
    mut owned: mpsc::UnboundedReceiver<BTreeSet<Ipv4Addr>>,
    mut cluster: watch::Receiver<Option<Arc<Cluster>>>,
    services: Store<Service>,
    recorder: Recorder,
    node: String,
) {
    let mut vips = BTreeSet::new();
    let mut announced = BTreeSet::new();
    loop {
        tokio::select! {
            now = owned.recv() => match now {
                Some(now) => vips = now,
                None => return,
            },
            changed = cluster.changed() => if changed.is_err() {
                return;
            },
        }
        let current = announcing(cluster.borrow_and_update().as_deref(), &vips);
        for (name, vip) in current.difference(&announced) {
            announce(&services, &recorder, name, *vip, &node).await;
        }
        announced = current;
    }
}

/// The served Services (`ns/name`) of `cluster` whose VIP is one of `vips`.
fn announcing(
    cluster: Option<&Cluster>,
    vips: &BTreeSet<Ipv4Addr>,
) -> BTreeSet<(String, Ipv4Addr)> {
    cluster
        .into_iter()
        .flat_map(|cluster| &cluster.inputs.services)
        .filter(|service| vips.contains(&service.vip))
        .map(|service| (service.name.clone(), service.vip))
        .collect()
}

/// Publishes `Announced` on the Service `name` (`ns/name`).
async fn announce(
    services: &Store<Service>,
    recorder: &Recorder,
    name: &str,
    vip: Ipv4Addr,
    node: &str,
) {
    let Some((namespace, name)) = name.split_once('/') else {
        return;
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Announced".to_owned(),
        note: Some(format!("{vip} announced from node {node}")),
        action: "Announce".to_owned(),
        secondary: None,
    };
    publish_event(services, recorder, namespace, name, &event).await;
}

/// Counts every status address newly in `ignored` and reports it on its Service with a
/// Warning event `AddressIgnored`, once while it stays ignored (again if it comes back
/// after a fix).
pub async fn report_ignored(
    mut ignored: watch::Receiver<Vec<IgnoredAddress>>,
    services: Store<Service>,
    recorder: Recorder,
    telemetry: Arc<Telemetry>,
) {
    let mut reported = BTreeSet::new();
    while ignored.changed().await.is_ok() {
        let now: BTreeSet<IgnoredAddress> = ignored.borrow_and_update().iter().cloned().collect();
        for address in now.difference(&reported) {
            telemetry.status_address_ignored();
            let event = Event {
                type_: EventType::Warning,
                reason: "AddressIgnored".to_owned(),
                note: Some(address.to_string()),
                action: "Ignore".to_owned(),
                secondary: None,
            };
            publish_event(
                &services,
                &recorder,
                &address.namespace,
                &address.name,
                &event,
            )
            .await;
        }
        reported = now;
    }
}

/// Publishes `event` on the Service `namespace/name`, as the store has it.
async fn publish_event(
    services: &Store<Service>,
    recorder: &Recorder,
    namespace: &str,
    name: &str,
    event: &Event,
) {
    let Some(service) = services.get(&ObjectRef::new(name).within(namespace)) else {
        return;
    };
    if let Err(error) = recorder.publish(event, &service.object_ref(&())).await {
        tracing::warn!(%error, service = %format!("{namespace}/{name}"), reason = event.reason, "publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_double_up_to_a_few_seconds_jittered_and_start_over_on_reset() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<Duration> = backoff.by_ref().take(12).collect();
        let bases = [
            200, 400, 800, 1600, 3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000,
        ];
        for (wait, base) in waits.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *wait <= base && *wait >= base / 2,
                "{wait:?} outside [{:?}, {base:?}] in {waits:?}",
                base / 2
            );
        }
        assert!(
            waits[4..].windows(2).any(|pair| pair[0] != pair[1]),
            "no jitter: {waits:?}"
        );
        backoff.reset();
        let first = backoff.next().expect("the backoff never gives up");
        assert!(first <= WATCH_RETRY_FIRST && first >= WATCH_RETRY_FIRST / 2);
    }

    #[test]
    fn a_translation_error_is_counted() {
        let telemetry = Telemetry::new();
        log_translation(&Ok(vec!["a note".to_owned()]), &telemetry);
        let unknown = TranslateError::UnknownNode("node9".to_owned());
        log_translation(&Err(unknown), &telemetry);
        // The next of that kind would be the second.
        assert_eq!(
            telemetry.count_error(Component::KubernetesSource, "unknown_node"),
            2
        );
    }
}
