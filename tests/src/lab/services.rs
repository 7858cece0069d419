//! Long-running processes of the lab: HTTP, DNS and echo servers in pods, agents on
//! nodes. Each start returns once the process is ready, and fails early, with its log,
//! if the process dies while starting.

use std::{fs, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::bail;

use super::{LAN_IFACE, Node, Pod, shell_quote, wait_for};
use crate::netns::{Netns, Process};

const SERVER_START: Duration = Duration::from_secs(10);
const AGENT_START: Duration = Duration::from_secs(30);

/// A line echo server: every line a client sends comes back prefixed with the pod's
/// address, so the client knows which pod holds its connection. One thread per
/// connection; each accepted connection is logged as `connection from ADDR:PORT`.
const ECHO_SERVER: &str = r#"
import socketserver, sys
pod, port = sys.argv[1], int(sys.argv[2])
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        print(f"connection from {self.client_address[0]}:{self.client_address[1]}", flush=True)
        for line in self.rfile:
            self.wfile.write(pod.encode() + b" " + line)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
Server((pod, port), Echo).serve_forever()
"#;

impl Pod {
    /// Serves the files under `root` over HTTP on `port` (python's http.server, HTTP/1.0,
    /// one connection per request). The access log, one line per request starting with
    /// the client address, goes to `log`.
    pub fn serve_http(&self, port: u16, root: &Path, log: &Path) -> anyhow::Result<Process> {
        let command = format!(
            "python3 -u -m http.server {port} --bind {} --directory {}",
            self.addr,
            shell_quote(root.display())
        );
        let process = spawn_logged(&self.netns, &command, log)?;
        wait_listening(&self.netns, process, &[("t", port)], log)
    }

    /// Answers DNS on `port` over UDP and TCP with dnsmasq, authoritative for `records`
    /// (name, address) and forwarding nothing. Every query is logged to `log` as
    /// `query[A] NAME from CLIENT`.
    pub fn serve_dns(
        &self,
        port: u16,
        records: &[(&str, Ipv4Addr)],
        log: &Path,
    ) -> anyhow::Result<Process> {
        let records: String = records
            .iter()
            .map(|(name, addr)| format!(" --address=/{name}/{addr}"))
            .collect();
        // --user=root keeps the log file writable; --pid-file= writes none.
        let command = format!(
            "dnsmasq --keep-in-foreground --user=root --pid-file= --port {port} \
             --listen-address {} --bind-interfaces --no-resolv --no-hosts \
             --log-queries --log-facility={}{records}",
            self.addr,
            shell_quote(log.display())
        );
        let process = spawn_logged(&self.netns, &command, log)?;
        wait_listening(&self.netns, process, &[("u", port), ("t", port)], log)
    }

    /// Serves [`ECHO_SERVER`] on TCP `port`, logging connections to `log`.
    pub fn serve_echo(&self, port: u16, log: &Path) -> anyhow::Result<Process> {
        let command = format!(
            "python3 -u -c {} {} {port}",
            shell_quote(ECHO_SERVER),
            self.addr
        );
        let process = spawn_logged(&self.netns, &command, log)?;
        wait_listening(&self.netns, process, &[("t", port)], log)
    }
}

impl Node {
    /// Starts `agent --config CONFIG` on the node and returns once it has attached its
    /// XDP program to the LAN interface.
    pub fn start_agent(&self, agent: &Path, config: &Path, log: &Path) -> anyhow::Result<Process> {
        let command = format!(
            "{} --config {}",
            shell_quote(agent.display()),
            shell_quote(config.display())
        );
        let mut process = spawn_logged(&self.netns, &command, log)?;
        wait_for(
            &format!("the agent on {} to attach XDP to {LAN_IFACE}", self.name),
            AGENT_START,
            || {
                ensure_running(&mut process, log)?;
                Ok(self.has_xdp()?.then_some(()))
            },
        )?;
        Ok(process)
    }
}

/// Runs `command` in `netns` with stdout and stderr appended to `log`.
pub(super) fn spawn_logged(netns: &Netns, command: &str, log: &Path) -> anyhow::Result<Process> {
    // exec keeps the guard's pid the server's own, so dropping the guard kills it.
    let script = format!("exec {command} >>{} 2>&1", shell_quote(log.display()));
    netns.spawn("sh", &["-c", &script])
}

/// Waits until every (`ss` protocol letter, port) has a listening socket.
fn wait_listening(
    netns: &Netns,
    mut process: Process,
    sockets: &[(&str, u16)],
    log: &Path,
) -> anyhow::Result<Process> {
    for &(protocol, port) in sockets {
        wait_for(
            &format!("a listener on {protocol}/{port} in {}", netns.name()),
            SERVER_START,
            || {
                ensure_running(&mut process, log)?;
                let listeners = netns.run(&format!("ss -Hln{protocol} 'sport = :{port}'"))?;
                Ok((!listeners.trim().is_empty()).then_some(()))
            },
        )?;
    }
    Ok(process)
}

pub(super) fn ensure_running(process: &mut Process, log: &Path) -> anyhow::Result<()> {
    if process.has_exited()? {
        let output = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "process exited while starting; {}:\n{output}",
            log.display()
        );
    }
    Ok(())
}
