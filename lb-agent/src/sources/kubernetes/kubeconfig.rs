//! Finding the Kubernetes API as kubectl does — a kubeconfig named on the command line,
//! else the files `$KUBECONFIG` lists (merged), else `~/.kube/config`, else the pod's
//! service account — with every kubeconfig read through [`crate::files`]: kube's own
//! reader would read `/dev/zero` until memory runs out and wait on a FIFO forever. The
//! cap is the configuration's (16 MiB); a kubeconfig with embedded certificates takes
//! a few KiB per cluster.

use std::path::{Path, PathBuf};

use kube::{
    Config,
    config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError},
};

use crate::files::{self, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigLoadError {
    // The errors are named `error`, not `source`: the message carries them once.
    #[error("{}: {error}", path.display())]
    Read { path: PathBuf, error: ReadError },
    #[error("{}: {error}", path.display())]
    Parse {
        path: PathBuf,
        error: KubeconfigError,
    },
    #[error(transparent)]
    Config(#[from] KubeconfigError),
    // Not a `#[source]`: lbctl prints the message alone, the agent the whole chain.
    #[error("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod: {0}")]
    InCluster(InClusterError),
}

/// The client configuration: from `explicit` (`--kubeconfig`) or the files kubectl would
/// read, with `context` chosen among their contexts; with neither file nor `context`,
/// the pod's service account.
pub async fn load(
    explicit: Option<&Path>,
    context: Option<String>,
) -> Result<Config, KubeconfigLoadError> {
    let paths = match explicit {
        Some(path) => vec![path.to_owned()],
        None => kubectl_paths(),
    };
    if paths.is_empty() && context.is_none() {
        return Config::incluster().map_err(KubeconfigLoadError::InCluster);
    }
    let mut merged = Kubeconfig::default();
    for path in paths {
        merged = merged.merge(read(&path)?)?;
    }
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    Ok(Config::from_custom_kubeconfig(merged, &options).await?)
}

/// `$KUBECONFIG`'s files when it names any, else `~/.kube/config` when it exists.
fn kubectl_paths() -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
        .map(|value| std::env::split_paths(&value).collect())
        .unwrap_or_default();
    let listed: Vec<PathBuf> = listed
        .into_iter()
        .filter(|path| !path.as_os_str().is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    std::env::home_dir()
        .map(|home| home.join(".kube").join("config"))
        .filter(|path| path.exists())
        .into_iter()
        .collect()
}

fn read(path: &Path) -> Result<Kubeconfig, KubeconfigLoadError> {
    let text =
        files::read_text(path, files::CONFIG_LIMIT).map_err(|error| KubeconfigLoadError::Read {
            path: path.to_owned(),
            error,
        })?;
    Kubeconfig::from_yaml(&text).map_err(|error| KubeconfigLoadError::Parse {
        path: path.to_owned(),
        error,
    })
}
