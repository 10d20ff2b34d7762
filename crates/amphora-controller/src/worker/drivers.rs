//! What flows do outside the database: compute (the amphora VMs), network
//! (VIP and VRRP ports) and amphora (the agent's API), as object-safe
//! traits so the real drivers (Nova/Neutron/agent client, or local netns)
//! slot in behind them.
//!
//! Every call may be repeated after a crash (a step can run again when the
//! worker died between the call and its progress write), so drivers treat
//! deletes of unknown objects as success, and creations are keyed by the
//! object they are for: a real `create` should find the instance it made
//! for the same amphora (e.g. by name) before booting another, and
//! `allocate_vip` / `allocate_vrrp_port` the port made for the same load
//! balancer / amphora. `deallocate_vip` must leave alone a port the user
//! brought (`vip_port_id` given at create), as upstream's network driver does.
//!
//! The `noop` drivers are upstream's idea (its API tests run on them): they
//! do nothing but wait `[noop_drivers] step_delay` per call, so clients see
//! the PENDING states, and hand out addresses from the documentation
//! networks (TEST-NET-1/2/3, RFC 5737).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::future::BoxFuture;
use sqlx::Row;

use crate::config::{Config, Topology};
use crate::db::{Db, new_id};

pub type DriverFuture<'a, T> = BoxFuture<'a, anyhow::Result<T>>;

/// What the compute service tells about a running amphora.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeInfo {
    pub lb_network_ip: String,
    pub cached_zone: Option<String>,
    pub image_id: Option<String>,
    pub compute_flavor: Option<String>,
}

/// An allocated port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: String,
    pub address: String,
    pub network_id: String,
    /// What the agent finds the port by once it is attached.
    pub mac_address: String,
    pub subnet_id: String,
}

/// A subnet as the agent's plug vip / plug network bodies need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    /// (destination CIDR, next hop).
    pub host_routes: Vec<(String, String)>,
    pub mtu: u32,
}

/// What the controller hands an amphora at boot (upstream: Nova's config
/// drive).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BootFiles {
    /// The upstream-format amphora-agent.conf the controller rendered.
    pub agent_config: String,
    /// The amphora's certificate and private key.
    pub server_pem: String,
    /// The CA that signs the controller's client certificate.
    pub client_ca_pem: String,
    /// When `server_pem` expires (recorded as the amphora's
    /// `cert_expiration`); `None` when no certificate was made (noop).
    pub cert_expiration: Option<time::OffsetDateTime>,
}

impl std::fmt::Debug for BootFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("BootFiles").field("agent_config", &self.agent_config.len()).finish_non_exhaustive()
    }
}

/// The VIP a load balancer asks for (the API's fields, possibly empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipRequest {
    pub load_balancer_id: String,
    pub address: Option<String>,
    pub port_id: Option<String>,
    pub subnet_id: Option<String>,
    pub network_id: Option<String>,
}

/// The amphora fields the agent calls need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmphoraTarget {
    pub id: String,
    pub load_balancer_id: Option<String>,
    pub compute_id: Option<String>,
    pub lb_network_ip: Option<String>,
    pub vrrp_ip: Option<String>,
    pub ha_ip: Option<String>,
    pub role: Option<String>,
}

pub trait ComputeDriver: Send + Sync + std::fmt::Debug {
    /// Boots an amphora with its boot files; returns its compute id.
    fn create<'a>(&'a self, amphora_id: &'a str, boot: &'a BootFiles) -> DriverFuture<'a, String>;
    /// Waits until the instance runs; returns its management address etc.
    fn wait_active<'a>(&'a self, compute_id: &'a str) -> DriverFuture<'a, ComputeInfo>;
    /// Deletes an instance (success when it is already gone).
    fn delete<'a>(&'a self, compute_id: &'a str) -> DriverFuture<'a, ()>;
    /// Attaches a port (Nova's interface attach): it appears inside the
    /// instance with the port's MAC. Repeating it is harmless.
    fn attach_port<'a>(&'a self, compute_id: &'a str, port: &'a Port) -> DriverFuture<'a, ()>;
    /// Detaches a port (success when it is not attached).
    fn detach_port<'a>(&'a self, compute_id: &'a str, port: &'a Port) -> DriverFuture<'a, ()>;
    /// The agent's `base_path` inside the instance when it is not
    /// `[haproxy_amphora] base_path` (local amphorae share the host's
    /// filesystem, so each has its own); rendered files name it.
    fn agent_base_path(&self, _compute_id: &str) -> Option<String> {
        None
    }
}

pub trait NetworkDriver: Send + Sync + std::fmt::Debug {
    /// Allocates (or adopts) a load balancer's VIP port.
    fn allocate_vip<'a>(&'a self, vip: &'a VipRequest) -> DriverFuture<'a, Port>;
    /// Releases a VIP port this driver allocated.
    fn deallocate_vip<'a>(&'a self, port_id: &'a str) -> DriverFuture<'a, ()>;
    /// An amphora's base (VRRP) port on the VIP network.
    fn allocate_vrrp_port<'a>(&'a self, amphora_id: &'a str, vip: &'a Port) -> DriverFuture<'a, Port>;
    /// Deletes a port (success when it is already gone).
    fn delete_port<'a>(&'a self, port_id: &'a str) -> DriverFuture<'a, ()>;
    /// A subnet's addressing.
    fn get_subnet<'a>(&'a self, subnet_id: &'a str) -> DriverFuture<'a, Subnet>;
    /// A port on a network or subnet (member networks), for `owner` (the
    /// same owner gets the same port back).
    fn allocate_port<'a>(&'a self, network_or_subnet_id: &'a str, owner: &'a str) -> DriverFuture<'a, Port>;
    /// The ports `allocate_port` made for owners starting with
    /// `owner_prefix`, with their owners (upstream asks Nova for the
    /// instance's interfaces; an owner also finds a port allocated but never
    /// attached). A driver that keeps no ports (noop) has none.
    fn owned_ports<'a>(&'a self, _owner_prefix: &'a str) -> DriverFuture<'a, Vec<(String, Port)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

pub trait AmphoraDriver: Send + Sync + std::fmt::Debug {
    /// What a new amphora boots with: its rendered agent configuration,
    /// its server certificate and the CA of the controller's client
    /// certificate (upstream: Nova's config drive).
    fn boot_files<'a>(&'a self, amphora_id: &'a str, topology: Topology) -> DriverFuture<'a, BootFiles>;
    /// Connectivity: the agent answers (`GET /`, `GET /1.0/info`).
    fn get_info<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()>;
    fn finalize<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()>;
    /// `POST /1.0/plug/vip/{vip}`: the VIP on the amphora's VRRP port
    /// (`vrrp`, attached already), on `subnet`.
    fn plug_vip<'a>(
        &'a self,
        amp: &'a AmphoraTarget,
        vip: &'a Port,
        vrrp: &'a Port,
        subnet: &'a Subnet,
    ) -> DriverFuture<'a, ()>;
    /// `POST /1.0/plug/network`: a member network's port (attached
    /// already) on `subnet`.
    fn plug_network<'a>(&'a self, amp: &'a AmphoraTarget, port: &'a Port, subnet: &'a Subnet) -> DriverFuture<'a, ()>;
    /// Renders and uploads the load balancer's haproxy configuration, then
    /// reloads it.
    fn upload_config<'a>(&'a self, amp: &'a AmphoraTarget, load_balancer_id: &'a str) -> DriverFuture<'a, ()>;
    /// Uploads keepalived's configuration and starts VRRP; returns the VRRP
    /// interface name. `vip_subnet` is the VIP's subnet (keepalived's
    /// routes).
    fn update_vrrp<'a>(
        &'a self,
        amp: &'a AmphoraTarget,
        load_balancer_id: &'a str,
        vip_subnet: &'a Subnet,
    ) -> DriverFuture<'a, String>;
    /// `PUT /1.0/config`.
    fn update_agent_config<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()>;
    /// Issues a new server certificate and installs it (`PUT
    /// /1.0/certificate`); returns its expiry.
    fn rotate_certificate<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, time::OffsetDateTime>;
    /// Forgets what the driver keeps for a deleted amphora (connections).
    fn forget(&self, _amphora_id: &str) {}
}

/// The three drivers a worker uses.
#[derive(Debug, Clone)]
pub struct Drivers {
    pub compute: Arc<dyn ComputeDriver>,
    pub network: Arc<dyn NetworkDriver>,
    pub amphora: Arc<dyn AmphoraDriver>,
}

impl Drivers {
    /// The drivers `[controller_worker]` names.
    pub fn from_config(db: &Db, config: &Config) -> anyhow::Result<Drivers> {
        let delay = config.noop.step_delay;
        let w = &config.worker;
        let compute: Arc<dyn ComputeDriver> = match w.compute_driver.as_str() {
            "compute_noop_driver" | "noop" => Arc::new(NoopCompute::new(db.clone(), delay, config)),
            "local" => Arc::new(crate::local::LocalCompute::new(db.clone(), config)?),
            other => bail!("[controller_worker] compute_driver = {other} is not available in this build"),
        };
        let network: Arc<dyn NetworkDriver> = match w.network_driver.as_str() {
            "network_noop_driver" | "noop" => Arc::new(NoopNetwork::new(db.clone(), delay)),
            "local" => Arc::new(crate::local::LocalNetwork::new(db.clone(), config)),
            other => bail!("[controller_worker] network_driver = {other} is not available in this build"),
        };
        let amphora: Arc<dyn AmphoraDriver> = match w.amphora_driver.as_str() {
            "amphora_noop_driver" | "noop" => Arc::new(NoopAmphora { delay }),
            "amphora_haproxy_rest_driver" | "rest" => {
                Arc::new(super::rest_driver::RestAmphora::new(db.clone(), Arc::new(config.clone()), compute.clone())?)
            }
            other => bail!("[controller_worker] amphora_driver = {other} is not available in this build"),
        };
        Ok(Drivers { compute, network, amphora })
    }

    /// The noop drivers with the given delay per call.
    pub fn noop(db: &Db, config: &Config) -> Drivers {
        let delay = config.noop.step_delay;
        Drivers {
            compute: Arc::new(NoopCompute::new(db.clone(), delay, config)),
            network: Arc::new(NoopNetwork::new(db.clone(), delay)),
            amphora: Arc::new(NoopAmphora { delay }),
        }
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Addresses handed out by this process and not yet visible in the
/// database, so two flows running at once do not get the same one.
#[derive(Debug, Default)]
struct Reserved(Mutex<HashSet<Ipv4Addr>>);

impl Reserved {
    /// Picks a free host address of `net`/24 that is neither in `used` nor
    /// reserved, and reserves it.
    fn pick(&self, net: [u8; 3], used: &HashSet<Ipv4Addr>) -> anyhow::Result<Ipv4Addr> {
        let mut reserved = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let free: Vec<Ipv4Addr> = (2..=254u8)
            .map(|h| Ipv4Addr::new(net[0], net[1], net[2], h))
            .filter(|a| !used.contains(a) && !reserved.contains(a))
            .collect();
        if free.is_empty() {
            // Forget what the database shows as taken already, then retry.
            reserved.retain(|a| !used.contains(a));
            bail!("noop network: no free address left in {}.{}.{}.0/24", net[0], net[1], net[2]);
        }
        let pick = free[(uuid::Uuid::new_v4().as_u128() % free.len() as u128) as usize];
        reserved.insert(pick);
        if reserved.len() > 128 {
            // Old reservations are in the database by now.
            reserved.retain(|a| !used.contains(a));
        }
        Ok(pick)
    }
}

/// The addresses of `net`/24 that `column` of the live rows of `table`
/// (`live`: a condition) holds. The engine filters: the other rows (a
/// large deployment's, or another driver's) never leave it.
async fn used_addresses(
    db: &Db,
    table: &str,
    column: &str,
    live: &str,
    net: [u8; 3],
) -> anyhow::Result<HashSet<Ipv4Addr>> {
    // '.' is literal in LIKE; only '%' and '_' are not.
    let sql = format!("SELECT {column} FROM {table} WHERE {live} AND {column} LIKE $1");
    let pattern = format!("{}.{}.{}.%", net[0], net[1], net[2]);
    let rows = sqlx::query(&sql).bind(pattern).fetch_all(&db.pool).await?;
    let mut out = HashSet::new();
    for r in rows {
        if let Some(a) = r.try_get::<Option<String>, _>(0)?.and_then(|s| s.parse().ok()) {
            out.insert(a);
        }
    }
    Ok(out)
}

/// upstream's `compute_noop_driver`: an instance is a UUID; its
/// management address comes from 192.0.2.0/24.
#[derive(Debug)]
pub struct NoopCompute {
    db: Db,
    delay: Duration,
    image_id: String,
    flavor_id: String,
    reserved: Reserved,
}

impl NoopCompute {
    pub fn new(db: Db, delay: Duration, config: &Config) -> NoopCompute {
        NoopCompute {
            db,
            delay,
            image_id: config.worker.amp_image_id.clone().unwrap_or_else(|| "noop-image".into()),
            flavor_id: config.worker.amp_flavor_id.clone().unwrap_or_else(|| "noop-flavor".into()),
            reserved: Reserved::default(),
        }
    }
}

impl ComputeDriver for NoopCompute {
    fn create<'a>(&'a self, _amphora_id: &'a str, _boot: &'a BootFiles) -> DriverFuture<'a, String> {
        Box::pin(async move {
            pause(self.delay).await;
            Ok(new_id())
        })
    }

    fn wait_active<'a>(&'a self, _compute_id: &'a str) -> DriverFuture<'a, ComputeInfo> {
        Box::pin(async move {
            pause(self.delay).await;
            let net = [192, 0, 2];
            let used = used_addresses(&self.db, "amphora", "lb_network_ip", "status <> 'DELETED'", net).await?;
            let ip = self.reserved.pick(net, &used)?;
            Ok(ComputeInfo {
                lb_network_ip: ip.to_string(),
                cached_zone: Some("nova".into()),
                image_id: Some(self.image_id.clone()),
                compute_flavor: Some(self.flavor_id.clone()),
            })
        })
    }

    fn delete<'a>(&'a self, _compute_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            pause(self.delay).await;
            Ok(())
        })
    }

    fn attach_port<'a>(&'a self, _compute_id: &'a str, _port: &'a Port) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn detach_port<'a>(&'a self, _compute_id: &'a str, _port: &'a Port) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }
}

/// A MAC in OpenStack's `fa:16:3e` range.
pub fn random_mac() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// upstream's `network_noop_driver`: VIPs from 203.0.113.0/24, VRRP ports
/// from 198.51.100.0/24, unique among live objects.
#[derive(Debug)]
pub struct NoopNetwork {
    db: Db,
    delay: Duration,
    vips: Reserved,
    vrrp: Reserved,
}

impl NoopNetwork {
    pub fn new(db: Db, delay: Duration) -> NoopNetwork {
        NoopNetwork { db, delay, vips: Reserved::default(), vrrp: Reserved::default() }
    }

    /// A free address of 198.51.100.0/24, the network of VRRP and member
    /// ports; `what` names the allocation in the error.
    async fn pick_port_address(&self, what: &'static str) -> anyhow::Result<Ipv4Addr> {
        let net = [198, 51, 100];
        let used = used_addresses(&self.db, "amphora", "vrrp_ip", "status <> 'DELETED'", net).await?;
        self.vrrp.pick(net, &used).context(what)
    }
}

impl NetworkDriver for NoopNetwork {
    fn allocate_vip<'a>(&'a self, vip: &'a VipRequest) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            pause(self.delay).await;
            let address = match &vip.address {
                Some(a) => a.clone(),
                None => {
                    let net = [203, 0, 113];
                    let live = "provisioning_status <> 'DELETED'";
                    let used = used_addresses(&self.db, "load_balancer", "vip_address", live, net).await?;
                    self.vips.pick(net, &used).context("allocating a VIP")?.to_string()
                }
            };
            Ok(Port {
                id: vip.port_id.clone().unwrap_or_else(new_id),
                address,
                network_id: vip.network_id.clone().unwrap_or_else(new_id),
                mac_address: random_mac(),
                subnet_id: vip.subnet_id.clone().unwrap_or_else(new_id),
            })
        })
    }

    fn deallocate_vip<'a>(&'a self, _port_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            pause(self.delay).await;
            Ok(())
        })
    }

    fn allocate_vrrp_port<'a>(&'a self, _amphora_id: &'a str, vip: &'a Port) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            pause(self.delay).await;
            let address = self.pick_port_address("allocating a VRRP port").await?;
            Ok(Port {
                id: new_id(),
                address: address.to_string(),
                network_id: vip.network_id.clone(),
                mac_address: random_mac(),
                subnet_id: vip.subnet_id.clone(),
            })
        })
    }

    fn delete_port<'a>(&'a self, _port_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            pause(self.delay).await;
            Ok(())
        })
    }

    fn get_subnet<'a>(&'a self, subnet_id: &'a str) -> DriverFuture<'a, Subnet> {
        Box::pin(async move {
            pause(self.delay).await;
            // Like the noop lookups of api/network.rs: every id is a subnet.
            Ok(Subnet {
                id: subnet_id.to_owned(),
                network_id: subnet_id.to_owned(),
                cidr: "203.0.113.0/24".into(),
                gateway_ip: None,
                host_routes: Vec::new(),
                mtu: 1500,
            })
        })
    }

    fn allocate_port<'a>(&'a self, network_or_subnet_id: &'a str, _owner: &'a str) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            pause(self.delay).await;
            let address = self.pick_port_address("allocating a port").await?;
            Ok(Port {
                id: new_id(),
                address: address.to_string(),
                network_id: network_or_subnet_id.to_owned(),
                mac_address: random_mac(),
                subnet_id: network_or_subnet_id.to_owned(),
            })
        })
    }
}

/// upstream's `amphora_noop_driver`: every agent call succeeds after the
/// delay.
#[derive(Debug)]
pub struct NoopAmphora {
    pub delay: Duration,
}

impl AmphoraDriver for NoopAmphora {
    fn boot_files<'a>(&'a self, _amphora_id: &'a str, _topology: Topology) -> DriverFuture<'a, BootFiles> {
        Box::pin(async move {
            pause(self.delay).await;
            Ok(BootFiles::default())
        })
    }

    fn get_info<'a>(&'a self, _amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn finalize<'a>(&'a self, _amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn plug_vip<'a>(
        &'a self,
        _amp: &'a AmphoraTarget,
        _vip: &'a Port,
        _vrrp: &'a Port,
        _subnet: &'a Subnet,
    ) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn plug_network<'a>(
        &'a self,
        _amp: &'a AmphoraTarget,
        _port: &'a Port,
        _subnet: &'a Subnet,
    ) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn upload_config<'a>(&'a self, _amp: &'a AmphoraTarget, _lb: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn update_vrrp<'a>(
        &'a self,
        _amp: &'a AmphoraTarget,
        _lb: &'a str,
        _subnet: &'a Subnet,
    ) -> DriverFuture<'a, String> {
        Box::pin(async move {
            pause(self.delay).await;
            Ok("eth1".to_owned())
        })
    }

    fn update_agent_config<'a>(&'a self, _amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(pause_ok(self.delay))
    }

    fn rotate_certificate<'a>(&'a self, _amp: &'a AmphoraTarget) -> DriverFuture<'a, time::OffsetDateTime> {
        Box::pin(async move {
            pause(self.delay).await;
            // The noop certificate generator's validity: two years.
            Ok(time::OffsetDateTime::now_utc() + time::Duration::days(730))
        })
    }
}

async fn pause_ok(delay: Duration) -> anyhow::Result<()> {
    pause(delay).await;
    Ok(())
}
