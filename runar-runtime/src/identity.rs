//! Node identity: an Ed25519 keypair ([`NodeKeypair`]) and the [`NodeId`] derived from its
//! public key.
//!
//! `NodeId = SHA-256(raw 32-byte Ed25519 public key)[..16]`, written as 26 characters of
//! lowercase RFC 4648 base32 without padding (also a valid DNS label, used in certificates as
//! `<node-id>.runar`). A node id is never taken from what a peer says: it is always recomputed
//! from a verified public key.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::Write as _,
    path::Path,
    str::FromStr,
};

use ring::{
    digest,
    rand::SystemRandom,
    signature::{self, Ed25519KeyPair, KeyPair as _},
};

/// A failure to create, read or store a node's keypair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A key (node keypair, PKCS#8 document) is malformed or cannot be generated.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A file operation (reading or writing a key file) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

#[doc(hidden)] // identity errors are internal
impl From<IdentityError> for crate::Error {
    fn from(err: IdentityError) -> Self {
        let msg = err.to_string();
        match err {
            IdentityError::InvalidKey(_) => crate::Error::invalid_argument(msg),
            IdentityError::Io { .. } => crate::Error::internal(msg),
        }
    }
}

/// Length of a [`NodeId`] in bytes.
const NODE_ID_LEN: usize = 16;
/// Length of a [`NodeId`]'s text form: ceil(128 / 5).
const NODE_ID_TEXT_LEN: usize = 26;
const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A node's identity: the first 16 bytes of the SHA-256 of its Ed25519 public key.
///
/// Cheap to copy; ordered by its bytes (used to break simultaneous-dial ties deterministically).
/// Displays as 26 lowercase base32 characters and parses back with [`FromStr`].
///
/// ```
/// use runar_runtime::NodeId;
/// use runar_runtime::__private::NodeKeypair;
/// let key = NodeKeypair::generate().unwrap();
/// let id = key.node_id();
/// assert_eq!(id, NodeId::from_public_key(&key.public_key()));
/// assert_eq!(id.to_string().len(), 26);
/// assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// The node id of an Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let hash = digest::digest(&digest::SHA256, public_key);
        let mut id = [0u8; NODE_ID_LEN];
        for (out, byte) in id.iter_mut().zip(hash.as_ref()) {
            *out = *byte;
        }
        NodeId(id)
    }

    /// The node id with these raw bytes.
    pub fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        NodeId(bytes)
    }

    /// The raw bytes of the node id.
    pub fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }
}

/// Writes `bytes` as lowercase unpadded base32.
pub(crate) fn write_base32(bytes: &[u8], f: &mut impl fmt::Write) -> fmt::Result {
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            f.write_char(base32_char(acc >> bits))?;
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        f.write_char(base32_char(acc << (5 - bits)))?;
    }
    Ok(())
}

fn base32_char(value: u32) -> char {
    // `value & 31` is always a valid index into the 32-entry alphabet.
    char::from(BASE32_ALPHABET[(value & 31) as usize])
}

fn base32_value(c: u8) -> Option<u32> {
    match c {
        b'a'..=b'z' => Some(u32::from(c - b'a')),
        b'2'..=b'7' => Some(u32::from(c - b'2') + 26),
        _ => None,
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_base32(&self.0, f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeId(")?;
        write_base32(&self.0, f)?;
        f.write_str(")")
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    /// The string is not 26 characters long.
    #[error("a node id has 26 characters, got {0}")]
    Length(usize),
    /// The string has a character outside lowercase base32 (`a-z`, `2-7`).
    #[error("invalid character {0:?} in node id")]
    Character(char),
    /// The last character encodes bits beyond the id's 128 (not a canonical encoding).
    #[error("node id is not canonically encoded")]
    NonCanonical,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != NODE_ID_TEXT_LEN {
            return Err(ParseNodeIdError::Length(s.chars().count()));
        }
        let mut out = [0u8; NODE_ID_LEN];
        let mut written = 0;
        let mut acc: u32 = 0;
        let mut bits: u32 = 0;
        for c in s.bytes() {
            let value =
                base32_value(c).ok_or_else(|| ParseNodeIdError::Character(char::from(c)))?;
            acc = (acc << 5) | value;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if let Some(slot) = out.get_mut(written) {
                    *slot = (acc >> bits) as u8;
                }
                written += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // 26 * 5 = 130 bits: exactly 16 bytes and 2 leftover bits, which must be zero.
        if written != NODE_ID_LEN || acc != 0 {
            return Err(ParseNodeIdError::NonCanonical);
        }
        Ok(NodeId(out))
    }
}

/// A node's Ed25519 keypair: its identity on the network.
///
/// The private key is kept as a PKCS#8 document; [`NodeKeypair::load_or_generate`] persists it.
pub struct NodeKeypair {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    public_key: [u8; 32],
    node_id: NodeId,
}

impl fmt::Debug for NodeKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeypair")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeKeypair {
    /// A fresh random keypair.
    pub fn generate() -> Result<Self, IdentityError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::InvalidKey("cannot generate an Ed25519 key".into()))?;
        Self::from_pkcs8(document.as_ref())
    }

    /// The keypair in a PKCS#8 (v1 or v2) Ed25519 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, IdentityError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| IdentityError::InvalidKey(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public_key: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| IdentityError::InvalidKey("public key is not 32 bytes".into()))?;
        Ok(NodeKeypair {
            pkcs8: pkcs8.to_vec(),
            pair,
            node_id: NodeId::from_public_key(&public_key),
            public_key,
        })
    }

    /// The keypair stored at `path` (PKCS#8 DER), or a new one written there if the file does
    /// not exist. A new file is created with mode 0600 (on Unix) and appears atomically: a
    /// concurrent caller either sees the complete file or creates its own, and only one wins.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        match fs::read(path) {
            Ok(bytes) => return Self::from_pkcs8(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IdentityError::Io {
                    context: format!("reading node key {}", path.display()),
                    source,
                });
            }
        }
        let keypair = Self::generate()?;
        let io_err = |context: &str, source| IdentityError::Io {
            context: format!("{context} {}", path.display()),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| io_err("creating the directory of", e))?;
        }
        // Write a private temporary file, then hard-link it into place: the link fails if the
        // key file appeared meanwhile, and never exposes a partly written file.
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = Path::new(&tmp_name);
        let write_tmp = || -> std::io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(tmp)?;
            file.write_all(&keypair.pkcs8)?;
            file.sync_all()
        };
        let _ = fs::remove_file(tmp);
        let installed = write_tmp().and_then(|()| fs::hard_link(tmp, path));
        let _ = fs::remove_file(tmp);
        match installed {
            Ok(()) => Ok(keypair),
            // Another process created the key first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = fs::read(path).map_err(|e| io_err("reading node key", e))?;
                Self::from_pkcs8(&bytes)
            }
            Err(e) => Err(io_err("writing node key", e)),
        }
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// This node's id, derived from its public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let signature = self.pair.sign(message);
        let mut out = [0u8; 64];
        for (o, b) in out.iter_mut().zip(signature.as_ref()) {
            *o = *b;
        }
        out
    }

    /// The private key's PKCS#8 document. Secret.
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// True if `signature` is a valid Ed25519 signature of `message` by `public_key`.
/// Never panics, whatever the inputs.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}
