//! Code shared by the bench binaries.

pub mod redis_nodes;
