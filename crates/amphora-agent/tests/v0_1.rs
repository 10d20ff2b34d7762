//! The 0.1 API through the real binary: topology (with the 503 gate of a
//! transition), listeners as haproxy instances, certificates, plugging
//! without a body, and a load balancer created through 0.1 read back
//! through 1.0 and the appliance API.

mod common;

use std::net::Ipv4Addr;

use amphora_proto::{CertificateMd5, ListenerDetail, ListenerState, ListenerStatus, Message, Versions};
use amphora_testkit::capture::ArpListener;
use amphora_testkit::netns::{self, NsRuntime};
use amphora_testkit::traffic::serve_http;
use amphora_testkit::{Agent, AgentClient, wait};
use common::*;

const KEY: &str = include_str!("fixtures/rsa2048.key");
const CERT: &str = include_str!("fixtures/rsa2048.crt");

/// A configuration with the listener's pool: one member that answers and
/// one that does not, both health-checked.
fn checked_config(agent: &Agent) -> String {
    format!(
        "global\n    daemon\n    user nobody\n    stats socket {socket} mode 0666 level user\n    maxconn 1000\n\
         defaults\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         frontend {LISTENER}\n    bind 127.0.0.1:{FRONTEND_PORT}\n    mode http\n    default_backend pool-1:{LISTENER}\n\
         backend pool-1:{LISTENER}\n    mode http\n\
         \x20   server member-up 127.0.0.1:{BACKEND_PORT} check inter 100ms fall 1 rise 1\n\
         \x20   server member-down 127.0.0.1:9 check inter 100ms fall 1 rise 1\n",
        socket = agent.stats_socket(LB).display()
    )
}

fn backend(agent: &Agent) -> NsRuntime {
    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("bind");
        let _ = tx.send(());
        serve_http(listener, "v0.1 backend").await;
    });
    rx.recv_timeout(WAIT).expect("backend");
    ns
}

async fn create_through_0_1(agent: &Agent, client: &AgentClient) {
    let config = checked_config(agent);
    let reply = client.put(&format!("/v0.1/listeners/{LB}/haproxy"), config.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::ok());
    assert_eq!(reply.header("etag"), Some(amphora_testkit::md5_hex(config.as_bytes()).as_str()));
    let reply = client.put(&format!("/v0.1/listeners/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("OK", format!("Configuration file is valid\nhaproxy daemon for {LB} started"))
    );
}

#[tokio::test]
async fn listeners_with_pools_and_members_read_live() {
    let agent = agent();
    let _backend = backend(&agent);
    let client = agent.client();
    create_through_0_1(&agent, &client).await;

    let detail = wait::until("health checks to settle", WAIT, || async {
        let detail: ListenerDetail = client.get(&format!("/v0.1/listeners/{LB}")).await.json();
        (detail.pools.first().map(|p| p.status.as_str()) == Some("DEGRADED")).then_some(detail)
    })
    .await;
    assert_eq!(detail.status, ListenerState::Active);
    assert_eq!(detail.kind, "HTTP");
    assert_eq!(detail.pools.len(), 1);
    assert_eq!(detail.pools[0].uuid, "pool-1");
    let members: Vec<(String, String)> =
        detail.pools[0].members.iter().flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string()))).collect();
    assert_eq!(members, vec![("member-up".into(), "UP".into()), ("member-down".into(), "DOWN".into())]);

    // The same from 1.0, by listener id (upstream's get_listener_status).
    let by_listener: ListenerDetail = client.get(&format!("/1.0/listeners/{LISTENER}")).await.json();
    assert_eq!(by_listener.uuid, LISTENER);
    assert_eq!(by_listener.pools, detail.pools);

    let reply = client.get("/v0.1/listeners/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("Listener Not Found", "No listener with UUID: 00000000-0000-4000-8000-000000000000")
    );
    let all: Vec<ListenerStatus> = client.get("/v0.1/listeners").await.json();
    assert_eq!(all, vec![ListenerStatus { status: ListenerState::Active, uuid: LISTENER.into(), kind: "HTTP".into() }]);
}

#[tokio::test]
async fn listener_actions_config_and_deletion() {
    let agent = agent();
    let client = agent.client();
    let unknown = "00000000-0000-4000-8000-000000000000";
    for (method, path) in [
        ("PUT", format!("/v0.1/listeners/{unknown}/stop")),
        ("GET", format!("/v0.1/listeners/{unknown}/haproxy")),
        ("DELETE", format!("/v0.1/listeners/{unknown}")),
        ("PUT", format!("/v0.1/listeners/{unknown}/certificates/www.example.com.pem")),
    ] {
        let reply = client.request(method, &path, format!("{KEY}{CERT}")).await.expect("request");
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
        assert_eq!(
            reply.json::<Message>(),
            Message::with_details("Listener Not Found", format!("No listener with UUID: {unknown}"))
        );
    }

    create_through_0_1(&agent, &client).await;
    let stored = client.get(&format!("/v0.1/listeners/{LB}/haproxy")).await;
    assert_eq!(stored.text(), checked_config(&agent));
    let reply = client.put(&format!("/v0.1/listeners/{LB}/BAD_TEST_DATA"), "").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>(), Message::with_details("Invalid Request", "Unknown action: BAD_TEST_DATA"));
    let reply = client.put(&format!("/v0.1/listeners/{LB}/reload"), "").await;
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", format!("Listener {LB} reloaded")));
    let reply = client.put(&format!("/v0.1/listeners/{LB}/haproxy"), "BAD_LINE\n").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>().message, "Invalid request");

    // Certificates: 201 on upload, 404 for a missing one (also on delete).
    let path = format!("/v0.1/listeners/{LB}/certificates/www.example.com.pem");
    let pem = format!("{KEY}{CERT}");
    let reply = client.put(&path, pem.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let md5: CertificateMd5 = client.get(&path).await.json();
    assert_eq!(md5.md5sum, amphora_testkit::md5_hex(pem.as_bytes()));
    assert_eq!(client.put(&path, "junk").await.json::<Message>().message, "No certificate found");
    assert_eq!(client.delete(&path).await.status, 200);
    let reply = client.delete(&path).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("Certificate Not Found", "No certificate with file name: www.example.com.pem")
    );

    let reply = client.delete(&format!("/v0.1/listeners/{LB}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json::<Message>(), Message::ok());
    assert_eq!(client.delete(&format!("/v0.1/listeners/{LB}")).await.status, 404);
}

#[tokio::test]
async fn info_details_and_version_discovery() {
    let agent = agent();
    let client = agent.client();
    let info: serde_json::Value = client.get("/v0.1/info").await.json();
    assert_eq!(info["api_version"], "0.1");
    assert_eq!(info["uuid"], agent.amphora_id.as_str());
    let details: serde_json::Value = client.get("/v0.1/details").await.json();
    assert_eq!(details["api_version"], "0.1");
    assert_eq!(details["topology"], "SINGLE");
    assert_eq!(details["topology_status"], "OK");
    let versions: Versions = client.get("/").await.json();
    assert_eq!(
        versions,
        Versions { api_version: "1.0".into(), versions: vec!["0.1".into(), "1.0".into(), "appliance".into()] }
    );

    let only = builder().option("amphora_agent", "api_versions", "1.0").start();
    let client = only.client();
    let versions: Versions = client.get("/").await.json();
    assert_eq!(versions, Versions { api_version: "1.0".into(), versions: vec!["1.0".into()] });
    for path in ["/v0.1/info", "/status", "/instances"] {
        assert_eq!(client.get(path).await.status, 404, "{path} is not served");
    }
    assert_eq!(client.get("/1.0/info").await.status, 200);
}

/// `listeners` frontends on consecutive ports: a reload that takes a while.
fn large_config(agent: &Agent, listeners: usize) -> String {
    let mut text = format!(
        "global\n    daemon\n    user nobody\n    stats socket {socket} mode 0666 level user\n    maxconn 500\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n",
        socket = agent.stats_socket(LB).display()
    );
    for i in 0..listeners {
        text.push_str(&format!("frontend listener-{i}\n    bind 127.0.0.1:{}\n    default_backend pool\n", 20000 + i));
    }
    text.push_str(&format!("backend pool\n    server member 127.0.0.1:{BACKEND_PORT}\n"));
    text
}

#[tokio::test]
async fn a_topology_transition_holds_every_mutating_call() {
    let mut agent = agent();
    let client = agent.client();
    let topology: serde_json::Value = client.get("/v0.1/topology").await.json();
    assert_eq!(topology["topology"], "SINGLE");
    assert_eq!(topology["role"], "ACTIVE");
    assert_eq!(topology["ha_ip"], "");
    assert_eq!(topology["uuid"], agent.amphora_id.as_str());

    for (body, details) in [
        (r#"{"topology": "BAD_TEST_DATA"}"#, "Unknown topology: BAD_TEST_DATA"),
        (r#"{"topology": "ACTIVE-STANDBY", "role": "ACTIVE"}"#, "ACTIVE-STANDBY needs an ha_ip"),
        (
            r#"{"topology": "ACTIVE-STANDBY", "role": "BOSS", "ha_ip": "203.0.113.2", "secret": "s"}"#,
            "Unknown role: BOSS",
        ),
        (r#"{"topology": "ACTIVE-STANDBY", "role": "ACTIVE", "ha_ip": "nope", "secret": "s"}"#, "Invalid ha_ip: nope"),
        ("not json", "expected"),
    ] {
        let reply = client.post("/v0.1/topology", body).await;
        assert_eq!(reply.status, 400, "{body}");
        let message: Message = reply.json();
        assert_eq!(message.message, "Invalid request");
        assert!(message.details.expect("details").contains(details), "{body}");
    }

    // A running load balancer large enough that reloading it takes time.
    let reply = client.put(&format!("/v0.1/listeners/{LB}/haproxy"), large_config(&agent, 3000)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(client.put(&format!("/v0.1/listeners/{LB}/start"), "").await.status, 202);

    let set = r#"{"topology": "ACTIVE-STANDBY", "role": "STANDBY", "ha_ip": "203.0.113.2", "secret": "b20e06cf1a"}"#;
    let reply = client.post("/v0.1/topology", set).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    // Every API version refuses to change anything during the transition.
    for (method, path) in [
        ("PUT", format!("/v0.1/listeners/{LB}/reload")),
        ("PUT", format!("/1.0/loadbalancer/{LB}/reload")),
        ("DELETE", format!("/instances/{LB}")),
        ("POST", "/v0.1/topology".to_owned()),
    ] {
        let reply = client.request(method, &path, set).await.expect("request");
        assert_eq!(reply.status, 503, "{method} {path}");
        assert_eq!(reply.json::<Message>(), Message::new("Topology transition in progress"));
    }
    // Reading is fine.
    let topology: serde_json::Value = client.get("/v0.1/topology").await.json();
    assert_eq!(topology["topology_status"], "TOPOLOGY-CHANGE");
    wait::until("the transition to finish", WAIT, || async {
        let topology: serde_json::Value = client.get("/v0.1/topology").await.json();
        (topology["topology_status"] == "OK").then_some(())
    })
    .await;
    assert_eq!(client.put(&format!("/v0.1/listeners/{LB}/reload"), "").await.status, 202);
    // The same topology again changes nothing: 200, no transition.
    assert_eq!(client.post("/v0.1/topology", set).await.status, 200);

    // Persisted; the secret is never shown.
    agent.terminate();
    agent.restart();
    let reply = agent.client().get("/v0.1/topology").await;
    assert!(!reply.text().contains("b20e06cf1a"));
    let topology: serde_json::Value = reply.json();
    assert_eq!((topology["topology"].as_str(), topology["role"].as_str()), (Some("ACTIVE-STANDBY"), Some("STANDBY")));
    assert_eq!(topology["ha_ip"], "203.0.113.2");
    let details: serde_json::Value = agent.client().get("/v0.1/details").await.json();
    assert_eq!(details["topology"], "ACTIVE-STANDBY");
}

#[tokio::test]
async fn plugging_without_a_body_finds_the_one_unplugged_port() {
    let agent = builder().in_vm().start();
    let vm = agent.vm.clone().expect("vm");
    let client = agent.client();
    let reply = client.post("/v0.1/plug/vip/10.0.0.10", "").await;
    assert_eq!(reply.status, 404, "no port yet: {}", reply.text());
    assert_eq!(reply.json::<Message>().message, "No suitable network interface found");

    let hyp = netns::unique_name("amphyp");
    netns::create(&hyp);
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            netns::delete(&self.0);
        }
    }
    let _cleanup = Cleanup(hyp.clone());
    netns::veth(&hyp, "hv-a", &vm, "ens3", "02:00:00:00:03:01");
    netns::veth(&hyp, "hv-b", &vm, "ens4", "02:00:00:00:03:02");
    let reply = client.post("/v0.1/plug/vip/10.0.0.10", "").await;
    assert_eq!(reply.status, 400, "two candidates: {}", reply.text());
    let message: Message = reply.json();
    assert!(message.details.expect("details").contains("ens3"));

    // Once the management side configures one, the other is the port.
    netns::ip_in(&vm, &["addr", "add", "172.31.0.9/24", "dev", "ens4"]);
    let arp = ArpListener::open(&hyp, "hv-a");
    let reply = client.post("/v0.1/plug/vip/10.0.0.10", "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "VIP 10.0.0.10 plugged on interface eth1"));
    let garp =
        tokio::task::spawn_blocking(move || arp.wait_for_garp(Ipv4Addr::new(10, 0, 0, 10), WAIT)).await.expect("join");
    assert_eq!(garp, Some([2, 0, 0, 0, 3, 1]), "a gratuitous ARP for the VIP from the discovered port");
    let amphora_ns = agent.netns.clone().expect("amphora namespace");
    assert_eq!(addresses_of(&amphora_ns, "eth1"), vec!["10.0.0.10/32"]);
    assert_eq!(ip_json(&amphora_ns, &["link", "show", "dev", "eth1"])[0]["operstate"], "UP");

    netns::veth(&hyp, "hv-c", &vm, "ens5", "02:00:00:00:03:03");
    let reply = client.post("/v0.1/plug/network/", "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", "Plugged interface eth2"));
}

#[tokio::test]
async fn created_through_0_1_seen_through_1_0_and_the_appliance_api() {
    let agent = agent();
    let _backend = backend(&agent);
    let client = agent.client();
    create_through_0_1(&agent, &client).await;

    let stored = client.get(&format!("/1.0/loadbalancer/{LB}/haproxy")).await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.text(), checked_config(&agent));
    let listeners: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    assert_eq!(listeners[0].uuid, LISTENER);
    assert_eq!(listeners[0].status, ListenerState::Active);

    let instances = client.get("/instances").await;
    assert_eq!(instances.text(), format!("{LB}\n"));
    let service_status = client.get("/service_status").await.text();
    let pid = agent.haproxy_pid(LB).expect("pid");
    assert!(service_status.starts_with(LB), "{service_status}");
    assert!(service_status.contains(&format!("haproxy          running (pid {pid})")), "{service_status}");
    assert!(service_status.lines().next().expect("line").ends_with("OK"), "{service_status}");
}
