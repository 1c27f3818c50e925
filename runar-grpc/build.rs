//! Generates, from the one `.proto` the gateway's tests use (pure Rust, no `protoc`): the Runar
//! service they serve, and the tonic client they call it with (into `$OUT_DIR/tonic`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (protos, includes) = (["tests/proto/greeter.proto"], ["tests/proto"]);
    runar_build::compile_protos(&protos, &includes)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("tonic");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .out_dir(&out)
        .compile_fds(protox::compile(protos, includes)?)?;
    Ok(())
}
