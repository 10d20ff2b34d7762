//! The whole system on this host for end-to-end tests: the controller
//! binary with the local compute and network drivers and the REST amphora
//! driver (real agents, haproxy, certificates from its own CA), plus test
//! hosts (namespaces) on its networks: clients on the VIP network, HTTP
//! servers on the member network.
//!
//! Everything a test makes is removed when its `System` is dropped, also
//! on failure: the controller is stopped and `local teardown` deletes the
//! fabric, the amphorae and their processes; test hosts are deleted.

#![allow(dead_code)]

pub mod http;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amphora_controller::config::Config;
use amphora_controller::db::Db;
use amphora_controller::local::{self, LocalNetwork};
use amphora_testkit::lease::SubnetLease;
use amphora_testkit::netns::{self, NsRuntime};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use http::Api;

const BIN: &str = env!("CARGO_BIN_EXE_amphora-controller");

/// The workspace's agent binary, built with the workspace
/// (`cargo test --workspace` or `cargo build -p amphora-agent`).
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/debug/deps/<test> -> target/debug/amphora-agent
    let agent = exe.parent().and_then(Path::parent).expect("target dir").join("amphora-agent");
    assert!(agent.is_file(), "{} is missing: build it with `cargo build -p amphora-agent`", agent.display());
    agent
}

/// The controller's database: the embedded default, or a database of its
/// own on the PostgreSQL server that `AMPHORA_TEST_POSTGRES` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A new database on the test PostgreSQL server: its URL.
async fn postgres_database() -> String {
    let server = std::env::var("AMPHORA_TEST_POSTGRES")
        .expect("AMPHORA_TEST_POSTGRES must name a PostgreSQL server (scripts/test.sh starts one)");
    crate::common::postgres_database(&server).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    ActiveStandby,
}

pub struct System {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    pub api: Api,
    child: Option<Child>,
    hosts: Vec<String>,
    runtimes: Vec<Option<NsRuntime>>,
    /// The management subnet's lease: the controller's end is in the host.
    _management: SubnetLease,
}

impl System {
    pub fn start(topology: Topology) -> System {
        System::start_with(topology, "")
    }

    /// With `extra` as a second configuration file (its options win).
    /// A system on the given database engine.
    pub async fn start_on(topology: Topology, engine: Engine) -> System {
        let connection = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(postgres_database().await),
        };
        System::start_full(topology, connection, "")
    }

    pub fn start_with(topology: Topology, extra: &str) -> System {
        System::start_full(topology, None, extra)
    }

    /// `connection`: a database URL, or None for a SQLite file in the
    /// system's directory.
    fn start_full(topology: Topology, connection: Option<String>, extra: &str) -> System {
        // The amphorae's directories must stay short (haproxy's socket
        // paths), so the state lives in a short temporary directory.
        let dir = tempfile::Builder::new().prefix("e2e.").tempdir_in("/tmp").expect("temp dir");
        let prefix = format!("e{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let d = dir.path().display();
        let connection = connection.unwrap_or_else(|| format!("sqlite:///{d}/octavia.db"));
        let management = SubnetLease::take();
        let topology = match topology {
            Topology::Single => "SINGLE",
            Topology::ActiveStandby => "ACTIVE_STANDBY",
        };
        let text = format!(
            "[DEFAULT]\ndebug = True\n\
             [api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = 0\n\
             [database]\nconnection = {connection}\n\
             [controller_worker]\ncompute_driver = local\nnetwork_driver = local\n\
             amphora_driver = amphora_haproxy_rest_driver\nloadbalancer_topology = {topology}\n\
             job_lease = 3\n\
             [health_manager]\nheartbeat_key = e2e-key\nheartbeat_interval = 1\nheartbeat_timeout = 4\n\
             health_check_interval = 1\n\
             [certificates]\nca_certificate = {d}/certs/ca.pem\nca_private_key = {d}/certs/private/ca.key\n\
             [haproxy_amphora]\nclient_cert = {d}/certs/client.pem\nconnection_retry_interval = 1\n\
             connection_max_retries = 60\nactive_connection_retry_interval = 1\n\
             default_connection_limit = 4000\n\
             [local_network]\nname_prefix = {prefix}\nmanagement_cidr = {mgmt}\n\
             [local_compute]\nstate_dir = {d}/amp\nagent_path = {agent}\n",
            mgmt = management.cidr(),
            agent = agent_binary().display(),
        );
        let config_path = dir.path().join("octavia.conf");
        std::fs::write(&config_path, &text).expect("write configuration");
        let extra_path = dir.path().join("extra.conf");
        std::fs::write(&extra_path, extra).expect("write configuration");
        let config =
            amphora_controller::config::parse([(config_path.as_path(), text.as_str()), (extra_path.as_path(), extra)])
                .expect("valid configuration")
                .config;
        let mut system = System {
            dir,
            config_path,
            config,
            api: Api { addr: SocketAddr::from(([127, 0, 0, 1], 0)) },
            child: None,
            hosts: Vec::new(),
            runtimes: Vec::new(),
            _management: management,
        };
        system.launch();
        system
    }

    /// Starts the controller binary and waits for its API.
    fn launch(&mut self) {
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("controller.log"))
            .expect("log");
        let child = Command::new(BIN)
            .arg("--config-file")
            .arg(&self.config_path)
            .arg("--config-file")
            .arg(self.dir.path().join("extra.conf"))
            .args(["run", "--ready-file"])
            .arg(&ready)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the controller");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Some(addr) = std::fs::read_to_string(&ready).ok().and_then(|s| s.trim().parse().ok()) {
                break addr;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the controller exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the controller never became ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        self.api.addr = addr;
    }

    /// Kills the controller with SIGKILL (its amphorae keep running) and
    /// starts it again.
    pub fn kill_and_restart_controller(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch();
    }

    /// Kills the controller with SIGKILL and leaves it down (its amphorae
    /// keep running); [`System::restart_controller`] starts it again.
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the controller again after [`System::kill_controller`].
    pub fn restart_controller(&mut self) {
        assert!(self.child.is_none(), "the controller is running");
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    fn stop_controller(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The controller's database, opened beside it (test hosts get their
    /// ports from it, as member VMs get Neutron ports).
    pub async fn db(&self) -> Db {
        Db::connect(&self.config.database.connection).await.expect("open the database")
    }

    /// A test host: a namespace with a port on the network of `subnet_id`
    /// (allocated like any other), whose tasks run inside it.
    pub async fn host(&mut self, subnet_id: &str) -> (String, IpAddr, usize) {
        let db = self.db().await;
        let network = LocalNetwork::new(db, &self.config);
        let name = netns::unique_name(&format!("{}h", self.config.local_network.name_prefix));
        let owner = format!("test:{name}");
        let port = network.ports().allocate(subnet_id, &owner, None).await.expect("a port").port;
        let (net, subnet) = self.config.local_network.subnet(subnet_id).expect("a configured subnet");
        let bridge = net.role.bridge();
        let prefix_len = subnet.cidr.prefix_len();
        netns::create(&name);
        self.hosts.push(name.clone());
        let fabric = self.config.local_network.fabric_namespace.clone();
        let outer = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        netns::veth(&fabric, &outer, &name, "eth0", &port.mac_address);
        netns::ip_in(&fabric, &["link", "set", &outer, "master", bridge]);
        netns::ip_in(&name, &["addr", "add", &format!("{}/{prefix_len}", port.address), "dev", "eth0"]);
        netns::ip_in(&name, &["link", "set", "eth0", "up"]);
        self.runtimes.push(Some(NsRuntime::new(&name)));
        let address: IpAddr = port.address.parse().expect("an address");
        (name, address, self.runtimes.len() - 1)
    }

    /// Runs a future inside the test host `index` (its sockets live there).
    pub fn spawn_in<F>(&self, index: usize, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtimes[index].as_ref().expect("a running test host").spawn(future)
    }

    /// Stops every task of the test host `index` (its servers close).
    pub fn stop_host(&mut self, index: usize) {
        self.runtimes[index] = None;
    }

    /// Waits until `check` answers, polling every 250 ms.
    pub async fn until<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n--- controller log (tail) ---\n{}", tail(&self.log(), 60));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for a load balancer's provisioning status; fails on ERROR.
    pub async fn wait_lb(&self, id: &str, status: &str, limit: Duration) -> Value {
        let path = format!("/v2/lbaas/loadbalancers/{id}");
        self.until(&format!("load balancer {id} {status}"), limit, || async {
            let lb = self.api.get(&path).await["loadbalancer"].clone();
            let now = lb["provisioning_status"].as_str().unwrap_or_default().to_owned();
            assert!(now != "ERROR" || status == "ERROR", "load balancer went ERROR:\n{}", tail(&self.log(), 80));
            (now == status).then_some(lb)
        })
        .await
    }

    /// Creates a child object and waits for its load balancer to settle.
    pub async fn create(&self, lb: &str, collection: &str, key: &str, body: Value) -> Value {
        let created =
            self.api.expect(201, "POST", &format!("/v2/lbaas/{collection}"), Some(&json!({ key: body }))).await;
        self.wait_lb(lb, "ACTIVE", Duration::from_secs(120)).await;
        created[key].clone()
    }

    /// A test host on `subnet_id` serving `body` to every `GET` on port
    /// 8080: (its address, its index).
    pub async fn http_server(&mut self, subnet_id: &str, body: &'static str) -> (IpAddr, usize) {
        let (_, address, index) = self.host(subnet_id).await;
        let addr = SocketAddr::new(address, 8080);
        self.spawn_in(index, async move {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the member server");
            amphora_testkit::traffic::serve_http(listener, body).await;
        });
        (address, index)
    }

    /// Creates a load balancer on `subnet_id` and waits for ACTIVE: its id
    /// and VIP address.
    pub async fn create_lb(&self, name: &str, subnet_id: &str, limit: Duration) -> (String, IpAddr) {
        let body = json!({"loadbalancer": {"name": name, "vip_subnet_id": subnet_id}});
        let created = self.api.expect(201, "POST", "/v2/lbaas/loadbalancers", Some(&body)).await;
        let lb = created["loadbalancer"]["id"].as_str().expect("an id").to_owned();
        let active = self.wait_lb(&lb, "ACTIVE", limit).await;
        let vip = active["vip_address"].as_str().expect("a VIP").parse().expect("an address");
        (lb, vip)
    }

    /// An HTTP listener on port 80 with a round-robin HTTP pool: the
    /// pool's id.
    pub async fn http_listener_and_pool(&self, lb: &str) -> String {
        let listener = self
            .create(
                lb,
                "listeners",
                "listener",
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}),
            )
            .await;
        let pool = self
            .create(
                lb,
                "pools",
                "pool",
                json!({"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
            )
            .await;
        pool["id"].as_str().expect("a pool id").to_owned()
    }

    /// Adds a member on port 8080 of `address`: its id.
    pub async fn add_member(&self, lb: &str, pool: &str, address: IpAddr, subnet_id: &str) -> String {
        let body = json!({"address": address.to_string(), "protocol_port": 8080, "subnet_id": subnet_id});
        let member = self.create(lb, &format!("pools/{pool}/members"), "member", body).await;
        member["id"].as_str().expect("a member id").to_owned()
    }

    /// Sends `n` requests through `vip` from the test host `client`;
    /// counts the answers by body ("(failed)" for a failure).
    pub async fn send(&self, client: usize, vip: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
        self.spawn_in(client, async move {
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..n {
                let body = get_body(vip).await.unwrap_or_else(|| "(failed)".into());
                *seen.entry(body).or_insert(0) += 1;
            }
            seen
        })
        .await
        .expect("the client task")
    }

    /// A member's operating status through the API.
    pub async fn member_status(&self, pool: &str, member: &str) -> String {
        let m = self.api.get(&format!("/v2/lbaas/pools/{pool}/members/{member}")).await;
        m["member"]["operating_status"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn amphorae(&self, lb: &str) -> Vec<Value> {
        let list = self.api.get(&format!("/v2/octavia/amphorae?loadbalancer_id={lb}")).await;
        list["amphorae"].as_array().cloned().unwrap_or_default()
    }

    /// Kills an amphora as a dead VM would be: its processes and
    /// namespaces.
    pub async fn kill_amphora(&self, amphora_id: &str) {
        let net = &self.config.local_network;
        local::fabric::destroy_netns(&net.amphora_namespace(amphora_id)).await.expect("kill the amphora");
        local::fabric::destroy_netns(&net.haproxy_namespace(amphora_id)).await.expect("kill its haproxy");
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop_controller();
        self.runtimes.clear();
        for host in &self.hosts {
            netns::delete(host);
        }
        let out = Command::new(BIN)
            .arg("--config-file")
            .arg(&self.config_path)
            .arg("--config-file")
            .arg(self.dir.path().join("extra.conf"))
            .args(["local", "teardown"])
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!("local teardown failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Local ports (the `local_port` table's owners) that no live amphora or
/// load balancer accounts for, one line each.
pub fn stray_ports(owners: &[String], live_amps: &[String], live_lbs: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for owner in owners {
        let (kind, rest) = owner.split_once(':').unwrap_or((owner.as_str(), ""));
        let ok = match kind {
            "mgmt" | "vrrp" => live_amps.iter().any(|a| a == rest),
            "member" => live_amps.iter().any(|a| rest.starts_with(&format!("{a}:"))),
            "vip" => live_lbs.iter().any(|l| l == rest),
            "test" => true,
            _ => false,
        };
        if !ok {
            found.push(format!("port of {owner}"));
        }
    }
    found
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `GET /` from inside the current namespace on a new connection;
/// the body, or None on any failure.
pub async fn get_body(addr: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten()
}
