//! Identifiers that arrive in request paths. A load balancer id becomes a
//! directory name under the state directory, so only plain names are
//! accepted: nothing that could climb out of the directory, hide, or collide
//! with the agent's own entries there.

use std::fmt;

use crate::layout::RESERVED_NAMES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid identifier: use 1 to 64 letters, digits, '-' or '_'")]
pub struct InvalidId(pub String);

/// A load balancer (or listener) id: a UUID in practice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbId(String);

impl LbId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let valid = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && raw.as_bytes()[0].is_ascii_alphanumeric()
            && !RESERVED_NAMES.contains(&raw);
        if valid { Ok(Self(raw.to_owned())) } else { Err(InvalidId(raw.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amphora id from a request path. It never names a file; it only seeds
/// haproxy's peer name, so any printable token is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmphoraId(String);

impl AmphoraId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let valid = (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if valid { Ok(Self(raw.to_owned())) } else { Err(InvalidId(raw.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids() {
        let id = LbId::parse("85e2111b-29c4-44be-94f3-e72045805801").expect("uuid");
        assert_eq!(id.as_str(), "85e2111b-29c4-44be-94f3-e72045805801");
    }

    #[test]
    fn rejects_anything_that_is_not_a_plain_name() {
        for raw in [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "a\0b",
            "a\nb",
            "vrrp",
            "lvs",
            "certs",
            "interfaces",
            "é",
            &"x".repeat(65),
        ] {
            assert_eq!(LbId::parse(raw), Err(InvalidId(raw.to_owned())), "{raw:?}");
        }
    }

    #[test]
    fn amphora_ids_are_printable_tokens() {
        assert!(AmphoraId::parse("6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce").is_ok());
        assert!(AmphoraId::parse("amp 1").is_err());
        assert!(AmphoraId::parse("").is_err());
    }
}
