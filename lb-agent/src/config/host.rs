//! What a configuration needs of the host it runs on, beyond the file itself: checked
//! by `--check` and before a start alike, so that neither passes what the other refuses.
//! Problems are placed in the file like the file's own (line, column, field); the file
//! is parsed again for that only when there is something to place.

use std::path::Path;

use super::{
    document,
    error::{ConfigError, Issue},
    locate::{FieldPath, Problem},
    node::NodeSettings,
};
use crate::{files, membership::GossipKey};

/// Checks the node settings of the file at `path` against this host; returns the
/// warnings, placed in the file.
pub fn check(path: &Path, settings: &NodeSettings) -> Result<Vec<Issue>, ConfigError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if let Some(gossip) = &settings.gossip {
        let field = FieldPath::default().key("gossip").key("keyFile");
        let shown = gossip.key_file.display();
        match GossipKey::from_file(&gossip.key_file) {
            Ok(key_file) => warnings.extend(key_file.warning().map(|warning| Problem {
                path: field,
                message: format!("{shown}: {warning}"),
            })),
            Err(error) => problems.push(Problem {
                path: field,
                message: format!("{shown}: {error}"),
            }),
        }
    }
    if problems.is_empty() && warnings.is_empty() {
        return Ok(Vec::new());
    }
    let text = files::read_text(path, files::CONFIG_LIMIT).map_err(ConfigError::Read)?;
    let document = document::document(&text)?;
    if !problems.is_empty() {
        return Err(ConfigError::invalid(problems, &document));
    }
    Ok(warnings
        .into_iter()
        .map(|warning| warning.locate(&document))
        .collect())
}
