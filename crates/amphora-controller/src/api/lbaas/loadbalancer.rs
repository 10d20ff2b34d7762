//! `/v2/lbaas/loadbalancers`: create, list, show, update, delete (with
//! cascade), and the `status`, `stats` and `failover` sub-resources.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::validate::{Body, PROVIDERS, RawBody, validation};
use super::{LbChange, Val};
use crate::api::error::{ApiError, ApiResult};
use crate::api::listing::{self, Children, Field, Kind, Resource};
use crate::api::{AppState, accepted};
use crate::auth::Context;
use crate::db::{Db, new_id, now_text};
use crate::jobs::JobKind;
use crate::model::{operating, provisioning};

pub static LOAD_BALANCER: Resource = Resource {
    table: "load_balancer",
    plural: "loadbalancers",
    fields: &[
        Field::new("id", "id", Kind::Text),
        Field::new("name", "name", Kind::Text),
        Field::new("description", "description", Kind::Text),
        Field::new("provisioning_status", "provisioning_status", Kind::Text),
        Field::new("operating_status", "operating_status", Kind::Text),
        Field::new("admin_state_up", "enabled", Kind::Bool),
        Field::new("project_id", "project_id", Kind::Text),
        Field::new("tenant_id", "project_id", Kind::Text),
        Field::new("created_at", "created_at", Kind::Time),
        Field::new("updated_at", "updated_at", Kind::Time),
        Field::new("vip_address", "vip_address", Kind::Text),
        Field::new("vip_port_id", "vip_port_id", Kind::Text),
        Field::new("vip_subnet_id", "vip_subnet_id", Kind::Text),
        Field::new("vip_network_id", "vip_network_id", Kind::Text),
        Field::new("vip_qos_policy_id", "vip_qos_policy_id", Kind::Text),
        Field::new("vip_vnic_type", "vip_vnic_type", Kind::Text),
        Field::new("vip_sg_ids", "vip_sg_ids", Kind::Json),
        Field::new("provider", "provider", Kind::Text),
        Field::new("flavor_id", "flavor_id", Kind::Text),
        Field::new("availability_zone", "availability_zone", Kind::Text),
        Field::new("tags", "tags", Kind::Json),
    ],
};

const LISTENERS: Children = Children { key: "listeners", table: "listener", column: "load_balancer_id", parent: "id" };
const POOLS: Children = Children { key: "pools", table: "pool", column: "load_balancer_id", parent: "id" };
/// What a shown load balancer lists by id; the list page renders the
/// same two in SQL.
const CHILDREN: &[Children] = &[LISTENERS, POOLS];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lbaas/loadbalancers", get(list).post(create))
        .route("/lbaas/loadbalancers/{id}", get(show).put(update).delete(delete))
        .route("/lbaas/loadbalancers/{id}/status", get(status))
        .route("/lbaas/loadbalancers/{id}/statuses", get(status))
        .route("/lbaas/loadbalancers/{id}/stats", get(stats))
        .route("/lbaas/loadbalancers/{id}/failover", put(failover))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Load Balancer", id)
}

/// The page's rows as the API shows them.
async fn render(db: &Db, mut rows: Vec<Map<String, Value>>) -> ApiResult<Vec<Map<String, Value>>> {
    listing::attach_children(db, &mut rows, CHILDREN).await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            r.insert("additional_vips".into(), json!([]));
            if r.get("provider").is_none_or(Value::is_null) {
                r.insert("provider".into(), json!("octavia"));
            }
            super::finish(&LOAD_BALANCER, r)
        })
        .collect())
}

/// A load balancer that is not DELETED, rendered.
pub async fn load(db: &Db, id: &str) -> ApiResult<Map<String, Value>> {
    super::check_id(id, "Load Balancer")?;
    let row = LOAD_BALANCER
        .fetch(db, id, " AND provisioning_status <> $2", &[listing::Param::Text(provisioning::DELETED.into())])
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(render(db, vec![row]).await?.remove(0))
}

fn project_of(row: &Map<String, Value>) -> &str {
    row.get("project_id").and_then(Value::as_str).unwrap_or_default()
}

async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (q, scope) = super::list_request(&state, &ctx, &LOAD_BALANCER, query.as_deref())?;
    let scope = scope.with("provisioning_status <> $?", vec![listing::Param::Text(provisioning::DELETED.into())]);
    let base = state.url(&headers, "/v2/lbaas/loadbalancers");
    // The engine renders the rows, as `render` would.
    let backend = state.db.backend;
    let extra = [
        ("name", "COALESCE(name, '')".to_owned()),
        ("description", "COALESCE(description, '')".to_owned()),
        ("provider", "COALESCE(provider, 'octavia')".to_owned()),
        ("additional_vips", listing::json_value(backend, "'[]'")),
        (LISTENERS.key, LISTENERS.json(backend, LOAD_BALANCER.table)),
        (POOLS.key, POOLS.json(backend, LOAD_BALANCER.table)),
    ];
    let page = listing::list_json(&state.db, &LOAD_BALANCER, scope, &q, &base, &extra).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], page.body("loadbalancers")).into_response())
}

async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let lb = load(&state.db, &id).await?;
    if !ctx.can_read(project_of(&lb)) {
        return Err(ApiError::Forbidden);
    }
    super::show_body("loadbalancer", lb, query.as_deref())
}

/// The project of what a noauth caller creates without naming one.
pub const NOAUTH_PROJECT: &str = "noauth";

const POST_FIELDS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "vip_address",
    "vip_port_id",
    "vip_subnet_id",
    "vip_network_id",
    "vip_qos_policy_id",
    "vip_sg_ids",
    "additional_vips",
    "project_id",
    "tenant_id",
    "listeners",
    "pools",
    "provider",
    "tags",
    "flavor_id",
    "availability_zone",
];

fn non_empty_list(body: &Body, key: &str) -> bool {
    matches!(body.object(key), Some(Some(Value::Array(a))) if !a.is_empty())
}

async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    RawBody(bytes): RawBody,
) -> ApiResult<Response> {
    let b = Body::parse(&bytes, "loadbalancer", POST_FIELDS)?;
    let name = b.text("name", 255)?.flatten();
    let description = b.text("description", 255)?.flatten();
    let enabled = b.boolean("admin_state_up")?.map(|v| v.unwrap_or(false)).unwrap_or(true);
    let vip_address = b.ip("vip_address")?.flatten();
    let vip_port_id = b.uuid("vip_port_id")?.flatten();
    let vip_subnet_id = b.uuid("vip_subnet_id")?.flatten();
    let vip_network_id = b.uuid("vip_network_id")?.flatten();
    let vip_qos_policy_id = b.uuid("vip_qos_policy_id")?.flatten();
    let vip_sg_ids = b.uuids("vip_sg_ids")?;
    let project = b.text("project_id", 36)?.flatten().or(b.text("tenant_id", 36)?.flatten());
    let provider = b.text("provider", 64)?.flatten();
    let tags = b.tags()?.unwrap_or_default();
    let flavor_id = b.uuid("flavor_id")?.flatten();
    let availability_zone = b.text("availability_zone", 255)?.flatten();
    if let Some(Some(v)) = b.object("additional_vips")
        && !v.is_array()
    {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute additional_vips. Wrong type. Expected a list.".into(),
        ));
    }

    // Upstream answers 400 when neither the body nor the token names a
    // project, even under noauth, where the CLI has no way to name one but
    // `--project`. Here a noauth caller without one gets NOAUTH_PROJECT, so
    // `openstack loadbalancer create` works unchanged; with Keystone every
    // project-scoped token has a project and upstream's 400 stands.
    let noauth = state.config.api.auth_strategy == crate::config::AuthStrategy::Noauth;
    let project = project.or_else(|| ctx.project_id.clone());
    let project = project.or_else(|| noauth.then(|| NOAUTH_PROJECT.to_owned())).ok_or_else(|| {
        validation(
            "Missing project ID in request where one is required. An administrator should check the keystone \
             settings in the Octavia configuration.",
        )
    })?;
    if !ctx.can_write(&project) {
        return Err(ApiError::Forbidden);
    }
    if vip_port_id.is_none() && vip_network_id.is_none() && vip_subnet_id.is_none() {
        return Err(validation("VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id."));
    }
    if flavor_id.is_some() {
        return Err(validation("Invalid flavor_id."));
    }
    if availability_zone.is_some() {
        return Err(validation("Invalid availability zone."));
    }
    let provider = provider.unwrap_or_else(|| "amphora".to_owned());
    if !PROVIDERS.contains(&provider.as_str()) {
        return Err(ApiError::BadRequest(format!("Provider '{provider}' is not enabled.")));
    }
    if non_empty_list(&b, "additional_vips") {
        return Err(validation("additional_vips are not supported by this deployment."));
    }
    let graph = super::graph::parse(&b)?;
    crate::api::network::check_vip(&state, vip_port_id.as_deref(), vip_network_id.as_deref(), vip_subnet_id.as_deref())
        .await?;
    for subnet in graph.member_subnets() {
        crate::api::network::check_subnet(&state, Some(subnet))?;
    }

    let id = new_id();
    let mut tx = state.db.write().await?;
    super::insert(
        &mut tx,
        "load_balancer",
        &[
            ("id", Val::text(&id)),
            ("project_id", Val::text(&project)),
            ("name", Val::Text(name)),
            ("description", Val::Text(description)),
            ("provisioning_status", Val::text(provisioning::PENDING_CREATE)),
            ("operating_status", Val::text(operating::OFFLINE)),
            ("enabled", Val::Bool(enabled)),
            ("topology", Val::text(state.config.worker.loadbalancer_topology.as_str())),
            ("provider", Val::text(&provider)),
            ("vip_address", Val::Text(vip_address)),
            ("vip_port_id", Val::Text(vip_port_id)),
            ("vip_subnet_id", Val::Text(vip_subnet_id)),
            ("vip_network_id", Val::Text(vip_network_id)),
            ("vip_qos_policy_id", Val::Text(vip_qos_policy_id)),
            ("vip_sg_ids", vip_sg_ids.map_or(Val::Text(None), |v| Val::json(&v))),
            ("tags", Val::json(&tags)),
            ("created_at", Val::text(now_text())),
        ],
    )
    .await?;
    super::graph::insert(&mut tx, &id, &project, graph).await?;
    super::queue(&state, tx, JobKind::CreateLoadBalancer, &id, json!({})).await?;
    // Upstream answers a create with the full response (children in full).
    let mut lb = load(&state.db, &id).await?;
    super::graph::fill(&state.db, &mut lb).await?;
    Ok((StatusCode::CREATED, Json(json!({"loadbalancer": lb}))).into_response())
}

const PUT_FIELDS: &[&str] = &["name", "description", "vip_qos_policy_id", "admin_state_up", "vip_sg_ids", "tags"];

async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&bytes, "loadbalancer", PUT_FIELDS)?;
    let mut cols: Vec<(&str, Val)> = Vec::new();
    if let Some(v) = b.text("name", 255)? {
        cols.push(("name", Val::Text(v)));
    }
    if let Some(v) = b.text("description", 255)? {
        cols.push(("description", Val::Text(v)));
    }
    if let Some(v) = b.uuid("vip_qos_policy_id")? {
        cols.push(("vip_qos_policy_id", Val::Text(v)));
    }
    if let Some(v) = b.boolean("admin_state_up")? {
        cols.push(("enabled", Val::Bool(v.unwrap_or(false))));
    }
    if let Some(v) = b.uuids("vip_sg_ids")? {
        cols.push(("vip_sg_ids", Val::json(&v)));
    }
    if let Some(v) = b.tags()? {
        cols.push(("tags", Val::json(&v)));
    }
    let lb = load(&state.db, &id).await?;
    if !ctx.can_write(project_of(&lb)) {
        return Err(ApiError::Forbidden);
    }
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &id, LbChange::Update).await?;
    if !cols.is_empty() {
        super::update(&mut tx, "load_balancer", &id, &cols).await?;
    }
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &id, json!({})).await?;
    Ok(Json(json!({"loadbalancer": load(&state.db, &id).await?})))
}

async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let pairs = listing::parse_pairs(query.as_deref())?;
    let cascade = pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "cascade")
        .is_some_and(|(_, v)| matches!(v.to_ascii_lowercase().as_str(), "1" | "t" | "true" | "on" | "y" | "yes"));
    let lb = load(&state.db, &id).await?;
    if !ctx.can_write(project_of(&lb)) {
        return Err(ApiError::Forbidden);
    }
    let mut tx = state.db.write().await?;
    let children: i64 = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM listener WHERE load_balancer_id = $1) + \
         (SELECT COUNT(*) FROM pool WHERE load_balancer_id = $1)",
    )
    .bind(id.as_str())
    .fetch_one(&mut *tx.tx)
    .await?
    .try_get(0)?;
    if children > 0 && !cascade {
        return Err(validation(format!("Cannot delete Load Balancer {id} - it has children")));
    }
    super::lock_lb(&mut tx, &state.db, &id, LbChange::Delete).await?;
    if cascade {
        // Every child is on its way out with its load balancer.
        let now = now_text();
        for sql in [
            "UPDATE listener SET provisioning_status = $1, updated_at = $2 WHERE load_balancer_id = $3",
            "UPDATE pool SET provisioning_status = $1, updated_at = $2 WHERE load_balancer_id = $3",
            "UPDATE member SET provisioning_status = $1, updated_at = $2 \
             WHERE pool_id IN (SELECT id FROM pool WHERE load_balancer_id = $3)",
            "UPDATE health_monitor SET provisioning_status = $1, updated_at = $2 \
             WHERE pool_id IN (SELECT id FROM pool WHERE load_balancer_id = $3)",
        ] {
            sqlx::query(sql)
                .bind(provisioning::PENDING_DELETE)
                .bind(now.as_str())
                .bind(id.as_str())
                .execute(&mut *tx.tx)
                .await?;
        }
    }
    super::queue(&state, tx, JobKind::DeleteLoadBalancer, &id, json!({"cascade": cascade})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn failover(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let lb = load(&state.db, &id).await?;
    if !ctx.can_write(project_of(&lb)) {
        return Err(ApiError::Forbidden);
    }
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &id, LbChange::Failover).await?;
    super::queue(&state, tx, JobKind::FailoverLoadBalancer, &id, json!({})).await?;
    Ok(accepted())
}

async fn stats(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let lb = load(&state.db, &id).await?;
    if !ctx.can_read(project_of(&lb)) {
        return Err(ApiError::Forbidden);
    }
    let stats =
        super::stats_of(&state.db, "listener_id IN (SELECT id FROM listener WHERE load_balancer_id = $1)", &id).await?;
    Ok(Json(json!({ "stats": stats })))
}

fn status_obj(row: &sqlx::any::AnyRow, with_name: bool) -> ApiResult<Map<String, Value>> {
    let mut m = Map::new();
    m.insert("id".into(), json!(row.try_get::<String, _>("id")?));
    if with_name {
        m.insert("name".into(), json!(row.try_get::<Option<String>, _>("name")?.unwrap_or_default()));
    }
    m.insert("provisioning_status".into(), json!(row.try_get::<String, _>("provisioning_status")?));
    m.insert("operating_status".into(), json!(row.try_get::<String, _>("operating_status")?));
    Ok(m)
}

/// The status tree: listeners, their pools (the default pool), the pools'
/// members and health monitor.
async fn status(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let lb = load(&state.db, &id).await?;
    if !ctx.can_read(project_of(&lb)) {
        return Err(ApiError::Forbidden);
    }
    let db = &state.db.pool;
    let pools = sqlx::query(
        "SELECT id, name, provisioning_status, operating_status FROM pool WHERE load_balancer_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    let members = sqlx::query(
        "SELECT m.id, m.name, m.provisioning_status, m.operating_status, m.address, m.protocol_port, m.pool_id \
         FROM member m JOIN pool p ON p.id = m.pool_id WHERE p.load_balancer_id = $1 ORDER BY m.created_at, m.id",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    let monitors = sqlx::query(
        "SELECT h.id, h.name, h.type, h.provisioning_status, h.operating_status, h.pool_id \
         FROM health_monitor h JOIN pool p ON p.id = h.pool_id WHERE p.load_balancer_id = $1",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    let mut pool_status: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    for p in &pools {
        let pool_id: String = p.try_get("id")?;
        let mut obj = status_obj(p, true)?;
        if let Some(h) = monitors.iter().find(|h| h.try_get::<String, _>("pool_id").is_ok_and(|x| x == pool_id)) {
            let mut hm = status_obj(h, true)?;
            hm.insert("type".into(), json!(h.try_get::<String, _>("type")?));
            obj.insert("health_monitor".into(), Value::Object(hm));
        }
        let mut ms = Vec::new();
        for m in members.iter().filter(|m| m.try_get::<String, _>("pool_id").is_ok_and(|x| x == pool_id)) {
            let mut mo = status_obj(m, true)?;
            mo.insert("address".into(), json!(m.try_get::<String, _>("address")?));
            mo.insert("protocol_port".into(), json!(m.try_get::<i64, _>("protocol_port")?));
            ms.push(Value::Object(mo));
        }
        obj.insert("members".into(), Value::Array(ms));
        pool_status.insert(pool_id, Value::Object(obj));
    }
    let listeners = sqlx::query(
        "SELECT id, name, provisioning_status, operating_status, default_pool_id FROM listener \
         WHERE load_balancer_id = $1 ORDER BY created_at, id",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    let mut ls = Vec::new();
    for l in &listeners {
        let mut obj = status_obj(l, true)?;
        let pools: Vec<Value> = l
            .try_get::<Option<String>, _>("default_pool_id")?
            .and_then(|p| pool_status.get(&p).cloned())
            .into_iter()
            .collect();
        obj.insert("pools".into(), Value::Array(pools));
        ls.push(Value::Object(obj));
    }
    let mut root = Map::new();
    root.insert("id".into(), lb["id"].clone());
    root.insert("name".into(), lb["name"].clone());
    root.insert("provisioning_status".into(), lb["provisioning_status"].clone());
    root.insert("operating_status".into(), lb["operating_status"].clone());
    root.insert("listeners".into(), Value::Array(ls));
    Ok(Json(json!({"statuses": {"loadbalancer": root}})))
}
