//! The AddressPools' statuses: counts and conditions, written when they change.

use std::{collections::BTreeMap, sync::Arc};

use kube::{
    Api, ResourceExt as _,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Context, Error, FIELD_MANAGER};
use crate::apis::{
    address_pool::AddressPool,
    conditions::all_match,
    pool_status::{self, PoolReport},
};

/// The pools' statuses as last written, to skip writes the store has not caught up with.
#[derive(Debug, Default)]
pub struct PoolStatuses {
    written: BTreeMap<String, PoolReport>,
    /// Pools the API server no longer has (404) though the store still lists them (its
    /// watch has not caught up, or fails): their uids, by name. Not written again until
    /// the store drops them; a new pool of the same name has another uid.
    gone: BTreeMap<String, Option<String>>,
}

impl PoolStatuses {
    /// Writes every pool status that differs from what it says now, skipping deleted
    /// pools; a failed write does not stop the others. Returns the failures.
    pub async fn publish(
        &mut self,
        pools: &[Arc<AddressPool>],
        ctx: &Context,
    ) -> Result<(), Vec<Error>> {
        let reports = pool_status::reports(pools, &ctx.allocator());
        self.written.retain(|name, _| reports.contains_key(name));
        self.gone.retain(|name, uid| {
            pools
                .iter()
                .any(|pool| pool.name_any() == *name && pool.uid() == *uid)
        });
        let mut failures = Vec::new();
        for pool in pools {
            let name = pool.name_any();
            let Some(report) = reports.get(&name) else {
                continue;
            };
            let deleted =
                pool.metadata.deletion_timestamp.is_some() || self.gone.contains_key(&name);
            if deleted || self.written.get(&name) == Some(report) || already_says(pool, report) {
                continue;
            }
            match write_pool_status(pool, report, ctx).await {
                Ok(()) => {
                    self.written.insert(name, report.clone());
                }
                Err(error) if error.is_not_found() => {
                    tracing::info!(pool = %name, "AddressPool deleted; its status is no longer written");
                    self.gone.insert(name, pool.uid());
                }
                Err(error) => failures.push(error),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

fn already_says(pool: &AddressPool, report: &PoolReport) -> bool {
    pool.status.as_ref().is_some_and(|status| {
        status.assigned == report.assigned
            && status.available == report.available
            && all_match(
                &report.conditions,
                &status.conditions,
                pool.metadata.generation,
            )
    })
}

async fn write_pool_status(
    pool: &AddressPool,
    report: &PoolReport,
    ctx: &Context,
) -> Result<(), Error> {
    let name = pool.name_any();
    let existing = pool
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let conditions: Vec<_> = report
        .conditions
        .iter()
        .map(|wanted| wanted.build(existing, pool.metadata.generation))
        .collect();
    let body = json!({
        "apiVersion": "xdplb.io/v1alpha1",
        "kind": "AddressPool",
        "metadata": { "name": name },
        "status": {
            "assigned": report.assigned,
            "available": report.available,
            "conditions": conditions,
        },
    });
    let api: Api<AddressPool> = Api::all(ctx.client.clone());
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|source| Error::PoolStatus { pool: name, source })
}
