//! The agent attacked as a hostile or buggy controller would: names that
//! collide with the agent's own files, configurations that point at other
//! load balancers' files, a full disk, a state directory emptied behind the
//! agent's back, requests that never finish.

mod common;

use std::io::Write;
use std::time::Duration;

use amphora_proto::{ListenerState, ListenerStatus, Message};
use amphora_testkit::client::{TlsVersions, connect_tls};
use amphora_testkit::wait;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

async fn wait_dead(pid: i32) {
    wait::until(&format!("process {pid} to exit"), WAIT, || async { (!alive(pid)).then_some(()) }).await;
}

/// Writes to `path` until the file system refuses more.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return;
        }
    }
}

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

#[tokio::test]
async fn load_balancers_stop_and_go_on_a_full_disk() {
    const OTHER: &str = "7f0e2c4d-1111-4a2b-9c3d-2e5f6a7b8c9d";
    let mut agent = builder().state_on_tmpfs(8 << 20).start();
    let client = agent.client();
    for (lb, port) in [(LB, FRONTEND_PORT), (OTHER, 9090)] {
        let config = lb_config_with(&agent, lb, lb, 1, &format!("127.0.0.1:{port}"), 100);
        assert_eq!(client.put(&upload_path(&agent, lb), config).await.status, 202);
        assert_eq!(client.put(&format!("/1.0/loadbalancer/{lb}/start"), "").await.status, 202);
    }
    let stopped = agent.haproxy_pid(LB).expect("pid");
    let deleted = agent.haproxy_pid(OTHER).expect("pid");
    fill(&agent.base_path().join("filler"));

    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/stop"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    wait_dead(stopped).await;
    let reply = client.delete(&format!("/1.0/listeners/{OTHER}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_dead(deleted).await;
    assert!(!agent.base_path().join(OTHER).exists());

    // Both are remembered: an agent restart (or a reboot) brings neither
    // back.
    drop(client);
    agent.kill();
    agent.restart();
    let statuses: Vec<ListenerStatus> = agent.client().get("/1.0/listeners").await.json();
    assert_eq!(statuses, vec![ListenerStatus { status: ListenerState::Stopped, uuid: LB.into(), kind: "HTTP".into() }]);
    assert_eq!(agent.haproxy_pid(LB), None);
}

#[tokio::test]
async fn a_request_body_that_never_arrives_times_out() {
    let agent = builder().option("amphora_agent", "agent_request_read_timeout", "2").start();
    let tls = agent.tls_config(Some(&agent.pki.client), TlsVersions::Any);
    let mut stream = connect_tls(agent.addr, tls, &agent.amphora_id).await.expect("connect");
    let head =
        format!("PUT {} HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\nglobal\n", upload_path(&agent, LB));
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.flush().await.expect("flush");
    // The rest of the body never comes: the agent answers and hangs up.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the connection is still open after {WAIT:?}; read so far: {text}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"message\":\"Request Timeout\""), "{text}");
    assert!(!agent.base_path().join(LB).join("haproxy.cfg").exists());
}

#[tokio::test]
async fn clients_that_hold_connections_open_cannot_lock_the_controller_out() {
    // 128 open files: the agent serves 32 connections at once.
    let agent = builder().open_files_limit(128).start();
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(tokio::net::TcpStream::connect(agent.addr).await.expect("connect"));
    }
    // Served long before the held connections' handshakes time out (10 s).
    let client = agent.client();
    let reply = tokio::time::timeout(Duration::from_secs(5), client.get("/1.0/info")).await.expect("served in time");
    assert_eq!(reply.status, 200);
    drop(held);
}

#[tokio::test]
async fn delete_removes_only_the_stats_socket_of_its_own_load_balancer() {
    const OTHER: &str = "7f0e2c4d-1111-4a2b-9c3d-2e5f6a7b8c9d";
    const THIRD: &str = "3c2b1a00-2222-4a2b-9c3d-2e5f6a7b8c9d";
    let agent = agent();
    let client = agent.client();
    let other_config = agent.base_path().join(OTHER).join("haproxy.cfg");
    assert_eq!(client.put(&upload_path(&agent, OTHER), lb_config(&agent, OTHER, "other", 1)).await.status, 202);

    // The stats socket named: another load balancer's configuration, and a
    // directory.
    let directory = agent.base_path().join("some-directory");
    std::fs::create_dir(&directory).expect("mkdir");
    for (lb, socket) in [(LB, &other_config), (THIRD, &directory)] {
        let own = agent.stats_socket(lb).display().to_string();
        let config = lb_config(&agent, lb, LISTENER, 1).replace(&own, &socket.display().to_string());
        assert_eq!(client.put(&upload_path(&agent, lb), config).await.status, 202);
        let reply = client.delete(&format!("/1.0/listeners/{lb}")).await;
        assert_eq!(reply.status, 200, "{lb}: {}", reply.text());
        assert!(!agent.base_path().join(lb).exists());
    }
    assert!(other_config.is_file(), "another load balancer's configuration survives");
    assert!(directory.is_dir());

    // Its own socket goes.
    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    assert!(agent.stats_socket(LB).exists());
    assert_eq!(client.delete(&format!("/1.0/listeners/{LB}")).await.status, 200);
    assert!(!agent.stats_socket(LB).exists());
}

#[tokio::test]
async fn an_emptied_state_directory_is_filled_again() {
    let agent = agent();
    let client = agent.client();
    for entry in std::fs::read_dir(agent.base_path()).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let statuses: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    assert_eq!(statuses[0].status, ListenerState::Active);
}

/// Live processes running `config` whose parent does not (masters).
fn masters_of(config: &std::path::Path) -> Vec<i32> {
    let runs = |pid: i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        alive(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == config.as_os_str().as_encoded_bytes())
    };
    let parent = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok()).unwrap_or(0)
    };
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| runs(*pid) && !runs(parent(*pid)))
        .collect()
}

#[tokio::test]
async fn a_directory_removed_under_haproxy_does_not_get_a_second_master() {
    let agent = agent();
    let client = agent.client();
    assert_eq!(client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    let old = agent.haproxy_pid(LB).expect("pid");
    std::fs::remove_dir_all(agent.base_path().join(LB)).expect("remove");

    assert_eq!(client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 2)).await.status, 202);
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let new = agent.haproxy_pid(LB).expect("pid");
    assert_ne!(new, old);
    wait_dead(old).await;
    assert_eq!(masters_of(&agent.base_path().join(LB).join("haproxy.cfg")), vec![new]);
}

#[tokio::test]
async fn certificate_names_up_to_the_file_system_limit_are_stored() {
    const KEY: &str = include_str!("fixtures/rsa2048.key");
    const CERT: &str = include_str!("fixtures/rsa2048.crt");
    let agent = agent();
    let client = agent.client();
    let pem = format!("{KEY}{CERT}");
    for length in [244, 250, 255] {
        let name = format!("{}.pem", "c".repeat(length - 4));
        let path = format!("/1.0/loadbalancer/{LB}/certificates/{name}");
        let reply = client.put(&path, pem.clone()).await;
        assert_eq!(reply.status, 200, "{length}: {}", reply.text());
        let reply = client.get(&path).await;
        assert_eq!(reply.status, 200, "{length}: {}", reply.text());
    }
    // One byte more is no file name at all.
    let name = format!("{}.pem", "c".repeat(252));
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/certificates/{name}"), pem).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[tokio::test]
async fn a_request_being_handled_is_never_cut_to_make_room() {
    // haproxy starts slowly: it says when it began, then takes a moment.
    let wrapper = tempfile::tempdir().expect("tempdir");
    let starting = wrapper.path().join("starting");
    let real = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("haproxy");
    let script = wrapper.path().join("haproxy");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" -D \"*) touch {starting}; sleep 2 ;; esac\nexec {real} \"$@\"\n",
            starting = starting.display()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let agent =
        builder().option("haproxy_amphora", "haproxy_cmd", &script.display().to_string()).open_files_limit(128).start();
    assert_eq!(agent.client().put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await.status, 202);

    // A start whose (empty) body is chunked, so only reading it tells that
    // the request is complete.
    let tls = agent.tls_config(Some(&agent.pki.client), TlsVersions::Any);
    let mut stream = connect_tls(agent.addr, tls, &agent.amphora_id).await.expect("connect");
    let request = format!(
        "PUT /1.0/loadbalancer/{LB}/start HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    stream.flush().await.expect("flush");
    wait::until("haproxy to be starting", WAIT, || async { starting.exists().then_some(()) }).await;
    // Many more connections than the agent serves at once (32).
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(tokio::net::TcpStream::connect(agent.addr).await.expect("connect"));
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer)).await.expect("an answer").unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 202"), "{text:?}");
    drop(held);
}
