//! `lbctl migrate metallb FILE...`: MetalLB's layer-2 configuration (`IPAddressPool`,
//! `L2Advertisement`) turned into `AddressPool`s, with what cannot be carried over said
//! plainly, and a report on the Services' annotations.
//!
//! [`metallb`] reads the files and returns the YAML; warnings also go to stderr, so they
//! are seen when the output is piped to kubectl. Below it all is pure: [`parse`] reads
//! YAML text, [`convert`] works on the parsed objects, and [`Migration::to_yaml`]
//! renders the result (the pools, with warnings and the Service report as comments, so
//! the output can be applied as it is).

mod addresses;
mod announce;
mod convert;
mod metallb;
mod render;
mod services;
#[cfg(test)]
mod tests;

use std::{
    io::{self, Read as _},
    path::{Path, PathBuf},
};

use lb_agent::files;

use self::{
    convert::{ConvertedPool, MigrateError, Migration, convert},
    metallb::{Object, Origin, parse},
    services::{ServiceReport, kept_annotations},
};
use crate::{EXIT_AGENT_ERROR, Failure};

fn read(path: &Path) -> Result<(String, String), Failure> {
    let failed = |name: &str, error: &dyn std::fmt::Display| {
        Failure::new(EXIT_AGENT_ERROR, format!("{name}: {error}"))
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        let limit = files::CONFIG_LIMIT;
        io::stdin()
            .take(limit + 1)
            .read_to_string(&mut text)
            .map_err(|error| failed("<stdin>", &files::ReadError::Io(error)))?;
        if text.len() as u64 > limit {
            return Err(failed("<stdin>", &files::ReadError::TooLarge { limit }));
        }
        return Ok(("<stdin>".to_owned(), text));
    }
    let name = path.display().to_string();
    let text =
        files::read_text(path, files::CONFIG_LIMIT).map_err(|error| failed(&name, &error))?;
    Ok((name, text))
}

pub fn metallb(files: &[PathBuf]) -> Result<String, Failure> {
    let convert_failed = |error: MigrateError| Failure::new(EXIT_AGENT_ERROR, error.to_string());
    let mut objects: Vec<Object> = Vec::new();
    for path in files {
        let (name, text) = read(path)?;
        objects.extend(parse(&name, &text).map_err(convert_failed)?);
    }
    let migration = convert(&objects).map_err(convert_failed)?;
    let warnings = migration
        .warnings
        .iter()
        .chain(migration.pools.iter().flat_map(|pool| &pool.warnings));
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    migration.to_yaml().map_err(|error| {
        Failure::new(
            EXIT_AGENT_ERROR,
            format!("writing the pools as YAML: {error}"),
        )
    })
}
