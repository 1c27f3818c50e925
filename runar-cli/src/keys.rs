//! `runar keys`: a keystore directory (`runar_runtime::seal::Keystore`) from the command line,
//! and the keystore the other commands open with `--keystore` to seal and open labelled
//! fields.
//!
//! The passphrase comes from `RUNAR_KEYSTORE_PASSPHRASE`, or is asked on the terminal (not
//! echoed) when stdin is one; with neither, the command fails before touching the keystore.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use clap::Subcommand;
use runar::Code;
use runar::seal::{
    DEFAULT_ITERATIONS, KeyPair, Keystore, KeystoreConfig, KeystoreError, PublicKey,
};
use serde_json::json;

use crate::Global;
use crate::commands::{create_private_file, hex, print_json, table};
use crate::error::CliError;

/// The environment variable holding the keystore's passphrase.
pub(crate) const PASSPHRASE_ENV: &str = "RUNAR_KEYSTORE_PASSPHRASE";

/// `runar keys …`.
#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Creates the keystore in `--keystore DIR` (directory 0700, files 0600) with its sealing
    /// key; asks the passphrase twice on a terminal.
    Init {
        /// PBKDF2-HMAC-SHA256 iterations of the passphrase key (kept in the keystore).
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// A label's first key pair (epoch 1), when the keystore has none of it.
    Generate {
        /// The label (1 to 64 of `a-z A-Z 0-9 _ - .`).
        label: String,
    },
    /// A new epoch of a label: new messages are sealed to it, older epochs still open for the
    /// retention (24 h) after now.
    Rotate {
        /// The label.
        label: String,
    },
    /// Labels, epochs, key ids and states; never private material.
    List,
    /// A label's key of one epoch as JSON, to `--out FILE` (created 0600) or stdout.
    Export {
        /// The label.
        label: String,
        /// The epoch.
        epoch: u32,
        /// Only the public key: for senders that seal to the label without holding it.
        #[arg(long)]
        public: bool,
        /// The file to create (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Stores a key `runar keys export` wrote: a key pair (this keystore holds the label) or a
    /// public key (it seals to the label).
    Import {
        /// The label (must be the file's).
        label: String,
        /// The epoch (must be the file's).
        epoch: u32,
        /// The file (`-`: stdin).
        file: PathBuf,
    },
    /// Revokes a label's key pair of one epoch (its secret is erased: nothing seals to it or
    /// opens with it again), or removes a public key stored for it.
    Revoke {
        /// The label.
        label: String,
        /// The epoch.
        epoch: u32,
    },
}

impl From<KeystoreError> for CliError {
    fn from(e: KeystoreError) -> Self {
        let code = match &e {
            KeystoreError::WrongPassphrase | KeystoreError::Permissions { .. } => {
                Code::PermissionDenied
            }
            KeystoreError::NotFound { .. } => Code::NotFound,
            KeystoreError::InvalidLabel(_) | KeystoreError::Revoked { .. } => Code::InvalidArgument,
            KeystoreError::EpochsExhausted(_) => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        let error = CliError::new(code, e.to_string());
        match e {
            KeystoreError::WrongPassphrase => {
                error.with_hint(format!("check {PASSPHRASE_ENV} (or the passphrase typed)"))
            }
            KeystoreError::NotFound { .. } => error.with_hint("`runar keys list` shows its keys"),
            _ => error,
        }
    }
}

/// The passphrase: `RUNAR_KEYSTORE_PASSPHRASE`, else asked on the terminal (twice when
/// `confirm`).
fn passphrase(confirm: bool) -> Result<String, CliError> {
    if let Some(pass) = std::env::var_os(PASSPHRASE_ENV) {
        return pass
            .into_string()
            .map_err(|_| CliError::invalid(format!("{PASSPHRASE_ENV} is not UTF-8")));
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            CliError::invalid("no keystore passphrase").with_hint(format!(
                "set {PASSPHRASE_ENV}, or run on a terminal to be asked"
            )),
        );
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| CliError::internal(format!("cannot read the passphrase: {e}")))
    };
    let pass = ask("keystore passphrase: ")?;
    if confirm && ask("again: ")? != pass {
        return Err(CliError::invalid("the passphrases differ"));
    }
    if pass.is_empty() {
        return Err(CliError::invalid("the passphrase is empty"));
    }
    Ok(pass)
}

/// `--keystore DIR`, which must be given.
fn dir(global: &Global) -> Result<&Path, CliError> {
    global.keystore.as_deref().ok_or_else(|| {
        CliError::invalid("no keystore").with_hint("give --keystore DIR (or set RUNAR_KEYSTORE)")
    })
}

/// Opens the keystore in `dir`, which `runar keys init` must have created.
pub(crate) fn open(dir: &Path) -> Result<Keystore, CliError> {
    if !Keystore::exists(dir) {
        return Err(
            CliError::not_found(format!("no keystore in {}", dir.display())).with_hint(format!(
                "`runar keys init --keystore {}` creates one",
                dir.display()
            )),
        );
    }
    Ok(Keystore::open(dir, passphrase(false)?)?)
}

/// `runar keys …`.
pub(crate) fn run(global: &Global, command: KeysCommand) -> Result<(), CliError> {
    let dir = dir(global)?;
    let done = |text: String, value: serde_json::Value| {
        if global.json {
            print_json(&value);
        } else {
            println!("{text}");
        }
    };
    match command {
        KeysCommand::Init { iterations } => {
            if Keystore::exists(dir) {
                return Err(CliError::new(
                    Code::AlreadyExists,
                    format!("{} already holds a keystore", dir.display()),
                ));
            }
            let config = KeystoreConfig::default().with_iterations(iterations);
            let store = Keystore::open_with(dir, passphrase(true)?, config)?;
            let sealing = store.sealing_key()?.public();
            done(
                format!(
                    "created the keystore {} (sealing key {})",
                    dir.display(),
                    hex(sealing.as_bytes())
                ),
                json!({ "keystore": dir, "sealing_key": hex(sealing.as_bytes()) }),
            );
        }
        KeysCommand::Generate { label } => {
            let store = open(dir)?;
            let had = !store.epochs(&label)?.is_empty();
            let epoch = store.generate_label(&label)?;
            let key_id = key_id(&store, &label, epoch)?;
            let verb = if had { "already has" } else { "generated" };
            done(
                format!("{verb} {label} epoch {epoch} (key id {key_id})"),
                json!({ "label": label, "epoch": epoch, "key_id": key_id, "new": !had }),
            );
        }
        KeysCommand::Rotate { label } => {
            let store = open(dir)?;
            let epoch = store.rotate(&label)?;
            let key_id = key_id(&store, &label, epoch)?;
            done(
                format!(
                    "{label} is at epoch {epoch} (key id {key_id}); give it to every holder \
                     (`runar keys export {label} {epoch}`), its public key to senders \
                     (`--public`), and revoke the older epochs after the retention"
                ),
                json!({ "label": label, "epoch": epoch, "key_id": key_id }),
            );
        }
        KeysCommand::List => list(global, &open(dir)?)?,
        KeysCommand::Export {
            label,
            epoch,
            public,
            out,
        } => {
            let store = open(dir)?;
            let pair = store.export_label(&label, epoch)?;
            let key = pair.public();
            let mut file = json!({
                "label": label, "epoch": epoch, "key_id": key.key_id().to_string(),
                "public": hex(key.as_bytes()),
            });
            if !public {
                file["secret"] = json!(hex(&pair.secret_bytes()));
            }
            let what = if public { "public key" } else { "key pair" };
            match out {
                Some(path) => {
                    use std::io::Write as _;
                    let mut f = create_private_file(&path)?;
                    writeln!(f, "{file}").map_err(|e| {
                        CliError::internal(format!("cannot write {}: {e}", path.display()))
                    })?;
                    eprintln!(
                        "wrote {label} epoch {epoch}'s {what} to {} (mode 0600)",
                        path.display()
                    );
                }
                None => println!("{file}"),
            }
        }
        KeysCommand::Import { label, epoch, file } => {
            let store = open(dir)?;
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| CliError::not_found(format!("cannot read {}: {e}", file.display())))?;
            let (public, pair) = parse_export(&text, &label, epoch)?;
            let what = match &pair {
                Some(pair) => {
                    store.import_label(&label, epoch, pair)?;
                    "key pair"
                }
                None => {
                    store.import_public(&label, epoch, &public)?;
                    "public key"
                }
            };
            let key_id = public.key_id().to_string();
            done(
                format!("imported {label} epoch {epoch}'s {what} (key id {key_id})"),
                json!({ "label": label, "epoch": epoch, "key_id": key_id, "public_only": pair.is_none() }),
            );
        }
        KeysCommand::Revoke { label, epoch } => {
            let store = open(dir)?;
            let held = store.epochs(&label)?.iter().any(|e| e.epoch == epoch);
            if held {
                store.revoke(&label, epoch)?;
            } else if !store.remove_public(&label, epoch)? {
                return Err(KeystoreError::NotFound { label, epoch }.into());
            }
            let what = if held {
                "revoked (its secret is erased)"
            } else {
                "public key removed"
            };
            done(
                format!("{label} epoch {epoch}: {what}"),
                json!({ "label": label, "epoch": epoch, "revoked": held, "public_removed": !held }),
            );
        }
    }
    Ok(())
}

/// The key id of `label`'s `epoch`.
fn key_id(store: &Keystore, label: &str, epoch: u32) -> Result<String, CliError> {
    Ok(store
        .export_label(label, epoch)?
        .public()
        .key_id()
        .to_string())
}

/// `runar keys list`: every epoch of every label, then the public keys sealed to.
fn list(global: &Global, store: &Keystore) -> Result<(), CliError> {
    let sealing = hex(store.sealing_key()?.public().as_bytes());
    let mut rows = Vec::new();
    for label in store.labels()? {
        for e in store.epochs(&label)? {
            let state = if e.revoked {
                "revoked"
            } else if e.retired.is_some() {
                "retired"
            } else {
                "current"
            };
            let retired = e
                .retired
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            rows.push(json!({
                "label": label, "epoch": e.epoch, "state": state, "retired_unix": retired,
                "key_id": e.public.map(|p| p.key_id().to_string()),
                "public": e.public.map(|p| hex(p.as_bytes())),
            }));
        }
    }
    for (label, epoch, public) in store.public_keys()? {
        rows.push(json!({
            "label": label, "epoch": epoch, "state": "seal-to", "retired_unix": null,
            "key_id": public.key_id().to_string(), "public": hex(public.as_bytes()),
        }));
    }
    if global.json {
        print_json(&json!({ "keystore": store.dir(), "sealing_key": sealing, "keys": rows }));
        return Ok(());
    }
    println!("keystore {} (sealing key {sealing})", store.dir().display());
    let mut t = table(&["LABEL", "EPOCH", "KEY ID", "STATE"]);
    for row in &rows {
        let text = |key: &str| match &row[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        t.add_row([text("label"), text("epoch"), text("key_id"), text("state")]);
    }
    println!("{t}");
    Ok(())
}

/// The public key and, unless the file holds only that, the key pair of an export of
/// `label`'s `epoch`.
fn parse_export(
    text: &str,
    label: &str,
    epoch: u32,
) -> Result<(PublicKey, Option<KeyPair>), CliError> {
    let bad =
        |what: &str| CliError::invalid(format!("not a key `runar keys export` wrote: {what}"));
    let file: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    if file["label"].as_str() != Some(label) || file["epoch"].as_u64() != Some(u64::from(epoch)) {
        return Err(CliError::invalid(format!(
            "the file holds {} epoch {}, not {label} epoch {epoch}",
            file["label"], file["epoch"]
        )));
    }
    let key = |name: &str| -> Result<Option<[u8; 32]>, CliError> {
        match file[name].as_str() {
            None => Ok(None),
            Some(text) => unhex(text)
                .map(Some)
                .ok_or_else(|| bad(&format!("`{name}` is not 64 hex digits"))),
        }
    };
    let public = key("public")?
        .map(PublicKey::from_bytes)
        .transpose()
        .map_err(|_| bad("`public` is not an X25519 key"))?;
    let pair = key("secret")?
        .map(|secret| KeyPair::from_secret_bytes(&secret))
        .transpose()
        .map_err(|_| bad("`secret` is not an X25519 key"))?;
    match (public, pair) {
        (Some(public), Some(pair)) if pair.public() != public => {
            Err(bad("`secret` and `public` are not one key pair"))
        }
        (_, Some(pair)) => Ok((pair.public(), Some(pair))),
        (Some(public), None) => Ok((public, None)),
        (None, None) => Err(bad("no key in it")),
    }
}

/// 64 hex digits as 32 bytes.
fn unhex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    let mut out = [0u8; 32];
    if text.len() != out.len() * 2 {
        return None;
    }
    if !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_parses_back_and_a_mismatch_is_refused() {
        let pair = KeyPair::generate();
        let text = json!({
            "label": "user", "epoch": 2,
            "public": hex(pair.public().as_bytes()), "secret": hex(&pair.secret_bytes()),
        })
        .to_string();
        let (public, back) = parse_export(&text, "user", 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(public, pair.public());
        assert_eq!(back.map(|p| p.public()), Some(pair.public()));
        assert!(parse_export(&text, "user", 3).is_err());
        assert!(parse_export(&text, "system", 2).is_err());
        let other = KeyPair::generate();
        let mixed = json!({
            "label": "user", "epoch": 2,
            "public": hex(other.public().as_bytes()), "secret": hex(&pair.secret_bytes()),
        })
        .to_string();
        assert!(parse_export(&mixed, "user", 2).is_err());
        assert_eq!(unhex("zz"), None);
    }
}
