//! VRRP for ACTIVE_STANDBY load balancers: keepalived, configured by the
//! controller, run and supervised by the agent in the amphora namespace.
//!
//! Files follow upstream's layout under `{base_path}/vrrp/`: the
//! configuration `octavia-keepalived.conf`, the pid file, and the track
//! script `check_script.sh` the controller's configuration names, which runs
//! every script in `check_scripts/`. The agent keeps
//! `check_scripts/haproxy_check_script.sh` listing the stats socket of every
//! load balancer that should run, so keepalived gives up the VIP when one of
//! them stops answering.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::unistd::Pid;

use crate::fsutil;
pub use crate::keepalived::{Action, KeepalivedError as VrrpError};
use crate::keepalived::{Files, Keepalived, Subsystem, io_error, shell_quote};
use crate::netns::Netns;

/// keepalived and its files.
#[derive(Debug)]
pub struct Vrrp {
    dir: PathBuf,
    checker: PathBuf,
    daemon: Arc<Keepalived>,
}

impl Vrrp {
    /// `base_path` is the agent's; `checker` the `amphora-vrrp-check` binary.
    pub fn new(base_path: &Path, keepalived: PathBuf, checker: PathBuf, netns: Option<Arc<Netns>>) -> Arc<Self> {
        let dir = base_path.join(crate::lb::VRRP_DIR);
        let files = Files {
            config: dir.join("octavia-keepalived.conf"),
            pid: dir.join("octavia-keepalived.pid"),
            subsystem_pid: dir.join("octavia-keepalived.vrrp.pid"),
            log: dir.join("octavia-keepalived.log"),
            record: dir.join("agent-state.json"),
        };
        let daemon = Keepalived::new("keepalived", keepalived, netns, files, Subsystem::Vrrp);
        Arc::new(Self { dir, checker, daemon })
    }

    pub fn config_path(&self) -> PathBuf {
        self.daemon.files().config.clone()
    }

    fn check_scripts_dir(&self) -> PathBuf {
        self.dir.join("check_scripts")
    }

    pub fn configured(&self) -> bool {
        self.daemon.configured()
    }

    pub fn running_pid(&self) -> Option<Pid> {
        self.daemon.running_pid()
    }

    /// `PUT /1.0/vrrp/upload`: validates and stores the configuration and
    /// installs the track scripts. Returns the ETag. On failure the
    /// previous configuration is untouched.
    pub async fn upload(&self, body: &[u8], sockets: &[PathBuf]) -> Result<String, VrrpError> {
        let _guard = self.daemon.exclusive().await;
        std::str::from_utf8(body).map_err(|_| VrrpError::NotUtf8)?;
        fsutil::create_dir_all(&self.check_scripts_dir(), 0o755)
            .map_err(io_error(format!("cannot create {}", self.dir.display())))?;
        // The track script the configuration names must exist for the test.
        self.write_check_scripts(sockets).await?;
        let staged = self.dir.join("octavia-keepalived.conf.new");
        fsutil::write_atomic_async(&staged, body, 0o644).await.map_err(io_error("cannot stage the configuration"))?;
        if let Err(e) = self.daemon.config_test(&staged).await {
            let _ = std::fs::rename(&staged, self.dir.join("octavia-keepalived.conf.new-failed"));
            return Err(e);
        }
        fsutil::rename_durable_async(&staged, &self.config_path())
            .await
            .map_err(io_error("cannot install the configuration"))?;
        self.daemon.mark_new().await?;
        Ok(crate::etag::md5_hex(body))
    }

    /// Rewrites the track scripts for the given stats sockets (the load
    /// balancers that should run). Nothing to do without VRRP.
    pub async fn load_balancers_changed(&self, sockets: &[PathBuf]) {
        if !self.configured() {
            return;
        }
        if let Err(e) = self.write_check_scripts(sockets).await {
            tracing::error!(error = %e, "cannot update the keepalived check script");
        }
    }

    async fn write_check_scripts(&self, sockets: &[PathBuf]) -> Result<(), VrrpError> {
        let dir = self.check_scripts_dir();
        fsutil::create_dir_all(&dir, 0o755).map_err(io_error(format!("cannot create {}", dir.display())))?;
        let main = format!(
            "#!/bin/sh\n# Written by the amphora agent: keepalived's track script.\n\
             # Fails when any script of {dir} fails; the last failure is kept in\n\
             # {log} for whoever wonders why this amphora gave up its VIP.\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nstatus=0\n\
             for file in {dir}/*; do\n    [ -f \"$file\" ] || continue\n\
             \x20   if ! output=$(sh \"$file\" 2>&1); then\n\
             \x20       status=$((status + 1))\n\
             \x20       echo \"$(date -u +%FT%TZ) $file: $output\" > {log}\n\
             \x20   fi\ndone\nexit $status\n",
            dir = dir.display(),
            log = self.dir.join("last-check-failure.log").display(),
        );
        fsutil::write_atomic_async(&self.dir.join("check_script.sh"), main.as_bytes(), 0o755)
            .await
            .map_err(io_error("cannot write check_script.sh"))?;
        // No load balancer: keepalived must not make this amphora MASTER.
        let haproxy = if sockets.is_empty() {
            "exit 1\n".to_owned()
        } else {
            let list: Vec<String> = sockets.iter().map(|s| shell_quote(&s.display().to_string())).collect();
            format!("exec {} {}\n", shell_quote(&self.checker.display().to_string()), list.join(" "))
        };
        fsutil::write_atomic_async(&dir.join("haproxy_check_script.sh"), haproxy.as_bytes(), 0o755)
            .await
            .map_err(io_error("cannot write haproxy_check_script.sh"))
    }

    /// `PUT /1.0/vrrp/{action}`. Starting a running keepalived reloads it,
    /// as upstream.
    pub async fn act(&self, action: Action) -> Result<Action, VrrpError> {
        if !self.configured() && action != Action::Stop {
            return Err(VrrpError::Failed("no keepalived configuration has been uploaded".into()));
        }
        self.daemon.act(action).await
    }

    /// At agent start: adopts a running keepalived or starts it if it
    /// should run.
    pub async fn restore(&self, sockets: &[PathBuf]) {
        if !self.configured() {
            return;
        }
        self.load_balancers_changed(sockets).await;
        self.daemon.restore().await;
    }

    /// The addresses keepalived manages (its `virtual_ipaddress` blocks).
    pub fn virtual_addresses(&self) -> Vec<IpAddr> {
        std::fs::read_to_string(self.config_path()).map(|text| virtual_addresses(&text)).unwrap_or_default()
    }
}

/// Addresses listed in `virtual_ipaddress { ... }` blocks (not the
/// `_excluded` ones, which keepalived adds too, so they count as well).
pub fn virtual_addresses(config: &str) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    let mut inside = false;
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with("virtual_ipaddress") && line.ends_with('{') {
            inside = true;
            continue;
        }
        if inside {
            if line.starts_with('}') {
                inside = false;
                continue;
            }
            if let Some(first) = line.split_whitespace().next()
                && let Ok(ip) = first.split('/').next().unwrap_or("").parse::<IpAddr>()
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
    fn virtual_addresses_of_the_controllers_template() {
        let config = "vrrp_instance lb {\n    virtual_ipaddress {\n        203.0.113.2\n        fd00::2/64 dev eth1\n    }\n\
                      virtual_ipaddress_excluded {\n        198.51.100.7\n    }\n    virtual_routes {\n        10.0.0.0/24 dev eth1\n    }\n}\n";
        let expected: Vec<IpAddr> =
            ["203.0.113.2", "fd00::2", "198.51.100.7"].iter().map(|a| a.parse().expect("ip")).collect();
        assert_eq!(virtual_addresses(config), expected);
    }
}
