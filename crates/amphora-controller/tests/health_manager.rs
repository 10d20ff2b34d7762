//! The health role with real UDP heartbeats, signed with the proto codec,
//! sent to a running role over the test databases (SQLite, and PostgreSQL
//! when AMPHORA_TEST_POSTGRES is set); results read through the API.

mod common;
mod lbaas_support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amphora_controller::config::Config;
use amphora_controller::db::{Db, now_millis};
use amphora_controller::health::{self, Health};
use amphora_proto::heartbeat;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::watch;

use common::{TestApi, TestDb};

const KEY: &str = "test-heartbeat-key";

/// Polls `check` until it returns Some, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The health manager's settings for a test: loopback, an OS-chosen port,
/// a key, a real amphora driver name (stale detection on).
fn config(db: &TestDb, heartbeat_timeout: u64, failover_threshold: Option<u64>) -> Config {
    let mut c = common::config(&db.url);
    c.health.bind_ip = [127, 0, 0, 1].into();
    c.health.bind_port = 0;
    c.health.heartbeat_key = Some(KEY.into());
    c.health.heartbeat_interval = 10;
    c.health.heartbeat_timeout = heartbeat_timeout;
    c.health.health_check_interval = 1;
    c.health.failover_threshold = failover_threshold;
    c.worker.amphora_driver = "amphora_haproxy_rest_driver".into();
    c
}

/// A health role on its own pool (as another process would be); it stops
/// when the returned sender is dropped.
struct Role {
    health: Health,
    _stop: watch::Sender<bool>,
}

impl Role {
    async fn start(config: &Config) -> Role {
        let db = Db::open(&config.database.connection).await.expect("open database");
        let (stop, rx) = watch::channel(false);
        let health = health::start(db, Arc::new(config.clone()), rx).await.expect("start the health role");
        Role { health, _stop: stop }
    }

    fn addr(&self) -> SocketAddr {
        self.health.addr
    }
}

fn send_signed(to: SocketAddr, message: &Value, key: &str) {
    let envelope = heartbeat::encode(message, key).expect("encode");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(&envelope, to).expect("send");
}

fn send(to: SocketAddr, message: &Value) {
    send_signed(to, message, KEY);
}

async fn insert_amphora(api: &TestApi, lb: Option<&str>, status: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let lb = lb.map_or("NULL".to_owned(), |l| format!("'{l}'"));
    api.sql(&format!(
        "INSERT INTO amphora (id, load_balancer_id, compute_id, role, status, created_at) \
         VALUES ('{id}', {lb}, 'c-{id}', 'STANDALONE', '{status}', '2026-01-01T00:00:00')"
    ))
    .await;
    id
}

async fn stale_health_row(api: &TestApi, amp: &str) {
    let hour_ago = now_millis() - 3_600_000;
    api.sql(&format!("INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES ('{amp}', {hour_ago}, FALSE)"))
        .await;
}

async fn get(api: &TestApi, path: &str) -> Value {
    let (status, body) = api.call("GET", path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn operating(api: &TestApi, path: &str, key: &str) -> String {
    get(api, path).await[key]["operating_status"].as_str().expect("operating_status").to_owned()
}

async fn count(api: &TestApi, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(&api.state.db.pool).await.expect(sql).get(0)
}

async fn failover_jobs(api: &TestApi) -> Vec<String> {
    lbaas_support::jobs(api).await.into_iter().filter(|(k, _, _)| k == "failover_amphora").map(|(_, t, _)| t).collect()
}

async fn amphora_status(api: &TestApi, amp: &str) -> String {
    get(api, &format!("/v2/octavia/amphorae/{amp}")).await["amphora"]["status"].as_str().expect("status").to_owned()
}

async fn wait_counter(what: &str, counter: &health::Counter, at_least: u64) {
    eventually(what, Duration::from_secs(10), || async { (counter.get() >= at_least).then_some(()) }).await;
}

/// One listener, one pool on it with four members; all settled ACTIVE.
struct Graph {
    lb: String,
    listener: String,
    pool: String,
    members: Vec<String>,
}

async fn graph(api: &TestApi) -> Graph {
    let lb = lbaas_support::lb(api, "web").await;
    let listener = lbaas_support::listener(api, &lb, "HTTP", 80).await;
    let pool = lbaas_support::pool_on_listener(api, &listener, "HTTP").await;
    let mut members = Vec::new();
    for i in 1..=4u8 {
        members.push(lbaas_support::member(api, &pool, &format!("192.0.2.{i}"), 8080).await);
    }
    Graph { lb, listener, pool, members }
}

#[tokio::test]
async fn heartbeats_set_member_pool_listener_and_load_balancer_statuses_seen_through_the_api() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let g = graph(&api).await;
        let amp = insert_amphora(&api, Some(&g.lb), "ALLOCATED").await;
        let role = Role::start(&config(&db, 60, None)).await;
        let (m1, m2, m3, m4) = (&g.members[0], &g.members[1], &g.members[2], &g.members[3]);
        let lb_path = format!("/v2/lbaas/loadbalancers/{}", g.lb);
        let listener_path = format!("/v2/lbaas/listeners/{}", g.listener);
        let pool_path = format!("/v2/lbaas/pools/{}", g.pool);
        let member_path = |m: &str| format!("/v2/lbaas/pools/{}/members/{m}", g.pool);

        // One member down, one draining, one in maintenance.
        send(
            role.addr(),
            &json!({"id": amp, "seq": 1, "ver": 3,
                "listeners": {&g.listener: {"status": "OPEN", "stats": {"tx": 0, "rx": 0, "conns": 0, "totconns": 0, "ereq": 0}}},
                "pools": {format!("{}:{}", g.pool, g.listener): {"status": "UP",
                    "members": {m1: "UP", m2: "DOWN", m3: "DRAIN", m4: "MAINT"}}}}),
        );
        wait_counter("the first heartbeat", &role.health.counters.applied, 1).await;
        assert_eq!(operating(&api, &member_path(m1), "member").await, "ONLINE", "{}", db.name);
        assert_eq!(operating(&api, &member_path(m2), "member").await, "ERROR");
        assert_eq!(operating(&api, &member_path(m3), "member").await, "DRAINING");
        assert_eq!(operating(&api, &member_path(m4), "member").await, "OFFLINE");
        assert_eq!(operating(&api, &pool_path, "pool").await, "DEGRADED");
        assert_eq!(operating(&api, &listener_path, "listener").await, "ONLINE");
        assert_eq!(operating(&api, &lb_path, "loadbalancer").await, "DEGRADED");
        let health_rows = format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{amp}' AND busy = FALSE");
        assert_eq!(count(&api, &health_rows).await, 1, "the heartbeat created the health row");

        // The listener at its connection limit, members healthy or unmonitored.
        send(
            role.addr(),
            &json!({"id": amp, "seq": 2, "ver": 3,
                "listeners": {&g.listener: {"status": "FULL", "stats": {}}},
                "pools": {format!("{}:{}", g.pool, g.listener): {"status": "UP",
                    "members": {m1: "UP", m2: "no check", m3: "UP 2/3", m4: "UP"}}}}),
        );
        wait_counter("the second heartbeat", &role.health.counters.applied, 2).await;
        assert_eq!(operating(&api, &member_path(m2), "member").await, "NO_MONITOR");
        assert_eq!(operating(&api, &member_path(m3), "member").await, "ONLINE");
        assert_eq!(operating(&api, &member_path(m4), "member").await, "ONLINE");
        assert_eq!(operating(&api, &pool_path, "pool").await, "ONLINE");
        assert_eq!(operating(&api, &listener_path, "listener").await, "DEGRADED");
        assert_eq!(operating(&api, &lb_path, "loadbalancer").await, "DEGRADED");

        // A down backend is an error of the load balancer.
        send(
            role.addr(),
            &json!({"id": amp, "seq": 3, "ver": 3,
                "listeners": {&g.listener: {"status": "OPEN", "stats": {}}},
                "pools": {format!("{}:{}", g.pool, g.listener): {"status": "DOWN",
                    "members": {m1: "DOWN", m2: "DOWN", m3: "DOWN", m4: "DOWN"}}}}),
        );
        wait_counter("the third heartbeat", &role.health.counters.applied, 3).await;
        assert_eq!(operating(&api, &pool_path, "pool").await, "ERROR");
        assert_eq!(operating(&api, &member_path(m1), "member").await, "ERROR");
        assert_eq!(operating(&api, &lb_path, "loadbalancer").await, "ERROR");
        let tree = get(&api, &format!("{lb_path}/status")).await;
        assert_eq!(tree["statuses"]["loadbalancer"]["operating_status"], "ERROR", "{tree}");

        // No listener reported while one is enabled: statuses follow (the
        // listener ERROR, its pool unreported OFFLINE), health is not
        // refreshed (upstream's listener-count check).
        let before: i64 =
            count(&api, &format!("SELECT last_update FROM amphora_health WHERE amphora_id = '{amp}'")).await;
        send(role.addr(), &json!({"id": amp, "seq": 4, "ver": 3, "listeners": {}, "pools": {}}));
        wait_counter("the mismatched heartbeat", &role.health.counters.listener_count_mismatch, 1).await;
        assert_eq!(operating(&api, &listener_path, "listener").await, "ERROR");
        assert_eq!(operating(&api, &pool_path, "pool").await, "OFFLINE");
        let after: i64 =
            count(&api, &format!("SELECT last_update FROM amphora_health WHERE amphora_id = '{amp}'")).await;
        assert_eq!(after, before, "a heartbeat with the wrong listener count does not refresh health");
        assert_eq!(role.health.counters.applied.get(), 3);
    }
}

#[tokio::test]
async fn version_three_statistics_add_up_and_older_versions_replace_them() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let g = graph(&api).await;
        let amp = insert_amphora(&api, Some(&g.lb), "ALLOCATED").await;
        let role = Role::start(&config(&db, 60, None)).await;
        // (rx, tx, conns, totconns, ereq) of three heartbeats.
        let beats: [(u64, u64, u64, u64, u64); 3] = [(100, 2_000, 3, 7, 1), (50, 1_000, 9, 4, 0), (1, 20, 2, 1, 5)];
        for (seq, (rx, tx, conns, totconns, ereq)) in beats.iter().enumerate() {
            send(
                role.addr(),
                &json!({"id": amp, "seq": seq, "ver": 3,
                    "listeners": {&g.listener: {"status": "OPEN",
                        "stats": {"rx": rx, "tx": tx, "conns": conns, "totconns": totconns, "ereq": ereq}}},
                    "pools": {}}),
            );
            wait_counter("a statistics heartbeat", &role.health.counters.applied, seq as u64 + 1).await;
        }
        let sum = |f: fn(&(u64, u64, u64, u64, u64)) -> u64| beats.iter().map(f).sum::<u64>();
        let stats = get(&api, &format!("/v2/lbaas/listeners/{}/stats", g.listener)).await["stats"].clone();
        assert_eq!(stats["bytes_in"], sum(|b| b.0), "{}: {stats}", db.name);
        assert_eq!(stats["bytes_out"], sum(|b| b.1));
        assert_eq!(stats["active_connections"], beats[2].2, "the current count, not a sum");
        assert_eq!(stats["total_connections"], sum(|b| b.3));
        assert_eq!(stats["request_errors"], sum(|b| b.4));
        let amp_stats = get(&api, &format!("/v2/octavia/amphorae/{amp}/stats")).await;
        assert_eq!(amp_stats["amphora_stats"][0]["bytes_in"], sum(|b| b.0), "{amp_stats}");

        // Version 2 carries absolute values: they replace.
        send(
            role.addr(),
            &json!({"id": amp, "seq": 9, "ver": 2,
                "listeners": {&g.listener: {"status": "OPEN",
                    "stats": {"rx": 5, "tx": 6, "conns": 7, "totconns": 8, "ereq": 9}}},
                "pools": {}}),
        );
        wait_counter("the version 2 heartbeat", &role.health.counters.applied, 4).await;
        let stats = get(&api, &format!("/v2/lbaas/listeners/{}/stats", g.listener)).await["stats"].clone();
        assert_eq!(
            (
                &stats["bytes_in"],
                &stats["bytes_out"],
                &stats["active_connections"],
                &stats["total_connections"],
                &stats["request_errors"]
            ),
            (&json!(5), &json!(6), &json!(7), &json!(8), &json!(9)),
            "{stats}"
        );
    }
}

#[tokio::test]
async fn bad_signatures_unknown_and_deleted_amphorae_change_nothing() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let g = graph(&api).await;
        let other_lb = lbaas_support::lb(&api, "other").await;
        let deleted = insert_amphora(&api, Some(&g.lb), "DELETED").await;
        let stranger = insert_amphora(&api, Some(&other_lb), "ALLOCATED").await;
        let role = Role::start(&config(&db, 60, None)).await;
        let bogus = |id: &str| {
            json!({"id": id, "seq": 1, "ver": 3,
                "listeners": {&g.listener: {"status": "FULL",
                    "stats": {"rx": 1, "tx": 1, "conns": 1, "totconns": 1, "ereq": 1}}},
                "pools": {format!("{}:{}", g.pool, g.listener): {"status": "DOWN", "members": {}}}})
        };
        let unknown = uuid::Uuid::new_v4().to_string();
        let counters = &role.health.counters;

        send_signed(role.addr(), &bogus(&unknown), "not-the-key");
        wait_counter("the wrongly signed packet", &counters.bad_signature, 1).await;
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").send_to(b"short", role.addr()).expect("send");
        wait_counter("the short packet", &counters.bad_signature, 2).await;
        send(role.addr(), &bogus(&unknown));
        wait_counter("the unknown amphora", &counters.unknown_amphora, 1).await;
        send(role.addr(), &bogus(&deleted));
        wait_counter("the deleted amphora", &counters.unknown_amphora, 2).await;
        // A known amphora speaks only for its own load balancer: its
        // listener count matches (none), another's listener stays untouched.
        send(role.addr(), &bogus(&stranger));
        wait_counter("the other load balancer's amphora", &counters.listener_count_mismatch, 1).await;

        assert_eq!(counters.applied.get(), 0);
        assert_eq!(counters.received.get(), 5);
        assert_eq!(
            count(&api, &format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id <> '{stranger}'")).await,
            0,
            "{}",
            db.name
        );
        assert_eq!(count(&api, "SELECT COUNT(*) FROM listener_statistics").await, 0);
        assert_eq!(operating(&api, &format!("/v2/lbaas/listeners/{}", g.listener), "listener").await, "ONLINE");
        assert_eq!(operating(&api, &format!("/v2/lbaas/pools/{}", g.pool), "pool").await, "ONLINE");
        assert_eq!(operating(&api, &format!("/v2/lbaas/loadbalancers/{}", g.lb), "loadbalancer").await, "ONLINE");
    }
}

#[tokio::test]
async fn a_stale_amphora_gets_exactly_one_failover_job_from_two_health_managers() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "stale").await;
        let amp = insert_amphora(&api, Some(&lb), "ALLOCATED").await;
        let spare = insert_amphora(&api, None, "READY").await;
        stale_health_row(&api, &amp).await;
        stale_health_row(&api, &spare).await;
        let timeout = 2;
        let started = Instant::now();
        let cfg = config(&db, timeout, None);
        let (first, second) = (Role::start(&cfg).await, Role::start(&cfg).await);
        let jobs = eventually("a failover job", Duration::from_secs(20), || async {
            let jobs = failover_jobs(&api).await;
            (!jobs.is_empty()).then_some(jobs)
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_secs(timeout),
            "no scan before heartbeat_timeout has passed since the start"
        );
        assert_eq!(jobs, vec![amp.clone()], "{}", db.name);
        // Both managers keep scanning: still one job.
        let (a, b) = (first.health.counters.scans.get(), second.health.counters.scans.get());
        wait_counter("two more scans of the first", &first.health.counters.scans, a + 2).await;
        wait_counter("two more scans of the second", &second.health.counters.scans, b + 2).await;
        assert_eq!(failover_jobs(&api).await, vec![amp.clone()]);
        assert_eq!(first.health.counters.failovers_queued.get() + second.health.counters.failovers_queued.get(), 1);
        assert_eq!(lbaas_support::status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
        let busy = format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{amp}' AND busy = TRUE");
        assert_eq!(count(&api, &busy).await, 1);
        assert_eq!(amphora_status(&api, &spare).await, "READY", "a spare is not failed over");
    }
}

#[tokio::test]
async fn a_load_balancer_that_is_not_active_or_error_defers_the_failover() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "busy").await;
        api.sql(&format!("UPDATE load_balancer SET provisioning_status = 'PENDING_UPDATE' WHERE id = '{lb}'")).await;
        let amp = insert_amphora(&api, Some(&lb), "ALLOCATED").await;
        stale_health_row(&api, &amp).await;
        let role = Role::start(&config(&db, 1, None)).await;
        wait_counter("two scans", &role.health.counters.scans, 2).await;
        assert!(failover_jobs(&api).await.is_empty(), "{}", db.name);
        let free = format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{amp}' AND busy = FALSE");
        assert_eq!(count(&api, &free).await, 1, "unclaimed for a later scan");
        // An ERROR load balancer may be failed over by the health manager.
        api.sql(&format!("UPDATE load_balancer SET provisioning_status = 'ERROR' WHERE id = '{lb}'")).await;
        eventually("the deferred failover", Duration::from_secs(10), || async {
            (failover_jobs(&api).await == vec![amp.clone()]).then_some(())
        })
        .await;
        assert_eq!(lbaas_support::status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
    }
}

#[tokio::test]
async fn the_failover_threshold_stops_every_stale_amphora_until_it_heartbeats_again() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let (lb1, lb2) = (lbaas_support::lb(&api, "one").await, lbaas_support::lb(&api, "two").await);
        let (a1, a2) =
            (insert_amphora(&api, Some(&lb1), "ALLOCATED").await, insert_amphora(&api, Some(&lb2), "ALLOCATED").await);
        stale_health_row(&api, &a1).await;
        stale_health_row(&api, &a2).await;
        let role = Role::start(&config(&db, 2, Some(2))).await;
        let counters = &role.health.counters;
        wait_counter("the circuit breaker", &counters.circuit_breaker_trips, 1).await;
        assert_eq!(amphora_status(&api, &a1).await, "FAILOVER_STOPPED", "{}", db.name);
        assert_eq!(amphora_status(&api, &a2).await, "FAILOVER_STOPPED");
        wait_counter("the breaker on the next scan", &counters.circuit_breaker_trips, 2).await;
        assert!(failover_jobs(&api).await.is_empty(), "no failover while the breaker is open");
        assert_eq!(lbaas_support::status_of(&api, "load_balancer", &lb1).await, "ACTIVE");

        // a1 checks in again (and keeps doing so): back to ALLOCATED.
        let addr = role.addr();
        let beat = json!({"id": a1, "seq": 1, "ver": 3, "listeners": {}, "pools": {}});
        let heartbeats = tokio::spawn(async move {
            loop {
                send(addr, &beat);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        eventually("a1 back to ALLOCATED", Duration::from_secs(10), || async {
            (amphora_status(&api, &a1).await == "ALLOCATED").then_some(())
        })
        .await;
        // One stale amphora is below the threshold: a2 is failed over, as
        // upstream does with FAILOVER_STOPPED amphorae.
        eventually("a2's failover", Duration::from_secs(10), || async {
            (failover_jobs(&api).await == vec![a2.clone()]).then_some(())
        })
        .await;
        let scans = counters.scans.get();
        wait_counter("two more scans", &counters.scans, scans + 2).await;
        assert_eq!(failover_jobs(&api).await, vec![a2.clone()]);
        assert_eq!(amphora_status(&api, &a1).await, "ALLOCATED");
        heartbeats.abort();
    }
}

#[tokio::test]
async fn an_amphora_that_stops_heartbeating_is_failed_over_within_seconds() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "quiet").await;
        let amp = insert_amphora(&api, Some(&lb), "ALLOCATED").await;
        let timeout = 2;
        let role = Role::start(&config(&db, timeout, None)).await;
        send(role.addr(), &json!({"id": amp, "seq": 1, "ver": 3, "listeners": {}, "pools": {}}));
        wait_counter("the last heartbeat", &role.health.counters.applied, 1).await;
        let last = Instant::now();
        eventually("the failover job", Duration::from_secs(15), || async {
            (!failover_jobs(&api).await.is_empty()).then_some(())
        })
        .await;
        let waited = last.elapsed();
        assert!(waited >= Duration::from_secs(timeout) - Duration::from_millis(100), "{}: after {waited:?}", db.name);
        assert!(waited < Duration::from_secs(timeout + 4), "detection took {waited:?}");
        assert_eq!(failover_jobs(&api).await, vec![amp]);
    }
}

#[tokio::test]
async fn a_heartbeat_processed_later_than_the_interval_is_ignored() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "slow").await;
        let amp = insert_amphora(&api, Some(&lb), "ALLOCATED").await;
        let message =
            serde_json::from_value(json!({"id": amp, "ver": 3, "listeners": {}, "pools": {}})).expect("message");
        let interval = Duration::from_secs(10);
        let late = health::update::Received {
            message,
            at: Instant::now() - interval,
            from: "127.0.0.1:1".parse().expect("addr"),
        };
        let outcomes =
            health::update::apply_batch(&api.state.db, std::slice::from_ref(&late), interval).await.expect("apply");
        assert_eq!(outcomes, vec![health::update::Outcome::TooSlow], "{}", db.name);
        assert_eq!(count(&api, "SELECT COUNT(*) FROM amphora_health").await, 0);
        let fresh = health::update::Received { at: Instant::now(), ..late };
        let outcomes = health::update::apply_batch(&api.state.db, &[fresh], interval).await.expect("apply");
        assert_eq!(outcomes, vec![health::update::Outcome::Applied]);
        assert_eq!(count(&api, "SELECT COUNT(*) FROM amphora_health").await, 1);
    }
}

/// The agent binary cargo built next to this test's directory
/// (`target/debug/amphora-agent`).
fn agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(std::path::Path::parent).expect("target directory");
    let agent = dir.join("amphora-agent");
    assert!(agent.is_file(), "{} is missing: cargo build -p amphora-agent", agent.display());
    agent
}

#[tokio::test]
#[ignore = "needs the amphora-agent binary and root (network namespaces); scripts/test.sh runs it"]
async fn a_real_agent_keeps_its_amphora_healthy_until_it_dies() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let timeout = 3;
        let role = Role::start(&config(&db, timeout, None)).await;
        let mut agent = amphora_testkit::Agent::builder(agent_binary())
            .option("health_manager", "controller_ip_port_list", &role.addr().to_string())
            .option("health_manager", "heartbeat_interval", "1")
            .option("health_manager", "heartbeat_key", KEY)
            .start();
        let lb = lbaas_support::lb(&api, "agent").await;
        api.sql(&format!(
            "INSERT INTO amphora (id, load_balancer_id, compute_id, role, status, created_at) \
             VALUES ('{}', '{lb}', 'c1', 'STANDALONE', 'ALLOCATED', '2026-01-01T00:00:00')",
            agent.amphora_id
        ))
        .await;
        let counters = &role.health.counters;
        wait_counter("the agent's first heartbeat", &counters.applied, 1).await;
        // Past the start-up grace and a few scans while it heartbeats.
        let started = Instant::now();
        wait_counter("scans while the agent lives", &counters.scans, 3).await;
        assert!(started.elapsed() < Duration::from_secs(timeout + 5));
        assert!(failover_jobs(&api).await.is_empty(), "{}: a heartbeating amphora is not failed over", db.name);
        assert!(counters.applied.get() >= 3, "one heartbeat a second");
        // (Heartbeats sent before the row existed were from an unknown amphora.)
        assert_eq!(counters.bad_signature.get() + counters.malformed.get(), 0, "the agent's envelopes verify");

        agent.kill();
        let died = Instant::now();
        eventually("the dead agent's failover", Duration::from_secs(15), || async {
            (failover_jobs(&api).await == vec![agent.amphora_id.clone()]).then_some(())
        })
        .await;
        assert!(died.elapsed() >= Duration::from_secs(timeout - 1), "after {:?}", died.elapsed());
        assert_eq!(lbaas_support::status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
    }
}

#[tokio::test]
async fn one_batch_folds_several_heartbeats_of_one_amphora_in_order() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let g = graph(&api).await;
        let amp = insert_amphora(&api, Some(&g.lb), "FAILOVER_STOPPED").await;
        let pool_key = format!("{}:{}", g.pool, g.listener);
        let m1 = &g.members[0];
        let beat = |ver: u64, stats: [u64; 5], m1_status: &str| {
            let [rx, tx, conns, totconns, ereq] = stats;
            let message = serde_json::from_value(json!({"id": amp, "ver": ver,
                "listeners": {&g.listener: {"status": "OPEN",
                    "stats": {"rx": rx, "tx": tx, "conns": conns, "totconns": totconns, "ereq": ereq}}},
                "pools": {&pool_key: {"status": "UP", "members": {m1: m1_status}}}}))
            .expect("message");
            health::update::Received { message, at: Instant::now(), from: "127.0.0.1:1".parse().expect("addr") }
        };
        // Deltas, then an absolute (version 2) value, then a delta on top.
        let batch = [
            beat(3, [10, 20, 1, 3, 1], "DOWN"),
            beat(3, [5, 5, 2, 1, 0], "DOWN"),
            beat(2, [100, 200, 7, 30, 4], "MAINT"),
            beat(3, [1, 2, 3, 4, 5], "UP"),
        ];
        let outcomes =
            health::update::apply_batch(&api.state.db, &batch, Duration::from_secs(10)).await.expect("apply");
        assert_eq!(outcomes, vec![health::update::Outcome::Applied; 4], "{}", db.name);
        let stats = get(&api, &format!("/v2/lbaas/listeners/{}/stats", g.listener)).await["stats"].clone();
        assert_eq!(
            [
                &stats["bytes_in"],
                &stats["bytes_out"],
                &stats["active_connections"],
                &stats["total_connections"],
                &stats["request_errors"]
            ],
            [&json!(101), &json!(202), &json!(3), &json!(34), &json!(9)],
            "{stats}"
        );
        // The last word on the member wins; the amphora checked in.
        let member = format!("/v2/lbaas/pools/{}/members/{m1}", g.pool);
        assert_eq!(operating(&api, &member, "member").await, "ONLINE");
        assert_eq!(operating(&api, &format!("/v2/lbaas/pools/{}", g.pool), "pool").await, "ONLINE");
        assert_eq!(amphora_status(&api, &amp).await, "ALLOCATED");
        // A second batch adds to what the first stored.
        let outcomes =
            health::update::apply_batch(&api.state.db, &[beat(3, [1, 1, 0, 1, 0], "DOWN")], Duration::from_secs(10))
                .await
                .expect("apply");
        assert_eq!(outcomes, vec![health::update::Outcome::Applied]);
        let stats = get(&api, &format!("/v2/lbaas/listeners/{}/stats", g.listener)).await["stats"].clone();
        assert_eq!((&stats["bytes_in"], &stats["active_connections"]), (&json!(102), &json!(0)));
        assert_eq!(operating(&api, &member, "member").await, "ERROR");
        assert_eq!(operating(&api, &format!("/v2/lbaas/pools/{}", g.pool), "pool").await, "DEGRADED");
    }
}
