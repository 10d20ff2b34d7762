//! Health heartbeats: the version 3 message and its signed envelope, byte
//! compatible with upstream Octavia (`health_daemon/status_message.py` and
//! `drivers/health/heartbeat_udp.py`).
//!
//! Envelope: JSON, zlib-compressed, followed by the HMAC-SHA256 of
//! the compressed bytes keyed with `heartbeat_key`, as 64 lowercase hex
//! characters. Old amphorae appended the raw 32-byte digest instead; the
//! decoder accepts both, checks the HMAC in constant time before it
//! decompresses anything, and bounds the decompressed size.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::wire_enum::wire_enum;

/// The message format version upstream's health manager expects (deltas).
pub const MESSAGE_VERSION: u32 = 3;
/// Largest payload of one UDP datagram over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Upstream's receive buffer: one datagram of at most 64 KiB.
pub const RECEIVER_BUFFER: usize = 64 * 1024;
/// Default bound on a decompressed message; a real one is far smaller.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 16 * 1024 * 1024;

const HEX_DIGEST_LEN: usize = 64;
const RAW_DIGEST_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Counters of one listener since the previous heartbeat (except `conns`,
/// the current connection count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStats {
    pub tx: u64,
    pub rx: u64,
    pub conns: u64,
    pub totconns: u64,
    pub ereq: u64,
}

wire_enum! {
    /// haproxy's frontend status, as upstream's health manager reads it
    /// (OPEN: online, FULL: degraded, anything else: offline).
    pub enum FrontendStatus {
        Open = "OPEN",
        Full = "FULL",
        Stop = "STOP",
    }
}

wire_enum! {
    /// haproxy's backend (pool) status.
    pub enum BackendStatus {
        Up = "UP",
        Down = "DOWN",
    }
}

wire_enum! {
    /// haproxy's server (member) status, as upstream's health manager
    /// reads it; haproxy's transitional forms ("UP 1/3") stay `Other`.
    pub enum ServerStatus {
        Up = "UP",
        Down = "DOWN",
        Drain = "DRAIN",
        Maint = "MAINT",
        NoCheck = "no check",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerHealth {
    pub status: FrontendStatus,
    pub stats: ListenerStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHealth {
    pub status: BackendStatus,
    /// Member id to status.
    pub members: BTreeMap<String, ServerStatus>,
}

/// A version 3 heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The amphora id.
    pub id: String,
    pub seq: u64,
    pub listeners: BTreeMap<String, ListenerHealth>,
    /// Keyed by haproxy's backend name, `{pool_id}:{listener_id}`.
    pub pools: BTreeMap<String, PoolHealth>,
    pub ver: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope of {0} bytes is too short to hold a signature")]
    TooShort(usize),
    #[error("HMAC does not match: wrong heartbeat_key or a corrupted packet")]
    BadSignature,
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("payload decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("payload is not the expected JSON: {0}")]
    Json(String),
    #[error("cannot encode the message: {0}")]
    Encode(String),
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Serialises, compresses and signs a message, as upstream's
/// `wrap_envelope(obj, key)`. Upstream compresses at level 9; any level
/// decodes the same, and the default level is both faster and, on
/// heartbeats, no larger.
pub fn encode<T: Serialize>(message: &T, key: &str) -> Result<Vec<u8>, EnvelopeError> {
    let json = serde_json::to_vec(message).map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    let mut compressor = ZlibEncoder::new(Vec::with_capacity(json.len() / 4 + 64), Compression::default());
    compressor.write_all(&json).map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    let mut envelope = compressor.finish().map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    let mut signer = mac(key.as_bytes());
    signer.update(&envelope);
    let digest = signer.finalize().into_bytes();
    envelope.extend_from_slice(hex::encode(digest).as_bytes());
    Ok(envelope)
}

/// The payload of a correctly signed envelope, still compressed.
pub fn verify<'a>(envelope: &'a [u8], key: &str) -> Result<&'a [u8], EnvelopeError> {
    if envelope.len() < RAW_DIGEST_LEN {
        return Err(EnvelopeError::TooShort(envelope.len()));
    }
    if envelope.len() >= HEX_DIGEST_LEN {
        let (payload, signature) = envelope.split_at(envelope.len() - HEX_DIGEST_LEN);
        let lowercase_hex = signature.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if lowercase_hex && let Ok(digest) = hex::decode(signature) {
            let mut verifier = mac(key.as_bytes());
            verifier.update(payload);
            if verifier.verify_slice(&digest).is_ok() {
                return Ok(payload);
            }
        }
    }
    // The older form: the raw digest.
    let (payload, signature) = envelope.split_at(envelope.len() - RAW_DIGEST_LEN);
    let mut verifier = mac(key.as_bytes());
    verifier.update(payload);
    verifier.verify_slice(signature).map_err(|_| EnvelopeError::BadSignature)?;
    Ok(payload)
}

/// Verifies, decompresses (at most `max_decompressed` bytes) and parses an
/// envelope, as upstream's `unwrap_envelope(envelope, key)`.
pub fn decode<T: DeserializeOwned>(envelope: &[u8], key: &str, max_decompressed: usize) -> Result<T, EnvelopeError> {
    Decoder::new().decode(envelope, key, max_decompressed)
}

/// [`decode`] for a receiver: keeps its inflate state and buffer from one
/// envelope to the next instead of allocating them per heartbeat (tens of
/// kilobytes each, a third of a busy receiver's CPU in the allocator).
#[derive(Debug)]
pub struct Decoder {
    inflate: Decompress,
    json: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { inflate: Decompress::new(true), json: Vec::new() }
    }

    /// Verifies, decompresses (at most `max_decompressed` bytes) and parses
    /// one envelope.
    pub fn decode<T: DeserializeOwned>(
        &mut self,
        envelope: &[u8],
        key: &str,
        max_decompressed: usize,
    ) -> Result<T, EnvelopeError> {
        let payload = verify(envelope, key)?;
        self.inflate.reset(true);
        self.json.clear();
        loop {
            if self.json.len() > max_decompressed {
                return Err(EnvelopeError::TooLarge { limit: max_decompressed });
            }
            if self.json.len() == self.json.capacity() {
                self.json.reserve((max_decompressed + 1 - self.json.len()).min(16 * 1024));
            }
            let (read, written) = (self.inflate.total_in(), self.json.len());
            let rest = payload.get(read as usize..).unwrap_or_default();
            let status = self
                .inflate
                .decompress_vec(rest, &mut self.json, FlushDecompress::None)
                .map_err(|e| EnvelopeError::Decompress(e.to_string()))?;
            match status {
                Status::StreamEnd => break,
                _ if self.inflate.total_in() == read && self.json.len() == written => {
                    return Err(EnvelopeError::Decompress("the compressed stream ends early".into()));
                }
                _ => {}
            }
        }
        if self.json.len() > max_decompressed {
            return Err(EnvelopeError::TooLarge { limit: max_decompressed });
        }
        serde_json::from_slice(&self.json).map_err(|e| EnvelopeError::Json(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(listeners: usize) -> Heartbeat {
        let mut beat =
            Heartbeat { id: "amp".into(), seq: 7, listeners: BTreeMap::new(), pools: BTreeMap::new(), ver: 3 };
        for i in 0..listeners {
            beat.listeners.insert(
                format!("listener-{i}"),
                ListenerHealth {
                    status: "OPEN".into(),
                    stats: ListenerStats { tx: 1, rx: 2, conns: 3, totconns: 4, ereq: 5 },
                },
            );
            beat.pools.insert(
                format!("pool-{i}:listener-{i}"),
                PoolHealth { status: "UP".into(), members: BTreeMap::from([("m".into(), "no check".into())]) },
            );
        }
        beat
    }

    #[test]
    fn the_signature_is_lowercase_hex_of_hmac_sha256() {
        let envelope = encode(&sample(1), "insecure").expect("encode");
        let (payload, signature) = envelope.split_at(envelope.len() - 64);
        let mut signer = mac(b"insecure");
        signer.update(payload);
        assert_eq!(signature, hex::encode(signer.finalize().into_bytes()).as_bytes());
        // A zlib stream header.
        assert_eq!(payload[0], 0x78);
    }

    #[test]
    fn the_raw_digest_form_is_accepted() {
        let hex_form = encode(&sample(2), "k").expect("encode");
        let payload = &hex_form[..hex_form.len() - 64];
        let mut signer = mac(b"k");
        signer.update(payload);
        let mut raw_form = payload.to_vec();
        raw_form.extend_from_slice(&signer.finalize().into_bytes());
        assert_eq!(decode::<Heartbeat>(&raw_form, "k", DEFAULT_MAX_DECOMPRESSED), Ok(sample(2)));
    }

    #[test]
    fn a_wrong_key_or_a_short_packet_is_rejected() {
        let envelope = encode(&sample(1), "right").expect("encode");
        assert_eq!(decode::<Heartbeat>(&envelope, "wrong", DEFAULT_MAX_DECOMPRESSED), Err(EnvelopeError::BadSignature));
        assert_eq!(
            decode::<Heartbeat>(&envelope[..10], "right", DEFAULT_MAX_DECOMPRESSED),
            Err(EnvelopeError::TooShort(10))
        );
    }

    #[test]
    fn a_zip_bomb_is_bounded() {
        // 8 MiB of spaces compresses to about 8 kilobytes.
        let bomb = " ".repeat(8 * 1024 * 1024);
        let envelope = encode(&bomb, "k").expect("encode");
        assert!(envelope.len() < 200_000);
        assert_eq!(
            decode::<serde_json::Value>(&envelope, "k", 1024 * 1024),
            Err(EnvelopeError::TooLarge { limit: 1024 * 1024 })
        );
    }

    #[test]
    fn signed_garbage_is_a_decompression_error_not_a_panic() {
        let envelope = signed(b"not zlib at all");
        assert!(matches!(decode::<Heartbeat>(&envelope, "k", 1024), Err(EnvelopeError::Decompress(_))));
    }

    /// A signed envelope of `payload` bytes as they are (no compression).
    fn signed(payload: &[u8]) -> Vec<u8> {
        let mut envelope = payload.to_vec();
        let mut signer = mac(b"k");
        signer.update(&envelope);
        envelope.extend_from_slice(hex::encode(signer.finalize().into_bytes()).as_bytes());
        envelope
    }

    #[test]
    fn a_reused_decoder_reads_each_envelope_alone_after_large_truncated_and_bad_ones() {
        let mut decoder = Decoder::new();
        let big = encode(&sample(200), "k").expect("encode");
        assert_eq!(decoder.decode::<Heartbeat>(&big, "k", DEFAULT_MAX_DECOMPRESSED), Ok(sample(200)));
        // A stream cut short: an error, and nothing of it stays behind.
        let whole = encode(&sample(3), "k").expect("encode");
        let compressed = &whole[..whole.len() - 64];
        let cut = signed(&compressed[..compressed.len() / 2]);
        assert!(matches!(decoder.decode::<Heartbeat>(&cut, "k", 1 << 20), Err(EnvelopeError::Decompress(_))));
        let bomb = encode(&" ".repeat(1 << 20), "k").expect("encode");
        assert_eq!(decoder.decode::<String>(&bomb, "k", 4096), Err(EnvelopeError::TooLarge { limit: 4096 }));
        assert_eq!(decoder.decode::<Heartbeat>(&whole, "k", 1 << 20), Ok(sample(3)));
        assert_eq!(decoder.decode::<Heartbeat>(&encode(&sample(0), "k").expect("encode"), "k", 1 << 20), Ok(sample(0)));
    }

    proptest! {
        #[test]
        fn round_trip(listeners in 0usize..20, seq in any::<u64>(), key in ".{0,40}") {
            let mut beat = sample(listeners);
            beat.seq = seq;
            let envelope = encode(&beat, &key).expect("encode");
            prop_assert_eq!(decode::<Heartbeat>(&envelope, &key, DEFAULT_MAX_DECOMPRESSED), Ok(beat));
        }

        #[test]
        fn any_flipped_bit_is_rejected(listeners in 0usize..5, bit in any::<prop::sample::Index>()) {
            let envelope = encode(&sample(listeners), "k").expect("encode");
            let mut corrupted = envelope.clone();
            let bit = bit.index(envelope.len() * 8);
            corrupted[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(
                decode::<Heartbeat>(&corrupted, "k", DEFAULT_MAX_DECOMPRESSED),
                Err(EnvelopeError::BadSignature)
            );
        }
    }
}
