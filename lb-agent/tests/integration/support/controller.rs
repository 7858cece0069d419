//! The IPAM controller under test: its context, the pools it allocates from, and the
//! Services it reconciles, as JSON, with the status it writes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::{reflector, watcher};
use lb_agent::{
    apis::{address_pool::AddressPool, pool_status},
    ipam::ClassPolicy,
    ipam_controller::{ALLOCATED_CONDITION, Context},
};
use serde_json::{Value, json};

use super::kube_api::{documents, of_kind};

/// The AddressPools among the documents of `yaml`.
pub fn pools(yaml: &str) -> Vec<Arc<AddressPool>> {
    of_kind::<AddressPool>(&documents(yaml), "AddressPool")
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// The controller's context on `client`, as `agent-1` serving the default class: its
/// allocator holds `pools`, its namespace store `namespaces`.
pub fn context(
    client: kube::Client,
    pools: &[Arc<AddressPool>],
    namespaces: &[Namespace],
) -> Context {
    let (store, mut writer) = reflector::store::<Namespace>();
    for namespace in namespaces {
        writer.apply_watcher_event(&watcher::Event::Apply(namespace.clone()));
    }
    let ctx = Context::new(client, ClassPolicy::default(), "agent-1", store);
    ctx.allocator
        .lock()
        .expect("allocator")
        .set_pools(pool_status::compile(pools).0);
    ctx
}

/// A LoadBalancer Service of our class on `ports` (`"80/TCP"`), with `extra` merged
/// into it (annotations, status, ...).
pub fn service(namespace: &str, name: &str, ports: &[&str], extra: Value) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|spec| {
            let (port, protocol) = spec.split_once('/').expect("port/protocol");
            let port: u16 = port.parse().expect("port");
            json!({ "port": port, "protocol": protocol, "targetPort": port })
        })
        .collect();
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace, "generation": 1, "uid": format!("uid-{name}") },
        "spec": { "type": "LoadBalancer", "loadBalancerClass": "xdplb.io/lb", "ports": ports },
    });
    merge(&mut value, extra);
    value
}

/// `patch` merged into `target`, objects key by key (a JSON merge patch).
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// The status the IPAM writes for `ip` from `pool`, as a Service `extra`.
pub fn holding(ip: &str, pool: &str) -> Value {
    json!({ "status": {
        "loadBalancer": { "ingress": [ { "ip": ip, "ipMode": "VIP" } ] },
        "conditions": [ {
            "type": ALLOCATED_CONDITION, "status": "True", "reason": "Allocated",
            "message": format!("{ip} from pool {pool}"), "observedGeneration": 1,
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        } ],
    } })
}
