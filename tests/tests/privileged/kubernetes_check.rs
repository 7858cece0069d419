//! `lb-agent kubernetes --check` in the lab, as an operator runs it on a node before
//! restarting its agent (Kubernetes mode, against the API double): with everything in
//! place it passes and loads nothing; a permission taken from the agents' roles, a
//! wrong `--node` and an unreachable API server each fail it with exit status 1 and a
//! line naming what is missing, in well under its timeout.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use anyhow::ensure;
use lb_agent::sources::kubernetes::access;
use testbed::lab::{Cluster, LAN_IFACE, Service};

const NODE: &str = "node1";
/// The check's own API timeouts are 5 s; refused connections answer at once.
const PROMPT: Duration = Duration::from_secs(15);

#[test]
fn kubernetes_check_reports_what_the_cluster_lacks_item_by_item() -> anyhow::Result<()> {
    Cluster::test_kubernetes(
        "kubernetes_check_reports_what_the_cluster_lacks_item_by_item",
        3,
        vec![Service::web()],
        &[],
        scenario,
    )
}

/// Runs the check on [`NODE`] as the Node `name`; returns its exit status, stdout and
/// stderr, and prints them.
fn check(
    cluster: &Cluster,
    case: &str,
    name: &str,
) -> anyhow::Result<(Option<i32>, String, String)> {
    let started = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = cluster.kubernetes_check(NODE, name)?;
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    println!(
        "KUBERNETES-CHECK {case}: exit {:?} after {took:.1?}\n{stdout}{stderr}",
        status.code()
    );
    ensure!(took < PROMPT, "{case}: the check took {took:?}");
    Ok((status.code(), stdout, stderr))
}

fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_settled()?;
    let program = cluster.node(NODE)?.netns.xdp_program(LAN_IFACE)?;

    let (code, stdout, stderr) = check(cluster, "everything granted", NODE)?;
    ensure!(code == Some(0), "the check failed: {stdout}{stderr}");
    let granted = stdout
        .lines()
        .filter(|line| line.starts_with("ok: may "))
        .count();
    ensure!(
        granted == access::needed().len(),
        "{granted} permissions reported granted: {stdout}"
    );
    for part in [
        "ok: the Kubernetes API server answers (version v1.34.2-lab)",
        "ok: Node node1 has InternalIP 10.0.0.",
        "ok: the AddressPool CRD (xdplb.io/v1alpha1) is installed",
    ] {
        ensure!(stdout.contains(part), "{part:?} missing: {stdout}");
    }
    ensure!(
        cluster.node(NODE)?.netns.xdp_program(LAN_IFACE)? == program,
        "the check touched the running agent's XDP program"
    );

    let api = cluster.api_double()?;
    let status_patch = access::needed()
        .into_iter()
        .find(|permission| permission.resource == "services/status")
        .expect("the agent patches Service status");
    api.withhold(status_patch);
    let (code, stdout, stderr) = check(cluster, "without patch services/status", NODE)?;
    ensure!(code == Some(1), "exit {code:?}: {stdout}{stderr}");
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("missing: "))
        .collect();
    ensure!(
        missing
            == [
                "missing: may not patch services/status, needed by ipam_controller: patch_status (apply) of ingress and condition"
            ],
        "{missing:?}"
    );
    ensure!(stderr.contains("1 of 22 cluster checks failed"), "{stderr}");

    let (code, stdout, _) = check(cluster, "a wrong --node", "node9")?;
    ensure!(code == Some(1), "exit {code:?}");
    ensure!(
        stdout.contains("missing: no Node named `node9`"),
        "{stdout}"
    );

    api.stop();
    let outcome = check(cluster, "the API server stopped", NODE);
    api.resume();
    let (code, stdout, stderr) = outcome?;
    ensure!(code == Some(1), "exit {code:?}: {stdout}{stderr}");
    ensure!(
        stderr.contains("the Kubernetes API server at http://10.0.0.250:6443/ does not answer"),
        "{stderr}"
    );
    Ok(())
}
