//! Compiles the test protos; never needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runar_build::configure()
        // Builder only.
        .service_path("shop.Audit", "audit_log")
        // Builder and `(runar.service_path)`: the builder wins.
        .service_path(".shop.Ledger", "ledger")
        .compile(
            &[
                "proto/shop/shop.proto",
                "proto/calc/calc.proto",
                "proto/stock/stock.proto",
                "proto/vault/vault.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
