//! What the agent (and lbctl run in its pod) may do through the API server, as data:
//! deploy's ClusterRole and Role must grant exactly this (tested against the manifests,
//! the chart and the calls the agent really makes), and `lb-agent kubernetes --check`
//! asks the API server about each single permission.

/// One permission: `verbs` on `resources` of `group` (`""` is the core group), limited
/// to `names` when there are any.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub group: &'static str,
    /// `resource` or `resource/subresource`.
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

/// One single permission of a [`Rule`]: one verb on one resource, of one name or any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub group: &'static str,
    /// `resource` or `resource/subresource`.
    pub resource: &'static str,
    pub verb: &'static str,
    /// `None`: every object of the resource.
    pub name: Option<&'static str>,
    /// Only in the agent's namespace (the Role), not cluster-wide (the ClusterRole).
    pub namespaced: bool,
    pub why: &'static str,
}

impl Permission {
    /// The resource without its subresource, and the subresource.
    pub fn resource_parts(&self) -> (&'static str, Option<&'static str>) {
        match self.resource.split_once('/') {
            Some((resource, subresource)) => (resource, Some(subresource)),
            None => (self.resource, None),
        }
    }
}

impl std::fmt::Display for Permission {
    /// As kubectl would say it: `patch services/status`, `get leases.coordination.k8s.io
    /// xdplb-ipam`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, " ({})", self.group)?;
        }
        if let Some(name) = self.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// Every single permission the agent needs, cluster-wide first.
pub fn needed() -> Vec<Permission> {
    let cluster = CLUSTER.iter().map(|rule| (rule, false));
    let namespaced = NAMESPACED.iter().map(|rule| (rule, true));
    cluster
        .chain(namespaced)
        .flat_map(|(rule, namespaced)| single_permissions(rule, namespaced))
        .collect()
}

fn single_permissions(rule: &Rule, namespaced: bool) -> Vec<Permission> {
    let names: Vec<Option<&'static str>> = if rule.names.is_empty() {
        vec![None]
    } else {
        rule.names.iter().copied().map(Some).collect()
    };
    let mut permissions = Vec::new();
    for resource in rule.resources {
        for verb in rule.verbs {
            for name in &names {
                permissions.push(Permission {
                    group: rule.group,
                    resource,
                    verb,
                    name: *name,
                    namespaced,
                    why: rule.why,
                });
            }
        }
    }
    permissions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_resource_and_name_of_a_rule_is_one_permission() {
        let needed = needed();
        let leases: Vec<String> = needed
            .iter()
            .filter(|permission| permission.resource == "leases")
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            leases,
            [
                "get leases (coordination.k8s.io) xdplb-ipam",
                "update leases (coordination.k8s.io) xdplb-ipam",
                "create leases (coordination.k8s.io)",
            ]
        );
        let status = needed
            .iter()
            .find(|permission| permission.resource == "services/status")
            .expect("services/status");
        assert_eq!(status.resource_parts(), ("services", Some("status")));
        assert!(!status.namespaced);
        assert_eq!(needed.iter().filter(|p| p.namespaced).count(), 4);
        assert_eq!(needed.len(), 19);
    }
}
