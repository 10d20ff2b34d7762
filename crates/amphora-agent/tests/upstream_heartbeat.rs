//! Our heartbeats through upstream Octavia's own receiving code: its
//! decoder (`status_message.unwrap_envelope`) and its statistics update
//! (`heartbeat_udp.update_stats`). Needs upstream's `octavia` package:
//! `scripts/test.sh` creates a virtualenv and sets UPSTREAM_PYTHON.

mod common;

use std::net::SocketAddr;

use amphora_proto::heartbeat::{self, Heartbeat};
use amphora_testkit::netns::NsRuntime;
use amphora_testkit::traffic::{get_once, serve_http};
use common::*;
use tokio::net::UdpSocket;

fn upstream_python() -> String {
    std::env::var("UPSTREAM_PYTHON").expect("UPSTREAM_PYTHON must name a python with upstream octavia installed")
}

#[tokio::test]
#[ignore = "needs upstream octavia; scripts/test.sh runs it with UPSTREAM_PYTHON set"]
async fn upstream_decodes_our_heartbeats_and_reads_their_statistics() {
    let python = upstream_python();
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent = builder()
        .option("health_manager", "controller_ip_port_list", &socket.local_addr().expect("addr").to_string())
        .option("health_manager", "heartbeat_interval", "1")
        .option("health_manager", "heartbeat_key", "shared secret")
        .start();
    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    ns.spawn(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("bind");
        serve_http(listener, "hi").await;
    });
    let client = agent.client();
    assert_eq!(client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    let frontend = SocketAddr::from(([127, 0, 0, 1], FRONTEND_PORT));
    amphora_testkit::wait::until("haproxy to serve", WAIT, || async {
        ns.spawn(get_once(frontend)).await.ok()?.ok().filter(|r| r.status == 200)
    })
    .await;

    // A heartbeat that carries traffic.
    let mut buffer = vec![0u8; heartbeat::RECEIVER_BUFFER];
    let (datagram, ours) = loop {
        let (len, _) =
            tokio::time::timeout(WAIT, socket.recv_from(&mut buffer)).await.expect("heartbeat").expect("recv");
        let beat: Heartbeat = heartbeat::decode(&buffer[..len], "shared secret", 1 << 24).expect("decode");
        if beat.listeners.get(LISTENER).is_some_and(|l| l.stats.totconns > 0) {
            break (buffer[..len].to_vec(), beat);
        }
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("heartbeat.bin");
    std::fs::write(&path, &datagram).expect("write");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream/heartbeat_receive.py");
    let output =
        std::process::Command::new(&python).arg(script).arg(&path).arg("shared secret").output().expect("python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let upstream: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");

    assert_eq!(upstream["message"], serde_json::to_value(&ours).expect("value"));
    assert_eq!(upstream["deltas"], true, "upstream reads version 3 as deltas");
    let stats = &upstream["stats"][0];
    let listener = &ours.listeners[LISTENER].stats;
    assert_eq!(stats["listener_id"], LISTENER);
    assert_eq!(stats["amphora_id"], agent.amphora_id.as_str());
    assert_eq!(stats["bytes_in"], listener.rx);
    assert_eq!(stats["bytes_out"], listener.tx);
    assert_eq!(stats["total_connections"], listener.totconns);
    assert_eq!(stats["active_connections"], listener.conns);
    assert_eq!(stats["request_errors"], listener.ereq);

    // A wrong key is refused by upstream as well.
    let output = std::process::Command::new(&python).arg(script).arg(&path).arg("wrong").output().expect("python");
    assert!(!output.status.success());
}
