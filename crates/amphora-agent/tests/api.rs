//! The 1.0 API's wire behaviour through the real binary over mutual TLS:
//! messages, status codes, headers, and hostile inputs.

mod common;

use amphora_proto::{Details, Info, ListenerState, ListenerStatus, Message, VersionDiscovery};
use common::*;

#[tokio::test]
async fn version_discovery_and_info() {
    let agent = agent();
    let client = agent.client();

    let version: VersionDiscovery = client.get("/").await.json();
    assert_eq!(version.api_version, "1.0");
    // Upstream's controller asks at "//" (its base URL ends in a slash).
    let version: VersionDiscovery = client.get("//").await.json();
    assert_eq!(version.api_version, "1.0");

    for path in ["/info", "/1.0/info"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let info: Info = reply.json();
        assert_eq!(info.uuid, agent.amphora_id);
        assert_eq!(info.api_version, "1.0");
        assert_eq!(info.hostname, nix::unistd::gethostname().expect("hostname").to_string_lossy());
        // The controller splits this on '.' for major and minor.
        let haproxy = info.haproxy_version.expect("haproxy version");
        let mut parts = haproxy.split('.');
        assert!(parts.next().expect("major").parse::<u32>().is_ok(), "{haproxy}");
        assert!(parts.next().is_some(), "{haproxy}");
    }
}

#[tokio::test]
async fn details_report_the_machine_and_listeners() {
    let agent = agent();
    let client = agent.client();
    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());

    let details: Details = client.get("/1.0/details").await.json();
    assert_eq!(details.info.uuid, agent.amphora_id);
    assert_eq!(details.info.api_version, "1.0");
    assert_eq!(details.topology, "SINGLE");
    assert_eq!(details.topology_status, "OK");
    assert!(details.active);
    assert_eq!(details.listeners, vec![LISTENER.to_owned()]);
    assert_eq!(details.haproxy_count, 0, "uploaded but not started");
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kb: u64 = meminfo
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(details.memory.total, total_kb);
    assert!(details.memory.available > 0 && details.memory.available <= total_kb);
    assert!(details.disk.used > 0 && details.disk.available > 0);
    assert!(details.cpu_count >= 1);
    assert!((0.0..=100.0).contains(&details.cpu.total));
    assert!(details.packages.iter().any(|p| p.contains_key("haproxy")), "{:?}", details.packages);

    let started = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(started.status, 202, "{}", started.text());
    let details: Details = client.get("/1.0/details").await.json();
    assert_eq!(details.haproxy_count, 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let agent = agent();
    let client = agent.client();

    let reply = client.get("/1.0/nothing-here").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json::<Message>().message, "Not Found");

    let reply = client.request("POST", "/1.0/info", "").await.expect("request");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json::<Message>().message, "Method Not Allowed");

    let reply = client.delete(&format!("/1.0/loadbalancer/{LB}/haproxy")).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let agent = agent();
    let client = agent.client();
    for _ in 0..50 {
        assert_eq!(client.get("/1.0/info").await.status, 200);
    }
    let reply = client.get("/1.0/listeners").await;
    assert_eq!(reply.header("connection"), None, "no Connection: close");
    assert_eq!(client.connections_opened(), 1);
}

#[tokio::test]
async fn config_upload_stores_and_returns_the_config_with_etag() {
    let agent = agent();
    let client = agent.client();
    let config = lb_config(&agent, LB, LISTENER, 1);

    let reply = client.put(&upload_path(&agent, LB), config.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::ok());
    let etag = reply.header("etag").expect("ETag").to_owned();
    assert_eq!(etag, amphora_testkit::md5_hex(config.as_bytes()));

    let stored = client.get(&format!("/1.0/loadbalancer/{LB}/haproxy")).await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.text(), config);
    assert_eq!(stored.header("etag"), Some(etag.as_str()));
    assert!(stored.header("content-type").expect("type").starts_with("text/plain"));

    let on_disk = std::fs::read_to_string(agent.base_path().join(LB).join("haproxy.cfg")).expect("file");
    assert_eq!(on_disk, config);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.base_path().join(LB).join("haproxy.cfg")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn group_lines_are_stripped_and_the_group_file_is_used() {
    let agent = agent();
    let client = agent.client();
    let config =
        lb_config(&agent, LB, LISTENER, 1).replace("    user nobody\n", "    user nobody\n    group nogroup\n");
    assert_eq!(client.put(&upload_path(&agent, LB), config.clone()).await.status, 202);
    let stored = client.get(&format!("/1.0/loadbalancer/{LB}/haproxy")).await.text();
    assert!(!stored.contains("group nogroup"));
    assert_eq!(stored, config.replace("    group nogroup\n", ""));
    let group_file =
        std::fs::read_to_string(agent.base_path().join("haproxy-default-user-group.conf")).expect("group file");
    assert!(group_file.starts_with("global\n    group "), "{group_file}");
}

#[tokio::test]
async fn an_invalid_config_is_rejected_with_haproxys_words_and_changes_nothing() {
    let agent = agent();
    let client = agent.client();
    let good = lb_config(&agent, LB, LISTENER, 1);
    assert_eq!(client.put(&upload_path(&agent, LB), good.clone()).await.status, 202);
    let started = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(started.status, 202, "{}", started.text());
    let pid = agent.haproxy_pid(LB).expect("pid");

    let bad = format!("{good}\nBAD_LINE here\n");
    let reply = client.put(&upload_path(&agent, LB), bad.clone()).await;
    assert_eq!(reply.status, 400);
    let message: Message = reply.json();
    assert_eq!(message.message, "Invalid request");
    let details = message.details.expect("details");
    assert!(details.contains("BAD_LINE"), "{details}");
    assert!(details.contains("[ALERT]"), "{details}");

    let stored = client.get(&format!("/1.0/loadbalancer/{LB}/haproxy")).await;
    assert_eq!(stored.text(), good);
    let failed = std::fs::read_to_string(agent.base_path().join(LB).join("haproxy.cfg.new-failed")).expect("kept");
    assert!(failed.contains("BAD_LINE"));
    assert_eq!(agent.haproxy_pid(LB), Some(pid));
    let listeners: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    assert_eq!(listeners[0].status, ListenerState::Active);
}

#[tokio::test]
async fn a_config_that_is_not_utf8_is_rejected() {
    let agent = agent();
    let reply = agent.client().put(&upload_path(&agent, LB), vec![0xff, 0xfe, b'\n']).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>().message, "Invalid request");
    assert!(!agent.base_path().join(LB).join("haproxy.cfg").exists());
}

#[tokio::test]
async fn unknown_load_balancers_and_actions() {
    let agent = agent();
    let client = agent.client();

    let reply = client.get(&format!("/1.0/loadbalancer/{LB}/haproxy")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("Loadbalancer Not Found", format!("No loadbalancer with UUID: {LB}"))
    );

    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/stop"), "").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("Listener Not Found", format!("No loadbalancer with UUID: {LB}"))
    );

    assert_eq!(client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await.status, 202);
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/BAD_TEST_DATA"), "").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json::<Message>(), Message::with_details("Invalid Request", "Unknown action: BAD_TEST_DATA"));
}

#[tokio::test]
async fn delete_is_idempotent_and_removes_everything() {
    let agent = agent();
    let client = agent.client();
    assert_eq!(client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    let pid = agent.haproxy_pid(LB).expect("pid");
    let cert_dir = agent.cert_dir().join(LB);
    std::fs::create_dir_all(&cert_dir).expect("cert dir");
    std::fs::write(cert_dir.join("www.example.com.pem"), "x").expect("cert");
    assert!(agent.stats_socket(LB).exists());

    let reply = client.delete(&format!("/1.0/listeners/{LB}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::ok());
    assert!(!agent.base_path().join(LB).exists());
    assert!(!cert_dir.exists());
    assert!(!agent.stats_socket(LB).exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid), "haproxy stopped");
    let listeners: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    assert!(listeners.is_empty());

    let again = client.delete(&format!("/1.0/listeners/{LB}")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json::<Message>(), Message::ok());
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(true)
}

#[tokio::test]
async fn hostile_paths_never_touch_the_file_system() {
    let agent = agent();
    let client = agent.client();
    let config = lb_config(&agent, LB, LISTENER, 1);
    let outside = agent.dir.path().join("escaped");

    for lb in ["..", ".", "..%2F..%2Fescaped", "%2e%2e", ".hidden", "a%00b", "vrrp", "certs", "x%0Ay"] {
        let reply = client.put(&format!("/1.0/loadbalancer/amp/{lb}/haproxy"), config.clone()).await;
        assert!(matches!(reply.status, 400 | 404), "{lb}: {} {}", reply.status, reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"), "{lb}");
        for action in ["start", "stop"] {
            let reply = client.put(&format!("/1.0/loadbalancer/{lb}/{action}"), "").await;
            assert!(matches!(reply.status, 400 | 404), "{lb}/{action}: {}", reply.status);
        }
        let reply = client.delete(&format!("/1.0/listeners/{lb}")).await;
        assert!(matches!(reply.status, 400 | 404), "delete {lb}: {}", reply.status);
        let reply = client.get(&format!("/1.0/loadbalancer/{lb}/haproxy")).await;
        assert!(matches!(reply.status, 400 | 404), "get {lb}: {}", reply.status);
    }
    // A raw "../" path is not normalised into another route.
    let reply = client.put("/1.0/loadbalancer/amp/../../escaped/haproxy", config.clone()).await;
    assert!(matches!(reply.status, 400 | 404 | 405), "{}", reply.status);

    assert!(!outside.exists());
    let entries: Vec<String> = std::fs::read_dir(agent.base_path())
        .expect("state dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(entries, vec!["certs".to_owned(), "haproxy-default-user-group.conf".to_owned()]);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let agent = builder().option("amphora_agent", "max_request_body_size", "65536").start();
    let client = agent.client();
    let mut config = lb_config(&agent, LB, LISTENER, 1);
    while config.len() <= 65536 {
        config.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let reply = client.put(&upload_path(&agent, LB), config).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json::<Message>().message, "Request body too large");
    assert!(!agent.base_path().join(LB).exists());
    // The agent is still well.
    assert_eq!(client.get("/1.0/info").await.status, 200);
}

#[tokio::test]
async fn garbage_requests_do_not_hurt_the_agent() {
    let agent = agent();
    let client = agent.client();
    for path in ["/1.0/loadbalancer", "/1.0/loadbalancer/", "//", "/1.0/listeners/", "/%ff%fe", "/1.0/details?x=1"] {
        let reply = client.get(path).await;
        assert!(reply.status < 500, "{path}: {}", reply.status);
    }
    assert_eq!(client.put(&upload_path(&agent, LB), "").await.status, 400);
    assert_eq!(client.get("/1.0/info").await.status, 200);
}
