//! Running haproxy: `haproxy -c` checks, and master-worker processes.
//!
//! Each load balancer gets one master started with `-W -D`: the master
//! daemonizes (its own session, reparented away from the agent), so the
//! agent can restart without touching it and finds it again through its pid
//! file. Reload is `SIGUSR2` to the master, which re-executes itself with the
//! new configuration and hands the listening sockets to the new workers, so
//! no connection is refused; the master CLI socket (`-S`) tells when the new
//! generation is up or the reload failed. Exit of a master is observed with
//! a pidfd, which works for processes that are not our children.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use super::cli;
use crate::daemon::{self, StopError, is_zombie, running_daemon};
use crate::netns::Netns;

/// Longest a configuration check or a start may take (many certificates
/// make haproxy slow to load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the daemonized master may take to record its pid.
const PID_FILE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a reload may take to bring up the new workers.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace given to a master to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a reload waits for the master CLI to answer before it signals:
/// haproxy 2.6's master re-executes itself once its first worker is up,
/// and its CLI does not answer meanwhile (a reload right after a start
/// meets that window on a busy machine).
const MASTER_CLI_PATIENCE: Duration = Duration::from_secs(5);
/// The master's output file is emptied on reload beyond this size.
const LOG_ROTATE_BYTES: u64 = 1024 * 1024;

/// The files of one haproxy instance and the peer name it runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub config: PathBuf,
    pub pid_file: PathBuf,
    pub master_socket: PathBuf,
    /// Receives the master's standard output and error.
    pub log_file: PathBuf,
    pub peer_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: PathBuf, source: io::Error },
    #[error("{cmd} did not finish within {timeout:?}")]
    Timeout { cmd: PathBuf, timeout: Duration },
    /// `haproxy -c` rejected the configuration; haproxy's own words.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    StartFailed(String),
    #[error("{0}")]
    ReloadFailed(String),
    #[error("{0}")]
    StopFailed(String),
    #[error("cannot signal haproxy {pid}: {source}")]
    Signal { pid: Pid, source: nix::errno::Errno },
    /// haproxy's launcher succeeded but no master runs; what haproxy
    /// logged.
    #[error("haproxy exited successfully but no running master was recorded in {pid_file}: {log}")]
    NoMaster { pid_file: PathBuf, log: String },
    #[error("cannot query the haproxy master CLI {socket}: {source}")]
    MasterCli { socket: PathBuf, source: io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> HaproxyError {
    let what = what.into();
    move |source| HaproxyError::Io { what, source }
}

/// How to run haproxy on this amphora.
#[derive(Debug)]
pub struct Haproxy {
    cmd: PathBuf,
    /// Second configuration file carrying `group`, as upstream passes it.
    user_group_config: PathBuf,
    netns: Option<Arc<Netns>>,
}

impl Haproxy {
    pub fn new(cmd: PathBuf, user_group_config: PathBuf, netns: Option<Arc<Netns>>) -> Self {
        Self { cmd, user_group_config, netns }
    }

    fn config_args(&self, config: &Path, peer_name: &str) -> Vec<OsString> {
        vec![
            "-f".into(),
            config.into(),
            "-f".into(),
            self.user_group_config.clone().into(),
            "-L".into(),
            peer_name.into(),
        ]
    }

    /// Validates a configuration exactly as it will run. On rejection the
    /// error carries haproxy's output.
    pub async fn check(&self, config: &Path, peer_name: &str) -> Result<(), HaproxyError> {
        let mut command = Command::new(&self.cmd);
        command.arg("-c").args(self.config_args(config, peer_name)).stdin(Stdio::null());
        let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
            .await
            .map_err(|_| HaproxyError::Timeout { cmd: self.cmd.clone(), timeout: COMMAND_TIMEOUT })?
            .map_err(|source| HaproxyError::Spawn { cmd: self.cmd.clone(), source })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        // The answer names the files as the specification does
        // ("parsing [haproxy.cfg:4]"), not where the agent keeps them.
        for file in [config, self.user_group_config.as_path()] {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                text = text.replace(&format!("{}/", dir.display()), "");
            }
        }
        Err(HaproxyError::Invalid(text))
    }

    /// Starts a master-worker haproxy and returns the master's pid once it
    /// has bound its sockets and daemonized.
    pub async fn start(&self, instance: &Instance) -> Result<Pid, HaproxyError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&instance.log_file)
            .map_err(io_error(format!("cannot open {}", instance.log_file.display())))?;
        log.set_len(0).map_err(io_error("cannot truncate the haproxy log"))?;
        let stderr = log.try_clone().map_err(io_error("cannot duplicate the log descriptor"))?;

        // A stale pid file must not be mistaken for the new master's.
        crate::fsutil::remove_file_if_exists(&instance.pid_file)
            .map_err(io_error(format!("cannot remove {}", instance.pid_file.display())))?;
        // A master can outlive its pid file (its directory removed under
        // it); a second one would share the ports with it (SO_REUSEPORT)
        // and split the traffic between two configurations.
        for pid in masters_running(&instance.config) {
            tracing::warn!(%pid, config = %instance.config.display(), "stopping an haproxy master that lost its pid file");
            self.stop(pid).await?;
        }

        let mut master_socket = OsString::from(&instance.master_socket);
        master_socket.push(",mode,600");
        let mut command = Command::new(&self.cmd);
        command
            .args(["-W", "-D"])
            .args(self.config_args(&instance.config, &instance.peer_name))
            .arg("-p")
            .arg(&instance.pid_file)
            .arg("-S")
            .arg(master_socket)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        if let Some(netns) = &self.netns {
            netns.enter_on_spawn(&mut command);
        }
        let status = tokio::time::timeout(COMMAND_TIMEOUT, command.status())
            .await
            .map_err(|_| HaproxyError::Timeout { cmd: self.cmd.clone(), timeout: COMMAND_TIMEOUT })?
            .map_err(|source| HaproxyError::Spawn { cmd: self.cmd.clone(), source })?;
        if !status.success() {
            let output = read_log(&instance.log_file, 0);
            return Err(HaproxyError::StartFailed(explain_start_failure(output)));
        }
        // The daemonized master writes the pid file after the launcher
        // exits.
        let deadline = tokio::time::Instant::now() + PID_FILE_TIMEOUT;
        loop {
            if let Some(pid) = running_pid(instance) {
                return Ok(pid);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HaproxyError::NoMaster {
                    pid_file: instance.pid_file.clone(),
                    log: read_log(&instance.log_file, 0).trim().to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reloads a running master hitlessly and waits for the outcome.
    pub async fn reload(&self, instance: &Instance, pid: Pid) -> Result<(), HaproxyError> {
        self.check(&instance.config, &instance.peer_name).await.map_err(|e| match e {
            HaproxyError::Invalid(output) => HaproxyError::ReloadFailed(output),
            other => other,
        })?;
        let asking = tokio::time::Instant::now();
        let before = loop {
            match master_status(instance).await {
                Ok(status) => break status,
                Err(_) if asking.elapsed() < MASTER_CLI_PATIENCE => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(source) => return Err(HaproxyError::MasterCli { socket: instance.master_socket.clone(), source }),
            }
        };
        let log_offset = rotate_log(&instance.log_file);

        signal::kill(pid, Signal::SIGUSR2).map_err(|source| HaproxyError::Signal { pid, source })?;

        let outcome = tokio::time::timeout(RELOAD_TIMEOUT, async {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Ok(now) = master_status(instance).await
                    && now.reloads > before.reloads
                {
                    if now.failed > before.failed {
                        return Err(());
                    }
                    if now.current_workers > 0 {
                        return Ok(());
                    }
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err(HaproxyError::ReloadFailed(format!(
                "haproxy kept the previous configuration: {}",
                read_log(&instance.log_file, log_offset).trim()
            ))),
            Err(_) => Err(HaproxyError::ReloadFailed(format!(
                "haproxy did not complete the reload within {RELOAD_TIMEOUT:?}: {}",
                read_log(&instance.log_file, log_offset).trim()
            ))),
        }
    }

    /// Stops a master and its workers; connections in flight are cut, as
    /// upstream's `systemctl stop` does.
    pub async fn stop(&self, pid: Pid) -> Result<(), HaproxyError> {
        daemon::stop(pid, STOP_GRACE).await.map_err(|e| match e {
            StopError::Signal { pid, source } => HaproxyError::Signal { pid, source },
            StopError::Survived { pid } => HaproxyError::StopFailed(format!("haproxy {pid} survived SIGKILL")),
        })
    }
}

async fn master_status(instance: &Instance) -> io::Result<cli::MasterStatus> {
    let answer = cli::query(&instance.master_socket, "show proc").await?;
    cli::parse_show_proc(&answer)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected show proc answer"))
}

/// Adds a hint an operator can act on to haproxy's own start-up error.
fn explain_start_failure(output: String) -> String {
    if !output.contains("Cannot raise FD limit") {
        return output;
    }
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{}\nThe configuration's maxconn needs more open files than the agent's hard limit \
         (RLIMIT_NOFILE {hard}) allows: raise the limit of the amphora-agent service \
         (LimitNOFILE=) or lower maxconn.",
        output.trim_end()
    )
}

/// The output the master wrote after `offset`, bounded to its last 64 KiB.
fn read_log(path: &Path, offset: u64) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = offset.max(len.saturating_sub(MAX));
    let mut text = String::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let mut bytes = Vec::new();
        let _ = file.take(MAX).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// Empties the log if it grew large and returns the offset new output
/// will start at. The master appends (O_APPEND), so truncation is safe.
fn rotate_log(path: &Path) -> u64 {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len > LOG_ROTATE_BYTES
        && let Ok(file) = OpenOptions::new().write(true).open(path)
        && file.set_len(0).is_ok()
    {
        return 0;
    }
    len
}

/// The master pid of `instance` if that master is alive. The process must
/// be an haproxy running this instance's configuration, so a recycled pid
/// is never mistaken for it.
pub fn running_pid(instance: &Instance) -> Option<Pid> {
    running_daemon(&instance.pid_file, &instance.config)
}

/// Live haproxy masters running `config`, found by their command lines
/// (not configuration checks, and not workers, whose parent runs the same
/// command line).
pub fn masters_running(config: &Path) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let runs = |pid: i32| {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let mut args = cmdline.split(|b| *b == 0);
        let config = config.as_os_str().as_encoded_bytes();
        args.clone().any(|arg| arg == config) && !args.any(|arg| arg == b"-c") && !is_zombie(Pid::from_raw(pid))
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| runs(*pid) && !parent_of(*pid).is_some_and(runs))
        .map(Pid::from_raw)
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_failures_get_a_hint() {
        let explained = explain_start_failure(
            "[ALERT]    (2543) : [haproxy.main()] Cannot raise FD limit to 100040, limit is 20000.\n".into(),
        );
        assert!(explained.starts_with("[ALERT]"));
        assert!(explained.contains("LimitNOFILE"));
        assert_eq!(explain_start_failure("other".into()), "other");
    }
}
