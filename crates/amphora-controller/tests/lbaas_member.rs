//! `/v2/lbaas/pools/{pool_id}/members`, single and batch.

mod common;
mod lbaas_support;

use axum::http::StatusCode;
use lbaas_support::{fault, settle, status_of};
use serde_json::{Value, json};

const MEMBER_FIELDS: &[&str] = &[
    "address",
    "admin_state_up",
    "backup",
    "created_at",
    "id",
    "monitor_address",
    "monitor_port",
    "name",
    "operating_status",
    "project_id",
    "protocol_port",
    "provisioning_status",
    "subnet_id",
    "tags",
    "tenant_id",
    "updated_at",
    "vnic_type",
    "weight",
];

#[tokio::test]
async fn create_list_show_update_delete() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let pool = lbaas_support::pool_on_lb(&api, &lb, "HTTP").await;
        let base = format!("/v2/lbaas/pools/{pool}/members");
        let (status, body) = api
            .call("POST", &base, Some(json!({"member": {"address": "192.0.2.10", "protocol_port": 8080, "weight": 5}})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let m = &body["member"];
        let keys: Vec<&str> = m.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, MEMBER_FIELDS);
        assert_eq!(m["weight"], 5);
        assert_eq!(m["backup"], false);
        assert_eq!(m["admin_state_up"], true);
        assert_eq!(m["vnic_type"], "normal");
        assert_eq!(m["provisioning_status"], "PENDING_CREATE");
        assert_eq!(m["operating_status"], "OFFLINE");
        assert_eq!(m["name"], "");
        let id = m["id"].as_str().expect("id").to_owned();
        assert_eq!(status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
        settle(&api).await;
        let (status, body) =
            api.call("POST", &base, Some(json!({"member": {"address": "192.0.2.10", "protocol_port": 8080}}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), "Another member on this pool is already using ip 192.0.2.10 on protocol_port 8080");
        for (member, message) in [
            (
                json!({"address": "192.0.2.11", "protocol_port": 80, "weight": 257}),
                "Value should be lower or equal to 256",
            ),
            (
                json!({"address": "192.0.2.11", "protocol_port": 80, "weight": -1}),
                "Value should be greater or equal to 0",
            ),
            (json!({"address": "not-an-ip", "protocol_port": 80}), "Invalid input for field/attribute address"),
            (json!({"address": "192.0.2.11"}), "Mandatory field missing"),
            (json!({"address": "192.0.2.11", "protocol_port": 80, "pool_id": pool}), "Unknown attribute"),
        ] {
            let (status, out) = api.call("POST", &base, Some(json!({ "member": member }))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{member} -> {out}");
            assert!(fault(&out).contains(message), "{member} -> {out}");
        }
        let (_, body) = api.call("GET", &base, None).await;
        assert_eq!(body["members"].as_array().expect("list").len(), 1);
        assert_eq!(body["members_links"], json!([]));
        let (_, body) = api.call("GET", &format!("{base}?address=192.0.2.99"), None).await;
        assert_eq!(body["members"], json!([]));
        let (_, body) = api.call("GET", &format!("/v2/lbaas/pools/{pool}"), None).await;
        assert_eq!(body["pool"]["members"], json!([{"id": id}]));
        // A member seen through another pool is not found.
        let other = lbaas_support::pool_on_lb(&api, &lb, "TCP").await;
        let (status, body) = api.call("GET", &format!("/v2/lbaas/pools/{other}/members/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&body), format!("Member {id} not found."));
        let (status, _) = api.call("GET", "/v2/lbaas/pools/0b7ea5a8-0000-4000-8000-000000000000/members", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = api
            .call("PUT", &format!("{base}/{id}"), Some(json!({"member": {"weight": 0, "backup": true, "name": "m"}})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["member"]["weight"], 0);
        assert_eq!(body["member"]["backup"], true);
        assert_eq!(body["member"]["provisioning_status"], "PENDING_UPDATE");
        let (status, _) =
            api.call("PUT", &format!("{base}/{id}"), Some(json!({"member": {"address": "192.0.2.12"}}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "address is not updatable");
        let (status, _) = api.call("DELETE", &format!("{base}/{id}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "the LB is PENDING_UPDATE");
        settle(&api).await;
        let (status, _) = api.call("DELETE", &format!("{base}/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(status_of(&api, "member", &id).await, "PENDING_DELETE");
    }
}

#[tokio::test]
async fn batch_update_replaces_the_member_list() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let pool = lbaas_support::pool_on_lb(&api, &lb, "TCP").await;
        let keep = lbaas_support::member(&api, &pool, "10.0.0.1", 80).await;
        let gone = lbaas_support::member(&api, &pool, "10.0.0.2", 80).await;
        let base = format!("/v2/lbaas/pools/{pool}/members");
        let (status, body) = api
            .call(
                "PUT",
                &base,
                Some(json!({"members": [
                    {"address": "10.0.0.1", "protocol_port": 80, "weight": 7},
                    {"address": "10.0.0.3", "protocol_port": 80, "name": "new"},
                ]})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(status_of(&api, "member", &keep).await, "PENDING_UPDATE");
        assert_eq!(status_of(&api, "member", &gone).await, "PENDING_DELETE");
        assert_eq!(status_of(&api, "load_balancer", &lb).await, "PENDING_UPDATE");
        settle(&api).await;
        let (_, body) = api.call("GET", &format!("{base}?sort=address"), None).await;
        let got: Vec<(Value, Value)> = body["members"]
            .as_array()
            .expect("list")
            .iter()
            .map(|m| (m["address"].clone(), m["weight"].clone()))
            .collect();
        assert_eq!(got, [(json!("10.0.0.1"), json!(7)), (json!("10.0.0.3"), json!(1))]);
        // additive_only keeps what is not listed.
        let (status, _) = api
            .call(
                "PUT",
                &format!("{base}?additive_only=true"),
                Some(json!({"members": [{"address": "10.0.0.4", "protocol_port": 80}]})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        settle(&api).await;
        let (_, body) = api.call("GET", &base, None).await;
        assert_eq!(body["members"].as_array().expect("list").len(), 3);
        for (members, message) in [
            (
                json!({"members": [{"address": "10.0.0.1", "protocol_port": 80}, {"address": "10.0.0.1", "protocol_port": 80}]}),
                "Member must be updated only once in the same request.",
            ),
            (json!({"members": [{"address": "10.0.0.9"}]}), "Mandatory field missing"),
            (json!({"members": "x"}), "members"),
            (json!({"member": []}), "Unknown argument"),
        ] {
            let (status, out) = api.call("PUT", &base, Some(members.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{members} -> {out}");
            assert!(fault(&out).contains(message), "{members} -> {out}");
        }
        // An empty list removes everyone; on an empty pool it is a no-op.
        let empty = lbaas_support::pool_on_lb(&api, &lb, "UDP").await;
        let before = lbaas_support::jobs(&api).await.len();
        let (status, _) =
            api.call("PUT", &format!("/v2/lbaas/pools/{empty}/members"), Some(json!({"members": []}))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(lbaas_support::jobs(&api).await.len(), before);
        assert_eq!(status_of(&api, "load_balancer", &lb).await, "ACTIVE");
        let (status, _) = api.call("PUT", &base, Some(json!({"members": []}))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        settle(&api).await;
        let (_, body) = api.call("GET", &base, None).await;
        assert_eq!(body["members"], json!([]));
    }
}
