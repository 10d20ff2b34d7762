//! haproxy supervision with real processes serving real traffic inside the
//! agent's network namespace: start, stop, hitless reload under load,
//! re-adoption after an agent restart, restart after a crash, restore after
//! a reboot, listener statuses, and start failures.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use amphora_proto::{ListenerState, ListenerStatus, Message};
use amphora_testkit::agent::Agent;
use amphora_testkit::netns::NsRuntime;
use amphora_testkit::traffic::{HttpResponse, get_once, serve_http};
use amphora_testkit::{AgentClient, wait};
use common::*;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

fn frontend() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], FRONTEND_PORT))
}

/// A runtime inside the agent's namespace with a backend listening.
fn namespace_with_backend(agent: &Agent) -> NsRuntime {
    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("backend bind");
        ready_tx.send(()).expect("ready");
        serve_http(listener, "hello from the backend").await;
    });
    ready_rx.recv_timeout(WAIT).expect("backend ready");
    ns
}

async fn get_in(ns: &NsRuntime) -> std::io::Result<HttpResponse> {
    ns.spawn(get_once(frontend())).await.expect("join")
}

/// Waits until the frontend serves configuration `version`.
async fn wait_for_version(ns: &NsRuntime, version: u32) {
    let expected = version.to_string();
    wait::until(&format!("configuration version {version} to serve"), WAIT, || async {
        match get_in(ns).await {
            Ok(response)
                if response.status == 200 && response.header("x-config-version") == Some(expected.as_str()) =>
            {
                Some(())
            }
            _ => None,
        }
    })
    .await
}

async fn upload_and(client: &AgentClient, agent: &Agent, version: u32, action: &str) {
    let reply = client.put(&upload_path(agent, LB), lb_config(agent, LB, LISTENER, version)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/{action}"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
}

async fn listener_status(client: &AgentClient) -> Vec<ListenerStatus> {
    client.get("/1.0/listeners").await.json()
}

#[tokio::test]
async fn start_serves_traffic_and_stop_stops_it() {
    let agent = agent();
    let ns = namespace_with_backend(&agent);
    let client = agent.client();

    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202);
    assert_eq!(
        listener_status(&client).await,
        vec![ListenerStatus { status: ListenerState::Stopped, uuid: LISTENER.into(), kind: "HTTP".into() }]
    );

    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 202);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("OK", format!("Configuration file is valid\nhaproxy daemon for {LB} started"))
    );
    let response = get_in(&ns).await.expect("traffic through haproxy");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "hello from the backend");
    assert_eq!(listener_status(&client).await[0].status, ListenerState::Active);

    // haproxy runs in the namespace, not beside the agent.
    assert!(get_once(frontend()).await.is_err(), "frontend must not be reachable outside the namespace");

    // Starting what runs is harmless.
    let pid = agent.haproxy_pid(LB).expect("pid");
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    assert_eq!(agent.haproxy_pid(LB), Some(pid));

    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/stop"), "").await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.json::<Message>(), Message::with_details("OK", format!("Listener {LB} stopped")));
    assert!(get_in(&ns).await.is_err(), "stopped haproxy must not answer");
    assert_eq!(listener_status(&client).await[0].status, ListenerState::Stopped);
    // Stopping again is fine too.
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/stop"), "").await.status, 202);
}

#[tokio::test]
async fn reload_of_a_stopped_load_balancer_starts_it() {
    let agent = agent();
    let ns = namespace_with_backend(&agent);
    let client = agent.client();
    upload_and(&client, &agent, 1, "reload").await;
    wait_for_version(&ns, 1).await;
}

#[tokio::test]
async fn reload_is_hitless_under_load() {
    const RELOADS: u32 = 20;
    const CLIENTS: usize = 4;
    let agent = agent();
    let ns = namespace_with_backend(&agent);
    let client = agent.client();
    upload_and(&client, &agent, 0, "start").await;
    wait_for_version(&ns, 0).await;
    let master = agent.haproxy_pid(LB).expect("pid");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut loads = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        loads.push(ns.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get_once(frontend()).await {
                    Ok(response) if response.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => failures.lock().expect("lock").push(format!("status {}", response.status)),
                    Err(e) => failures.lock().expect("lock").push(e.to_string()),
                }
            }
        }));
    }

    for version in 1..=RELOADS {
        upload_and(&client, &agent, version, "reload").await;
        wait_for_version(&ns, version).await;
    }
    stop.store(true, Ordering::Relaxed);
    for load in loads {
        load.await.expect("load client");
    }

    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok.load(Ordering::Relaxed) > u64::from(RELOADS) * 10, "too little load: {}", ok.load(Ordering::Relaxed));
    assert_eq!(agent.haproxy_pid(LB), Some(master), "reload keeps the master");
    assert!(agent.base_path().join(LB).join("servers-state").exists(), "server state saved before reload");
}

#[tokio::test]
async fn restarting_the_agent_keeps_haproxy_and_adopts_it() {
    let mut agent = agent();
    let ns = namespace_with_backend(&agent);
    upload_and(&agent.client(), &agent, 1, "start").await;
    wait_for_version(&ns, 1).await;
    let pid = agent.haproxy_pid(LB).expect("pid");

    agent.kill();
    assert_eq!(get_in(&ns).await.expect("served while the agent is down").status, 200);
    agent.restart();
    assert!(agent.logs().contains("adopted running haproxy"), "{}", agent.logs());

    let client = agent.client();
    assert_eq!(agent.haproxy_pid(LB), Some(pid), "the same haproxy");
    assert_eq!(listener_status(&client).await[0].status, ListenerState::Active);
    // The adopted master is fully under control: reload and stop work.
    upload_and(&client, &agent, 2, "reload").await;
    wait_for_version(&ns, 2).await;
    assert_eq!(agent.haproxy_pid(LB), Some(pid));

    // A graceful agent stop leaves haproxy running too.
    agent.terminate();
    assert_eq!(get_in(&ns).await.expect("served after SIGTERM").status, 200);
}

#[tokio::test]
async fn a_crashed_haproxy_is_restarted() {
    let agent = agent();
    let ns = namespace_with_backend(&agent);
    let client = agent.client();
    upload_and(&client, &agent, 1, "start").await;
    wait_for_version(&ns, 1).await;
    let pid = agent.haproxy_pid(LB).expect("pid");

    killpg(Pid::from_raw(pid), Signal::SIGKILL).expect("kill haproxy");
    let new_pid = wait::until("haproxy to be restarted", WAIT, || async {
        agent.haproxy_pid(LB).filter(|p| *p != pid && kill(Pid::from_raw(*p), None).is_ok())
    })
    .await;
    assert_ne!(new_pid, pid);
    wait_for_version(&ns, 1).await;
    assert!(agent.logs().contains("haproxy exited unexpectedly"), "{}", agent.logs());
    wait::until("the restart to be logged", WAIT, || async {
        agent.logs().contains("haproxy restarted").then_some(())
    })
    .await;
}

#[tokio::test]
async fn after_a_reboot_running_load_balancers_start_again_and_stopped_ones_do_not() {
    const OTHER: &str = "7f0e2c4d-1111-4a2b-9c3d-2e5f6a7b8c9d";
    let mut agent = agent();
    let ns = namespace_with_backend(&agent);
    let client = agent.client();
    upload_and(&client, &agent, 1, "start").await;
    wait_for_version(&ns, 1).await;
    let other_config = lb_config_with(&agent, OTHER, "other-listener", 1, "127.0.0.1:9090", 1000);
    assert_eq!(client.put(&upload_path(&agent, OTHER), other_config).await.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{OTHER}/start"), "").await.status, 202);
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{OTHER}/stop"), "").await.status, 202);
    drop(client);

    // A reboot: the agent and every haproxy die.
    agent.kill();
    let pid = agent.haproxy_pid(LB).expect("pid");
    killpg(Pid::from_raw(pid), Signal::SIGKILL).expect("kill haproxy");
    wait::until("haproxy to die", WAIT, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(true))
            .then_some(())
    })
    .await;

    agent.restart();
    let client = agent.client();
    wait_for_version(&ns, 1).await;
    assert_ne!(agent.haproxy_pid(LB), Some(pid));
    let statuses = listener_status(&client).await;
    let find = |uuid: &str| statuses.iter().find(|s| s.uuid == uuid).map(|s| s.status.clone());
    assert_eq!(find(LISTENER), Some(ListenerState::Active));
    assert_eq!(find("other-listener"), Some(ListenerState::Stopped));
}

#[tokio::test]
async fn a_start_failure_is_reported_and_the_listener_shows_error() {
    let agent = agent();
    let client = agent.client();
    // Valid for `haproxy -c`, but another program holds the port (without
    // SO_REUSEPORT, so haproxy cannot share it).
    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    let occupied = ns
        .spawn(async { std::net::TcpListener::bind(("127.0.0.1", FRONTEND_PORT)).expect("occupy the port") })
        .await
        .expect("join");
    let config = lb_config(&agent, LB, LISTENER, 1);
    assert_eq!(client.put(&upload_path(&agent, LB), config).await.status, 202);
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 500);
    let message: Message = reply.json();
    assert_eq!(message.message, "Error starting haproxy");
    let details = message.details.expect("details");
    assert!(details.contains(&format!("127.0.0.1:{FRONTEND_PORT}")), "{details}");
    assert_eq!(listener_status(&client).await[0].status, ListenerState::Error);
    drop(occupied);
}

#[tokio::test]
async fn a_maxconn_beyond_the_open_file_limit_fails_clearly() {
    let agent = agent();
    let client = agent.client();
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("limit");
    let maxconn = hard.min(4_000_000);
    let config = lb_config_with(&agent, LB, LISTENER, 1, "127.0.0.1:8080", maxconn);
    assert_eq!(client.put(&upload_path(&agent, LB), config).await.status, 202);
    let reply = client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    let details = reply.json::<Message>().details.expect("details");
    assert!(details.contains("FD limit"), "{details}");
    assert!(details.contains("LimitNOFILE"), "{details}");
}

/// The haproxy binary the harness runs.
fn real_haproxy() -> &'static str {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/usr/sbin/haproxy")
}

/// An `haproxy_cmd` that runs the real haproxy, but records when each
/// configuration check (`-c`, which upload and reload run under the load
/// balancer's lock) of a load balancer begins and ends, and holds each for
/// a moment so that checks running at the same time overlap visibly.
fn recording_haproxy(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = dir.join("haproxy");
    let log = dir.join("checks.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \" $* \" in *\" -c \"*) ;; *) exec {real} \"$@\" ;; esac\n\
             cfg=; prev=\n\
             for arg in \"$@\"; do [ \"$prev\" = -f ] && [ -z \"$cfg\" ] && cfg=$arg; prev=$arg; done\n\
             lb=$(basename \"$(dirname \"$cfg\")\")\n\
             start=$(date +%s%N)\n\
             sleep 0.3\n\
             {real} \"$@\"; status=$?\n\
             echo \"$lb $start $(date +%s%N)\" >> {log}\n\
             exit $status\n",
            real = real_haproxy(),
            log = log.display(),
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    (script, log)
}

/// `(load balancer, start, end)` of every recorded check.
fn checks(log: &std::path::Path) -> Vec<(String, u128, u128)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[0].to_owned(), words[1].parse().expect("start"), words[2].parse().expect("end"))
        })
        .collect()
}

#[tokio::test]
async fn operations_on_different_load_balancers_run_in_parallel_and_on_one_are_serialised() {
    let wrapper_dir = tempfile::tempdir().expect("tempdir");
    let (haproxy, log) = recording_haproxy(wrapper_dir.path());
    let agent = builder().option("haproxy_amphora", "haproxy_cmd", &haproxy.display().to_string()).start();
    let client = Arc::new(agent.client());
    let ids: Vec<String> = (0..4).map(|i| format!("{i:08}-aaaa-4bbb-8ccc-dddddddddddd")).collect();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let config = lb_config_with(&agent, id, &format!("listener-{i}"), 1, &format!("127.0.0.1:{}", 9000 + i), 500);
        let path = upload_path(&agent, id);
        let id = id.clone();
        let client = Arc::new(agent.client());
        tasks.push(tokio::spawn(async move {
            assert_eq!(client.put(&path, config).await.status, 202);
            for action in ["start", "reload", "reload", "stop", "start"] {
                let reply = client.put(&format!("/1.0/loadbalancer/{id}/{action}"), "").await;
                assert_eq!(reply.status, 202, "{id} {action}: {}", reply.text());
            }
        }));
    }
    // Concurrent actions on one load balancer.
    for _ in 0..4 {
        let client = Arc::new(agent.client());
        let id = ids[0].clone();
        tasks.push(tokio::spawn(async move {
            wait::until("the first load balancer to exist", WAIT, || async {
                (client.get(&format!("/1.0/loadbalancer/{id}/haproxy")).await.status == 200).then_some(())
            })
            .await;
            let reply = client.put(&format!("/1.0/loadbalancer/{id}/reload"), "").await;
            assert_eq!(reply.status, 202, "{}", reply.text());
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let statuses = listener_status(&client).await;
    assert_eq!(statuses.len(), 4);
    assert!(statuses.iter().all(|s| s.status == ListenerState::Active), "{statuses:?}");
    for id in &ids {
        let pid = agent.haproxy_pid(id).expect("pid");
        assert!(kill(Pid::from_raw(pid), None).is_ok());
    }

    let checks = checks(&log);
    // One upload and two reloads per load balancer, four more reloads of
    // the first (a reload that finds haproxy stopped starts it: no check).
    assert!(checks.len() >= 4 * 3, "{checks:?}");
    let overlap = |a: &(String, u128, u128), b: &(String, u128, u128)| a.1 < b.2 && b.1 < a.2;
    let mut parallel = false;
    for (i, a) in checks.iter().enumerate() {
        for b in &checks[i + 1..] {
            if a.0 == b.0 {
                assert!(!overlap(a, b), "two operations on {} ran at once: {a:?} {b:?}", a.0);
            } else {
                parallel |= overlap(a, b);
            }
        }
    }
    assert!(parallel, "operations on different load balancers never ran at the same time: {checks:?}");
}
