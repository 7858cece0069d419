//! The API server double over real HTTP on loopback, for clients that find their API
//! server through a kubeconfig (the lbctl binary, `lb-agent kubernetes --check`): it
//! answers `/version`, GETs of the collections and the ConfigMaps among its objects as a
//! read-only API server would, and records every request. With an authorizer (RBAC
//! rules, [`HttpApi::start_authorized`]) it refuses what the rules do not allow with 403
//! and answers `SelfSubjectAccessReview`s by them, as the RBAC authorizer does.
//! [`HttpApi::lbctl`] runs lbctl against it.

use std::{
    convert::Infallible,
    path::PathBuf,
    process::Output,
    sync::{Arc, Mutex},
};

use http::{
    HeaderValue, Method, Request, Response, StatusCode,
    header::{CONTENT_TYPE, USER_AGENT},
};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use serde_json::{Value, json};

use super::{
    kube_api::{Received, failure, find, list_at},
    lbctl::{kubeconfig, with_kubeconfig},
    rbac::{Call, Permissions, call},
};

/// The path of `SelfSubjectAccessReview`s.
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// What the server holds and saw.
struct State {
    objects: Vec<Value>,
    not_found: Vec<&'static str>,
    /// `None`: everything is allowed.
    rbac: Option<Permissions>,
    seen: Vec<Received>,
}

impl State {
    fn answer(&mut self, received: Received) -> Response<Full<Bytes>> {
        let (status, body) = self.respond(&received);
        self.seen.push(received);
        let mut response = Response::new(Full::new(Bytes::from(
            serde_json::to_vec(&body).expect("JSON"),
        )));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    fn respond(&self, received: &Received) -> (StatusCode, Value) {
        let path = received.path();
        match (&received.method, path) {
            (&Method::GET, "/version") => (StatusCode::OK, version()),
            (&Method::POST, ACCESS_REVIEWS) => self.review(&received.body),
            (&Method::GET, _) if !self.allowed(&call(&received.method, &received.uri)) => {
                failure(403, "Forbidden")
            }
            (&Method::GET, _) => self.get(path),
            _ => failure(405, "MethodNotAllowed"),
        }
    }

    fn allowed(&self, call: &Call) -> bool {
        self.rbac.as_ref().is_none_or(|rbac| rbac.allow(call))
    }

    /// A `SelfSubjectAccessReview`, decided by the rules; the review comes back with
    /// its status, as from the API server.
    fn review(&self, body: &Value) -> (StatusCode, Value) {
        let Ok(mut review) = serde_json::from_value::<SelfSubjectAccessReview>(body.clone()) else {
            return failure(400, "BadRequest");
        };
        let Some(asked) = &review.spec.resource_attributes else {
            return failure(422, "Invalid");
        };
        let allowed = self.allowed(&Call::from(asked));
        let reason = if allowed { "allowed by a rule" } else { "" };
        review.status = Some(
            serde_json::from_value(json!({ "allowed": allowed, "reason": reason }))
                .expect("status"),
        );
        (
            StatusCode::CREATED,
            serde_json::to_value(review).expect("JSON"),
        )
    }

    fn get(&self, path: &str) -> (StatusCode, Value) {
        if self.not_found.contains(&path) {
            return failure(404, "NotFound");
        }
        if let Some(list) = list_at(path, &self.objects, "7") {
            return (StatusCode::OK, list);
        }
        let segments: Vec<&str> = path.split('/').collect();
        let found = match segments.as_slice() {
            ["", "api", "v1", "namespaces", namespace, "configmaps", name] => {
                find(&self.objects, "ConfigMap", namespace, name)
            }
            _ => None,
        };
        match found {
            Some(object) => (StatusCode::OK, object.clone()),
            None => failure(404, "NotFound"),
        }
    }
}

/// What `/version` answers.
fn version() -> Value {
    json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.2-double", "gitCommit": "",
        "gitTreeState": "clean", "buildDate": "2026-12-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// A request with its body read (JSON, or `Null`).
async fn received(request: Request<Incoming>) -> Received {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    Received {
        method: parts.method,
        uri: parts.uri.to_string(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        user_agent: parts
            .headers
            .get(USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    }
}

/// The running server, and a kubeconfig naming it; it stops with the test's runtime.
pub struct HttpApi {
    state: Arc<Mutex<State>>,
    url: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpApi {
    /// Serves `objects` on a port of 127.0.0.1; the collections at the paths in
    /// `not_found` answer 404, as when their CRD is not installed.
    pub async fn start(objects: Vec<Value>, not_found: &[&'static str]) -> Self {
        Self::serve(objects, not_found, None).await
    }

    /// [`Self::start`], allowing only what `rbac` grants.
    pub async fn start_authorized(
        objects: Vec<Value>,
        not_found: &[&'static str],
        rbac: Permissions,
    ) -> Self {
        Self::serve(objects, not_found, Some(rbac)).await
    }

    async fn serve(
        objects: Vec<Value>,
        not_found: &[&'static str],
        rbac: Option<Permissions>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            objects,
            not_found: not_found.to_vec(),
            rbac,
            seen: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let received = received(request).await;
                        let response = state.lock().expect("state").answer(received);
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("http://{address}");
        Self {
            state,
            kubeconfig: kubeconfig(dir.path(), &url),
            url,
            _dir: dir,
        }
    }

    /// A client of this server, as a kubeconfig naming it would give.
    pub fn client(&self) -> kube::Client {
        let url = self.url.parse().expect("the server's URL");
        kube::Client::try_from(kube::Config::new(url)).expect("a client")
    }

    /// lbctl with `args`, with this server in its kubeconfig.
    pub async fn lbctl(&self, args: &[&str]) -> Output {
        with_kubeconfig(&self.kubeconfig, args).await
    }

    /// Every request so far, and forgets them.
    pub fn take_requests(&self) -> Vec<Received> {
        std::mem::take(&mut self.state.lock().expect("state").seen)
    }
}
