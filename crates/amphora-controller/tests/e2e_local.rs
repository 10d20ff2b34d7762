//! The whole system on this host: the controller binary creates amphorae
//! (namespaces running our agent), configures them through the agent API
//! with its own certificates, receives their heartbeats and replaces the
//! ones that die, while a client namespace sends real HTTP traffic through
//! the VIP to HTTP servers on the member network.
//!
//! Needs root, haproxy and the workspace's `amphora-agent` binary.

mod common;
mod e2e_support;

use std::net::SocketAddr;
use std::time::Duration;

use amphora_controller::jobs::JobKind;
use amphora_controller::local::{DEFAULT_MEMBER_SUBNET_ID, DEFAULT_VIP_SUBNET_ID};
use amphora_controller::worker::flows;
use e2e_support::{Engine, System, Topology};
use serde_json::{Value, json};

const BUILD: Duration = Duration::from_secs(180);

struct Deployed {
    lb: String,
    vip: SocketAddr,
    client: usize,
    members: Vec<(usize, String)>,
    pool: String,
}

/// A load balancer with an HTTP listener on port 80, a round-robin pool
/// with an HTTP health monitor, and two members (HTTP servers answering
/// `member-1` and `member-2` on port 8080 of the member network).
async fn deploy(sys: &mut System) -> Deployed {
    let (_, _, client) = sys.host(DEFAULT_VIP_SUBNET_ID).await;
    let mut servers = Vec::new();
    for body in ["member-1", "member-2"] {
        servers.push(sys.http_server(DEFAULT_MEMBER_SUBNET_ID, body).await);
    }
    let (lb, vip) = sys.create_lb("e2e", DEFAULT_VIP_SUBNET_ID, BUILD).await;
    let pool_id = sys.http_listener_and_pool(&lb).await;
    sys.create(
        &lb,
        "healthmonitors",
        "healthmonitor",
        json!({"pool_id": pool_id, "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 1,
               "max_retries_down": 1, "url_path": "/"}),
    )
    .await;
    let mut members = Vec::new();
    for (address, index) in servers {
        members.push((index, sys.add_member(&lb, &pool_id, address, DEFAULT_MEMBER_SUBNET_ID).await));
    }
    Deployed { lb, vip: SocketAddr::new(vip, 80), client, members, pool: pool_id }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_through_the_vip_is_balanced_a_dead_member_is_marked_down_and_stats_count_the_requests() {
    balanced_member_down_and_stats(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs AMPHORA_TEST_POSTGRES; scripts/test.sh runs it with a PostgreSQL server"]
async fn on_postgresql_http_through_the_vip_is_balanced_a_dead_member_is_marked_down_and_stats_count_the_requests() {
    balanced_member_down_and_stats(Engine::Postgres).await;
}

async fn balanced_member_down_and_stats(engine: Engine) {
    let mut sys = System::start_on(Topology::Single, engine).await;
    let d = deploy(&mut sys).await;

    // Round robin over both members once haproxy has them up.
    let seen = sys
        .until("both members to answer through the VIP", Duration::from_secs(60), || async {
            let seen = sys.send(d.client, d.vip, 10).await;
            (seen.get("member-1") == Some(&5) && seen.get("member-2") == Some(&5)).then_some(seen)
        })
        .await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Heartbeats bring the members' health monitor verdicts to the API.
    for (_, member) in &d.members {
        sys.until("a member ONLINE from heartbeats", Duration::from_secs(30), || async {
            (sys.member_status(&d.pool, member).await == "ONLINE").then_some(())
        })
        .await;
    }

    // Member 2's server dies: its monitor marks it down, traffic goes to
    // member 1 only, and the API shows it ERROR.
    let (index, member2) = d.members[1].clone();
    sys.stop_host(index);
    sys.until("member 2 ERROR from heartbeats", Duration::from_secs(30), || async {
        (sys.member_status(&d.pool, &member2).await == "ERROR").then_some(())
    })
    .await;
    let seen = sys.send(d.client, d.vip, 10).await;
    assert_eq!(seen.get("member-1"), Some(&10), "{seen:?}");
    let lb = sys.api.get(&format!("/v2/lbaas/loadbalancers/{}", d.lb)).await;
    assert_eq!(lb["loadbalancer"]["operating_status"], "DEGRADED", "{lb}");

    // The amphora's statistics, from v3 heartbeats, count what was sent.
    let amphora = sys.amphorae(&d.lb).await[0]["id"].as_str().expect("an amphora").to_owned();
    sys.until("the amphora's stats to count at least 20 requests", Duration::from_secs(15), || async {
        let stats = sys.api.get(&format!("/v2/octavia/amphorae/{amphora}/stats")).await;
        let total: i64 = stats["amphora_stats"]
            .as_array()
            .map(|all| all.iter().filter_map(|s| s["total_connections"].as_i64()).sum())
            .unwrap_or(0);
        (total >= 20).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_single_amphora_is_detected_replaced_and_traffic_resumes() {
    dead_single_amphora_replaced(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs AMPHORA_TEST_POSTGRES; scripts/test.sh runs it with a PostgreSQL server"]
async fn on_postgresql_a_dead_single_amphora_is_detected_replaced_and_traffic_resumes() {
    dead_single_amphora_replaced(Engine::Postgres).await;
}

async fn dead_single_amphora_replaced(engine: Engine) {
    let mut sys = System::start_on(Topology::Single, engine).await;
    let d = deploy(&mut sys).await;
    sys.until("traffic through the VIP", Duration::from_secs(60), || async {
        let seen = sys.send(d.client, d.vip, 4).await;
        (!seen.contains_key("(failed)")).then_some(())
    })
    .await;
    let before = sys.amphorae(&d.lb).await;
    assert_eq!(before.len(), 1);
    let dead = before[0]["id"].as_str().expect("an amphora").to_owned();

    sys.kill_amphora(&dead).await;
    // heartbeat_timeout is 4 s: the health manager queues a failover, the
    // worker builds a replacement, configures it and deletes the dead one.
    let replaced = sys
        .until("a new ALLOCATED amphora", BUILD, || async {
            let amps = sys.amphorae(&d.lb).await;
            let live: Vec<Value> = amps.into_iter().filter(|a| a["status"] == "ALLOCATED").collect();
            (live.len() == 1 && live[0]["id"] != dead.as_str()).then(|| live[0].clone())
        })
        .await;
    sys.wait_lb(&d.lb, "ACTIVE", BUILD).await;
    assert_eq!(replaced["role"], "STANDALONE");
    sys.until("traffic through the VIP again", Duration::from_secs(60), || async {
        let seen = sys.send(d.client, d.vip, 10).await;
        (seen.get("member-1") == Some(&5) && seen.get("member-2") == Some(&5)).then_some(())
    })
    .await;
    // The dead amphora is deleted (hidden from the API, as upstream's).
    sys.api.expect(404, "GET", &format!("/v2/octavia/amphorae/{dead}"), None).await;
}

/// Whether the VIP is configured inside an amphora's haproxy namespace.
fn holds_vip(sys: &System, amphora_id: &str, vip: std::net::IpAddr) -> bool {
    let ns = sys.config.local_network.haproxy_namespace(amphora_id);
    std::process::Command::new("ip")
        .args(["-n", &ns, "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn active_standby_moves_the_vip_to_the_standby_when_the_holder_dies_and_rebuilds_the_pair() {
    let mut sys = System::start(Topology::ActiveStandby);
    let d = deploy(&mut sys).await;
    sys.until("traffic through the VIP", Duration::from_secs(60), || async {
        let seen = sys.send(d.client, d.vip, 10).await;
        (seen.get("member-1") == Some(&5) && seen.get("member-2") == Some(&5)).then_some(())
    })
    .await;
    let amps = sys.amphorae(&d.lb).await;
    assert_eq!(amps.len(), 2, "{amps:?}");
    let ids: Vec<String> = amps.iter().map(|a| a["id"].as_str().expect("an amphora id").to_owned()).collect();
    // keepalived runs with `nopreempt` (as upstream renders it): the
    // amphora whose track script passes first takes the VIP and keeps it,
    // whichever role the database gave it. Exactly one holds it.
    let (holder, standby) = sys
        .until("keepalived to give the VIP to one amphora", Duration::from_secs(30), || async {
            match (holds_vip(&sys, &ids[0], d.vip.ip()), holds_vip(&sys, &ids[1], d.vip.ip())) {
                (true, false) => Some((ids[0].clone(), ids[1].clone())),
                (false, true) => Some((ids[1].clone(), ids[0].clone())),
                _ => None,
            }
        })
        .await;

    sys.kill_amphora(&holder).await;
    // VRRP moves the VIP to the standby on its own: no controller involved.
    sys.until("the standby to take the VIP", Duration::from_secs(15), || async {
        holds_vip(&sys, &standby, d.vip.ip()).then_some(())
    })
    .await;
    sys.until("traffic through the standby", Duration::from_secs(15), || async {
        let seen = sys.send(d.client, d.vip, 4).await;
        (!seen.contains_key("(failed)")).then_some(())
    })
    .await;

    // The controller rebuilds the lost amphora: two ALLOCATED again.
    sys.until("a replacement beside the standby", BUILD, || async {
        let amps = sys.amphorae(&d.lb).await;
        let live: Vec<&Value> = amps.iter().filter(|a| a["status"] == "ALLOCATED").collect();
        (live.len() == 2 && live.iter().all(|a| a["id"] != holder.as_str())).then_some(())
    })
    .await;
    sys.wait_lb(&d.lb, "ACTIVE", BUILD).await;
    sys.until("traffic through the VIP after the rebuild", Duration::from_secs(60), || async {
        let seen = sys.send(d.client, d.vip, 10).await;
        (seen.get("member-1") == Some(&5) && seen.get("member-2") == Some(&5)).then_some(())
    })
    .await;
}

/// Runs tests/controller/e2e_sdk.py with the clients' Python; its JSON.
fn sdk(args: &[String]) -> Value {
    let python =
        std::env::var("CLIENTS_PYTHON").expect("CLIENTS_PYTHON must name the python of scripts/clients-venv.sh");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/controller/e2e_sdk.py");
    let out = std::process::Command::new(python).arg(script).args(args).output().expect("run python");
    assert!(out.status.success(), "e2e_sdk.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the clients virtualenv; scripts/test.sh runs it with CLIENTS_PYTHON set"]
async fn openstacksdk_builds_a_load_balancer_that_serves_http_and_deletes_it_with_its_amphora() {
    let mut sys = System::start(Topology::Single);
    let (_, _, client) = sys.host(DEFAULT_VIP_SUBNET_ID).await;
    let mut args = vec![
        "create".to_owned(),
        format!("http://{}", sys.api.addr),
        DEFAULT_VIP_SUBNET_ID.to_owned(),
        DEFAULT_MEMBER_SUBNET_ID.to_owned(),
    ];
    for body in ["member-1", "member-2"] {
        let (address, _) = sys.http_server(DEFAULT_MEMBER_SUBNET_ID, body).await;
        args.push(address.to_string());
    }
    let built = tokio::task::spawn_blocking(move || sdk(&args)).await.expect("sdk");
    let vip: std::net::IpAddr = built["vip"].as_str().expect("a VIP").parse().expect("an address");
    let vip = SocketAddr::new(vip, 80);
    sys.until("both members through the VIP", Duration::from_secs(60), || async {
        let seen = sys.send(client, vip, 10).await;
        (seen.get("member-1") == Some(&5) && seen.get("member-2") == Some(&5)).then_some(())
    })
    .await;

    let amphora = built["amphorae"][0].as_str().expect("an amphora").to_owned();
    let namespace = sys.config.local_network.amphora_namespace(&amphora);
    assert!(std::path::Path::new(&format!("/run/netns/{namespace}")).exists());
    let args = vec!["delete".to_owned(), format!("http://{}", sys.api.addr), built["lb"].as_str().unwrap().to_owned()];
    tokio::task::spawn_blocking(move || sdk(&args)).await.expect("sdk");
    // The amphora went with its load balancer: namespace and processes.
    sys.until("the amphora's namespace to be gone", Duration::from_secs(30), || async {
        (!std::path::Path::new(&format!("/run/netns/{namespace}")).exists()).then_some(())
    })
    .await;
    let seen = sys.send(client, vip, 1).await;
    assert_eq!(seen.get("(failed)"), Some(&1), "the VIP still answers: {seen:?}");
}

/// What exists on the host and in the port table that no live object
/// accounts for: amphora namespaces of amphorae that are not live, live
/// amphorae without a namespace, and ports whose owner is gone.
async fn orphans(sys: &System) -> Vec<String> {
    let db = sys.db().await;
    let live_amps: Vec<String> = sqlx::query_scalar("SELECT id FROM amphora WHERE status <> 'DELETED'")
        .fetch_all(&db.pool)
        .await
        .expect("amphorae");
    let live_lbs: Vec<String> =
        sqlx::query_scalar("SELECT id FROM load_balancer WHERE provisioning_status <> 'DELETED'")
            .fetch_all(&db.pool)
            .await
            .expect("load balancers");
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT owner FROM local_port").fetch_all(&db.pool).await.expect("ports");
    let net = &sys.config.local_network;
    let mut found = Vec::new();
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let amp_prefix = format!("{}-amp-", net.name_prefix);
    for ns in namespaces.iter().filter(|n| n.starts_with(&amp_prefix)) {
        if !live_amps.iter().any(|a| net.amphora_namespace(a) == *ns) {
            found.push(format!("namespace {ns} of no live amphora"));
        }
    }
    found.extend(e2e_support::stray_ports(&owners, &live_amps, &live_lbs));
    // An amphora's directory is named by the first 12 letters and digits of
    // its id; its agent, haproxy and keepalived name files below it.
    let short = |id: &str| id.chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>();
    let live_dirs: Vec<String> = live_amps.iter().map(|a| short(a)).collect();
    let state_dir = &sys.config.local_compute.state_dir;
    for entry in std::fs::read_dir(state_dir).into_iter().flatten().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !live_dirs.contains(&name) {
            found.push(format!("directory {name} of no live amphora"));
        }
    }
    let below = format!("{}/", state_dir.display());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Some(at) = cmdline.find(&below) else { continue };
        let dir: String = cmdline[at + below.len()..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !live_dirs.contains(&dir) {
            found.push(format!("process {pid} of no live amphora: {cmdline}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_at_each_step_of_a_create_resumes_it_and_orphans_nothing() {
    let mut sys = System::start(Topology::Single);
    let db = sys.db().await;
    // The steps of a SINGLE create (worker::flows::build): kill the
    // controller once the job has reached each of them.
    for kill_at in 1..=11i64 {
        let created = sys
            .api
            .expect(
                201,
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(&json!({"loadbalancer": {"name": format!("kill-{kill_at}"), "vip_subnet_id": DEFAULT_VIP_SUBNET_ID}})),
            )
            .await;
        let lb = created["loadbalancer"]["id"].as_str().expect("an id").to_owned();
        sys.until(&format!("the create job at step {kill_at}"), BUILD, || async {
            let row: Option<(i64, String)> = sqlx::query_as("SELECT step, state FROM job WHERE target_id = $1")
                .bind(lb.as_str())
                .fetch_optional(&db.pool)
                .await
                .expect("job");
            row.filter(|(step, state)| *step >= kill_at || state != "QUEUED" && state != "RUNNING").map(|_| ())
        })
        .await;
        sys.kill_and_restart_controller();
        sys.wait_lb(&lb, "ACTIVE", BUILD).await;
        let amps = sys.amphorae(&lb).await;
        assert_eq!(amps.len(), 1, "killed at step {kill_at}: {amps:?}");
        assert_eq!(amps[0]["status"], "ALLOCATED", "killed at step {kill_at}");
        let left = orphans(&sys).await;
        assert!(left.is_empty(), "killed at step {kill_at}: {left:?}");
        sys.api.expect(204, "DELETE", &format!("/v2/lbaas/loadbalancers/{lb}?cascade=true"), None).await;
        sys.until("the load balancer to be deleted", BUILD, || async {
            let (status, body) = sys.api.call("GET", &format!("/v2/lbaas/loadbalancers/{lb}"), None).await;
            (status == 404 || body["loadbalancer"]["provisioning_status"] == "DELETED").then_some(())
        })
        .await;
    }
    let left = orphans(&sys).await;
    assert!(left.is_empty(), "after the deletes: {left:?}");
}

/// The notAfter of the first certificate in a PEM file.
fn not_after(path: &std::path::Path) -> time::OffsetDateTime {
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).next().expect("a certificate").expect("PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("a certificate");
    cert.validity().not_after.to_datetime()
}

#[tokio::test(flavor = "multi_thread")]
async fn housekeeping_rotates_an_amphora_certificate_through_the_agent_before_it_expires() {
    // Certificates valid for 2 minutes are due 110 s before they expire:
    // the first pass after the amphora is built rotates it.
    let sys = System::start_with(
        Topology::Single,
        "[certificates]\ncert_validity_time = 120\n[house_keeping]\ncert_interval = 1\ncert_expiry_buffer = 110\n",
    );
    let (lb, _) = sys.create_lb("rotate", DEFAULT_VIP_SUBNET_ID, BUILD).await;
    let amp = sys.amphorae(&lb).await[0].clone();
    let id = amp["id"].as_str().expect("an id").to_owned();
    let first = amp["cert_expiration"].as_str().expect("an expiry").to_owned();
    let short: String = id.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    let served = sys.config.local_compute.state_dir.join(short).join("server.pem");
    let installed_first = not_after(&served);

    let rotated = sys
        .until("a rotated certificate", Duration::from_secs(60), || async {
            let amp = sys.api.get(&format!("/v2/octavia/amphorae/{id}")).await["amphora"].clone();
            let now = amp["cert_expiration"].as_str().unwrap_or_default().to_owned();
            (now > first && amp["cert_busy"] == false).then_some(now)
        })
        .await;
    // The agent installed it: its certificate file now expires when the
    // controller recorded, later than the first one.
    let installed = not_after(&served);
    assert!(installed > installed_first, "{installed} vs {installed_first}");
    assert_eq!(amphora_controller::db::format_time(installed), rotated);
    // And it still answers the controller over mutual TLS with it.
    sys.api.expect(202, "PUT", &format!("/v2/octavia/amphorae/{id}/config"), None).await;
    let db = sys.db().await;
    sys.until("the configure job to succeed", Duration::from_secs(60), || async {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM job WHERE kind = 'configure_amphora' AND target_id = $1")
                .bind(id.as_str())
                .fetch_optional(&db.pool)
                .await
                .expect("job");
        assert_ne!(state.as_deref(), Some("FAILED"), "configure failed:\n{}", e2e_support::tail(&sys.log(), 40));
        (state.as_deref() == Some("DONE")).then_some(())
    })
    .await;
}

/// The job of `kind` last queued for `target`: (id, state, step, payload).
async fn last_job(
    db: &amphora_controller::db::Db,
    kind: JobKind,
    target: &str,
) -> Option<(String, String, i64, String)> {
    sqlx::query_as(
        "SELECT id, state, step, payload FROM job WHERE kind = $1 AND target_id = $2 ORDER BY created_at DESC, id DESC",
    )
    .bind(kind.as_str())
    .bind(target)
    .fetch_all(&db.pool)
    .await
    .expect("jobs")
    .into_iter()
    .next()
}

/// Some when four requests through the VIP all reach the one member.
async fn all_served(sys: &System, client: usize, vip: SocketAddr) -> Option<()> {
    let seen = sys.send(client, vip, 4).await;
    (seen.get("member-1") == Some(&4)).then_some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_at_each_step_of_a_failover_resumes_it_and_orphans_nothing() {
    failover_killed_at_each_step(Topology::Single, JobKind::FailoverAmphora).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_at_each_step_of_an_active_standby_load_balancer_failover_resumes_it_and_orphans_nothing() {
    failover_killed_at_each_step(Topology::ActiveStandby, JobKind::FailoverLoadBalancer).await;
}

/// Fails over (an amphora, or the whole load balancer) once per step of
/// the failover flow, killing the controller when the job has reached
/// that step: after the restart the job completes, the load balancer has
/// its full set of new amphorae, traffic flows and nothing is orphaned.
async fn failover_killed_at_each_step(topology: Topology, kind: JobKind) {
    let mut sys = System::start(topology);
    let db = sys.db().await;
    let (_, _, client) = sys.host(DEFAULT_VIP_SUBNET_ID).await;
    let (address, _) = sys.http_server(DEFAULT_MEMBER_SUBNET_ID, "member-1").await;
    let (lb, vip) = sys.create_lb("failover-kill", DEFAULT_VIP_SUBNET_ID, BUILD).await;
    let vip = SocketAddr::new(vip, 80);
    let pool = sys.http_listener_and_pool(&lb).await;
    sys.add_member(&lb, &pool, address, DEFAULT_MEMBER_SUBNET_ID).await;
    sys.until("traffic through the VIP", Duration::from_secs(60), || all_served(&sys, client, vip)).await;
    let size = if topology == Topology::Single { 1 } else { 2 };

    // Kill the controller once the failover job has reached each step of
    // its flow (the number of steps is the planned flow's, so the test
    // follows the flow when steps are added); 0 is "claimed, maybe still
    // planning". One load balancer serves every round.
    let mut steps: Option<i64> = None;
    let mut kill_at = 0i64;
    while steps.is_none_or(|n| kill_at < n) {
        let amps = sys.amphorae(&lb).await;
        assert_eq!(amps.len(), size, "before the failover killed at step {kill_at}: {amps:?}");
        let before: Vec<String> = amps.iter().map(|a| a["id"].as_str().expect("an amphora").to_owned()).collect();
        let target = if kind == JobKind::FailoverAmphora {
            sys.api.expect(202, "PUT", &format!("/v2/octavia/amphorae/{}/failover", before[0]), None).await;
            before[0].clone()
        } else {
            sys.api.expect(202, "PUT", &format!("/v2/lbaas/loadbalancers/{lb}/failover"), None).await;
            lb.clone()
        };
        let (job, state, step, payload) =
            amphora_testkit::wait::until(&format!("the failover job at step {kill_at}"), BUILD, || async {
                last_job(&db, kind, &target).await.filter(|(_, state, step, _)| {
                    (state == "RUNNING" && *step >= kill_at) || (state != "QUEUED" && state != "RUNNING")
                })
            })
            .await;
        assert_ne!(state, "FAILED", "the failover failed before the kill at step {kill_at}");
        if steps.is_none() {
            // The job's payload is planned once it runs step 0's successor.
            let payload = amphora_controller::worker::flow::parse_payload(&payload);
            if payload.get("planned").is_some() {
                steps = Some(flows::build(kind, &payload).len() as i64);
            }
        }
        sys.kill_and_restart_controller();
        eprintln!("failover job {job}: controller killed at step {step} (waited for {kill_at} of {steps:?})");

        sys.wait_lb(&lb, "ACTIVE", BUILD).await;
        let (_, state, _, payload) = last_job(&db, kind, &target).await.expect("the job");
        assert_eq!(
            state,
            "DONE",
            "killed at step {step} (waited for {kill_at}):\n{}",
            e2e_support::tail(&sys.log(), 60)
        );
        if steps.is_none() {
            let payload = amphora_controller::worker::flow::parse_payload(&payload);
            steps = Some(flows::build(kind, &payload).len() as i64);
        }
        let amps = sys.amphorae(&lb).await;
        assert_eq!(amps.len(), size, "killed at step {step} of job {job}: {amps:?}");
        assert!(amps.iter().all(|a| a["status"] == "ALLOCATED"), "killed at step {step}: {amps:?}");
        let replaced = if kind == JobKind::FailoverAmphora { &before[..1] } else { &before[..] };
        assert!(
            amps.iter().all(|a| !replaced.iter().any(|old| a["id"] == old.as_str())),
            "killed at step {step}: a failed amphora is still there: {amps:?}"
        );
        if topology == Topology::ActiveStandby {
            let mut roles: Vec<&str> = amps.iter().filter_map(|a| a["role"].as_str()).collect();
            roles.sort_unstable();
            assert_eq!(roles, ["BACKUP", "MASTER"], "killed at step {step}");
        }
        let what = format!("traffic through the VIP after a kill at step {step}");
        sys.until(&what, Duration::from_secs(60), || all_served(&sys, client, vip)).await;
        let left = orphans(&sys).await;
        assert!(left.is_empty(), "killed at step {step}: {left:?}");
        kill_at += 1;
    }
    assert!(kill_at >= 10, "a failover of {kill_at} steps is shorter than expected");
}

/// Whether a link with `mac` is in network namespace `ns`.
fn has_mac(ns: &str, mac: &str) -> bool {
    std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_ascii_lowercase().contains(&format!("link/ether {mac} ")))
        .unwrap_or(false)
}

/// The member ports (owner, id, MAC) of an amphora, from the port table.
async fn member_ports(sys: &System, amphora: &str) -> Vec<(String, String, String)> {
    let db = sys.db().await;
    sqlx::query_as("SELECT owner, id, mac_address FROM local_port WHERE owner LIKE 'member:%' ORDER BY owner")
        .fetch_all(&db.pool)
        .await
        .expect("ports")
        .into_iter()
        .filter(|(owner, _, _): &(String, String, String)| owner.starts_with(&format!("member:{amphora}:")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_subnet_no_member_uses_any_more_is_unplugged_from_the_amphora() {
    let mut sys = System::start(Topology::Single);
    let (_, _, client) = sys.host(DEFAULT_VIP_SUBNET_ID).await;
    // One server on the VIP subnet (reached through the VRRP port, no
    // member port) and one on the member subnet.
    let (on_vip, _) = sys.http_server(DEFAULT_VIP_SUBNET_ID, "on-vip").await;
    let (on_member_address, _) = sys.http_server(DEFAULT_MEMBER_SUBNET_ID, "on-member").await;
    let (lb, vip) = sys.create_lb("unplug", DEFAULT_VIP_SUBNET_ID, BUILD).await;
    let vip = SocketAddr::new(vip, 80);
    let amphora = sys.amphorae(&lb).await[0]["id"].as_str().expect("an amphora").to_owned();
    let haproxy_ns = sys.config.local_network.haproxy_namespace(&amphora);
    let vm_ns = sys.config.local_network.amphora_namespace(&amphora);
    let fabric_ns = sys.config.local_network.fabric_namespace.clone();
    let member_owner = format!("member:{amphora}:{DEFAULT_MEMBER_SUBNET_ID}");

    let pool = sys.http_listener_and_pool(&lb).await;
    sys.add_member(&lb, &pool, on_vip, DEFAULT_VIP_SUBNET_ID).await;
    assert!(member_ports(&sys, &amphora).await.is_empty(), "a member on the VIP subnet needs no member port");

    // A member on the member subnet: the amphora gets a port there.
    let on_member = sys.add_member(&lb, &pool, on_member_address, DEFAULT_MEMBER_SUBNET_ID).await;
    let ports = member_ports(&sys, &amphora).await;
    assert_eq!(ports.len(), 1, "{ports:?}");
    let (owner, port_id, mac) = ports[0].clone();
    assert_eq!(owner, member_owner);
    assert!(has_mac(&haproxy_ns, &mac), "the member port {mac} is not in {haproxy_ns}");
    sys.until("both members through the VIP", Duration::from_secs(60), || async {
        let seen = sys.send(client, vip, 10).await;
        (seen.get("on-vip") == Some(&5) && seen.get("on-member") == Some(&5)).then_some(())
    })
    .await;

    // Its only member goes: the port leaves the amphora and the table.
    sys.api.expect(204, "DELETE", &format!("/v2/lbaas/pools/{pool}/members/{on_member}"), None).await;
    sys.wait_lb(&lb, "ACTIVE", BUILD).await;
    assert!(member_ports(&sys, &amphora).await.is_empty(), "the member port is still allocated");
    let db = sys.db().await;
    let row: Option<String> = sqlx::query_scalar("SELECT id FROM local_port WHERE id = $1")
        .bind(port_id.as_str())
        .fetch_optional(&db.pool)
        .await
        .expect("ports");
    assert_eq!(row, None, "the port's row is still there");
    for ns in [&haproxy_ns, &vm_ns, &fabric_ns] {
        assert!(!has_mac(ns, &mac), "the member port {mac} is still in {ns}");
    }
    let fabric_link = amphora_controller::local::network::fabric_link(&port_id);
    let links = std::process::Command::new("ip").args(["-n", &fabric_ns, "-o", "link", "show"]).output().expect("ip");
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!(" {fabric_link}@")), "{fabric_link} is left");
    // The remaining member still serves every request.
    let seen = sys.send(client, vip, 10).await;
    assert_eq!(seen.get("on-vip"), Some(&10), "{seen:?}");

    // A pool deleted with its members also frees their subnet's port.
    let second = sys
        .create(&lb, "pools", "pool", json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}))
        .await;
    let second = second["id"].as_str().expect("a pool id").to_owned();
    sys.add_member(&lb, &second, on_member_address, DEFAULT_MEMBER_SUBNET_ID).await;
    let ports = member_ports(&sys, &amphora).await;
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert!(has_mac(&haproxy_ns, &ports[0].2), "the new member port is not in {haproxy_ns}");
    sys.api.expect(204, "DELETE", &format!("/v2/lbaas/pools/{second}"), None).await;
    sys.wait_lb(&lb, "ACTIVE", BUILD).await;
    assert!(member_ports(&sys, &amphora).await.is_empty(), "the port of the deleted pool's member is left");
    assert!(!has_mac(&haproxy_ns, &ports[0].2), "the deleted pool's member port is still in {haproxy_ns}");
    let seen = sys.send(client, vip, 10).await;
    assert_eq!(seen.get("on-vip"), Some(&10), "{seen:?}");
    let left = orphans(&sys).await;
    assert!(left.is_empty(), "{left:?}");
}
