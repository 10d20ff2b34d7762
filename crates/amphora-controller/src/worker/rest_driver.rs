//! The amphora driver that talks to our agent (or upstream's) over its REST
//! API: upstream's `amphora_haproxy_rest_driver`, on `amphora-client`.
//!
//! Upstream opens a fresh TLS connection per call; here each amphora keeps
//! its connections (one pool per amphora id, replaced when a failover gives
//! the id a new address). A new amphora is waited for with
//! `connection_max_retries` x `connection_retry_interval` (it may still be
//! booting); calls to amphorae that already answered use the shorter
//! `active_connection_*` budget, as upstream's driver does.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use amphora_client::{Client, Clients, Credentials, Timeouts};
use amphora_proto::net::{FixedIpRequest, HostRouteRequest, PlugNetworkRequest, PlugVipRequest};
use amphora_proto::{Action, ListenerProtocol};
use anyhow::{Context as _, anyhow};

use super::drivers::{AmphoraDriver, AmphoraTarget, BootFiles, ComputeDriver, DriverFuture, Port, Subnet};
use crate::certs::Ca;
use crate::config::{Config, Topology};
use crate::db::Db;
use crate::render;
use crate::render::model::{self, AmphoraView, LoadBalancer};

#[derive(Debug)]
pub struct RestAmphora {
    db: Db,
    config: Arc<Config>,
    ca: Arc<Ca>,
    compute: Arc<dyn ComputeDriver>,
    clients: Clients,
    /// Timeouts towards amphorae that answered before.
    active: Timeouts,
}

impl RestAmphora {
    /// Loads (or creates) the CA and the controller's client certificate.
    /// `compute` tells where each amphora's agent keeps its files.
    pub fn new(db: Db, config: Arc<Config>, compute: Arc<dyn ComputeDriver>) -> anyhow::Result<RestAmphora> {
        let certs = &config.certificates;
        let ca = Ca::load_or_create(certs)?;
        let client_pem = ca.ensure_client_cert(&certs.client_cert)?;
        let server_ca = std::fs::read(&certs.server_ca)
            .with_context(|| format!("reading [haproxy_amphora] server_ca {}", certs.server_ca.display()))?;
        let credentials = Credentials::from_pem(&server_ca, client_pem.as_bytes())
            .map_err(|e| anyhow!("the controller's certificates are unusable: {e}"))?;
        let c = &config.amphora_connection;
        let fresh = Timeouts {
            connect: c.rest_request_conn_timeout,
            read: c.rest_request_read_timeout,
            connection_max_retries: c.connection_max_retries,
            connection_retry_interval: c.connection_retry_interval,
        };
        let active = Timeouts {
            connection_max_retries: c.active_connection_max_retries,
            connection_retry_interval: c.active_connection_retry_interval,
            ..fresh
        };
        Ok(RestAmphora { db, ca: Arc::new(ca), compute, clients: Clients::new(credentials, fresh), active, config })
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// The client of an amphora with the budget for new amphorae.
    fn client(&self, amp: &AmphoraTarget) -> anyhow::Result<Client> {
        let ip = amp.lb_network_ip.as_deref().ok_or_else(|| anyhow!("amphora {} has no management address", amp.id))?;
        let ip: IpAddr = ip.parse().with_context(|| format!("amphora {} management address {ip:?}", amp.id))?;
        let addr = SocketAddr::new(ip, self.config.haproxy_amphora.bind_port);
        Ok(self.clients.get(&amp.id, addr)?)
    }

    /// The client of an amphora that answered before.
    fn active_client(&self, amp: &AmphoraTarget) -> anyhow::Result<Client> {
        Ok(self.client(amp)?.with_timeouts(self.active))
    }

    async fn load(&self, load_balancer_id: &str) -> anyhow::Result<LoadBalancer> {
        model::load(&self.db, load_balancer_id)
            .await?
            .ok_or_else(|| anyhow!("load balancer {load_balancer_id} not found"))
    }

    /// The agent's base path on this amphora.
    fn base_path(&self, amp: &AmphoraTarget) -> String {
        amp.compute_id
            .as_deref()
            .and_then(|c| self.compute.agent_base_path(c))
            .unwrap_or_else(|| self.config.haproxy_amphora.base_path.clone())
    }
}

impl RestAmphora {
    /// haproxy's part of an update: the combined file of the load
    /// balancer's TCP-based listeners, uploaded and reloaded; or, when it
    /// has none, its haproxy removed (as upstream's driver does).
    async fn update_haproxy(&self, client: &Client, amp: &AmphoraTarget, mut lb: LoadBalancer) -> anyhow::Result<()> {
        let load_balancer_id = lb.id.clone();
        if !render::haproxy::needs_haproxy(&lb) {
            return match client.delete_load_balancer(&load_balancer_id).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e).context("DELETE load balancer"),
            };
        }
        // What upstream's driver asks first: the haproxy version and the
        // amphora's resources change the file.
        let info = client.info().await.context("GET /1.0/info")?;
        let details = client.details().await.context("GET /1.0/details")?;
        if let Some(view) = lb.amphorae.iter_mut().find(|a| a.id == amp.id) {
            view.haproxy_version = info.haproxy_version.clone();
        }
        let this = this_amphora(&lb, &amp.id)?;
        let mut options = render::haproxy::HaproxyOptions::from_config(&self.config);
        let base = self.base_path(amp);
        options.base_cert_dir = format!("{base}/certs");
        options.base_path = base;
        options.details = Some(render::haproxy::AmphoraDetails {
            cpu_count: Some(details.cpu_count),
            active_tuned_profiles: Some(details.active_tuned_profiles.clone()),
            memory: Some((details.memory.free as i64, details.memory.buffers as i64, details.memory.cached as i64)),
        });
        let text = render::haproxy::combined(&lb, this, &options)?;
        client.upload_config(&load_balancer_id, text).await.context("PUT haproxy configuration")?;
        client.reload(&load_balancer_id).await.context("PUT reload")?;
        Ok(())
    }

    /// LVS's part: each UDP or SCTP listener's keepalived file uploaded and
    /// reloaded (which starts it the first time), as upstream's driver does;
    /// then any UDP or SCTP listener the amphora still runs that the load
    /// balancer no longer has (deleted, or left by an interrupted flow) is
    /// removed. Upstream removes a listener only in its delete call; asking
    /// the amphora makes a resumed or repeated update leave nothing behind.
    async fn update_lvs(&self, client: &Client, amp: &AmphoraTarget, lb: &LoadBalancer) -> anyhow::Result<()> {
        let options = render::lvs::LvsOptions { base_path: self.base_path(amp) };
        let mut wanted = std::collections::BTreeSet::new();
        for listener in lb.listeners.iter().filter(|l| render::haproxy::is_lvs(&l.protocol)) {
            let text = render::lvs::listener(lb, listener, &options)?;
            client.upload_lvs_config(&listener.id, text).await.context("PUT udp_listener")?;
            client.reload(&listener.id).await.context("PUT reload (UDP/SCTP listener)")?;
            wanted.insert(listener.id.as_str());
        }
        let running = client.listeners().await.context("GET /1.0/listeners")?;
        for stale in running
            .iter()
            .filter(|l| matches!(l.kind, ListenerProtocol::Udp | ListenerProtocol::Sctp))
            .filter(|l| !wanted.contains(l.uuid.as_str()))
        {
            match client.delete_lvs_listener(&stale.uuid).await {
                Ok(_) => tracing::info!(amphora = %amp.id, listener = %stale.uuid, "removed a UDP/SCTP listener"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e).context("DELETE UDP/SCTP listener"),
            }
        }
        Ok(())
    }
}

fn this_amphora<'a>(lb: &'a LoadBalancer, id: &str) -> anyhow::Result<&'a AmphoraView> {
    lb.amphorae
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| anyhow!("amphora {id} is not part of load balancer {}", lb.id))
}

fn render_subnet(subnet: &Subnet) -> model::Subnet {
    model::Subnet {
        cidr: subnet.cidr.clone(),
        gateway_ip: subnet.gateway_ip.clone(),
        host_routes: subnet
            .host_routes
            .iter()
            .map(|(destination, nexthop)| model::HostRoute {
                destination: destination.clone(),
                nexthop: nexthop.clone(),
            })
            .collect(),
    }
}

fn host_routes(subnet: &Subnet) -> Vec<HostRouteRequest> {
    subnet
        .host_routes
        .iter()
        .map(|(destination, nexthop)| HostRouteRequest { destination: destination.clone(), nexthop: nexthop.clone() })
        .collect()
}

impl AmphoraDriver for RestAmphora {
    fn boot_files<'a>(&'a self, amphora_id: &'a str, topology: Topology) -> DriverFuture<'a, BootFiles> {
        Box::pin(async move {
            let issued = self.ca.issue_server(amphora_id)?;
            let client_ca = std::fs::read_to_string(&self.config.certificates.client_ca).with_context(|| {
                format!("reading [controller_worker] client_ca {}", self.config.certificates.client_ca.display())
            })?;
            Ok(BootFiles {
                agent_config: render::agent::agent_config(amphora_id, topology, &self.config)?,
                server_pem: issued.pem,
                client_ca_pem: client_ca,
                cert_expiration: Some(issued.not_after),
            })
        })
    }

    fn get_info<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let client = self.client(amp)?;
            client.versions().await.context("GET /")?;
            let info = client.info().await.context("GET /1.0/info")?;
            tracing::info!(amphora = %amp.id, haproxy = ?info.haproxy_version, "amphora answers");
            Ok(())
        })
    }

    fn finalize<'a>(&'a self, _amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        // Upstream's haproxy driver does nothing here either.
        Box::pin(async { Ok(()) })
    }

    fn plug_vip<'a>(
        &'a self,
        amp: &'a AmphoraTarget,
        vip: &'a Port,
        vrrp: &'a Port,
        subnet: &'a Subnet,
    ) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let request = PlugVipRequest {
                subnet_cidr: subnet.cidr.clone(),
                gateway: subnet.gateway_ip.clone(),
                mac_address: vrrp.mac_address.clone(),
                mtu: Some(subnet.mtu),
                vrrp_ip: Some(vrrp.address.clone()),
                host_routes: host_routes(subnet),
                additional_vips: Vec::new(),
            };
            match self.active_client(amp)?.plug_vip(&vip.address, &request).await {
                Ok(_) => Ok(()),
                // The agent answers 409 when the VRRP port is already in
                // the amphora namespace: an earlier attempt of this step
                // plugged it (upstream's driver skips the same way).
                Err(e) if e.is_conflict() => Ok(()),
                Err(e) => Err(e).context("POST /1.0/plug/vip"),
            }
        })
    }

    fn plug_network<'a>(&'a self, amp: &'a AmphoraTarget, port: &'a Port, subnet: &'a Subnet) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let request = PlugNetworkRequest {
                mac_address: port.mac_address.clone(),
                fixed_ips: Some(vec![FixedIpRequest {
                    ip_address: port.address.clone(),
                    subnet_cidr: Some(subnet.cidr.clone()),
                    gateway: subnet.gateway_ip.clone(),
                    host_routes: host_routes(subnet),
                }]),
                mtu: Some(subnet.mtu),
                vip_net_info: None,
            };
            match self.active_client(amp)?.plug_network(&request).await {
                Ok(_) => Ok(()),
                // Plugged by an earlier attempt of this step.
                Err(e) if e.is_conflict() => Ok(()),
                Err(e) => Err(e).context("POST /1.0/plug/network"),
            }
        })
    }

    fn upload_config<'a>(&'a self, amp: &'a AmphoraTarget, load_balancer_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let lb = self.load(load_balancer_id).await?;
            let client = self.active_client(amp)?;
            self.update_haproxy(&client, amp, lb.clone()).await?;
            self.update_lvs(&client, amp, &lb).await
        })
    }

    fn update_vrrp<'a>(
        &'a self,
        amp: &'a AmphoraTarget,
        load_balancer_id: &'a str,
        vip_subnet: &'a Subnet,
    ) -> DriverFuture<'a, String> {
        Box::pin(async move {
            let mut lb = self.load(load_balancer_id).await?;
            lb.vip_subnet = Some(render_subnet(vip_subnet));
            let this = this_amphora(&lb, &amp.id)?;
            let client = self.active_client(amp)?;
            let vrrp_ip = amp.vrrp_ip.as_deref().ok_or_else(|| anyhow!("amphora {} has no VRRP address", amp.id))?;
            let interface = client.interface(vrrp_ip).await.context("GET /1.0/interface")?.interface;
            let mut options = render::keepalived::VrrpOptions::from_config(&self.config);
            options.base_path = self.base_path(amp);
            let text = render::keepalived::vrrp(&lb, &lb.amphorae, this, &interface, &options)?;
            client.upload_vrrp_config(text).await.context("PUT /1.0/vrrp/upload")?;
            client.vrrp(Action::Start).await.context("PUT /1.0/vrrp/start")?;
            Ok(interface)
        })
    }

    fn update_agent_config<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let topology: Option<String> = match &amp.load_balancer_id {
                Some(lb) => sqlx::query_scalar("SELECT topology FROM load_balancer WHERE id = $1")
                    .bind(lb.as_str())
                    .fetch_optional(&self.db.pool)
                    .await?
                    .flatten(),
                None => None,
            };
            let topology =
                topology.as_deref().and_then(Topology::parse).unwrap_or(self.config.worker.loadbalancer_topology);
            let text = render::agent::agent_config(&amp.id, topology, &self.config)?;
            self.active_client(amp)?.update_agent_config(text).await.context("PUT /1.0/config")?;
            Ok(())
        })
    }

    fn rotate_certificate<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, time::OffsetDateTime> {
        Box::pin(async move {
            let issued = self.ca.issue_server(&amp.id)?;
            self.active_client(amp)?.rotate_server_certificate(issued.pem).await.context("PUT /1.0/certificate")?;
            Ok(issued.not_after)
        })
    }

    fn forget(&self, amphora_id: &str) {
        self.clients.forget(amphora_id);
    }
}
