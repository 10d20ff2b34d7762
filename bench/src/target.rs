//! An agent under test: ours (the release binary) or upstream's (Python,
//! through `bench/upstream/run_upstream_agent.py`), started from the same
//! kind of configuration with the same throwaway certificates.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amphora_testkit::agent::unique_amphora_id;
use amphora_testkit::client::{AgentClient, TlsVersions, client_config};
use amphora_testkit::{Pki, Reply};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Upstream,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Upstream => "upstream",
        }
    }
}

/// How to run each agent.
#[derive(Debug, Clone)]
pub struct Launchers {
    pub ours: PathBuf,
    pub python: PathBuf,
    pub upstream_launcher: PathBuf,
}

#[derive(Debug)]
pub struct Target {
    pub kind: Kind,
    pub dir: TempDir,
    pub pki: Pki,
    pub amphora_id: String,
    pub addr: SocketAddr,
    pub namespace: String,
    pub base_path: PathBuf,
    child: Child,
    launched: Instant,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// How an agent is started beyond the common configuration.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The agent's binary instead of `Launchers::ours` (ours only).
    pub binary: Option<PathBuf>,
    /// Runtime threads for ours (`worker_threads`, and `TOKIO_WORKER_THREADS`
    /// for builds before the option): 1 is what a 1-vCPU amphora gets.
    pub worker_threads: Option<usize>,
    /// Seconds between heartbeats.
    pub heartbeat_interval: u64,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self { binary: None, worker_threads: None, heartbeat_interval: 10 }
    }
}

impl Target {
    /// Starts an agent; returns as soon as the process is spawned.
    pub fn launch(kind: Kind, launchers: &Launchers) -> anyhow::Result<Self> {
        Self::launch_with(kind, launchers, &LaunchOptions::default())
    }

    /// [`Target::launch`] with options.
    pub fn launch_with(kind: Kind, launchers: &Launchers, options: &LaunchOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("amphora-bench.").tempdir()?;
        let amphora_id = unique_amphora_id();
        let pki = Pki::new(&amphora_id);
        std::fs::write(dir.path().join("client_ca.pem"), pki.client_ca.cert_pem())?;
        std::fs::write(dir.path().join("server.pem"), pki.server.combined_pem())?;
        let port = free_port();
        // Upstream hard-codes its namespace and parts of its paths.
        let (namespace, base_path) = match kind {
            Kind::Ours => (amphora_testkit::netns::unique_name("ampbench"), dir.path().join("state")),
            Kind::Upstream => ("amphora-haproxy".to_owned(), PathBuf::from("/var/lib/octavia")),
        };
        let config = format!(
            "[DEFAULT]\ndebug = True\n\n\
             [haproxy_amphora]\nbase_path = {base}\nbase_cert_dir = {base}/certs\nbind_host = 127.0.0.1\nbind_port = {port}\nhaproxy_cmd = /usr/sbin/haproxy\n\n\
             [health_manager]\ncontroller_ip_port_list = 127.0.0.1:{hm}\nheartbeat_interval = {interval}\nheartbeat_key = insecure\n\n\
             [amphora_agent]\nagent_server_ca = {dir}/client_ca.pem\nagent_server_cert = {dir}/server.pem\n\
             agent_request_read_timeout = 180\namphora_id = {amphora_id}\nagent_tls_protocol = TLSv1.2\n\
             amphora_udp_driver = keepalived_lvs\nnetwork_namespace = {namespace}\n\n\
             [controller_worker]\nloadbalancer_topology = SINGLE\n",
            base = base_path.display(),
            dir = dir.path().display(),
            hm = free_port(),
            interval = options.heartbeat_interval,
        );
        let mut config = config;
        if let (Kind::Ours, Some(threads)) = (kind, options.worker_threads) {
            // The option of today's agent; older builds read the variable below.
            config.push_str(&format!("\n[amphora_agent]\nworker_threads = {threads}\n"));
        }
        let config_path = dir.path().join("amphora-agent.conf");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("agent.log"))?;

        let mut command = match kind {
            Kind::Ours => {
                let mut command = Command::new(options.binary.as_ref().unwrap_or(&launchers.ours));
                if let Some(threads) = options.worker_threads {
                    command.env("TOKIO_WORKER_THREADS", threads.to_string());
                }
                command
            }
            Kind::Upstream => {
                let mut command = Command::new(&launchers.python);
                command.arg(&launchers.upstream_launcher);
                command
            }
        };
        command
            .arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let launched = Instant::now();
        let child = command.spawn()?;
        Ok(Self {
            kind,
            dir,
            pki,
            amphora_id,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            namespace,
            base_path,
            child,
            launched,
        })
    }

    pub fn client(&self) -> AgentClient {
        let config = client_config(&self.pki.server_ca.cert_pem(), Some(&self.pki.client), TlsVersions::Any);
        AgentClient::new(self.addr, config, &self.amphora_id)
    }

    /// Polls until a fresh client gets 200 from `GET /1.0/info`; the time
    /// since launch.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        loop {
            let client = self.client();
            if let Ok(reply) = client.request("GET", "/1.0/info", "").await
                && reply.status == 200
            {
                return Ok(self.launched.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} agent exited with {status}:\n{}", self.kind.name(), self.logs());
            }
            if self.launched.elapsed() > timeout {
                anyhow::bail!("{} agent not ready after {timeout:?}:\n{}", self.kind.name(), self.logs());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Memory of the agent's processes in KiB (haproxy excluded: both
    /// agents run the same haproxy): resident (shared pages counted in each
    /// process) and proportional (shared pages divided among sharers), and
    /// how many processes.
    pub fn memory_kib(&self) -> Memory {
        process_tree_memory(self.pid())
    }

    pub fn upload_path(&self, lb: &str) -> String {
        format!("/1.0/loadbalancer/{}/{lb}/haproxy", self.amphora_id)
    }

    /// Stops the agent and everything it started.
    pub async fn stop(mut self, client: &AgentClient, lbs: &[&str]) {
        for lb in lbs {
            let _ = client.request("DELETE", &format!("/1.0/listeners/{lb}"), "").await;
        }
        let pgid = Pid::from_raw(self.pid());
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
        if let Some(dir) = std::env::var_os("BENCH_KEEP_LOGS") {
            let _ = std::fs::copy(
                self.dir.path().join("agent.log"),
                PathBuf::from(dir).join(format!("{}.log", self.kind.name())),
            );
        }
        if self.kind == Kind::Ours {
            amphora_testkit::netns::delete(&self.namespace);
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub processes: usize,
}

/// Memory of `root` and its descendants, skipping haproxy.
pub fn process_tree_memory(root: i32) -> Memory {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some((comm_part, rest)) = stat.rsplit_once(')') else { continue };
            let comm = comm_part.split_once('(').map(|(_, c)| c.to_owned()).unwrap_or_default();
            let ppid: i32 = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            parents.push((pid, ppid, comm));
        }
    }
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        for (pid, ppid, comm) in &parents {
            if *ppid == parent && comm != "haproxy" && !members.contains(pid) {
                members.push(*pid);
            }
        }
        i += 1;
    }
    Memory {
        rss_kib: members.iter().map(|pid| field_kib(&format!("/proc/{pid}/status"), "VmRSS:")).sum(),
        pss_kib: members.iter().map(|pid| field_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")).sum(),
        processes: members.len(),
    }
}

fn field_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Sends a request, retrying once on a fresh connection when a reused one
/// was closed under us (upstream closes every connection).
pub async fn request(client: &AgentClient, method: &str, path: &str, body: bytes::Bytes) -> anyhow::Result<Reply> {
    match client.request(method, path, body.clone()).await {
        Ok(reply) => Ok(reply),
        Err(_) => client.request(method, path, body).await,
    }
}
