//! What the agent may do through the API server (the data is the library's
//! `sources::kubernetes::access`, which `kubernetes --check` asks about):
//! deploy/manifests/10-rbac.yaml must grant exactly this, no more, no less.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::PolicyRule;
pub use lb_agent::sources::kubernetes::access::{CLUSTER, NAMESPACED, Rule};

use crate::support::rbac::{Grant, granted};

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
