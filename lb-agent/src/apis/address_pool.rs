//! The `AddressPool` custom resource (`xdplb.io/v1alpha1`, cluster-scoped): which LAN
//! addresses the agent may hand to `LoadBalancer` Services, who may use them and how they
//! are announced.
//!
//! ```yaml
//! apiVersion: xdplb.io/v1alpha1
//! kind: AddressPool
//! metadata: { name: lan }
//! spec:
//!   addresses: ["192.168.8.240-192.168.8.250", "172.16.200.0/28", "172.16.200.53/32"]
//!   autoAssign: true
//!   avoidBuggyIPs: false
//!   serviceAllocation:
//!     priority: 10
//!     namespaces: [edge]
//!     namespaceSelector: { matchLabels: { lan: "true" } }
//!     serviceSelector: { matchLabels: { expose: lan } }
//!   announcement:
//!     nodeSelector: { matchLabels: { node-role.kubernetes.io/worker: "" } }
//!     interfaces: [eth0]
//!     garp: { repeats: 3, intervalMilliseconds: 500, refreshSeconds: 60 }
//! ```
//!
//! The API server rejects malformed pools at admission (OpenAPI bounds plus CEL rules,
//! see [`address_rules`]); what only the whole set of pools reveals (overlaps) becomes a
//! condition. The committed CRD, `deploy/crds/addresspools.yaml`, is generated from these
//! types by the test `crd_matches_committed`, which fails when the two drift apart.
//! Regenerate it with `XDPLB_BLESS=1 cargo test -p lb-agent --lib crd_matches_committed`.

use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, ResourceExt as _};
use schemars::{
    JsonSchema, Schema, SchemaGenerator, json_schema,
    transform::{RecursiveTransform, Transform as _},
};
use serde::{Deserialize, Serialize};

use super::label_selector;
use crate::{
    ipam::{Pool, PoolError, addresses::AddressSet},
    model::unicast::{EXPECTED_UNICAST, NOT_UNICAST, Reserved},
};

/// `status.conditions[].type`: the pool is valid and its addresses are being handed out.
pub const CONDITION_READY: &str = "Ready";
/// `status.conditions[].type`: the pool shares addresses with another pool.
pub const CONDITION_OVERLAPPING: &str = "Overlapping";
/// `status.conditions[].type`: the pool cannot be used (the message says why).
pub const CONDITION_INVALID: &str = "Invalid";

/// Most address entries a pool may list. Bounds the CEL cost the API server estimates.
pub const MAX_ADDRESS_ENTRIES: u32 = 64;
/// Longest address entry: two dotted quads and a dash with a space on each side.
const MAX_ADDRESS_LENGTH: u32 = 33;
/// Linux's IFNAMSIZ less the terminating NUL.
const MAX_INTERFACE_LENGTH: u32 = 15;
/// The shortest pause between gratuitous ARP rounds: faster bursts gain nothing on a
/// LAN and look like an ARP storm to switch protection.
pub const MIN_GARP_INTERVAL_MS: u32 = 100;

/// The addresses xdplb may assign to LoadBalancer Services, who may use them and how
/// they are announced (kubectl get addresspools, short names ap and pool).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xdplb.io",
    version = "v1alpha1",
    kind = "AddressPool",
    plural = "addresspools",
    shortname = "ap",
    shortname = "pool",
    category = "xdplb",
    status = "AddressPoolStatus",
    derive = "PartialEq",
    doc = "A pool of LAN IPv4 addresses that xdplb assigns to LoadBalancer Services and announces with ARP.",
    printcolumn = r#"{"name": "Addresses", "type": "string", "jsonPath": ".spec.addresses"}"#,
    printcolumn = r#"{"name": "Auto Assign", "type": "boolean", "jsonPath": ".spec.autoAssign"}"#,
    printcolumn = r#"{"name": "Assigned", "type": "integer", "jsonPath": ".status.assigned"}"#,
    printcolumn = r#"{"name": "Available", "type": "integer", "jsonPath": ".status.available"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
pub struct AddressPoolSpec {
    /// The pool's IPv4 addresses: CIDRs (192.168.8.240/29, 172.16.200.53/32 for a single
    /// address) or inclusive ranges (192.168.8.240-192.168.8.250). IPv6 is not supported
    /// yet.
    #[schemars(schema_with = "addresses_schema")]
    pub addresses: Vec<String>,
    /// Whether Services that ask for no particular pool or address may get an address
    /// from this pool. With false, only Services that name the pool (xdplb.io/pool) or
    /// one of its addresses get one.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip addresses ending in .0 and .255, which some consumer routers drop as
    /// broadcast ("smurf") traffic.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool, and its rank among several that fit. Without it,
    /// every Service may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
    /// Which nodes announce the pool's addresses, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<Announcement>,
}

fn default_true() -> bool {
    true
}

/// Which Services may use a pool. Every restriction given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Rank when several pools may serve a Service: lower numbers are tried first, pools
    /// without a priority last, ties by name (as MetalLB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Only Services in these namespaces may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<String>,
    /// Only Services in namespaces with matching labels may use the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Only Services with matching labels may use the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
}

/// How a pool's addresses are announced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    /// Nodes eligible to own (answer ARP for) the pool's addresses. Default: every node
    /// not labelled node.kubernetes.io/exclude-from-external-load-balancers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Announce only on these interfaces. Each agent announces on one interface, the one
    /// whose traffic its XDP data path sees (its settings' arp.interface, else its LAN
    /// interface); a node whose announce interface is not listed is not eligible to own
    /// the pool's addresses. Default: every node's announce interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "interfaces_schema")]
    pub interfaces: Vec<String>,
    /// Gratuitous ARP when a node takes an address over, and periodic refreshes. Replaces
    /// the agent's own arp settings for the pool's addresses (omitted fields take the
    /// defaults shown here, not the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp: Option<Garp>,
}

/// Gratuitous ARP settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = garp_rules()))]
pub struct Garp {
    /// Gratuitous ARP rounds after the first one at takeover.
    #[serde(default = "default_garp_repeats")]
    #[schemars(range(max = 10))]
    pub repeats: u32,
    /// Time between those rounds, at least 100.
    #[serde(default = "default_garp_interval")]
    #[schemars(range(max = 10000))]
    pub interval_milliseconds: u32,
    /// Re-announce every owned address this often (0: never), so switches whose tables
    /// age out a quiet port keep forwarding to the owner.
    #[serde(default = "default_garp_refresh")]
    #[schemars(range(max = 3600))]
    pub refresh_seconds: u32,
}

/// Here rather than in [`crate::ipam::pool`]: the IPAM's decisions know no API type;
/// the API types compile into them.
impl Pool {
    pub fn from_resource(resource: &AddressPool) -> Result<Pool, PoolError> {
        let spec = &resource.spec;
        let addresses = AddressSet::parse(&spec.addresses, spec.avoid_buggy_ips)?;
        let allocation = spec.service_allocation.clone().unwrap_or_default();
        Ok(Self {
            name: resource.name_any(),
            addresses,
            auto_assign: spec.auto_assign,
            priority: allocation.priority,
            namespaces: allocation.namespaces.into_iter().collect(),
            namespace_selector: label_selector::compile(
                "spec.serviceAllocation.namespaceSelector",
                allocation.namespace_selector,
            )?,
            service_selector: label_selector::compile(
                "spec.serviceAllocation.serviceSelector",
                allocation.service_selector,
            )?,
        })
    }
}

impl Default for Garp {
    fn default() -> Self {
        Self {
            repeats: default_garp_repeats(),
            interval_milliseconds: default_garp_interval(),
            refresh_seconds: default_garp_refresh(),
        }
    }
}

fn default_garp_repeats() -> u32 {
    3
}

fn default_garp_interval() -> u32 {
    500
}

fn default_garp_refresh() -> u32 {
    60
}

/// Written by the agent that holds the IPAM lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
pub struct AddressPoolStatus {
    /// Addresses of the pool in use by Services.
    #[serde(default)]
    pub assigned: u64,
    /// Addresses of the pool still free.
    #[serde(default)]
    pub available: u64,
    /// Ready, Overlapping and Invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One CEL rule of the AddressPool schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub rule: String,
    pub message: &'static str,
    /// Computes the message when it must name a value (falls back to `message`).
    pub message_expression: Option<String>,
}

impl Rule {
    fn new(rule: String, message: &'static str) -> Self {
        Self {
            rule,
            message,
            message_expression: None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut rule = serde_json::json!({ "rule": self.rule, "message": self.message });
        if let Some(expression) = &self.message_expression {
            rule["messageExpression"] = expression.clone().into();
        }
        rule
    }
}

/// The CEL rules every `spec.addresses` entry must pass: one message per mistake, where
/// an OpenAPI `pattern` could only say "no match". They use regular expressions,
/// `split`, macros and integer arithmetic only, not the API server's newer IP library,
/// so that older clusters accept the CRD.
pub fn address_rules() -> Vec<Rule> {
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let ip = format!("{octet}([.]{octet}){{3}}");
    let cidr = format!("self.matches('^{ip}/(3[0-2]|[12]?[0-9])$')");
    let range = format!("self.matches('^{ip} *- *{ip}$')");
    // The first address as written, of a CIDR or a range.
    let first_text = "self.split('/')[0].split('-')[0].trim()";
    let first = format!("({})", ipv4_value(first_text));
    let range_last = format!("({})", ipv4_value("self.split('-')[1].trim()"));
    // Entry n is the size of a /n block: CEL has no shift or power operator.
    let block_sizes: Vec<String> = (0..=32).map(|n| (1u64 << (32 - n)).to_string()).collect();
    let size = format!("[{}][int(self.split('/')[1])]", block_sizes.join(", "));
    vec![
        Rule::new(
            "!self.contains(':')".to_owned(),
            "IPv6 is not supported yet",
        ),
        Rule::new(
            format!("self.contains(':') || {cidr} || {range}"),
            "must be an IPv4 CIDR (192.168.8.240/29, or 192.168.8.53/32 for one address) or a range (192.168.8.240-192.168.8.250)",
        ),
        Rule::new(
            format!("!{range} || {first} <= {range_last}"),
            "the range is reversed: its first address is above its last",
        ),
        Rule::new(
            format!("!{cidr} || {first} % {size} == 0"),
            "the CIDR has host bits set: write the network address (192.168.8.240/29, not 192.168.8.241/29)",
        ),
        unicast_rule(&Entry {
            well_formed: format!(
                "{cidr} && {first} % {size} == 0 || {range} && {first} <= {range_last}"
            ),
            first_text,
            first: &first,
            last: &format!("({cidr} ? {first} + {size} - 1 : {range_last})"),
        }),
    ]
}

/// CEL expressions for an address entry, for [`unicast_rule`].
struct Entry<'a> {
    /// True for a CIDR or range that passes the other rules.
    well_formed: String,
    /// The entry's first address as written.
    first_text: &'a str,
    /// Its first and last address as 32-bit values.
    first: &'a str,
    last: &'a str,
}

/// The rule of [`crate::model::unicast`]: no address of a well-formed entry is in a
/// non-unicast block; the message names the lowest one as the IPAM and the standalone
/// file do.
fn unicast_rule(entry: &Entry<'_>) -> Rule {
    let value = |address: Ipv4Addr| u32::from(address).to_string();
    let blocks: Vec<String> = NOT_UNICAST
        .iter()
        .map(|block| format!("[{}, {}]", value(block.first), value(block.last)))
        .collect();
    let blocks = format!("[{}]", blocks.join(", "));
    let by_first = |text: fn(&Reserved) -> String| {
        let pairs: Vec<String> = NOT_UNICAST
            .iter()
            .map(|block| format!("{}: '{}'", value(block.first), text(block)))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    };
    let block_firsts = by_first(|block| block.first.to_string());
    let whats = by_first(|block| block.what.to_owned());
    let Entry {
        well_formed,
        first_text,
        first,
        last,
    } = entry;
    Rule {
        rule: format!("!({well_formed}) || {blocks}.all(b, {last} < b[0] || {first} > b[1])"),
        message: "includes addresses that are not unicast; expected unicast IPv4 addresses",
        message_expression: Some(format!(
            "{blocks}.filter(b, {last} >= b[0] && {first} <= b[1]).map(b, '`' + ({first} > b[0] ? {first_text} : {block_firsts}[b[0]]) + '` is ' + {whats}[b[0]] + '; {EXPECTED_UNICAST}')[0]"
        )),
    }
}

/// CEL for the 32-bit value of the dotted quad that `text` (a CEL string expression)
/// evaluates to.
fn ipv4_value(text: &str) -> String {
    (0..4)
        .map(|octet| {
            format!(
                "int({text}.split('.')[{octet}]) * {}",
                1u32 << (8 * (3 - octet))
            )
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn garp_rules() -> serde_json::Value {
    serde_json::json!([
        {
            "rule": format!("self.intervalMilliseconds >= {MIN_GARP_INTERVAL_MS}"),
            "message": format!("intervalMilliseconds must be at least {MIN_GARP_INTERVAL_MS}"),
        },
        {
            "rule": "self.refreshSeconds == 0 || self.refreshSeconds * 1000 >= self.repeats * self.intervalMilliseconds",
            "message": "refreshSeconds must be 0 (off) or last at least the takeover burst (repeats × intervalMilliseconds)",
        },
    ])
}

/// The `format`s the API server knows for integers. schemars gives unsigned fields
/// `uint32` and `uint64`, which the API server and Helm warn about ("unrecognized
/// format"); their `minimum: 0` and bounds already say what the format would.
const INTEGER_FORMATS: [&str; 2] = ["int32", "int64"];

/// Drops integer formats Kubernetes does not know, in `schema` and every subschema.
fn kubernetes_formats(schema: &mut Schema) {
    RecursiveTransform(|schema: &mut Schema| {
        let integer = schema.get("type").and_then(serde_json::Value::as_str) == Some("integer");
        let format = schema.get("format").and_then(serde_json::Value::as_str);
        if integer && format.is_some_and(|format| !INTEGER_FORMATS.contains(&format)) {
            schema.remove("format");
        }
    })
    .transform(schema);
}

fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    let rules: Vec<serde_json::Value> = address_rules().iter().map(Rule::to_json).collect();
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ADDRESS_ENTRIES,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": MAX_ADDRESS_LENGTH,
            "x-kubernetes-validations": rules,
        },
    })
}

fn interfaces_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_INTERFACE_LENGTH,
            "pattern": "^[^/:\\s]+$",
        },
    })
}

#[cfg(test)]
mod tests;
