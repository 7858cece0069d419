//! The Kubernetes API double: a `kube::Client` over tower-test's mock service, helpers
//! to read requests and answer them, and the homelab cluster to serve. Every wait is
//! bounded: a request that never comes fails the test instead of hanging it.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode, header::USER_AGENT};
use kube::{
    Client,
    client::{Body, ClientBuilder},
};
use lb_agent::{
    sources::Source as _,
    sources::kubernetes::{settings::KubernetesSettings, source::KubeSource},
    telemetry::Telemetry,
};
use serde::{Deserialize as _, de::DeserializeOwned};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// A homelab cluster as the API server returns it: nodes, pools, Services and their
/// EndpointSlices (the file's header says which).
pub const HOMELAB: &str = include_str!("../../fixtures/k8s/homelab.yaml");

/// How long a test waits for the next request.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Respond = SendResponse<Response<Body>>;

/// The client side of the double, before it becomes a `kube::Client`.
pub type MockService = tower_test::mock::Mock<Request<Body>, Response<Body>>;

/// The server side of a mocked client.
pub struct ApiDouble {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A request as the double saw it.
#[derive(Debug)]
pub struct Received {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: Value,
    pub user_agent: Option<String>,
}

impl Received {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    pub fn is_watch(&self) -> bool {
        self.uri.contains("watch=true")
    }

    /// Panics unless the request is `method` on exactly `path`.
    pub fn expect(&self, method: Method, path: &str) {
        assert_eq!(
            (&self.method, self.path()),
            (&method, path),
            "unexpected request {self:?}"
        );
    }
}

/// A client whose every request goes to the returned double.
pub fn client() -> (Client, ApiDouble) {
    let (builder, api) = builder();
    (builder.build(), api)
}

/// [`client`] before it is built, for layers of the agent's own stack on top.
pub fn builder() -> (ClientBuilder<MockService>, ApiDouble) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (ClientBuilder::new(service, "default"), ApiDouble { handle })
}

impl ApiDouble {
    /// The next request, within [`WAIT`].
    pub async fn next(&mut self) -> (Received, Respond) {
        let (request, respond) = tokio::time::timeout(WAIT, self.handle.next_request())
            .await
            .expect("no request within the time limit")
            .expect("the client is gone");
        (read(request).await, respond)
    }

    /// The next request, or `None` when none comes within `quiet`.
    pub async fn next_within(&mut self, quiet: Duration) -> Option<(Received, Respond)> {
        let next = tokio::time::timeout(quiet, self.handle.next_request())
            .await
            .ok()??;
        let (request, respond) = next;
        Some((read(request).await, respond))
    }

    /// Panics if a request arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Some((received, _)) = self.next_within(quiet).await {
            panic!("unexpected request {received:?}");
        }
    }
}

async fn read(request: Request<Body>) -> Received {
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let user_agent = request
        .headers()
        .get(USER_AGENT)
        .map(|value| value.to_str().expect("an ASCII User-Agent").to_owned());
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON request body")
    };
    Received {
        method,
        uri,
        body,
        user_agent,
    }
}

pub fn reply(respond: Respond, status: StatusCode, body: &Value) {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).expect("JSON")));
    *response.status_mut() = status;
    respond.send_response(response);
}

/// Answers with the request's own body, as the API server does for a write (with a
/// new resourceVersion when `version` is given).
pub fn echo(respond: Respond, received: &Received, version: Option<&str>) {
    let mut body = received.body.clone();
    if let Some(version) = version {
        body["metadata"]["resourceVersion"] = json!(version);
    }
    reply(respond, StatusCode::OK, &body);
}

/// Answers a write of part of an object (a status) with `object` carrying it, as the
/// API server answers with the whole object.
pub fn echo_onto(respond: Respond, received: &Received, object: &Value) {
    let mut body = object.clone();
    if let (Some(body), Some(written)) = (body.as_object_mut(), received.body.as_object()) {
        for (key, value) in written {
            if key != "metadata" {
                body.insert(key.clone(), value.clone());
            }
        }
    }
    reply(respond, StatusCode::OK, &body);
}

/// No answer at all: the request fails as when the API server cannot be reached.
pub fn refuse_connection(respond: Respond) {
    respond.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "client error (Connect)",
    ));
}

/// Answers a watch with `events` (`{"type": "ADDED", "object": ...}`), then ends it, as
/// the API server may; the client watches again from the last resourceVersion.
pub fn stream(respond: Respond, events: &[Value]) {
    let lines: String = events
        .iter()
        .map(|event| event.to_string() + "\n")
        .collect();
    respond.send_response(Response::new(Body::from(lines.into_bytes())));
}

/// Answers with a Kubernetes `Status` failure.
pub fn fail(respond: Respond, code: u16, reason: &str) {
    let (status, body) = failure(code, reason);
    reply(respond, status, &body);
}

/// A Kubernetes `Status` failure: the HTTP status and the body.
pub fn failure(code: u16, reason: &str) -> (StatusCode, Value) {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": format!("test double: {reason}"),
        "reason": reason,
        "code": code,
    });
    (StatusCode::from_u16(code).expect("status code"), body)
}

/// The collections the agent lists and watches: path, apiVersion, kind.
pub const COLLECTIONS: [(&str, &str, &str); 5] = [
    ("/api/v1/nodes", "v1", "Node"),
    ("/api/v1/namespaces", "v1", "Namespace"),
    ("/api/v1/services", "v1", "Service"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
    ),
    (
        "/apis/xdplb.io/v1alpha1/addresspools",
        "xdplb.io/v1alpha1",
        "AddressPool",
    ),
];

/// The kind of the collection at `path` (`/api/v1/services`: `Service`).
pub fn kind_at(path: &str) -> Option<&'static str> {
    COLLECTIONS
        .iter()
        .find(|(collection, ..)| *collection == path)
        .map(|(.., kind)| *kind)
}

/// The API server's answer to a list of the collection at `path`: every object of its
/// kind among `objects`, at resourceVersion `version`. `None` for a path that is no
/// collection the doubles know.
pub fn list_at(path: &str, objects: &[Value], version: &str) -> Option<Value> {
    let (_, api_version, kind) = COLLECTIONS
        .iter()
        .find(|(collection, ..)| *collection == path)?;
    let items: Vec<Value> = objects
        .iter()
        .filter(|object| object["kind"] == *kind)
        .cloned()
        .collect();
    Some(list(api_version, &format!("{kind}List"), version, &items))
}

/// The object of `kind` called `name` in `namespace` among `objects`.
pub fn find<'a>(
    objects: &'a [Value],
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<&'a Value> {
    objects.iter().find(|object| {
        object["kind"] == kind
            && object["metadata"]["namespace"] == namespace
            && object["metadata"]["name"] == name
    })
}

/// A list response of `kind` (e.g. `ServiceList`) holding `items`.
pub fn list(api_version: &str, kind: &str, version: &str, items: &[Value]) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "resourceVersion": version },
        "items": items,
    })
}

/// Every document of a multi-document YAML text, as JSON.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("YAML document"))
        .filter(|document| !document.is_null())
        .collect()
}

/// The documents of `kind`, typed.
pub fn of_kind<T: DeserializeOwned>(documents: &[Value], kind: &str) -> Vec<T> {
    documents
        .iter()
        .filter(|document| document["kind"] == kind)
        .map(|document| serde_json::from_value(document.clone()).expect(kind))
        .collect()
}

/// A source on `client` with the default settings, as node1, once it has published its
/// first cluster.
pub async fn first_source(client: Client) -> KubeSource {
    let settings = KubernetesSettings::parse("").expect("defaults");
    let telemetry = Arc::new(Telemetry::new());
    let mut source = KubeSource::start(client, &settings, "node1".into(), telemetry);
    tokio::time::timeout(Duration::from_secs(10), source.first())
        .await
        .expect("the first cluster");
    source
}
