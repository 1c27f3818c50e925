//! Generates, from `proto/bench.proto`, in pure Rust (no protoc):
//! - the messages and the Runar service (`runar-build`; `bytes` fields as `bytes::Bytes`, so
//!   that no system pays for a copy the others avoid), which the gRPC gateway serves;
//! - tonic's client and server for the same service (tonic-build's manual builder, one method
//!   per rpc, over the messages above, with tonic-prost's codec);
//! - from `proto/sealing.proto`, the messages with labelled (sealed) fields of `--only sealing`.

use std::error::Error;

const PROTO: &str = "proto/bench.proto";
const SEALING_PROTO: &str = "proto/sealing.proto";

fn main() -> Result<(), Box<dyn Error>> {
    let mut config = runar_build::prost_build::Config::new();
    config.bytes(["."]);
    runar_build::configure().compile_with_config(config, &[PROTO, SEALING_PROTO], &["proto"])?;

    let files = protox::compile([PROTO], ["proto"])?;
    for file in &files.file {
        for service in &file.service {
            let mut builder = tonic_build::manual::Service::builder()
                .name(service.name())
                .package(file.package());
            for method in &service.method {
                let mut m = tonic_build::manual::Method::builder()
                    .name(snake_case(method.name()))
                    .route_name(method.name())
                    .input_type(message_path(method.input_type()))
                    .output_type(message_path(method.output_type()))
                    .codec_path("tonic_prost::ProstCodec");
                if method.client_streaming() {
                    m = m.client_streaming();
                }
                if method.server_streaming() {
                    m = m.server_streaming();
                }
                builder = builder.method(m.build());
            }
            tonic_build::manual::Builder::new().compile(&[builder.build()]);
        }
    }
    Ok(())
}

/// `.bench.Blob` → `crate::pb::Blob` (`src/pb.rs` exports every message of the file).
fn message_path(full_name: &str) -> String {
    let name = full_name.rsplit('.').next().unwrap_or(full_name);
    format!("crate::pb::{name}")
}

/// `GetItem` → `get_item`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
