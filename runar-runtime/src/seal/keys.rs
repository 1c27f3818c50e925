//! Keys for sealed fields: X25519 key pairs (a label's, per epoch, and each node's sealing key),
//! the [`KeyResolver`] a node asks, and its default implementation, the [`Keyring`].

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use hpke::{Deserializable, Kem as _, Serializable};
use ring::digest;

use super::grant::KeyGrant;
use crate::identity::NodeId;
use crate::lock;

/// The HPKE KEM: DHKEM(X25519, HKDF-SHA256).
pub(crate) type Kem = hpke::kem::X25519HkdfSha256;
type HpkeSecret = <Kem as hpke::Kem>::PrivateKey;
type HpkePublic = <Kem as hpke::Kem>::PublicKey;

/// Length of an X25519 key, public or private.
pub const KEY_LEN: usize = 32;

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not an X25519 key.
    #[error("not an X25519 key")]
    InvalidKey,
    /// A key grant that is not this profile's, or was altered.
    #[error("the key grant does not open with this profile key")]
    GrantDoesNotOpen,
    /// Bytes that are not a key grant.
    #[error("malformed key grant")]
    MalformedGrant,
    /// A label or profile id longer than a grant carries.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// The keyring holds no key pair of the label that still opens.
    #[error("this keyring holds no key of label `{0}`")]
    NotHeld(String),
}

/// An X25519 key pair: a label's key of one epoch, or a node's sealing key.
#[derive(Clone)]
pub struct KeyPair {
    secret: HpkeSecret,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public.key_id())
    }
}

impl KeyPair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
        let (secret, public) = Kem::gen_keypair(&mut rng);
        KeyPair {
            secret,
            public: PublicKey::from_hpke(&public),
        }
    }

    /// The key pair derived from `ikm` (RFC 9180's `DeriveKeyPair`): the same input gives the
    /// same pair. `ikm` must be secret and high-entropy (at least 32 bytes); a network derives
    /// its labels' keys this way (`NetworkKey::label_key`).
    pub fn derive(ikm: &[u8]) -> Self {
        let (secret, public) = Kem::derive_keypair(ikm);
        KeyPair {
            secret,
            public: PublicKey::from_hpke(&public),
        }
    }

    /// The key pair of these 32 secret bytes (as [`secret_bytes`](Self::secret_bytes) gave).
    pub fn from_secret_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, KeyError> {
        let secret = HpkeSecret::from_bytes(bytes).map_err(|_| KeyError::InvalidKey)?;
        let public = PublicKey::from_hpke(&Kem::sk_to_pk(&secret));
        Ok(KeyPair { secret, public })
    }

    /// The secret key's 32 bytes, to hand the key to another holder or store it. Keep them
    /// secret.
    pub fn secret_bytes(&self) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        self.secret.write_exact(&mut out);
        out
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn hpke_secret(&self) -> &HpkeSecret {
        &self.secret
    }

    /// The secret as `x25519-dalek`'s, for the envelope's DHKEM (`auth_hpke`).
    pub(crate) fn x25519_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.secret_bytes())
    }
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// The public key of these 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        HpkePublic::from_bytes(&bytes).map_err(|_| KeyError::InvalidKey)?;
        Ok(PublicKey(bytes))
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's id: the first 8 bytes of its SHA-256.
    pub fn key_id(&self) -> KeyId {
        let hash = digest::digest(&digest::SHA256, &self.0);
        let mut id = [0u8; KEY_ID_LEN];
        for (out, byte) in id.iter_mut().zip(hash.as_ref()) {
            *out = *byte;
        }
        KeyId(id)
    }

    fn from_hpke(public: &HpkePublic) -> Self {
        let mut out = [0u8; KEY_LEN];
        public.write_exact(&mut out);
        PublicKey(out)
    }

    pub(crate) fn to_hpke(self) -> Option<HpkePublic> {
        HpkePublic::from_bytes(&self.0).ok()
    }
}

/// Length of a [`KeyId`].
pub const KEY_ID_LEN: usize = 8;

/// Names a public key: the first 8 bytes of its SHA-256. Shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; KEY_ID_LEN]);

impl KeyId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The key a label is sealed to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealTo {
    /// The label key's epoch.
    pub epoch: u32,
    /// The label's public key of that epoch.
    pub public: PublicKey,
}

/// What a node asks when it seals and opens labelled fields.
///
/// A label's holders are whoever was given its private key (every node of a network, a group
/// of nodes, a user's profile key registered at run time): the resolver answers for this node.
/// [`Keyring`] is the default implementation.
pub trait KeyResolver: Send + Sync + 'static {
    /// The key to seal `label` to now, or `None` when this node cannot seal it (the field is
    /// then sent redacted: no ciphertext, unopenable).
    fn seal_key(&self, label: &str) -> Option<SealTo>;

    /// The key pair of `label` with this id and epoch when this node may open it now.
    fn open_key(&self, label: &str, key_id: KeyId, epoch: u32) -> Option<KeyPair>;

    /// The sealing public key of `node`, if known: an envelope opens only when its sender's
    /// key is the one the resolver knows for the node it names.
    fn sender_key(&self, node: &NodeId) -> Option<PublicKey>;
}

/// How long a label's older epochs still open after a newer one was added, by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The default [`KeyResolver`]: label keys per epoch, held at run time, and the sealing keys of
/// known nodes.
///
/// * [`hold`](Self::hold) gives this node a label's key pair of one epoch (it seals to it and
///   opens with it), [`seal_to`](Self::seal_to) only its public key (it seals to it, opens
///   nothing).
/// * The newest epoch a label has that is not revoked is the one sealed to. Adding a newer
///   epoch *rotates*: the older ones still open until [`retention`](Self::with_retention)
///   after that.
/// * [`revoke`](Self::revoke) ends an epoch at once: nothing is sealed to it or opened with it.
/// * [`trust_node`](Self::trust_node) registers a node's sealing key (`Node::sealing_key`).
///
/// ```
/// use runar_runtime::seal::{Keyring, KeyPair, KeyResolver};
/// let ring = Keyring::new();
/// let v1 = KeyPair::generate();
/// ring.hold("user", 1, &v1);
/// assert_eq!(ring.seal_key("user").unwrap().epoch, 1);
/// ring.hold("user", 2, &KeyPair::generate());
/// assert_eq!(ring.seal_key("user").unwrap().epoch, 2);
/// // epoch 1 still opens, until the retention passes
/// assert!(ring.open_key("user", v1.public().key_id(), 1).is_some());
/// ring.revoke("user", 1);
/// assert!(ring.open_key("user", v1.public().key_id(), 1).is_none());
/// ```
pub struct Keyring {
    retention: Duration,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    labels: HashMap<String, Vec<Epoch>>,
    senders: HashMap<NodeId, PublicKey>,
    /// Per label, the user profiles registered for it: id → public key.
    profiles: HashMap<String, HashMap<String, PublicKey>>,
}

struct Epoch {
    epoch: u32,
    public: PublicKey,
    pair: Option<KeyPair>,
    /// When a newer epoch was added; it opens until then plus the retention.
    retired_at: Option<Instant>,
    revoked: bool,
}

impl Default for Keyring {
    fn default() -> Self {
        Keyring::new()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock::read(&self.inner);
        f.debug_struct("Keyring")
            .field("retention", &self.retention)
            .field("labels", &inner.labels.keys().collect::<Vec<_>>())
            .field("senders", &inner.senders.len())
            .finish()
    }
}

impl Keyring {
    /// An empty keyring with the default retention ([`DEFAULT_RETENTION`], 24 hours).
    pub fn new() -> Self {
        Keyring {
            retention: DEFAULT_RETENTION,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// How long older epochs of a label still open after a newer one is added.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// This node holds `label`'s key pair of `epoch`: it seals to it (while it is the newest)
    /// and opens with it.
    pub fn hold(&self, label: &str, epoch: u32, pair: &KeyPair) {
        self.add(label, epoch, pair.public(), Some(pair.clone()));
    }

    /// This node seals `label` to `public` of `epoch` (while it is the newest), and opens
    /// nothing of it.
    pub fn seal_to(&self, label: &str, epoch: u32, public: PublicKey) {
        self.add(label, epoch, public, None);
    }

    /// Revokes `label`'s key of `epoch` at once: nothing is sealed to it or opened with it.
    pub fn revoke(&self, label: &str, epoch: u32) {
        let mut inner = lock::write(&self.inner);
        if let Some(epochs) = inner.labels.get_mut(label) {
            for e in epochs.iter_mut().filter(|e| e.epoch == epoch) {
                e.revoked = true;
                e.pair = None;
            }
        }
    }

    /// Registers `node`'s sealing public key: envelopes it sealed open here.
    pub fn trust_node(&self, node: NodeId, key: PublicKey) {
        lock::write(&self.inner).senders.insert(node, key);
    }

    /// Like [`hold`](Self::hold), for an epoch a newer one replaced at `retired` (wall-clock
    /// time, as a keystore records it): it opens until `retired` plus the retention, not a
    /// full retention from now. Hold the epochs of a label oldest first.
    pub fn hold_retired(&self, label: &str, epoch: u32, pair: &KeyPair, retired: SystemTime) {
        self.add(label, epoch, pair.public(), Some(pair.clone()));
        let ago = SystemTime::now()
            .duration_since(retired)
            .unwrap_or(Duration::ZERO);
        let at = Instant::now().checked_sub(ago);
        let mut inner = lock::write(&self.inner);
        if let Some(e) = inner
            .labels
            .get_mut(label)
            .and_then(|epochs| epochs.iter_mut().find(|e| e.epoch == epoch && !e.revoked))
        {
            // Further back than this process's clock reaches: it no longer opens.
            e.retired_at = Some(at.unwrap_or_else(Instant::now));
            if at.is_none() {
                e.pair = None;
            }
        }
    }

    /// Registers user profile `profile` (its public key) for `label`, which this keyring holds:
    /// the answer is one [`KeyGrant`] per epoch of the label that still opens, each the label's
    /// key pair wrapped to `public`. Hand them to the profile's holder, who
    /// [`opens`](KeyGrant::open) them and [`hold`](Self::hold)s the label: every message
    /// sealed to the label is then openable with the profile's private key. Registering the
    /// same id again replaces its key.
    pub fn add_profile(
        &self,
        label: &str,
        profile: &str,
        public: PublicKey,
    ) -> Result<Vec<KeyGrant>, KeyError> {
        let held = self.held_pairs(label);
        if held.is_empty() {
            return Err(KeyError::NotHeld(label.to_owned()));
        }
        let grants = held
            .iter()
            .map(|(epoch, pair)| KeyGrant::wrap(label, *epoch, profile, pair, &public))
            .collect::<Result<Vec<_>, _>>()?;
        lock::write(&self.inner)
            .profiles
            .entry(label.to_owned())
            .or_default()
            .insert(profile.to_owned(), public);
        Ok(grants)
    }

    /// Removes user profile `profile` from `label`. The profile's holder has had the label's
    /// keys, so the label **rotates**: a fresh key pair becomes its newest epoch here (new
    /// messages are sealed to it; older epochs open until the retention ends), and the answer
    /// is its grants for the profiles still registered, to hand to them. Nothing happens (an
    /// empty answer) when the profile was not registered.
    pub fn remove_profile(&self, label: &str, profile: &str) -> Result<Vec<KeyGrant>, KeyError> {
        let removed = lock::write(&self.inner)
            .profiles
            .get_mut(label)
            .and_then(|p| p.remove(profile));
        if removed.is_none() {
            return Ok(Vec::new());
        }
        let next = {
            let inner = lock::read(&self.inner);
            inner
                .labels
                .get(label)
                .and_then(|e| e.iter().map(|e| e.epoch).max())
                .unwrap_or(0)
                .checked_add(1)
                .ok_or(KeyError::TooLong("epoch"))?
        };
        let pair = KeyPair::generate();
        self.hold(label, next, &pair);
        self.grants(label, next)
    }

    /// The profiles registered for `label`: id and public key.
    pub fn profiles(&self, label: &str) -> Vec<(String, PublicKey)> {
        lock::read(&self.inner)
            .profiles
            .get(label)
            .map(|p| p.iter().map(|(id, k)| (id.clone(), *k)).collect())
            .unwrap_or_default()
    }

    /// Grants of `label`'s key of `epoch` for every profile registered for the label (after
    /// [`hold`](Self::hold)ing a new epoch, to hand it to them).
    pub fn grants(&self, label: &str, epoch: u32) -> Result<Vec<KeyGrant>, KeyError> {
        let Some((_, pair)) = self
            .held_pairs(label)
            .into_iter()
            .find(|(e, _)| *e == epoch)
        else {
            return Err(KeyError::NotHeld(label.to_owned()));
        };
        self.profiles(label)
            .iter()
            .map(|(id, public)| KeyGrant::wrap(label, epoch, id, &pair, public))
            .collect()
    }

    /// The key pairs of `label` this keyring holds that still open, by epoch.
    fn held_pairs(&self, label: &str) -> Vec<(u32, KeyPair)> {
        let inner = lock::read(&self.inner);
        inner
            .labels
            .get(label)
            .map(|epochs| {
                epochs
                    .iter()
                    .filter(|e| !e.revoked)
                    .filter(|e| e.retired_at.is_none_or(|r| r.elapsed() < self.retention))
                    .filter_map(|e| e.pair.clone().map(|p| (e.epoch, p)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn add(&self, label: &str, epoch: u32, public: PublicKey, pair: Option<KeyPair>) {
        let now = Instant::now();
        let mut inner = lock::write(&self.inner);
        let epochs = inner.labels.entry(label.to_owned()).or_default();
        epochs.retain(|e| e.epoch != epoch || e.revoked);
        if epochs.iter().any(|e| e.epoch == epoch && e.revoked) {
            // A revoked epoch stays revoked.
            return;
        }
        let newest = epochs.iter().map(|e| e.epoch).max();
        let retired_at = match newest {
            Some(n) if n > epoch => Some(now),
            _ => None,
        };
        for e in epochs.iter_mut().filter(|e| e.epoch < epoch) {
            e.retired_at.get_or_insert(now);
        }
        epochs.push(Epoch {
            epoch,
            public,
            pair,
            retired_at,
            revoked: false,
        });
    }
}

impl KeyResolver for Keyring {
    fn seal_key(&self, label: &str) -> Option<SealTo> {
        let inner = lock::read(&self.inner);
        inner
            .labels
            .get(label)?
            .iter()
            .filter(|e| !e.revoked)
            .max_by_key(|e| e.epoch)
            .map(|e| SealTo {
                epoch: e.epoch,
                public: e.public,
            })
    }

    fn open_key(&self, label: &str, key_id: KeyId, epoch: u32) -> Option<KeyPair> {
        let inner = lock::read(&self.inner);
        let e = inner
            .labels
            .get(label)?
            .iter()
            .find(|e| e.epoch == epoch && !e.revoked && e.public.key_id() == key_id)?;
        if let Some(retired) = e.retired_at {
            if retired.elapsed() >= self.retention {
                return None;
            }
        }
        e.pair.clone()
    }

    fn sender_key(&self, node: &NodeId) -> Option<PublicKey> {
        lock::read(&self.inner).senders.get(node).copied()
    }
}
