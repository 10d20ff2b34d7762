//! `amphora-bench lifecycle`: the release controller running real amphorae
//! on this host (`compute_driver = local`, `network_driver = local`, the
//! REST amphora driver with our agent and haproxy), measured from outside
//! through its API and through HTTP sent to the VIP from a client namespace:
//! load balancer creates, listener to first request, SINGLE failover
//! (detection and traffic back), the ACTIVE_STANDBY traffic gap when the
//! MASTER dies, and resident memory per amphora and of the controller.
//!
//! Run it with `bench/run-lifecycle.sh`, which builds the release binaries
//! and tears the fabric down even when this program fails.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amphora_controller::config::Config;
use amphora_controller::db::Db;
use amphora_controller::local::{self, DEFAULT_MEMBER_SUBNET_ID, DEFAULT_VIP_SUBNET_ID, LocalNetwork};
use amphora_testkit::netns::{self, NsRuntime};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::load::HttpClient;

#[derive(Debug, clap::Args)]
pub struct LifecycleArgs {
    /// Runs per topology (a load balancer created, loaded and failed over
    /// in each; they stay up, so the last memory reading has this many
    /// load balancers).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value = "target/release/amphora-controller")]
    pub controller: PathBuf,
    #[arg(long, default_value = "target/release/amphora-agent")]
    pub agent: PathBuf,
    /// Where each controller's state lives (one short subdirectory per
    /// topology, holding `octavia.conf` for `local teardown`); keep the
    /// path short: haproxy's socket paths live below it.
    #[arg(long, default_value = "/tmp/lifecycle")]
    pub work_dir: PathBuf,
    /// Only one topology.
    #[arg(long, value_parser = ["SINGLE", "ACTIVE_STANDBY"])]
    pub only: Option<String>,
    /// The report; its lifecycle section is replaced, the rest kept.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub output: PathBuf,
}

/// Where this section starts and ends in RESULTS.md.
pub const BEGIN: &str = "<!-- lifecycle-bench:begin -->";
pub const END: &str = "<!-- lifecycle-bench:end -->";

const HEARTBEAT_INTERVAL: u64 = 1;
const HEARTBEAT_TIMEOUT: u64 = 3;
const HEALTH_CHECK_INTERVAL: u64 = 1;
/// The client's period: one new request through the VIP every 20 ms.
const CLIENT_PERIOD: Duration = Duration::from_millis(20);
/// How often the API is polled for a status.
const API_PERIOD: Duration = Duration::from_millis(50);
const BUILD_LIMIT: Duration = Duration::from_secs(240);

#[derive(Debug, Default, Clone)]
pub struct TopologyFigures {
    pub topology: &'static str,
    pub create_to_active: Vec<Duration>,
    pub listener_to_first_request: Vec<Duration>,
    /// Kill to the load balancer leaving ACTIVE (failover started).
    pub detection: Vec<Duration>,
    /// SINGLE: kill to the first request served again through the VIP.
    pub traffic_back: Vec<Duration>,
    /// ACTIVE_STANDBY: the longest interval without a successful request.
    pub traffic_gap: Vec<Duration>,
    /// Kill to the load balancer ACTIVE again with all its amphorae
    /// ALLOCATED (redundancy rebuilt).
    pub rebuilt: Vec<Duration>,
    /// Resident memory per amphora at the end, KiB.
    pub amphora_rss_kib: Vec<u64>,
    /// Process names found in the amphorae's namespaces.
    pub amphora_processes: Vec<String>,
    pub controller_idle_rss_kib: u64,
    pub controller_end_rss_kib: u64,
    pub amphorae_at_end: usize,
    pub notes: Vec<String>,
}

pub fn main(args: &LifecycleArgs) -> anyhow::Result<()> {
    let controller = std::fs::canonicalize(&args.controller).context("the controller binary")?;
    let agent = std::fs::canonicalize(&args.agent).context("the agent binary")?;
    std::fs::create_dir_all(&args.work_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load_before = crate::controller::load_average();
    let started = time::OffsetDateTime::now_utc();
    let mut all = Vec::new();
    for topology in ["SINGLE", "ACTIVE_STANDBY"] {
        if args.only.as_deref().is_some_and(|o| o != topology) {
            continue;
        }
        eprintln!("== {topology}");
        let dir = args.work_dir.join(if topology == "SINGLE" { "s" } else { "a" });
        let figures = runtime.block_on(measure(args, &controller, &agent, &dir, topology));
        eprintln!("{figures:#?}");
        all.push(figures);
    }
    let load_after = crate::controller::load_average();
    let section = render(args, &all, &load_before, &load_after, started);
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    std::fs::write(&args.output, crate::controller::splice_between(&previous, BEGIN, END, &section))?;
    println!("{section}");
    Ok(())
}

async fn measure(
    args: &LifecycleArgs,
    controller: &Path,
    agent: &Path,
    dir: &Path,
    topology: &'static str,
) -> TopologyFigures {
    let mut figures = TopologyFigures { topology, ..Default::default() };
    let mut system = match System::start(controller, agent, dir, topology) {
        Ok(s) => s,
        Err(e) => {
            figures.notes.push(format!("the controller did not start: {e:#}"));
            return figures;
        }
    };
    if let Err(e) = measure_inner(args, &mut system, &mut figures).await {
        eprintln!("{topology}: {e:#}\n--- controller log (tail) ---\n{}", tail(&system.log(), 40));
        figures.notes.push(format!("stopped early: {e:#}"));
    }
    figures
}

async fn measure_inner(args: &LifecycleArgs, sys: &mut System, f: &mut TopologyFigures) -> anyhow::Result<()> {
    f.controller_idle_rss_kib = sys.controller_rss_kib();
    let client = sys.host(DEFAULT_VIP_SUBNET_ID).await?.1;
    let (server_ip, server) = sys.host(DEFAULT_MEMBER_SUBNET_ID).await?;
    let server_addr = SocketAddr::new(server_ip, 8080);
    sys.runtimes[server].spawn(async move {
        match tokio::net::TcpListener::bind(server_addr).await {
            Ok(listener) => amphora_testkit::traffic::serve_http(listener, "member").await,
            Err(e) => eprintln!("bind the member server {server_addr}: {e}"),
        }
    });
    let mut lbs = Vec::new();
    for run in 0..args.runs {
        eprintln!("-- {} run {}", f.topology, run + 1);
        let t0 = Instant::now();
        let created = sys
            .api
            .expect(
                201,
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(
                    &json!({"loadbalancer": {"name": format!("bench-{run}"), "vip_subnet_id": DEFAULT_VIP_SUBNET_ID}}),
                ),
            )
            .await?;
        let lb = created["loadbalancer"]["id"].as_str().context("a load balancer id")?.to_owned();
        let active = sys.wait_lb(&lb, BUILD_LIMIT).await?;
        f.create_to_active.push(t0.elapsed());
        lbs.push(lb.clone());
        let vip: IpAddr = active["vip_address"].as_str().context("a VIP")?.parse()?;
        let vip = SocketAddr::new(vip, 80);

        let poller = Poller::start(&sys.runtimes[client], vip);
        let t1 = Instant::now();
        let listener = sys
            .create(
                &lb,
                "listeners",
                "listener",
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}),
            )
            .await?;
        let pool = sys
            .create(
                &lb,
                "pools",
                "pool",
                json!({"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
            )
            .await?;
        let pool_id = pool["id"].as_str().context("a pool id")?.to_owned();
        sys.create(
            &lb,
            &format!("pools/{pool_id}/members"),
            "member",
            json!({"address": server_ip.to_string(), "protocol_port": 8080, "subnet_id": DEFAULT_MEMBER_SUBNET_ID}),
        )
        .await?;
        let first = poll_until("a request served through the VIP", Duration::from_secs(60), || async {
            Ok(poller.first_after(t1))
        })
        .await?;
        f.listener_to_first_request.push(first - t1);

        // Steady traffic before the kill.
        poll_until("steady traffic through the VIP", Duration::from_secs(30), || async {
            Ok(poller.first_after(Instant::now() - Duration::from_millis(100)).map(|_| ()))
        })
        .await?;
        let amphorae = sys.allocated(&lb).await?;
        let victim = if f.topology == "SINGLE" {
            amphorae.first().context("an amphora")?.clone()
        } else {
            // The amphora holding the VIP (keepalived's master; normally
            // the one whose role is MASTER) once exactly one holds it.
            let holder = poll_until("exactly one amphora to hold the VIP", Duration::from_secs(30), || async {
                let holding: Vec<&Value> =
                    amphorae.iter().filter(|a| sys.holds_vip(&compute_id(a), vip.ip())).collect();
                Ok((holding.len() == 1).then(|| holding[0].clone()))
            })
            .await;
            let holding = amphorae.iter().filter(|a| sys.holds_vip(&compute_id(a), vip.ip())).count();
            match holder {
                Ok(h) => {
                    if h["role"] != "MASTER" {
                        f.notes.push(format!(
                            "run {}: the VIP was held by the {} amphora; it was killed",
                            run + 1,
                            h["role"]
                        ));
                    }
                    h
                }
                _ => {
                    f.notes.push(format!(
                        "run {}: after 30 s, {holding} of the 2 amphorae held the VIP (keepalived had not settled); \
                         failover not measured in this run",
                        run + 1
                    ));
                    poller.stop();
                    continue;
                }
            }
        };
        let dead_id = victim["id"].as_str().context("an amphora id")?.to_owned();
        let tk = Instant::now();
        sys.kill_amphora(&compute_id(&victim)).await?;
        // Its processes are gone once this returns: requests sent before
        // may still have been served.
        let killed = Instant::now();
        let (mut detected, mut back) = (None, None);
        let deadline = tk + BUILD_LIMIT;
        while detected.is_none() || back.is_none() {
            if detected.is_none() && sys.lb_status(&lb).await? != "ACTIVE" {
                detected = Some(tk.elapsed());
            }
            if back.is_none() {
                back = poller.first_after(killed).map(|t| t - tk);
            }
            if Instant::now() > deadline {
                bail!("after the kill: detected {detected:?}, traffic back {back:?}");
            }
            tokio::time::sleep(API_PERIOD).await;
        }
        let detected = detected.unwrap_or_default();
        let back = back.unwrap_or_default();
        f.detection.push(detected);
        f.traffic_back.push(back);
        let wanted = amphorae.len();
        poll_until("the load balancer rebuilt", BUILD_LIMIT, || async {
            if sys.lb_status(&lb).await? != "ACTIVE" {
                return Ok(None);
            }
            let live = sys.allocated(&lb).await?;
            Ok((live.len() == wanted && live.iter().all(|a| a["id"] != dead_id.as_str())).then_some(()))
        })
        .await?;
        f.rebuilt.push(tk.elapsed());
        // One more second of traffic after the rebuild, then the gap.
        tokio::time::sleep(Duration::from_secs(1)).await;
        f.traffic_gap.push(poller.longest_gap_after(tk));
        poller.stop();
    }

    // Memory with every load balancer up.
    let mut names = std::collections::BTreeSet::new();
    for lb in &lbs {
        for amphora in sys.allocated(lb).await? {
            let (rss, procs) = sys.amphora_rss_kib(&compute_id(&amphora));
            f.amphora_rss_kib.push(rss);
            names.extend(procs);
        }
    }
    f.amphora_processes = names.into_iter().collect();
    f.amphorae_at_end = f.amphora_rss_kib.len();
    f.controller_end_rss_kib = sys.controller_rss_kib();
    Ok(())
}

fn compute_id(amphora: &Value) -> String {
    amphora["compute_id"].as_str().or(amphora["id"].as_str()).unwrap_or_default().to_owned()
}

async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(API_PERIOD).await;
    }
}

// ---------------------------------------------------------------- client

/// A client inside the VIP network's test host starting one `GET /` every
/// 20 ms (each on a new connection, with a 1 s limit, concurrently so that
/// a hung attempt does not delay the next), recording when each request
/// that succeeded was sent: a request in flight at the kill that still
/// completes does not count as served after it.
struct Poller {
    successes: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Poller {
    fn start(runtime: &NsRuntime, vip: SocketAddr) -> Poller {
        let successes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (successes.clone(), stop.clone());
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(CLIENT_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                let s = s.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    if get_ok(vip).await {
                        s.lock().unwrap_or_else(|e| e.into_inner()).push(sent);
                    }
                });
            }
        });
        Poller { successes, stop }
    }

    fn sorted(&self) -> Vec<Instant> {
        let mut all = self.successes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.sort();
        all
    }

    /// The first successful request sent at or after `t`.
    fn first_after(&self, t: Instant) -> Option<Instant> {
        self.sorted().into_iter().find(|s| *s >= t)
    }

    /// The longest interval between the sending of consecutive successful
    /// requests that ends after `t` (the one spanning `t` included).
    fn longest_gap_after(&self, t: Instant) -> Duration {
        self.sorted().windows(2).filter(|w| w[1] >= t).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `GET /` on a new connection: whether it answered 200 within 1 s.
async fn get_ok(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        Some(response.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), exchange).await.ok().flatten().unwrap_or(false)
}

// ---------------------------------------------------------------- system

/// A JSON client of the controller's API.
struct Api {
    addr: SocketAddr,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let payload = body.map(Value::to_string);
        let mut client = HttpClient::new(self.addr);
        let reply = tokio::time::timeout(Duration::from_secs(30), client.request(method, path, payload.as_deref()))
            .await
            .with_context(|| format!("{method} {path}: no answer within 30 s"))??;
        let json = if reply.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&reply.body).with_context(|| format!("{method} {path}: not JSON"))?
        };
        Ok((reply.status, json))
    }

    async fn expect(&self, expected: u16, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, json) = self.call(method, path, body).await?;
        if status != expected {
            bail!("{method} {path}: {status} (expected {expected}): {json}");
        }
        Ok(json)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.expect(200, "GET", path, None).await
    }
}

/// The controller binary with the local drivers, its configuration in
/// `dir`, and test hosts on its networks; everything is removed on drop
/// (`local teardown` deletes the fabric, the amphorae and their processes).
struct System {
    dir: PathBuf,
    controller: PathBuf,
    config_path: PathBuf,
    config: Config,
    api: Api,
    child: Option<Child>,
    hosts: Vec<String>,
    runtimes: Vec<NsRuntime>,
}

impl System {
    fn start(controller: &Path, agent: &Path, dir: &Path, topology: &str) -> anyhow::Result<System> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let n = uuid::Uuid::new_v4().as_u128();
        // A /24 of 198.18.0.0/15 (the benchmarking range) for management.
        let mgmt = format!("198.{}.{}.0/24", 18 + (n % 2) as u8, (n >> 8) as u8);
        let prefix = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let d = dir.display();
        let text = format!(
            "[DEFAULT]\ndebug = False\n\
             [api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = 0\n\
             [database]\nconnection = sqlite:///{d}/octavia.db\n\
             [controller_worker]\ncompute_driver = local\nnetwork_driver = local\n\
             amphora_driver = amphora_haproxy_rest_driver\nloadbalancer_topology = {topology}\n\
             [health_manager]\nheartbeat_key = bench-key\nheartbeat_interval = {HEARTBEAT_INTERVAL}\n\
             heartbeat_timeout = {HEARTBEAT_TIMEOUT}\nhealth_check_interval = {HEALTH_CHECK_INTERVAL}\n\
             [certificates]\nca_certificate = {d}/certs/ca.pem\nca_private_key = {d}/certs/private/ca.key\n\
             [haproxy_amphora]\nclient_cert = {d}/certs/client.pem\nconnection_retry_interval = 1\n\
             connection_max_retries = 60\nactive_connection_retry_interval = 1\n\
             default_connection_limit = 4000\n\
             [local_network]\nname_prefix = {prefix}\nmanagement_cidr = {mgmt}\n\
             [local_compute]\nstate_dir = {d}/amp\nagent_path = {agent}\n",
            agent = agent.display(),
        );
        let config_path = dir.join("octavia.conf");
        std::fs::write(&config_path, &text)?;
        let config = amphora_controller::config::parse([(config_path.as_path(), text.as_str())])
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config;
        let ready = dir.join("ready");
        let log = std::fs::File::create(dir.join("controller.log"))?;
        let child = Command::new(controller)
            .arg("--config-file")
            .arg(&config_path)
            .args(["run", "--ready-file"])
            .arg(&ready)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start the controller")?;
        // For bench/run-lifecycle.sh to stop it if this program dies.
        std::fs::write(dir.join("controller.pid"), child.id().to_string())?;
        let mut system = System {
            dir: dir.to_owned(),
            controller: controller.to_owned(),
            config_path,
            config,
            api: Api { addr: SocketAddr::from(([127, 0, 0, 1], 0)) },
            child: Some(child),
            hosts: Vec::new(),
            runtimes: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        system.api.addr = loop {
            if let Some(addr) = std::fs::read_to_string(&ready).ok().and_then(|s| s.trim().parse().ok()) {
                break addr;
            }
            if let Some(status) = system.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the controller exited with {status}:\n{}", tail(&system.log(), 40));
            }
            if Instant::now() > deadline {
                bail!("the controller never became ready:\n{}", tail(&system.log(), 40));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(system)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    fn controller_rss_kib(&self) -> u64 {
        self.child.as_ref().map(|c| rss_kib(c.id() as i32)).unwrap_or(0)
    }

    /// A test host: a namespace with a port allocated on `subnet_id`'s
    /// network, attached to the fabric's bridge; returns its address and
    /// the index of its runtime.
    async fn host(&mut self, subnet_id: &str) -> anyhow::Result<(IpAddr, usize)> {
        let db = Db::connect(&self.config.database.connection).await?;
        let network = LocalNetwork::new(db, &self.config);
        let name = netns::unique_name(&format!("{}h", self.config.local_network.name_prefix));
        let owner = format!("bench:{name}");
        let port = network.ports().allocate(subnet_id, &owner, None).await?.port;
        let (net, subnet) = self.config.local_network.subnet(subnet_id).context("a configured subnet")?;
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
        self.runtimes.push(NsRuntime::new(&name));
        Ok((port.address.parse()?, self.runtimes.len() - 1))
    }

    async fn wait_lb(&self, id: &str, limit: Duration) -> anyhow::Result<Value> {
        let path = format!("/v2/lbaas/loadbalancers/{id}");
        poll_until(&format!("load balancer {id} ACTIVE"), limit, || async {
            let lb = self.api.get(&path).await?["loadbalancer"].clone();
            match lb["provisioning_status"].as_str().unwrap_or_default() {
                "ACTIVE" => Ok(Some(lb)),
                "ERROR" => bail!("load balancer {id} went ERROR"),
                _ => Ok(None),
            }
        })
        .await
    }

    async fn lb_status(&self, id: &str) -> anyhow::Result<String> {
        let lb = self.api.get(&format!("/v2/lbaas/loadbalancers/{id}")).await?;
        Ok(lb["loadbalancer"]["provisioning_status"].as_str().unwrap_or_default().to_owned())
    }

    /// Creates a child object and waits for its load balancer to settle.
    async fn create(&self, lb: &str, collection: &str, key: &str, body: Value) -> anyhow::Result<Value> {
        let created =
            self.api.expect(201, "POST", &format!("/v2/lbaas/{collection}"), Some(&json!({ key: body }))).await?;
        self.wait_lb(lb, BUILD_LIMIT).await?;
        Ok(created[key].clone())
    }

    async fn allocated(&self, lb: &str) -> anyhow::Result<Vec<Value>> {
        let list = self.api.get(&format!("/v2/octavia/amphorae?loadbalancer_id={lb}")).await?;
        Ok(list["amphorae"]
            .as_array()
            .map(|all| all.iter().filter(|a| a["status"] == "ALLOCATED").cloned().collect())
            .unwrap_or_default())
    }

    fn holds_vip(&self, compute_id: &str, vip: IpAddr) -> bool {
        let ns = self.config.local_network.haproxy_namespace(compute_id);
        Command::new("ip")
            .args(["-n", &ns, "-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")))
            .unwrap_or(false)
    }

    /// Kills an amphora as a dead VM would be: its processes and
    /// namespaces.
    async fn kill_amphora(&self, compute_id: &str) -> anyhow::Result<()> {
        let net = &self.config.local_network;
        local::fabric::destroy_netns(&net.amphora_namespace(compute_id)).await?;
        local::fabric::destroy_netns(&net.haproxy_namespace(compute_id)).await?;
        Ok(())
    }

    /// The summed VmRSS of every process in an amphora's two namespaces
    /// (its agent, haproxy and, in ACTIVE_STANDBY, keepalived), and their
    /// names.
    fn amphora_rss_kib(&self, compute_id: &str) -> (u64, Vec<String>) {
        let net = &self.config.local_network;
        let mut total = 0;
        let mut names = Vec::new();
        for ns in [net.amphora_namespace(compute_id), net.haproxy_namespace(compute_id)] {
            let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() else { continue };
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                total += rss_kib(pid);
                if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                    names.push(comm.trim().to_owned());
                }
            }
        }
        (total, names)
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.runtimes.clear();
        for host in &self.hosts {
            netns::delete(host);
        }
        let out = Command::new(&self.controller)
            .arg("--config-file")
            .arg(&self.config_path)
            .args(["local", "teardown"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if !out.status.success() => {
                eprintln!("local teardown failed: {}", String::from_utf8_lossy(&out.stderr))
            }
            Err(e) => eprintln!("local teardown: {e}"),
            Ok(_) => {}
        }
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------- report

fn median_max(values: &[Duration]) -> Option<(Duration, Duration)> {
    let mut v = values.to_vec();
    v.sort();
    let max = *v.last()?;
    // The lower median for an even count: a value that was measured.
    Some((v[(v.len() - 1) / 2], max))
}

fn seconds(values: &[Duration]) -> (String, String) {
    match median_max(values) {
        Some((m, x)) if x < Duration::from_secs(1) => {
            (format!("{:.0} ms", m.as_secs_f64() * 1000.0), format!("{:.0} ms", x.as_secs_f64() * 1000.0))
        }
        Some((m, x)) => (format!("{:.2} s", m.as_secs_f64()), format!("{:.2} s", x.as_secs_f64())),
        None => ("n/a".into(), "n/a".into()),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn render(
    args: &LifecycleArgs,
    all: &[TopologyFigures],
    load_before: &str,
    load_after: &str,
    started: time::OffsetDateTime,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let when = crate::controller::run_time(started);
    let _ = writeln!(out, "## Controller with local amphorae\n");
    let _ = writeln!(
        out,
        "Run {when}, `bench/run-lifecycle.sh` (= `amphora-bench lifecycle --runs {runs}`). Load average (1, 5, 15 min) \
         {load_before} before and {load_after} after: the 2 cores were shared with other engineers' builds and tests.\n\n\
         The release `amphora-controller` with `compute_driver = local`, `network_driver = local` and \
         `amphora_driver = amphora_haproxy_rest_driver`: every amphora is a pair of network namespaces running the \
         release `amphora-agent` and real haproxy (and keepalived in ACTIVE_STANDBY), configured over mTLS. \
         `heartbeat_interval = {HEARTBEAT_INTERVAL}`, `heartbeat_timeout = {HEARTBEAT_TIMEOUT}`, \
         `health_check_interval = {HEALTH_CHECK_INTERVAL}`, SQLite. For each topology one controller; in each of \
         {runs} runs a load balancer is created, given an HTTP listener, a pool and one member (an HTTP server in a \
         namespace on the member network), and then its amphora (SINGLE) or its MASTER (ACTIVE_STANDBY) is killed \
         by deleting its namespaces and processes. The load balancers stay up, so the memory readings are taken with \
         {runs} load balancers. A client namespace on the VIP network starts a `GET /` every 20 ms (new \
         connection each, 1 s limit; a request counts at the time it was sent); the API is polled every 50 ms, so times carry up to 50 ms (API) or 20 ms \
         (traffic) of sampling error. Median and max over the runs.\n",
        runs = args.runs,
    );
    let _ = writeln!(out, "| measure | median | max | what bounds it |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |name: String, values: &[Duration], bound: &str| {
        let (m, x) = seconds(values);
        let _ = writeln!(out, "| {name} | {m} | {x} | {bound} |");
    };
    for f in all {
        let t = f.topology;
        row(
            format!("{t}: `POST /v2/lbaas/loadbalancers` to ACTIVE"),
            &f.create_to_active,
            if t == "SINGLE" {
                "namespace and veth setup, agent start, VIP plug over mTLS (connection_retry_interval 1 s while the agent starts)"
            } else {
                "as SINGLE for two amphorae, plus VRRP ports and the keepalived configuration"
            },
        );
        row(
            format!(
                "{t}: listener create to the first request served through the VIP (listener, pool, member created in turn)"
            ),
            &f.listener_to_first_request,
            if t == "SINGLE" {
                "three create flows, each an haproxy configuration PUT and reload per amphora, plus our 50 ms polling for ACTIVE between them"
            } else {
                "keepalived: with no load balancer the track script fails (as upstream's agent writes it), and keepalived \
                 takes a first failure at start as FAULT; leaving FAULT takes vrrp_success_count (2) passes at \
                 vrrp_check_interval (5 s), then BACKUP waits 3 advert_int (1 s) plus skew before it is MASTER and \
                 holds the VIP: 10-14 s after haproxy's first start"
            },
        );
        row(
            format!("{t}: kill to detection (load balancer leaves ACTIVE)"),
            &f.detection,
            "heartbeat_timeout 3 s after the last heartbeat, which came up to heartbeat_interval 1 s before the kill, \
             plus up to health_check_interval 1 s for the stale scan: 2-4 s, plus the API polling",
        );
        if t == "SINGLE" {
            row(
                format!("{t}: longest interval without a successful request (the outage)"),
                &f.traffic_gap,
                "detection + building a replacement amphora (namespaces, agent, VIP plug, haproxy configuration); SINGLE has no standby",
            );
            row(
                format!(
                    "{t}: kill (start of the kill) to the first request sent after the kill returned that is served"
                ),
                &f.traffic_back,
                "detection + building a replacement amphora (namespaces, agent, VIP plug, haproxy configuration); SINGLE has no standby",
            );
        } else {
            row(
                format!("{t}: longest interval without a successful request when the MASTER dies"),
                &f.traffic_gap,
                "keepalived: the BACKUP takes the VIP after 3 missed advertisements (advert_int 1 s) plus skew; no controller involved",
            );
            row(
                format!(
                    "{t}: kill (start of the kill) to the first request sent after the kill returned that is served (through the BACKUP)"
                ),
                &f.traffic_back,
                "as the gap",
            );
        }
        row(
            format!("{t}: kill to ACTIVE again with all amphorae ALLOCATED (redundancy rebuilt)"),
            &f.rebuilt,
            "detection + replacement build + configuration of the whole load balancer",
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| memory | value |\n|---|---|");
    for f in all {
        let mut rss = f.amphora_rss_kib.clone();
        rss.sort_unstable();
        let (m, x) = match (rss.get((rss.len().max(1) - 1) / 2), rss.last()) {
            (Some(m), Some(x)) => (mib(*m), mib(*x)),
            _ => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(
            out,
            "| {}: resident memory (VmRSS) per amphora, all processes of its two namespaces ({}), median / max of {} | {m} / {x} |",
            f.topology,
            if f.amphora_processes.is_empty() { "none found".into() } else { f.amphora_processes.join(", ") },
            f.amphorae_at_end,
        );
        let _ = writeln!(
            out,
            "| {}: controller VmRSS at start, no amphorae | {} |",
            f.topology,
            mib(f.controller_idle_rss_kib)
        );
        let _ = writeln!(
            out,
            "| {}: controller VmRSS with {} amphorae ({} load balancers, after the failovers) | {} |",
            f.topology,
            f.amphorae_at_end,
            args.runs,
            mib(f.controller_end_rss_kib)
        );
    }
    for f in all {
        for note in &f.notes {
            let _ = writeln!(out, "\n- {}: {note}", f.topology);
        }
    }
    let _ = writeln!(
        out,
        "\nFor scale, upstream Octavia (quoted, **not measured here**; from /work/shared/reference/upstream-controller.md \
         section 3.5 and its sources):\n\n\
         - detection with defaults: `heartbeat_timeout` 60 s + up to `health_check_interval` 3 s;\n\
         - replacement: a Nova boot polled up to 30 x 10 s, then the agent reached within up to 120 x 5 s, then \
         reconfiguration: minutes with real VMs;\n\
         - bigstack-oss/cubecos#1322 measured a single-node failover back to ACTIVE in 68-72 s;\n\
         - in ACTIVE_STANDBY traffic moves in seconds through keepalived VRRP; the control-plane failover only \
         rebuilds redundancy (as here).\n\n\
         Our figures use heartbeat_timeout 3 s and namespaces instead of VMs, so they show the controller's own \
         share of the budget, not what a cloud's Nova would add."
    );
    out
}
