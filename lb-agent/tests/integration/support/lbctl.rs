//! Running the lbctl binary as a user would, away from the environment of whoever runs
//! the tests (their `XDPLB_SOCKET`, their `KUBECONFIG`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// `lbctl`, ready for its arguments.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lbctl"));
    command.env_remove("XDPLB_SOCKET").env_remove("KUBECONFIG");
    command
}

/// What lbctl printed, once it exited with `code`: stdout on success; on failure
/// stderr, and nothing on stdout.
pub fn printed(output: &Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if code == 0 {
        return String::from_utf8(output.stdout.clone()).expect("UTF-8");
    }
    assert!(output.stdout.is_empty(), "errors print nothing on stdout");
    String::from_utf8(output.stderr.clone()).expect("UTF-8")
}

pub fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

/// A kubeconfig in `dir` for the API server at the URL `server`, without credentials.
pub fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n\
         users:\n- name: admin\n  user: {{}}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: admin\n\
         current-context: lab\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// lbctl with `kubeconfig` and no agent to ask, run off the async runtime, which meanwhile
/// serves the API server double.
pub async fn with_kubeconfig(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut command = command();
    command
        .arg("--socket")
        .arg(kubeconfig.with_file_name("no-agent.sock"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run lbctl"))
        .await
        .expect("lbctl ran")
}
