//! The worker's flows on the noop drivers: create, update, delete and
//! failover reach their final statuses with sensible fields, failures
//! revert and set ERROR.

mod common;
mod worker_support;

use amphora_controller::config::Topology;
use amphora_controller::jobs::JobKind;
use serde_json::{Value, json};
use worker_support::{TestDriver, config, env, eventually};

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(amphora_controller::db::is_uuid)
}

fn in_net(v: &Value, prefix: &str) -> bool {
    v.as_str().is_some_and(|s| s.starts_with(prefix) && s.parse::<std::net::Ipv4Addr>().is_ok())
}

/// Checks the 20 fields of an ALLOCATED amphora of `lb`.
async fn check_allocated(e: &worker_support::Env, amp: &Value, lb: &str) {
    let vip = e.text(&format!("SELECT vip_address FROM load_balancer WHERE id = '{lb}'")).await.expect("vip");
    let vip_port = e.text(&format!("SELECT vip_port_id FROM load_balancer WHERE id = '{lb}'")).await.expect("vip port");
    assert!(is_uuid(&amp["id"]), "{amp}");
    assert_eq!(amp["loadbalancer_id"], lb, "{amp}");
    assert!(is_uuid(&amp["compute_id"]), "{amp}");
    assert!(in_net(&amp["lb_network_ip"], "192.0.2."), "{amp}");
    assert!(in_net(&amp["vrrp_ip"], "198.51.100."), "{amp}");
    assert_eq!(amp["ha_ip"], vip.as_str(), "{amp}");
    assert!(vip.starts_with("203.0.113."), "{vip}");
    assert!(is_uuid(&amp["vrrp_port_id"]), "{amp}");
    assert_eq!(amp["ha_port_id"], vip_port.as_str(), "{amp}");
    assert!(amp["cert_expiration"].as_str().is_some_and(|s| s > "2027"), "{amp}");
    assert_eq!(amp["cert_busy"], false, "{amp}");
    assert_eq!(amp["status"], "ALLOCATED", "{amp}");
    assert_eq!(amp["cached_zone"], "nova", "{amp}");
    assert!(amp["created_at"].is_string() && amp["updated_at"].is_string(), "{amp}");
    assert!(amp["image_id"].is_string() && amp["compute_flavor"].is_string(), "{amp}");
    let id = amp["id"].as_str().unwrap_or_default();
    let health =
        e.count(&format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{id}' AND busy = FALSE")).await;
    assert_eq!(health, 1, "health row of {id}");
}

#[tokio::test]
async fn create_single_goes_through_pending_to_active() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 20, Topology::Single)).await;
        let w = e.worker(None);
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        // A client sees the amphora being built while the LB is pending.
        eventually("an amphora in a PENDING or BOOTING state", || async {
            let n = e
                .count(&format!(
                    "SELECT COUNT(*) FROM amphora WHERE load_balancer_id = '{lb}' AND status IN ('PENDING_CREATE', 'BOOTING')"
                ))
                .await;
            (n > 0 && e.lb_status(&lb).await == "PENDING_CREATE").then_some(())
        })
        .await;
        e.wait_lb(&lb, "ACTIVE").await;
        e.wait_job(&job, "DONE").await;
        let amps = e.amphorae(&lb).await;
        assert_eq!(amps.len(), 1, "{amps:?}");
        let amp = &amps[0];
        check_allocated(&e, amp, &lb).await;
        assert_eq!(amp["role"], "STANDALONE");
        assert_eq!(amp["vrrp_priority"], Value::Null);
        assert_eq!(amp["vrrp_id"], Value::Null);
        assert_eq!(amp["vrrp_interface"], Value::Null);
        assert_eq!(
            e.text(&format!("SELECT operating_status FROM load_balancer WHERE id = '{lb}'")).await.unwrap(),
            "ONLINE"
        );
        assert_eq!(e.text(&format!("SELECT topology FROM load_balancer WHERE id = '{lb}'")).await.unwrap(), "SINGLE");
        w.stop().await;
    }
}

#[tokio::test]
async fn create_active_standby_builds_master_and_backup() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::ActiveStandby)).await;
        let w = e.worker(None);
        let lb = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_lb(&lb, "ACTIVE").await;
        let mut amps = e.amphorae(&lb).await;
        assert_eq!(amps.len(), 2, "{amps:?}");
        amps.sort_by_key(|a| a["role"].as_str().map(str::to_owned));
        for amp in &amps {
            check_allocated(&e, amp, &lb).await;
            assert_eq!(amp["vrrp_id"], 1);
            assert_eq!(amp["vrrp_interface"], "eth1");
        }
        assert_eq!(amps[0]["role"], "BACKUP");
        assert_eq!(amps[0]["vrrp_priority"], 90);
        assert_eq!(amps[1]["role"], "MASTER");
        assert_eq!(amps[1]["vrrp_priority"], 100);
        assert_ne!(amps[0]["vrrp_ip"], amps[1]["vrrp_ip"]);
        assert_ne!(amps[0]["lb_network_ip"], amps[1]["lb_network_ip"]);
        w.stop().await;
    }
}

#[tokio::test]
async fn two_load_balancers_get_different_vips() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let w = e.worker(None);
        let a = e.insert_lb("PENDING_CREATE").await;
        let b = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &a, json!({})).await;
        e.enqueue(JobKind::CreateLoadBalancer, &b, json!({})).await;
        e.wait_lb(&a, "ACTIVE").await;
        e.wait_lb(&b, "ACTIVE").await;
        let va = e.text(&format!("SELECT vip_address FROM load_balancer WHERE id = '{a}'")).await;
        let vb = e.text(&format!("SELECT vip_address FROM load_balancer WHERE id = '{b}'")).await;
        assert!(va.is_some() && vb.is_some());
        assert_ne!(va, vb);
        w.stop().await;
    }
}

#[tokio::test]
async fn failover_builds_a_replacement_then_deletes_the_failed_amphora() {
    for topology in [Topology::Single, Topology::ActiveStandby] {
        for db in common::databases().await {
            let e = env(&db, config(&db, 0, topology)).await;
            let w = e.worker(None);
            let lb = e.insert_lb("PENDING_CREATE").await;
            e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
            e.wait_lb(&lb, "ACTIVE").await;
            let before = e.amphorae(&lb).await;
            let old = before[0].clone();
            let old_id = old["id"].as_str().unwrap().to_owned();
            let (status, body) = e.api.call("PUT", &format!("/v2/octavia/amphorae/{old_id}/failover"), None).await;
            assert_eq!(status, 202, "{body}");
            e.wait_lb(&lb, "ACTIVE").await;
            let st = e.text(&format!("SELECT status FROM amphora WHERE id = '{old_id}'")).await.unwrap();
            assert_eq!(st, "DELETED");
            let after = e.amphorae(&lb).await;
            assert_eq!(after.len(), topology.amphora_count(), "{after:?}");
            let new = after.iter().find(|a| !before.iter().any(|b| b["id"] == a["id"])).expect("a new amphora");
            check_allocated(&e, new, &lb).await;
            assert_eq!(new["role"], old["role"]);
            assert_eq!(new["vrrp_priority"], old["vrrp_priority"]);
            assert_eq!(new["ha_ip"], old["ha_ip"]);
            let health = e.count(&format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{old_id}'")).await;
            assert_eq!(health, 0);
            w.stop().await;
        }
    }
}

#[tokio::test]
async fn load_balancer_failover_replaces_every_amphora() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::ActiveStandby)).await;
        let w = e.worker(None);
        let lb = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_lb(&lb, "ACTIVE").await;
        let before: Vec<Value> = e.amphorae(&lb).await.into_iter().map(|a| a["id"].clone()).collect();
        e.exec(&format!("UPDATE load_balancer SET provisioning_status = 'PENDING_UPDATE' WHERE id = '{lb}'")).await;
        let job = e.enqueue(JobKind::FailoverLoadBalancer, &lb, json!({})).await;
        e.wait_job(&job, "DONE").await;
        assert_eq!(e.lb_status(&lb).await, "ACTIVE");
        let after = e.amphorae(&lb).await;
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|a| !before.contains(&a["id"])), "{after:?}");
        let roles: Vec<&str> = after.iter().filter_map(|a| a["role"].as_str()).collect();
        assert!(roles.contains(&"MASTER") && roles.contains(&"BACKUP"), "{roles:?}");
        w.stop().await;
    }
}

#[tokio::test]
async fn failover_of_a_spare_deletes_it_and_of_a_deleted_one_drops_its_health() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let w = e.worker(None);
        let spare = amphora_controller::db::new_id();
        let gone = amphora_controller::db::new_id();
        e.exec(&format!(
            "INSERT INTO amphora (id, compute_id, status, cert_busy, created_at) VALUES \
             ('{spare}', 'c1', 'READY', FALSE, '2026-01-01T00:00:00'), ('{gone}', 'c2', 'DELETED', FALSE, '2026-01-01T00:00:00')"
        ))
        .await;
        e.exec(&format!("INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES ('{gone}', 1, FALSE)"))
            .await;
        let (status, body) = e.api.call("PUT", &format!("/v2/octavia/amphorae/{spare}/failover"), None).await;
        assert_eq!(status, 202, "{body}");
        let j2 = e.enqueue(JobKind::FailoverAmphora, &gone, json!({})).await;
        e.wait_job(&j2, "DONE").await;
        eventually("the spare DELETED", || async {
            (e.text(&format!("SELECT status FROM amphora WHERE id = '{spare}'")).await.as_deref() == Some("DELETED"))
                .then_some(())
        })
        .await;
        assert_eq!(e.count(&format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{gone}'")).await, 0);
        assert_eq!(e.count("SELECT COUNT(*) FROM amphora WHERE load_balancer_id IS NOT NULL").await, 0);
        w.stop().await;
    }
}

#[tokio::test]
async fn delete_load_balancer_removes_amphorae_and_children() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::ActiveStandby)).await;
        let w = e.worker(None);
        let lb = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_lb(&lb, "ACTIVE").await;
        let now = "2026-01-01T00:00:00";
        e.exec(&format!(
            "INSERT INTO listener (id, project_id, load_balancer_id, protocol, protocol_port, connection_limit, enabled, \
             provisioning_status, operating_status, created_at) VALUES ('l1-{lb}', 'p', '{lb}', 'HTTP', 80, -1, TRUE, 'ACTIVE', 'ONLINE', '{now}')"
        ))
        .await;
        e.exec(&format!(
            "INSERT INTO pool (id, project_id, load_balancer_id, protocol, lb_algorithm, enabled, provisioning_status, \
             operating_status, created_at) VALUES ('p1-{lb}', 'p', '{lb}', 'HTTP', 'ROUND_ROBIN', TRUE, 'ACTIVE', 'ONLINE', '{now}')"
        ))
        .await;
        e.exec(&format!(
            "INSERT INTO member (id, project_id, pool_id, address, protocol_port, weight, backup, enabled, \
             provisioning_status, operating_status, created_at) VALUES ('m1-{lb}', 'p', 'p1-{lb}', '10.0.0.1', 80, 1, FALSE, TRUE, 'ACTIVE', 'ONLINE', '{now}')"
        ))
        .await;
        e.exec(&format!("UPDATE load_balancer SET provisioning_status = 'PENDING_DELETE' WHERE id = '{lb}'")).await;
        let job = e.enqueue(JobKind::DeleteLoadBalancer, &lb, json!({"cascade": true})).await;
        e.wait_job(&job, "DONE").await;
        assert_eq!(e.lb_status(&lb).await, "DELETED");
        assert_eq!(e.live_amphorae(&lb).await, 0);
        assert_eq!(e.count(&format!("SELECT COUNT(*) FROM amphora WHERE load_balancer_id = '{lb}'")).await, 2);
        assert_eq!(e.count("SELECT COUNT(*) FROM amphora_health").await, 0);
        for table in ["listener", "pool"] {
            assert_eq!(e.count(&format!("SELECT COUNT(*) FROM {table} WHERE load_balancer_id = '{lb}'")).await, 0);
        }
        assert_eq!(e.count("SELECT COUNT(*) FROM member").await, 0);
        w.stop().await;
    }
}

#[tokio::test]
async fn delete_amphora_through_the_api_completes() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 20, Topology::Single)).await;
        let w = e.worker(None);
        let id = amphora_controller::db::new_id();
        e.exec(&format!(
            "INSERT INTO amphora (id, compute_id, status, cert_busy, created_at) VALUES ('{id}', 'c1', 'ERROR', FALSE, '2026-01-01T00:00:00')"
        ))
        .await;
        e.exec(&format!("INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES ('{id}', 1, FALSE)")).await;
        let (status, body) = e.api.call("DELETE", &format!("/v2/octavia/amphorae/{id}"), None).await;
        assert_eq!(status, 204, "{body}");
        let (_, body) = e.api.call("GET", &format!("/v2/octavia/amphorae/{id}"), None).await;
        assert_eq!(body["amphora"]["status"], "PENDING_DELETE");
        eventually("the amphora DELETED", || async {
            (e.text(&format!("SELECT status FROM amphora WHERE id = '{id}'")).await.as_deref() == Some("DELETED"))
                .then_some(())
        })
        .await;
        assert_eq!(e.count(&format!("SELECT COUNT(*) FROM amphora_health WHERE amphora_id = '{id}'")).await, 0);
        let (status, _) = e.api.call("GET", &format!("/v2/octavia/amphorae/{id}"), None).await;
        assert_eq!(status, 404);
        w.stop().await;
    }
}

#[tokio::test]
async fn configure_amphora_calls_the_agent() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        let w = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_lb(&lb, "ACTIVE").await;
        let amp = e.amphorae(&lb).await[0]["id"].as_str().unwrap().to_owned();
        let (status, body) = e.api.call("PUT", &format!("/v2/octavia/amphorae/{amp}/config"), None).await;
        assert_eq!(status, 202, "{body}");
        eventually("update_agent_config called", || async { (driver.calls("update_agent_config") == 1).then_some(()) })
            .await;
        w.stop().await;
    }
}

#[tokio::test]
async fn update_settles_children_and_deletes_pending_deletes() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        let w = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_lb(&lb, "ACTIVE").await;
        let now = "2026-01-01T00:00:00";
        let listener = |id: &str, port: u16, status: &str, pool: &str| {
            format!(
                "INSERT INTO listener (id, project_id, load_balancer_id, protocol, protocol_port, connection_limit, \
                 default_pool_id, enabled, provisioning_status, operating_status, created_at) VALUES \
                 ('{id}', 'p', '{lb}', 'HTTP', {port}, -1, {pool}, TRUE, '{status}', 'OFFLINE', '{now}')"
            )
        };
        let pool = |id: &str, status: &str| {
            format!(
                "INSERT INTO pool (id, project_id, load_balancer_id, protocol, lb_algorithm, enabled, provisioning_status, \
                 operating_status, created_at) VALUES ('{id}', 'p', '{lb}', 'HTTP', 'ROUND_ROBIN', TRUE, '{status}', 'OFFLINE', '{now}')"
            )
        };
        let member = |id: &str, pool: &str, addr: &str, status: &str| {
            format!(
                "INSERT INTO member (id, project_id, pool_id, address, protocol_port, weight, backup, enabled, \
                 provisioning_status, operating_status, created_at) VALUES ('{id}', 'p', '{pool}', '{addr}', 80, 1, FALSE, TRUE, '{status}', 'OFFLINE', '{now}')"
            )
        };
        e.exec(&pool("keep", "PENDING_CREATE")).await;
        e.exec(&pool("drop", "PENDING_DELETE")).await;
        e.exec(&listener("l-new", 80, "PENDING_CREATE", "'keep'")).await;
        e.exec(&listener("l-old", 81, "PENDING_DELETE", "NULL")).await;
        e.exec(&listener("l-usesdrop", 82, "ACTIVE", "'drop'")).await;
        e.exec(&member("m-new", "keep", "10.0.0.1", "PENDING_CREATE")).await;
        e.exec(&member("m-gone", "keep", "10.0.0.2", "PENDING_DELETE")).await;
        e.exec(&member("m-inpool", "drop", "10.0.0.3", "ACTIVE")).await;
        e.exec(&format!(
            "INSERT INTO health_monitor (id, project_id, pool_id, type, delay, timeout, max_retries, max_retries_down, \
             enabled, provisioning_status, operating_status, created_at) VALUES ('hm-drop', 'p', 'drop', 'HTTP', 5, 5, 3, 3, TRUE, 'ACTIVE', 'ONLINE', '{now}')"
        ))
        .await;
        e.exec("INSERT INTO listener_statistics (listener_id, amphora_id) VALUES ('l-old', 'x')").await;
        e.exec(&format!("UPDATE load_balancer SET provisioning_status = 'PENDING_UPDATE' WHERE id = '{lb}'")).await;
        let job = e.enqueue(JobKind::UpdateLoadBalancer, &lb, json!({})).await;
        e.wait_job(&job, "DONE").await;
        assert_eq!(e.lb_status(&lb).await, "ACTIVE");
        assert_eq!(driver.calls("upload_config"), 1);
        let status = |table: &str, id: &str| {
            format!("SELECT provisioning_status || '/' || operating_status FROM {table} WHERE id = '{id}'")
        };
        assert_eq!(e.text(&status("pool", "keep")).await.as_deref(), Some("ACTIVE/ONLINE"));
        assert_eq!(e.text(&status("listener", "l-new")).await.as_deref(), Some("ACTIVE/ONLINE"));
        assert_eq!(e.text(&status("member", "m-new")).await.as_deref(), Some("ACTIVE/NO_MONITOR"));
        for (table, id) in [
            ("pool", "drop"),
            ("listener", "l-old"),
            ("member", "m-gone"),
            ("member", "m-inpool"),
            ("health_monitor", "hm-drop"),
        ] {
            assert_eq!(e.count(&format!("SELECT COUNT(*) FROM {table} WHERE id = '{id}'")).await, 0, "{table} {id}");
        }
        assert_eq!(e.count("SELECT COUNT(*) FROM listener_statistics").await, 0);
        assert_eq!(e.text("SELECT default_pool_id FROM listener WHERE id = 'l-usesdrop'").await, None);
        w.stop().await;
    }
}

#[tokio::test]
async fn a_failing_step_reverts_and_sets_error() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::ActiveStandby)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        driver.fail_on(Some("plug_vip"));
        let w = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_job(&job, "FAILED").await;
        assert_eq!(e.lb_status(&lb).await, "ERROR");
        let (_, step, reverting, _, error) = e.job(&job).await;
        assert_eq!((step, reverting), (0, true));
        assert!(error.as_deref().is_some_and(|t| t.contains("plug_vip fails")), "{error:?}");
        // Both amphorae were built, then torn down: VMs and ports deleted.
        assert_eq!(driver.calls("compute_create"), 2);
        assert_eq!(driver.calls("compute_delete"), 2);
        assert_eq!(driver.calls("delete_port"), 2);
        assert_eq!(driver.calls("deallocate_vip"), 1);
        assert_eq!(e.live_amphorae(&lb).await, 0);
        assert_eq!(e.count("SELECT COUNT(*) FROM amphora_health").await, 0);
        w.stop().await;
    }
}

#[tokio::test]
async fn a_failing_failover_sets_the_amphora_and_the_load_balancer_error() {
    for db in common::databases().await {
        let e = env(&db, config(&db, 0, Topology::Single)).await;
        let driver = TestDriver::new(&e.db, &e.config);
        let w = e.worker(Some(driver.drivers()));
        let lb = e.insert_lb("PENDING_CREATE").await;
        e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        e.wait_lb(&lb, "ACTIVE").await;
        let old = e.amphorae(&lb).await[0]["id"].as_str().unwrap().to_owned();
        driver.fail_on(Some("compute_wait"));
        let (status, _) = e.api.call("PUT", &format!("/v2/octavia/amphorae/{old}/failover"), None).await;
        assert_eq!(status, 202);
        e.wait_lb(&lb, "ERROR").await;
        eventually("the failover job FAILED", || async {
            (e.count("SELECT COUNT(*) FROM job WHERE state = 'FAILED'").await == 1).then_some(())
        })
        .await;
        assert_eq!(e.text(&format!("SELECT status FROM amphora WHERE id = '{old}'")).await.as_deref(), Some("ERROR"));
        // The half-built replacement is gone.
        assert_eq!(e.live_amphorae(&lb).await, 1);
        w.stop().await;
    }
}

#[tokio::test]
async fn housekeeping_rotates_a_certificate_near_expiry_once_and_clears_cert_busy() {
    for db in common::databases().await {
        let mut c = config(&db, 0, Topology::Single);
        c.housekeeping.cert_expiry_buffer = 14 * 86_400;
        let e = env(&db, c.clone()).await;
        let lb = e.insert_lb("PENDING_CREATE").await;
        let job = e.enqueue(JobKind::CreateLoadBalancer, &lb, json!({})).await;
        let w = e.worker(None);
        e.wait_job(&job, "DONE").await;
        w.stop().await;
        let amp = e.amphorae(&lb).await[0]["id"].as_str().unwrap().to_owned();
        // Two amphorae: one expiring in a day, one far from it.
        let soon = amphora_controller::db::format_time(time::OffsetDateTime::now_utc() + time::Duration::days(1));
        e.exec(&format!("UPDATE amphora SET cert_expiration = '{soon}' WHERE id = '{amp}'")).await;
        let far_lb = e.insert_lb("PENDING_CREATE").await;
        let far_job = e.enqueue(JobKind::CreateLoadBalancer, &far_lb, json!({})).await;
        let w = e.worker(None);
        e.wait_job(&far_job, "DONE").await;
        w.stop().await;

        let queued = amphora_controller::housekeeping::rotate_certificates(&e.db, &c).await.unwrap();
        assert_eq!(queued, 1);
        assert_eq!(e.count(&format!("SELECT COUNT(*) FROM amphora WHERE id = '{amp}' AND cert_busy = TRUE")).await, 1);
        // A second pass while the first rotation is pending queues nothing.
        assert_eq!(amphora_controller::housekeeping::rotate_certificates(&e.db, &c).await.unwrap(), 0);
        let jobs = e.count("SELECT COUNT(*) FROM job WHERE kind = 'rotate_certificate'").await;
        assert_eq!(jobs, 1);

        let w = e.worker(None);
        eventually("the rotation to finish", || async {
            (e.count("SELECT COUNT(*) FROM job WHERE kind = 'rotate_certificate' AND state = 'DONE'").await == 1)
                .then_some(())
        })
        .await;
        w.stop().await;
        let expiration = e.text(&format!("SELECT cert_expiration FROM amphora WHERE id = '{amp}'")).await.unwrap();
        let in_a_year =
            amphora_controller::db::format_time(time::OffsetDateTime::now_utc() + time::Duration::days(365));
        assert!(expiration > in_a_year, "{expiration}");
        assert_eq!(e.count(&format!("SELECT COUNT(*) FROM amphora WHERE id = '{amp}' AND cert_busy = FALSE")).await, 1);
    }
}
