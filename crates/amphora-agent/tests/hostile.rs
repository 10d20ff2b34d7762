//! The agent attacked as a hostile or buggy controller would: names that
//! collide with the agent's own files, configurations that point at other
//! load balancers' files, a full disk, a state directory emptied behind the
//! agent's back, requests that never finish.

mod common;

use amphora_proto::Message;
use common::*;

#[tokio::test]
async fn the_agents_own_directories_are_no_load_balancers() {
    let agent = agent();
    let client = agent.client();
    let interfaces = agent.base_path().join("interfaces");
    std::fs::create_dir_all(&interfaces).expect("mkdir");
    std::fs::write(interfaces.join("eth1.json"), "{}").expect("write");

    for name in ["interfaces", "vrrp", "lvs", "certs"] {
        let reply = client.delete(&format!("/1.0/listeners/{name}")).await;
        assert_eq!(reply.status, 400, "{name}: {}", reply.text());
        assert_eq!(reply.json::<Message>().message, "Invalid request");
        let reply = client.put(&upload_path(&agent, name), lb_config(&agent, name, LISTENER, 1)).await;
        assert_eq!(reply.status, 400, "{name}: {}", reply.text());
    }
    assert_eq!(std::fs::read_to_string(interfaces.join("eth1.json")).expect("kept"), "{}");
    let entries: Vec<_> =
        std::fs::read_dir(&interfaces).expect("list").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("eth1.json")], "nothing written into interfaces/");

    // A directory that holds no load balancer is not one to remove.
    let stray = agent.base_path().join("stray-directory");
    std::fs::create_dir(&stray).expect("mkdir");
    std::fs::write(stray.join("precious"), "data").expect("write");
    let reply = client.delete("/1.0/listeners/stray-directory").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(stray.join("precious").exists(), "a directory without a load balancer survives DELETE");
}
