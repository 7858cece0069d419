//! Reading and checking deploy/: shared by the tests that need the manifests, the RBAC
//! the agent needs, the Helm chart rendered, or the install guide's commands
//! (docs/install.md).

pub mod helm;
pub mod install_guide;
pub mod objects;
pub mod rbac;
