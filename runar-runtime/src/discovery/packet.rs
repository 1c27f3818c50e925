//! Signed discovery datagrams: building and checking them.
//!
//! The format and the receiver's checks are specified in `proto/runar/v1/discovery.proto`.
//! Checking is split in two: [`parse`] does everything cheap (size, decoding, version, network,
//! own id, key and id consistency) and [`Parsed::verify`] checks the signature, so that a caller
//! can drop replays by their (instance, sequence) before paying for a signature check.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use prost::Message as _;

use crate::{
    identity::{NodeId, NodeKeypair, verify},
    wire,
};

/// The discovery protocol version this code speaks.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// Prefix of the signed bytes: keeps discovery signatures apart from other uses of the node key.
const SIGNING_CONTEXT: &[u8] = b"runar/discovery/v1\0";
/// At most this many addresses are sent or accepted in one announcement.
pub(crate) const MAX_ADDRESSES: usize = 16;

/// Announce or goodbye.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The sender is here.
    Announce,
    /// The sender is leaving.
    Goodbye,
}

impl Kind {
    fn to_wire(self) -> wire::DiscoveryKind {
        match self {
            Kind::Announce => wire::DiscoveryKind::Announce,
            Kind::Goodbye => wire::DiscoveryKind::Goodbye,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it): a new instance number.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a node puts in one announcement.
pub(crate) struct Outgoing<'a> {
    pub(crate) keypair: &'a NodeKeypair,
    pub(crate) network_id: &'a str,
    pub(crate) kind: Kind,
    pub(crate) addresses: &'a [SocketAddr],
    pub(crate) instance: u64,
    pub(crate) sequence: u64,
    pub(crate) timestamp_ms: u64,
}

impl Outgoing<'_> {
    /// The signed datagram. If it would be larger than `max_size`, trailing addresses are left
    /// out until it fits (the datagram without addresses is about 200 bytes).
    pub(crate) fn encode(&self, max_size: usize) -> Vec<u8> {
        let mut count = self.addresses.len().min(MAX_ADDRESSES);
        loop {
            let datagram = self.encode_with(count);
            if datagram.len() <= max_size || count == 0 {
                if count < self.addresses.len() {
                    tracing::warn!(
                        advertised = count,
                        of = self.addresses.len(),
                        max_size,
                        "discovery: too many addresses for one datagram; some are not advertised"
                    );
                }
                return datagram;
            }
            count -= 1;
        }
    }

    fn encode_with(&self, address_count: usize) -> Vec<u8> {
        let announcement = wire::DiscoveryAnnouncement {
            protocol_version: PROTOCOL_VERSION,
            kind: self.kind.to_wire() as i32,
            node_id: Bytes::copy_from_slice(self.keypair.node_id().as_bytes()),
            public_key: Bytes::copy_from_slice(&self.keypair.public_key()),
            network_id: self.network_id.to_owned(),
            addresses: self
                .addresses
                .iter()
                .take(address_count)
                .map(|a| wire::DiscoveryAddress {
                    ip: match a.ip() {
                        IpAddr::V4(ip) => Bytes::copy_from_slice(&ip.octets()),
                        IpAddr::V6(ip) => Bytes::copy_from_slice(&ip.octets()),
                    },
                    port: u32::from(a.port()),
                })
                .collect(),
            instance: self.instance,
            sequence: self.sequence,
            timestamp_ms: self.timestamp_ms,
        }
        .encode_to_vec();
        let signature = self.keypair.sign(&signed_bytes(&announcement));
        wire::DiscoveryPacket {
            announcement: Bytes::from(announcement),
            signature: Bytes::copy_from_slice(&signature),
        }
        .encode_to_vec()
    }
}

pub(crate) fn signed_bytes(announcement: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + announcement.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(announcement);
    message
}

/// Why a datagram was dropped.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Larger than the configured maximum.
    TooLarge(usize),
    /// Not a valid packet or announcement.
    Malformed(prost::DecodeError),
    /// A protocol version we do not speak.
    Version(u32),
    /// From another network.
    OtherNetwork,
    /// Our own announcement.
    Own,
    /// The public key is not 32 bytes.
    BadKey,
    /// The node id does not belong to the public key.
    NodeIdMismatch,
    /// The signature does not verify.
    BadSignature,
    /// Neither announce nor goodbye.
    UnknownKind(i32),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::TooLarge(n) => write!(f, "datagram too large ({n} bytes or more)"),
            Rejected::Malformed(e) => write!(f, "malformed: {e}"),
            Rejected::Version(v) => write!(f, "unsupported protocol version {v}"),
            Rejected::OtherNetwork => f.write_str("another network"),
            Rejected::Own => f.write_str("own announcement"),
            Rejected::BadKey => f.write_str("public key is not 32 bytes"),
            Rejected::NodeIdMismatch => f.write_str("node id does not match the public key"),
            Rejected::BadSignature => f.write_str("bad signature"),
            Rejected::UnknownKind(k) => write!(f, "unknown kind {k}"),
        }
    }
}

/// What the receiver checks against.
#[derive(Debug)]
pub(crate) struct Checker {
    pub(crate) network_id: String,
    pub(crate) own: NodeId,
    pub(crate) max_size: usize,
}

/// A datagram that passed the cheap checks; its signature is not checked yet, so nothing in it
/// may be trusted.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) node_id: NodeId,
    pub(crate) kind: Kind,
    /// Decodable addresses, not yet filtered for the source (see [`usable_from`]).
    pub(crate) addresses: Vec<SocketAddr>,
    pub(crate) instance: u64,
    pub(crate) sequence: u64,
    pub(crate) timestamp_ms: u64,
    public_key: [u8; 32],
    signature: Bytes,
    announcement_bytes: Bytes,
}

/// A datagram that passed every check.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) node_id: NodeId,
    pub(crate) kind: Kind,
    /// Decodable addresses, not yet filtered for the source (see [`usable_from`]).
    pub(crate) addresses: Vec<SocketAddr>,
    pub(crate) instance: u64,
    pub(crate) sequence: u64,
    pub(crate) timestamp_ms: u64,
}

impl Checker {
    /// Everything but the signature: size, decoding, version, network, own id, key and id, kind.
    pub(crate) fn parse(&self, datagram: &[u8]) -> Result<Parsed, Rejected> {
        if datagram.len() > self.max_size {
            return Err(Rejected::TooLarge(datagram.len()));
        }
        let packet = wire::DiscoveryPacket::decode(datagram).map_err(Rejected::Malformed)?;
        let announcement = wire::DiscoveryAnnouncement::decode(packet.announcement.clone())
            .map_err(Rejected::Malformed)?;
        if announcement.protocol_version != PROTOCOL_VERSION {
            return Err(Rejected::Version(announcement.protocol_version));
        }
        if announcement.network_id != self.network_id {
            return Err(Rejected::OtherNetwork);
        }
        if announcement.node_id.as_ref() == self.own.as_bytes().as_slice() {
            return Err(Rejected::Own);
        }
        let public_key: [u8; 32] = announcement
            .public_key
            .as_ref()
            .try_into()
            .map_err(|_| Rejected::BadKey)?;
        let node_id = NodeId::from_public_key(&public_key);
        if announcement.node_id.as_ref() != node_id.as_bytes().as_slice() {
            return Err(Rejected::NodeIdMismatch);
        }
        if node_id == self.own {
            // Our key with a forged node id field is caught above; this is belt and braces.
            return Err(Rejected::Own);
        }
        let kind = match wire::DiscoveryKind::try_from(announcement.kind) {
            Ok(wire::DiscoveryKind::Announce) => Kind::Announce,
            Ok(wire::DiscoveryKind::Goodbye) => Kind::Goodbye,
            Ok(wire::DiscoveryKind::Unspecified) | Err(_) => {
                return Err(Rejected::UnknownKind(announcement.kind));
            }
        };
        Ok(Parsed {
            node_id,
            kind,
            addresses: announcement
                .addresses
                .iter()
                .take(MAX_ADDRESSES)
                .filter_map(decode_address)
                .collect(),
            instance: announcement.instance,
            sequence: announcement.sequence,
            timestamp_ms: announcement.timestamp_ms,
            public_key,
            signature: packet.signature,
            announcement_bytes: packet.announcement,
        })
    }
}

impl Parsed {
    /// Checks the signature.
    pub(crate) fn verify(self) -> Result<Verified, Rejected> {
        if !verify(
            &self.public_key,
            &signed_bytes(&self.announcement_bytes),
            &self.signature,
        ) {
            return Err(Rejected::BadSignature);
        }
        Ok(Verified {
            node_id: self.node_id,
            kind: self.kind,
            addresses: self.addresses,
            instance: self.instance,
            sequence: self.sequence,
            timestamp_ms: self.timestamp_ms,
        })
    }
}

fn decode_address(address: &wire::DiscoveryAddress) -> Option<SocketAddr> {
    let port = u16::try_from(address.port).ok()?;
    let ip = if let Ok(octets) = <[u8; 4]>::try_from(address.ip.as_ref()) {
        IpAddr::V4(Ipv4Addr::from(octets))
    } else if let Ok(octets) = <[u8; 16]>::try_from(address.ip.as_ref()) {
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        return None;
    };
    Some(SocketAddr::new(ip, port))
}

/// True if a peer that sent from `source` may be told to dial `address`, or may dial it: never
/// port 0, an unspecified, multicast or broadcast address, or an IPv6 link-local address (it has
/// no scope here); a loopback address only from (or to) a loopback source.
pub(crate) fn usable_from(address: &SocketAddr, source: IpAddr) -> bool {
    if address.port() == 0 {
        return false;
    }
    let ip = address.ip().to_canonical();
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => return false,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => return false,
        _ => {}
    }
    !ip.is_loopback() || source.to_canonical().is_loopback()
}
