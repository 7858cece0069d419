//! The lbctl binary's arguments and `migrate` inputs: each refused with its exit status
//! (2 for bad arguments, 1 for input that cannot be converted) and a message naming the
//! argument or the file's problem. None of these needs the agent or a cluster; the
//! socket and kubeconfig point at paths that do not exist, so a command that got past
//! its argument checks would fail differently (exit 3).

use std::process::Output;

use super::table::{Checker, Expect, count};
use crate::support::lbctl::command;

pub const POOL: &str = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: lan, namespace: metallb-system }\nspec:\n  addresses: [192.168.8.240-192.168.8.250]\n";

/// One invocation: its arguments (`{dir}` is a scratch directory holding `files`).
pub struct LbctlCase {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub files: Vec<(&'static str, &'static str)>,
    /// The exit status when refused.
    pub code: i32,
    pub expect: Expect,
}

fn bad(
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
    parts: &'static [&'static str],
) -> LbctlCase {
    LbctlCase {
        name,
        args,
        files: Vec::new(),
        code,
        expect: Expect::Rejected(parts),
    }
}

fn bad_file(name: &'static str, text: &'static str, parts: &'static [&'static str]) -> LbctlCase {
    LbctlCase {
        name,
        args: &["migrate", "metallb", "{dir}/in.yaml"],
        files: vec![("in.yaml", text)],
        code: 1,
        expect: Expect::Rejected(parts),
    }
}

/// `lbctl vip` with a value of 10,000 characters.
fn long_vip() -> &'static [&'static str] {
    static ARGS: std::sync::LazyLock<[&'static str; 2]> =
        std::sync::LazyLock::new(|| ["vip", "A".repeat(10_000).leak()]);
    ARGS.as_slice()
}

pub fn cases() -> Vec<LbctlCase> {
    vec![
        LbctlCase {
            name: "migrate a pool (valid control)",
            args: &["migrate", "metallb", "{dir}/in.yaml"],
            files: vec![("in.yaml", POOL)],
            code: 0,
            expect: Expect::Accepted,
        },
        bad(
            "unknown subcommand",
            &["stauts"],
            2,
            &["unrecognized subcommand 'stauts'"],
        ),
        bad("no subcommand", &[], 2, &["Usage: lbctl"]),
        bad(
            "VIP not an address",
            &["vip", "172.16.200"],
            2,
            &["'172.16.200'", "expected an IPv4 address"],
        ),
        bad(
            "IPv6 VIP",
            &["vip", "fd00::20"],
            2,
            &["'fd00::20'", "expected an IPv4 address"],
        ),
        bad("VIP missing", &["vip"], 2, &["<VIP>"]),
        bad(
            "bad output format",
            &["-o", "xml", "status"],
            2,
            &["invalid value 'xml'", "--output", "table, json, yaml"],
        ),
        bad(
            "explain client without a port",
            &["explain", "10.0.0.100", "172.16.200.20:80/tcp"],
            2,
            &["'10.0.0.100'", "client's IPv4 address and port"],
        ),
        bad(
            "explain with SCTP",
            &["explain", "10.0.0.100:40000", "172.16.200.20:80/sctp"],
            2,
            &["unknown protocol `sctp`"],
        ),
        bad(
            "explain target without a port",
            &["explain", "10.0.0.100:40000", "172.16.200.20"],
            2,
            &["expected VIP:PORT/PROTOCOL"],
        ),
        bad(
            "explain with client port 0",
            &["explain", "10.0.0.100:0", "172.16.200.20:80/tcp"],
            2,
            &["'10.0.0.100:0'", "port 0 is no client's source port"],
        ),
        bad(
            "explain with VIP port 0",
            &["explain", "10.0.0.100:40000", "172.16.200.20:0/tcp"],
            2,
            &["port 0 is no service port"],
        ),
        bad(
            "a 10,000-character VIP (the echo is cut)",
            long_vip(),
            2,
            &["invalid value 'AAAA", "... (9", " more characters)"],
        ),
        LbctlCase {
            name: "a --socket that is a regular file",
            args: &["--socket", "{dir}/plain", "status"],
            files: vec![("plain", "not a socket\n")],
            code: 3,
            expect: Expect::Rejected(&["plain is not a socket", "--socket"]),
        },
        bad(
            "flows limit not a number",
            &["flows", "--limit", "many"],
            2,
            &["'many'", "--limit"],
        ),
        bad(
            "unknown flag",
            &["status", "--verbose"],
            2,
            &["unexpected argument '--verbose'"],
        ),
        bad(
            "migrate from an unknown source",
            &["migrate", "kubevip", "x.yaml"],
            2,
            &["unrecognized subcommand 'kubevip'"],
        ),
        bad(
            "migrate without files",
            &["migrate", "metallb"],
            2,
            &["<FILE>"],
        ),
        bad(
            "migrate a missing file",
            &["migrate", "metallb", "{dir}/absent.yaml"],
            1,
            &["cannot read", "absent.yaml"],
        ),
        bad_file(
            "migrate YAML with a syntax error",
            "kind: [IPAddressPool\n",
            &["in.yaml", "not valid YAML"],
        ),
        bad_file(
            "migrate an unknown kind",
            "apiVersion: metallb.io/v1beta1\nkind: AddressPol\nmetadata: { name: p }\n",
            &["in.yaml", "unknown kind `AddressPol`"],
        ),
        bad_file(
            "migrate nothing to convert",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\ndata: {}\n",
            &["in.yaml"],
        ),
        bad_file(
            "migrate a pool with a bad address",
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: lan }\nspec:\n  addresses: [192.168.8.250-192.168.8.240]\n",
            &["IPAddressPool lan: spec.addresses", "reversed"],
        ),
        bad_file(
            "migrate a pool of every address (host bits set)",
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: all }\nspec:\n  addresses: [10.1.2.3/0]\n",
            &[
                "IPAddressPool all: spec.addresses",
                "10.1.2.3/0",
                "expected a unicast IPv4 address",
            ],
        ),
        bad_file(
            "migrate a loopback pool",
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: lo }\nspec:\n  addresses: [127.0.0.1/8]\n",
            &["127.0.0.1/8", "expected a unicast IPv4 address"],
        ),
        bad_file(
            "migrate a multicast pool",
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: mc }\nspec:\n  addresses: [224.0.0.5/4]\n",
            &["224.0.0.5/4", "expected a unicast IPv4 address"],
        ),
        bad_file(
            "migrate IPv6 pools only",
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: v6 }\nspec:\n  addresses: [fd00::/120]\n",
            &["no IPAddressPool of the input has an IPv4 address"],
        ),
        LbctlCase {
            name: "migrate a pool defined twice",
            args: &["migrate", "metallb", "{dir}/a.yaml", "{dir}/b.yaml"],
            files: vec![("a.yaml", POOL), ("b.yaml", POOL)],
            code: 1,
            expect: Expect::Rejected(&["b.yaml", "`lan` is defined twice, first in", "a.yaml"]),
        },
    ]
}

fn run_lbctl(case: &LbctlCase, dir: &std::path::Path) -> Output {
    for (name, text) in &case.files {
        std::fs::write(dir.join(name), text).expect("write the input");
    }
    let dir = dir.display().to_string();
    let args: Vec<String> = case
        .args
        .iter()
        .map(|arg| arg.replace("{dir}", &dir))
        .collect();
    let mut command = command();
    command.env("KUBECONFIG", format!("{dir}/no-kubeconfig"));
    if !args.iter().any(|arg| arg == "--socket") {
        command.arg("--socket").arg(format!("{dir}/no-agent.sock"));
    }
    command.args(&args).output().expect("run lbctl")
}

pub fn run() {
    let mut checker = Checker::new("lbctl");
    for case in cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = run_lbctl(&case, dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let outcome = match output.status.code() {
            Some(0) => Ok(()),
            _ => Err(stderr.clone()),
        };
        checker.verdict(case.name, case.expect, outcome);
        if output.status.code() != Some(case.code) {
            checker.fail(
                case.name,
                format!(
                    "exit status {:?}, want {}: {stderr}",
                    output.status.code(),
                    case.code
                ),
            );
        }
        if case.code != 0 && !output.stdout.is_empty() {
            checker.fail(case.name, "an error printed something on stdout".to_owned());
        }
        if stderr.len() > 2_000 {
            checker.fail(case.name, format!("{} bytes of error", stderr.len()));
        }
    }
    checker.finish();
}

pub fn counts() -> (usize, usize) {
    count(cases().iter().map(|case| &case.expect))
}
