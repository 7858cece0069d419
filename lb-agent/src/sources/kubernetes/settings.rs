//! The Kubernetes mode's settings file, mounted from a ConfigMap: the standalone file's
//! node-local keys (same names, same checks, same line-numbered errors) plus the
//! load-balancer class. Nodes, services and endpoints come from the API instead.
//!
//! ```yaml
//! interface: eth0             # default: the default route's interface
//! gossip:
//!   keyFile: /etc/xdplb/gossip/key
//! defaultClass: false         # also serve LoadBalancer Services that name no class
//! ```
//!
//! Every key is optional; an empty file (`{}`) runs with the defaults and without
//! gossip (every node alive, no failover). Settings are read at start only.

use std::path::Path;

use serde::Deserialize;

use crate::{
    config::{self, ConfigError, NodeSettings},
    ipam::request::ClassPolicy,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// `interface`, `mtu`, `icmpRatePerSecond`, `capacities`, `gossip`, `arp`, `api` and
    /// `pinDir`: as in the standalone file.
    pub node_settings: NodeSettings,
    /// `defaultClass` (default `false`): this agent is the cluster's default load
    /// balancer and also serves `LoadBalancer` Services without `loadBalancerClass`.
    /// Leave it off while MetalLB still serves those.
    pub default_class: bool,
}

/// The file's own keys, as serde reads them (documented on [`KubernetesSettings`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnKeys {
    #[serde(default)]
    default_class: bool,
}

impl KubernetesSettings {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        // An empty document is no mapping at all; it means every default.
        let text = if text.trim().is_empty() { "{}" } else { text };
        let (own, node_settings) = config::parse_with_node_settings::<OwnKeys>(text)?;
        Ok(Self {
            node_settings,
            default_class: own.default_class,
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            crate::files::read_text(path, crate::files::CONFIG_LIMIT).map_err(ConfigError::Read)?;
        Self::parse(&text)
    }

    pub fn class_policy(&self) -> ClassPolicy {
        ClassPolicy {
            default_class: self.default_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{config::DEFAULT_PIN_DIR, sources::Settings};

    #[test]
    fn an_empty_file_is_every_default() {
        let settings = KubernetesSettings::parse("").expect("valid");
        assert_eq!(
            settings.node_settings.pin_dir,
            PathBuf::from(DEFAULT_PIN_DIR)
        );
        assert_eq!(settings.node_settings.icmp_rate_per_second, 100);
        assert!(settings.node_settings.gossip.is_none());
        assert!(!settings.class_policy().default_class);
    }

    #[test]
    fn keys_are_the_standalone_files() {
        let text = "interface: eth0\ngossip:\n  keyFile: /etc/xdplb/gossip/key\n  port: 7950\ndefaultClass: true\narp:\n  refreshSeconds: 0\n";
        let settings = KubernetesSettings::parse(text).expect("valid");
        let runtime = Settings::from(&settings.node_settings);
        assert_eq!(runtime.interface.as_deref(), Some("eth0"));
        assert_eq!(runtime.gossip.as_ref().map(|g| g.port), Some(7950));
        assert_eq!(runtime.arp.refresh, None);
        assert!(settings.class_policy().default_class);
    }

    /// `(file, line, field, message)`: the standalone file's checks of the same keys.
    const BAD: &[(&str, usize, &str, &str)] = &[
        (
            "defaultClass: true\nmtu: 100\n",
            2,
            "mtu",
            "100 is outside 576 to 65535",
        ),
        ("mtu: 70000\n", 1, "mtu", "70000 is outside 576 to 65535"),
        (
            "interface: eth0/1\n",
            1,
            "interface",
            "`eth0/1` is not a Linux interface name",
        ),
        (
            "arp:\n  interface: a:b\n",
            2,
            "arp.interface",
            "`a:b` is not a Linux interface name",
        ),
        (
            "gossip:\n  keyFile: gossip.key\n",
            2,
            "gossip.keyFile",
            "`gossip.key` must be an absolute path",
        ),
        (
            "gossip:\n  keyFile: /k\n  probeTimeoutMs: 150\n",
            3,
            "gossip.probeTimeoutMs",
            "150 ms must be shorter than probeIntervalMs (100 ms)",
        ),
        (
            "gossip:\n  keyFile: /k\n  suspicionMs: 0\n",
            3,
            "gossip.suspicionMs",
            "0 is outside 1 to 600000",
        ),
        (
            "capacities:\n  vips: 16\n  flows: 0\n",
            3,
            "capacities.flows",
            "0 is outside 1 to 4194304",
        ),
        (
            "pinDir: xdplb\n",
            1,
            "pinDir",
            "`xdplb` must be an absolute path",
        ),
        (
            "api:\n  socket: agent.sock\n",
            2,
            "api.socket",
            "`agent.sock` must be an absolute path",
        ),
    ];

    #[test]
    fn bad_values_fail_the_standalone_files_checks() {
        for &(text, line, field, message) in BAD {
            let error = KubernetesSettings::parse(text).expect_err(text);
            let context = format!("{error}\n--- file ---\n{text}");
            assert_eq!(error.metric_label(), "invalid", "{context}");
            let shown = error.to_string();
            assert!(
                shown.starts_with(&format!("line {line}, column ")),
                "{context}"
            );
            assert!(
                shown.contains(&format!(": {field}: {message}")),
                "{context}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = "capacities:\n  backends: 0\nmtu: 1\n";
        let error = KubernetesSettings::parse(text).expect_err("two problems");
        let fields: Vec<_> = error
            .issues()
            .iter()
            .map(|issue| issue.field.as_deref())
            .collect();
        assert_eq!(fields, [Some("capacities.backends"), Some("mtu")]);
    }

    #[test]
    fn mistakes_name_their_line() {
        let error = KubernetesSettings::parse("interface: eth0\npeers: []\n").expect_err("unknown");
        assert!(error.to_string().contains("line 2"), "{error}");
        let error = KubernetesSettings::parse("gossip:\n  port: 0\n").expect_err("bad port");
        assert_eq!(error.metric_label(), "schema");
    }
}
