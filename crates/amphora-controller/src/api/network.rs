//! The network lookups the `openstack` CLI makes before it calls Octavia.
//!
//! `openstack loadbalancer create --vip-subnet-id X` first resolves X
//! through the network service (`GET /v2.0/subnets/X`, then `?name=X`);
//! with `--os-auth-type none --os-endpoint URL` that service *is* URL. On a
//! single host the controller's network driver owns the networks, so the
//! controller answers these read-only lookups from it. The noop driver,
//! like upstream's, treats every UUID as an existing subnet, network or
//! port; nothing else of Neutron's API is served.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use crate::db::is_uuid;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/{kind}", get(list)).route("/{kind}/{id}", get(show))
}

fn singular(kind: &str) -> Option<&'static str> {
    match kind {
        "subnets" => Some("subnet"),
        "networks" => Some("network"),
        "ports" => Some("port"),
        _ => None,
    }
}

fn object(kind: &str, id: &str) -> Value {
    let common = json!({"id": id, "name": id, "tenant_id": "", "project_id": "", "tags": []});
    let mut obj = common.as_object().cloned().unwrap_or_default();
    let extra = match kind {
        "subnet" => json!({"network_id": id, "ip_version": 4, "cidr": "203.0.113.0/24", "gateway_ip": null,
                           "enable_dhcp": false, "allocation_pools": [], "dns_nameservers": [], "host_routes": []}),
        "network" => json!({"subnets": [id], "admin_state_up": true, "status": "ACTIVE", "shared": false,
                            "mtu": 1500, "port_security_enabled": true}),
        _ => json!({"network_id": id, "fixed_ips": [], "admin_state_up": true, "status": "ACTIVE",
                    "device_owner": "", "device_id": "", "mac_address": "fa:16:3e:00:00:00"}),
    };
    obj.extend(extra.as_object().cloned().unwrap_or_default());
    Value::Object(obj)
}

fn neutron_not_found(kind: &str, id: &str) -> Response {
    let title = match kind {
        "subnet" => "Subnet",
        "network" => "Network",
        _ => "Port",
    };
    let body = json!({"NeutronError": {"type": format!("{title}NotFound"), "message": format!("{title} {id} could not be found."), "detail": ""}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The kind asked for, when the noop network driver is the one in use.
fn served(state: &AppState, kind: &str) -> Option<&'static str> {
    (state.config.worker.network_driver == "network_noop_driver").then(|| singular(kind)).flatten()
}

async fn show(State(state): State<AppState>, Path((kind, id)): Path<(String, String)>) -> Response {
    let Some(one) = served(&state, &kind) else { return super::error::ApiError::NoRoute.into_response() };
    if !is_uuid(&id) {
        return neutron_not_found(one, &id);
    }
    Json(json!({ one: object(one, &id) })).into_response()
}

async fn list(State(state): State<AppState>, Path(kind): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(one) = served(&state, &kind) else { return super::error::ApiError::NoRoute.into_response() };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let wanted: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "id" || k == "name")
        .map(|(_, v)| v.as_str())
        .filter(|v| is_uuid(v))
        .collect();
    let items: Vec<Value> = wanted.into_iter().map(|id| object(one, id)).collect();
    Json(json!({ kind: items })).into_response()
}
