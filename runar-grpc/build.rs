//! Generates, from the `.proto` files the gateway's tests use (pure Rust, no `protoc`): the Runar
//! services they serve, and the tonic clients they call them with (into `$OUT_DIR/tonic`; a
//! tonic client knows nothing of `(runar.label)`, so a labelled field is its declared type
//! there, as for any foreign client).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["tests/proto/greeter.proto", "tests/proto/vault.proto"];
    let includes = ["tests/proto", "../proto"];
    runar_build::compile_protos(&protos, &includes[..1])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("tonic");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .out_dir(&out)
        .compile_fds(protox::compile(protos, includes)?)?;
    Ok(())
}
