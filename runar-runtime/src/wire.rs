//! Runar's wire protocol messages, generated from `proto/runar/v1/*.proto`.
//!
//! Reachable (hidden) through `__private::wire` so that tests and fuzzing can speak the protocol;
//! the message flow and the framing are described in `proto/runar/v1/README.md`. Applications
//! do not need it.
#![allow(missing_docs, unreachable_pub, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/runar.v1.rs"));
