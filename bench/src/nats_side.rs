//! NATS: not measured. The suite would need a `nats-server` (Debian's package) running next to
//! it and the `async-nats` client; neither is here, so the events section prints why NATS is
//! missing instead of a row.

use std::path::PathBuf;

/// Where `nats-server` is on `PATH`, if it is.
fn server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// The note the events table gets in place of a NATS row.
pub fn skipped() -> String {
    let note = match server() {
        None => "_NATS: not run: `nats-server` is not installed on this machine (Debian: \
                 `apt install nats-server`), so there is nothing to measure against._"
            .to_owned(),
        Some(at) => format!(
            "_NATS: not run: `nats-server` is at `{}`, but this suite has no NATS client \
             (`async-nats` is not one of its dependencies)._",
            at.display()
        ),
    };
    crate::progress(&note);
    note
}
