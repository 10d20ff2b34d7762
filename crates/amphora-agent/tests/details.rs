//! `/1.0/details` network figures come from the sampler running inside the
//! amphora namespace: real traffic on a real interface shows up as bytes
//! per second and as the interface's counters.

mod common;

use std::time::Duration;

use amphora_proto::Details;
use amphora_testkit::netns::{NsRuntime, PeerNamespace};
use amphora_testkit::wait;
use common::*;

#[tokio::test]
async fn traffic_in_the_namespace_shows_in_the_details() {
    let agent = agent();
    let client = agent.client();
    let peer = PeerNamespace::attach(agent.netns.as_deref().expect("namespace"));

    // The sampler has not seen traffic on this interface yet.
    let before: Details = client.get("/1.0/details").await.json();
    assert_eq!(before.network_rx, 0);

    // About 5 MB of UDP from the peer into the amphora namespace; nothing
    // listens, which does not matter to the interface counters.
    let runtime = NsRuntime::new(&peer.name);
    let target = format!("{}:9", PeerNamespace::LOCAL_ADDRESS);
    runtime
        .spawn(async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("bind");
            let datagram = [0u8; 1200];
            for _ in 0..4_000 {
                socket.send_to(&datagram, &target).await.expect("send");
            }
        })
        .await
        .expect("sender");

    let details = wait::until("the sampler to report the traffic", Duration::from_secs(30), || async {
        let details: Details = client.get("/1.0/details").await.json();
        (details.network_rx > 0).then_some(details)
    })
    .await;
    let counters = details.networks.get(&peer.local_interface).expect("the veth is listed");
    assert!(counters.network_rx >= 4_000 * 1200, "{counters:?}");
    assert!(!details.networks.contains_key("lo"));
    // Rates are per second over the window, so below the total.
    assert!(details.network_rx <= counters.network_rx, "{} > {}", details.network_rx, counters.network_rx);
}
