//! Three controller processes on one PostgreSQL database, every role in
//! each, killed with SIGKILL one after another while load balancers are
//! created and their amphorae failed over through any of them: each job is
//! taken over by another controller once its lease expires, every load
//! balancer ends ACTIVE (or ERROR with its job's reason), none stays
//! PENDING, and no amphora is left over or doubled.
//!
//! The drivers are upstream-style noop ones with a delay per step, so the
//! kills land inside flows. Needs AMPHORA_TEST_POSTGRES (scripts/test.sh
//! starts a server).

mod common;
#[path = "e2e_support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Api;
use serde_json::{Value, json};
use sqlx::Row;

const BIN: &str = env!("CARGO_BIN_EXE_amphora-controller");
const SUBNET: &str = "8b2a3c1e-9f3c-4b5e-a7d8-0c1b2a3d4e5f";
const CONTROLLERS: usize = 3;
const LOAD_BALANCERS: usize = 9;

struct Controller {
    dir: PathBuf,
    index: usize,
    child: Option<Child>,
    addr: Option<SocketAddr>,
}

impl Controller {
    fn start(&mut self) {
        let ready = self.dir.join(format!("ready-{}", self.index));
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("controller-{}.log", self.index)))
            .expect("log");
        let child = Command::new(BIN)
            .arg("--config-file")
            .arg(self.dir.join("octavia.conf"))
            .args(["run", "--ready-file"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a controller");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = std::fs::read_to_string(&ready).ok().and_then(|s| s.trim().parse().ok()) {
                self.addr = Some(addr);
                return;
            }
            assert!(Instant::now() < deadline, "controller {} never became ready", self.index);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.addr = None;
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A request to whichever controller is up, retried until one answers.
async fn any_call(controllers: &[Controller], method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for c in controllers {
            if let Some(addr) = c.addr
                && let Some(answer) = (Api { addr }).try_call(method, path, body).await
            {
                return answer;
            }
        }
        assert!(Instant::now() < deadline, "no controller answered {method} {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
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

#[tokio::test]
async fn three_controllers_killed_in_turn_finish_every_flow_once_and_orphan_nothing() {
    let Ok(server) = std::env::var("AMPHORA_TEST_POSTGRES") else {
        panic!("AMPHORA_TEST_POSTGRES must name a PostgreSQL server (scripts/test.sh starts one)");
    };
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
    let mut controllers: Vec<Controller> = (0..CONTROLLERS)
        .map(|index| Controller { dir: dir.path().to_owned(), index, child: None, addr: None })
        .collect();
    for c in &mut controllers {
        c.start();
    }

    // Load balancers created through the controllers in turn, one killed
    // and restarted every ~0.7 s meanwhile; then a failover of each
    // amphora, under the same kills.
    let mut lbs = Vec::new();
    for i in 0..LOAD_BALANCERS {
        let body = json!({"loadbalancer": {"name": format!("lb-{i}"), "vip_subnet_id": SUBNET}});
        let (status, created) = any_call(&controllers, "POST", "/v2/lbaas/loadbalancers", Some(&body)).await;
        assert_eq!(status, 201, "{created}");
        lbs.push(created["loadbalancer"]["id"].as_str().expect("an id").to_owned());
        let victim = i % CONTROLLERS;
        controllers[victim].kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        controllers[victim].start();
    }
    let db = amphora_controller::db::Db::connect(&url).await.expect("open the database");
    let settled = |db: amphora_controller::db::Db| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pending: i64 =
                sqlx::query("SELECT COUNT(*) FROM load_balancer WHERE provisioning_status LIKE 'PENDING%'")
                    .fetch_one(&db.pool)
                    .await
                    .expect("count")
                    .get(0);
            let running: i64 = sqlx::query("SELECT COUNT(*) FROM job WHERE state NOT IN ('DONE', 'FAILED')")
                .fetch_one(&db.pool)
                .await
                .expect("count")
                .get(0);
            if pending == 0 && running == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{pending} load balancers PENDING, {running} jobs unfinished");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    settled(db.clone()).await;

    let amphorae: Vec<String> = sqlx::query("SELECT id FROM amphora WHERE status = 'ALLOCATED' ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("amphorae")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (i, amp) in amphorae.iter().enumerate() {
        let (status, body) = any_call(&controllers, "PUT", &format!("/v2/octavia/amphorae/{amp}/failover"), None).await;
        assert!(status == 202 || status == 409, "failover of {amp}: {status} {body}");
        let victim = i % CONTROLLERS;
        controllers[victim].kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        controllers[victim].start();
    }
    settled(db.clone()).await;

    // Every load balancer ACTIVE, or ERROR with its failed job's reason.
    let mut problems = Vec::new();
    for lb in &lbs {
        let status: String = sqlx::query("SELECT provisioning_status FROM load_balancer WHERE id = $1")
            .bind(lb.as_str())
            .fetch_one(&db.pool)
            .await
            .expect("lb")
            .get(0);
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
    // No amphora outside a load balancer, none sharing an address.
    let stray: i64 = sqlx::query("SELECT COUNT(*) FROM amphora WHERE status <> 'DELETED' AND load_balancer_id IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("count")
        .get(0);
    if stray != 0 {
        problems.push(format!("{stray} live amphorae belong to no load balancer"));
    }
    let shared: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT lb_network_ip FROM amphora WHERE status <> 'DELETED' \
         GROUP BY lb_network_ip HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count")
    .get(0);
    if shared != 0 {
        problems.push(format!("{shared} management addresses are held by two live amphorae"));
    }
    let taken_over: i64 =
        sqlx::query("SELECT COUNT(*) FROM job WHERE attempts > 1").fetch_one(&db.pool).await.expect("count").get(0);
    println!(
        "{} load balancers, {} failovers asked, {taken_over} jobs taken over after a kill",
        lbs.len(),
        amphorae.len()
    );
    assert!(taken_over > 0, "no kill landed inside a flow: the test did not test a takeover");
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), logs(dir.path()));
}
