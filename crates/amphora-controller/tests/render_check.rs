//! The rendered files against the programs that read them: haproxy's
//! `-c`, keepalived's `--config-test` (in a namespace holding the VRRP
//! interface) and the agent's own configuration loader; and `load` against
//! rows the API stored, on SQLite and (when configured) PostgreSQL.

mod common;
mod lbaas_support;
mod render_support;

use std::collections::BTreeSet;
use std::process::Command;

use amphora_controller::config::Topology;
use amphora_controller::db::Db;
use amphora_controller::render::model::{self, VrrpGroup};
use amphora_controller::render::{agent, haproxy, keepalived, lvs};
use render_support::{
    Setup, VRRP_INTERFACE, all_cases, haproxy_check, install_certificates, keepalived_check, lvs_listeners,
};
use serde_json::json;

#[test]
fn every_rendered_haproxy_file_passes_haproxy_check() {
    let setup = Setup::new();
    let opts = haproxy::HaproxyOptions::from_config(&setup.config);
    for (name, lb) in all_cases() {
        install_certificates(&lb, std::path::Path::new(&opts.base_cert_dir));
        for amp in &lb.amphorae {
            let text = haproxy::combined(&lb, amp, &opts).expect("renders");
            let path = setup.dir.path().join(format!("{name}-{}.cfg", amp.id));
            std::fs::write(&path, &text).expect("write");
            if let Err(output) = haproxy_check(&path, &amp.id) {
                panic!("{name}: haproxy rejects\n{text}\n{output}");
            }
        }
    }
}

#[test]
fn haproxy_check_rejects_a_broken_file() {
    let setup = Setup::new();
    let path = setup.dir.path().join("broken.cfg");
    std::fs::write(&path, "global\n    maxconn lots\n").expect("write");
    assert!(haproxy_check(&path, "amp").is_err(), "the check must not pass everything");
}

/// A network namespace holding the VRRP interface, removed on drop.
struct Namespace(String);

impl Namespace {
    fn with_interface(interface: &str) -> Namespace {
        let name = format!("rnd-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &name]);
        let ns = Namespace(name);
        // A veth pair (the dummy driver may be missing); both ends inside.
        run(&["-n", &ns.0, "link", "add", interface, "type", "veth", "peer", "name", "peer0"]);
        run(&["-n", &ns.0, "link", "set", interface, "up"]);
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

#[test]
fn rendered_keepalived_files_pass_keepalived_config_test() {
    let setup = Setup::new();
    let opts = keepalived::VrrpOptions::from_config(&setup.config);
    let script = opts.check_script_path();
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("check script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let ns = Namespace::with_interface(VRRP_INTERFACE);
    let mut checked = 0;
    for (name, lb) in all_cases().into_iter().filter(|(_, lb)| lb.topology == Topology::ActiveStandby) {
        for amp in &lb.amphorae {
            let text = keepalived::vrrp(&lb, &lb.amphorae, amp, VRRP_INTERFACE, &opts).expect("renders");
            let path = setup.dir.path().join(format!("{name}-{}.conf", amp.id));
            std::fs::write(&path, &text).expect("write");
            let result = keepalived_check(&path, Some(&ns.0));
            if name == "active_standby_ipv6_vip" {
                // All VIPs of the other family than the VRRP addresses go to
                // virtual_ipaddress_excluded (as upstream renders them), and
                // keepalived warns that the instance has none of its own: a
                // warning, nothing else.
                let output = result.expect_err("keepalived warns");
                let lines: BTreeSet<&str> = output.lines().collect();
                assert_eq!(
                    lines,
                    BTreeSet::from([format!(
                        "({}) No VIP specified; at least one is sensible",
                        lb.id.replace('-', "")
                    )
                    .as_str()]),
                    "{text}"
                );
            } else if let Err(output) = result {
                panic!("{name}: keepalived rejects\n{text}\n{output}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
    // An interface the namespace lacks is noticed: the test does check.
    let (_, lb) = all_cases().into_iter().find(|(_, lb)| lb.topology == Topology::ActiveStandby).expect("case");
    let text = keepalived::vrrp(&lb, &lb.amphorae, &lb.amphorae[0], "nosuch0", &opts).expect("renders");
    let path = setup.dir.path().join("missing-interface.conf");
    std::fs::write(&path, text).expect("write");
    assert!(keepalived_check(&path, Some(&ns.0)).is_err(), "keepalived must notice a missing interface");
}

/// keepalived parses every rendered LVS file (`--config-test` reads the
/// virtual servers and checks without IPVS in the kernel).
#[test]
fn rendered_lvs_files_pass_keepalived_config_test() {
    let setup = Setup::new();
    let opts = lvs::LvsOptions { base_path: setup.config.haproxy_amphora.base_path.clone() };
    let check_dir = setup.dir.path().join("amp/lvs/check");
    std::fs::create_dir_all(&check_dir).expect("check dir");
    let script = check_dir.join("udp_check.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("check script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let lb = lvs_listeners();
    let mut virtual_servers = 0;
    for listener in &lb.listeners {
        let text = lvs::listener(&lb, listener, &opts).expect("renders");
        // The agent drops the namespace line (it starts keepalived inside
        // the amphora namespace); the test host has no such namespace.
        let runnable: String =
            text.lines().filter(|l| !l.starts_with("net_namespace")).map(|l| format!("{l}\n")).collect();
        virtual_servers += runnable.matches("virtual_server group").count();
        let path = setup.dir.path().join(format!("lvs-{}.conf", listener.id));
        std::fs::write(&path, &runnable).expect("write");
        let result = keepalived_check(&path, None);
        let pool = listener.default_pool_id.as_deref().and_then(|id| lb.pool(id));
        if pool.is_some_and(|p| !p.enabled) && listener.enabled {
            // A disabled pool leaves the virtual server without real
            // servers: keepalived's warning, which the agent accepts.
            assert_eq!(
                result.expect_err("keepalived warns"),
                "Virtual server [ipv4-group]:0 has no real servers - ignoring",
                "{text}"
            );
        } else if let Err(output) = result {
            panic!("listener {}: keepalived rejects\n{text}\n{output}", listener.id);
        }
    }
    assert_eq!(virtual_servers, 6, "the enabled listeners with pools have virtual servers");
    // A broken file is noticed: the test does check.
    let path = setup.dir.path().join("broken-lvs.conf");
    std::fs::write(&path, "virtual_server group ipv4-group {\n    lb_algo nosuch\n    real_server 1.2.3.4 {\n}\n")
        .expect("write");
    assert!(keepalived_check(&path, None).is_err(), "keepalived must reject a broken LVS file");
}

#[test]
fn the_agent_loads_its_rendered_configuration() {
    let setup = Setup::new();
    for topology in [Topology::Single, Topology::ActiveStandby] {
        let text =
            agent::agent_config("7d3c2b1a-0000-4000-8000-0000000000aa", topology, &setup.config).expect("renders");
        let path = setup.dir.path().join("amphora-agent.conf");
        let loaded =
            amphora_agent::config::parse([(path.as_path(), text.as_str())]).expect("the agent accepts the file");
        assert!(loaded.warnings.is_empty(), "the agent warns: {:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(c.amphora_agent.amphora_id, "7d3c2b1a-0000-4000-8000-0000000000aa");
        assert_eq!(c.health_manager.heartbeat_key.as_deref(), Some("insecure"));
        assert_eq!(c.health_manager.heartbeat_interval, 7);
        assert_eq!(c.health_manager.controller_ip_port_list, ["192.0.2.10:5555", "192.0.2.11:5555"]);
        let root = setup.dir.path();
        assert_eq!(c.haproxy_amphora.base_path, root.join("amp"));
        assert_eq!(c.haproxy_amphora.base_cert_dir, root.join("amp/certs"));
        assert_eq!(c.haproxy_amphora.bind_port, 9443);
        assert_eq!(c.amphora_agent.amphora_udp_driver, "keepalived_lvs");
        let expected = match topology {
            Topology::Single => "Single",
            Topology::ActiveStandby => "ActiveStandby",
        };
        assert_eq!(format!("{:?}", c.controller_worker.loadbalancer_topology), expected);
    }
}

#[tokio::test]
async fn load_reads_what_the_api_stored() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb_id = lbaas_support::lb(&api, "render").await;
        let listener_id = lbaas_support::listener(&api, &lb_id, "HTTP", 80).await;
        let pool_id = lbaas_support::pool_on_listener(&api, &listener_id, "HTTP").await;
        let m1 = lbaas_support::member(&api, &pool_id, "192.168.1.10", 8080).await;
        let m2 = lbaas_support::member(&api, &pool_id, "192.168.1.11", 8080).await;
        let gone = lbaas_support::member(&api, &pool_id, "192.168.1.12", 8080).await;
        lbaas_support::post(
            &api,
            "/v2/lbaas/healthmonitors",
            json!({"healthmonitor": {"pool_id": pool_id, "type": "HTTP", "delay": 5, "timeout": 3,
                   "max_retries": 2, "max_retries_down": 4, "url_path": "/ok", "expected_codes": "200,202"}}),
        )
        .await;
        lbaas_support::settle(&api).await;
        let (status, body) = api
            .call(
                "PUT",
                &format!("/v2/lbaas/listeners/{listener_id}"),
                Some(json!({"listener": {"connection_limit": 300, "timeout_client_data": 1234,
                                         "insert_headers": {"X-Forwarded-For": "true"}}})),
            )
            .await;
        assert!(status.is_success(), "{body}");
        lbaas_support::settle(&api).await;
        let (status, body) = api
            .call(
                "PUT",
                &format!("/v2/lbaas/pools/{pool_id}/members/{m2}"),
                Some(json!({"member": {"weight": 9, "backup": true, "admin_state_up": false,
                                       "monitor_address": "192.168.9.9", "monitor_port": 9000}})),
            )
            .await;
        assert!(status.is_success(), "{body}");
        lbaas_support::settle(&api).await;
        api.sql(&format!("UPDATE member SET provisioning_status = 'PENDING_DELETE' WHERE id = '{gone}'")).await;
        let udp = lbaas_support::listener(&api, &lb_id, "UDP", 53).await;
        api.sql(&format!("UPDATE listener SET provisioning_status = 'PENDING_DELETE' WHERE id = '{udp}'")).await;
        api.sql(&format!(
            "INSERT INTO amphora (id, load_balancer_id, status, role, vrrp_ip, ha_ip, vrrp_id, vrrp_priority, \
             created_at) VALUES ('amp-r1', '{lb_id}', 'ALLOCATED', 'STANDALONE', '10.9.0.4', '10.9.0.10', 1, 100, \
             '2026-01-01T00:00:00'), ('amp-old', '{lb_id}', 'DELETED', 'STANDALONE', NULL, NULL, NULL, NULL, \
             '2025-01-01T00:00:00')"
        ))
        .await;
        // The network driver's part: the VIP address.
        api.sql(&format!("UPDATE load_balancer SET vip_address = '203.0.113.50' WHERE id = '{lb_id}'")).await;
        let database = Db::open(&db.url).await.expect("open");
        model::save_vrrp_group(&database, &lb_id, &VrrpGroup::new(&lb_id, 1)).await.expect("vrrp group");

        let lb = model::load(&database, &lb_id).await.expect("load").expect("exists");
        assert_eq!(lb.id, lb_id, "{}", db.name);
        assert_eq!(lb.project_id, "p1");
        assert!(lb.enabled);
        assert_eq!(lb.topology, Topology::Single);
        assert_eq!(lb.vip.address, "203.0.113.50");
        assert_eq!(lb.vip.subnet_id.as_deref(), Some(lbaas_support::SUBNET));
        let group = lb.vrrp_group.as_ref().expect("vrrp group");
        assert_eq!(group.name, lb_id.replace('-', ""));
        assert_eq!((group.auth_type.as_str(), group.auth_pass.len(), group.advert_int), ("PASS", 7, 1));
        assert_eq!(lb.listeners.len(), 1, "the listener being deleted is left out ({})", db.name);
        let l = &lb.listeners[0];
        assert_eq!((l.id.as_str(), l.protocol.as_str(), l.protocol_port), (listener_id.as_str(), "HTTP", 80));
        assert_eq!((l.connection_limit, l.timeout_client_data), (300, Some(1234)));
        assert_eq!(l.insert_headers.get("X-Forwarded-For").map(String::as_str), Some("true"));
        assert_eq!(l.default_pool_id.as_deref(), Some(pool_id.as_str()));
        assert_eq!(lb.pools.len(), 1);
        let pool = &lb.pools[0];
        assert_eq!((pool.protocol.as_str(), pool.lb_algorithm.as_str(), pool.enabled), ("HTTP", "ROUND_ROBIN", true));
        // (in creation order, ties of the same second by id: not checked)
        let mut ids: Vec<&str> = pool.members.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = [m1.as_str(), m2.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected, "the member being deleted is left out ({})", db.name);
        let second = pool.members.iter().find(|m| m.id == m2).expect("m2");
        assert_eq!((second.weight, second.backup, second.enabled), (9, true, false));
        assert_eq!((second.monitor_address.as_deref(), second.monitor_port), (Some("192.168.9.9"), Some(9000)));
        let hm = pool.health_monitor.as_ref().expect("monitor");
        assert_eq!((hm.kind.as_str(), hm.delay, hm.timeout), ("HTTP", 5, 3));
        assert_eq!((hm.rise_threshold, hm.fall_threshold), (2, 4));
        assert_eq!((hm.url_path.as_deref(), hm.expected_codes.as_deref()), (Some("/ok"), Some("200,202")));
        let amp_ids: Vec<&str> = lb.amphorae.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(amp_ids, ["amp-r1"], "DELETED amphorae are left out ({})", db.name);
        assert_eq!(lb.amphorae[0].vrrp_ip.as_deref(), Some("10.9.0.4"));

        // What was stored renders into a file haproxy accepts.
        let setup = Setup::new();
        let text = haproxy::combined(&lb, &lb.amphorae[0], &haproxy::HaproxyOptions::from_config(&setup.config))
            .expect("renders");
        assert!(text.contains(&format!("    server {m2} 192.168.1.11:8080 weight 9 check inter 5s fall 4 rise 2 addr 192.168.9.9 port 9000 backup disabled\n")), "{text}");
        let path = setup.dir.path().join("stored.cfg");
        std::fs::write(&path, &text).expect("write");
        render_support::haproxy_check(&path, "amp-r1").unwrap_or_else(|e| panic!("{text}\n{e}"));

        assert!(model::load(&database, "no-such-lb").await.expect("load").is_none());
        api.sql(&format!("UPDATE load_balancer SET provisioning_status = 'DELETED' WHERE id = '{lb_id}'")).await;
        assert!(model::load(&database, &lb_id).await.expect("load").is_none(), "DELETED load balancers are gone");
    }
}

#[tokio::test]
async fn vrrp_groups_are_replaced_and_go_with_their_load_balancer() {
    use sqlx::Row;
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb_id = lbaas_support::lb(&api, "vrrp").await;
        let database = &api.state.db;
        model::save_vrrp_group(database, &lb_id, &VrrpGroup::new(&lb_id, 1)).await.expect("first");
        let second =
            VrrpGroup { name: "renamed".into(), auth_type: "AH".into(), auth_pass: "0123456".into(), advert_int: 3 };
        model::save_vrrp_group(database, &lb_id, &second).await.expect("second");
        api.sql(&format!("UPDATE load_balancer SET vip_address = '203.0.113.60' WHERE id = '{lb_id}'")).await;
        let lb = model::load(database, &lb_id).await.expect("load").expect("exists");
        assert_eq!(lb.vrrp_group, Some(second), "{}", db.name);

        // Housekeeping's purge deletes the load balancer row: the group goes too.
        api.sql(&format!("DELETE FROM load_balancer WHERE id = '{lb_id}'")).await;
        let left: i64 =
            sqlx::query("SELECT COUNT(*) FROM vrrp_group").fetch_one(&database.pool).await.expect("count").get(0);
        assert_eq!(left, 0, "{}", db.name);
    }
}

#[test]
fn new_vrrp_groups_are_named_after_the_load_balancer() {
    let a = VrrpGroup::new("9b2a3c1e-6f0a-4a8e-9d1c-0e6b8f1d2a70", 2);
    let b = VrrpGroup::new("9b2a3c1e-6f0a-4a8e-9d1c-0e6b8f1d2a70", 2);
    assert_eq!(a.name, "9b2a3c1e6f0a4a8e9d1c0e6b8f1d2a70");
    assert_eq!((a.auth_type.as_str(), a.advert_int), ("PASS", 2));
    assert_eq!(a.auth_pass.len(), 7);
    assert!(a.auth_pass.chars().all(|c| c.is_ascii_hexdigit()), "{}", a.auth_pass);
    assert_ne!(a.auth_pass, b.auth_pass, "each group gets its own password");
}
