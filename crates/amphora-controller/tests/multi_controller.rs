//! Three controller processes on one PostgreSQL database, SIGKILLed at
//! random points (a seeded schedule of victims, delays and down times,
//! running beside the requests):
//!
//! - with every role, while load balancers are created and their amphorae
//!   failed over through any of them: each job is taken over by another
//!   controller once its lease expires, every load balancer ends ACTIVE (or
//!   ERROR with its job's reason), none stays PENDING, and no amphora is
//!   left over or doubled;
//! - with the API and health roles, while amphorae heartbeat round robin to
//!   all three and some of them fall silent: each stale amphora gets exactly
//!   one failover job, whichever processes see it, and `failover_threshold`
//!   stops them all instead when too many are stale at once.
//!
//! The noop drivers have a delay per step, so the kills land inside flows.
//! Needs AMPHORA_TEST_POSTGRES (scripts/test.sh starts a server). Each run
//! prints its seed; `MULTI_CONTROLLER_SEED=<n>` replays the same schedule
//! (the kills' moments relative to the flows still depend on timing).

mod common;
#[path = "e2e_support/http.rs"]
mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amphora_controller::db::{Db, now_millis};
use amphora_testkit::wait;
use http::Api;
use serde_json::{Value, json};
use sqlx::Row;

const BIN: &str = env!("CARGO_BIN_EXE_amphora-controller");
const SUBNET: &str = "8b2a3c1e-9f3c-4b5e-a7d8-0c1b2a3d4e5f";
const CONTROLLERS: usize = 3;
const LOAD_BALANCERS: usize = 9;
/// The killer's schedule: the wait before each kill and how long the
/// victim stays down.
const KILL_DELAY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(1200));
const DOWN_TIME: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(600));
const KEY: &str = "multi-controller-heartbeat-key";
/// `heartbeat_timeout` of the health tests, in seconds: also how long a
/// restarted health process waits before its first scan.
const HEARTBEAT_TIMEOUT: u64 = 3;

/// splitmix64: enough randomness for a kill schedule, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [lo, hi].
    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo).mul_f64(unit)
    }
}

/// The run's seed: MULTI_CONTROLLER_SEED, or the clock. Printed, so that a
/// failed run can be replayed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("MULTI_CONTROLLER_SEED") {
        Ok(s) if !s.trim().is_empty() => {
            s.trim().parse().unwrap_or_else(|_| panic!("MULTI_CONTROLLER_SEED={s:?} is not a number"))
        }
        _ => SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64,
    };
    println!("{test}: MULTI_CONTROLLER_SEED={seed}");
    seed
}

#[derive(Default)]
struct Slot {
    child: Option<Child>,
    addr: Option<SocketAddr>,
}

/// Controller processes sharing one configuration (plus `controller-{i}.conf`
/// when the test wrote one), each restartable after a kill.
struct Cluster {
    dir: PathBuf,
    roles: &'static str,
    slots: Mutex<Vec<Slot>>,
    /// The controller the next request tries first.
    next: AtomicUsize,
}

impl Cluster {
    /// Starts the controllers one after the other (the first one creates
    /// the schema).
    fn start(dir: &Path, roles: &'static str) -> Arc<Cluster> {
        let cluster = Arc::new(Cluster {
            dir: dir.to_owned(),
            roles,
            slots: Mutex::new((0..CONTROLLERS).map(|_| Slot::default()).collect()),
            next: AtomicUsize::new(0),
        });
        for i in 0..CONTROLLERS {
            cluster.start_one(i);
        }
        cluster
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panicking killer thread must not hide the controllers from Drop.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts controller `i` and waits until its API serves.
    fn start_one(&self, i: usize) {
        let ready = self.dir.join(format!("ready-{i}"));
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("controller-{i}.log")))
            .expect("log");
        let mut command = Command::new(BIN);
        command.arg("--config-file").arg(self.dir.join("octavia.conf"));
        let own = self.dir.join(format!("controller-{i}.conf"));
        if own.exists() {
            command.arg("--config-file").arg(own);
        }
        let child = command
            .args(["run", "--roles", self.roles, "--ready-file"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a controller");
        self.slots()[i].child = Some(child);
        let addr = wait::until_blocking(&format!("controller {i} to serve"), Duration::from_secs(60), || {
            if let Some(Some(status)) = self.slots()[i].child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                panic!("controller {i} exited with {status}\n{}", logs(&self.dir));
            }
            std::fs::read_to_string(&ready).ok().and_then(|s| s.trim().parse().ok())
        });
        self.slots()[i].addr = Some(addr);
    }

    /// SIGKILL.
    fn kill(&self, i: usize) {
        let mut slots = self.slots();
        if let Some(mut child) = slots[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        slots[i].addr = None;
    }

    /// The controllers that are up, from the next one in turn: requests
    /// (and so the jobs, which the controller asked runs first) spread over
    /// all of them.
    fn addrs(&self) -> Vec<SocketAddr> {
        let first = self.next.fetch_add(1, Ordering::SeqCst);
        let slots = self.slots();
        (0..CONTROLLERS).filter_map(|i| slots[(first + i) % CONTROLLERS].addr).collect()
    }

    /// A request to whichever controller is up, retried until one answers
    /// whole.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for addr in self.addrs() {
                if let Some(answer) = (Api { addr }).try_call(method, path, body).await {
                    return answer;
                }
            }
            assert!(Instant::now() < deadline, "no controller answered {method} {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..CONTROLLERS {
            self.kill(i);
        }
    }
}

/// A thread killing a random controller after a random delay, keeping it
/// down for a random time and restarting it, over and over until stopped.
struct Killer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl Killer {
    fn start(cluster: Arc<Cluster>, mut rng: Rng) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut kills = Vec::new();
            loop {
                // Drawn in a fixed order, so that a seed replays the schedule.
                let delay = rng.between(KILL_DELAY);
                let victim = rng.below(CONTROLLERS);
                let down = rng.between(DOWN_TIME);
                let until = Instant::now() + delay;
                while Instant::now() < until && !stopped.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
                }
                if stopped.load(Ordering::SeqCst) {
                    return kills;
                }
                kills.push(format!(
                    "{:.2}s: controller {victim} for {:.2}s",
                    started.elapsed().as_secs_f64(),
                    down.as_secs_f64()
                ));
                cluster.kill(victim);
                std::thread::sleep(down);
                cluster.start_one(victim);
            }
        });
        Killer { stop, thread: Some(thread) }
    }

    /// Stops the kills (the last victim is up again); the schedule so far.
    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().expect("running").join() {
            Ok(kills) => kills,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Killer {
    /// Also on a failed test: the thread lets go of the cluster, whose drop
    /// kills the controllers, before the test binary may exit.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn logs(dir: &Path) -> String {
    (0..CONTROLLERS)
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("controller-{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            format!("--- controller {i} ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Waits until no load balancer is PENDING and every job has ended.
async fn settled(db: &Db, seed: u64) {
    wait::until(&format!("every flow to end (seed {seed})"), Duration::from_secs(120), || async {
        let pending = count(db, "SELECT COUNT(*) FROM load_balancer WHERE provisioning_status LIKE 'PENDING%'").await;
        let running = count(db, "SELECT COUNT(*) FROM job WHERE state NOT IN ('DONE', 'FAILED')").await;
        (pending == 0 && running == 0).then_some(())
    })
    .await;
}

/// Failover jobs per amphora.
async fn failover_jobs(db: &Db) -> BTreeMap<String, i64> {
    sqlx::query("SELECT target_id, COUNT(*) FROM job WHERE kind = 'failover_amphora' GROUP BY target_id")
        .fetch_all(&db.pool)
        .await
        .expect("jobs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn three_controllers_killed_at_random_finish_every_flow_once_and_orphan_nothing() {
    let Ok(server) = std::env::var("AMPHORA_TEST_POSTGRES") else {
        panic!("AMPHORA_TEST_POSTGRES must name a PostgreSQL server (scripts/test.sh starts one)");
    };
    let seed = seed("flows");
    let url = common::postgres_database(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("octavia.conf"),
        format!(
            "[api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = 0\n\
             [database]\nconnection = {url}\n\
             [health_manager]\nbind_port = 0\n\
             [controller_worker]\njob_lease = 2\n\
             [noop_drivers]\nstep_delay = 0.15\n"
        ),
    )
    .expect("write configuration");
    let cluster = Cluster::start(dir.path(), "api,worker,health,housekeeping");
    let db = Db::connect(&url).await.expect("open the database");
    // The requests' pace has a generator of its own: the killer's
    // schedule does not depend on how many requests were retried.
    let mut pace = Rng(seed ^ 0x5EED);
    let gap = (Duration::from_millis(50), Duration::from_millis(500));
    let killer = Killer::start(cluster.clone(), Rng(seed));

    // Load balancers created through any controller, then a failover of
    // each amphora, while controllers die and come back.
    for i in 0..LOAD_BALANCERS {
        let body = json!({"loadbalancer": {"name": format!("lb-{i}"), "vip_subnet_id": SUBNET}});
        let (status, created) = cluster.call("POST", "/v2/lbaas/loadbalancers", Some(&body)).await;
        assert_eq!(status, 201, "{created}");
        tokio::time::sleep(pace.between(gap)).await;
    }
    settled(&db, seed).await;
    let amphorae: Vec<String> = sqlx::query("SELECT id FROM amphora WHERE status = 'ALLOCATED' ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("amphorae")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut accepted = BTreeSet::new();
    for amp in &amphorae {
        let (status, body) = cluster.call("PUT", &format!("/v2/octavia/amphorae/{amp}/failover"), None).await;
        // 409: an answer lost in a kill, asked again of another controller.
        assert!(status == 202 || status == 409, "failover of {amp}: {status} {body}");
        if status == 202 {
            accepted.insert(amp.clone());
        }
        tokio::time::sleep(pace.between(gap)).await;
    }
    settled(&db, seed).await;
    let kills = killer.stop();
    settled(&db, seed).await;

    // Every load balancer (also one a lost answer had created twice)
    // ACTIVE with one amphora, or ERROR with its failed job's reason.
    let mut problems = Vec::new();
    let lbs: Vec<(String, String)> = sqlx::query("SELECT id, provisioning_status FROM load_balancer ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("load balancers")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if lbs.len() < LOAD_BALANCERS {
        problems.push(format!("{} load balancers, {LOAD_BALANCERS} created", lbs.len()));
    }
    for (lb, status) in &lbs {
        let live: Vec<(String, String)> =
            sqlx::query("SELECT id, status FROM amphora WHERE load_balancer_id = $1 AND status <> 'DELETED'")
                .bind(lb.as_str())
                .fetch_all(&db.pool)
                .await
                .expect("amphorae")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        match status.as_str() {
            "ACTIVE" => {
                if live.len() != 1 || live[0].1 != "ALLOCATED" {
                    problems.push(format!("ACTIVE load balancer {lb} has amphorae {live:?}"));
                }
            }
            "ERROR" => {
                let reasons: Vec<Option<String>> =
                    sqlx::query("SELECT error FROM job WHERE state = 'FAILED' AND (target_id = $1 OR payload LIKE $2)")
                        .bind(lb.as_str())
                        .bind(format!("%{lb}%"))
                        .fetch_all(&db.pool)
                        .await
                        .expect("jobs")
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                if !reasons.iter().any(|r| r.as_deref().is_some_and(|r| !r.is_empty())) {
                    problems.push(format!("load balancer {lb} is ERROR without a failed job's reason"));
                }
                println!("load balancer {lb} ERROR: {reasons:?}");
            }
            other => problems.push(format!("load balancer {lb} ended {other}")),
        }
    }
    // One failover job per amphora asked (none for one whose only answer
    // was a 409 after a lost 202 is not knowable: at most one), and an
    // amphora whose failover finished is gone.
    let jobs = failover_jobs(&db).await;
    for amp in &amphorae {
        let n = jobs.get(amp).copied().unwrap_or(0);
        if n > 1 || (accepted.contains(amp) && n != 1) {
            problems.push(format!("amphora {amp} has {n} failover jobs"));
        }
        let done = count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM job WHERE kind = 'failover_amphora' AND target_id = '{amp}' AND state = 'DONE'"
            ),
        )
        .await;
        let status: String = sqlx::query("SELECT status FROM amphora WHERE id = $1")
            .bind(amp.as_str())
            .fetch_one(&db.pool)
            .await
            .expect("amphora")
            .get(0);
        if done == 1 && status != "DELETED" {
            problems.push(format!("amphora {amp} failed over but {status}"));
        }
    }
    // No amphora outside a load balancer, none sharing an address.
    let stray = count(&db, "SELECT COUNT(*) FROM amphora WHERE status <> 'DELETED' AND load_balancer_id IS NULL").await;
    if stray != 0 {
        problems.push(format!("{stray} live amphorae belong to no load balancer"));
    }
    let shared = count(
        &db,
        "SELECT COUNT(*) FROM (SELECT lb_network_ip FROM amphora WHERE status <> 'DELETED' \
         GROUP BY lb_network_ip HAVING COUNT(*) > 1) d",
    )
    .await;
    if shared != 0 {
        problems.push(format!("{shared} management addresses are held by two live amphorae"));
    }
    let taken_over = count(&db, "SELECT COUNT(*) FROM job WHERE attempts > 1").await;
    println!(
        "seed {seed}: {} load balancers, {} failovers asked ({} accepted), {} kills, {taken_over} jobs taken over\n{}",
        lbs.len(),
        amphorae.len(),
        accepted.len(),
        kills.len(),
        kills.join("\n")
    );
    assert!(taken_over > 0, "no kill landed inside a flow (seed {seed}): the test did not test a takeover");
    assert!(problems.is_empty(), "seed {seed}:\n{}\n{}", problems.join("\n"), logs(dir.path()));
}

/// The health tests' configuration: the API (for readiness) and health
/// roles, a real amphora driver name (stale detection on; no worker runs
/// the failover jobs, so each stays queued and countable), and a fixed
/// heartbeat port per controller, kept across its restarts as a real
/// `controller_ip_port_list` entry is. Returns those addresses.
fn health_configuration(dir: &Path, url: &str, failover_threshold: Option<u64>) -> Vec<SocketAddr> {
    let threshold = failover_threshold.map(|t| format!("failover_threshold = {t}\n")).unwrap_or_default();
    // Free ports from the OS: bound, read and released.
    let ports: Vec<SocketAddr> = (0..CONTROLLERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free UDP port"))
        .collect();
    let list = ports.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", ");
    std::fs::write(
        dir.join("octavia.conf"),
        format!(
            "[api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = 0\n\
             [database]\nconnection = {url}\n\
             [health_manager]\nbind_ip = 127.0.0.1\nheartbeat_key = {KEY}\nheartbeat_interval = 1\n\
             heartbeat_timeout = {HEARTBEAT_TIMEOUT}\nhealth_check_interval = 1\n\
             controller_ip_port_list = {list}\n{threshold}\
             [controller_worker]\namphora_driver = amphora_haproxy_rest_driver\n"
        ),
    )
    .expect("write configuration");
    for (i, addr) in ports.iter().enumerate() {
        std::fs::write(
            dir.join(format!("controller-{i}.conf")),
            format!("[health_manager]\nbind_port = {}\n", addr.port()),
        )
        .expect("write configuration");
    }
    ports
}

/// An ACTIVE SINGLE load balancer with its ALLOCATED amphora, written as
/// the create flow leaves them (no worker runs here); or a READY spare.
async fn amphora(db: &Db, name: &str, spare: bool) -> String {
    let amp = uuid::Uuid::new_v4().to_string();
    let lb = (!spare).then(|| uuid::Uuid::new_v4().to_string());
    if let Some(lb) = &lb {
        sqlx::query(
            "INSERT INTO load_balancer (id, project_id, name, provisioning_status, operating_status, enabled, \
             topology, provider, created_at) VALUES ($1, 'p1', $2, 'ACTIVE', 'ONLINE', TRUE, 'SINGLE', 'amphora', $3)",
        )
        .bind(lb.as_str())
        .bind(name)
        .bind("2026-01-01T00:00:00")
        .execute(&db.pool)
        .await
        .expect("insert a load balancer");
    }
    sqlx::query(
        "INSERT INTO amphora (id, load_balancer_id, compute_id, role, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, '2026-01-01T00:00:00')",
    )
    .bind(amp.as_str())
    .bind(lb.as_deref())
    .bind(format!("c-{amp}"))
    .bind(if spare { None } else { Some("STANDALONE") })
    .bind(if spare { "READY" } else { "ALLOCATED" })
    .execute(&db.pool)
    .await
    .expect("insert an amphora");
    amp
}

async fn amphora_status(db: &Db, amp: &str) -> String {
    sqlx::query("SELECT status FROM amphora WHERE id = $1").bind(amp).fetch_one(&db.pool).await.expect("amphora").get(0)
}

async fn lb_status_of_amphora(db: &Db, amp: &str) -> String {
    sqlx::query(
        "SELECT l.provisioning_status FROM load_balancer l JOIN amphora a ON a.load_balancer_id = l.id WHERE a.id = $1",
    )
    .bind(amp)
    .fetch_one(&db.pool)
    .await
    .expect("load balancer")
    .get(0)
}

/// Amphorae heartbeating as the agent does: signed, each heartbeat to the
/// next controller of the list (round robin), every 250 ms.
struct Heartbeats {
    beating: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeats {
    fn start(controllers: Vec<SocketAddr>) -> Heartbeats {
        let beating = Arc::new(Mutex::new(BTreeSet::<String>::new()));
        let set = beating.clone();
        let task = tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let mut sent: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                for amp in set.lock().expect("heartbeats").iter() {
                    let n = sent.entry(amp.clone()).or_default();
                    let beat = json!({"id": amp, "seq": *n, "ver": 3, "listeners": {}, "pools": {}});
                    let envelope = amphora_proto::heartbeat::encode(&beat, KEY).expect("encode");
                    // A controller that is down loses it, as over the network.
                    let _ = socket.send_to(&envelope, controllers[*n % controllers.len()]);
                    *n += 1;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Heartbeats { beating, task }
    }

    fn beat(&self, amps: &[String]) {
        self.beating.lock().expect("heartbeats").extend(amps.iter().cloned());
    }

    /// Falls silent: no heartbeat of these leaves after this returns.
    fn silence(&self, amps: &[String]) {
        let mut set = self.beating.lock().expect("heartbeats");
        for amp in amps {
            set.remove(amp);
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until every amphora has a health row (its heartbeats arrive).
async fn checked_in(db: &Db, amps: &[String]) {
    let list = amps.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id IN ({list})");
    wait::until("every heartbeating amphora's health row", Duration::from_secs(30), || async {
        (count(db, &sql).await == amps.len() as i64).then_some(())
    })
    .await;
}

/// Asserts `check` at every poll for `window`: for what must not happen.
/// Waits until each of `expected` has a failover job, failing at once if
/// any amphora gets a second one or one outside `expected`; then checks
/// that this holds while every process up scans again at least twice.
async fn one_failover_job_each(db: &Db, expected: &BTreeSet<String>, what: &str, logs: impl Fn() -> String) {
    let exactly_once = |jobs: &BTreeMap<String, i64>| -> Result<(), String> {
        match jobs.iter().find(|(amp, n)| **n > 1 || !expected.contains(*amp)) {
            Some((amp, n)) => Err(format!(
                "{what}: amphora {amp} has {n} failover jobs (stale: {})\n{}",
                expected.contains(amp),
                logs()
            )),
            None => Ok(()),
        }
    };
    wait::until(what, Duration::from_secs(30), || async {
        let jobs = failover_jobs(db).await;
        if let Err(problem) = exactly_once(&jobs) {
            panic!("{problem}");
        }
        (jobs.len() == expected.len()).then_some(())
    })
    .await;
    holds(Duration::from_secs(HEARTBEAT_TIMEOUT + 2), || async { exactly_once(&failover_jobs(db).await) }).await;
}

async fn holds<F, Fut>(window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Err(problem) = check().await {
            panic!("{problem}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many log lines of each controller contain `text`.
fn log_lines(dir: &Path, text: &str) -> Vec<usize> {
    (0..CONTROLLERS)
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("controller-{i}.log")))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(text))
                .count()
        })
        .collect()
}

#[tokio::test]
async fn each_stale_amphora_gets_exactly_one_failover_job_from_three_health_processes_killed_at_random() {
    let Ok(server) = std::env::var("AMPHORA_TEST_POSTGRES") else {
        panic!("AMPHORA_TEST_POSTGRES must name a PostgreSQL server (scripts/test.sh starts one)");
    };
    let seed = seed("stale");
    let url = common::postgres_database(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = health_configuration(dir.path(), &url, None);
    let cluster = Cluster::start(dir.path(), "api,health");
    let db = Db::connect(&url).await.expect("open the database");
    let mut live = Vec::new();
    for i in 0..3 {
        live.push(amphora(&db, &format!("live-{i}"), false).await);
    }
    let mut waves: Vec<Vec<String>> = Vec::new();
    for w in 0..3 {
        let mut wave = Vec::new();
        for i in 0..3 {
            wave.push(amphora(&db, &format!("wave-{w}-{i}"), false).await);
        }
        waves.push(wave);
    }
    // A spare goes silent too: it is not failed over.
    let spare = amphora(&db, "spare", true).await;
    waves[0].push(spare.clone());
    let everyone: Vec<String> = live.iter().chain(waves.iter().flatten()).cloned().collect();
    let heartbeats = Heartbeats::start(ports);
    heartbeats.beat(&everyone);
    checked_in(&db, &everyone).await;

    // The waves fall silent at random moments while controllers die and
    // come back; every health process that is up sees each stale one.
    let mut pace = Rng(seed ^ 0x5EED);
    let killer = Killer::start(cluster.clone(), Rng(seed));
    for wave in &waves {
        tokio::time::sleep(pace.between((Duration::from_millis(300), Duration::from_millis(2000)))).await;
        heartbeats.silence(wave);
    }
    let expected: BTreeSet<String> = waves.iter().flatten().filter(|a| **a != spare).cloned().collect();
    one_failover_job_each(&db, &expected, &format!("a failover job for each stale amphora (seed {seed})"), || {
        logs(dir.path())
    })
    .await;
    let kills = killer.stop();

    let jobs = failover_jobs(&db).await;
    assert_eq!(jobs.keys().cloned().collect::<BTreeSet<_>>(), expected, "seed {seed}");
    assert!(jobs.values().all(|n| *n == 1), "seed {seed}: {jobs:?}");
    for amp in &expected {
        assert_eq!(lb_status_of_amphora(&db, amp).await, "PENDING_UPDATE", "seed {seed}: the failover holds its LB");
    }
    for amp in &live {
        assert_eq!(amphora_status(&db, amp).await, "ALLOCATED", "seed {seed}: a live amphora is left alone");
        assert_eq!(lb_status_of_amphora(&db, amp).await, "ACTIVE", "seed {seed}");
    }
    assert_eq!(amphora_status(&db, &spare).await, "READY", "seed {seed}: a spare is not failed over");
    let queued_by = log_lines(dir.path(), "stale amphora: failover queued");
    println!(
        "seed {seed}: {} stale amphorae, one failover job each; queued by controllers {queued_by:?}; {} kills\n{}",
        expected.len(),
        kills.len(),
        kills.join("\n")
    );
}

#[tokio::test]
async fn failover_threshold_stops_every_stale_amphora_in_three_health_processes_killed_at_random() {
    let Ok(server) = std::env::var("AMPHORA_TEST_POSTGRES") else {
        panic!("AMPHORA_TEST_POSTGRES must name a PostgreSQL server (scripts/test.sh starts one)");
    };
    let seed = seed("threshold");
    let threshold = 3;
    let url = common::postgres_database(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = health_configuration(dir.path(), &url, Some(threshold));
    let cluster = Cluster::start(dir.path(), "api,health");
    let db = Db::connect(&url).await.expect("open the database");
    let mut live = Vec::new();
    for i in 0..2 {
        live.push(amphora(&db, &format!("live-{i}"), false).await);
    }
    // Four amphorae that never heartbeated (no health row: not stale yet).
    let mut group = Vec::new();
    for i in 0..4 {
        group.push(amphora(&db, &format!("group-{i}"), false).await);
    }
    let heartbeats = Heartbeats::start(ports);
    heartbeats.beat(&live);
    checked_in(&db, &live).await;
    let killer = Killer::start(cluster.clone(), Rng(seed));

    // All four stale in one statement, so no scan sees fewer than the
    // threshold: every process that scans trips the breaker.
    let hour_ago = now_millis() - 3_600_000;
    let rows = group.iter().map(|a| format!("('{a}', {hour_ago}, FALSE)")).collect::<Vec<_>>().join(", ");
    sqlx::query(&format!("INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES {rows}"))
        .execute(&db.pool)
        .await
        .expect("stale health rows");
    wait::until(&format!("the group FAILOVER_STOPPED (seed {seed})"), Duration::from_secs(30), || async {
        for amp in &group {
            if amphora_status(&db, amp).await != "FAILOVER_STOPPED" {
                return None;
            }
        }
        Some(())
    })
    .await;
    let stopped = |amps: Vec<String>| {
        let db = &db;
        let dir = dir.path();
        async move {
            let jobs = failover_jobs(db).await;
            if !jobs.is_empty() {
                return Err(format!("seed {seed}: failover jobs {jobs:?} while the breaker is open\n{}", logs(dir)));
            }
            for amp in &amps {
                let status = amphora_status(db, amp).await;
                if status != "FAILOVER_STOPPED" {
                    return Err(format!("seed {seed}: amphora {amp} {status} while the breaker is open"));
                }
            }
            Ok(())
        }
    };
    holds(Duration::from_secs(HEARTBEAT_TIMEOUT + 2), || stopped(group.clone())).await;
    for amp in group.iter().chain(&live) {
        assert_eq!(lb_status_of_amphora(&db, amp).await, "ACTIVE", "seed {seed}");
    }
    for amp in &live {
        assert_eq!(amphora_status(&db, amp).await, "ALLOCATED", "seed {seed}");
    }

    // Two of them heartbeat again: ALLOCATED. The other two are below the
    // threshold now: each gets exactly one failover job.
    let (back, still) = group.split_at(2);
    heartbeats.beat(back);
    let expected: BTreeSet<String> = still.iter().cloned().collect();
    one_failover_job_each(&db, &expected, &format!("the two still stale failed over (seed {seed})"), || {
        logs(dir.path())
    })
    .await;
    let kills = killer.stop();
    for amp in back {
        assert_eq!(amphora_status(&db, amp).await, "ALLOCATED", "seed {seed}: it heartbeats again");
        assert_eq!(lb_status_of_amphora(&db, amp).await, "ACTIVE", "seed {seed}");
    }
    for amp in still {
        assert_eq!(lb_status_of_amphora(&db, amp).await, "PENDING_UPDATE", "seed {seed}");
    }
    let tripped = log_lines(dir.path(), "reached failover_threshold");
    println!(
        "seed {seed}: breaker tripped in controllers {tripped:?}, then two failed over once each; {} kills\n{}",
        kills.len(),
        kills.join("\n")
    );
}
