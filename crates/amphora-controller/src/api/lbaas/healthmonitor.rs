//! `/v2/lbaas/healthmonitors`: create (one per pool), list, show, update,
//! delete.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};

use super::listener::text;
use super::pool::{check_pool_mutable, touch_listeners};
use super::validate::{
    Body, HM_HTTP_METHODS, HM_TYPES, RawBody, check_expected_codes, check_url_path, invalid_option, validation,
};
use super::{LbChange, Val};
use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::listing::{self, Field, Kind, Resource};
use crate::auth::Context;
use crate::db::{Db, WriteTx, new_id, now_text};
use crate::jobs::JobKind;
use crate::model::{operating, provisioning};

pub static HEALTH_MONITOR: Resource = Resource {
    table: "health_monitor",
    plural: "healthmonitors",
    fields: &[
        Field::new("id", "id", Kind::Text),
        Field::new("name", "name", Kind::Text),
        Field::new("type", "type", Kind::Text),
        Field::new("delay", "delay", Kind::Int),
        Field::new("timeout", "timeout", Kind::Int),
        Field::new("max_retries", "max_retries", Kind::Int),
        Field::new("max_retries_down", "max_retries_down", Kind::Int),
        Field::new("http_method", "http_method", Kind::Text),
        Field::new("url_path", "url_path", Kind::Text),
        Field::new("expected_codes", "expected_codes", Kind::Text),
        Field::new("admin_state_up", "enabled", Kind::Bool),
        Field::new("project_id", "project_id", Kind::Text),
        Field::new("tenant_id", "project_id", Kind::Text),
        Field::new("provisioning_status", "provisioning_status", Kind::Text),
        Field::new("operating_status", "operating_status", Kind::Text),
        Field::new("created_at", "created_at", Kind::Time),
        Field::new("updated_at", "updated_at", Kind::Time),
        Field::new("tags", "tags", Kind::Json),
        Field::new("http_version", "http_version", Kind::Text),
        Field::new("domain_name", "domain_name", Kind::Text),
        Field::new("pool_id", "pool_id", Kind::Text).hidden(),
    ],
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lbaas/healthmonitors", get(list).post(create))
        .route("/lbaas/healthmonitors/{id}", get(show).put(update).delete(delete))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Health Monitor", id)
}

const HTTP_TYPES: &[&str] = &["HTTP", "HTTPS"];

pub fn render(rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    rows.into_iter()
        .map(|mut r| {
            let pools = super::id_list(&r, "pool_id");
            r.insert("pools".into(), pools);
            // A float on the wire (1.0, 1.1), text in the database.
            let version = r.get("http_version").and_then(Value::as_str).and_then(|v| v.parse::<f64>().ok());
            r.insert("http_version".into(), version.map_or(Value::Null, |v| json!(v)));
            super::finish(&HEALTH_MONITOR, r)
        })
        .collect()
}

async fn fetch(db: &Db, id: &str) -> ApiResult<Map<String, Value>> {
    super::check_id(id, "Health Monitor")?;
    HEALTH_MONITOR.fetch(db, id, "", &[]).await?.ok_or_else(|| not_found(id))
}

async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let (q, scope) = super::list_request(&state, &ctx, &HEALTH_MONITOR, query.as_deref())?;
    let base = state.url(&headers, "/v2/lbaas/healthmonitors");
    let page = listing::list(&state.db, &HEALTH_MONITOR, scope, &q, &base).await?;
    Ok(super::list_body("healthmonitors", render(page.rows), page.links, &q))
}

async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let hm = fetch(&state.db, &id).await?;
    if !ctx.can_read(text(&hm, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    super::show_body("healthmonitor", render(vec![hm]).remove(0), query.as_deref())
}

pub const PUT_FIELDS: &[&str] = &[
    "name",
    "delay",
    "timeout",
    "max_retries_down",
    "max_retries",
    "http_method",
    "url_path",
    "expected_codes",
    "admin_state_up",
    "tags",
    "http_version",
    "domain_name",
];
const POST_ONLY: &[&str] = &["type", "project_id", "tenant_id", "pool_id"];

/// The attributes shared by create and update, checked against the type.
/// `current` is the stored monitor on update.
fn columns(b: &Body, kind: &str, current: Option<&Map<String, Value>>) -> ApiResult<Vec<(&'static str, Val)>> {
    let mut cols: Vec<(&str, Val)> = Vec::new();
    if let Some(v) = b.text("name", 255)? {
        cols.push(("name", Val::Text(v)));
    }
    for key in ["delay", "timeout"] {
        match b.int(key, 0, i64::from(i32::MAX))? {
            Some(Some(v)) => cols.push((key, Val::Int(Some(v)))),
            Some(None) => return Err(invalid_option("None", key)),
            None => {}
        }
    }
    for key in ["max_retries", "max_retries_down"] {
        match b.int(key, 1, 10)? {
            Some(Some(v)) => cols.push((key, Val::Int(Some(v)))),
            Some(None) if key == "max_retries" => return Err(invalid_option("None", key)),
            Some(None) => cols.push((key, Val::Int(Some(3)))),
            None => {}
        }
    }
    let method = b.choice("http_method", HM_HTTP_METHODS)?;
    let url_path = b.text("url_path", 2048)?;
    let codes = b.text("expected_codes", 64)?;
    if !HTTP_TYPES.contains(&kind) {
        for (key, v) in [("http_method", &method), ("url_path", &url_path), ("expected_codes", &codes)] {
            if v.as_ref().is_some_and(|v| v.is_some()) {
                return Err(invalid_option(key, format!("health monitors of type {kind}")));
            }
        }
    } else {
        if let Some(v) = method {
            cols.push(("http_method", Val::Text(Some(v.unwrap_or_else(|| "GET".into())))));
        }
        if let Some(v) = url_path {
            let v = v.unwrap_or_else(|| "/".into());
            check_url_path(&v)?;
            cols.push(("url_path", Val::text(v)));
        }
        if let Some(v) = codes {
            let v = v.unwrap_or_else(|| "200".into());
            check_expected_codes(&v)?;
            cols.push(("expected_codes", Val::text(v)));
        }
    }
    if let Some(v) = b.boolean("admin_state_up")? {
        cols.push(("enabled", Val::Bool(v.unwrap_or(false))));
    }
    if let Some(v) = b.tags()? {
        cols.push(("tags", Val::json(&v)));
    }
    let version = match b.object("http_version") {
        None => None,
        Some(None) => Some(None),
        Some(Some(v)) => match v.as_f64() {
            Some(f) if f == 1.0 || f == 1.1 => Some(Some(if f == 1.0 { "1.0" } else { "1.1" }.to_owned())),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid input for field/attribute http_version. Value: '{v}'. Value should be one of: 1.0, 1.1"
                )));
            }
        },
    };
    let domain = b.text("domain_name", 255)?;
    let stored = |k: &str| current.and_then(|c| c.get(k)).and_then(Value::as_str).map(str::to_owned);
    let eff_version = match &version {
        Some(v) => v.clone(),
        None => stored("http_version"),
    };
    if domain.as_ref().is_some_and(|d| d.is_some()) || (domain.is_none() && stored("domain_name").is_some()) {
        match eff_version.as_deref() {
            None if domain.as_ref().is_some_and(|d| d.is_some()) => {
                return Err(validation("'http_version' must be specified when 'domain_name' is provided."));
            }
            Some("1.0") => {
                return Err(invalid_option("http_version 1.0", "health monitors HTTP 1.1 domain name health check"));
            }
            _ => {}
        }
    }
    if let Some(v) = version {
        cols.push(("http_version", Val::Text(v)));
    }
    if let Some(v) = domain {
        cols.push(("domain_name", Val::Text(v)));
    }
    Ok(cols)
}

/// A monitor to create, checked as far as it can be without its pool.
#[derive(Debug)]
pub struct NewMonitor {
    pub kind: String,
    pub cols: Vec<(&'static str, Val)>,
}

/// The attributes of `POST /healthmonitors` other than its pool, with
/// upstream's defaults for HTTP(S) monitors.
pub fn new_monitor(b: &Body) -> ApiResult<NewMonitor> {
    let kind = Body::required("type", b.choice("type", HM_TYPES)?)?;
    Body::required("delay", b.int("delay", 0, i64::from(i32::MAX))?)?;
    Body::required("timeout", b.int("timeout", 0, i64::from(i32::MAX))?)?;
    Body::required("max_retries", b.int("max_retries", 1, 10)?)?;
    let mut cols = columns(b, &kind, None)?;
    if HTTP_TYPES.contains(&kind.as_str()) {
        for (col, default) in [("http_method", "GET"), ("url_path", "/"), ("expected_codes", "200")] {
            if !cols.iter().any(|(c, _)| *c == col) {
                cols.push((col, Val::text(default)));
            }
        }
    }
    Ok(NewMonitor { kind, cols })
}

/// Which monitor types a pool's protocol can take.
pub fn check_monitor_for_pool(kind: &str, pool_protocol: &str) -> ApiResult<()> {
    if matches!(pool_protocol, "UDP" | "SCTP") {
        if !["UDP-CONNECT", "SCTP", "TCP", "HTTP"].contains(&kind) {
            return Err(validation(format!(
                "The associated pool protocol is {pool_protocol}, so only a UDP-CONNECT/SCTP/TCP/HTTP health \
                 monitor is supported."
            )));
        }
    } else if matches!(kind, "UDP-CONNECT" | "SCTP") {
        return Err(validation(format!("The {kind} type is only supported for pools of type UDP/SCTP.")));
    }
    Ok(())
}

/// Inserts a monitor (PENDING_CREATE) for a pool of a locked load
/// balancer; its id.
pub async fn insert_monitor(tx: &mut WriteTx<'_>, pool_id: &str, project: &str, m: NewMonitor) -> ApiResult<String> {
    let id = new_id();
    let mut all = vec![
        ("id", Val::text(&id)),
        ("project_id", Val::text(project)),
        ("pool_id", Val::text(pool_id)),
        ("type", Val::text(&m.kind)),
        ("provisioning_status", Val::text(provisioning::PENDING_CREATE)),
        ("operating_status", Val::text(operating::OFFLINE)),
        ("created_at", Val::text(now_text())),
    ];
    all.extend(m.cols);
    super::fill_defaults(
        &mut all,
        [("enabled", Val::Bool(true)), ("max_retries_down", Val::Int(Some(3))), ("tags", Val::text("[]"))],
    );
    super::insert(tx, "health_monitor", &all).await?;
    Ok(id)
}

async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    RawBody(bytes): RawBody,
) -> ApiResult<Response> {
    let allowed: Vec<&str> = PUT_FIELDS.iter().chain(POST_ONLY).copied().collect();
    let b = Body::parse(&bytes, "healthmonitor", &allowed)?;
    let new = new_monitor(&b)?;
    let pool_id = Body::required("pool_id", b.uuid("pool_id")?)?;
    b.text("project_id", 36)?;
    let pool = super::pool::fetch(&state.db, &pool_id).await?;
    let project = text(&pool, "project_id").to_owned();
    if !ctx.can_write(&project) {
        return Err(ApiError::Forbidden);
    }
    check_monitor_for_pool(&new.kind, text(&pool, "protocol"))?;
    check_pool_mutable(&pool, &pool_id)?;
    let lb_id = text(&pool, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    // Checked under the load balancer's lock: no other change races it.
    let existing: Option<String> = sqlx::query_scalar("SELECT id FROM health_monitor WHERE pool_id = $1")
        .bind(pool_id.as_str())
        .fetch_optional(&mut *tx.tx)
        .await?;
    if existing.is_some() {
        return Err(ApiError::Conflict("This pool already has a health monitor".into()));
    }
    touch_listeners(&mut tx, &pool_id).await?;
    let id = insert_monitor(&mut tx, &pool_id, &project, new).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    let hm = fetch(&state.db, &id).await?;
    Ok((StatusCode::CREATED, Json(json!({"healthmonitor": render(vec![hm]).remove(0)}))).into_response())
}

async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&bytes, "healthmonitor", PUT_FIELDS)?;
    let hm = fetch(&state.db, &id).await?;
    if !ctx.can_write(text(&hm, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    let mut cols = columns(&b, text(&hm, "type"), Some(&hm))?;
    let pool_id = text(&hm, "pool_id").to_owned();
    let pool = super::pool::fetch(&state.db, &pool_id).await?;
    check_pool_mutable(&pool, &pool_id)?;
    let lb_id = text(&pool, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    touch_listeners(&mut tx, &pool_id).await?;
    cols.push(("provisioning_status", Val::text(provisioning::PENDING_UPDATE)));
    super::update(&mut tx, "health_monitor", &id, &cols).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    let hm = fetch(&state.db, &id).await?;
    Ok(Json(json!({"healthmonitor": render(vec![hm]).remove(0)})))
}

async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let hm = fetch(&state.db, &id).await?;
    if !ctx.can_write(text(&hm, "project_id")) {
        return Err(ApiError::Forbidden);
    }
    let pool_id = text(&hm, "pool_id").to_owned();
    let pool = super::pool::fetch(&state.db, &pool_id).await?;
    let lb_id = text(&pool, "loadbalancer_id").to_owned();
    let mut tx = state.db.write().await?;
    super::lock_lb(&mut tx, &state.db, &lb_id, LbChange::Child).await?;
    touch_listeners(&mut tx, &pool_id).await?;
    super::mark(&mut tx, "health_monitor", &id, provisioning::PENDING_DELETE).await?;
    super::queue(&state, tx, JobKind::UpdateLoadBalancer, &lb_id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
