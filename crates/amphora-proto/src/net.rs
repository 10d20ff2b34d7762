//! Network bodies: plugging the VIP and member networks
//! (`POST /1.0/plug/vip/{ip}`, `POST /1.0/plug/network`), the firewall rules
//! of an interface (`PUT /1.0/interface/{ip}/rules`) and the interface
//! lookup (`GET /1.0/interface/{ip}`).
//!
//! Addresses, CIDRs and MACs are strings as the controller sends them; the
//! agent validates them and names what is wrong.

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

/// `{"destination": "10.0.0.0/8", "nexthop": "192.0.2.1"}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRouteRequest {
    pub destination: String,
    pub nexthop: String,
}

/// An additional VIP of `POST /1.0/plug/vip/{ip}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdditionalVipRequest {
    pub ip_address: String,
    pub subnet_cidr: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub host_routes: Vec<HostRouteRequest>,
}

/// The body of `POST /1.0/plug/vip/{ip}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlugVipRequest {
    pub subnet_cidr: String,
    #[serde(default)]
    pub gateway: Option<String>,
    pub mac_address: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub vrrp_ip: Option<String>,
    #[serde(default)]
    pub host_routes: Vec<HostRouteRequest>,
    #[serde(default)]
    pub additional_vips: Vec<AdditionalVipRequest>,
}

/// A fixed IP of `POST /1.0/plug/network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FixedIpRequest {
    pub ip_address: String,
    #[serde(default)]
    pub subnet_cidr: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub host_routes: Vec<HostRouteRequest>,
}

/// `vip_net_info`: plugging a further subnet on the VIP port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VipNetInfo {
    pub vip: String,
    #[serde(flatten)]
    pub vip_request: PlugVipRequest,
}

/// The body of `POST /1.0/plug/network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlugNetworkRequest {
    pub mac_address: String,
    #[serde(default)]
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_net_info: Option<VipNetInfo>,
}

wire_enum! {
    /// The protocol of a firewall rule.
    pub enum RuleProtocol {
        Tcp = "TCP",
        Udp = "UDP",
        Sctp = "SCTP",
        Vrrp = "VRRP",
    }
}

/// One entry of `PUT /1.0/interface/{ip}/rules`: allow `protocol` to
/// `port` from `cidr` (null: from anywhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    pub protocol: RuleProtocol,
    pub cidr: Option<String>,
    /// Any JSON number as sent; the agent refuses what is not a port.
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub port: serde_json::Number,
}

impl RuleRequest {
    pub fn new(protocol: RuleProtocol, cidr: Option<&str>, port: u16) -> Self {
        Self { protocol, cidr: cidr.map(str::to_owned), port: port.into() }
    }
}

/// `GET /1.0/interface/{ip}`: `{"message": "OK", "interface": "eth1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterfaceLookup {
    pub message: String,
    pub interface: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_plug_bodies_read_and_write_back() {
        // As upstream's driver builds them (`_build_net_info`, `post_network_plug`).
        let vip = serde_json::json!({
            "subnet_cidr": "203.0.113.0/24", "gateway": null, "mac_address": "78:31:c1:ce:0b:3c",
            "vrrp_ip": "203.0.113.5", "mtu": 1450,
            "host_routes": [{"destination": "198.51.100.0/24", "nexthop": "203.0.113.254"}],
            "additional_vips": [{"ip_address": "2001:db8::5", "subnet_cidr": "2001:db8::/64",
                                 "gateway": "2001:db8::1", "host_routes": []}]
        });
        let read: PlugVipRequest = serde_json::from_value(vip.clone()).expect("plug vip");
        assert_eq!(read.additional_vips[0].gateway.as_deref(), Some("2001:db8::1"));
        assert_eq!(serde_json::to_value(&read).expect("serialise"), vip);

        let mut net_info = vip.clone();
        net_info["vip"] = "203.0.113.2".into();
        let network = serde_json::json!({
            "mac_address": "78:31:c1:ce:0b:3d", "mtu": 9000,
            "fixed_ips": [{"ip_address": "10.1.0.5", "subnet_cidr": "10.1.0.0/24", "gateway": null,
                           "host_routes": []}],
            "vip_net_info": net_info,
        });
        let read: PlugNetworkRequest = serde_json::from_value(network.clone()).expect("plug network");
        assert_eq!(read.vip_net_info.as_ref().map(|v| v.vip.as_str()), Some("203.0.113.2"));
        assert_eq!(serde_json::to_value(&read).expect("serialise"), network);
    }

    #[test]
    fn rules_refuse_unknown_fields_and_keep_odd_values_for_the_agent_to_judge() {
        let rules: Vec<RuleRequest> =
            serde_json::from_str(r#"[{"protocol": "TCP", "cidr": null, "port": 80}, {"protocol": "ICMP", "cidr": "10.0.0.0/8", "port": 1.5}]"#)
                .expect("rules");
        assert_eq!(rules[0], RuleRequest::new(RuleProtocol::Tcp, None, 80));
        assert_eq!(rules[1].protocol, RuleProtocol::Other("ICMP".into()));
        assert!(rules[1].port.as_u64().is_none());
        let unknown = serde_json::from_str::<RuleRequest>(r#"{"protocol": "TCP", "cidr": null, "port": 80, "x": 1}"#);
        assert!(unknown.is_err());
    }
}
