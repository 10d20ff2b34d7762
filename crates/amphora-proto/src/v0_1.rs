//! Bodies of the 0.1 API that differ from 1.0: the amphora topology
//! (`GET`/`POST /v0.1/topology`) and its own spelling of topologies.
//! Everything else of 0.1 uses the 1.0 types.

use serde::{Deserialize, Serialize};

use crate::TopologyStatus;
use crate::wire_enum::wire_enum;

wire_enum! {
    /// The amphora topology as the 0.1 specification spells it.
    pub enum TopologyKind {
        Single = "SINGLE",
        ActiveStandby = "ACTIVE-STANDBY",
        ActiveActive = "ACTIVE-ACTIVE",
    }
}

wire_enum! {
    /// This amphora's role in its topology.
    pub enum Role {
        Active = "ACTIVE",
        Standby = "STANDBY",
    }
}

/// The body of `POST /v0.1/topology`. Strings as sent: the agent accepts
/// both spellings of a topology and names every problem it finds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopologyRequest {
    pub topology: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `GET /v0.1/topology`. The secret is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopologyResponse {
    pub hostname: String,
    pub uuid: String,
    pub topology: TopologyKind,
    pub role: Role,
    /// Empty when there is none.
    pub ha_ip: String,
    pub topology_status: TopologyStatus,
}
