//! Wire types of the amphora agent REST API (version 1.0).
//!
//! The agent serialises these and clients deserialise them, so the two can
//! never disagree on field names. Field names and spellings follow the
//! specification and, where it is silent, upstream Octavia's agent.

use std::collections::BTreeMap;

pub mod heartbeat;

use serde::{Deserialize, Serialize};

/// The API version this crate describes.
pub const API_VERSION: &str = "1.0";

/// The body of every error response, and of most success responses:
/// `{"message": "OK", "details": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl Message {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), details: None }
    }

    pub fn with_details(message: impl Into<String>, details: impl Into<String>) -> Self {
        Self { message: message.into(), details: Some(details.into()) }
    }

    pub fn ok() -> Self {
        Self::new("OK")
    }
}

/// `GET /`: version discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDiscovery {
    pub api_version: String,
}

/// `GET /info` and `GET /1.0/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub hostname: String,
    pub uuid: String,
    /// Installed haproxy package version, e.g. `2.6.12-1+deb12u3`. The
    /// controller splits it on '.' to learn the major and minor version.
    pub haproxy_version: Option<String>,
    pub api_version: String,
    pub keepalived_version: Option<String>,
    pub ipvsadm_version: Option<String>,
}

/// Operational status of one listener in `GET /1.0/listeners`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerState {
    Active,
    Stopped,
    Error,
}

/// One entry of `GET /1.0/listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub status: ListenerState,
    pub uuid: String,
    /// HTTP, TCP, TERMINATED_HTTPS, ...
    #[serde(rename = "type")]
    pub kind: String,
}

/// One pool in a listener's detailed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub uuid: String,
    /// UP, DOWN or DEGRADED (up, with members down).
    pub status: String,
    /// One single-entry object per member: `[{"<member>": "UP"}, ...]`.
    pub members: Vec<BTreeMap<String, String>>,
}

/// `GET /1.0/listeners/{id}` and `GET /v0.1/listeners/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerDetail {
    pub status: ListenerState,
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub pools: Vec<PoolStatus>,
}

/// `GET /`: every API version served, plus upstream's field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// What upstream's controller reads: "1.0" when served.
    pub api_version: String,
    pub versions: Vec<String>,
}

/// CPU usage in percent over the sampling window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub total: f64,
    pub user: f64,
    pub system: f64,
    pub soft_irq: f64,
}

/// Memory figures in kilobytes, as `/proc/meminfo` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub swap_used: u64,
    pub shared: u64,
    pub slab: u64,
    pub committed_as: u64,
}

/// Root filesystem usage in kilobytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub used: u64,
    pub available: u64,
}

/// Cumulative byte counters of one interface in the amphora namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    pub network_tx: u64,
    pub network_rx: u64,
}

/// `GET /1.0/details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Details {
    pub hostname: String,
    pub uuid: String,
    pub haproxy_version: Option<String>,
    pub api_version: String,
    pub keepalived_version: Option<String>,
    pub ipvsadm_version: Option<String>,
    /// Outbound bytes per second over the sampling window, all interfaces
    /// of the amphora namespace.
    pub network_tx: u64,
    /// Inbound bytes per second over the sampling window.
    pub network_rx: u64,
    pub networks: BTreeMap<String, InterfaceCounters>,
    pub active: bool,
    pub haproxy_count: u32,
    pub lvs_listener_process_count: u32,
    pub cpu_count: u32,
    pub cpu: Cpu,
    pub memory: Memory,
    pub disk: Disk,
    pub load: [f64; 3],
    pub active_tuned_profiles: String,
    pub topology: String,
    /// MASTER or BACKUP when keepalived runs VRRP here, else null.
    #[serde(default)]
    pub vrrp_role: Option<String>,
    pub topology_status: String,
    pub listeners: Vec<String>,
    /// One single-entry object per package: `[{"haproxy": "2.6.12"}, ...]`.
    pub packages: Vec<BTreeMap<String, String>>,
    /// Whether load balancer certificates (private keys) are kept on a
    /// memory file system, as the specification recommends.
    #[serde(default)]
    pub certs_in_memory: bool,
}

/// `GET /1.0/loadbalancer/{lb}/certificates/{file}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateMd5 {
    pub md5sum: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_without_details_omits_the_field() {
        let json = serde_json::to_string(&Message::ok()).expect("serialise");
        assert_eq!(json, r#"{"message":"OK"}"#);
    }

    #[test]
    fn listener_status_uses_upstream_field_names() {
        let status =
            ListenerStatus { status: ListenerState::Active, uuid: "abc".into(), kind: "TERMINATED_HTTPS".into() };
        let json = serde_json::to_string(&status).expect("serialise");
        assert_eq!(json, r#"{"status":"ACTIVE","uuid":"abc","type":"TERMINATED_HTTPS"}"#);
    }
}
