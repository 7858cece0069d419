use std::net::Ipv4Addr;

use super::*;
use crate::ipam::{pool::Labels, request::RequestError};

/// A LoadBalancer Service `web` in `edge` with `annotations` and extra `spec` lines.
fn service(annotations: &[(&str, &str)], spec: &str) -> Service {
    let mut service: Service = serde_yaml::from_str(&format!(
        "metadata: {{ name: web, namespace: edge, labels: {{ app: web }} }}\n\
         spec:\n  type: LoadBalancer\n  ports: [{{ port: 80 }}, {{ port: 443, protocol: TCP }}]\n{spec}"
    ))
    .expect("a Service");
    service.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
    );
    service
}

fn request(annotations: &[(&str, &str)], spec: &str) -> Result<Request, RequestError> {
    super::request(&service(annotations, spec))
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("an address")
}

#[test]
fn a_plain_service_asks_for_nothing_in_particular() {
    let request = request(&[], "").expect("valid");
    assert_eq!(request.service, ServiceKey::new("edge", "web"));
    assert_eq!(request.service.to_string(), "edge/web");
    assert_eq!(
        request.labels,
        Labels::from([("app".to_owned(), "web".to_owned())])
    );
    assert_eq!(request.address, None);
    assert_eq!(request.pool, None);
    assert_eq!(request.sharing_key, None);
    assert_eq!(request.locality, Locality::Cluster);
    let ports: Vec<String> = request.ports.iter().map(ToString::to_string).collect();
    assert_eq!(ports, ["80/TCP", "443/TCP"]);
}

#[test]
fn every_address_source_is_read() {
    for (annotations, spec, source) in [
        (vec![("xdplb.io/ips", "192.168.8.240")], "", "xdplb.io/ips"),
        (
            vec![("metallb.io/loadBalancerIPs", "192.168.8.240")],
            "",
            "metallb.io/loadBalancerIPs",
        ),
        (
            vec![("metallb.universe.tf/loadBalancerIPs", " 192.168.8.240 ")],
            "",
            "metallb.universe.tf/loadBalancerIPs",
        ),
        (
            vec![],
            "  loadBalancerIP: 192.168.8.240",
            "spec.loadBalancerIP",
        ),
        // Agreeing sources are one request, named by the first.
        (
            vec![("metallb.io/loadBalancerIPs", "192.168.8.240")],
            "  loadBalancerIP: 192.168.8.240",
            "metallb.io/loadBalancerIPs",
        ),
    ] {
        let request = request(&annotations, spec).expect(source);
        assert_eq!(
            request.address,
            Some(Sourced {
                value: ip("192.168.8.240"),
                source
            })
        );
    }
}

#[test]
fn pool_and_sharing_key_sources_are_read() {
    for source in annotations::POOL_SOURCES {
        let request = request(&[(source, "lan")], "").expect(source);
        assert_eq!(
            request.pool,
            Some(Sourced {
                value: "lan".to_owned(),
                source
            })
        );
    }
    for source in annotations::SHARING_SOURCES {
        let request = request(&[(source, "internal-dns")], "").expect(source);
        assert_eq!(
            request.sharing_key,
            Some(Sourced {
                value: "internal-dns".to_owned(),
                source
            })
        );
    }
    let unshared = request(&[("metallb.universe.tf/allow-shared-ip", " ")], "").expect("valid");
    assert_eq!(unshared.sharing_key, None, "an empty key shares nothing");
}

/// Annotations, extra spec lines, the expected reason and a part of the message.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    &'static str,
);

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let cases: [Case; 11] = [
        (
            &[
                ("xdplb.io/ips", "192.168.8.240"),
                ("metallb.io/loadBalancerIPs", "192.168.8.241"),
            ],
            "",
            "ConflictingRequest",
            "xdplb.io/ips asks for `192.168.8.240` but metallb.io/loadBalancerIPs asks for `192.168.8.241`; keep one",
        ),
        (
            &[
                ("xdplb.io/pool", "lan"),
                ("metallb.universe.tf/address-pool", "dmz"),
            ],
            "",
            "ConflictingRequest",
            "xdplb.io/pool asks for `lan` but metallb.universe.tf/address-pool asks for `dmz`; keep one",
        ),
        (
            &[
                ("xdplb.io/sharing-key", "dns"),
                ("metallb.io/allow-shared-ip", "web"),
            ],
            "",
            "ConflictingRequest",
            "xdplb.io/sharing-key asks for `dns` but metallb.io/allow-shared-ip asks for `web`; keep one",
        ),
        (
            &[("metallb.io/loadBalancerIPs", "192.168.8.240,192.168.8.241")],
            "",
            "InvalidAnnotation",
            "metallb.io/loadBalancerIPs: `192.168.8.240,192.168.8.241` names more than one IPv4 address; a Service gets one",
        ),
        (
            &[("xdplb.io/ips", "traefik")],
            "",
            "InvalidAnnotation",
            "xdplb.io/ips: `traefik` has `traefik`, which is not an IP address",
        ),
        (
            &[("xdplb.io/ips", " , ")],
            "",
            "InvalidAnnotation",
            "names no address",
        ),
        (
            &[("xdplb.io/pool", "")],
            "",
            "InvalidAnnotation",
            "xdplb.io/pool: `` is empty",
        ),
        (
            &[],
            "  loadBalancerIP: 192.168.8.999",
            "InvalidLoadBalancerIP",
            "spec.loadBalancerIP: `192.168.8.999` has `192.168.8.999`, which is not an IP address",
        ),
        (
            &[],
            "  loadBalancerIP: fd00::20",
            "IPv6Unsupported",
            "spec.loadBalancerIP: fd00::20: IPv6 is not supported yet",
        ),
        (
            &[],
            "  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack",
            "IPv6Unsupported",
            "spec.ipFamilies: IPv6 first: IPv6 is not supported yet",
        ),
        (
            &[],
            "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack",
            "IPv6Unsupported",
            "spec.ipFamilyPolicy: RequireDualStack: IPv6 is not supported yet",
        ),
    ];
    for (annotations, spec, reason, message) in cases {
        let error = request(annotations, spec).expect_err(message);
        assert_eq!(error.reason(), reason, "{error}");
        assert!(error.to_string().contains(message), "{error}");
    }
}

#[test]
fn prefer_dual_stack_with_ipv4_first_gets_ipv4() {
    let request = request(
        &[],
        "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: PreferDualStack",
    );
    assert!(request.is_ok(), "{request:?}");
}

#[test]
fn only_tcp_and_udp_ports() {
    let mut sctp = service(&[], "");
    if let Some(ports) = sctp.spec.as_mut().and_then(|spec| spec.ports.as_mut()) {
        ports[1].protocol = Some("SCTP".to_owned());
    }
    let error = super::request(&sctp).expect_err("SCTP");
    assert_eq!(error.reason(), "UnsupportedProtocol");
    assert_eq!(
        error.to_string(),
        "port 443/SCTP: only TCP and UDP are supported"
    );
    // What an existing address commits the Service to still counts its TCP port.
    let holding = holding(&sctp).expect("named");
    let ports: Vec<String> = holding.ports.iter().map(ToString::to_string).collect();
    assert_eq!(ports, ["80/TCP"]);
}

#[test]
fn holding_reads_a_broken_request_leniently() {
    let broken = service(
        &[
            ("metallb.universe.tf/allow-shared-ip", "dns"),
            ("xdplb.io/ips", "not-an-address"),
        ],
        "  externalTrafficPolicy: Local\n  selector: { app: web, tier: edge }",
    );
    assert!(super::request(&broken).is_err());
    let holding = holding(&broken).expect("named");
    assert_eq!(
        holding.sharing_key.map(|key| key.value),
        Some("dns".to_owned())
    );
    assert_eq!(
        holding.locality,
        Locality::Local {
            selector: "app=web,tier=edge".to_owned()
        }
    );
    assert_eq!(holding.address, None);
}

#[test]
fn responsibility_follows_type_and_class() {
    let ours = ClassPolicy::default();
    let default = ClassPolicy {
        default_class: true,
    };
    for (spec, policy, expected) in [
        (
            "  loadBalancerClass: xdplb.io/lb",
            ours,
            Responsibility::Ours,
        ),
        (
            "  loadBalancerClass: xdplb.io/lb",
            default,
            Responsibility::Ours,
        ),
        ("", ours, Responsibility::OtherClass),
        ("", default, Responsibility::Ours),
        (
            "  loadBalancerClass: io.cilium/l2-announcer",
            default,
            Responsibility::OtherClass,
        ),
    ] {
        assert_eq!(
            responsibility(policy, &service(&[], spec)),
            expected,
            "{spec} {policy:?}"
        );
    }
    let mut cluster_ip = service(&[], "  loadBalancerClass: xdplb.io/lb");
    if let Some(spec) = cluster_ip.spec.as_mut() {
        spec.type_ = Some("ClusterIP".to_owned());
    }
    assert_eq!(
        responsibility(default, &cluster_ip),
        Responsibility::NotLoadBalancer
    );
}

#[test]
fn status_addresses_are_the_ipv4_ingress_ips() {
    let mut service = service(&[], "");
    service.status = Some(
        serde_yaml::from_str(
            "loadBalancer:\n  ingress:\n    - { ip: 192.168.8.240, ipMode: VIP }\n    - { ip: \"fd00::1\" }\n    - { hostname: lb.example }",
        )
        .expect("a status"),
    );
    assert_eq!(status_addresses(&service), [ip("192.168.8.240")]);
}
