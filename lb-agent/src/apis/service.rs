//! A Kubernetes Service as the IPAM reads it: whose address it is to assign
//! ([`responsibility`]), what it asks for ([`request`]), what the address it holds commits
//! it to ([`holding`]), and what its status shows. The IPAM's decisions
//! ([`crate::ipam`]) know no API type; the Service is read into them here.
//!
//! The annotations of xdplb and both generations of MetalLB's are read, so Services
//! written for MetalLB keep working unchanged. Several sources asking for the same thing
//! must agree; otherwise the request names both.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::core::v1::{Service, ServicePort};

use crate::ipam::{
    allocator::Holder,
    request::{
        ClassPolicy, Locality, PortSpec, Request, RequestError, Responsibility,
        SPEC_LOAD_BALANCER_IP, ServiceKey, Sourced, agree, annotations, non_empty,
        parse_address_list, port_spec,
    },
};

/// Who assigns `service`'s address under `policy`.
pub fn responsibility(policy: ClassPolicy, service: &Service) -> Responsibility {
    let spec = service.spec.as_ref();
    policy.responsibility(
        spec.and_then(|spec| spec.type_.as_deref()),
        spec.and_then(|spec| spec.load_balancer_class.as_deref()),
    )
}

/// `service`'s identity; `None` for a Service without a name (never one the API server
/// returns).
pub fn key(service: &Service) -> Option<ServiceKey> {
    let name = service.metadata.name.clone()?;
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    Some(ServiceKey { namespace, name })
}

/// The request of a Service of ours (see [`responsibility`]).
pub fn request(service: &Service) -> Result<Request, RequestError> {
    let key = key(service).ok_or(RequestError::Unnamed)?;
    check_ip_families(service)?;
    Ok(Request {
        service: key,
        labels: service.metadata.labels.clone().unwrap_or_default(),
        address: requested_address(service)?,
        pool: requested_pool(service)?,
        sharing_key: sharing_key(service)?,
        ports: requested_ports(service)?,
        locality: locality(service),
    })
}

/// What a Service's current address commits it to, read leniently: rebuilding from
/// Service statuses must record every address in use even when the Service's
/// request has since become invalid (the allocator reports that problem later).
/// Ports other than TCP and UDP are left out; the first sharing key wins.
pub fn holding(service: &Service) -> Option<Request> {
    let key = key(service)?;
    let sharing_key = annotations::SHARING_SOURCES.iter().find_map(|&source| {
        annotation(service, source).and_then(|value| {
            non_empty(value).map(|value| Sourced {
                value: value.to_owned(),
                source,
            })
        })
    });
    let ports = ports(service)
        .filter_map(|port| port_spec(port.port, port.protocol.as_deref()).ok())
        .collect();
    Some(Request {
        service: key,
        labels: service.metadata.labels.clone().unwrap_or_default(),
        address: None,
        pool: None,
        sharing_key,
        ports,
        locality: locality(service),
    })
}

/// The IPv4 addresses `status.loadBalancer.ingress` lists.
pub fn status_addresses(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect()
}

fn annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn check_ip_families(service: &Service) -> Result<(), RequestError> {
    let Some(spec) = service.spec.as_ref() else {
        return Ok(());
    };
    if spec.ip_family_policy.as_deref() == Some("RequireDualStack") {
        return Err(RequestError::Ipv6Unsupported {
            what: "spec.ipFamilyPolicy: RequireDualStack".to_owned(),
        });
    }
    // PreferDualStack with IPv4 first is served with an IPv4 address alone.
    match spec.ip_families.as_deref() {
        Some([first, ..]) if first == "IPv6" => Err(RequestError::Ipv6Unsupported {
            what: "spec.ipFamilies: IPv6 first".to_owned(),
        }),
        _ => Ok(()),
    }
}

fn requested_address(service: &Service) -> Result<Option<Sourced<Ipv4Addr>>, RequestError> {
    let annotated = annotations::ADDRESS_SOURCES
        .iter()
        .filter_map(|&source| annotation(service, source).map(|raw| (source, raw)));
    let spec = service
        .spec
        .as_ref()
        .and_then(|spec| spec.load_balancer_ip.as_deref())
        .filter(|raw| !raw.trim().is_empty())
        .map(|raw| (SPEC_LOAD_BALANCER_IP, raw));
    let mut found = None;
    for (source, raw) in annotated.chain(spec) {
        let value = parse_address_list(source, raw)?;
        agree(&mut found, Sourced { value, source }, raw)?;
    }
    Ok(found.map(|(sourced, _)| sourced))
}

fn requested_pool(service: &Service) -> Result<Option<Sourced<String>>, RequestError> {
    agreed_annotation(
        service,
        annotations::POOL_SOURCES,
        Some("is empty: name an AddressPool"),
    )
}

/// An empty sharing key means "no sharing", as in MetalLB.
fn sharing_key(service: &Service) -> Result<Option<Sourced<String>>, RequestError> {
    agreed_annotation(service, annotations::SHARING_SOURCES, None)
}

/// The value the annotations `sources` agree on. An empty one is refused with
/// `empty_problem`, or without it means nothing is asked.
fn agreed_annotation(
    service: &Service,
    sources: [&'static str; 3],
    empty_problem: Option<&str>,
) -> Result<Option<Sourced<String>>, RequestError> {
    let mut found = None;
    for source in sources {
        let Some(raw) = annotation(service, source) else {
            continue;
        };
        match (non_empty(raw), empty_problem) {
            (Some(value), _) => {
                let value = value.to_owned();
                agree(&mut found, Sourced { value, source }, raw)?;
            }
            (None, Some(problem)) => {
                return Err(RequestError::Invalid {
                    field: source,
                    value: raw.to_owned(),
                    problem: problem.to_owned(),
                });
            }
            (None, None) => {}
        }
    }
    Ok(found.map(|(sourced, _)| sourced))
}

/// The ports a Service lists (none without a spec).
pub fn ports(service: &Service) -> impl Iterator<Item = &ServicePort> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
}

fn requested_ports(service: &Service) -> Result<BTreeSet<PortSpec>, RequestError> {
    ports(service)
        .map(|port| port_spec(port.port, port.protocol.as_deref()))
        .collect()
}

fn locality(service: &Service) -> Locality {
    let Some(spec) = service.spec.as_ref() else {
        return Locality::Cluster;
    };
    if spec.external_traffic_policy.as_deref() != Some("Local") {
        return Locality::Cluster;
    }
    let empty = BTreeMap::new();
    let selector: Vec<String> = spec
        .selector
        .as_ref()
        .unwrap_or(&empty)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    Locality::Local {
        selector: selector.join(","),
    }
}

/// The Services whose statuses show addresses, as the allocator's rebuild takes them:
/// those of other classes, then ours oldest first (by creation, then name), so that
/// older Services win conflicts.
pub fn holders(services: &[Service], policy: ClassPolicy) -> Vec<Holder> {
    let mut holders = Vec::new();
    let mut ours = Vec::new();
    for service in services {
        let (Some(key), Some(&address)) = (key(service), status_addresses(service).first()) else {
            continue;
        };
        match responsibility(policy, service) {
            Responsibility::Ours => ours.push((service, address)),
            Responsibility::OtherClass => holders.push(Holder::Foreign {
                service: key,
                addresses: status_addresses(service),
            }),
            Responsibility::NotLoadBalancer => {}
        }
    }
    ours.sort_by_key(|(service, _)| (service.metadata.creation_timestamp.clone(), key(service)));
    holders.extend(ours.into_iter().filter_map(|(service, address)| {
        Some(Holder::Ours {
            holding: holding(service)?,
            address,
        })
    }));
    holders
}

#[cfg(test)]
mod tests;
