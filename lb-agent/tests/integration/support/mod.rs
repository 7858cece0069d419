//! What the areas share: the runtime double behind the local API (`agent`, with
//! `openmetrics` to read its metrics), a stand-in host for the configuration's host
//! checks (`host`), the Kubernetes API server double (`kube_api`; over
//! HTTP for the lbctl binary and `kubernetes --check`, `kube_http`; a request's RBAC
//! attributes, `rbac`), the IPAM controller's setup (`controller`),
//! and running the lbctl binary (`lbctl`).

pub mod agent;
pub mod controller;
pub mod host;
pub mod kube_api;
pub mod kube_http;
pub mod lbctl;
pub mod openmetrics;
pub mod rbac;
