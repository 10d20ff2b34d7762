//! The local compute and network drivers on real namespaces, bridges and
//! veths, with the real `amphora-agent` (build it first:
//! `cargo build -p amphora-agent`). Needs root.
//!
//! Every test has its own `[local_network] name_prefix`, state directory
//! and management subnet (a /24 of 198.18.0.0/15 leased from the testkit, since the
//! controller's veth is in the host namespace), and a guard that tears
//! everything down even when the test fails.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use amphora_client::{Client, Credentials, Timeouts};
use amphora_controller::config::{self, Config};
use amphora_controller::db::Db;
use amphora_controller::local::fabric::process_gone;
use amphora_controller::local::network::{PortError, fabric_link};
use amphora_controller::local::{
    DEFAULT_MEMBER_SUBNET_ID, DEFAULT_VIP_IPV6_SUBNET_ID, DEFAULT_VIP_NETWORK_ID, DEFAULT_VIP_SUBNET_ID, LocalCompute,
    LocalNetwork, teardown,
};
use amphora_controller::worker::drivers::{BootFiles, ComputeDriver, NetworkDriver, Port, VipRequest};
use amphora_proto::net::{FixedIpRequest, PlugNetworkRequest, PlugVipRequest};
use amphora_testkit::lease::SubnetLease;
use amphora_testkit::pki::Pki;
use amphora_testkit::{netns, wait};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DEADLINE: Duration = Duration::from_secs(30);

fn agent_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("debug/amphora-agent");
    assert!(path.is_file(), "{} is missing: run `cargo build -p amphora-agent` first", path.display());
    path
}

fn random() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

/// One test's controller settings, and the teardown of what they made.
struct Env {
    config: Config,
    /// The configuration as a file, for the binary.
    config_file: PathBuf,
    dir: tempfile::TempDir,
    management: IpNet,
    /// The management subnet's lease: the controller's end is in the host.
    _lease: SubnetLease,
}

impl Env {
    fn new(db_url: &str) -> Env {
        Env::with(db_url, "")
    }

    /// `local_network`: further `[local_network]` lines.
    fn with(db_url: &str, local_network: &str) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = random();
        let prefix = format!("t{:07x}", r & 0x0fff_ffff);
        let lease = SubnetLease::take();
        let management: IpNet = lease.cidr().parse().expect("management CIDR");
        let text = format!(
            "[api_settings]\nauth_strategy = noauth\n[database]\nconnection = {db_url}\n\
             [controller_worker]\ncompute_driver = local\nnetwork_driver = local\n\
             [local_network]\nname_prefix = {prefix}\nmanagement_cidr = {management}\n{local_network}\n\
             [local_compute]\nstate_dir = {state}\nagent_path = {agent}\nboot_timeout = 60\n",
            state = dir.path().join("state").display(),
            agent = agent_binary().display(),
        );
        let config = config::parse([(Path::new("<test>"), text.as_str())]).expect("valid configuration").config;
        let config_file = dir.path().join("octavia.conf");
        std::fs::write(&config_file, &text).expect("write the configuration");
        Env { config, config_file, dir, management, _lease: lease }
    }

    fn prefix(&self) -> &str {
        &self.config.local_network.name_prefix
    }

    fn controller_ip(&self) -> IpAddr {
        self.config.local_network.controller_ip()
    }

    fn state_dir(&self) -> &Path {
        &self.config.local_compute.state_dir
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let network = self.config.local_network.clone();
        let state = self.config.local_compute.state_dir.clone();
        // A runtime of its own: the test's may be gone or busy.
        let result = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(teardown(&network, &state))
        })
        .join();
        if !matches!(result, Ok(Ok(()))) {
            eprintln!("teardown of {} failed: {result:?}", self.prefix());
        }
        let _ = &self.dir;
    }
}

/// A namespace removed on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        netns::delete(&self.0);
    }
}

fn netns_names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

fn ip_output(args: &[&str]) -> String {
    let out = std::process::Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_pids(name: &str) -> Vec<i32> {
    ip_output(&["netns", "pids", name]).split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

async fn allocate_many(net: &Arc<LocalNetwork>, subnet: &str, owners: std::ops::Range<usize>) -> Vec<Port> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in owners {
        let net = net.clone();
        let subnet = subnet.to_owned();
        tasks.spawn(async move { net.allocate_port(&subnet, &format!("test-owner-{i}")).await });
    }
    let mut ports = Vec::new();
    while let Some(result) = tasks.join_next().await {
        ports.push(result.expect("task").expect("port allocated"));
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ports_get_distinct_addresses_concurrently_and_after_a_restart() {
    for test_db in common::databases().await {
        let env = Env::new(&test_db.url);
        let db = Db::open(&test_db.url).await.expect("database");
        let net = Arc::new(LocalNetwork::new(db.clone(), &env.config));
        let member: IpNet = "198.51.100.0/24".parse().expect("cidr");

        let first = allocate_many(&net, DEFAULT_MEMBER_SUBNET_ID, 0..60).await;
        // The same owner gets its port back, not a second one.
        let again = net.allocate_port(DEFAULT_MEMBER_SUBNET_ID, "test-owner-7").await.expect("repeat");
        assert!(first.contains(&again), "{}: a repeated allocation made a new port {again:?}", test_db.name);

        // A requested VIP address is honoured, once.
        let request = |lb: &str, address: &str| VipRequest {
            load_balancer_id: lb.into(),
            address: Some(address.into()),
            subnet_id: Some(DEFAULT_VIP_SUBNET_ID.into()),
            ..VipRequest::default()
        };
        let vip = net.allocate_vip(&request("lb-1", "203.0.113.50")).await.expect("requested VIP");
        assert_eq!((vip.address.as_str(), vip.network_id.as_str()), ("203.0.113.50", DEFAULT_VIP_NETWORK_ID));
        let taken = net.allocate_vip(&request("lb-2", "203.0.113.50")).await.expect_err("address in use");
        assert!(
            matches!(taken.downcast_ref::<PortError>(), Some(PortError::AddressInUse { .. })),
            "{}: {taken:#}",
            test_db.name
        );
        assert_eq!(
            taken.to_string(),
            format!("IP address 203.0.113.50 already allocated in subnet {DEFAULT_VIP_SUBNET_ID}")
        );
        // The network names the subnet by the address; IPv6 works alike.
        let v6 = net
            .allocate_vip(&VipRequest {
                load_balancer_id: "lb-3".into(),
                network_id: Some(DEFAULT_VIP_NETWORK_ID.into()),
                address: Some("2001:db8:0:1::50".into()),
                ..VipRequest::default()
            })
            .await
            .expect("IPv6 VIP");
        assert_eq!((v6.address.as_str(), v6.subnet_id.as_str()), ("2001:db8:0:1::50", DEFAULT_VIP_IPV6_SUBNET_ID));
        // A VIP port must be one this driver made for this load balancer.
        let adopt = |port_id: &str| VipRequest {
            load_balancer_id: "lb-4".into(),
            port_id: Some(port_id.into()),
            ..VipRequest::default()
        };
        let err = net.allocate_vip(&adopt(&first[0].id)).await.expect_err("another owner's port");
        assert!(err.to_string().contains("in use by test-owner-"), "{err:#}");
        let err = net.allocate_vip(&adopt("00000000-0000-4000-8000-000000000001")).await.expect_err("unknown port");
        assert_eq!(err.to_string(), "Port 00000000-0000-4000-8000-000000000001 could not be found.");
        let unknown = net.get_subnet("00000000-0000-4000-8000-000000000000").await.expect_err("unknown subnet");
        assert_eq!(unknown.to_string(), "Subnet 00000000-0000-4000-8000-000000000000 could not be found.");

        // A new driver on the same database ("controller restart").
        drop(net);
        let db = Db::open(&test_db.url).await.expect("database again");
        let net = Arc::new(LocalNetwork::new(db, &env.config));
        let second = allocate_many(&net, DEFAULT_MEMBER_SUBNET_ID, 60..100).await;

        let all: Vec<&Port> = first.iter().chain(&second).collect();
        let addresses: HashSet<&str> = all.iter().map(|p| p.address.as_str()).collect();
        let macs: HashSet<&str> = all.iter().map(|p| p.mac_address.as_str()).collect();
        assert_eq!(addresses.len(), 100, "{}: duplicate addresses", test_db.name);
        assert_eq!(macs.len(), 100, "{}: duplicate MACs", test_db.name);
        for p in &all {
            let ip: IpAddr = p.address.parse().expect("address");
            assert!(member.contains(&ip), "{ip} outside {member}");
            assert!(![member.network(), member.broadcast(), "198.51.100.1".parse().expect("ip")].contains(&ip));
        }
        assert_eq!(net.ports().all().await.expect("rows").len(), 102);

        // Releasing is idempotent and frees the address.
        net.deallocate_vip(&vip.id).await.expect("deallocate");
        net.deallocate_vip(&vip.id).await.expect("deallocate again");
        net.delete_port(&second[0].id).await.expect("delete");
        net.delete_port(&second[0].id).await.expect("delete again");
        let vip2 = net.allocate_vip(&request("lb-2", "203.0.113.50")).await.expect("address free again");
        assert_ne!(vip2.id, vip.id);
        drop(env);
    }
}

/// What a test amphora needs from the controller.
struct Booted {
    amphora_id: String,
    pki: Pki,
}

fn booted(amphora_id: &str) -> Booted {
    Booted { amphora_id: amphora_id.to_owned(), pki: Pki::new(amphora_id) }
}

impl Booted {
    fn files(&self, controller: SocketAddr) -> BootFiles {
        BootFiles {
            agent_config: format!(
                "[DEFAULT]\ndebug = True\n\n[health_manager]\ncontroller_ip_port_list = {controller}\n\
                 heartbeat_interval = 1\nheartbeat_key = insecure\n\n[amphora_agent]\namphora_id = {}\n",
                self.amphora_id
            ),
            server_pem: self.pki.server.combined_pem(),
            client_ca_pem: self.pki.client_ca.cert_pem(),
            cert_expiration: None,
        }
    }

    fn client(&self, lb_network_ip: &str, port: u16) -> Client {
        let credentials =
            Credentials::from_pem(self.pki.server_ca.cert_pem().as_bytes(), self.pki.client.combined_pem().as_bytes())
                .expect("credentials");
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(20),
            connection_max_retries: 0,
            connection_retry_interval: Duration::from_millis(100),
        };
        let addr = SocketAddr::new(lb_network_ip.parse().expect("lb_network_ip"), port);
        Client::new(&self.amphora_id, addr, &credentials, timeouts).expect("client")
    }
}

async fn answers(client: &Client, amphora_id: &str) -> Option<()> {
    client.info().await.ok().filter(|info| info.uuid == amphora_id).map(|_| ())
}

/// An HTTP GET through a namespace; the response text.
async fn http_get_in(ns: &str, addr: SocketAddr) -> Option<String> {
    let mut stream = netns::tcp_connect_in(ns, addr).await.ok()?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await.ok()?.ok()?;
    Some(response)
}

fn haproxy_config(base: &Path, lb: &str, vip: &str, amphora_id: &str) -> String {
    format!(
        "# Configuration for loadbalancer {lb}\n\
         global\n    daemon\n    user nobody\n    stats socket {socket} mode 0666 level user\n    maxconn 100\n\
         defaults\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend listener-1\n    bind {vip}:80\n    mode http\n\
         \x20   http-request return status 200 content-type text/plain string \"served by {amphora_id}\"\n",
        socket = base.join(format!("{lb}.sock")).display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_amphora_boots_serves_its_vip_survives_restarts_and_leaves_nothing_behind() {
    let test_db = common::databases().await.remove(0);
    // The host reaches the VIP network too: a leased VIP subnet then, as
    // the management one.
    let vip_lease = SubnetLease::take();
    let vip_cidr: IpNet = vip_lease.cidr().parse().expect("cidr");
    let env = Env::with(&test_db.url, &format!("host_vip_access = True\nvip_cidr = {vip_cidr}\nvip_ipv6_cidr =\n"));
    let db = Db::open(&test_db.url).await.expect("database");
    let net = LocalNetwork::new(db.clone(), &env.config);
    net.ensure_fabric().await.expect("fabric");
    let compute = LocalCompute::new(db.clone(), &env.config).expect("compute driver");

    // Heartbeats come to the controller's management address.
    let heartbeats = tokio::net::UdpSocket::bind(SocketAddr::new(env.controller_ip(), 0)).await.expect("bind UDP");
    let amphora_id = uuid::Uuid::new_v4().to_string();
    let booted = booted(&amphora_id);
    let files = booted.files(heartbeats.local_addr().expect("addr"));

    let compute_id = compute.create(&amphora_id, &files).await.expect("create");
    assert_eq!(compute.create(&amphora_id, &files).await.expect("create again"), compute_id, "create is idempotent");
    let info = compute.wait_active(&compute_id).await.expect("wait_active");
    let lb_network_ip: IpAddr = info.lb_network_ip.parse().expect("an IP");
    assert!(env.management.contains(&lb_network_ip) && lb_network_ip != env.controller_ip(), "{lb_network_ip}");

    // mTLS over the management network, from the host namespace.
    let client = booted.client(&info.lb_network_ip, 9443);
    wait::until("the agent to answer GET /1.0/info", DEADLINE, || answers(&client, &amphora_id)).await;
    let mut buf = [0u8; 65536];
    let (n, from) = tokio::time::timeout(DEADLINE, heartbeats.recv_from(&mut buf))
        .await
        .expect("a heartbeat within the deadline")
        .expect("recv");
    assert!(n > 0);
    assert_eq!(from.ip(), lb_network_ip, "heartbeats come from the management address");

    // A VIP port, attached (twice: harmless) and plugged through the agent.
    let lb_id = uuid::Uuid::new_v4().to_string();
    let vip = net
        .allocate_vip(&VipRequest {
            load_balancer_id: lb_id.clone(),
            subnet_id: Some(DEFAULT_VIP_SUBNET_ID.into()),
            ..VipRequest::default()
        })
        .await
        .expect("VIP");
    compute.attach_port(&compute_id, &vip).await.expect("attach");
    compute.attach_port(&compute_id, &vip).await.expect("attach again");
    let subnet = net.get_subnet(&vip.subnet_id).await.expect("subnet");
    let vip_gateway = amphora_controller::local::first_host(vip_cidr).to_string();
    assert_eq!((subnet.cidr.clone(), subnet.gateway_ip.clone()), (vip_cidr.to_string(), Some(vip_gateway)));
    let plug = PlugVipRequest {
        subnet_cidr: subnet.cidr.clone(),
        gateway: subnet.gateway_ip.clone(),
        mac_address: vip.mac_address.clone(),
        mtu: Some(subnet.mtu),
        ..PlugVipRequest::default()
    };
    client.plug_vip(&vip.address, &plug).await.expect("plug vip");

    // A client on the VIP network reaches haproxy, started by the agent,
    // on the VIP.
    let client_ns = Namespace(netns::unique_name("lclient"));
    netns::create(&client_ns.0);
    let client_port = net.allocate_port(DEFAULT_VIP_SUBNET_ID, "test-client").await.expect("client port");
    let fabric = env.config.local_network.fabric_namespace.clone();
    let link = fabric_link(&client_port.id);
    netns::veth(&fabric, &link, &client_ns.0, "eth0", &client_port.mac_address);
    netns::ip_in(&fabric, &["link", "set", "dev", &link, "master", "br-vip"]);
    netns::ip_in(&client_ns.0, &["addr", "add", &format!("{}/24", client_port.address), "dev", "eth0"]);
    netns::ip_in(&client_ns.0, &["link", "set", "dev", "eth0", "up"]);
    let base = compute.instance_dir(&compute_id).join("base");
    client.upload_config(&lb_id, haproxy_config(&base, &lb_id, &vip.address, &amphora_id)).await.expect("upload");
    client.start(&lb_id).await.expect("start haproxy");
    let vip_addr = SocketAddr::new(vip.address.parse().expect("VIP"), 80);
    let response = wait::until("haproxy to answer on the VIP", DEADLINE, || http_get_in(&client_ns.0, vip_addr)).await;
    assert!(response.contains(&format!("served by {amphora_id}")), "{response}");
    // And from the host, through its veth into the VIP network.
    let mut stream = tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(vip_addr))
        .await
        .expect("connect in time")
        .expect("the host reaches the VIP");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response)).await.expect("in time").expect("read");
    assert!(response.contains(&format!("served by {amphora_id}")), "{response}");

    // A member network port, plugged through the agent, lands in the
    // amphora namespace with its address.
    let member = net.allocate_port(DEFAULT_MEMBER_SUBNET_ID, &format!("member:{amphora_id}")).await.expect("port");
    compute.attach_port(&compute_id, &member).await.expect("attach the member port");
    let member_subnet = net.get_subnet(&member.subnet_id).await.expect("member subnet");
    let request = PlugNetworkRequest {
        mac_address: member.mac_address.clone(),
        fixed_ips: Some(vec![FixedIpRequest {
            ip_address: member.address.clone(),
            subnet_cidr: Some(member_subnet.cidr.clone()),
            gateway: member_subnet.gateway_ip.clone(),
            host_routes: Vec::new(),
        }]),
        mtu: Some(member_subnet.mtu),
        vip_net_info: None,
    };
    client.plug_network(&request).await.expect("plug network");
    let lb_ns = env.config.local_network.haproxy_namespace(&compute_id);
    let addresses = ip_output(&["-n", &lb_ns, "addr", "show"]);
    assert!(addresses.contains(&format!(" {}/24", member.address)), "{addresses}");

    // The agent dies: its supervisor starts it again.
    let first_pid = compute.agent_pid(&compute_id).expect("agent pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first_pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let second_pid = wait::until("the agent to be restarted", DEADLINE, || async {
        compute.agent_pid(&compute_id).filter(|p| *p != first_pid)
    })
    .await;
    wait::until("the restarted agent to answer", DEADLINE, || answers(&client, &amphora_id)).await;

    // The controller restarts: the amphora is found running, not restarted.
    drop(compute);
    let compute = LocalCompute::new(db.clone(), &env.config).expect("compute driver again");
    assert_eq!(compute.agent_pid(&compute_id), Some(second_pid), "the running agent is adopted");
    assert!(!process_gone(second_pid));
    answers(&client, &amphora_id).await.expect("the adopted agent answers");
    assert_eq!(compute.wait_active(&compute_id).await.expect("wait_active").lb_network_ip, info.lb_network_ip);

    // Delete: every process, namespace, veth, port and file goes.
    let vm_ns = env.config.local_network.amphora_namespace(&compute_id);
    let haproxy_pids = netns_pids(&lb_ns);
    assert!(!haproxy_pids.is_empty(), "haproxy runs in {lb_ns}");
    let dir = compute.instance_dir(&compute_id);
    compute.delete(&compute_id).await.expect("delete");
    compute.delete(&compute_id).await.expect("delete again");
    for pid in haproxy_pids.iter().chain([&second_pid]) {
        assert!(process_gone(*pid), "process {pid} survived the delete");
    }
    let names = netns_names();
    assert!(!names.contains(&vm_ns) && !names.contains(&lb_ns), "{names:?}");
    assert!(!ip_output(&["-n", &fabric, "link", "show"]).contains(&fabric_link(&vip.id)), "the VIP veth is gone");
    assert!(!dir.exists());
    let ports = net.ports().all().await.expect("ports");
    assert!(ports.iter().all(|p| p.port.address != info.lb_network_ip), "the management port is released");
    let vip_row = ports.iter().find(|p| p.port.id == vip.id).expect("the VIP port stays the network's");
    assert_eq!(vip_row.device_id, None);
    net.deallocate_vip(&vip.id).await.expect("deallocate");
    net.deallocate_vip(&vip.id).await.expect("deallocate again");

    net.delete_port(&member.id).await.expect("delete the member port");

    // Teardown leaves nothing on the host.
    drop(compute);
    drop(client_ns);
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_amphora-controller"))
        .arg("--config-file")
        .arg(&env.config_file)
        .args(["local", "teardown"])
        .status()
        .await
        .expect("run amphora-controller local teardown");
    assert!(status.success(), "amphora-controller local teardown: {status}");
    teardown(&env.config.local_network, env.state_dir()).await.expect("teardown again");
    let prefix = format!("{}-", env.prefix());
    assert!(netns_names().iter().all(|n| !n.starts_with(&prefix)), "{:?}", netns_names());
    let links = ip_output(&["link", "show"]);
    assert!(!links.contains(&env.config.local_network.host_management_interface()), "{links}");
    assert!(!links.contains(&env.config.local_network.host_vip_interface()), "{links}");
    let addresses = ip_output(&["addr", "show"]);
    assert!(!addresses.contains(&format!(" {}/", env.controller_ip())), "{addresses}");
    assert!(!addresses.contains(&format!(" {}/", amphora_controller::local::first_host(vip_cidr))), "{addresses}");
    // No process runs from the state directory (agents, haproxy, keepalived).
    let state = env.state_dir().as_os_str().as_encoded_bytes().to_vec();
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !process_gone(*pid))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(state.len()).any(|w| w == state.as_slice())
        })
        .map(|pid| pid.to_string())
        .collect();
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_dead_at_controller_start_is_started_but_a_dead_vm_is_not_and_deletes_cleanly() {
    let test_db = common::databases().await.remove(0);
    let env = Env::new(&test_db.url);
    let db = Db::open(&test_db.url).await.expect("database");
    let net = LocalNetwork::new(db.clone(), &env.config);
    let compute = LocalCompute::new(db.clone(), &env.config).expect("compute driver");
    let amphora_id = uuid::Uuid::new_v4().to_string();
    let booted = booted(&amphora_id);
    let files = booted.files(SocketAddr::new(env.controller_ip(), 9));
    let compute_id = compute.create(&amphora_id, &files).await.expect("create");
    let info = compute.wait_active(&compute_id).await.expect("wait_active");
    let log = std::fs::read_to_string(compute.instance_dir(&compute_id).join("agent.log")).expect("agent log");
    assert!(log.contains(&amphora_id), "the agent's output goes to its log:\n{log}");

    // The agent dies while the controller is down: the next controller
    // starts it again.
    let pid = compute.agent_pid(&compute_id).expect("agent pid");
    drop(compute);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    wait::until("the agent to die", DEADLINE, || async { process_gone(pid).then_some(()) }).await;
    let compute = LocalCompute::new(db.clone(), &env.config).expect("compute driver again");
    let restarted = compute.agent_pid(&compute_id).expect("an agent again");
    assert_ne!(restarted, pid);
    compute.wait_active(&compute_id).await.expect("active again");

    // The "VM" dies: its processes and its namespaces vanish.
    let vm_ns = env.config.local_network.amphora_namespace(&compute_id);
    let pid = restarted;
    netns::delete(&vm_ns);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    wait::until("the supervisor to give up", DEADLINE, || async {
        compute.agent_pid(&compute_id).is_none().then_some(())
    })
    .await;
    assert!(!netns_names().contains(&vm_ns), "the VM namespace is not brought back");
    let err = compute.wait_active(&compute_id).await.expect_err("a dead amphora is not active");
    assert!(err.to_string().contains("not running"), "{err:#}");

    compute.delete(&compute_id).await.expect("delete a dead amphora");
    compute.delete(&compute_id).await.expect("delete again");
    let ports = net.ports().all().await.expect("ports");
    assert!(ports.iter().all(|p| p.port.address != info.lb_network_ip), "{ports:?}");
    assert!(!compute.instance_dir(&compute_id).exists());
}

#[tokio::test]
async fn the_api_takes_the_configured_subnets_and_rejects_unknown_ones_with_upstreams_400() {
    for test_db in common::databases().await {
        let env = Env::new(&test_db.url);
        let api = common::api_with(&test_db, env.config.clone()).await;
        let unknown = "00000000-0000-4000-8000-0000000000ff";
        let lb = |field: &str, id: &str| Some(serde_json::json!({"loadbalancer": {field: id}}));

        let (status, body) = api.call("POST", "/v2/lbaas/loadbalancers", lb("vip_subnet_id", unknown)).await;
        assert_eq!(status, 400, "{}: {body}", test_db.name);
        assert_eq!(body["faultstring"], format!("Subnet {unknown} not found."), "{}", test_db.name);
        let (status, body) = api.call("POST", "/v2/lbaas/loadbalancers", lb("vip_network_id", unknown)).await;
        assert_eq!(
            (status.as_u16(), body["faultstring"].as_str()),
            (400, Some(&*format!("Network {unknown} not found.")))
        );
        let (status, body) = api.call("POST", "/v2/lbaas/loadbalancers", lb("vip_port_id", unknown)).await;
        assert_eq!(
            (status.as_u16(), body["faultstring"].as_str()),
            (400, Some(&*format!("Port {unknown} not found.")))
        );
        // A subnet of another network than the one named.
        let body = serde_json::json!({"loadbalancer": {"vip_network_id": DEFAULT_VIP_NETWORK_ID,
                                                       "vip_subnet_id": DEFAULT_MEMBER_SUBNET_ID}});
        let (status, _) = api.call("POST", "/v2/lbaas/loadbalancers", Some(body)).await;
        assert_eq!(status, 400);

        let (status, body) =
            api.call("POST", "/v2/lbaas/loadbalancers", lb("vip_subnet_id", DEFAULT_VIP_SUBNET_ID)).await;
        assert_eq!(status, 201, "{}: {body}", test_db.name);
        let (status, body) =
            api.call("POST", "/v2/lbaas/loadbalancers", lb("vip_network_id", DEFAULT_VIP_NETWORK_ID)).await;
        assert_eq!(status, 201, "{}: {body}", test_db.name);

        // Members: the same check of subnet_id, also inside a create graph.
        let graph = serde_json::json!({"loadbalancer": {"vip_subnet_id": DEFAULT_VIP_SUBNET_ID,
            "pools": [{"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                       "members": [{"address": "198.51.100.10", "protocol_port": 80, "subnet_id": unknown}]}]}});
        let (status, body) = api.call("POST", "/v2/lbaas/loadbalancers", Some(graph)).await;
        assert_eq!(
            (status.as_u16(), body["faultstring"].as_str()),
            (400, Some(&*format!("Subnet {unknown} not found.")))
        );

        // The CLI's lookups see the configured objects, by id and by name.
        let (status, body) = api.call("GET", &format!("/v2.0/subnets/{DEFAULT_VIP_SUBNET_ID}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(body["subnet"]["cidr"], "203.0.113.0/24");
        assert_eq!(body["subnet"]["network_id"], DEFAULT_VIP_NETWORK_ID);
        let (_, body) = api.call("GET", "/v2.0/subnets?name=vip-subnet", None).await;
        assert_eq!(body["subnets"][0]["id"], DEFAULT_VIP_SUBNET_ID);
        let (_, body) = api.call("GET", "/v2.0/networks?name=member-net", None).await;
        assert_eq!(body["networks"][0]["subnets"][0], DEFAULT_MEMBER_SUBNET_ID);
        let (status, body) = api.call("GET", &format!("/v2.0/subnets/{unknown}"), None).await;
        assert_eq!(status, 404);
        assert_eq!(body["NeutronError"]["type"], "SubnetNotFound");
    }
}

#[tokio::test]
async fn the_configuration_selects_the_local_drivers_and_a_missing_agent_is_a_clear_error() {
    let test_db = common::databases().await.remove(0);
    let env = Env::new(&test_db.url);
    let db = Db::open(&test_db.url).await.expect("database");
    let drivers = amphora_controller::worker::drivers::Drivers::from_config(&db, &env.config).expect("drivers");
    let shown = format!("{drivers:?}");
    assert!(shown.contains("LocalCompute") && shown.contains("LocalNetwork"), "{shown}");

    let mut config = env.config.clone();
    config.local_compute.agent_path = Some(env.dir.path().join("no-such-agent"));
    let err = amphora_controller::worker::drivers::Drivers::from_config(&db, &config).expect_err("no agent");
    assert!(err.to_string().contains("[local_compute] agent_path"), "{err:#}");
}

/// A veth pair in the host namespace, deleted (both ends) on drop.
struct HostLink(String);

impl Drop for HostLink {
    fn drop(&mut self) {
        ip_output(&["link", "del", &self.0]);
    }
}

#[tokio::test]
async fn a_management_range_the_host_already_routes_is_refused_before_anything_is_built() {
    let env = Env::new("sqlite::memory:");
    // The host's own network in the management range: a veth holding the
    // range's second address stands for it (this kernel has no dummy
    // links).
    let own = HostLink(format!("{}-own", env.prefix()));
    let peer = format!("{}-ownp", env.prefix());
    let IpNet::V4(range) = env.management else { panic!("an IPv4 management range") };
    let address = format!("{}/{}", std::net::Ipv4Addr::from(u32::from(range.network()) + 2), range.prefix_len());
    for args in [
        vec!["link", "add", &own.0, "type", "veth", "peer", "name", &peer],
        vec!["addr", "add", &address, "dev", &own.0],
        vec!["link", "set", &own.0, "up"],
    ] {
        let status = std::process::Command::new("ip").args(&args).status().expect("run ip");
        assert!(status.success(), "ip {args:?}");
    }
    let fabric = amphora_controller::local::Fabric::new(env.config.local_network.clone());
    let error = format!("{:#}", fabric.ensure().await.expect_err("an overlapping management range"));
    assert!(error.contains(&format!("{} overlaps the host's route to {}", env.management, env.management)), "{error}");
    assert!(error.contains(&own.0), "{error}");
    // Refused before the fabric namespace or the host veth was made.
    assert!(!netns_names().contains(&env.config.local_network.fabric_namespace), "{:?}", netns_names());
    assert!(!ip_output(&["-o", "link"]).contains(&env.config.local_network.host_management_interface()));

    // Once the host no longer routes it, the same settings build.
    drop(own);
    fabric.ensure().await.expect("the fabric without the overlap");
}
