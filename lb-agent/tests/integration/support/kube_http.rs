//! The API server double over real HTTP on loopback, for the lbctl binary (which finds
//! its API server through a kubeconfig): it answers GETs of the collections and the
//! ConfigMaps among its objects as a read-only API server would, and records every
//! request. [`HttpApi::lbctl`] runs lbctl against it.

use std::{
    convert::Infallible,
    path::PathBuf,
    process::Output,
    sync::{Arc, Mutex},
};

use http::{
    HeaderValue, Request, Response, StatusCode,
    header::{CONTENT_TYPE, USER_AGENT},
};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{
    kube_api::{Received, failure, find, list_at},
    lbctl::{kubeconfig, with_kubeconfig},
};

/// What the server holds and saw.
struct State {
    objects: Vec<Value>,
    not_found: Vec<&'static str>,
    seen: Vec<Received>,
}

impl State {
    fn answer(&mut self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        self.seen.push(Received {
            method: request.method().clone(),
            uri: request.uri().to_string(),
            body: Value::Null,
            user_agent: request
                .headers()
                .get(USER_AGENT)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        });
        let (status, body) = self.get(request.uri().path());
        let mut response = Response::new(Full::new(Bytes::from(
            serde_json::to_vec(&body).expect("JSON"),
        )));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
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

/// The running server, and a kubeconfig naming it; it stops with the test's runtime.
pub struct HttpApi {
    state: Arc<Mutex<State>>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpApi {
    /// Serves `objects` on a port of 127.0.0.1; the collections at the paths in
    /// `not_found` answer 404, as when their CRD is not installed.
    pub async fn start(objects: Vec<Value>, not_found: &[&'static str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            objects,
            not_found: not_found.to_vec(),
            seen: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = state.lock().expect("state").answer(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            state,
            kubeconfig: kubeconfig(dir.path(), &format!("http://{address}")),
            _dir: dir,
        }
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
