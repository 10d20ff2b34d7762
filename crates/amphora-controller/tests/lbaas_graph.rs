//! A fully populated load balancer in one `POST /loadbalancers`.

mod common;
mod lbaas_support;

use axum::http::StatusCode;
use lbaas_support::{SUBNET, fault, jobs, settle};
use serde_json::{Value, json};

fn graph(listeners: Value, pools: Value) -> Value {
    json!({"loadbalancer": {"name": "full", "vip_subnet_id": SUBNET, "project_id": "p1",
        "listeners": listeners, "pools": pools}})
}

#[tokio::test]
async fn creates_every_child_pending_with_one_job_and_answers_in_full() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let body = graph(
            json!([
                {"name": "web", "protocol": "HTTP", "protocol_port": 80, "default_pool": {"name": "web-pool",
                    "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                    "members": [{"address": "10.0.0.1", "protocol_port": 8080}, {"address": "10.0.0.2", "protocol_port": 8080, "weight": 3}],
                    "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2}}},
                {"name": "alt", "protocol": "TCP", "protocol_port": 8443, "default_pool": {"name": "tcp-pool"}},
                {"name": "bare", "protocol": "UDP", "protocol_port": 53},
            ]),
            json!([{"name": "tcp-pool", "protocol": "TCP", "lb_algorithm": "SOURCE_IP"}]),
        );
        let (status, out) = api.call("POST", "/v2/lbaas/loadbalancers", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
        let lb = &out["loadbalancer"];
        let id = lb["id"].as_str().expect("id").to_owned();
        let listeners = lb["listeners"].as_array().expect("listeners");
        assert_eq!(listeners.len(), 3);
        let web = listeners.iter().find(|l| l["name"] == "web").expect("web");
        assert_eq!(web["provisioning_status"], "PENDING_CREATE");
        assert!(web.get("loadbalancers").is_none(), "full listeners have no loadbalancers");
        let pools = lb["pools"].as_array().expect("pools");
        assert_eq!(pools.len(), 2);
        let web_pool = pools.iter().find(|p| p["name"] == "web-pool").expect("web-pool");
        assert_eq!(web["default_pool_id"], web_pool["id"]);
        assert_eq!(web_pool["listeners"], json!([{"id": web["id"]}]));
        assert_eq!(web_pool["members"].as_array().expect("members").len(), 2);
        assert_eq!(web_pool["members"][0]["provisioning_status"], "PENDING_CREATE");
        assert_eq!(web_pool["healthmonitor"]["type"], "HTTP");
        assert_eq!(web_pool["healthmonitor"]["url_path"], "/");
        assert!(web_pool.get("healthmonitor_id").is_none());
        let tcp_pool = pools.iter().find(|p| p["name"] == "tcp-pool").expect("tcp-pool");
        assert!(tcp_pool.get("healthmonitor").is_none());
        let alt = listeners.iter().find(|l| l["name"] == "alt").expect("alt");
        assert_eq!(alt["default_pool_id"], tcp_pool["id"]);
        assert_eq!(jobs(&api).await.len(), 1, "one create job for the whole graph");
        assert_eq!(jobs(&api).await[0].0, "create_load_balancer");
        settle(&api).await;
        let (_, shown) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}"), None).await;
        assert_eq!(shown["loadbalancer"]["listeners"].as_array().expect("ids").len(), 3);
        assert!(shown["loadbalancer"]["listeners"][0].get("name").is_none(), "show has ids only");
        let (_, tree) = api.call("GET", &format!("/v2/lbaas/loadbalancers/{id}/status"), None).await;
        let tree_listeners = tree["statuses"]["loadbalancer"]["listeners"].as_array().expect("tree");
        assert_eq!(tree_listeners.len(), 3);
    }
}

#[tokio::test]
async fn rejects_bad_graphs_as_upstream_and_creates_nothing() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let http = |port: u16, pool: Value| json!({"protocol": "HTTP", "protocol_port": port, "default_pool": pool});
        let cases: Vec<(Value, StatusCode, &str)> = vec![
            (
                graph(json!([http(80, json!({"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}))]), json!([])),
                StatusCode::BAD_REQUEST,
                "Validation failure: Pools must be named when creating a fully populated loadbalancer.",
            ),
            (
                graph(json!([http(80, json!({"name": "missing"}))]), json!([])),
                StatusCode::BAD_REQUEST,
                "Validation failure: Pool 'missing' was referenced but no full definition was found.",
            ),
            (
                graph(
                    json!([]),
                    json!([{"name": "a", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}, {"name": "a", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}]),
                ),
                StatusCode::BAD_REQUEST,
                "Validation failure: Pool names must be unique when creating a fully populated loadbalancer.",
            ),
            (
                graph(json!([]), json!([{"name": "a", "protocol": "HTTP"}])),
                StatusCode::BAD_REQUEST,
                "Validation failure: Pool definition for 'a' missing required attribute: lb_algorithm",
            ),
            (
                graph(
                    json!([http(80, json!({"name": "t"}))]),
                    json!([{"name": "t", "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}]),
                ),
                StatusCode::BAD_REQUEST,
                "Validation failure: The pool protocol 'UDP' is invalid while the listener protocol is 'HTTP'.",
            ),
            (
                graph(json!([http(80, Value::Null), http(80, Value::Null)]), json!([])),
                StatusCode::CONFLICT,
                "Another Listener on this Load Balancer is already using protocol HTTP and protocol_port 80",
            ),
            (
                graph(
                    json!([]),
                    json!([{"name": "m", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN",
                "members": [{"address": "10.0.0.1", "protocol_port": 1}, {"address": "10.0.0.1", "protocol_port": 1}]}]),
                ),
                StatusCode::CONFLICT,
                "Another member on this pool is already using ip 10.0.0.1 on protocol_port 1",
            ),
            (
                graph(
                    json!([]),
                    json!([{"name": "u", "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN",
                "healthmonitor": {"type": "HTTPS", "delay": 1, "timeout": 1, "max_retries": 1}}]),
                ),
                StatusCode::BAD_REQUEST,
                "only a UDP-CONNECT/SCTP/TCP/HTTP health monitor is supported",
            ),
            (
                graph(json!([{"protocol": "HTTP", "protocol_port": 80, "loadbalancer_id": SUBNET}]), json!([])),
                StatusCode::BAD_REQUEST,
                "Unknown attribute",
            ),
            (graph(json!("x"), json!([])), StatusCode::BAD_REQUEST, "listeners"),
        ];
        for (body, want, message) in cases {
            let (status, out) = api.call("POST", "/v2/lbaas/loadbalancers", Some(body.clone())).await;
            assert_eq!(status, want, "{body} -> {out}");
            assert!(fault(&out).contains(message), "{body} -> {out}");
        }
        let (_, list) = api.call("GET", "/v2/lbaas/loadbalancers", None).await;
        assert_eq!(list["loadbalancers"], json!([]), "rolled back: {list}");
        let (_, list) = api.call("GET", "/v2/lbaas/pools", None).await;
        assert_eq!(list["pools"], json!([]), "{list}");
        assert!(jobs(&api).await.is_empty());
    }
}
