//! What a Service asks of the IPAM: whether it is ours at all, which address or pool it
//! wants, whom it may share an address with, and on which ports; and the checks of what
//! it writes. The Kubernetes object is read into these in [`crate::apis::service`].

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use super::pool::Labels;
use crate::model::{
    Protocol,
    unicast::{NotUnicast, unicast},
};

/// `spec.loadBalancerClass` of the Services the agent serves.
pub const LOAD_BALANCER_CLASS: &str = "xdplb.io/lb";

/// The annotations the agent reads, in precedence order within each group (the order
/// only decides which source a conflict message names first).
pub mod annotations {
    /// Comma-separated addresses; one IPv4 address until dual-stack lands.
    pub const IPS: &str = "xdplb.io/ips";
    pub const POOL: &str = "xdplb.io/pool";
    pub const SHARING_KEY: &str = "xdplb.io/sharing-key";
    pub const METALLB_IPS: &str = "metallb.io/loadBalancerIPs";
    pub const METALLB_POOL: &str = "metallb.io/address-pool";
    pub const METALLB_SHARING_KEY: &str = "metallb.io/allow-shared-ip";
    pub const METALLB_LEGACY_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
    pub const METALLB_LEGACY_POOL: &str = "metallb.universe.tf/address-pool";
    pub const METALLB_LEGACY_SHARING_KEY: &str = "metallb.universe.tf/allow-shared-ip";

    pub const ADDRESS_SOURCES: [&str; 3] = [IPS, METALLB_IPS, METALLB_LEGACY_IPS];
    pub const POOL_SOURCES: [&str; 3] = [POOL, METALLB_POOL, METALLB_LEGACY_POOL];
    pub const SHARING_SOURCES: [&str; 3] =
        [SHARING_KEY, METALLB_SHARING_KEY, METALLB_LEGACY_SHARING_KEY];
}

/// The request field that competes with the address annotations.
pub const SPEC_LOAD_BALANCER_IP: &str = "spec.loadBalancerIP";

/// Which Services without a `loadBalancerClass` the agent takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassPolicy {
    /// The agent is the cluster's default load balancer: it also serves `LoadBalancer`
    /// Services that name no class.
    pub default_class: bool,
}

/// Who assigns a Service's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responsibility {
    /// A `LoadBalancer` Service of our class.
    Ours,
    /// A `LoadBalancer` Service another implementation (e.g. MetalLB) serves: its
    /// addresses are off limits, but not ours to manage.
    OtherClass,
    /// Not a `LoadBalancer` Service: it holds no address.
    NotLoadBalancer,
}

impl ClassPolicy {
    /// Who assigns the address of a Service of `type` (`spec.type`) and
    /// `spec.loadBalancerClass` `class`.
    pub fn responsibility(&self, type_: Option<&str>, class: Option<&str>) -> Responsibility {
        if type_ != Some("LoadBalancer") {
            return Responsibility::NotLoadBalancer;
        }
        match class {
            Some(LOAD_BALANCER_CLASS) => Responsibility::Ours,
            None if self.default_class => Responsibility::Ours,
            _ => Responsibility::OtherClass,
        }
    }
}

/// A Service's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service as the address sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// What Services sharing an address must agree on besides the sharing key: with
/// `externalTrafficPolicy: Local` only nodes with a local endpoint may own the address,
/// so every Service on it must select the same pods (as MetalLB requires).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Locality {
    Cluster,
    /// The Service's pod selector, as `key=value` pairs joined by commas.
    Local {
        selector: String,
    },
}

/// A requested value and where it was asked for (an annotation or a spec field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: &'static str,
}

/// What a Service of ours asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub service: ServiceKey,
    /// The Service's labels, for pools' `serviceSelector`.
    pub labels: Labels,
    pub address: Option<Sourced<Ipv4Addr>>,
    pub pool: Option<Sourced<String>>,
    /// Services with the same key may share an address; `None` never shares.
    pub sharing_key: Option<Sourced<String>>,
    pub ports: BTreeSet<PortSpec>,
    pub locality: Locality,
}

/// A request that cannot be served as written; the Service's event and condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the Service has no name")]
    Unnamed,
    #[error("{field}: `{value}` {problem}")]
    Invalid {
        /// The annotation or spec field.
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("{field}: {problem}")]
    NotUnicast {
        field: &'static str,
        problem: NotUnicast,
    },
    #[error("{first} asks for `{first_value}` but {second} asks for `{second_value}`; keep one")]
    Conflicting {
        first: &'static str,
        first_value: String,
        second: &'static str,
        second_value: String,
    },
    #[error("{what}: IPv6 is not supported yet")]
    Ipv6Unsupported { what: String },
    #[error("port {port}/{protocol}: only TCP and UDP are supported")]
    UnsupportedProtocol { port: i32, protocol: String },
}

impl RequestError {
    /// The event's and condition's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unnamed => "InvalidService",
            Self::Invalid { field, .. } | Self::NotUnicast { field, .. } => {
                if *field == SPEC_LOAD_BALANCER_IP {
                    "InvalidLoadBalancerIP"
                } else if field.starts_with("spec.") {
                    "InvalidService"
                } else {
                    "InvalidAnnotation"
                }
            }
            Self::Conflicting { .. } => "ConflictingRequest",
            Self::Ipv6Unsupported { .. } => "IPv6Unsupported",
            Self::UnsupportedProtocol { .. } => "UnsupportedProtocol",
        }
    }
}

/// Merges the value `source` asks for into `found`, refusing a different value.
pub(crate) fn agree<T: PartialEq>(
    found: &mut Option<(Sourced<T>, String)>,
    candidate: Sourced<T>,
    raw: &str,
) -> Result<(), RequestError> {
    match found {
        Some((existing, existing_raw)) if existing.value != candidate.value => {
            Err(RequestError::Conflicting {
                first: existing.source,
                first_value: existing_raw.clone(),
                second: candidate.source,
                second_value: raw.to_owned(),
            })
        }
        Some(_) => Ok(()),
        None => {
            *found = Some((candidate, raw.to_owned()));
            Ok(())
        }
    }
}

pub(crate) fn non_empty(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// The one IPv4 address of a comma-separated list.
pub(crate) fn parse_address_list(
    source: &'static str,
    raw: &str,
) -> Result<Ipv4Addr, RequestError> {
    let invalid = |problem: String| RequestError::Invalid {
        field: source,
        value: raw.to_owned(),
        problem,
    };
    let mut addresses = Vec::new();
    for part in raw.split(',').filter_map(non_empty) {
        match part.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => addresses.push(address),
            Ok(IpAddr::V6(_)) => {
                return Err(RequestError::Ipv6Unsupported {
                    what: format!("{source}: {part}"),
                });
            }
            Err(_) => return Err(invalid(format!("has `{part}`, which is not an IP address"))),
        }
    }
    match addresses[..] {
        [address] => unicast(address).map_err(|problem| RequestError::NotUnicast {
            field: source,
            problem,
        }),
        [] => Err(invalid("names no address".to_owned())),
        _ => Err(invalid(
            "names more than one IPv4 address; a Service gets one".to_owned(),
        )),
    }
}

pub(crate) fn port_spec(port: i32, protocol: Option<&str>) -> Result<PortSpec, RequestError> {
    let protocol = match protocol.unwrap_or("TCP") {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        other => {
            return Err(RequestError::UnsupportedProtocol {
                port,
                protocol: other.to_owned(),
            });
        }
    };
    let port = u16::try_from(port).map_err(|_| RequestError::Invalid {
        field: "spec.ports",
        value: port.to_string(),
        problem: "is not a port number".to_owned(),
    })?;
    Ok(PortSpec { port, protocol })
}
