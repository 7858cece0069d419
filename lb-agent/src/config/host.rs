//! What a configuration needs of the host it runs on, beyond the file itself: checked
//! by `--check` and before a start alike, so that neither passes what the other refuses.
//! Problems are placed in the file like the file's own (line, column, field); the file
//! is parsed again for that only when there is something to place.
//!
//! Checked: the LAN and announce interfaces (they exist and can carry ARP; one that is
//! down only warns, as the agent waits for it), the pin directory, the API socket's
//! path, the gossip key file, and for a standalone file whether its services fit the
//! map capacities (the same update the data path makes, on in-memory maps).

use std::{net::Ipv4Addr, path::Path};

use super::{
    Standalone, document,
    error::{ConfigError, Issue},
    locate::{FieldPath, Problem},
    node::NodeSettings,
};
use crate::{
    api::socket,
    arp::{
        SysPaths,
        interface::{self, InterfaceError, Refusal},
    },
    dataplane::{
        Dataplane as _, DataplaneError,
        loader::{self, PinDir},
        memory::MemoryDataplane,
    },
    diff::diff,
    files,
    membership::GossipKey,
    model::{State, desired_state},
    sources::Cluster,
};

/// The host a configuration is checked against: where its links and routes are read,
/// and its IPv4 addresses with their links (the live kernel's, or a test's stand-in).
#[derive(Clone, Debug)]
pub struct Host {
    pub sys: SysPaths,
    pub addresses: Vec<(String, Ipv4Addr)>,
}

impl Host {
    pub fn live() -> Self {
        Self {
            sys: SysPaths::live(),
            addresses: interface::host_ipv4(),
        }
    }
}

/// What the checks found, not yet placed in the file.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Findings {
    fn problem(&mut self, path: FieldPath, message: String) {
        self.problems.push(Problem { path, message });
    }

    fn warning(&mut self, path: FieldPath, message: String) {
        self.warnings.push(Problem { path, message });
    }

    /// The warnings placed in the file at `path`, or every problem.
    fn place(self, path: &Path) -> Result<Vec<Issue>, ConfigError> {
        if self.problems.is_empty() && self.warnings.is_empty() {
            return Ok(Vec::new());
        }
        let text = files::read_text(path, files::CONFIG_LIMIT).map_err(ConfigError::Read)?;
        let document = document::document(&text)?;
        if !self.problems.is_empty() {
            return Err(ConfigError::invalid(self.problems, &document));
        }
        Ok(self
            .warnings
            .into_iter()
            .map(|warning| warning.locate(&document))
            .collect())
    }
}

/// Checks the node settings of the file at `path` against `host`; returns the
/// warnings, placed in the file.
pub fn check(path: &Path, settings: &NodeSettings, host: &Host) -> Result<Vec<Issue>, ConfigError> {
    let mut findings = Findings::default();
    node_settings(&mut findings, settings, host);
    findings.place(path)
}

/// [`check`] for a standalone file, whose services must also fit the map capacities.
pub fn check_standalone(
    path: &Path,
    standalone: &Standalone,
    host: &Host,
) -> Result<Vec<Issue>, ConfigError> {
    let mut findings = Findings::default();
    let settings = &standalone.config().node_settings;
    let links = node_settings(&mut findings, settings, host);
    vips_on_host(&mut findings, standalone, &links, host);
    let inputs = Cluster::from_standalone(standalone).inputs(settings.mtu.unwrap_or(1500));
    let changes = diff(&State::default(), &desired_state(&inputs));
    if let Err(error) = MemoryDataplane::new(settings.capacities).apply(&changes) {
        findings.problem(capacity_field(&error), error.to_string());
    }
    findings.place(path)
}

/// The `capacities` key of a table that overflowed.
fn capacity_field(error: &DataplaneError) -> FieldPath {
    let capacities = FieldPath::default().key("capacities");
    let key = match error {
        DataplaneError::Capacity { what, .. } => match *what {
            "VIPs" => Some("vips"),
            "service ports" => Some("servicePorts"),
            "services" => Some("services"),
            "backends" => Some("backends"),
            _ => None,
        },
        _ => None,
    };
    key.map_or_else(|| capacities.clone(), |key| capacities.key(key))
}

/// Checks the node settings; returns the links the agent would attach to and announce
/// on, as far as they could be found.
fn node_settings(findings: &mut Findings, settings: &NodeSettings, host: &Host) -> Vec<String> {
    let root = FieldPath::default();
    let configured = settings.interface.as_deref();
    let mut links: Vec<String> = link(findings, root.key("interface"), configured, host)
        .into_iter()
        .collect();
    if let Some(announce) = &settings.arp.interface {
        let field = root.key("arp").key("interface");
        links.extend(link(findings, field, Some(announce), host));
    }
    if let Err(error) = loader::check_pin_dir(&PinDir::new(&settings.pin_dir)) {
        findings.problem(root.key("pinDir"), error.to_string());
    }
    if let Err(error) = socket::check_path(&settings.api.socket) {
        findings.problem(root.key("api").key("socket"), error.to_string());
    }
    if let Some(gossip) = &settings.gossip {
        let field = root.key("gossip").key("keyFile");
        key_file(findings, field, &gossip.key_file);
    }
    links
}

/// A link the agent attaches to or announces on (`None`: the default route's); its name
/// when it was found.
fn link(
    findings: &mut Findings,
    field: FieldPath,
    configured: Option<&str>,
    host: &Host,
) -> Option<String> {
    match interface::choose(&host.sys, configured) {
        Ok(link) => Some(link.name),
        Err(InterfaceError::Refused {
            name,
            reason: reason @ Refusal::Down { .. },
        }) => {
            findings.warning(
                field,
                format!("{name} {reason}: the agent starts and waits for it to come up"),
            );
            Some(name)
        }
        Err(InterfaceError::Refused { name, reason }) => {
            findings.problem(field, format!("{name} {reason}"));
            None
        }
        Err(error) => {
            findings.problem(field, error.to_string());
            None
        }
    }
}

/// A VIP that is also an address of this host: on a link the agent announces on, the
/// kernel would answer ARP for it too, on every node that has it (refused); elsewhere
/// (a dummy link such as kube-proxy's `kube-ipvs0`, or `lo`) only this host's own
/// traffic to it stays here (a warning).
fn vips_on_host(findings: &mut Findings, standalone: &Standalone, links: &[String], host: &Host) {
    for (index, service) in standalone.config().services.iter().enumerate() {
        let field = FieldPath::default().key("services").index(index).key("vip");
        let Some((on, _)) = host.addresses.iter().find(|(_, addr)| *addr == service.vip) else {
            continue;
        };
        if links.contains(on) {
            findings.problem(
                field,
                format!(
                    "{} is an address of this host's {on}, where the agent announces VIPs: the kernel would answer ARP for it as well; remove it from {on}",
                    service.vip
                ),
            );
        } else {
            findings.warning(
                field,
                format!(
                    "{} is also an address of this host's {on}: traffic this host sends to it stays here",
                    service.vip
                ),
            );
        }
    }
}

fn key_file(findings: &mut Findings, field: FieldPath, path: &Path) {
    let shown = path.display();
    match GossipKey::from_file(path) {
        Ok(key_file) => {
            if let Some(warning) = key_file.warning() {
                findings.warning(field, format!("{shown}: {warning}"));
            }
        }
        Err(error) => findings.problem(field, format!("{shown}: {error}")),
    }
}
