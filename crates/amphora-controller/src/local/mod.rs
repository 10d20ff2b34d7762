//! Local compute and network drivers: a whole Octavia system on one Linux
//! host, with network namespaces standing in for Nova's VMs and Linux
//! bridges for Neutron's networks.
//!
//! - `fabric.rs`: the fabric namespace with one bridge per configured
//!   network, the controller's own veth on the management network (upstream's
//!   `o-hm0`) and, optionally, one on the VIP network; `teardown`.
//! - `network.rs`: ports (addresses and MACs) allocated in the database
//!   (`local_port`), and the `NetworkDriver`.
//! - `compute.rs`: an amphora is a namespace running the real
//!   `amphora-agent`, supervised by the controller; the `ComputeDriver`.
//!
//! Every name this module gives a namespace or a host interface starts with
//! `[local_network] name_prefix`, so controllers (and tests) with distinct
//! prefixes never touch each other's objects.

pub mod compute;
pub mod fabric;
pub mod network;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use oslo_ini::{ConfigError, Layers};

pub use compute::LocalCompute;
pub use fabric::{Fabric, teardown};
pub use network::LocalNetwork;

/// The options of `[local_network]` (all ours: upstream has nothing like it).
pub const NETWORK_OPTIONS: &[&str] = &[
    "name_prefix",
    "fabric_namespace",
    "mtu",
    "host_vip_access",
    "management_network_id",
    "management_subnet_id",
    "management_cidr",
    "management_gateway",
    "vip_network_id",
    "vip_subnet_id",
    "vip_cidr",
    "vip_gateway",
    "vip_ipv6_subnet_id",
    "vip_ipv6_cidr",
    "vip_ipv6_gateway",
    "member_network_id",
    "member_subnet_id",
    "member_cidr",
    "member_gateway",
];

/// The options of `[local_compute]` (ours too).
pub const COMPUTE_OPTIONS: &[&str] = &["state_dir", "agent_path", "haproxy_cmd", "agent_bind_port", "boot_timeout"];

/// What a configured network is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkRole {
    Management,
    Vip,
    Member,
}

impl NetworkRole {
    /// The network's bridge in the fabric namespace.
    pub fn bridge(self) -> &'static str {
        match self {
            NetworkRole::Management => "br-mgmt",
            NetworkRole::Vip => "br-vip",
            NetworkRole::Member => "br-member",
        }
    }
}

/// One subnet of a configured network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSettings {
    pub id: String,
    pub cidr: IpNet,
    /// On the management network: the controller's address. Elsewhere: the
    /// amphorae's default gateway (held by the host only with
    /// `host_vip_access`).
    pub gateway: Option<IpAddr>,
}

/// One configured network (a bridge in the fabric namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    pub role: NetworkRole,
    pub id: String,
    pub subnets: Vec<SubnetSettings>,
}

/// `[local_network]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNetworkSettings {
    /// Starts every namespace and host interface name this controller
    /// creates: 1 to 8 lowercase letters and digits.
    pub name_prefix: String,
    pub fabric_namespace: String,
    pub mtu: u32,
    /// Whether the host gets a veth into the VIP network holding its
    /// gateway addresses, so it can reach VIPs.
    pub host_vip_access: bool,
    /// Management first, then VIP, then members.
    pub networks: Vec<NetworkSettings>,
}

/// `[local_compute]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalComputeSettings {
    /// One directory per amphora below it.
    pub state_dir: PathBuf,
    /// `None`: the `amphora-agent` next to this executable, then on PATH.
    pub agent_path: Option<PathBuf>,
    /// `None`: the first haproxy found in /usr/sbin, /usr/local/sbin, /usr/bin.
    pub haproxy_cmd: Option<PathBuf>,
    pub agent_bind_port: u16,
    /// How long `wait_active` waits for a booted agent to serve.
    pub boot_timeout: Duration,
}

/// Well-known default ids, so a single-host setup can be used without
/// looking anything up (README lists them).
pub const DEFAULT_MANAGEMENT_NETWORK_ID: &str = "6d5a0c1e-0000-4000-8000-00000000a001";
pub const DEFAULT_MANAGEMENT_SUBNET_ID: &str = "6d5a0c1e-0000-4000-8000-00000000b001";
pub const DEFAULT_VIP_NETWORK_ID: &str = "6d5a0c1e-0000-4000-8000-00000000a002";
pub const DEFAULT_VIP_SUBNET_ID: &str = "6d5a0c1e-0000-4000-8000-00000000b002";
pub const DEFAULT_VIP_IPV6_SUBNET_ID: &str = "6d5a0c1e-0000-4000-8000-00000000b006";
pub const DEFAULT_MEMBER_NETWORK_ID: &str = "6d5a0c1e-0000-4000-8000-00000000a003";
pub const DEFAULT_MEMBER_SUBNET_ID: &str = "6d5a0c1e-0000-4000-8000-00000000b003";

const NET: &str = "local_network";
const COMPUTE: &str = "local_compute";

fn uuid_option(l: &Layers, key: &str, default: &str) -> Result<String, ConfigError> {
    l.get(NET, key, default.to_owned(), |v| {
        uuid::Uuid::parse_str(v).map(|u| u.to_string()).map_err(|_| "expected a UUID".to_owned())
    })
}

/// Parses a CIDR (host bits must be zero). Empty is `None` when `optional`.
fn cidr_option(l: &Layers, key: &str, default: &str, optional: bool) -> Result<Option<IpNet>, ConfigError> {
    l.get(NET, key, default.parse::<IpNet>().ok(), |v| {
        if v.is_empty() {
            return if optional { Ok(None) } else { Err("expected a CIDR such as 192.0.2.0/24".into()) };
        }
        let net: IpNet = v.parse().map_err(|_| "expected a CIDR such as 192.0.2.0/24".to_owned())?;
        if net.trunc() != net {
            return Err(format!("host bits are set; did you mean {}?", net.trunc()));
        }
        if net.hosts().nth(2).is_none() {
            return Err("the subnet is too small (it needs at least 3 host addresses)".into());
        }
        Ok(Some(net))
    })
}

/// The gateway of `cidr`: by default its first host address; empty for none.
fn gateway_option(l: &Layers, key: &str, cidr: IpNet) -> Result<Option<IpAddr>, ConfigError> {
    let first = first_host(cidr);
    l.get(NET, key, Some(first), |v| {
        if v.is_empty() {
            return Ok(None);
        }
        let ip: IpAddr = v.parse().map_err(|_| "expected an IP address".to_owned())?;
        if !cidr.contains(&ip) || ip == cidr.network() || (ip.is_ipv4() && ip == cidr.broadcast()) {
            return Err(format!("not a host address of {cidr}"));
        }
        Ok(Some(ip))
    })
}

/// The first host address of a subnet (`.1`, `::1`).
pub fn first_host(cidr: IpNet) -> IpAddr {
    match cidr {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}

impl LocalNetworkSettings {
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let name_prefix = l.get(NET, "name_prefix", "octavia".to_owned(), |v| {
            if (1..=8).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                Ok(v.to_owned())
            } else {
                Err("expected 1 to 8 lowercase letters or digits (it starts interface names, which are short)".into())
            }
        })?;
        let fabric_namespace = l.get(NET, "fabric_namespace", format!("{name_prefix}-fabric"), |v| {
            if !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !v.starts_with('.')
            {
                Ok(v.to_owned())
            } else {
                Err("expected a network namespace name (letters, digits, '-', '_', '.')".into())
            }
        })?;
        let mtu = l.int(NET, "mtu", 1500, 1280, 9000)? as u32;
        let host_vip_access = l.bool(NET, "host_vip_access", false)?;

        let mut networks = Vec::new();
        let subnet = |id_key: &str, id_default: &str, cidr_key: &str, cidr_default: &str, gw_key: &str| {
            let cidr = cidr_option(l, cidr_key, cidr_default, false)?.expect("required CIDR");
            Ok::<_, ConfigError>(SubnetSettings {
                id: uuid_option(l, id_key, id_default)?,
                cidr,
                gateway: gateway_option(l, gw_key, cidr)?,
            })
        };
        let management = subnet(
            "management_subnet_id",
            DEFAULT_MANAGEMENT_SUBNET_ID,
            "management_cidr",
            "192.0.2.0/24",
            "management_gateway",
        )?;
        let vip = subnet("vip_subnet_id", DEFAULT_VIP_SUBNET_ID, "vip_cidr", "203.0.113.0/24", "vip_gateway")?;
        let member =
            subnet("member_subnet_id", DEFAULT_MEMBER_SUBNET_ID, "member_cidr", "198.51.100.0/24", "member_gateway")?;
        if management.gateway.is_none() {
            // The controller needs an address on the management network.
            return Err(invalid(l, "management_gateway", "", "the controller's management address cannot be empty"));
        }
        networks.push(NetworkSettings {
            role: NetworkRole::Management,
            id: uuid_option(l, "management_network_id", DEFAULT_MANAGEMENT_NETWORK_ID)?,
            subnets: vec![management],
        });
        let mut vip_subnets = vec![vip];
        if let Some(cidr) = cidr_option(l, "vip_ipv6_cidr", "2001:db8:0:1::/64", true)? {
            if !matches!(cidr, IpNet::V6(_)) {
                return Err(invalid(l, "vip_ipv6_cidr", &cidr.to_string(), "expected an IPv6 CIDR"));
            }
            vip_subnets.push(SubnetSettings {
                id: uuid_option(l, "vip_ipv6_subnet_id", DEFAULT_VIP_IPV6_SUBNET_ID)?,
                cidr,
                gateway: gateway_option(l, "vip_ipv6_gateway", cidr)?,
            });
        }
        networks.push(NetworkSettings {
            role: NetworkRole::Vip,
            id: uuid_option(l, "vip_network_id", DEFAULT_VIP_NETWORK_ID)?,
            subnets: vip_subnets,
        });
        networks.push(NetworkSettings {
            role: NetworkRole::Member,
            id: uuid_option(l, "member_network_id", DEFAULT_MEMBER_NETWORK_ID)?,
            subnets: vec![member],
        });
        let settings = LocalNetworkSettings { name_prefix, fabric_namespace, mtu, host_vip_access, networks };
        settings.check_distinct(l)?;
        Ok(settings)
    }

    /// Ids must name one object each, and subnets must not overlap.
    fn check_distinct(&self, l: &Layers) -> Result<(), ConfigError> {
        let mut ids: Vec<&str> = self.networks.iter().map(|n| n.id.as_str()).collect();
        let subnets: Vec<&SubnetSettings> = self.networks.iter().flat_map(|n| &n.subnets).collect();
        ids.extend(subnets.iter().map(|s| s.id.as_str()));
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(l, "management_network_id", w[0], "each network and subnet id must be distinct"));
        }
        for (i, a) in subnets.iter().enumerate() {
            for b in &subnets[i + 1..] {
                if a.cidr.contains(&b.cidr.network()) || b.cidr.contains(&a.cidr.network()) {
                    return Err(invalid(l, "management_cidr", &a.cidr.to_string(), &format!("overlaps {}", b.cidr)));
                }
            }
        }
        Ok(())
    }

    pub fn management(&self) -> &NetworkSettings {
        &self.networks[0]
    }

    /// The controller's address on the management network.
    pub fn controller_ip(&self) -> IpAddr {
        self.management().subnets[0].gateway.expect("checked when parsed")
    }

    pub fn network(&self, id: &str) -> Option<&NetworkSettings> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// A subnet and its network.
    pub fn subnet(&self, id: &str) -> Option<(&NetworkSettings, &SubnetSettings)> {
        self.networks.iter().find_map(|n| n.subnets.iter().find(|s| s.id == id).map(|s| (n, s)))
    }

    /// The host's veth on the management network.
    pub fn host_management_interface(&self) -> String {
        format!("{}-hm0", self.name_prefix)
    }

    /// The host's veth on the VIP network (`host_vip_access`).
    pub fn host_vip_interface(&self) -> String {
        format!("{}-vip0", self.name_prefix)
    }

    /// The namespace that plays an amphora's VM.
    pub fn amphora_namespace(&self, compute_id: &str) -> String {
        format!("{}-amp-{compute_id}", self.name_prefix)
    }

    /// The amphora's own `amphora-haproxy` namespace (the agent's
    /// `[amphora_agent] network_namespace`).
    pub fn haproxy_namespace(&self, compute_id: &str) -> String {
        format!("{}-lb-{compute_id}", self.name_prefix)
    }
}

fn invalid(l: &Layers, key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: l.files().last().cloned().unwrap_or_default(),
        section: NET.into(),
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl LocalComputeSettings {
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        Ok(LocalComputeSettings {
            state_dir: l.get(COMPUTE, "state_dir", PathBuf::from("/var/lib/octavia/local-compute"), |v| {
                let path = oslo_ini::parse_absolute_path(v)?;
                if v.len() > compute::STATE_DIR_MAX_LEN {
                    return Err(format!(
                        "at most {} characters: haproxy's stats sockets live below it",
                        compute::STATE_DIR_MAX_LEN
                    ));
                }
                Ok(path)
            })?,
            agent_path: l.get(COMPUTE, "agent_path", None, |v| {
                if v.is_empty() { Ok(None) } else { oslo_ini::parse_absolute_path(v).map(Some) }
            })?,
            haproxy_cmd: l.get(COMPUTE, "haproxy_cmd", None, |v| {
                if v.is_empty() { Ok(None) } else { oslo_ini::parse_absolute_path(v).map(Some) }
            })?,
            agent_bind_port: l.int(COMPUTE, "agent_bind_port", 9443, 1, 65535)? as u16,
            boot_timeout: l.get(COMPUTE, "boot_timeout", Duration::from_secs(120), |v| {
                let s: f64 = v.parse().map_err(|_| "expected a number of seconds".to_owned())?;
                if (0.1..=86_400.0).contains(&s) {
                    Ok(Duration::from_secs_f64(s))
                } else {
                    Err("expected a number of seconds from 0.1 to 86400".into())
                }
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;

    fn error(text: &str) -> String {
        let text = format!("[api_settings]\nauth_strategy = noauth\n{text}");
        parse([(Path::new("/o.conf"), text.as_str())]).expect_err("invalid").to_string()
    }

    #[test]
    fn defaults_are_the_documentation_networks() {
        let c = parse([(Path::new("/o.conf"), "[api_settings]\nauth_strategy = noauth\n")]).expect("valid").config;
        let n = &c.local_network;
        assert_eq!(n.fabric_namespace, "octavia-fabric");
        assert_eq!(n.host_management_interface(), "octavia-hm0");
        assert_eq!(n.controller_ip().to_string(), "192.0.2.1");
        let cidrs: Vec<String> = n.networks.iter().flat_map(|n| &n.subnets).map(|s| s.cidr.to_string()).collect();
        assert_eq!(cidrs, ["192.0.2.0/24", "203.0.113.0/24", "2001:db8:0:1::/64", "198.51.100.0/24"]);
        assert_eq!(
            n.subnet(super::DEFAULT_VIP_IPV6_SUBNET_ID).map(|(net, _)| net.id.as_str()),
            Some(super::DEFAULT_VIP_NETWORK_ID)
        );
        assert_eq!(c.local_compute.agent_bind_port, 9443);
    }

    #[test]
    fn bad_local_options_name_the_option_and_the_reason() {
        let e = error("[local_network]\nname_prefix = Octavia-1\n");
        assert!(e.contains("[local_network] name_prefix") && e.contains("lowercase"), "{e}");
        let e = error("[local_network]\nvip_cidr = 203.0.113.7/24\n");
        assert!(e.contains("vip_cidr") && e.contains("203.0.113.0/24"), "{e}");
        let e = error("[local_network]\nmember_gateway = 192.0.2.9\n");
        assert!(e.contains("member_gateway") && e.contains("not a host address of 198.51.100.0/24"), "{e}");
        let e = error("[local_network]\nmember_cidr = 192.0.2.128/25\n");
        assert!(e.contains("overlaps"), "{e}");
        let e = error("[local_network]\nmanagement_gateway =\n");
        assert!(e.contains("management_gateway"), "{e}");
        let e = error("[local_network]\nvip_ipv6_cidr = 10.0.0.0/8\n");
        assert!(e.contains("expected an IPv6 CIDR"), "{e}");
        let e = error(&format!("[local_network]\nmember_subnet_id = {}\n", super::DEFAULT_VIP_SUBNET_ID));
        assert!(e.contains("distinct"), "{e}");
        let e = error("[local_compute]\nstate_dir = /var/lib/octavia/a-rather-long-directory-name/local\n");
        assert!(e.contains("[local_compute] state_dir") && e.contains("at most 37"), "{e}");
    }
}
