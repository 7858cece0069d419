//! `lb-agent kubernetes --check`'s questions to the cluster (`preflight`), against the
//! HTTP API double with RBAC: a cluster that lacks any single permission the agent
//! needs, its Node, the AddressPool CRD or the API server itself must be reported, each
//! finding naming what is missing and why the agent needs it; the RBAC deploy/ grants
//! and a cluster admin's wildcards must pass.

use std::net::Ipv4Addr;

use k8s_openapi::api::rbac::v1::PolicyRule;
use lb_agent::sources::kubernetes::{
    access::{self, Permission},
    preflight::{Finding, preflight},
};
use serde_json::{Value, json};

use super::table::{Checker, Expect};
use crate::support::{kube_http::HttpApi, rbac::Permissions};

/// The agent's namespace, where deploy/'s Role is.
const NAMESPACE: &str = "xdplb-system";
const NODE: &str = "node1";
const POOLS: &str = "/apis/xdplb.io/v1alpha1/addresspools";

/// A cluster as a case sets it up.
struct World {
    /// The single permissions granted (cluster-wide, in [`NAMESPACE`]).
    granted: Vec<PolicyRule>,
    granted_in_namespace: Vec<PolicyRule>,
    /// The agent's `--namespace`.
    namespace: &'static str,
    /// The agent's `--node`.
    node: &'static str,
    node_address: Option<Ipv4Addr>,
    crd_installed: bool,
    api_server_running: bool,
}

impl World {
    /// What deploy/ installs (the manifests grant exactly [`access::needed`], as the
    /// deploy tests show).
    fn installed() -> Self {
        let (namespaced, cluster): (Vec<_>, Vec<_>) =
            access::needed().into_iter().partition(|p| p.namespaced);
        Self {
            granted: cluster.iter().map(rule).collect(),
            granted_in_namespace: namespaced.iter().map(rule).collect(),
            namespace: NAMESPACE,
            node: NODE,
            node_address: Some(Ipv4Addr::new(10, 0, 0, 11)),
            crd_installed: true,
            api_server_running: true,
        }
    }

    fn without(mut self, missing: &Permission) -> Self {
        let kept = |rules: Vec<PolicyRule>| {
            rules
                .into_iter()
                .filter(|kept| *kept != rule(missing))
                .collect()
        };
        self.granted = kept(self.granted);
        self.granted_in_namespace = kept(self.granted_in_namespace);
        self
    }

    fn objects(&self) -> Vec<Value> {
        let addresses: Vec<Value> = self
            .node_address
            .iter()
            .map(|address| json!({ "type": "InternalIP", "address": address.to_string() }))
            .chain([json!({ "type": "Hostname", "address": NODE })])
            .collect();
        vec![json!({
            "apiVersion": "v1", "kind": "Node", "metadata": { "name": NODE },
            "status": { "addresses": addresses },
        })]
    }

    /// What the check reports: `Ok` when every finding holds, else every missing one.
    async fn check(self) -> Result<(), String> {
        let not_found: &[&'static str] = if self.crd_installed { &[] } else { &[POOLS] };
        let rbac = Permissions::new(
            &self.granted,
            &self.granted_in_namespace,
            NAMESPACE.to_owned(),
        );
        let api = HttpApi::start_authorized(self.objects(), not_found, rbac).await;
        let client = if self.api_server_running {
            api.client()
        } else {
            nobody_listening().await
        };
        let findings = preflight(&client, self.node, self.namespace)
            .await
            .map_err(|error| format!("the API server does not answer: {error}"))?;
        let missing: Vec<&Finding> = findings.iter().filter(|finding| !finding.ok).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(missing
            .iter()
            .map(|finding| finding.line.as_str())
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// A client of a loopback port nobody listens on.
async fn nobody_listening() -> kube::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    kube::Client::try_from(kube::Config::new(url.parse().expect("URL"))).expect("a client")
}

/// The RBAC rule granting exactly `permission`.
fn rule(permission: &Permission) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![permission.group.to_owned()]),
        resources: Some(vec![permission.resource.to_owned()]),
        verbs: vec![permission.verb.to_owned()],
        resource_names: permission.name.map(|name| vec![name.to_owned()]),
        ..PolicyRule::default()
    }
}

struct Case {
    name: &'static str,
    world: fn() -> World,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "the RBAC deploy/ installs (valid control)",
            world: World::installed,
            expect: Expect::Accepted,
        },
        Case {
            name: "a cluster admin's wildcards (valid control)",
            world: || {
                let everything = PolicyRule {
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    verbs: vec!["*".into()],
                    ..PolicyRule::default()
                };
                World {
                    granted: vec![everything],
                    granted_in_namespace: Vec::new(),
                    ..World::installed()
                }
            },
            expect: Expect::Accepted,
        },
        Case {
            name: "--node names no Node",
            world: || World {
                node: "node9",
                ..World::installed()
            },
            expect: Expect::Rejected(&["no Node named `node9`", "NODE_NAME"]),
        },
        Case {
            name: "the Node has no InternalIP",
            world: || World {
                node_address: None,
                ..World::installed()
            },
            expect: Expect::Rejected(&["Node node1 has no IPv4 InternalIP"]),
        },
        Case {
            name: "the AddressPool CRD is not installed",
            world: || World {
                crd_installed: false,
                ..World::installed()
            },
            expect: Expect::Rejected(&["AddressPool CRD", "not installed", "deploy/crds/"]),
        },
        Case {
            name: "--namespace is not where the Role is",
            world: || World {
                namespace: "default",
                ..World::installed()
            },
            expect: Expect::Rejected(&[
                "may not get leases (coordination.k8s.io) xdplb-ipam in namespace default",
                "may not create leases (coordination.k8s.io) in namespace default",
            ]),
        },
        Case {
            name: "no API server where the kubeconfig points",
            world: || World {
                api_server_running: false,
                ..World::installed()
            },
            expect: Expect::Rejected(&["the API server does not answer"]),
        },
    ]
}

pub async fn run() {
    let mut checker = Checker::new("kubernetes-check");
    for case in cases() {
        let outcome = (case.world)().check().await;
        checker.verdict(case.name, case.expect, outcome);
    }
    // Each single permission withheld: reported, with the code that needs it.
    for permission in access::needed() {
        let name = format!("without `{permission}`");
        let outcome = World::installed().without(&permission).check().await;
        if let Err(text) = &outcome {
            let expected = format!("may not {permission}");
            if !text.contains(&expected) || !text.contains(permission.why) {
                checker.fail(
                    &name,
                    format!("the finding lacks {expected:?} or why: {text}"),
                );
            }
            // The questions the permission's absence keeps from being answered name it.
            let (resource, _) = permission.resource_parts();
            if !text.lines().all(|line| line.contains(resource)) {
                checker.fail(&name, format!("a finding not about {resource}: {text}"));
            }
        }
        checker.verdict(&name, Expect::Rejected(&[]), outcome);
    }
    checker.finish();
}

pub fn counts() -> (usize, usize) {
    let (rejected, accepted) = super::table::count(cases().iter().map(|case| &case.expect));
    (rejected + access::needed().len(), accepted)
}
