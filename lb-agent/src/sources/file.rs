//! The standalone file as a [`Source`]: [`FileSource`] notices edits by polling the
//! modification time, size and inode, which also catches Kubernetes' ConfigMap symlink
//! swaps.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::time::{Interval, MissedTickBehavior, interval};

use super::{Cluster, Settings, Source};
use crate::{
    config::{self, ConfigError, ReloadRefusal, Standalone},
    telemetry::{Component, Telemetry},
};

/// How often the file is looked at.
const FILE_POLL: Duration = Duration::from_secs(1);

/// What identifies one version of the file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

/// The file, and the version last looked at.
#[derive(Debug)]
pub struct ConfigSource {
    path: PathBuf,
    seen: Option<Stamp>,
}

/// The outcome of reading the file again.
#[derive(Debug)]
pub enum Reload {
    /// Same configuration as running.
    Unchanged,
    /// The configuration to run from now on, and the settings it changes that only
    /// take effect after a restart (kept at their running values).
    Applied {
        config: Box<Standalone>,
        needs_restart: Vec<&'static str>,
    },
    /// The file is invalid; the running configuration stays.
    Invalid(ConfigError),
    /// The file is valid but cannot be applied without a restart.
    Refused(ReloadRefusal),
}

impl ConfigSource {
    /// Starts watching `path`, taking its current version as seen.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let seen = stamp(&path);
        Self { path, seen }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file changed on disk since the last call (or since [`Self::new`]).
    pub fn changed(&mut self) -> bool {
        let now = stamp(&self.path);
        let changed = now != self.seen;
        self.seen = now;
        changed
    }

    /// Reads the file and compares it with `running`.
    pub fn reload(&self, running: &Standalone) -> Reload {
        match config::load_apart(&self.path) {
            Err(error) => Reload::Invalid(error),
            Ok(new) if &new == running => Reload::Unchanged,
            Ok(new) => match running.reloaded(new) {
                Ok((config, needs_restart)) if &config == running && needs_restart.is_empty() => {
                    Reload::Unchanged
                }
                Ok((config, needs_restart)) => Reload::Applied {
                    config: Box::new(config),
                    needs_restart,
                },
                Err(refusal) => Reload::Refused(refusal),
            },
        }
    }
}

/// The standalone file as the running agent's source.
#[derive(Debug)]
pub struct FileSource {
    file: ConfigSource,
    running: Standalone,
    settings: Settings,
    poll: Interval,
    /// Rejected versions of the file so far.
    failures: u64,
    /// Counts the rejected versions by kind.
    telemetry: Arc<Telemetry>,
}

impl FileSource {
    /// `running` is what `path` held at start; rejected versions are counted into
    /// `telemetry`.
    pub fn new(path: impl Into<PathBuf>, running: Standalone, telemetry: Arc<Telemetry>) -> Self {
        let mut poll = interval(FILE_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            file: ConfigSource::new(path),
            settings: Settings::from(&running.config().node_settings),
            running,
            poll,
            failures: 0,
            telemetry,
        }
    }

    fn rejected(&mut self, kind: &'static str) {
        self.failures += 1;
        self.telemetry.count_error(Component::FileSource, kind);
    }

    fn read_again(&mut self) -> Option<Arc<Cluster>> {
        let path = self.file.path().display().to_string();
        match self.file.reload(&self.running) {
            Reload::Unchanged => {
                tracing::info!("the configuration is unchanged");
                None
            }
            Reload::Applied {
                config,
                needs_restart,
            } => {
                if !needs_restart.is_empty() {
                    tracing::warn!(settings = ?needs_restart, "these settings changed but only take effect after a restart; running with the previous values");
                }
                tracing::info!("applying the new configuration");
                self.running = *config;
                Some(Arc::new(Cluster::from_standalone(&self.running)))
            }
            Reload::Invalid(error) => {
                self.rejected(error.metric_label());
                for line in error.to_string().lines() {
                    tracing::error!(file = %path, kind = error.metric_label(), failures = self.failures, "rejected configuration, keeping the running one: {line}");
                }
                None
            }
            Reload::Refused(refusal) => {
                self.rejected(refusal.metric_label());
                tracing::error!(%refusal, "rejected configuration, keeping the running one");
                None
            }
        }
    }
}

impl Source for FileSource {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn first(&mut self) -> Arc<Cluster> {
        Arc::new(Cluster::from_standalone(&self.running))
    }

    async fn next(&mut self) -> Arc<Cluster> {
        loop {
            self.poll.tick().await;
            if self.file.changed() {
                tracing::info!(file = %self.file.path().display(), "the configuration file changed; reloading");
                if let Some(cluster) = self.read_again() {
                    return cluster;
                }
            }
        }
    }

    fn reload(&mut self) -> Option<Arc<Cluster>> {
        tracing::info!(file = %self.file.path().display(), "SIGHUP: reloading the configuration");
        self.read_again()
    }

    fn live_peers(&self) -> bool {
        false
    }

    fn announced(&mut self, _owned: &BTreeSet<Ipv4Addr>) {}
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/standalone.yaml");

    fn write(path: &Path, text: &str) {
        // A new inode, as editors and ConfigMap updates produce.
        let temporary = path.with_extension("tmp");
        fs::write(&temporary, text).expect("write");
        fs::rename(&temporary, path).expect("rename");
    }

    fn setup() -> (tempfile::TempDir, PathBuf, ConfigSource, Standalone) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("xdplb.yaml");
        write(&path, EXAMPLE);
        let source = ConfigSource::new(&path);
        let running = config::load(&path).expect("valid");
        (dir, path, source, running)
    }

    #[test]
    fn edits_are_noticed_once() {
        let (_dir, path, mut source, _) = setup();
        assert!(!source.changed());
        write(&path, &EXAMPLE.replace("owner: node1", "owner: node2"));
        assert!(source.changed());
        assert!(!source.changed());
        fs::remove_file(&path).expect("remove");
        assert!(source.changed(), "a deleted file is a change");
    }

    #[test]
    fn a_bad_file_is_rejected_with_its_error_and_the_running_config_stays() {
        let (_dir, path, mut source, running) = setup();
        write(&path, &EXAMPLE.replace("protocol: UDP", "protocol: SCTP"));
        assert!(source.changed());
        match source.reload(&running) {
            Reload::Invalid(error) => {
                assert_eq!(error.metric_label(), "schema");
                assert!(error.to_string().contains("line 21"), "{error}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        fs::remove_file(&path).expect("remove");
        assert!(matches!(
            source.reload(&running),
            Reload::Invalid(ConfigError::Read(_))
        ));
    }

    #[test]
    fn a_valid_edit_is_applied() {
        let (_dir, path, source, running) = setup();
        assert!(matches!(source.reload(&running), Reload::Unchanged));
        write(
            &path,
            &EXAMPLE.replace("targetPort: 8443", "targetPort: 9443"),
        );
        match source.reload(&running) {
            Reload::Applied {
                config,
                needs_restart,
            } => {
                assert!(needs_restart.is_empty());
                assert_eq!(config.inputs(1500).services[0].ports[1].target_port, 9443);
            }
            other => panic!("expected the new file, got {other:?}"),
        }
    }

    #[test]
    fn start_only_settings_are_kept_and_reported() {
        let (_dir, path, source, running) = setup();
        let text = EXAMPLE.replace("interface: eth0", "interface: eth1")
            + "pinDir: /sys/fs/bpf/other\ncapacities:\n  flows: 10\n";
        write(&path, &text.replace("owner: node1", "owner: node2"));
        match source.reload(&running) {
            Reload::Applied {
                config,
                needs_restart,
            } => {
                assert_eq!(needs_restart, ["interface", "pinDir", "capacities"]);
                let (kept, before) = (
                    &config.config().node_settings,
                    &running.config().node_settings,
                );
                assert_eq!(kept.interface.as_deref(), Some("eth0"));
                assert_eq!(kept.pin_dir, before.pin_dir);
                assert_eq!(kept.capacities, before.capacities);
                assert_eq!(
                    config.owners().values().collect::<Vec<_>>(),
                    [&"node2", &"node2"]
                );
            }
            other => panic!("expected the new file, got {other:?}"),
        }
        // Only start-only settings changed: reported, but nothing to apply.
        write(&path, &text);
        assert!(matches!(
            source.reload(&running),
            Reload::Applied { needs_restart, .. } if needs_restart.len() == 3
        ));
    }

    #[test]
    fn a_renamed_node_needs_a_restart() {
        let (_dir, path, source, running) = setup();
        write(&path, &EXAMPLE.replacen("node: node1", "node: node2", 1));
        assert!(matches!(
            source.reload(&running),
            Reload::Refused(ReloadRefusal::NodeRenamed { .. })
        ));
        write(
            &path,
            &EXAMPLE.replace("address: 10.0.0.11 }", "address: 10.0.0.21 }"),
        );
        assert!(matches!(
            source.reload(&running),
            Reload::Refused(ReloadRefusal::AddressChanged { .. })
        ));
    }

    #[tokio::test]
    async fn the_file_source_yields_each_valid_edit_and_skips_bad_ones_and_counts_them() {
        use tokio::time::timeout;
        let (_dir, path, _, running) = setup();
        let vip: std::net::Ipv4Addr = "172.16.200.20".parse().expect("vip");
        let telemetry = Arc::new(Telemetry::new());
        let mut source = FileSource::new(&path, running, Arc::clone(&telemetry));
        assert!(!source.live_peers());
        assert_eq!(source.first().await.owners[&vip], "node1");
        write(&path, &EXAMPLE.replace("protocol: UDP", "protocol: SCTP"));
        let skipped = timeout(Duration::from_millis(2500), source.next()).await;
        assert!(skipped.is_err(), "an invalid file was applied");
        assert_eq!(source.failures, 1);
        // The next rejection of that kind would be the second.
        assert_eq!(telemetry.count_error(Component::FileSource, "schema"), 2);
        write(&path, &EXAMPLE.replace("owner: node1", "owner: node2"));
        let edited = timeout(Duration::from_secs(3), source.next())
            .await
            .expect("the valid edit");
        assert_eq!(edited.owners[&vip], "node2");
        assert!(source.reload().is_none(), "SIGHUP on an unchanged file");
    }
}
