use k8s_openapi::api::core::v1::Service;

use super::*;
use crate::{
    apis::service::holders,
    ipam::{addresses::AddressSet, request::ClassPolicy},
    model::Protocol,
};

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("an address")
}

fn pool(name: &str, entries: &[&str]) -> Pool {
    Pool {
        name: name.to_owned(),
        addresses: AddressSet::parse(entries, false).expect("valid entries"),
        auto_assign: true,
        priority: None,
        namespaces: BTreeSet::new(),
        namespace_selector: None,
        service_selector: None,
    }
}

/// A request of `default/<name>` on `ports` (`"53/UDP"`), asking for nothing else.
fn request(name: &str, ports: &[&str]) -> Request {
    let ports = ports
        .iter()
        .map(|port| {
            let (number, protocol) = port.split_once('/').expect("port/protocol");
            PortSpec {
                port: number.parse().expect("a port"),
                protocol: if protocol == "UDP" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
            }
        })
        .collect();
    Request {
        service: ServiceKey::new("default", name),
        labels: Labels::new(),
        address: None,
        pool: None,
        sharing_key: None,
        ports,
        locality: Locality::Cluster,
    }
}

fn sourced<T>(value: T) -> Option<crate::ipam::request::Sourced<T>> {
    Some(crate::ipam::request::Sourced {
        value,
        source: "test",
    })
}

fn with_key(mut request: Request, key: &str) -> Request {
    request.sharing_key = sourced(key.to_owned());
    request
}

fn with_ip(mut request: Request, address: &str) -> Request {
    request.address = sourced(ip(address));
    request
}

fn with_pool(mut request: Request, name: &str) -> Request {
    request.pool = sourced(name.to_owned());
    request
}

fn lan() -> Allocator {
    Allocator::new([pool("lan", &["192.168.8.240-192.168.8.250"])])
}

fn allocate(allocator: &mut Allocator, request: &Request) -> Result<Ipv4Addr, AllocationError> {
    allocator
        .allocate(request, &Labels::new())
        .map(|allocation| allocation.ip)
}

#[test]
fn services_with_one_sharing_key_meet_on_one_address() {
    let mut allocator = lan();
    let traefik = request("traefik", &["80/TCP", "443/TCP"]);
    let udp = with_key(request("coredns-udp", &["53/UDP"]), "dns");
    let tcp = with_key(request("coredns-tcp", &["53/TCP"]), "dns");
    assert_eq!(allocate(&mut allocator, &traefik), Ok(ip("192.168.8.240")));
    assert_eq!(allocate(&mut allocator, &udp), Ok(ip("192.168.8.241")));
    // Neither names the address: the key alone brings them together.
    assert_eq!(allocate(&mut allocator, &tcp), Ok(ip("192.168.8.241")));
    // A third with the key but a port already taken gets its own address.
    let udp_again = with_key(request("coredns-udp-2", &["53/UDP"]), "dns");
    assert_eq!(
        allocate(&mut allocator, &udp_again),
        Ok(ip("192.168.8.242"))
    );
    assert_eq!(
        allocator.usage()["lan"],
        PoolUsage {
            assigned: 3,
            available: 8
        }
    );
}

#[test]
fn a_sharer_leaving_keeps_the_address_for_the_other() {
    let mut allocator = lan();
    let udp = with_key(request("coredns-udp", &["53/UDP"]), "dns");
    let tcp = with_key(request("coredns-tcp", &["53/TCP"]), "dns");
    allocate(&mut allocator, &udp).expect("udp");
    allocate(&mut allocator, &tcp).expect("tcp");
    assert_eq!(allocator.release(&udp.service), Some(ip("192.168.8.240")));
    assert_eq!(
        allocator.holders(ip("192.168.8.240")),
        std::slice::from_ref(&tcp.service)
    );
    assert_eq!(allocator.usage()["lan"].assigned, 1);
    // Once alone, the holder may drop its key; others can no longer join then.
    let unkeyed = request("coredns-tcp", &["53/TCP"]);
    assert_eq!(allocate(&mut allocator, &unkeyed), Ok(ip("192.168.8.240")));
    assert_eq!(
        allocate(&mut allocator, &with_ip(udp.clone(), "192.168.8.240")),
        Err(AllocationError::AddressInUse {
            ip: ip("192.168.8.240"),
            holders: vec![tcp.service.clone()],
            other_class: false
        })
    );
}

#[test]
fn an_unmeetable_change_keeps_the_current_address() {
    let mut allocator = lan();
    let udp = with_key(request("coredns-udp", &["53/UDP"]), "dns");
    let tcp = with_key(request("coredns-tcp", &["53/TCP"]), "dns");
    allocate(&mut allocator, &udp).expect("udp");
    allocate(&mut allocator, &tcp).expect("tcp");

    // coredns-tcp now also wants 53/UDP, which coredns-udp has: refused, not moved.
    let greedy = with_key(request("coredns-tcp", &["53/TCP", "53/UDP"]), "dns");
    assert_eq!(
        allocate(&mut allocator, &greedy),
        Err(AllocationError::PortConflict {
            ip: ip("192.168.8.240"),
            port: PortSpec {
                port: 53,
                protocol: Protocol::Udp
            },
            holder: udp.service.clone()
        })
    );
    // An address in no pool, an unknown pool: refused, the old address stays.
    assert!(matches!(
        allocate(&mut allocator, &with_ip(tcp.clone(), "10.1.1.1")),
        Err(AllocationError::NotInAnyPool { .. })
    ));
    assert!(matches!(
        allocate(&mut allocator, &with_pool(tcp.clone(), "gone")),
        Err(AllocationError::UnknownPool { .. })
    ));
    assert_eq!(
        allocator.allocation(&tcp.service),
        Some(Allocation {
            ip: ip("192.168.8.240"),
            pool: Some("lan".to_owned())
        })
    );
    // The refused ports were not recorded: once coredns-udp leaves, 53/UDP is free.
    allocator.release(&udp.service);
    let other_udp = with_key(request("other", &["53/UDP"]), "dns");
    assert_eq!(
        allocate(&mut allocator, &with_ip(other_udp, "192.168.8.240")),
        Ok(ip("192.168.8.240"))
    );
}

#[test]
fn a_request_naming_another_address_moves_the_service() {
    let mut allocator = lan();
    let web = request("web", &["80/TCP"]);
    assert_eq!(allocate(&mut allocator, &web), Ok(ip("192.168.8.240")));
    assert_eq!(
        allocate(&mut allocator, &web),
        Ok(ip("192.168.8.240")),
        "stable"
    );
    assert_eq!(
        allocate(&mut allocator, &with_ip(web.clone(), "192.168.8.250")),
        Ok(ip("192.168.8.250"))
    );
    assert_eq!(
        allocator.holders(ip("192.168.8.240")),
        Vec::<ServiceKey>::new()
    );
    // Dropping the annotation later keeps the address it moved to.
    assert_eq!(allocate(&mut allocator, &web), Ok(ip("192.168.8.250")));
    assert_eq!(allocator.usage()["lan"].assigned, 1);
}

#[test]
fn a_request_naming_another_pool_moves_the_service() {
    let mut allocator = Allocator::new([
        pool("lan", &["192.168.8.240-192.168.8.250"]),
        pool("dmz", &["172.16.200.0/30"]),
    ]);
    let web = request("web", &["80/TCP"]);
    assert_eq!(
        allocate(&mut allocator, &web),
        Ok(ip("172.16.200.0")),
        "dmz sorts first"
    );
    let lan_web = with_pool(web.clone(), "lan");
    assert_eq!(
        allocator.allocate(&lan_web, &Labels::new()),
        Ok(Allocation {
            ip: ip("192.168.8.240"),
            pool: Some("lan".to_owned())
        })
    );
    assert_eq!(allocator.usage()["dmz"].assigned, 0);
}

#[test]
fn pool_changes_never_take_an_address_away() {
    let mut allocator = Allocator::new([
        pool("lan", &["192.168.8.240-192.168.8.250"]),
        pool("spare", &["192.168.8.248/29"]),
    ]);
    let web = request("web", &["80/TCP"]);
    let dns = request("dns", &["53/UDP"]);
    allocate(&mut allocator, &with_ip(web.clone(), "192.168.8.249")).expect("web");
    allocate(&mut allocator, &dns).expect("dns");
    assert_eq!(
        allocator.allocation(&web.service).and_then(|a| a.pool),
        Some("lan".to_owned())
    );

    // lan is gone (deleted or invalid): web falls to the other pool that lists it, dns
    // to none; both keep their addresses.
    allocator.set_pools([pool("spare", &["192.168.8.248/29"])]);
    assert_eq!(
        allocator.allocation(&web.service),
        Some(Allocation {
            ip: ip("192.168.8.249"),
            pool: Some("spare".to_owned())
        })
    );
    assert_eq!(
        allocator.allocation(&dns.service),
        Some(Allocation {
            ip: ip("192.168.8.240"),
            pool: None
        })
    );
    assert_eq!(allocate(&mut allocator, &dns), Ok(ip("192.168.8.240")));
    // The held address is still never handed out twice.
    let intruder = with_ip(request("intruder", &["80/TCP"]), "192.168.8.249");
    assert!(matches!(
        allocate(&mut allocator, &intruder),
        Err(AllocationError::AddressInUse { .. })
    ));
    assert_eq!(
        allocator.usage()["spare"],
        PoolUsage {
            assigned: 1,
            available: 7
        }
    );
}

#[test]
fn addresses_of_other_classes_are_off_limits() {
    let mut allocator = lan();
    let metallb = ServiceKey::new("home", "home-assistant");
    assert_eq!(
        allocator.reserve_foreign(&metallb, &[ip("192.168.8.240")]),
        []
    );
    let web = request("web", &["80/TCP"]);
    assert_eq!(allocate(&mut allocator, &web), Ok(ip("192.168.8.241")));
    assert_eq!(
        allocate(
            &mut allocator,
            &with_ip(request("other", &["80/TCP"]), "192.168.8.240")
        ),
        Err(AllocationError::AddressInUse {
            ip: ip("192.168.8.240"),
            holders: vec![metallb.clone()],
            other_class: true
        })
    );
    assert_eq!(
        allocator.usage()["lan"].assigned,
        2,
        "reserved addresses are not available"
    );
    // Another class now claiming ours is reported, and replaces its earlier reservation.
    assert_eq!(
        allocator.reserve_foreign(&metallb, &[ip("192.168.8.241")]),
        std::slice::from_ref(&web.service)
    );
    assert!(allocator.release(&metallb).is_none(), "never ours");
    assert_eq!(
        allocate(
            &mut allocator,
            &with_ip(request("other", &["80/TCP"]), "192.168.8.240")
        ),
        Ok(ip("192.168.8.240"))
    );
}

#[test]
fn auto_assign_off_serves_only_explicit_requests() {
    let mut reserved = pool("reserved", &["172.16.200.53/32"]);
    reserved.auto_assign = false;
    let mut allocator = Allocator::new([reserved]);
    let web = request("web", &["80/TCP"]);
    assert_eq!(
        allocate(&mut allocator, &web),
        Err(AllocationError::NoMatchingPool { refusals: vec![] })
    );
    assert_eq!(
        allocate(&mut allocator, &with_pool(web.clone(), "reserved")),
        Ok(ip("172.16.200.53"))
    );
    let dns = request("dns", &["53/UDP"]);
    assert_eq!(
        allocate(&mut allocator, &with_ip(dns, "172.16.200.53")).map_err(|e| e.reason()),
        Err("AddressInUse")
    );
}

#[test]
fn no_matching_pool_lists_every_refusal() {
    let mut edge = pool("edge", &["172.16.200.0/24"]);
    edge.namespaces = BTreeSet::from(["edge".to_owned()]);
    let mut allocator = Allocator::new([edge]);
    let error = allocate(&mut allocator, &request("web", &["80/TCP"])).expect_err("refused");
    assert_eq!(error.reason(), "NoMatchingPool");
    assert_eq!(
        error.to_string(),
        "no address pool with autoAssign may serve this Service: pool `edge` serves only namespaces edge"
    );
}

#[test]
fn rebuild_keeps_sharers_and_drops_the_younger_of_a_clash() {
    let service = |name: &str,
                   created: &str,
                   key: Option<&str>,
                   port: &str,
                   status: &str|
     -> Service {
        let annotations = key.map_or(String::new(), |key| {
            format!(", annotations: {{ xdplb.io/sharing-key: {key} }}")
        });
        serde_yaml::from_str(&format!(
            "metadata: {{ name: {name}, namespace: default, creationTimestamp: \"{created}\"{annotations} }}\n\
             spec: {{ type: LoadBalancer, loadBalancerClass: xdplb.io/lb, ports: [{port}] }}\n\
             status: {{ loadBalancer: {{ ingress: [{{ ip: {status} }}] }} }}"
        ))
        .expect("a Service")
    };
    let services = [
        service(
            "late",
            "2025-01-01T00:00:00Z",
            Some("dns"),
            "{ port: 53, protocol: UDP }",
            "192.168.8.245",
        ),
        service(
            "early",
            "2024-01-01T00:00:00Z",
            Some("dns"),
            "{ port: 53, protocol: UDP }",
            "192.168.8.245",
        ),
        service(
            "tcp",
            "2024-06-01T00:00:00Z",
            Some("dns"),
            "{ port: 53, protocol: TCP }",
            "192.168.8.245",
        ),
    ];
    let mut allocator = lan();
    // Left over from before: rebuild starts from nothing.
    allocate(&mut allocator, &request("ghost", &["80/TCP"])).expect("ghost");
    let conflicts = allocator.rebuild(holders(&services, ClassPolicy::default()));
    assert_eq!(
        conflicts,
        [RebuildConflict {
            service: ServiceKey::new("default", "late"),
            ip: ip("192.168.8.245"),
            error: AllocationError::PortConflict {
                ip: ip("192.168.8.245"),
                port: PortSpec {
                    port: 53,
                    protocol: Protocol::Udp
                },
                holder: ServiceKey::new("default", "early")
            }
        }]
    );
    assert_eq!(
        allocator.holders(ip("192.168.8.245")),
        [
            ServiceKey::new("default", "early"),
            ServiceKey::new("default", "tcp")
        ]
    );
    assert_eq!(
        allocator.allocation(&ServiceKey::new("default", "ghost")),
        None
    );
    assert_eq!(allocator.usage()["lan"].assigned, 1);
}
