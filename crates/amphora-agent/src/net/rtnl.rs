//! Route netlink, the kernel's own interface for links, addresses, routes
//! and policy rules, in the agent's namespace or the amphora namespace.
//!
//! A netlink socket belongs to the namespace it was created in, so a
//! connection for the amphora namespace is opened from a short-lived thread
//! that first enters it; the connection then serves from the agent's
//! runtime like any other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::packet_route::rule::RuleAction;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::model::{InterfaceDef, Mac, RouteDef, RuleDef};
use crate::netns::Netns;

/// Longest wait for IPv6 duplicate address detection.
const DAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("cannot open a netlink socket: {0}")]
    Open(std::io::Error),
    #[error("{what}: {source}")]
    Request { what: String, source: rtnetlink::Error },
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RtnlError {
    let what = what.into();
    move |source| RtnlError::Request { what, source }
}

/// Whether a netlink error says the object already exists.
fn exists(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message) if message.raw_code() == -libc::EEXIST)
}

/// Whether a netlink error says the object does not exist.
fn missing(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message)
        if [-libc::ENOENT, -libc::ESRCH, -libc::EADDRNOTAVAIL, -libc::ENODEV].contains(&message.raw_code()))
}

/// A network interface as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
}

/// A netlink connection to one namespace.
#[derive(Debug, Clone)]
pub struct Rtnl {
    handle: Handle,
}

impl Rtnl {
    /// The agent's own namespace.
    pub fn current() -> Result<Self, RtnlError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RtnlError::Open)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Another namespace.
    pub fn in_namespace(netns: &Netns) -> Result<Self, RtnlError> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle, _) = netns
            .run(|| {
                // The socket is registered with the agent's runtime.
                let _entered = runtime.enter();
                rtnetlink::new_connection()
            })
            .map_err(RtnlError::Open)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, RtnlError> {
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(request("cannot list links"))? {
            let mut link = Link { index: message.header.index, name: String::new(), mac: None };
            for attribute in message.attributes {
                match attribute {
                    LinkAttribute::IfName(name) => link.name = name,
                    LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                        let mut octets = [0u8; 6];
                        octets.copy_from_slice(&bytes);
                        link.mac = Some(Mac(octets));
                    }
                    _ => {}
                }
            }
            links.push(link);
        }
        Ok(links)
    }

    pub async fn link_by_mac(&self, mac: Mac) -> Result<Option<Link>, RtnlError> {
        Ok(self.links().await?.into_iter().find(|l| l.mac == Some(mac)))
    }

    /// Moves a link into `target` under `name` (`ip link set dev X netns
    /// NS name NAME`), down, as the kernel requires for a rename.
    pub async fn move_to(&self, link: &Link, target: &Netns, name: &str) -> Result<(), RtnlError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).down().build())
            .execute()
            .await
            .map_err(request(format!("cannot bring {} down", link.name)))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).setns_by_fd(target.as_fd().as_raw_fd()).name(name).build())
            .execute()
            .await
            .map_err(request(format!("cannot move {} into namespace {} as {name}", link.name, target.name())))
    }

    /// Configures a link as `def` says: MTU, addresses, up, routes, rules.
    /// Existing objects are left alone, so replaying a definition is safe.
    pub async fn apply(&self, def: &InterfaceDef, index: u32) -> Result<(), RtnlError> {
        if let Some(mtu) = def.mtu {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
                .execute()
                .await
                .map_err(request(format!("cannot set the MTU of {} to {mtu}", def.name)))?;
        }
        for address in def.addresses.iter().filter(|a| a.managed) {
            match self.handle.address().add(index, address.ip, address.prefix).execute().await {
                Err(e) if !exists(&e) => {
                    return Err(request(format!("cannot add {}/{} to {}", address.ip, address.prefix, def.name))(e));
                }
                _ => {}
            }
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(request(format!("cannot bring {} up", def.name)))?;
        self.wait_for_dad(index).await?;
        for route in &def.routes {
            match self.handle.route().add(route_message(route, index)).execute().await {
                Err(e) if !exists(&e) => {
                    return Err(request(format!("cannot add the route to {} on {}", route.destination, def.name))(e));
                }
                _ => {}
            }
        }
        for rule in &def.rules {
            match self.add_rule(rule).await {
                Err(e) if !exists(&e) => {
                    return Err(request(format!("cannot add the rule from {} lookup {}", rule.source, rule.table))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Waits (bounded, as upstream) until no IPv6 address of the link is
    /// still tentative: haproxy cannot bind one before duplicate address
    /// detection finishes.
    async fn wait_for_dad(&self, index: u32) -> Result<(), RtnlError> {
        let deadline = tokio::time::Instant::now() + DAD_TIMEOUT;
        loop {
            let mut stream = self.handle.address().get().set_link_index_filter(index).execute();
            let mut tentative = false;
            while let Some(message) = stream.try_next().await.map_err(request("cannot list addresses"))? {
                tentative |= message.header.flags.contains(AddressHeaderFlags::Tentative)
                    || message
                        .attributes
                        .iter()
                        .any(|a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)));
            }
            if !tentative {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(index, "IPv6 addresses still tentative after {DAD_TIMEOUT:?}");
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn add_rule(&self, rule: &RuleDef) -> Result<(), rtnetlink::Error> {
        let request = self.handle.rule().add().table_id(rule.table).action(RuleAction::ToTable);
        match rule.source.addr() {
            IpAddr::V4(source) => request.v4().source_prefix(source, rule.source.prefix_len()).execute().await,
            IpAddr::V6(source) => request.v6().source_prefix(source, rule.source.prefix_len()).execute().await,
        }
    }

    /// Removes what `def` added (for a replaced definition); what is
    /// already gone is fine.
    pub async fn remove(&self, def: &InterfaceDef, index: u32) -> Result<(), RtnlError> {
        let mut stream = self.handle.address().get().set_link_index_filter(index).execute();
        let mut present = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(request("cannot list addresses"))? {
            present.push(message);
        }
        for message in present {
            let ip = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let ours = ip.is_some_and(|ip| def.addresses.iter().any(|a| a.managed && a.ip == ip));
            if ours {
                match self.handle.address().del(message).execute().await {
                    Err(e) if !missing(&e) => {
                        return Err(request(format!("cannot remove an address of {}", def.name))(e));
                    }
                    _ => {}
                }
            }
        }
        for route in &def.routes {
            match self.handle.route().del(route_message(route, index)).execute().await {
                Err(e) if !missing(&e) => {
                    return Err(request(format!("cannot remove the route to {}", route.destination))(e));
                }
                _ => {}
            }
        }
        for rule in &def.rules {
            let mut stream = self.handle.rule().get(ip_version(rule.source.addr())).execute();
            while let Some(message) = stream.try_next().await.map_err(request("cannot list rules"))? {
                let table = message.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::rule::RuleAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                let source = message.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::rule::RuleAttribute::Source(ip) => Some(*ip),
                    _ => None,
                });
                if table == Some(rule.table)
                    && source == Some(rule.source.addr())
                    && message.header.src_len == rule.source.prefix_len()
                {
                    match self.handle.rule().del(message).execute().await {
                        Err(e) if !missing(&e) => return Err(request("cannot remove a rule")(e)),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Every address with the index of its link.
    pub async fn addresses(&self) -> Result<Vec<(u32, IpAddr)>, RtnlError> {
        let mut stream = self.handle.address().get().execute();
        let mut addresses = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(request("cannot list addresses"))? {
            for attribute in &message.attributes {
                if let AddressAttribute::Address(ip) = attribute {
                    addresses.push((message.header.index, *ip));
                }
            }
        }
        Ok(addresses)
    }
}

fn ip_version(ip: IpAddr) -> rtnetlink::IpVersion {
    if ip.is_ipv4() { rtnetlink::IpVersion::V4 } else { rtnetlink::IpVersion::V6 }
}

fn route_message(route: &RouteDef, index: u32) -> RouteMessage {
    let table = route.table.unwrap_or(254);
    let scope = if route.scope_link { RouteScope::Link } else { RouteScope::Universe };
    match route.destination.addr() {
        IpAddr::V4(destination) => {
            let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(destination, route.destination.prefix_len())
                .output_interface(index)
                .table_id(table)
                .scope(scope);
            if let Some(IpAddr::V4(gateway)) = route.gateway {
                builder = builder.gateway(gateway);
            }
            if let Some(IpAddr::V4(source)) = route.preferred_source {
                builder = builder.pref_source(source);
            }
            if route.onlink {
                builder = builder.onlink();
            }
            builder.build()
        }
        IpAddr::V6(destination) => {
            let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(destination, route.destination.prefix_len())
                .output_interface(index)
                .table_id(table)
                .scope(scope);
            if let Some(IpAddr::V6(gateway)) = route.gateway {
                builder = builder.gateway(gateway);
            }
            if let Some(IpAddr::V6(source)) = route.preferred_source {
                builder = builder.pref_source(source);
            }
            if route.onlink {
                builder = builder.onlink();
            }
            builder.build()
        }
    }
}
