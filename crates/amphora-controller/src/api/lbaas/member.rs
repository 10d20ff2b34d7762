//! `/v2/lbaas/pools/{pool_id}/members`: create, list, show, update,
//! delete, and the batch update that replaces the pool's member list.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::listener::text;
use super::pool::{check_pool_mutable, touch_listeners};
use super::validate::{Body, RawBody, validation};
use super::{LbChange, Val};
use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::listing::{self, Field, Kind, Param, Resource};
use crate::auth::Context;
use crate::db::{Db, WriteTx, new_id, now_text};
use crate::jobs::JobKind;
use crate::model::{operating, provisioning};

pub static MEMBER: Resource = Resource {
    table: "member",
    plural: "members",
    fields: &[
        Field::new("id", "id", Kind::Text),
        Field::new("name", "name", Kind::Text),
        Field::new("operating_status", "operating_status", Kind::Text),
        Field::new("provisioning_status", "provisioning_status", Kind::Text),
        Field::new("admin_state_up", "enabled", Kind::Bool),
        Field::new("address", "address", Kind::Text).aka(&["ip_address"]),
        Field::new("protocol_port", "protocol_port", Kind::Int),
        Field::new("weight", "weight", Kind::Int),
        Field::new("backup", "backup", Kind::Bool),
        Field::new("subnet_id", "subnet_id", Kind::Text),
        Field::new("project_id", "project_id", Kind::Text),
        Field::new("tenant_id", "project_id", Kind::Text),
        Field::new("created_at", "created_at", Kind::Time),
        Field::new("updated_at", "updated_at", Kind::Time),
        Field::new("monitor_address", "monitor_address", Kind::Text),
        Field::new("monitor_port", "monitor_port", Kind::Int),
        Field::new("tags", "tags", Kind::Json),
        Field::new("vnic_type", "vnic_type", Kind::Text),
        Field::new("pool_id", "pool_id", Kind::Text).hidden(),
    ],
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lbaas/pools/{pool_id}/members", get(list).post(create).put(batch))
        .route("/lbaas/pools/{pool_id}/members/{id}", get(show).put(update).delete(delete))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Member", id)
}

pub fn render(rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    rows.into_iter().map(|r| super::finish(&MEMBER, r)).collect()
}

/// The member `id` of pool `pool_id` (404 for one of another pool).
async fn fetch(db: &Db, pool_id: &str, id: &str) -> ApiResult<Map<String, Value>> {
    super::check_id(id, "Member")?;
    MEMBER.fetch(db, id, " AND pool_id = $2", &[Param::Text(pool_id.to_owned())]).await?.ok_or_else(|| not_found(id))
}

async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    Path(pool_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let pool = super::pool::fetch(&state.db, &pool_id).await?;
    if !ctx.can_read(text(&pool, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    let (q, scope) = super::list_request(&state, &ctx, &MEMBER, query.as_deref())?;
    let scope = scope.with("pool_id = $?", vec![Param::Text(pool_id.clone())]);
    let base = state.url(&headers, &format!("/v2/lbaas/pools/{pool_id}/members"));
    let page = listing::list(&state.db, &MEMBER, scope, &q, &base).await?;
    Ok(super::list_body("members", render(page.rows), page.links, &q))
}

async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path((pool_id, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    super::pool::fetch(&state.db, &pool_id).await?;
    let m = fetch(&state.db, &pool_id, &id).await?;
    if !ctx.can_read(text(&m, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    super::show_body("member", render(vec![m]).remove(0), query.as_deref())
}

pub const PUT_FIELDS: &[&str] =
    &["name", "admin_state_up", "weight", "backup", "monitor_port", "monitor_address", "tags"];
pub const POST_ONLY: &[&str] = &["address", "protocol_port", "subnet_id", "project_id", "tenant_id", "request_sriov"];

fn common_columns(b: &Body) -> ApiResult<Vec<(&'static str, Val)>> {
    let mut cols: Vec<(&str, Val)> = Vec::new();
    if let Some(v) = b.text("name", 255)? {
        cols.push(("name", Val::Text(v)));
    }
    if let Some(v) = b.boolean("admin_state_up")? {
        cols.push(("enabled", Val::Bool(v.unwrap_or(false))));
    }
    if let Some(v) = b.int("weight", 0, 256)? {
        cols.push(("weight", Val::Int(Some(v.unwrap_or(1)))));
    }
    if let Some(v) = b.boolean("backup")? {
        cols.push(("backup", Val::Bool(v.unwrap_or(false))));
    }
    if let Some(v) = b.int("monitor_port", 1, 65535)? {
        cols.push(("monitor_port", Val::Int(v)));
    }
    if let Some(v) = b.ip("monitor_address")? {
        cols.push(("monitor_address", Val::Text(v)));
    }
    if let Some(v) = b.tags()? {
        cols.push(("tags", Val::json(&v)));
    }
    Ok(cols)
}

/// A new member's columns from a create body (also one batch entry).
#[derive(Debug)]
pub struct NewMember {
    pub address: String,
    pub port: i64,
    pub subnet_id: Option<String>,
    pub cols: Vec<(&'static str, Val)>,
}

pub fn new_member(b: &Body) -> ApiResult<NewMember> {
    let address = Body::required("address", b.ip("address")?)?;
    let port = Body::required("protocol_port", b.int("protocol_port", 1, 65535)?)?;
    b.text("project_id", 36)?;
    let subnet = b.uuid("subnet_id")?.flatten();
    if b.boolean("request_sriov")?.flatten() == Some(true) {
        return Err(validation("SR-IOV member ports are not supported by this deployment."));
    }
    let mut cols = common_columns(b)?;
    cols.push(("subnet_id", Val::Text(subnet.clone())));
    Ok(NewMember { address, port, subnet_id: subnet, cols })
}

pub async fn insert_member(tx: &mut WriteTx<'_>, pool_id: &str, project: &str, m: NewMember) -> ApiResult<String> {
    let id = new_id();
    let mut all = vec![
        ("id", Val::text(&id)),
        ("project_id", Val::text(project)),
        ("pool_id", Val::text(pool_id)),
        ("address", Val::text(&m.address)),
        ("protocol_port", Val::Int(Some(m.port))),
        ("provisioning_status", Val::text(provisioning::PENDING_CREATE)),
        ("operating_status", Val::text(operating::OFFLINE)),
        ("created_at", Val::text(now_text())),
    ];
    all.extend(m.cols);
    super::fill_defaults(
        &mut all,
        [
            ("enabled", Val::Bool(true)),
            ("weight", Val::Int(Some(1))),
            ("backup", Val::Bool(false)),
            ("tags", Val::text("[]")),
        ],
    );
    super::insert(tx, "member", &all).await?;
    Ok(id)
}

/// The pool, checked for the caller's write right and for being mutable.
async fn writable_pool(state: &AppState, ctx: &Context, pool_id: &str) -> ApiResult<Map<String, Value>> {
    let pool = super::pool::fetch(&state.db, pool_id).await?;
    if !ctx.can_write(text(&pool, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    check_pool_mutable(&pool, pool_id)?;
    Ok(pool)
}

async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(pool_id): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Response> {
    let allowed: Vec<&str> = PUT_FIELDS.iter().chain(POST_ONLY).copied().collect();
    let b = Body::parse(&bytes, "member", &allowed)?;
    let m = new_member(&b)?;
    crate::api::network::check_subnet(&state, m.subnet_id.as_deref())?;
    let pool = writable_pool(&state, &ctx, &pool_id).await?;
    let lb_id = text(&pool, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    let dup = sqlx::query("SELECT id FROM member WHERE pool_id = $1 AND address = $2 AND protocol_port = $3")
        .bind(pool_id.as_str())
        .bind(m.address.as_str())
        .bind(m.port)
        .fetch_optional(&mut *tx.tx)
        .await?;
    if dup.is_some() {
        return Err(ApiError::Conflict(format!(
            "Another member on this pool is already using ip {} on protocol_port {}",
            m.address, m.port
        )));
    }
    touch_listeners(&mut tx, &pool_id).await?;
    let id = insert_member(&mut tx, &pool_id, text(&pool, "project_id"), m).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    let m = fetch(&state.db, &pool_id, &id).await?;
    Ok((StatusCode::CREATED, Json(json!({"member": render(vec![m]).remove(0)}))).into_response())
}

async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path((pool_id, id)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&bytes, "member", PUT_FIELDS)?;
    let mut cols = common_columns(&b)?;
    let pool = writable_pool(&state, &ctx, &pool_id).await?;
    fetch(&state.db, &pool_id, &id).await?;
    let lb_id = text(&pool, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    touch_listeners(&mut tx, &pool_id).await?;
    cols.push(("provisioning_status", Val::text(provisioning::PENDING_UPDATE)));
    super::update(&mut tx, "member", &id, &cols).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    let m = fetch(&state.db, &pool_id, &id).await?;
    Ok(Json(json!({"member": render(vec![m]).remove(0)})))
}

async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path((pool_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let pool = writable_pool(&state, &ctx, &pool_id).await?;
    fetch(&state.db, &pool_id, &id).await?;
    let lb_id = text(&pool, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    touch_listeners(&mut tx, &pool_id).await?;
    super::mark(&mut tx, "member", &id, provisioning::PENDING_DELETE).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT .../members` with `{"members": [...]}`: members matched by
/// (address, protocol_port) are updated, new ones created, and the others
/// deleted unless `additive_only`. 202 without a body.
async fn batch(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(pool_id): Path<String>,
    RawQuery(query): RawQuery,
    RawBody(bytes): RawBody,
) -> ApiResult<Response> {
    let pairs = listing::parse_pairs(query.as_deref())?;
    let additive_only = pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "additive_only")
        .is_some_and(|(_, v)| matches!(v.to_ascii_lowercase().as_str(), "1" | "t" | "true" | "on" | "y" | "yes"));
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("Invalid input for field/attribute members. {e}")))?;
    let Value::Object(mut outer) = value else {
        return Err(ApiError::BadRequest("Invalid input for field/attribute members. Not an object.".into()));
    };
    if let Some(extra) = outer.keys().find(|k| k.as_str() != "members") {
        return Err(ApiError::BadRequest(format!("Unknown argument: \"{extra}\"")));
    }
    let Some(Value::Array(items)) = outer.remove("members") else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute members. Value: 'None'. Mandatory field missing.".into(),
        ));
    };
    let allowed: Vec<&str> = PUT_FIELDS.iter().chain(POST_ONLY).copied().collect();
    let mut wanted = Vec::with_capacity(items.len());
    for item in items {
        let b = Body::from_value(item, "members", &allowed)?;
        let m = new_member(&b)?;
        crate::api::network::check_subnet(&state, m.subnet_id.as_deref())?;
        wanted.push(m);
    }
    let pool = writable_pool(&state, &ctx, &pool_id).await?;
    let project = text(&pool, "project_id").to_owned();
    let lb_id = text(&pool, "loadbalancer_id").to_owned();

    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    let rows = sqlx::query("SELECT id, address, protocol_port, provisioning_status FROM member WHERE pool_id = $1")
        .bind(pool_id.as_str())
        .fetch_all(&mut *tx.tx)
        .await?;
    let mut old: HashMap<(String, i64), (String, String)> = HashMap::new();
    for r in &rows {
        old.insert((r.try_get(1)?, r.try_get(2)?), (r.try_get(0)?, r.try_get(3)?));
    }
    if old.is_empty() && wanted.is_empty() {
        // Nothing to create, update or delete: upstream rolls back and
        // answers 202 without a job.
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let mut seen = HashSet::new();
    for m in &wanted {
        if !seen.insert((m.address.clone(), m.port)) {
            return Err(validation("Member must be updated only once in the same request."));
        }
    }
    for ((address, port), (id, status)) in &old {
        if !seen.contains(&(address.clone(), *port)) && !additive_only && status != provisioning::PENDING_DELETE {
            super::mark(&mut tx, "member", id, provisioning::PENDING_DELETE).await?;
        }
    }
    for m in wanted {
        match old.get(&(m.address.clone(), m.port)) {
            Some((id, _)) => {
                let mut cols = m.cols;
                cols.retain(|(c, _)| *c != "subnet_id");
                cols.push(("provisioning_status", Val::text(provisioning::PENDING_UPDATE)));
                super::update(&mut tx, "member", id, &cols).await?;
            }
            None => {
                insert_member(&mut tx, &pool_id, &project, m).await?;
            }
        }
    }
    touch_listeners(&mut tx, &pool_id).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
