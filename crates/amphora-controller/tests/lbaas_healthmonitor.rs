//! `/v2/lbaas/healthmonitors`.

mod common;
mod lbaas_support;

use axum::http::StatusCode;
use lbaas_support::{fault, settle, status_of};
use serde_json::{Value, json};

const HM_FIELDS: &[&str] = &[
    "admin_state_up",
    "created_at",
    "delay",
    "domain_name",
    "expected_codes",
    "http_method",
    "http_version",
    "id",
    "max_retries",
    "max_retries_down",
    "name",
    "operating_status",
    "pools",
    "project_id",
    "provisioning_status",
    "tags",
    "tenant_id",
    "timeout",
    "type",
    "updated_at",
    "url_path",
];

#[tokio::test]
async fn one_per_pool_with_upstreams_defaults() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let pool = lbaas_support::pool_on_lb(&api, &lb, "HTTP").await;
        let create =
            json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}});
        let (status, body) = api.call("POST", "/v2/lbaas/healthmonitors", Some(create.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let hm = &body["healthmonitor"];
        let keys: Vec<&str> = hm.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, HM_FIELDS);
        assert_eq!(hm["http_method"], "GET");
        assert_eq!(hm["url_path"], "/");
        assert_eq!(hm["expected_codes"], "200");
        assert_eq!(hm["max_retries_down"], 3);
        assert_eq!(hm["http_version"], Value::Null);
        assert_eq!(hm["pools"], json!([{"id": pool}]));
        assert_eq!(hm["provisioning_status"], "PENDING_CREATE");
        assert_eq!(hm["operating_status"], "OFFLINE");
        let id = hm["id"].as_str().expect("id").to_owned();
        settle(&api).await;
        let (status, body) = api.call("POST", "/v2/lbaas/healthmonitors", Some(create)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&body), "This pool already has a health monitor");
        let (_, body) = api.call("GET", &format!("/v2/lbaas/pools/{pool}"), None).await;
        assert_eq!(body["pool"]["healthmonitor_id"], id.as_str());
        let (_, body) = api.call("GET", &format!("/v2/lbaas/pools?healthmonitor_id={id}"), None).await;
        assert_eq!(body["pools"][0]["id"], pool.as_str());
        let (_, body) = api.call("GET", "/v2/lbaas/healthmonitors?type=HTTP", None).await;
        assert_eq!(body["healthmonitors"].as_array().expect("list").len(), 1);
        let (status, body) = api
            .call(
                "PUT",
                &format!("/v2/lbaas/healthmonitors/{id}"),
                Some(json!({"healthmonitor": {"delay": 10, "url_path": "/health", "expected_codes": "200-204", "http_version": 1.1, "domain_name": "example.com"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["healthmonitor"]["delay"], 10);
        assert_eq!(body["healthmonitor"]["url_path"], "/health");
        assert_eq!(body["healthmonitor"]["http_version"], 1.1);
        assert_eq!(body["healthmonitor"]["provisioning_status"], "PENDING_UPDATE");
        settle(&api).await;
        let (status, body) = api
            .call("PUT", &format!("/v2/lbaas/healthmonitors/{id}"), Some(json!({"healthmonitor": {"delay": null}})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(fault(&body), "None is not a valid option for delay");
        let (status, _) = api.call("DELETE", &format!("/v2/lbaas/healthmonitors/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(status_of(&api, "health_monitor", &id).await, "PENDING_DELETE");
        settle(&api).await;
        let (status, body) = api.call("GET", &format!("/v2/lbaas/healthmonitors/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&body), format!("Health Monitor {id} not found."));
    }
}

#[tokio::test]
async fn validates_like_upstream() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let lb = lbaas_support::lb(&api, "lb").await;
        let http = lbaas_support::pool_on_lb(&api, &lb, "HTTP").await;
        let udp = lbaas_support::pool_on_lb(&api, &lb, "UDP").await;
        let hm = |pool: &str, extra: Value| {
            let mut h = json!({"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3});
            for (k, v) in extra.as_object().expect("object") {
                h[k] = v.clone();
            }
            json!({ "healthmonitor": h })
        };
        let cases: Vec<(Value, &str)> = vec![
            (hm(&http, json!({"max_retries": 11})), "Value should be lower or equal to 10"),
            (hm(&http, json!({"max_retries": 0})), "Value should be greater or equal to 1"),
            (hm(&http, json!({"max_retries_down": 11})), "max_retries_down"),
            (hm(&http, json!({"delay": -1})), "delay"),
            (hm(&http, json!({"type": "FOO"})), "Invalid input for field/attribute type"),
            (hm(&http, json!({"timeout": null})), "Mandatory field missing"),
            (
                hm(&http, json!({"type": "TCP", "url_path": "/x"})),
                "url_path is not a valid option for health monitors of type TCP",
            ),
            (
                hm(&http, json!({"type": "PING", "http_method": "GET"})),
                "http_method is not a valid option for health monitors of type PING",
            ),
            (hm(&http, json!({"expected_codes": "2xx"})), "expected_codes"),
            (hm(&http, json!({"url_path": "no-slash"})), "url_path"),
            (hm(&http, json!({"http_method": "FETCH"})), "http_method"),
            (
                hm(&http, json!({"domain_name": "example.com"})),
                "Validation failure: 'http_version' must be specified when 'domain_name' is provided.",
            ),
            (
                hm(&http, json!({"domain_name": "example.com", "http_version": 1.0})),
                "http_version 1.0 is not a valid option for health monitors HTTP 1.1 domain name health check",
            ),
            (hm(&http, json!({"http_version": 2.0})), "http_version"),
            (
                hm(&http, json!({"type": "UDP-CONNECT"})),
                "Validation failure: The UDP-CONNECT type is only supported for pools of type UDP/SCTP.",
            ),
            (
                hm(&udp, json!({"type": "HTTPS"})),
                "Validation failure: The associated pool protocol is UDP, so only a UDP-CONNECT/SCTP/TCP/HTTP health monitor is supported.",
            ),
            (hm(&http, json!({"bogus": 1})), "Unknown attribute"),
        ];
        for (body, message) in cases {
            let (status, out) = api.call("POST", "/v2/lbaas/healthmonitors", Some(body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {out}");
            assert!(fault(&out).contains(message), "{body} -> {out}");
        }
        let (status, out) = api
            .call("POST", "/v2/lbaas/healthmonitors", Some(hm("0b7ea5a8-0000-4000-8000-000000000000", json!({}))))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fault(&out), "Pool 0b7ea5a8-0000-4000-8000-000000000000 not found.");
        for (pool, kind) in [(&http, "TCP"), (&udp, "UDP-CONNECT")] {
            let (status, out) =
                api.call("POST", "/v2/lbaas/healthmonitors", Some(hm(pool, json!({"type": kind})))).await;
            assert_eq!(status, StatusCode::CREATED, "{out}");
            assert_eq!(out["healthmonitor"]["http_method"], Value::Null);
            assert_eq!(out["healthmonitor"]["url_path"], Value::Null);
            settle(&api).await;
        }
        // A pool on its way out takes no monitor.
        let going = lbaas_support::pool_on_lb(&api, &lb, "TCP").await;
        api.sql(&format!("UPDATE pool SET provisioning_status = 'PENDING_DELETE' WHERE id = '{going}'")).await;
        let (status, out) =
            api.call("POST", "/v2/lbaas/healthmonitors", Some(hm(&going, json!({"type": "TCP"})))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(fault(&out), format!("Pool {going} is immutable and cannot be updated."));
    }
}
