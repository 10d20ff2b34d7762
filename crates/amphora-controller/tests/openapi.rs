//! The OpenAPI document against the routers, both ways: every route the
//! source registers has its operation in the document, and every
//! documented operation reaches a handler (not the router's fallback).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use amphora_controller::api::openapi::OPERATIONS;
use axum::http::StatusCode;

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in the
/// API's source, the catch-all 405 routes aside.
fn registered_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut files = vec![dir.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        // rustfmt may break a route over lines: join them.
        let flat: String = text.lines().map(str::trim).collect::<Vec<_>>().join("");
        for chunk in flat.split(".route(\"").skip(1) {
            let (route, rest) = chunk.split_once('"').expect("closing quote");
            if route == "/openapi.json" {
                continue; // the document itself, outside /v2
            }
            // The handlers: up to the parenthesis closing `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let handlers = &rest[..end];
            for method in ["get", "post", "put", "delete"] {
                let called = [" ", ".", "::"].iter().any(|p| handlers.contains(&format!("{p}{method}(")));
                if called {
                    out.insert((method.to_owned(), route.to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn every_registered_route_is_documented_and_every_documented_one_is_registered() {
    let routes = registered_routes();
    assert!(routes.len() >= 35, "the source scan found too few routes: {routes:?}");
    let documented: BTreeSet<(String, String)> =
        OPERATIONS.iter().map(|o| (o.method.to_owned(), o.path.to_owned())).collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(missing.is_empty(), "routes without an OpenAPI entry: {missing:?}");
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(stale.is_empty(), "documented operations no router serves: {stale:?}");
}

#[tokio::test]
async fn the_document_is_served_and_every_operation_reaches_a_handler() {
    let db = common::databases().await.remove(0);
    let api = common::api(&db).await;
    let (status, doc) = api.call("GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v2/octavia/amphorae/{id}"]["get"].is_object());
    let amphora = &doc["components"]["schemas"]["Amphora"]["properties"];
    assert_eq!(amphora.as_object().expect("amphora schema").len(), 20);
    assert_eq!(amphora["cert_busy"]["type"][0], "boolean");
    let fallback = "The resource could not be found.";
    let id = "6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce";
    for o in OPERATIONS {
        let path = format!("/v2{}", o.path.trim_end_matches('/'))
            .replace("{kind}", "subnets")
            .replace("{pool_id}", id)
            .replace("{id}", id);
        let body = matches!(o.method, "post" | "put").then(|| serde_json::json!({}));
        let (status, answer) = api.call(&o.method.to_uppercase(), &path, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{} {path}", o.method);
        assert!(
            !(status == StatusCode::NOT_FOUND && answer["faultstring"] == fallback),
            "{} {path} fell through to the router's fallback",
            o.method
        );
    }
}
