//! `lbctl migrate metallb` as a user runs it: files in, AddressPools out (applicable as
//! they are), warnings on stderr too, and errors that name the file and document.

use std::{
    io::Write as _,
    process::{Output, Stdio},
};

use lb_agent::{apis::address_pool::AddressPool, ipam::pool::Pool};
use serde::Deserialize as _;

use crate::support::lbctl::command;

const SEED_002: &str = include_str!("../../fixtures/metallb/seed-002.yaml");

/// Seed 002's pool and advertisement, in two files as a GitOps repository would hold
/// them; the advertisement pinned to one node.
fn seed_files() -> (&'static str, String) {
    let (pool, advertisement) = SEED_002.split_once("---\n").expect("two documents");
    let pinned = format!(
        "{advertisement}  nodeSelectors:\n    - matchLabels: {{ kubernetes.io/hostname: ichigo }}\n"
    );
    (pool, pinned)
}

fn lbctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lbctl");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("lbctl finishes")
}

fn pools(yaml: &str) -> Vec<AddressPool> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| AddressPool::deserialize(document).expect("an AddressPool"))
        .collect()
}

#[test]
fn seed_files_become_address_pools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, advertisement) = seed_files();
    let (pool_file, l2_file) = (dir.path().join("pool.yaml"), dir.path().join("l2.yaml"));
    std::fs::write(&pool_file, pool).expect("write");
    std::fs::write(&l2_file, advertisement).expect("write");
    let output = lbctl(
        &[
            "migrate",
            "metallb",
            pool_file.to_str().unwrap(),
            l2_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).expect("UTF-8");
    let converted = pools(&yaml);
    assert_eq!(converted.len(), 1);
    Pool::from_resource(&converted[0]).expect("the IPAM accepts it");
    assert_eq!(converted[0].spec.addresses, ["192.168.7.230-192.168.7.235"]);
    let selector = converted[0]
        .spec
        .announcement
        .as_ref()
        .and_then(|announcement| announcement.node_selector.as_ref())
        .and_then(|selector| selector.match_labels.as_ref())
        .expect("the node selector carried over");
    assert_eq!(selector["kubernetes.io/hostname"], "ichigo");
    assert!(yaml.contains("#   metallb.io/loadBalancerIPs"), "{yaml}");
    assert!(
        yaml.lines()
            .all(|line| line.len() <= 88 || !line.starts_with('#')),
        "{yaml}"
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn stdin_works_and_warnings_reach_stderr() {
    let (pool, _) = seed_files();
    let input = format!(
        "{pool}---\napiVersion: metallb.io/v1beta1\nkind: BGPPeer\nmetadata: {{ name: router }}\n"
    );
    let output = lbctl(&["migrate", "metallb", "-"], Some(&input));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains("warning: BGPPeer router (<stdin> (document 2)) is not converted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: The input holds no L2Advertisement"),
        "{stderr}"
    );
    assert_eq!(
        pools(&String::from_utf8(output.stdout).expect("UTF-8")).len(),
        1
    );
}

#[test]
fn bad_input_exits_1_and_missing_files_exit_2() {
    let (_, advertisement) = seed_files();
    let output = lbctl(&["migrate", "metallb", "-"], Some(&advertisement));
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains("error: the input holds no IPAddressPool to convert"),
        "{stderr}"
    );
    let output = lbctl(&["migrate", "metallb", "/nonexistent/metallb.yaml"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains("/nonexistent/metallb.yaml: cannot read the file: No such file"),
        "{stderr}"
    );
    let output = lbctl(&["migrate", "metallb"], None);
    assert_eq!(output.status.code(), Some(2));
}

/// `input` converted from stdin: the pools printed and the warnings.
fn converted(input: &str) -> (String, String) {
    let output = lbctl(&["migrate", "metallb", "-"], Some(input));
    assert_eq!(output.status.code(), Some(0));
    let text = |bytes| String::from_utf8(bytes).expect("UTF-8");
    (text(output.stdout), text(output.stderr))
}

/// Pools MetalLB would refuse for sharing addresses convert, with a warning naming both.
#[test]
fn overlapping_pools_are_converted_with_a_warning() {
    let input = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: a, namespace: metallb-system }
spec: { addresses: [192.168.8.240-192.168.8.250] }
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: b, namespace: metallb-system }
spec: { addresses: [192.168.8.248/29] }
";
    let output = lbctl(&["migrate", "metallb", "-"], Some(input));
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains("Pools a and b share addresses from 192.168.8.248 on")
            && stderr.contains("MetalLB refuses overlapping pools"),
        "{stderr}"
    );
    assert_eq!(
        pools(&String::from_utf8(output.stdout).expect("UTF-8")).len(),
        2
    );
}

/// A pool MetalLB announced by BGP becomes an ARP-announced one, and the warning says so
/// plainly.
#[test]
fn a_bgp_pool_is_said_to_become_an_arp_pool() {
    let input = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: routed, namespace: metallb-system }
spec: { addresses: [10.96.100.0/28] }
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: { name: uplink, namespace: metallb-system }
spec: { ipAddressPools: [routed] }
";
    let (_, stderr) = converted(input);
    assert!(
        stderr.contains("MetalLB announced these pools by BGP")
            && stderr.contains("becomes an ARP-announced pool")
            && !stderr.contains("MetalLB announces no pool"),
        "{stderr}"
    );
}
