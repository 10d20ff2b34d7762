//! The one JSON body of the appliance API (`GET /status`); its other
//! answers are plain text.

use serde::{Deserialize, Serialize};

/// `GET /status`, with the appliance's own names and types (counts as
/// strings, the load as formatted strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplianceStatus {
    pub hostname: String,
    pub network_tx: u64,
    pub network_rx: u64,
    /// 1 when this node is active.
    pub active_node: u8,
    pub haproxy_count: String,
    pub stunnel_count: String,
    /// "OK" while keepalived runs, else "N/A".
    pub fencing_daemon_status: String,
    pub user_cpu: f64,
    pub system_cpu: f64,
    pub software_irq: f64,
    pub load: Vec<String>,
}
