//! Jobs survive their worker: a job whose worker died mid-flow is taken over
//! after its lease and resumed from its stored progress, exactly once; two
//! workers never run one job twice; shutdown hands jobs back.

mod common;
mod worker_support;

use std::collections::HashSet;
use std::time::Duration;

use amphora_controller::config::Topology;
use amphora_controller::db::Db;
use amphora_controller::jobs::JobKind;
use serde_json::json;
use worker_support::{TestDriver, config, env, eventually, start_worker};

#[tokio::test]
async fn a_crashed_worker_s_job_is_resumed_not_restarted() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::ActiveStandby)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        // The first worker dies while the flow plugs the VIP, well after
        // both amphorae were built.
        driver.hang_on(Some("plug_vip"));
        let first = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        tokio::time::timeout(worker_support::DEADLINE, driver.hanging.notified())
            .await
            .expect("the flow reached plug_vip");
        let (state, step, reverting, attempts, _) = e.job(&job).await;
        assert_eq!((state.as_str(), reverting, attempts), ("RUNNING", false, 1));
        assert!(step > 3, "step {step}");
        first.abort();
        driver.hang_on(None);
        assert_eq!(driver.calls("compute_create"), 2);

        // A new worker takes the job over once the lease (1 s) ran out.
        let second = e.worker(Some(driver.drivers()));
        e.wait_job(&job, "DONE").await;
        assert_eq!(e.lb_status(&lb).await, "ACTIVE");
        let (_, _, _, attempts, _) = e.job(&job).await;
        assert_eq!(attempts, 2);
        // Resumed where it stopped: no amphora was built again.
        assert_eq!(driver.calls("compute_create"), 2);
        assert_eq!(driver.max_per_object("compute_create"), 1);
        assert_eq!(driver.calls("allocate_vip"), 1);
        assert_eq!(e.live_amphorae(&lb).await, 2);
        assert_eq!(e.count("SELECT COUNT(*) FROM amphora").await, 2);
        let amps = e.amphorae(&lb).await;
        assert!(amps.iter().all(|a| a["status"] == "ALLOCATED"), "{amps:?}");
        second.stop().await;
    }
}

#[tokio::test]
async fn a_crash_while_reverting_finishes_the_revert() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        // plug_vip fails, and the revert hangs deleting the VRRP port.
        driver.fail_on(Some("plug_vip"));
        driver.hang_on(Some("delete_port"));
        let first = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        tokio::time::timeout(worker_support::DEADLINE, driver.hanging.notified()).await.expect("the revert started");
        let (_, _, reverting, _, error) = e.job(&job).await;
        assert!(reverting);
        assert!(error.is_some());
        first.abort();
        driver.hang_on(None);
        let second = e.worker(Some(driver.drivers()));
        e.wait_job(&job, "FAILED").await;
        assert_eq!(e.lb_status(&lb).await, "ERROR");
        assert_eq!(e.live_amphorae(&lb).await, 0);
        assert_eq!(driver.calls("compute_delete"), 1);
        assert_eq!(driver.calls("compute_create"), 1);
        let (_, _, _, _, error) = e.job(&job).await;
        assert!(error.is_some_and(|t| t.contains("plug_vip")));
        second.stop().await;
    }
}

#[tokio::test]
async fn two_workers_run_each_job_once() {
    for db in common::databases().await {
        let mut cfg = config(&db, 0, Topology::Single);
        cfg.worker.workers = 4;
        // Claiming is what is checked here, not a lease running out: the
        // recovery tests' 1 s lease can lapse on a loaded machine (a SQLite
        // write waiting seconds for the lock), and the other worker then
        // rightly takes the job over, a second attempt.
        cfg.worker.job_lease = std::time::Duration::from_secs(60);
        let e = env(&db, cfg.clone()).await;
        let driver = TestDriver::new(&e.db, &e.config);
        // On PostgreSQL the second worker has its own pool, as a second
        // process would; SQLite has one writer per database file.
        let other_db = if db.name == "postgres" { Db::open(&db.url).await.expect("second pool") } else { e.db.clone() };
        let w1 = e.worker(Some(driver.drivers()));
        let w2 = start_worker(&other_db, &cfg, &e.wake, Some(driver.drivers()));
        let mut lbs = Vec::new();
        let mut jobs = Vec::new();
        for _ in 0..20 {
            let lb = e.insert_lb("PENDING_CREATE").await;
            jobs.push(e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await);
            lbs.push(lb);
        }
        for job in &jobs {
            e.wait_job(job, "DONE").await;
        }
        for lb in &lbs {
            assert_eq!(e.lb_status(lb).await, "ACTIVE");
            assert_eq!(e.live_amphorae(lb).await, 1);
        }
        assert_eq!(e.count("SELECT COUNT(*) FROM job WHERE attempts <> 1").await, 0);
        assert_eq!(driver.calls("compute_create"), 20);
        assert_eq!(driver.calls("allocate_vip"), 20);
        let owners: HashSet<Option<String>> = sqlx::query_scalar("SELECT owner FROM job")
            .fetch_all(&e.db.pool)
            .await
            .expect("owners")
            .into_iter()
            .collect();
        assert!(owners.iter().all(|o| o.as_deref() == Some(w1.id.as_str()) || o.as_deref() == Some(w2.id.as_str())));
        w1.stop().await;
        w2.stop().await;
    }
}

#[tokio::test]
async fn shutdown_hands_the_job_back_and_a_new_worker_finishes_it() {
    for db in common::databases().await {
        let mut cfg = config(&db, 30, Topology::Single);
        cfg.worker.job_lease = Duration::from_secs(60);
        let e = env(&db, cfg).await;
        let driver = TestDriver::new(&e.db, &e.config);
        let first = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        eventually("the flow half-way", || async { (e.job(&job).await.1 >= 3).then_some(()) }).await;
        first.stop().await;
        let (state, step, _, _, _) = e.job(&job).await;
        assert_eq!(state, "QUEUED", "released at a step boundary");
        assert!(step >= 3);
        // The lease is long, yet the next worker takes it at once.
        let second = e.worker(Some(driver.drivers()));
        e.wait_job(&job, "DONE").await;
        assert_eq!(driver.calls("compute_create"), 1);
        assert_eq!(e.lb_status(&lb).await, "ACTIVE");
        second.stop().await;
    }
}

#[tokio::test]
async fn a_job_that_stops_on_a_panic_is_retried_from_its_progress() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        driver.panic_once_on(Some("plug_vip"));
        let w = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_job(&job, "DONE").await;
        assert_eq!(e.lb_status(&lb).await, "ACTIVE");
        assert_eq!(e.job(&job).await.3, 2, "claimed twice");
        assert_eq!(driver.calls("compute_create"), 1);
        assert_eq!(driver.calls("plug_vip"), 1);
        w.stop().await;
    }
}

#[tokio::test]
async fn a_job_that_keeps_stopping_its_worker_is_given_up_and_reverted() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.exec(&format!(
            "UPDATE job SET attempts = {} WHERE id = '{job}'",
            amphora_controller::worker::flow::MAX_ATTEMPTS
        ))
        .await;
        let w = e.worker(None);
        e.wait_job(&job, "FAILED").await;
        assert_eq!(e.lb_status(&lb).await, "ERROR");
        let error = e.job(&job).await.4.unwrap_or_default();
        assert!(error.contains("gave up after 11 attempts"), "{error}");
        assert_eq!(e.live_amphorae(&lb).await, 0);
        w.stop().await;
    }
}

#[tokio::test]
async fn jobs_of_one_target_run_one_at_a_time_in_order() {
    for db in common::databases().await {
        let mut cfg = config(&db, 5, Topology::Single);
        cfg.worker.workers = 4;
        let e = env(&db, cfg.clone()).await;
        let other_db = if db.name == "postgres" { Db::open(&db.url).await.expect("second pool") } else { e.db.clone() };
        let lb = e.insert_lb("PENDING_CREATE").await;
        // Queued together (same second), before any worker runs.
        let create = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        let update = e.enqueue(JobKind::UpdateLoadBalancer, &lb, json!({})).await;
        let delete = e.enqueue(JobKind::DeleteLoadBalancer, &lb, json!({"cascade": true})).await;
        // The create stops on a bug once and waits to be retried: the jobs
        // queued after it wait too.
        let driver = TestDriver::new(&e.db, &e.config);
        driver.panic_once_on(Some("compute_create"));
        let w1 = e.worker(Some(driver.drivers()));
        let w2 = start_worker(&other_db, &cfg, &e.wake, Some(driver.drivers()));
        for job in [&create, &update, &delete] {
            e.wait_job(job, "DONE").await;
        }
        assert_eq!(e.lb_status(&lb).await, "DELETED");
        assert_eq!(e.live_amphorae(&lb).await, 0);
        assert_eq!(e.count(&format!("SELECT COUNT(*) FROM amphora WHERE load_balancer_id = '{lb}'")).await, 1);
        w1.stop().await;
        w2.stop().await;
    }
}
