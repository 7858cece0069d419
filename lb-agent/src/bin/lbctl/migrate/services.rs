//! What a Service needs when xdplb takes over from MetalLB: which of its requests keep
//! working as they are, and what has to change.

use std::collections::BTreeMap;

use lb_agent::ipam::request::{
    LOAD_BALANCER_CLASS, SPEC_LOAD_BALANCER_IP,
    annotations::{ADDRESS_SOURCES, POOL_SOURCES, SHARING_SOURCES},
};

use super::metallb::ServiceSpec;

/// MetalLB's Service annotations the IPAM reads as MetalLB did, each with the xdplb
/// annotation it stands for (the first of its group).
pub fn kept_annotations() -> impl Iterator<Item = (&'static str, &'static str)> {
    [ADDRESS_SOURCES, POOL_SOURCES, SHARING_SOURCES]
        .into_iter()
        .flat_map(|group| (1..group.len()).map(move |index| (group[index], group[0])))
}

/// Annotations MetalLB writes itself; stale once MetalLB is gone, and harmless.
const WRITTEN_BY_METALLB: [&str; 2] = [
    "metallb.io/ip-allocated-from-pool",
    "metallb.universe.tf/ip-allocated-from-pool",
];

/// The verdict on one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceReport {
    /// `namespace/name`.
    pub name: String,
    /// Requests that keep working unchanged.
    pub kept: Vec<String>,
    /// What to change before (or while) switching.
    pub change: Vec<String>,
}

/// The report on a Service; `None` for a Service that is not a LoadBalancer.
pub fn report(
    name: String,
    annotations: &BTreeMap<String, String>,
    spec: &ServiceSpec,
) -> Option<ServiceReport> {
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let mut report = ServiceReport {
        name,
        ..ServiceReport::default()
    };
    for (key, value) in annotations {
        if let Some((_, ours)) = kept_annotations().find(|(theirs, _)| theirs == key) {
            report
                .kept
                .push(format!("{key}: {value} (read like {ours})"));
        } else if WRITTEN_BY_METALLB.contains(&key.as_str()) {
            report.change.push(format!(
                "{key} was written by MetalLB; xdplb ignores it (remove it at leisure)"
            ));
        } else if key.starts_with("metallb.io/") || key.starts_with("metallb.universe.tf/") {
            report
                .change
                .push(format!("{key} has no xdplb equivalent and is ignored"));
        }
    }
    if let Some(address) = &spec.load_balancer_ip {
        report.kept.push(format!(
            "{SPEC_LOAD_BALANCER_IP}: {address} (read like {})",
            ADDRESS_SOURCES[0]
        ));
    }
    match spec.load_balancer_class.as_deref() {
        None | Some(LOAD_BALANCER_CLASS) => {}
        Some(class) => report.change.push(format!(
            "spec.loadBalancerClass is {class}: xdplb serves only {LOAD_BALANCER_CLASS}. The field \
             cannot be changed in place: delete and re-create the Service with \
             loadBalancerClass {LOAD_BALANCER_CLASS} (or without one, if xdplb runs as the \
             default class)"
        )),
    }
    Some(report)
}
