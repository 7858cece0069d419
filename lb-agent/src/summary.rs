//! One human-readable line per VIP: what the data path does with its traffic.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use crate::model::{Inputs, Service, TrafficPolicy, node_shares};

fn describe(inputs: &Inputs, service: &Service) -> String {
    let mut text = service.name.clone();
    for port in &service.ports {
        let _ = write!(
            text,
            " {}/{}->{}",
            port.port, port.protocol, port.target_port
        );
    }
    if service.traffic_policy == TrafficPolicy::Local {
        text.push_str(" (Local)");
    }
    let shares = node_shares(inputs, service);
    if shares.values().all(|share| share.serving == 0) {
        text.push_str(", no ready endpoints: dropped");
    } else {
        text.push_str(", ready per node:");
        for (node, share) in shares.iter().filter(|(_, share)| share.serving > 0) {
            let _ = write!(text, " {node}={}", share.serving);
        }
    }
    let draining: u32 = shares.values().map(|share| share.draining).sum();
    if draining > 0 {
        let _ = write!(text, ", {draining} draining");
    }
    text
}

/// `VIP 172.16.200.20 owner node1: web 80/TCP->8080 443/TCP->8443, ready per node: node1=1 node2=2`
/// for every VIP of `inputs`, in address order.
pub fn vip_lines(inputs: &Inputs, owners: &BTreeMap<Ipv4Addr, &str>) -> Vec<String> {
    let mut by_vip: BTreeMap<Ipv4Addr, Vec<&Service>> = BTreeMap::new();
    for service in &inputs.services {
        by_vip.entry(service.vip).or_default().push(service);
    }
    by_vip
        .into_iter()
        .map(|(vip, services)| {
            let owner = owners.get(&vip).copied().unwrap_or("unset");
            let parts: Vec<String> = services
                .iter()
                .map(|service| describe(inputs, service))
                .collect();
            let drop = services.iter().any(|service| service.drop_unknown_ports);
            let unknown = if drop { "dropped" } else { "passed" };
            format!(
                "VIP {vip} owner {owner}: {}; other ports {unknown}",
                parts.join("; ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{example, ip};

    #[test]
    fn one_line_per_vip_with_weights() {
        let mut inputs = example();
        inputs.services[1].endpoints[0].ready = false;
        inputs.services[1].endpoints[0].terminating = true;
        let owners = BTreeMap::from([(ip("172.16.200.20"), "node1")]);
        assert_eq!(
            vip_lines(&inputs, &owners),
            [
                "VIP 172.16.200.20 owner node1: web 80/TCP->8080 443/TCP->8443, ready per node: node1=1 node2=2; other ports passed",
                "VIP 172.16.200.53 owner unset: dns 53/UDP->5353 53/TCP->5353, no ready endpoints: dropped, 1 draining; other ports passed",
            ]
        );
    }
}
