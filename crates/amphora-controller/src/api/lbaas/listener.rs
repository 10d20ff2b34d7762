//! `/v2/lbaas/listeners`: create, list, show, update, delete, stats.
//!
//! TLS termination needs a certificate store (Barbican) this deployment
//! does not have: TERMINATED_HTTPS (and PROMETHEUS) listeners are refused as
//! upstream refuses protocols an operator disabled.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::validate::{
    Body, CLIENT_AUTH_MODES, LISTENER_PROTOCOLS, MAX_TIMEOUT, RawBody, check_cidr, check_listener_pool_protocols,
    invalid_option, l4_protocol, validation,
};
use super::{LbChange, Val};
use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::listing::{self, Field, Kind, Resource};
use crate::auth::Context;
use crate::db::{Db, WriteTx, new_id, now_text};
use crate::jobs::JobKind;
use crate::model::{operating, provisioning};

pub static LISTENER: Resource = Resource {
    table: "listener",
    plural: "listeners",
    fields: &[
        Field::new("id", "id", Kind::Text),
        Field::new("name", "name", Kind::Text),
        Field::new("description", "description", Kind::Text),
        Field::new("provisioning_status", "provisioning_status", Kind::Text),
        Field::new("operating_status", "operating_status", Kind::Text),
        Field::new("admin_state_up", "enabled", Kind::Bool),
        Field::new("protocol", "protocol", Kind::Text),
        Field::new("protocol_port", "protocol_port", Kind::Int),
        Field::new("connection_limit", "connection_limit", Kind::Int),
        Field::new("default_tls_container_ref", "default_tls_container_ref", Kind::Text),
        Field::new("sni_container_refs", "sni_container_refs", Kind::Json),
        Field::new("project_id", "project_id", Kind::Text),
        Field::new("tenant_id", "project_id", Kind::Text),
        Field::new("default_pool_id", "default_pool_id", Kind::Text),
        Field::new("insert_headers", "insert_headers", Kind::Json),
        Field::new("created_at", "created_at", Kind::Time),
        Field::new("updated_at", "updated_at", Kind::Time),
        Field::new("timeout_client_data", "timeout_client_data", Kind::Int),
        Field::new("timeout_member_connect", "timeout_member_connect", Kind::Int),
        Field::new("timeout_member_data", "timeout_member_data", Kind::Int),
        Field::new("timeout_tcp_inspect", "timeout_tcp_inspect", Kind::Int),
        Field::new("tags", "tags", Kind::Json),
        Field::new("client_ca_tls_container_ref", "client_ca_tls_container_ref", Kind::Text),
        Field::new("client_authentication", "client_authentication", Kind::Text),
        Field::new("client_crl_container_ref", "client_crl_container_ref", Kind::Text),
        Field::new("allowed_cidrs", "allowed_cidrs", Kind::Json),
        Field::new("tls_ciphers", "tls_ciphers", Kind::Text),
        Field::new("tls_versions", "tls_versions", Kind::Json),
        Field::new("alpn_protocols", "alpn_protocols", Kind::Json),
        Field::new("hsts_max_age", "hsts_max_age", Kind::Int),
        Field::new("hsts_include_subdomains", "hsts_include_subdomains", Kind::Bool),
        Field::new("hsts_preload", "hsts_preload", Kind::Bool),
        Field::new("loadbalancer_id", "load_balancer_id", Kind::Text).aka(&["load_balancer_id"]).hidden(),
    ],
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lbaas/listeners", get(list).post(create))
        .route("/lbaas/listeners/{id}", get(show).put(update).delete(delete))
        .route("/lbaas/listeners/{id}/stats", get(stats))
}

const HTTP_HEADERS: &[&str] = &["X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto", "X-Forwarded-Host"];
const SSL_HEADERS: &[&str] = &[
    "X-SSL-Client-Verify",
    "X-SSL-Client-Has-Cert",
    "X-SSL-Client-DN",
    "X-SSL-Client-CN",
    "X-SSL-Issuer",
    "X-SSL-Client-SHA1",
    "X-SSL-Client-Not-Before",
    "X-SSL-Client-Not-After",
];

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Listener", id)
}

pub fn render(rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    rows.into_iter()
        .map(|mut r| {
            let lbs = super::id_list(&r, "loadbalancer_id");
            r.insert("loadbalancers".into(), lbs);
            r.insert("l7policies".into(), json!([]));
            if r.get("insert_headers").is_none_or(Value::is_null) {
                r.insert("insert_headers".into(), json!({}));
            }
            if r.get("sni_container_refs").is_none_or(Value::is_null) {
                r.insert("sni_container_refs".into(), json!([]));
            }
            super::finish(&LISTENER, r)
        })
        .collect()
}

/// A listener row (with its hidden `loadbalancer_id`), not rendered.
pub async fn fetch(db: &Db, id: &str) -> ApiResult<Map<String, Value>> {
    super::check_id(id, "Listener")?;
    LISTENER.fetch(db, id, "", &[]).await?.ok_or_else(|| not_found(id))
}

async fn load(db: &Db, id: &str) -> ApiResult<Map<String, Value>> {
    Ok(render(vec![fetch(db, id).await?]).remove(0))
}

pub fn text<'a>(row: &'a Map<String, Value>, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or_default()
}

async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let (q, scope) = super::list_request(&state, &ctx, &LISTENER, query.as_deref())?;
    let base = state.url(&headers, "/v2/lbaas/listeners");
    let page = listing::list(&state.db, &LISTENER, scope, &q, &base).await?;
    Ok(super::list_body("listeners", render(page.rows), page.links, &q))
}

async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let l = load(&state.db, &id).await?;
    if !ctx.can_read(text(&l, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    super::show_body("listener", l, query.as_deref())
}

async fn stats(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let l = fetch(&state.db, &id).await?;
    if !ctx.can_read(text(&l, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(json!({"stats": super::stats_of(&state.db, "listener_id = $1", &id).await?})))
}

pub const COMMON_FIELDS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "connection_limit",
    "default_tls_container_ref",
    "sni_container_refs",
    "default_pool_id",
    "insert_headers",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "tags",
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "allowed_cidrs",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
];

const POST_ONLY: &[&str] =
    &["protocol", "protocol_port", "project_id", "tenant_id", "default_pool", "l7policies", "loadbalancer_id"];

/// The columns of the attributes create and update share, as given.
fn common_columns(b: &Body, protocol: &str) -> ApiResult<Vec<(&'static str, Val)>> {
    let mut cols: Vec<(&str, Val)> = Vec::new();
    for key in ["name", "description"] {
        if let Some(v) = b.text(key, 255)? {
            cols.push((key, Val::Text(v)));
        }
    }
    if let Some(v) = b.boolean("admin_state_up")? {
        cols.push(("enabled", Val::Bool(v.unwrap_or(false))));
    }
    if let Some(v) = b.int("connection_limit", -1, i64::MAX)? {
        cols.push(("connection_limit", Val::Int(Some(v.unwrap_or(-1)))));
    }
    for key in ["timeout_client_data", "timeout_member_connect", "timeout_member_data", "timeout_tcp_inspect"] {
        if let Some(v) = b.int(key, 0, MAX_TIMEOUT)? {
            cols.push((key, Val::Int(v)));
        }
    }
    if let Some(v) = b.tags()? {
        cols.push(("tags", Val::json(&v)));
    }
    if let Some(v) = b.strings("allowed_cidrs", 64)? {
        for c in &v {
            check_cidr("allowed_cidrs", c)?;
        }
        cols.push(("allowed_cidrs", if v.is_empty() { Val::Text(None) } else { Val::json(&v) }));
    }
    if let Some(v) = b.choice("client_authentication", CLIENT_AUTH_MODES)? {
        let mode = v.unwrap_or_else(|| "NONE".into());
        if mode != "NONE" {
            return Err(validation(format!(
                "Client authentication setting {mode} requires a client CA container reference."
            )));
        }
        cols.push(("client_authentication", Val::text(mode)));
    }
    if let Some(v) = b.int("hsts_max_age", 0, i64::MAX)? {
        cols.push(("hsts_max_age", Val::Int(v)));
    }
    for key in ["hsts_include_subdomains", "hsts_preload"] {
        if let Some(v) = b.boolean(key)? {
            cols.push((key, Val::Bool(v.unwrap_or(false))));
        }
    }
    if let Some(v) = b.text("tls_ciphers", 2048)? {
        cols.push(("tls_ciphers", Val::Text(v)));
    }
    for key in ["tls_versions", "alpn_protocols"] {
        if let Some(v) = b.strings(key, 32)? {
            cols.push((key, Val::json(&v)));
        }
    }
    // Certificates: there is no certificate store to hold them.
    let has_refs = ["default_tls_container_ref", "client_ca_tls_container_ref", "client_crl_container_ref"]
        .iter()
        .map(|k| b.text(k, 255))
        .collect::<ApiResult<Vec<_>>>()?
        .into_iter()
        .any(|v| v.flatten().is_some())
        || b.strings("sni_container_refs", 255)?.is_some_and(|v| !v.is_empty());
    if has_refs {
        return Err(validation(format!(
            "Certificate container references are not allowed on {protocol} protocol listeners."
        )));
    }
    if let Some(Some(headers)) = b.object("insert_headers") {
        let Value::Object(map) = headers else {
            return Err(ApiError::BadRequest(
                "Invalid input for field/attribute insert_headers. Wrong type. Expected a dict.".into(),
            ));
        };
        if !map.is_empty() {
            if !matches!(protocol, "HTTP" | "TERMINATED_HTTPS") {
                return Err(invalid_option("insert-headers", format!("a {protocol} protocol listener.")));
            }
            let names: Vec<&str> = map.keys().map(String::as_str).collect();
            if names.iter().any(|n| !HTTP_HEADERS.contains(n) && !SSL_HEADERS.contains(n)) {
                return Err(invalid_option(format!("{names:?}"), "insert_headers"));
            }
            let ssl: Vec<&str> = names.iter().copied().filter(|n| SSL_HEADERS.contains(n)).collect();
            if !ssl.is_empty() {
                return Err(invalid_option(format!("{ssl:?}"), format!("{protocol} protocol listener.")));
            }
            if map.values().any(|v| !v.is_string()) {
                return Err(ApiError::BadRequest(
                    "Invalid input for field/attribute insert_headers. Values should be strings.".into(),
                ));
            }
        }
        cols.push(("insert_headers", Val::json(map)));
    } else if let Some(None) = b.object("insert_headers") {
        cols.push(("insert_headers", Val::text("{}")));
    }
    Ok(cols)
}

/// The default pool a listener may use: on its load balancer, of a
/// compatible protocol.
async fn check_default_pool(tx: &mut WriteTx<'_>, lb_id: &str, pool_id: &str, protocol: &str) -> ApiResult<()> {
    let row = sqlx::query("SELECT protocol FROM pool WHERE id = $1 AND load_balancer_id = $2")
        .bind(pool_id)
        .bind(lb_id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| ApiError::not_found("Pool", pool_id))?;
    let pool_protocol: String = row.try_get(0)?;
    check_listener_pool_protocols(protocol, &pool_protocol)
}

/// A listener to create, checked as far as it can be without the database.
#[derive(Debug)]
pub struct NewListener {
    pub protocol: String,
    pub port: i64,
    pub default_pool_id: Option<String>,
    pub cols: Vec<(&'static str, Val)>,
}

/// The attributes of `POST /listeners` (and of a listener in a
/// fully populated load balancer) other than where it goes.
pub fn new_listener(b: &Body) -> ApiResult<NewListener> {
    let protocol = Body::required("protocol", b.choice("protocol", LISTENER_PROTOCOLS)?)?;
    let port = Body::required("protocol_port", b.int("protocol_port", 1, 65535)?)?;
    let default_pool_id = b.uuid("default_pool_id")?.flatten();
    if matches!(protocol.as_str(), "TERMINATED_HTTPS" | "PROMETHEUS") {
        return Err(ApiError::BadRequest(format!(
            "The selected protocol is not allowed in this deployment: {protocol}"
        )));
    }
    if matches!(b.object("l7policies"), Some(Some(Value::Array(a))) if !a.is_empty()) {
        return Err(validation("L7 policies are not supported yet."));
    }
    let mut cols = common_columns(b, &protocol)?;
    cols.retain(|(c, _)| *c != "default_pool_id");
    Ok(NewListener { protocol, port, default_pool_id, cols })
}

/// Inserts a listener (PENDING_CREATE) on a load balancer the caller has
/// locked: its default pool must be there and its port free for its L4
/// protocol. Returns its id.
pub async fn insert_listener(tx: &mut WriteTx<'_>, lb_id: &str, project: &str, l: NewListener) -> ApiResult<String> {
    let NewListener { protocol, port, default_pool_id, cols } = l;
    if let Some(pool_id) = &default_pool_id {
        check_default_pool(tx, lb_id, pool_id, &protocol).await?;
    }
    let others = sqlx::query("SELECT protocol FROM listener WHERE load_balancer_id = $1 AND protocol_port = $2")
        .bind(lb_id)
        .bind(port)
        .fetch_all(&mut *tx.tx)
        .await?;
    for other in &others {
        let other: String = other.try_get(0)?;
        if l4_protocol(&other) == l4_protocol(&protocol) {
            return Err(ApiError::Conflict(format!(
                "Another Listener on this Load Balancer is already using protocol {other} and protocol_port {port}"
            )));
        }
    }
    let id = new_id();
    let mut all = vec![
        ("id", Val::text(&id)),
        ("project_id", Val::text(project)),
        ("load_balancer_id", Val::text(lb_id)),
        ("protocol", Val::text(&protocol)),
        ("protocol_port", Val::Int(Some(port))),
        ("default_pool_id", Val::Text(default_pool_id)),
        ("provisioning_status", Val::text(provisioning::PENDING_CREATE)),
        ("operating_status", Val::text(operating::OFFLINE)),
        ("created_at", Val::text(now_text())),
    ];
    // Upstream's defaults (db_prepare.create_listener and [haproxy_amphora]).
    let defaults = [
        ("enabled", Val::Bool(true)),
        ("connection_limit", Val::Int(Some(-1))),
        ("timeout_client_data", Val::Int(Some(50000))),
        ("timeout_member_connect", Val::Int(Some(5000))),
        ("timeout_member_data", Val::Int(Some(50000))),
        ("timeout_tcp_inspect", Val::Int(Some(0))),
        ("insert_headers", Val::text("{}")),
        ("tags", Val::text("[]")),
    ];
    for (col, val) in cols {
        let val = match (col, &val) {
            (c, Val::Int(None)) if c.starts_with("timeout_") => continue,
            _ => val,
        };
        all.push((col, val));
    }
    super::fill_defaults(&mut all, defaults);
    super::insert(tx, "listener", &all).await?;
    Ok(id)
}

async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    RawBody(bytes): RawBody,
) -> ApiResult<Response> {
    let allowed: Vec<&str> = COMMON_FIELDS.iter().chain(POST_ONLY).copied().collect();
    let b = Body::parse(&bytes, "listener", &allowed)?;
    let lb_id = Body::required("loadbalancer_id", b.uuid("loadbalancer_id")?)?;
    b.text("project_id", 36)?;
    let new = new_listener(&b)?;
    let parent = super::parent_lb(&state.db, &lb_id).await?;
    if !ctx.can_write(&parent.project_id) {
        return Err(ApiError::Forbidden);
    }
    if matches!(b.object("default_pool"), Some(Some(_))) {
        return Err(validation("Creating a listener with its default pool is not supported yet."));
    }
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    let id = insert_listener(&mut tx, &lb_id, &parent.project_id, new).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    let l = load(&state.db, &id).await?;
    Ok((StatusCode::CREATED, Json(json!({"listener": l}))).into_response())
}

async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&bytes, "listener", COMMON_FIELDS)?;
    let default_pool_id = b.uuid("default_pool_id")?;
    let row = fetch(&state.db, &id).await?;
    if !ctx.can_write(text(&row, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    let protocol = text(&row, "protocol").to_owned();
    let lb_id = text(&row, "loadbalancer_id").to_owned();
    let mut cols = common_columns(&b, &protocol)?;
    for (key, default) in [
        ("timeout_client_data", 50000),
        ("timeout_member_connect", 5000),
        ("timeout_member_data", 50000),
        ("timeout_tcp_inspect", 0),
    ] {
        for (c, v) in cols.iter_mut() {
            if *c == key && matches!(v, Val::Int(None)) {
                *v = Val::Int(Some(default));
            }
        }
    }
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    if let Some(Some(pool_id)) = &default_pool_id {
        check_default_pool(&mut tx, &lb_id, pool_id, &protocol).await?;
    }
    if let Some(pool_id) = default_pool_id {
        cols.push(("default_pool_id", Val::Text(pool_id)));
    }
    cols.push(("provisioning_status", Val::text(provisioning::PENDING_UPDATE)));
    super::update(&mut tx, "listener", &id, &cols).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(Json(json!({"listener": load(&state.db, &id).await?})))
}

async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = fetch(&state.db, &id).await?;
    if !ctx.can_write(text(&row, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    let lb_id = text(&row, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    super::mark(&mut tx, "listener", &id, provisioning::PENDING_DELETE).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
