//! The configuration files as the reference documents them.

mod reference;
