use std::path::PathBuf;

use kube::{CustomResourceExt as _, Resource as _};
use serde_json::{Value, json};

use super::*;

/// The CRD as committed under `deploy/crds/addresspools.yaml`.
fn crd_yaml() -> String {
    let crd = serde_yaml::to_string(&AddressPool::crd()).expect("a CRD serializes to YAML");
    format!(
        "# Generated from lb-agent/src/apis/address_pool.rs; do not edit. Regenerate with\n\
         # XDPLB_BLESS=1 cargo test -p lb-agent --lib crd_matches_committed\n{crd}"
    )
}

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/addresspools.yaml")
}

/// Fails when deploy/crds/addresspools.yaml no longer matches the Rust types; with
/// `XDPLB_BLESS=1` it rewrites the file instead.
#[test]
fn crd_matches_committed() {
    let path = committed_path();
    let generated = crd_yaml();
    if std::env::var_os("XDPLB_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from the AddressPool types in lb-agent/src/apis/address_pool.rs.\n\
         Regenerate it with: XDPLB_BLESS=1 cargo test -p lb-agent --lib crd_matches_committed",
        path.display()
    );
}

fn crd_json() -> Value {
    serde_json::to_value(AddressPool::crd()).expect("CRD to JSON")
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_crd_is_the_agreed_cluster_scoped_resource() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "addresspools.xdplb.io");
    assert_eq!(crd["spec"]["group"], "xdplb.io");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["kind"], "AddressPool");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ap", "pool"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|column| column["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        columns,
        ["Addresses", "Auto Assign", "Assigned", "Available", "Age"]
    );
    assert_eq!(AddressPool::api_version(&()), "xdplb.io/v1alpha1");
}

#[test]
fn the_committed_crd_parses_as_a_crd() {
    let text = std::fs::read_to_string(committed_path()).expect("committed CRD");
    let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml::from_str(&text).expect("a CustomResourceDefinition");
    assert_eq!(parsed, AddressPool::crd());
}

#[test]
fn the_agreed_example_deserializes_with_defaults() {
    let pool: AddressPool = serde_yaml::from_str(
        r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: lan }
spec:
  addresses: ["192.168.8.240-192.168.8.250", "172.16.200.0/28", "172.16.200.53/32"]
  serviceAllocation:
    priority: 0
    namespaces: [edge]
    namespaceSelector: { matchLabels: { lan: "true" } }
    serviceSelector: { matchExpressions: [{ key: app, operator: In, values: [traefik] }] }
  announcement:
    nodeSelector: { matchLabels: { kubernetes.io/os: linux } }
    interfaces: [eth0]
    garp: { repeats: 5 }
status:
  assigned: 2
  available: 9
"#,
    )
    .expect("the agreed shape");
    assert!(pool.spec.auto_assign, "autoAssign defaults to true");
    assert!(!pool.spec.avoid_buggy_ips);
    let allocation = pool
        .spec
        .service_allocation
        .as_ref()
        .expect("serviceAllocation");
    assert_eq!(allocation.priority, Some(0));
    assert_eq!(allocation.namespaces, ["edge"]);
    let garp = pool
        .spec
        .announcement
        .as_ref()
        .and_then(|a| a.garp)
        .expect("garp");
    assert_eq!(
        garp,
        Garp {
            repeats: 5,
            interval_milliseconds: 500,
            refresh_seconds: 60
        }
    );
    assert_eq!(pool.status.as_ref().map(|s| s.available), Some(9));
    let round_trip = serde_json::to_value(&pool.spec).expect("to JSON");
    assert_eq!(
        round_trip["avoidBuggyIPs"], false,
        "MetalLB's spelling of the key"
    );
}

/// The API server's verdict on `spec`, from the committed schema's CEL rules (defaults
/// applied first, as admission does): the failed messages, empty when admitted.
fn cel_errors(spec: Value) -> Vec<String> {
    let object = json!({
        "apiVersion": "xdplb.io/v1alpha1",
        "kind": "AddressPool",
        "metadata": { "name": "test" },
        "spec": spec,
    });
    match kube_cel::Validator::new().validate(&schema(), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

#[test]
fn address_rules_admit_cidrs_and_ranges() {
    for entry in [
        "192.168.8.240-192.168.8.250",
        "192.168.8.240 - 192.168.8.250",
        "192.168.7.230-192.168.7.230",
        "192.168.64.100-192.168.64.110",
        "172.16.200.0/24",
        "172.16.200.53/32",
        "192.168.8.240/29",
        "10.0.0.0/8",
        "1.0.0.0/8",
        "126.0.0.0/8",
        "128.0.0.0/2",
        "223.255.255.255/32",
        "1.0.0.0-126.255.255.255",
    ] {
        assert_eq!(
            cel_errors(json!({ "addresses": [entry] })),
            Vec::<String>::new(),
            "{entry}"
        );
    }
}

#[test]
fn address_rules_reject_bad_entries_with_their_reason() {
    for (entry, message) in [
        ("192.168.8.250-192.168.8.240", "the range is reversed"),
        ("192.168.8.241/29", "the CIDR has host bits set"),
        ("1.2.3.4/0", "the CIDR has host bits set"),
        ("fd00::/64", "IPv6 is not supported yet"),
        ("fd00::1-fd00::9", "IPv6 is not supported yet"),
        ("192.168.8.240", "must be an IPv4 CIDR"),
        ("192.168.8.256/32", "must be an IPv4 CIDR"),
        ("192.168.08.1/32", "must be an IPv4 CIDR"),
        ("192.168.8.0/33", "must be an IPv4 CIDR"),
        ("lan", "must be an IPv4 CIDR"),
    ] {
        let errors = cel_errors(json!({ "addresses": [entry] }));
        assert_eq!(errors.len(), 1, "{entry}: {errors:?}");
        assert!(errors[0].contains(message), "{entry}: {errors:?}");
    }
}

/// The API server refuses what the IPAM and the standalone file refuse, in their words
/// (the IPAM's message for the entry, which names its lowest address that is not
/// unicast).
#[test]
fn address_rules_refuse_entries_that_are_not_unicast_as_the_ipam_does() {
    for (entry, address) in [
        ("0.0.0.0/0", "0.0.0.0"),
        ("0.0.0.0/32", "0.0.0.0"),
        ("127.0.0.0/30", "127.0.0.0"),
        ("224.0.0.0/30", "224.0.0.0"),
        ("96.0.0.0/3", "127.0.0.0"),
        ("10.0.0.1-127.0.0.1", "127.0.0.0"),
        ("127.0.0.9 - 127.0.0.12", "127.0.0.9"),
        ("192.168.8.0-224.0.0.0", "224.0.0.0"),
        ("239.255.255.255 - 240.0.0.1", "239.255.255.255"),
        ("255.255.255.255/32", "255.255.255.255"),
    ] {
        let ipam = entry
            .parse::<crate::ipam::addresses::AddressRange>()
            .expect_err(entry)
            .problem
            .to_string();
        assert!(
            ipam.starts_with(&format!("`{address}` is ")),
            "{entry}: {ipam}"
        );
        let errors = cel_errors(json!({ "addresses": [entry] }));
        assert_eq!(errors.len(), 1, "{entry}: {errors:?}");
        assert!(
            errors[0].contains(&ipam),
            "{entry}: {errors:?} lacks {ipam}"
        );
    }
}

#[test]
fn garp_rules_bound_the_interval_and_the_refresh() {
    let with_garp = |garp: Value| {
        cel_errors(json!({
            "addresses": ["192.168.8.240/29"],
            "announcement": { "garp": garp },
        }))
    };
    assert_eq!(with_garp(json!({})), Vec::<String>::new(), "defaults pass");
    assert_eq!(
        with_garp(json!({ "intervalMilliseconds": 100, "refreshSeconds": 0 })),
        Vec::<String>::new()
    );
    let fast = with_garp(json!({ "intervalMilliseconds": 50 }));
    assert!(
        fast.len() == 1 && fast[0].contains("intervalMilliseconds must be at least 100"),
        "{fast:?}"
    );
    let short =
        with_garp(json!({ "repeats": 10, "intervalMilliseconds": 1000, "refreshSeconds": 5 }));
    assert!(
        short.len() == 1 && short[0].contains("refreshSeconds must be 0"),
        "{short:?}"
    );
}

#[test]
fn the_schema_bounds_what_cel_must_walk() {
    let spec = &schema()["properties"]["spec"]["properties"];
    let addresses = &spec["addresses"];
    assert_eq!(addresses["minItems"], 1, "a pool lists at least one entry");
    assert_eq!(addresses["maxItems"], MAX_ADDRESS_ENTRIES);
    assert_eq!(addresses["items"]["maxLength"], MAX_ADDRESS_LENGTH);
    assert_eq!(addresses["x-kubernetes-list-type"], "set");
    let priority = &spec["serviceAllocation"]["properties"]["priority"];
    assert_eq!(priority["minimum"].as_f64(), Some(0.0));
    assert_eq!(spec["autoAssign"]["default"], true);
}

/// Every `format` in `schema` and its subschemas.
fn formats(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(fields) => {
            if let Some(Value::String(format)) = fields.get("format") {
                found.push(format.clone());
            }
            fields.values().for_each(|value| formats(value, found));
        }
        Value::Array(items) => items.iter().for_each(|item| formats(item, found)),
        _ => {}
    }
}

/// The API server warns "unrecognized format" (and `helm install` repeats it) for any
/// format outside its list (k8s.io/apiextensions-apiserver, validation/formats.go).
#[test]
fn the_schema_uses_only_formats_kubernetes_knows() {
    const KNOWN: [&str; 28] = [
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "binary",
        "password",
        "date",
        "date-time",
        "datetime",
        "duration",
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
    ];
    let mut found = Vec::new();
    formats(&schema(), &mut found);
    let unknown: Vec<&String> = found
        .iter()
        .filter(|format| !KNOWN.contains(&format.as_str()))
        .collect();
    assert_eq!(unknown, Vec::<&String>::new(), "all formats: {found:?}");
    assert!(
        found.iter().any(|format| format == "date-time"),
        "the walk reaches the conditions' lastTransitionTime: {found:?}"
    );
    let garp = &schema()["properties"]["spec"]["properties"]["announcement"]["properties"]["garp"]
        ["properties"]["repeats"];
    assert_eq!(garp["type"], "integer");
    assert_eq!(
        garp["minimum"].as_f64(),
        Some(0.0),
        "the bound stays: {garp}"
    );
}
