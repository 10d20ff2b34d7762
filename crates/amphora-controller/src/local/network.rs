//! Ports of the local networks, kept in the database (`local_port`, schema
//! 0005), and the `NetworkDriver` over them.
//!
//! A port is a row (id, subnet, address, MAC, owner) until the compute
//! driver attaches it to an amphora: then it is also a veth pair whose
//! fabric end (`p` + 13 hex digits of the port id) is on the network's
//! bridge and whose other end is inside the amphora, with the port's MAC.
//! The table's UNIQUE constraints decide every race: an address or MAC is
//! picked, the row inserted, and a conflict means try again (or, for a
//! requested address, "in use").

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use ipnet::IpNet;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::fabric::{self, Fabric};
use super::{NetworkSettings, SubnetSettings};
use crate::config::Config;
use crate::db::{Db, new_id, now_text};
use crate::worker::drivers::{DriverFuture, NetworkDriver, Port, Subnet, VipRequest, random_mac};

/// Why a port could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Neutron's IpAddressAlreadyAllocated (a 409 there).
    #[error("IP address {address} already allocated in subnet {subnet_id}")]
    AddressInUse { address: String, subnet_id: String },
    #[error("IP address {address} is not a valid host address of subnet {subnet_id} ({cidr})")]
    NotInSubnet { address: String, subnet_id: String, cidr: IpNet },
    #[error("Subnet {0} could not be found.")]
    UnknownSubnet(String),
    #[error("Network {0} could not be found.")]
    UnknownNetwork(String),
    #[error("Port {0} could not be found.")]
    UnknownPort(String),
    #[error("no free IP address left in subnet {0}")]
    Exhausted(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A port row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRecord {
    pub port: Port,
    pub owner: String,
    pub device_id: Option<String>,
}

/// The port's veth end in the fabric namespace (at most 15 characters).
pub fn fabric_link(port_id: &str) -> String {
    let hex: String = port_id.chars().filter(char::is_ascii_alphanumeric).take(13).collect();
    format!("p{hex}")
}

const COLUMNS: &str = "id, network_id, subnet_id, ip_address, mac_address, owner, device_id";

fn record(row: &AnyRow) -> Result<PortRecord, sqlx::Error> {
    Ok(PortRecord {
        port: Port {
            id: row.try_get("id")?,
            address: row.try_get("ip_address")?,
            network_id: row.try_get("network_id")?,
            mac_address: row.try_get("mac_address")?,
            subnet_id: row.try_get("subnet_id")?,
        },
        owner: row.try_get("owner")?,
        device_id: row.try_get("device_id")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Random bits (the v4 UUID generator is the workspace's random source).
fn random_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128() ^ uuid::Uuid::new_v4().as_u128().rotate_left(64)
}

/// Whether `ip` may be given to a port of `subnet`: inside it, not its
/// network or broadcast address, not its gateway.
pub fn is_assignable(subnet: &SubnetSettings, ip: IpAddr) -> bool {
    subnet.cidr.contains(&ip)
        && ip != subnet.cidr.network()
        && !(ip.is_ipv4() && ip == subnet.cidr.broadcast())
        && Some(ip) != subnet.gateway
}

/// The address `offset` hosts into `cidr`.
fn nth(cidr: IpNet, offset: u128) -> IpAddr {
    match cidr {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()).wrapping_add(offset as u32)).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()).wrapping_add(offset)).into()),
    }
}

/// A free address of `subnet`, `used` being the taken ones: uniform among
/// the free ones of small subnets, a random probe in large ones.
fn pick_address(subnet: &SubnetSettings, used: &HashSet<IpAddr>) -> Option<IpAddr> {
    let host_bits = u32::from(subnet.cidr.max_prefix_len() - subnet.cidr.prefix_len());
    let size: u128 = if host_bits >= 128 { u128::MAX } else { 1u128 << host_bits };
    let ok = |ip: IpAddr| is_assignable(subnet, ip) && !used.contains(&ip);
    if size <= 1 << 16 {
        let free: Vec<IpAddr> = (1..size).map(|o| nth(subnet.cidr, o)).filter(|ip| ok(*ip)).collect();
        (!free.is_empty()).then(|| free[(random_u128() % free.len() as u128) as usize])
    } else {
        (0..64).map(|_| nth(subnet.cidr, 1 + random_u128() % (size - 2))).find(|ip| ok(*ip))
    }
}

/// The ports of the configured networks.
#[derive(Debug, Clone)]
pub struct PortStore {
    db: Db,
    fabric: Arc<Fabric>,
}

impl PortStore {
    pub fn new(db: Db, fabric: Arc<Fabric>) -> PortStore {
        PortStore { db, fabric }
    }

    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    fn subnet(&self, subnet_id: &str) -> Result<(&NetworkSettings, &SubnetSettings), PortError> {
        self.fabric.settings.subnet(subnet_id).ok_or_else(|| PortError::UnknownSubnet(subnet_id.to_owned()))
    }

    pub async fn get(&self, port_id: &str) -> Result<Option<PortRecord>, PortError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM local_port WHERE id = $1"))
            .bind(port_id)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }

    pub async fn by_owner(&self, owner: &str) -> Result<Option<PortRecord>, PortError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM local_port WHERE owner = $1"))
            .bind(owner)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }

    /// The ports whose owner starts with `prefix`.
    pub async fn by_owner_prefix(&self, prefix: &str) -> Result<Vec<PortRecord>, PortError> {
        let pattern: String = prefix
            .chars()
            .flat_map(|c| match c {
                '\\' | '%' | '_' => vec!['\\', c],
                c => vec![c],
            })
            .chain(['%'])
            .collect();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM local_port WHERE owner LIKE $1 ESCAPE '\\' ORDER BY created_at, id"
        ))
        .bind(pattern)
        .fetch_all(&self.db.pool)
        .await?;
        let records: Vec<PortRecord> = rows.iter().map(record).collect::<Result<_, _>>()?;
        // SQLite's LIKE ignores ASCII case.
        Ok(records.into_iter().filter(|r| r.owner.starts_with(prefix)).collect())
    }

    /// The ports attached to a compute instance.
    pub async fn attached_to(&self, device_id: &str) -> Result<Vec<PortRecord>, PortError> {
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} FROM local_port WHERE device_id = $1 ORDER BY created_at, id"))
                .bind(device_id)
                .fetch_all(&self.db.pool)
                .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    /// Every port of the table (tests, and operators' checks).
    pub async fn all(&self) -> Result<Vec<PortRecord>, PortError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM local_port ORDER BY created_at, id"))
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn used(&self, subnet_id: &str) -> Result<HashSet<IpAddr>, PortError> {
        let rows = sqlx::query("SELECT ip_address FROM local_port WHERE subnet_id = $1")
            .bind(subnet_id)
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = HashSet::new();
        for row in rows {
            if let Ok(ip) = row.try_get::<String, _>(0)?.parse() {
                out.insert(ip);
            }
        }
        Ok(out)
    }

    /// The port of `owner` on `subnet_id`: the one it already has, or a new
    /// one with `requested` (when given) or a free address, and a fresh MAC.
    pub async fn allocate(
        &self,
        subnet_id: &str,
        owner: &str,
        requested: Option<IpAddr>,
    ) -> Result<PortRecord, PortError> {
        let (network, subnet) = self.subnet(subnet_id)?;
        if let Some(existing) = self.by_owner(owner).await? {
            return Ok(existing);
        }
        if let Some(ip) = requested
            && !is_assignable(subnet, ip)
        {
            return Err(PortError::NotInSubnet {
                address: ip.to_string(),
                subnet_id: subnet.id.clone(),
                cidr: subnet.cidr,
            });
        }
        for _ in 0..64 {
            let ip = match requested {
                Some(ip) => ip,
                None => {
                    let used = self.used(&subnet.id).await?;
                    pick_address(subnet, &used).ok_or_else(|| PortError::Exhausted(subnet.id.clone()))?
                }
            };
            let port = Port {
                id: new_id(),
                // Canonical text, so one address is one value in the table.
                address: ip.to_string(),
                network_id: network.id.clone(),
                mac_address: random_mac(),
                subnet_id: subnet.id.clone(),
            };
            match self.insert(&port, owner).await {
                Ok(()) => return Ok(PortRecord { port, owner: owner.to_owned(), device_id: None }),
                Err(e) if is_unique_violation(&e) => {
                    if let Some(existing) = self.by_owner(owner).await? {
                        return Ok(existing);
                    }
                    if requested.is_some() && self.used(&subnet.id).await?.contains(&ip) {
                        return Err(PortError::AddressInUse { address: ip.to_string(), subnet_id: subnet.id.clone() });
                    }
                    // Another flow took the address (or the MAC): pick again.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PortError::Exhausted(subnet.id.clone()))
    }

    async fn insert(&self, port: &Port, owner: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.write().await?;
        sqlx::query(
            "INSERT INTO local_port (id, network_id, subnet_id, ip_address, mac_address, owner, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(port.id.as_str())
        .bind(port.network_id.as_str())
        .bind(port.subnet_id.as_str())
        .bind(port.address.as_str())
        .bind(port.mac_address.as_str())
        .bind(owner)
        .bind(now_text())
        .execute(&mut **tx)
        .await?;
        tx.commit().await
    }

    /// Records which instance a port is attached to (`None`: detached).
    pub async fn set_device(&self, port_id: &str, device_id: Option<&str>) -> Result<(), PortError> {
        let mut tx = self.db.write().await?;
        sqlx::query("UPDATE local_port SET device_id = $1 WHERE id = $2")
            .bind(device_id)
            .bind(port_id)
            .execute(&mut **tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a port: its veth (if attached), then its row. Missing is fine.
    pub async fn delete(&self, port_id: &str) -> anyhow::Result<()> {
        let ns = self.fabric.namespace();
        if fabric::netns_exists(ns) {
            fabric::delete_link(Some(ns), &fabric_link(port_id)).await?;
        }
        let mut tx = self.db.write().await?;
        sqlx::query("DELETE FROM local_port WHERE id = $1").bind(port_id).execute(&mut **tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A subnet id, or the first subnet of a network id.
    pub fn resolve(&self, network_or_subnet_id: &str) -> Result<&SubnetSettings, PortError> {
        let settings = &self.fabric.settings;
        if let Some((_, subnet)) = settings.subnet(network_or_subnet_id) {
            return Ok(subnet);
        }
        settings
            .network(network_or_subnet_id)
            .map(|n| &n.subnets[0])
            .ok_or_else(|| PortError::UnknownSubnet(network_or_subnet_id.to_owned()))
    }
}

/// The local `NetworkDriver` (`[controller_worker] network_driver = local`).
#[derive(Debug, Clone)]
pub struct LocalNetwork {
    ports: PortStore,
}

impl LocalNetwork {
    pub fn new(db: Db, config: &Config) -> LocalNetwork {
        LocalNetwork { ports: PortStore::new(db, Arc::new(Fabric::new(config.local_network.clone()))) }
    }

    pub fn ports(&self) -> &PortStore {
        &self.ports
    }

    /// Brings the fabric up (also done before the first port operation).
    pub async fn ensure_fabric(&self) -> anyhow::Result<()> {
        self.ports.fabric.ensure().await
    }

    async fn vip(&self, vip: &VipRequest) -> anyhow::Result<Port> {
        self.ensure_fabric().await?;
        let owner = format!("vip:{}", vip.load_balancer_id);
        if let Some(port_id) = &vip.port_id {
            // Only ports this driver made: nothing else exists on these
            // networks, and taking another object's port would share it.
            let record = self.ports.get(port_id).await?.ok_or_else(|| PortError::UnknownPort(port_id.clone()))?;
            if record.owner != owner {
                anyhow::bail!("Port {port_id} is in use by {} and cannot be a VIP of this load balancer", record.owner);
            }
            return Ok(record.port);
        }
        let requested: Option<IpAddr> = match &vip.address {
            Some(a) => Some(a.parse().with_context(|| format!("invalid VIP address {a:?}"))?),
            None => None,
        };
        let settings = &self.ports.fabric.settings;
        let subnet_id = match (&vip.subnet_id, &vip.network_id) {
            (Some(subnet_id), network_id) => {
                let (network, _) = self.ports.subnet(subnet_id)?;
                if let Some(network_id) = network_id
                    && *network_id != network.id
                {
                    anyhow::bail!("Subnet {subnet_id} is not part of network {network_id}");
                }
                subnet_id.clone()
            }
            (None, Some(network_id)) => {
                let network =
                    settings.network(network_id).ok_or_else(|| PortError::UnknownNetwork(network_id.clone()))?;
                let subnet =
                    match requested {
                        Some(ip) => network.subnets.iter().find(|s| s.cidr.contains(&ip)).ok_or_else(|| {
                            anyhow::anyhow!("IP address {ip} is in no subnet of network {network_id}")
                        })?,
                        None => &network.subnets[0],
                    };
                subnet.id.clone()
            }
            (None, None) => anyhow::bail!("VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id."),
        };
        Ok(self.ports.allocate(&subnet_id, &owner, requested).await?.port)
    }
}

impl NetworkDriver for LocalNetwork {
    fn allocate_vip<'a>(&'a self, vip: &'a VipRequest) -> DriverFuture<'a, Port> {
        Box::pin(self.vip(vip))
    }

    fn deallocate_vip<'a>(&'a self, port_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            match self.ports.get(port_id).await? {
                // Never a port this driver did not allocate as a VIP.
                Some(r) if !r.owner.starts_with("vip:") => {
                    tracing::warn!(port_id, owner = r.owner, "not deallocating a port that is not a VIP");
                    Ok(())
                }
                _ => self.ports.delete(port_id).await,
            }
        })
    }

    fn allocate_vrrp_port<'a>(&'a self, amphora_id: &'a str, vip: &'a Port) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            self.ensure_fabric().await?;
            let subnet_id = if vip.subnet_id.is_empty() {
                let record = self.ports.get(&vip.id).await?.ok_or_else(|| PortError::UnknownPort(vip.id.clone()))?;
                record.port.subnet_id
            } else {
                vip.subnet_id.clone()
            };
            Ok(self.ports.allocate(&subnet_id, &format!("vrrp:{amphora_id}"), None).await?.port)
        })
    }

    fn delete_port<'a>(&'a self, port_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(self.ports.delete(port_id))
    }

    fn get_subnet<'a>(&'a self, subnet_id: &'a str) -> DriverFuture<'a, Subnet> {
        Box::pin(async move {
            let (network, subnet) = self.ports.subnet(subnet_id)?;
            Ok(Subnet {
                id: subnet.id.clone(),
                network_id: network.id.clone(),
                cidr: subnet.cidr.to_string(),
                gateway_ip: subnet.gateway.map(|g| g.to_string()),
                host_routes: Vec::new(),
                mtu: self.ports.fabric.settings.mtu,
            })
        })
    }

    fn allocate_port<'a>(&'a self, network_or_subnet_id: &'a str, owner: &'a str) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            self.ensure_fabric().await?;
            let subnet_id = self.ports.resolve(network_or_subnet_id)?.id.clone();
            Ok(self.ports.allocate(&subnet_id, owner, None).await?.port)
        })
    }

    fn owned_ports<'a>(&'a self, owner_prefix: &'a str) -> DriverFuture<'a, Vec<(String, Port)>> {
        Box::pin(async move {
            Ok(self.ports.by_owner_prefix(owner_prefix).await?.into_iter().map(|r| (r.owner, r.port)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str, gateway: Option<&str>) -> SubnetSettings {
        SubnetSettings {
            id: "s".into(),
            cidr: cidr.parse().expect("cidr"),
            gateway: gateway.map(|g| g.parse().expect("ip")),
        }
    }

    #[test]
    fn picks_skip_network_broadcast_gateway_and_used() {
        let s = subnet("10.9.8.0/29", Some("10.9.8.1"));
        // Hosts .1-.6; .1 is the gateway, .2-.5 are used: only .6 is left.
        let used: HashSet<IpAddr> = (2..=5).map(|h| IpAddr::from([10, 9, 8, h])).collect();
        for _ in 0..20 {
            assert_eq!(pick_address(&s, &used), Some(IpAddr::from([10, 9, 8, 6])));
        }
        let mut full = used.clone();
        full.insert(IpAddr::from([10, 9, 8, 6]));
        assert_eq!(pick_address(&s, &full), None);
    }

    #[test]
    fn picks_in_large_ipv6_subnets() {
        let s = subnet("2001:db8:0:1::/64", Some("2001:db8:0:1::1"));
        let ip = pick_address(&s, &HashSet::new()).expect("an address");
        assert!(s.cidr.contains(&ip) && ip != s.cidr.network() && Some(ip) != s.gateway, "{ip}");
    }

    #[test]
    fn fabric_links_fit_an_interface_name() {
        let name = fabric_link("0f1e2d3c-4b5a-4000-8000-123456789abc");
        assert_eq!(name, "p0f1e2d3c4b5a4");
        assert!(name.len() <= 15);
    }
}
