//! Support for tests and development: a throwaway PKI, a harness that runs
//! the real agent binary in a temporary state directory and its own network
//! namespace, an mTLS HTTP client, helpers to run traffic inside a
//! namespace, and throwaway virtual machines for what this kernel lacks.
//! Nothing here is used by the agent itself.

pub mod abandon;
pub mod agent;
pub mod capture;
pub mod client;
pub mod contract;
pub mod gate;
pub mod lease;
pub mod netns;
pub mod pki;
pub mod traffic;
pub mod vm;
pub mod wait;

pub use agent::{Agent, AgentBuilder};
pub use client::{AgentClient, Reply};
pub use pki::{Ca, Identity, Pki};

/// The lowercase hex md5 of `bytes`: what the agent returns as the ETag of
/// a stored file and as a certificate's `md5sum`. Computed here, not with
/// the agent's own code, so tests do not take expected values from the
/// implementation.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
