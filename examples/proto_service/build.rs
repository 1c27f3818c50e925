//! Generates the `shop`, `stock` and `records` packages from `proto/shop.proto`,
//! `proto/stock.proto` and `proto/records.proto`, in
//! pure Rust (no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runar_build::compile_protos(
        &[
            "proto/shop.proto",
            "proto/stock.proto",
            "proto/records.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
