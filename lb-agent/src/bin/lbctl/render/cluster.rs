//! `-o table` for the cluster commands.

use std::fmt::Write as _;

use super::NONE;
use crate::{
    cluster::{Owner, PoolSummary, ServiceSummary},
    table::Table,
};

/// `Ready`, or what is wrong: the conditions that hold, with the message of any but
/// Ready, and a Ready that does not hold.
fn conditions(pool: &PoolSummary) -> String {
    if pool.conditions.is_empty() {
        return "no status yet".to_owned();
    }
    let shown: Vec<String> = pool
        .conditions
        .iter()
        .filter_map(
            |condition| match (condition.type_.as_str(), condition.status.as_str()) {
                ("Ready", "True") => Some("Ready".to_owned()),
                ("Ready", _) => Some(format!("NotReady ({})", condition.reason)),
                (kind, "True") => Some(format!("{kind}: {}", condition.message)),
                _ => None,
            },
        )
        .collect();
    shown.join("; ")
}

/// The interfaces the pool is announced on; any announce interface when it lists none.
fn interfaces(pool: &PoolSummary) -> String {
    if pool.interfaces.is_empty() {
        return "any".to_owned();
    }
    pool.interfaces.join(",")
}

fn count(value: Option<u64>) -> String {
    value.map_or_else(|| NONE.to_owned(), |value| value.to_string())
}

/// `lbctl pools`.
pub fn pools(pools: &[PoolSummary]) -> String {
    if pools.is_empty() {
        return "No AddressPools: create one (see deploy/examples/address-pools.yaml).\n"
            .to_owned();
    }
    let mut table = Table::new(
        &[
            "NAME",
            "ADDRESSES",
            "AUTO ASSIGN",
            "ASSIGNED",
            "AVAILABLE",
            "INTERFACES",
            "CONDITIONS",
        ],
        &["ASSIGNED", "AVAILABLE"],
    );
    for pool in pools {
        table.row(vec![
            pool.name.clone(),
            pool.addresses.join(","),
            pool.auto_assign.to_string(),
            count(pool.assigned),
            count(pool.available),
            interfaces(pool),
            conditions(pool),
        ]);
    }
    let mut out = table.render();
    if pools.iter().any(|pool| pool.conditions.is_empty()) {
        out.push_str(
            "\nPools without status have not been seen by an agent holding the IPAM lease \
             (is the DaemonSet running?).\n",
        );
    }
    out
}

fn owner(owner: &Owner) -> String {
    match owner {
        Owner::Node(node) => node.clone(),
        Owner::Nobody => "none".to_owned(),
        Owner::Unknown => "unknown".to_owned(),
    }
}

/// `lbctl services`; `notes` go below the table, `asked_agent` says whether this
/// node's agent answered for the owners.
pub fn services(services: &[ServiceSummary], notes: &[String], asked_agent: bool) -> String {
    let mut out = String::new();
    if services.is_empty() {
        out.push_str("No LoadBalancer Services of xdplb's class.\n");
    } else {
        let mut table = Table::new(
            &["SERVICE", "ADDRESS", "POOL", "PORTS", "OWNER", "ENDPOINTS"],
            &["ENDPOINTS"],
        );
        for service in services {
            table.row(vec![
                format!("{}/{}", service.namespace, service.name),
                service
                    .address
                    .map_or_else(|| "<pending>".to_owned(), |address| address.to_string()),
                service.pool.clone().unwrap_or_else(|| NONE.to_owned()),
                service.ports.join(","),
                owner(&service.owner),
                format!("{}/{}", service.endpoints.ready, service.endpoints.total),
            ]);
        }
        out = table.render();
    }
    let problems: Vec<&ServiceSummary> = services.iter().filter(|s| s.problem.is_some()).collect();
    if !problems.is_empty() {
        out.push('\n');
        for service in problems {
            let problem = service.problem.as_deref().unwrap_or_default();
            let _ = writeln!(out, "{}/{}: {problem}", service.namespace, service.name);
        }
    }
    if !asked_agent && services.iter().any(|s| s.owner == Owner::Unknown) {
        out.push_str(
            "\nOWNER is known only to the agents (their gossip elects it): run `sudo lbctl \
             services` on a node to see it.\n",
        );
    }
    for note in notes {
        let _ = writeln!(out, "\nnote: {note}");
    }
    out
}
