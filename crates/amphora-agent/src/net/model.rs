//! What the controller asks for when it plugs a network, validated, and the
//! interface definition that results: addresses, routes and policy rules,
//! as upstream's `VIPInterfaceFile` and `PortInterfaceFile` lay them out.
//! Pure functions; the netlink module makes definitions real.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::Topology;

/// Routing table for traffic sourced from VIPs (upstream uses table 1).
pub const VIP_TABLE: u32 = 1;
/// The VIP interface's name inside the namespace.
pub const VIP_INTERFACE: &str = "eth1";
/// A subnet with more host routes than this is refused (Neutron's default
/// limit is 20).
pub const MAX_HOST_ROUTES: usize = 256;
/// More additional VIPs or fixed IPs than this is refused.
pub const MAX_ADDRESSES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlugError {
    #[error("Invalid VIP")]
    Vip(String),
    #[error("Invalid subnet information")]
    Subnet(String),
    #[error("Invalid VRRP Address")]
    Vrrp(String),
    #[error("Invalid MAC address")]
    Mac(String),
    #[error("Invalid network port")]
    Port(String),
}

impl PlugError {
    pub fn details(&self) -> &str {
        match self {
            PlugError::Vip(d) | PlugError::Subnet(d) | PlugError::Vrrp(d) | PlugError::Mac(d) | PlugError::Port(d) => d,
        }
    }
}

/// A MAC address, kept in the lowercase form the kernel reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(raw: &str) -> Result<Self, PlugError> {
        let bad = || PlugError::Mac(format!("{raw:?} is not a MAC address (six hex octets separated by ':')"));
        let mut octets = [0u8; 6];
        let mut parts = raw.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3], o[4], o[5])
    }
}

impl TryFrom<String> for Mac {
    type Error = PlugError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Mac::parse(&value)
    }
}

impl From<Mac> for String {
    fn from(mac: Mac) -> Self {
        mac.to_string()
    }
}

// The request bodies are the wire contract's; this module validates them.
pub use amphora_proto::net::{FixedIpRequest, HostRouteRequest, PlugNetworkRequest, PlugVipRequest};

/// Whether the interface carries VIPs or member traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Vip,
    Member,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressDef {
    pub ip: IpAddr,
    pub prefix: u8,
    /// False when keepalived owns the address (ACTIVE_STANDBY VIPs): recorded
    /// but never added or removed by the agent.
    #[serde(default = "yes")]
    pub managed: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDef {
    pub destination: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// `onlink`: the gateway is reachable on the link even outside the
    /// subnet.
    #[serde(default)]
    pub onlink: bool,
    /// `scope link`: the destination is directly on the link.
    #[serde(default)]
    pub scope_link: bool,
    #[serde(default)]
    pub preferred_source: Option<IpAddr>,
    /// None: the main table.
    #[serde(default)]
    pub table: Option<u32>,
}

/// `from {source} lookup {table}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDef {
    pub source: IpNet,
    pub table: u32,
}

/// One allowed flow of `PUT /1.0/interface/{ip}/rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    pub protocol: Protocol,
    /// None: any source.
    pub cidr: Option<IpNet>,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Vrrp,
}

/// Everything the agent knows about a plugged interface: persisted, and
/// replayed after a reboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceDef {
    pub name: String,
    pub mac: Mac,
    pub role: Role,
    #[serde(default)]
    pub mtu: Option<u32>,
    pub addresses: Vec<AddressDef>,
    pub routes: Vec<RouteDef>,
    pub rules: Vec<RuleDef>,
    /// Addresses to advertise (gratuitous ARP, unsolicited NA).
    #[serde(default)]
    pub advertise: Vec<IpAddr>,
    /// The firewall, once `PUT /1.0/interface/{ip}/rules` set one.
    #[serde(default)]
    pub firewall: Option<Vec<FirewallRule>>,
}

fn ip(raw: &str, what: impl Fn(String) -> PlugError) -> Result<IpAddr, PlugError> {
    raw.trim().parse().map_err(|_| what(format!("{raw:?} is not an IP address")))
}

fn net(raw: &str, what: impl Fn(String) -> PlugError) -> Result<IpNet, PlugError> {
    let parsed: IpNet = raw.trim().parse().map_err(|_| what(format!("{raw:?} is not a CIDR")))?;
    Ok(parsed.trunc())
}

fn full_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn default_route(ip: IpAddr) -> IpNet {
    if ip.is_ipv4() { "0.0.0.0/0".parse().expect("net") } else { "::/0".parse().expect("net") }
}

fn check_mtu(mtu: Option<u32>, what: impl Fn(String) -> PlugError) -> Result<Option<u32>, PlugError> {
    match mtu {
        Some(m) if !(68..=65535).contains(&m) => Err(what(format!("mtu {m} is outside 68..65535"))),
        other => Ok(other),
    }
}

fn host_routes(
    routes: &[HostRouteRequest],
    family_of: IpAddr,
    what: impl Fn(String) -> PlugError + Copy,
) -> Result<Vec<(IpNet, IpAddr)>, PlugError> {
    if routes.len() > MAX_HOST_ROUTES {
        return Err(what(format!("{} host routes; at most {MAX_HOST_ROUTES} are accepted", routes.len())));
    }
    routes
        .iter()
        .map(|r| {
            let destination = net(&r.destination, what)?;
            let nexthop = ip(&r.nexthop, what)?;
            if destination.addr().is_ipv4() != nexthop.is_ipv4() || nexthop.is_ipv4() != family_of.is_ipv4() {
                return Err(what(format!("host route {} via {} mixes address families", r.destination, r.nexthop)));
            }
            Ok((destination, nexthop))
        })
        .collect()
}

/// One VIP, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vip {
    ip: IpAddr,
    subnet: IpNet,
    gateway: Option<IpAddr>,
    host_routes: Vec<(IpNet, IpAddr)>,
}

fn vip(ip_raw: &str, subnet_raw: &str, gateway: Option<&str>, routes: &[HostRouteRequest]) -> Result<Vip, PlugError> {
    let address = ip(ip_raw, PlugError::Vip)?;
    let subnet = net(subnet_raw, PlugError::Subnet)?;
    if !subnet.contains(&address) {
        return Err(PlugError::Subnet(format!("VIP {address} is not in subnet {subnet}")));
    }
    let gateway = match gateway.filter(|g| !g.trim().is_empty()) {
        Some(g) => {
            let g = ip(g, PlugError::Subnet)?;
            if g.is_ipv4() != address.is_ipv4() {
                return Err(PlugError::Subnet(format!("gateway {g} and VIP {address} are of different families")));
            }
            Some(g)
        }
        None => None,
    };
    Ok(Vip { ip: address, subnet, gateway, host_routes: host_routes(routes, address, PlugError::Subnet)? })
}

/// The interface definition for `POST /1.0/plug/vip/{ip}` (and for the VIP
/// port's `vip_net_info`, with its extra fixed IPs).
pub fn vip_interface(
    primary: &str,
    request: &PlugVipRequest,
    fixed_ips: &[FixedIpRequest],
    topology: Topology,
    name: &str,
) -> Result<InterfaceDef, PlugError> {
    let mac = Mac::parse(&request.mac_address)?;
    let mtu = check_mtu(request.mtu, PlugError::Subnet)?;
    if request.additional_vips.len() > MAX_ADDRESSES {
        return Err(PlugError::Vip(format!(
            "{} additional VIPs; at most {MAX_ADDRESSES}",
            request.additional_vips.len()
        )));
    }
    let mut vips = vec![vip(primary, &request.subnet_cidr, request.gateway.as_deref(), &request.host_routes)?];
    for extra in &request.additional_vips {
        vips.push(vip(&extra.ip_address, &extra.subnet_cidr, extra.gateway.as_deref(), &extra.host_routes)?);
    }
    let single = topology == Topology::Single;
    let mut def = InterfaceDef {
        name: name.to_owned(),
        mac,
        role: Role::Vip,
        mtu,
        addresses: Vec::new(),
        routes: Vec::new(),
        rules: Vec::new(),
        advertise: Vec::new(),
        firewall: None,
    };
    if let Some(raw) = request.vrrp_ip.as_deref().filter(|v| !v.trim().is_empty()) {
        let vrrp = ip(raw, PlugError::Vrrp)?;
        let subnet = vips[0].subnet;
        if !subnet.contains(&vrrp) {
            return Err(PlugError::Vrrp(format!("{vrrp} is not in the VIP subnet {subnet}")));
        }
        def.addresses.push(AddressDef { ip: vrrp, prefix: subnet.prefix_len(), managed: true });
    }
    for vip in &vips {
        if let Some(gateway) = vip.gateway {
            let route = RouteDef {
                destination: default_route(vip.ip),
                gateway: Some(gateway),
                onlink: true,
                scope_link: false,
                preferred_source: None,
                table: None,
            };
            if single {
                def.routes.push(RouteDef { table: Some(VIP_TABLE), ..route.clone() });
            }
            def.routes.push(route);
        }
        // keepalived adds and removes VIPs in ACTIVE_STANDBY.
        def.addresses.push(AddressDef { ip: vip.ip, prefix: full_prefix(vip.ip), managed: single });
        def.routes.push(RouteDef {
            destination: vip.subnet,
            gateway: None,
            onlink: false,
            scope_link: true,
            preferred_source: None,
            table: None,
        });
        if single {
            def.routes.push(RouteDef {
                destination: vip.subnet,
                gateway: None,
                onlink: false,
                scope_link: true,
                preferred_source: Some(vip.ip),
                table: Some(VIP_TABLE),
            });
            def.rules
                .push(RuleDef { source: IpNet::new(vip.ip, full_prefix(vip.ip)).expect("prefix"), table: VIP_TABLE });
            def.advertise.push(vip.ip);
        }
        for (destination, nexthop) in &vip.host_routes {
            for table in [None, Some(VIP_TABLE)] {
                def.routes.push(RouteDef {
                    destination: *destination,
                    gateway: Some(*nexthop),
                    onlink: true,
                    scope_link: false,
                    preferred_source: None,
                    table,
                });
            }
        }
    }
    let gateways = if single { &[None, Some(VIP_TABLE)][..] } else { &[None][..] };
    add_fixed_ips(&mut def, fixed_ips, gateways)?;
    Ok(def)
}

/// Adds fixed IPs, their host routes, and default routes via their gateway
/// in each of `gateway_tables` (none for member networks, as upstream).
fn add_fixed_ips(
    def: &mut InterfaceDef,
    fixed_ips: &[FixedIpRequest],
    gateway_tables: &[Option<u32>],
) -> Result<(), PlugError> {
    if fixed_ips.len() > MAX_ADDRESSES {
        return Err(PlugError::Port(format!("{} fixed IPs; at most {MAX_ADDRESSES}", fixed_ips.len())));
    }
    for fixed in fixed_ips {
        let address = ip(&fixed.ip_address, PlugError::Port)?;
        let prefix = match fixed.subnet_cidr.as_deref() {
            Some(cidr) => {
                let subnet = net(cidr, PlugError::Port)?;
                if !subnet.contains(&address) {
                    return Err(PlugError::Port(format!("{address} is not in subnet {subnet}")));
                }
                subnet.prefix_len()
            }
            None => full_prefix(address),
        };
        def.addresses.push(AddressDef { ip: address, prefix, managed: true });
        if !gateway_tables.is_empty()
            && let Some(gateway) = fixed.gateway.as_deref().filter(|g| !g.trim().is_empty())
        {
            let gateway = ip(gateway, PlugError::Port)?;
            if gateway.is_ipv4() != address.is_ipv4() {
                return Err(PlugError::Port(format!("gateway {gateway} and {address} are of different families")));
            }
            for table in gateway_tables.iter().copied() {
                def.routes.push(RouteDef {
                    destination: default_route(address),
                    gateway: Some(gateway),
                    onlink: true,
                    scope_link: false,
                    preferred_source: None,
                    table,
                });
            }
        }
        for (destination, nexthop) in host_routes(&fixed.host_routes, address, PlugError::Port)? {
            def.routes.push(RouteDef {
                destination,
                gateway: Some(nexthop),
                onlink: true,
                scope_link: false,
                preferred_source: None,
                table: None,
            });
        }
    }
    Ok(())
}

/// The interface definition for `POST /1.0/plug/network` (a member network).
pub fn member_interface(request: &PlugNetworkRequest, name: &str) -> Result<InterfaceDef, PlugError> {
    let mac = Mac::parse(&request.mac_address)?;
    let mtu = check_mtu(request.mtu, PlugError::Port)?;
    let mut def = InterfaceDef {
        name: name.to_owned(),
        mac,
        role: Role::Member,
        mtu,
        addresses: Vec::new(),
        routes: Vec::new(),
        rules: Vec::new(),
        advertise: Vec::new(),
        firewall: None,
    };
    let fixed_ips = request.fixed_ips.as_deref().unwrap_or(&[]);
    add_fixed_ips(&mut def, fixed_ips, &[])?;
    def.advertise = def.addresses.iter().map(|a| a.ip).collect();
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> PlugVipRequest {
        serde_json::from_str(body).expect("request")
    }

    fn net(raw: &str) -> IpNet {
        raw.parse().expect("net")
    }

    fn ipa(raw: &str) -> IpAddr {
        raw.parse().expect("ip")
    }

    #[test]
    fn macs() {
        assert_eq!(Mac::parse("78:31:C1:ce:0b:3c").expect("mac").to_string(), "78:31:c1:ce:0b:3c");
        for bad in
            ["", "78:31:c1:ce:0b", "78:31:c1:ce:0b:3c:00", "78-31-c1-ce-0b-3c", "zz:31:c1:ce:0b:3c", "7:31:c1:ce:0b:3c"]
        {
            assert!(matches!(Mac::parse(bad), Err(PlugError::Mac(_))), "{bad}");
        }
    }

    #[test]
    fn a_single_topology_vip_as_upstream_lays_it_out() {
        let body = r#"{"subnet_cidr": "203.0.113.0/24", "gateway": "203.0.113.1", "mac_address": "78:31:c1:ce:0b:3c",
                       "vrrp_ip": "203.0.113.5", "mtu": 1450,
                       "host_routes": [{"destination": "198.51.100.0/24", "nexthop": "203.0.113.254"}]}"#;
        let def = vip_interface("203.0.113.2", &request(body), &[], Topology::Single, "eth1").expect("valid");
        assert_eq!(def.mtu, Some(1450));
        assert_eq!(
            def.addresses,
            vec![
                AddressDef { ip: ipa("203.0.113.5"), prefix: 24, managed: true },
                AddressDef { ip: ipa("203.0.113.2"), prefix: 32, managed: true },
            ]
        );
        let route =
            |dst: &str, gw: Option<&str>, onlink: bool, link: bool, src: Option<&str>, table: Option<u32>| RouteDef {
                destination: net(dst),
                gateway: gw.map(ipa),
                onlink,
                scope_link: link,
                preferred_source: src.map(ipa),
                table,
            };
        assert_eq!(
            def.routes,
            vec![
                route("0.0.0.0/0", Some("203.0.113.1"), true, false, None, Some(1)),
                route("0.0.0.0/0", Some("203.0.113.1"), true, false, None, None),
                route("203.0.113.0/24", None, false, true, None, None),
                route("203.0.113.0/24", None, false, true, Some("203.0.113.2"), Some(1)),
                route("198.51.100.0/24", Some("203.0.113.254"), true, false, None, None),
                route("198.51.100.0/24", Some("203.0.113.254"), true, false, None, Some(1)),
            ]
        );
        assert_eq!(def.rules, vec![RuleDef { source: net("203.0.113.2/32"), table: 1 }]);
        assert_eq!(def.advertise, vec![ipa("203.0.113.2")]);
    }

    #[test]
    fn active_standby_leaves_vips_and_policy_routing_to_keepalived() {
        let body = r#"{"subnet_cidr": "fd00::/64", "gateway": "fd00::1", "mac_address": "78:31:c1:ce:0b:3c", "vrrp_ip": "fd00::5"}"#;
        let def = vip_interface("fd00::2", &request(body), &[], Topology::ActiveStandby, "eth1").expect("valid");
        assert_eq!(
            def.addresses,
            vec![
                AddressDef { ip: ipa("fd00::5"), prefix: 64, managed: true },
                AddressDef { ip: ipa("fd00::2"), prefix: 128, managed: false },
            ]
        );
        assert!(def.rules.is_empty());
        assert!(def.routes.iter().all(|r| r.table.is_none()));
        assert!(def.advertise.is_empty());
    }

    #[test]
    fn hostile_vip_requests_name_what_is_wrong() {
        let base = r#""mac_address": "78:31:c1:ce:0b:3c""#;
        for (ip, body, expected) in [
            ("203.0.113.2.1", format!(r#"{{"subnet_cidr": "203.0.113.0/24", {base}}}"#), "Invalid VIP"),
            ("fd00::2", format!(r#"{{"subnet_cidr": "203.0.113.0/24", {base}}}"#), "Invalid subnet information"),
            ("203.0.113.2", format!(r#"{{"subnet_cidr": "198.51.100.0/24", {base}}}"#), "Invalid subnet information"),
            ("203.0.113.2", format!(r#"{{"subnet_cidr": "nonsense", {base}}}"#), "Invalid subnet information"),
            (
                "203.0.113.2",
                format!(r#"{{"subnet_cidr": "203.0.113.0/24", "gateway": "fd00::1", {base}}}"#),
                "Invalid subnet information",
            ),
            (
                "203.0.113.2",
                format!(r#"{{"subnet_cidr": "203.0.113.0/24", "vrrp_ip": "10.0.0.1", {base}}}"#),
                "Invalid VRRP Address",
            ),
            (
                "203.0.113.2",
                format!(r#"{{"subnet_cidr": "203.0.113.0/24", "vrrp_ip": "x", {base}}}"#),
                "Invalid VRRP Address",
            ),
            (
                "203.0.113.2",
                r#"{"subnet_cidr": "203.0.113.0/24", "mac_address": "78:31"}"#.to_owned(),
                "Invalid MAC address",
            ),
            (
                "203.0.113.2",
                format!(r#"{{"subnet_cidr": "203.0.113.0/24", "mtu": 10, {base}}}"#),
                "Invalid subnet information",
            ),
        ] {
            let err = vip_interface(ip, &request(&body), &[], Topology::Single, "eth1").expect_err(&body);
            assert_eq!(err.to_string(), expected, "{body}: {}", err.details());
            assert!(!err.details().is_empty());
        }
        let routes: Vec<String> = (0..=MAX_HOST_ROUTES)
            .map(|i| format!(r#"{{"destination": "10.{}.{}.0/24", "nexthop": "203.0.113.1"}}"#, i / 256, i % 256))
            .collect();
        let body = format!(r#"{{"subnet_cidr": "203.0.113.0/24", {base}, "host_routes": [{}]}}"#, routes.join(","));
        let err = vip_interface("203.0.113.2", &request(&body), &[], Topology::Single, "eth1").expect_err("too many");
        assert!(err.details().contains("host routes"), "{}", err.details());
    }

    #[test]
    fn member_networks() {
        let request: PlugNetworkRequest = serde_json::from_str(
            r#"{"mac_address": "78:31:c1:ce:0b:3d", "mtu": 9000,
                "fixed_ips": [{"ip_address": "10.1.0.5", "subnet_cidr": "10.1.0.0/24", "gateway": "10.1.0.1",
                               "host_routes": [{"destination": "10.2.0.0/16", "nexthop": "10.1.0.254"}]}]}"#,
        )
        .expect("request");
        let def = member_interface(&request, "eth2").expect("valid");
        assert_eq!(def.role, Role::Member);
        assert_eq!(def.addresses, vec![AddressDef { ip: ipa("10.1.0.5"), prefix: 24, managed: true }]);
        // Members get host routes but no default route, as upstream.
        assert_eq!(def.routes.len(), 1);
        assert_eq!(def.routes[0].destination, net("10.2.0.0/16"));
        let bad: PlugNetworkRequest = serde_json::from_str(
            r#"{"mac_address": "78:31:c1:ce:0b:3d", "fixed_ips": [{"ip_address": "10.1.0.999"}]}"#,
        )
        .expect("request");
        assert_eq!(member_interface(&bad, "eth2").expect_err("bad").to_string(), "Invalid network port");
    }
}
