//! Failures of a VIP owner (node gone, link down, agent killed), bringing a node back,
//! and the failover measured as the client sees it: how long it went without an answer.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;

use super::{App, Cluster, wait_for};
use crate::{
    lab::{
        FIXED_CLIENT_PORTS, LAN_IFACE,
        probe::{Pace, Requests, requests_during},
    },
    netns::ensure_success,
};

const CLIENT_READY: Duration = Duration::from_secs(10);

/// Requests before the failure, proving the path worked right up to it.
const BASELINE: Duration = Duration::from_millis(300);

/// Requests after the new owner is known, so the first success is surely seen.
const AFTERMATH: Duration = Duration::from_millis(800);

/// How long the surviving agents may take to elect a new owner before a failover
/// measurement gives up.
const REELECTION: Duration = Duration::from_secs(10);

/// How a VIP owner is made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The node is gone: its agent is killed with SIGKILL and its LAN link set down.
    NodeGone,
    /// Only the node's LAN link goes down; its agent keeps running.
    LinkDown,
    /// Only the agent is killed with SIGKILL; the link stays up and the pinned data path
    /// keeps running without it.
    AgentKilled,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NodeGone => "agent SIGKILLed and LAN link down",
            Self::LinkDown => "LAN link down",
            Self::AgentKilled => "agent SIGKILLed",
        })
    }
}

/// One measured failover.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub vip: Ipv4Addr,
    pub failure: Failure,
    pub old_owner: String,
    pub new_owner: String,
    /// From the start of the failure (the SIGKILL, or the link going down) to the answer
    /// of the first request started once the failure was complete.
    pub outage: Duration,
    /// From the start of the failure until `lbctl status` on every surviving node named
    /// the new owner (polled, so up to ~100 ms late).
    pub reelected: Duration,
    pub requests: Requests,
}

impl fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} ({}): first answer after {} ms, new owner reported after {} ms, \
             {} of {} requests failed",
            self.vip,
            self.old_owner,
            self.new_owner,
            self.failure,
            self.outage.as_millis(),
            self.reelected.as_millis(),
            self.requests.failures().len(),
            self.requests.0.len()
        )
    }
}

impl Cluster {
    /// Waits until the client reaches the web `vip` and has resolved it to its owner's
    /// MAC by ARP: the steady state every measurement starts from.
    pub fn wait_client_settled(&self, vip: Ipv4Addr) -> anyhow::Result<()> {
        let owner = self.owner(vip)?;
        let mac = self.node(&owner)?.mac()?;
        wait_for(
            &format!("the client to reach {vip} through {owner} ({mac})"),
            CLIENT_READY,
            || {
                let answered = self.curl(vip, None).is_ok();
                Ok(
                    (answered && self.client_neighbour(vip)?.as_deref() == Some(&mac))
                        .then_some(()),
                )
            },
        )
    }

    /// The MAC the client's ARP cache holds for `addr`, if any.
    pub fn client_neighbour(&self, addr: Ipv4Addr) -> anyhow::Result<Option<String>> {
        let line = self
            .lab
            .client
            .run(&format!("ip neigh show {addr} dev {LAN_IFACE}"))?;
        let mut words = line.split_whitespace();
        Ok(words
            .by_ref()
            .skip_while(|word| *word != "lladdr")
            .nth(1)
            .map(str::to_owned))
    }

    /// `curl http://VIP/` from the client (optionally from a fixed source port); the pod
    /// that answered.
    pub fn curl(&self, vip: Ipv4Addr, client_port: Option<u16>) -> anyhow::Result<Ipv4Addr> {
        let mut command = self.lab.client.command("curl");
        command.args(["--silent", "--show-error", "--fail", "--max-time", "2"]);
        if let Some(port) = client_port {
            ensure!(
                FIXED_CLIENT_PORTS.contains(&port),
                "client port {port} is outside the lab's reserved range"
            );
            command.args(["--local-port", &port.to_string()]);
        }
        let url = format!("http://{vip}:{}/", App::WEB_PORT);
        let output = command.arg(&url).output().context("running curl")?;
        ensure_success(format_args!("curl {url}"), &output)?;
        let body = String::from_utf8_lossy(&output.stdout);
        body.trim()
            .parse()
            .with_context(|| format!("curl {url}: the body {body:?} names no pod"))
    }

    /// Makes `node` fail as `failure` says.
    pub fn fail(&self, node: &str, failure: Failure) -> anyhow::Result<()> {
        if matches!(failure, Failure::NodeGone | Failure::AgentKilled) {
            self.stop_agent(node, Signal::SIGKILL)?;
        }
        if matches!(failure, Failure::NodeGone | Failure::LinkDown) {
            self.set_link(node, false)?;
        }
        Ok(())
    }

    /// Brings `node` back (link up, agent started) and waits until the cluster has
    /// settled with it and the client reaches `vip` through its owner again.
    pub fn restore(&self, node: &str, vip: Ipv4Addr) -> anyhow::Result<()> {
        let index = self.slot_index(node)?;
        if self.slots.borrow()[index].link_down {
            self.set_link(node, true)?;
        }
        if !self.agent_running(node)? {
            self.slots.borrow_mut()[index].agent = None;
            self.start_agent(node)?;
        }
        self.wait_settled()?;
        self.wait_client_settled(vip)
    }

    /// Waits until every reachable agent names an owner of `vip` other than `old`.
    pub fn wait_new_owner(&self, vip: Ipv4Addr, old: &str) -> anyhow::Result<String> {
        wait_for(
            &format!("a new owner of {vip} after {old} failed"),
            REELECTION,
            || {
                Ok(self
                    .agreed_owners()?
                    .and_then(|mut owners| owners.remove(&vip))
                    .filter(|owner| owner != old))
            },
        )
    }

    /// Makes the owner of the web `vip` fail while the client sends requests at `pace`,
    /// and measures how long the client went without an answer.
    pub fn measure_failover(
        &self,
        vip: Ipv4Addr,
        failure: Failure,
        pace: Pace,
    ) -> anyhow::Result<FailoverReport> {
        self.wait_client_settled(vip)?;
        let old_owner = self.owner(vip)?;
        let target = SocketAddrV4::new(vip, App::WEB_PORT);
        let ((failing, failed, new_owner, reelected), requests) =
            requests_during(&self.lab.client, target, pace, || {
                thread::sleep(BASELINE);
                let failing = Instant::now();
                self.fail(&old_owner, failure)?;
                let failed = Instant::now();
                let new_owner = self.wait_new_owner(vip, &old_owner)?;
                let reelected = Instant::now();
                thread::sleep(AFTERMATH);
                Ok((failing, failed, new_owner, reelected))
            })?;
        let before: Vec<String> = requests
            .failures()
            .iter()
            .filter(|attempt| attempt.finished < failing)
            .map(|attempt| format!("{:?}", attempt.result))
            .collect();
        ensure!(
            before.is_empty(),
            "requests failed before {old_owner} failed, so the measurement is void: {before:?}"
        );
        // Only requests started once the failure is complete count: one started while
        // `ip link` was still running could have been answered by the old owner.
        let answered = requests.first_answer_after(failed).with_context(|| {
            format!(
                "no request succeeded after {old_owner} failed ({failure}); {} attempts, \
                 last error {:?}",
                requests.0.len(),
                requests.failures().last().map(|attempt| &attempt.result)
            )
        })?;
        let outage = answered - failing;
        Ok(FailoverReport {
            vip,
            failure,
            old_owner,
            new_owner,
            outage,
            reelected: reelected - failing,
            requests,
        })
    }
}
