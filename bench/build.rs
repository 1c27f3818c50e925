//! Generates the tonic client and server for the reference gRPC service, from Rust
//! descriptions (no `.proto`, no protoc). The messages are hand-written prost structs in
//! `src/pb.rs`; the codec is tonic-prost's.

fn main() {
    let method_of = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec")
    };
    let method =
        |name: &str, route: &str| method_of(name, route, "crate::pb::Blob", "crate::pb::Blob");
    let service = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("bench")
        .method(method("echo", "Echo").build())
        .method(method("subscribe", "Subscribe").server_streaming().build())
        .method(
            method_of("pull", "Pull", "crate::pb::Pull", "crate::pb::Blob")
                .server_streaming()
                .build(),
        )
        .method(
            method_of("push", "Push", "crate::pb::Blob", "crate::pb::Count")
                .client_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
