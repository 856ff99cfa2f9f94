//! tabfm-core: the pure-Rust engine behind `tabfm`.
//!
//! No Python types live here; the PyO3 bindings in the `tabfm` crate are a thin layer
//! that parses a configuration, releases the GIL and calls [`batch::generate_batch`].

pub mod activations;
pub mod alloc;
pub mod batch;
pub mod causes;
pub mod config;
pub mod fastmath;
pub mod graph;
pub mod hp;
pub mod learn;
pub mod linalg;
pub mod missing;
pub mod parquet;
pub mod pool;
pub mod reg2cls;
pub mod rng;
pub mod scm;
pub mod shard_read;
pub mod tree;

#[cfg(test)]
mod tests;
