//! `PUT /1.0/config`: validated first, written atomically, mutable options
//! applied at once, the rest reported for the next start.

mod common;

use std::os::unix::fs::PermissionsExt;

use amphora_proto::{Details, Message};
use amphora_testkit::Agent;
use common::*;

fn current_config(agent: &Agent) -> String {
    std::fs::read_to_string(&agent.config_path).expect("config")
}

#[tokio::test]
async fn an_invalid_configuration_changes_nothing() {
    let agent = agent();
    let client = agent.client();
    let before = current_config(&agent);
    for (body, reason) in [
        ("[amphora_agent\namphora_id = x\n".to_owned(), "malformed configuration"),
        (before.replace("bind_port = 0", "bind_port = lots"), "[haproxy_amphora] bind_port"),
        ("[haproxy_amphora]\nbind_port = 9443\n".to_owned(), "missing required option [amphora_agent] amphora_id"),
    ] {
        let reply = client.put("/1.0/config", body).await;
        assert_eq!(reply.status, 500);
        let message: Message = reply.json();
        assert_eq!(message.message, "Unable to update amphora-agent configuration.");
        let details = message.details.expect("details");
        assert!(details.contains(reason), "{details}");
    }
    assert_eq!(current_config(&agent), before);
    assert_eq!(client.put("/1.0/config", vec![0xffu8, 0xfe]).await.status, 500);
    assert_eq!(current_config(&agent), before);
}

#[tokio::test]
async fn mutable_options_apply_now_and_others_at_restart() {
    let mut agent = agent();
    let client = agent.client();
    let details: Details = client.get("/1.0/details").await.json();
    assert_eq!(details.topology, "SINGLE");

    let updated = current_config(&agent)
        .replace("[controller_worker]\n", "")
        .replace("heartbeat_key = insecure", "heartbeat_key = rotated\nheartbeat_interval = 3")
        .replace("bind_port = 0", "bind_port = 0\nbase_path = /var/lib/elsewhere")
        + "[controller_worker]\nloadbalancer_topology = ACTIVE_STANDBY\n";
    let reply = client.put("/1.0/config", updated.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let message: Message = reply.json();
    assert_eq!(message.message, "OK");
    assert_eq!(
        message.details.as_deref(),
        Some(
            "applied: [health_manager] heartbeat_interval, [health_manager] heartbeat_key, \
             [controller_worker] loadbalancer_topology; after restart: [haproxy_amphora] base_path"
        )
    );
    let details: Details = client.get("/1.0/details").await.json();
    assert_eq!(details.topology, "ACTIVE_STANDBY");

    assert_eq!(current_config(&agent), updated);
    let mode = std::fs::metadata(&agent.config_path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The written file is the one the next start reads.
    agent.terminate();
    let text = current_config(&agent).replace("base_path = /var/lib/elsewhere\n", "");
    std::fs::write(&agent.config_path, text).expect("restore base_path");
    agent.restart();
    let details: Details = agent.client().get("/1.0/details").await.json();
    assert_eq!(details.topology, "ACTIVE_STANDBY");
}

#[tokio::test]
async fn debug_logging_switches_without_restart() {
    let agent = agent();
    let client = agent.client();
    let debug_lines = || agent.logs().lines().filter(|l| l.contains("DEBUG")).count();
    assert_eq!(client.get("/1.0/info").await.status, 200);
    assert!(debug_lines() > 0, "the harness starts with debug = True");

    let quiet = current_config(&agent).replace("debug = True", "debug = False");
    let reply = client.put("/1.0/config", quiet).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(reply.json::<Message>().details.expect("details").starts_with("applied: [DEFAULT] debug;"));
    let before = debug_lines();
    for _ in 0..5 {
        // New connections make rustls log at debug level.
        assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    }
    assert_eq!(debug_lines(), before, "no debug output once debug is off");

    let loud = current_config(&agent).replace("debug = False", "debug = True");
    assert_eq!(client.put("/1.0/config", loud).await.status, 202);
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    amphora_testkit::wait::until("debug output again", WAIT, || async { (debug_lines() > before).then_some(()) }).await;
}
