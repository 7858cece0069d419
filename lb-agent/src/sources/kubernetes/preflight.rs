//! `lb-agent kubernetes --check`'s questions to the API server, asked as the agent
//! would ask them (its ServiceAccount, or the kubeconfig's user): does the server
//! answer, is this node a Node with an address, is the AddressPool CRD installed, and is
//! each single permission of [`access::needed`] granted (a `SelfSubjectAccessReview`
//! each, so the answer is the server's own RBAC decision, not a reading of the
//! manifests).

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::Node,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, PostParams},
};

use super::{
    access::{self, Permission},
    translate::internal_ip,
};
use crate::apis::address_pool::AddressPool;

/// One answer: what holds, or what is missing and why the agent needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub line: String,
}

impl Finding {
    fn ok(line: String) -> Self {
        Self { ok: true, line }
    }

    fn missing(line: String) -> Self {
        Self { ok: false, line }
    }
}

/// Every finding, the API server's version first. An error: the API server does not
/// answer at all.
pub async fn preflight(
    client: &Client,
    node: &str,
    namespace: &str,
) -> Result<Vec<Finding>, kube::Error> {
    let version = client.apiserver_version().await?;
    let mut findings = vec![Finding::ok(format!(
        "the Kubernetes API server answers (version {})",
        version.git_version
    ))];
    findings.push(this_node(client, node).await);
    findings.push(address_pools(client).await);
    for permission in access::needed() {
        findings.push(review(client, &permission, namespace).await);
    }
    Ok(findings)
}

async fn this_node(client: &Client, node: &str) -> Finding {
    // By name among all: a field selector narrows the answer, but the name decides.
    let by_name = ListParams::default().fields(&format!("metadata.name={node}"));
    let listed = match Api::<Node>::all(client.clone()).list(&by_name).await {
        Ok(list) => list.items,
        Err(error) => return cannot(&format!("look Node {node} up"), "nodes", &error),
    };
    match listed.iter().find(|found| found.name_any() == node) {
        None => Finding::missing(format!(
            "no Node named `{node}`: --node (NODE_NAME) must be this node's name, spec.nodeName in the DaemonSet"
        )),
        Some(found) => match internal_ip(found) {
            Some(address) => Finding::ok(format!("Node {node} has InternalIP {address}")),
            None => Finding::missing(format!(
                "Node {node} has no IPv4 InternalIP address: xdplb tunnels to and gossips with nodes by it"
            )),
        },
    }
}

/// A question the API server would not answer; a refusal names the resource, so the
/// missing permission's own finding explains it.
fn cannot(what: &str, resource: &str, error: &kube::Error) -> Finding {
    match error {
        kube::Error::Api(status) if status.code == 403 => Finding::missing(format!(
            "cannot {what}: the API server forbids listing {resource}"
        )),
        error => Finding::missing(format!("cannot {what}: {error}")),
    }
}

async fn address_pools(client: &Client) -> Finding {
    let one = ListParams::default().limit(1);
    match Api::<AddressPool>::all(client.clone())
        .list_metadata(&one)
        .await
    {
        Ok(_) => Finding::ok("the AddressPool CRD (xdplb.io/v1alpha1) is installed".to_owned()),
        Err(kube::Error::Api(status)) if status.code == 404 => Finding::missing(
            "the AddressPool CRD (xdplb.io/v1alpha1) is not installed: kubectl apply -f deploy/crds/ (or install the Helm chart)".to_owned(),
        ),
        Err(error) => cannot(
            "see whether the AddressPool CRD is installed",
            "addresspools",
            &error,
        ),
    }
}

async fn review(client: &Client, permission: &Permission, namespace: &str) -> Finding {
    let asked = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes(permission, namespace)),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let scope = if permission.namespaced {
        format!(" in namespace {namespace}")
    } else {
        String::new()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &asked)
        .await;
    match answer.map(|review| review.status.unwrap_or_default()) {
        Ok(status) if status.allowed => Finding::ok(format!("may {permission}{scope}")),
        Ok(status) => {
            let reason = status
                .reason
                .or(status.evaluation_error)
                .filter(|reason| !reason.is_empty())
                .map(|reason| format!(" (the API server says: {reason})"))
                .unwrap_or_default();
            Finding::missing(format!(
                "may not {permission}{scope}, needed by {}{reason}",
                permission.why
            ))
        }
        Err(error) => Finding::missing(format!(
            "cannot ask whether it may {permission}{scope}: {error}"
        )),
    }
}

fn attributes(permission: &Permission, namespace: &str) -> ResourceAttributes {
    let (resource, subresource) = permission.resource_parts();
    ResourceAttributes {
        group: Some(permission.group.to_owned()),
        resource: Some(resource.to_owned()),
        subresource: subresource.map(str::to_owned),
        verb: Some(permission.verb.to_owned()),
        name: permission.name.map(str::to_owned),
        namespace: permission.namespaced.then(|| namespace.to_owned()),
        ..ResourceAttributes::default()
    }
}
