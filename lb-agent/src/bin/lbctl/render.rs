//! `-o table`: what each command prints for people.

mod cluster;

use std::fmt::Write as _;

use lb_agent::{
    explain::{Explanation, Outcome},
    status::{
        AgentStatus, BackendCounters, CandidateStatus, FlowList, MemberState, MemberStatus,
        ServiceStatus, VipStatus,
    },
};

use lb_common::reasons;

pub use self::cluster::{pools, services};
use crate::table::Table;

const NONE: &str = "-";

fn or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| NONE.to_owned(), |value| value.to_string())
}

/// `1536` -> `1.5 KiB`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| NONE.to_owned(), |share| format!("{:.1}%", share * 100.0))
}

fn backend_cells(counters: Option<BackendCounters>) -> [String; 2] {
    match counters {
        Some(counters) => [counters.packets.to_string(), bytes(counters.bytes)],
        None => [NONE.to_owned(), NONE.to_owned()],
    }
}

fn header(status: &AgentStatus) -> String {
    let mut out = format!(
        "Node {} ({}) on {}, XDP {}, {}; agent {}\n",
        status.node,
        status.address,
        status.interface,
        status.xdp_mode.as_deref().unwrap_or("not attached"),
        if status.ready { "ready" } else { "NOT READY" },
        status.version
    );
    if let Some(refusal) = &status.refused {
        let _ = writeln!(out, "REFUSED: {refusal}");
    }
    for warning in &status.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

fn ports(vip: &VipStatus) -> String {
    let ports: Vec<String> = vip
        .ports
        .iter()
        .map(|port| format!("{}/{}->{}", port.port, port.protocol, port.target_port))
        .collect();
    ports.join(" ")
}

fn owner(vip: &VipStatus) -> String {
    match &vip.owner {
        Some(owner) if vip.owned_here => format!("{owner} (this node)"),
        Some(owner) => owner.clone(),
        None => "none".to_owned(),
    }
}

/// `node1,node2 (not node3)`.
fn candidates(candidates: &[CandidateStatus]) -> String {
    let names = |eligible: bool| {
        let names: Vec<&str> = candidates
            .iter()
            .filter(|candidate| candidate.eligible == eligible)
            .map(|candidate| candidate.node.as_str())
            .collect();
        names.join(",")
    };
    let (eligible, ineligible) = (names(true), names(false));
    match (eligible.is_empty(), ineligible.is_empty()) {
        (true, true) => NONE.to_owned(),
        (false, true) => eligible,
        (true, false) => format!("none (not {ineligible})"),
        (false, false) => format!("{eligible} (not {ineligible})"),
    }
}

/// `2 alive, 1 suspect, 0 down`.
fn member_counts(members: &[MemberStatus]) -> String {
    let counts: Vec<String> = MemberState::ALL
        .iter()
        .map(|state| {
            let count = members
                .iter()
                .filter(|member| member.state == *state)
                .count();
            format!("{count} {}", state.name())
        })
        .collect();
    counts.join(", ")
}

/// Nonzero drop reasons, e.g. `drop_no_backend=3 drop_fragment=1`.
fn drops(status: &AgentStatus) -> Option<String> {
    let drops: Vec<String> = status
        .reasons
        .iter()
        .filter(|(reason, count)| reason.starts_with("drop_") && **count > 0)
        .map(|(reason, count)| format!("{reason}={count}"))
        .collect();
    (!drops.is_empty()).then(|| drops.join(" "))
}

/// `lbctl status`.
pub fn status(status: &AgentStatus) -> String {
    let mut out = header(status);
    if status.refused.is_some() {
        // It knows no VIPs or members: saying "none" would read as a fact about the cluster.
        return out;
    }
    out.push('\n');
    if status.vips.is_empty() {
        out.push_str("No VIPs are configured.\n");
    } else {
        let mut table = Table::new(
            &[
                "VIP",
                "SERVICES",
                "PORTS",
                "OWNER",
                "CANDIDATES",
                "BACKENDS",
                "PACKETS",
            ],
            &["BACKENDS", "PACKETS"],
        );
        for vip in &status.vips {
            let services: Vec<&str> = vip
                .services
                .iter()
                .map(|service| service.name.as_str())
                .collect();
            table.row(vec![
                vip.vip.to_string(),
                services.join(","),
                ports(vip),
                owner(vip),
                candidates(&vip.candidates),
                format!("{}/{}", vip.backends_ready, vip.backends_total),
                or_none(vip.counters.map(|counters| counters.packets)),
            ]);
        }
        out.push_str(&table.render());
    }
    out.push('\n');
    let _ = writeln!(out, "Members: {}", member_counts(&status.members));
    if let Some(drops) = drops(status) {
        let _ = writeln!(out, "Drops on this node: {drops}");
    }
    out.push_str("BACKENDS counts ready endpoints; PACKETS counts packets to the VIP seen here.\n");
    out
}

fn vip_traffic(vip: &VipStatus) -> String {
    let Some(counters) = vip.counters else {
        return "Traffic here: not readable\n".to_owned();
    };
    format!(
        "Traffic here: {} packets ({}); {} tunnelled to other nodes, {} delivered to pods here, \
         {} dropped, {} ICMP replies\n\
         Replies here: {} packets ({}) rewritten to come from the VIP\n",
        counters.packets,
        bytes(counters.bytes),
        counters.encapsulated,
        counters.delivered_local,
        counters.dropped,
        counters.icmp_replies,
        counters.reply_packets,
        bytes(counters.reply_bytes),
    )
}

fn vip_candidates(vip: &VipStatus) -> String {
    if vip.candidates.is_empty() {
        return "No candidates reported.\n".to_owned();
    }
    let mut table = Table::new(&["CANDIDATE", "ELIGIBLE", "SCORE", "WHY NOT"], &[]);
    for candidate in &vip.candidates {
        let owner = vip.owner.as_deref() == Some(candidate.node.as_str());
        table.row(vec![
            if owner {
                format!("{} (owner)", candidate.node)
            } else {
                candidate.node.clone()
            },
            if candidate.eligible { "yes" } else { "no" }.to_owned(),
            candidate
                .score
                .map_or_else(|| NONE.to_owned(), |score| format!("{score:#018x}")),
            candidate.reason.clone().unwrap_or_else(|| NONE.to_owned()),
        ]);
    }
    table.render()
}

fn service_tables(service: &ServiceStatus) -> String {
    let mut out = format!(
        "\nService {} (externalTrafficPolicy {:?})\n",
        service.name, service.traffic_policy
    );
    let mut nodes = Table::new(
        &[
            "NODE",
            "ADDRESS",
            "READY",
            "DRAINING",
            "SLOTS",
            "SHARE",
            "TUNNELLED",
            "BYTES",
        ],
        &["READY", "DRAINING", "SLOTS", "SHARE", "TUNNELLED", "BYTES"],
    );
    for node in &service.nodes {
        let [packets, bytes] = backend_cells(node.counters);
        nodes.row(vec![
            node.node.clone(),
            node.address.to_string(),
            node.ready_endpoints.to_string(),
            node.draining_endpoints.to_string(),
            or_none(node.slots),
            percent(node.share),
            packets,
            bytes,
        ]);
    }
    out.push_str(&nodes.render());
    let mut endpoints = Table::new(
        &[
            "ENDPOINT", "NODE", "STATE", "SLOTS", "SHARE", "PACKETS", "BYTES",
        ],
        &["SLOTS", "SHARE", "PACKETS", "BYTES"],
    );
    for endpoint in &service.endpoints {
        let state = match (endpoint.ready, endpoint.terminating) {
            (_, true) => "terminating",
            (true, false) => "ready",
            (false, false) => "not ready",
        };
        let [packets, bytes] = backend_cells(endpoint.counters);
        endpoints.row(vec![
            endpoint.address.to_string(),
            endpoint.node.clone(),
            state.to_owned(),
            or_none(endpoint.slots),
            percent(endpoint.share),
            packets,
            bytes,
        ]);
    }
    out.push('\n');
    out.push_str(&endpoints.render());
    out
}

/// `lbctl vip IP`.
pub fn vip(status: &AgentStatus, vip: &VipStatus) -> String {
    let mut out = format!("VIP {}\n", vip.vip);
    let _ = writeln!(out, "Owner: {}", owner(vip));
    if let Some(reason) = &vip.owner_reason {
        let _ = writeln!(out, "Why: {reason}");
    }
    let _ = writeln!(
        out,
        "Other ports: {}",
        if vip.drop_unknown_ports {
            "dropped"
        } else {
            "passed to the node's own network stack"
        }
    );
    out.push_str(&vip_traffic(vip));
    out.push('\n');
    out.push_str(&vip_candidates(vip));
    out.push('\n');
    let mut ports = Table::new(
        &["PORT", "PROTOCOL", "TARGET PORT", "SERVICE"],
        &["PORT", "TARGET PORT"],
    );
    for port in &vip.ports {
        ports.row(vec![
            port.port.to_string(),
            port.protocol.to_string(),
            port.target_port.to_string(),
            port.service.clone(),
        ]);
    }
    out.push_str(&ports.render());
    for service in &vip.services {
        out.push_str(&service_tables(service));
    }
    let _ = write!(
        out,
        "\nSLOTS/SHARE: the part of a service's node table (the same on every node) that \
         points at a node, and of {}'s own pod table that points at an endpoint. TUNNELLED, \
         PACKETS and BYTES are {}'s counters for that address, over every VIP it serves.\n",
        status.node, status.node
    );
    out
}

/// `lbctl flows`.
pub fn flows(list: &FlowList) -> String {
    if list.total == 0 {
        return "This node's flow cache is empty.\n".to_owned();
    }
    let mut table = Table::new(
        &["CLIENT", "VIP", "PROTOCOL", "SERVICE", "NODE", "POD"],
        &[],
    );
    for flow in &list.flows {
        let node = match (&flow.node_name, flow.node) {
            (Some(name), Some(address)) => format!("{name} ({address})"),
            (None, address) => or_none(address),
            (Some(name), None) => name.clone(),
        };
        table.row(vec![
            flow.client.to_string(),
            flow.vip.to_string(),
            flow.protocol.to_string(),
            flow.service.clone().unwrap_or_else(|| NONE.to_owned()),
            node,
            or_none(flow.pod),
        ]);
    }
    let mut out = table.render();
    let _ = writeln!(
        out,
        "\nShowing {} of {} flows in this node's cache. NODE: the backend node chosen when \
         the flow arrived here; POD: the pod chosen when it was delivered here.",
        list.flows.len(),
        list.total
    );
    out
}

/// `lbctl explain CLIENT VIP`.
pub fn explanation(explanation: &Explanation) -> String {
    let query = &explanation.query;
    let verdict = match explanation.outcome {
        Outcome::Forwarded => {
            let node = explanation
                .node
                .as_ref()
                .map_or_else(String::new, |node| format!(" on {}", node.name));
            format!("forwarded to {}{node}", or_none(explanation.destination))
        }
        Outcome::Dropped => "dropped".to_owned(),
        Outcome::Passed => "passed to the node's own stack".to_owned(),
    };
    let mut out = format!(
        "{} -> {}/{}: {verdict}\n\n",
        query.client, query.vip, query.protocol
    );
    for (number, step) in explanation.steps.iter().enumerate() {
        let _ = writeln!(out, "{:>2}. {step}", number + 1);
    }
    let receiver = explanation
        .receiver
        .as_ref()
        .map_or("the receiving node", |node| node.name.as_str());
    let _ = writeln!(
        out,
        "\nCounted on {receiver} as reason {} (see `lbctl status` and the xdplb_packets_total metric).",
        counted_as(&explanation.reason)
    );
    out
}

/// The reason an explained packet is counted under; a tunnelled flow's later packets
/// leave by the express path, under a reason of their own.
fn counted_as(reason: &str) -> String {
    if reason == reasons::NAMES[reasons::TX_ENCAP as usize] {
        let express = reasons::NAMES[reasons::TX_EXPRESS as usize];
        format!("{reason}, the packets after it as {express}")
    } else {
        reason.to_owned()
    }
}

/// `3m12s`: the two largest units.
fn duration(seconds: u64) -> String {
    let parts = [
        (seconds / 86_400, "d"),
        (seconds / 3_600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let first = parts.iter().position(|(count, _)| *count > 0);
    let text: String = parts[first.unwrap_or(parts.len())..]
        .iter()
        .take(2)
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text
    }
}

/// `lbctl members`; `now_ms` is the current Unix time in milliseconds.
pub fn members(members: &[MemberStatus], now_ms: u64) -> String {
    if members.is_empty() {
        return "No members: gossip is not running on this node.\n".to_owned();
    }
    let mut table = Table::new(
        &["NAME", "ADDRESS", "STATE", "INCARNATION", "SINCE"],
        &["INCARNATION"],
    );
    for member in members {
        let since = member.last_change_unix_ms.map_or_else(
            || NONE.to_owned(),
            |changed| format!("{} ago", duration(now_ms.saturating_sub(changed) / 1000)),
        );
        table.row(vec![
            member.name.clone(),
            member.address.to_string(),
            member.state.name().to_owned(),
            member.incarnation.to_string(),
            since,
        ]);
    }
    let mut out = table.render();
    let _ = writeln!(out, "\n{}", member_counts(members));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(90_000), "1d1h");
        assert_eq!(duration(3_600), "1h");
        assert_eq!(duration(95_238_000), "1102d7h");
    }

    #[test]
    fn candidates_name_the_ineligible() {
        let candidate = |node: &str, eligible| CandidateStatus {
            node: node.into(),
            eligible,
            reason: None,
            score: None,
        };
        assert_eq!(candidates(&[]), "-");
        assert_eq!(
            candidates(&[candidate("a", true), candidate("b", true)]),
            "a,b"
        );
        assert_eq!(
            candidates(&[candidate("a", true), candidate("b", false)]),
            "a (not b)"
        );
        assert_eq!(candidates(&[candidate("b", false)]), "none (not b)");
    }
}
