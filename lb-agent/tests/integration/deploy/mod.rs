//! deploy/ checked: the manifests and the Helm chart (`manifests`), the RBAC against the
//! calls the agent and lbctl make (`rbac_calls`); and the readers they share, of the
//! manifests, the RBAC, the Helm chart rendered and the install guide's commands
//! (docs/install.md); the monitoring objects, rules and dashboard (`monitoring`), with a
//! reader of CRD schemas (`schema`).

mod helm;
mod install_guide;
mod manifests;
mod monitoring;
mod objects;
mod rbac;
mod rbac_calls;
mod schema;
