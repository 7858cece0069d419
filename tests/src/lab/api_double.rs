//! A Kubernetes API server double for agents in Kubernetes mode: plain HTTP/1.1 inside
//! a lab namespace, one in-memory store of JSON objects with resource versions, and the
//! verbs the agent uses on any resource path — list, watch (a stream of JSON lines
//! from a resource version on), get, create, replace and patch (merge semantics; a
//! server-side apply body is merged the same way, which is what an apply by the only
//! field manager amounts to), with the `status` subresource patched on its own.
//!
//! [`ApiDouble::stop`] closes the listener and every connection (clients then get
//! refused, as from a stopped API server) and keeps the store; [`ApiDouble::resume`]
//! serves it again, so watches resume from the versions the agents already have.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::SocketAddrV4,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use lb_agent::sources::kubernetes::access::Permission;
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{broadcast, mpsc, watch},
    task::JoinSet,
};

use crate::netns::Netns;

mod access;

pub use access::AGENT_NAMESPACE;

/// The longest a watch stays open when the client names no timeout.
const WATCH_DEFAULT: Duration = Duration::from_secs(290);
const BODY_LIMIT: usize = 1 << 20;

/// A resource collection: `v1` or `group/version`, and the plural.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Collection {
    group_version: String,
    resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    collection: Collection,
    /// Empty for cluster-scoped objects.
    namespace: String,
    name: String,
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    kind: &'static str,
    key: ObjectKey,
    object: Value,
}

#[derive(Debug)]
struct Store {
    version: u64,
    objects: BTreeMap<ObjectKey, Value>,
    /// Every change so far (a test's worth): any resource version can be watched from.
    log: Vec<Change>,
    changes: broadcast::Sender<Change>,
    /// Permissions of the agents' roles that a test took away.
    withheld: BTreeSet<Permission>,
}

type Shared = Arc<Mutex<Store>>;

fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running double; the server thread ends when it drops.
#[derive(Debug)]
pub struct ApiDouble {
    store: Shared,
    serving: watch::Sender<Serving>,
    thread: Option<thread::JoinHandle<anyhow::Result<()>>>,
    address: SocketAddrV4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    Yes,
    Stopped,
    Shutdown,
}

impl ApiDouble {
    /// Serves on `address` inside `netns` (which must own the address).
    pub fn start(netns: &Netns, address: SocketAddrV4) -> anyhow::Result<Self> {
        let (changes, _) = broadcast::channel(4096);
        let store = Arc::new(Mutex::new(Store {
            version: 1,
            objects: BTreeMap::new(),
            log: Vec::new(),
            changes,
            withheld: BTreeSet::new(),
        }));
        let (serving, serving_rx) = watch::channel(Serving::Yes);
        let (bound, bound_rx) = std::sync::mpsc::channel();
        let thread_store = Arc::clone(&store);
        let netns_file = format!("/run/netns/{}", netns.name());
        let thread = thread::Builder::new()
            .name("api-double".to_owned())
            .spawn(move || {
                // The thread serves until the double drops and ends there: it never
                // needs its original namespace back.
                let target = std::fs::File::open(&netns_file)
                    .with_context(|| format!("opening {netns_file}"))?;
                setns(&target, CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(serve(address, thread_store, serving_rx, bound))
            })?;
        bound_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the API double did not start")??;
        Ok(Self {
            store,
            serving,
            thread: Some(thread),
            address,
        })
    }

    pub fn address(&self) -> SocketAddrV4 {
        self.address
    }

    /// Closes the listener and every connection; the store stays.
    pub fn stop(&self) {
        self.serving.send_replace(Serving::Stopped);
    }

    /// Listens again after [`Self::stop`].
    pub fn resume(&self) {
        self.serving.send_replace(Serving::Yes);
    }

    /// Creates or replaces `object` (with `apiVersion`, `kind` and `metadata.name`) in
    /// `resource` (the plural), as an administrator's `kubectl apply` would.
    pub fn put(&self, resource: &str, object: Value) -> anyhow::Result<()> {
        let group_version = object["apiVersion"]
            .as_str()
            .context("object without apiVersion")?
            .to_owned();
        let key = ObjectKey {
            collection: Collection {
                group_version,
                resource: resource.to_owned(),
            },
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            name: object["metadata"]["name"]
                .as_str()
                .context("object without metadata.name")?
                .to_owned(),
        };
        lock(&self.store).write(key, object);
        Ok(())
    }

    /// Takes `permission` away from the agents' roles (`SelfSubjectAccessReview`s
    /// answer so), as an edited ClusterRole or Role would.
    pub fn withhold(&self, permission: Permission) {
        lock(&self.store).withheld.insert(permission);
    }

    /// Changes the stored object `name` of `resource` (the plural) with `change`, as
    /// `kubectl edit` would: the rest of it, its status and other writers' annotations
    /// included, stays as last written.
    pub fn edit(
        &self,
        resource: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> anyhow::Result<()> {
        let mut store = lock(&self.store);
        let (key, mut object) = store
            .objects
            .iter()
            .find(|(key, _)| key.collection.resource == resource && key.name == name)
            .map(|(key, object)| (key.clone(), object.clone()))
            .with_context(|| format!("no {resource} named {name} to edit"))?;
        change(&mut object);
        store.write(key, object);
        Ok(())
    }

    /// The stored objects of `resource` (the plural), in every namespace, as the agents
    /// last could read them.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        lock(&self.store)
            .objects
            .iter()
            .filter(|(key, _)| key.collection.resource == resource)
            .map(|(_, object)| object.clone())
            .collect()
    }
}

impl Drop for ApiDouble {
    fn drop(&mut self) {
        self.serving.send_replace(Serving::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Stores `object` under `key` with the next resource version and logs the change.
    fn write(&mut self, key: ObjectKey, mut object: Value) -> Value {
        self.version += 1;
        let version = self.version;
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            let metadata = &mut object["metadata"];
            metadata["uid"] = json!(format!("uid-{version}"));
            metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            "ADDED"
        };
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if !key.namespace.is_empty() {
            object["metadata"]["namespace"] = json!(key.namespace);
        }
        self.objects.insert(key.clone(), object.clone());
        let change = Change {
            version,
            kind,
            key,
            object: object.clone(),
        };
        self.log.push(change.clone());
        let _ = self.changes.send(change);
        object
    }
}

async fn serve(
    address: SocketAddrV4,
    store: Shared,
    mut serving: watch::Receiver<Serving>,
    bound: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut first = Some(bound);
    loop {
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(error) => {
                let error = anyhow!(error).context(format!("binding {address}"));
                if let Some(bound) = first.take() {
                    let _ = bound.send(Err(anyhow!("{error:#}")));
                }
                return Err(error);
            }
        };
        if let Some(bound) = first.take() {
            let _ = bound.send(Ok(()));
        }
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    let store = Arc::clone(&store);
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            handle(Arc::clone(&store), request)
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                changed = serving.changed() => {
                    if changed.is_err() || *serving.borrow() != Serving::Yes {
                        break;
                    }
                }
            }
        }
        // Dropping the tasks closes every connection, watches included.
        connections.abort_all();
        drop(listener);
        let state = serving
            .wait_for(|state| *state != Serving::Stopped)
            .await
            .map(|state| *state)
            .unwrap_or(Serving::Shutdown);
        if state == Serving::Shutdown {
            return Ok(());
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// Where a request points.
#[derive(Debug)]
struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        _ => (None, rest),
    };
    let (resource, rest) = rest.split_first()?;
    Some(Target {
        collection: Collection {
            group_version,
            resource: (*resource).to_owned(),
        },
        namespace,
        name: rest.first().map(|name| (*name).to_owned()),
        status: rest.get(1) == Some(&"status"),
    })
}

fn query(request: &Request<Incoming>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

async fn handle(store: Shared, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == "/version" {
        return Ok(json_response(StatusCode::OK, &access::version()));
    }
    let reviewing = request.uri().path() == access::ACCESS_REVIEWS;
    let Some(target) = parse_target(request.uri().path()) else {
        return Ok(status(StatusCode::NOT_FOUND, "NotFound", "no such path"));
    };
    let params = query(&request);
    let method = request.method().clone();
    let body = match Limited::new(request.into_body(), BODY_LIMIT)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Ok(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &error.to_string(),
            ));
        }
    };
    let parsed = || serde_json::from_slice::<Value>(&body);
    Ok(match (method, &target.name) {
        (Method::GET, None)
            if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            watch_response(&store, &target, &params)
        }
        (Method::GET, None) => list(&store, &target),
        (Method::GET, Some(name)) => match lock(&store).objects.get(&key(&target, name)) {
            Some(object) => json_response(StatusCode::OK, object),
            None => not_found(name),
        },
        (Method::POST, None) if reviewing => match serde_json::from_slice(&body) {
            Ok(review) => {
                let decided = access::decide(review, &lock(&store).withheld);
                json_response(StatusCode::CREATED, &json!(decided))
            }
            Err(error) => bad_request(&error),
        },
        (Method::POST, None) => match parsed() {
            Ok(object) => create(&store, &target, object),
            Err(error) => bad_request(&error),
        },
        (Method::PUT, Some(name)) => match parsed() {
            Ok(object) => replace(&store, &target, name, object),
            Err(error) => bad_request(&error),
        },
        (Method::PATCH, Some(name)) => match parsed() {
            Ok(patch) => patch_object(&store, &target, name, &patch),
            Err(error) => bad_request(&error),
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not served",
        ),
    })
}

fn key(target: &Target, name: &str) -> ObjectKey {
    ObjectKey {
        collection: target.collection.clone(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_owned(),
    }
}

fn matches(target: &Target, key: &ObjectKey) -> bool {
    key.collection == target.collection
        && target
            .namespace
            .as_ref()
            .is_none_or(|namespace| *namespace == key.namespace)
}

fn list(store: &Shared, target: &Target) -> Response<Body> {
    let store = lock(store);
    let items: Vec<&Value> = store
        .objects
        .iter()
        .filter(|(key, _)| matches(target, key))
        .map(|(_, object)| object)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": target.collection.group_version,
            "kind": "List",
            "metadata": { "resourceVersion": store.version.to_string() },
            "items": items,
        }),
    )
}

fn create(store: &Shared, target: &Target, mut object: Value) -> Response<Body> {
    let mut store = lock(store);
    let name = match object["metadata"]["name"].as_str() {
        Some(name) => name.to_owned(),
        None => {
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = format!("{prefix}{}", store.version + 1);
            object["metadata"]["name"] = json!(name);
            name
        }
    };
    let key = key(target, &name);
    if store.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{name} already exists"),
        );
    }
    let stored = store.write(key, object);
    json_response(StatusCode::CREATED, &stored)
}

fn replace(store: &Shared, target: &Target, name: &str, object: Value) -> Response<Body> {
    let mut store = lock(store);
    let key = key(target, name);
    let Some(current) = store.objects.get(&key) else {
        return not_found(name);
    };
    let expected = object["metadata"]["resourceVersion"].as_str();
    if expected
        .is_some_and(|version| Some(version) != current["metadata"]["resourceVersion"].as_str())
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("{name} was modified"),
        );
    }
    let stored = store.write(key, object);
    json_response(StatusCode::OK, &stored)
}

fn patch_object(store: &Shared, target: &Target, name: &str, patch: &Value) -> Response<Body> {
    let mut store = lock(store);
    let key = key(target, name);
    let Some(mut object) = store.objects.get(&key).cloned() else {
        return not_found(name);
    };
    if target.status {
        merge(&mut object["status"], &patch["status"]);
    } else {
        let mut patch = patch.clone();
        if let Some(fields) = patch.as_object_mut() {
            fields.remove("status");
        }
        merge(&mut object, &patch);
    }
    let stored = store.write(key, object);
    json_response(StatusCode::OK, &stored)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(existing) = target {
        for (name, value) in fields {
            if value.is_null() {
                existing.remove(name);
            } else {
                merge(existing.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A watch: the changes after the requested version, then live ones, one JSON line
/// each, until the timeout or the server stops.
fn watch_response(
    store: &Shared,
    target: &Target,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    let since: u64 = params
        .get("resourceVersion")
        .and_then(|version| version.parse().ok())
        .unwrap_or(0);
    let lasting = params
        .get("timeoutSeconds")
        .and_then(|seconds| seconds.parse().ok())
        .map_or(WATCH_DEFAULT, Duration::from_secs);
    let (backlog, mut live) = {
        let store = lock(store);
        let backlog: Vec<Change> = store
            .log
            .iter()
            .filter(|change| change.version > since && matches(target, &change.key))
            .cloned()
            .collect();
        (backlog, store.changes.subscribe())
    };
    let (lines, body) = mpsc::channel(64);
    let collection = target.collection.clone();
    let namespace = target.namespace.clone();
    tokio::spawn(async move {
        let filter = Target {
            collection,
            namespace,
            name: None,
            status: false,
        };
        let deadline = tokio::time::sleep(lasting);
        tokio::pin!(deadline);
        let mut sent = since;
        for change in backlog {
            sent = change.version;
            if lines.send(event_line(&change)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = lines.closed() => return,
                received = live.recv() => match received {
                    Ok(change) if change.version > sent && matches(&filter, &change.key) => {
                        sent = change.version;
                        if lines.send(event_line(&change)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind or shut down: end the watch; the client re-watches.
                    Err(_) => return,
                },
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(WatchBody(body).boxed())
        .expect("static response parts")
}

fn event_line(change: &Change) -> Bytes {
    let mut line = json!({ "type": change.kind, "object": change.object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A streamed body fed line by line.
struct WatchBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("static response parts")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn not_found(name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{name} not found"),
    )
}

fn bad_request(error: &serde_json::Error) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", &error.to_string())
}
