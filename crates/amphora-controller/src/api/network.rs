//! The network lookups the `openstack` CLI makes before it calls Octavia.
//!
//! `openstack loadbalancer create --vip-subnet-id X` first resolves X
//! through the network service (`GET /v2.0/subnets/X`, then `?name=X`);
//! with `--os-auth-type none --os-endpoint URL` that service *is* URL. On a
//! single host the controller's network driver owns the networks, so the
//! controller answers these read-only lookups from it. The noop driver,
//! like upstream's, treats every UUID as an existing subnet, network or
//! port; the local driver (`crate::local`) knows the networks and subnets
//! of `[local_network]` (by id or by name: `lb-mgmt-net`, `vip-net`,
//! `member-net`; `lb-mgmt-subnet`, `vip-subnet`, `vip-ipv6-subnet`,
//! `member-subnet`) and serves no port. Nothing else of Neutron's API is
//! served.
//!
//! With the local driver the API also checks the ids a request names, as
//! upstream asks Neutron: an unknown one is upstream's 400
//! `Subnet {id} not found.` (`check_vip`, `check_subnet`).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::db::is_uuid;
use crate::local::{LocalNetworkSettings, NetworkRole, NetworkSettings};

fn local(state: &AppState) -> Option<&LocalNetworkSettings> {
    (state.config.worker.network_driver == "local").then_some(&state.config.local_network)
}

/// Upstream's InvalidSubresource.
fn not_found(resource: &str, id: &str) -> ApiError {
    ApiError::BadRequest(format!("{resource} {id} not found."))
}

/// A member's (or any) subnet must be one the network driver knows.
pub fn check_subnet(state: &AppState, subnet_id: Option<&str>) -> ApiResult<()> {
    match (local(state), subnet_id) {
        (Some(settings), Some(id)) if settings.subnet(id).is_none() => Err(not_found("Subnet", id)),
        _ => Ok(()),
    }
}

/// The VIP's port, network and subnet, as upstream's
/// `_validate_vip_request_object` checks them.
pub async fn check_vip(
    state: &AppState,
    port_id: Option<&str>,
    network_id: Option<&str>,
    subnet_id: Option<&str>,
) -> ApiResult<()> {
    let Some(settings) = local(state) else { return Ok(()) };
    if let Some(port) = port_id {
        let found =
            sqlx::query("SELECT id FROM local_port WHERE id = $1").bind(port).fetch_optional(&state.db.pool).await?;
        return if found.is_some() { Ok(()) } else { Err(not_found("Port", port)) };
    }
    if let Some(network) = network_id {
        let net = settings.network(network).ok_or_else(|| not_found("Network", network))?;
        if let Some(subnet) = subnet_id
            && !net.subnets.iter().any(|s| s.id == subnet)
        {
            return Err(not_found("Subnet", subnet));
        }
        return Ok(());
    }
    check_subnet(state, subnet_id)
}

fn network_name(role: NetworkRole) -> &'static str {
    match role {
        NetworkRole::Management => "lb-mgmt-net",
        NetworkRole::Vip => "vip-net",
        NetworkRole::Member => "member-net",
    }
}

fn subnet_name(role: NetworkRole, index: usize) -> String {
    let base = match role {
        NetworkRole::Management => "lb-mgmt",
        NetworkRole::Vip => "vip",
        NetworkRole::Member => "member",
    };
    if index == 0 { format!("{base}-subnet") } else { format!("{base}-ipv6-subnet") }
}

/// The configured objects of a kind, as Neutron shows them.
fn local_objects(settings: &LocalNetworkSettings, kind: &str) -> Vec<Value> {
    let common = |id: &str, name: &str| json!({"id": id, "name": name, "tenant_id": "", "project_id": "", "tags": []});
    let merge = |mut a: Value, b: Value| {
        if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
            a.extend(b.clone());
        }
        a
    };
    let nets: &[NetworkSettings] = &settings.networks;
    match kind {
        "subnet" => nets
            .iter()
            .flat_map(|n| n.subnets.iter().enumerate().map(move |(i, s)| (n, i, s)))
            .map(|(n, i, s)| {
                let version = if s.cidr.addr().is_ipv4() { 4 } else { 6 };
                merge(
                    common(&s.id, &subnet_name(n.role, i)),
                    json!({"network_id": n.id, "ip_version": version, "cidr": s.cidr.to_string(),
                           "gateway_ip": s.gateway.map(|g| g.to_string()), "enable_dhcp": false,
                           "allocation_pools": [], "dns_nameservers": [], "host_routes": []}),
                )
            })
            .collect(),
        "network" => nets
            .iter()
            .map(|n| {
                let subnets: Vec<&str> = n.subnets.iter().map(|s| s.id.as_str()).collect();
                merge(
                    common(&n.id, network_name(n.role)),
                    json!({"subnets": subnets, "admin_state_up": true, "status": "ACTIVE", "shared": true,
                           "mtu": settings.mtu, "port_security_enabled": false}),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

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

/// The kind asked for, when the noop or local network driver is in use.
fn served(state: &AppState, kind: &str) -> Option<&'static str> {
    let driver = state.config.worker.network_driver.as_str();
    matches!(driver, "network_noop_driver" | "local").then(|| singular(kind)).flatten()
}

async fn show(State(state): State<AppState>, Path((kind, id)): Path<(String, String)>) -> Response {
    let Some(one) = served(&state, &kind) else { return super::error::ApiError::NoRoute.into_response() };
    if let Some(settings) = local(&state) {
        return match local_objects(settings, one).into_iter().find(|o| o["id"] == id.as_str()) {
            Some(obj) => Json(json!({ one: obj })).into_response(),
            None => neutron_not_found(one, &id),
        };
    }
    if !is_uuid(&id) {
        return neutron_not_found(one, &id);
    }
    Json(json!({ one: object(one, &id) })).into_response()
}

async fn list(State(state): State<AppState>, Path(kind): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(one) = served(&state, &kind) else { return super::error::ApiError::NoRoute.into_response() };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    if let Some(settings) = local(&state) {
        // Every filter given must match (the CLI asks by id, then by name).
        let items: Vec<Value> = local_objects(settings, one)
            .into_iter()
            .filter(|o| {
                pairs.iter().filter(|(k, _)| k == "id" || k == "name").all(|(k, v)| o[k.as_str()] == v.as_str())
            })
            .collect();
        return Json(json!({ kind: items })).into_response();
    }
    let wanted: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "id" || k == "name")
        .map(|(_, v)| v.as_str())
        .filter(|v| is_uuid(v))
        .collect();
    let items: Vec<Value> = wanted.into_iter().map(|id| object(one, id)).collect();
    Json(json!({ kind: items })).into_response()
}
