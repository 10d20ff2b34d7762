//! One keepalived process run and supervised by the agent: the VRRP
//! instance of an ACTIVE_STANDBY amphora, or the LVS instance of one UDP or
//! SCTP listener. Started in the foreground of a session of its own (it
//! outlives the agent and is found again through its pid file), restarted
//! with backoff if it dies while it should run, adopted after an agent
//! restart, and started at boot when it was running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::daemon::{self, Daemon, Desired, Held, NoExtra, Record, Started, StopError, Supervised};
use crate::fsutil;
use crate::netns::Netns;

/// Longest keepalived may take to record its pid after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Grace given to keepalived to stop on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// `keepalived --config-test` output that does not make a configuration
/// unusable.
const BENIGN_TEST_WARNINGS: &[&str] = &[
    "SECURITY VIOLATION - scripts are being executed but script_security not enabled.",
    "SECURITY VIOLATION - check scripts are being executed but script_security not enabled.",
];

/// Whether a line of `keepalived --config-test` output leaves the
/// configuration usable: the script warnings, and an LVS virtual server
/// without real servers (a pool with no enabled member yet, or a disabled
/// pool: keepalived leaves it out until one comes, as upstream's amphorae
/// do).
fn benign_test_warning(line: &str) -> bool {
    BENIGN_TEST_WARNINGS.contains(&line)
        || (line.starts_with("Virtual server ") && line.ends_with(" has no real servers - ignoring"))
}

#[derive(Debug, thiserror::Error)]
pub enum KeepalivedError {
    #[error("the configuration is not valid UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Invalid(String),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    Failed(String),
    #[error("cannot run {binary}: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("cannot signal {label} {pid}: {source}")]
    Signal { label: String, pid: Pid, source: nix::errno::Errno },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

pub fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KeepalivedError {
    let what = what.into();
    move |source| KeepalivedError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reload,
}

impl Action {
    pub fn parse(raw: &str) -> Result<Self, KeepalivedError> {
        match raw.to_ascii_lowercase().as_str() {
            "start" => Ok(Action::Start),
            "stop" => Ok(Action::Stop),
            "reload" => Ok(Action::Reload),
            _ => Err(KeepalivedError::UnknownAction(raw.to_owned())),
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reload => "reload",
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

/// Which of keepalived's subsystems the instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    /// VRRP only.
    Vrrp,
    /// Health checkers and IPVS only. A start leaves a running one alone.
    /// A reload is SIGHUP too: keepalived (2.0.14 and later) re-reads its
    /// configuration and keeps an unchanged virtual server, its real
    /// servers' states and the kernel's connection entries, so established
    /// flows stay on their real server (upstream restarts instead, for
    /// older keepalived).
    Checkers,
}

/// The files of one instance.
#[derive(Debug, Clone)]
pub struct Files {
    /// The configuration keepalived runs (`-f`); its path identifies the
    /// process on its command line.
    pub config: PathBuf,
    /// The main process's pid file (`-p`).
    pub pid: PathBuf,
    /// The subsystem's pid file (`-r` for VRRP, `-c` for checkers).
    pub subsystem_pid: PathBuf,
    /// What keepalived writes to its console.
    pub log: PathBuf,
    /// The agent's record of whether it should run.
    pub record: PathBuf,
}

/// keepalived as a supervised daemon: how it is launched and stopped.
#[derive(Debug)]
pub struct Process {
    label: String,
    binary: PathBuf,
    netns: Option<Arc<Netns>>,
    files: Files,
    subsystem: Subsystem,
}

impl Process {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        // Health-check scripts (`amphora-health-checker`) live beside the
        // agent; keepalived runs them through this PATH.
        if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
            let path = std::env::var_os("PATH")
                .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            let mut joined = dir.as_os_str().to_owned();
            joined.push(":");
            joined.push(path);
            command.env("PATH", joined);
        }
        if let Some(netns) = &self.netns {
            netns.enter_on_spawn(&mut command);
        }
        command
    }

    async fn start(&self) -> Result<Pid, KeepalivedError> {
        // A keepalived whose main process was killed leaves its subsystem
        // child running until the child notices; one started meanwhile
        // refuses ("daemon is already running") and exits.
        if let Some(orphan) = daemon::running_daemon(&self.files.subsystem_pid, &self.files.config) {
            tracing::warn!(instance = %self.label, pid = %orphan, "stopping a keepalived child its dead parent left");
            stop(orphan, &self.label).await?;
        }
        let _ = fsutil::remove_file_if_exists(&self.files.pid);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.files.log)
            .map_err(io_error("cannot open the keepalived log"))?;
        let logged_before = log.metadata().map(|m| m.len()).unwrap_or(0);
        let err = log.try_clone().map_err(io_error("cannot open the keepalived log"))?;
        let mut command = self.command();
        command.args(["--dont-fork", "--log-console", "--log-detail", "--no-syslog"]);
        match self.subsystem {
            Subsystem::Vrrp => command.arg("--vrrp").arg("-r"),
            Subsystem::Checkers => command.arg("--check").arg("-c"),
        };
        command
            .arg(&self.files.subsystem_pid)
            .arg("-f")
            .arg(&self.files.config)
            .arg("-p")
            .arg(&self.files.pid)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let mut child =
            command.spawn().map_err(|source| KeepalivedError::Spawn { binary: self.binary.clone(), source })?;
        // Once it runs, dropping the handle leaves reaping to tokio; exit
        // is watched through the pid like an adopted process.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(pid) = self.running_pid() {
                return Ok(pid);
            }
            // It does not fork: its exit is the start's failure.
            if let Ok(Some(status)) = child.try_wait() {
                let output = log_since(&self.files.log, logged_before);
                return Err(KeepalivedError::Failed(format!(
                    "{} exited as it started ({status}): {}",
                    self.label,
                    output.trim()
                )));
            }
            if Instant::now() >= deadline {
                let output = log_since(&self.files.log, logged_before);
                return Err(KeepalivedError::Failed(format!("{} did not start: {}", self.label, output.trim())));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Daemon for Process {
    type Extra = NoExtra;
    type Error = KeepalivedError;

    fn name(&self) -> &'static str {
        "keepalived"
    }

    fn instance(&self) -> &str {
        &self.label
    }

    fn record_path(&self) -> &Path {
        &self.files.record
    }

    fn default_extra(&self) -> NoExtra {
        NoExtra {}
    }

    fn configured(&self) -> bool {
        self.files.config.is_file()
    }

    fn running_pid(&self) -> Option<Pid> {
        daemon::running_daemon(&self.files.pid, &self.files.config)
    }

    async fn launch(&self, _record: &Record<NoExtra>) -> Result<Pid, KeepalivedError> {
        self.start().await
    }

    async fn stop(&self, pid: Pid) -> Result<(), KeepalivedError> {
        stop(pid, &self.label).await
    }

    fn record_error(&self, source: std::io::Error) -> KeepalivedError {
        io_error("cannot record keepalived's state")(source)
    }
}

/// One keepalived instance under supervision.
#[derive(Debug)]
pub struct Keepalived {
    daemon: Arc<Supervised<Process>>,
}

/// keepalived's lock, held.
pub type Exclusive<'a> = Held<'a, Process>;

impl Keepalived {
    /// `label` names the instance in logs and errors.
    pub fn new(
        label: impl Into<String>,
        binary: PathBuf,
        netns: Option<Arc<Netns>>,
        files: Files,
        subsystem: Subsystem,
    ) -> Arc<Self> {
        let process = Process { label: label.into(), binary, netns, files, subsystem };
        Arc::new(Self { daemon: Supervised::new(process) })
    }

    fn process(&self) -> &Process {
        self.daemon.daemon()
    }

    pub fn files(&self) -> &Files {
        &self.process().files
    }

    pub fn configured(&self) -> bool {
        self.process().configured()
    }

    pub fn running_pid(&self) -> Option<Pid> {
        self.daemon.running_pid()
    }

    /// Whether the agent should keep it running (its record; a
    /// configuration without one was left by upstream's agent: wanted).
    pub fn wants_running(&self) -> bool {
        self.daemon.wants_running()
    }

    /// Records "stopped" for a configuration that has no record yet, so a
    /// fresh upload does not start at boot before it was ever started.
    /// Called with the lock held.
    pub async fn mark_new(&self, held: &mut Exclusive<'_>) -> Result<(), KeepalivedError> {
        if self.daemon.has_record() { Ok(()) } else { held.set_desired(Desired::Stopped).await }
    }

    /// Holds the instance's lock (while its files change).
    pub async fn exclusive(&self) -> Exclusive<'_> {
        self.daemon.lock().await
    }

    /// `keepalived --config-test` on a configuration, in the namespace (it
    /// checks the interfaces the configuration names).
    pub async fn config_test(&self, path: &Path) -> Result<(), KeepalivedError> {
        let binary = &self.process().binary;
        let output = self
            .process()
            .command()
            .arg("-f")
            .arg(path)
            .arg("--config-test")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| KeepalivedError::Spawn { binary: binary.clone(), source })?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            return Ok(());
        }
        // keepalived fails its test on warnings too; the controller's
        // template always draws this one (it runs scripts as root, as
        // upstream's amphorae do), so it alone does not reject a file.
        let problems: Vec<&str> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !benign_test_warning(l)).collect();
        if problems.is_empty() {
            tracing::debug!(output = text.trim(), "keepalived configuration test passed with warnings");
            Ok(())
        } else {
            Err(KeepalivedError::Invalid(problems.join("\n")))
        }
    }

    /// Starts, stops or reloads. Starting a running instance reloads it,
    /// as upstream.
    pub async fn act(&self, action: Action) -> Result<Action, KeepalivedError> {
        let mut held = self.daemon.lock().await;
        let process = self.process();
        if !self.configured() && action != Action::Stop {
            return Err(KeepalivedError::Failed(format!("no configuration for {}", process.label)));
        }
        if action == Action::Stop {
            held.stop().await?;
            return Ok(Action::Stop);
        }
        if action == Action::Start && process.subsystem == Subsystem::Checkers {
            // A running one is left alone: a restart would empty its IPVS
            // table and drop the virtual server's flows.
            return match held.start().await? {
                Started::Launched(_) => Ok(Action::Start),
                Started::AlreadyRunning(pid) => {
                    tracing::debug!(%pid, instance = process.label, "keepalived already running");
                    Ok(Action::Start)
                }
            };
        }
        held.set_desired(Desired::Running).await?;
        let Some(pid) = held.reload_target() else {
            held.start().await?;
            return Ok(Action::Start);
        };
        // keepalived forwards it to its VRRP or checker child, which
        // re-reads the configuration in place: the pid stays.
        signal::kill(pid, Signal::SIGHUP).map_err(|source| KeepalivedError::Signal {
            label: process.label.clone(),
            pid,
            source,
        })?;
        // A start cut short, or a keepalived someone else started: it
        // runs, but nothing would restart it.
        held.ensure_supervised(pid);
        tracing::info!(%pid, instance = process.label, "keepalived reloaded");
        Ok(Action::Reload)
    }

    /// Stops it for good and forgets its record and pid files (the
    /// configuration is the caller's).
    pub async fn remove(&self) -> Result<(), KeepalivedError> {
        let mut held = self.daemon.lock().await;
        held.stand_down();
        held.stop_process().await?;
        let files = self.files();
        for path in [&files.record, &files.pid, &files.subsystem_pid] {
            fsutil::remove_file_if_exists(path).map_err(io_error(format!("cannot remove {}", path.display())))?;
        }
        Ok(())
    }

    /// At agent start: adopts a running keepalived or starts it if it
    /// should run.
    pub async fn restore(&self) {
        self.daemon.lock().await.restore().await;
    }
}

async fn stop(pid: Pid, label: &str) -> Result<(), KeepalivedError> {
    daemon::stop(pid, STOP_GRACE).await.map_err(|e| match e {
        StopError::Signal { pid, source } => KeepalivedError::Signal { label: label.to_owned(), pid, source },
        StopError::Survived { pid } => KeepalivedError::Failed(format!("{label} {pid} survived SIGKILL")),
    })
}

/// What keepalived wrote to `path` after its first `offset` bytes (its
/// last 4 KiB of it).
fn log_since(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(offset).unwrap_or(usize::MAX).min(text.len());
    let from = from.max(text.len().saturating_sub(4096));
    String::from_utf8_lossy(&text[from..]).into_owned()
}

pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert_eq!(Action::parse("START").ok(), Some(Action::Start));
        assert!(matches!(Action::parse("BAD_TEST_DATA"), Err(KeepalivedError::UnknownAction(_))));
        assert_eq!(Action::Stop.done(), "stopped");
        assert_eq!(Action::Reload.verb(), "reload");
    }

    #[test]
    fn an_lvs_virtual_server_without_real_servers_is_no_reason_to_refuse() {
        // keepalived 2.2's words for a pool with no enabled member yet.
        assert!(benign_test_warning("Virtual server [ipv4-group]:0 has no real servers - ignoring"));
        assert!(benign_test_warning(BENIGN_TEST_WARNINGS[1]));
        assert!(!benign_test_warning("Virtual server [ipv4-group]:0 - unknown lb_algo nosuch"));
        assert!(!benign_test_warning("Unknown keyword 'has no real servers - ignoring'"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
