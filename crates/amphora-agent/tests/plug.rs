//! Plugging networks, proven with real traffic. The agent runs in a "VM"
//! namespace of its own; a "hypervisor" namespace holds the other ends of
//! the ports (veth pairs with chosen MACs), a gateway, a remote client
//! address and the backend. The agent moves the ports into its amphora
//! namespace and configures them through netlink.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use amphora_proto::Message;
use amphora_testkit::Agent;
use amphora_testkit::capture::ArpListener;
use amphora_testkit::netns::{self, NsRuntime};
use amphora_testkit::traffic::serve_http;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIP_MAC: &str = "02:00:00:00:01:01";
const MEMBER_MAC: &str = "02:00:00:00:02:01";
/// An address of the hypervisor namespace outside every plugged subnet:
/// replies to it must follow the VIP's policy routing.
const REMOTE: &str = "192.168.77.2";

/// The hypervisor side of the test.
struct Hypervisor {
    name: String,
    runtime: NsRuntime,
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        netns::delete(&self.name);
    }
}

fn plugged_amphora() -> (Agent, Hypervisor) {
    let agent = builder().in_vm().start();
    let vm = agent.vm.clone().expect("vm");
    let hyp = netns::unique_name("amphyp");
    netns::create(&hyp);
    netns::veth(&hyp, "hv-vip", &vm, "ens3", VIP_MAC);
    netns::veth(&hyp, "hv-mem", &vm, "ens4", MEMBER_MAC);
    netns::ip_in(&hyp, &["addr", "add", "10.0.0.1/24", "dev", "hv-vip"]);
    netns::ip_in(&hyp, &["addr", "add", "fd00::1/64", "dev", "hv-vip", "nodad"]);
    netns::ip_in(&hyp, &["addr", "add", "10.1.0.1/24", "dev", "hv-mem"]);
    netns::ip_in(&hyp, &["addr", "add", &format!("{REMOTE}/32"), "dev", "lo"]);
    // Strict reverse-path filtering: a reply from the VIP that comes back
    // over the member network is dropped.
    netns::sysctl_in(&hyp, "net.ipv4.conf.all.rp_filter", "1");
    netns::sysctl_in(&hyp, "net.ipv4.conf.hv-mem.rp_filter", "1");
    let runtime = NsRuntime::new(&hyp);
    (agent, Hypervisor { name: hyp, runtime })
}

fn vip_body() -> String {
    format!(
        r#"{{"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "mac_address": "{VIP_MAC}",
            "vrrp_ip": "10.0.0.11", "mtu": 1450, "host_routes": [], "additional_vips": [], "is_sriov": false}}"#
    )
}

fn member_body(address: &str) -> String {
    format!(
        r#"{{"mac_address": "{MEMBER_MAC}", "mtu": 1500, "is_sriov": false,
            "fixed_ips": [{{"ip_address": "{address}", "subnet_cidr": "10.1.0.0/24", "gateway": null,
                            "host_routes": [{{"destination": "192.168.77.0/24", "nexthop": "10.1.0.1"}}]}}]}}"#
    )
}

/// A load balancer on the VIP, with the backend on the member network.
fn vip_config(agent: &Agent, bind: &str, backend: &str) -> String {
    format!(
        "global\n    daemon\n    user nobody\n    stats socket {socket} mode 0666 level user\n    maxconn 1000\n\
         defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend {LISTENER}\n    bind {bind}\n    mode http\n    default_backend pool\n\
         backend pool\n    mode http\n    server member-1 {backend}\n",
        socket = agent.stats_socket(LB).display(),
    )
}

/// One HTTP request to `target` from `source`, inside the hypervisor.
async fn request_from(hyp: &Hypervisor, source: IpAddr, target: SocketAddr) -> std::io::Result<String> {
    hyp.runtime
        .spawn(async move {
            let socket =
                if source.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(source, 0))?;
            let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(target))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").await?;
            let mut response = String::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out"))??;
            Ok(response)
        })
        .await
        .expect("join")
}

fn ip(raw: &str) -> IpAddr {
    raw.parse().expect("ip")
}
async fn start_backend(hyp: &Hypervisor, addr: &str) {
    let addr: SocketAddr = addr.parse().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    hyp.runtime.spawn(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("backend bind");
        let _ = tx.send(());
        serve_http(listener, "hello from the member network").await;
    });
    rx.await.expect("backend");
}

async fn plug_and_serve(agent: &Agent, hyp: &Hypervisor) {
    let client = agent.client();
    let reply = client.post("/1.0/plug/vip/10.0.0.10", vip_body()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let reply = client.post("/1.0/plug/network", member_body("10.1.0.5")).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    start_backend(hyp, "10.1.0.1:8081").await;
    assert_eq!(
        client.put(&upload_path(agent, LB), vip_config(agent, "10.0.0.10:8080", "10.1.0.1:8081")).await.status,
        202
    );
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
}

#[tokio::test]
async fn a_plugged_vip_and_member_network_carry_real_traffic() {
    let (agent, hyp) = plugged_amphora();
    let amphora_ns = agent.netns.clone().expect("amphora namespace");
    let client = agent.client();
    let arp = ArpListener::open(&hyp.name, "hv-vip");

    let reply = client.post("/1.0/plug/vip/10.0.0.10", vip_body()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "VIP 10.0.0.10 plugged on interface eth1"));
    let garp =
        tokio::task::spawn_blocking(move || arp.wait_for_garp(Ipv4Addr::new(10, 0, 0, 10), WAIT)).await.expect("join");
    assert_eq!(garp, Some([2, 0, 0, 0, 1, 1]), "a gratuitous ARP for the VIP from the VIP port");

    let reply = client.post("/1.0/plug/network", member_body("10.1.0.5")).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "Plugged interface eth2"));

    // The ports left the VM's namespace for the amphora namespace.
    assert_eq!(addresses_of(&amphora_ns, "eth1"), vec!["10.0.0.11/24", "10.0.0.10/32"]);
    assert_eq!(addresses_of(&amphora_ns, "eth2"), vec!["10.1.0.5/24"]);
    assert_eq!(ip_json(&amphora_ns, &["link", "show", "dev", "eth1"])[0]["mtu"], 1450);
    assert!(
        ip_json(agent.vm.as_deref().expect("vm"), &["link", "show"])
            .as_array()
            .expect("links")
            .iter()
            .all(|l| l["ifname"] != "ens3")
    );

    for (address, interface) in [("10.0.0.10", "eth1"), ("10.1.0.5", "eth2")] {
        let reply = client.get(&format!("/1.0/interface/{address}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json::<serde_json::Value>(), serde_json::json!({"message": "OK", "interface": interface}));
    }
    let reply = client.get("/1.0/interface/203.0.113.99").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json::<Message>().message, "Error interface not found for IP address");
    let reply = client.get("/1.0/interface/10.0.0.999").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>().message, "Invalid IP address");

    // The management address lives in the VM's own namespace.
    let vm = agent.vm.clone().expect("vm");
    netns::ip_in(&vm, &["link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt1"]);
    netns::ip_in(&vm, &["addr", "add", "172.31.0.5/24", "dev", "mgmt0"]);
    let reply = client.get("/1.0/interface/172.31.0.5").await;
    assert_eq!(reply.json::<serde_json::Value>()["interface"], "mgmt0");

    start_backend(&hyp, "10.1.0.1:8081").await;
    assert_eq!(
        client.put(&upload_path(&agent, LB), vip_config(&agent, "10.0.0.10:8080", "10.1.0.1:8081")).await.status,
        202
    );
    let arp = ArpListener::open(&hyp.name, "hv-vip");
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let garp =
        tokio::task::spawn_blocking(move || arp.wait_for_garp(Ipv4Addr::new(10, 0, 0, 10), WAIT)).await.expect("join");
    assert!(garp.is_some(), "haproxy's start is announced with a gratuitous ARP for its VIP");

    let vip = SocketAddr::from(([10, 0, 0, 10], 8080));
    let response = request_from(&hyp, ip("10.0.0.1"), vip).await.expect("from the VIP subnet");
    assert!(response.ends_with("hello from the member network"), "{response}");
    // Replies to a remote address follow the VIP's routing table: through
    // the gateway on eth1, not the member network's host route.
    let response = request_from(&hyp, ip(REMOTE), vip).await.expect("from beyond the gateway");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let reply = client.post("/1.0/plug/vip/10.0.0.10", vip_body()).await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json::<Message>().message, "Interface already exists");

    // Plugging a known port again updates its addresses.
    let reply = client.post("/1.0/plug/network", member_body("10.1.0.6")).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "Updated existing interface eth2"));
    assert_eq!(addresses_of(&amphora_ns, "eth2"), vec!["10.1.0.6/24"]);
}

#[tokio::test]
async fn another_subnet_on_the_vip_port_updates_it() {
    let (agent, _hyp) = plugged_amphora();
    let client = agent.client();
    assert_eq!(client.post("/1.0/plug/vip/10.0.0.10", vip_body()).await.status, 202);
    // The controller's post_network_plug for the VIP port itself.
    let body = format!(
        r#"{{"mac_address": "{VIP_MAC}", "mtu": 1450,
            "fixed_ips": [{{"ip_address": "10.5.0.7", "subnet_cidr": "10.5.0.0/24", "gateway": null, "host_routes": []}}],
            "vip_net_info": {{"vip": "10.0.0.10", "subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.1",
                              "mac_address": "{VIP_MAC}", "vrrp_ip": "10.0.0.11", "mtu": 1450, "host_routes": [],
                              "additional_vips": [], "is_sriov": false}}}}"#
    );
    let reply = client.post("/1.0/plug/network", body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "Updated existing interface eth1"));
    let amphora_ns = agent.netns.clone().expect("namespace");
    assert_eq!(addresses_of(&amphora_ns, "eth1"), vec!["10.0.0.11/24", "10.0.0.10/32", "10.5.0.7/24"]);
}

#[tokio::test]
async fn firewall_rules_drop_what_they_should() {
    let (agent, hyp) = plugged_amphora();
    plug_and_serve(&agent, &hyp).await;
    let client = agent.client();
    let vip = SocketAddr::from(([10, 0, 0, 10], 8080));
    request_from(&hyp, ip(REMOTE), vip).await.expect("open before any rules");

    let rules = r#"[{"protocol": "TCP", "cidr": "10.0.0.0/24", "port": 8080}, {"protocol": "VRRP", "cidr": null, "port": 112}]"#;
    let reply = client.put("/1.0/interface/10.0.0.10/rules", rules).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::ok());
    request_from(&hyp, ip("10.0.0.1"), vip).await.expect("allowed source");
    let refused = request_from(&hyp, ip(REMOTE), vip).await;
    assert!(refused.is_err(), "a source outside the allowed CIDR is dropped: {refused:?}");
    let blocked_port = request_from(&hyp, ip("10.0.0.1"), SocketAddr::from(([10, 0, 0, 10], 8081))).await;
    assert!(blocked_port.is_err(), "an unlisted port is dropped");

    let reply =
        client.put("/1.0/interface/10.0.0.10/rules", r#"[{"protocol": "TCP", "cidr": null, "port": 8080}]"#).await;
    assert_eq!(reply.status, 200);
    request_from(&hyp, ip(REMOTE), vip).await.expect("any source again");

    for (body, status) in [
        (r#"[{"protocol": "TCP", "cidr": "10.0.0.0/33", "port": 8080}]"#, 400),
        (r#"[{"protocol": "ICMP", "cidr": null, "port": 1}]"#, 400),
        (r#"{"protocol": "TCP"}"#, 400),
        ("not json", 400),
    ] {
        let reply = client.put("/1.0/interface/10.0.0.10/rules", body).await;
        assert_eq!(reply.status, status, "{body}");
        assert_eq!(reply.json::<Message>().message, "Invalid rules information");
    }
    // The previous rules still stand.
    request_from(&hyp, ip(REMOTE), vip).await.expect("rules unchanged by rejected sets");
    assert_eq!(client.put("/1.0/interface/203.0.113.1/rules", "[]").await.status, 404);
}

#[tokio::test]
async fn interfaces_come_back_after_a_reboot() {
    let (mut agent, hyp) = plugged_amphora();
    plug_and_serve(&agent, &hyp).await;
    let vip = SocketAddr::from(([10, 0, 0, 10], 8080));
    request_from(&hyp, ip(REMOTE), vip).await.expect("before the reboot");
    let amphora_ns = agent.netns.clone().expect("amphora namespace");
    let vm = agent.vm.clone().expect("vm");

    // The reboot: the agent and haproxy die, the ports come back in the
    // VM's namespace under new names, the amphora namespace is gone.
    agent.kill();
    let pid = agent.haproxy_pid(LB).expect("pid");
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    netns::ip_in(&amphora_ns, &["link", "set", "eth1", "netns", &vm, "name", "ens9"]);
    netns::ip_in(&amphora_ns, &["link", "set", "eth2", "netns", &vm, "name", "ens10"]);
    netns::delete(&amphora_ns);

    agent.restart();
    let response = amphora_testkit::wait::until("traffic through the restored amphora", WAIT, || async {
        request_from(&hyp, ip(REMOTE), vip).await.ok()
    })
    .await;
    assert!(response.ends_with("hello from the member network"), "{response}");
    assert_eq!(addresses_of(&amphora_ns, "eth1"), vec!["10.0.0.11/24", "10.0.0.10/32"]);
    assert!(agent.logs().contains("interface restored"), "{}", agent.logs());
}

#[tokio::test]
async fn a_vanished_interface_does_not_stop_start_up() {
    let (mut agent, hyp) = plugged_amphora();
    let client = agent.client();
    assert_eq!(client.post("/1.0/plug/vip/10.0.0.10", vip_body()).await.status, 202);
    agent.kill();
    // The port is gone for good (detached by Nova).
    netns::delete(agent.netns.as_deref().expect("amphora namespace"));
    drop(hyp);
    agent.restart();
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    assert!(agent.logs().contains("recorded interface is gone"), "{}", agent.logs());
}

#[tokio::test]
async fn an_ipv6_vip_serves_traffic() {
    let (agent, hyp) = plugged_amphora();
    let client = agent.client();
    let body = format!(
        r#"{{"subnet_cidr": "fd00::/64", "gateway": "fd00::1", "mac_address": "{VIP_MAC}", "vrrp_ip": "fd00::11"}}"#
    );
    let reply = client.post("/1.0/plug/vip/fd00::10", body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(client.post("/1.0/plug/network", member_body("10.1.0.5")).await.status, 202);
    start_backend(&hyp, "10.1.0.1:8081").await;
    assert_eq!(
        client.put(&upload_path(&agent, LB), vip_config(&agent, "fd00::10:8080", "10.1.0.1:8081")).await.status,
        202
    );
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let vip: SocketAddr = "[fd00::10]:8080".parse().expect("addr");
    let response = amphora_testkit::wait::until("IPv6 traffic", WAIT, || async {
        request_from(&hyp, ip("fd00::1"), vip).await.ok()
    })
    .await;
    assert!(response.ends_with("hello from the member network"), "{response}");
    let reply = client.get("/1.0/interface/fd00:0:0:0:0:0:0:10").await;
    assert_eq!(reply.json::<serde_json::Value>()["interface"], "eth1");
}

#[tokio::test]
async fn hostile_plug_requests_are_refused_clearly() {
    let (agent, _hyp) = plugged_amphora();
    let client = agent.client();
    let routes: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"destination": "10.{}.{}.0/24", "nexthop": "10.0.0.1"}}"#, i / 256 % 256, i % 256))
        .collect();
    for (vip, body, status, message) in [
        (
            "10.0.0.10",
            r#"{"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "mac_address": "02:00:00:00:01"}"#.to_owned(),
            400,
            "Invalid MAC address",
        ),
        (
            "10.0.0.10",
            format!(r#"{{"subnet_cidr": "fd00::/64", "mac_address": "{VIP_MAC}"}}"#),
            400,
            "Invalid subnet information",
        ),
        (
            "10.0.0.10",
            format!(r#"{{"subnet_cidr": "10.9.0.0/24", "mac_address": "{VIP_MAC}"}}"#),
            400,
            "Invalid subnet information",
        ),
        ("not-an-ip", format!(r#"{{"subnet_cidr": "10.0.0.0/24", "mac_address": "{VIP_MAC}"}}"#), 400, "Invalid VIP"),
        (
            "10.0.0.10",
            format!(r#"{{"subnet_cidr": "10.0.0.0/24", "mac_address": "{VIP_MAC}", "vrrp_ip": "fd00::1"}}"#),
            400,
            "Invalid VRRP Address",
        ),
        (
            "10.0.0.10",
            format!(
                r#"{{"subnet_cidr": "10.0.0.0/24", "mac_address": "{VIP_MAC}", "host_routes": [{}]}}"#,
                routes.join(",")
            ),
            400,
            "Invalid subnet information",
        ),
        ("10.0.0.10", "not json".to_owned(), 400, "Invalid subnet information"),
        (
            "10.0.0.10",
            r#"{"subnet_cidr": "10.0.0.0/24", "mac_address": "02:00:00:00:09:09"}"#.to_owned(),
            404,
            "No suitable network interface found",
        ),
    ] {
        let reply = client.post(&format!("/1.0/plug/vip/{vip}"), body.clone()).await;
        assert_eq!(reply.status, status, "{}: {}", &body[..body.len().min(80)], reply.text());
        let answer: Message = reply.json();
        assert_eq!(answer.message, message);
        if status == 404 {
            // Upstream's controller retries on exactly this text in details.
            assert!(answer.details.expect("details").contains("No suitable network interface found"));
        }
    }
    let reply = client
        .post(
            "/1.0/plug/network",
            r#"{"mac_address": "02:00:00:00:02:01", "fixed_ips": [{"ip_address": "10.1.0.300"}]}"#,
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>().message, "Invalid network port");
    // Nothing was plugged by any of this.
    assert!(
        ip_json(agent.netns.as_deref().expect("ns"), &["link", "show"])
            .as_array()
            .expect("links")
            .iter()
            .all(|l| l["ifname"] == "lo")
    );
}
