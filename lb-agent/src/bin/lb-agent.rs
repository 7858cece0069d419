//! `lb-agent`: the xdplb node agent, standalone mode.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use lb_agent::{
    config::{self, Standalone},
    dataplane::{Dataplane as _, kernel::KernelDataplane, loader, sysctl},
    diff::diff,
    model::{State, desired_state},
    summary,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Exit status for a configuration file that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

/// xdplb node agent: load-balances traffic to service VIPs in XDP, with direct server
/// return.
///
/// Runs on every node. It attaches an XDP program (incoming VIP traffic) and a TC
/// program (replies) to the LAN interface and fills their tables from the configuration
/// file: which VIPs and ports exist and which endpoints serve them. Packets to a VIP are
/// spread over the nodes with ready endpoints and tunnelled there; replies go straight
/// back to the client from the serving node. Other traffic is not touched.
///
/// Needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON). Stop it with Ctrl-C or
/// SIGTERM; the programs are detached on exit. Logs go to stderr; set RUST_LOG (e.g.
/// RUST_LOG=debug) for more or less detail.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The standalone configuration file (YAML): this node, its peers, the services with
    /// their VIPs, ports and endpoints. See lb-agent/examples/standalone.yaml.
    #[arg(long, short, env = "XDPLB_CONFIG", value_name = "FILE")]
    config: PathBuf,

    /// Only check the file and print what each VIP would do, then exit. Exit status 2
    /// means the file is invalid; nothing is loaded into the kernel.
    #[arg(long)]
    check: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let standalone = match config::load(&args.config) {
        Ok(standalone) => standalone,
        Err(error) => {
            for line in error.to_string().lines() {
                eprintln!("error: {}: {line}", args.config.display());
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let outcome = if args.check {
        check(&standalone)
    } else {
        run(&standalone).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The MTU from the file, else the interface's.
fn mtu(standalone: &Standalone) -> anyhow::Result<u32> {
    let config = standalone.config();
    if let Some(mtu) = config.mtu {
        return Ok(mtu);
    }
    let path = format!("/sys/class/net/{}/mtu", config.interface);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the MTU of {} from {path} (set `mtu:` in the file to skip this)",
            config.interface
        )
    })?;
    text.trim()
        .parse()
        .with_context(|| format!("{path} holds {text:?}, not an MTU"))
}

fn vip_lines(standalone: &Standalone, mtu: u32) -> Vec<String> {
    summary::vip_lines(&standalone.inputs(mtu), &standalone.owners())
}

fn check(standalone: &Standalone) -> anyhow::Result<()> {
    let config = standalone.config();
    let mtu = mtu(standalone)?;
    let node = standalone.node();
    println!(
        "ok: node {} ({}) on {}, MTU {mtu}, {} peers, {} services",
        node.name,
        node.address,
        config.interface,
        config.peers.len(),
        config.services.len()
    );
    for line in vip_lines(standalone, mtu) {
        println!("{line}");
    }
    Ok(())
}

async fn run(standalone: &Standalone) -> anyhow::Result<()> {
    let interface = &standalone.config().interface;
    let mtu = mtu(standalone)?;
    let state = desired_state(&standalone.inputs(mtu));
    let capacities = standalone.capacities();
    let mut ebpf = loader::load(&capacities).context("loading the BPF programs")?;
    let mut dataplane = KernelDataplane::open(&mut ebpf, capacities)?;
    // Tables first, then attach: the first packet already sees the whole configuration.
    dataplane
        .apply(&diff(&State::default(), &state))
        .context("writing the BPF maps")?;
    let changed = sysctl::prepare_interface(interface)
        .with_context(|| format!("preparing interface {interface}"))?;
    if !changed.is_empty() {
        tracing::info!(%interface, settings = ?changed, "enabled IPv4 settings the data path needs");
    }
    let attachment = loader::attach(&mut ebpf, interface)
        .with_context(|| format!("attaching to interface {interface}"))?;
    tracing::info!(
        %interface,
        xdp_mode = ?attachment.xdp_mode,
        node = %standalone.node().name,
        address = %standalone.node().address,
        mtu,
        "data path attached"
    );
    for line in vip_lines(standalone, mtu) {
        tracing::info!("{line}");
    }
    shutdown_signal().await?;
    tracing::info!("shutting down; the programs detach as the object is dropped");
    drop(dataplane);
    drop(ebpf);
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
