//! `/v2/lbaas/loadbalancers`: create, list, show, update, delete, status,
//! stats, failover; policy; hostile input.

mod common;
mod lbaas_support;

use axum::http::StatusCode;
use lbaas_support::{SUBNET, as_user, fault, jobs, settle, status_of};
use serde_json::{Value, json};

const LB_FIELDS: &[&str] = &[
    "additional_vips",
    "admin_state_up",
    "availability_zone",
    "created_at",
    "description",
    "flavor_id",
    "id",
    "listeners",
    "name",
    "operating_status",
    "pools",
    "project_id",
    "provider",
    "provisioning_status",
    "tags",
    "tenant_id",
    "updated_at",
    "vip_address",
    "vip_network_id",
    "vip_port_id",
    "vip_qos_policy_id",
    "vip_sg_ids",
    "vip_subnet_id",
    "vip_vnic_type",
];

#[tokio::test]
async fn create_answers_upstreams_fields_and_queues_the_job() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let (status, body) = api
            .call_with(
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(json!({"loadbalancer": {"name": "lb1", "vip_subnet_id": SUBNET, "tags": ["a", "b"]}})),
                &[("x-project-id", "p1")],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let lb = &body["loadbalancer"];
        let keys: Vec<&str> = lb.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, LB_FIELDS, "{}", db.name);
        assert_eq!(lb["provisioning_status"], "PENDING_CREATE");
        assert_eq!(lb["operating_status"], "OFFLINE");
        assert_eq!(lb["admin_state_up"], true);
        assert_eq!(lb["project_id"], "p1");
        assert_eq!(lb["tenant_id"], "p1");
        assert_eq!(lb["provider"], "amphora");
        assert_eq!(lb["vip_subnet_id"], SUBNET);
        assert_eq!(lb["vip_address"], Value::Null);
        assert_eq!(lb["vip_vnic_type"], "normal");
        assert_eq!(lb["vip_sg_ids"], Value::Null);
        assert_eq!(lb["listeners"], json!([]));
        assert_eq!(lb["additional_vips"], json!([]));
        assert_eq!(lb["description"], "");
        assert_eq!(lb["tags"], json!(["a", "b"]));
        let id = lb["id"].as_str().expect("id");
        assert_eq!(jobs(&api).await, vec![("create_load_balancer".into(), id.to_owned(), "{}".into())]);
    }
}

#[tokio::test]
async fn create_validates_like_upstream() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let p1 = [("x-project-id", "p1")];
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"loadbalancer": {"name": "x"}}),
                "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
            ),
            (
                json!({"loadbalancer": {"vip_subnet_id": SUBNET, "provider": "bogus"}}),
                "Provider 'bogus' is not enabled.",
            ),
            (
                json!({"loadbalancer": {"vip_subnet_id": "not-a-uuid"}}),
                "Invalid input for field/attribute vip_subnet_id.",
            ),
            (json!({"loadbalancer": {"vip_subnet_id": SUBNET, "bogus": 1}}), "Unknown attribute"),
            (json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": 5}}), "Invalid input for field/attribute name."),
            (json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "x".repeat(256)}}), "maximum character"),
            (json!({"loadbalancer": {"vip_subnet_id": SUBNET, "admin_state_up": "maybe"}}), "admin_state_up"),
            (
                json!({"loadbalancer": {"vip_subnet_id": SUBNET, "flavor_id": SUBNET}}),
                "Validation failure: Invalid flavor_id.",
            ),
            (json!({"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": "300.1.1.1"}}), "vip_address"),
            (json!({"loadbalancer": {"vip_subnet_id": SUBNET, "tags": "x"}}), "tags"),
            (json!({"lb": {}}), "Unknown argument"),
            (json!([1, 2]), "loadbalancer"),
        ];
        for (body, message) in cases {
            let (status, out) = api.call_with("POST", "/v2/lbaas/loadbalancers", Some(body.clone()), &p1).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {out}");
            assert_eq!(out["faultcode"], "Client");
            assert!(fault(&out).contains(message), "{body} -> {out}");
        }
        // No project anywhere under noauth: the default project (upstream
        // answers 400, which leaves the CLI without a way to create).
        let (status, out) =
            api.call("POST", "/v2/lbaas/loadbalancers", Some(json!({"loadbalancer": {"vip_subnet_id": SUBNET}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
        assert_eq!(out["loadbalancer"]["project_id"], "noauth");
        // The body's project wins for an admin; `octavia` is a provider too.
        let (status, out) = api
            .call(
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(json!({"loadbalancer": {"vip_network_id": SUBNET, "project_id": "p9", "provider": "octavia"}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
        assert_eq!(out["loadbalancer"]["project_id"], "p9");
        assert_eq!(out["loadbalancer"]["provider"], "octavia");
        assert!(jobs(&api).await.len() == 2, "failed requests queue nothing");
    }
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_with_the_fault_body() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let raw = |method: &str, path: &str, body: Vec<u8>| {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request")
        };
        let big = vec![b' '; api.state.config.api.max_request_body_size + 10];
        for (req, want) in [
            (raw("POST", "/v2/lbaas/loadbalancers", b"{not json".to_vec()), StatusCode::BAD_REQUEST),
            (raw("POST", "/v2/lbaas/loadbalancers", big), StatusCode::PAYLOAD_TOO_LARGE),
            (raw("PUT", &format!("/v2/lbaas/loadbalancers/{lb}"), b"".to_vec()), StatusCode::BAD_REQUEST),
        ] {
            let resp = api.router.clone().oneshot(req).await.expect("response");
            assert_eq!(resp.status(), want);
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            let v: Value = serde_json::from_slice(&bytes).expect("json body");
            assert_eq!(v["faultcode"], "Client", "{v}");
        }
        for path in [
            "/v2/lbaas/loadbalancers?name=x%27%20OR%201=1--",
            "/v2/lbaas/loadbalancers?limit=-5",
            "/v2/lbaas/loadbalancers?limit=99999999999999999999999",
            "/v2/lbaas/loadbalancers?sort=name;drop",
            "/v2/lbaas/loadbalancers?marker=nope",
            "/v2/lbaas/loadbalancers/not-a-uuid",
            "/v2/lbaas/loadbalancers/not-a-uuid/status",
            "/v2/lbaas/loadbalancers?admin_state_up=banana",
        ] {
            let (status, body) = api.call("GET", path, None).await;
            assert!(status.is_success() || status.is_client_error(), "{path}: {status} {body}");
            if !status.is_success() {
                assert_eq!(body["faultcode"], "Client", "{path}");
            }
        }
        let (status, body) = api.call("GET", "/v2/lbaas/loadbalancers?name=x%27%20OR%201=1--", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["loadbalancers"], json!([]));
        let (status, body) =
            api.call("GET", "/v2/lbaas/loadbalancers/0b7ea5a8-0000-4000-8000-000000000000", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&body), "Load Balancer 0b7ea5a8-0000-4000-8000-000000000000 not found.");
        let (status, _) = api.call("DELETE", "/v2/lbaas/loadbalancers/not-a-uuid", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn list_filters_sorts_pages_and_selects_fields() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let mut ids = Vec::new();
        for name in ["c", "a", "b"] {
            ids.push(lbaas_support::lb(&api, name).await);
        }
        api.sql(&format!("UPDATE load_balancer SET tags = '[\"blue\"]', enabled = FALSE WHERE id = '{}'", ids[1]))
            .await;
        let (status, body) = api.call("GET", "/v2/lbaas/loadbalancers?sort=name:asc", None).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> =
            body["loadbalancers"].as_array().expect("list").iter().map(|l| l["name"].as_str().expect("name")).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(body["loadbalancers_links"], json!([]));
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers?admin_state_up=false", None).await;
        assert_eq!(body["loadbalancers"][0]["id"], ids[1].as_str());
        assert_eq!(body["loadbalancers"].as_array().expect("list").len(), 1);
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers?enabled=true", None).await;
        assert_eq!(body["loadbalancers"].as_array().expect("list").len(), 2);
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers?tags=blue", None).await;
        assert_eq!(body["loadbalancers"].as_array().expect("list").len(), 1);
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers?not-tags=blue", None).await;
        assert_eq!(body["loadbalancers"].as_array().expect("list").len(), 2);
        let (status, body) = api.call("GET", "/v2/lbaas/loadbalancers?bogus=1", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // Pages of two with links.
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers?limit=2&sort=name", None).await;
        assert_eq!(body["loadbalancers"].as_array().expect("list").len(), 2);
        let links = body["loadbalancers_links"].as_array().expect("links");
        assert_eq!(links.len(), 1);
        assert_eq!(links[0]["rel"], "next");
        let next = links[0]["href"].as_str().expect("href");
        assert!(next.starts_with("http://ctl.example/v2/lbaas/loadbalancers?limit=2"), "{next}");
        let path = next.trim_start_matches("http://ctl.example");
        let (_, body) = api.call("GET", path, None).await;
        assert_eq!(body["loadbalancers"][0]["name"], "c");
        assert_eq!(body["loadbalancers_links"][0]["rel"], "previous");
        // fields=
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers?fields=id&fields=listeners", None).await;
        let first = body["loadbalancers"][0].as_object().expect("object");
        assert_eq!(first.keys().collect::<Vec<_>>(), ["id", "listeners"]);
        let (_, body) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{}?fields=name", ids[0]), None).await;
        assert_eq!(body, json!({"loadbalancer": {"name": "c"}}));
        // DELETED rows are hidden.
        api.sql(&format!("UPDATE load_balancer SET provisioning_status = 'DELETED' WHERE id = '{}'", ids[0])).await;
        let (_, body) = api.call("GET", "/v2/lbaas/loadbalancers", None).await;
        assert_eq!(body["loadbalancers"].as_array().expect("list").len(), 2);
        let (status, _) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{}", ids[0]), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn each_listed_load_balancer_is_the_shown_one_with_its_children() {
    // The engine renders list rows (children, defaults, nulls) while show
    // renders them in the controller: both agree on every field.
    for db in common::databases().await {
        let api = common::api(&db).await;
        let first = lbaas_support::lb(&api, "first").await;
        let second = lbaas_support::lb(&api, "second").await;
        let empty = lbaas_support::lb(&api, "empty").await;
        for (lb, port) in [(&first, 80), (&first, 81), (&second, 82)] {
            let listener = lbaas_support::listener(&api, lb, "HTTP", port).await;
            settle(&api).await;
            lbaas_support::pool_on_listener(&api, &listener, "HTTP").await;
            settle(&api).await;
        }
        // What only the database can hold: no name or description, and
        // tags.
        api.sql(&format!(
            "UPDATE load_balancer SET name = NULL, description = NULL, tags = '[\"a\",\"b\"]' \
             WHERE id = '{empty}'"
        ))
        .await;
        for fields in ["", "?fields=id&fields=listeners&fields=name&fields=provider&fields=admin_state_up"] {
            let (_, list) = api.call("GET", &format!("/v2/lbaas/loadbalancers{fields}"), None).await;
            let rows = list["loadbalancers"].as_array().expect("loadbalancers");
            assert_eq!(rows.len(), 3, "{}: {list}", db.name);
            for row in rows {
                let id = row["id"].as_str().expect("id");
                let (status, shown) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}{fields}"), None).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(row, &shown["loadbalancer"], "{}: {id}{fields}", db.name);
            }
        }
        let (_, list) = api.call("GET", "/v2/lbaas/loadbalancers", None).await;
        let row = |id: &str| {
            list["loadbalancers"].as_array().expect("list").iter().find(|r| r["id"] == id).expect("listed").clone()
        };
        let (first, second, empty) = (row(&first), row(&second), row(&empty));
        assert_eq!(first["listeners"].as_array().map(Vec::len), Some(2), "{first}");
        assert_eq!(first["pools"].as_array().map(Vec::len), Some(2), "{first}");
        assert_eq!(second["listeners"].as_array().map(Vec::len), Some(1), "{second}");
        assert_eq!((&empty["name"], &empty["description"]), (&json!(""), &json!("")));
        assert_eq!(empty["tags"], json!(["a", "b"]));
        assert_eq!(empty["listeners"], json!([]));
        assert_eq!(empty["additional_vips"], json!([]));
    }
}

#[tokio::test]
async fn update_delete_and_failover_follow_the_status_rules() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let (_, created) = api
            .call_with(
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(json!({"loadbalancer": {"vip_subnet_id": SUBNET}})),
                &[("x-project-id", "p1")],
            )
            .await;
        let id = created["loadbalancer"]["id"].as_str().expect("id").to_owned();
        let path = format!("/v2/lbaas/loadbalancers/{id}");
        // PENDING_CREATE: immutable.
        let (status, body) = api.call("PUT", &path, Some(json!({"loadbalancer": {"name": "n"}}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), format!("Invalid state PENDING_CREATE of loadbalancer resource {id}"));
        let (status, _) = api.call("DELETE", &path, None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = api.call("PUT", &format!("{path}/failover"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        settle(&api).await;
        let (status, body) = api
            .call("PUT", &path, Some(json!({"loadbalancer": {"name": "n", "admin_state_up": false, "tags": ["t"]}})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["loadbalancer"]["name"], "n");
        assert_eq!(body["loadbalancer"]["admin_state_up"], false);
        assert_eq!(body["loadbalancer"]["tags"], json!(["t"]));
        assert_eq!(body["loadbalancer"]["provisioning_status"], "PENDING_UPDATE");
        let (status, body) = api.call("PUT", &path, Some(json!({"loadbalancer": {"vip_subnet_id": SUBNET}}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "immutable field: {body}");
        settle(&api).await;
        let (status, body) = api.call("PUT", &format!("{path}/failover"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(status_of(&api, "load_balancer", &id).await, "PENDING_UPDATE");
        settle(&api).await;
        // Children block a plain delete; cascade marks them all.
        let listener = lbaas_support::listener(&api, &id, "HTTP", 80).await;
        let pool = lbaas_support::pool_on_listener(&api, &listener, "HTTP").await;
        let member = lbaas_support::member(&api, &pool, "10.0.0.5", 80).await;
        let (status, body) = api.call("DELETE", &path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(fault(&body), format!("Validation failure: Cannot delete Load Balancer {id} - it has children"));
        let (status, _) = api.call("DELETE", &format!("{path}?cascade=true"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(status_of(&api, "load_balancer", &id).await, "PENDING_DELETE");
        assert_eq!(status_of(&api, "listener", &listener).await, "PENDING_DELETE");
        assert_eq!(status_of(&api, "pool", &pool).await, "PENDING_DELETE");
        assert_eq!(status_of(&api, "member", &member).await, "PENDING_DELETE");
        let last = jobs(&api).await.into_iter().find(|j| j.0 == "delete_load_balancer").expect("delete job");
        assert_eq!(last.1, id);
        assert_eq!(serde_json::from_str::<Value>(&last.2).expect("payload"), json!({"cascade": true}));
        let (status, body) = api.call("DELETE", &format!("{path}?cascade=1"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), format!("Invalid state PENDING_DELETE of loadbalancer resource {id}"));
    }
}

#[tokio::test]
async fn status_tree_and_stats() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let id = lbaas_support::lb(&api, "lb").await;
        let listener = lbaas_support::listener(&api, &id, "HTTP", 80).await;
        let pool = lbaas_support::pool_on_listener(&api, &listener, "HTTP").await;
        let member = lbaas_support::member(&api, &pool, "10.0.0.5", 80).await;
        let (_, hm) = api
            .call(
                "POST",
                "/v2/lbaas/healthmonitors",
                Some(json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2}})),
            )
            .await;
        let hm_id = hm["healthmonitor"]["id"].as_str().expect("hm id").to_owned();
        settle(&api).await;
        let (status, body) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}/status"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"statuses": {"loadbalancer": {
                "id": id, "name": "lb", "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
                "listeners": [{
                    "id": listener, "name": "", "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
                    "pools": [{
                        "id": pool, "name": "", "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
                        "health_monitor": {"id": hm_id, "name": "", "type": "HTTP", "provisioning_status": "ACTIVE", "operating_status": "ONLINE"},
                        "members": [{"id": member, "name": "", "provisioning_status": "ACTIVE", "operating_status": "NO_MONITOR", "address": "10.0.0.5", "protocol_port": 80}],
                    }],
                }],
            }}})
        );
        let (_, body) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}/stats"), None).await;
        assert_eq!(
            body,
            json!({"stats": {"bytes_in": 0, "bytes_out": 0, "active_connections": 0, "total_connections": 0, "request_errors": 0}})
        );
        for (amp, n) in [("a1", 10), ("a2", 5)] {
            api.sql(&format!(
                "INSERT INTO listener_statistics (listener_id, amphora_id, bytes_in, bytes_out, active_connections, total_connections, request_errors) \
                 VALUES ('{listener}', '{amp}', {n}, {n}, 1, {n}, 0)"
            ))
            .await;
        }
        let (_, body) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}/stats"), None).await;
        assert_eq!(
            body,
            json!({"stats": {"bytes_in": 15, "bytes_out": 15, "active_connections": 2, "total_connections": 15, "request_errors": 0}})
        );
        let (_, body) = api.call("GET", &format!("/v2.0/lbaas/listeners/{listener}/stats"), None).await;
        assert_eq!(body["stats"]["bytes_in"], 15);
        let (_, body) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}"), None).await;
        assert_eq!(body["loadbalancer"]["listeners"], json!([{"id": listener}]));
        assert_eq!(body["loadbalancer"]["pools"], json!([{"id": pool}]));
    }
}

#[tokio::test]
async fn policy_scopes_reads_and_writes_to_the_project() {
    for db in common::databases().await {
        let api = lbaas_support::api_with_roles(&db).await;
        let alice = as_user("pa", "member,reader");
        let bob = as_user("pb", "member,reader");
        let reader = as_user("pa", "reader");
        let admin = as_user("px", "admin");
        let create = |project: &str| json!({"loadbalancer": {"vip_subnet_id": SUBNET, "project_id": project}});
        let (status, body) = api.call_with("POST", "/v2/lbaas/loadbalancers", Some(create("pa")), &alice).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let a_id = body["loadbalancer"]["id"].as_str().expect("id").to_owned();
        let (status, body) = api.call_with("POST", "/v2/lbaas/loadbalancers", Some(create("pb")), &alice).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "another project");
        assert_eq!(fault(&body), "Policy does not allow this request to be performed.");
        let (status, _) = api.call_with("POST", "/v2/lbaas/loadbalancers", Some(create("pa")), &reader).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "readers cannot write");
        let (status, _) = api.call_with("POST", "/v2/lbaas/loadbalancers", Some(create("pb")), &admin).await;
        assert_eq!(status, StatusCode::CREATED);
        // Lists are scoped.
        let count = |b: &Value| b["loadbalancers"].as_array().map(Vec::len).unwrap_or(99);
        let (_, body) = api.call_with("GET", "/v2/lbaas/loadbalancers", None, &alice).await;
        assert_eq!(count(&body), 1);
        let (_, body) = api.call_with("GET", "/v2/lbaas/loadbalancers", None, &reader).await;
        assert_eq!(count(&body), 1);
        let (_, body) = api.call_with("GET", "/v2/lbaas/loadbalancers", None, &admin).await;
        assert_eq!(count(&body), 2);
        let (status, _) = api.call_with("GET", "/v2/lbaas/loadbalancers?project_id=pb", None, &alice).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = api.call_with("GET", "/v2/lbaas/loadbalancers", None, &as_user("pa", "")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no role");
        // Show: 404 before 403.
        let (status, _) = api.call_with("GET", &format!("/v2/lbaas/loadbalancers/{a_id}"), None, &bob).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) =
            api.call_with("GET", "/v2/lbaas/loadbalancers/0b7ea5a8-0000-4000-8000-000000000000", None, &bob).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = api.call_with("GET", &format!("/v2/lbaas/loadbalancers/{a_id}"), None, &reader).await;
        assert_eq!(status, StatusCode::OK);
        for (method, suffix) in [("DELETE", ""), ("PUT", "/failover")] {
            let (status, _) =
                api.call_with(method, &format!("/v2/lbaas/loadbalancers/{a_id}{suffix}"), None, &bob).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {suffix}");
        }
        // A caller without a project (not noauth): upstream's 400.
        let (status, body) = api
            .call_with(
                "POST",
                "/v2/lbaas/loadbalancers",
                Some(json!({"loadbalancer": {"vip_subnet_id": SUBNET}})),
                &[("x-test-roles", "admin")],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(fault(&body).contains("Missing project ID"), "{body}");
        let observer = as_user("pz", "load-balancer_global_observer");
        let (_, body) = api.call_with("GET", "/v2/lbaas/loadbalancers", None, &observer).await;
        assert_eq!(count(&body), 2);
    }
}
