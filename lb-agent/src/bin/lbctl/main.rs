//! `lbctl`: asks the xdplb agent on this node what it is doing, through its local socket;
//! shows the cluster's pools and Services from the Kubernetes API; converts MetalLB's
//! configuration.
//!
//! Exit status: 0 success; 1 the agent or the API server answered with an error, the VIP
//! asked for is unknown, or the input cannot be converted; 2 bad arguments; 3 the agent
//! or the API server cannot be reached, or an answer is not understood.

mod cluster;
mod migrate;
mod render;
mod table;

use std::{
    io::{self, Write as _},
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, Subcommand, ValueEnum};
use lb_agent::{
    api::socket::{Client, ClientError, DEFAULT_PATH},
    explain::Query,
    model::Protocol,
    sources::kubernetes::kubeconfig,
};
use serde::Serialize;

use crate::cluster::ClusterError;

const EXIT_AGENT_ERROR: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

/// How long lbctl waits for the agent's answer.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster commands wait for the agent, which only adds VIP owners.
const OWNER_TIMEOUT: Duration = Duration::from_secs(2);

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the agent or the API server answered with an error, the VIP asked for is not
     known, or `migrate` cannot convert its input
  2  bad arguments
  3  the agent cannot be reached (not running, another --socket, not root), the API
     server cannot be reached (no kubeconfig, cluster down), or an answer is not
     understood

Examples:
  sudo lbctl status
  sudo lbctl vip 172.16.200.20
  sudo lbctl explain 10.0.0.100:40000 172.16.200.20:80/tcp
  sudo lbctl flows --limit 20 -o json
  lbctl pools
  lbctl services
  lbctl explain --cluster 192.168.8.10:40000 172.16.200.20:443/tcp
  lbctl migrate metallb metallb-config.yaml > pools.yaml";

/// Ask the xdplb agent on this node what it is doing, or the cluster what xdplb serves.
///
/// status, vip, flows, explain and members talk to the lb-agent running on this machine
/// through its local socket, which only root may use: run them with sudo. Counters are
/// this node's: packets to a VIP are counted on the node that received them, so look at
/// the VIP's owner for its client traffic.
///
/// pools, services and `explain --cluster` read the Kubernetes API with the kubeconfig
/// kubectl would use ($KUBECONFIG, ~/.kube/config, or the pod's service account).
///
/// Every command only reads; none changes anything.
#[derive(Debug, Parser)]
#[command(name = "lbctl", version, after_help = EXIT_CODES)]
struct Args {
    /// The agent's API socket (`api.socket` in the agent's configuration file).
    #[arg(
        long,
        global = true,
        env = "XDPLB_SOCKET",
        value_name = "PATH",
        default_value = DEFAULT_PATH
    )]
    socket: PathBuf,

    /// Output format: a table for people, or json/yaml for scripts (the agent's own
    /// field names). `migrate` always prints YAML.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,

    /// The kubeconfig file for the cluster commands (pools, services, explain --cluster;
    /// default: as kubectl finds it).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,

    /// The namespace xdplb is installed in: `services` and `explain --cluster` read its
    /// settings (ConfigMap xdplb-agent) to know which Services it serves.
    #[arg(
        long,
        global = true,
        value_name = "NAMESPACE",
        default_value = "xdplb-system"
    )]
    xdplb_namespace: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every VIP: its services and ports, the node that owns it (answers ARP), the
    /// candidates for ownership, ready backends and packets seen on this node.
    Status,
    /// One VIP in detail: who owns it and why the other candidates do not, its traffic,
    /// and how its flows are spread over nodes and pods, with per-backend counters.
    Vip {
        /// The VIP, e.g. 172.16.200.20.
        #[arg(value_parser = parse_vip)]
        vip: Ipv4Addr,
    },
    /// Client flows this node's flow cache remembers and the backend each is pinned to.
    Flows {
        /// Show at most this many flows (the total is always reported).
        #[arg(long, short = 'n', default_value_t = 50, value_name = "N")]
        limit: usize,
    },
    /// Which node and pod a client's connection to a VIP goes to, and why: the service
    /// port, the owner, both consistent-hash lookups and the flow cache. With --cluster
    /// (or --kubeconfig, --context), computed from the cluster's state instead of this
    /// node's agent.
    Explain {
        /// The client's address and source port, e.g. 10.0.0.100:40000.
        #[arg(value_parser = parse_client, value_name = "CLIENT_IP:PORT")]
        client: SocketAddrV4,
        /// The VIP, port and protocol the client connects to, e.g. 172.16.200.20:80/tcp
        /// (the protocol defaults to tcp).
        #[arg(value_parser = parse_target, value_name = "VIP:PORT[/PROTO]")]
        target: Target,
        /// Compute it from the cluster's Services, EndpointSlices, Nodes and pools, as
        /// every agent does (the owner comes from this node's agent when it answers).
        #[arg(long)]
        cluster: bool,
    },
    /// The agents this node knows through gossip: address, state (alive, suspect, down),
    /// incarnation and how long ago the state last changed.
    Members,
    /// The cluster's AddressPools: addresses, auto-assign, assigned and available
    /// counts, conditions (from the Kubernetes API).
    Pools,
    /// The LoadBalancer Services xdplb serves: address, pool, ports, the node that owns
    /// the address (when this node's agent answers) and ready/total endpoints.
    Services,
    /// Convert another load balancer's configuration to xdplb's.
    #[command(subcommand)]
    Migrate(Migrate),
}

#[derive(Debug, Subcommand)]
enum Migrate {
    /// Print AddressPools for MetalLB's IPAddressPools (announced as its L2Advertisements
    /// say), with what cannot be converted and the Service annotations that keep
    /// working, as comments. Reads YAML (several documents, `kubectl get -o yaml` lists,
    /// `-` for stdin); the output (always YAML) can be applied as it is.
    Metallb {
        /// Files holding IPAddressPool, L2Advertisement (and optionally Service) objects.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// `VIP:PORT/PROTO`.
#[derive(Clone, Copy, Debug)]
struct Target {
    vip: SocketAddrV4,
    protocol: Protocol,
}

fn parse_vip(text: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| "expected an IPv4 address, e.g. 172.16.200.20".to_owned())
}

fn parse_client(text: &str) -> Result<SocketAddrV4, String> {
    let client: SocketAddrV4 = text.parse().map_err(|_| {
        "expected the client's IPv4 address and port, e.g. 10.0.0.100:40000".to_owned()
    })?;
    if client.port() == 0 {
        return Err(
            "port 0 is no client's source port: give the port the client connects from (1-65535)"
                .to_owned(),
        );
    }
    Ok(client)
}

fn parse_target(text: &str) -> Result<Target, String> {
    let (address, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(format!("unknown protocol `{other}`: use tcp or udp")),
    };
    let vip: SocketAddrV4 = address.parse().map_err(|_| {
        "expected VIP:PORT/PROTOCOL, e.g. 172.16.200.20:80/tcp or 172.16.200.53:53/udp".to_owned()
    })?;
    if vip.port() == 0 {
        return Err(
            "port 0 is no service port: give the port the client connects to (1-65535)".to_owned(),
        );
    }
    Ok(Target { vip, protocol })
}

/// Why lbctl stops with an error: the message and the exit status.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: String) -> Self {
        Self { code, message }
    }
}

impl From<ClusterError> for Failure {
    fn from(error: ClusterError) -> Self {
        let ClusterError::Api { what, source } = &error else {
            return Self::new(EXIT_AGENT_ERROR, error.to_string());
        };
        let hint = match source {
            kube::Error::Api(status) if status.code == 404 && *what == "AddressPools" => {
                "The AddressPool CRD is not installed: kubectl apply -f deploy/crds"
            }
            kube::Error::Api(status) if status.code == 403 => {
                "Your kubeconfig's user may not read these; lbctl needs to list them cluster-wide."
            }
            kube::Error::Api(status) if status.code == 401 => {
                "The API server does not accept your kubeconfig's credentials; renew them."
            }
            kube::Error::Api(_) => "",
            _ => {
                return Self::new(
                    EXIT_UNREACHABLE,
                    format!(
                        "{error}\nThe Kubernetes API server cannot be reached. Check that \
                         `kubectl get nodes` works, or pass --kubeconfig / --context."
                    ),
                );
            }
        };
        Self::new(
            EXIT_AGENT_ERROR,
            format!("{error}\n{hint}").trim_end().to_owned(),
        )
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Agent(message) => Self::new(
                EXIT_AGENT_ERROR,
                format!("the agent could not answer: {message}"),
            ),
            ClientError::Connect { path, .. } if not_a_socket(&path) => Self::new(
                EXIT_UNREACHABLE,
                format!(
                    "{} is not a socket: pass the agent's socket (`api.socket` in its \
                     configuration) with --socket or XDPLB_SOCKET",
                    path.display()
                ),
            ),
            error @ ClientError::Connect { .. } => Self::new(
                EXIT_UNREACHABLE,
                format!(
                    "{error}\nIs lb-agent running on this node? The socket is for root only: \
                     run lbctl with sudo. If the agent uses another socket, pass --socket \
                     or set XDPLB_SOCKET."
                ),
            ),
            error => Self::new(EXIT_UNREACHABLE, error.to_string()),
        }
    }
}

/// Whether `path` exists as something other than a socket.
fn not_a_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata(path).is_ok_and(|metadata| !metadata.file_type().is_socket())
}

fn output<T: Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<String, Failure> {
    let encoded = match format {
        Format::Table => return Ok(table(value)),
        Format::Json => serde_json::to_string_pretty(value)
            .map(|text| text + "\n")
            .map_err(|error| error.to_string()),
        Format::Yaml => serde_yaml::to_string(value).map_err(|error| error.to_string()),
    };
    encoded.map_err(|error| Failure::new(EXIT_UNREACHABLE, format!("encoding the answer: {error}")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
}

/// A client for the cluster commands: the kubeconfig as kubectl finds it (what
/// `kube::Client::try_default` does), or the one --kubeconfig/--context name.
async fn kube_client(args: &Args) -> Result<kube::Client, Failure> {
    let no_config = |error: String| {
        Failure::new(
            EXIT_UNREACHABLE,
            format!(
                "no usable Kubernetes configuration: {error}\nlbctl looks for a kubeconfig as \
                 kubectl does ($KUBECONFIG, ~/.kube/config, or a pod's service account); pass \
                 --kubeconfig FILE or --context NAME to choose one."
            ),
        )
    };
    let config = kubeconfig::load(args.kubeconfig.as_deref(), args.context.clone())
        .await
        .map_err(|error| no_config(error.to_string()))?;
    kube::Client::try_from(cluster::configured(config))
        .map_err(|error| no_config(error.to_string()))
}

/// The VIPs this node's agent reports, with their owners; `None` when no agent answers
/// (lbctl without sudo, or not on a node), which only costs the owners.
fn agent_owners(args: &Args) -> Option<std::collections::BTreeMap<Ipv4Addr, Option<String>>> {
    let status = Client::connect(&args.socket, OWNER_TIMEOUT)
        .and_then(|mut client| client.status())
        .ok()?;
    Some(
        status
            .vips
            .into_iter()
            .map(|vip| (vip.vip, vip.owner))
            .collect(),
    )
}

async fn run_cluster(args: &Args) -> Result<String, Failure> {
    let client = kube_client(args).await?;
    let format = args.output;
    match &args.command {
        Command::Pools => output(format, &cluster::pools(&client).await?, |pools| {
            render::pools(pools)
        }),
        Command::Services => {
            let snapshot = cluster::snapshot(&client).await?;
            let (class, note) = cluster::class_policy(&client, &args.xdplb_namespace).await;
            let owners = agent_owners(args);
            let services = cluster::services(&snapshot, class, owners.as_ref());
            let notes: Vec<String> = note.into_iter().collect();
            output(format, &services, |services| {
                render::services(services, &notes, owners.is_some())
            })
        }
        Command::Explain {
            client: source,
            target,
            ..
        } => {
            let snapshot = cluster::snapshot(&client).await?;
            let (class, _) = cluster::class_policy(&client, &args.xdplb_namespace).await;
            let agent_owner =
                agent_owners(args).and_then(|mut owners| owners.remove(target.vip.ip()));
            let query = Query {
                client: *source,
                vip: target.vip,
                protocol: target.protocol,
            };
            let explanation = cluster::explain(&snapshot, class, query, agent_owner)?;
            output(format, &explanation, render::explanation)
        }
        _ => unreachable!("only cluster commands get here"),
    }
}

fn is_cluster_command(args: &Args) -> bool {
    match &args.command {
        Command::Pools | Command::Services => true,
        Command::Explain { cluster, .. } => {
            *cluster || args.kubeconfig.is_some() || args.context.is_some()
        }
        _ => false,
    }
}

fn run(args: &Args) -> Result<String, Failure> {
    if let Command::Migrate(Migrate::Metallb { files }) = &args.command {
        return migrate::metallb(files);
    }
    if is_cluster_command(args) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| Failure::new(EXIT_UNREACHABLE, format!("starting tokio: {error}")))?;
        return runtime.block_on(run_cluster(args));
    }
    let mut client = Client::connect(&args.socket, TIMEOUT)?;
    let format = args.output;
    match &args.command {
        Command::Status => output(format, &client.status()?, render::status),
        Command::Vip { vip } => {
            let status = client.status()?;
            let Some(found) = status.vips.iter().find(|known| known.vip == *vip) else {
                let known: Vec<String> = status.vips.iter().map(|v| v.vip.to_string()).collect();
                return Err(Failure::new(
                    EXIT_AGENT_ERROR,
                    format!(
                        "{vip} is not a VIP of this cluster; the agent knows {} (see lbctl status)",
                        if known.is_empty() {
                            "no VIPs".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            output(format, found, |found| render::vip(&status, found))
        }
        Command::Flows { limit } => output(format, &client.flows(*limit)?, render::flows),
        Command::Explain {
            client: source,
            target,
            ..
        } => {
            let explanation = client.explain(*source, target.vip, target.protocol)?;
            output(format, &explanation, render::explanation)
        }
        Command::Members => output(format, &client.members()?, |members| {
            render::members(members, now_ms())
        }),
        Command::Pools | Command::Services | Command::Migrate(_) => {
            unreachable!("handled before connecting to the agent")
        }
    }
}

/// Lines of an error longer than this are cut: a value of thousands of characters
/// (a mistyped argument, a field of a file) would bury the message.
const MAX_ERROR_LINE: usize = 300;

/// `text` with every over-long line cut to [`MAX_ERROR_LINE`] characters.
fn clipped(text: &str) -> String {
    text.lines()
        .map(|line| match line.char_indices().nth(MAX_ERROR_LINE) {
            Some((at, _)) => {
                let left_out = line[at..].chars().count();
                format!("{}... ({left_out} more characters)", &line[..at])
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let text = error.render().to_string();
            let code = error.exit_code();
            if code == 0 {
                // --help and --version: printed as they are.
                let _ = io::stdout().lock().write_all(text.as_bytes());
            } else {
                eprintln!("{}", clipped(text.trim_end()));
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    match run(&args) {
        Ok(text) => {
            // A closed pipe (`lbctl flows | head`) is not an error.
            let _ = io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {}", clipped(&failure.message));
            ExitCode::from(failure.code)
        }
    }
}
