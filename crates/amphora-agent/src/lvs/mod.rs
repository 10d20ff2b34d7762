//! UDP and SCTP listeners: the kernel's IPVS forwards them, configured and
//! health-checked by one keepalived per listener (checkers only) from the
//! configuration the controller renders.
//!
//! Files follow upstream's layout under `{base_path}/lvs/`: the
//! configuration as uploaded, `octavia-keepalivedlvs-{id}.conf`, the pid
//! files `octavia-keepalivedlvs-{id}.pid` and `.check.pid`, and the UDP
//! health-check script `check/udp_check.sh` the configuration names. The
//! agent's own files are in `lvs/agent/`: the configuration keepalived runs
//! (the uploaded one without its `net_namespace` line: the agent starts
//! keepalived inside the amphora namespace itself), its log, and whether it
//! should run.

pub mod config;
pub mod ipvs;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use amphora_proto::{ListenerProtocol, ListenerState, ListenerStatus};

use crate::fsutil;
use crate::ids::LbId;
pub use crate::keepalived::{Action, KeepalivedError as LvsError};
use crate::keepalived::{Files, Keepalived, Subsystem, io_error, shell_quote};
use crate::layout::{LVS_DIR, Layout};
use crate::net::NetService;
use crate::netns::Netns;
use crate::vrrp::Vrrp;
use config::LvsConfig;

const PREFIX: &str = "octavia-keepalivedlvs-";

/// A listener's statistics and pool, for the heartbeat (upstream's
/// `get_lvs_listeners_stats` and `get_lvs_listener_pool_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerReport {
    pub id: LbId,
    /// Cumulative bytes in and out, connections so far, and the current
    /// connections (the real servers' active ones).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub total_connections: u64,
    pub current_connections: u64,
    pub pool: Option<PoolReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    pub id: String,
    pub status: &'static str,
    pub members: BTreeMap<String, &'static str>,
}

#[derive(Debug)]
pub struct LvsService {
    dir: PathBuf,
    keepalived: PathBuf,
    health_checker: PathBuf,
    netns: Option<Arc<Netns>>,
    net: Option<Arc<NetService>>,
    vrrp: Option<Arc<Vrrp>>,
    instances: Mutex<HashMap<LbId, Arc<Keepalived>>>,
}

impl LvsService {
    /// `health_checker` is the `amphora-health-checker` binary the UDP
    /// check script runs.
    pub fn new(
        layout: &Layout,
        keepalived: PathBuf,
        health_checker: PathBuf,
        netns: Option<Arc<Netns>>,
        net: Option<Arc<NetService>>,
        vrrp: Option<Arc<Vrrp>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            dir: layout.base_path().join(LVS_DIR),
            keepalived,
            health_checker,
            netns,
            net,
            vrrp,
            instances: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration as uploaded (upstream's path).
    pub fn config_path(&self, id: &LbId) -> PathBuf {
        self.dir.join(format!("{PREFIX}{id}.conf"))
    }

    fn agent_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// Written when keepalived was sent a reload: it has read every
    /// configuration older than this file (or than its checker's pid file,
    /// written as it starts).
    fn reloaded_marker(&self, id: &LbId) -> PathBuf {
        self.agent_dir().join(format!("{id}.reloaded"))
    }

    fn check_script(&self) -> PathBuf {
        self.dir.join("check").join("udp_check.sh")
    }

    fn instance(&self, id: &LbId) -> Arc<Keepalived> {
        let mut instances = self.instances.lock().expect("lvs instances");
        instances
            .entry(id.clone())
            .or_insert_with(|| {
                let files = Files {
                    config: self.agent_dir().join(format!("{id}.conf")),
                    pid: self.dir.join(format!("{PREFIX}{id}.pid")),
                    subsystem_pid: self.dir.join(format!("{PREFIX}{id}.check.pid")),
                    log: self.agent_dir().join(format!("{id}.log")),
                    record: self.agent_dir().join(format!("{id}.json")),
                };
                Keepalived::new(
                    format!("keepalivedlvs {id}"),
                    self.keepalived.clone(),
                    self.netns.clone(),
                    files,
                    Subsystem::Checkers,
                )
            })
            .clone()
    }

    /// Every listener with a configuration, sorted.
    pub fn listeners(&self) -> Vec<LbId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut ids: Vec<LbId> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let id = name.to_str()?.strip_prefix(PREFIX)?.strip_suffix(".conf")?;
                LbId::parse(id).ok()
            })
            .collect();
        ids.sort();
        ids
    }

    pub fn exists(&self, id: &LbId) -> bool {
        self.config_path(id).is_file()
    }

    fn parsed(&self, id: &LbId) -> LvsConfig {
        std::fs::read_to_string(self.config_path(id)).map(|text| config::parse(&text)).unwrap_or_default()
    }

    /// `PUT /1.0/listeners/{amphora}/{id}/udp_listener`: validates the
    /// configuration with keepalived, stores it and installs the UDP
    /// check script. Returns the ETag. On failure nothing changes. A
    /// running listener keeps its configuration until it is reloaded.
    pub async fn upload(&self, id: &LbId, body: &[u8]) -> Result<String, LvsError> {
        let text = std::str::from_utf8(body).map_err(|_| LvsError::NotUtf8)?;
        // keepalived runs these as root: only the agent's own checks.
        config::check_programs(text, &self.dir.join("check")).map_err(LvsError::Invalid)?;
        let others: Vec<(String, LvsConfig)> = self
            .listeners()
            .into_iter()
            .filter(|other| other != id)
            .map(|o| (o.to_string(), self.parsed(&o)))
            .collect();
        config::check_virtual_servers(&config::parse(text), &others).map_err(LvsError::Invalid)?;
        let instance = self.instance(id);
        let mut guard = instance.exclusive().await;
        for dir in [self.agent_dir(), self.dir.join("check")] {
            fsutil::create_dir_all(&dir, 0o755).map_err(io_error(format!("cannot create {}", dir.display())))?;
        }
        self.write_check_script()?;
        let staged = self.agent_dir().join(format!("{id}.conf.new"));
        fsutil::write_atomic_async(&staged, config::runnable(text).as_bytes(), 0o644)
            .await
            .map_err(io_error("cannot stage the configuration"))?;
        if let Err(e) = instance.config_test(&staged).await {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        fsutil::write_atomic_async(&self.config_path(id), body, 0o644)
            .await
            .map_err(io_error("cannot store the configuration"))?;
        fsutil::rename_durable_async(&staged, &instance.files().config)
            .await
            .map_err(io_error("cannot install the configuration"))?;
        instance.mark_new(&mut guard).await?;
        Ok(crate::etag::md5_hex(body))
    }

    fn write_check_script(&self) -> Result<(), LvsError> {
        let script = format!(
            "#!/bin/sh\n# Written by the amphora agent: the UDP-CONNECT health check keepalived\n\
             # runs for each member (MISC_CHECK): udp_check.sh ADDRESS PORT.\n\
             exec {} udp \"$@\"\n",
            shell_quote(&self.health_checker.display().to_string())
        );
        fsutil::write_atomic(&self.check_script(), script.as_bytes(), 0o755)
            .map_err(io_error("cannot write the UDP check script"))
    }

    /// `GET /1.0/listeners/{id}/udp_listener`.
    pub fn config_text(&self, id: &LbId) -> Option<String> {
        std::fs::read_to_string(self.config_path(id)).ok()
    }

    /// Starts, stops or reloads a listener's keepalived. A reload is
    /// keepalived's own (SIGHUP): the virtual server and its connections
    /// stay; one that is not running is started. `None` when there is no
    /// such listener.
    pub async fn act(&self, id: &LbId, action: Action) -> Option<Result<Action, LvsError>> {
        if !self.exists(id) {
            return None;
        }
        let instance = self.instance(id);
        if !instance.configured() {
            // Stored by upstream's agent: derive what keepalived runs.
            if let Err(e) = self.prepare(id, &instance) {
                return Some(Err(e));
            }
        }
        if action != Action::Stop {
            self.prepare_kernel().await;
        }
        let result = instance.act(action).await;
        if let Ok(Action::Reload) = result {
            // keepalived has been told to read the configuration again.
            let marker = self.reloaded_marker(id);
            if let Err(e) = fsutil::write_atomic_async(&marker, b"", 0o644).await {
                tracing::warn!(listener = %id, error = %e, "cannot record the reload");
            }
        }
        self.notify_vrrp().await;
        if result.is_ok()
            && action != Action::Stop
            && let Some(net) = &self.net
        {
            let vips: Vec<IpAddr> = self.parsed(id).virtual_servers.iter().map(|s| s.ip()).collect();
            net.advertise_vips(&vips).await;
        }
        Some(result)
    }

    /// Loads IPVS and gives the namespace the settings upstream's boot
    /// unit gives it for LVS: forwarding, IPVS connections visible to
    /// netfilter (the masquerading needs them), and connections to a
    /// removed real server dropped at once rather than black-holed.
    async fn prepare_kernel(&self) {
        match tokio::process::Command::new("modprobe").arg("ip_vs").output().await {
            Ok(output) if !output.status.success() => tracing::warn!(
                error = String::from_utf8_lossy(&output.stderr).trim(),
                "cannot load IPVS; keepalived will report it"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot run modprobe"),
            Ok(_) => {}
        }
        const SETTINGS: &[(&str, &str)] = &[
            ("/proc/sys/net/ipv4/ip_forward", "1"),
            ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
            ("/proc/sys/net/ipv4/vs/conntrack", "1"),
            ("/proc/sys/net/ipv4/vs/expire_nodest_conn", "1"),
            ("/proc/sys/net/ipv4/vs/expire_quiescent_template", "1"),
        ];
        let apply = || {
            // /proc/sys/net belongs to the namespace of the thread opening it.
            for (path, value) in SETTINGS {
                if let Err(e) = std::fs::write(path, value) {
                    tracing::warn!(path, error = %e, "cannot apply an IPVS setting");
                }
            }
            Ok(())
        };
        let _ = match &self.netns {
            Some(netns) => netns.run(apply),
            None => apply(),
        };
    }

    /// Writes the configuration keepalived runs from the uploaded one.
    fn prepare(&self, id: &LbId, instance: &Keepalived) -> Result<(), LvsError> {
        let text = std::fs::read_to_string(self.config_path(id)).map_err(io_error("cannot read the configuration"))?;
        fsutil::create_dir_all(&self.agent_dir(), 0o755).map_err(io_error("cannot create the agent directory"))?;
        if !self.check_script().exists() {
            fsutil::create_dir_all(&self.dir.join("check"), 0o755).map_err(io_error("cannot create check/"))?;
            self.write_check_script()?;
        }
        fsutil::write_atomic(&instance.files().config, config::runnable(&text).as_bytes(), 0o644)
            .map_err(io_error("cannot write the configuration keepalived runs"))
    }

    /// `DELETE /1.0/listeners/{id}` of a UDP or SCTP listener: stops it
    /// and removes its files. Nothing to do for an unknown one.
    pub async fn delete(&self, id: &LbId) -> Result<(), LvsError> {
        if !self.exists(id) {
            return Ok(());
        }
        let instance = self.instance(id);
        instance.remove().await?;
        let files = instance.files().clone();
        for path in [files.config, files.log, self.reloaded_marker(id), self.config_path(id)] {
            fsutil::remove_file_if_exists(&path).map_err(io_error(format!("cannot remove {}", path.display())))?;
        }
        self.instances.lock().expect("lvs instances").remove(id);
        self.notify_vrrp().await;
        tracing::info!(listener = %id, "UDP/SCTP listener deleted");
        Ok(())
    }

    /// Entries for `GET /1.0/listeners`.
    pub fn statuses(&self) -> Vec<ListenerStatus> {
        self.listeners()
            .into_iter()
            .map(|id| {
                let config = self.parsed(&id);
                let instance = self.instance(&id);
                let status = match (instance.running_pid(), config.serves) {
                    (Some(_), true) => ListenerState::Active,
                    (Some(_), false) => ListenerState::Stopped,
                    (None, _) if instance.configured() && instance.wants_running() => ListenerState::Error,
                    (None, _) => ListenerState::Stopped,
                };
                let kind = match config.protocol.unwrap_or(config::Protocol::Udp) {
                    config::Protocol::Udp => ListenerProtocol::Udp,
                    config::Protocol::Sctp => ListenerProtocol::Sctp,
                };
                ListenerStatus { status, uuid: id.to_string(), kind }
            })
            .collect()
    }

    /// How many listeners' keepalived run (`lvs_listener_process_count`).
    pub fn running_count(&self) -> usize {
        self.listeners().iter().filter(|id| self.instance(id).running_pid().is_some()).count()
    }

    /// The pid files of the listeners that should run: the VRRP track
    /// script checks them.
    pub fn wanted_pid_files(&self) -> Vec<PathBuf> {
        self.listeners()
            .iter()
            .map(|id| self.instance(id))
            .filter(|instance| instance.configured() && instance.wants_running())
            .map(|instance| instance.files().pid.clone())
            .collect()
    }

    /// At agent start: adopts running keepalived processes and starts the
    /// ones that should run.
    pub async fn restore(&self) {
        let listeners = self.listeners();
        if !listeners.is_empty() {
            self.prepare_kernel().await;
        }
        for id in listeners {
            let instance = self.instance(&id);
            if let Err(e) = self.prepare(&id, &instance) {
                tracing::error!(listener = %id, error = %e, "cannot prepare a UDP/SCTP listener");
                continue;
            }
            instance.restore().await;
        }
        self.notify_vrrp().await;
    }

    /// Tells VRRP's track script which listeners' keepalived must live.
    async fn notify_vrrp(&self) {
        if let Some(vrrp) = &self.vrrp {
            vrrp.lvs_listeners_changed(|| self.wanted_pid_files()).await;
        }
    }

    /// The heartbeat's view of the running listeners: counters from IPVS
    /// and the members keepalived keeps in it.
    pub async fn reports(&self) -> Vec<ListenerReport> {
        let running: Vec<(LbId, LvsConfig, Arc<Keepalived>)> = self
            .listeners()
            .into_iter()
            .map(|id| {
                let instance = self.instance(&id);
                (id.clone(), self.parsed(&id), instance)
            })
            .filter(|(_, config, instance)| !config.disabled && instance.running_pid().is_some())
            .collect();
        if running.is_empty() {
            return Vec::new();
        }
        let table = match ipvs::read(self.netns.as_ref()).await {
            Ok(table) => table,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the IPVS table");
                Vec::new()
            }
        };
        running
            .into_iter()
            .map(|(id, config, instance)| {
                let marker = self.reloaded_marker(&id);
                report(id, &config, &instance, &marker, &table)
            })
            .collect()
    }
}

fn report(
    id: LbId,
    config: &LvsConfig,
    instance: &Keepalived,
    reloaded: &Path,
    table: &[ipvs::VirtualService],
) -> ListenerReport {
    let services: Vec<&ipvs::VirtualService> =
        table.iter().filter(|s| config.virtual_servers.contains(&s.address)).collect();
    let mut report = ListenerReport {
        id,
        bytes_in: services.iter().map(|s| s.counters.in_bytes).sum(),
        bytes_out: services.iter().map(|s| s.counters.out_bytes).sum(),
        total_connections: services.iter().map(|s| s.counters.conns).sum(),
        current_connections: services.iter().flat_map(|s| &s.real_servers).map(|r| r.active).sum(),
        pool: None,
    };
    let Some(pool) = &config.pool else { return report };
    // A configuration uploaded since keepalived last read one (its
    // checker started, or it was reloaded): its new real servers are not
    // in IPVS until the controller's reload.
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let loaded = modified(&instance.files().subsystem_pid).max(modified(reloaded));
    let restarting = matches!(
        (modified(&instance.files().config), loaded),
        (Some(config), Some(loaded)) if config > loaded
    );
    let real_servers: Vec<&ipvs::RealServer> = services.iter().flat_map(|s| &s.real_servers).collect();
    let healthy = if config.health_checked { "UP" } else { "NO_CHECK" };
    let gone = if restarting { "RESTARTING" } else { "DOWN" };
    let members = config
        .members
        .iter()
        .map(|member| {
            let status = match member.address {
                None => "MAINT",
                Some(address) => match real_servers.iter().find(|r| r.address == address) {
                    None if real_servers.is_empty() && !config.health_checked => "NO_CHECK",
                    None => gone,
                    Some(r) if r.weight == 0 => "DRAIN",
                    Some(_) => healthy,
                },
            };
            (member.id.clone(), status)
        })
        .collect();
    let status =
        if real_servers.is_empty() && config.health_checked && !config.members.is_empty() { "DOWN" } else { "UP" };
    report.pool = Some(PoolReport { id: pool.clone(), status, members });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Counters, RealServer, VirtualService};

    fn config() -> LvsConfig {
        config::parse(
            "virtual_server_group ipv4-group {\n    10.0.0.10 53\n}\n\
             virtual_server group ipv4-group {\n    protocol UDP\n\
             \x20   # Configuration for Pool pool-1\n\
             \x20   # Configuration for Member m-up\n    real_server 10.1.0.5 53 {\n        MISC_CHECK {\n        }\n    }\n\
             \x20   # Configuration for Member m-down\n    real_server 10.1.0.6 53 {\n        MISC_CHECK {\n        }\n    }\n\
             \x20   # Configuration for Member m-drain\n    real_server 10.1.0.7 53 {\n        MISC_CHECK {\n        }\n    }\n\
             \x20   # Member m-off is disabled\n}\n",
        )
    }

    fn service(real_servers: Vec<RealServer>) -> VirtualService {
        VirtualService {
            protocol: config::Protocol::Udp,
            address: "10.0.0.10:53".parse().expect("addr"),
            counters: Counters { conns: 5, in_bytes: 100, out_bytes: 200 },
            real_servers,
        }
    }

    fn instance() -> Arc<Keepalived> {
        let files = Files {
            config: "/nonexistent/c".into(),
            pid: "/nonexistent/p".into(),
            subsystem_pid: "/nonexistent/cp".into(),
            log: "/nonexistent/l".into(),
            record: "/nonexistent/r".into(),
        };
        Keepalived::new("test", "keepalived".into(), None, files, Subsystem::Checkers)
    }

    #[test]
    fn members_as_ipvs_holds_them() {
        let rs = |a: &str, weight| RealServer { address: a.parse().expect("addr"), weight, active: 2, inactive: 0 };
        let table = vec![service(vec![rs("10.1.0.5:53", 1), rs("10.1.0.7:53", 0)])];
        let report =
            report(LbId::parse("l1").expect("id"), &config(), &instance(), Path::new("/nonexistent/m"), &table);
        assert_eq!((report.bytes_in, report.bytes_out, report.total_connections), (100, 200, 5));
        assert_eq!(report.current_connections, 4);
        let pool = report.pool.expect("pool");
        assert_eq!((pool.id.as_str(), pool.status), ("pool-1", "UP"));
        let members: Vec<(&str, &str)> = pool.members.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(members, vec![("m-down", "DOWN"), ("m-drain", "DRAIN"), ("m-off", "MAINT"), ("m-up", "UP")]);
    }

    /// A member missing from IPVS is RESTARTING while the configuration is
    /// newer than what keepalived last read (its checker's start, or the
    /// last reload), DOWN afterwards.
    #[test]
    fn a_member_missing_after_an_upload_is_restarting_until_the_reload() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files {
            config: dir.path().join("c"),
            pid: dir.path().join("p"),
            subsystem_pid: dir.path().join("cp"),
            log: dir.path().join("l"),
            record: dir.path().join("r"),
        };
        let instance = Keepalived::new("test", "keepalived".into(), None, files.clone(), Subsystem::Checkers);
        let marker = dir.path().join("m");
        let at = |path: &Path, seconds: u64| {
            let file = std::fs::File::create(path).expect("create");
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)).expect("mtime");
        };
        let member_2 = |marker: &Path| {
            let rs = RealServer { address: "10.1.0.5:53".parse().expect("addr"), weight: 1, active: 0, inactive: 0 };
            let report = report(LbId::parse("l1").expect("id"), &config(), &instance, marker, &[service(vec![rs])]);
            report.pool.expect("pool").members["m-down"]
        };
        at(&files.subsystem_pid, 10);
        at(&files.config, 5);
        assert_eq!(member_2(&marker), "DOWN", "read at start");
        at(&files.config, 20);
        assert_eq!(member_2(&marker), "RESTARTING", "uploaded after the start, not reloaded yet");
        at(&marker, 15);
        assert_eq!(member_2(&marker), "RESTARTING", "an older reload");
        at(&marker, 25);
        assert_eq!(member_2(&marker), "DOWN", "reloaded since the upload");
    }

    #[test]
    fn no_real_server_left_is_a_pool_down() {
        let report = report(
            LbId::parse("l1").expect("id"),
            &config(),
            &instance(),
            Path::new("/nonexistent/m"),
            &[service(Vec::new())],
        );
        let pool = report.pool.expect("pool");
        assert_eq!(pool.status, "DOWN");
        assert_eq!(pool.members["m-up"], "DOWN");
        assert_eq!(pool.members["m-off"], "MAINT");
    }
}
