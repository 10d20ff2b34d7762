//! VRRP for ACTIVE_STANDBY load balancers: keepalived, configured by the
//! controller, run and supervised by the agent in the amphora namespace.
//!
//! Files follow upstream's layout under `{base_path}/vrrp/`: the
//! configuration `octavia-keepalived.conf`, the pid file, and the track
//! script `check_script.sh` the controller's configuration names, which runs
//! every script in `check_scripts/`. The agent keeps
//! `check_scripts/haproxy_check_script.sh` listing the stats socket of every
//! load balancer that should run, so keepalived gives up the VIP when one of
//! them stops answering; `check_scripts::CheckScripts` is their one writer.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nix::unistd::Pid;

use crate::check_scripts::CheckScripts;
use crate::fsutil;
pub use crate::keepalived::{Action, KeepalivedError as VrrpError};
use crate::keepalived::{Keepalived, Subsystem, io_error};
use crate::layout::Layout;
use crate::netns::Netns;

/// keepalived and its files.
#[derive(Debug)]
pub struct Vrrp {
    layout: Layout,
    /// The only writer of the track scripts.
    check_scripts: CheckScripts,
    daemon: Arc<Keepalived>,
}

impl Vrrp {
    /// keepalived's files are under `layout.vrrp_dir()`; `checker` is the
    /// `amphora-vrrp-check` binary.
    pub fn new(layout: &Layout, keepalived: PathBuf, checker: PathBuf, netns: Option<Arc<Netns>>) -> Arc<Self> {
        let daemon = Keepalived::new("keepalived", keepalived, netns, layout.keepalived_files(), Subsystem::Vrrp);
        let check_scripts = CheckScripts::new(layout, checker);
        Arc::new(Self { layout: layout.clone(), check_scripts, daemon })
    }

    pub fn config_path(&self) -> PathBuf {
        self.daemon.files().config.clone()
    }

    pub fn configured(&self) -> bool {
        self.daemon.configured()
    }

    pub fn running_pid(&self) -> Option<Pid> {
        self.daemon.running_pid()
    }

    /// `PUT /1.0/vrrp/upload`: validates and stores the configuration and
    /// installs the track scripts for the stats sockets `wanted` returns.
    /// Returns the ETag. On failure the previous configuration is untouched.
    pub async fn upload(&self, body: &[u8], wanted: impl FnOnce() -> Vec<PathBuf>) -> Result<String, VrrpError> {
        let mut guard = self.daemon.exclusive().await;
        std::str::from_utf8(body).map_err(|_| VrrpError::NotUtf8)?;
        // The track script the configuration names must exist for the test.
        self.check_scripts.rewrite(wanted).await?;
        let staged = self.layout.keepalived_new_config();
        fsutil::write_atomic_async(&staged, body, 0o644).await.map_err(io_error("cannot stage the configuration"))?;
        if let Err(e) = self.daemon.config_test(&staged).await {
            let _ = std::fs::rename(&staged, self.layout.keepalived_failed_config());
            return Err(e);
        }
        fsutil::rename_durable_async(&staged, &self.config_path())
            .await
            .map_err(io_error("cannot install the configuration"))?;
        self.daemon.mark_new(&mut guard).await?;
        Ok(crate::etag::md5_hex(body))
    }

    /// Rewrites the track scripts for the stats sockets `wanted` returns
    /// (the load balancers that should run). Nothing to do without VRRP.
    pub async fn load_balancers_changed(&self, wanted: impl FnOnce() -> Vec<PathBuf>) {
        if !self.configured() {
            return;
        }
        if let Err(e) = self.check_scripts.rewrite(wanted).await {
            tracing::error!(error = %e, "cannot update the keepalived check script");
        }
    }

    /// Records the pid files of the UDP/SCTP listeners whose keepalived
    /// should run (`wanted`), and rewrites the track scripts when VRRP is
    /// configured: their keepalived must be alive for this amphora to be
    /// MASTER, and they alone let it be MASTER without a load balancer.
    pub async fn lvs_listeners_changed(&self, wanted: impl FnOnce() -> Vec<PathBuf>) {
        if let Err(e) = self.check_scripts.lvs_changed(wanted, self.configured()).await {
            tracing::error!(error = %e, "cannot update the keepalived check scripts");
        }
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
    pub async fn restore(&self, wanted: impl FnOnce() -> Vec<PathBuf>) {
        if !self.configured() {
            return;
        }
        self.load_balancers_changed(wanted).await;
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
