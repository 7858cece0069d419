//! AddressPools. At admission, the committed CRD's schema refuses bad pools: its
//! OpenAPI constraints (checked here as the API server checks them, with kubectl's
//! strict field validation for unknown fields) and its CEL rules (kube-cel). A pool that
//! reaches the agent anyway (an API server without CEL, an older CRD) gets an `Invalid`
//! condition, overlapping pools an `Overlapping` one, and neither takes an allocation
//! away: `edge/web` keeps 192.168.8.240 from pool `lan` through every case.

use std::{net::Ipv4Addr, sync::Arc};

use k8s_openapi::api::core::v1::Service;
use kube::CustomResourceExt as _;
use lb_agent::{
    apis::{
        address_pool::{AddressPool, CONDITION_INVALID, CONDITION_OVERLAPPING, CONDITION_READY},
        pool_status, service,
    },
    ipam::{Allocator, ClassPolicy, ServiceKey},
    ipam_controller::ALLOCATED_CONDITION,
};
use serde_json::{Value, json};

use super::table::{Checker, Expect, count};

/// The schema the API server validates AddressPools with.
fn schema() -> Value {
    let crd = serde_json::to_value(AddressPool::crd()).expect("the CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `text` matches the OpenAPI `pattern`, evaluated by CEL's `matches` (the same
/// RE2 syntax the API server uses).
fn matches(pattern: &str, text: &str) -> bool {
    let literal = format!("'{}'", pattern.replace('\\', "\\\\").replace('\'', "\\'"));
    let schema = json!({
        "type": "string",
        "x-kubernetes-validations": [ { "rule": format!("self.matches({literal})") } ],
    });
    kube_cel::Validator::new()
        .validate(&schema, &json!(text), None)
        .is_ok()
}

/// The OpenAPI constraints the AddressPool schema uses, as the API server reports them.
fn openapi(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(wanted) = schema["type"].as_str() {
        let found = kind(value);
        if found != wanted && !(wanted == "number" && found == "integer") {
            errors.push(format!(
                "{path}: Invalid value: \"{found}\": {path} in body must be of type {wanted}"
            ));
            return;
        }
    }
    match value {
        Value::Object(fields) => {
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                if !fields.contains_key(key) {
                    errors.push(format!("{path}.{key}: Required value"));
                }
            }
            for (key, field) in fields {
                let inner = &schema["properties"][key];
                let additional = &schema["additionalProperties"];
                if inner.is_object() {
                    openapi(inner, field, &format!("{path}.{key}"), errors);
                } else if additional.is_object() {
                    openapi(additional, field, &format!("{path}.{key}"), errors);
                } else if schema["x-kubernetes-preserve-unknown-fields"] != true {
                    errors.push(format!("unknown field \"{path}.{key}\""));
                }
            }
        }
        Value::Array(items) => {
            let length = items.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|min| length < min) {
                errors.push(format!(
                    "{path}: Invalid value: {length}: {path} in body should have at least {} items",
                    schema["minItems"]
                ));
            }
            if schema["maxItems"].as_u64().is_some_and(|max| length > max) {
                errors.push(format!(
                    "{path}: Too many: {length}: must have at most {} items",
                    schema["maxItems"]
                ));
            }
            for (index, item) in items.iter().enumerate() {
                openapi(&schema["items"], item, &format!("{path}[{index}]"), errors);
                if schema["x-kubernetes-list-type"] == "set" && items[..index].contains(item) {
                    errors.push(format!("{path}[{index}]: Duplicate value: {item}"));
                }
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| length < min) {
                errors.push(format!(
                    "{path}: Invalid value: \"{text}\": {path} in body should be at least {} chars long",
                    schema["minLength"]
                ));
            }
            if schema["maxLength"].as_u64().is_some_and(|max| length > max) {
                errors.push(format!(
                    "{path}: Too long: may not be more than {} bytes",
                    schema["maxLength"]
                ));
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && !matches(pattern, text)
            {
                errors.push(format!(
                    "{path}: Invalid value: \"{text}\": {path} in body should match '{pattern}'"
                ));
            }
        }
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or_default();
            if schema["minimum"].as_f64().is_some_and(|min| number < min) {
                errors.push(format!(
                    "{path}: Invalid value: {number}: {path} in body should be greater than or equal to {}",
                    schema["minimum"]
                ));
            }
            if schema["maximum"].as_f64().is_some_and(|max| number > max) {
                errors.push(format!(
                    "{path}: Invalid value: {number}: {path} in body should be less than or equal to {}",
                    schema["maximum"]
                ));
            }
        }
        _ => {}
    }
}

/// What `kubectl apply` of a pool with `spec` says: `Ok` when admitted.
fn admit(spec: &Value) -> Result<(), String> {
    let schema = schema();
    let mut errors = Vec::new();
    openapi(&schema["properties"]["spec"], spec, "spec", &mut errors);
    // The API server runs CEL only on a structurally valid object.
    if errors.is_empty() {
        let object = json!({
            "apiVersion": "xdplb.io/v1alpha1",
            "kind": "AddressPool",
            "metadata": { "name": "lan" },
            "spec": spec,
        });
        if let Err(failed) = kube_cel::Validator::new().validate(&schema, &object, None) {
            errors.extend(failed.into_vec().iter().map(ToString::to_string));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

pub fn admission_cases() -> Vec<(&'static str, Value, Expect)> {
    let rejected = |parts| Expect::Rejected(parts);
    let garp = |garp: Value| json!({ "addresses": ["192.168.8.240/29"], "announcement": { "garp": garp } });
    vec![
        (
            "every field (valid control)",
            json!({
                "addresses": ["192.168.8.240-192.168.8.250", "172.16.200.53/32"],
                "autoAssign": false,
                "avoidBuggyIPs": true,
                "serviceAllocation": {
                    "priority": 10,
                    "namespaces": ["edge"],
                    "namespaceSelector": { "matchLabels": { "team": "a" } },
                    "serviceSelector": { "matchExpressions": [ { "key": "tier", "operator": "In", "values": ["web"] } ] },
                },
                "announcement": {
                    "nodeSelector": { "matchLabels": { "xdplb.io/lan": "true" } },
                    "interfaces": ["eth0", "vmbr0"],
                    "garp": { "repeats": 3, "intervalMilliseconds": 500, "refreshSeconds": 60 },
                },
            }),
            Expect::Accepted,
        ),
        (
            "no addresses",
            json!({ "addresses": [] }),
            rejected(&["spec.addresses", "at least 1 items"]),
        ),
        (
            "addresses missing",
            json!({ "autoAssign": true }),
            rejected(&["spec.addresses: Required value"]),
        ),
        (
            "IPv6 CIDR",
            json!({ "addresses": ["fd00::/64"] }),
            rejected(&["spec.addresses[0]", "IPv6 is not supported yet"]),
        ),
        (
            "everything",
            json!({ "addresses": ["0.0.0.0/0"] }),
            rejected(&[
                "spec.addresses[0]",
                "`0.0.0.0` is in 0.0.0.0/8; expected a unicast IPv4 address",
            ]),
        ),
        (
            "loopback addresses",
            json!({ "addresses": ["127.0.0.0/30"] }),
            rejected(&["`127.0.0.0` is a loopback address; expected a unicast IPv4 address"]),
        ),
        (
            "multicast addresses",
            json!({ "addresses": ["10.0.0.0/30", "224.0.0.0/30"] }),
            rejected(&[
                "spec.addresses[1]",
                "`224.0.0.0` is a multicast address; expected a unicast IPv4 address",
            ]),
        ),
        (
            "a range up to the broadcast address",
            json!({ "addresses": ["241.0.0.0 - 255.255.255.255"] }),
            rejected(&["`241.0.0.0` is reserved or broadcast"]),
        ),
        (
            "reversed range",
            json!({ "addresses": ["192.168.8.250-192.168.8.240"] }),
            rejected(&["the range is reversed"]),
        ),
        (
            "host bits",
            json!({ "addresses": ["192.168.8.241/29"] }),
            rejected(&["the CIDR has host bits set"]),
        ),
        (
            "a word",
            json!({ "addresses": ["lan"] }),
            rejected(&["must be an IPv4 CIDR"]),
        ),
        (
            "a bare address",
            json!({ "addresses": ["192.168.8.240"] }),
            rejected(&["must be an IPv4 CIDR"]),
        ),
        (
            "octet 256",
            json!({ "addresses": ["192.168.8.256/32"] }),
            rejected(&["must be an IPv4 CIDR"]),
        ),
        (
            "prefix 33",
            json!({ "addresses": ["192.168.8.0/33"] }),
            rejected(&["must be an IPv4 CIDR"]),
        ),
        (
            "entry too long",
            json!({ "addresses": ["192.168.100.100  -  192.168.100.200"] }),
            rejected(&["spec.addresses[0]", "Too long"]),
        ),
        (
            "duplicate entries",
            json!({ "addresses": ["10.0.0.0/30", "10.0.0.0/30"] }),
            rejected(&["spec.addresses[1]: Duplicate value"]),
        ),
        (
            "address as a number",
            json!({ "addresses": [3232237808u32] }),
            rejected(&["spec.addresses[0]", "must be of type string"]),
        ),
        (
            "autoAssign as a word",
            json!({ "addresses": ["10.0.0.0/30"], "autoAssign": "yes" }),
            rejected(&["spec.autoAssign", "must be of type boolean"]),
        ),
        (
            "misspelt field",
            json!({ "addresses": ["10.0.0.0/30"], "autoAsign": false }),
            rejected(&["unknown field \"spec.autoAsign\""]),
        ),
        (
            "negative priority",
            json!({ "addresses": ["10.0.0.0/30"], "serviceAllocation": { "priority": -1 } }),
            rejected(&[
                "spec.serviceAllocation.priority",
                "greater than or equal to 0",
            ]),
        ),
        (
            "selector without an operator",
            json!({ "addresses": ["10.0.0.0/30"], "serviceAllocation": { "serviceSelector": { "matchExpressions": [ { "key": "tier" } ] } } }),
            rejected(&[
                "spec.serviceAllocation.serviceSelector.matchExpressions[0].operator: Required value",
            ]),
        ),
        (
            "interface with a slash",
            json!({ "addresses": ["10.0.0.0/30"], "announcement": { "interfaces": ["eth0/1"] } }),
            rejected(&["spec.announcement.interfaces[0]", "should match"]),
        ),
        (
            "empty interface",
            json!({ "addresses": ["10.0.0.0/30"], "announcement": { "interfaces": [""] } }),
            rejected(&["spec.announcement.interfaces[0]", "at least 1 chars"]),
        ),
        (
            "eleven GARP repeats",
            garp(json!({ "repeats": 11 })),
            rejected(&["spec.announcement.garp.repeats", "less than or equal to 10"]),
        ),
        (
            "GARP every 50 ms",
            garp(json!({ "intervalMilliseconds": 50 })),
            rejected(&["intervalMilliseconds must be at least 100"]),
        ),
        (
            "refresh shorter than the burst",
            garp(json!({ "repeats": 10, "intervalMilliseconds": 1000, "refreshSeconds": 5 })),
            rejected(&["refreshSeconds must be 0 (off) or last at least the takeover burst"]),
        ),
        (
            "refresh of two hours",
            garp(json!({ "refreshSeconds": 7200 })),
            rejected(&[
                "spec.announcement.garp.refreshSeconds",
                "less than or equal to 3600",
            ]),
        ),
    ]
}

pub fn run_admission() {
    let mut checker = Checker::new("addresspool-admission");
    for (name, spec, expect) in admission_cases() {
        checker.verdict(name, expect, admit(&spec));
    }
    checker.finish();
}

fn pool(name: &str, spec: Value) -> Arc<AddressPool> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "xdplb.io/v1alpha1",
            "kind": "AddressPool",
            "metadata": { "name": name, "generation": 1 },
            "spec": spec,
        }))
        .expect("an AddressPool"),
    )
}

fn lan() -> Arc<AddressPool> {
    pool(
        "lan",
        json!({ "addresses": ["192.168.8.240-192.168.8.250"] }),
    )
}

fn web() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web", "namespace": "edge" },
        "spec": { "type": "LoadBalancer", "loadBalancerClass": "xdplb.io/lb", "ports": [ { "port": 80 } ] },
        "status": {
            "loadBalancer": { "ingress": [ { "ip": "192.168.8.240", "ipMode": "VIP" } ] },
            "conditions": [ {
                "type": ALLOCATED_CONDITION, "status": "True", "reason": "Allocated",
                "message": "192.168.8.240 from pool lan", "lastTransitionTime": "2025-01-01T00:00:00Z",
            } ],
        },
    }))
    .expect("a Service")
}

/// Pools as the agent finds them: `lan` (unless a case replaces it) and the case's.
type PoolCase = (&'static str, fn() -> Vec<Arc<AddressPool>>, Expect);

pub fn controller_cases() -> Vec<PoolCase> {
    let rejected = |parts| Expect::Rejected(parts);
    vec![
        (
            "a second, separate pool (valid control)",
            || vec![lan(), pool("lab", json!({ "addresses": ["10.0.0.0/30"] }))],
            Expect::Accepted,
        ),
        (
            "IPv6 past admission",
            || vec![lan(), pool("v6", json!({ "addresses": ["fd00::/120"] }))],
            rejected(&[
                "v6",
                "InvalidAddresses",
                "spec.addresses: `fd00::/120`: IPv6 is not supported yet",
            ]),
        ),
        (
            "reversed range past admission",
            || {
                vec![
                    lan(),
                    pool("back", json!({ "addresses": ["10.0.0.9-10.0.0.1"] })),
                ]
            },
            rejected(&["back", "the range is reversed: 10.0.0.9 is above 10.0.0.1"]),
        ),
        (
            "host bits past admission",
            || vec![lan(), pool("bits", json!({ "addresses": ["10.0.0.1/30"] }))],
            rejected(&["bits", "host bits are set: the network is 10.0.0.0/30"]),
        ),
        (
            "0.0.0.0/0 past admission",
            || {
                vec![
                    lan(),
                    pool("everything", json!({ "addresses": ["0.0.0.0/0"] })),
                ]
            },
            rejected(&[
                "Invalid on everything: InvalidAddresses spec.addresses: `0.0.0.0/0`: `0.0.0.0` is in 0.0.0.0/8; expected a unicast IPv4 address",
            ]),
        ),
        (
            "loopback and multicast past admission",
            || {
                vec![
                    lan(),
                    pool("lo", json!({ "addresses": ["127.0.0.0/30"] })),
                    pool("mc", json!({ "addresses": ["224.0.0.0/30"] })),
                ]
            },
            rejected(&[
                "Invalid on lo: InvalidAddresses spec.addresses: `127.0.0.0/30`: `127.0.0.0` is a loopback address; expected a unicast IPv4 address",
                "Invalid on mc: InvalidAddresses spec.addresses: `224.0.0.0/30`: `224.0.0.0` is a multicast address",
            ]),
        ),
        (
            "garbage past admission",
            || vec![lan(), pool("junk", json!({ "addresses": ["lan"] }))],
            rejected(&["junk", "`lan`: not an IPv4 CIDR"]),
        ),
        (
            "bad service selector operator",
            || {
                vec![
                    lan(),
                    pool(
                        "sel",
                        json!({
                            "addresses": ["10.0.0.0/30"],
                            "serviceAllocation": { "serviceSelector": { "matchExpressions": [ { "key": "a", "operator": "Near", "values": ["b"] } ] } },
                        }),
                    ),
                ]
            },
            rejected(&[
                "sel",
                "InvalidSelector",
                "spec.serviceAllocation.serviceSelector",
            ]),
        ),
        (
            "bad namespace selector",
            || {
                vec![
                    lan(),
                    pool(
                        "ns",
                        json!({
                            "addresses": ["10.0.0.0/30"],
                            "serviceAllocation": { "namespaceSelector": { "matchExpressions": [ { "key": "a", "operator": "In" } ] } },
                        }),
                    ),
                ]
            },
            rejected(&[
                "ns",
                "InvalidSelector",
                "spec.serviceAllocation.namespaceSelector",
            ]),
        ),
        (
            "overlapping web's address",
            || {
                vec![
                    lan(),
                    pool("edge", json!({ "addresses": ["192.168.8.240/30"] })),
                ]
            },
            rejected(&[
                "Overlapping on edge: Overlapping shares addresses with pool `lan`, from 192.168.8.240 on",
                "Overlapping on lan: Overlapping shares addresses with pool `edge`",
            ]),
        ),
        (
            "lan itself edited into garbage",
            || {
                vec![pool(
                    "lan",
                    json!({ "addresses": ["192.168.8.240-192.168.8"] }),
                )]
            },
            rejected(&["lan", "InvalidAddresses", "`192.168.8.240-192.168.8`"]),
        ),
    ]
}

/// The `Invalid` and `Overlapping` conditions that are true, as the pools' statuses
/// would show them; `Ok` when there are none.
fn problems(resources: &[Arc<AddressPool>], allocator: &Allocator) -> Result<(), String> {
    let mut lines = Vec::new();
    for (name, report) in pool_status::reports(resources, allocator) {
        for condition in report.conditions.iter().filter(|c| c.status) {
            if condition.type_ == CONDITION_INVALID || condition.type_ == CONDITION_OVERLAPPING {
                lines.push(format!(
                    "{} on {name}: {} {}",
                    condition.type_, condition.reason, condition.message
                ));
            }
        }
        let ready = report
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY);
        if name == "lan" && ready.is_some_and(|c| c.status) && report.assigned != 1 {
            lines.push(format!(
                "lan counts {} assigned, not web's address",
                report.assigned
            ));
        }
    }
    if lines.is_empty() {
        Ok(())
    } else {
        Err(lines.join("\n"))
    }
}

pub fn run_controller() {
    let mut checker = Checker::new("addresspool-controller");
    let web_ip: Ipv4Addr = "192.168.8.240".parse().expect("address");
    let key = ServiceKey::new("edge", "web");
    for (name, resources, expect) in controller_cases() {
        let resources = resources();
        let mut allocator = Allocator::new(pool_status::compile(&[lan()]).0);
        allocator.rebuild(service::holders(&[web()], ClassPolicy::default()));
        // The pools change under a running IPAM.
        allocator.set_pools(pool_status::compile(&resources).0);
        checker.verdict(name, expect, problems(&resources, &allocator));
        match allocator.allocation(&key) {
            Some(allocation) if allocation.ip == web_ip => {}
            other => checker.fail(name, format!("edge/web lost 192.168.8.240: {other:?}")),
        }
        // And after a restart, rebuilt from the statuses with the bad pools in place.
        let mut restarted = Allocator::new(pool_status::compile(&resources).0);
        let conflicts = restarted.rebuild(service::holders(&[web()], ClassPolicy::default()));
        if !conflicts.is_empty() || restarted.allocation(&key).map(|a| a.ip) != Some(web_ip) {
            checker.fail(
                name,
                format!("after a restart edge/web lost its address: {conflicts:?}"),
            );
        }
    }
    checker.finish();
}

pub fn counts() -> (usize, usize) {
    let admission = admission_cases();
    let controller = controller_cases();
    let (a, b) = count(admission.iter().map(|case| &case.2));
    let (c, d) = count(controller.iter().map(|case| &case.2));
    (a + c, b + d)
}
