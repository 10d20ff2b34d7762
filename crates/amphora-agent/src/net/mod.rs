//! Networks of the amphora: plugging the VIP and member ports into the
//! amphora namespace, finding interfaces by address, the per-interface
//! firewall, and restoring all of it after a reboot.
//!
//! Nova hot-plugs a port into the VM's default namespace; the agent finds
//! it by MAC, moves it into the amphora namespace under a stable name
//! (`eth1` for the VIP, `eth2`... for members) and configures it through
//! netlink. Each interface's definition is persisted before it is applied,
//! so a rebooted amphora replays it. Plugging is serialised.

pub mod advert;
pub mod model;
pub mod nft;
pub mod rtnl;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Topology;
use crate::fsutil;
use crate::netns::Netns;
use crate::settings::LiveConfig;

use model::{InterfaceDef, Mac, PlugError, PlugNetworkRequest, PlugVipRequest, Role, VIP_INTERFACE};
use rtnl::{Rtnl, RtnlError};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Plug(#[from] PlugError),
    #[error("No suitable network interface found")]
    NoInterface(Mac),
    #[error("Interface already exists")]
    AlreadyPlugged(String),
    #[error("Invalid IP address")]
    InvalidIp(String),
    #[error("Error interface not found for IP address")]
    InterfaceNotFound(IpAddr),
    #[error("Invalid rules information")]
    Rules(String),
    #[error("No suitable network interface found")]
    NothingToPlug,
    #[error("More than one interface could be plugged")]
    Ambiguous(Vec<String>),
    #[error("the agent runs without an amphora network namespace (network_namespace is empty)")]
    NoNamespace,
    #[error("{0}")]
    Netlink(#[from] RtnlError),
    #[error("cannot load the firewall rules: {0}")]
    Firewall(String),
    #[error("cannot record interface {name}: {source}")]
    Persist { name: String, source: std::io::Error },
}

#[derive(Debug)]
pub struct NetService {
    netns: Option<Arc<Netns>>,
    /// The agent's own namespace, where Nova's ports appear.
    host: Rtnl,
    /// The amphora namespace.
    amphora: Option<Rtnl>,
    dir: PathBuf,
    settings: Arc<LiveConfig>,
    lock: tokio::sync::Mutex<()>,
}

impl NetService {
    /// `dir` holds one `{interface}.json` per plugged interface.
    pub fn new(netns: Option<Arc<Netns>>, dir: PathBuf, settings: Arc<LiveConfig>) -> Result<Self, NetError> {
        let host = Rtnl::current()?;
        let amphora = match &netns {
            Some(netns) => Some(Rtnl::in_namespace(netns)?),
            None => None,
        };
        Ok(Self { netns, host, amphora, dir, settings, lock: tokio::sync::Mutex::new(()) })
    }

    fn topology(&self) -> Topology {
        self.settings.current().controller_worker.loadbalancer_topology
    }

    fn namespace(&self) -> Result<(&Netns, &Rtnl), NetError> {
        match (&self.netns, &self.amphora) {
            (Some(netns), Some(rtnl)) => Ok((netns, rtnl)),
            _ => Err(NetError::NoNamespace),
        }
    }

    fn definitions(&self) -> Vec<InterfaceDef> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut defs: Vec<InterfaceDef> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| {
                let bytes = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice(&bytes) {
                    Ok(def) => Some(def),
                    Err(err) => {
                        tracing::warn!(path = %e.path().display(), error = %err, "ignoring a damaged interface file");
                        None
                    }
                }
            })
            .collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    async fn persist(&self, def: &InterfaceDef) -> Result<(), NetError> {
        let persist_error = |source| NetError::Persist { name: def.name.clone(), source };
        fsutil::create_dir_all(&self.dir, 0o755).map_err(persist_error)?;
        let bytes = serde_json::to_vec_pretty(def).map_err(|e| persist_error(std::io::Error::other(e)))?;
        fsutil::write_atomic_async(&self.dir.join(format!("{}.json", def.name)), &bytes, 0o644)
            .await
            .map_err(persist_error)
    }

    /// `POST /1.0/plug/vip/{vip}`.
    pub async fn plug_vip(&self, vip: &str, request: &PlugVipRequest) -> Result<String, NetError> {
        let def = model::vip_interface(vip, request, &[], self.topology(), VIP_INTERFACE)?;
        let _guard = self.lock.lock().await;
        let (netns, amphora) = self.namespace()?;
        if let Some(existing) = amphora.link_by_mac(def.mac).await? {
            return Err(NetError::AlreadyPlugged(existing.name));
        }
        let link = self.host.link_by_mac(def.mac).await?.ok_or(NetError::NoInterface(def.mac))?;
        self.persist(&def).await?;
        self.host.move_to(&link, netns, &def.name).await?;
        let index = self.configure(&def).await?;
        self.advertise_on(&def, index);
        let vips: Vec<String> = std::iter::once(vip)
            .chain(request.additional_vips.iter().map(|v| v.ip_address.as_str()))
            .filter_map(|v| v.trim().parse::<IpAddr>().ok())
            .map(|v| v.to_string())
            .collect();
        tracing::info!(interface = def.name, vips = vips.join(", "), mac = %def.mac, "VIP plugged");
        Ok(if vips.len() == 1 {
            format!("VIP {} plugged on interface {}", vips[0], def.name)
        } else {
            format!("VIPs {} plugged on interface {}", vips.join(", "), def.name)
        })
    }

    /// `POST /1.0/plug/network`.
    pub async fn plug_network(&self, request: &PlugNetworkRequest) -> Result<String, NetError> {
        // Validate before touching anything.
        model::member_interface(request, "check")?;
        let _guard = self.lock.lock().await;
        let (netns, amphora) = self.namespace()?;
        let mac = Mac::parse(&request.mac_address)?;

        if let Some(existing) = amphora.link_by_mac(mac).await? {
            let previous = self.definitions().into_iter().find(|d| d.mac == mac);
            let mut def = match &request.vip_net_info {
                // Another subnet on the VIP port: a new VIP definition.
                Some(info) => model::vip_interface(
                    &info.vip,
                    &info.vip_request,
                    request.fixed_ips.as_deref().unwrap_or(&[]),
                    self.topology(),
                    &existing.name,
                )?,
                None => model::member_interface(request, &existing.name)?,
            };
            def.firewall = previous.as_ref().and_then(|p| p.firewall.clone());
            if let Some(previous) = &previous {
                amphora.remove(previous, existing.index).await?;
            }
            self.persist(&def).await?;
            let index = self.configure(&def).await?;
            self.advertise_on(&def, index);
            tracing::info!(interface = existing.name, %mac, "updated plugged interface");
            return Ok(format!("Updated existing interface {}", existing.name));
        }

        let link = self.host.link_by_mac(mac).await?.ok_or(NetError::NoInterface(mac))?;
        let taken: Vec<String> = amphora.links().await?.into_iter().map(|l| l.name).collect();
        let name = (2..).map(|n| format!("eth{n}")).find(|n| !taken.contains(n)).expect("a free name");
        let def = model::member_interface(request, &name)?;
        self.persist(&def).await?;
        self.host.move_to(&link, netns, &name).await?;
        let index = self.configure(&def).await?;
        self.advertise_on(&def, index);
        tracing::info!(interface = name, %mac, from = link.name, "member network plugged");
        Ok(format!("Plugged interface {name}"))
    }

    /// The one port waiting to be plugged (the 0.1 API names none): a
    /// link of the agent's namespace with a MAC and no address but
    /// link-local ones.
    async fn unplugged_port(&self) -> Result<rtnl::Link, NetError> {
        let addresses = self.host.addresses().await?;
        let mut candidates: Vec<rtnl::Link> = self
            .host
            .links()
            .await?
            .into_iter()
            .filter(|l| l.name != "lo" && l.mac.is_some_and(|m| m.0 != [0; 6]))
            .filter(|l| {
                !addresses.iter().any(|(index, ip)| {
                    *index == l.index
                        && match ip {
                            IpAddr::V4(_) => true,
                            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                        }
                })
            })
            .collect();
        match candidates.len() {
            0 => Err(NetError::NothingToPlug),
            1 => Ok(candidates.remove(0)),
            _ => Err(NetError::Ambiguous(candidates.into_iter().map(|l| l.name).collect())),
        }
    }

    /// `POST /v0.1/plug/vip/{ip}`: the 0.1 API sends no body, so the VIP
    /// goes as a host address on the single unplugged port.
    pub async fn plug_discovered_vip(&self, vip: &str) -> Result<String, NetError> {
        let ip: IpAddr = vip.parse().map_err(|_| PlugError::Vip(format!("{vip:?} is not an IP address")))?;
        let port = self.unplugged_port().await?;
        let request = PlugVipRequest {
            subnet_cidr: format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }),
            gateway: None,
            mac_address: port.mac.expect("filtered").to_string(),
            mtu: None,
            vrrp_ip: None,
            host_routes: Vec::new(),
            additional_vips: Vec::new(),
        };
        self.plug_vip(vip, &request).await
    }

    /// `POST /v0.1/plug/network/`: the single unplugged port becomes a
    /// member interface, up, without addresses.
    pub async fn plug_discovered_network(&self) -> Result<String, NetError> {
        let port = self.unplugged_port().await?;
        let request = PlugNetworkRequest {
            mac_address: port.mac.expect("filtered").to_string(),
            fixed_ips: None,
            mtu: None,
            vip_net_info: None,
        };
        self.plug_network(&request).await
    }

    /// Applies a definition to the link with its MAC in the namespace.
    async fn configure(&self, def: &InterfaceDef) -> Result<u32, NetError> {
        let (netns, amphora) = self.namespace()?;
        let link = amphora.link_by_mac(def.mac).await?.ok_or(NetError::NoInterface(def.mac))?;
        amphora.apply(def, link.index).await?;
        nft::load(&nft::render(&self.definitions()), netns).await.map_err(NetError::Firewall)?;
        Ok(link.index)
    }

    fn advertise_on(&self, def: &InterfaceDef, index: u32) {
        let Some(netns) = self.netns.clone() else { return };
        let (mac, addresses, name) = (def.mac, def.advertise.clone(), def.name.clone());
        if addresses.is_empty() {
            return;
        }
        // A few milliseconds of raw socket work; never delay the answer.
        tokio::task::spawn_blocking(move || {
            let sent = netns.run(|| {
                for ip in &addresses {
                    advert::advertise(index, mac, *ip)?;
                }
                Ok(())
            });
            if let Err(e) = sent {
                tracing::warn!(interface = name, error = %e, "cannot advertise addresses");
            }
        });
    }

    /// Advertises VIPs again (after haproxy starts or reloads), in SINGLE
    /// topology only: keepalived advertises in ACTIVE_STANDBY.
    pub async fn advertise_vips(&self, vips: &[IpAddr]) {
        if self.topology() != Topology::Single || self.netns.is_none() {
            return;
        }
        for def in self.definitions().iter().filter(|d| d.role == Role::Vip) {
            let addresses: Vec<IpAddr> = def.advertise.iter().filter(|ip| vips.contains(ip)).copied().collect();
            if addresses.is_empty() {
                continue;
            }
            let Some(amphora) = &self.amphora else { return };
            if let Ok(Some(link)) = amphora.link_by_mac(def.mac).await {
                self.advertise_on(&InterfaceDef { advertise: addresses, ..def.clone() }, link.index);
            }
        }
    }

    /// Which of `addresses` are on an interface of the amphora namespace.
    pub async fn present(&self, addresses: &[IpAddr]) -> Vec<IpAddr> {
        let Some(amphora) = &self.amphora else { return Vec::new() };
        match amphora.addresses().await {
            Ok(all) => addresses.iter().filter(|a| all.iter().any(|(_, b)| b == *a)).copied().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the amphora's addresses");
                Vec::new()
            }
        }
    }

    /// `GET /1.0/interface/{ip}`: the amphora namespace first, then the
    /// agent's own (the management interface).
    pub async fn interface_of(&self, raw: &str) -> Result<String, NetError> {
        let ip: IpAddr = raw.parse().map_err(|_| NetError::InvalidIp(raw.to_owned()))?;
        let mut namespaces: Vec<&Rtnl> = self.amphora.iter().collect();
        namespaces.push(&self.host);
        for rtnl in namespaces {
            if let Some((index, _)) = rtnl.addresses().await?.into_iter().find(|(_, a)| *a == ip)
                && let Some(link) = rtnl.links().await?.into_iter().find(|l| l.index == index)
            {
                return Ok(link.name);
            }
        }
        Err(NetError::InterfaceNotFound(ip))
    }

    /// `PUT /1.0/interface/{ip}/rules`: replaces the firewall of the
    /// interface holding `ip` (in the amphora namespace).
    pub async fn set_rules(&self, raw_ip: &str, rules: &[nft::RuleRequest]) -> Result<(), NetError> {
        let ip: IpAddr = raw_ip.parse().map_err(|_| NetError::InvalidIp(raw_ip.to_owned()))?;
        let firewall = nft::validate(rules).map_err(NetError::Rules)?;
        let _guard = self.lock.lock().await;
        let (netns, amphora) = self.namespace()?;
        let index = amphora.addresses().await?.into_iter().find(|(_, a)| *a == ip).map(|(i, _)| i);
        let link = match index {
            Some(index) => amphora.links().await?.into_iter().find(|l| l.index == index),
            None => None,
        };
        let link = link.ok_or(NetError::InterfaceNotFound(ip))?;
        let mut defs = self.definitions();
        let def = defs.iter_mut().find(|d| Some(d.mac) == link.mac).ok_or(NetError::InterfaceNotFound(ip))?;
        def.firewall = Some(firewall);
        let updated = def.clone();
        nft::load(&nft::render(&defs), netns).await.map_err(NetError::Firewall)?;
        self.persist(&updated).await?;
        tracing::info!(interface = updated.name, rules = rules.len(), "firewall rules loaded");
        Ok(())
    }

    /// At agent start: brings every recorded interface back, in the
    /// amphora namespace, configured. An interface that vanished is logged
    /// and skipped.
    pub async fn restore(&self) {
        let defs = self.definitions();
        if defs.is_empty() {
            return;
        }
        let Ok((netns, amphora)) = self.namespace() else {
            tracing::warn!("recorded interfaces exist but there is no amphora namespace; not restoring them");
            return;
        };
        for def in &defs {
            let in_place = match amphora.link_by_mac(def.mac).await {
                Ok(link) => link,
                Err(e) => {
                    tracing::error!(interface = def.name, error = %e, "cannot inspect the amphora namespace");
                    continue;
                }
            };
            if in_place.is_none() {
                match self.host.link_by_mac(def.mac).await {
                    Ok(Some(link)) => {
                        if let Err(e) = self.host.move_to(&link, netns, &def.name).await {
                            tracing::error!(interface = def.name, error = %e, "cannot move the interface back");
                            continue;
                        }
                    }
                    _ => {
                        tracing::warn!(interface = def.name, mac = %def.mac, "recorded interface is gone; skipping it");
                        continue;
                    }
                }
            }
            match amphora.link_by_mac(def.mac).await {
                Ok(Some(link)) => match amphora.apply(def, link.index).await {
                    Ok(()) => {
                        tracing::info!(interface = def.name, "interface restored");
                        self.advertise_on(def, link.index);
                    }
                    Err(e) => tracing::error!(interface = def.name, error = %e, "cannot restore the interface"),
                },
                _ => tracing::warn!(interface = def.name, "interface vanished while restoring"),
            }
        }
        if !defs.is_empty()
            && let Err(e) = nft::load(&nft::render(&defs), netns).await
        {
            tracing::error!(error = %e, "cannot restore the firewall rules");
        }
    }
}

/// Addresses haproxy binds in a configuration (`bind 203.0.113.2:80 ...`,
/// `bind fd00::2:80`, `bind [fd00::2]:80`), for advertisements.
pub fn bind_addresses(config: &str) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for line in config.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("bind") {
            continue;
        }
        let Some(endpoint) = words.next() else { continue };
        for item in endpoint.split(',') {
            let Some((host, _port)) = item.rsplit_once(':') else { continue };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = host.parse::<IpAddr>()
                && !ip.is_loopback()
                && !ip.is_unspecified()
                && !addresses.contains(&ip)
            {
                addresses.push(ip);
            }
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_of_octavia_configurations() {
        let config = "frontend a\n    bind 203.0.113.2:80\n    bind fd00::2:443 ssl crt-list /x\n    bind [fd00::3]:8080\n\
                      frontend prometheus\n    bind 127.0.0.1:9101\nfrontend b\n    bind 203.0.113.2:81\n    bind :::82\n";
        let expected: Vec<IpAddr> =
            ["203.0.113.2", "fd00::2", "fd00::3"].iter().map(|a| a.parse().expect("ip")).collect();
        assert_eq!(bind_addresses(config), expected);
    }
}
