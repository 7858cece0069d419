//! One Service at a time: what the IPAM decides for it (an address, a refusal, a
//! release) and the status it writes.

use std::{net::Ipv4Addr, sync::Arc};

use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::{Value, json};

use super::{ALLOCATED_CONDITION, Context, Error, FIELD_MANAGER, IP_MODE_VIP, Outcome};
use crate::{
    apis::conditions::{Wanted, all_match},
    apis::service,
    ipam::{Allocation, Responsibility, ServiceKey},
};

/// One pass over `service`.
pub async fn reconcile(service: &Service, ctx: &Context) -> Result<Outcome, Error> {
    let Some(key) = service::key(service) else {
        return Ok(Outcome::Settled);
    };
    match service::responsibility(ctx.policy, service) {
        Responsibility::Ours => allocate(service, key, ctx).await,
        Responsibility::NotLoadBalancer => {
            let released = release(&key, ctx);
            withdraw(
                service,
                &key,
                released,
                "the Service is no longer of type LoadBalancer",
                ctx,
            )
            .await
        }
        Responsibility::OtherClass => {
            let released = release(&key, ctx);
            let clashes = ctx
                .allocator()
                .reserve_foreign(&key, &service::status_addresses(service));
            for clash in clashes {
                tracing::warn!(service = %key, ours = %clash, "a Service of another load balancer class shows an address one of ours holds: two load balancers announce it");
            }
            withdraw(
                service,
                &key,
                released,
                "the Service belongs to another load balancer class",
                ctx,
            )
            .await
        }
    }
}

/// A deleted Service: its address goes back to the pools. Returns whether it held one.
pub fn forget(service: &Service, ctx: &Context) -> bool {
    let released = service::key(service).and_then(|key| release(&key, ctx));
    if let Some(allocation) = &released {
        ctx.telemetry.ipam_released(allocation.pool.as_deref());
    }
    released.is_some()
}

/// Frees what `key` holds; returns the address it held, with its pool.
fn release(key: &ServiceKey, ctx: &Context) -> Option<Allocation> {
    let mut allocator = ctx.allocator();
    let held = allocator.allocation(key);
    allocator.release(key);
    held
}

/// Records what every Service's status holds, forgetting everything else. Services whose
/// address an older one holds get a Warning event; their next [`reconcile`] gives them
/// another address.
pub async fn rebuild(services: &[Arc<Service>], ctx: &Context) {
    let list: Vec<Service> = services.iter().map(|service| (**service).clone()).collect();
    let conflicts = ctx.allocator().rebuild(service::holders(&list, ctx.policy));
    let held = services
        .iter()
        .filter_map(|service| service::key(service))
        .filter(|key| ctx.allocator().allocation(key).is_some())
        .count();
    tracing::info!(
        services = services.len(),
        holding = held,
        conflicts = conflicts.len(),
        "IPAM state rebuilt from Service statuses"
    );
    for conflict in conflicts {
        let Some(service) = services
            .iter()
            .find(|service| service::key(service).as_ref() == Some(&conflict.service))
        else {
            continue;
        };
        tracing::warn!(service = %conflict.service, ip = %conflict.ip, error = %conflict.error, "the Service's address is held by another; assigning it a new one");
        let note = format!(
            "{}: {}; assigning another address",
            conflict.error.reason(),
            conflict.error
        );
        ctx.event(service, EventType::Warning, "AllocationFailed", note)
            .await;
    }
}

async fn allocate(service: &Service, key: ServiceKey, ctx: &Context) -> Result<Outcome, Error> {
    let request = match service::request(service) {
        Ok(request) => request,
        Err(error) => {
            refuse(service, &key, None, error.reason(), error.to_string(), ctx).await?;
            return Ok(Outcome::Rejected);
        }
    };
    let labels = ctx.namespace_labels(&key.namespace);
    let result = ctx.allocator().allocate(&request, &labels);
    match result {
        Ok(allocation) => {
            grant(service, &key, &allocation, ctx).await?;
            Ok(Outcome::Settled)
        }
        Err(error) => {
            let pool = request.pool.as_ref().map(|pool| pool.value.as_str());
            refuse(service, &key, pool, error.reason(), error.to_string(), ctx).await?;
            Ok(Outcome::Waiting)
        }
    }
}

fn conditions(service: &Service) -> &[Condition] {
    service
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default()
}

/// Whether the status shows exactly `ip` (or no address), as the IPAM writes it.
fn shows(service: &Service, ip: Option<Ipv4Addr>) -> bool {
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_deref())
        .unwrap_or_default();
    match ip {
        None => ingress.is_empty(),
        Some(ip) => {
            ingress.len() == 1
                && ingress[0].ip.as_deref() == Some(&ip.to_string())
                && ingress[0].ip_mode.as_deref() == Some(IP_MODE_VIP)
        }
    }
}

async fn grant(
    service: &Service,
    key: &ServiceKey,
    allocation: &Allocation,
    ctx: &Context,
) -> Result<(), Error> {
    let ip = allocation.ip;
    let source = match &allocation.pool {
        Some(pool) => format!("{ip} from pool {pool}"),
        None => format!("{ip}, which no valid pool lists any more"),
    };
    let wanted = match &allocation.pool {
        Some(_) => Wanted::new(ALLOCATED_CONDITION, true, "Allocated", source.clone()),
        // Nodes announce only addresses that a valid pool lists (see `super::translate`).
        None => Wanted::new(
            ALLOCATED_CONDITION,
            false,
            "NotInAnyPool",
            format!(
                "{source} (its pool was deleted, edited or made invalid); kept, but no node announces it until a pool lists it again"
            ),
        ),
    };
    if !settle_status(service, key, Some(ip), &wanted, ctx).await? {
        return Ok(());
    }
    if service::status_addresses(service).first() != Some(&ip) {
        tracing::info!(service = %key, %ip, pool = ?allocation.pool, "address allocated");
        ctx.telemetry.ipam_allocated(allocation.pool.as_deref());
        ctx.event(
            service,
            EventType::Normal,
            "Allocated",
            format!("allocated {source}"),
        )
        .await;
    }
    Ok(())
}

/// A request that cannot be met: the condition says why, the address held stays.
/// `pool` is the pool the request named, if any.
async fn refuse(
    service: &Service,
    key: &ServiceKey,
    pool: Option<&str>,
    reason: &str,
    message: String,
    ctx: &Context,
) -> Result<(), Error> {
    let held = ctx
        .allocator()
        .allocation(key)
        .map(|allocation| allocation.ip);
    let message = match held {
        Some(ip) => format!("{message}; keeping {ip}"),
        None => message,
    };
    let wanted = Wanted::new(ALLOCATED_CONDITION, false, reason, message.clone());
    if !settle_status(service, key, held, &wanted, ctx).await? {
        return Ok(());
    }
    tracing::warn!(service = %key, reason, %message, "no address for the Service");
    ctx.telemetry.ipam_failed(pool, reason);
    ctx.event(
        service,
        EventType::Warning,
        "AllocationFailed",
        format!("{reason}: {message}"),
    )
    .await;
    Ok(())
}

/// A Service that no longer gets an address from us: drops what the IPAM wrote.
async fn withdraw(
    service: &Service,
    key: &ServiceKey,
    released: Option<Allocation>,
    why: &str,
    ctx: &Context,
) -> Result<Outcome, Error> {
    let ours = conditions(service)
        .iter()
        .any(|condition| condition.type_ == ALLOCATED_CONDITION);
    if released.is_none() && !ours {
        return Ok(Outcome::Settled);
    }
    write_status(ctx, key, None, None).await?;
    if let Some(Allocation { ip, pool }) = released {
        tracing::info!(service = %key, %ip, ?pool, "address released");
        ctx.telemetry.ipam_released(pool.as_deref());
        ctx.event(
            service,
            EventType::Normal,
            "Released",
            format!("released {ip}: {why}"),
        )
        .await;
        return Ok(Outcome::Released);
    }
    Ok(Outcome::Settled)
}

/// Writes `ip` and the condition `wanted` into the Service's status unless it already
/// shows both; returns whether it wrote.
async fn settle_status(
    service: &Service,
    key: &ServiceKey,
    ip: Option<Ipv4Addr>,
    wanted: &Wanted,
    ctx: &Context,
) -> Result<bool, Error> {
    let generation = service.metadata.generation;
    if shows(service, ip)
        && all_match(
            std::slice::from_ref(wanted),
            conditions(service),
            generation,
        )
    {
        return Ok(false);
    }
    let condition = wanted.build(conditions(service), generation);
    write_status(ctx, key, ip, Some(&condition)).await?;
    Ok(true)
}

/// Server-side applies the IPAM's part of a Service's status; what is left out (no
/// address, no condition) is removed.
async fn write_status(
    ctx: &Context,
    key: &ServiceKey,
    ip: Option<Ipv4Addr>,
    condition: Option<&Condition>,
) -> Result<(), Error> {
    let mut status = serde_json::Map::new();
    if let Some(ip) = ip {
        status.insert(
            "loadBalancer".to_owned(),
            json!({ "ingress": [{ "ip": ip.to_string(), "ipMode": IP_MODE_VIP }] }),
        );
    }
    if let Some(condition) = condition {
        status.insert("conditions".to_owned(), json!([condition]));
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": key.name, "namespace": key.namespace },
        "status": Value::Object(status),
    });
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    api.patch_status(
        &key.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|source| Error::ServiceStatus {
        service: key.clone(),
        source,
    })
}
