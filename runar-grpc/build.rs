//! Generates the `.proto` service the gateway's tests serve (pure Rust, no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runar_build::compile_protos(&["tests/proto/greeter.proto"], &["tests/proto"])?;
    Ok(())
}
