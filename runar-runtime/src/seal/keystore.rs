//! The on-disk keystore: a node's sealing key and its label keys per epoch, in a directory of
//! files only their owner may read, the private keys encrypted with a key derived from a
//! passphrase the user supplies.
//!
//! # Layout and format (version 1)
//!
//! The directory (created `0700`) holds:
//! * `keystore`: the passphrase check. `MAGIC | 0x01 | kind 0 | salt (16) | u32_be iterations |
//!   nonce (12) | ciphertext of "runar keystore check" + tag (16)`.
//! * `sealing.key`: the node's sealing key. `MAGIC | 0x01 | kind 1 | nonce (12) |
//!   ciphertext of the 32 secret bytes + tag`.
//! * `label.<label>.key`, one per label: `MAGIC | 0x01 | kind 2 | nonce (12) | ciphertext + tag`
//!   of `u8 label_len | label | u16_be count | count × (u32_be epoch | u8 flags (bit 0:
//!   revoked) | u64_be retired (Unix seconds when a newer epoch replaced it, 0: not) | secret
//!   (32, zeros once revoked))`.
//! * `public.<label>.key`, one per label this keystore seals to without holding it
//!   ([`Keystore::import_public`]): `MAGIC | 0x01 | kind 3 | nonce (12) | ciphertext + tag` of
//!   `u8 label_len | label | u16_be count | count × (u32_be epoch | public key (32))`. Public
//!   keys are not secret, but encrypted like the rest they cannot be swapped for another's.
//!
//! `MAGIC` is `"runar-keystore"`. The key is PBKDF2-HMAC-SHA256 of the passphrase with the
//! `keystore` file's random salt and iteration count ([`DEFAULT_ITERATIONS`] for a new keystore,
//! [`KeystoreConfig::with_iterations`]); the AEAD is ChaCha20-Poly1305 with a fresh random nonce
//! on every write, and its associated data is the file's header (every byte before the nonce)
//! and the file's name, so a file cannot be altered, renamed or swapped unnoticed. Files are
//! written `0600`, through a temporary file renamed into place.
//!
//! Labels in a keystore are 1 to [`MAX_LABEL_LEN`] bytes of ASCII letters, digits, `_`, `-`
//! and `.`, not starting with `.` (they name files).

use std::fs;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

use super::envelope::MAX_LABEL_LEN;
use super::keys::{KEY_LEN, KeyPair, Keyring, PublicKey};
use crate::lock;

/// PBKDF2-HMAC-SHA256 iterations of a new keystore's passphrase key, by default (OWASP's
/// recommendation for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;

const MAGIC: &[u8] = b"runar-keystore";
const VERSION: u8 = 1;
const KIND_CHECK: u8 = 0;
const KIND_SEALING: u8 = 1;
const KIND_LABEL: u8 = 2;
const KIND_PUBLIC: u8 = 3;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const CHECK: &[u8] = b"runar keystore check";
const CHECK_FILE: &str = "keystore";
const SEALING_FILE: &str = "sealing.key";
const FLAG_REVOKED: u8 = 1;

/// What the keystore does with a file or directory that others than its owner may access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionCheck {
    /// Refuse it with [`KeystoreError::Permissions`] (the default).
    #[default]
    Refuse,
    /// Log a warning and use it.
    Warn,
}

/// How a [`Keystore`] is opened.
#[derive(Clone, Debug)]
pub struct KeystoreConfig {
    iterations: u32,
    permissions: PermissionCheck,
}

impl Default for KeystoreConfig {
    fn default() -> Self {
        KeystoreConfig {
            iterations: DEFAULT_ITERATIONS,
            permissions: PermissionCheck::Refuse,
        }
    }
}

impl KeystoreConfig {
    /// PBKDF2 iterations for a keystore created now (default [`DEFAULT_ITERATIONS`]); an
    /// existing keystore keeps the count it was created with. At least 1.
    pub fn with_iterations(mut self, iterations: u32) -> Self {
        self.iterations = iterations.max(1);
        self
    }

    /// What to do with files or a directory others may access (default
    /// [`PermissionCheck::Refuse`]).
    pub fn with_permission_check(mut self, check: PermissionCheck) -> Self {
        self.permissions = check;
        self
    }
}

/// Errors of the keystore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// A file or directory could not be read or written.
    #[error("keystore {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The passphrase does not open the keystore (or its `keystore` file was altered).
    #[error("wrong passphrase for the keystore (or its `keystore` file was altered)")]
    WrongPassphrase,
    /// A file does not decrypt or parse: altered, truncated, renamed or from another keystore.
    #[error("keystore file {0} was altered or is not this keystore's")]
    Tampered(PathBuf),
    /// A file of another format version.
    #[error("keystore file {0} has an unknown format version")]
    UnknownVersion(PathBuf),
    /// A file or directory others than its owner may access (see [`PermissionCheck`]).
    #[error(
        "keystore {path} has mode {mode:o}: others than its owner may access it (chmod {want:o})"
    )]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What they should be.
        want: u32,
    },
    /// A label a keystore cannot name a file after.
    #[error(
        "label `{0}` cannot be kept in a keystore: use 1 to 64 ASCII letters, digits, `_`, `-`, `.`"
    )]
    InvalidLabel(String),
    /// No such label or epoch (or its key was revoked).
    #[error("the keystore has no key of label `{label}` epoch {epoch}")]
    NotFound {
        /// The label.
        label: String,
        /// The epoch.
        epoch: u32,
    },
    /// The epoch was revoked: it is never held again.
    #[error("label `{label}` epoch {epoch} was revoked")]
    Revoked {
        /// The label.
        label: String,
        /// The epoch.
        epoch: u32,
    },
    /// The label's epochs ran out (`u32::MAX`).
    #[error("label `{0}` has no epoch left")]
    EpochsExhausted(String),
    /// The system's random source failed.
    #[error("no randomness available")]
    NoRandomness,
}

/// One epoch of a label in a keystore.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EpochInfo {
    /// The epoch.
    pub epoch: u32,
    /// Its public key (`None` once revoked: the secret is erased).
    pub public: Option<PublicKey>,
    /// When a newer epoch replaced it.
    pub retired: Option<SystemTime>,
    /// Revoked: erased, never opens again.
    pub revoked: bool,
}

struct Entry {
    epoch: u32,
    revoked: bool,
    retired: u64,
    secret: [u8; KEY_LEN],
}

/// A directory of key files (format in the module documentation): the node's sealing key
/// ([`sealing_key`](Self::sealing_key), for `NodeConfig::with_sealing_key`) and label key
/// pairs per epoch, which [`load_into`](Self::load_into) gives a [`Keyring`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use runar_runtime::seal::{Keyring, Keystore};
/// let store = Keystore::open("/var/lib/shop/keys", "passphrase from the operator")?;
/// let sealing = store.sealing_key()?;          // NodeConfig::with_sealing_key(sealing)
/// store.generate_label("billing")?;             // epoch 1, if the label is new
/// let ring = Keyring::new();
/// store.load_into(&ring)?;                      // NodeConfig::with_key_resolver(ring)
/// # Ok(()) }
/// ```
///
/// One process at a time should change a keystore; within a process, its methods may be called
/// from several threads.
pub struct Keystore {
    dir: PathBuf,
    key: LessSafeKey,
    permissions: PermissionCheck,
    /// Serializes this process's read-modify-write of label files.
    write: RwLock<()>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeystoreError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeystoreError::NoRandomness)?;
    Ok(out)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_label(label: &str) -> Result<(), KeystoreError> {
    let ok = !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && !label.starts_with('.')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::InvalidLabel(label.to_owned()))
    }
}

fn label_file(label: &str) -> String {
    format!("label.{label}.key")
}

fn public_file(label: &str) -> String {
    format!("public.{label}.key")
}

/// Bytes of one entry of a `public.<label>.key` file: epoch and key.
const PUBLIC_ENTRY_LEN: usize = 4 + KEY_LEN;

impl Keystore {
    /// Opens the keystore in `dir` with `passphrase`, creating it (and the directory, `0700`)
    /// when it does not exist yet, with the default [`KeystoreConfig`].
    pub fn open(
        dir: impl AsRef<Path>,
        passphrase: impl AsRef<[u8]>,
    ) -> Result<Self, KeystoreError> {
        Self::open_with(dir, passphrase, KeystoreConfig::default())
    }

    /// [`open`](Self::open) with a config. Fails with `WrongPassphrase` when the passphrase is
    /// not the one the keystore was created with, and `Permissions` when the directory or its
    /// `keystore` file may be accessed by others (unless the config says to warn).
    pub fn open_with(
        dir: impl AsRef<Path>,
        passphrase: impl AsRef<[u8]>,
        config: KeystoreConfig,
    ) -> Result<Self, KeystoreError> {
        let dir = dir.as_ref().to_owned();
        if !dir.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&dir).map_err(io(&dir))?;
        }
        check_mode(&dir, 0o700, config.permissions)?;
        let check_path = dir.join(CHECK_FILE);
        if check_path.exists() {
            let bytes = read_checked(&check_path, config.permissions)?;
            let header_len = MAGIC.len() + 2;
            let body = parse_header(&check_path, &bytes, KIND_CHECK)?;
            if body.len() < SALT_LEN + 4 {
                return Err(KeystoreError::Tampered(check_path));
            }
            let (salt, rest) = body.split_at(SALT_LEN);
            let mut it = [0u8; 4];
            it.copy_from_slice(rest.get(..4).unwrap_or(&[0; 4]));
            let mut salt_arr = [0u8; SALT_LEN];
            salt_arr.copy_from_slice(salt);
            let iterations = u32::from_be_bytes(it);
            let key = derive(passphrase.as_ref(), &salt_arr, iterations)?;
            let prefix = header_len + SALT_LEN + 4;
            let header = bytes.get(..prefix).unwrap_or(&[]);
            let sealed = bytes.get(prefix..).unwrap_or(&[]);
            match open_sealed(&key, CHECK_FILE, header, sealed) {
                Some(check) if check == CHECK => {}
                _ => return Err(KeystoreError::WrongPassphrase),
            }
            return Ok(Keystore {
                dir,
                key,
                permissions: config.permissions,
                write: RwLock::new(()),
            });
        }
        let (salt, iterations) = (random::<SALT_LEN>()?, config.iterations);
        let key = derive(passphrase.as_ref(), &salt, iterations)?;
        let mut header = file_header(KIND_CHECK);
        header.extend_from_slice(&salt);
        header.extend_from_slice(&iterations.to_be_bytes());
        let bytes = seal(&key, CHECK_FILE, header, CHECK)?;
        write_file(&check_path, &bytes)?;
        Ok(Keystore {
            dir,
            key,
            permissions: config.permissions,
            write: RwLock::new(()),
        })
    }

    /// True when `dir` holds a keystore (its `keystore` file): [`open`](Self::open) would
    /// open it rather than create one.
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join(CHECK_FILE).exists()
    }

    /// The keystore's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's sealing key, generated and stored on first use: pass it to
    /// `NodeConfig::with_sealing_key` so the node keeps its sealing key across restarts.
    pub fn sealing_key(&self) -> Result<KeyPair, KeystoreError> {
        let _guard = lock::write(&self.write);
        let path = self.dir.join(SEALING_FILE);
        if path.exists() {
            let secret = self.read_file(SEALING_FILE, KIND_SEALING)?;
            let secret: [u8; KEY_LEN] = secret
                .as_slice()
                .try_into()
                .map_err(|_| KeystoreError::Tampered(path.clone()))?;
            return KeyPair::from_secret_bytes(&secret).map_err(|_| KeystoreError::Tampered(path));
        }
        let pair = KeyPair::generate();
        self.write_file(SEALING_FILE, KIND_SEALING, &pair.secret_bytes())?;
        Ok(pair)
    }

    /// Creates `label` with a fresh key pair as epoch 1, when the keystore has no key of it;
    /// answers the label's newest epoch either way.
    pub fn generate_label(&self, label: &str) -> Result<u32, KeystoreError> {
        check_label(label)?;
        let _guard = lock::write(&self.write);
        let mut entries = self.read_label(label)?;
        if let Some(newest) = entries.iter().map(|e| e.epoch).max() {
            return Ok(newest);
        }
        entries.push(Entry {
            epoch: 1,
            revoked: false,
            retired: 0,
            secret: KeyPair::generate().secret_bytes(),
        });
        self.write_label(label, &entries)?;
        Ok(1)
    }

    /// Rotates `label`: a fresh key pair becomes its newest epoch (the answer); the older ones
    /// are marked retired now, so a keyring loaded from here opens them until its retention
    /// after this moment. Creates the label (epoch 1) when it has no key yet.
    pub fn rotate(&self, label: &str) -> Result<u32, KeystoreError> {
        self.add_epoch(label, None, KeyPair::generate())
    }

    /// Stores `pair` as `label`'s key of `epoch`: a key distributed by the operator (a node
    /// group's, or one generated elsewhere with [`export_label`](Self::export_label)). A newer
    /// epoch than the label has retires the older ones now; a revoked epoch is refused.
    pub fn import_label(
        &self,
        label: &str,
        epoch: u32,
        pair: &KeyPair,
    ) -> Result<(), KeystoreError> {
        self.add_epoch(label, Some(epoch), pair.clone()).map(|_| ())
    }

    /// `label`'s key pair of `epoch`, to hand to the label's other holders (keep it secret).
    pub fn export_label(&self, label: &str, epoch: u32) -> Result<KeyPair, KeystoreError> {
        check_label(label)?;
        let entries = self.read_label(label)?;
        let not_found = || KeystoreError::NotFound {
            label: label.to_owned(),
            epoch,
        };
        let e = entries
            .iter()
            .find(|e| e.epoch == epoch && !e.revoked)
            .ok_or_else(not_found)?;
        KeyPair::from_secret_bytes(&e.secret)
            .map_err(|_| KeystoreError::Tampered(self.dir.join(label_file(label))))
    }

    /// Revokes `label`'s key of `epoch`: its secret is erased from the file and a keyring
    /// loaded from here neither seals to nor opens with it (see `Keyring::revoke`). Use it to
    /// retire an epoch once its retention has passed, and at once on compromise.
    pub fn revoke(&self, label: &str, epoch: u32) -> Result<(), KeystoreError> {
        check_label(label)?;
        let _guard = lock::write(&self.write);
        let mut entries = self.read_label(label)?;
        let e = entries
            .iter_mut()
            .find(|e| e.epoch == epoch)
            .ok_or_else(|| KeystoreError::NotFound {
                label: label.to_owned(),
                epoch,
            })?;
        e.revoked = true;
        e.secret = [0; KEY_LEN];
        self.write_label(label, &entries)
    }

    /// The labels the keystore has keys of, sorted.
    pub fn labels(&self) -> Result<Vec<String>, KeystoreError> {
        let mut labels = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(label) = name
                .to_str()
                .and_then(|n| n.strip_prefix("label."))
                .and_then(|n| n.strip_suffix(".key"))
            else {
                continue;
            };
            if check_label(label).is_ok() {
                labels.push(label.to_owned());
            }
        }
        labels.sort();
        Ok(labels)
    }

    /// `label`'s epochs, oldest first.
    pub fn epochs(&self, label: &str) -> Result<Vec<EpochInfo>, KeystoreError> {
        check_label(label)?;
        let mut entries = self.read_label(label)?;
        entries.sort_by_key(|e| e.epoch);
        Ok(entries
            .iter()
            .map(|e| EpochInfo {
                epoch: e.epoch,
                public: (!e.revoked)
                    .then(|| KeyPair::from_secret_bytes(&e.secret).ok())
                    .flatten()
                    .map(|p| p.public()),
                retired: (e.retired != 0)
                    .then(|| UNIX_EPOCH.checked_add(Duration::from_secs(e.retired)))
                    .flatten(),
                revoked: e.revoked,
            })
            .collect())
    }

    /// Gives `ring` every label key of the keystore: each label's epochs, oldest first, held
    /// (retired ones open until the ring's retention after their retirement, see
    /// `Keyring::hold_retired`) or revoked. Answers how many key pairs it holds now.
    pub fn load_into(&self, ring: &Keyring) -> Result<usize, KeystoreError> {
        let mut held = 0usize;
        for label in self.labels()? {
            let mut entries = self.read_label(&label)?;
            entries.sort_by_key(|e| e.epoch);
            let path = self.dir.join(label_file(&label));
            for e in &entries {
                if e.revoked {
                    ring.revoke(&label, e.epoch);
                    continue;
                }
                let pair = KeyPair::from_secret_bytes(&e.secret)
                    .map_err(|_| KeystoreError::Tampered(path.clone()))?;
                if e.retired == 0 {
                    ring.hold(&label, e.epoch, &pair);
                } else {
                    let at = UNIX_EPOCH
                        .checked_add(Duration::from_secs(e.retired))
                        .unwrap_or(UNIX_EPOCH);
                    ring.hold_retired(&label, e.epoch, &pair, at);
                }
                held = held.saturating_add(1);
            }
        }
        // Labels it seals to without holding them: an epoch it holds or revoked stays so.
        for (label, epoch, public) in self.public_keys()? {
            let private = self.read_label(&label)?;
            if !private.iter().any(|e| e.epoch == epoch) {
                ring.seal_to(&label, epoch, public);
            }
        }
        Ok(held)
    }

    /// Stores `public` as `label`'s public key of `epoch`, for a keystore that seals to the
    /// label without holding it (a sender that is not one of its holders, given the key with
    /// [`export_label`](Self::export_label)`(..).public()`): [`load_into`](Self::load_into)
    /// gives it to the keyring with `Keyring::seal_to`, unless the keystore has the label's
    /// key pair of that epoch. Replaces an earlier public key of the same epoch.
    pub fn import_public(
        &self,
        label: &str,
        epoch: u32,
        public: &PublicKey,
    ) -> Result<(), KeystoreError> {
        check_label(label)?;
        let _guard = lock::write(&self.write);
        let mut entries = self.read_public(label)?;
        entries.retain(|(e, _)| *e != epoch);
        entries.push((epoch, *public));
        entries.sort_by_key(|(e, _)| *e);
        self.write_public(label, &entries)
    }

    /// Removes `label`'s public key of `epoch` (stored with
    /// [`import_public`](Self::import_public)): nothing is sealed to it any more. Answers
    /// whether there was one.
    pub fn remove_public(&self, label: &str, epoch: u32) -> Result<bool, KeystoreError> {
        check_label(label)?;
        let _guard = lock::write(&self.write);
        let mut entries = self.read_public(label)?;
        let before = entries.len();
        entries.retain(|(e, _)| *e != epoch);
        if entries.len() == before {
            return Ok(false);
        }
        if entries.is_empty() {
            let path = self.dir.join(public_file(label));
            fs::remove_file(&path).map_err(io(&path))?;
        } else {
            self.write_public(label, &entries)?;
        }
        Ok(true)
    }

    /// The public keys stored with [`import_public`](Self::import_public): label, epoch and
    /// key, sorted by label and epoch.
    pub fn public_keys(&self) -> Result<Vec<(String, u32, PublicKey)>, KeystoreError> {
        let mut all = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(label) = name
                .to_str()
                .and_then(|n| n.strip_prefix("public."))
                .and_then(|n| n.strip_suffix(".key"))
            else {
                continue;
            };
            if check_label(label).is_ok() {
                for (epoch, public) in self.read_public(label)? {
                    all.push((label.to_owned(), epoch, public));
                }
            }
        }
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(all)
    }

    fn read_public(&self, label: &str) -> Result<Vec<(u32, PublicKey)>, KeystoreError> {
        let name = public_file(label);
        let path = self.dir.join(&name);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let plain = self.read_file(&name, KIND_PUBLIC)?;
        parse_public(label, &plain).ok_or(KeystoreError::Tampered(path))
    }

    fn write_public(&self, label: &str, entries: &[(u32, PublicKey)]) -> Result<(), KeystoreError> {
        let mut plain = Vec::with_capacity(3 + label.len() + entries.len() * PUBLIC_ENTRY_LEN);
        plain.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        plain.extend_from_slice(label.as_bytes());
        let count = u16::try_from(entries.len())
            .map_err(|_| KeystoreError::EpochsExhausted(label.to_owned()))?;
        plain.extend_from_slice(&count.to_be_bytes());
        for (epoch, public) in entries {
            plain.extend_from_slice(&epoch.to_be_bytes());
            plain.extend_from_slice(public.as_bytes());
        }
        self.write_file(&public_file(label), KIND_PUBLIC, &plain)
    }

    fn add_epoch(
        &self,
        label: &str,
        epoch: Option<u32>,
        pair: KeyPair,
    ) -> Result<u32, KeystoreError> {
        check_label(label)?;
        let _guard = lock::write(&self.write);
        let mut entries = self.read_label(label)?;
        let newest = entries.iter().map(|e| e.epoch).max();
        let epoch = match epoch {
            Some(epoch) => epoch,
            None => match newest {
                Some(n) => n
                    .checked_add(1)
                    .ok_or_else(|| KeystoreError::EpochsExhausted(label.to_owned()))?,
                None => 1,
            },
        };
        if entries.iter().any(|e| e.epoch == epoch && e.revoked) {
            return Err(KeystoreError::Revoked {
                label: label.to_owned(),
                epoch,
            });
        }
        let now = unix_secs(SystemTime::now()).max(1);
        let retired = if newest.is_some_and(|n| n > epoch) {
            now
        } else {
            0
        };
        entries.retain(|e| e.epoch != epoch);
        for e in entries
            .iter_mut()
            .filter(|e| e.epoch < epoch && e.retired == 0)
        {
            e.retired = now;
        }
        entries.push(Entry {
            epoch,
            revoked: false,
            retired,
            secret: pair.secret_bytes(),
        });
        self.write_label(label, &entries)?;
        Ok(epoch)
    }

    fn read_label(&self, label: &str) -> Result<Vec<Entry>, KeystoreError> {
        let name = label_file(label);
        let path = self.dir.join(&name);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let plain = self.read_file(&name, KIND_LABEL)?;
        parse_label(label, &plain).ok_or(KeystoreError::Tampered(path))
    }

    fn write_label(&self, label: &str, entries: &[Entry]) -> Result<(), KeystoreError> {
        let mut plain = Vec::with_capacity(3 + label.len() + entries.len() * (13 + KEY_LEN));
        plain.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        plain.extend_from_slice(label.as_bytes());
        let count = u16::try_from(entries.len())
            .map_err(|_| KeystoreError::EpochsExhausted(label.to_owned()))?;
        plain.extend_from_slice(&count.to_be_bytes());
        for e in entries {
            plain.extend_from_slice(&e.epoch.to_be_bytes());
            plain.push(if e.revoked { FLAG_REVOKED } else { 0 });
            plain.extend_from_slice(&e.retired.to_be_bytes());
            plain.extend_from_slice(&e.secret);
        }
        self.write_file(&label_file(label), KIND_LABEL, &plain)
    }

    fn read_file(&self, name: &str, kind: u8) -> Result<Vec<u8>, KeystoreError> {
        let path = self.dir.join(name);
        let bytes = read_checked(&path, self.permissions)?;
        parse_header(&path, &bytes, kind)?;
        let header_len = MAGIC.len() + 2;
        let header = bytes.get(..header_len).unwrap_or(&[]);
        let sealed = bytes.get(header_len..).unwrap_or(&[]);
        open_sealed(&self.key, name, header, sealed).ok_or(KeystoreError::Tampered(path))
    }

    fn write_file(&self, name: &str, kind: u8, plain: &[u8]) -> Result<(), KeystoreError> {
        let bytes = seal(&self.key, name, file_header(kind), plain)?;
        write_file(&self.dir.join(name), &bytes)
    }
}

fn parse_label(label: &str, mut plain: &[u8]) -> Option<Vec<Entry>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    let b = &mut plain;
    let len = usize::from(*take(b, 1)?.first()?);
    if take(b, len)? != label.as_bytes() {
        return None;
    }
    let count = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
    let mut entries = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let epoch = u32::from_be_bytes(take(b, 4)?.try_into().ok()?);
        let flags = *take(b, 1)?.first()?;
        let retired = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
        let secret: [u8; KEY_LEN] = take(b, KEY_LEN)?.try_into().ok()?;
        entries.push(Entry {
            epoch,
            revoked: flags & FLAG_REVOKED != 0,
            retired,
            secret,
        });
    }
    b.is_empty().then_some(entries)
}

/// A `public.<label>.key` file's plaintext (see the module documentation).
fn parse_public(label: &str, plain: &[u8]) -> Option<Vec<(u32, PublicKey)>> {
    let (&len, rest) = plain.split_first()?;
    let rest = rest
        .strip_prefix(label.as_bytes())
        .filter(|_| usize::from(len) == label.len())?;
    let (count, mut rest) = rest.split_first_chunk::<2>()?;
    let count = usize::from(u16::from_be_bytes(*count));
    let mut entries = Vec::with_capacity(count.min(rest.len() / PUBLIC_ENTRY_LEN));
    for _ in 0..count {
        let (epoch, after) = rest.split_first_chunk::<4>()?;
        let (public, after) = after.split_first_chunk::<KEY_LEN>()?;
        entries.push((
            u32::from_be_bytes(*epoch),
            PublicKey::from_bytes(*public).ok()?,
        ));
        rest = after;
    }
    rest.is_empty().then_some(entries)
}

fn file_header(kind: u8) -> Vec<u8> {
    let mut header = Vec::with_capacity(MAGIC.len() + 2 + SALT_LEN + 4);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.push(kind);
    header
}

/// The bytes after a file's magic, version and kind, checked.
fn parse_header<'a>(path: &Path, bytes: &'a [u8], kind: u8) -> Result<&'a [u8], KeystoreError> {
    let tampered = || KeystoreError::Tampered(path.to_owned());
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(tampered)?;
    match rest {
        [version, ..] if *version != VERSION => Err(KeystoreError::UnknownVersion(path.to_owned())),
        [_, k, body @ ..] if *k == kind => Ok(body),
        _ => Err(tampered()),
    }
}

fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Result<LessSafeKey, KeystoreError> {
    let iterations = NonZeroU32::new(iterations).ok_or(KeystoreError::WrongPassphrase)?;
    let mut key = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        passphrase,
        &mut key,
    );
    let unbound =
        UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| KeystoreError::WrongPassphrase)?;
    Ok(LessSafeKey::new(unbound))
}

fn aad(name: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len() + 1);
    aad.extend_from_slice(header);
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// `header | nonce | ciphertext + tag`.
fn seal(
    key: &LessSafeKey,
    name: &str,
    header: Vec<u8>,
    plain: &[u8],
) -> Result<Vec<u8>, KeystoreError> {
    let nonce = random::<NONCE_LEN>()?;
    let mut in_out = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(name, &header)),
        &mut in_out,
    )
    .map_err(|_| KeystoreError::NoRandomness)?;
    let mut out = header;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&in_out);
    Ok(out)
}

/// Opens `nonce | ciphertext + tag` after `header`.
fn open_sealed(key: &LessSafeKey, name: &str, header: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad(name, header)), &mut in_out)
        .ok()?;
    Some(plain.to_vec())
}

fn read_checked(path: &Path, check: PermissionCheck) -> Result<Vec<u8>, KeystoreError> {
    check_mode(path, 0o600, check)?;
    fs::read(path).map_err(io(path))
}

/// Refuses (or warns about) `path` when others than its owner may access it.
#[cfg(unix)]
fn check_mode(path: &Path, want: u32, check: PermissionCheck) -> Result<(), KeystoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    match check {
        PermissionCheck::Refuse => Err(KeystoreError::Permissions {
            path: path.to_owned(),
            mode,
            want,
        }),
        PermissionCheck::Warn => {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "keystore file or directory may be accessed by others (chmod {want:o})"
            );
            Ok(())
        }
    }
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _want: u32, _check: PermissionCheck) -> Result<(), KeystoreError> {
    Ok(())
}

/// Writes `bytes` to `path` (mode `0600`) through a temporary file renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover of an interrupted write could have other permissions: start afresh.
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::seal::{KeyGrant, KeyResolver as _};

    /// A fresh directory under the system's temporary one, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "runar-keystore-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fast() -> KeystoreConfig {
        KeystoreConfig::default().with_iterations(1_000)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_survive_a_reopen_and_load_into_a_keyring() {
        let dir = TempDir::new();
        let store = Keystore::open_with(&dir.0, "pass", fast()).unwrap();
        let sealing = store.sealing_key().unwrap();
        assert_eq!(store.generate_label("user").unwrap(), 1);
        assert_eq!(store.generate_label("user").unwrap(), 1, "idempotent");
        let v1 = store.export_label("user", 1).unwrap();
        assert_eq!(store.rotate("user").unwrap(), 2);
        assert_eq!(
            store.rotate("system").unwrap(),
            1,
            "a new label starts at 1"
        );
        drop(store);

        assert_eq!(mode(&dir.0), 0o700);
        for name in [
            "keystore",
            "sealing.key",
            "label.user.key",
            "label.system.key",
        ] {
            assert_eq!(mode(&dir.0.join(name)), 0o600, "{name}");
        }
        let store = Keystore::open(&dir.0, "pass").unwrap();
        assert_eq!(
            store.sealing_key().unwrap().public(),
            sealing.public(),
            "the sealing key is kept"
        );
        assert_eq!(store.labels().unwrap(), ["system", "user"]);
        let epochs = store.epochs("user").unwrap();
        assert_eq!(epochs.len(), 2);
        assert_eq!(epochs[0].public, Some(v1.public()));
        assert!(epochs[0].retired.is_some() && epochs[1].retired.is_none());

        let ring = Keyring::new();
        assert_eq!(store.load_into(&ring).unwrap(), 3);
        assert_eq!(ring.seal_key("user").unwrap().epoch, 2);
        assert!(ring.open_key("user", v1.public().key_id(), 1).is_some());
        assert_eq!(ring.seal_key("system").unwrap().epoch, 1);
    }

    #[test]
    fn public_keys_seal_to_a_label_the_keystore_does_not_hold() {
        let dir = TempDir::new();
        let store = Keystore::open_with(&dir.0, "pass", fast()).unwrap();
        let (v1, v2) = (KeyPair::generate(), KeyPair::generate());
        store.import_public("billing", 1, &v1.public()).unwrap();
        store.import_public("billing", 2, &v2.public()).unwrap();
        assert_eq!(mode(&dir.0.join("public.billing.key")), 0o600);
        assert_eq!(store.labels().unwrap(), Vec::<String>::new(), "no key pair");
        let store = Keystore::open(&dir.0, "pass").unwrap();
        assert_eq!(
            store.public_keys().unwrap(),
            [
                ("billing".to_owned(), 1, v1.public()),
                ("billing".to_owned(), 2, v2.public())
            ]
        );
        let ring = Keyring::new();
        assert_eq!(store.load_into(&ring).unwrap(), 0, "no key pair held");
        assert_eq!(ring.seal_key("billing").unwrap().public, v2.public());
        assert!(ring.open_key("billing", v2.public().key_id(), 2).is_none());

        assert!(store.remove_public("billing", 2).unwrap());
        assert!(!store.remove_public("billing", 2).unwrap());
        let ring = Keyring::new();
        store.load_into(&ring).unwrap();
        assert_eq!(ring.seal_key("billing").unwrap().epoch, 1);
        assert!(store.remove_public("billing", 1).unwrap());
        assert!(!dir.0.join("public.billing.key").exists());

        // A key pair of the epoch wins over a public key of it.
        let pair = KeyPair::generate();
        store.import_label("ops", 1, &pair).unwrap();
        store.import_public("ops", 1, &v1.public()).unwrap();
        let ring = Keyring::new();
        store.load_into(&ring).unwrap();
        assert_eq!(ring.seal_key("ops").unwrap().public, pair.public());
    }

    #[test]
    fn a_wrong_passphrase_is_a_typed_error() {
        let dir = TempDir::new();
        Keystore::open_with(&dir.0, "right", fast()).unwrap();
        let err = Keystore::open(&dir.0, "wrong").unwrap_err();
        assert!(matches!(err, KeystoreError::WrongPassphrase), "{err}");
    }

    #[test]
    fn files_others_may_read_are_refused_or_warned_about() {
        let dir = TempDir::new();
        let store = Keystore::open_with(&dir.0, "pass", fast()).unwrap();
        store.generate_label("ops").unwrap();
        let file = dir.0.join("label.ops.key");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.export_label("ops", 1).unwrap_err();
        assert!(
            matches!(err, KeystoreError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        let warn = Keystore::open_with(
            &dir.0,
            "pass",
            fast().with_permission_check(PermissionCheck::Warn),
        )
        .unwrap();
        warn.export_label("ops", 1).unwrap();

        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        let err = Keystore::open(&dir.0, "pass").unwrap_err();
        assert!(matches!(err, KeystoreError::Permissions { .. }), "{err}");
    }

    #[test]
    fn an_altered_or_swapped_file_is_refused() {
        let dir = TempDir::new();
        let store = Keystore::open_with(&dir.0, "pass", fast()).unwrap();
        store.generate_label("a").unwrap();
        store.generate_label("b").unwrap();
        let a = dir.0.join("label.a.key");
        let b = dir.0.join("label.b.key");
        let original = fs::read(&a).unwrap();

        // One bit flipped in the ciphertext.
        let mut bytes = original.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        write_file(&a, &bytes).unwrap();
        let err = store.export_label("a", 1).unwrap_err();
        assert!(matches!(err, KeystoreError::Tampered(_)), "{err}");

        // b's file put in a's place.
        fs::copy(&b, &a).unwrap();
        let err = store.export_label("a", 1).unwrap_err();
        assert!(matches!(err, KeystoreError::Tampered(_)), "{err}");

        // Truncated, and another version.
        write_file(&a, &original[..20]).unwrap();
        assert!(matches!(
            store.export_label("a", 1).unwrap_err(),
            KeystoreError::Tampered(_)
        ));
        let mut other = original.clone();
        other[MAGIC.len()] = 9;
        write_file(&a, &other).unwrap();
        assert!(matches!(
            store.export_label("a", 1).unwrap_err(),
            KeystoreError::UnknownVersion(_)
        ));
        write_file(&a, &original).unwrap();
        store.export_label("a", 1).unwrap();
    }

    #[test]
    fn rotation_keeps_old_epochs_until_the_retention_and_revocation_ends_them() {
        let dir = TempDir::new();
        let store = Keystore::open_with(&dir.0, "pass", fast()).unwrap();
        store.generate_label("user").unwrap();
        let v1 = store.export_label("user", 1).unwrap().public().key_id();
        store.rotate("user").unwrap();
        let v2 = store.export_label("user", 2).unwrap().public().key_id();

        let kept = Keyring::new().with_retention(Duration::from_secs(3600));
        store.load_into(&kept).unwrap();
        assert_eq!(kept.seal_key("user").unwrap().epoch, 2);
        assert!(kept.open_key("user", v1, 1).is_some());

        // The retirement time is the keystore's, not the load's: with no retention, epoch 1
        // no longer opens.
        let ended = Keyring::new().with_retention(Duration::ZERO);
        store.load_into(&ended).unwrap();
        assert!(ended.open_key("user", v1, 1).is_none());
        assert!(ended.open_key("user", v2, 2).is_some());

        // Retire epoch 1 for good, then revoke epoch 2 (a compromise): nothing seals or opens.
        store.revoke("user", 1).unwrap();
        store.revoke("user", 2).unwrap();
        assert!(matches!(
            store.export_label("user", 1).unwrap_err(),
            KeystoreError::NotFound { .. }
        ));
        let ring = Keyring::new();
        assert_eq!(store.load_into(&ring).unwrap(), 0);
        assert!(ring.seal_key("user").is_none());
        assert!(matches!(
            store.import_label("user", 2, &KeyPair::generate()),
            Err(KeystoreError::Revoked { epoch: 2, .. })
        ));
        assert_eq!(store.rotate("user").unwrap(), 3);
        let epochs = store.epochs("user").unwrap();
        assert!(epochs[0].revoked && epochs[0].public.is_none());
        assert!(matches!(
            store.revoke("user", 9),
            Err(KeystoreError::NotFound { epoch: 9, .. })
        ));
    }

    #[test]
    fn labels_that_cannot_name_a_file_are_refused() {
        let dir = TempDir::new();
        let store = Keystore::open_with(&dir.0, "pass", fast()).unwrap();
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(
                    store.generate_label(bad),
                    Err(KeystoreError::InvalidLabel(_))
                ),
                "{bad}"
            );
        }
        store.generate_label("user.pii-2_x").unwrap();
    }

    #[test]
    fn a_grant_opens_with_its_profile_key_only() {
        let label = KeyPair::generate();
        let profile = KeyPair::generate();
        let grant = KeyGrant::wrap("user", 3, "alice", &label, &profile.public()).unwrap();
        let bytes = grant.to_bytes();
        let parsed = KeyGrant::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, grant);
        assert_eq!(
            parsed.open(&profile).unwrap().public(),
            label.public(),
            "the label key comes back"
        );
        assert!(grant.open(&KeyPair::generate()).is_err());
        // Moved to another profile or epoch, or altered: does not open.
        for at in [2, 7, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            if let Ok(g) = KeyGrant::from_bytes(&altered) {
                assert!(g.open(&profile).is_err(), "byte {at}");
            }
        }
        assert!(KeyGrant::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(KeyGrant::from_bytes(&[]).is_err());
    }
}
