//! A request as the API server's RBAC authorizer sees it, for the doubles: what the
//! deploy tests compare with the manifests' rules, and what the HTTP double authorizes
//! and answers `SelfSubjectAccessReview`s with.

use std::collections::BTreeSet;

use http::Method;
use k8s_openapi::api::{authorization::v1::ResourceAttributes, rbac::v1::PolicyRule};

/// One grant: (group, resource, verb, name or `*`).
pub type Grant = (String, String, String, String);

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

/// One API request as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The RBAC attributes of a request, as the API server derives them.
pub fn call(method: &Method, uri: &str) -> Call {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a resource path: {uri}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        rest => (None, rest),
    };
    let resource = match rest {
        [resource, _, subresource] => format!("{resource}/{subresource}"),
        [resource, ..] => (*resource).to_owned(),
        [] => panic!("no resource in {uri}"),
    };
    let name = rest.get(1).map(|name| (*name).to_owned());
    let watching = query.split('&').any(|pair| pair == "watch=true");
    let verb = match (method.as_str(), &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watching => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (other, _) => panic!("unexpected method {other}"),
    };
    Call {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource,
        namespace: namespace.map(str::to_owned),
        name,
    }
}

impl From<&ResourceAttributes> for Call {
    /// What a `SelfSubjectAccessReview` asks about.
    fn from(asked: &ResourceAttributes) -> Self {
        let text = |field: &Option<String>| field.clone().unwrap_or_default();
        let resource = match &asked.subresource {
            Some(subresource) if !subresource.is_empty() => {
                format!("{}/{subresource}", text(&asked.resource))
            }
            _ => text(&asked.resource),
        };
        Self {
            verb: text(&asked.verb),
            group: text(&asked.group),
            resource,
            namespace: asked
                .namespace
                .clone()
                .filter(|namespace| !namespace.is_empty()),
            name: asked.name.clone().filter(|name| !name.is_empty()),
        }
    }
}

/// A ClusterRole's grants, and a Role's with its namespace.
pub struct Permissions {
    pub cluster: BTreeSet<Grant>,
    pub namespaced: BTreeSet<Grant>,
    pub namespace: String,
}

/// Whether `grant` allows `call`; `*` matches any group, resource, verb or name, as in
/// RBAC.
pub fn allows(grant: &Grant, call: &Call) -> bool {
    let (group, resource, verb, name) = grant;
    let matches = |granted: &str, asked: &str| granted == "*" || granted == asked;
    matches(group, &call.group)
        && matches(resource, &call.resource)
        && matches(verb, &call.verb)
        && (name == "*" || call.name.as_deref() == Some(name.as_str()))
}

impl Permissions {
    pub fn new(cluster: &[PolicyRule], namespaced: &[PolicyRule], namespace: String) -> Self {
        Self {
            cluster: granted(cluster),
            namespaced: granted(namespaced),
            namespace,
        }
    }

    pub fn allow(&self, call: &Call) -> bool {
        self.cluster.iter().any(|grant| allows(grant, call))
            || (call.namespace.as_deref() == Some(&self.namespace)
                && self.namespaced.iter().any(|grant| allows(grant, call)))
    }
}
