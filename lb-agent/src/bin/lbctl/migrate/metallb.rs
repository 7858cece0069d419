//! MetalLB's configuration as `kubectl get -o yaml` or a GitOps repository holds it:
//! multi-document YAML with `IPAddressPool`, `L2Advertisement` and friends, possibly
//! wrapped in a `v1 List`. Every field of the specs below is optional, as in MetalLB's
//! CRDs: a missing one is its type's default.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use serde_yaml::Value;

use super::MigrateError;

/// Where a document came from: the file and the document's place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based, counting `---` separated documents (and `List` items as their own).
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file, self.document)
    }
}

/// `spec` of a MetalLB `IPAddressPool`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    pub addresses: Vec<String>,
    /// MetalLB's default is `true`.
    pub auto_assign: Option<bool>,
    #[serde(rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    pub service_allocation: Option<ServiceAllocation>,
    /// Fields this version of the converter does not know; reported, never dropped
    /// silently.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `spec.serviceAllocation` of an `IPAddressPool`. MetalLB's selectors are lists whose
/// entries are ORed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower wins; `0` (unset) ranks below every set priority.
    pub priority: i32,
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<LabelSelector>,
    pub service_selectors: Vec<LabelSelector>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `spec` of a MetalLB `L2Advertisement`. Without `ipAddressPools` and
/// `ipAddressPoolSelectors` it announces every pool; without `nodeSelectors` from every
/// node; without `interfaces` on every interface.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    pub ip_address_pools: Vec<String>,
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    pub node_selectors: Vec<LabelSelector>,
    pub interfaces: Vec<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A Service, for the report on its annotations and class.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    pub load_balancer_class: Option<String>,
}

/// What one document holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    IpAddressPool(IpAddressPoolSpec),
    L2Advertisement(L2AdvertisementSpec),
    Service(ServiceSpec),
    /// A MetalLB object with nothing to convert (BGP, BFD, status objects).
    NotConverted {
        kind: String,
        why: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub origin: Origin,
    pub metadata: ObjectMeta,
    pub kind: Kind,
}

impl Object {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// `namespace/name`, or the name alone.
    pub fn qualified_name(&self) -> String {
        match &self.metadata.namespace {
            Some(namespace) => format!("{namespace}/{}", self.name()),
            None => self.name().to_owned(),
        }
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata.labels.clone().unwrap_or_default()
    }
}

const GROUP: &str = "metallb.io";

const NO_BGP: &str = "xdplb announces with ARP (layer 2) only, not BGP";

/// MetalLB kinds that have no counterpart, and why.
const NOT_CONVERTED: [(&str, &str); 7] = [
    ("BGPAdvertisement", NO_BGP),
    ("BGPPeer", NO_BGP),
    ("BFDProfile", NO_BGP),
    ("Community", NO_BGP),
    (
        "ServiceL2Status",
        "MetalLB writes it; `lbctl services` shows the owners",
    ),
    ("ServiceBGPStatus", "MetalLB writes it; xdplb has no BGP"),
    (
        "ConfigurationState",
        "MetalLB writes it; AddressPool conditions say what xdplb thinks of its pools",
    ),
];

/// Every object in `text` (the content of `file`), in order.
pub fn parse(file: &str, text: &str) -> Result<Vec<Object>, MigrateError> {
    let mut objects = Vec::new();
    for (index, deserializer) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
        };
        let value = Value::deserialize(deserializer).map_err(|source| MigrateError::Yaml {
            origin: origin.clone(),
            source,
        })?;
        if value.is_null() {
            continue;
        }
        collect(origin, value, &mut objects)?;
    }
    Ok(objects)
}

/// Reads one document, unwrapping `kind: List`.
fn collect(origin: Origin, value: Value, objects: &mut Vec<Object>) -> Result<(), MigrateError> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (text("apiVersion").to_owned(), text("kind").to_owned());
    if api_version == "v1" && kind == "List" {
        let items = value.get("items").cloned().unwrap_or(Value::Null);
        let Value::Sequence(items) = items else {
            return Err(invalid(&origin, "a List without `items`".to_owned()));
        };
        for item in items {
            collect(origin.clone(), item, objects)?;
        }
        return Ok(());
    }
    let metadata: ObjectMeta = field(&origin, &value, "metadata")?;
    let kind = match (api_version.split('/').next().unwrap_or(""), kind.as_str()) {
        (GROUP, "IPAddressPool") => Kind::IpAddressPool(field(&origin, &value, "spec")?),
        (GROUP, "L2Advertisement") => Kind::L2Advertisement(field(&origin, &value, "spec")?),
        ("v1", "Service") => Kind::Service(field(&origin, &value, "spec")?),
        (GROUP, other) => match NOT_CONVERTED.iter().find(|(name, _)| *name == other) {
            Some((kind, why)) => Kind::NotConverted {
                kind: (*kind).to_owned(),
                why,
            },
            None => return Err(unknown_kind(origin, &api_version, other, &value)),
        },
        _ => return Err(unknown_kind(origin, &api_version, &kind, &value)),
    };
    if metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(invalid(
            &origin,
            format!("{} without metadata.name", kind_name(&kind)),
        ));
    }
    objects.push(Object {
        origin,
        metadata,
        kind,
    });
    Ok(())
}

fn kind_name(kind: &Kind) -> &str {
    match kind {
        Kind::IpAddressPool(_) => "IPAddressPool",
        Kind::L2Advertisement(_) => "L2Advertisement",
        Kind::Service(_) => "Service",
        Kind::NotConverted { kind, .. } => kind,
    }
}

fn invalid(origin: &Origin, message: String) -> MigrateError {
    MigrateError::Invalid {
        origin: origin.clone(),
        message,
    }
}

/// `value[key]` as `T`; a missing key is `T`'s default.
fn field<T: for<'de> Deserialize<'de> + Default>(
    origin: &Origin,
    value: &Value,
    key: &str,
) -> Result<T, MigrateError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(inner) => T::deserialize(inner.clone())
            .map_err(|error| invalid(origin, format!("{key}: {error}"))),
    }
}

fn unknown_kind(origin: Origin, api_version: &str, kind: &str, value: &Value) -> MigrateError {
    let legacy = kind == "ConfigMap"
        && value
            .get("data")
            .and_then(|data| data.get("config"))
            .and_then(Value::as_str)
            .is_some_and(|config| config.contains("address-pools"));
    let hint = if legacy {
        "this is MetalLB's ConfigMap configuration (before v0.13): convert it to \
         IPAddressPool and L2Advertisement objects first (MetalLB's configmaptocrs tool), \
         or export them from a running MetalLB v0.13+"
    } else if api_version.starts_with(GROUP) && kind == "AddressPool" {
        "MetalLB's deprecated AddressPool: MetalLB v0.13+ turns it into IPAddressPool and \
         L2Advertisement objects; export those with `kubectl get ipaddresspools,l2advertisements \
         -n metallb-system -o yaml`"
    } else {
        "expected MetalLB's IPAddressPool or L2Advertisement (metallb.io/v1beta1), or a \
         Service to check"
    };
    MigrateError::UnknownKind {
        origin,
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        hint,
    }
}
