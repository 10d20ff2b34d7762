//! Where every file of the agent's state lives: the one place that knows
//! the layout of `base_path` (and `base_cert_dir`). The layout is
//! upstream's, so an operator can swap agents in an existing image without
//! migration:
//! - per load balancer: `{base_path}/{lb}/haproxy.cfg`, `{lb}/{lb}.pid`,
//!   `{lb}/servers-state`, the stats socket `{base_path}/{lb}.sock`,
//!   certificates in `{base_cert_dir}/{lb}/`; the agent's own files (master
//!   socket, master output, desired state) sit beside them;
//! - keepalived: `{base_path}/vrrp/` (configuration, pid files, track
//!   scripts);
//! - network: `{base_path}/interfaces/`;
//! - the 0.1 topology record `{base_path}/topology.json` and the heartbeat
//!   counters `{base_path}/stats_counters.json`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::haproxy::Instance;
use crate::ids::LbId;
use crate::keepalived::Files;

/// `{base_path}/interfaces/`: the stored network interface definitions and
/// firewall rules.
pub const INTERFACES_DIR: &str = "interfaces";
/// `{base_path}/vrrp/`: keepalived's files.
pub const VRRP_DIR: &str = "vrrp";
/// `{base_path}/lvs/`: keepalived instances of UDP and SCTP listeners.
pub const LVS_DIR: &str = "lvs";
/// `{base_path}/certs/`: upstream's default `base_cert_dir`.
pub const CERTS_DIR: &str = "certs";
/// Entries of `base_path` that are the agent's own: no load balancer id may
/// name them.
pub const RESERVED_NAMES: &[&str] = &[INTERFACES_DIR, VRRP_DIR, LVS_DIR, CERTS_DIR];

#[derive(Debug, Clone)]
pub struct Layout {
    base_path: PathBuf,
    cert_dir: PathBuf,
}

impl Layout {
    pub fn new(base_path: PathBuf, cert_dir: PathBuf) -> Self {
        Self { base_path, cert_dir }
    }

    pub fn base_path(&self) -> &Path {
        &self.base_path
    }

    pub fn lb_dir(&self, id: &LbId) -> PathBuf {
        self.base_path.join(id.as_str())
    }

    /// The stats socket upstream's controller configures for a load
    /// balancer, `{base_path}/{lb}.sock`: the only one the agent removes.
    pub fn stats_socket(&self, id: &LbId) -> PathBuf {
        self.base_path.join(format!("{id}.sock"))
    }

    pub fn interfaces_dir(&self) -> PathBuf {
        self.base_path.join(INTERFACES_DIR)
    }

    /// keepalived's directory, `{base_path}/vrrp`; its track scripts live
    /// there too.
    pub fn vrrp_dir(&self) -> PathBuf {
        self.base_path.join(VRRP_DIR)
    }

    /// The files of the VRRP keepalived, under `vrrp_dir`.
    pub fn keepalived_files(&self) -> Files {
        let dir = self.vrrp_dir();
        Files {
            config: dir.join("octavia-keepalived.conf"),
            pid: dir.join("octavia-keepalived.pid"),
            subsystem_pid: dir.join("octavia-keepalived.vrrp.pid"),
            log: dir.join("octavia-keepalived.log"),
            record: dir.join("agent-state.json"),
        }
    }

    /// Where an uploaded keepalived configuration waits for its test.
    pub fn keepalived_new_config(&self) -> PathBuf {
        self.vrrp_dir().join("octavia-keepalived.conf.new")
    }

    /// The last keepalived configuration its test rejected.
    pub fn keepalived_failed_config(&self) -> PathBuf {
        self.vrrp_dir().join("octavia-keepalived.conf.new-failed")
    }

    /// keepalived's track script: the one its configuration names.
    pub fn check_script(&self) -> PathBuf {
        self.vrrp_dir().join("check_script.sh")
    }

    /// Scripts the track script runs, every one of them on each check.
    pub fn check_scripts_dir(&self) -> PathBuf {
        self.vrrp_dir().join("check_scripts")
    }

    /// The track script's record of its last failure.
    pub fn last_check_failure(&self) -> PathBuf {
        self.vrrp_dir().join("last-check-failure.log")
    }

    /// The 0.1 API's topology record.
    pub fn topology_record(&self) -> PathBuf {
        self.base_path.join("topology.json")
    }

    /// The heartbeat's last counter values (upstream's file).
    pub fn stats_counters(&self) -> PathBuf {
        self.base_path.join("stats_counters.json")
    }

    /// Whether the load balancer's directory holds anything the agent wrote
    /// there for a load balancer (a configuration, staged or rejected, or
    /// the agent's record). Only such a directory may be removed as the
    /// load balancer's.
    pub fn holds_load_balancer(&self, id: &LbId) -> bool {
        [self.config(id), self.new_config(id), self.failed_config(id), self.agent_state(id)]
            .iter()
            .any(|path| path.symlink_metadata().is_ok_and(|m| m.is_file()))
    }

    pub fn config(&self, id: &LbId) -> PathBuf {
        self.lb_dir(id).join("haproxy.cfg")
    }

    /// Where an uploaded configuration waits for `haproxy -c`.
    pub fn new_config(&self, id: &LbId) -> PathBuf {
        self.lb_dir(id).join("haproxy.cfg.new")
    }

    /// The last configuration haproxy rejected, kept for debugging.
    pub fn failed_config(&self, id: &LbId) -> PathBuf {
        self.lb_dir(id).join("haproxy.cfg.new-failed")
    }

    pub fn servers_state(&self, id: &LbId) -> PathBuf {
        self.lb_dir(id).join("servers-state")
    }

    /// The agent's record of what it should do with this load balancer.
    pub fn agent_state(&self, id: &LbId) -> PathBuf {
        self.lb_dir(id).join("agent-state.json")
    }

    /// `base_cert_dir`.
    pub fn cert_root(&self) -> &Path {
        &self.cert_dir
    }

    pub fn cert_dir(&self, id: &LbId) -> PathBuf {
        self.cert_dir.join(id.as_str())
    }

    /// The second haproxy configuration file, carrying `group` (upstream:
    /// `/var/lib/octavia/haproxy-default-user-group.conf`).
    pub fn user_group_config(&self) -> PathBuf {
        self.base_path.join("haproxy-default-user-group.conf")
    }

    pub fn instance(&self, id: &LbId, peer_name: String) -> Instance {
        let dir = self.lb_dir(id);
        Instance {
            config: dir.join("haproxy.cfg"),
            pid_file: dir.join(format!("{id}.pid")),
            master_socket: dir.join("master.sock"),
            log_file: dir.join("haproxy.log"),
            peer_name,
        }
    }

    /// Every load balancer with a stored configuration, sorted.
    pub fn load_balancers(&self) -> Vec<LbId> {
        let Ok(entries) = fs::read_dir(&self.base_path) else { return Vec::new() };
        let mut ids: Vec<LbId> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| LbId::parse(entry.file_name().to_str()?).ok())
            .filter(|id| self.config(id).is_file())
            .collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> LbId {
        LbId::parse(raw).expect("id")
    }

    #[test]
    fn paths_follow_upstream() {
        let layout = Layout::new("/var/lib/octavia".into(), "/var/lib/octavia/certs".into());
        let lb = id("85e2111b");
        assert_eq!(layout.config(&lb), PathBuf::from("/var/lib/octavia/85e2111b/haproxy.cfg"));
        assert_eq!(layout.servers_state(&lb), PathBuf::from("/var/lib/octavia/85e2111b/servers-state"));
        assert_eq!(layout.cert_dir(&lb), PathBuf::from("/var/lib/octavia/certs/85e2111b"));
        assert_eq!(layout.stats_socket(&lb), PathBuf::from("/var/lib/octavia/85e2111b.sock"));
        assert_eq!(layout.instance(&lb, "p".into()).pid_file, PathBuf::from("/var/lib/octavia/85e2111b/85e2111b.pid"));
        assert_eq!(layout.user_group_config(), PathBuf::from("/var/lib/octavia/haproxy-default-user-group.conf"));
        assert_eq!(layout.interfaces_dir(), PathBuf::from("/var/lib/octavia/interfaces"));
        assert_eq!(layout.topology_record(), PathBuf::from("/var/lib/octavia/topology.json"));
        assert_eq!(layout.stats_counters(), PathBuf::from("/var/lib/octavia/stats_counters.json"));
    }

    #[test]
    fn keepalived_files_follow_upstream() {
        let layout = Layout::new("/var/lib/octavia".into(), "/var/lib/octavia/certs".into());
        let files = layout.keepalived_files();
        let vrrp = |name: &str| PathBuf::from("/var/lib/octavia/vrrp").join(name);
        assert_eq!(layout.vrrp_dir(), vrrp(""));
        assert_eq!(files.config, vrrp("octavia-keepalived.conf"));
        assert_eq!(files.pid, vrrp("octavia-keepalived.pid"));
        assert_eq!(files.subsystem_pid, vrrp("octavia-keepalived.vrrp.pid"));
        assert_eq!(files.log, vrrp("octavia-keepalived.log"));
        assert_eq!(files.record, vrrp("agent-state.json"));
        assert_eq!(layout.keepalived_new_config(), vrrp("octavia-keepalived.conf.new"));
        assert_eq!(layout.keepalived_failed_config(), vrrp("octavia-keepalived.conf.new-failed"));
        assert_eq!(layout.check_script(), vrrp("check_script.sh"));
        assert_eq!(layout.check_scripts_dir(), vrrp("check_scripts"));
        assert_eq!(layout.last_check_failure(), vrrp("last-check-failure.log"));
    }

    #[test]
    fn lists_only_directories_with_a_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().into(), dir.path().join("certs"));
        for name in ["b-lb", "a-lb", "vrrp", "no-config"] {
            fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        for name in ["b-lb", "a-lb", "vrrp"] {
            fs::write(dir.path().join(name).join("haproxy.cfg"), "").expect("write");
        }
        fs::write(dir.path().join("stray.cfg"), "").expect("write");
        assert_eq!(layout.load_balancers(), vec![id("a-lb"), id("b-lb")]);
    }
}
