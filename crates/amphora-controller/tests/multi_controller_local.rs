//! Real amphorae under three controller processes on one PostgreSQL
//! database, with the local compute and network drivers (each amphora a
//! network namespace running our agent and haproxy): a SINGLE load
//! balancer is created, then its amphora failed over, and each time the
//! controller running the job is SIGKILLed at a seeded random step.
//! Another controller takes the job over once its lease expires; the load
//! balancer ends ACTIVE, the new amphora serving traffic through the VIP,
//! and nothing is orphaned: no amphora namespace, directory, process or
//! port without a live amphora row, none of those missing for a live one.
//! Then, every controller restarted in turn (so all of them know the new
//! amphora), its agent is killed: it is started again once, not once per
//! controller; and an agent whose pid file is lost is found and kept.
//!
//! Every amphora is told all three controllers' heartbeat addresses
//! (`controller_ip_port_list`), one port each on the management address.
//! Needs root, haproxy, the workspace's `amphora-agent` binary and
//! AMPHORA_TEST_POSTGRES. Prints its seed; `MULTI_CONTROLLER_SEED=<n>`
//! replays the controllers asked and the kill steps.

mod common;
mod e2e_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amphora_controller::db::Db;
use amphora_controller::local::{DEFAULT_MEMBER_SUBNET_ID, DEFAULT_VIP_SUBNET_ID};
use amphora_testkit::wait;
use e2e_support::{Api, Engine, System, Topology, tail};
use sqlx::Row;

const BIN: &str = env!("CARGO_BIN_EXE_amphora-controller");
const BUILD: Duration = Duration::from_secs(120);
/// Heartbeat ports of controllers 0, 1 and 2 on this test's own management
/// address (a subnet leased to this test alone).
const HEALTH_PORTS: [u16; 3] = [5555, 5556, 5557];

/// Controllers 1 and 2 (the `System` runs controller 0): the system's
/// configuration plus `controller-{i}.conf`.
struct Others {
    dir: PathBuf,
    children: Vec<Option<Child>>,
    apis: Vec<Option<SocketAddr>>,
}

impl Others {
    fn log_path(dir: &Path, i: usize) -> PathBuf {
        if i == 0 { dir.join("controller.log") } else { dir.join(format!("controller-{i}.log")) }
    }

    fn start(&mut self, i: usize) {
        assert!(i > 0, "controller 0 is the system's");
        let ready = self.dir.join(format!("ready-{i}"));
        let _ = std::fs::remove_file(&ready);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(Others::log_path(&self.dir, i)).expect("log");
        let child = Command::new(BIN)
            .arg("--config-file")
            .arg(self.dir.join("octavia.conf"))
            .arg("--config-file")
            .arg(self.dir.join("extra.conf"))
            .arg("--config-file")
            .arg(self.dir.join(format!("controller-{i}.conf")))
            .args(["run", "--ready-file"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a controller");
        self.children[i] = Some(child);
        let dir = self.dir.clone();
        let child = self.children[i].as_mut().expect("started");
        let addr = wait::until_blocking(&format!("controller {i} to serve"), Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("controller {i} exited with {status}:\n{}", log_tail(&dir, i));
            }
            std::fs::read_to_string(&ready).ok().and_then(|s| s.trim().parse::<SocketAddr>().ok())
        });
        self.apis[i] = Some(addr);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.apis[i] = None;
    }
}

impl Drop for Others {
    fn drop(&mut self) {
        for i in 1..self.children.len() {
            self.kill(i);
        }
    }
}

fn log_tail(dir: &Path, i: usize) -> String {
    tail(&std::fs::read_to_string(Others::log_path(dir, i)).unwrap_or_default(), 40)
}

fn logs(dir: &Path) -> String {
    (0..3).map(|i| format!("--- controller {i} ---\n{}", log_tail(dir, i))).collect::<Vec<_>>().join("\n")
}

/// The controller whose worker has id `owner` (its log names it).
fn controller_of(dir: &Path, owner: &str) -> Option<usize> {
    (0..3).find(|i| std::fs::read_to_string(Others::log_path(dir, *i)).unwrap_or_default().contains(owner))
}

/// splitmix64 over the seed: the step to kill at, replayable.
fn draw(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed() -> u64 {
    let seed = match std::env::var("MULTI_CONTROLLER_SEED") {
        Ok(s) if !s.trim().is_empty() => {
            s.trim().parse().unwrap_or_else(|_| panic!("MULTI_CONTROLLER_SEED={s:?} is not a number"))
        }
        _ => SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64,
    };
    println!("MULTI_CONTROLLER_SEED={seed}");
    seed
}

async fn live_amphorae(db: &Db) -> Vec<(String, String, Option<String>)> {
    sqlx::query("SELECT id, status, load_balancer_id FROM amphora WHERE status <> 'DELETED' ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("amphorae")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// An amphora's directory name: the first 12 letters and digits of its id
/// (what the local compute documents).
fn short(id: &str) -> String {
    id.chars().filter(char::is_ascii_alphanumeric).take(12).collect()
}

/// What exists on the host or in the port table that no live amphora or
/// load balancer accounts for, and what a live amphora lacks.
async fn orphans(sys: &System, db: &Db) -> Vec<String> {
    let live: Vec<String> = live_amphorae(db).await.into_iter().map(|(id, _, _)| id).collect();
    let live_lbs: Vec<String> =
        sqlx::query_scalar("SELECT id FROM load_balancer WHERE provisioning_status <> 'DELETED'")
            .fetch_all(&db.pool)
            .await
            .expect("load balancers");
    let net = &sys.config.local_network;
    let mut found = Vec::new();
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    for prefix in [format!("{}-amp-", net.name_prefix), format!("{}-lb-", net.name_prefix)] {
        for ns in namespaces.iter().filter(|n| n.starts_with(&prefix)) {
            if !live.iter().any(|a| net.amphora_namespace(a) == *ns || net.haproxy_namespace(a) == *ns) {
                found.push(format!("namespace {ns} of no live amphora"));
            }
        }
    }
    let state_dir = &sys.config.local_compute.state_dir;
    let live_dirs: Vec<String> = live.iter().map(|a| short(a)).collect();
    for entry in std::fs::read_dir(state_dir).into_iter().flatten().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !live_dirs.contains(&name) {
            found.push(format!("directory {name} of no live amphora"));
        }
    }
    // Agents, haproxy and keepalived name files below their amphora's
    // directory on their command lines.
    let below = format!("{}/", state_dir.display());
    let mut agents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Some(at) = cmdline.find(&below) else { continue };
        let dir: String = cmdline[at + below.len()..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !live_dirs.contains(&dir) {
            found.push(format!("process {pid} of no live amphora: {cmdline}"));
        } else if cmdline.contains("amphora-agent.conf") {
            agents.push(dir);
        }
    }
    for amp in &live {
        if !namespaces.contains(&net.amphora_namespace(amp)) {
            found.push(format!("live amphora {amp} has no namespace"));
        }
        let n = agents.iter().filter(|d| **d == short(amp)).count();
        if n != 1 {
            found.push(format!("live amphora {amp} has {n} agents"));
        }
    }
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT owner FROM local_port").fetch_all(&db.pool).await.expect("ports");
    found.extend(e2e_support::stray_ports(&owners, &live, &live_lbs));
    found
}

async fn served(sys: &System, client: usize, vip: SocketAddr) -> Option<()> {
    (sys.send(client, vip, 4).await.get("member-1") == Some(&4)).then_some(())
}

/// The API of controller `i`, which must be up.
fn api(sys: &System, others: &Others, i: usize) -> Api {
    if i == 0 { sys.api.clone() } else { Api { addr: others.apis[i].expect("controller up") } }
}

/// Waits until the job of `kind` on `target` runs step `kill_at` or a later
/// one, then SIGKILLs the controller running it (left down): (job, step,
/// victim).
async fn kill_mid_flow(
    sys: &mut System,
    others: &mut Others,
    db: &Db,
    kind: &str,
    target: &str,
    kill_at: i64,
) -> (String, i64, usize) {
    let (job, step, owner) = wait::until(&format!("the {kind} job at step {kill_at}"), BUILD, || async {
        let row = sqlx::query("SELECT id, state, step, owner FROM job WHERE kind = $1 AND target_id = $2")
            .bind(kind)
            .bind(target)
            .fetch_optional(&db.pool)
            .await
            .expect("job")?;
        let state: String = row.get(1);
        assert!(state == "QUEUED" || state == "RUNNING", "the {kind} job ended {state} before step {kill_at}");
        let step: i64 = row.get(2);
        (state == "RUNNING" && step >= kill_at).then(|| (row.get::<String, _>(0), step, row.get::<String, _>(3)))
    })
    .await;
    let dir = sys.dir.path().to_owned();
    let victim = controller_of(&dir, &owner).unwrap_or_else(|| panic!("no controller runs worker {owner}"));
    if victim == 0 {
        sys.kill_controller();
    } else {
        others.kill(victim);
    }
    (job, step, victim)
}

/// Waits for the job to end; asserts another controller than `victim`
/// took it over and finished it. Returns the finisher.
async fn finished_by_another(dir: &Path, db: &Db, job: &str, victim: usize, seed: u64) -> usize {
    let (state, attempts, owner, error) = wait::until("the job to end", BUILD, || async {
        let row = sqlx::query("SELECT state, attempts, owner, error FROM job WHERE id = $1")
            .bind(job)
            .fetch_one(&db.pool)
            .await
            .expect("job");
        let state: String = row.get(0);
        (state == "DONE" || state == "FAILED")
            .then(|| (state, row.get::<i64, _>(1), row.get::<Option<String>, _>(2), row.get::<Option<String>, _>(3)))
    })
    .await;
    assert_eq!(state, "DONE", "seed {seed}: job {job}: {error:?}\n{}", logs(dir));
    assert!(attempts >= 2, "seed {seed}: job {job} ran {attempts} times: nobody took it over");
    let by = owner.as_deref().and_then(|o| controller_of(dir, o));
    assert!(by.is_some_and(|c| c != victim), "seed {seed}: job {job} finished by {owner:?} (controller {by:?})");
    by.expect("checked")
}

/// The victim comes back (and adopts the agents that run).
fn restart(sys: &mut System, others: &mut Others, victim: usize) {
    if victim == 0 {
        sys.restart_controller();
    } else {
        others.start(victim);
    }
}

/// Kills and restarts the three controllers one after the other.
fn restart_each(sys: &mut System, others: &mut Others) {
    for i in 0..3 {
        if i == 0 {
            sys.kill_controller();
        } else {
            others.kill(i);
        }
        restart(sys, others, i);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_and_failover_whose_controller_is_killed_are_finished_by_another_of_three_and_orphan_nothing() {
    let seed = seed();
    let mut sys = System::start_on(Topology::Single, Engine::Postgres).await;
    let dir = sys.dir.path().to_owned();
    // Every controller's heartbeat address in every amphora's list; each
    // controller its own port (controller 0 the default).
    let ip = sys.config.local_network.controller_ip();
    let list = HEALTH_PORTS.iter().map(|p| format!("{ip}:{p}")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        dir.join("extra.conf"),
        format!("[health_manager]\nbind_port = {}\ncontroller_ip_port_list = {list}\n", HEALTH_PORTS[0]),
    )
    .expect("write configuration");
    // Restarted to read it, once its worker made the CA and the client
    // certificate (a kill between the CA's key and its certificate leaves
    // a key alone, which every later start refuses).
    wait::until("controller 0's worker", Duration::from_secs(60), || async {
        sys.log().contains("worker started").then_some(())
    })
    .await;
    sys.kill_and_restart_controller();
    let mut others = Others { dir: dir.clone(), children: (0..3).map(|_| None).collect(), apis: vec![None; 3] };
    for (i, port) in HEALTH_PORTS.iter().enumerate().skip(1) {
        std::fs::write(dir.join(format!("controller-{i}.conf")), format!("[health_manager]\nbind_port = {port}\n"))
            .expect("write configuration");
        others.start(i);
    }
    let db = sys.db().await;
    let (_, _, client) = sys.host(DEFAULT_VIP_SUBNET_ID).await;
    let (address, _) = sys.http_server(DEFAULT_MEMBER_SUBNET_ID, "member-1").await;

    // The create asked of a drawn controller (whose worker is woken at
    // once, so it usually runs the job), and the controller running it
    // killed once the job reached a drawn step (a SINGLE create has more
    // than seven).
    let asked = (draw(seed ^ 1) % 3) as usize;
    let body =
        serde_json::json!({"loadbalancer": {"name": "three-controllers", "vip_subnet_id": DEFAULT_VIP_SUBNET_ID}});
    let created = api(&sys, &others, asked).expect(201, "POST", "/v2/lbaas/loadbalancers", Some(&body)).await;
    let lb = created["loadbalancer"]["id"].as_str().expect("an id").to_owned();
    let kill_at = 1 + (draw(seed ^ 2) % 6) as i64;
    let (job, step, victim) = kill_mid_flow(&mut sys, &mut others, &db, "create_load_balancer", &lb, kill_at).await;
    println!(
        "seed {seed}: create job {job} asked of controller {asked}, at step {step}: its controller {victim} killed"
    );
    let by = finished_by_another(&dir, &db, &job, victim, seed).await;
    println!("seed {seed}: create finished by controller {by}");
    restart(&mut sys, &mut others, victim);
    let active = sys.wait_lb(&lb, "ACTIVE", BUILD).await;
    let vip: std::net::IpAddr = active["vip_address"].as_str().expect("a VIP").parse().expect("an address");
    let vip = SocketAddr::new(vip, 80);
    let pool = sys.http_listener_and_pool(&lb).await;
    sys.add_member(&lb, &pool, address, DEFAULT_MEMBER_SUBNET_ID).await;
    sys.until("traffic through the VIP", Duration::from_secs(60), || served(&sys, client, vip)).await;
    let left = orphans(&sys, &db).await;
    assert!(left.is_empty(), "seed {seed}, after the create: {left:?}");
    let old = live_amphorae(&db).await;
    assert_eq!(old.len(), 1, "{old:?}");
    let old = old[0].0.clone();
    let boot = std::fs::read_to_string(sys.config.local_compute.state_dir.join(short(&old)).join("amphora-agent.conf"))
        .expect("the amphora's boot configuration");
    for port in HEALTH_PORTS {
        assert!(boot.contains(&format!("{ip}:{port}")), "heartbeats do not go to {ip}:{port}:\n{boot}");
    }

    // The same for a failover of its amphora (more than ten steps).
    let asked = (draw(seed ^ 3) % 3) as usize;
    api(&sys, &others, asked).expect(202, "PUT", &format!("/v2/octavia/amphorae/{old}/failover"), None).await;
    let kill_at = 1 + (draw(seed) % 9) as i64;
    let (job, step, victim) = kill_mid_flow(&mut sys, &mut others, &db, "failover_amphora", &old, kill_at).await;
    println!(
        "seed {seed}: failover job {job} asked of controller {asked}, at step {step}: its controller {victim} killed"
    );
    let by = finished_by_another(&dir, &db, &job, victim, seed).await;
    let status: String = sqlx::query_scalar("SELECT provisioning_status FROM load_balancer WHERE id = $1")
        .bind(lb.as_str())
        .fetch_one(&db.pool)
        .await
        .expect("lb");
    assert_eq!(status, "ACTIVE", "seed {seed}");
    let now = live_amphorae(&db).await;
    assert_eq!(now.len(), 1, "seed {seed}: {now:?}");
    assert_ne!(now[0].0, old, "seed {seed}: the failed amphora is still there");
    assert_eq!((now[0].1.as_str(), now[0].2.as_deref()), ("ALLOCATED", Some(lb.as_str())), "seed {seed}");
    sys.until("traffic through the new amphora", Duration::from_secs(60), || served(&sys, client, vip)).await;
    let left = orphans(&sys, &db).await;
    assert!(left.is_empty(), "seed {seed}: {left:?}");

    // The victim comes back and adopts what runs: still nothing orphaned,
    // nothing started twice.
    restart(&mut sys, &mut others, victim);
    sys.until("traffic with all three controllers up", Duration::from_secs(60), || served(&sys, client, vip)).await;
    let left = orphans(&sys, &db).await;
    assert!(left.is_empty(), "seed {seed}, after the restart: {left:?}");
    println!("seed {seed}: failover finished by controller {by}");

    // A rolling restart: every controller finds the new amphora running.
    // One supervises its agent, the others stand by. The agent dies: it is
    // started again once, by one controller, not once by each of them.
    restart_each(&mut sys, &mut others);
    let amp = now[0].0.clone();
    let amp_dir = sys.config.local_compute.state_dir.join(short(&amp));
    let agent_log = || std::fs::read_to_string(amp_dir.join("agent.log")).unwrap_or_default();
    let pid_of = || std::fs::read_to_string(amp_dir.join("agent.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok());
    let first = pid_of().expect("the agent's pid file");
    let log_before = agent_log().len();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the agent");
    let second = wait::until("the agent started again", Duration::from_secs(30), || async {
        pid_of().filter(|p| *p != first && std::path::Path::new(&format!("/proc/{p}")).exists())
    })
    .await;
    // Every supervisor that saw the death would have started its agent
    // within a restart delay and retried after twice that: 3 s covers both.
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < end {
        assert_eq!(pid_of(), Some(second), "seed {seed}: the agent was started again more than once");
        let left = orphans(&sys, &db).await;
        assert!(left.is_empty(), "seed {seed}, after the agent died: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = agent_log()[log_before..].to_owned();
    assert!(!since.contains("Address already in use"), "seed {seed}: a second agent was started:\n{since}");
    sys.until("traffic after the agent's restart", Duration::from_secs(60), || served(&sys, client, vip)).await;

    // A controller killed between starting an agent and writing its pid
    // file leaves an agent no pid file names. Every controller restarted
    // in turn (the supervising one among them): the agent is found by its
    // command line and kept, not started a second time.
    std::fs::remove_file(amp_dir.join("agent.pid")).expect("remove the pid file");
    let log_before = agent_log().len();
    restart_each(&mut sys, &mut others);
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < end {
        assert!(!amphora_controller::local::fabric::process_gone(second), "seed {seed}: the agent was replaced");
        let left = orphans(&sys, &db).await;
        assert!(left.is_empty(), "seed {seed}, without a pid file: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = agent_log()[log_before..].to_owned();
    assert!(!since.contains("Address already in use"), "seed {seed}: a second agent was started:\n{since}");
    // Controllers 1 and 2 stop before the system tears the host down.
    drop(others);
}
