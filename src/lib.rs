//! Runar: a schema-first service framework.
pub use runar_runtime::*;
