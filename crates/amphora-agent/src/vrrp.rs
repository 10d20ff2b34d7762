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
use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::fsutil;
use crate::haproxy::process;
use crate::netns::Netns;

/// Longest keepalived may take to record its pid after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Grace given to keepalived to stop on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// `keepalived --config-test` output that does not make a configuration
/// unusable.
const BENIGN_TEST_WARNINGS: &[&str] =
    &["SECURITY VIOLATION - scripts are being executed but script_security not enabled."];
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("the configuration is not valid UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Invalid(String),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    Failed(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VrrpError {
    let what = what.into();
    move |source| VrrpError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reload,
}

impl Action {
    pub fn parse(raw: &str) -> Result<Self, VrrpError> {
        match raw.to_ascii_lowercase().as_str() {
            "start" => Ok(Action::Start),
            "stop" => Ok(Action::Stop),
            "reload" => Ok(Action::Reload),
            _ => Err(VrrpError::UnknownAction(raw.to_owned())),
        }
    }

    /// The past tense for the answer: "keepalived started".
    pub fn done(self) -> &'static str {
        match self {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Reload => "reloaded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Desired {
    Running,
    Stopped,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    desired: Desired,
}

/// keepalived and its files.
#[derive(Debug)]
pub struct Vrrp {
    dir: PathBuf,
    keepalived: PathBuf,
    checker: PathBuf,
    netns: Option<Arc<Netns>>,
    /// Serialises actions; counts deliberate starts and stops so a
    /// supervisor of an older process stands down.
    lock: tokio::sync::Mutex<u64>,
    me: Weak<Vrrp>,
}

impl Vrrp {
    /// `base_path` is the agent's; `checker` the `amphora-vrrp-check` binary.
    pub fn new(base_path: &Path, keepalived: PathBuf, checker: PathBuf, netns: Option<Arc<Netns>>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            dir: base_path.join("vrrp"),
            keepalived,
            checker,
            netns,
            lock: tokio::sync::Mutex::new(0),
            me: me.clone(),
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("octavia-keepalived.conf")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("octavia-keepalived.pid")
    }

    fn vrrp_pid_file(&self) -> PathBuf {
        self.dir.join("octavia-keepalived.vrrp.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("octavia-keepalived.log")
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("agent-state.json")
    }

    fn check_scripts_dir(&self) -> PathBuf {
        self.dir.join("check_scripts")
    }

    pub fn configured(&self) -> bool {
        self.config_path().is_file()
    }

    pub fn running_pid(&self) -> Option<Pid> {
        process::running_daemon(&self.pid_file(), &self.config_path())
    }

    fn desired(&self) -> Desired {
        std::fs::read(self.record_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .map(|r| r.desired)
            // A configuration without our record was left by upstream's
            // agent, whose unit starts keepalived at boot.
            .unwrap_or(Desired::Running)
    }

    fn set_desired(&self, desired: Desired) -> Result<(), VrrpError> {
        let bytes = serde_json::to_vec(&Record { desired }).map_err(|e| io_error("cannot encode")(e.into()))?;
        fsutil::write_atomic(&self.record_path(), &bytes, 0o600).map_err(io_error("cannot record keepalived's state"))
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.keepalived);
        if let Some(netns) = &self.netns {
            netns.enter_on_spawn(&mut command);
        }
        command
    }

    /// `keepalived -t` on a configuration, in the namespace (it checks the
    /// interfaces the configuration names).
    async fn check(&self, path: &Path) -> Result<(), VrrpError> {
        let output = self
            .command()
            .arg("-f")
            .arg(path)
            .arg("--config-test")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| VrrpError::Failed(format!("cannot run {}: {e}", self.keepalived.display())))?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            return Ok(());
        }
        // keepalived fails its test on warnings too; the controller's
        // template always draws this one (it runs scripts as root, as
        // upstream's amphorae do), so it alone does not reject a file.
        let problems: Vec<&str> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !BENIGN_TEST_WARNINGS.contains(l)).collect();
        if problems.is_empty() {
            tracing::debug!(output = text.trim(), "keepalived configuration test passed with warnings");
            Ok(())
        } else {
            Err(VrrpError::Invalid(problems.join("\n")))
        }
    }

    /// `PUT /1.0/vrrp/upload`: validates and stores the configuration and
    /// installs the track scripts. Returns the ETag. On failure the
    /// previous configuration is untouched.
    pub async fn upload(&self, body: &[u8], sockets: &[PathBuf]) -> Result<String, VrrpError> {
        let _guard = self.lock.lock().await;
        std::str::from_utf8(body).map_err(|_| VrrpError::NotUtf8)?;
        fsutil::create_dir_all(&self.check_scripts_dir(), 0o755)
            .map_err(io_error(format!("cannot create {}", self.dir.display())))?;
        // The track script the configuration names must exist for the test.
        self.write_check_scripts(sockets)?;
        let staged = self.dir.join("octavia-keepalived.conf.new");
        fsutil::write_atomic(&staged, body, 0o644).map_err(io_error("cannot stage the configuration"))?;
        if let Err(e) = self.check(&staged).await {
            let _ = std::fs::rename(&staged, self.dir.join("octavia-keepalived.conf.new-failed"));
            return Err(e);
        }
        fsutil::rename_durable(&staged, &self.config_path()).map_err(io_error("cannot install the configuration"))?;
        if !self.record_path().exists() {
            self.set_desired(Desired::Stopped)?;
        }
        Ok(crate::etag::md5_hex(body))
    }

    /// Rewrites the track scripts for the given stats sockets (the load
    /// balancers that should run). Nothing to do without VRRP.
    pub fn load_balancers_changed(&self, sockets: &[PathBuf]) {
        if !self.configured() {
            return;
        }
        if let Err(e) = self.write_check_scripts(sockets) {
            tracing::error!(error = %e, "cannot update the keepalived check script");
        }
    }

    fn write_check_scripts(&self, sockets: &[PathBuf]) -> Result<(), VrrpError> {
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
        fsutil::write_atomic(&self.dir.join("check_script.sh"), main.as_bytes(), 0o755)
            .map_err(io_error("cannot write check_script.sh"))?;
        // No load balancer: keepalived must not make this amphora MASTER.
        let haproxy = if sockets.is_empty() {
            "exit 1\n".to_owned()
        } else {
            let list: Vec<String> = sockets.iter().map(|s| shell_quote(&s.display().to_string())).collect();
            format!("exec {} {}\n", shell_quote(&self.checker.display().to_string()), list.join(" "))
        };
        fsutil::write_atomic(&dir.join("haproxy_check_script.sh"), haproxy.as_bytes(), 0o755)
            .map_err(io_error("cannot write haproxy_check_script.sh"))
    }

    /// `PUT /1.0/vrrp/{action}`. Starting a running keepalived reloads it,
    /// as upstream.
    pub async fn act(&self, action: Action) -> Result<Action, VrrpError> {
        let mut generation = self.lock.lock().await;
        if !self.configured() && action != Action::Stop {
            return Err(VrrpError::Failed("no keepalived configuration has been uploaded".into()));
        }
        match (action, self.running_pid()) {
            (Action::Start | Action::Reload, Some(pid)) => {
                self.set_desired(Desired::Running)?;
                signal::kill(pid, Signal::SIGHUP)
                    .map_err(|e| VrrpError::Failed(format!("cannot signal keepalived {pid}: {e}")))?;
                tracing::info!(%pid, "keepalived reloaded");
                Ok(Action::Reload)
            }
            (Action::Start | Action::Reload, None) => {
                self.set_desired(Desired::Running)?;
                let pid = self.start().await?;
                *generation += 1;
                self.supervise(pid, *generation);
                tracing::info!(%pid, "keepalived started");
                Ok(Action::Start)
            }
            (Action::Stop, running) => {
                self.set_desired(Desired::Stopped)?;
                *generation += 1;
                if let Some(pid) = running {
                    stop(pid).await?;
                    tracing::info!(%pid, "keepalived stopped");
                }
                Ok(Action::Stop)
            }
        }
    }

    async fn start(&self) -> Result<Pid, VrrpError> {
        let _ = fsutil::remove_file_if_exists(&self.pid_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(io_error("cannot open the keepalived log"))?;
        let err = log.try_clone().map_err(io_error("cannot open the keepalived log"))?;
        let mut command = self.command();
        // In the foreground of a session of its own, logging to its file:
        // it outlives the agent and is found again through its pid file.
        command
            .args(["--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp"])
            .arg("-f")
            .arg(self.config_path())
            .arg("-p")
            .arg(self.pid_file())
            .arg("-r")
            .arg(self.vrrp_pid_file())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child =
            command.spawn().map_err(|e| VrrpError::Failed(format!("cannot run {}: {e}", self.keepalived.display())))?;
        // Dropping the handle leaves reaping to tokio; exit is watched
        // through the pid like an adopted process.
        drop(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(pid) = self.running_pid() {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(VrrpError::Failed(format!("keepalived did not start: {}", tail(&self.log_file()).trim())));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Restarts keepalived with backoff if it dies while it should run.
    fn supervise(&self, pid: Pid, generation: u64) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let mut pid = pid;
            let mut backoff = MIN_BACKOFF;
            loop {
                let since = Instant::now();
                process::wait_exit(pid).await;
                if since.elapsed() >= MAX_BACKOFF {
                    backoff = MIN_BACKOFF;
                }
                let Some(vrrp) = me.upgrade() else { return };
                {
                    let current = vrrp.lock.lock().await;
                    if *current != generation || vrrp.desired() != Desired::Running {
                        return;
                    }
                }
                tracing::warn!(%pid, retry_in = ?backoff, "keepalived exited unexpectedly");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                let current = vrrp.lock.lock().await;
                if *current != generation || vrrp.desired() != Desired::Running || !vrrp.configured() {
                    return;
                }
                if let Some(running) = vrrp.running_pid() {
                    pid = running;
                    continue;
                }
                match vrrp.start().await {
                    Ok(new_pid) => {
                        tracing::info!(pid = %new_pid, "keepalived restarted");
                        pid = new_pid;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot restart keepalived"),
                }
            }
        });
    }

    /// At agent start: adopts a running keepalived or starts it if it
    /// should run.
    pub async fn restore(&self, sockets: &[PathBuf]) {
        if !self.configured() {
            return;
        }
        self.load_balancers_changed(sockets);
        let mut generation = self.lock.lock().await;
        if let Some(pid) = self.running_pid() {
            *generation += 1;
            self.supervise(pid, *generation);
            tracing::info!(%pid, "adopted running keepalived");
        } else if self.desired() == Desired::Running {
            match self.start().await {
                Ok(pid) => {
                    *generation += 1;
                    self.supervise(pid, *generation);
                    tracing::info!(%pid, "started keepalived that should be running");
                }
                Err(e) => tracing::error!(error = %e, "cannot start keepalived that should be running"),
            }
        }
    }

    /// The addresses keepalived manages (its `virtual_ipaddress` blocks).
    pub fn virtual_addresses(&self) -> Vec<IpAddr> {
        std::fs::read_to_string(self.config_path()).map(|text| virtual_addresses(&text)).unwrap_or_default()
    }
}

async fn stop(pid: Pid) -> Result<(), VrrpError> {
    match signal::kill(pid, Signal::SIGTERM) {
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => return Err(VrrpError::Failed(format!("cannot signal keepalived {pid}: {e}"))),
        Ok(()) => {}
    }
    if tokio::time::timeout(STOP_GRACE, process::wait_exit(pid)).await.is_ok() {
        return Ok(());
    }
    let _ = signal::killpg(pid, Signal::SIGKILL);
    tokio::time::timeout(STOP_GRACE, process::wait_exit(pid))
        .await
        .map_err(|_| VrrpError::Failed(format!("keepalived {pid} survived SIGKILL")))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    text.get(start..).unwrap_or("").to_owned()
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
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

    #[test]
    fn actions() {
        assert_eq!(Action::parse("START").ok(), Some(Action::Start));
        assert!(matches!(Action::parse("BAD_TEST_DATA"), Err(VrrpError::UnknownAction(_))));
        assert_eq!(Action::Stop.done(), "stopped");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
