//! A real Prometheus (Debian's package) in the lab: in the management network's
//! monitoring namespace ([`super::management`]), listening on that namespace's loopback
//! only, scraping every node's agent at `http://10.1.0.(10+i):9477/metrics` each second
//! as `job="xdplb"` with a `node` label, and evaluating deploy/monitoring's rules each
//! second with their `for:`, ranges and offsets shortened ([`shortened_rules`]) so a
//! fault's alert fires and resolves within seconds. Queried through its HTTP API with
//! curl inside the namespace.
//!
//! Dropping it kills Prometheus and deletes the namespace; its data lives in the
//! cluster's scratch directory, its log beside the agents' (`prometheus.log`).

use std::{fs, path::PathBuf, thread, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use super::{
    Cluster, management::management_addr, services::spawn_logged, shell_quote, wait_for,
    workspace_root,
};
use crate::netns::{Netns, Process};

mod alerts;
mod rules;

pub use self::{
    alerts::{Alert, AlertTimes, Expected},
    rules::shortened_rules,
};

const BINARY: &str = "/usr/bin/prometheus";
const LISTEN: &str = "127.0.0.1:9090";
const AGENT_PORT: u16 = 9477;
/// Scrape and rule evaluation interval.
pub const INTERVAL: Duration = Duration::from_secs(1);
const START: Duration = Duration::from_secs(30);
/// deploy/monitoring's rules file, relative to the workspace.
pub const RULES: &str = "deploy/monitoring/xdplb-rules.yaml";

/// Prometheus, running; killed on drop (before the namespace goes).
#[derive(Debug)]
pub struct Prometheus {
    _process: Process,
    netns: Netns,
}

impl Prometheus {
    /// Builds the management network, writes `rules` and a configuration scraping every
    /// node of `cluster`, starts Prometheus and waits until it scrapes every agent.
    pub fn start(cluster: &Cluster, rules: &str) -> anyhow::Result<Self> {
        ensure!(
            std::path::Path::new(BINARY).is_file(),
            "no {BINARY}: run `cargo xtask setup` (it installs Debian's prometheus package)"
        );
        let netns = cluster.lab().management_network()?;
        let dir = cluster.scratch().join("prometheus");
        fs::create_dir_all(dir.join("data"))?;
        fs::write(dir.join("rules.yaml"), rules)?;
        let nodes = cluster.node_names();
        fs::write(dir.join("prometheus.yml"), config(&dir, &nodes))?;
        let command = format!(
            "{BINARY} --config.file={} --storage.tsdb.path={} --web.listen-address={LISTEN} \
             --storage.tsdb.retention.time=1h",
            shell_quote(dir.join("prometheus.yml").display()),
            shell_quote(dir.join("data").display()),
        );
        let process = spawn_logged(&netns, &command, &cluster.scratch().join("prometheus.log"))?;
        let prometheus = Self {
            _process: process,
            netns,
        };
        let wanted = nodes.len();
        wait_for("Prometheus to scrape every agent", START, || {
            let up = prometheus
                .query(r#"up{job="xdplb"} == 1"#)
                .unwrap_or_default();
            Ok((up.len() == wanted).then_some(()))
        })?;
        // Rules evaluated before every agent's first scrape saw part of the cluster (a
        // VIP's backends without its owner) and may have left an alert pending; the
        // evaluations after it see everything and clear it.
        thread::sleep(2 * INTERVAL + INTERVAL / 2);
        Ok(prometheus)
    }

    /// `GET path` of the HTTP API with `params` (URL-encoded by curl): the `data` of a
    /// `success` answer.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut command = self.netns.command("curl");
        command.args(["-sS", "--max-time", "5", "-G"]);
        for (name, value) in params {
            command
                .arg("--data-urlencode")
                .arg(format!("{name}={value}"));
        }
        let output = command.arg(format!("http://{LISTEN}{path}")).output()?;
        ensure!(
            output.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&output.stdout)))?;
        if answer["status"] != "success" {
            bail!("{path} {params:?}: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// The instant vector (or scalar, as one sample) `expr` gives now.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/query", &[("query", expr)])?;
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().cloned().unwrap_or_default(),
            _ => vec![data["result"].clone()],
        })
    }

    /// The active alerts (pending and firing), from `/api/v1/alerts`.
    pub fn alerts(&self) -> anyhow::Result<Vec<Alert>> {
        let data = self.get("/api/v1/alerts", &[])?;
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Alert::from_api)
            .collect()
    }
}

/// The configuration: one static target per node on the management network.
fn config(dir: &std::path::Path, nodes: &[String]) -> String {
    let targets: String = nodes
        .iter()
        .enumerate()
        .map(|(slot, node)| {
            format!(
                "      - targets: ['{}:{AGENT_PORT}']\n        labels: {{ node: {node} }}\n",
                management_addr(slot + 1)
            )
        })
        .collect();
    let seconds = INTERVAL.as_secs();
    format!(
        "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: 900ms\n  \
         evaluation_interval: {seconds}s\nrule_files:\n  - {}\nscrape_configs:\n  \
         - job_name: xdplb\n    static_configs:\n{targets}",
        dir.join("rules.yaml").display()
    )
}

/// deploy/monitoring's rules file, as written.
pub fn deployed_rules() -> anyhow::Result<String> {
    let path: PathBuf = workspace_root().join(RULES);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}
