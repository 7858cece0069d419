use super::*;
use crate::apis::address_pool::AddressPool;

fn resource(yaml: &str) -> AddressPool {
    serde_yaml::from_str(yaml).expect("an AddressPool")
}

fn pool(yaml: &str) -> Pool {
    Pool::from_resource(&resource(yaml)).expect("a valid pool")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

const DEDICATED: &str = r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: edge-vips }
spec:
  addresses: ["172.16.200.0/24"]
  serviceAllocation:
    priority: 10
    namespaces: [edge, internal-dns]
    namespaceSelector: { matchLabels: { lan-exposed: "true" } }
    serviceSelector:
      matchExpressions: [{ key: app.kubernetes.io/name, operator: In, values: [traefik, coredns] }]
"#;

#[test]
fn a_resource_compiles_to_a_pool() {
    let edge = pool(DEDICATED);
    assert_eq!(edge.name, "edge-vips");
    assert_eq!(edge.addresses.len(), 256);
    assert!(edge.auto_assign);
    assert_eq!(edge.priority, Some(10));
    assert!(edge.is_restricted());
    let general =
        pool("metadata: { name: lan }\nspec: { addresses: [192.168.8.240-192.168.8.250] }");
    assert!(!general.is_restricted());
    assert_eq!(general.priority, None);
}

#[test]
fn invalid_resources_name_the_field() {
    let bad_addresses = resource(
        "metadata: { name: lan }\nspec: { addresses: [192.168.8.250-192.168.8.240, fd00::/64] }",
    );
    let error = Pool::from_resource(&bad_addresses).expect_err("invalid");
    assert_eq!(error.reason(), "InvalidAddresses");
    assert_eq!(
        error.to_string(),
        "spec.addresses: `192.168.8.250-192.168.8.240`: the range is reversed: 192.168.8.250 is above 192.168.8.240; `fd00::/64`: IPv6 is not supported yet"
    );
    let bad_selector = resource(
        "metadata: { name: lan }\nspec:\n  addresses: [192.168.8.240/29]\n  serviceAllocation:\n    serviceSelector: { matchExpressions: [{ key: app, operator: Matches }] }",
    );
    let error = Pool::from_resource(&bad_selector).expect_err("invalid");
    assert_eq!(error.reason(), "InvalidSelector");
    assert!(
        error
            .to_string()
            .starts_with("spec.serviceAllocation.serviceSelector: "),
        "{error}"
    );
}

#[test]
fn admission_checks_every_restriction() {
    let edge = pool(DEDICATED);
    let exposed = labels(&[("lan-exposed", "true")]);
    let traefik = labels(&[("app.kubernetes.io/name", "traefik")]);
    assert_eq!(edge.admits("edge", &exposed, &traefik), Ok(()));
    assert_eq!(
        edge.admits("apps", &exposed, &traefik),
        Err(Refusal::Namespace {
            pool: "edge-vips".to_owned(),
            allowed: "edge, internal-dns".to_owned()
        })
    );
    assert_eq!(
        edge.admits("edge", &Labels::new(), &traefik),
        Err(Refusal::NamespaceSelector {
            pool: "edge-vips".to_owned(),
            namespace: "edge".to_owned()
        })
    );
    assert_eq!(
        edge.admits(
            "edge",
            &exposed,
            &labels(&[("app.kubernetes.io/name", "grafana")])
        ),
        Err(Refusal::ServiceSelector {
            pool: "edge-vips".to_owned()
        })
    );
    let open = pool("metadata: { name: lan }\nspec: { addresses: [192.168.8.240/29] }");
    assert_eq!(
        open.admits("anything", &Labels::new(), &Labels::new()),
        Ok(())
    );
}

#[test]
fn preference_is_priority_then_dedicated_then_name() {
    let mut pools = [
        pool("metadata: { name: a-general }\nspec: { addresses: [10.0.1.0/24] }"),
        pool(
            "metadata: { name: b-dedicated }\nspec: { addresses: [10.0.2.0/24], serviceAllocation: { namespaces: [edge] } }",
        ),
        pool(
            "metadata: { name: c-priority-5 }\nspec: { addresses: [10.0.3.0/24], serviceAllocation: { priority: 5 } }",
        ),
        pool(
            "metadata: { name: d-priority-1 }\nspec: { addresses: [10.0.4.0/24], serviceAllocation: { priority: 1 } }",
        ),
        pool(
            "metadata: { name: e-priority-0 }\nspec: { addresses: [10.0.5.0/24], serviceAllocation: { priority: 0 } }",
        ),
        pool(
            "metadata: { name: f-priority-5-dedicated }\nspec: { addresses: [10.0.6.0/24], serviceAllocation: { priority: 5, namespaces: [edge] } }",
        ),
        pool("metadata: { name: 0-general }\nspec: { addresses: [10.0.7.0/24] }"),
    ];
    pools.sort_by(|a, b| a.preference(b));
    let order: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "e-priority-0",
            "d-priority-1",
            "f-priority-5-dedicated",
            "c-priority-5",
            "b-dedicated",
            "0-general",
            "a-general",
        ]
    );
}

#[test]
fn overlaps_are_reported_for_both_pools() {
    let pools = [
        pool("metadata: { name: control }\nspec: { addresses: [192.168.64.100-192.168.64.110] }"),
        pool("metadata: { name: app }\nspec: { addresses: [192.168.64.120-192.168.64.140] }"),
        pool("metadata: { name: sloppy }\nspec: { addresses: [192.168.64.96/27] }"),
    ];
    let found = overlaps(&pools);
    let described: BTreeMap<&str, Vec<String>> = found
        .iter()
        .map(|(pool, list)| (pool.as_str(), list.iter().map(Overlap::message).collect()))
        .collect();
    assert_eq!(
        described,
        BTreeMap::from([
            (
                "app",
                vec!["shares addresses with pool `sloppy`, from 192.168.64.120 on".to_owned()]
            ),
            (
                "control",
                vec!["shares addresses with pool `sloppy`, from 192.168.64.100 on".to_owned()]
            ),
            (
                "sloppy",
                vec![
                    "shares addresses with pool `app`, from 192.168.64.120 on".to_owned(),
                    "shares addresses with pool `control`, from 192.168.64.100 on".to_owned(),
                ]
            ),
        ])
    );
    assert!(overlaps(&pools[..2]).is_empty());
}
