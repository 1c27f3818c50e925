//! The messages every system carries and the services, all generated from
//! `proto/bench.proto` by `build.rs`.

/// The messages, and the Runar service `bench.Echo` (server trait, service, client), generated
/// by `runar-build`.
pub mod generated {
    ::runar::include_proto!("bench");
}

pub use generated::{Blob, Count, Pull};

/// tonic's client and server of `bench.Echo`.
pub mod grpc {
    include!(concat!(env!("OUT_DIR"), "/bench.Echo.rs"));
}
