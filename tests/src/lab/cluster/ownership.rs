//! What the agents report: `lbctl` on a node against its agent, the metrics, and
//! whether the reachable agents agree on every VIP's owner.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::Output,
    time::Duration,
};

use anyhow::Context as _;
use lb_agent::status::{AgentStatus, MemberState};
use serde::de::DeserializeOwned;

use super::{Cluster, wait_for};
use crate::netns::ensure_success;

/// The agents' default metrics port (`api.listen` is left at 0.0.0.0:9477).
const METRICS_PORT: u16 = 9477;

const SETTLE: Duration = Duration::from_secs(20);

impl Cluster {
    /// Runs `lbctl --socket <node's socket> ARGS` in `node`'s namespace.
    pub fn lbctl_output(&self, node: &str, args: &[&str]) -> anyhow::Result<Output> {
        let socket = self.socket(node);
        self.node(node)?
            .netns
            .command(&self.binaries.lbctl.to_string_lossy())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .context("running lbctl")
    }

    /// `lbctl ARGS` on `node`: its stdout, or an error with its stderr.
    pub fn lbctl(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self.lbctl_output(node, args)?;
        ensure_success(format_args!("lbctl {} on {node}", args.join(" ")), &output)?;
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `lbctl ARGS -o json` on `node`, parsed.
    pub fn lbctl_json<T: DeserializeOwned>(&self, node: &str, args: &[&str]) -> anyhow::Result<T> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.lbctl(node, &args)?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing lbctl {} output: {text}", args.join(" ")))
    }

    pub fn status(&self, node: &str) -> anyhow::Result<AgentStatus> {
        self.lbctl_json(node, &["status"])
    }

    /// `view` of every node's status, by node name.
    pub fn per_node<T>(
        &self,
        view: impl Fn(&AgentStatus) -> T,
    ) -> anyhow::Result<BTreeMap<String, T>> {
        self.lab()
            .nodes
            .iter()
            .map(|node| Ok((node.name.clone(), view(&self.status(&node.name)?))))
            .collect()
    }

    /// `node`'s Prometheus metrics, scraped inside its namespace.
    pub fn metrics(&self, node: &str) -> anyhow::Result<String> {
        self.node(node)?.netns.run(&format!(
            "curl --silent --fail --max-time 2 http://127.0.0.1:{METRICS_PORT}/metrics"
        ))
    }

    /// The owner of every VIP, when every reachable agent is ready, sees every reachable
    /// node alive, and names the same reachable owner for each VIP; `None` otherwise.
    pub fn agreed_owners(&self) -> anyhow::Result<Option<BTreeMap<Ipv4Addr, String>>> {
        Ok(self.consensus()?.ok())
    }

    /// [`Self::agreed_owners`], or what stands in the way of agreement.
    fn consensus(&self) -> anyhow::Result<Result<BTreeMap<Ipv4Addr, String>, String>> {
        let reachable: BTreeSet<String> = self
            .reachable()
            .iter()
            .map(|node| node.name.clone())
            .collect();
        let vips: BTreeSet<Ipv4Addr> = self.services.iter().map(|s| s.vip).collect();
        let mut agreed: Option<(String, BTreeMap<Ipv4Addr, String>)> = None;
        for node in &reachable {
            let status = match self.status(node) {
                Ok(status) => status,
                Err(error) => return Ok(Err(format!("{node}: {error:#}"))),
            };
            let not_alive: Vec<String> = status
                .members
                .iter()
                .filter(|member| reachable.contains(&member.name))
                .filter(|member| member.state != MemberState::Alive)
                .map(|member| format!("{} {:?}", member.name, member.state))
                .collect();
            let owners: BTreeMap<Ipv4Addr, String> = status
                .vips
                .iter()
                .filter_map(|vip| Some((vip.vip, vip.owner.clone()?)))
                .collect();
            let complete = owners.keys().copied().collect::<BTreeSet<_>>() == vips
                && owners.values().all(|owner| reachable.contains(owner));
            let seen: BTreeSet<&String> = status.members.iter().map(|m| &m.name).collect();
            if !status.ready
                || !not_alive.is_empty()
                || !reachable.iter().all(|name| seen.contains(name))
                || !complete
            {
                return Ok(Err(format!(
                    "{node}: ready {}, members not alive {not_alive:?} (of {seen:?}), \
                     owners {owners:?}",
                    status.ready
                )));
            }
            if let Some((first, agreed)) = &agreed
                && *agreed != owners
            {
                return Ok(Err(format!(
                    "{first} says {agreed:?}, {node} says {owners:?}"
                )));
            }
            agreed = Some((node.clone(), owners));
        }
        Ok(agreed
            .map(|(_, owners)| owners)
            .ok_or_else(|| "no reachable agent".to_owned()))
    }

    /// Waits (bounded) for [`Self::agreed_owners`].
    pub fn wait_settled(&self) -> anyhow::Result<BTreeMap<Ipv4Addr, String>> {
        let mut last = String::new();
        wait_for(
            "the reachable agents to agree on every VIP's owner",
            SETTLE,
            || {
                Ok(match self.consensus()? {
                    Ok(owners) => Some(owners),
                    Err(why) => {
                        last = why;
                        None
                    }
                })
            },
        )
        .with_context(|| format!("last seen: {last}"))
    }

    /// The agreed owner of `vip` (waiting for agreement).
    pub fn owner(&self, vip: Ipv4Addr) -> anyhow::Result<String> {
        self.wait_settled()?
            .remove(&vip)
            .with_context(|| format!("{vip} is not a VIP of the lab"))
    }
}
