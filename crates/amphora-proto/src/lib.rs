//! The wire contract of the amphora agent REST API, both ways: every request
//! and response body of the 1.0 API (and of the 0.1 and appliance APIs where
//! they differ), and the URL paths ([`paths`]).
//!
//! The agent builds its answers from these types and parses requests into
//! them; clients do the reverse, so the two cannot disagree on a field name.
//! Field names and spellings follow the specification and, where it is
//! silent, upstream Octavia's agent. Statuses are enums that still read a
//! value they do not know (`Other`), so a newer agent does not break an
//! older reader. Validation of requests is the agent's job, not this
//! crate's: request bodies carry strings as sent.

use std::collections::BTreeMap;

mod wire_enum;

pub mod appliance;
pub mod heartbeat;
pub mod net;
pub mod paths;
pub mod v0_1;

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

/// The API version this crate describes.
pub const API_VERSION: &str = "1.0";

/// The body of every error response, and of most success responses:
/// `{"message": "OK", "details": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

wire_enum! {
    /// An API surface the agent serves (configuration `api_versions`).
    pub enum ApiVersion {
        V1_0 = "1.0",
        V0_1 = "0.1",
        Appliance = "appliance",
    }
}

/// A start, stop or reload of a load balancer's haproxy
/// (`PUT /1.0/loadbalancer/{lb}/{action}`) or of keepalived
/// (`PUT /1.0/vrrp/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Start,
    Stop,
    Reload,
}

impl Action {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reload => "reload",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /`: version discovery, the part upstream's controller reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionDiscovery {
    pub api_version: ApiVersion,
}

/// `GET /`: every API version served, plus upstream's field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Versions {
    /// What upstream's controller reads: "1.0" when served.
    pub api_version: ApiVersion,
    /// Absent from upstream's agent, which serves one version.
    #[serde(default)]
    pub versions: Vec<ApiVersion>,
}

/// `GET /info`, `GET /1.0/info` and `GET /v0.1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Info {
    pub hostname: String,
    pub uuid: String,
    /// Installed haproxy package version, e.g. `2.6.12-1+deb12u3`. The
    /// controller splits it on '.' to learn the major and minor version.
    pub haproxy_version: Option<String>,
    pub api_version: ApiVersion,
    pub keepalived_version: Option<String>,
    pub ipvsadm_version: Option<String>,
}

wire_enum! {
    /// Operational status of one listener in `GET /1.0/listeners`.
    pub enum ListenerState {
        Active = "ACTIVE",
        Stopped = "STOPPED",
        Error = "ERROR",
    }
}

wire_enum! {
    /// A listener's protocol as the agent reads it from the haproxy
    /// configuration.
    pub enum ListenerProtocol {
        Tcp = "TCP",
        Http = "HTTP",
        Https = "HTTPS",
        TerminatedHttps = "TERMINATED_HTTPS",
        Udp = "UDP",
        Sctp = "SCTP",
        Prometheus = "PROMETHEUS",
    }
}

wire_enum! {
    /// A pool's status in a listener's detailed status.
    pub enum PoolState {
        Up = "UP",
        Down = "DOWN",
        /// Up, with members down.
        Degraded = "DEGRADED",
    }
}

wire_enum! {
    /// A member's status in a listener's detailed status (haproxy's
    /// transitional "UP 1/3" and unchecked members count as UP, MAINT as
    /// DOWN).
    pub enum MemberState {
        Up = "UP",
        Down = "DOWN",
        Drain = "DRAIN",
        NoLb = "NOLB",
    }
}

/// One entry of `GET /1.0/listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListenerStatus {
    pub status: ListenerState,
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: ListenerProtocol,
}

/// One pool in a listener's detailed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolStatus {
    pub uuid: String,
    pub status: PoolState,
    /// One single-entry object per member: `[{"<member>": "UP"}, ...]`.
    pub members: Vec<BTreeMap<String, MemberState>>,
}

/// `GET /1.0/listeners/{id}` and `GET /v0.1/listeners/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListenerDetail {
    pub status: ListenerState,
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: ListenerProtocol,
    pub pools: Vec<PoolStatus>,
}

/// CPU usage in percent over the sampling window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cpu {
    pub total: f64,
    pub user: f64,
    pub system: f64,
    pub soft_irq: f64,
}

/// Memory figures in kilobytes, as `/proc/meminfo` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disk {
    pub used: u64,
    pub available: u64,
}

/// Cumulative byte counters of one interface in the amphora namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterfaceCounters {
    pub network_tx: u64,
    pub network_rx: u64,
}

wire_enum! {
    /// The amphora topology as the 1.0 API spells it (upstream's
    /// `constants.TOPOLOGY_*`).
    pub enum Topology {
        Single = "SINGLE",
        ActiveStandby = "ACTIVE_STANDBY",
    }
}

wire_enum! {
    /// Whether a topology transition is under way (0.1 API).
    pub enum TopologyStatus {
        Ok = "OK",
        Change = "TOPOLOGY-CHANGE",
    }
}

wire_enum! {
    /// The VRRP role keepalived has given this amphora.
    pub enum VrrpRole {
        Master = "MASTER",
        Backup = "BACKUP",
    }
}

/// `GET /1.0/details`; `GET /v0.1/details` is `Details<v0_1::TopologyKind>`,
/// the 0.1 API spelling topologies its own way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Details<T = Topology> {
    #[serde(flatten)]
    pub info: Info,
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
    pub topology: T,
    /// MASTER or BACKUP when keepalived runs VRRP here, else null.
    #[serde(default)]
    pub vrrp_role: Option<VrrpRole>,
    pub topology_status: TopologyStatus,
    pub listeners: Vec<String>,
    /// One single-entry object per package: `[{"haproxy": "2.6.12"}, ...]`.
    pub packages: Vec<BTreeMap<String, String>>,
    /// Whether load balancer certificates (private keys) are kept on a
    /// memory file system, as the specification recommends.
    #[serde(default)]
    pub certs_in_memory: bool,
}

impl<T> Details<T> {
    /// The same details with the topology spelled another way (the 0.1
    /// API's).
    pub fn with_topology<U>(self, topology: U) -> Details<U> {
        Details {
            info: self.info,
            network_tx: self.network_tx,
            network_rx: self.network_rx,
            networks: self.networks,
            active: self.active,
            haproxy_count: self.haproxy_count,
            lvs_listener_process_count: self.lvs_listener_process_count,
            cpu_count: self.cpu_count,
            cpu: self.cpu,
            memory: self.memory,
            disk: self.disk,
            load: self.load,
            active_tuned_profiles: self.active_tuned_profiles,
            topology,
            vrrp_role: self.vrrp_role,
            topology_status: self.topology_status,
            listeners: self.listeners,
            packages: self.packages,
            certs_in_memory: self.certs_in_memory,
        }
    }
}

/// `GET /1.0/loadbalancer/{lb}/certificates/{file}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
        let status = ListenerStatus {
            status: ListenerState::Active,
            uuid: "abc".into(),
            kind: ListenerProtocol::TerminatedHttps,
        };
        let json = serde_json::to_string(&status).expect("serialise");
        assert_eq!(json, r#"{"status":"ACTIVE","uuid":"abc","type":"TERMINATED_HTTPS"}"#);
    }

    #[test]
    fn statuses_read_values_they_do_not_know_and_write_them_back() {
        let read: PoolStatus =
            serde_json::from_str(r#"{"uuid":"p","status":"HALF_UP","members":[{"m1":"UP"},{"m2":"SOFT_STOP"}]}"#)
                .expect("unknown values are read");
        assert_eq!(read.status, PoolState::Other("HALF_UP".into()));
        assert_eq!(read.members[0]["m1"], MemberState::Up);
        assert_eq!(read.members[1]["m2"], "SOFT_STOP");
        assert!(!read.status.is_known());
        let written = serde_json::to_string(&read).expect("serialise");
        assert_eq!(written, r#"{"uuid":"p","status":"HALF_UP","members":[{"m1":"UP"},{"m2":"SOFT_STOP"}]}"#);
        for known in ListenerState::KNOWN {
            assert_eq!(&ListenerState::from(known.as_str()), known);
        }
        assert_eq!(ApiVersion::from("1.0".to_owned()), ApiVersion::V1_0);
    }

    fn details_json(topology: &str) -> serde_json::Value {
        serde_json::json!({
            "hostname": "amp", "uuid": "u", "haproxy_version": "2.6.12", "api_version": "1.0",
            "keepalived_version": null, "ipvsadm_version": null,
            "network_tx": 1, "network_rx": 2, "networks": {"eth1": {"network_tx": 3, "network_rx": 4}},
            "active": true, "haproxy_count": 1, "lvs_listener_process_count": 0, "cpu_count": 2,
            "cpu": {"total": 1.5, "user": 1.0, "system": 0.25, "soft_irq": 0.25},
            "memory": {"total": 1, "free": 2, "available": 3, "buffers": 4, "cached": 5, "swap_used": 6,
                       "shared": 7, "slab": 8, "committed_as": 9},
            "disk": {"used": 1, "available": 2}, "load": [0.5, 0.25, 0.0], "active_tuned_profiles": "",
            "topology": topology, "vrrp_role": "MASTER", "topology_status": "OK",
            "listeners": ["l1"], "packages": [{"haproxy": "2.6.12"}], "certs_in_memory": false
        })
    }

    #[test]
    fn details_carry_info_flattened_and_each_api_spells_its_topology() {
        let value = details_json("ACTIVE_STANDBY");
        let details: Details = serde_json::from_value(value.clone()).expect("1.0 details");
        assert_eq!(details.info.uuid, "u");
        assert_eq!(details.topology, Topology::ActiveStandby);
        assert_eq!(details.vrrp_role, Some(VrrpRole::Master));
        assert_eq!(serde_json::to_value(&details).expect("serialise"), value);

        let value = details_json("ACTIVE-STANDBY");
        let details: Details<v0_1::TopologyKind> = serde_json::from_value(value.clone()).expect("0.1 details");
        assert_eq!(details.topology, v0_1::TopologyKind::ActiveStandby);
        assert_eq!(serde_json::to_value(&details).expect("serialise"), value);
    }
}
