//! `/v2/lbaas/listeners`.

mod common;
mod lbaas_support;

use axum::http::StatusCode;
use lbaas_support::{as_user, fault, jobs, settle, status_of};
use serde_json::{Value, json};

const LISTENER_FIELDS: &[&str] = &[
    "admin_state_up",
    "allowed_cidrs",
    "alpn_protocols",
    "client_authentication",
    "client_ca_tls_container_ref",
    "client_crl_container_ref",
    "connection_limit",
    "created_at",
    "default_pool_id",
    "default_tls_container_ref",
    "description",
    "hsts_include_subdomains",
    "hsts_max_age",
    "hsts_preload",
    "id",
    "insert_headers",
    "l7policies",
    "loadbalancers",
    "name",
    "operating_status",
    "project_id",
    "protocol",
    "protocol_port",
    "provisioning_status",
    "sni_container_refs",
    "tags",
    "tenant_id",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "tls_ciphers",
    "tls_versions",
    "updated_at",
];

#[tokio::test]
async fn create_marks_the_lb_and_answers_upstreams_fields() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let (status, body) = api
            .call(
                "POST",
                "/v2/lbaas/listeners",
                Some(json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80,
                    "name": "web", "insert_headers": {"X-Forwarded-For": "true"}, "allowed_cidrs": ["10.0.0.0/8"]}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let l = &body["listener"];
        let keys: Vec<&str> = l.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, LISTENER_FIELDS);
        assert_eq!(l["provisioning_status"], "PENDING_CREATE");
        assert_eq!(l["operating_status"], "OFFLINE");
        assert_eq!(l["loadbalancers"], json!([{"id": lb}]));
        assert_eq!(l["connection_limit"], -1);
        assert_eq!(l["timeout_client_data"], 50000);
        assert_eq!(l["timeout_member_connect"], 5000);
        assert_eq!(l["timeout_tcp_inspect"], 0);
        assert_eq!(l["client_authentication"], "NONE");
        assert_eq!(l["insert_headers"], json!({"X-Forwarded-For": "true"}));
        assert_eq!(l["allowed_cidrs"], json!(["10.0.0.0/8"]));
        assert_eq!(l["sni_container_refs"], json!([]));
        assert_eq!(l["l7policies"], json!([]));
        assert_eq!(l["project_id"], "p1");
        assert_eq!(l["hsts_preload"], false);
        assert_eq!(status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
        let job = jobs(&api).await.into_iter().find(|j| j.0 == "update_load_balancer").expect("job");
        assert_eq!(job.1, lb);
        // Immutable while the LB is pending.
        let (status, body) = api
            .call(
                "POST",
                "/v2/lbaas/listeners",
                Some(json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81}})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), format!("Load Balancer {lb} is immutable and cannot be updated."));
        settle(&api).await;
        // Same port, same L4 protocol: 409; UDP on the same port is fine.
        let (status, body) = api
            .call(
                "POST",
                "/v2/lbaas/listeners",
                Some(json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            fault(&body),
            "Another Listener on this Load Balancer is already using protocol HTTP and protocol_port 80"
        );
        let (status, _) = api
            .call(
                "POST",
                "/v2/lbaas/listeners",
                Some(json!({"listener": {"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 80}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn create_validates_like_upstream() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let with = |extra: Value| {
            let mut l = json!({"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80});
            for (k, v) in extra.as_object().expect("object") {
                l[k] = v.clone();
            }
            json!({ "listener": l })
        };
        let cases: Vec<(Value, &str)> = vec![
            (with(json!({"protocol_port": 0})), "Value should be greater or equal to 1"),
            (with(json!({"protocol_port": 65536})), "Value should be lower or equal to 65535"),
            (with(json!({"protocol": "FTP"})), "Invalid input for field/attribute protocol"),
            (with(json!({"protocol": null})), "Mandatory field missing"),
            (with(json!({"bogus": true})), "Unknown attribute"),
            (with(json!({"connection_limit": -2})), "connection_limit"),
            (
                with(json!({"protocol": "TERMINATED_HTTPS"})),
                "The selected protocol is not allowed in this deployment: TERMINATED_HTTPS",
            ),
            (
                with(json!({"default_tls_container_ref": "http://barbican/x"})),
                "Validation failure: Certificate container references are not allowed on HTTP protocol listeners.",
            ),
            (
                with(json!({"protocol": "TCP", "insert_headers": {"X-Forwarded-For": "true"}})),
                "insert-headers is not a valid option for a TCP protocol listener.",
            ),
            (with(json!({"allowed_cidrs": ["10.0.0.0/33"]})), "allowed_cidrs"),
            (with(json!({"timeout_client_data": -1})), "timeout_client_data"),
            (
                with(json!({"default_pool_id": "0b7ea5a8-0000-4000-8000-000000000000"})),
                "Pool 0b7ea5a8-0000-4000-8000-000000000000 not found.",
            ),
        ];
        for (body, message) in cases {
            let (status, out) = api.call("POST", "/v2/lbaas/listeners", Some(body.clone())).await;
            assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND, "{body} -> {status} {out}");
            assert!(fault(&out).contains(message), "{body} -> {out}");
        }
        let (status, out) = api
            .call(
                "POST",
                "/v2/lbaas/listeners",
                Some(json!({"listener": {"loadbalancer_id": "0b7ea5a8-0000-4000-8000-000000000000", "protocol": "HTTP", "protocol_port": 80}})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&out), "Load Balancer 0b7ea5a8-0000-4000-8000-000000000000 not found.");
        // A default pool of the wrong protocol.
        let pool = lbaas_support::pool_on_lb(&api, &lb, "UDP").await;
        let (status, out) = api.call("POST", "/v2/lbaas/listeners", Some(with(json!({"default_pool_id": pool})))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            fault(&out),
            "Validation failure: The pool protocol 'UDP' is invalid while the listener protocol is 'HTTP'."
        );
        assert_eq!(status_of(&api, "load_balancer", &lb).await, "ACTIVE", "failed requests change nothing");
    }
}

#[tokio::test]
async fn list_show_update_delete() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb1 = lbaas_support::lb(&api, "lb1").await;
        let lb2 = lbaas_support::lb(&api, "lb2").await;
        let l1 = lbaas_support::listener(&api, &lb1, "HTTP", 80).await;
        let l2 = lbaas_support::listener(&api, &lb2, "TCP", 22).await;
        let (_, body) = api.call("GET", &format!("/v2/lbaas/listeners?loadbalancer_id={lb1}"), None).await;
        assert_eq!(body["listeners"].as_array().expect("list").len(), 1);
        assert_eq!(body["listeners"][0]["id"], l1.as_str());
        assert!(body["listeners"][0].get("loadbalancer_id").is_none(), "hidden field");
        let (_, body) = api.call("GET", "/v2/lbaas/listeners?protocol_port=22", None).await;
        assert_eq!(body["listeners"][0]["id"], l2.as_str());
        let (_, body) = api.call("GET", "/v2/lbaas/listeners?limit=1", None).await;
        assert_eq!(body["listeners_links"][0]["rel"], "next");
        let (status, body) = api.call("GET", &format!("/v2/lbaas/listeners/{l1}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["listener"]["provisioning_status"], "ACTIVE");
        let (status, body) = api.call("GET", "/v2/lbaas/listeners/0b7ea5a8-0000-4000-8000-000000000000", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&body), "Listener 0b7ea5a8-0000-4000-8000-000000000000 not found.");
        let (status, body) = api
            .call(
                "PUT",
                &format!("/v2/lbaas/listeners/{l1}"),
                Some(json!({"listener": {"name": "new", "connection_limit": 100, "timeout_client_data": null}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["listener"]["name"], "new");
        assert_eq!(body["listener"]["connection_limit"], 100);
        assert_eq!(body["listener"]["timeout_client_data"], 50000);
        assert_eq!(body["listener"]["provisioning_status"], "PENDING_UPDATE");
        assert_eq!(status_of(&api, "load_balancer", &lb1).await, "PENDING_UPDATE");
        let (status, _) =
            api.call("PUT", &format!("/v2/lbaas/listeners/{l1}"), Some(json!({"listener": {"protocol": "TCP"}}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "protocol is not updatable");
        let (status, _) = api.call("DELETE", &format!("/v2/lbaas/listeners/{l1}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        settle(&api).await;
        let (status, _) = api.call("DELETE", &format!("/v2/lbaas/listeners/{l1}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(status_of(&api, "listener", &l1).await, "PENDING_DELETE");
        assert_eq!(status_of(&api, "load_balancer", &lb1).await, "PENDING_UPDATE");
        settle(&api).await;
        let (status, _) = api.call("GET", &format!("/v2/lbaas/listeners/{l1}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn policy() {
    for db in common::databases().await {
        let api = lbaas_support::api_with_roles(&db).await;
        let admin = as_user("px", "admin");
        let (_, body) = api
            .call_with(
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(json!({"loadbalancer": {"vip_subnet_id": lbaas_support::SUBNET, "project_id": "pa"}})),
                &admin,
            )
            .await;
        let lb = body["loadbalancer"]["id"].as_str().expect("id").to_owned();
        settle(&api).await;
        let create = json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}});
        let (status, _) =
            api.call_with("POST", "/v2/lbaas/listeners", Some(create.clone()), &as_user("pb", "member")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = api.call_with("POST", "/v2/lbaas/listeners", Some(create), &as_user("pa", "member")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["listener"]["project_id"], "pa");
        let id = body["listener"]["id"].as_str().expect("id").to_owned();
        let (_, body) = api.call_with("GET", "/v2/lbaas/listeners", None, &as_user("pb", "reader")).await;
        assert_eq!(body["listeners"], json!([]));
        let (_, body) = api.call_with("GET", "/v2/lbaas/listeners", None, &as_user("pa", "reader")).await;
        assert_eq!(body["listeners"].as_array().expect("list").len(), 1);
        let (status, _) =
            api.call_with("GET", &format!("/v2/lbaas/listeners/{id}"), None, &as_user("pb", "reader")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) =
            api.call_with("DELETE", &format!("/v2/lbaas/listeners/{id}"), None, &as_user("pa", "reader")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn concurrent_changes_to_one_load_balancer_are_serialised() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let calls = (0..6u16).map(|i| {
            let body = json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 1000 + i}});
            let api = &api;
            async move { api.call("POST", "/v2/lbaas/listeners", Some(body)).await.0 }
        });
        let statuses = futures_util::future::join_all(calls).await;
        let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
        let refused = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
        assert_eq!((created, refused), (1, 5), "{}: {statuses:?}", db.name);
        let updates = jobs(&api).await.into_iter().filter(|j| j.0 == "update_load_balancer").count();
        assert_eq!(updates, 1, "one accepted change, one job");
    }
}
