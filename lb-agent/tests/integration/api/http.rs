//! `/metrics`, `/healthz` and `/readyz` over real HTTP on 127.0.0.1.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::atomic::Ordering,
    time::Duration,
};

use lb_agent::telemetry::OwnershipChange;

use crate::support::{
    agent::{Agent, WEB},
    openmetrics,
};

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request with `Connection: close`.
fn request(agent: &Agent, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(agent.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    Reply {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[test]
fn health_and_readiness() {
    let agent = Agent::start();
    let health = request(&agent, "GET", "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let not_ready = request(&agent, "GET", "/readyz");
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.body.starts_with("not ready"));

    agent.runtime.ready.store(true, Ordering::Relaxed);
    let ready = request(&agent, "GET", "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
}

#[test]
fn unknown_paths_and_methods() {
    let agent = Agent::start();
    assert_eq!(request(&agent, "GET", "/").status, 404);
    let post = request(&agent, "POST", "/metrics");
    assert_eq!(post.status, 405);
    assert!(post.headers.contains("allow: get"));
}

fn scrape(agent: &Agent) -> std::collections::BTreeMap<String, openmetrics::Family> {
    let reply = request(agent, "GET", "/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        reply.headers
    );
    openmetrics::parse(&reply.body).unwrap_or_else(|error| panic!("{error}\n{}", reply.body))
}

#[test]
fn metrics_parse_and_carry_live_values() {
    let agent = Agent::start();
    agent
        .telemetry
        .ownership_changed(WEB.parse().expect("vip"), OwnershipChange::Acquired);
    agent.telemetry.observe_map_sync(Duration::from_millis(3));
    let families = scrape(&agent);

    for (name, kind) in [
        ("xdplb_ready", "gauge"),
        ("xdplb_vip_packets", "counter"),
        ("xdplb_vip_bytes", "counter"),
        ("xdplb_vip_owned", "gauge"),
        ("xdplb_packets", "counter"),
        ("xdplb_arp_requests", "counter"),
        ("xdplb_arp_replies", "counter"),
        ("xdplb_arp_gratuitous", "counter"),
        ("xdplb_arp_link_outages", "counter"),
        ("xdplb_ownership_changes", "counter"),
        ("xdplb_gossip_members", "gauge"),
        ("xdplb_gossip_dropped", "counter"),
        ("xdplb_map_sync_duration_seconds", "histogram"),
    ] {
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {:?}", families.keys()));
        assert_eq!(family.kind, kind, "{name}");
    }
    let value = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        families[family]
            .value(sample, labels)
            .unwrap_or_else(|| panic!("{sample}{labels:?} missing"))
    };
    let web = [("vip", WEB)];
    assert_eq!(
        value("xdplb_vip_packets", "xdplb_vip_packets_total", &web),
        10_000.0
    );
    assert_eq!(value("xdplb_vip_owned", "xdplb_vip_owned", &web), 1.0);
    assert_eq!(value("xdplb_ready", "xdplb_ready", &[]), 0.0);
    // Every data-path reason is exposed, zero or not.
    let reasons = &families["xdplb_packets"].samples;
    assert_eq!(reasons.len(), lb_common::reasons::NAMES.len());
    assert_eq!(
        value(
            "xdplb_packets",
            "xdplb_packets_total",
            &[("reason", "tx_encap")]
        ),
        6_000.0
    );
    assert_eq!(
        value(
            "xdplb_gossip_members",
            "xdplb_gossip_members",
            &[("state", "suspect")]
        ),
        1.0
    );
    for (reason, count) in [("forged", 3.0), ("replayed", 1.0)] {
        assert_eq!(
            value(
                "xdplb_gossip_dropped",
                "xdplb_gossip_dropped_total",
                &[("reason", reason)]
            ),
            count
        );
    }
    assert_eq!(
        value(
            "xdplb_arp_link_outages",
            "xdplb_arp_link_outages_total",
            &[]
        ),
        2.0
    );
    assert_eq!(
        value(
            "xdplb_ownership_changes",
            "xdplb_ownership_changes_total",
            &[("vip", WEB), ("change", "acquired")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "xdplb_map_sync_duration_seconds",
            "xdplb_map_sync_duration_seconds_count",
            &[]
        ),
        1.0
    );

    // Scrapes read the data path at scrape time.
    agent
        .runtime
        .maps
        .web_packets
        .store(12_345, Ordering::Relaxed);
    agent.runtime.ready.store(true, Ordering::Relaxed);
    let again = scrape(&agent);
    assert_eq!(
        again["xdplb_vip_packets"].value("xdplb_vip_packets_total", &web),
        Some(12_345.0)
    );
    assert_eq!(again["xdplb_ready"].value("xdplb_ready", &[]), Some(1.0));
}
