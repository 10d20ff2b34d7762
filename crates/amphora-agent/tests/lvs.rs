//! UDP listeners through keepalived and IPVS, with real datagrams.
//!
//! The test machine's kernel has no IPVS, so `lvs_scenarios_pass_in_a_vm`
//! boots a throwaway VM with Debian's stock kernel (`amphora_testkit::vm`,
//! on this machine's own root filesystem) and runs itself there, where the
//! scenarios run one after the other. Each scenario has the agent in a "VM"
//! namespace, a "hypervisor" namespace holding the client side of the VIP
//! port and two UDP backends on the member network, and a health manager
//! stand-in receiving heartbeats.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use amphora_proto::heartbeat::{self, Heartbeat};
use amphora_proto::{ListenerState, ListenerStatus, Message, paths};
use amphora_testkit::netns::{self, NsRuntime};
use amphora_testkit::{Agent, AgentClient, vm, wait};
use common::*;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const UDP_LISTENER: &str = "7d1a9b80-5c1e-4a43-9c0e-3f0f5a7c2b10";
const POOL: &str = "7d1a9b80-5c1e-4a43-9c0e-3f0f5a7c2b20";
const MEMBER_1: &str = "7d1a9b80-5c1e-4a43-9c0e-3f0f5a7c2b31";
const MEMBER_2: &str = "7d1a9b80-5c1e-4a43-9c0e-3f0f5a7c2b32";
const MEMBER_3: &str = "7d1a9b80-5c1e-4a43-9c0e-3f0f5a7c2b33";
const VIP_MAC: &str = "02:00:00:00:05:01";
const MEMBER_MAC: &str = "02:00:00:00:06:01";
const VIP: &str = "10.0.0.10:5353";
const KEY: &str = "insecure";

type Scenario = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// The scenarios, run one after the other in one VM.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("udp_datagrams_reach_both_members_and_follow_their_health", || Box::pin(udp_through_ipvs())),
    ("a_refused_configuration_leaves_the_previous_one", || Box::pin(refused_configuration())),
    ("sctp_associations_reach_both_members_and_follow_their_health", || Box::pin(sctp_through_ipvs())),
    (HEARTBEATS_SCENARIO, || Box::pin(heartbeats_count_the_datagrams_through_the_vip())),
];

/// Leaves the heartbeat datagrams it received in its output, for the host
/// to feed to upstream's health manager code (Python in the emulated guest
/// would take minutes to start).
const HEARTBEATS_SCENARIO: &str = "heartbeats_count_the_datagrams_through_the_vip";

/// Measurements, run only when named in `AMPHORA_LVS_SCENARIOS` (for
/// bench/RESULTS.md); they assert only that traffic flowed.
const MEASUREMENTS: &[(&str, Scenario)] = &[
    ("udp_throughput_through_the_vip", || Box::pin(udp_throughput())),
    ("udp_throughput_through_upstreams_agent", || Box::pin(udp_throughput_upstream())),
];

/// On the host: boots a VM and runs this same test there, where it runs
/// the scenarios (`AMPHORA_LVS_SCENARIOS`, a comma-separated list of
/// names, picks some), each on a runtime of its own; a panic fails it and
/// the rest still run.
#[test]
fn lvs_scenarios_pass_in_a_vm() {
    let chosen: Vec<&(&str, Scenario)> = match std::env::var("AMPHORA_LVS_SCENARIOS") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                SCENARIOS
                    .iter()
                    .chain(MEASUREMENTS)
                    .find(|(name, _)| *name == n)
                    .unwrap_or_else(|| panic!("no scenario {n:?}"))
            })
            .collect(),
        Err(_) => SCENARIOS.iter().collect(),
    };
    if vm::inside() {
        return guest(&chosen);
    }
    let names: Vec<&str> = chosen.iter().map(|(name, _)| *name).collect();
    let list = names.join(",");
    let upstream_python = std::env::var("UPSTREAM_PYTHON").unwrap_or_default();
    let mut env = vec![("AMPHORA_LVS_SCENARIOS", list.as_str())];
    if !upstream_python.is_empty() {
        // For the measurement through upstream's agent.
        env.push(("UPSTREAM_PYTHON", upstream_python.as_str()));
    }
    let outcome = vm::run_this_test("lvs_scenarios_pass_in_a_vm", &env, Duration::from_secs(1800));
    for name in &names {
        assert!(
            outcome.output.contains(&format!("scenario {name} ... ok")),
            "{name} did not pass:\n{}",
            outcome.output
        );
    }
    if names.contains(&HEARTBEATS_SCENARIO) {
        upstream_reads_the_heartbeats(&outcome.output);
    }
}

/// In the VM: each scenario on a runtime of its own.
fn guest(chosen: &[&(&str, Scenario)]) {
    let mut failed = Vec::new();
    for (name, scenario) in chosen {
        let result = std::panic::catch_unwind(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(scenario())
        });
        println!("scenario {name} ... {}", if result.is_ok() { "ok" } else { "FAILED" });
        if result.is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "{} of {} scenario(s) failed: {failed:?}", failed.len(), chosen.len());
}

/// The hypervisor: the other ends of the VIP and member ports.
struct Hypervisor {
    name: String,
    runtime: NsRuntime,
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        netns::delete(&self.name);
    }
}

/// An agent in a VM namespace with the VIP and member ports plugged, and a
/// heartbeat receiver there.
async fn plugged() -> (Agent, Hypervisor, Receiver) {
    plugged_with_heartbeats_every("1").await
}

/// The same, heartbeats sent every `interval` seconds.
async fn plugged_with_heartbeats_every(interval: &str) -> (Agent, Hypervisor, Receiver) {
    let vm = netns::unique_name("ampvm");
    netns::create(&vm);
    let receiver = Receiver::bind(&vm).await;
    let agent = builder()
        .in_vm_namespace(&vm)
        .option("health_manager", "controller_ip_port_list", &receiver.addr.to_string())
        .option("health_manager", "heartbeat_interval", interval)
        .option("health_manager", "heartbeat_key", KEY)
        .start();
    let hyp = netns::unique_name("amphyp");
    netns::create(&hyp);
    netns::veth(&hyp, "hv-vip", &vm, "ens3", VIP_MAC);
    netns::veth(&hyp, "hv-mem", &vm, "ens4", MEMBER_MAC);
    netns::ip_in(&hyp, &["addr", "add", "10.0.0.1/24", "dev", "hv-vip"]);
    for backend in ["10.1.0.1/24", "10.1.0.2/24", "10.1.0.3/24"] {
        netns::ip_in(&hyp, &["addr", "add", backend, "dev", "hv-mem"]);
    }
    let hyp = Hypervisor { runtime: NsRuntime::new(&hyp), name: hyp };
    let client = agent.client();
    let vip = format!(
        r#"{{"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "mac_address": "{VIP_MAC}",
            "vrrp_ip": "10.0.0.11", "host_routes": [], "additional_vips": []}}"#
    );
    let reply = client.post("/1.0/plug/vip/10.0.0.10", vip).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let member = format!(
        r#"{{"mac_address": "{MEMBER_MAC}", "fixed_ips": [{{"ip_address": "10.1.0.5", "subnet_cidr": "10.1.0.0/24"}}]}}"#
    );
    let reply = client.post("/1.0/plug/network", member).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    (agent, hyp, receiver)
}

/// The controller's rendering of a UDP listener with a UDP-CONNECT health
/// monitor checking every second, members 1 and 2.
fn lvs_config(agent: &Agent) -> String {
    lvs_config_with(agent, &[(MEMBER_1, "10.1.0.1"), (MEMBER_2, "10.1.0.2")])
}

/// The same with the members given (id, address).
fn lvs_config_with(agent: &Agent, members: &[(&str, &str)]) -> String {
    let check = agent.base_path().join("lvs/check/udp_check.sh");
    let member = |id: &str, address: &str| {
        format!(
            "    # Configuration for Member {id}\n    real_server {address} 5353 {{\n        weight 1\n\
             \x20       MISC_CHECK {{\n            misc_path \"{check} {address} 5353\"\n            misc_timeout 3\n\
             \x20       }}\n    }}\n\n",
            check = check.display()
        )
    };
    format!(
        "# Configuration for Loadbalancer {LB}\n# Configuration for Listener {UDP_LISTENER}\n\n\
         net_namespace amphora-haproxy\n\n\
         virtual_server_group ipv4-group {{\n    10.0.0.10 5353\n}}\n\n\
         virtual_server group ipv4-group {{\n    lb_algo rr\n    lb_kind NAT\n    protocol UDP\n\
         \x20   delay_loop 1\n    delay_before_retry 1\n    retry 1\n\n\n\
         \x20   # Configuration for Pool {POOL}\n    # Configuration for HealthMonitor {POOL}\n{}}}\n\n",
        members.iter().map(|(id, address)| member(id, address)).collect::<String>(),
    )
}

fn upload_path(agent: &Agent) -> String {
    paths::v1::lvs_upload_config(&agent.amphora_id, UDP_LISTENER)
}

/// A UDP server answering every datagram with its name.
fn backend(hyp: &Hypervisor, address: &str, name: &'static str) -> JoinHandle<()> {
    let address: SocketAddr = address.parse().expect("address");
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = hyp.runtime.spawn(async move {
        let socket = UdpSocket::bind(address).await.expect("bind backend");
        let _ = tx.send(());
        let mut buffer = [0u8; 1500];
        loop {
            let Ok((_, peer)) = socket.recv_from(&mut buffer).await else { continue };
            let _ = socket.send_to(name.as_bytes(), peer).await;
        }
    });
    rx.recv_timeout(WAIT).expect("backend bound");
    handle
}

/// One datagram to the VIP from a fresh socket (a new IPVS connection):
/// the answer, if one came back from the VIP within a second.
async fn ask(hyp: &Hypervisor) -> Option<String> {
    hyp.runtime
        .spawn(async {
            let socket = UdpSocket::bind("10.0.0.1:0").await.ok()?;
            // Connected: only an answer from the VIP itself is accepted.
            socket.connect(VIP).await.ok()?;
            socket.send(b"hello").await.ok()?;
            let mut buffer = [0u8; 64];
            let len = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer)).await.ok()?.ok()?;
            Some(String::from_utf8_lossy(&buffer[..len]).into_owned())
        })
        .await
        .expect("join")
}

/// Who answers `count` fresh flows.
async fn answers(hyp: &Hypervisor, count: usize) -> Vec<Option<String>> {
    let mut all = Vec::new();
    for _ in 0..count {
        all.push(ask(hyp).await);
    }
    all
}

/// A health manager stand-in inside the VM namespace.
struct Receiver {
    addr: SocketAddr,
    socket: std::sync::Arc<UdpSocket>,
    _runtime: NsRuntime,
}

impl Receiver {
    async fn bind(namespace: &str) -> Self {
        let runtime = NsRuntime::new(namespace);
        let socket = runtime.spawn(async { UdpSocket::bind("127.0.0.1:0").await.expect("bind") }).await.expect("join");
        let addr = socket.local_addr().expect("addr");
        Self { addr, socket: std::sync::Arc::new(socket), _runtime: runtime }
    }

    /// Waits for a heartbeat satisfying `check`.
    async fn until<T>(&self, what: &str, check: impl Fn(&Heartbeat) -> Option<T>) -> T {
        let socket = self.socket.clone();
        wait::until(what, WAIT, || {
            let socket = socket.clone();
            let found = async move {
                let mut buffer = vec![0u8; heartbeat::RECEIVER_BUFFER];
                let (len, _) =
                    tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await.ok()?.ok()?;
                heartbeat::decode(&buffer[..len], KEY, heartbeat::DEFAULT_MAX_DECOMPRESSED).ok()
            };
            async { found.await.and_then(|beat| check(&beat)) }
        })
        .await
    }
}

fn members(beat: &Heartbeat) -> Option<Vec<(String, String)>> {
    let pool = beat.pools.get(POOL)?;
    Some(pool.members.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
}

fn keepalived_pid(agent: &Agent) -> Option<i32> {
    let path: PathBuf = agent.base_path().join(format!("lvs/octavia-keepalivedlvs-{UDP_LISTENER}.pid"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A VRRP configuration for the VIP port (eth1), tracking the agent's
/// check script; uploading it makes the agent write its track scripts.
fn vrrp_config(agent: &Agent) -> String {
    format!(
        "vrrp_script check_script {{\n    script {check}\n    interval 1\n    fall 1\n    rise 1\n}}\n\n\
         vrrp_instance lb_vrrp {{\n    interface eth1\n    virtual_router_id 42\n    priority 100\n    nopreempt\n\
         \x20   advert_int 1\n    unicast_src_ip 10.0.0.11\n    unicast_peer {{\n        10.0.0.12\n    }}\n\
         \x20   virtual_ipaddress {{\n        10.0.0.10\n    }}\n    track_script {{\n        check_script\n    }}\n}}\n",
        check = agent.base_path().join("vrrp/check_script.sh").display(),
    )
}

/// Runs keepalived's VRRP track script as keepalived would: whether it
/// passed, and what it wrote to its failure log.
fn vrrp_check(agent: &Agent) -> (bool, String) {
    let script = agent.base_path().join("vrrp/check_script.sh");
    let status = std::process::Command::new("sh").arg(&script).status().expect("run the track script");
    let log = std::fs::read_to_string(agent.base_path().join("vrrp/last-check-failure.log")).unwrap_or_default();
    (status.success(), log)
}

fn checker_pid(agent: &Agent) -> Option<i32> {
    let path: PathBuf = agent.base_path().join(format!("lvs/octavia-keepalivedlvs-{UDP_LISTENER}.check.pid"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How many reloads keepalived's checker has logged finishing.
fn reloads_logged(agent: &Agent) -> usize {
    let log =
        std::fs::read_to_string(agent.base_path().join(format!("lvs/agent/{UDP_LISTENER}.log"))).unwrap_or_default();
    log.matches("Reloading ...").count()
}

/// Where a backend's answer comes from.
fn member_address(name: &str) -> SocketAddr {
    let address = match name {
        "backend-1" => "10.1.0.1:5353",
        "backend-2" => "10.1.0.2:5353",
        "backend-3" => "10.1.0.3:5353",
        other => panic!("no backend {other:?}"),
    };
    address.parse().expect("address")
}

/// `cat FILE` in a namespace (IPVS's /proc files are per namespace).
fn read_in(namespace: &str, path: &str) -> String {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", namespace, "cat", path])
        .output()
        .expect("run ip netns exec");
    assert!(output.status.success(), "cat {path}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// "0A00000A:14E9" or ("0A00000A", "14E9"): an IPv4 address and port in
/// the kernel's hexadecimal.
fn hex_address(address: &str, port: &str) -> Option<SocketAddr> {
    let address = u32::from_str_radix(address, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((std::net::Ipv4Addr::from(address), port)))
}

struct IpvsConnection {
    protocol: String,
    client: SocketAddr,
    real_server: SocketAddr,
}

/// IPVS's connection entries (/proc/net/ip_vs_conn): protocol, client,
/// virtual address, real server, state, expiry.
fn ipvs_connections(namespace: &str) -> Vec<IpvsConnection> {
    read_in(namespace, "/proc/net/ip_vs_conn")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let [protocol, from, from_port, _to, _to_port, dest, dest_port, ..] = words.as_slice() else { return None };
            Some(IpvsConnection {
                protocol: (*protocol).to_owned(),
                client: hex_address(from, from_port)?,
                real_server: hex_address(dest, dest_port)?,
            })
        })
        .collect()
}

/// IPVS's virtual services (/proc/net/ip_vs).
fn ipvs_services(namespace: &str) -> Vec<SocketAddr> {
    read_in(namespace, "/proc/net/ip_vs")
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let protocol = words.next()?;
            if !["TCP", "UDP", "SCTP"].contains(&protocol) {
                return None;
            }
            let (address, port) = words.next()?.split_once(':')?;
            hex_address(address, port)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

async fn listener_status(client: &AgentClient) -> Option<ListenerStatus> {
    let all: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    all.into_iter().find(|l| l.uuid == UDP_LISTENER)
}

async fn udp_through_ipvs() {
    let (mut agent, hyp, receiver) = plugged().await;
    let client = agent.client();
    let _one = backend(&hyp, "10.1.0.1:5353", "backend-1");
    let two = backend(&hyp, "10.1.0.2:5353", "backend-2");

    let config = lvs_config(&agent);
    let reply = client.put(&upload_path(&agent), config.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("etag"), Some(amphora_testkit::md5_hex(config.as_bytes()).as_str()));
    let stored = client.get(&paths::v1::lvs_config(UDP_LISTENER)).await;
    assert_eq!(stored.text(), config, "stored as uploaded");
    assert_eq!(listener_status(&client).await.map(|l| l.status), Some(ListenerState::Stopped));

    let reply = client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("OK", format!("keepalivedlvs listener {UDP_LISTENER} started"))
    );
    let status = listener_status(&client).await.expect("listed");
    assert_eq!((status.status, status.kind.as_str()), (ListenerState::Active, "UDP"));
    let details: serde_json::Value = client.get("/1.0/details").await.json();
    assert_eq!(details["lvs_listener_process_count"], 1);
    assert!(details["listeners"].as_array().expect("listeners").iter().any(|l| l == UDP_LISTENER));

    // Fresh flows are spread over both members, and answered from the VIP
    // (the members answer the amphora, which masquerades).
    wait::until("both members to answer through the VIP", WAIT, || async {
        let seen = answers(&hyp, 4).await;
        (seen.contains(&Some("backend-1".into())) && seen.contains(&Some("backend-2".into()))).then_some(())
    })
    .await;
    let beat = receiver
        .until("a heartbeat with both members up and traffic", |beat| {
            let listener = beat.listeners.get(UDP_LISTENER)?;
            (listener.status == "OPEN"
                && members(beat)? == vec![(MEMBER_1.into(), "UP".into()), (MEMBER_2.into(), "UP".into())])
            .then(|| beat.clone())
        })
        .await;
    assert_eq!(beat.pools[POOL].status, "UP");

    // A member that stops listening fails its check and leaves IPVS.
    two.abort();
    receiver
        .until("member 2 reported down", |beat| {
            (members(beat)? == vec![(MEMBER_1.into(), "UP".into()), (MEMBER_2.into(), "DOWN".into())]).then_some(())
        })
        .await;
    assert_eq!(answers(&hyp, 4).await, vec![Some("backend-1".to_owned()); 4], "only the healthy member serves");
    let _two = backend(&hyp, "10.1.0.2:5353", "backend-2");
    receiver
        .until("member 2 back up", |beat| {
            (members(beat)? == vec![(MEMBER_1.into(), "UP".into()), (MEMBER_2.into(), "UP".into())]).then_some(())
        })
        .await;

    // A reload is keepalived's own: the same process re-reads its
    // configuration, the virtual server stays, and a flow (one client
    // socket, one source port) keeps its member through the connection
    // entry IPVS keeps for it.
    let flow = hyp
        .runtime
        .spawn(async {
            let socket = UdpSocket::bind("10.0.0.1:0").await.expect("bind");
            socket.connect(VIP).await.expect("connect");
            std::sync::Arc::new(socket)
        })
        .await
        .expect("join");
    let flow_source = flow.local_addr().expect("source");
    // The agent's amphora namespace, where IPVS holds the VIP.
    let amphora_ns = agent.netns.clone().expect("the amphora namespace");
    let on_flow = |flow: std::sync::Arc<UdpSocket>| {
        hyp.runtime.spawn(async move {
            flow.send(b"hello").await.ok()?;
            let mut buffer = [0u8; 64];
            let len = tokio::time::timeout(Duration::from_secs(1), flow.recv(&mut buffer)).await.ok()?.ok()?;
            Some(String::from_utf8_lossy(&buffer[..len]).into_owned())
        })
    };
    let flow_entry = || {
        ipvs_connections(&amphora_ns)
            .into_iter()
            .find(|c| c.protocol == "UDP" && c.client == flow_source)
            .map(|c| c.real_server)
    };
    let first = on_flow(flow.clone()).await.expect("join").expect("the flow answered before the reload");
    assert_eq!(
        flow_entry(),
        Some(member_address(&first)),
        "IPVS holds the flow's entry to the member that answered:\n{}",
        read_in(&amphora_ns, "/proc/net/ip_vs_conn")
    );
    let before = keepalived_pid(&agent).expect("pid");
    let checker_before = checker_pid(&agent).expect("checker pid");
    let reply = client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/reload"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("OK", format!("keepalivedlvs listener {UDP_LISTENER} reloaded"))
    );
    wait::until("keepalived to finish its reload", WAIT, || async { (reloads_logged(&agent) >= 1).then_some(()) })
        .await;
    assert_eq!(keepalived_pid(&agent), Some(before), "the same keepalived");
    assert!(alive(before));
    assert_eq!(checker_pid(&agent), Some(checker_before), "the same checker");
    for _ in 0..5 {
        let answer = on_flow(flow.clone()).await.expect("join");
        assert_eq!(answer.as_deref(), Some(first.as_str()), "the flow stays on its member across the reload");
    }
    assert_eq!(flow_entry(), Some(member_address(&first)), "the flow's IPVS entry survived the reload");

    // A reload with a member added: keepalived adds it to the same
    // virtual server; fresh flows reach it, the open flow stays.
    let _three = backend(&hyp, "10.1.0.3:5353", "backend-3");
    let three_members =
        lvs_config_with(&agent, &[(MEMBER_1, "10.1.0.1"), (MEMBER_2, "10.1.0.2"), (MEMBER_3, "10.1.0.3")]);
    assert_eq!(client.put(&upload_path(&agent), three_members).await.status, 200);
    let reply = client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/reload"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    wait::until("member 3 to answer fresh flows after the reload", WAIT, || async {
        answers(&hyp, 3).await.contains(&Some("backend-3".into())).then_some(())
    })
    .await;
    assert_eq!(keepalived_pid(&agent), Some(before), "still the same keepalived");
    let answer = on_flow(flow.clone()).await.expect("join");
    assert_eq!(answer.as_deref(), Some(first.as_str()), "the open flow stays on its member");
    assert_eq!(flow_entry(), Some(member_address(&first)));
    receiver
        .until("a heartbeat with the three members up", |beat| {
            let up = |id: &str| (id.to_owned(), "UP".to_owned());
            (members(beat)? == vec![up(MEMBER_1), up(MEMBER_2), up(MEMBER_3)]).then_some(())
        })
        .await;
    let after = before;

    // The agent restarts; keepalived keeps serving and is adopted.
    agent.terminate();
    assert!(alive(after));
    assert!(ask(&hyp).await.is_some(), "served while the agent is down");
    agent.restart();
    let client = agent.client();
    assert_eq!(listener_status(&client).await.map(|l| l.status), Some(ListenerState::Active));
    assert_eq!(keepalived_pid(&agent), Some(after));

    // ACTIVE_STANDBY: keepalived's VRRP track script passes on an amphora
    // with an LVS listener and no haproxy load balancer while the
    // listener's keepalived runs (the amphora may be MASTER).
    let vrrp = vrrp_config(&agent);
    let reply = client.put("/1.0/vrrp/upload", vrrp).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (passed, output) = vrrp_check(&agent);
    assert!(passed, "the track script fails with only an LVS listener running: {output}");

    // Stopped: keepalived ends, IPVS forgets the virtual server, the VIP's
    // port goes quiet and the listener is no longer ACTIVE.
    let reply = client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/stop"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("OK", format!("keepalivedlvs listener {UDP_LISTENER} stoped"))
    );
    assert!(!alive(after), "keepalived ended");
    let vip: SocketAddr = VIP.parse().expect("vip");
    wait::until("IPVS to forget the virtual server", WAIT, || async {
        (!ipvs_services(&amphora_ns).contains(&vip)).then_some(())
    })
    .await;
    wait::until("the VIP to stop answering", WAIT, || async { ask(&hyp).await.is_none().then_some(()) }).await;
    assert_eq!(listener_status(&client).await.map(|l| l.status), Some(ListenerState::Stopped));
    let details: serde_json::Value = client.get("/1.0/details").await.json();
    assert_eq!(details["lvs_listener_process_count"], 0);
    let (passed, _) = vrrp_check(&agent);
    assert!(!passed, "the track script passes with nothing left to serve");

    // Started again: it serves.
    let reply = client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    wait::until("the VIP to answer after the start", WAIT, || async { ask(&hyp).await }).await;
    assert!(ipvs_services(&amphora_ns).contains(&vip));
    assert_eq!(listener_status(&client).await.map(|l| l.status), Some(ListenerState::Active));
    let after = keepalived_pid(&agent).expect("pid");
    let (passed, output) = vrrp_check(&agent);
    assert!(passed, "the track script fails once the listener runs again: {output}");

    // Deleted: keepalived stops, IPVS forgets the service, files go.
    let reply = client.delete(&format!("/1.0/listeners/{UDP_LISTENER}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait::until("keepalived to exit", WAIT, || async { (!alive(after)).then_some(()) }).await;
    wait::until("the VIP to stop answering", WAIT, || async { ask(&hyp).await.is_none().then_some(()) }).await;
    let reply = client.get(&paths::v1::lvs_config(UDP_LISTENER)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("UDP Listener Not Found", format!("No UDP listener with UUID: {UDP_LISTENER}"))
    );
    assert!(listener_status(&client).await.is_none());
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/start"), "").await.status, 404);
}

async fn refused_configuration() {
    let (agent, _hyp, _receiver) = plugged().await;
    let client = agent.client();
    let config = lvs_config(&agent);
    assert_eq!(client.put(&upload_path(&agent), config.clone()).await.status, 200);
    let broken = config.replace("lb_algo rr", "lb_algo bogus");
    let reply = client.put(&upload_path(&agent), broken).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let message: Message = reply.json();
    assert_eq!(message.message, "Invalid request");
    assert!(message.details.expect("details").contains("bogus"), "keepalived's words");
    let stored = client.get(&paths::v1::lvs_config(UDP_LISTENER)).await;
    assert_eq!(stored.text(), config, "the previous configuration stays");

    // A check that would run a program of the uploader's choice, as root.
    let check = agent.base_path().join("lvs/check/udp_check.sh");
    let hostile = config.replace(&format!("\"{}", check.display()), "\"/bin/sh -c touch${IFS}/tmp/owned");
    assert_ne!(hostile, config);
    let reply = client.put(&upload_path(&agent), hostile).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let details = reply.json::<Message>().details.expect("details");
    assert!(details.contains("misc_path runs \"/bin/sh\""), "{details}");
    // A virtual server on a port outside the listener's.
    let other_port = config.replace("    10.0.0.10 5353\n", "    10.0.0.10 5353\n    10.0.0.10 22\n");
    assert_ne!(other_port, config);
    let reply = client.put(&upload_path(&agent), other_port).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let details = reply.json::<Message>().details.expect("details");
    assert!(details.contains("a listener serves one port"), "{details}");
    // Garbage: keepalived's own words.
    let reply = client.put(&upload_path(&agent), "this is { not keepalived\n").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json::<Message>().message, "Invalid request");
    let stored = client.get(&paths::v1::lvs_config(UDP_LISTENER)).await;
    assert_eq!(stored.text(), config, "the previous configuration stays");

    let reply = client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/BAD_TEST_DATA"), "").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>(), Message::with_details("Invalid Request", "Unknown action: BAD_TEST_DATA"));
}

const SCTP_LISTENER: &str = "7d1a9b80-5c1e-4a43-9c0e-3f0f5a7c2b40";
const SCTP_PORT: u16 = 9000;

/// The controller's rendering of an SCTP listener whose health monitor is
/// upstream's SCTP check (`amphora-health-checker sctp`).
fn sctp_config() -> String {
    let member = |id: &str, address: &str| {
        format!(
            "    # Configuration for Member {id}\n    real_server {address} {SCTP_PORT} {{\n        weight 1\n\
             \x20       MISC_CHECK {{\n            misc_path \"amphora-health-checker sctp -t 1 {address} {SCTP_PORT}\"\n\
             \x20           misc_timeout 2\n        }}\n    }}\n\n"
        )
    };
    format!(
        "# Configuration for Loadbalancer {LB}\n# Configuration for Listener {SCTP_LISTENER}\n\n\
         net_namespace amphora-haproxy\n\n\
         virtual_server_group ipv4-group {{\n    10.0.0.10 {SCTP_PORT}\n}}\n\n\
         virtual_server group ipv4-group {{\n    lb_algo rr\n    lb_kind NAT\n    protocol SCTP\n\
         \x20   delay_loop 1\n    delay_before_retry 1\n    retry 1\n\n\n\
         \x20   # Configuration for Pool {POOL}\n    # Configuration for HealthMonitor {POOL}\n{}{}}}\n\n",
        member(MEMBER_1, "10.1.0.1"),
        member(MEMBER_2, "10.1.0.2"),
    )
}

/// A one-to-one SCTP socket (the TCP-like style); std and tokio read,
/// write and accept on it as on a TCP socket.
fn sctp_socket() -> std::os::fd::OwnedFd {
    use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
    socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, SockProtocol::Sctp).expect("an SCTP socket")
}

/// An SCTP server answering each association's first message with its
/// name, then closing it.
fn sctp_backend(hyp: &Hypervisor, address: &str, name: &'static str) -> JoinHandle<()> {
    use nix::sys::socket::{Backlog, SockaddrIn, bind, listen};
    let address: std::net::SocketAddrV4 = address.parse().expect("address");
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = hyp.runtime.spawn(async move {
        let fd = sctp_socket();
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReuseAddr, &true).expect("reuse");
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(address)).expect("bind an SCTP backend");
        listen(&fd, Backlog::new(16).expect("backlog")).expect("listen");
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let _ = tx.send(());
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            // Each association on its own: a slow one (a health check)
            // does not hold the next one up.
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 64];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await
                    && n > 0
                {
                    let _ = stream.write_all(name.as_bytes()).await;
                }
            });
        }
    });
    rx.recv_timeout(WAIT).expect("SCTP backend bound");
    handle
}

/// One association to the VIP: who answered, if anyone within 3 s.
async fn sctp_ask(hyp: &Hypervisor) -> Option<String> {
    hyp.runtime
        .spawn(async {
            tokio::task::spawn_blocking(|| {
                use std::io::{Read, Write};
                let fd = sctp_socket();
                let vip = std::net::SocketAddrV4::new([10, 0, 0, 10].into(), SCTP_PORT);
                nix::sys::socket::connect(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &nix::sys::socket::SockaddrIn::from(vip),
                )
                .ok()?;
                let mut stream = std::net::TcpStream::from(fd);
                // Emulated CPU: generous, but still well under a health
                // check's period times its retries.
                stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
                stream.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
                stream.write_all(b"hello").ok()?;
                let mut buffer = [0u8; 64];
                let n = stream.read(&mut buffer).ok()?;
                (n > 0).then(|| String::from_utf8_lossy(&buffer[..n]).into_owned())
            })
            .await
            .ok()
            .flatten()
        })
        .await
        .expect("join")
}

async fn sctp_through_ipvs() {
    let (agent, hyp, receiver) = plugged().await;
    let client = agent.client();
    let _one = sctp_backend(&hyp, "10.1.0.1:9000", "backend-1");
    let two = sctp_backend(&hyp, "10.1.0.2:9000", "backend-2");

    let config = sctp_config();
    let upload = paths::v1::lvs_upload_config(&agent.amphora_id, SCTP_LISTENER);
    let reply = client.put(&upload, config.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = client.put(&format!("/1.0/loadbalancer/{SCTP_LISTENER}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let all: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    let status = all.into_iter().find(|l| l.uuid == SCTP_LISTENER).expect("listed");
    assert_eq!((status.status, status.kind.as_str()), (ListenerState::Active, "SCTP"));

    wait::until("both members to answer SCTP associations through the VIP", WAIT, || async {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(sctp_ask(&hyp).await);
        }
        (seen.contains(&Some("backend-1".into())) && seen.contains(&Some("backend-2".into()))).then_some(())
    })
    .await;
    receiver
        .until("a heartbeat with both SCTP members up", |beat| {
            (members(beat)? == vec![(MEMBER_1.into(), "UP".into()), (MEMBER_2.into(), "UP".into())]).then_some(())
        })
        .await;

    // A member that stops listening fails upstream's SCTP check.
    two.abort();
    receiver
        .until("SCTP member 2 reported down", |beat| {
            (members(beat)? == vec![(MEMBER_1.into(), "UP".into()), (MEMBER_2.into(), "DOWN".into())]).then_some(())
        })
        .await;
    for _ in 0..4 {
        assert_eq!(sctp_ask(&hyp).await.as_deref(), Some("backend-1"), "only the healthy member serves");
    }

    let reply = client.delete(&format!("/1.0/listeners/{SCTP_LISTENER}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait::until("the SCTP VIP to stop answering", WAIT, || async { sctp_ask(&hyp).await.is_none().then_some(()) })
        .await;
}

/// 1000-byte datagrams through the VIP to one member on one flow, with up
/// to `WINDOW` unanswered, for `SECONDS`: answers per second.
async fn udp_throughput() {
    // As upstream's agent is measured: heartbeats every 10 s, members not
    // health checked (each check is a process, costly on the emulated CPU).
    let (agent, hyp, _receiver) = plugged_with_heartbeats_every("10").await;
    let client = agent.client();
    let _one = backend(&hyp, "10.1.0.1:5353", "backend-1");
    let _two = backend(&hyp, "10.1.0.2:5353", "backend-2");
    assert_eq!(client.put(&upload_path(&agent), unchecked_config()).await.status, 200);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/start"), "").await.status, 202);
    wait::until("the VIP to answer", WAIT, || async { ask(&hyp).await }).await;
    let (answered, elapsed) = throughput(&hyp).await;
    let rate = answered as f64 / elapsed.as_secs_f64();
    println!(
        "MEASURE udp_throughput: {answered} datagrams of 1000 bytes answered in {elapsed:.2?}: {rate:.0}/s, {:.1} Mbit/s in",
        rate * 8000.0 / 1e6
    );
    assert!(answered > 0, "no datagram answered");
}

/// The controller's rendering of a UDP listener without a health monitor
/// (members always in), with upstream's namespace line.
fn unchecked_config() -> String {
    format!(
        "# Configuration for Listener {UDP_LISTENER}\n\nnet_namespace amphora-haproxy\n\n\
         virtual_server_group ipv4-group {{\n    10.0.0.10 5353\n}}\n\n\
         virtual_server group ipv4-group {{\n    lb_algo rr\n    lb_kind NAT\n    protocol UDP\n\n\
         \x20   # Configuration for Pool {POOL}\n\
         \x20   real_server 10.1.0.1 5353 {{\n        weight 1\n    }}\n\
         \x20   real_server 10.1.0.2 5353 {{\n        weight 1\n    }}\n}}\n"
    )
}

/// 1000-byte datagrams through the VIP on one flow, with up to `WINDOW`
/// unanswered, for `SECONDS`: how many were answered, in how long.
async fn throughput(hyp: &Hypervisor) -> (u64, Duration) {
    const SECONDS: u64 = 5;
    const WINDOW: usize = 32;
    hyp.runtime
        .spawn(async {
            let socket = UdpSocket::bind("10.0.0.1:0").await.expect("bind");
            socket.connect(VIP).await.expect("connect");
            let payload = [7u8; 1000];
            for _ in 0..WINDOW {
                socket.send(&payload).await.expect("send");
            }
            let started = std::time::Instant::now();
            let deadline = started + Duration::from_secs(SECONDS);
            let mut answered = 0u64;
            let mut buffer = [0u8; 64];
            while std::time::Instant::now() < deadline {
                // An answer, or a lost datagram after 200 ms: either way
                // one more goes out, so the window stays full.
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buffer)).await {
                    answered += 1;
                }
                let _ = socket.send(&payload).await;
            }
            (answered, started.elapsed())
        })
        .await
        .expect("join")
}

/// The same through upstream's agent (octavia 19.0.0 from `UPSTREAM_PYTHON`,
/// started by `bench/upstream/lvs-listener.sh`): it stores the listener's
/// configuration and starts keepalived through its systemd unit. Its
/// amphora namespace, ports and masquerading (upstream's image scripts,
/// not in its Python package) are set up here; members are not health
/// checked (upstream's check script needs netcat, not installed).
async fn udp_throughput_upstream() {
    const AMPHORA_NS: &str = "amphora-haproxy";
    netns::create(AMPHORA_NS);
    // Deletes the namespace when dropped.
    let amphora = Hypervisor { runtime: NsRuntime::new(AMPHORA_NS), name: AMPHORA_NS.to_owned() };
    let hyp = netns::unique_name("amphyp");
    netns::create(&hyp);
    netns::veth(&hyp, "hv-vip", AMPHORA_NS, "eth1", VIP_MAC);
    netns::veth(&hyp, "hv-mem", AMPHORA_NS, "eth2", MEMBER_MAC);
    netns::ip_in(&hyp, &["addr", "add", "10.0.0.1/24", "dev", "hv-vip"]);
    for backend in ["10.1.0.1/24", "10.1.0.2/24"] {
        netns::ip_in(&hyp, &["addr", "add", backend, "dev", "hv-mem"]);
    }
    for (address, port) in [("10.0.0.10/24", "eth1"), ("10.1.0.5/24", "eth2")] {
        netns::ip_in(AMPHORA_NS, &["addr", "add", address, "dev", port]);
        netns::ip_in(AMPHORA_NS, &["link", "set", port, "up"]);
    }
    let status = std::process::Command::new("modprobe").arg("ip_vs").status().expect("modprobe");
    assert!(status.success(), "modprobe ip_vs");
    netns::sysctl_in(AMPHORA_NS, "net.ipv4.ip_forward", "1");
    netns::sysctl_in(AMPHORA_NS, "net.ipv4.vs.conntrack", "1");
    let mut nft = std::process::Command::new("ip")
        .args(["netns", "exec", AMPHORA_NS, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    {
        use std::io::Write;
        let mut stdin = nft.stdin.take().expect("stdin");
        stdin
            .write_all(
                b"table ip lvs {\n chain post {\n  type nat hook postrouting priority 100;\n  oifname \"eth2\" masquerade\n }\n}\n",
            )
            .expect("write");
    }
    assert!(nft.wait().expect("nft").success(), "the masquerading rule");
    let hyp = Hypervisor { runtime: NsRuntime::new(&hyp), name: hyp };
    let _one = backend(&hyp, "10.1.0.1:5353", "backend-1");
    let _two = backend(&hyp, "10.1.0.2:5353", "backend-2");

    let work = tempfile::tempdir().expect("tempdir");
    let config = work.path().join("listener.conf");
    std::fs::write(&config, unchecked_config()).expect("write");
    let agent_dir = work.path().join("agent");
    std::fs::create_dir(&agent_dir).expect("mkdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/upstream/lvs-listener.sh");
    let started = std::time::Instant::now();
    let output = std::process::Command::new(script)
        .arg(&agent_dir)
        .arg(UDP_LISTENER)
        .arg(&config)
        .output()
        .expect("run lvs-listener.sh");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    let agent_pid: Option<i32> =
        std::fs::read_to_string(agent_dir.join("agent.pid")).ok().and_then(|p| p.trim().parse().ok());
    let stop_all = || {
        if let Some(pid) = agent_pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let pid_file = agent_dir.join(format!("base/lvs/octavia-keepalivedlvs-{UDP_LISTENER}.pid"));
        if let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    };
    if !output.status.success() {
        stop_all();
        panic!("upstream's agent did not start the listener: {}", String::from_utf8_lossy(&output.stderr));
    }
    println!("upstream's agent up and the listener started in {:?}", started.elapsed());
    wait::until("the VIP to answer through upstream's agent's keepalived", WAIT, || async { ask(&hyp).await }).await;
    let (answered, elapsed) = throughput(&hyp).await;
    stop_all();
    drop(amphora);
    let rate = answered as f64 / elapsed.as_secs_f64();
    println!(
        "MEASURE udp_throughput_upstream: {answered} datagrams of 1000 bytes answered in {elapsed:.2?}: {rate:.0}/s, {:.1} Mbit/s in",
        rate * 8000.0 / 1e6
    );
    assert!(answered > 0, "no datagram answered");
}

/// Datagrams through the VIP and the heartbeats that count them: the
/// heartbeats' deltas, summed from a quiet one on, are the bytes (IP and
/// UDP headers included, as IPVS counts them) and flows sent. Prints the
/// raw datagrams and the expected sums for the host's upstream check.
async fn heartbeats_count_the_datagrams_through_the_vip() {
    const FLOWS: usize = 3;
    const PER_FLOW: usize = 4;
    const PAYLOAD: usize = 100;
    const HEADERS: u64 = 20 + 8;
    let (agent, hyp, receiver) = plugged().await;
    let client = agent.client();
    // Member 2 has no server: its check takes it out, every flow goes to 1.
    let _one = backend(&hyp, "10.1.0.1:5353", "backend-1");
    assert_eq!(client.put(&upload_path(&agent), lvs_config(&agent)).await.status, 200);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{UDP_LISTENER}/start"), "").await.status, 202);
    receiver
        .until("member 2 down and no traffic counted", |beat| {
            let stats = &beat.listeners.get(UDP_LISTENER)?.stats;
            (members(beat)? == vec![(MEMBER_1.into(), "UP".into()), (MEMBER_2.into(), "DOWN".into())]
                && stats.rx == 0
                && stats.totconns == 0)
                .then_some(())
        })
        .await;

    let answered = hyp
        .runtime
        .spawn(async {
            let mut answered = Vec::new();
            for _ in 0..FLOWS {
                let socket = UdpSocket::bind("10.0.0.1:0").await.expect("bind");
                socket.connect(VIP).await.expect("connect");
                for _ in 0..PER_FLOW {
                    socket.send(&[1u8; PAYLOAD]).await.expect("send");
                    let mut buffer = [0u8; 64];
                    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
                        .await
                        .expect("answered in time")
                        .expect("recv");
                    answered.push(String::from_utf8_lossy(&buffer[..len]).into_owned());
                }
            }
            answered
        })
        .await
        .expect("join");
    assert_eq!(answered, vec!["backend-1".to_owned(); FLOWS * PER_FLOW]);
    let sent = (FLOWS * PER_FLOW) as u64;
    let expected = serde_json::json!({
        "bytes_in": sent * (PAYLOAD as u64 + HEADERS),
        "bytes_out": sent * ("backend-1".len() as u64 + HEADERS),
        "total_connections": FLOWS,
    });

    // Every heartbeat from the quiet one on, until the sums are reached
    // and a quiet one follows.
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut sums = [0u64; 3];
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        assert!(std::time::Instant::now() < deadline, "the heartbeats never counted {expected}; they counted {sums:?}");
        let mut buffer = vec![0u8; heartbeat::RECEIVER_BUFFER];
        let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_secs(3), receiver.socket.recv_from(&mut buffer)).await
        else {
            continue;
        };
        let beat: Heartbeat =
            heartbeat::decode(&buffer[..len], KEY, heartbeat::DEFAULT_MAX_DECOMPRESSED).expect("decode");
        let Some(listener) = beat.listeners.get(UDP_LISTENER) else { continue };
        let stats = &listener.stats;
        sums[0] += stats.rx;
        sums[1] += stats.tx;
        sums[2] += stats.totconns;
        datagrams.push(buffer[..len].to_vec());
        let quiet = stats.rx == 0 && stats.tx == 0 && stats.totconns == 0;
        if quiet && sums != [0; 3] {
            assert_eq!(listener.status, "OPEN");
            break;
        }
    }
    let expected_sums = [
        expected["bytes_in"].as_u64().expect("n"),
        expected["bytes_out"].as_u64().expect("n"),
        expected["total_connections"].as_u64().expect("n"),
    ];
    assert_eq!(sums, expected_sums, "bytes in, bytes out, flows counted by the heartbeats");
    let hex: Vec<String> = datagrams.iter().map(hex::encode).collect();
    println!("UPSTREAM-AMPHORA {}", agent.amphora_id);
    println!("UPSTREAM-EXPECT {expected}");
    println!("UPSTREAM-HEARTBEATS {}", hex.join(","));
}

/// On the host: the heartbeats the scenario received, through upstream's
/// health manager code (`tests/upstream/lvs_health_receive.py`, with the
/// Python of `UPSTREAM_PYTHON`): it reads the deltas the scenario sent,
/// counts the LVS listener (the amphora's health is recorded) and marks the
/// listener, pool and members as their states say.
fn upstream_reads_the_heartbeats(output: &str) {
    let Ok(python) = std::env::var("UPSTREAM_PYTHON") else {
        println!("NOT CHECKED: UPSTREAM_PYTHON is not set, upstream's health manager did not read the LVS heartbeats");
        return;
    };
    let line = |prefix: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
            .unwrap_or_else(|| panic!("no {prefix} line in the scenario's output"))
            .to_owned()
    };
    let amphora = line("UPSTREAM-AMPHORA ");
    let expected: serde_json::Value = serde_json::from_str(&line("UPSTREAM-EXPECT ")).expect("expected sums");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, hex) in line("UPSTREAM-HEARTBEATS ").split(',').enumerate() {
        let path = dir.path().join(format!("{i}.bin"));
        std::fs::write(&path, hex::decode(hex).expect("hex")).expect("write");
        files.push(path);
    }
    let db_lb = serde_json::json!({
        "id": LB, "enabled": true, "provisioning_status": "ACTIVE", "operating_status": "OFFLINE",
        "listeners": {UDP_LISTENER: {"id": UDP_LISTENER, "enabled": true, "protocol": "UDP", "operating_status": "OFFLINE"}},
        "pools": {POOL: {"id": POOL, "operating_status": "OFFLINE", "members": {
            MEMBER_1: {"id": MEMBER_1, "operating_status": "OFFLINE"},
            MEMBER_2: {"id": MEMBER_2, "operating_status": "OFFLINE"},
        }}},
    });
    let db_path = dir.path().join("db_lb.json");
    std::fs::write(&db_path, db_lb.to_string()).expect("write");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream/lvs_health_receive.py");
    let result = std::process::Command::new(&python)
        .arg(script)
        .arg(KEY)
        .arg(&db_path)
        .args(&files)
        .output()
        .expect("run upstream's python");
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let upstream: serde_json::Value = serde_json::from_slice(&result.stdout).expect("json");

    assert!(upstream["deltas"].as_array().expect("deltas").iter().all(|d| d == true), "read as deltas");
    let mut sums = serde_json::Map::new();
    for key in ["bytes_in", "bytes_out", "total_connections"] {
        let total: u64 = upstream["stats"]
            .as_array()
            .expect("stats")
            .iter()
            .flat_map(|per_datagram| per_datagram.as_array().expect("list"))
            .filter(|s| s["listener_id"] == UDP_LISTENER && s["amphora_id"] == amphora.as_str())
            .map(|s| s[key].as_u64().expect("count"))
            .sum();
        sums.insert(key.to_owned(), total.into());
    }
    assert_eq!(serde_json::Value::Object(sums), expected, "what upstream read from the heartbeats");
    assert_eq!(
        upstream["health_recorded"],
        amphora.as_str(),
        "upstream counted the LVS listener: the amphora is healthy"
    );
    let mut updates: Vec<(String, String, String)> = upstream["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| (u[0].as_str().expect("s").into(), u[1].as_str().expect("s").into(), u[2].as_str().expect("s").into()))
        .collect();
    updates.sort();
    let update = |repo: &str, id: &str, status: &str| (repo.to_owned(), id.to_owned(), status.to_owned());
    let mut wanted = vec![
        update("listener", UDP_LISTENER, "ONLINE"),
        update("member", MEMBER_1, "ONLINE"),
        update("member", MEMBER_2, "ERROR"),
        update("pool", POOL, "DEGRADED"),
        update("loadbalancer", LB, "DEGRADED"),
    ];
    wanted.sort();
    assert_eq!(updates, wanted, "the statuses upstream's health manager writes");
    println!("upstream's health manager read {} LVS heartbeats: {expected}", files.len());
}
