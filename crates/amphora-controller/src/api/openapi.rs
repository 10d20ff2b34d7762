//! The OpenAPI 3 document of what the controller serves, built from the
//! same field tables the handlers render with (`listing::Resource`), so a
//! field added to a resource is in the document at once. Served at
//! `/openapi.json`; a test checks the operations below against the routes
//! the routers register, both ways.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::AppState;
use super::amphora::AMPHORA;
use super::lbaas::healthmonitor::HEALTH_MONITOR;
use super::lbaas::listener::LISTENER;
use super::lbaas::loadbalancer::LOAD_BALANCER;
use super::lbaas::member::MEMBER;
use super::lbaas::pool::POOL;
use super::listing::{Kind, Resource};

/// What an operation does with its resource, which decides its bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    List,
    Show,
    Create,
    Update,
    Delete,
    /// 202 or 204 without a body.
    Action,
    /// A JSON body not described by a resource table.
    Other,
}

#[derive(Debug)]
pub struct Operation {
    pub method: &'static str,
    /// Relative to `/v2` (and `/v2.0`).
    pub path: &'static str,
    pub summary: &'static str,
    pub shape: Shape,
    /// The resource and its singular envelope key.
    pub resource: Option<(&'static Resource, &'static str)>,
    pub status: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    shape: Shape,
    resource: Option<(&'static Resource, &'static str)>,
    status: u16,
) -> Operation {
    Operation { method, path, summary, shape, resource, status }
}

const AMP: Option<(&Resource, &str)> = Some((&AMPHORA, "amphora"));
const LB: Option<(&Resource, &str)> = Some((&LOAD_BALANCER, "loadbalancer"));
const LIS: Option<(&Resource, &str)> = Some((&LISTENER, "listener"));
const POO: Option<(&Resource, &str)> = Some((&POOL, "pool"));
const MEM: Option<(&Resource, &str)> = Some((&MEMBER, "member"));
const HM: Option<(&Resource, &str)> = Some((&HEALTH_MONITOR, "healthmonitor"));

/// Every operation served under `/v2` and `/v2.0`.
pub const OPERATIONS: &[Operation] = &[
    op("get", "/", "The API version", Shape::Other, None, 200),
    op("get", "/octavia/amphorae", "List amphorae", Shape::List, AMP, 200),
    op("get", "/octavia/amphorae/{id}", "Show an amphora", Shape::Show, AMP, 200),
    op("delete", "/octavia/amphorae/{id}", "Delete an amphora (READY or ERROR)", Shape::Delete, AMP, 204),
    op("put", "/octavia/amphorae/{id}/config", "Push the agent configuration", Shape::Action, AMP, 202),
    op("put", "/octavia/amphorae/{id}/failover", "Fail an amphora over", Shape::Action, AMP, 202),
    op("get", "/octavia/amphorae/{id}/stats", "Per-listener statistics of an amphora", Shape::Other, AMP, 200),
    op("get", "/lbaas/loadbalancers", "List load balancers", Shape::List, LB, 200),
    op("post", "/lbaas/loadbalancers", "Create a load balancer", Shape::Create, LB, 201),
    op("get", "/lbaas/loadbalancers/{id}", "Show a load balancer", Shape::Show, LB, 200),
    op("put", "/lbaas/loadbalancers/{id}", "Update a load balancer", Shape::Update, LB, 200),
    op(
        "delete",
        "/lbaas/loadbalancers/{id}",
        "Delete a load balancer (cascade=true: with its children)",
        Shape::Delete,
        LB,
        204,
    ),
    op("get", "/lbaas/loadbalancers/{id}/status", "The status tree of a load balancer", Shape::Other, LB, 200),
    op("get", "/lbaas/loadbalancers/{id}/statuses", "The status tree (older spelling)", Shape::Other, LB, 200),
    op("get", "/lbaas/loadbalancers/{id}/stats", "Statistics of a load balancer", Shape::Other, LB, 200),
    op(
        "put",
        "/lbaas/loadbalancers/{id}/failover",
        "Fail every amphora of a load balancer over",
        Shape::Action,
        LB,
        202,
    ),
    op("get", "/lbaas/listeners", "List listeners", Shape::List, LIS, 200),
    op("post", "/lbaas/listeners", "Create a listener", Shape::Create, LIS, 201),
    op("get", "/lbaas/listeners/{id}", "Show a listener", Shape::Show, LIS, 200),
    op("put", "/lbaas/listeners/{id}", "Update a listener", Shape::Update, LIS, 200),
    op("delete", "/lbaas/listeners/{id}", "Delete a listener", Shape::Delete, LIS, 204),
    op("get", "/lbaas/listeners/{id}/stats", "Statistics of a listener", Shape::Other, LIS, 200),
    op("get", "/lbaas/pools", "List pools", Shape::List, POO, 200),
    op("post", "/lbaas/pools", "Create a pool", Shape::Create, POO, 201),
    op("get", "/lbaas/pools/{id}", "Show a pool", Shape::Show, POO, 200),
    op("put", "/lbaas/pools/{id}", "Update a pool", Shape::Update, POO, 200),
    op("delete", "/lbaas/pools/{id}", "Delete a pool", Shape::Delete, POO, 204),
    op("get", "/lbaas/pools/{pool_id}/members", "List a pool's members", Shape::List, MEM, 200),
    op("post", "/lbaas/pools/{pool_id}/members", "Create a member", Shape::Create, MEM, 201),
    op("put", "/lbaas/pools/{pool_id}/members", "Replace a pool's members (batch)", Shape::Action, MEM, 202),
    op("get", "/lbaas/pools/{pool_id}/members/{id}", "Show a member", Shape::Show, MEM, 200),
    op("put", "/lbaas/pools/{pool_id}/members/{id}", "Update a member", Shape::Update, MEM, 200),
    op("delete", "/lbaas/pools/{pool_id}/members/{id}", "Delete a member", Shape::Delete, MEM, 204),
    op("get", "/lbaas/healthmonitors", "List health monitors", Shape::List, HM, 200),
    op("post", "/lbaas/healthmonitors", "Create a health monitor", Shape::Create, HM, 201),
    op("get", "/lbaas/healthmonitors/{id}", "Show a health monitor", Shape::Show, HM, 200),
    op("put", "/lbaas/healthmonitors/{id}", "Update a health monitor", Shape::Update, HM, 200),
    op("delete", "/lbaas/healthmonitors/{id}", "Delete a health monitor", Shape::Delete, HM, 204),
    op(
        "get",
        "/{kind}",
        "Network lookups of the noop network driver (subnets, networks, ports)",
        Shape::Other,
        None,
        200,
    ),
    op("get", "/{kind}/{id}", "One subnet, network or port of the noop network driver", Shape::Other, None, 200),
];

fn schema_of(resource: &Resource) -> Value {
    let mut props = Map::new();
    for f in resource.fields {
        let t = match f.kind {
            Kind::Text => json!({"type": ["string", "null"]}),
            Kind::Time => {
                json!({"type": ["string", "null"], "description": "naive ISO-8601 UTC, e.g. 2026-11-30T10:00:00"})
            }
            Kind::Int => json!({"type": ["integer", "null"]}),
            Kind::Bool => json!({"type": ["boolean", "null"]}),
            Kind::Json => json!({}),
        };
        props.insert(f.name.to_owned(), t);
    }
    json!({"type": "object", "properties": props})
}

fn schema_name(key: &str) -> String {
    let mut out = String::new();
    for part in key.split('_') {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The whole document; `base` is the URL the API is reached at.
pub fn document(base: &str) -> Value {
    let mut schemas = Map::new();
    schemas.insert(
        "Fault".into(),
        json!({"type": "object", "required": ["faultcode", "faultstring", "debuginfo"], "properties": {
            "faultcode": {"type": "string", "enum": ["Client", "Server"]},
            "faultstring": {"type": "string"},
            "debuginfo": {"type": ["string", "null"]}}}),
    );
    let mut paths = Map::new();
    for o in OPERATIONS {
        let mut responses = Map::new();
        let body = o.resource.map(|(resource, key)| {
            let name = schema_name(key);
            schemas.entry(name.clone()).or_insert_with(|| schema_of(resource));
            let reference = json!({"$ref": format!("#/components/schemas/{name}")});
            match o.shape {
                Shape::List => json!({"type": "object", "properties": {
                    resource.plural: {"type": "array", "items": reference},
                    format!("{}_links", resource.plural): {"type": "array", "items": {"type": "object"}}}}),
                Shape::Show | Shape::Create | Shape::Update => {
                    json!({"type": "object", "properties": {key: reference}})
                }
                _ => json!({"type": "object"}),
            }
        });
        let ok = match (o.shape, body) {
            (Shape::Delete | Shape::Action, _) => json!({"description": "done or queued; no body"}),
            (_, Some(schema)) => json!({"description": "OK", "content": {"application/json": {"schema": schema}}}),
            (_, None) => json!({"description": "OK", "content": {"application/json": {}}}),
        };
        responses.insert(o.status.to_string(), ok);
        let fault = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fault"}}}});
        for (code, what) in [
            ("400", "invalid input"),
            ("401", "no valid token"),
            ("403", "not allowed by policy"),
            ("404", "not found"),
            ("409", "the load balancer is immutable now"),
        ] {
            let mut r = fault.clone();
            r["description"] = Value::String(what.into());
            responses.insert(code.into(), r);
        }
        let mut operation = json!({"summary": o.summary, "responses": responses});
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if matches!(o.shape, Shape::Create | Shape::Update)
            && let Some((_, key)) = o.resource
        {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema":
                {"type": "object", "properties": {key: {"type": "object"}}}}}});
        }
        let entry = paths.entry(format!("/v2{}", o.path).trim_end_matches('/').to_owned()).or_insert_with(|| json!({}));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Octavia v2 API (amphora-controller)", "version": "2.30",
                 "description": "Also served under /v2.0. Errors use the Fault body."},
        "servers": [{"url": base}],
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(document(&state.url(&headers, "")))
}
