//! The lbctl binary as a user runs it: against the agent's socket, against a cluster's
//! API server, and converting MetalLB's configuration.

mod agent;
mod cluster;
mod migrate;

/// `-h` and `--version` of each binary describe that binary, not the crate both come
/// from.
#[test]
fn help_and_version_name_each_binary() {
    for (binary, name, about) in [
        (
            env!("CARGO_BIN_EXE_lbctl"),
            "lbctl",
            "Ask the xdplb agent on this node what it is doing",
        ),
        (
            env!("CARGO_BIN_EXE_lb-agent"),
            "lb-agent",
            "xdplb node agent: load-balances traffic to service VIPs in XDP",
        ),
    ] {
        let run = |flag: &str| {
            let output = std::process::Command::new(binary)
                .arg(flag)
                .output()
                .expect("run");
            assert!(output.status.success(), "{name} {flag}");
            String::from_utf8(output.stdout).expect("UTF-8")
        };
        assert!(run("-h").starts_with(about), "{name} -h:\n{}", run("-h"));
        assert!(
            run("--version").starts_with(&format!("{name} ")),
            "{name} --version: {}",
            run("--version")
        );
    }
}
