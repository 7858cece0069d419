//! Leader election for the IPAM: one agent at a time holds the `coordination.k8s.io/v1`
//! Lease `xdplb-ipam` in the agent's namespace and allocates addresses.
//!
//! The algorithm is client-go's: every `renew_every` the agent reads the Lease; the
//! holder writes a new `renewTime`, anyone else takes the Lease over once it has not
//! changed for `leaseDurationSeconds` *as this agent observed it* (its own monotonic
//! clock, so clock skew between nodes cannot shorten a lease), or at once when the
//! holder released it. Every write carries the `resourceVersion` read (optimistic
//! concurrency): of two agents trying at once, the API server accepts one and answers
//! the other `409 Conflict`.
//!
//! A leader that cannot renew steps down after `renew_deadline` (two thirds of the
//! duration), before any other agent may take over, so two agents never allocate at
//! once. A stopping agent releases the Lease (empty holder) for an immediate handover.
//! None of this is on the traffic path: VIP owners are elected by the gossip.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior, interval},
};

use crate::{
    sources::kubernetes::outage::unreachable,
    telemetry::{Component, Telemetry},
};

/// The Lease's name.
pub const LEASE_NAME: &str = "xdplb-ipam";

/// Who competes for which Lease, and how fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This agent: unique per process, so a restarted agent on the same node never
    /// mistakes its predecessor's lease for its own.
    pub identity: String,
    /// `leaseDurationSeconds` (whole seconds on the wire, at least one).
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// `xdplb-ipam` in `namespace`: renewed every 2 s, lasting 10 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: LEASE_NAME.to_owned(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }

    /// How long a leader keeps leading without a successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl LeaseError {
    /// Whether the API server could not be reached (see [`crate::sources::kubernetes::outage`]).
    pub fn unreachable(&self) -> bool {
        match self {
            Self::Read { source, .. } | Self::Write { source, .. } => unreachable(source),
        }
    }

    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "lease_read",
            Self::Write { .. } => "lease_write",
        }
    }
}

/// The Lease as last read, and when it last changed as this agent saw it.
#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

/// One agent's side of the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn read_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Read {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    fn write_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Write {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    /// The Lease as the API server has it now, if it exists.
    async fn current(&self) -> Result<Option<Lease>, LeaseError> {
        self.api
            .get_opt(&self.settings.name)
            .await
            .map_err(|error| self.read_error(error))
    }

    /// One round: creates, renews or takes over the Lease when this agent may. Returns
    /// whether this agent holds it afterwards; losing a write race is `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let current = self.current().await?;
        let Some(lease) = current else {
            return self.create().await;
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(self.settings.identity.as_str());
        if !mine && holder.is_some() && !self.expired(&spec) {
            return Ok(false);
        }
        let time = now();
        let taking_over = !mine;
        let spec = LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.duration_seconds()),
            renew_time: Some(time.clone()),
            acquire_time: if taking_over {
                Some(time)
            } else {
                spec.acquire_time
            },
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0) + i32::from(taking_over && holder.is_some()),
            ),
            ..spec
        };
        let previous = holder.map(str::to_owned);
        let written = self.write(lease, spec).await?;
        if written && taking_over {
            tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, previous = ?previous, "took the IPAM lease");
        }
        Ok(written)
    }

    /// Gives the Lease up if this agent holds it, so another agent takes it at once.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let current = self.current().await?;
        let Some(lease) = current else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let released = LeaseSpec {
            holder_identity: None,
            ..spec
        };
        if self.write(lease, released).await? {
            tracing::info!(lease = %self.settings.name, "released the IPAM lease");
        }
        Ok(())
    }

    async fn create(&mut self) -> Result<bool, LeaseError> {
        let time = now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(self.settings.duration_seconds()),
                acquire_time: Some(time.clone()),
                renew_time: Some(time),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.observe(&created);
                tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "created and took the IPAM lease");
                Ok(true)
            }
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(self.write_error(error)),
        }
    }

    /// Replaces the Lease with `spec`, guarded by the resourceVersion read.
    async fn write(&mut self, mut lease: Lease, spec: LeaseSpec) -> Result<bool, LeaseError> {
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(self.write_error(error)),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let version = lease.metadata.resource_version.clone();
        if self
            .observed
            .as_ref()
            .is_none_or(|seen| seen.resource_version != version)
        {
            self.observed = Some(Observed {
                resource_version: version,
                since: Instant::now(),
            });
        }
    }

    /// Whether the holder has let the Lease lapse: unchanged for its whole duration
    /// since this agent first saw this version of it.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map_or(self.settings.duration, Duration::from_secs);
        self.observed
            .as_ref()
            .is_some_and(|seen| seen.since.elapsed() >= duration)
    }
}

/// Competes for the Lease until `stop` turns true, publishing whether this agent leads
/// on `leader`; then releases it if held. Failed rounds are counted into `telemetry`.
pub async fn run(
    mut elector: Elector,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
    telemetry: Arc<Telemetry>,
) {
    let mut tick = interval(elector.settings.renew_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = elector.settings.renew_deadline();
    let mut renewed: Option<Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let leading = match elector.try_acquire_or_renew().await {
            Ok(won) => {
                if failing {
                    tracing::info!("IPAM lease rounds succeed again");
                    failing = false;
                }
                if won {
                    renewed = Some(Instant::now());
                }
                won
            }
            Err(error) => {
                telemetry.count_error(Component::IpamLease, error.metric_label());
                let within = renewed.is_some_and(|at| at.elapsed() < deadline);
                // An unreachable API server is the API health's to report. Other failures:
                // once, and at every round while still leading on borrowed time.
                if !error.unreachable() {
                    if !failing || within {
                        tracing::warn!(%error, kind = error.metric_label(), still_leading = within, "IPAM lease round failed");
                    }
                    failing = true;
                }
                within
            }
        };
        if !leading {
            renewed = None;
        }
        leader.send_if_modified(|current| {
            let changed = *current != leading;
            if changed {
                tracing::info!(leading, lease = %elector.settings.name, "IPAM leadership changed");
            }
            *current = leading;
            changed
        });
    }
    leader.send_replace(false);
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "releasing the IPAM lease; another agent takes over when it expires");
    }
}
