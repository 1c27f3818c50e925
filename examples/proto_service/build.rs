//! Generates the `shop` package from `proto/shop.proto`, in pure Rust (no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runar_build::compile_protos(&["proto/shop.proto"], &["proto"])?;
    Ok(())
}
