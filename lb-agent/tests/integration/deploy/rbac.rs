//! What the agent may do through the API server, as data: deploy/manifests/10-rbac.yaml
//! must grant exactly this, no more, no less. Each entry says which code needs it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::PolicyRule;

/// One permission: `verbs` on `resources` of `group` (`""` is the core group), limited
/// to `names` when there are any.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub names: &'static [&'static str],
    /// The code that needs it.
    pub why: &'static str,
}

/// Reflectors list, then watch; the agent never gets single objects.
const READ: &[&str] = &["list", "watch"];
/// Status is written by server-side apply, a patch.
const WRITE_STATUS: &[&str] = &["patch"];

/// The ClusterRole's rules.
pub const CLUSTER: &[Rule] = &[
    Rule {
        group: "",
        resources: &["services"],
        verbs: READ,
        names: &[],
        why: "sources::kubernetes::translate (VIPs, ports) and apis::service (address requests, rebuild)",
    },
    Rule {
        group: "",
        resources: &["services/status"],
        verbs: WRITE_STATUS,
        names: &[],
        why: "ipam_controller: patch_status (apply) of ingress and condition",
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: READ,
        names: &[],
        why: "sources::kubernetes::translate: endpoints per node, ready/serving/terminating",
    },
    Rule {
        group: "",
        resources: &["nodes"],
        verbs: READ,
        names: &[],
        why: "sources::kubernetes::translate: peers (InternalIP), labels, readiness",
    },
    Rule {
        group: "",
        resources: &["nodes"],
        verbs: &["patch"],
        names: &[],
        why: "sources::kubernetes::source: this node's announce interface annotation (merge patch)",
    },
    Rule {
        group: "",
        resources: &["namespaces"],
        verbs: READ,
        names: &[],
        why: "ipam::pool: serviceAllocation.namespaceSelector",
    },
    Rule {
        group: "xdplb.io",
        resources: &["addresspools"],
        verbs: READ,
        names: &[],
        why: "ipam::pool and sources::kubernetes::translate (announcement node selectors)",
    },
    Rule {
        group: "xdplb.io",
        resources: &["addresspools/status"],
        verbs: WRITE_STATUS,
        names: &[],
        why: "ipam_controller: patch_status (apply) of counts and conditions",
    },
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        names: &[],
        why: "events on Services and pools (kube's events::Recorder, events.k8s.io/v1)",
    },
];

/// The Role's rules, in the agent's namespace.
pub const NAMESPACED: &[Rule] = &[
    Rule {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "update"],
        names: &["xdplb-ipam"],
        why: "ipam_controller::lease: read and renew (replace) the IPAM lease",
    },
    Rule {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["create"],
        names: &[],
        why: "ipam_controller::lease: the first agent creates it",
    },
    Rule {
        group: "",
        resources: &["configmaps"],
        verbs: &["get"],
        names: &["xdplb-agent"],
        why: "lbctl in the agent's pod: the agent's settings (defaultClass), for services and explain --cluster",
    },
];

/// One grant: (group, resource, verb, name or `*`).
pub type Grant = (String, String, String, String);

/// Every single grant `rules` make, with why it is needed.
pub fn expected(rules: &[Rule]) -> BTreeMap<Grant, &'static str> {
    let mut grants = BTreeMap::new();
    for rule in rules {
        let names: Vec<&str> = if rule.names.is_empty() {
            vec!["*"]
        } else {
            rule.names.to_vec()
        };
        for resource in rule.resources {
            for verb in rule.verbs {
                for name in &names {
                    let grant = (
                        rule.group.to_owned(),
                        (*resource).to_owned(),
                        (*verb).to_owned(),
                        (*name).to_owned(),
                    );
                    grants.insert(grant, rule.why);
                }
            }
        }
    }
    grants
}

/// Every single grant a Role's or ClusterRole's `rules` make; wildcards and
/// non-resource URLs show up as such and never match [`expected`].
pub fn granted(rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        for url in rule.non_resource_urls.iter().flatten() {
            grants.insert((
                "<url>".to_owned(),
                url.clone(),
                String::new(),
                String::new(),
            ));
        }
        let names = match &rule.resource_names {
            Some(names) if !names.is_empty() => names.clone(),
            _ => vec!["*".to_owned()],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for name in &names {
                        grants.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

/// What `rules` grant beyond `expected` and what they miss of it, for a message;
/// `None` when they match exactly.
pub fn difference(
    expected: &BTreeMap<Grant, &'static str>,
    rules: &[PolicyRule],
) -> Option<String> {
    let granted = granted(rules);
    let extra: Vec<&Grant> = granted
        .iter()
        .filter(|grant| !expected.contains_key(*grant))
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|(grant, _)| !granted.contains(*grant))
        .map(|(grant, why)| format!("{grant:?} for {why}"))
        .collect();
    (!extra.is_empty() || !missing.is_empty()).then(|| {
        format!(
            "granted but not needed: {extra:?}\nneeded but not granted: {}",
            missing.join("; ")
        )
    })
}
