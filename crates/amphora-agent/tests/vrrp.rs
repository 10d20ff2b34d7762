//! ACTIVE_STANDBY with real keepalived: two amphorae (each an agent in a VM
//! namespace of its own) share a bridge in a hypervisor namespace with the
//! client and the backend. VRRP elects one, the VIP follows haproxy's
//! health, and a client keeps being served.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use amphora_proto::{Details, Message};
use amphora_testkit::Agent;
use amphora_testkit::netns::{self, NsRuntime};
use amphora_testkit::traffic::serve_http;
use amphora_testkit::wait;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIP: &str = "10.0.0.10";

struct Hypervisor {
    name: String,
    runtime: NsRuntime,
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        netns::delete(&self.name);
    }
}

struct Amphora {
    agent: Agent,
    name: &'static str,
    vrrp_ip: &'static str,
}

fn amphora(hyp: &str, name: &'static str, mac: &str, vrrp_ip: &'static str) -> Amphora {
    let agent = builder().in_vm().option("controller_worker", "loadbalancer_topology", "ACTIVE_STANDBY").start();
    let outer = format!("hv-{name}");
    netns::veth(hyp, &outer, agent.vm.as_deref().expect("vm"), "ens3", mac);
    netns::ip_in(hyp, &["link", "set", &outer, "master", "br0"]);
    Amphora { agent, name, vrrp_ip }
}

/// The keepalived configuration upstream's controller renders
/// (`keepalived_base.template`), with short timers.
fn keepalived_config(agent: &Agent, me_ip: &str, peer_ip: &str, priority: u32) -> String {
    format!(
        "vrrp_script check_script {{
    script {check}
    interval 1
    fall 1
    rise 1
}}

vrrp_instance lb_vrrp {{
    interface eth1
    virtual_router_id 42
    priority {priority}
    nopreempt
    accept
    garp_master_refresh 5
    garp_master_refresh_repeat 2
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass secret
    }}

    unicast_src_ip {me_ip}
    unicast_peer {{
        {peer_ip}
    }}

    virtual_ipaddress {{
        {VIP}
    }}

    virtual_ipaddress_excluded {{
    }}

    virtual_routes {{
        10.0.0.0/24 dev eth1 src {VIP} scope link table 1
        default via 10.0.0.1 dev eth1 onlink table 1
    }}

    virtual_rules {{
        from {VIP}/32 table 1 priority 100
    }}

    track_script {{
        check_script
    }}
}}
",
        check = agent.base_path().join("vrrp").join("check_script.sh").display(),
    )
}

fn haproxy_config(amphora: &Amphora) -> String {
    format!(
        "global\n    daemon\n    user nobody\n    stats socket {socket} mode 0666 level user\n    maxconn 1000\n\
         defaults\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend {LISTENER}\n    bind {VIP}:8080\n    mode http\n    http-response set-header X-Amphora {name}\n    default_backend pool\n\
         backend pool\n    mode http\n    server member-1 10.0.0.1:8081\n",
        socket = amphora.agent.stats_socket(LB).display(),
        name = amphora.name,
    )
}

fn holds_vip(amphora: &Amphora) -> bool {
    let namespace = amphora.agent.netns.as_deref().expect("namespace");
    let output =
        std::process::Command::new("ip").args(["-n", namespace, "-4", "-o", "addr", "show"]).output().expect("ip");
    String::from_utf8_lossy(&output.stdout).contains(&format!(" {VIP}/"))
}

/// Which amphora answered a request to the VIP, if any did.
async fn served_by(hyp: &Hypervisor) -> Option<String> {
    hyp.runtime
        .spawn(async {
            let vip: SocketAddr = format!("{VIP}:8080").parse().expect("addr");
            let mut stream = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(vip))
                .await
                .ok()?
                .ok()?;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await.ok()?;
            let mut response = String::new();
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response)).await.ok()?.ok()?;
            response
                .lines()
                .find_map(|l| l.strip_prefix("x-amphora: ").or_else(|| l.strip_prefix("X-Amphora: ")))
                .map(str::to_owned)
        })
        .await
        .ok()
        .flatten()
}

async fn set_up(amphora: &Amphora, peer: &Amphora, priority: u32) {
    let client = amphora.agent.client();
    let mac_body = |mac: &str| {
        format!(
            r#"{{"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "mac_address": "{mac}", "vrrp_ip": "{}"}}"#,
            amphora.vrrp_ip
        )
    };
    let mac = if amphora.name == "a" { "02:00:00:00:0a:01" } else { "02:00:00:00:0b:01" };
    let reply = client.post(&format!("/1.0/plug/vip/{VIP}"), mac_body(mac)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let reply = client.put(&upload_path(&amphora.agent, LB), haproxy_config(amphora)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "haproxy binds the VIP it does not hold yet: {}", reply.text());
    let config = keepalived_config(&amphora.agent, amphora.vrrp_ip, peer.vrrp_ip, priority);
    let reply = client.put("/1.0/vrrp/upload", config.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("etag"), Some(amphora_testkit::md5_hex(config.as_bytes()).as_str()));
    let reply = client.put("/1.0/vrrp/start", "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "keepalived started"));
}

#[tokio::test]
async fn the_vip_follows_haproxy_health() {
    let hyp_name = netns::unique_name("amphyp");
    netns::create(&hyp_name);
    netns::ip_in(&hyp_name, &["link", "add", "br0", "type", "bridge"]);
    netns::ip_in(&hyp_name, &["link", "set", "br0", "up"]);
    netns::ip_in(&hyp_name, &["addr", "add", "10.0.0.1/24", "dev", "br0"]);
    let hyp = Hypervisor { runtime: NsRuntime::new(&hyp_name), name: hyp_name };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    hyp.runtime.spawn(async move {
        let listener = tokio::net::TcpListener::bind("10.0.0.1:8081").await.expect("backend");
        let _ = ready_tx.send(());
        serve_http(listener, "backend").await;
    });
    ready_rx.await.expect("backend");

    let a = amphora(&hyp.name, "a", "02:00:00:00:0a:01", "10.0.0.11");
    let b = amphora(&hyp.name, "b", "02:00:00:00:0b:01", "10.0.0.12");
    set_up(&a, &b, 100).await;
    set_up(&b, &a, 90).await;

    // One master, holding the VIP alone.
    let master_name = wait::until("a VRRP master", WAIT, || async {
        match (holds_vip(&a), holds_vip(&b)) {
            (true, false) => Some("a"),
            (false, true) => Some("b"),
            _ => None,
        }
    })
    .await;
    let (master, backup) = if master_name == "a" { (&a, &b) } else { (&b, &a) };
    let served = wait::until("the VIP to serve", WAIT, || served_by(&hyp)).await;
    assert_eq!(served, master.name);

    let details: Details = master.agent.client().get("/1.0/details").await.json();
    assert_eq!(
        (details.topology.as_str(), details.vrrp_role.as_deref(), details.active),
        ("ACTIVE_STANDBY", Some("MASTER"), true)
    );
    let details: Details = backup.agent.client().get("/1.0/details").await.json();
    assert_eq!((details.vrrp_role.as_deref(), details.active), (Some("BACKUP"), false));
    let check = std::fs::read_to_string(master.agent.base_path().join("vrrp/check_scripts/haproxy_check_script.sh"))
        .expect("check");
    assert!(check.contains(&master.agent.stats_socket(LB).display().to_string()), "{check}");

    // Clients keep asking while the master's haproxy dies.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        let runtime = hyp.runtime.handle().clone();
        let standby = backup.name.to_owned();
        tokio::spawn(async move {
            let mut outage: Option<(Instant, Instant)> = None;
            let mut last_ok = Instant::now();
            let mut answered_by: Vec<String> = Vec::new();
            // Until the standby has answered this probe, or the test gives up.
            while !stop.load(Ordering::Relaxed) && answered_by.last() != Some(&standby) {
                let answer = runtime
                    .spawn(async {
                        let vip: SocketAddr = format!("{VIP}:8080").parse().expect("addr");
                        let mut stream =
                            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(vip))
                                .await
                                .ok()?
                                .ok()?;
                        stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await.ok()?;
                        let mut response = String::new();
                        tokio::time::timeout(Duration::from_secs(1), stream.read_to_string(&mut response))
                            .await
                            .ok()?
                            .ok()?;
                        response.lines().find_map(|l| l.strip_prefix("x-amphora: ")).map(str::to_owned)
                    })
                    .await
                    .ok()
                    .flatten();
                let now = Instant::now();
                if let Some(by) = answer {
                    if outage.is_none() && now - last_ok > Duration::from_millis(300) {
                        outage = Some((last_ok, now));
                    }
                    last_ok = now;
                    if answered_by.last() != Some(&by) {
                        answered_by.push(by);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (outage, answered_by)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    let pid = master.agent.haproxy_pid(LB).expect("pid");
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill haproxy");

    wait::until("the VIP to move to the standby", WAIT, || async {
        (holds_vip(backup) && !holds_vip(master)).then_some(())
    })
    .await;
    let moved_after = killed_at.elapsed();
    let (outage, answered_by) = match tokio::time::timeout(WAIT, probe).await {
        Ok(result) => result.expect("probe"),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            panic!("the standby never answered the probe");
        }
    };
    let logs = || {
        [&a, &b]
            .iter()
            .map(|x| {
                let log = std::fs::read_to_string(x.agent.base_path().join("vrrp/octavia-keepalived.log"))
                    .unwrap_or_default();
                let failure = std::fs::read_to_string(x.agent.base_path().join("vrrp/last-check-failure.log"))
                    .unwrap_or_default();
                let haproxy =
                    std::fs::read_to_string(x.agent.base_path().join(LB).join("haproxy.log")).unwrap_or_default();
                format!(
                    "---- keepalived {} ----\n{log}\nlast check failure: {failure}\nhaproxy: {haproxy}\nagent: {}\n",
                    x.name,
                    x.agent.logs()
                )
            })
            .collect::<String>()
    };
    assert_eq!(answered_by.first().map(String::as_str), Some(master.name), "{answered_by:?}\n{}", logs());
    assert_eq!(answered_by.last().map(String::as_str), Some(backup.name), "{answered_by:?}\n{}", logs());
    let unreachable = outage.map(|(from, to)| to - from).unwrap_or_default();
    eprintln!("VIP moved {moved_after:?} after haproxy was killed; unreachable for {unreachable:?}");

    let details: Details = backup.agent.client().get("/1.0/details").await.json();
    assert_eq!(details.vrrp_role.as_deref(), Some("MASTER"));
    // The agent restarted the dead haproxy; with nopreempt the VIP stays.
    wait::until("haproxy back on the old master", WAIT, || async {
        master
            .agent
            .haproxy_pid(LB)
            .filter(|p| *p != pid && nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), None).is_ok())
    })
    .await;
    assert!(holds_vip(backup));
}

#[tokio::test]
async fn vrrp_errors_answer_as_the_spec_says() {
    let agent = builder().start();
    let client = agent.client();
    let reply = client.put("/1.0/vrrp/BAD_TEST_DATA", "").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>(), Message::with_details("Invalid Request", "Unknown action: BAD_TEST_DATA"));

    let reply = client.put("/1.0/vrrp/upload", "vrrp_instance broken {\n    nonsense_keyword 1\n").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    let message: Message = reply.json();
    assert_eq!(message.message, "Failed to upload keepalived configuration.");
    assert!(!agent.base_path().join("vrrp/octavia-keepalived.conf").exists(), "nothing installed");

    let reply = client.put("/1.0/vrrp/start", "").await;
    assert_eq!(reply.status, 500);
    assert!(reply.json::<Message>().message.starts_with("Failed to start keepalived service"));
}

fn keepalived_pid(agent: &Agent) -> Option<i32> {
    std::fs::read_to_string(agent.base_path().join("vrrp/octavia-keepalived.pid")).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Gives `agent`'s namespace an `eth1` (10.0.0.11/24), uploads a VRRP
/// configuration for it (peer 10.0.0.12) and starts keepalived; its pid.
async fn start_keepalived(agent: &Agent) -> i32 {
    let ns = agent.netns.clone().expect("namespace");
    netns::ip_in(&ns, &["link", "add", "eth1", "type", "veth", "peer", "name", "eth9"]);
    netns::ip_in(&ns, &["addr", "add", "10.0.0.11/24", "dev", "eth1"]);
    netns::ip_in(&ns, &["link", "set", "eth1", "up"]);
    let client = agent.client();
    let config = keepalived_config(agent, "10.0.0.11", "10.0.0.12", 100);
    assert_eq!(client.put("/1.0/vrrp/upload", config).await.status, 200);
    assert_eq!(client.put("/1.0/vrrp/start", "").await.status, 202);
    keepalived_pid(agent).expect("pid")
}

#[tokio::test]
async fn keepalived_is_supervised_and_adopted() {
    let mut agent = builder().start();
    let pid = start_keepalived(&agent).await;
    let client = agent.client();
    assert!(alive(pid));
    // Starting what runs reloads it, as upstream.
    let reply = client.put("/1.0/vrrp/start", "").await;
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "keepalived reloaded"));
    assert_eq!(keepalived_pid(&agent), Some(pid));

    // An agent restart adopts it.
    agent.kill();
    assert!(alive(pid), "keepalived outlives the agent");
    agent.restart();
    assert!(agent.logs().contains("adopted running keepalived"), "{}", agent.logs());
    assert_eq!(keepalived_pid(&agent), Some(pid));

    // A crash is repaired.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let restarted = wait::until("keepalived to be restarted", WAIT, || async {
        keepalived_pid(&agent).filter(|p| *p != pid && alive(*p))
    })
    .await;

    // Stop means stop.
    let reply = agent.client().put("/1.0/vrrp/stop", "").await;
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "keepalived stopped"));
    wait::until("keepalived to exit", WAIT, || async { (!alive(restarted)).then_some(()) }).await;
}

#[tokio::test]
async fn dropping_the_harness_ends_keepalived_too() {
    let agent = builder().start();
    let pid = start_keepalived(&agent).await;
    let client = agent.client();
    assert!(alive(pid));
    drop(client);
    drop(agent);
    // SIGKILL is immediate; only the reaping of the orphan takes a moment.
    wait::until("keepalived to be gone", WAIT, || async { (!alive(pid)).then_some(()) }).await;
}

#[tokio::test]
async fn a_start_finding_keepalived_running_unsupervised_supervises_it() {
    let agent = builder().start();
    let ns = agent.netns.clone().expect("namespace");
    let pid = start_keepalived(&agent).await;
    let client = agent.client();
    // The agent's own command line for it, to run it again behind the
    // agent's back: what a start abandoned half-way used to leave.
    let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .expect("keepalived's command line")
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    assert_eq!(client.put("/1.0/vrrp/stop", "").await.status, 202);
    wait::until("keepalived to exit", WAIT, || async { (!alive(pid)).then_some(()) }).await;
    let mut by_hand = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(&cmdline)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run keepalived");
    let unsupervised =
        wait::until("the hand-started keepalived", WAIT, || async { keepalived_pid(&agent).filter(|p| alive(*p)) })
            .await;

    // Starting finds it running, reloads it, and now watches it.
    let reply = client.put("/1.0/vrrp/start", "").await;
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "keepalived reloaded"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(unsupervised), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let _ = by_hand.wait();
    let restarted = wait::until("keepalived to be restarted", WAIT, || async {
        keepalived_pid(&agent).filter(|p| *p != unsupervised && alive(*p))
    })
    .await;
    assert_eq!(client.put("/1.0/vrrp/stop", "").await.status, 202);
    wait::until("keepalived to exit", WAIT, || async { (!alive(restarted)).then_some(()) }).await;
}

/// keepalived's VRRP child outlives a killed parent for a moment (here: as
/// long as it is stopped), and a keepalived started meanwhile refuses to
/// run ("daemon is already running"). The supervisor's restart ends the
/// leftover child first.
#[tokio::test]
async fn a_child_left_by_a_killed_keepalived_does_not_block_its_restart() {
    let agent = builder().start();
    let parent = start_keepalived(&agent).await;
    let client = agent.client();
    let child_file = agent.base_path().join("vrrp/octavia-keepalived.vrrp.pid");
    let child: i32 = wait::until("keepalived's VRRP child", WAIT, || async {
        std::fs::read_to_string(&child_file).ok()?.trim().parse().ok().filter(|p| alive(*p))
    })
    .await;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(child), Signal::SIGSTOP).expect("stop the child");
    kill(Pid::from_raw(parent), Signal::SIGKILL).expect("kill keepalived");

    let restarted = wait::until("keepalived to be restarted", WAIT, || async {
        keepalived_pid(&agent).filter(|p| *p != parent && alive(*p))
    })
    .await;
    assert!(!alive(child), "the old child {child} is still there");
    assert_eq!(client.put("/1.0/vrrp/stop", "").await.status, 202);
    wait::until("keepalived to exit", WAIT, || async { (!alive(restarted)).then_some(()) }).await;
}
