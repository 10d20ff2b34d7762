//! The version document and the API's generic behaviour (errors, 404/405/406).

mod common;

use axum::http::StatusCode;

#[tokio::test]
async fn root_lists_every_version_with_one_current_and_v2_self_links() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let (status, body) = api.call("GET", "/", None).await;
        assert_eq!(status, StatusCode::OK);
        let versions = body["versions"].as_array().expect("versions");
        assert_eq!(versions.first().expect("first")["id"], "v2.0");
        assert_eq!(versions.len(), 31, "v2.0 .. v2.30");
        let current: Vec<_> = versions.iter().filter(|v| v["status"] == "CURRENT").collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["id"], "v2.30");
        for v in versions {
            assert_eq!(v["links"][0]["href"], "http://ctl.example/v2");
            assert_eq!(v["links"][0]["rel"], "self");
        }
    }
}

#[tokio::test]
async fn v2_and_v2_0_are_the_same_api() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        for prefix in ["/v2", "/v2.0"] {
            let (status, body) = api.call("GET", &format!("{prefix}/octavia/amphorae"), None).await;
            assert_eq!(status, StatusCode::OK, "{prefix}");
            assert_eq!(body, serde_json::json!({"amphorae": [], "amphorae_links": []}));
        }
    }
}

#[tokio::test]
async fn errors_have_upstreams_shape() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let (status, body) = api.call("GET", "/v2/nothing/here", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["faultcode"], "Client");
        assert!(body["faultstring"].is_string());
        assert!(body["debuginfo"].is_null());
        let (status, body) = api.call_with("GET", "/v2/octavia/amphorae", None, &[("accept", "text/html")]).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(body["faultcode"], "Client");
        let (status, _) = api.call_with("GET", "/", None, &[("accept", "application/json; q=1")]).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn the_noop_network_answers_the_clis_subnet_lookups() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        let id = "3b1c5a0e-6f3e-4c1f-9a53-1f0e2d3c4b5a";
        let (status, body) = api.call("GET", &format!("/v2.0/subnets/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["subnet"]["id"], id);
        let (status, body) = api.call("GET", &format!("/v2.0/subnets?id={id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["subnets"][0]["id"], id);
        let (_, body) = api.call("GET", "/v2.0/subnets?name=private", None).await;
        assert_eq!(body, serde_json::json!({"subnets": []}));
        let (status, body) = api.call("GET", "/v2.0/networks/not-a-uuid", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["NeutronError"]["type"], "NetworkNotFound");
        let (status, _) = api.call("GET", "/v2.0/routers", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
