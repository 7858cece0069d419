//! A real Prometheus watching the lab (Kubernetes mode, against the API double): it
//! scrapes every agent over the management network and evaluates deploy/monitoring's
//! rules with test durations (`for:` 3 s, ranges and offsets 10 s). The lab goes
//! through a healthy spell (no alert may even go pending), a forged-gossip burst, an API
//! server outage, an exhausted address pool, a `Local` Service whose only pod runs on a
//! node excluded from announcing (no owner), the web pods all failing readiness under
//! client load (drops), forwarding switched off on the web VIP's owner under client load
//! (FIB fallback), an owner failover and a partition; after each fault the alerts it
//! should raise must go pending, then fire, no other alert may fire, and everything must
//! resolve once the fault is healed. Last, every query of the Grafana dashboard runs
//! against this Prometheus and must return data.
//!
//! Run with `cargo test -p testbed --test privileged monitoring:: -- --nocapture` to
//! see the `PROMETHEUS` lines (figures for RELIABILITY.md).

use std::{
    collections::BTreeSet,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use lb_agent::election::EXCLUDE_LABEL;
use serde_json::{Value, json};
use testbed::lab::{
    App, Cluster, DNS_VIP, Failure, Pace, Service, WEB_VIP,
    prometheus::{AlertTimes, Expected, Prometheus, deployed_rules, shortened_rules},
    requests_during, workspace_root,
};

use crate::failover::send_bad_gossip;

const NODES: usize = 3;
/// Every rule's `for:` and every range and offset, in the lab.
const HOLD: &str = "3s";
const WINDOW: &str = "10s";
/// Longer than the window, so a leftover from the start would show.
const HEALTHY: Duration = Duration::from_secs(15);
/// The bound on each fault's alerts firing, and on their resolving after the heal.
const WITHIN: Duration = Duration::from_secs(45);
/// What the dashboard's `$__rate_interval` and `$__range` stand for: the whole test.
const DASHBOARD_RANGE: &str = "10m";
/// The pool the IPAM phase exhausts: two addresses, three Services asking.
const SMALL_POOL: &str = "small";
const POOL_SERVICES: [&str; 3] = ["pool-a", "pool-b", "pool-c"];
/// The client's requests to the web VIP during the data-path faults: a new connection
/// every 100 ms, each given 500 ms (no SYN is retransmitted), for a minute at most
/// (`requests_during`): at most 600 connections.
const CLIENT_PACE: Pace = Pace {
    every: Duration::from_millis(100),
    timeout: Duration::from_millis(500),
};

#[test]
fn prometheus_alerts_on_each_fault_and_answers_every_dashboard_query() -> anyhow::Result<()> {
    Cluster::test_kubernetes(
        "prometheus_alerts_on_each_fault_and_answers_every_dashboard_query",
        NODES,
        Service::homelab(),
        &[],
        scenario,
    )
}

fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let rules = shortened_rules(&deployed_rules()?, HOLD, WINDOW)?;
    let prometheus = Prometheus::start(cluster, &rules)?;
    for _ in 0..5 {
        cluster.curl(WEB_VIP, None)?;
    }
    let owned = prometheus.query("count(xdplb_vip_owned == 1)")?;
    ensure!(
        value(&owned) == Some(2.0),
        "Prometheus should see the 2 VIPs owned once each: {owned:?}"
    );
    prometheus.expect_quiet(HEALTHY)?;
    println!("PROMETHEUS healthy: no alert pending or firing for {HEALTHY:?}");

    forged_gossip(cluster, &prometheus)?;
    api_outage(cluster, &prometheus)?;
    exhausted_pool(cluster, &prometheus)?;
    local_policy_on_excluded_node(cluster, &prometheus)?;
    unready_backends(cluster, &prometheus)?;
    forwarding_off(cluster, &prometheus)?;
    owner_failover(cluster, &prometheus)?;
    split(cluster, &prometheus)?;
    dashboard_queries(&prometheus)
}

/// The first sample's value of an instant query's answer.
fn value(samples: &[Value]) -> Option<f64> {
    samples.first()?["value"][1].as_str()?.parse().ok()
}

fn report(fault: &str, times: &AlertTimes) {
    for (alert, firing) in &times.firing {
        println!(
            "PROMETHEUS {fault}: {alert} pending after {:.1?}, firing after {firing:.1?}, with {:?}",
            times.pending.get(alert),
            label_sets(times, alert)
        );
    }
    println!(
        "PROMETHEUS {fault}: every alert resolved {:.1?} after the heal; pending only: {:?}",
        times.resolved, times.stray_pending
    );
}

/// Each label set `alert` fired with, less the labels the rule itself adds.
fn label_sets(times: &AlertTimes, alert: &str) -> Vec<String> {
    let from_series = |name: &str| !["alertname", "severity"].contains(&name);
    times
        .fired_with
        .get(alert)
        .into_iter()
        .flatten()
        .map(|labels| {
            let shown: Vec<String> = labels
                .iter()
                .filter(|(name, _)| from_series(name))
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            shown.join(" ")
        })
        .collect()
}

fn forged_gossip(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let started = Instant::now();
    send_bad_gossip(cluster, "node1", "node2", 3)?;
    // The burst is over at once: the alert resolves when it leaves the window.
    let expected =
        ["forged", "replayed", "wrong_key"].map(|reason| [("node", "node2"), ("reason", reason)]);
    let expected = expected
        .each_ref()
        .map(|labels| ("XdplbGossipAuthFailures", &labels[..]));
    let times = prometheus.expect_alerts(started, &expected, &[], WITHIN, || Ok(()))?;
    report("forged gossip", &times);
    Ok(())
}

/// The API server away for a few seconds (shorter than the IPAM Lease's renew
/// deadline): every agent's Lease rounds fail and are counted as errors.
fn api_outage(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let api = cluster.api_double()?;
    let started = Instant::now();
    api.stop();
    let expected = [("XdplbErrors", &[("component", "ipam_lease")][..])];
    let times = prometheus.expect_alerts(started, &expected, &[], WITHIN, || {
        api.resume();
        Ok(())
    });
    api.resume();
    report("API server outage", &times?);
    Ok(())
}

fn pool_service(name: &str, load_balancer: bool) -> Value {
    let spec = if load_balancer {
        json!({ "type": "LoadBalancer", "loadBalancerClass": "xdplb.io/lb",
                "ports": [{ "name": "tcp-80", "port": 80, "protocol": "TCP", "targetPort": 80 }] })
    } else {
        json!({ "type": "ClusterIP",
                "ports": [{ "name": "tcp-80", "port": 80, "protocol": "TCP", "targetPort": 80 }] })
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default",
                      "annotations": { "xdplb.io/pool": SMALL_POOL } },
        "spec": spec,
    })
}

/// Three Services ask a pool of two addresses; the heal turns them into ClusterIP
/// Services, which gives every address back.
fn exhausted_pool(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let api = cluster.api_double()?;
    let started = Instant::now();
    api.put(
        "addresspools",
        json!({
            "apiVersion": "xdplb.io/v1alpha1",
            "kind": "AddressPool",
            "metadata": { "name": SMALL_POOL },
            "spec": { "addresses": ["172.16.201.1-172.16.201.2"], "autoAssign": false },
        }),
    )?;
    for name in POOL_SERVICES {
        api.put("services", pool_service(name, true))?;
    }
    let expected = [
        (
            "XdplbAddressPoolNearlyExhausted",
            &[("pool", SMALL_POOL)][..],
        ),
        (
            "XdplbAddressAllocationFailures",
            &[("pool", SMALL_POOL), ("reason", "PoolExhausted")][..],
        ),
    ];
    let times = prometheus.expect_alerts(started, &expected, &[], WITHIN, || {
        for name in POOL_SERVICES {
            api.put("services", pool_service(name, false))?;
        }
        Ok(())
    })?;
    report("exhausted pool", &times);
    let free = prometheus.query(&format!(
        r#"sum(xdplb_ipam_pool_addresses{{pool="{SMALL_POOL}",state="available"}})"#
    ))?;
    ensure!(
        value(&free) == Some(2.0),
        "{SMALL_POOL} not free again: {free:?}"
    );
    Ok(())
}

/// The DNS Service switched to `externalTrafficPolicy: Local` while its only pod runs
/// on a node labelled to stay out of external load balancers (kubeadm labels its
/// control-plane nodes so): only that node may announce the VIP and it must not, so
/// nobody does, while every agent still reports the pod ready. The heal puts the policy
/// back; the label goes afterwards.
fn local_policy_on_excluded_node(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let api = cluster.api_double()?;
    let node = only_endpoint_node(cluster, "dns")?;
    api.edit("nodes", &node, |object| {
        object["metadata"]["labels"][EXCLUDE_LABEL] = json!("");
    })?;
    cluster.wait_settled()?;
    let set_policy = |policy: &str| {
        api.edit("services", "dns", |object| {
            object["spec"]["externalTrafficPolicy"] = json!(policy);
        })
    };
    let started = Instant::now();
    set_policy("Local")?;
    let vip = DNS_VIP.to_string();
    let expected = [("XdplbVipWithoutOwner", &[("vip", vip.as_str())][..])];
    let times =
        prometheus.expect_alerts(started, &expected, &[], WITHIN, || set_policy("Cluster"))?;
    report("Local policy, pod on an excluded node", &times);
    api.edit("nodes", &node, |object| {
        if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
            labels.remove(EXCLUDE_LABEL);
        }
    })?;
    cluster.wait_settled().map(drop)
}

/// The node of every endpoint of Service `name`, which must be one node.
fn only_endpoint_node(cluster: &Cluster, name: &str) -> anyhow::Result<String> {
    let slice = cluster
        .api_double()?
        .objects("endpointslices")
        .into_iter()
        .find(|slice| slice["metadata"]["name"] == name)
        .with_context(|| format!("no EndpointSlice {name}"))?;
    let nodes: BTreeSet<&str> = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|endpoint| endpoint["nodeName"].as_str())
        .collect();
    match Vec::from_iter(nodes).as_slice() {
        [node] => Ok((*node).to_owned()),
        nodes => bail!("{name}'s endpoints are not on one node: {nodes:?}"),
    }
}

/// Every web pod fails its readiness probe while the client keeps connecting: the owner
/// still answers ARP for the VIP (a `Cluster` Service needs no endpoint for that) and
/// its XDP program drops each connection's SYN for want of a backend.
fn unready_backends(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let api = cluster.api_double()?;
    let set_ready = |ready: bool| {
        api.edit("endpointslices", "web", |slice| {
            for endpoint in slice["endpoints"].as_array_mut().into_iter().flatten() {
                endpoint["conditions"] =
                    json!({ "ready": ready, "serving": ready, "terminating": false });
            }
        })
    };
    let owner = cluster.owner(WEB_VIP)?;
    let expected = [(
        "XdplbVipTrafficDropped",
        &[("node", owner.as_str()), ("reason", "drop_no_backend")][..],
    )];
    client_fault(
        cluster,
        prometheus,
        "web pods unready",
        &expected,
        || set_ready(false),
        || set_ready(true),
    )
}

/// `net.ipv4.ip_forward=0` on the web VIP's owner (what a `sysctl --system` with a
/// hardening profile does after the agent set forwarding on at start) while the client
/// keeps connecting: the XDP program's FIB lookups answer only with forwarding on, so
/// the owner hands every tunnelled packet to the kernel, which drops it as well.
fn forwarding_off(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    let netns = &cluster.node(&owner)?.netns;
    let set_forwarding = |on: u8| {
        netns
            .run(&format!("echo {on} > /proc/sys/net/ipv4/ip_forward"))
            .map(drop)
    };
    let expected = [("XdplbFibFallbackHigh", &[("node", owner.as_str())][..])];
    client_fault(
        cluster,
        prometheus,
        "forwarding off on the owner",
        &expected,
        || set_forwarding(0),
        || set_forwarding(1),
    )
}

/// `fault` while the client connects to the web VIP at [`CLIENT_PACE`], with the
/// alerts of `expected` and no other, healed by `heal`; the client must have lost
/// requests to the fault and be served again by the end.
fn client_fault(
    cluster: &Cluster,
    prometheus: &Prometheus,
    name: &str,
    expected: &[Expected<'_>],
    fault: impl FnOnce() -> anyhow::Result<()>,
    heal: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    let (times, requests) = requests_during(&cluster.lab().client, target, CLIENT_PACE, || {
        let started = Instant::now();
        fault()?;
        prometheus.expect_alerts(started, expected, &[], WITHIN, heal)
    })?;
    report(name, &times);
    let failed = requests.failures().len();
    let last = requests.0.last().context("the client sent no request")?;
    println!(
        "PROMETHEUS {name}: {failed} of {} client requests failed",
        requests.0.len()
    );
    ensure!(
        failed > 0,
        "{name}: the client lost no request to the fault"
    );
    ensure!(
        last.result.is_ok(),
        "{name}: the client's last request failed: {last:?}"
    );
    Ok(())
}

/// The web VIP's owner's agent killed: it is down for Prometheus and in the gossip; the
/// VIP moves, and no moment without an owner lasts long enough to fire.
fn owner_failover(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    let started = Instant::now();
    cluster.fail(&owner, Failure::AgentKilled)?;
    let new_owner = cluster.wait_new_owner(WEB_VIP, &owner)?;
    let expected = [
        ("XdplbAgentNotReady", &[("node", owner.as_str())][..]),
        ("XdplbGossipMembersUnhealthy", &[("state", "down")][..]),
    ];
    let times = prometheus.expect_alerts(started, &expected, &[], WITHIN, || {
        cluster.restore(&owner, WEB_VIP)
    })?;
    report("owner failover", &times);
    let owned = prometheus.query(&format!(
        r#"max_over_time(xdplb_vip_owned{{vip="{WEB_VIP}",node="{new_owner}"}}[1m]) == 1"#
    ))?;
    ensure!(
        !owned.is_empty(),
        "Prometheus never saw {new_owner} own {WEB_VIP}"
    );
    Ok(())
}

/// The web VIP's owner cut off the LAN (links up): both sides own its VIPs until the
/// heal. The cut-off node cannot reach the API server meanwhile, so its Lease rounds
/// fail: XdplbErrors may fire too.
fn split(cluster: &Cluster, prometheus: &Prometheus) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    let started = Instant::now();
    let partition = cluster.lab().partition(&[cluster.node(&owner)?])?;
    let vip = WEB_VIP.to_string();
    let expected = [
        ("XdplbVipMultipleOwners", &[("vip", vip.as_str())][..]),
        ("XdplbGossipMembersUnhealthy", &[("state", "down")][..]),
    ];
    let times =
        prometheus.expect_alerts(started, &expected, &["XdplbErrors"], WITHIN, move || {
            partition.heal()
        })?;
    report("partition", &times);
    cluster.wait_settled().map(drop)
}

/// Every query of every panel of the dashboard, with Grafana's interval variables set
/// to the whole test, must return at least one series.
fn dashboard_queries(prometheus: &Prometheus) -> anyhow::Result<()> {
    let path = workspace_root().join("deploy/monitoring/xdplb-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| path.display().to_string())?;
    let mut empty = Vec::new();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let expr = expr
                .replace("$__rate_interval", DASHBOARD_RANGE)
                .replace("$__range", DASHBOARD_RANGE);
            let result = prometheus.query(&expr)?;
            queries += 1;
            let title = panel["title"].as_str().unwrap_or("?");
            println!(
                "PROMETHEUS dashboard {title:?} {}: {} series",
                target["refId"],
                result.len()
            );
            if result.is_empty() {
                empty.push(format!("{title:?}: {expr}"));
            }
        }
    }
    ensure!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
    println!("PROMETHEUS dashboard: all {queries} queries returned data");
    Ok(())
}
