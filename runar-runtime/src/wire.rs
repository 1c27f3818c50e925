//! Runar's wire protocol messages, generated from `proto/runar/v1/*.proto`.
#![allow(missing_docs, unreachable_pub, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/runar.v1.rs"));
