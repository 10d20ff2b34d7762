//! The amphora admin API (`/v2/octavia/amphorae`), as upstream serves it:
//! the 20 fields, its envelopes, its status rules and messages, with its
//! bugs fixed where a client cannot depend on them (docs/compatibility.md).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use sqlx::Row;

use super::error::{ApiError, ApiResult};
use super::listing::{self, Field, Kind, ListQuery, Resource, Scope};
use super::{AppState, accepted};
use crate::auth::Context;
use crate::db::{is_uuid, now_text};
use crate::jobs::{self, JobKind};
use crate::model::{amphora_status, provisioning};

pub static AMPHORA: Resource = Resource {
    table: "amphora",
    plural: "amphorae",
    fields: &[
        Field::new("id", "id", Kind::Text),
        Field::new("loadbalancer_id", "load_balancer_id", Kind::Text).aka(&["load_balancer_id"]),
        Field::new("compute_id", "compute_id", Kind::Text),
        Field::new("lb_network_ip", "lb_network_ip", Kind::Text),
        Field::new("vrrp_ip", "vrrp_ip", Kind::Text),
        Field::new("ha_ip", "ha_ip", Kind::Text),
        Field::new("vrrp_port_id", "vrrp_port_id", Kind::Text),
        Field::new("ha_port_id", "ha_port_id", Kind::Text),
        Field::new("cert_expiration", "cert_expiration", Kind::Time),
        Field::new("cert_busy", "cert_busy", Kind::Bool),
        Field::new("role", "role", Kind::Text),
        Field::new("status", "status", Kind::Text),
        Field::new("vrrp_interface", "vrrp_interface", Kind::Text),
        Field::new("vrrp_id", "vrrp_id", Kind::Int),
        Field::new("vrrp_priority", "vrrp_priority", Kind::Int),
        Field::new("cached_zone", "cached_zone", Kind::Text),
        Field::new("created_at", "created_at", Kind::Time),
        Field::new("updated_at", "updated_at", Kind::Time),
        Field::new("image_id", "image_id", Kind::Text),
        Field::new("compute_flavor", "compute_flavor", Kind::Text),
    ],
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/octavia/amphorae", get(list))
        .route("/octavia/amphorae/{id}", get(show).delete(delete))
        .route("/octavia/amphorae/{id}/config", put(configure))
        .route("/octavia/amphorae/{id}/failover", put(failover))
        .route("/octavia/amphorae/{id}/stats", get(stats))
        // Upstream answers 405 for any other sub-path (test_bogus_path).
        .route("/octavia/amphorae/{id}/{*rest}", any(|| async { ApiError::MethodNotAllowed }))
}

fn require_admin(ctx: &Context) -> ApiResult<()> {
    if ctx.is_lb_admin() { Ok(()) } else { Err(ApiError::Forbidden) }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Amphora", id)
}

/// One amphora that is not DELETED, as JSON.
async fn load(state: &AppState, id: &str) -> ApiResult<serde_json::Map<String, Value>> {
    if !is_uuid(id) {
        return Err(not_found(id));
    }
    let sql = format!("SELECT {} FROM amphora WHERE id = $1 AND status <> $2", AMPHORA.columns(""));
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(amphora_status::DELETED)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(AMPHORA.row_json(&row)?)
}

async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let q = ListQuery::parse(&AMPHORA, listing::parse_pairs(query.as_deref())?, &state.list_settings())?;
    let scope = Scope::default().with("status <> $?", vec![listing::Param::Text(amphora_status::DELETED.into())]);
    let base = state.url(&headers, "/v2/octavia/amphorae");
    // Rows need no post-processing: the engine renders them.
    let page = listing::list_json(&state.db, &AMPHORA, scope, &q, &base, &[]).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], page.body("amphorae")).into_response())
}

async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    // Upstream looks the amphora up before the policy check: a non-admin
    // gets 404 for an id that does not exist and 403 for one that does.
    let amp = load(&state, &id).await?;
    require_admin(&ctx)?;
    let pairs = listing::parse_pairs(query.as_deref())?;
    let fields = listing::fields_of(&pairs);
    Ok(Json(json!({"amphora": listing::select_fields(amp, fields.as_deref())})))
}

async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    if !is_uuid(&id) {
        return Err(not_found(&id));
    }
    let mut tx = state.db.write().await?;
    let sql = format!("SELECT status FROM amphora WHERE id = $1 AND status <> $2{}", state.db.for_update());
    let status: String = sqlx::query(&sql)
        .bind(id.as_str())
        .bind(amphora_status::DELETED)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| not_found(&id))?
        .try_get(0)?;
    if status != amphora_status::READY && status != amphora_status::ERROR {
        return Err(ApiError::immutable("amphora", &id));
    }
    sqlx::query("UPDATE amphora SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(amphora_status::PENDING_DELETE)
        .bind(now_text())
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    jobs::enqueue(&mut tx, JobKind::DeleteAmphora, &id, json!({})).await?;
    tx.commit().await?;
    state.jobs_queued.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn configure(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    load(&state, &id).await?;
    require_admin(&ctx)?;
    let mut tx = state.db.write().await?;
    jobs::enqueue(&mut tx, JobKind::ConfigureAmphora, &id, json!({})).await?;
    tx.commit().await?;
    state.jobs_queued.notify_one();
    Ok(accepted())
}

async fn failover(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let amp = load(&state, &id).await?;
    require_admin(&ctx)?;
    let lb_id = amp["loadbalancer_id"].as_str().map(str::to_owned);
    let mut tx = state.db.write().await?;
    // Only an ACTIVE load balancer may be failed over from here (upstream's
    // MUTABLE_STATUSES); it goes PENDING_UPDATE with the job.
    match jobs::queue_amphora_failover(&mut tx, &state.db, &id, lb_id.as_deref(), &[provisioning::ACTIVE]).await? {
        jobs::FailoverQueued::Queued(_) => {}
        jobs::FailoverQueued::LbImmutable { lb_id, .. } => return Err(ApiError::immutable("Load Balancer", &lb_id)),
    }
    tx.commit().await?;
    state.jobs_queued.notify_one();
    Ok(accepted())
}

async fn stats(
    State(state): State<AppState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    require_admin(&ctx)?;
    let rows = sqlx::query(
        "SELECT s.active_connections, s.bytes_in, s.bytes_out, s.listener_id, a.load_balancer_id, \
         s.request_errors, s.total_connections FROM listener_statistics s JOIN amphora a ON a.id = s.amphora_id \
         WHERE s.amphora_id = $1 ORDER BY s.listener_id",
    )
    .bind(id.as_str())
    .fetch_all(&state.db.pool)
    .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound(format!("Amphora stats for {id} not found.")));
    }
    let mut stats = Vec::with_capacity(rows.len());
    for r in &rows {
        stats.push(json!({
            "active_connections": r.try_get::<i64, _>(0)?,
            "bytes_in": r.try_get::<i64, _>(1)?,
            "bytes_out": r.try_get::<i64, _>(2)?,
            "id": id,
            "listener_id": r.try_get::<String, _>(3)?,
            "loadbalancer_id": r.try_get::<Option<String>, _>(4)?,
            "request_errors": r.try_get::<i64, _>(5)?,
            "total_connections": r.try_get::<i64, _>(6)?,
        }));
    }
    Ok(Json(json!({"amphora_stats": stats})))
}
