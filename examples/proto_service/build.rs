//! Generates the `shop` and `stock` packages from `proto/shop.proto` and `proto/stock.proto`, in
//! pure Rust (no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runar_build::compile_protos(&["proto/shop.proto", "proto/stock.proto"], &["proto"])?;
    Ok(())
}
