//! Request and event metadata: gRPC-like key/value pairs that travel beside the payload.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};

/// The suffix of a key whose value is binary (as in gRPC).
const BINARY_SUFFIX: &str = "-bin";
/// Keys with this prefix are the runtime's own (e.g. the caller's remaining time on the wire).
pub(crate) const RESERVED_PREFIX: &str = "runar-";
/// The reserved entry of a request on the wire that holds the caller's remaining time, in
/// milliseconds (decimal ASCII).
pub(crate) const TIMEOUT_KEY: &str = "runar-timeout";
/// The default of [`NodeConfig::max_metadata_size`](crate::NodeConfig::max_metadata_size).
pub(crate) const DEFAULT_MAX_METADATA_SIZE: usize = 8 * 1024;
/// The default of [`NodeConfig::max_metadata_entries`](crate::NodeConfig::max_metadata_entries).
pub(crate) const DEFAULT_MAX_METADATA_ENTRIES: usize = 64;
/// The W3C trace context key: the one entry [`RequestContext::request`] copies into downstream
/// calls.
///
/// [`RequestContext::request`]: crate::RequestContext::request
pub const TRACEPARENT: &str = "traceparent";

/// Request or event metadata: gRPC-like key/value pairs (auth tokens, tenant ids, request ids, a
/// W3C `traceparent`), set per call ([`RequestOptions::with_metadata`]), per client
/// (`client.with_metadata`), per publish ([`PublishOptions::with_metadata`]) or by an
/// [`Interceptor`], and read in handlers with [`RequestContext::metadata`] and
/// [`EventContext::metadata`].
///
/// Keys are lowercase ASCII (`a-z`, `0-9`, `-`, `_`, `.`). Values are printable ASCII text,
/// except for keys ending in `-bin`, whose values are bytes. Keys starting with `runar-` are
/// reserved. Inserting a key again replaces its value.
///
/// Metadata is small and cheap to clone (an `Arc`); empty metadata allocates nothing. Local calls
/// hand it to the handler as it is; only a call to a peer encodes it. Its size is limited by
/// [`NodeConfig::max_metadata_size`] and [`NodeConfig::max_metadata_entries`], on both sides.
///
/// ```
/// use runar_runtime::Metadata;
/// let mut md = Metadata::new();
/// md.insert("tenant-id", "acme")?;
/// md.insert_bin("session-bin", vec![0u8, 1, 2])?;
/// assert_eq!(md.get("tenant-id"), Some("acme"));
/// assert_eq!(md.get_bin("session-bin"), Some(&[0u8, 1, 2][..]));
/// assert!(md.insert("Tenant", "x").is_err()); // keys are lowercase
/// assert_eq!(md.len(), 2);
/// # Ok::<(), runar_runtime::Error>(())
/// ```
///
/// [`RequestOptions::with_metadata`]: crate::RequestOptions::with_metadata
/// [`PublishOptions::with_metadata`]: crate::PublishOptions::with_metadata
/// [`Interceptor`]: crate::Interceptor
/// [`RequestContext::metadata`]: crate::RequestContext::metadata
/// [`EventContext::metadata`]: crate::EventContext::metadata
/// [`NodeConfig::max_metadata_size`]: crate::NodeConfig::max_metadata_size
/// [`NodeConfig::max_metadata_entries`]: crate::NodeConfig::max_metadata_entries
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `None` when empty, so that empty metadata costs nothing.
    entries: Option<Arc<Vec<Entry>>>,
}

/// One entry: the key and its value's bytes (ASCII text unless the key ends in `-bin`).
type Entry = (Box<str>, Bytes);

impl Metadata {
    /// Empty metadata (allocates nothing).
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Sets the ASCII value of `key`. Fails with `InvalidArgument` for a key that is not
    /// lowercase ASCII, a reserved or `-bin` key, or a value that is not printable ASCII.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> Result<()> {
        let value = value.into();
        check_user_key(key)?;
        if is_binary(key) {
            return Err(Error::invalid_argument(format!(
                "metadata key `{key}` ends in `-bin`: set it with insert_bin"
            )));
        }
        check_ascii_value(key, value.as_bytes())?;
        self.set(key, Bytes::from(value));
        Ok(())
    }

    /// Sets the binary value of `key`, which must end in `-bin`.
    pub fn insert_bin(&mut self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        check_user_key(key)?;
        if !is_binary(key) {
            return Err(Error::invalid_argument(format!(
                "metadata key `{key}` holds text: a binary value needs a key ending in `-bin`"
            )));
        }
        self.set(key, value.into());
        Ok(())
    }

    /// The ASCII value of `key`, if set (`None` for a `-bin` key).
    pub fn get(&self, key: &str) -> Option<&str> {
        if is_binary(key) {
            return None;
        }
        self.raw(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The binary value of `key` (a key ending in `-bin`), if set.
    pub fn get_bin(&self, key: &str) -> Option<&[u8]> {
        if !is_binary(key) {
            return None;
        }
        self.raw(key).map(|v| &v[..])
    }

    /// Removes `key`; true when it was set.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(entries) = self.entries.as_mut() else {
            return false;
        };
        let Some(index) = entries.iter().position(|(k, _)| &**k == key) else {
            return false;
        };
        Arc::make_mut(entries).remove(index);
        if entries.is_empty() {
            self.entries = None;
        }
        true
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_none()
    }

    /// The entries in insertion order: the key and its value (text or bytes).
    pub fn iter(&self) -> impl Iterator<Item = (&str, MetadataValue<'_>)> {
        self.entries.iter().flat_map(|entries| {
            entries.iter().map(|(k, v)| {
                let value = if is_binary(k) {
                    MetadataValue::Binary(v)
                } else {
                    MetadataValue::Ascii(std::str::from_utf8(v).unwrap_or_default())
                };
                (&**k, value)
            })
        })
    }

    /// Copies `other`'s entries into this metadata, replacing entries with the same key.
    pub fn extend(&mut self, other: &Metadata) {
        if self.is_empty() {
            self.entries = other.entries.clone();
            return;
        }
        for (key, value) in other.raw_entries() {
            self.set(key, value.clone());
        }
    }

    /// The entries as stored: key and raw value bytes.
    pub(crate) fn raw_entries(&self) -> &[(Box<str>, Bytes)] {
        self.entries.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    fn raw(&self, key: &str) -> Option<&Bytes> {
        self.raw_entries()
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    fn set(&mut self, key: &str, value: Bytes) {
        let entries = Arc::make_mut(self.entries.get_or_insert_with(Default::default));
        match entries.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, v)) => *v = value,
            None => entries.push((key.into(), value)),
        }
    }

    /// The size the entries count for against the limit: keys and values, in bytes.
    pub(crate) fn size(&self) -> usize {
        self.raw_entries().iter().fold(0usize, |n, (k, v)| {
            n.saturating_add(k.len()).saturating_add(v.len())
        })
    }

    /// Fails with `ResourceExhausted` when the metadata is over either limit. Inlined: no
    /// metadata, the usual case, is one branch.
    #[inline]
    pub(crate) fn check_limits(&self, max_size: usize, max_entries: usize) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.check_entries(max_size, max_entries)
    }

    /// [`check_limits`](Self::check_limits) for metadata with entries.
    fn check_entries(&self, max_size: usize, max_entries: usize) -> Result<()> {
        if self.len() > max_entries {
            return Err(Error::resource_exhausted(format!(
                "the metadata has {} entries, over the limit of {max_entries}",
                self.len()
            )));
        }
        let size = self.size();
        if size > max_size {
            return Err(Error::resource_exhausted(format!(
                "the metadata is {size} bytes, over the limit of {max_size}"
            )));
        }
        Ok(())
    }

    /// Builds metadata from entries a peer sent, stopping at the first invalid one. Reserved keys
    /// are the caller's business and must have been taken out.
    pub(crate) fn from_wire(
        entries: impl IntoIterator<Item = (String, Bytes)>,
        max_size: usize,
        max_entries: usize,
    ) -> Result<Metadata> {
        let mut metadata = Metadata::new();
        let mut size = 0usize;
        for (key, value) in entries {
            size = size.saturating_add(key.len()).saturating_add(value.len());
            if metadata.len() >= max_entries {
                return Err(Error::resource_exhausted(format!(
                    "the metadata has more than {max_entries} entries, the limit"
                )));
            }
            if size > max_size {
                return Err(Error::resource_exhausted(format!(
                    "the metadata is over the limit of {max_size} bytes of keys and values"
                )));
            }
            check_user_key(&key)?;
            if !is_binary(&key) {
                check_ascii_value(&key, &value)?;
            }
            metadata.set(&key, value);
        }
        Ok(metadata)
    }

    /// The entry `key` only (for the trace context copied into downstream calls).
    pub(crate) fn only(&self, key: &str) -> Metadata {
        let mut out = Metadata::new();
        if let Some(value) = self.raw(key) {
            out.set(key, value.clone());
        }
        out
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A metadata value: text for ordinary keys, bytes for `-bin` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataValue<'a> {
    /// The value of an ordinary key.
    Ascii(&'a str),
    /// The value of a key ending in `-bin`.
    Binary(&'a [u8]),
}

fn is_binary(key: &str) -> bool {
    key.ends_with(BINARY_SUFFIX)
}

/// A key a user may set: non-empty lowercase ASCII, not reserved.
fn check_user_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if !valid {
        return Err(Error::invalid_argument(format!(
            "invalid metadata key `{}`: use lowercase ASCII letters, digits, `-`, `_` and `.`",
            key.escape_debug()
        )));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid_argument(format!(
            "metadata key `{key}` is reserved: keys starting with `{RESERVED_PREFIX}` are Runar's own"
        )));
    }
    Ok(())
}

fn check_ascii_value(key: &str, value: &[u8]) -> Result<()> {
    if value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "the value of metadata key `{key}` is not printable ASCII: use a `-bin` key for bytes"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_limits() {
        let mut md = Metadata::new();
        assert!(md.is_empty() && md.entries.is_none());
        md.insert("a.b_c-1", "x y").unwrap();
        md.insert("a.b_c-1", "z").unwrap();
        assert_eq!((md.get("a.b_c-1"), md.len()), (Some("z"), 1));
        for bad in ["", "Upper", "sp ace", "é", "runar-timeout"] {
            assert_eq!(
                md.insert(bad, "v").unwrap_err().code(),
                crate::Code::InvalidArgument
            );
        }
        assert!(md.insert("k", "new\nline").is_err());
        assert!(md.insert("k-bin", "text").is_err());
        assert!(md.insert_bin("k", vec![1u8]).is_err());
        md.insert_bin("k-bin", vec![0u8, 255]).unwrap();
        assert_eq!(md.get_bin("k-bin"), Some(&[0u8, 255][..]));
        assert_eq!(md.get("k-bin"), None);
        assert!(md.check_limits(100, 2).is_ok());
        assert!(md.check_limits(100, 1).is_err());
        assert!(md.check_limits(5, 10).is_err());
        assert!(md.remove("a.b_c-1") && md.remove("k-bin") && !md.remove("k-bin"));
        assert!(md.entries.is_none());
        let wire: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|k| (k.to_string(), Bytes::from_static(b"v")))
            .collect();
        assert!(Metadata::from_wire(wire.clone(), 100, 2).is_err());
        assert!(Metadata::from_wire(wire.clone(), 5, 3).is_err());
        assert_eq!(Metadata::from_wire(wire, 100, 3).unwrap().len(), 3);
    }
}
