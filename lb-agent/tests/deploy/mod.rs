//! Reading and checking deploy/: shared by the tests that need the manifests, the RBAC
//! the agent needs, the Helm chart rendered, or the README's install commands.

pub mod helm;
pub mod objects;
pub mod rbac;
pub mod readme;
