//! A UDP load balancer end to end: the controller renders keepalived's LVS
//! file for a UDP listener, uploads it to its amphora's agent, and
//! datagrams from a client namespace reach the UDP members through the VIP;
//! a dead member is taken out by its UDP-CONNECT monitor and reported by
//! the heartbeats; a deleted listener is removed from the amphora.
//!
//! IPVS is missing from the test machine's kernel, so the test boots a
//! throwaway VM (`amphora_testkit::vm`, Debian's kernel on this machine's
//! own root filesystem) and runs itself there, controller, agents and all.

mod common;
mod e2e_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use amphora_controller::local::{DEFAULT_MEMBER_SUBNET_ID, DEFAULT_VIP_SUBNET_ID};
use amphora_testkit::vm;
use e2e_support::{System, Topology, tail};
use serde_json::json;
use tokio::net::UdpSocket;

const BUILD: Duration = Duration::from_secs(300);
const PORT: u16 = 5353;
const TEST: &str = "a_udp_load_balancer_serves_datagrams_follows_member_health_and_removes_a_deleted_listener";

/// On the host: runs this test in a VM. In the VM (`AMPHORA_IN_VM`): the
/// scenario.
#[test]
fn a_udp_load_balancer_serves_datagrams_follows_member_health_and_removes_a_deleted_listener() {
    if vm::inside() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        return runtime.block_on(udp_scenario());
    }
    vm::run_this_test(TEST, &[], Duration::from_secs(900));
}

/// A member: answers each datagram with its name.
async fn echo(address: IpAddr, name: &'static str) {
    let socket = UdpSocket::bind(SocketAddr::new(address, PORT)).await.expect("bind the UDP member");
    let mut buf = [0u8; 1500];
    loop {
        let Ok((_, from)) = socket.recv_from(&mut buf).await else { return };
        let _ = socket.send_to(name.as_bytes(), from).await;
    }
}

/// Sends `n` datagrams through `vip`, each from a socket of its own (a
/// flow of its own for IPVS), from the test host `client`; counts the
/// answers by member name ("(none)" when no answer came within a second).
async fn send(sys: &System, client: usize, vip: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    sys.spawn_in(client, async move {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let socket = UdpSocket::bind("0.0.0.0:0").await.expect("a client socket");
            let _ = socket.send_to(b"ping", vip).await;
            let mut buf = [0u8; 64];
            let answer = match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                Ok(Ok(len)) => String::from_utf8_lossy(&buf[..len]).into_owned(),
                _ => "(none)".to_owned(),
            };
            *seen.entry(answer).or_insert(0) += 1;
        }
        seen
    })
    .await
    .expect("the client task")
}

async fn udp_scenario() {
    let mut sys = System::start(Topology::Single);
    let (_, _, client) = sys.host(DEFAULT_VIP_SUBNET_ID).await;
    let mut members = Vec::new();
    for name in ["member-1", "member-2"] {
        let (_, address, index) = sys.host(DEFAULT_MEMBER_SUBNET_ID).await;
        sys.spawn_in(index, echo(address, name));
        members.push((address, index));
    }
    let (lb, vip) = sys.create_lb("udp", DEFAULT_VIP_SUBNET_ID, BUILD).await;
    let vip = SocketAddr::new(vip, PORT);
    let listener = sys
        .create(&lb, "listeners", "listener", json!({"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": PORT}))
        .await;
    // The pool comes before its members: keepalived gets a virtual server
    // without real servers first.
    let pool = sys
        .create(
            &lb,
            "pools",
            "pool",
            json!({"listener_id": listener["id"], "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}),
        )
        .await;
    let pool = pool["id"].as_str().expect("a pool id").to_owned();
    sys.create(
        &lb,
        "healthmonitors",
        "healthmonitor",
        json!({"pool_id": pool, "type": "UDP-CONNECT", "delay": 1, "timeout": 1, "max_retries": 1,
               "max_retries_down": 1}),
    )
    .await;
    let mut member_ids = Vec::new();
    for (address, _) in &members {
        let body =
            json!({"address": address.to_string(), "protocol_port": PORT, "subnet_id": DEFAULT_MEMBER_SUBNET_ID});
        let member = sys.create(&lb, &format!("pools/{pool}/members"), "member", body).await;
        member_ids.push(member["id"].as_str().expect("a member id").to_owned());
    }

    // Both members answer through the VIP.
    let seen = sys
        .until("datagrams answered by both members", Duration::from_secs(90), || async {
            let seen = send(&sys, client, vip, 12).await;
            (seen.contains_key("member-1") && seen.contains_key("member-2")).then_some(seen)
        })
        .await;
    println!("through the VIP: {seen:?}");

    // member-1 dies: its UDP check takes it out, every datagram goes to
    // member-2, and the heartbeats turn it ERROR in the API.
    sys.stop_host(members[0].1);
    let seen = sys
        .until("every datagram answered by member-2", Duration::from_secs(60), || async {
            let seen = send(&sys, client, vip, 10).await;
            (seen.get("member-2") == Some(&10)).then_some(seen)
        })
        .await;
    println!("after member-1 died: {seen:?}");
    sys.until("member-1 ERROR in the API", Duration::from_secs(60), || async {
        (sys.member_status(&pool, &member_ids[0]).await == "ERROR").then_some(())
    })
    .await;
    assert_eq!(sys.member_status(&pool, &member_ids[1]).await, "ONLINE");

    // The listener deleted: the amphora stops serving its port.
    let listener_id = listener["id"].as_str().expect("a listener id");
    sys.api.expect(204, "DELETE", &format!("/v2/lbaas/listeners/{listener_id}"), None).await;
    sys.wait_lb(&lb, "ACTIVE", Duration::from_secs(120)).await;
    sys.until("the deleted listener's port unanswered", Duration::from_secs(30), || async {
        let seen = send(&sys, client, vip, 3).await;
        (seen.get("(none)") == Some(&3)).then_some(())
    })
    .await;
    let log = sys.log();
    assert!(log.contains("removed a UDP/SCTP listener"), "the amphora's listener was not removed:\n{}", tail(&log, 60));
}
