//! `lb-agent`: the xdplb node agent, standalone (a file) or Kubernetes mode.

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lb_agent::{
    config::{
        self, NodeSettings, Standalone,
        host::{self, Host},
    },
    dataplane::loader::{self, PinDir},
    ipam_controller::{self, lease::LeaseSettings},
    membership::{GossipKey, View},
    runtime::{self, reconcile::plan},
    sources::{
        Cluster, Settings,
        file::FileSource,
        kubernetes::{
            client::{AGENT_USER_AGENT, agent_client, identified},
            kubeconfig,
            outage::{ApiHealth, log_filter},
            preflight::preflight,
            settings::KubernetesSettings,
            source::KubeSource,
        },
    },
    summary,
    telemetry::Telemetry,
};
use tracing_subscriber::EnvFilter;

/// Exit status for a configuration file that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;
/// How long a stopping agent waits for the IPAM to release its Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `kubernetes --check` waits for the API server to connect or answer.
const CHECK_API_TIMEOUT: Duration = Duration::from_secs(5);

/// xdplb node agent: load-balances traffic to service VIPs in XDP, with direct server
/// return.
///
/// Runs on every node. It attaches an XDP program (incoming VIP traffic) and a TC
/// program (replies) to the LAN interface and fills their tables from the configuration
/// file (or, with `lb-agent kubernetes`, from the Kubernetes API): which VIPs and ports
/// exist and which endpoints serve them. Packets to a VIP are
/// spread over the nodes with ready endpoints and tunnelled there; replies go straight
/// back to the client from the serving node. Other traffic is not touched. Agents gossip
/// (when `gossip` is configured) to elect one owner per VIP, which answers ARP for it.
///
/// Needs root (or CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and CAP_PERFMON). SIGHUP, or
/// saving the file, reloads the configuration. SIGTERM or Ctrl-C hand over: the node
/// leaves the gossip so others take its VIPs, and the programs stay attached (pinned) so
/// traffic keeps flowing until the next agent adopts them; `lb-agent cleanup` removes
/// them. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more or less detail.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The standalone configuration file (YAML): this node, its peers, the services with
    /// their VIPs, ports and endpoints. See lb-agent/examples/standalone.yaml. Not used by
    /// `kubernetes`, which takes --settings.
    #[arg(long, short, env = "XDPLB_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Only check the file and what this host must give it (interfaces, pin directory,
    /// API socket path, gossip key file, capacities), as a start would, and print what
    /// each VIP would do, then exit. Exit status 2 means the agent would refuse to
    /// start; nothing is loaded into the kernel.
    #[arg(long)]
    check: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Detach the programs and remove every pinned map and link (uninstall), from the
    /// `pinDir` of --config or from --pin-dir. Stop the agent first.
    Cleanup {
        /// The pin directory, instead of the one --config names.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        pin_dir: Option<PathBuf>,
    },
    /// Run as a Kubernetes DaemonSet: nodes, Services, EndpointSlices and AddressPools
    /// come from the API (in-cluster config, or a kubeconfig as kubectl finds it), and
    /// the agent holding the `xdplb-ipam` Lease assigns the Services' addresses.
    Kubernetes(KubernetesArgs),
}

#[derive(Debug, clap::Args)]
struct KubernetesArgs {
    /// The settings file (node-local keys of the standalone file, plus
    /// `defaultClass`), usually mounted from a ConfigMap.
    #[arg(long, env = "XDPLB_SETTINGS", value_name = "FILE")]
    settings: PathBuf,
    /// This node's name (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// The agent's namespace, where the IPAM Lease lives.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// This pod's name: the agent's identity in the Lease (default: node and PID).
    #[arg(long, env = "POD_NAME")]
    pod: Option<String>,
    /// Only check, then exit: the settings file and this host as a start would (exit
    /// status 2 when the agent would refuse to start), then the cluster: the API server
    /// answers, this node is a Node with an address, the AddressPool CRD is installed,
    /// and every permission the agent needs is granted, each reported on its own line
    /// (exit status 1 when anything is missing). Nothing is loaded or written.
    #[arg(long)]
    check: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(log_filter(
            std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref(),
        ))
        .init();
    let cleanup_requested = match args.command {
        Some(Command::Cleanup {
            pin_dir: Some(pin_dir),
        }) => return finish(cleanup(pin_dir)),
        Some(Command::Kubernetes(mut kubernetes)) => {
            // `lb-agent --check kubernetes ...` means the same as `kubernetes --check`.
            kubernetes.check |= args.check;
            return kubernetes_mode(kubernetes).await;
        }
        Some(Command::Cleanup { pin_dir: None }) => true,
        None => false,
    };
    let Some(path) = args.config.clone() else {
        eprintln!("error: --config FILE is required (or set XDPLB_CONFIG)");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let standalone = match config::load_apart(&path) {
        Ok(standalone) => standalone,
        Err(error) => return bad_config(&path, &error),
    };
    let checked = || host::check_standalone(&path, &standalone, &Host::live());
    if !cleanup_requested && let Err(code) = report_host(&path, checked()) {
        return code;
    }
    finish(match (cleanup_requested, args.check) {
        (true, _) => cleanup(standalone.config().node_settings.pin_dir.clone()),
        (false, true) => check(&standalone),
        (false, false) => {
            let telemetry = Arc::new(Telemetry::new());
            let source = FileSource::new(path, standalone, Arc::clone(&telemetry));
            runtime::run(source, telemetry)
                .await
                .map_err(anyhow::Error::from)
        }
    })
}

/// The outcome of the checks against this host (`config::host`), shared by `--check`
/// and a start: a problem ends the process as a bad file does; a warning is printed the
/// same way and the agent goes on.
fn report_host(
    path: &Path,
    outcome: Result<Vec<config::Issue>, config::ConfigError>,
) -> Result<(), ExitCode> {
    match outcome {
        Ok(warnings) => {
            for warning in warnings {
                eprintln!("warning: {}: {warning}", path.display());
            }
            Ok(())
        }
        Err(error) => Err(bad_config(path, &error)),
    }
}

fn bad_config(path: &Path, error: &config::ConfigError) -> ExitCode {
    for line in error.to_string().lines() {
        eprintln!("error: {}: {line}", path.display());
    }
    ExitCode::from(EXIT_BAD_CONFIG)
}

async fn kubernetes_mode(args: KubernetesArgs) -> ExitCode {
    let settings = match KubernetesSettings::load(&args.settings) {
        Ok(settings) => settings,
        Err(error) => return bad_config(&args.settings, &error),
    };
    let checked = host::check(&args.settings, &settings.node_settings, &Host::live());
    if let Err(code) = report_host(&args.settings, checked) {
        return code;
    }
    if args.check {
        return finish(check_kubernetes(&settings, &args.node, &args.namespace).await);
    }
    let identity = args
        .pod
        .unwrap_or_else(|| format!("{}-{}", args.node, std::process::id()));
    let lease = LeaseSettings::new(args.namespace, identity);
    finish(kubernetes(settings, args.node, lease).await)
}

/// The agent on the Kubernetes API, with the IPAM beside it; on SIGTERM both stop and
/// the IPAM Lease is released for an immediate handover.
async fn kubernetes(
    settings: KubernetesSettings,
    node: String,
    lease: LeaseSettings,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // One telemetry for all three, so the agent's /metrics shows the IPAM's and the
    // source's counters.
    let telemetry = Arc::new(Telemetry::new());
    // One client, so the watches, the Lease and the IPAM share one view of API outages.
    let health = ApiHealth::new(Arc::clone(&telemetry));
    let config = api_config().await?;
    let client = agent_client(config, &health).context("connecting to the Kubernetes API")?;
    let ipam = tokio::spawn(ipam_controller::run(
        client.clone(),
        settings.class_policy(),
        lease,
        stopped,
        Arc::clone(&telemetry),
    ));
    let source = KubeSource::start(client, &settings, node, Arc::clone(&telemetry));
    let result = runtime::run(source, telemetry).await;
    stop.send_replace(true);
    if tokio::time::timeout(RELEASE_TIMEOUT, ipam).await.is_err() {
        tracing::warn!("the IPAM did not stop in time; its Lease expires on its own");
    }
    result.map_err(anyhow::Error::from)
}

/// Where the agent finds the API server: its service account, or a kubeconfig.
async fn api_config() -> anyhow::Result<kube::Config> {
    kubeconfig::load(None, None)
        .await
        .context("finding the Kubernetes API (service account or kubeconfig)")
}

fn finish(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn cleanup(pin_dir: PathBuf) -> anyhow::Result<()> {
    let removed = loader::cleanup(&PinDir::new(&pin_dir))
        .with_context(|| format!("cleaning up {}", pin_dir.display()))?;
    tracing::info!(
        pin_dir = %pin_dir.display(),
        links = removed.links,
        maps = removed.maps,
        "removed the pinned data path; the programs are detached"
    );
    Ok(())
}

/// What both checks print of the node-local settings (the gossip, with its failure
/// detection time when the number of nodes is known), and the LAN interface with its
/// MTU.
fn check_node_settings(
    settings: &NodeSettings,
    nodes: Option<usize>,
) -> anyhow::Result<(String, u32)> {
    let interface = runtime::interface::lan_interface(&Settings::from(settings))?;
    let mtu = runtime::interface::mtu(settings.mtu, &interface)?;
    if let Some(gossip) = &settings.gossip {
        let key = GossipKey::from_file(&gossip.key_file)?.key;
        let detection = nodes
            .map(|nodes| {
                let within = gossip.timing().worst_case_detection(nodes);
                format!(", failure detection within {within:?} for {nodes} nodes")
            })
            .unwrap_or_default();
        println!(
            "ok: gossip on port {} with key {}{detection}",
            gossip.port,
            key.fingerprint(),
        );
    }
    Ok((interface, mtu))
}

fn check(standalone: &Standalone) -> anyhow::Result<()> {
    let config = standalone.config();
    let cluster = Cluster::from_standalone(standalone);
    let (interface, mtu) = check_node_settings(&config.node_settings, Some(config.peers.len()))?;
    let node = standalone.node();
    println!(
        "ok: node {} ({}) on {interface}, MTU {mtu}, {} peers, {} services",
        node.name,
        node.address,
        config.peers.len(),
        config.services.len()
    );
    // Owners with every node alive, as a settled cluster would elect them.
    let everyone = View::all_alive(&node.name, &cluster.gossip_peers(0));
    let elected = plan(&cluster, &everyone, mtu, None);
    let owners: BTreeMap<_, &str> = elected
        .elections
        .iter()
        .filter_map(|(vip, election)| Some((*vip, election.owner.as_deref()?)))
        .collect();
    for line in summary::vip_lines(&elected.inputs, &owners) {
        println!("{line}");
    }
    Ok(())
}

/// `kubernetes --check` past the settings and host checks: the cluster as the agent
/// would see it, one line per finding.
async fn check_kubernetes(
    settings: &KubernetesSettings,
    node: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    let (interface, mtu) = check_node_settings(&settings.node_settings, None)?;
    println!("ok: node {node} on {interface}, MTU {mtu}");
    let mut config = api_config().await?;
    config.connect_timeout = Some(CHECK_API_TIMEOUT);
    config.read_timeout = Some(CHECK_API_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(identified(config, AGENT_USER_AGENT))
        .context("connecting to the Kubernetes API")?;
    let findings = preflight(&client, node, namespace)
        .await
        .with_context(|| format!("the Kubernetes API server at {server} does not answer"))?;
    for finding in &findings {
        let word = if finding.ok { "ok" } else { "missing" };
        println!("{word}: {}", finding.line);
    }
    let missing = findings.iter().filter(|finding| !finding.ok).count();
    anyhow::ensure!(
        missing == 0,
        "{missing} of {} cluster checks failed: the agent would start, but not work as it should",
        findings.len()
    );
    Ok(())
}
