//! Running external commands with their invocation echoed, failing on a non-zero exit.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
};

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

/// Runs `command` like [`run`], passing its stdout through line by line to `each_line`
/// as well as to our own stdout.
pub fn run_observed(command: &mut Command, mut each_line: impl FnMut(&str)) -> anyhow::Result<()> {
    eprintln!("+ {}", describe(command));
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", describe(command)))?;
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading child stdout")?;
        println!("{line}");
        each_line(&line);
    }
    let status = child.wait().context("waiting for child")?;
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
