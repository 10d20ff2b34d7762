//! `/v2/lbaas/pools`: create (on a load balancer, or as a listener's
//! default pool), list, show, update, delete.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};

use super::listener::text;
use super::validate::{
    Body, LB_ALGORITHMS, POOL_PROTOCOLS, RawBody, SP_TYPES, check_listener_pool_protocols, validation,
};
use super::{LbChange, Val};
use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::listing::{self, Children, Field, Kind, Resource};
use crate::auth::Context;
use crate::db::{Db, WriteTx, new_id, now_text};
use crate::jobs::JobKind;
use crate::model::{operating, provisioning};

pub static POOL: Resource = Resource {
    table: "pool",
    plural: "pools",
    fields: &[
        Field::new("id", "id", Kind::Text),
        Field::new("name", "name", Kind::Text),
        Field::new("description", "description", Kind::Text),
        Field::new("provisioning_status", "provisioning_status", Kind::Text),
        Field::new("operating_status", "operating_status", Kind::Text),
        Field::new("admin_state_up", "enabled", Kind::Bool),
        Field::new("protocol", "protocol", Kind::Text),
        Field::new("lb_algorithm", "lb_algorithm", Kind::Text),
        Field::new("session_persistence", "session_persistence", Kind::Json),
        Field::new("project_id", "project_id", Kind::Text),
        Field::new("tenant_id", "project_id", Kind::Text),
        Field::new("created_at", "created_at", Kind::Time),
        Field::new("updated_at", "updated_at", Kind::Time),
        Field::new("healthmonitor_id", "(SELECT h.id FROM health_monitor h WHERE h.pool_id = pool.id)", Kind::Text),
        Field::new("tags", "tags", Kind::Json),
        Field::new("tls_container_ref", "tls_container_ref", Kind::Text),
        Field::new("ca_tls_container_ref", "ca_tls_container_ref", Kind::Text),
        Field::new("crl_container_ref", "crl_container_ref", Kind::Text),
        Field::new("tls_enabled", "tls_enabled", Kind::Bool),
        Field::new("tls_ciphers", "tls_ciphers", Kind::Text),
        Field::new("tls_versions", "tls_versions", Kind::Json),
        Field::new("alpn_protocols", "alpn_protocols", Kind::Json),
        Field::new("loadbalancer_id", "load_balancer_id", Kind::Text).aka(&["load_balancer_id"]).hidden(),
    ],
};

const CHILDREN: &[Children] = &[
    Children { key: "listeners", table: "listener", column: "default_pool_id", parent: "id" },
    Children { key: "members", table: "member", column: "pool_id", parent: "id" },
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lbaas/pools", get(list).post(create))
        .route("/lbaas/pools/{id}", get(show).put(update).delete(delete))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Pool", id)
}

pub async fn render(db: &Db, mut rows: Vec<Map<String, Value>>) -> ApiResult<Vec<Map<String, Value>>> {
    listing::attach_children(db, &mut rows, CHILDREN).await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            let lbs = super::id_list(&r, "loadbalancer_id");
            r.insert("loadbalancers".into(), lbs);
            super::finish(&POOL, r)
        })
        .collect())
}

/// A pool row (with its hidden `loadbalancer_id`), not rendered.
pub async fn fetch(db: &Db, id: &str) -> ApiResult<Map<String, Value>> {
    super::check_id(id, "Pool")?;
    POOL.fetch(db, id, "", &[]).await?.ok_or_else(|| not_found(id))
}

async fn load(db: &Db, id: &str) -> ApiResult<Map<String, Value>> {
    Ok(render(db, vec![fetch(db, id).await?]).await?.remove(0))
}

/// A pool about to go cannot take new children (upstream's
/// ImmutableObject on the pool).
pub fn check_pool_mutable(pool: &Map<String, Value>, id: &str) -> ApiResult<()> {
    if text(pool, "provisioning_status") == provisioning::PENDING_DELETE {
        return Err(ApiError::immutable("Pool", id));
    }
    Ok(())
}

/// Marks the listeners using the pool PENDING_UPDATE (upstream's
/// `test_and_set_lb_and_listeners_prov_status`).
pub async fn touch_listeners(tx: &mut WriteTx<'_>, pool_id: &str) -> ApiResult<()> {
    sqlx::query(
        "UPDATE listener SET provisioning_status = $1, updated_at = $2 \
         WHERE default_pool_id = $3 AND provisioning_status = $4",
    )
    .bind(provisioning::PENDING_UPDATE)
    .bind(now_text())
    .bind(pool_id)
    .bind(provisioning::ACTIVE)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}

async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let (q, scope) = super::list_request(&state, &ctx, &POOL, query.as_deref())?;
    let base = state.url(&headers, "/v2/lbaas/pools");
    let page = listing::list(&state.db, &POOL, scope, &q, &base).await?;
    let rows = render(&state.db, page.rows).await?;
    Ok(super::list_body("pools", rows, page.links, &q))
}

async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = load(&state.db, &id).await?;
    if !ctx.can_read(text(&p, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    super::show_body("pool", p, query.as_deref())
}

pub const COMMON_FIELDS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "lb_algorithm",
    "session_persistence",
    "tags",
    "tls_container_ref",
    "ca_tls_container_ref",
    "crl_container_ref",
    "tls_enabled",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
];

const POST_ONLY: &[&str] =
    &["listener_id", "loadbalancer_id", "protocol", "project_id", "tenant_id", "healthmonitor", "members"];

/// Session persistence, checked against the pool's protocol; the stored
/// object has upstream's four keys.
fn session_persistence(b: &Body, protocol: &str) -> ApiResult<Option<Val>> {
    let Some(sp) = b.object("session_persistence") else { return Ok(None) };
    let Some(sp) = sp else { return Ok(Some(Val::Text(None))) };
    let sp = Body::from_value(
        sp.clone(),
        "session_persistence",
        &["type", "cookie_name", "persistence_timeout", "persistence_granularity"],
    )?;
    let kind = Body::required("type", sp.choice("type", SP_TYPES)?)?;
    let cookie = sp.text("cookie_name", 255)?.flatten();
    let timeout = sp.int("persistence_timeout", i64::MIN, i64::MAX)?.flatten();
    let granularity = sp.ip("persistence_granularity")?.flatten();
    let l4 = matches!(protocol, "UDP" | "SCTP");
    if l4 {
        if kind != "SOURCE_IP" {
            return Err(validation(format!(
                "Session persistence of type {kind} is not supported for {protocol} protocol pools."
            )));
        }
        if cookie.is_some() {
            return Err(validation("Cookie names are not supported for UDP/SCTP pools."));
        }
    } else if timeout.is_some() || granularity.is_some() {
        return Err(validation(
            "persistence_timeout and persistence_granularity is only for UDP and SCTP protocol pools.",
        ));
    }
    if let Some(c) = &cookie {
        if kind != "APP_COOKIE" {
            return Err(validation(
                "Field \"cookie_name\" can only be specified with session persistence of type \"APP_COOKIE\".",
            ));
        }
        if c.chars().any(|ch| ch.is_whitespace() || ch.is_control() || ",;\\\"()/:<=>?@[]{}".contains(ch)) {
            return Err(validation(
                "Supplied \"cookie_name\" is invalid. It must be a valid cookie name per RFC 6265.",
            ));
        }
    } else if kind == "APP_COOKIE" {
        return Err(validation(
            "Field \"cookie_name\" must be specified when using the \"APP_COOKIE\" session persistence type.",
        ));
    }
    Ok(Some(Val::json(&json!({
        "type": kind,
        "cookie_name": cookie,
        "persistence_timeout": timeout,
        "persistence_granularity": granularity,
    }))))
}

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
    if let Some(v) = b.choice("lb_algorithm", LB_ALGORITHMS)? {
        let v = Body::required("lb_algorithm", Some(v))?;
        cols.push(("lb_algorithm", Val::text(v)));
    }
    if let Some(v) = session_persistence(b, protocol)? {
        cols.push(("session_persistence", v));
    }
    if let Some(v) = b.tags()? {
        cols.push(("tags", Val::json(&v)));
    }
    for key in ["tls_container_ref", "ca_tls_container_ref", "crl_container_ref"] {
        if b.text(key, 255)?.flatten().is_some() {
            return Err(validation(format!("{key} is not supported by this deployment (no certificate store).")));
        }
        if b.has(key) {
            cols.push((key, Val::Text(None)));
        }
    }
    if let Some(v) = b.boolean("tls_enabled")? {
        cols.push(("tls_enabled", Val::Bool(v.unwrap_or(false))));
    }
    if let Some(v) = b.text("tls_ciphers", 2048)? {
        cols.push(("tls_ciphers", Val::Text(v)));
    }
    for key in ["tls_versions", "alpn_protocols"] {
        if let Some(v) = b.strings(key, 32)? {
            cols.push((key, Val::json(&v)));
        }
    }
    Ok(cols)
}

/// A pool to create, checked as far as it can be without the database.
#[derive(Debug)]
pub struct NewPool {
    pub protocol: String,
    pub cols: Vec<(&'static str, Val)>,
}

/// The attributes of `POST /pools` other than where it goes.
pub fn new_pool(b: &Body) -> ApiResult<NewPool> {
    let protocol = Body::required("protocol", b.choice("protocol", POOL_PROTOCOLS)?)?;
    Body::required("lb_algorithm", b.choice("lb_algorithm", LB_ALGORITHMS)?)?;
    let cols = common_columns(b, &protocol)?;
    Ok(NewPool { protocol, cols })
}

/// Inserts a pool (PENDING_CREATE) on a locked load balancer; its id.
pub async fn insert_pool(tx: &mut WriteTx<'_>, lb_id: &str, project: &str, p: NewPool) -> ApiResult<String> {
    let id = new_id();
    let mut all = vec![
        ("id", Val::text(&id)),
        ("project_id", Val::text(project)),
        ("load_balancer_id", Val::text(lb_id)),
        ("protocol", Val::text(&p.protocol)),
        ("provisioning_status", Val::text(provisioning::PENDING_CREATE)),
        ("operating_status", Val::text(operating::OFFLINE)),
        ("created_at", Val::text(now_text())),
    ];
    all.extend(p.cols);
    super::fill_defaults(&mut all, [("enabled", Val::Bool(true)), ("tags", Val::text("[]"))]);
    super::insert(tx, "pool", &all).await?;
    Ok(id)
}

async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    RawBody(bytes): RawBody,
) -> ApiResult<Response> {
    let allowed: Vec<&str> = COMMON_FIELDS.iter().chain(POST_ONLY).copied().collect();
    let b = Body::parse(&bytes, "pool", &allowed)?;
    let new = new_pool(&b)?;
    let protocol = new.protocol.clone();
    let listener_id = b.uuid("listener_id")?.flatten();
    let lb_id = b.uuid("loadbalancer_id")?.flatten();
    b.text("project_id", 36)?;
    let mut listener = None;
    let lb_id = match (&listener_id, lb_id) {
        (Some(lid), given) => {
            let l = super::listener::fetch(&state.db, lid).await?;
            let owner = text(&l, "loadbalancer_id").to_owned();
            if given.as_ref().is_some_and(|g| *g != owner) {
                return Err(validation(format!(
                    "Listener {lid} is not on load balancer {}.",
                    given.unwrap_or_default()
                )));
            }
            listener = Some(l);
            owner
        }
        (None, Some(lb)) => lb,
        (None, None) => return Err(validation("Must provide at least one of: loadbalancer_id, listener_id")),
    };
    let parent = super::parent_lb(&state.db, &lb_id).await?;
    if !ctx.can_write(&parent.project_id) {
        return Err(ApiError::Forbidden);
    }
    if let Some(l) = &listener {
        check_listener_pool_protocols(text(l, "protocol"), &protocol)?;
    }
    if matches!(b.object("healthmonitor"), Some(Some(_)))
        || matches!(b.object("members"), Some(Some(Value::Array(a))) if !a.is_empty())
    {
        return Err(validation("Creating a pool with its members or health monitor is not supported yet."));
    }

    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    // Checked under the load balancer's lock: no other change races it.
    if let Some(lid) = &listener_id {
        let current: Option<String> = sqlx::query_scalar("SELECT default_pool_id FROM listener WHERE id = $1")
            .bind(lid.as_str())
            .fetch_optional(&mut *tx.tx)
            .await?
            .flatten();
        if current.is_some() {
            return Err(ApiError::Conflict("This listener already has a default pool".into()));
        }
    }
    let id = insert_pool(&mut tx, &lb_id, &parent.project_id, new).await?;
    if let Some(lid) = &listener_id {
        super::update(
            &mut tx,
            "listener",
            lid,
            &[("default_pool_id", Val::text(&id)), ("provisioning_status", Val::text(provisioning::PENDING_UPDATE))],
        )
        .await?;
    }
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    let p = load(&state.db, &id).await?;
    Ok((StatusCode::CREATED, Json(json!({"pool": p}))).into_response())
}

async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&bytes, "pool", COMMON_FIELDS)?;
    let row = fetch(&state.db, &id).await?;
    if !ctx.can_write(text(&row, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    let mut cols = common_columns(&b, text(&row, "protocol"))?;
    let lb_id = text(&row, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    touch_listeners(&mut tx, &id).await?;
    cols.push(("provisioning_status", Val::text(provisioning::PENDING_UPDATE)));
    super::update(&mut tx, "pool", &id, &cols).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(Json(json!({"pool": load(&state.db, &id).await?})))
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
    touch_listeners(&mut tx, &id).await?;
    super::mark(&mut tx, "pool", &id, provisioning::PENDING_DELETE).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
