//! Heartbeats received on a real UDP socket from the real agent, with real
//! haproxy carrying real traffic: the numbers must add up to what was sent.

mod common;

use std::net::SocketAddr;

use amphora_proto::heartbeat::{self, Heartbeat};
use amphora_testkit::Agent;
use amphora_testkit::netns::NsRuntime;
use amphora_testkit::traffic::{get_once, serve_http};
use amphora_testkit::wait;
use common::*;
use tokio::net::UdpSocket;

/// A health manager stand-in: a UDP socket the agent sends to.
struct Receiver {
    socket: UdpSocket,
    key: String,
}

impl Receiver {
    async fn bind(key: &str) -> Self {
        Self { socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind"), key: key.into() }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    /// The next heartbeat, raw and decoded.
    async fn next(&self) -> (Vec<u8>, Heartbeat) {
        let mut buffer = vec![0u8; heartbeat::RECEIVER_BUFFER];
        let (len, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buffer))
            .await
            .expect("a heartbeat within the deadline")
            .expect("recv");
        buffer.truncate(len);
        let beat =
            heartbeat::decode(&buffer, &self.key, heartbeat::DEFAULT_MAX_DECOMPRESSED).expect("a valid envelope");
        (buffer, beat)
    }

    /// Heartbeats received so far without waiting.
    fn drain(&self) -> Vec<Heartbeat> {
        let mut beats = Vec::new();
        let mut buffer = vec![0u8; heartbeat::RECEIVER_BUFFER];
        while let Ok((len, _)) = self.socket.try_recv_from(&mut buffer) {
            beats.push(
                heartbeat::decode(&buffer[..len], &self.key, heartbeat::DEFAULT_MAX_DECOMPRESSED).expect("valid"),
            );
        }
        beats
    }
}

fn agent_sending_to(receiver: &Receiver) -> Agent {
    builder()
        .option("health_manager", "controller_ip_port_list", &receiver.addr().to_string())
        .option("health_manager", "heartbeat_interval", "1")
        .start()
}

/// Totals of what the heartbeats reported for the listener.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    rx: u64,
    tx: u64,
    connections: u64,
}

impl Totals {
    fn add(&mut self, beat: &Heartbeat) {
        if let Some(listener) = beat.listeners.get(LISTENER) {
            self.rx += listener.stats.rx;
            self.tx += listener.stats.tx;
            self.connections += listener.stats.totconns;
        }
    }
}

/// Sends `count` requests through haproxy; the bytes each way.
async fn traffic(ns: &NsRuntime, count: usize) -> (u64, u64) {
    const REQUEST_LEN: u64 = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".len() as u64;
    let mut received = 0;
    for _ in 0..count {
        let response = ns
            .spawn(get_once(SocketAddr::from(([127, 0, 0, 1], FRONTEND_PORT))))
            .await
            .expect("join")
            .expect("request");
        assert_eq!(response.status, 200);
        received += (response.head.len() + 4 + response.body.len()) as u64;
    }
    (REQUEST_LEN * count as u64, received)
}

async fn serving(agent: &Agent) -> NsRuntime {
    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    ns.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("bind");
        let _ = ready_tx.send(());
        serve_http(listener, "counted").await;
    });
    ready_rx.await.expect("backend");
    // TCP mode: haproxy counts exactly the bytes on the wire (in HTTP mode
    // it counts its internal representation of the messages).
    let config = lb_config(agent, LB, LISTENER, 1)
        .replace("    mode http\n", "    mode tcp\n")
        .replace("    http-response set-header X-Config-Version 1\n", "");
    let client = agent.client();
    assert_eq!(client.put(&upload_path(agent, LB), config).await.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    ns
}

/// Receives heartbeats until the totals reach `expected`, then checks the
/// next one adds nothing more.
async fn collect_until(receiver: &Receiver, totals: &mut Totals, expected: Totals) {
    while totals.connections < expected.connections {
        let (_, beat) = receiver.next().await;
        totals.add(&beat);
    }
    let (_, beat) = receiver.next().await;
    totals.add(&beat);
    assert_eq!(*totals, expected);
}

#[tokio::test]
async fn heartbeats_report_the_traffic_that_went_through_haproxy() {
    let receiver = Receiver::bind("insecure").await;
    let agent = agent_sending_to(&receiver);
    let ns = serving(&agent).await;

    let (sent, received) = traffic(&ns, 25).await;
    let mut totals = Totals::default();
    collect_until(&receiver, &mut totals, Totals { rx: sent, tx: received, connections: 25 }).await;

    let (_, beat) = receiver.next().await;
    assert_eq!(beat.id, agent.amphora_id);
    assert_eq!(beat.ver, 3);
    let listener = &beat.listeners[LISTENER];
    assert_eq!(listener.status, "OPEN");
    assert_eq!((listener.stats.rx, listener.stats.tx, listener.stats.totconns), (0, 0, 0), "deltas, not totals");
    let pool = &beat.pools[&format!("pool:{LISTENER}")];
    assert_eq!(pool.status, "UP");
    assert_eq!(pool.members.get("member-1").map(|s| s.as_str()), Some("no check"));
    let (_, next) = receiver.next().await;
    assert_eq!(next.seq, beat.seq + 1);
}

#[tokio::test]
async fn counters_survive_an_agent_restart() {
    let receiver = Receiver::bind("insecure").await;
    let mut agent = agent_sending_to(&receiver);
    let ns = serving(&agent).await;

    let (sent, received) = traffic(&ns, 10).await;
    let mut totals = Totals::default();
    let mut expected = Totals { rx: sent, tx: received, connections: 10 };
    collect_until(&receiver, &mut totals, expected).await;

    agent.terminate();
    let (sent, received) = traffic(&ns, 7).await;
    agent.restart();
    expected = Totals { rx: expected.rx + sent, tx: expected.tx + received, connections: 17 };
    collect_until(&receiver, &mut totals, expected).await;
    assert!(agent.base_path().join("stats_counters.json").exists());
}

#[tokio::test]
async fn heartbeats_alternate_between_controllers() {
    let first = Receiver::bind("insecure").await;
    let second = Receiver::bind("insecure").await;
    let _agent = builder()
        .option("health_manager", "controller_ip_port_list", &format!("{}, {}", first.addr(), second.addr()))
        .option("health_manager", "heartbeat_interval", "1")
        .start();
    let (_, a) = first.next().await;
    let (_, b) = second.next().await;
    let (_, c) = first.next().await;
    assert_eq!(b.seq, a.seq + 1);
    assert_eq!(c.seq, b.seq + 1);
}

#[tokio::test]
async fn configuration_updates_change_key_and_controllers_at_once() {
    let old = Receiver::bind("insecure").await;
    let agent = builder()
        .option("health_manager", "controller_ip_port_list", &old.addr().to_string())
        // Long enough that only an immediate change can explain the new beat.
        .option("health_manager", "heartbeat_interval", "3600")
        .start();
    old.next().await;

    let new = Receiver::bind("rotated").await;
    let config = std::fs::read_to_string(&agent.config_path)
        .expect("config")
        .replace("heartbeat_key = insecure", "heartbeat_key = rotated")
        .replace(&old.addr().to_string(), &new.addr().to_string())
        .replace("heartbeat_interval = 3600", "heartbeat_interval = 1");
    let reply = agent.client().put("/1.0/config", config).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let (_, beat) = new.next().await;
    assert_eq!(beat.id, agent.amphora_id);
    new.next().await;
}

#[tokio::test]
async fn no_heartbeat_while_keepalived_is_configured_but_down() {
    let receiver = Receiver::bind("insecure").await;
    let agent = agent_sending_to(&receiver);
    let (_, first) = receiver.next().await;

    let vrrp = agent.base_path().join("vrrp");
    std::fs::create_dir_all(&vrrp).expect("vrrp dir");
    std::fs::write(vrrp.join("octavia-keepalived.conf"), "vrrp_instance x {}\n").expect("keepalived config");
    let skips = || agent.logs().matches("skipping the health heartbeat").count();
    wait::until("two skipped heartbeats", WAIT, || async { (skips() >= 2).then_some(()) }).await;
    // At most one beat built before the file appeared may still arrive.
    let late = receiver.drain();
    assert!(late.iter().all(|b| b.seq <= first.seq + 1), "{late:?}");

    std::fs::remove_file(vrrp.join("octavia-keepalived.conf")).expect("remove");
    let (_, resumed) = receiver.next().await;
    assert!(resumed.seq <= first.seq + 2);
}
