//! The xdplb node agent: desired state -> diff -> dataplane.
