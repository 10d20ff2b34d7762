//! `/v2/lbaas/pools`.

mod common;
mod lbaas_support;

use axum::http::StatusCode;
use lbaas_support::{fault, settle, status_of};
use serde_json::{Value, json};

const POOL_FIELDS: &[&str] = &[
    "admin_state_up",
    "alpn_protocols",
    "ca_tls_container_ref",
    "created_at",
    "crl_container_ref",
    "description",
    "healthmonitor_id",
    "id",
    "lb_algorithm",
    "listeners",
    "loadbalancers",
    "members",
    "name",
    "operating_status",
    "project_id",
    "protocol",
    "provisioning_status",
    "session_persistence",
    "tags",
    "tenant_id",
    "tls_ciphers",
    "tls_container_ref",
    "tls_enabled",
    "tls_versions",
    "updated_at",
];

#[tokio::test]
async fn create_on_a_listener_makes_it_the_default_pool() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let listener = lbaas_support::listener(&api, &lb, "HTTP", 80).await;
        let (status, body) = api
            .call(
                "POST",
                "/v2/lbaas/pools",
                Some(json!({"pool": {"listener_id": listener, "protocol": "HTTP", "lb_algorithm": "LEAST_CONNECTIONS",
                    "session_persistence": {"type": "APP_COOKIE", "cookie_name": "sid"}}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let p = &body["pool"];
        let keys: Vec<&str> = p.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, POOL_FIELDS);
        let id = p["id"].as_str().expect("id").to_owned();
        assert_eq!(p["provisioning_status"], "PENDING_CREATE");
        assert_eq!(p["operating_status"], "OFFLINE");
        assert_eq!(p["listeners"], json!([{"id": listener}]));
        assert_eq!(p["loadbalancers"], json!([{"id": lb}]));
        assert_eq!(p["members"], json!([]));
        assert_eq!(p["healthmonitor_id"], Value::Null);
        assert_eq!(p["tls_enabled"], false);
        assert_eq!(
            p["session_persistence"],
            json!({"type": "APP_COOKIE", "cookie_name": "sid", "persistence_timeout": null, "persistence_granularity": null})
        );
        assert_eq!(status_of(&api, "listener", &listener).await, "PENDING_UPDATE");
        settle(&api).await;
        let (_, body) = api.call("GET", &format!("/v2/lbaas/listeners/{listener}"), None).await;
        assert_eq!(body["listener"]["default_pool_id"], id.as_str());
        let (status, body) = api
            .call(
                "POST",
                "/v2/lbaas/pools",
                Some(json!({"pool": {"listener_id": listener, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), "This listener already has a default pool");
        // Filter by load balancer; list; show.
        let other = lbaas_support::pool_on_lb(&api, &lb, "TCP").await;
        let (_, body) =
            api.call("GET", &format!("/v2/lbaas/pools?loadbalancer_id={lb}&sort=protocol:desc"), None).await;
        let ids: Vec<&str> =
            body["pools"].as_array().expect("list").iter().map(|p| p["id"].as_str().expect("id")).collect();
        assert_eq!(ids, [other.as_str(), id.as_str()]);
        let (_, body) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{lb}"), None).await;
        assert_eq!(body["loadbalancer"]["pools"].as_array().expect("pools").len(), 2);
    }
}

#[tokio::test]
async fn create_validates_like_upstream() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let listener = lbaas_support::listener(&api, &lb, "HTTP", 80).await;
        let udp = lbaas_support::listener(&api, &lb, "UDP", 53).await;
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
                "Validation failure: Must provide at least one of: loadbalancer_id, listener_id",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "RANDOM"}),
                "Invalid input for field/attribute lb_algorithm",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "FTP", "lb_algorithm": "ROUND_ROBIN"}),
                "Invalid input for field/attribute protocol",
            ),
            (json!({"loadbalancer_id": lb, "protocol": "HTTP"}), "Mandatory field missing"),
            (
                json!({"listener_id": listener, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}),
                "Validation failure: The pool protocol 'TCP' is invalid while the listener protocol is 'HTTP'.",
            ),
            (
                json!({"listener_id": udp, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
                "Validation failure: The pool protocol 'HTTP' is invalid while the listener protocol is 'UDP'.",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "APP_COOKIE"}}),
                "cookie_name",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "HTTP_COOKIE", "cookie_name": "x"}}),
                "can only be specified",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "FOO"}}),
                "Invalid input for field/attribute type",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "HTTP_COOKIE"}}),
                "Session persistence of type HTTP_COOKIE is not supported for UDP protocol pools.",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 5}}),
                "persistence_timeout and persistence_granularity is only for UDP and SCTP protocol pools.",
            ),
            (
                json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "extra": 1}),
                "Unknown attribute",
            ),
        ];
        for (pool, message) in cases {
            let (status, out) = api.call("POST", "/v2/lbaas/pools", Some(json!({ "pool": pool }))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{pool} -> {out}");
            assert!(fault(&out).contains(message), "{pool} -> {out}");
        }
        let (status, out) = api
            .call(
                "POST",
                "/v2/lbaas/pools",
                Some(json!({"pool": {"listener_id": "0b7ea5a8-0000-4000-8000-000000000000", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&out), "Listener 0b7ea5a8-0000-4000-8000-000000000000 not found.");
        for algorithm in ["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"] {
            let (status, out) = api
                .call(
                    "POST",
                    "/v2/lbaas/pools",
                    Some(json!({"pool": {"loadbalancer_id": lb, "protocol": "PROXYV2", "lb_algorithm": algorithm}})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{out}");
            settle(&api).await;
        }
    }
}

#[tokio::test]
async fn update_and_delete_mark_and_leave_removal_to_the_worker() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let listener = lbaas_support::listener(&api, &lb, "HTTP", 80).await;
        let pool = lbaas_support::pool_on_listener(&api, &listener, "HTTP").await;
        let path = format!("/v2/lbaas/pools/{pool}");
        let (status, body) = api
            .call(
                "PUT",
                &path,
                Some(json!({"pool": {"lb_algorithm": "SOURCE_IP", "session_persistence": null, "name": "p"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["pool"]["lb_algorithm"], "SOURCE_IP");
        assert_eq!(body["pool"]["session_persistence"], Value::Null);
        assert_eq!(body["pool"]["provisioning_status"], "PENDING_UPDATE");
        assert_eq!(status_of(&api, "listener", &listener).await, "PENDING_UPDATE");
        let (status, body) = api.call("PUT", &path, Some(json!({"pool": {"name": "q"}}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), format!("Load Balancer {lb} is immutable and cannot be updated."));
        settle(&api).await;
        let (status, _) = api.call("PUT", &path, Some(json!({"pool": {"protocol": "TCP"}}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = api.call("DELETE", &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(status_of(&api, "pool", &pool).await, "PENDING_DELETE");
        assert_eq!(status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
        let (status, body) = api.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "still there until the worker removes it");
        assert_eq!(body["pool"]["provisioning_status"], "PENDING_DELETE");
        settle(&api).await;
        let (status, body) = api.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&body), format!("Pool {pool} not found."));
        let (_, body) = api.call("GET", &format!("/v2/lbaas/listeners/{listener}"), None).await;
        assert_eq!(body["listener"]["default_pool_id"], Value::Null);
        let (status, _) = api.call("DELETE", "/v2/lbaas/pools/not-a-uuid", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
