//! One supervised daemon (an haproxy of one load balancer, a keepalived),
//! whatever it is: the persisted record of whether it should run, the lock
//! that serialises what is done to it (and counts the deliberate starts and
//! stops, its generation, so a supervisor of an older process stands
//! down), its current [`Lifecycle`], and the supervisor that restarts it
//! with [`Backoff`] when it dies while it should run. What differs between
//! daemons (how to launch one and wait for its pid, how to stop it, where
//! its files are) comes from a [`Daemon`].

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::MutexGuard;

use super::{Backoff, Event, Lifecycle};
use crate::fsutil;

/// Whether the operator wants the daemon running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// The persisted record of one daemon: what a daemon keeps beside
/// `desired` (haproxy its peer name), then `desired`, in that order on
/// disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<E> {
    #[serde(flatten)]
    pub extra: E,
    pub desired: Desired,
}

/// Nothing beside `desired` (keepalived's record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoExtra {}

/// What differs between supervised daemons.
pub trait Daemon: Send + Sync + 'static {
    /// What the record keeps beside `desired`.
    type Extra: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    type Error: std::fmt::Display + Send + 'static;

    /// The program, first word of log messages: "haproxy".
    fn name(&self) -> &'static str;
    /// Which one, for the `instance` field of logs.
    fn instance(&self) -> &str;
    /// Where the record is kept.
    fn record_path(&self) -> &Path;
    /// The record of a daemon that has none, or an unreadable one. A
    /// configuration without the agent's record was left by upstream's
    /// agent, whose units start what is configured at boot: it is wanted.
    fn default_extra(&self) -> Self::Extra;
    /// Whether it has a configuration; without one nothing starts it.
    fn configured(&self) -> bool;
    /// The pid of the daemon if it runs (its pid file names a live process
    /// running its configuration).
    fn running_pid(&self) -> Option<Pid>;
    /// Launches it and waits until its pid file names it.
    fn launch(&self, record: &Record<Self::Extra>) -> impl Future<Output = Result<Pid, Self::Error>> + Send;
    /// Stops the process `pid`.
    fn stop(&self, pid: Pid) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The error for a record that cannot be written.
    fn record_error(&self, source: io::Error) -> Self::Error;
}

/// What the lock guards.
#[derive(Debug)]
struct Control {
    /// Counts deliberate starts, stops and removals.
    generation: u64,
    lifecycle: Lifecycle,
}

/// One daemon under supervision.
#[derive(Debug)]
pub struct Supervised<K: Daemon> {
    daemon: K,
    control: tokio::sync::Mutex<Control>,
    /// The generation of the supervisor watching the daemon; 0 when none
    /// does. A start or reload that finds the daemon running unwatched
    /// (someone else started it, or a start was cut short) attaches one.
    supervised: AtomicU64,
    me: Weak<Self>,
}

/// What a start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Launched(Pid),
    /// It was running already; it is supervised now.
    AlreadyRunning(Pid),
}

/// Clears the supervisor mark when its supervisor ends, however it ends.
struct SupervisorMark<K: Daemon> {
    supervised: Weak<Supervised<K>>,
    generation: u64,
}

impl<K: Daemon> Drop for SupervisorMark<K> {
    fn drop(&mut self) {
        if let Some(supervised) = self.supervised.upgrade() {
            let _ = supervised.supervised.compare_exchange(self.generation, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl<K: Daemon> Supervised<K> {
    pub fn new(daemon: K) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            daemon,
            control: tokio::sync::Mutex::new(Control { generation: 0, lifecycle: Lifecycle::Stopped }),
            supervised: AtomicU64::new(0),
            me: me.clone(),
        })
    }

    pub fn daemon(&self) -> &K {
        &self.daemon
    }

    /// The persisted record, or the default one when there is none.
    pub fn record(&self) -> Record<K::Extra> {
        std::fs::read(self.daemon.record_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| Record { extra: self.daemon.default_extra(), desired: Desired::Running })
    }

    pub fn has_record(&self) -> bool {
        self.daemon.record_path().exists()
    }

    pub fn wants_running(&self) -> bool {
        self.record().desired == Desired::Running
    }

    pub fn running_pid(&self) -> Option<Pid> {
        self.daemon.running_pid()
    }

    /// Whether a supervisor watches the daemon.
    #[cfg(test)]
    pub fn is_supervised(&self) -> bool {
        self.supervised.load(Ordering::SeqCst) != 0
    }

    /// Takes the daemon's lock: what is done with the guard is serialised
    /// with every other operation and with restarts.
    pub async fn lock(&self) -> Held<'_, K> {
        Held { supervised: self, control: self.control.lock().await }
    }

    /// Whether the supervisor of `generation` should keep the daemon up.
    fn still_wanted(&self, control: &Control, generation: u64) -> bool {
        control.generation == generation && self.daemon.configured() && self.wants_running()
    }

    /// Watches `pid`; when it dies while it should run, restarts it with
    /// backoff until it runs again or a newer generation takes over.
    fn spawn_supervisor(&self, pid: Pid, generation: u64) {
        self.supervised.store(generation, Ordering::SeqCst);
        let me = self.me.clone();
        let mark = SupervisorMark { supervised: me.clone(), generation };
        tokio::spawn(async move {
            let _mark = mark;
            // The process watched; none after a failed restart, which
            // waits again and retries.
            let mut watching = Some(pid);
            let mut backoff = Backoff::new();
            loop {
                if let Some(pid) = watching {
                    backoff.started();
                    super::wait_exit(pid).await;
                }
                let delay = {
                    let Some(this) = me.upgrade() else { return };
                    let mut control = this.control.lock().await;
                    if !this.still_wanted(&control, generation) {
                        return;
                    }
                    let delay = backoff.died();
                    let daemon = &this.daemon;
                    control
                        .lifecycle
                        .step(Event::Died { until: tokio::time::Instant::now() + delay }, daemon.instance());
                    match watching {
                        Some(pid) => tracing::warn!(
                            instance = daemon.instance(),
                            %pid,
                            retry_in = ?delay,
                            "{} exited unexpectedly",
                            daemon.name()
                        ),
                        None => {
                            tracing::info!(instance = daemon.instance(), retry_in = ?delay, "{} restart will be retried", daemon.name())
                        }
                    }
                    delay
                };
                // Not holding the daemon meanwhile: it may be dropped.
                tokio::time::sleep(delay).await;
                let Some(this) = me.upgrade() else { return };
                let mut control = this.control.lock().await;
                if !this.still_wanted(&control, generation) {
                    return;
                }
                let daemon = &this.daemon;
                if let Some(running) = daemon.running_pid() {
                    control.lifecycle.step(Event::Up(running), daemon.instance());
                    watching = Some(running);
                    continue;
                }
                control.lifecycle.step(Event::Launch, daemon.instance());
                match daemon.launch(&this.record()).await {
                    Ok(new_pid) => {
                        control.lifecycle.step(Event::Up(new_pid), daemon.instance());
                        tracing::info!(instance = daemon.instance(), pid = %new_pid, "{} restarted", daemon.name());
                        watching = Some(new_pid);
                    }
                    Err(e) => {
                        control.lifecycle.step(Event::LaunchFailed, daemon.instance());
                        tracing::error!(instance = daemon.instance(), error = %e, "cannot restart {}", daemon.name());
                        watching = None;
                    }
                }
            }
        });
    }
}

/// The daemon's lock, held: every operation on the daemon.
pub struct Held<'a, K: Daemon> {
    supervised: &'a Supervised<K>,
    control: MutexGuard<'a, Control>,
}

impl<K: Daemon> Held<'_, K> {
    fn daemon(&self) -> &K {
        &self.supervised.daemon
    }

    /// The lifecycle as last seen.
    #[cfg(test)]
    pub fn lifecycle(&self) -> Lifecycle {
        self.control.lifecycle
    }

    /// Brings the lifecycle in line with what runs: a daemon found running
    /// is `Running` (adopted, or restarted by someone else); one that died
    /// before its supervisor noticed may be started again now.
    pub fn refresh(&mut self) -> Lifecycle {
        let instance = self.daemon().instance().to_owned();
        match (self.daemon().running_pid(), self.control.lifecycle) {
            (Some(pid), _) => self.control.lifecycle.step(Event::Up(pid), &instance),
            (None, Lifecycle::Running { .. } | Lifecycle::Starting) => {
                self.control.lifecycle.step(Event::Died { until: tokio::time::Instant::now() }, &instance)
            }
            (None, _) => {}
        }
        self.control.lifecycle
    }

    /// Records whether the daemon should run (written only when it
    /// changes, or when there is no record yet).
    pub async fn set_desired(&mut self, desired: Desired) -> Result<(), K::Error> {
        let mut record = self.supervised.record();
        if record.desired != desired || !self.supervised.has_record() {
            record.desired = desired;
            self.save_record(&record).await?;
        }
        Ok(())
    }

    /// Replaces the record, atomically.
    pub async fn save_record(&mut self, record: &Record<K::Extra>) -> Result<(), K::Error> {
        let bytes = serde_json::to_vec(record).map_err(|e| self.daemon().record_error(e.into()))?;
        let path = self.daemon().record_path().to_owned();
        let (name, instance) = (self.daemon().name(), self.daemon().instance().to_owned());
        fsutil::blocking(move || match fsutil::write_atomic(&path, &bytes, 0o600) {
            // A full disk must not stop a stop: the record keeps its length
            // when only `desired` changes, so it can be rewritten in place.
            Err(e) if fsutil::is_full(&e) && fsutil::overwrite_in_place(&path, &bytes).is_ok() => {
                tracing::warn!(instance, error = %e, "state file system full; {name} record rewritten in place");
                Ok(())
            }
            written => written,
        })
        .await
        .map_err(|e| self.daemon().record_error(e))
    }

    /// Starts the daemon and records that it should run; one already
    /// running is left as it is, and supervised.
    pub async fn start(&mut self) -> Result<Started, K::Error> {
        self.set_desired(Desired::Running).await?;
        let lifecycle = self.refresh();
        if !lifecycle.can_start()
            && let Some(pid) = lifecycle.pid()
        {
            self.ensure_supervised(pid);
            return Ok(Started::AlreadyRunning(pid));
        }
        let pid = self.launch().await?;
        tracing::info!(instance = self.daemon().instance(), %pid, "{} started", self.daemon().name());
        Ok(Started::Launched(pid))
    }

    /// Launches the daemon (which must not run) and supervises it.
    async fn launch(&mut self) -> Result<Pid, K::Error> {
        let instance = self.daemon().instance().to_owned();
        self.control.lifecycle.step(Event::Launch, &instance);
        match self.supervised.daemon.launch(&self.supervised.record()).await {
            Ok(pid) => {
                self.attach(pid);
                Ok(pid)
            }
            Err(e) => {
                self.control.lifecycle.step(Event::LaunchFailed, &instance);
                Err(e)
            }
        }
    }

    /// The pid to send a reload to, when the daemon runs.
    pub fn reload_target(&mut self) -> Option<Pid> {
        let lifecycle = self.refresh();
        if lifecycle.can_reload() { lifecycle.pid() } else { None }
    }

    /// Attaches a supervisor to the running `pid` unless one watches it
    /// already. Returns whether one was attached.
    pub fn ensure_supervised(&mut self, pid: Pid) -> bool {
        let generation = self.control.generation;
        if generation != 0 && self.supervised.supervised.load(Ordering::SeqCst) == generation {
            return false;
        }
        self.attach(pid);
        tracing::warn!(
            instance = self.daemon().instance(),
            %pid,
            "{} was running without a supervisor; supervising it",
            self.daemon().name()
        );
        true
    }

    /// A new generation supervises `pid`.
    fn attach(&mut self, pid: Pid) {
        self.control.generation += 1;
        let instance = self.daemon().instance().to_owned();
        self.control.lifecycle.step(Event::Up(pid), &instance);
        self.supervised.spawn_supervisor(pid, self.control.generation);
    }

    /// Supervisors stand down: nothing restarts the daemon until the next
    /// start.
    pub fn stand_down(&mut self) {
        self.control.generation += 1;
    }

    /// Records that the daemon should not run (if it is configured), and
    /// stops it. Returns the pid stopped, if it ran.
    pub async fn stop(&mut self) -> Result<Option<Pid>, K::Error> {
        if self.daemon().configured() {
            self.set_desired(Desired::Stopped).await?;
        }
        self.stand_down();
        self.stop_process().await
    }

    /// Stops the process, leaving the record alone; supervisors must have
    /// stood down. Returns the pid stopped, if it ran.
    pub async fn stop_process(&mut self) -> Result<Option<Pid>, K::Error> {
        let lifecycle = self.refresh();
        let mut stopped = None;
        if lifecycle.can_stop()
            && let Some(pid) = lifecycle.pid()
        {
            self.supervised.daemon.stop(pid).await?;
            tracing::info!(instance = self.daemon().instance(), %pid, "{} stopped", self.daemon().name());
            stopped = Some(pid);
        }
        let instance = self.daemon().instance().to_owned();
        self.control.lifecycle.step(Event::Stopped, &instance);
        Ok(stopped)
    }

    /// At agent start: adopts the daemon if it runs, or starts it if it
    /// should run.
    pub async fn restore(&mut self) {
        if !self.daemon().configured() {
            return;
        }
        let (name, instance) = (self.daemon().name(), self.daemon().instance().to_owned());
        if let Some(pid) = self.refresh().pid() {
            self.attach(pid);
            tracing::info!(instance, %pid, "adopted running {name}");
        } else if self.supervised.wants_running() {
            match self.launch().await {
                Ok(pid) => tracing::info!(instance, %pid, "started {name} that should be running"),
                Err(e) => tracing::error!(instance, error = %e, "cannot start {name} that should be running"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use nix::sys::signal::{self, Signal};

    use super::super::{MIN_BACKOFF, STABLE_RUN};
    use super::*;

    /// `tail -f CONFIG` as a daemon: its command line names its
    /// configuration, and it runs until killed.
    #[derive(Debug)]
    struct Tail {
        config: PathBuf,
        pid_file: PathBuf,
        record: PathBuf,
        /// When each launch happened, on tokio's clock.
        launches: Mutex<Vec<tokio::time::Instant>>,
        fail: AtomicBool,
        pids: Mutex<Vec<Pid>>,
    }

    impl Tail {
        fn new(dir: &Path) -> Self {
            let config = dir.join("tail.conf");
            std::fs::write(&config, "").expect("config");
            Self {
                config,
                pid_file: dir.join("tail.pid"),
                record: dir.join("record.json"),
                launches: Mutex::new(Vec::new()),
                fail: AtomicBool::new(false),
                pids: Mutex::new(Vec::new()),
            }
        }

        fn launches(&self) -> Vec<tokio::time::Instant> {
            self.launches.lock().expect("launches").clone()
        }
    }

    impl Drop for Tail {
        fn drop(&mut self) {
            for pid in self.pids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = signal::kill(*pid, Signal::SIGKILL);
            }
        }
    }

    impl Daemon for Tail {
        type Extra = NoExtra;
        type Error = io::Error;

        fn name(&self) -> &'static str {
            "tail"
        }
        fn instance(&self) -> &str {
            "test"
        }
        fn record_path(&self) -> &Path {
            &self.record
        }
        fn default_extra(&self) -> NoExtra {
            NoExtra {}
        }
        fn configured(&self) -> bool {
            self.config.is_file()
        }
        fn running_pid(&self) -> Option<Pid> {
            super::super::running_daemon(&self.pid_file, &self.config)
        }
        async fn launch(&self, _record: &Record<NoExtra>) -> io::Result<Pid> {
            self.launches.lock().expect("launches").push(tokio::time::Instant::now());
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("launch refused by the test"));
            }
            let child = std::process::Command::new("tail")
                .arg("-f")
                .arg(&self.config)
                .stdout(std::process::Stdio::null())
                .process_group(0)
                .spawn()?;
            let pid = Pid::from_raw(child.id() as i32);
            self.pids.lock().expect("pids").push(pid);
            // Reaped when it exits, so it does not linger as a zombie.
            std::thread::spawn(move || {
                let mut child = child;
                child.wait()
            });
            fsutil::write_atomic(&self.pid_file, format!("{pid}\n").as_bytes(), 0o600)?;
            Ok(pid)
        }
        async fn stop(&self, pid: Pid) -> io::Result<()> {
            // No grace timer: tokio's clock may be paused, and would run
            // out while the process exits in real time.
            signal::kill(pid, Signal::SIGTERM)?;
            super::super::wait_exit(pid).await;
            Ok(())
        }
        fn record_error(&self, source: io::Error) -> io::Error {
            source
        }
    }

    /// Waits, on the wall clock (tokio's may be paused), until `check`
    /// holds.
    async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn kill(pid: Pid) {
        signal::kill(pid, Signal::SIGKILL).expect("kill");
    }

    fn alive(pid: Pid) -> bool {
        !super::super::is_zombie(pid)
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_daemon_is_restarted_after_the_backoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        let Started::Launched(first) = daemon.lock().await.start().await.expect("start") else {
            panic!("it was not running")
        };
        let killed_at = tokio::time::Instant::now();
        kill(first);
        let second = until("a restart", || daemon.running_pid().filter(|pid| *pid != first)).await;
        let launches = daemon.daemon().launches();
        assert_eq!(launches.len(), 2, "one launch, one restart");
        assert!(launches[1] - killed_at >= MIN_BACKOFF, "restarted after {:?}", launches[1] - killed_at);
        assert_eq!(daemon.lock().await.lifecycle(), Lifecycle::Running { pid: second });
        assert!(daemon.is_supervised());

        // Dies again quickly: the delay doubles.
        let killed_again = tokio::time::Instant::now();
        kill(second);
        until("a second restart", || daemon.running_pid().filter(|pid| *pid != second)).await;
        let launches = daemon.daemon().launches();
        assert!(launches[2] - killed_again >= 2 * MIN_BACKOFF, "{:?}", launches[2] - killed_again);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_restart_is_retried_with_growing_delays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        let Started::Launched(pid) = daemon.lock().await.start().await.expect("start") else { panic!("not launched") };
        daemon.daemon().fail.store(true, Ordering::SeqCst);
        kill(pid);
        until("two failed restarts", || (daemon.daemon().launches().len() == 3).then_some(())).await;
        daemon.daemon().fail.store(false, Ordering::SeqCst);
        let restarted = until("a restart that works", || daemon.running_pid().filter(|p| *p != pid)).await;
        let launches = daemon.daemon().launches();
        assert_eq!(launches.len(), 4, "launch, two failed restarts, one that worked");
        assert!(launches[2] - launches[1] >= 2 * MIN_BACKOFF, "{:?}", launches[2] - launches[1]);
        assert!(launches[3] - launches[2] >= 4 * MIN_BACKOFF, "{:?}", launches[3] - launches[2]);
        assert_eq!(daemon.lock().await.lifecycle(), Lifecycle::Running { pid: restarted });
        assert!(daemon.is_supervised());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_daemon_is_not_restarted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        let Started::Launched(pid) = daemon.lock().await.start().await.expect("start") else { panic!("not launched") };
        let stopped = daemon.lock().await.stop().await.expect("stop");
        assert_eq!(stopped, Some(pid));
        until("the daemon to exit", || (!alive(pid)).then_some(())).await;
        until("the supervisor to stand down", || (!daemon.is_supervised()).then_some(())).await;
        tokio::time::sleep(STABLE_RUN).await;
        assert_eq!(daemon.daemon().launches().len(), 1, "never restarted");
        assert_eq!(daemon.running_pid(), None);
        assert_eq!(daemon.lock().await.lifecycle(), Lifecycle::Stopped);
        assert!(!daemon.wants_running());
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_change_makes_the_old_supervisor_stand_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        let Started::Launched(pid) = daemon.lock().await.start().await.expect("start") else { panic!("not launched") };
        daemon.lock().await.stand_down();
        kill(pid);
        until("the old supervisor to end", || (!daemon.is_supervised()).then_some(())).await;
        tokio::time::sleep(STABLE_RUN).await;
        assert_eq!(daemon.daemon().launches().len(), 1, "the old supervisor did not restart it");
        assert!(daemon.wants_running(), "still wanted: only the generation changed");
        // The next start launches it again under a new supervisor.
        let again = daemon.lock().await.start().await.expect("start");
        assert!(matches!(again, Started::Launched(_)), "{again:?}");
        assert!(daemon.is_supervised());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_follow_what_the_lifecycle_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        {
            let mut held = daemon.lock().await;
            assert_eq!(held.lifecycle(), Lifecycle::Stopped);
            assert_eq!(held.reload_target(), None, "nothing runs to reload");
            assert_eq!(held.stop_process().await.expect("stop"), None, "nothing runs to stop");
        }
        let Started::Launched(pid) = daemon.lock().await.start().await.expect("start") else { panic!("not launched") };
        let mut held = daemon.lock().await;
        assert_eq!(held.lifecycle(), Lifecycle::Running { pid });
        assert!(!held.lifecycle().can_start());
        assert_eq!(held.start().await.expect("start"), Started::AlreadyRunning(pid), "a running daemon is not started");
        assert_eq!(held.reload_target(), Some(pid));
        assert_eq!(held.stop().await.expect("stop"), Some(pid));
        assert_eq!(held.reload_target(), None);
        assert_eq!(held.stop().await.expect("stop"), None, "a stopped daemon has nothing to stop");
        assert_eq!(daemon.daemon().launches().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_launch_is_reported_and_may_be_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        daemon.daemon().fail.store(true, Ordering::SeqCst);
        let mut held = daemon.lock().await;
        let err = held.start().await.expect_err("refused");
        assert_eq!(err.to_string(), "launch refused by the test");
        assert_eq!(held.lifecycle(), Lifecycle::Failed);
        assert!(held.lifecycle().can_start());
        daemon.daemon().fail.store(false, Ordering::SeqCst);
        assert!(matches!(held.start().await.expect("start"), Started::Launched(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_running_unwatched_gets_a_supervisor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Supervised::new(Tail::new(dir.path()));
        let Started::Launched(pid) = first.lock().await.start().await.expect("start") else { panic!("not launched") };
        // Another agent finds it: nothing of its own watches it.
        let second = Supervised::new(Tail::new(dir.path()));
        let mut held = second.lock().await;
        assert_eq!(held.start().await.expect("start"), Started::AlreadyRunning(pid));
        assert!(second.is_supervised());
        assert!(!held.ensure_supervised(pid), "one supervisor is enough");
        drop(held);
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn restore_adopts_a_running_daemon_and_starts_a_wanted_dead_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = Supervised::new(Tail::new(dir.path()));
        let Started::Launched(pid) = before.lock().await.start().await.expect("start") else { panic!("not launched") };
        // The agent restarts: a new supervised daemon over the same files.
        let after = Supervised::new(Tail::new(dir.path()));
        after.lock().await.restore().await;
        assert!(after.daemon().launches().is_empty(), "adopted, not launched");
        assert_eq!(after.lock().await.lifecycle(), Lifecycle::Running { pid });
        assert!(after.is_supervised());

        // Dead while the agent was down (a reboot): started.
        before.lock().await.stand_down();
        after.lock().await.stand_down();
        kill(pid);
        until("the daemon to exit", || (!alive(pid)).then_some(())).await;
        let rebooted = Supervised::new(Tail::new(dir.path()));
        rebooted.lock().await.restore().await;
        assert_eq!(rebooted.daemon().launches().len(), 1);
        let new_pid = rebooted.running_pid().expect("started");
        assert_eq!(rebooted.lock().await.lifecycle(), Lifecycle::Running { pid: new_pid });

        // Not wanted: left stopped.
        rebooted.lock().await.stop().await.expect("stop");
        let later = Supervised::new(Tail::new(dir.path()));
        later.lock().await.restore().await;
        assert!(later.daemon().launches().is_empty());
        assert_eq!(later.running_pid(), None);
    }

    #[tokio::test]
    async fn records_are_written_atomically_in_the_existing_format() {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct Peer {
            peer_name: String,
        }
        let peer = Record { extra: Peer { peer_name: "p1".into() }, desired: Desired::Running };
        assert_eq!(serde_json::to_string(&peer).expect("encode"), r#"{"peer_name":"p1","desired":"running"}"#);
        assert_eq!(
            serde_json::from_str::<Record<Peer>>(r#"{"desired":"stopped","peer_name":"x"}"#).expect("decode"),
            Record { extra: Peer { peer_name: "x".into() }, desired: Desired::Stopped }
        );
        let plain = Record { extra: NoExtra {}, desired: Desired::Stopped };
        assert_eq!(serde_json::to_string(&plain).expect("encode"), r#"{"desired":"stopped"}"#);

        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Supervised::new(Tail::new(dir.path()));
        // No record: a configuration left by upstream's agent, wanted.
        assert!(!daemon.has_record());
        assert!(daemon.wants_running());
        daemon.lock().await.set_desired(Desired::Stopped).await.expect("record");
        assert_eq!(std::fs::read_to_string(dir.path().join("record.json")).expect("read"), r#"{"desired":"stopped"}"#);
        assert!(!daemon.wants_running());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["record.json", "tail.conf"], "no temporary file left behind");
        // An unreadable record counts as none.
        std::fs::write(dir.path().join("record.json"), "{").expect("write");
        assert!(daemon.wants_running());
    }
}
