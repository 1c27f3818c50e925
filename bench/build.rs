//! Generates the tonic client and server for the reference gRPC service, from Rust
//! descriptions (no `.proto`, no protoc). The messages are hand-written prost structs in
//! `src/pb.rs`; the codec is tonic-prost's.

fn main() {
    let method = |name: &str, route: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::pb::Blob")
            .output_type("crate::pb::Blob")
            .codec_path("tonic_prost::ProstCodec")
    };
    let service = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("bench")
        .method(method("echo", "Echo").build())
        .method(method("subscribe", "Subscribe").server_streaming().build())
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
