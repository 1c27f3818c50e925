//! `runar-build` called directly, as build.rs would: unsupported constructs fail with errors that
//! name the file, the line and the construct, and nothing needs `protoc`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("runar-build-errors")
        .join(name);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    dir
}

/// Writes `source` as `<dir>/<file>` and compiles it with `builder`.
fn compile_with(
    builder: runar_build::Builder,
    name: &str,
    file: &str,
    source: &str,
) -> (PathBuf, Result<(), runar_build::Error>) {
    let dir = scratch(name);
    std::fs::write(dir.join(file), source).unwrap();
    let result = builder
        .out_dir(dir.join("out"))
        .emit_rerun_if_changed(false)
        .compile(&[dir.join(file)], &[&dir]);
    (dir, result)
}

fn compile(name: &str, file: &str, source: &str) -> Result<(), runar_build::Error> {
    compile_with(runar_build::configure(), name, file, source).1
}

const STREAMING: &str = r#"syntax = "proto3";
package shop;

message Tick { uint64 n = 1; }

service Inventory {
  rpc GetItem(Tick) returns (Tick);
  // Watches the stock.
  rpc WatchStock(Tick) returns (stream Tick);
}
"#;

#[test]
fn streaming_rpcs_of_every_kind_are_generated() {
    for (name, from, to, kind) in [
        (
            "server_streaming",
            "(Tick)",
            "(stream Tick)",
            "ServerStreaming",
        ),
        (
            "client_streaming",
            "(stream Tick)",
            "(Tick)",
            "ClientStreaming",
        ),
        ("bidi_streaming", "(stream Tick)", "(stream Tick)", "Bidi"),
    ] {
        let source = STREAMING.replace(
            "(Tick) returns (stream Tick)",
            &format!("{from} returns {to}"),
        );
        let (dir, result) = compile_with(runar_build::configure(), name, "shop.proto", &source);
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = std::fs::read_to_string(dir.join("out").join("shop.rs")).unwrap();
        assert!(
            out.contains(&format!("CallKind::{kind}")) && out.contains("register_stream"),
            "{name}: {out}"
        );
        // The unary rpc beside it is generated as before.
        assert!(out.contains("register_action"), "{name}: {out}");
        // The rpc's comment documents the trait method and the client method.
        assert_eq!(
            out.matches("/// Watches the stock.").count(),
            2,
            "{name}: {out}"
        );
    }
}

#[test]
fn a_streaming_event_is_a_clear_error() {
    // An event is one message per publish.
    let event = r#"syntax = "proto3";
package shop;
import "runar/options.proto";
import "google/protobuf/empty.proto";
message Tick { uint64 n = 1; }
service Inventory {
  rpc Ticked(stream Tick) returns (google.protobuf.Empty) { option (runar.event) = true; }
}
"#;
    let (dir, result) = compile_with(
        runar_build::configure(),
        "streaming_event",
        "shop.proto",
        event,
    );
    let err = result.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("shop.proto:7: service shop.Inventory, method Ticked: streaming"),
        "{err}"
    );
    assert!(err.to_string().contains("not allowed on an event"), "{err}");
    assert!(matches!(err, runar_build::Error::Unsupported { .. }));
    assert_eq!((err.file(), err.line()), (Some("shop.proto"), Some(7)));
    // build.rs's `?` in `fn main() -> Result<(), Box<dyn Error>>` prints Debug: same text.
    assert_eq!(format!("{err:?}"), err.to_string());
    // Nothing was generated.
    assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), 0);
}

#[test]
fn syntax_errors_name_file_and_line() {
    let source = "syntax = \"proto3\";\npackage shop;\nmessage A {\n  uint64 n = 1\n}\n";
    let err = compile("syntax", "broken.proto", source).unwrap_err();
    assert!(matches!(err, runar_build::Error::Proto { .. }), "{err}");
    assert_eq!(err.file(), Some("broken.proto"), "{err}");
    assert!(matches!(err.line(), Some(4 | 5)), "{err}");
    assert!(err.to_string().starts_with("broken.proto:"), "{err}");
}

#[test]
fn unknown_types_and_imports_name_the_file() {
    let source = "syntax = \"proto3\";\npackage shop;\nmessage A {\n  Missing m = 1;\n}\n";
    let err = compile("unknown_type", "types.proto", source).unwrap_err();
    assert_eq!(err.file(), Some("types.proto"), "{err}");
    assert_eq!(err.line(), Some(4), "{err}");
    assert!(err.to_string().contains("Missing"), "{err}");

    let source = "syntax = \"proto3\";\npackage shop;\nimport \"nowhere/gone.proto\";\n";
    let err = compile("missing_import", "imports.proto", source).unwrap_err();
    assert_eq!(err.file(), Some("imports.proto"), "{err}");
    assert_eq!(err.line(), Some(3), "{err}");
    assert!(err.to_string().contains("nowhere/gone.proto"), "{err}");
}

#[test]
fn invalid_service_paths_are_errors() {
    let source = r#"syntax = "proto3";
package shop;
import "runar/options.proto";
message Tick { uint64 n = 1; }
service Inventory {
  option (runar.service_path) = "stock/*";
  rpc GetItem(Tick) returns (Tick);
}
"#;
    let err = compile("bad_option_path", "shop.proto", source).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("shop.proto:5: service shop.Inventory: the service path `stock/*`"),
        "{text}"
    );
    assert!(text.contains("(runar.service_path)"), "{text}");

    let plain = source.replace("  option (runar.service_path) = \"stock/*\";\n", "");
    let builder = runar_build::configure().service_path("shop.Inventory", "net:stock");
    let err = compile_with(builder, "bad_builder_path", "shop.proto", &plain)
        .1
        .unwrap_err();
    assert!(
        err.to_string().contains("`net:stock` (set in build.rs)"),
        "{err}"
    );

    let builder = runar_build::configure().service_path("shop.Inventroy", "stock");
    let err = compile_with(builder, "unknown_service", "shop.proto", &plain)
        .1
        .unwrap_err();
    assert!(
        matches!(err, runar_build::Error::UnknownService { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("shop.Inventroy") && err.to_string().contains("shop.Inventory"),
        "{err}"
    );
}

#[test]
fn colliding_generated_names_are_errors() {
    let source = r#"syntax = "proto3";
package shop;
import "runar/options.proto";
message Tick { uint64 n = 1; }
service Inventory {
  rpc GetItem(Tick) returns (Tick);
  rpc get_item(Tick) returns (Tick);
}
"#;
    let err = compile("same_snake_name", "shop.proto", source).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("shop.proto:7: service shop.Inventory, method get_item: its snake_case name `get_item` is also the name of rpc GetItem"),
        "{err}"
    );

    let reserved = source.replace("rpc get_item(Tick)", "rpc WithTimeout(Tick)");
    let err = compile("reserved_name", "shop.proto", &reserved).unwrap_err();
    assert!(
        err.to_string()
            .contains("method WithTimeout: the generated client method `with_timeout`"),
        "{err}"
    );

    let event = source.replace(
        "rpc get_item(Tick) returns (Tick);",
        "rpc Ticked(Tick) returns (Tick) { option (runar.event) = true; }\n  rpc PublishTicked(Tick) returns (Tick);",
    );
    let err = compile("event_name", "shop.proto", &event).unwrap_err();
    assert!(
        err.to_string()
            .contains("method PublishTicked: the generated client method `publish_ticked`"),
        "{err}"
    );
}

#[test]
fn a_supported_file_generates_one_module_per_package() {
    let source = STREAMING.replace("  rpc WatchStock(Tick) returns (stream Tick);\n", "");
    let (dir, result) = compile_with(runar_build::configure(), "supported", "shop.proto", &source);
    result.unwrap();
    let code = std::fs::read_to_string(dir.join("out/shop.rs")).unwrap();
    assert!(code.contains("pub mod inventory_server"));
    assert!(code.contains("pub mod inventory_client"));
    assert!(code.contains("\"inventory\""));
    // Imports of runar/options.proto and Google's files generate no modules of their own.
    let files: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["shop.rs".to_owned()]);
}

/// Runs in a child process whose environment has no usable `protoc` (see below).
#[test]
fn compile_in_a_process_without_protoc() {
    if std::env::var_os("RUNAR_BUILD_NO_PROTOC_CHILD").is_none() {
        return;
    }
    assert_eq!(
        std::env::var("PROTOC").as_deref(),
        Ok("/nonexistent/protoc")
    );
    let dir = scratch("no_protoc");
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    runar_build::configure()
        .out_dir(dir.join("out"))
        .emit_rerun_if_changed(false)
        .service_path("shop.Audit", "audit_log")
        .compile(
            &[crate_dir.join("proto/shop/shop.proto")],
            &[crate_dir.join("proto")],
        )
        .unwrap();
    assert!(dir.join("out/shop.rs").is_file() && dir.join("out/common.rs").is_file());
}

#[test]
fn the_build_never_needs_protoc() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "compile_in_a_process_without_protoc",
            "--nocapture",
        ])
        .env("RUNAR_BUILD_NO_PROTOC_CHILD", "1")
        .env("PROTOC", "/nonexistent/protoc")
        .env("PATH", "")
        .env_remove("PROTOC_INCLUDE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}
