//! Shared by the lbaas_* tests: creating objects, standing in for the
//! worker, and callers with given roles.

#![allow(dead_code)]

use std::sync::Arc;

use amphora_controller::api::error::ApiResult;
use amphora_controller::api::{self, Authenticate};
use amphora_controller::auth::Context;
use axum::http::{HeaderMap, StatusCode};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::common::{TestApi, TestDb};

pub const SUBNET: &str = "8b2a3c1e-9f3c-4b5e-a7d8-0c1b2a3d4e5f";

/// A caller from headers: `x-test-project` and comma-separated
/// `x-test-roles` (Keystone stand-in).
#[derive(Debug)]
pub struct HeaderRoles;

impl Authenticate for HeaderRoles {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, ApiResult<Context>> {
        Box::pin(async move {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let roles = h("x-test-roles").unwrap_or_default();
            let roles = roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
            Ok(Context::from_roles(h("x-test-project"), None, roles))
        })
    }
}

/// The API with `HeaderRoles` authentication.
pub async fn api_with_roles(db: &TestDb) -> TestApi {
    let base = crate::common::api(db).await;
    let mut state = base.state.clone();
    state.auth = Arc::new(HeaderRoles);
    // Callers with roles: what `auth_strategy = keystone` gives.
    let mut config = (*state.config).clone();
    config.api.auth_strategy = amphora_controller::config::AuthStrategy::Keystone;
    state.config = Arc::new(config);
    TestApi { router: api::app(state.clone()), state, db_name: base.db_name }
}

pub fn as_user<'a>(project: &'a str, roles: &'a str) -> [(&'a str, &'a str); 2] {
    [("x-test-project", project), ("x-test-roles", roles)]
}

/// Does what the worker does after an UpdateLoadBalancer/Create: children
/// ACTIVE/ONLINE, PENDING_DELETE rows removed, the LB ACTIVE.
pub async fn settle(api: &TestApi) {
    for sql in [
        "DELETE FROM health_monitor WHERE provisioning_status = 'PENDING_DELETE' OR pool_id IN (SELECT id FROM pool WHERE provisioning_status = 'PENDING_DELETE')",
        "DELETE FROM member WHERE provisioning_status = 'PENDING_DELETE' OR pool_id IN (SELECT id FROM pool WHERE provisioning_status = 'PENDING_DELETE')",
        "UPDATE listener SET default_pool_id = NULL WHERE default_pool_id IN (SELECT id FROM pool WHERE provisioning_status = 'PENDING_DELETE')",
        "DELETE FROM pool WHERE provisioning_status = 'PENDING_DELETE'",
        "DELETE FROM listener WHERE provisioning_status = 'PENDING_DELETE'",
        "UPDATE listener SET provisioning_status = 'ACTIVE', operating_status = 'ONLINE' WHERE provisioning_status LIKE 'PENDING_%'",
        "UPDATE pool SET provisioning_status = 'ACTIVE', operating_status = 'ONLINE' WHERE provisioning_status LIKE 'PENDING_%'",
        "UPDATE member SET provisioning_status = 'ACTIVE', operating_status = 'NO_MONITOR' WHERE provisioning_status LIKE 'PENDING_%'",
        "UPDATE health_monitor SET provisioning_status = 'ACTIVE', operating_status = 'ONLINE' WHERE provisioning_status LIKE 'PENDING_%'",
        "UPDATE load_balancer SET provisioning_status = 'ACTIVE', operating_status = 'ONLINE' WHERE provisioning_status IN ('PENDING_CREATE', 'PENDING_UPDATE')",
    ] {
        api.sql(sql).await;
    }
}

/// Creates a load balancer (as the noauth admin, in project `p1`) and
/// settles it ACTIVE.
pub async fn lb(api: &TestApi, name: &str) -> String {
    let (status, body) = api
        .call_with(
            "POST",
            "/v2/lbaas/loadbalancers",
            Some(json!({"loadbalancer": {"name": name, "vip_subnet_id": SUBNET}})),
            &[("x-project-id", "p1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    settle(api).await;
    body["loadbalancer"]["id"].as_str().expect("id").to_owned()
}

pub async fn post(api: &TestApi, path: &str, body: Value) -> Value {
    let (status, out) = api.call("POST", path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {out}");
    out
}

pub async fn listener(api: &TestApi, lb_id: &str, protocol: &str, port: u16) -> String {
    let out = post(
        api,
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb_id, "protocol": protocol, "protocol_port": port}}),
    )
    .await;
    settle(api).await;
    out["listener"]["id"].as_str().expect("id").to_owned()
}

pub async fn pool_on_listener(api: &TestApi, listener_id: &str, protocol: &str) -> String {
    let out = post(
        api,
        "/v2/lbaas/pools",
        json!({"pool": {"listener_id": listener_id, "protocol": protocol, "lb_algorithm": "ROUND_ROBIN"}}),
    )
    .await;
    settle(api).await;
    out["pool"]["id"].as_str().expect("id").to_owned()
}

pub async fn pool_on_lb(api: &TestApi, lb_id: &str, protocol: &str) -> String {
    let out = post(
        api,
        "/v2/lbaas/pools",
        json!({"pool": {"loadbalancer_id": lb_id, "protocol": protocol, "lb_algorithm": "ROUND_ROBIN"}}),
    )
    .await;
    settle(api).await;
    out["pool"]["id"].as_str().expect("id").to_owned()
}

pub async fn member(api: &TestApi, pool_id: &str, address: &str, port: u16) -> String {
    let out = post(
        api,
        &format!("/v2/lbaas/pools/{pool_id}/members"),
        json!({"member": {"address": address, "protocol_port": port}}),
    )
    .await;
    settle(api).await;
    out["member"]["id"].as_str().expect("id").to_owned()
}

/// The kinds and targets of the queued jobs, oldest first.
pub async fn jobs(api: &TestApi) -> Vec<(String, String, String)> {
    use sqlx::Row;
    sqlx::query("SELECT kind, target_id, payload FROM job ORDER BY created_at, id")
        .fetch_all(&api.state.db.pool)
        .await
        .expect("jobs")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

pub async fn status_of(api: &TestApi, table: &str, id: &str) -> String {
    use sqlx::Row;
    sqlx::query(&format!("SELECT provisioning_status FROM {table} WHERE id = $1"))
        .bind(id)
        .fetch_one(&api.state.db.pool)
        .await
        .expect("row")
        .get(0)
}

pub fn fault(body: &Value) -> &str {
    body["faultstring"].as_str().unwrap_or_default()
}
