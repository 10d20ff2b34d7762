//! The amphora's description of itself: `/info` and `/1.0/details`.
//!
//! Both are cheap to serve: package versions are cached until the package
//! database changes (see `system::packages`), and the machine's figures
//! (CPU, memory, load, disk, network) are the sampler's latest reading, at
//! most `system::sampler::INTERVAL` (5 s) old, so a request reads no `/proc`
//! or `/sys` file. Load balancer figures (listeners, running haproxies) and
//! the VRRP role are read live.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use amphora_proto::{ApiVersion, Details, Info, TopologyStatus, VrrpRole};

use crate::config::Topology;
use crate::lb::LbService;
use crate::lvs::LvsService;
use crate::net::NetService;
use crate::settings::LiveConfig;
use crate::system::packages::{Packages, TRACKED, Versions};
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
    pub lvs: Arc<LvsService>,
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
    lvs: Arc<LvsService>,
    /// `/info`'s body as last served, with what it was made from.
    info_body: ArcSwapOption<InfoBody>,
}

/// A serialised `/info` answer and its inputs: it is served again while
/// the package versions (the same cached map) and the hostname are the
/// same, so a request neither builds nor serialises anything.
#[derive(Debug)]
struct InfoBody {
    versions: Arc<Versions>,
    hostname: String,
    json: Bytes,
}

impl InfoService {
    pub fn new(
        amphora_id: String,
        settings: Arc<LiveConfig>,
        packages: Packages,
        sampler: Arc<Sampler>,
        sources: Sources,
    ) -> Self {
        let Sources { lbs, net, vrrp, topology, lvs } = sources;
        Self {
            amphora_id,
            settings,
            packages,
            sampler,
            lbs,
            net,
            vrrp,
            topology,
            lvs,
            info_body: ArcSwapOption::empty(),
        }
    }

    /// Reads the package database now rather than on the first request.
    pub async fn warm_up(&self) {
        self.packages.versions().await;
    }

    pub async fn info(&self) -> Info {
        let versions = self.packages.versions().await;
        self.info_from(&versions, hostname())
    }

    /// `/info` as JSON; the same bytes as serialising [`Self::info`].
    pub async fn info_json(&self) -> Bytes {
        let versions = self.packages.versions().await;
        let hostname = hostname();
        if let Some(cached) = self.info_body.load().as_ref()
            && Arc::ptr_eq(&cached.versions, &versions)
            && cached.hostname == hostname
        {
            return cached.json.clone();
        }
        let info = self.info_from(&versions, hostname.clone());
        // Serialising a struct of strings cannot fail.
        let json = Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
        self.info_body.store(Some(Arc::new(InfoBody { versions, hostname, json: json.clone() })));
        json
    }

    fn info_from(&self, versions: &Versions, hostname: String) -> Info {
        Info {
            hostname,
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
        let versions = self.packages.versions().await;
        let info = self.info_from(&versions, hostname());
        let (topology, role) = self.topology().await;
        let snapshot = self.sampler.snapshot();
        let (rates, machine) = (&snapshot.rates, &snapshot.machine);
        let (mut listeners, running) = self.lbs.listener_ids_and_running_count();
        listeners.extend(self.lvs.listeners().iter().map(|id| id.to_string()));
        listeners.sort();
        listeners.dedup();
        Details {
            info,
            network_tx: rates.network_tx,
            network_rx: rates.network_rx,
            networks: rates.networks.clone(),
            active: role.is_none_or(|r| r == "MASTER"),
            haproxy_count: running as u32,
            lvs_listener_process_count: self.lvs.running_count() as u32,
            cpu_count: machine.cpu_count,
            cpu: rates.cpu,
            memory: machine.memory,
            disk: machine.disk,
            load: machine.load,
            active_tuned_profiles: machine.active_tuned_profiles.clone(),
            topology: topology.to_v1(),
            vrrp_role: role.map(VrrpRole::from),
            topology_status: TopologyStatus::from(self.topology.status()),
            listeners,
            packages: TRACKED
                .iter()
                .filter_map(|name| versions.get(*name).map(|v| BTreeMap::from([(name.to_string(), v.clone())])))
                .collect(),
            certs_in_memory: self.lbs.certificates_in_memory(),
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}
