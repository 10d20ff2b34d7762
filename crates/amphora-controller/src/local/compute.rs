//! The local `ComputeDriver`: an amphora "VM" is a network namespace
//! (`{prefix}-amp-{compute id}`) with its management port inside as `eth0`,
//! running the real `amphora-agent` as a child of the controller, entered
//! into the namespace between fork and exec. The agent runs haproxy and
//! keepalived in its own amphora namespace (`{prefix}-lb-{compute id}`,
//! the VM's `amphora-haproxy`).
//!
//! Each amphora has a directory `{state_dir}/{first 12 letters and digits
//! of the compute id}/` (short: haproxy stats sockets live below it):
//! `instance.json` (what was booted), `amphora-agent.conf` (the boot
//! configuration the controller rendered, as Nova's config drive carries
//! it), `local.conf` (given after it, so it wins: this host's paths, the
//! bind address, the namespace name), `server.pem`, `client_ca.pem`,
//! `base/` (the agent's `base_path`), `agent.log`, `agent.pid` and `ready`.
//!
//! A supervisor task restarts the agent with backoff when it exits while
//! the VM namespace still exists, as systemd would inside a VM. A
//! controller that starts again finds running agents by their pid files
//! (checked against /proc) and supervises them without restarting them.
//! Several controller processes on one host all find every amphora: the
//! one holding the amphora's `supervisor.lock` (an flock, released by the
//! kernel when its process dies) supervises it, the others stand by and
//! take over when the lock comes free, so an agent that dies is started
//! again once, not once per controller.
//!
//! The compute id is the amphora id. Image, flavor and availability zone
//! mean nothing here: `[controller_worker] amp_image_id` / `amp_flavor_id`
//! are only recorded and reported back, and the zone is always `None`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fabric::{self, Fabric, ip_in};
use super::network::{PortStore, fabric_link};
use super::{LocalComputeSettings, LocalNetworkSettings};
use crate::config::Config;
use crate::db::{Db, now_text};
use crate::worker::drivers::{BootFiles, ComputeDriver, ComputeInfo, DriverFuture, Port};

const INSTANCE_FILE: &str = "instance.json";
const PID_FILE: &str = "agent.pid";
const READY_FILE: &str = "ready";
const LOG_FILE: &str = "agent.log";
const BOOT_CONFIG: &str = "amphora-agent.conf";
const LOCAL_CONFIG: &str = "local.conf";
const SUPERVISOR_LOCK: &str = "supervisor.lock";
/// How often a standing-by supervisor tries the lock.
const STANDBY_POLL: Duration = Duration::from_millis(500);

/// First and longest pause before the agent is started again.
const RESTART_DELAY: Duration = Duration::from_millis(500);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// An agent that ran this long starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What `instance.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub amphora_id: String,
    pub compute_id: String,
    pub vm_namespace: String,
    pub haproxy_namespace: String,
    pub management_port_id: String,
    pub lb_network_ip: String,
    pub image_id: Option<String>,
    pub compute_flavor: Option<String>,
    pub created_at: String,
}

/// Removes every amphora directory under `state_dir` (teardown).
pub fn remove_instance_dirs(state_dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| state_dir.display().to_string()),
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.path().join(INSTANCE_FILE).exists() {
            std::fs::remove_dir_all(entry.path()).with_context(|| entry.path().display().to_string())?;
        }
    }
    Ok(())
}

/// The agent binary: the option, else `amphora-agent` next to this
/// executable, else on PATH.
fn find_agent(option: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = option {
        if !path.is_file() {
            bail!("[local_compute] agent_path {} is not a file", path.display());
        }
        return Ok(path.to_owned());
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("amphora-agent")));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("amphora-agent")).collect::<Vec<_>>())
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .context("no amphora-agent next to the controller nor on PATH; set [local_compute] agent_path")
}

fn find_haproxy(option: Option<&Path>) -> PathBuf {
    if let Some(path) = option {
        return path.to_owned();
    }
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"))
}

/// An amphora's directory name: the first 12 letters and digits of its id.
fn short_id(compute_id: &str) -> String {
    compute_id.chars().filter(char::is_ascii_alphanumeric).take(12).collect()
}

/// The longest `state_dir` with which every stats socket path
/// (`{state_dir}/{12}/base/{36}.sock`) fits haproxy's 97 characters.
pub const STATE_DIR_MAX_LEN: usize = 97 - (1 + 12 + 5 + 1 + 36 + 5);

/// Compute ids become namespace and directory names.
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        bail!("invalid compute id {id:?}: expected letters, digits and '-'");
    }
    Ok(())
}

/// Where one amphora's files are and how its agent is run.
#[derive(Debug, Clone)]
struct Vm {
    dir: PathBuf,
    vm_namespace: String,
    agent: PathBuf,
}

impl Vm {
    fn pid_file(&self) -> PathBuf {
        self.dir.join(PID_FILE)
    }

    /// The supervision lock, when no other supervisor (of this or another
    /// process) holds it. An error when the amphora's directory is gone.
    fn try_supervision(&self) -> anyhow::Result<Option<File>> {
        let path = self.dir.join(SUPERVISOR_LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// The live agent of this amphora: the one the pid file names, if it is
    /// ours (its command line names this amphora's `local.conf`; pids get
    /// reused), else one found by that command line. A controller killed
    /// between starting the agent and writing the pid file leaves an agent
    /// no pid file names; starting another would fail on its port forever.
    fn running_pid(&self) -> Option<i32> {
        let local = self.dir.join(LOCAL_CONFIG);
        let ours = |pid: i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == local.as_os_str().as_encoded_bytes()))
                && !fabric::process_gone(pid)
        };
        let recorded = std::fs::read_to_string(self.pid_file()).ok().and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = recorded.filter(|p| ours(*p)) {
            return Some(pid);
        }
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| ours(*pid))
    }

    /// Starts the agent inside the VM namespace.
    fn spawn(&self) -> anyhow::Result<tokio::process::Child> {
        let _ = std::fs::remove_file(self.dir.join(READY_FILE));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dir.join(LOG_FILE))
            .context("opening the agent's log")?;
        let netns_path = Path::new(fabric::NETNS_DIR).join(&self.vm_namespace);
        let netns = File::open(&netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
        let fd = netns.as_raw_fd();
        let mut command = tokio::process::Command::new(&self.agent);
        command
            .arg("--config-file")
            .arg(self.dir.join(BOOT_CONFIG))
            .arg("--config-file")
            .arg(self.dir.join(LOCAL_CONFIG))
            .arg("--ready-file")
            .arg(self.dir.join(READY_FILE))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a signal to the controller's terminal
            // is not one to the amphorae.
            .process_group(0);
        // SAFETY: between fork and exec the closure makes one
        // async-signal-safe system call on a descriptor `netns` keeps open
        // until `spawn` has returned.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // What an amphora image's agent unit gives it (haproxy
                // needs about 2.5 descriptors per connection of maxconn,
                // 50,000 by default). Without CAP_SYS_RESOURCE (some
                // containers) this fails and the host's limit stays: lower
                // `[haproxy_amphora] default_connection_limit` there.
                let limit = libc::rlimit { rlim_cur: AGENT_OPEN_FILES, rlim_max: AGENT_OPEN_FILES };
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("starting {}", self.agent.display()))?;
        drop(netns);
        if let Some(pid) = child.id() {
            crate::fsutil::write_file(&self.pid_file(), pid.to_string().as_bytes(), 0o644)
                .context("writing the pid file")?;
        }
        Ok(child)
    }
}

/// RLIMIT_NOFILE of a local amphora's agent and what it starts.
const AGENT_OPEN_FILES: libc::rlim_t = 1 << 20;

/// The supervision lock of an agent, when this supervisor holds it.
type Held = Arc<std::sync::Mutex<Option<File>>>;

/// A supervised agent, or one standing by while a supervisor of another
/// process holds the lock.
#[derive(Debug)]
struct Supervisor {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pid: Arc<AtomicI32>,
    held: Held,
}

impl Supervisor {
    fn start(vm: Vm, child: Option<tokio::process::Child>, adopted: Option<i32>, lock: Option<File>) -> Supervisor {
        let (stop, stopped) = watch::channel(false);
        let pid =
            Arc::new(AtomicI32::new(child.as_ref().and_then(|c| c.id()).map(|p| p as i32).or(adopted).unwrap_or(0)));
        let held = Arc::new(std::sync::Mutex::new(lock));
        let task = tokio::spawn(supervise(vm, child, adopted, pid.clone(), stopped, held.clone()));
        Supervisor { stop, task, pid, held }
    }

    /// Stops the task; the lock, if it was held, stays held by the caller.
    async fn stop(self) -> Option<File> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Stops the task without waiting and frees the lock now, for another
    /// process (or a later instance in this one) to take over.
    fn release(self) {
        let _ = self.stop.send(true);
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Waits until this supervisor holds the lock: `Some` with the agent to
/// adopt (if one runs), `None` when stopped or the amphora is gone.
async fn take_over(vm: &Vm, held: &Held, stopped: &mut watch::Receiver<bool>) -> Option<Option<i32>> {
    loop {
        if held.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Some(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(STANDBY_POLL) => {}
            _ = stop_requested(stopped) => return None,
        }
        if !fabric::netns_exists(&vm.vm_namespace) {
            return None;
        }
        match vm.try_supervision() {
            Ok(Some(lock)) => {
                *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(lock);
                let pid = vm.running_pid();
                tracing::info!(namespace = vm.vm_namespace, ?pid, "took over the supervision of an amphora agent");
                return Some(pid);
            }
            Ok(None) => {}
            // The directory went with the amphora.
            Err(_) => return None,
        }
    }
}

/// Resolves when the supervisor should stop (also when its owner is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

async fn supervise(
    vm: Vm,
    mut child: Option<tokio::process::Child>,
    mut adopted: Option<i32>,
    pid: Arc<AtomicI32>,
    mut stopped: watch::Receiver<bool>,
    held: Held,
) {
    match take_over(&vm, &held, &mut stopped).await {
        None => return,
        Some(Some(p)) => {
            adopted = Some(p);
            pid.store(p, Ordering::SeqCst);
        }
        Some(None) => {}
    }
    let mut delay = RESTART_DELAY;
    loop {
        let started = Instant::now();
        let outcome = if let Some(c) = child.as_mut() {
            tokio::select! {
                status = c.wait() => status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                _ = stop_requested(&mut stopped) => return,
            }
        } else if let Some(p) = adopted {
            let gone = async {
                while !fabric::process_gone(p) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = gone => "exited".to_owned(),
                _ = stop_requested(&mut stopped) => return,
            }
        } else {
            "did not start".to_owned()
        };
        child = None;
        adopted = None;
        pid.store(0, Ordering::SeqCst);
        if !fabric::netns_exists(&vm.vm_namespace) {
            tracing::info!(namespace = vm.vm_namespace, "amphora agent stopped with its VM namespace gone");
            return;
        }
        if started.elapsed() > HEALTHY_RUN {
            delay = RESTART_DELAY;
        }
        tracing::warn!(namespace = vm.vm_namespace, outcome, ?delay, "amphora agent exited; restarting it");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stopped) => return,
        }
        delay = (delay * 2).min(RESTART_DELAY_MAX);
        if !fabric::netns_exists(&vm.vm_namespace) {
            continue;
        }
        match vm.spawn() {
            Ok(c) => {
                pid.store(c.id().map(|p| p as i32).unwrap_or(0), Ordering::SeqCst);
                child = Some(c);
            }
            Err(e) => {
                tracing::error!(namespace = vm.vm_namespace, error = format!("{e:#}"), "cannot restart the agent")
            }
        }
    }
}

/// The local `ComputeDriver` (`[controller_worker] compute_driver = local`).
#[derive(Debug)]
pub struct LocalCompute {
    ports: PortStore,
    settings: LocalComputeSettings,
    agent: PathBuf,
    haproxy: PathBuf,
    image_id: Option<String>,
    flavor_id: Option<String>,
    /// Serialises creates, attaches and deletes (names inside a VM).
    lock: tokio::sync::Mutex<()>,
    supervisors: std::sync::Mutex<HashMap<String, Supervisor>>,
}

impl LocalCompute {
    /// Finds the agent binary and takes over the amphorae of an earlier
    /// run. Needs a tokio runtime (supervisors are tasks).
    pub fn new(db: Db, config: &Config) -> anyhow::Result<LocalCompute> {
        tokio::runtime::Handle::try_current().context("the local compute driver needs a tokio runtime")?;
        let settings = config.local_compute.clone();
        let agent = find_agent(settings.agent_path.as_deref())?;
        std::fs::create_dir_all(&settings.state_dir)
            .with_context(|| format!("creating [local_compute] state_dir {}", settings.state_dir.display()))?;
        let compute = LocalCompute {
            ports: PortStore::new(db, Arc::new(Fabric::new(config.local_network.clone()))),
            haproxy: find_haproxy(settings.haproxy_cmd.as_deref()),
            settings,
            agent,
            image_id: config.worker.amp_image_id.clone(),
            flavor_id: config.worker.amp_flavor_id.clone(),
            lock: tokio::sync::Mutex::new(()),
            supervisors: std::sync::Mutex::new(HashMap::new()),
        };
        compute.recover()?;
        Ok(compute)
    }

    fn network(&self) -> &LocalNetworkSettings {
        &self.ports.fabric().settings
    }

    /// Short, because haproxy's stats sockets are `{dir}/base/{lb id}.sock`
    /// and a socket path has at most 97 characters for haproxy.
    fn dir(&self, compute_id: &str) -> PathBuf {
        self.settings.state_dir.join(short_id(compute_id))
    }

    fn vm(&self, compute_id: &str) -> Vm {
        Vm {
            dir: self.dir(compute_id),
            vm_namespace: self.network().amphora_namespace(compute_id),
            agent: self.agent.clone(),
        }
    }

    fn supervisors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Supervisor>> {
        self.supervisors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pid of an amphora's agent, as its supervisor knows it.
    pub fn agent_pid(&self, compute_id: &str) -> Option<i32> {
        self.supervisors().get(compute_id).map(|s| s.pid.load(Ordering::SeqCst)).filter(|p| *p > 0)
    }

    /// An amphora's directory (its agent's log is `agent.log` there).
    pub fn instance_dir(&self, compute_id: &str) -> PathBuf {
        self.dir(compute_id)
    }

    pub fn instance(&self, compute_id: &str) -> anyhow::Result<Option<Instance>> {
        let path = self.dir(compute_id).join(INSTANCE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| path.display().to_string())?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    /// Supervises the amphorae found in the state directory: running
    /// agents are adopted; an agent that died while its VM namespace
    /// stayed is started again.
    fn recover(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&self.settings.state_dir)?.filter_map(Result::ok) {
            let path = entry.path().join(INSTANCE_FILE);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            match serde_json::from_slice::<Instance>(&bytes) {
                Ok(instance) if check_id(&instance.compute_id).is_ok() => self.supervise(&instance.compute_id)?,
                _ => tracing::warn!(path = %path.display(), "ignoring a damaged amphora record"),
            }
        }
        Ok(())
    }

    /// Makes sure an amphora's agent runs under a supervisor: the one it
    /// has, the running process adopted, or a new process.
    fn supervise(&self, compute_id: &str) -> anyhow::Result<()> {
        let mut supervisors = self.supervisors();
        if supervisors.get(compute_id).is_some_and(|s| !s.task.is_finished()) {
            return Ok(());
        }
        let vm = self.vm(compute_id);
        let lock = vm.try_supervision()?;
        let supervisor = if let Some(pid) = vm.running_pid() {
            if lock.is_some() {
                tracing::info!(compute_id, pid, "found a running amphora agent");
                Supervisor::start(vm, None, Some(pid), lock)
            } else {
                tracing::info!(compute_id, pid, "another controller process supervises the amphora agent");
                Supervisor::start(vm, None, None, None)
            }
        } else if fabric::netns_exists(&vm.vm_namespace) {
            if lock.is_some() {
                let child = vm.spawn()?;
                Supervisor::start(vm, Some(child), None, lock)
            } else {
                tracing::info!(compute_id, "another controller process supervises the amphora agent");
                Supervisor::start(vm, None, None, None)
            }
        } else {
            tracing::warn!(compute_id, "amphora has no VM namespace any more; leaving it stopped");
            return Ok(());
        };
        supervisors.insert(compute_id.to_owned(), supervisor);
        Ok(())
    }

    /// Puts a port's veth between its bridge and the VM (as `name`, or the
    /// first free `ethN`).
    async fn plug(&self, compute_id: &str, port: &Port, name: Option<&str>) -> anyhow::Result<()> {
        let fabric = self.ports.fabric();
        fabric.ensure().await?;
        let vm_ns = self.network().amphora_namespace(compute_id);
        if !fabric::netns_exists(&vm_ns) {
            bail!("compute instance {compute_id} is not running");
        }
        let bridge = fabric
            .bridge_of(&port.network_id)
            .with_context(|| format!("port {} is on network {}, which is not configured", port.id, port.network_id))?;
        let ns = fabric.namespace();
        let link = fabric_link(&port.id);
        let mtu = self.network().mtu.to_string();
        if !fabric::link_exists(Some(ns), &link).await {
            let inner = match name {
                Some(n) => n.to_owned(),
                None => {
                    let taken = fabric::link_names(&vm_ns).await?;
                    (1..).map(|n| format!("eth{n}")).find(|n| !taken.contains(n)).expect("a free name")
                }
            };
            #[rustfmt::skip]
            ip_in(ns, &["link", "add", "name", &link, "mtu", &mtu, "type", "veth", "peer", "name", &inner,
                        "address", &port.mac_address, "mtu", &mtu, "netns", &vm_ns]).await?;
        }
        ip_in(ns, &["link", "set", "dev", &link, "master", bridge, "up"]).await?;
        self.ports.set_device(&port.id, Some(compute_id)).await?;
        Ok(())
    }

    async fn boot(&self, amphora_id: &str, boot: &BootFiles) -> anyhow::Result<String> {
        check_id(amphora_id)?;
        let compute_id = amphora_id.to_owned();
        let _guard = self.lock.lock().await;
        let vm = self.vm(&compute_id);
        if self.instance(&compute_id)?.is_some() && vm.running_pid().is_some() {
            // A repeated create: the amphora booted the first time.
            self.supervise(&compute_id)?;
            return Ok(compute_id);
        }
        self.ports.fabric().ensure().await?;
        let network = self.network().clone();
        let haproxy_ns = network.haproxy_namespace(&compute_id);
        fabric::ensure_netns(&vm.vm_namespace).await?;
        let management = network.management().subnets[0].id.clone();
        let port = self.ports.allocate(&management, &format!("mgmt:{compute_id}"), None).await?.port;
        self.plug(&compute_id, &port, Some("eth0")).await?;
        let prefix = network.management().subnets[0].cidr.prefix_len();
        ip_in(&vm.vm_namespace, &["addr", "replace", &format!("{}/{prefix}", port.address), "dev", "eth0"]).await?;
        ip_in(&vm.vm_namespace, &["link", "set", "dev", "eth0", "up"]).await?;

        let dir = &vm.dir;
        std::fs::create_dir_all(dir.join("base").join("certs"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        crate::fsutil::write_file(&dir.join(BOOT_CONFIG), boot.agent_config.as_bytes(), 0o600)?;
        crate::fsutil::write_file(&dir.join("server.pem"), boot.server_pem.as_bytes(), 0o600)?;
        crate::fsutil::write_file(&dir.join("client_ca.pem"), boot.client_ca_pem.as_bytes(), 0o644)?;
        let local = format!(
            "# Written by the controller's local compute driver; given after\n\
             # amphora-agent.conf, so these win. The log stays in agent.log:\n\
             # this host's syslog is not the amphora's.\n\
             [DEFAULT]\n\
             use_syslog = False\n\n\
             [haproxy_amphora]\n\
             base_path = {base}\n\
             base_cert_dir = {base}/certs\n\
             bind_host = {ip}\n\
             bind_port = {port}\n\
             haproxy_cmd = {haproxy}\n\n\
             [amphora_agent]\n\
             amphora_id = {amphora_id}\n\
             agent_server_ca = {dir}/client_ca.pem\n\
             agent_server_cert = {dir}/server.pem\n\
             network_namespace = {haproxy_ns}\n",
            base = dir.join("base").display(),
            ip = port.address,
            port = self.settings.agent_bind_port,
            haproxy = self.haproxy.display(),
            dir = dir.display(),
        );
        crate::fsutil::write_file(&dir.join(LOCAL_CONFIG), local.as_bytes(), 0o644)?;
        let instance = Instance {
            amphora_id: amphora_id.to_owned(),
            compute_id: compute_id.clone(),
            vm_namespace: vm.vm_namespace.clone(),
            haproxy_namespace: haproxy_ns,
            management_port_id: port.id.clone(),
            lb_network_ip: port.address.clone(),
            image_id: self.image_id.clone(),
            compute_flavor: self.flavor_id.clone(),
            created_at: now_text(),
        };
        crate::fsutil::write_file(&dir.join(INSTANCE_FILE), &serde_json::to_vec_pretty(&instance)?, 0o644)?;
        self.supervise(&compute_id)?;
        tracing::info!(compute_id, lb_network_ip = port.address, "amphora booted");
        Ok(compute_id)
    }

    async fn wait(&self, compute_id: &str) -> anyhow::Result<ComputeInfo> {
        check_id(compute_id)?;
        let instance =
            self.instance(compute_id)?.with_context(|| format!("compute instance {compute_id} not found"))?;
        let vm = self.vm(compute_id);
        let deadline = Instant::now() + self.settings.boot_timeout;
        loop {
            let ready = std::fs::read_to_string(vm.dir.join(READY_FILE)).unwrap_or_default();
            if ready.trim().parse::<std::net::SocketAddr>().is_ok() && vm.running_pid().is_some() {
                return Ok(ComputeInfo {
                    lb_network_ip: instance.lb_network_ip,
                    cached_zone: None,
                    image_id: instance.image_id,
                    compute_flavor: instance.compute_flavor,
                });
            }
            if !fabric::netns_exists(&vm.vm_namespace) {
                bail!("compute instance {compute_id} is not running (its namespace is gone)");
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(vm.dir.join(LOG_FILE)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!(
                    "the agent of compute instance {compute_id} did not serve within {:?}; last log lines:\n{}",
                    self.settings.boot_timeout,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn destroy(&self, compute_id: &str) -> anyhow::Result<()> {
        check_id(compute_id)?;
        let _guard = self.lock.lock().await;
        let supervisor = self.supervisors().remove(compute_id);
        // The lock stays held until the amphora is gone: a supervisor of
        // another process standing by does not take over meanwhile.
        let _held = match supervisor {
            Some(s) => s.stop().await,
            None => None,
        };
        let network = self.network().clone();
        // The agent first, so it starts nothing more; then haproxy and
        // keepalived with their namespace.
        fabric::destroy_netns(&network.amphora_namespace(compute_id)).await?;
        fabric::destroy_netns(&network.haproxy_namespace(compute_id)).await?;
        let fabric_ns = network.fabric_namespace.clone();
        for record in self.ports.attached_to(compute_id).await? {
            if fabric::netns_exists(&fabric_ns) {
                fabric::delete_link(Some(&fabric_ns), &fabric_link(&record.port.id)).await?;
            }
            // The management port and the member-network ports the worker
            // made for this amphora go with it (the compute id is the
            // amphora id); VRRP and VIP ports are the network flow's.
            if record.owner == format!("mgmt:{compute_id}")
                || record.owner.starts_with(&member_owner_prefix(compute_id))
            {
                self.ports.delete(&record.port.id).await?;
            } else {
                self.ports.set_device(&record.port.id, None).await?;
            }
        }
        if let Some(mgmt) = self.ports.by_owner(&format!("mgmt:{compute_id}")).await? {
            self.ports.delete(&mgmt.port.id).await?;
        }
        // Member ports allocated but never attached (a flow stopped between
        // the two).
        let prefix = member_owner_prefix(compute_id);
        for record in self.ports.all().await? {
            if record.owner.starts_with(&prefix) {
                self.ports.delete(&record.port.id).await?;
            }
        }
        let dir = self.dir(compute_id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.display()));
            }
            _ => {}
        }
        tracing::info!(compute_id, "amphora deleted");
        Ok(())
    }

    async fn unplug(&self, compute_id: &str, port: &Port) -> anyhow::Result<()> {
        let _guard = self.lock.lock().await;
        let ns = self.network().fabric_namespace.clone();
        if fabric::netns_exists(&ns) {
            fabric::delete_link(Some(&ns), &fabric_link(&port.id)).await?;
        }
        if let Some(record) = self.ports.get(&port.id).await?
            && record.device_id.as_deref() == Some(compute_id)
        {
            self.ports.set_device(&port.id, None).await?;
        }
        Ok(())
    }
}

impl Drop for LocalCompute {
    /// The controller stops, the amphorae keep running: supervisors end,
    /// agents stay (a later instance adopts them).
    fn drop(&mut self) {
        for (_, supervisor) in self.supervisors().drain() {
            supervisor.release();
        }
    }
}

/// The owners of the ports the worker allocates for an amphora's member
/// networks start with this (`member:{amphora id}:{subnet id}`).
pub use crate::worker::flows::member_owner_prefix;

impl ComputeDriver for LocalCompute {
    fn agent_base_path(&self, compute_id: &str) -> Option<String> {
        Some(self.dir(compute_id).join("base").display().to_string())
    }

    fn create<'a>(&'a self, amphora_id: &'a str, boot: &'a BootFiles) -> DriverFuture<'a, String> {
        Box::pin(self.boot(amphora_id, boot))
    }

    fn wait_active<'a>(&'a self, compute_id: &'a str) -> DriverFuture<'a, ComputeInfo> {
        Box::pin(self.wait(compute_id))
    }

    fn delete<'a>(&'a self, compute_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(self.destroy(compute_id))
    }

    fn attach_port<'a>(&'a self, compute_id: &'a str, port: &'a Port) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            check_id(compute_id)?;
            let _guard = self.lock.lock().await;
            self.plug(compute_id, port, None).await
        })
    }

    fn detach_port<'a>(&'a self, compute_id: &'a str, port: &'a Port) -> DriverFuture<'a, ()> {
        Box::pin(self.unplug(compute_id, port))
    }
}
