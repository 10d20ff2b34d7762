//! Clients that give up before the answer (a controller's read timeout):
//! the operation they asked for still completes, or never starts, and a
//! repeated call finds it done. A gated haproxy wrapper holds a start or a
//! configuration check so the client can leave while the operation is
//! provably in progress.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use amphora_proto::{ListenerState, ListenerStatus, Message};
use amphora_testkit::abandon::{Ending, RawRequest};
use amphora_testkit::agent::Agent;
use amphora_testkit::gate::{GatedHaproxy, Stage};
use amphora_testkit::netns::{self, NsRuntime};
use amphora_testkit::traffic::{get_once, serve_http};
use amphora_testkit::{md5_hex, wait};
use common::*;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Where the agent records plugged interfaces (upstream's layout).
const INTERFACES_DIR: &str = "interfaces";
const OTHER_LISTENER: &str = "7d1c2e3f-4a5b-4c6d-8e7f-901234567890";

fn gated_agent(gate: &GatedHaproxy) -> Agent {
    builder().option("haproxy_amphora", "haproxy_cmd", &gate.command().display().to_string()).start()
}

fn start_path() -> String {
    format!("/1.0/loadbalancer/{LB}/start")
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// haproxy masters of this agent: its processes whose parent is not one of
/// them (workers are children of their master).
fn haproxy_masters(agent: &Agent) -> Vec<i32> {
    let processes: Vec<i32> = agent.leftover_processes().iter().map(|p| p.as_raw()).collect();
    processes
        .iter()
        .copied()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            comm.trim() == "haproxy" && parent.is_some_and(|parent| !processes.contains(&parent))
        })
        .collect()
}

/// Waits until the agent's haproxy masters are exactly `expected`. A
/// single look is not enough: once its worker is ready, haproxy's master
/// re-executes itself (to drop the parsed configuration), and while the
/// kernel swaps its image its command line reads empty, so a snapshot taken
/// then misses it. Two masters, or none, still time out here.
async fn wait_for_masters(agent: &Agent, expected: &[i32], what: &str) {
    wait::until(&format!("{what}: haproxy masters {expected:?}"), WAIT, || async {
        (haproxy_masters(agent) == expected).then_some(())
    })
    .await
}

/// A backend inside the agent's namespace, and a runtime there to reach
/// the frontend.
fn namespace_with_backend(agent: &Agent) -> NsRuntime {
    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("backend bind");
        ready_tx.send(()).expect("ready");
        serve_http(listener, "hello from the backend").await;
    });
    ready_rx.recv_timeout(WAIT).expect("backend ready");
    ns
}

async fn wait_until_served(ns: &NsRuntime, what: &str) {
    let frontend = SocketAddr::from(([127, 0, 0, 1], FRONTEND_PORT));
    wait::until(what, WAIT, || async {
        match ns.spawn(get_once(frontend)).await.expect("join") {
            Ok(response) if response.status == 200 && response.body == "hello from the backend" => Some(()),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn a_start_abandoned_by_its_client_runs_haproxy_under_supervision() {
    let gate = GatedHaproxy::new();
    let agent = gated_agent(&gate);
    let ns = namespace_with_backend(&agent);
    let client = agent.client();
    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());

    gate.hold(Stage::Start);
    let request = RawRequest::send(&agent, "PUT", &start_path(), b"", None).await.expect("send the start");
    gate.wait_entered(Stage::Start, WAIT).await;
    assert_eq!(request.abandon().await, Ending::HungUp, "the client left while haproxy was starting");
    gate.open(Stage::Start, WAIT).await;

    wait_until_served(&ns, "the abandoned start to serve traffic").await;
    // Serving is not finished: the start still waits to see the master
    // alive (its command line reads empty while it re-executes itself), and
    // a master killed before that is a start that failed, not one to
    // supervise.
    wait::until("the abandoned start to finish", WAIT, || async {
        agent.logs().contains("haproxy started").then_some(())
    })
    .await;
    let pid =
        wait::until("the master to record its pid", WAIT, || async { agent.haproxy_pid(LB).filter(|p| alive(*p)) })
            .await;
    wait_for_masters(&agent, &[pid], "one haproxy master for the load balancer").await;
    assert_supervised(&agent, &ns, pid).await;

    // Starting it again is a success that changes nothing.
    let running = agent.haproxy_pid(LB).expect("pid");
    let reply = client.put(&start_path(), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(agent.haproxy_pid(LB), Some(running));
    wait_for_masters(&agent, &[running], "still the one master").await;
    let listeners: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].status, ListenerState::Active);
}

#[test]
fn the_agent_finishes_an_abandoned_start_before_it_exits() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let gate = GatedHaproxy::new();
    let mut agent = gated_agent(&gate);
    runtime.block_on(async {
        let reply = agent.client().put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        gate.hold(Stage::Start);
        let request = RawRequest::send(&agent, "PUT", &start_path(), b"", None).await.expect("send the start");
        gate.wait_entered(Stage::Start, WAIT).await;
        assert_eq!(request.abandon().await, Ending::HungUp, "the client left while haproxy was starting");
    });
    let addr = agent.addr;
    let status = std::thread::scope(|scope| {
        let exiting = scope.spawn(|| agent.terminate());
        // It has the signal once it stops listening; the start is still held.
        wait::until_blocking("the agent to stop listening", WAIT, || {
            std::net::TcpStream::connect(addr).is_err().then_some(())
        });
        assert!(!exiting.is_finished(), "the agent exited with a start in progress");
        runtime.block_on(gate.open(Stage::Start, WAIT));
        exiting.join().expect("terminate")
    });
    assert!(status.success(), "{status}");
    let logs = agent.logs();
    let started = logs.find("haproxy started").expect("the start finished before the exit");
    let stopping = logs.find("amphora agent stopping").expect("the agent's exit is logged");
    assert!(started < stopping, "{logs}");
    let pid = agent.haproxy_pid(LB).expect("pid");
    assert!(alive(pid), "haproxy outlives the agent");
}

/// Kills haproxy's master `pid` and its workers; the supervisor must bring
/// a new one back, serving.
async fn assert_supervised(agent: &Agent, ns: &NsRuntime, pid: i32) {
    killpg(Pid::from_raw(pid), Signal::SIGKILL).expect("kill haproxy");
    let restarted = wait::until("the supervisor to restart haproxy", WAIT, || async {
        agent.haproxy_pid(LB).filter(|p| *p != pid && alive(*p))
    })
    .await;
    wait_until_served(ns, "the restarted haproxy to serve traffic").await;
    wait_for_masters(agent, &[restarted], "only the restarted master").await;
}

#[tokio::test]
async fn a_start_finding_haproxy_running_unsupervised_supervises_it() {
    let agent = agent();
    let ns = namespace_with_backend(&agent);
    let client = agent.client();
    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(client.put(&start_path(), "").await.status, 202);
    let pid = agent.haproxy_pid(LB).expect("pid");
    // The agent's own command line for it, to run it again behind the
    // agent's back: what an abandoned start used to leave.
    let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .expect("haproxy's command line")
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/stop"), "").await.status, 202);
    // The master has exited; its workers may take a moment longer.
    wait::until("every haproxy process to exit", WAIT, || async { haproxy_masters(&agent).is_empty().then_some(()) })
        .await;
    let namespace = agent.netns.as_deref().expect("namespace");
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", namespace])
        .args(&cmdline)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run haproxy");
    assert!(status.success(), "haproxy started by hand: {status}");
    let unsupervised =
        wait::until("the hand-started master", WAIT, || async { agent.haproxy_pid(LB).filter(|p| alive(*p)) }).await;
    wait_until_served(&ns, "the hand-started haproxy to serve").await;

    // Starting finds it running, keeps it, and now watches it.
    let reply = client.put(&start_path(), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    wait_for_masters(&agent, &[unsupervised], "the hand-started master kept").await;
    assert_supervised(&agent, &ns, unsupervised).await;
}

/// The stored configuration, as the agent serves it and as it is on disk,
/// at one moment: the file is read before and after the request, and the
/// reading is taken again when the two differ (an installation landed
/// in between, so the request may have seen either file).
async fn stored(agent: &Agent) -> (u16, Option<String>, Option<Vec<u8>>) {
    let path = agent.base_path().join(LB).join("haproxy.cfg");
    wait::until("a reading of the stored configuration that no installation straddles", WAIT, || async {
        let on_disk = std::fs::read(&path).ok();
        let reply = agent.client().get(&format!("/1.0/loadbalancer/{LB}/haproxy")).await;
        (std::fs::read(&path).ok() == on_disk).then(|| (reply.status, reply.header("etag").map(str::to_owned), on_disk))
    })
    .await
}

async fn listener_ids(agent: &Agent) -> BTreeSet<String> {
    let listeners: Vec<ListenerStatus> = agent.client().get("/1.0/listeners").await.json();
    listeners.into_iter().map(|l| l.uuid).collect()
}

/// Frontend names of a configuration, read independently of the agent.
fn frontends(config: &str) -> BTreeSet<String> {
    config.lines().filter_map(|l| l.strip_prefix("frontend ")).map(|name| name.trim().to_owned()).collect()
}

/// A valid configuration of a few hundred kilobytes: many comment lines.
fn large_config(agent: &Agent, listener: &str) -> String {
    let mut config = lb_config(agent, LB, listener, 2);
    for i in 0..8000 {
        config.push_str(&format!("# padding line {i:05} so the upload takes several writes\n"));
    }
    config
}

#[tokio::test]
async fn a_config_upload_cut_mid_body_changes_nothing() {
    let agent = agent();
    let client = agent.client();
    let first = lb_config(&agent, LB, LISTENER, 1);
    assert_eq!(client.put(&upload_path(&agent, LB), first.clone()).await.status, 202);
    let before = stored(&agent).await;
    assert_eq!(before, (200, Some(md5_hex(first.as_bytes())), Some(first.clone().into_bytes())));

    let second = large_config(&agent, OTHER_LISTENER);
    let half = second.len() / 2;
    let request = RawRequest::send(&agent, "PUT", &upload_path(&agent, LB), second.as_bytes(), Some(half))
        .await
        .expect("send half the upload");
    let ending = request.abandon().await;
    assert!(ending.status().is_none_or(|s| s >= 400), "a cut upload was accepted: {ending:?}");

    assert_eq!(stored(&agent).await, before);
    assert_eq!(listener_ids(&agent).await, frontends(&first));
    assert!(!agent.base_path().join(LB).join("haproxy.cfg.new").exists(), "nothing was staged");
    // The agent is none the worse: the full upload succeeds.
    let reply = client.put(&upload_path(&agent, LB), second.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(stored(&agent).await, (200, Some(md5_hex(second.as_bytes())), Some(second.into_bytes())));
}

#[tokio::test]
async fn a_config_upload_abandoned_during_its_check_is_stored_whole() {
    let gate = GatedHaproxy::new();
    let agent = gated_agent(&gate);
    let client = agent.client();
    let first = lb_config(&agent, LB, LISTENER, 1);
    assert_eq!(client.put(&upload_path(&agent, LB), first.clone()).await.status, 202);
    let before = stored(&agent).await;

    let second = large_config(&agent, OTHER_LISTENER);
    gate.hold(Stage::Check);
    let request = RawRequest::send(&agent, "PUT", &upload_path(&agent, LB), second.as_bytes(), None)
        .await
        .expect("send the upload");
    gate.wait_entered(Stage::Check, WAIT).await;
    assert_eq!(request.abandon().await, Ending::HungUp, "the client left while the configuration was checked");

    // While the check runs, the stored configuration is the old one, whole.
    assert_eq!(stored(&agent).await, before);
    assert_eq!(listener_ids(&agent).await, frontends(&first));

    gate.open(Stage::Check, WAIT).await;
    let expected = (200, Some(md5_hex(second.as_bytes())), Some(second.clone().into_bytes()));
    wait::until("the abandoned upload to be stored", WAIT, || async {
        let now = stored(&agent).await;
        if now == before {
            return None;
        }
        // Never anything in between.
        assert_eq!(now, expected, "the stored configuration is neither the old one nor the new one");
        Some(())
    })
    .await;
    assert_eq!(listener_ids(&agent).await, frontends(&second));
    assert!(!agent.base_path().join(LB).join("haproxy.cfg.new").exists(), "nothing left staged");

    // Uploading it again answers as usual.
    let reply = client.put(&upload_path(&agent, LB), second.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.header("etag"), Some(md5_hex(second.as_bytes()).as_str()));
}

const VIP_MAC: &str = "02:00:00:00:01:01";
const MEMBER_MAC: &str = "02:00:00:00:02:01";

/// The hypervisor side: the other ends of the ports.
struct Hypervisor {
    name: String,
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        netns::delete(&self.name);
    }
}

fn amphora_with_ports() -> (Agent, Hypervisor) {
    let agent = builder().in_vm().start();
    let vm = agent.vm.clone().expect("vm");
    let hyp = Hypervisor { name: netns::unique_name("amphyp") };
    netns::create(&hyp.name);
    netns::veth(&hyp.name, "hv-vip", &vm, "ens3", VIP_MAC);
    netns::veth(&hyp.name, "hv-mem", &vm, "ens4", MEMBER_MAC);
    (agent, hyp)
}

fn vip_body() -> String {
    format!(
        r#"{{"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "mac_address": "{VIP_MAC}",
            "vrrp_ip": "10.0.0.11", "mtu": 1450, "host_routes": [], "additional_vips": [], "is_sriov": false}}"#
    )
}

fn member_body() -> String {
    format!(
        r#"{{"mac_address": "{MEMBER_MAC}", "mtu": 1400, "is_sriov": false,
            "fixed_ips": [{{"ip_address": "10.1.0.5", "subnet_cidr": "10.1.0.0/24", "gateway": null,
                            "host_routes": []}}]}}"#
    )
}

/// Names of the links of a namespace.
fn links(namespace: &str) -> Vec<String> {
    ip_json(namespace, &["link", "show"])
        .as_array()
        .map(|links| links.iter().filter_map(|l| l["ifname"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// An interface of the amphora namespace configured as asked: up, its
/// MTU, its addresses, and its definition recorded for a reboot.
fn fully_configured(agent: &Agent, name: &str, mtu: u64, addresses: &[&str]) -> bool {
    let amphora = agent.netns.as_deref().expect("amphora namespace");
    if !links(amphora).iter().any(|l| l == name) {
        return false;
    }
    let link = &ip_json(amphora, &["link", "show", "dev", name])[0];
    let up = link["flags"].as_array().is_some_and(|f| f.iter().any(|f| f == "UP"));
    let recorded = agent.base_path().join(INTERFACES_DIR).join(format!("{name}.json")).is_file();
    up && link["mtu"] == mtu && addresses_of(amphora, name) == addresses && recorded
}

/// Sends a plug and leaves as soon as the request is out: the agent sees
/// the client gone while it is plugging (or, if it is quicker, after).
async fn abandoned_plug(agent: &Agent, path: &str, body: &str) -> Ending {
    let request = RawRequest::send(agent, "POST", path, body.as_bytes(), None).await.expect("send the plug");
    request.abandon().await
}

#[tokio::test]
async fn plugs_abandoned_by_their_client_complete_and_can_be_repeated() {
    let (agent, _hyp) = amphora_with_ports();
    let vm = agent.vm.clone().expect("vm");

    let ending = abandoned_plug(&agent, "/1.0/plug/vip/10.0.0.10", &vip_body()).await;
    assert!(ending.status().is_none_or(|s| s == 202), "{ending:?}");
    wait::until("the abandoned VIP plug to complete", WAIT, || async {
        fully_configured(&agent, "eth1", 1450, &["10.0.0.11/24", "10.0.0.10/32"]).then_some(())
    })
    .await;
    assert!(!links(&vm).contains(&"ens3".to_owned()), "the port left the VM's namespace");

    let ending = abandoned_plug(&agent, "/1.0/plug/network", &member_body()).await;
    assert!(ending.status().is_none_or(|s| s == 202), "{ending:?}");
    wait::until("the abandoned member plug to complete", WAIT, || async {
        fully_configured(&agent, "eth2", 1400, &["10.1.0.5/24"]).then_some(())
    })
    .await;
    assert!(!links(&vm).contains(&"ens4".to_owned()), "the port left the VM's namespace");

    // Repeating them: the VIP is found plugged (upstream's controller takes
    // this 409 as done), the member network is updated in place.
    let client = agent.client();
    let reply = client.post("/1.0/plug/vip/10.0.0.10", vip_body()).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json::<Message>().message, "Interface already exists");
    let reply = client.post("/1.0/plug/network", member_body()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "Updated existing interface eth2"));
    assert!(fully_configured(&agent, "eth1", 1450, &["10.0.0.11/24", "10.0.0.10/32"]));
    assert!(fully_configured(&agent, "eth2", 1400, &["10.1.0.5/24"]));
}
