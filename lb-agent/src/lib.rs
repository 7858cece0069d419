//! The xdplb node agent: desired state -> diff -> dataplane.

pub mod dataplane;
