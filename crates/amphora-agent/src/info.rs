//! The amphora's description of itself: `/info` and `/1.0/details`.

use std::collections::BTreeMap;
use std::sync::Arc;

use amphora_proto::{ApiVersion, Details, Disk, Info, TopologyStatus, VrrpRole};

use crate::config::Topology;
use crate::lb::LbService;
use crate::net::NetService;
use crate::settings::LiveConfig;
use crate::system::packages::{Packages, TRACKED};
use crate::system::procfs;
use crate::system::sampler::Sampler;
use crate::topology::TopologyService;
use crate::vrrp::Vrrp;

/// The services whose state the amphora describes.
#[derive(Debug)]
pub struct Sources {
    pub lbs: Arc<LbService>,
    pub net: Arc<NetService>,
    pub vrrp: Arc<Vrrp>,
    pub topology: Arc<TopologyService>,
}

#[derive(Debug)]
pub struct InfoService {
    amphora_id: String,
    settings: Arc<LiveConfig>,
    packages: Packages,
    sampler: Arc<Sampler>,
    lbs: Arc<LbService>,
    net: Arc<NetService>,
    vrrp: Arc<Vrrp>,
    topology: Arc<TopologyService>,
}

impl InfoService {
    pub fn new(
        amphora_id: String,
        settings: Arc<LiveConfig>,
        packages: Packages,
        sampler: Arc<Sampler>,
        sources: Sources,
    ) -> Self {
        let Sources { lbs, net, vrrp, topology } = sources;
        Self { amphora_id, settings, packages, sampler, lbs, net, vrrp, topology }
    }

    /// Reads the package database now rather than on the first request.
    pub fn warm_up(&self) {
        self.packages.versions();
    }

    pub fn info(&self) -> Info {
        let versions = self.packages.versions();
        Info {
            hostname: hostname(),
            uuid: self.amphora_id.clone(),
            haproxy_version: versions.get("haproxy").cloned(),
            api_version: ApiVersion::V1_0,
            keepalived_version: versions.get("keepalived").cloned(),
            ipvsadm_version: versions.get("ipvsadm").cloned(),
        }
    }

    /// ACTIVE_STANDBY when configured so or when keepalived has a
    /// configuration; the VRRP role is MASTER while keepalived has put its
    /// virtual addresses on this amphora.
    async fn topology(&self) -> (Topology, Option<&'static str>) {
        let configured = self.settings.current().controller_worker.loadbalancer_topology;
        if !self.vrrp.configured() {
            return (configured, None);
        }
        let virtual_addresses = self.vrrp.virtual_addresses();
        let master = !virtual_addresses.is_empty()
            && self.vrrp.running_pid().is_some()
            && !self.net.present(&virtual_addresses).await.is_empty();
        (Topology::ActiveStandby, Some(if master { "MASTER" } else { "BACKUP" }))
    }

    pub async fn details(&self) -> Details {
        let info = self.info();
        let (topology, role) = self.topology().await;
        let versions = self.packages.versions();
        let rates = self.sampler.rates();
        let memory = procfs::parse_meminfo(&read("/proc/meminfo"));
        Details {
            info,
            network_tx: rates.network_tx,
            network_rx: rates.network_rx,
            networks: rates.networks,
            active: role.is_none_or(|r| r == "MASTER"),
            haproxy_count: self.lbs.running_count() as u32,
            lvs_listener_process_count: 0,
            cpu_count: cpu_count(),
            cpu: rates.cpu,
            memory,
            disk: root_disk(),
            load: procfs::parse_loadavg(&read("/proc/loadavg")),
            active_tuned_profiles: read("/etc/tuned/active_profile").trim().to_owned(),
            topology: topology.to_v1(),
            vrrp_role: role.map(VrrpRole::from),
            topology_status: TopologyStatus::from(self.topology.status()),
            listeners: self.lbs.listener_ids(),
            packages: TRACKED
                .iter()
                .filter_map(|name| versions.get(*name).map(|v| BTreeMap::from([(name.to_string(), v.clone())])))
                .collect(),
            certs_in_memory: self.lbs.certificates_in_memory(),
        }
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

fn cpu_count() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN).ok().flatten().map(|n| n as u32).unwrap_or(1)
}

/// Root file system usage in kilobytes.
fn root_disk() -> Disk {
    match nix::sys::statvfs::statvfs("/") {
        Ok(st) => {
            let fragment = st.fragment_size();
            Disk {
                used: (st.blocks() - st.blocks_free()) * fragment / 1024,
                available: st.blocks_available() * fragment / 1024,
            }
        }
        Err(_) => Disk { used: 0, available: 0 },
    }
}
