//! The conversion: each `IPAddressPool` becomes an `AddressPool`, its announcement
//! merged from the `L2Advertisement`s that select it; what has no place in the pools
//! becomes a warning.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use lb_agent::{
    apis::address_pool::{AddressPool, AddressPoolSpec, Announcement, ServiceAllocation},
    ipam::{
        addresses::AddressError,
        pool::{self, Pool, PoolError},
    },
};
use serde_yaml::Value;

use super::{
    Object, Origin, ServiceReport,
    addresses::{self, Entry},
    announce::{self, Advertisement},
    metallb::{self, IpAddressPoolSpec, Kind},
    services,
};

/// Why the input cannot be converted. Each names the file and document.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{origin}: not valid YAML: {source}")]
    Yaml {
        origin: Origin,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{origin}: unknown kind `{kind}` (apiVersion `{api_version}`): {hint}")]
    UnknownKind {
        origin: Origin,
        api_version: String,
        kind: String,
        hint: &'static str,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: Origin, message: String },
    #[error("{origin}: IPAddressPool {pool}: spec.addresses: {source}")]
    Address {
        origin: Origin,
        pool: String,
        #[source]
        source: AddressError,
    },
    #[error(
        "{origin}: L2Advertisement {advertisement} names pool `{pool}`, which no IPAddressPool \
         in the input defines (pass the file that holds it too)"
    )]
    MissingPool {
        origin: Origin,
        advertisement: String,
        pool: String,
    },
    #[error("{origin}: IPAddressPool `{pool}` is defined twice, first in {first}")]
    DuplicatePool {
        origin: Origin,
        first: Origin,
        pool: String,
    },
    #[error(
        "the input holds no IPAddressPool to convert (export them with `kubectl get \
         ipaddresspools,l2advertisements -n metallb-system -o yaml`)"
    )]
    NoPools,
    #[error(
        "no IPAddressPool of the input has an IPv4 address, and xdplb serves IPv4 only for \
         now: there is no pool to convert"
    )]
    NoIpv4Pools,
    #[error("{origin}: IPAddressPool {pool} would be an AddressPool xdplb refuses: {source}")]
    Refused {
        origin: Origin,
        pool: String,
        #[source]
        source: PoolError,
    },
}

/// What a pool MetalLB announced by BGP becomes.
const ARP_ONLY: &str = "xdplb announces by ARP only, so each pool below becomes an \
     ARP-announced pool: every eligible node answers ARP for its addresses on its LAN \
     interface. Clients reach them only if the addresses belong to a LAN the nodes share; \
     a range your router learned by BGP needs LAN addresses instead.";

/// One converted pool.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertedPool {
    pub pool: AddressPool,
    /// The `IPAddressPool` it came from, `namespace/name`.
    pub source: String,
    /// The `L2Advertisement`s that announced it, `namespace/name`.
    pub advertisements: Vec<String>,
    /// What this pool could not carry over exactly.
    pub warnings: Vec<String>,
}

/// The result of a conversion.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Migration {
    pub pools: Vec<ConvertedPool>,
    /// What the input holds that has no place in the pools.
    pub warnings: Vec<String>,
    /// The Services the input holds (LoadBalancers only).
    pub services: Vec<ServiceReport>,
}

/// Converts every `IPAddressPool` among `objects`, its announcement taken from the
/// `L2Advertisement`s among them.
pub fn convert(objects: &[Object]) -> Result<Migration, MigrateError> {
    let mut pools: BTreeMap<&str, (&Object, &IpAddressPoolSpec)> = BTreeMap::new();
    let mut advertisements = Vec::new();
    let mut migration = Migration::default();
    for object in objects {
        match &object.kind {
            Kind::IpAddressPool(spec) => {
                if let Some((first, _)) = pools.insert(object.name(), (object, spec)) {
                    return Err(MigrateError::DuplicatePool {
                        origin: object.origin.clone(),
                        first: first.origin.clone(),
                        pool: object.name().to_owned(),
                    });
                }
            }
            Kind::L2Advertisement(spec) => advertisements.push(Advertisement { object, spec }),
            Kind::Service(spec) => migration.services.extend(services::report(
                object.qualified_name(),
                &object.metadata.annotations.clone().unwrap_or_default(),
                spec,
            )),
            Kind::NotConverted { kind, why } => migration.warnings.push(format!(
                "{kind} {} ({}) is not converted: {why}.",
                object.qualified_name(),
                object.origin
            )),
        }
    }
    if pools.is_empty() {
        return Err(MigrateError::NoPools);
    }
    advertisements.sort_by_key(|advertisement| advertisement.object.qualified_name());
    check_advertisements(&advertisements, &pools, &mut migration.warnings)?;
    let bgp = objects.iter().any(|object| {
        matches!(&object.kind, Kind::NotConverted { kind, .. } if kind == "BGPAdvertisement")
    });
    if advertisements.is_empty() {
        migration.warnings.push(if bgp {
            format!(
                "The input holds no L2Advertisement: MetalLB announced these pools by BGP. {ARP_ONLY}"
            )
        } else {
            "The input holds no L2Advertisement, and MetalLB announces no pool without one. \
             The pools below are announced from every eligible node on its LAN interface; \
             pass the files with your L2Advertisements to carry their node selectors and \
             interfaces over."
                .to_owned()
        });
    }
    let mut compiled = Vec::new();
    for (object, spec) in pools.into_values() {
        let converted = convert_pool(object, spec, &advertisements, bgp)?;
        match converted {
            Some(pool) => {
                compiled.push(Pool::from_resource(&pool.pool).map_err(|source| {
                    MigrateError::Refused {
                        origin: object.origin.clone(),
                        pool: object.qualified_name(),
                        source,
                    }
                })?);
                migration.pools.push(pool);
            }
            None => migration.warnings.push(format!(
                "IPAddressPool {} has only IPv6 addresses and is not converted: xdplb serves \
                 IPv4 only for now.",
                object.qualified_name()
            )),
        }
    }
    if migration.pools.is_empty() {
        return Err(MigrateError::NoIpv4Pools);
    }
    migration.warnings.extend(overlap_warnings(&compiled));
    Ok(migration)
}

/// MetalLB refuses pools that share addresses; xdplb allocates each address once but
/// marks such pools `Overlapping`. One warning per pair.
fn overlap_warnings(pools: &[Pool]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, overlaps) in pool::overlaps(pools) {
        for overlap in overlaps.iter().filter(|overlap| name < overlap.other) {
            warnings.push(format!(
                "Pools {name} and {} share addresses from {} on: MetalLB refuses overlapping \
                 pools, and xdplb marks both Overlapping; make them disjoint.",
                overlap.other, overlap.first
            ));
        }
    }
    warnings
}

/// Every pool an advertisement names must exist; an advertisement that selects nothing
/// is worth a warning.
fn check_advertisements(
    advertisements: &[Advertisement<'_>],
    pools: &BTreeMap<&str, (&Object, &IpAddressPoolSpec)>,
    warnings: &mut Vec<String>,
) -> Result<(), MigrateError> {
    for advertisement in advertisements {
        let object = advertisement.object;
        if let Some(missing) = advertisement
            .spec
            .ip_address_pools
            .iter()
            .find(|name| !pools.contains_key(name.as_str()))
        {
            return Err(MigrateError::MissingPool {
                origin: object.origin.clone(),
                advertisement: object.qualified_name(),
                pool: missing.clone(),
            });
        }
        let mut selected = false;
        for (pool, _) in pools.values() {
            selected |= advertisement.selects(pool)?;
        }
        if !selected {
            warnings.push(format!(
                "L2Advertisement {} ({}) selects none of the pools.",
                object.qualified_name(),
                object.origin
            ));
        }
        warnings.extend(unknown_fields(
            &format!("L2Advertisement {}", object.qualified_name()),
            &advertisement.spec.other,
        ));
    }
    Ok(())
}

/// A warning per field the converter does not know.
fn unknown_fields(what: &str, fields: &BTreeMap<String, Value>) -> Vec<String> {
    fields
        .keys()
        .map(|field| format!("{what}: spec.{field} is not known to the converter and is left out."))
        .collect()
}

/// The pool, or `None` when it has no IPv4 address.
/// `bgp`: the input holds BGPAdvertisements, so a pool no L2Advertisement selects was
/// probably announced by BGP.
fn convert_pool(
    object: &Object,
    spec: &IpAddressPoolSpec,
    advertisements: &[Advertisement<'_>],
    bgp: bool,
) -> Result<Option<ConvertedPool>, MigrateError> {
    let name = object.name();
    let mut warnings = unknown_fields(&format!("pool {name}"), &spec.other);
    let mut addresses = Vec::new();
    let mut ipv6 = Vec::new();
    for entry in &spec.addresses {
        let converted = addresses::convert(entry).map_err(|source| MigrateError::Address {
            origin: object.origin.clone(),
            pool: object.qualified_name(),
            source,
        })?;
        match converted {
            Entry::V4(address) => addresses.push(address),
            Entry::V6 => ipv6.push(entry.trim()),
        }
    }
    if addresses.is_empty() {
        return Ok(None);
    }
    if !ipv6.is_empty() {
        warnings.push(format!(
            "pool {name}: its IPv6 entries ({}) are left out: xdplb serves IPv4 only for now.",
            ipv6.join(", ")
        ));
    }
    let service_allocation = spec
        .service_allocation
        .as_ref()
        .and_then(|allocation| service_allocation(name, allocation, &mut warnings));
    let mut selecting = Vec::new();
    for advertisement in advertisements {
        if advertisement.selects(object)? {
            selecting.push(advertisement);
        }
    }
    if selecting.is_empty() && !advertisements.is_empty() {
        warnings.push(if bgp {
            format!(
                "pool {name}: no L2Advertisement selects it, so MetalLB announced it by BGP \
                 (or not at all). {ARP_ONLY}"
            )
        } else {
            format!(
                "pool {name}: no L2Advertisement selects it, so MetalLB did not announce it \
                 over layer 2; xdplb will announce its addresses with ARP."
            )
        });
    }
    let merged = announce::merge(name, &selecting);
    warnings.extend(merged.warnings);
    let announcement =
        (merged.node_selector.is_some() || !merged.interfaces.is_empty()).then_some(Announcement {
            node_selector: merged.node_selector,
            interfaces: merged.interfaces,
            garp: None,
        });
    let pool = AddressPool {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: AddressPoolSpec {
            addresses,
            auto_assign: spec.auto_assign.unwrap_or(true),
            avoid_buggy_ips: spec.avoid_buggy_ips,
            service_allocation,
            announcement,
        },
        status: None,
    };
    Ok(Some(ConvertedPool {
        pool,
        source: object.qualified_name(),
        advertisements: selecting
            .iter()
            .map(|advertisement| advertisement.object.qualified_name())
            .collect(),
        warnings,
    }))
}

/// MetalLB's selector lists are ORed; an `AddressPool` holds one selector of each kind.
fn first_selector(
    pool: &str,
    field: &str,
    selectors: &[LabelSelector],
    warnings: &mut Vec<String>,
) -> Option<LabelSelector> {
    if selectors.len() > 1 {
        warnings.push(format!(
            "pool {pool}: MetalLB admitted Services matching any of its {} {field}; an \
             AddressPool takes one, so this one keeps the first. Services only the others \
             matched can no longer use the pool: give them a common label and select it if \
             they must.",
            selectors.len()
        ));
    }
    selectors.first().cloned()
}

fn service_allocation(
    pool: &str,
    allocation: &metallb::ServiceAllocation,
    warnings: &mut Vec<String>,
) -> Option<ServiceAllocation> {
    warnings.extend(unknown_fields(
        &format!("pool {pool}: serviceAllocation"),
        &allocation.other,
    ));
    let converted = ServiceAllocation {
        // MetalLB ranks an unset (0) priority below every set one, as `None` does here.
        priority: (allocation.priority > 0).then_some(allocation.priority),
        namespaces: allocation.namespaces.clone(),
        namespace_selector: first_selector(
            pool,
            "namespaceSelectors",
            &allocation.namespace_selectors,
            warnings,
        ),
        service_selector: first_selector(
            pool,
            "serviceSelectors",
            &allocation.service_selectors,
            warnings,
        ),
    };
    (converted != ServiceAllocation::default()).then_some(converted)
}
