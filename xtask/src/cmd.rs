//! Running external commands with their invocation echoed, failing on a non-zero exit.

use std::process::{Command, Output};

use anyhow::{Context as _, bail};

/// Runs `command` with inherited stdio after echoing it.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs `command` quietly and returns its output whatever the exit status; `None` when
/// the program does not exist.
pub fn probe(command: &mut Command) -> Option<Output> {
    command.output().ok()
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}
