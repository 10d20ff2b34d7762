//! What haproxy and keepalived supervision share: the lifecycle of a
//! supervised daemon with its allowed transitions in one place, the restart
//! backoff (on `tokio::time`, so tests pause time), the process effects
//! both need (is the daemon in a pid file alive, wait for a process to
//! exit, stop one), and [`Supervised`], the one supervised-daemon type
//! built from them.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

mod supervised;
pub use supervised::{Daemon, Desired, Held, NoExtra, Record, Started, Supervised};

/// First delay before restarting a daemon that died.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between restart attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A daemon that ran this long before dying restarts after `MIN_BACKOFF`
/// again.
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// Where a supervised daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Not running, and not wanted.
    Stopped,
    /// Launched; its pid file has not named a live process yet.
    Starting,
    Running {
        pid: Pid,
    },
    /// Died while wanted; restarts at `until`.
    Backoff {
        until: Instant,
    },
    /// The last launch failed; the supervisor waits and retries.
    Failed,
}

/// Why the lifecycle changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The daemon is being launched.
    Launch,
    /// Its pid file names a live process (launched, or found running).
    Up(Pid),
    /// The launch failed.
    LaunchFailed,
    /// It exited while wanted; the supervisor retries at `until`.
    Died { until: Instant },
    /// It was stopped on request.
    Stopped,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} is not allowed in {from:?}")]
pub struct InvalidTransition {
    pub from: Lifecycle,
    pub event: Event,
}

impl Lifecycle {
    /// Whether a start may be attempted: not while one is under way, and a
    /// running daemon is reloaded instead.
    pub fn can_start(&self) -> bool {
        matches!(self, Lifecycle::Stopped | Lifecycle::Backoff { .. } | Lifecycle::Failed)
    }

    /// Whether a reload may be sent: only to a running daemon.
    pub fn can_reload(&self) -> bool {
        matches!(self, Lifecycle::Running { .. })
    }

    /// Whether a stop has anything to do (a pending restart is cancelled
    /// too).
    pub fn can_stop(&self) -> bool {
        matches!(self, Lifecycle::Starting | Lifecycle::Running { .. } | Lifecycle::Backoff { .. })
    }

    /// The pid of a running daemon.
    pub fn pid(&self) -> Option<Pid> {
        match self {
            Lifecycle::Running { pid } => Some(*pid),
            _ => None,
        }
    }

    /// Applies `event` for the supervisor of `instance`. A transition the
    /// table forbids is a supervisor bug: it is logged and the state kept.
    pub fn step(&mut self, event: Event, instance: &str) {
        match self.on(event) {
            Ok(next) => *self = next,
            Err(e) => tracing::error!(instance, error = %e, "unexpected daemon lifecycle transition"),
        }
    }

    /// The one table of allowed transitions.
    pub fn on(self, event: Event) -> Result<Lifecycle, InvalidTransition> {
        use Lifecycle as L;
        let next = match (self, event) {
            (from, Event::Launch) if from.can_start() => L::Starting,
            // Found running (adopted), or came up after a launch; a reload
            // can change the master's pid.
            (L::Stopped | L::Starting | L::Running { .. } | L::Backoff { .. } | L::Failed, Event::Up(pid)) => {
                L::Running { pid }
            }
            (L::Starting, Event::LaunchFailed) => L::Failed,
            (L::Running { .. }, Event::Died { until }) => L::Backoff { until },
            // A restart that failed waits again.
            (L::Starting | L::Backoff { .. } | L::Failed, Event::Died { until }) => L::Backoff { until },
            (_, Event::Stopped) => L::Stopped,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }
}

/// Restart delays: doubling from `MIN_BACKOFF` to `MAX_BACKOFF`, back to
/// the minimum after a run of `STABLE_RUN` or more.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    since: Instant,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Starts counting a run from now.
    pub fn new() -> Self {
        Self { next: MIN_BACKOFF, since: Instant::now() }
    }

    /// The daemon (re)started: its run counts from now.
    pub fn started(&mut self) {
        self.since = Instant::now();
    }

    /// The daemon died: the delay before the next attempt.
    pub fn died(&mut self) -> Duration {
        if self.since.elapsed() >= STABLE_RUN {
            self.next = MIN_BACKOFF;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }
}

/// Why a process could not be stopped.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("cannot signal {pid}: {source}")]
    Signal { pid: Pid, source: nix::errno::Errno },
    #[error("{pid} survived SIGKILL")]
    Survived { pid: Pid },
}

/// Stops a daemon that leads its own process group: SIGTERM, then after
/// `grace` SIGKILL to the whole group. A process already gone is stopped.
pub async fn stop(pid: Pid, grace: Duration) -> Result<(), StopError> {
    match signal::kill(pid, Signal::SIGTERM) {
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(source) => return Err(StopError::Signal { pid, source }),
        Ok(()) => {}
    }
    // A stopped process acts on SIGTERM only once continued (systemd
    // sends SIGCONT after the kill signal for the same reason).
    let _ = signal::kill(pid, Signal::SIGCONT);
    if tokio::time::timeout(grace, wait_exit(pid)).await.is_ok() {
        return Ok(());
    }
    tracing::warn!(%pid, "ignored SIGTERM; killing its process group");
    let _ = signal::killpg(pid, Signal::SIGKILL);
    tokio::time::timeout(grace, wait_exit(pid)).await.map_err(|_| StopError::Survived { pid })
}

fn read_pid_file(path: &Path) -> Option<Pid> {
    let text = fs::read_to_string(path).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 1).then(|| Pid::from_raw(pid))
}

/// The pid recorded in `pid_file`, if that process is alive and has
/// `argument` (its configuration file) on its command line.
pub fn running_daemon(pid_file: &Path, argument: &Path) -> Option<Pid> {
    let pid = read_pid_file(pid_file)?;
    is_alive(pid, argument).then_some(pid)
}

fn is_alive(pid: Pid, config: &Path) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may
    // itself contain spaces or parentheses.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    runs_config(&cmdline, || fs::read_link(format!("/proc/{pid}/exe")).is_ok(), config)
}

/// Whether a live process with `cmdline` runs `config`. A process between
/// two images in execve reads an empty command line, and haproxy's master
/// re-executes itself after every start and reload (slowly, on a busy
/// machine): taking it for dead would start a second master beside it.
/// Kernel threads read empty too, forever; they have no executable.
fn runs_config(cmdline: &[u8], has_executable: impl FnOnce() -> bool, config: &Path) -> bool {
    if cmdline.is_empty() {
        return has_executable();
    }
    let config = config.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == config)
}

/// Resolves when the process `pid` has exited (also when it no longer
/// exists). Works for processes that are not children of the agent.
pub async fn wait_exit(pid: Pid) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is shared with the kernel.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if raw < 0 {
        // ESRCH: already gone. Anything else (an old kernel): poll.
        if io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            while signal::kill(pid, None).is_ok() && !is_zombie(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        return;
    }
    // SAFETY: `raw` is a descriptor we just received and own exclusively.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // SAFETY: an OwnedFd stays open and refers to the same pidfd for as
    // long as the AsyncFd owns it.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(_) => {
            while signal::kill(pid, None).is_ok() && !is_zombie(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

pub fn is_zombie(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let i = stat.rfind(')')?;
            stat[i + 1..].split_whitespace().next().map(|s| s == "Z" || s == "X")
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> Pid {
        Pid::from_raw(4242)
    }

    #[test]
    fn allowed_transitions() {
        let later = Instant::now() + Duration::from_secs(1);
        let steps = [
            (Lifecycle::Stopped, Event::Launch, Lifecycle::Starting),
            (Lifecycle::Starting, Event::Up(pid()), Lifecycle::Running { pid: pid() }),
            (Lifecycle::Starting, Event::LaunchFailed, Lifecycle::Failed),
            (Lifecycle::Running { pid: pid() }, Event::Died { until: later }, Lifecycle::Backoff { until: later }),
            (Lifecycle::Backoff { until: later }, Event::Launch, Lifecycle::Starting),
            (Lifecycle::Starting, Event::Died { until: later }, Lifecycle::Backoff { until: later }),
            (Lifecycle::Failed, Event::Launch, Lifecycle::Starting),
            (Lifecycle::Failed, Event::Died { until: later }, Lifecycle::Backoff { until: later }),
            // Adoption of a daemon found running.
            (Lifecycle::Stopped, Event::Up(pid()), Lifecycle::Running { pid: pid() }),
            (Lifecycle::Running { pid: pid() }, Event::Stopped, Lifecycle::Stopped),
            (Lifecycle::Backoff { until: later }, Event::Stopped, Lifecycle::Stopped),
        ];
        for (from, event, to) in steps {
            assert_eq!(from.on(event), Ok(to), "{from:?} on {event:?}");
        }
    }

    #[test]
    fn a_forbidden_step_keeps_the_state() {
        let mut state = Lifecycle::Running { pid: pid() };
        state.step(Event::Launch, "test");
        assert_eq!(state, Lifecycle::Running { pid: pid() });
        state.step(Event::Stopped, "test");
        assert_eq!(state, Lifecycle::Stopped);
    }

    #[test]
    fn forbidden_transitions() {
        let later = Instant::now() + Duration::from_secs(1);
        for (from, event) in [
            (Lifecycle::Running { pid: pid() }, Event::Launch),
            (Lifecycle::Starting, Event::Launch),
            (Lifecycle::Stopped, Event::LaunchFailed),
            (Lifecycle::Running { pid: pid() }, Event::LaunchFailed),
            (Lifecycle::Stopped, Event::Died { until: later }),
            (Lifecycle::Failed, Event::LaunchFailed),
        ] {
            assert_eq!(from.on(event), Err(InvalidTransition { from, event }), "{from:?} on {event:?}");
        }
    }

    #[test]
    fn predicates() {
        let later = Instant::now();
        let running = Lifecycle::Running { pid: pid() };
        let table = [
            // (state, can_start, can_reload, can_stop)
            (Lifecycle::Stopped, true, false, false),
            (Lifecycle::Starting, false, false, true),
            (running, false, true, true),
            (Lifecycle::Backoff { until: later }, true, false, true),
            (Lifecycle::Failed, true, false, false),
        ];
        for (state, start, reload, stop) in table {
            assert_eq!((state.can_start(), state.can_reload(), state.can_stop()), (start, reload, stop), "{state:?}");
        }
        assert_eq!(running.pid(), Some(pid()));
        assert_eq!(Lifecycle::Starting.pid(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_the_maximum() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.died().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_run_resets_the_backoff_and_a_short_one_does_not() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.died(), Duration::from_secs(1));
        assert_eq!(backoff.died(), Duration::from_secs(2));
        backoff.started();
        tokio::time::advance(STABLE_RUN - Duration::from_millis(1)).await;
        assert_eq!(backoff.died(), Duration::from_secs(4), "a run just short of stable keeps growing the delay");
        backoff.started();
        tokio::time::advance(STABLE_RUN).await;
        assert_eq!(backoff.died(), MIN_BACKOFF, "a stable run starts over");
        backoff.started();
        assert_eq!(backoff.died(), Duration::from_secs(2), "a quick death after the restart doubles again");
    }

    #[tokio::test]
    async fn stop_ends_a_process_group_and_accepts_one_already_gone() {
        use std::os::unix::process::CommandExt;
        // A leader that ignores SIGTERM, so the group kill is needed.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pid = Pid::from_raw(child.id() as i32);
        // Wait (with a deadline) until the shell ignores SIGTERM (bit 15 of
        // SigIgn), so the stop must escalate.
        let ignores_term = || {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?.trim().to_owned();
                    u64::from_str_radix(&mask, 16).ok()
                })
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ignores_term() {
            assert!(Instant::now() < deadline, "the shell never set its trap");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reaper = std::thread::spawn(move || child.wait());
        stop(pid, Duration::from_millis(300)).await.expect("stopped");
        reaper.join().expect("join").expect("wait");
        stop(pid, Duration::from_millis(300)).await.expect("already gone");
    }

    #[test]
    fn pid_files_are_read_defensively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lb.pid");
        for (content, expected) in [("1234\n", Some(1234)), ("1\n", None), ("x\n", None), ("", None), ("-5", None)] {
            fs::write(&path, content).expect("write");
            assert_eq!(read_pid_file(&path).map(Pid::as_raw), expected, "{content:?}");
        }
    }

    #[test]
    fn the_current_process_is_alive_only_with_its_own_arguments() {
        let me = Pid::this();
        let exe = std::env::args_os().next().expect("argv0");
        assert!(is_alive(me, Path::new(&exe)));
        assert!(!is_alive(me, Path::new("/nonexistent/haproxy.cfg")));
    }

    #[test]
    fn a_process_in_execve_still_runs_its_config_and_a_kernel_thread_does_not() {
        let config = Path::new("/s/lb/haproxy.cfg");
        let args = b"/usr/sbin/haproxy\0-W\0-f\0/s/lb/haproxy.cfg\0";
        assert!(runs_config(args, || false, config));
        assert!(!runs_config(b"/usr/sbin/haproxy\0-f\0/s/other/haproxy.cfg\0", || true, config));
        // Empty: mid-execve (an executable) or a kernel thread (none).
        assert!(runs_config(b"", || true, config));
        assert!(!runs_config(b"", || false, config));
    }

    /// A pid file naming a recycled pid that is now a kernel thread (empty
    /// command line, like a daemon in the middle of execve) is not a
    /// running daemon.
    #[test]
    fn a_kernel_thread_is_not_a_running_daemon() {
        const PF_KTHREAD: u64 = 0x0020_0000;
        let kernel_thread = fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let flags =
                    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok());
                flags.is_some_and(|f| f & PF_KTHREAD != 0)
            })
            .expect("a kernel thread in /proc");
        assert!(fs::read(format!("/proc/{kernel_thread}/cmdline")).expect("cmdline").is_empty());
        assert!(!is_alive(Pid::from_raw(kernel_thread), Path::new("/etc/haproxy/haproxy.cfg")));
    }

    #[tokio::test]
    async fn wait_exit_sees_a_process_end() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().expect("sleep");
        let pid = Pid::from_raw(child.id() as i32);
        let reaper = std::thread::spawn(move || child.wait());
        tokio::time::timeout(Duration::from_secs(10), wait_exit(pid)).await.expect("exit seen");
        reaper.join().expect("join").expect("wait");
    }
}
