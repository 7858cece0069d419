//! The double's RBAC, as deploy/ installs it: the agents' ServiceAccount holds exactly
//! the permissions `sources::kubernetes::access` lists (the deploy tests show the
//! manifests grant exactly those), cluster-wide or in [`AGENT_NAMESPACE`], less those a
//! test withholds. It answers `/version` and `SelfSubjectAccessReview`s, which is what
//! `lb-agent kubernetes --check` asks.

use std::collections::BTreeSet;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SubjectAccessReviewStatus,
};
use lb_agent::sources::kubernetes::access::{self, Permission};
use serde_json::{Value, json};

/// The agents' namespace (their IPAM Lease lives there).
pub const AGENT_NAMESPACE: &str = "xdplb-system";
/// Where `SelfSubjectAccessReview`s are created.
pub(super) const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// What `/version` answers.
pub(super) fn version() -> Value {
    json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.2-lab", "gitCommit": "",
        "gitTreeState": "clean", "buildDate": "2026-12-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `review` with its status: allowed when a granted permission covers what it asks.
pub(super) fn decide(
    mut review: SelfSubjectAccessReview,
    withheld: &BTreeSet<Permission>,
) -> SelfSubjectAccessReview {
    let allowed = review
        .spec
        .resource_attributes
        .as_ref()
        .is_some_and(|asked| {
            access::needed()
                .iter()
                .filter(|permission| !withheld.contains(permission))
                .any(|permission| covers(permission, asked))
        });
    review.status = Some(SubjectAccessReviewStatus {
        allowed,
        reason: allowed.then(|| "allowed by the xdplb-agent roles".to_owned()),
        ..SubjectAccessReviewStatus::default()
    });
    review
}

fn covers(permission: &Permission, asked: &ResourceAttributes) -> bool {
    let text = |field: &Option<String>| field.clone().unwrap_or_default();
    let (resource, subresource) = permission.resource_parts();
    text(&asked.group) == permission.group
        && text(&asked.resource) == resource
        && text(&asked.subresource) == subresource.unwrap_or_default()
        && text(&asked.verb) == permission.verb
        && permission
            .name
            .is_none_or(|name| asked.name.as_deref() == Some(name))
        && (!permission.namespaced || asked.namespace.as_deref() == Some(AGENT_NAMESPACE))
}
