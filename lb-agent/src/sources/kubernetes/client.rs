//! How the agent and lbctl talk to the Kubernetes API: every request names the program
//! and its version in `User-Agent`, so the API server's audit log and its per-client
//! metrics tell xdplb's requests apart (kube sends none of its own); the agent's
//! requests also report to its [`ApiHealth`].

use std::{fmt::Display, sync::Arc};

use hyper::{
    Request, Response,
    body::{Body as HttpBody, Bytes},
    header::{HeaderValue, USER_AGENT},
};
use kube::{
    Client, Config,
    client::{Body, ClientBuilder},
};
use tower::{BoxError, Service};

use super::outage::ApiHealth;

/// The agent's `User-Agent`.
pub const AGENT_USER_AGENT: &str = concat!("xdplb-agent/", env!("CARGO_PKG_VERSION"));
/// lbctl's `User-Agent`.
pub const LBCTL_USER_AGENT: &str = concat!("lbctl/", env!("CARGO_PKG_VERSION"));

/// `config` with every request carrying `user_agent` (one of the constants above).
pub fn identified(mut config: Config, user_agent: &'static str) -> Config {
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(user_agent)));
    config
}

/// The agent's client for `config`: identified as the agent, reporting to `health`.
pub fn agent_client(config: Config, health: &Arc<ApiHealth>) -> Result<Client, kube::Error> {
    let builder = ClientBuilder::try_from(identified(config, AGENT_USER_AGENT))?;
    Ok(observed(builder, health))
}

/// `builder`'s client with every request's outcome reported to `health` (the agent's
/// stack; tests build it over an API double).
pub fn observed<S, B>(builder: ClientBuilder<S>, health: &Arc<ApiHealth>) -> Client
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Display,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    builder.with_layer(&health.layer()).build()
}
