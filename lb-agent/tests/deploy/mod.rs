//! Reading and checking deploy/: shared by the tests that need the manifests, the RBAC
//! the agent needs, or the Helm chart rendered.

pub mod helm;
pub mod objects;
pub mod rbac;
