//! Runs the real `amphora-agent` binary for a test: its own temporary state
//! directory, throwaway certificates, an OS-chosen port and, by default, its
//! own network namespace. Dropping the harness kills the agent and every
//! haproxy and keepalived it started and removes the namespace, also when
//! the test failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use rustls::ClientConfig;
use tempfile::TempDir;

use crate::client::{AgentClient, TlsVersions, client_config};
use crate::pki::{Identity, Pki};
use crate::{netns, wait};

/// How long an agent may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh UUID-shaped amphora id.
pub fn unique_amphora_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:08x}-{:04x}-4000-8000-{:012x}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), nanos)
}

#[derive(Debug)]
pub struct AgentBuilder {
    binary: PathBuf,
    amphora_id: String,
    netns: bool,
    options: BTreeMap<String, BTreeMap<String, String>>,
    overrides: Vec<String>,
    vm: bool,
    state_tmpfs: Option<u64>,
    open_files: Option<u64>,
    vm_name: Option<String>,
}

impl AgentBuilder {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            amphora_id: unique_amphora_id(),
            netns: true,
            options: BTreeMap::new(),
            overrides: Vec::new(),
            vm: false,
            state_tmpfs: None,
            open_files: None,
            vm_name: None,
        }
    }

    /// Runs haproxy in the agent's own namespace instead of a fresh one.
    pub fn without_netns(mut self) -> Self {
        self.netns = false;
        self
    }

    /// Sets a configuration option (overriding the harness default).
    pub fn option(mut self, section: &str, key: &str, value: &str) -> Self {
        self.options.entry(section.into()).or_default().insert(key.into(), value.into());
        self
    }

    /// Runs the agent itself in a namespace of its own, as if it were the
    /// default namespace of an amphora VM: ports plugged by a test appear
    /// there, and the agent moves them into its amphora namespace.
    pub fn in_vm(mut self) -> Self {
        self.vm = true;
        self
    }

    /// Puts the state directory (`base_path`, and the certificates in it) on
    /// a tmpfs of `bytes`, so a test can fill it up. Unmounted on drop.
    pub fn state_on_tmpfs(mut self, bytes: u64) -> Self {
        self.state_tmpfs = Some(bytes);
        self
    }

    /// Lowers the agent's soft limit of open files (RLIMIT_NOFILE).
    pub fn open_files_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Like `in_vm`, in a namespace the test created first (to open sockets
    /// there before the agent starts); the agent deletes it when dropped.
    pub fn in_vm_namespace(mut self, name: &str) -> Self {
        self.vm = true;
        self.vm_name = Some(name.to_owned());
        self
    }

    /// Adds a further configuration file, given after the main one.
    pub fn config_file(mut self, text: &str) -> Self {
        self.overrides.push(text.to_owned());
        self
    }

    pub fn start(self) -> Agent {
        let dir = tempfile::Builder::new().prefix("amphora-agent-test.").tempdir().expect("temp dir");
        let pki = Pki::new(&self.amphora_id);
        let netns = self.netns.then(|| netns::unique_name("amptest"));
        let given = self.vm_name.clone();
        let vm = self.vm.then(|| {
            given.unwrap_or_else(|| {
                let name = netns::unique_name("ampvm");
                netns::create(&name);
                name
            })
        });
        let state = dir.path().join("state");
        if let Some(bytes) = self.state_tmpfs {
            std::fs::create_dir(&state).expect("state directory");
            nix::mount::mount(
                Some("tmpfs"),
                &state,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={bytes},mode=0755").as_str()),
            )
            .expect("mount a tmpfs for the state directory");
        }
        std::fs::write(dir.path().join("client_ca.pem"), pki.client_ca.cert_pem()).expect("write CA");
        std::fs::write(dir.path().join("server.pem"), pki.server.combined_pem()).expect("write server cert");

        let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut set = |section: &str, key: &str, value: String| {
            sections.entry(section.into()).or_default().insert(key.into(), value);
        };
        set("DEFAULT", "debug", "True".into());
        set("haproxy_amphora", "base_path", state.display().to_string());
        set("haproxy_amphora", "base_cert_dir", state.join("certs").display().to_string());
        set("haproxy_amphora", "bind_host", "127.0.0.1".into());
        set("haproxy_amphora", "bind_port", "0".into());
        set("haproxy_amphora", "haproxy_cmd", haproxy_binary());
        set("health_manager", "heartbeat_key", "insecure".into());
        set("amphora_agent", "agent_server_ca", dir.path().join("client_ca.pem").display().to_string());
        set("amphora_agent", "agent_server_cert", dir.path().join("server.pem").display().to_string());
        set("amphora_agent", "amphora_id", self.amphora_id.clone());
        set("amphora_agent", "network_namespace", netns.clone().unwrap_or_default());
        for (section, options) in &self.options {
            for (key, value) in options {
                set(section, key, value.clone());
            }
        }
        let mut text = String::new();
        for (section, options) in &sections {
            let _ = writeln!(text, "[{section}]");
            for (key, value) in options {
                let _ = writeln!(text, "{key} = {value}");
            }
            text.push('\n');
        }
        let config_path = dir.path().join("amphora-agent.conf");
        std::fs::write(&config_path, text).expect("write config");
        let mut config_files = vec![config_path.clone()];
        for (i, text) in self.overrides.iter().enumerate() {
            let path = dir.path().join(format!("override-{i}.conf"));
            std::fs::write(&path, text).expect("write config");
            config_files.push(path);
        }

        let mut agent = Agent {
            binary: self.binary,
            dir,
            pki,
            amphora_id: self.amphora_id,
            netns,
            config_path,
            config_files,
            vm,
            state_tmpfs: self.state_tmpfs.is_some(),
            open_files: self.open_files,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
        };
        agent.launch();
        agent
    }
}

/// The haproxy binary of this system.
pub fn haproxy_binary() -> String {
    for candidate in ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "/usr/sbin/haproxy".into()
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    binary: PathBuf,
    pub dir: TempDir,
    pub pki: Pki,
    pub amphora_id: String,
    /// The namespace haproxy runs in, when the agent has one.
    pub netns: Option<String>,
    pub config_path: PathBuf,
    config_files: Vec<PathBuf>,
    /// The namespace the agent process runs in, when not the host's.
    pub vm: Option<String>,
    /// Whether the state directory is a tmpfs of the harness's.
    state_tmpfs: bool,
    open_files: Option<u64>,
    /// Where the agent listens.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Agent {
    pub fn builder(binary: impl Into<PathBuf>) -> AgentBuilder {
        AgentBuilder::new(binary)
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// Starts the agent process and waits until it serves.
    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.ready_file());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut command = Command::new(&self.binary);
        for path in &self.config_files {
            command.arg("--config-file").arg(path);
        }
        if let Some(vm) = &self.vm {
            let file = std::fs::File::open(format!("/run/netns/{vm}")).expect("vm namespace");
            let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
            // SAFETY: the closure runs between fork and exec and only makes
            // async-signal-safe system calls on a descriptor we own.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                        libc::close(fd);
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        if let Some(limit) = self.open_files {
            let (_, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("open files limit");
            // SAFETY: the closure runs between fork and exec and only makes
            // one async-signal-safe system call.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, hard)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = command
            .arg("--ready-file")
            .arg(self.ready_file())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        let ready = self.ready_file();
        let addr = wait::until_blocking("the agent to become ready", READY_TIMEOUT, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("agent exited with {status} before becoming ready:\n{}", self.logs());
            }
            std::fs::read_to_string(&ready).ok().and_then(|text| text.trim().parse::<SocketAddr>().ok())
        });
        self.addr = addr;
    }

    /// Starts the agent again after [`Agent::kill`] or [`Agent::terminate`],
    /// on a new port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        self.launch();
    }

    /// Kills the agent abruptly (SIGKILL); haproxy processes are left alone.
    pub fn kill(&mut self) {
        self.signal_and_wait(Signal::SIGKILL);
    }

    /// Asks the agent to stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait(Signal::SIGTERM).expect("agent was running")
    }

    fn signal_and_wait(&mut self, sig: Signal) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = signal::kill(Pid::from_raw(child.id() as i32), sig);
        child.wait().ok()
    }

    /// The agent's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn base_path(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.base_path().join("certs")
    }

    /// The path a load balancer's stats socket should have in a test
    /// configuration (upstream: `{base_path}/{lb}.sock`).
    pub fn stats_socket(&self, lb_id: &str) -> PathBuf {
        self.base_path().join(format!("{lb_id}.sock"))
    }

    /// The master pid haproxy recorded for a load balancer.
    pub fn haproxy_pid(&self, lb_id: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.base_path().join(lb_id).join(format!("{lb_id}.pid"))).ok()?;
        text.trim().parse().ok()
    }

    pub fn tls_config(&self, identity: Option<&Identity>, versions: TlsVersions) -> Arc<ClientConfig> {
        client_config(&self.pki.server_ca.cert_pem(), identity, versions)
    }

    /// A client with the controller's certificate that checks every answer
    /// against the wire contract.
    pub fn client(&self) -> AgentClient {
        AgentClient::new(self.addr, self.tls_config(Some(&self.pki.client), TlsVersions::Any), &self.amphora_id)
            .in_netns(self.vm.as_deref())
            .checking_contract()
    }

    /// Every live process whose command line names this agent's temporary
    /// directory: the haproxy masters and workers and the keepalived
    /// processes it started (keepalived runs in a session of its own, so
    /// killing the agent does not end it), whether or not their pid files
    /// still exist.
    pub fn leftover_processes(&self) -> Vec<Pid> {
        let mut needle = self.dir.path().as_os_str().as_encoded_bytes().to_vec();
        needle.push(b'/');
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline.split(|b| *b == 0).any(|arg| arg.starts_with(&needle))
            })
            .filter(|pid| !is_zombie(*pid))
            .map(Pid::from_raw)
            .collect()
    }

    fn kill_leftovers(&self) {
        for pid in self.leftover_processes() {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, rest)| matches!(rest.split_whitespace().next(), Some("Z" | "X")))
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        self.kill_leftovers();
        if self.state_tmpfs {
            let _ = nix::mount::umount2(&self.base_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        for name in [&self.netns, &self.vm].into_iter().flatten() {
            netns::delete(name);
        }
        if std::thread::panicking() {
            eprintln!("---- agent log ({}) ----\n{}", self.log_path().display(), self.logs());
        }
    }
}
