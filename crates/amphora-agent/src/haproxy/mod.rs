//! haproxy: configuration checks, and one master-worker process per load
//! balancer, started, reloaded hitlessly and stopped without systemd.

pub mod cfg;
pub mod cli;
pub mod process;
pub mod stats;

use base64::Engine;
use sha1::{Digest, Sha1};

pub use process::{Haproxy, HaproxyError, Instance};

/// haproxy's local peer name for an amphora, computed as upstream does so
/// that `peers` sections rendered by the controller match: base64 (with `_`
/// and `-` as the two extra characters) of the SHA-1 of the amphora id,
/// without padding, and a leading '-' replaced by 'x' because haproxy takes
/// it for an option.
pub fn peer_name(amphora_id: &str) -> String {
    let digest = Sha1::digest(amphora_id.as_bytes());
    let alphabet = base64::alphabet::Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
        .expect("a valid base64 alphabet");
    let engine = base64::engine::GeneralPurpose::new(
        &alphabet,
        base64::engine::GeneralPurposeConfig::new().with_encode_padding(false),
    );
    let encoded = engine.encode(digest);
    match encoded.strip_prefix('-') {
        Some(rest) => format!("x{rest}"),
        None => encoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed with upstream's
    /// `octavia.common.utils.base64_sha1_string(id).rstrip('=')`.
    #[test]
    fn peer_name_matches_upstream() {
        for (amphora_id, expected) in [
            ("6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce", "4KWSjCNhb1B84rv60BJd9a5qRtE"),
            ("amp-1", "nb4_5hKf-EYlJ2pGnOD7IGY2jng"),
            ("amp-8", "x91XrNQjEyuJfD7eN-yPxgxGGzc"),
        ] {
            assert_eq!(peer_name(amphora_id), expected, "{amphora_id}");
        }
    }
}
